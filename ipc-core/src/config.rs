//! Defaults and limits, shared by server and client.
//!
//! Every limit states its default, its unit and what it costs in memory at
//! worst. The builders ([`crate::ServerBuilder`], [`crate::ClientBuilder`])
//! set them.

use std::time::Duration;

use crate::wire;

/// Default host, as in the original system.
pub const DEFAULT_HOST: &str = "localhost";
/// Default port, as in the original system.
pub const DEFAULT_PORT: u16 = 9099;
/// Default address: `localhost:9099`.
pub const DEFAULT_ADDR: &str = "localhost:9099";

/// Default largest frame a peer accepts: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
/// Default bytes queued for sending on one connection before senders wait: 1 MiB.
pub const DEFAULT_WRITE_BUFFER: usize = 1024 * 1024;
/// Default time a new connection has to complete its handshake: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time in-flight calls get to finish on graceful shutdown: 10 s.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Default time a client waits for a TCP connection and handshake: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of every call: 60 s (generous, but a lost server never
/// blocks a caller forever).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default most connections a server keeps open at once: 4096.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default most calls in flight on one connection: 4096.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// Default time a connection with no calls and no traffic stays open: 5 min.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default most server-push streams open on one connection (per producing side): 1024.
pub const DEFAULT_MAX_STREAMS: usize = 1024;
/// Default most objects one side exports on one connection (callbacks and
/// returned objects it serves): 4096.
pub const DEFAULT_MAX_OBJECTS: usize = 4096;
/// Default room a stream's consumer grants its producer: 256 KiB of item
/// frames not yet consumed.
pub const DEFAULT_STREAM_WINDOW: u32 = 256 * 1024;
/// Default permissions of a Unix socket file a server creates: `0o600`,
/// only the server's own user may connect.
pub const DEFAULT_UNIX_MODE: u32 = 0o600;
/// Default reconnect policy: 5 attempts, backoff 50 ms doubling to 1 s.
pub const DEFAULT_RECONNECT: Reconnect = Reconnect {
    max_attempts: 5,
    initial_backoff: Duration::from_millis(50),
    max_backoff: Duration::from_secs(1),
};

/// How a client re-establishes a lost connection (on the next call that needs it).
///
/// Attempt `n` (from 0) waits `min(initial_backoff * 2^n, max_backoff)` after
/// a failure before the next; after `max_attempts` failed attempts the call
/// fails with the last connect error. The call's deadline bounds it all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Connection attempts per call that needs a connection; 0 disables reconnecting.
    pub max_attempts: u32,
    /// Wait after the first failed attempt.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Reconnect {
    /// Never reconnect: once the connection is lost, calls fail.
    pub const NEVER: Self = Self {
        max_attempts: 0,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        DEFAULT_RECONNECT
    }
}

/// Settings of one connection, either side.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    /// Largest frame body accepted, in bytes. Checked on the length prefix,
    /// before anything is allocated; sent to the peer in the handshake so it
    /// refuses to send larger frames. Worst case: one frame of this size is
    /// buffered while it arrives.
    pub(crate) max_frame_size: usize,
    /// Bytes queued for sending before senders wait. Worst case per
    /// connection: twice this plus one frame (the queue and the write in progress).
    pub(crate) write_buffer: usize,
    /// Time allowed for the handshake.
    pub(crate) handshake_timeout: Duration,
    /// Most incoming calls running as tasks at once. Worst case: this many
    /// handler futures with their arguments and pending replies.
    pub(crate) max_in_flight: usize,
    /// Most streams this side produces at once. Worst case: this many
    /// producers, each with at most `stream_window` bytes of items sent and
    /// not yet consumed.
    pub(crate) max_streams: usize,
    /// Most objects this side exports (serves to the peer) at once.
    pub(crate) max_objects: usize,
    /// Bytes of item frames this side lets a producer send ahead of what it
    /// has consumed, per stream. Worst case held per stream it receives:
    /// this plus one frame.
    pub(crate) stream_window: u32,
    /// How long a connection may go without the peer reading before the
    /// reader stops waiting for room to reply (`None`: no limit).
    pub(crate) stall_timeout: Option<Duration>,
    /// The deadline of calls made on this connection through proxies that
    /// are not a client's (objects the peer passed over it).
    pub(crate) call_timeout: Duration,
    /// The shared key both sides must prove they hold, if any.
    pub(crate) auth_key: Option<crate::auth::AuthKey>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            write_buffer: DEFAULT_WRITE_BUFFER,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_streams: DEFAULT_MAX_STREAMS,
            max_objects: DEFAULT_MAX_OBJECTS,
            stream_window: DEFAULT_STREAM_WINDOW,
            stall_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            auth_key: None,
        }
    }
}

/// Clamps a frame limit into what the protocol supports (1 KiB ..= 1 GiB).
pub(crate) fn clamp_frame_size(bytes: usize) -> usize {
    bytes.clamp(wire::MIN_FRAME_SIZE, wire::MAX_FRAME_SIZE_CAP)
}
