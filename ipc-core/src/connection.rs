//! One connection, either side: the handshake, the outbound queue, and the
//! table that matches replies to pending calls by request id.
//!
//! Both peers run the same machinery: each can send requests (and wait for
//! responses here) and receive requests (handed to a server, if it has one).
//! The server and client modules only add their own loop around it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::config::ConnectionConfig;
use crate::error::Error;
use crate::outbox::Outbox;
use crate::transport::{BoxedRead, BoxedWrite, Stream};
use crate::wire::{self, FrameBuf, Hello, Message, PROTOCOL_VERSION, Request, Status};

/// Incoming frames, split and size-checked.
pub(crate) type Frames = FramedRead<BoxedRead, LengthDelimitedCodec>;

/// A response as received, decoded later by the caller that waits for it.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: Status,
    pub(crate) body: Bytes,
}

type Waiter = oneshot::Sender<Result<Response, Error>>;

/// Why the connection ended; turned into an [`Error`] for each pending call.
#[derive(Debug, Clone)]
pub(crate) enum Closure {
    Lost(String),
    ShuttingDown,
}

impl Closure {
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Self::Lost(reason) => Error::ConnectionLost {
                reason: reason.clone(),
            },
            Self::ShuttingDown => Error::ShuttingDown,
        }
    }
}

/// Hashes request ids this side issued itself (sequential, never chosen by
/// the peer, so no flooding concern): one multiply instead of SipHash.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, Waiter, std::hash::BuildHasherDefault<IdHasher>>,
    closed: Option<Closure>,
}

/// Shared state of one live connection.
pub(crate) struct Connection {
    pub(crate) outbox: Outbox,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    going_away: AtomicBool,
    /// The highest request id the peer said it read (from its last go-away);
    /// `u64::MAX` until it says.
    peer_last_read: AtomicU64,
    /// The largest frame the peer accepts (from its handshake).
    pub(crate) peer_max_frame: usize,
    /// Who is on the other end, for logs.
    pub(crate) peer: String,
    /// This end's address (`IP:PORT`, `unix:PATH` or `io`).
    pub(crate) local: String,
}

/// What the connection's own loop must handle itself.
pub(crate) enum Inbound {
    Request(Request),
    Cancel(u64),
}

impl Connection {
    pub(crate) fn new(
        config: &ConnectionConfig,
        peer_max_frame: usize,
        (peer, local): (String, String),
        buffered: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            outbox: Outbox::new(config.write_buffer, buffered),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            going_away: AtomicBool::new(false),
            peer_last_read: AtomicU64::new(u64::MAX),
            peer_max_frame,
            peer,
            local,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Critical sections are map operations that cannot panic halfway.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates a request id and registers a waiter for its response.
    pub(crate) fn register(
        &self,
    ) -> Result<(u64, oneshot::Receiver<Result<Response, Error>>), Error> {
        if self.going_away.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut p = self.pending();
        if let Some(c) = &p.closed {
            return Err(c.to_error());
        }
        p.calls.insert(id, tx);
        Ok((id, rx))
    }

    /// A fresh request id for a call that waits for nothing (oneway).
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a call whose caller stopped waiting, and tells the peer.
    pub(crate) fn abandon(&self, id: u64) {
        let removed = self.pending().calls.remove(&id).is_some();
        if removed {
            let _ = self.outbox.push_now(FrameBuf::cancel(id).into_unchecked());
        }
    }

    /// Ends every pending call with `closure`'s error and refuses new ones.
    pub(crate) fn fail_all(&self, closure: Closure) {
        let calls = {
            let mut p = self.pending();
            if p.closed.is_none() {
                p.closed = Some(closure.clone());
            }
            std::mem::take(&mut p.calls)
        };
        // Requests the peer says it never read did not run: they fail with
        // `ShuttingDown`, which callers may safely send again elsewhere.
        let last_read = self.peer_last_read.load(Ordering::Acquire);
        for (id, waiter) in calls {
            let error = if id > last_read {
                Error::ShuttingDown
            } else {
                closure.to_error()
            };
            let _ = waiter.send(Err(error));
        }
        self.outbox.close();
    }

    /// Whether new calls may start here: open, and the peer is not going away.
    pub(crate) fn takes_calls(&self) -> bool {
        !self.is_going_away() && !self.is_closed() && !self.outbox.is_closed()
    }

    /// The error a call gets when this connection cannot take it.
    pub(crate) fn refusal(&self) -> Error {
        match &self.pending().closed {
            Some(c) => c.to_error(),
            None if self.is_going_away() => Error::ShuttingDown,
            None => Error::ConnectionLost {
                reason: "the connection is closed".into(),
            },
        }
    }

    /// Whether the peer announced it is going away.
    pub(crate) fn is_going_away(&self) -> bool {
        self.going_away.load(Ordering::Acquire)
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.pending().closed.is_some()
    }

    /// Handles what the shared machinery can handle (responses, go-away) and
    /// returns the rest. An error means the peer broke the protocol.
    pub(crate) fn on_frame(&self, frame: BytesMut) -> Result<Option<Inbound>, Error> {
        match wire::parse(frame.freeze()) {
            Ok(Message::Response { id, status, body }) => {
                let waiter = self.pending().calls.remove(&id);
                match waiter {
                    Some(w) => {
                        let _ = w.send(Ok(Response { status, body }));
                    }
                    // A call abandoned by its caller (timeout, drop) may still
                    // be answered; an id never issued is a protocol violation.
                    None if id != 0 && id < self.next_id.load(Ordering::Relaxed) => {
                        tracing::trace!(id, "response for an abandoned call");
                    }
                    None => {
                        return Err(Error::Protocol {
                            detail: format!("a response to request {id}, which was never sent"),
                        });
                    }
                }
                Ok(None)
            }
            Ok(Message::Request(r)) => Ok(Some(Inbound::Request(r))),
            Ok(Message::Cancel { id }) => Ok(Some(Inbound::Cancel(id))),
            Ok(Message::GoAway { last_request, .. }) => {
                tracing::debug!(peer = %self.peer, ?last_request, "peer is going away");
                if let Some(last) = last_request {
                    self.peer_last_read.store(last, Ordering::Release);
                }
                self.going_away.store(true, Ordering::Release);
                Ok(None)
            }
            Ok(Message::Hello(_)) => Err(Error::Protocol {
                detail: "a second hello on an established connection".into(),
            }),
            Err(e) => Err(Error::Protocol {
                detail: e.to_string(),
            }),
        }
    }

    /// Sends a reply to request `id`, or a frame-too-large error in its place
    /// when it exceeds the peer's limit.
    pub(crate) async fn send_reply(&self, id: u64, mut frame: FrameBuf) {
        let size = frame.body_len();
        if size > self.peer_max_frame {
            tracing::warn!(
                id,
                size,
                limit = self.peer_max_frame,
                "reply exceeds the caller's frame limit"
            );
            frame = match FrameBuf::response(
                Status::FrameTooLarge,
                &(size as u64, self.peer_max_frame as u64),
            ) {
                Ok(f) => f,
                Err(_) => FrameBuf::response_empty(Status::FrameTooLarge),
            };
        }
        frame.set_id(id);
        frame.seal();
        // Small replies are copied into the write buffer and their buffer
        // reused; replies carrying large payloads go by reference.
        let pushed = match frame.contiguous() {
            Some(bytes) => {
                let pushed = self.outbox.push_copy(bytes).await;
                frame.recycle();
                pushed
            }
            None => self.outbox.push(frame.into_frame()).await,
        };
        if pushed.is_err() {
            tracing::debug!(id, "connection closed before the reply could be sent");
        }
    }
}

/// Reads a frame used in the handshake; end of stream and oversize are errors.
async fn next_frame(frames: &mut Frames) -> Result<BytesMut, Error> {
    match frames.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(io_to_protocol(e)),
        None => Err(Error::ConnectionLost {
            reason: "the peer closed the connection during the handshake".into(),
        }),
    }
}

/// Maps a read error to the error a caller should see.
pub(crate) fn io_to_protocol(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::Protocol {
            detail: format!("unreadable frame: {e}"),
        }
    } else {
        Error::ConnectionLost {
            reason: e.to_string(),
        }
    }
}

fn expect_hello(frame: BytesMut) -> Result<Hello, Error> {
    match wire::parse(frame.freeze()) {
        Ok(Message::Hello(h)) => Ok(h),
        Ok(Message::GoAway { reason, .. }) if reason == wire::GOAWAY_CONNECTION_LIMIT => {
            Err(Error::Overloaded {
                detail: "the server is at its connection limit".into(),
            })
        }
        Ok(Message::GoAway { .. }) => Err(Error::ShuttingDown),
        Ok(_) => Err(Error::Protocol {
            detail: "expected a hello frame first".into(),
        }),
        Err(wire::ProtocolError::BadMagic(m)) => Err(Error::ProtocolMismatch {
            detail: format!(
                "the peer sent {m:02x?} instead of the magic bytes; it is not an ipc peer"
            ),
        }),
        Err(e) => Err(Error::Protocol {
            detail: e.to_string(),
        }),
    }
}

fn version_mismatch(theirs: u16) -> Error {
    Error::ProtocolMismatch {
        detail: format!(
            "this side speaks protocol version {PROTOCOL_VERSION}, the peer speaks {theirs}"
        ),
    }
}

/// Splits the stream into size-checked incoming frames and the write half.
fn open_frames(stream: Stream) -> (Frames, BoxedWrite, (String, String)) {
    let Stream {
        read,
        write,
        peer,
        local,
    } = stream;
    // Until the handshake is done, nothing bigger than a hello is accepted:
    // a stranger cannot make us reserve a whole frame limit.
    let frames = FramedRead::with_capacity(read, wire::codec(wire::HANDSHAKE_FRAME_MAX), 8 * 1024);
    (frames, write, (peer, local))
}

/// After a successful handshake: the configured frame limit from now on.
fn established(mut frames: Frames, config: &ConnectionConfig) -> Frames {
    frames
        .decoder_mut()
        .set_max_frame_length(config.max_frame_size);
    frames
}

/// Sends our hello, announcing our frame limit.
async fn send_hello(write: &mut BoxedWrite, config: &ConnectionConfig) -> Result<(), Error> {
    let hello = FrameBuf::hello(config.max_frame_size).into_unchecked();
    write
        .write_all(&hello)
        .await
        .map_err(|e| Error::ConnectionLost {
            reason: format!("sending the handshake: {e}"),
        })
}

/// Splits the stream, sends our hello, reads theirs. Used by clients.
pub(crate) async fn handshake_as_client(
    stream: Stream,
    config: &ConnectionConfig,
) -> Result<(Frames, BoxedWrite, Hello, (String, String)), Error> {
    let (mut frames, mut write, (peer, local)) = open_frames(stream);
    send_hello(&mut write, config).await?;
    let theirs = expect_hello(next_frame(&mut frames).await?)?;
    if theirs.version != PROTOCOL_VERSION {
        return Err(version_mismatch(theirs.version));
    }
    Ok((established(frames, config), write, theirs, (peer, local)))
}

/// Reads the client's hello and answers it. Used by servers. On a version
/// mismatch our hello is still sent so the client can report both versions.
pub(crate) async fn handshake_as_server(
    stream: Stream,
    config: &ConnectionConfig,
) -> Result<(Frames, BoxedWrite, Hello, (String, String)), Error> {
    let (mut frames, mut write, (peer, local)) = open_frames(stream);
    let theirs = expect_hello(next_frame(&mut frames).await?)?;
    send_hello(&mut write, config).await?;
    if theirs.version != PROTOCOL_VERSION {
        let _ = write.shutdown().await;
        return Err(version_mismatch(theirs.version));
    }
    Ok((established(frames, config), write, theirs, (peer, local)))
}

/// The peer's frame limit, as announced, within what we can handle.
pub(crate) fn peer_limit(hello: &Hello) -> usize {
    crate::config::clamp_frame_size(hello.max_frame_size as usize)
}

/// Spawns the writer task of a connection.
pub(crate) fn spawn_writer(
    conn: &Arc<Connection>,
    write: BoxedWrite,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    /// Releases the outbox's bytes if the task is dropped before it first
    /// runs (a writer that runs does so itself): it exists before the task.
    struct Unstarted(Option<Arc<Connection>>);
    impl Drop for Unstarted {
        fn drop(&mut self) {
            if let Some(conn) = self.0.take() {
                conn.outbox.release_all();
            }
        }
    }
    let mut unstarted = Unstarted(Some(conn.clone()));
    tokio::spawn(async move {
        let Some(conn) = unstarted.0.take() else {
            return Ok(());
        };
        let r = crate::outbox::run_writer(&conn.outbox, write).await;
        if let Err(e) = &r {
            tracing::debug!(peer = %conn.peer, error = %e, "write failed");
        }
        r
    })
}
