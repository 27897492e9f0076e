//! One connection, either side. Both peers run the same machinery: each can
//! call the other (`calls`), serve the other's calls (`dispatch`, with the
//! calls running as tasks in `in_flight`), produce and consume server-push
//! streams (`streams`), and export objects to the other (`exports`). The
//! server and the client add only their own loop around it: accepting,
//! limits and shutdown on one side, reconnecting and proxies on the other.
//!
//! Every frame that arrives goes through [`Connection::on_frame`], on the
//! connection's reader task, in order.

mod calls;
mod deadline;
mod dispatch;
mod exports;
mod handshake;
mod id_map;
mod in_flight;
mod streams;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use tokio_util::task::TaskTracker;

use crate::config::ConnectionConfig;
use crate::context::{Access, Peer};
use crate::error::Error;
use crate::outbox::Outbox;
use crate::scope::Scope;
use crate::service::{Reply, Service};
use crate::transport::BoxedWrite;
use crate::wire::{self, FrameBuf, Message, Request};

pub(crate) use calls::{Discard, PendingCall, Response};
pub(crate) use deadline::{Deadline, within};
pub(crate) use exports::Import;
pub(crate) use handshake::{
    ClientOpening, Frames, Handshake, Identity, begin_as_client, complete_as_client,
    finish_without_key, handshake_as_server, io_to_protocol,
};
pub(crate) use streams::{Inbox, Received, Receiver};

use exports::Exports;
use in_flight::InFlight;
use streams::Consumers;

/// Why the connection ended; turned into an [`Error`] for each pending call.
#[derive(Debug, Clone)]
pub(crate) enum Closure {
    /// The peer closed its side in an orderly way.
    PeerClosed,
    /// Anything else: an I/O error, a protocol violation, a stall.
    Lost(String),
    /// This side, or the peer, shut down gracefully.
    ShuttingDown,
    /// The handshake failed after calls were already queued behind it (a
    /// client that did not wait for the server's hello): they get its error.
    Handshake(Arc<Error>),
}

/// How logs name it: `closed by peer`, `lost: <why>`, ...
impl std::fmt::Display for Closure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("closed by peer"),
            Self::Lost(reason) => write!(f, "lost: {reason}"),
            Self::ShuttingDown => f.write_str("shutting down"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

impl Closure {
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Self::PeerClosed => Error::ConnectionLost {
                reason: "the peer closed the connection".into(),
            },
            Self::Lost(reason) => Error::ConnectionLost {
                reason: reason.clone(),
            },
            Self::ShuttingDown => Error::ShuttingDown,
            Self::Handshake(e) => e.duplicate(),
        }
    }
}

/// Counts summed over connections (a server's, for its stats), each taken
/// and given back by a guard.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Incoming calls running (handler futures alive).
    pub(crate) in_flight: AtomicUsize,
    /// Bytes queued for sending and not yet written.
    pub(crate) buffered: Arc<AtomicUsize>,
    /// Streams being produced.
    pub(crate) streams: AtomicUsize,
    /// Objects exported.
    pub(crate) objects: AtomicUsize,
}

/// An object this side serves, as a request finds it.
#[derive(Clone)]
pub(crate) struct Target {
    /// Its name, for logs and the call context.
    pub(crate) name: Arc<str>,
    pub(crate) service: Arc<dyn Service>,
    /// Where its calls are counted (a server's named objects).
    pub(crate) metrics: Option<Arc<crate::telemetry::ObjectMetrics>>,
}

/// What one side serves by name: a server's exposed objects, its system
/// object and its authorization rule. A client serves nothing by name
/// (only what it exports).
pub(crate) trait Host: Send + Sync + 'static {
    /// The named object with this handle (below [`wire::EXPORT_BASE`]);
    /// if there is none, `None`, or the answer a call to it gets (the handle
    /// of a lookup that failed).
    fn named(&self, handle: u32) -> Result<Target, Option<Reply>>;
    /// A call to the system object (handle 0).
    fn system(&self, conn: &Arc<Connection>, request: &Request) -> Reply;
    /// Whether `peer` may do `access`. Everything, unless a rule says otherwise.
    fn authorize(&self, _peer: &Peer, _access: Access<'_>) -> bool {
        true
    }
}

/// A side that serves nothing by name.
pub(crate) struct NoHost;

impl Host for NoHost {
    fn named(&self, _: u32) -> Result<Target, Option<Reply>> {
        Err(None)
    }

    fn system(&self, _: &Arc<Connection>, _: &Request) -> Reply {
        Reply::error(
            wire::Status::UnknownObject,
            "this peer exposes no objects by name",
        )
    }
}

/// This end's address and who is on the other end, for logs,
/// authorization and [`crate::CallContext`].
pub(crate) struct Labels {
    /// This end's address (`IP:PORT`, `unix:PATH` or `io`).
    pub(crate) local: String,
    /// The peer.
    pub(crate) peer: Arc<Peer>,
}

/// Shared state of one live connection.
pub(crate) struct Connection {
    pub(crate) outbox: Outbox,
    pub(crate) config: ConnectionConfig,
    /// The largest frame the peer accepts (from its hello, clamped; until
    /// that arrives, the protocol's minimum).
    peer_max_frame: AtomicUsize,
    /// Whether the peer's hello has arrived (and authentication, if any, is
    /// done). A client without a key sends requests before that.
    established: AtomicBool,
    /// Wakes what waits for [`Connection::established`].
    opened: tokio::sync::Notify,
    /// Who is on the other end, for logs.
    pub(crate) peer: Arc<str>,
    /// Who is on the other end, for authorization and the call context.
    pub(crate) peer_info: Arc<Peer>,
    /// This end's address.
    pub(crate) local: String,
    host: Arc<dyn Host>,
    gauges: Arc<Gauges>,
    /// Calls this side made, waiting for their responses.
    calls: calls::Calls,
    going_away: AtomicBool,
    /// The highest request id the peer said it read (from its last
    /// go-away); `u64::MAX` until it says.
    peer_last_read: AtomicU64,
    /// The highest request id read from the peer (ids must increase).
    last_read: AtomicU64,
    /// Incoming calls running as tasks.
    in_flight: Arc<InFlight>,
    /// Every task that serves this connection (handlers, stream producers).
    pub(crate) handlers: TaskTracker,
    consumers: Consumers,
    exports: Exports,
    /// Set when a call finishes, so an idle timer counts from then.
    activity: AtomicBool,
    /// What keeps the connection open: a client's connection closes when
    /// neither the client nor any proxy to an object imported on it holds
    /// it any more. A server's has one hold that is never given back.
    holds: AtomicUsize,
    /// The runtime the connection's tasks run on (it is made there); its
    /// sweep runs there too.
    runtime: Option<tokio::runtime::Handle>,
}

impl Connection {
    /// `peer_max_frame`: the peer's limit from its hello, or `None` while
    /// the hello is still to come (see [`Connection::establish`]).
    pub(crate) fn new(
        config: &ConnectionConfig,
        peer_max_frame: Option<usize>,
        labels: Labels,
        host: Arc<dyn Host>,
        gauges: Arc<Gauges>,
        holds: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            outbox: Outbox::new(config.write_buffer, gauges.buffered.clone()),
            config: config.clone(),
            peer_max_frame: AtomicUsize::new(peer_max_frame.unwrap_or(wire::MIN_FRAME_SIZE)),
            established: AtomicBool::new(peer_max_frame.is_some()),
            opened: tokio::sync::Notify::new(),
            peer: labels.peer.addr.clone(),
            peer_info: labels.peer,
            local: labels.local,
            host,
            gauges,
            calls: calls::Calls::default(),
            going_away: AtomicBool::new(false),
            peer_last_read: AtomicU64::new(u64::MAX),
            last_read: AtomicU64::new(0),
            in_flight: Arc::default(),
            handlers: TaskTracker::new(),
            consumers: Consumers::default(),
            exports: Exports::default(),
            activity: AtomicBool::new(false),
            holds: AtomicUsize::new(holds),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Whether the connection's sweep can watch a call made here: its
    /// runtime runs its tasks whatever the caller does (multi-thread), or
    /// the caller runs on it (a current-thread runtime runs its tasks only
    /// while something blocks on it).
    fn sweeps_for_caller(&self) -> bool {
        match &self.runtime {
            None => false,
            Some(own) if own.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => true,
            Some(own) => tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == own.id()),
        }
    }

    /// The largest frame the peer accepts. Before its hello: the protocol's
    /// minimum, which every peer accepts.
    pub(crate) fn peer_max_frame(&self) -> usize {
        self.peer_max_frame.load(Ordering::Acquire)
    }

    /// Whether the peer's hello has arrived.
    pub(crate) fn is_established(&self) -> bool {
        self.established.load(Ordering::Acquire)
    }

    /// Records the peer's hello: its frame limit applies from now on.
    pub(crate) fn establish(&self, peer_max_frame: usize) {
        self.peer_max_frame.store(peer_max_frame, Ordering::Release);
        self.established.store(true, Ordering::Release);
        self.opened.notify_waiters();
    }

    /// Waits for the peer's hello; fails with the connection's error if it
    /// ends first.
    pub(crate) async fn established(&self) -> Result<(), Error> {
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.is_established() {
                return Ok(());
            }
            if self.is_closed() {
                return Err(self.refusal());
            }
            opened.await;
        }
    }

    /// Waits until the connection has ended.
    pub(crate) async fn closed(&self) {
        loop {
            let woken = self.opened.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.is_closed() {
                return;
            }
            woken.await;
        }
    }

    /// Keeps the connection open until [`Connection::unhold`].
    pub(crate) fn hold(&self) {
        self.holds.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives back a hold; the last one closes the connection (its queued
    /// frames are still sent).
    pub(crate) fn unhold(&self) {
        if self.holds.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.outbox.close();
        }
    }

    /// The scope in which values for this connection are encoded and decoded.
    pub(crate) fn scope(self: &Arc<Self>) -> Scope {
        Scope {
            peer_max_frame: self.peer_max_frame(),
            conn: self.clone() as Arc<dyn Any + Send + Sync>,
            context: None,
        }
    }

    /// The connection of the current scope, if any.
    pub(crate) fn current() -> Option<Arc<Self>> {
        crate::scope::current()?.conn.downcast::<Self>().ok()
    }

    /// Whether new calls may start here: open, and the peer is not going away.
    pub(crate) fn takes_calls(&self) -> bool {
        !self.is_going_away() && !self.outbox.is_closed() && !self.is_closed()
    }

    /// The error a call gets when this connection cannot take it.
    pub(crate) fn refusal(&self) -> Error {
        match self.calls.closure() {
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
        self.calls.is_closed()
    }

    /// Whether anything keeps this connection busy although no frame moves:
    /// calls running, streams open, or objects exported either way.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.len() > 0
            || self.in_flight.streams() > 0
            || self.consumers.len() > 0
            || self.exports.len() > 0
            || self.calls.len() > 0
    }

    /// Takes and clears the "a call finished" flag.
    pub(crate) fn take_activity(&self) -> bool {
        self.activity.swap(false, Ordering::Relaxed)
    }

    /// The highest request id read from the peer.
    pub(crate) fn last_read(&self) -> u64 {
        self.last_read.load(Ordering::Relaxed)
    }

    /// Handles one incoming frame. `draining`: refuse new calls (this side is
    /// shutting down). An error means the peer broke the protocol (or
    /// stopped reading past the stall timeout): close the connection.
    pub(crate) async fn on_frame(
        self: &Arc<Self>,
        frame: BytesMut,
        draining: bool,
    ) -> Result<(), Error> {
        let message = wire::parse(frame.freeze()).map_err(|e| Error::Protocol {
            detail: e.to_string(),
        })?;
        match message {
            Message::Response { id, status, body } => self.on_response(id, status, body),
            Message::Request(request) => self.on_request(request, draining).await,
            Message::Cancel { id } => {
                self.on_cancel(id);
                Ok(())
            }
            Message::GoAway { last_request, .. } => {
                tracing::debug!(peer = %self.peer, ?last_request, "peer is going away");
                if let Some(last) = last_request {
                    self.peer_last_read.store(last, Ordering::Release);
                }
                self.going_away.store(true, Ordering::Release);
                Ok(())
            }
            Message::StreamItem { id, item } => self.on_stream_item(id, item),
            Message::StreamEnd { id, status, body } => self.on_stream_end(id, status, body),
            Message::Credit { id, bytes } => self.on_credit(id, bytes),
            Message::Release { handle } => self.on_release(handle),
            Message::Hello(_) => Err(Error::Protocol {
                detail: "a second hello on an established connection".into(),
            }),
            Message::AuthProof { .. } | Message::AuthOk => Err(Error::Protocol {
                detail: "an authentication frame after the handshake".into(),
            }),
        }
    }

    /// Starts a graceful shutdown of this side: tells the peer, ends the
    /// streams this side produces, and takes no new handler tasks. The
    /// connection is drained once `handlers.wait()` completes.
    pub(crate) fn begin_drain(&self) {
        let _ = self
            .outbox
            .push_now(FrameBuf::go_away(wire::GOAWAY_SHUTDOWN));
        for id in self.in_flight.end_streams() {
            let end = FrameBuf::stream_end(id, wire::Status::ShuttingDown, &());
            let _ = self.outbox.push_now(end);
        }
        self.handlers.close();
    }

    /// The last frame of a drained connection: the highest request id read,
    /// so the peer knows which of its requests did not run.
    pub(crate) fn say_goodbye(&self) {
        let last = FrameBuf::go_away_after(wire::GOAWAY_SHUTDOWN, self.last_read());
        let _ = self.outbox.push_now(last);
    }

    /// Ends everything on this connection: pending calls and streams fail
    /// with `closure`'s error, running handlers and producers are dropped,
    /// exported objects are released, and no frame is queued any more.
    pub(crate) fn close(&self, closure: Closure) {
        self.calls
            .fail_all(&closure, self.peer_last_read.load(Ordering::Acquire));
        self.consumers.fail_all(&closure);
        self.in_flight.abort_all();
        self.exports.clear(&self.gauges);
        self.outbox.close();
        // Whoever waits for the hello learns the connection's fate.
        self.opened.notify_waiters();
    }
}

/// Closes a connection when dropped, however the task that holds it ends
/// (finished, panicked, or dropped with its runtime, even before it first
/// ran): nothing waits on a dead connection. `why` is the closure if the
/// task did not close the connection itself.
pub(crate) struct CloseOnDrop {
    pub(crate) conn: Arc<Connection>,
    pub(crate) why: &'static str,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if !self.conn.is_closed() {
            self.conn.close(Closure::Lost(self.why.into()));
        }
    }
}

/// Spawns the writer task of a connection. `first` (a hello not sent yet)
/// is queued before anything else can be: the requests or answers queued
/// behind it go out in the same write.
pub(crate) fn spawn_writer(
    conn: &Arc<Connection>,
    write: BoxedWrite,
    first: Option<FrameBuf>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    if let Some(frame) = first {
        let _ = conn.outbox.push_now(frame);
    }
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
