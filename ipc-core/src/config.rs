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
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            write_buffer: DEFAULT_WRITE_BUFFER,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Clamps a frame limit into what the protocol supports (1 KiB ..= 1 GiB).
pub(crate) fn clamp_frame_size(bytes: usize) -> usize {
    bytes.clamp(wire::MIN_FRAME_SIZE, wire::MAX_FRAME_SIZE_CAP)
}
