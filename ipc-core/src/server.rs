//! The server: named objects, one task per connection, one task per call, and
//! graceful shutdown driven by a [`CancellationToken`].
//!
//! Shutdown, step by step: the token is cancelled (by [`ServerHandle::stop`],
//! by dropping the handle, or by the caller's own token); the listener closes,
//! so new connections are refused; every connection sends `GoAway`, answers
//! new requests with `ShuttingDown` and waits for its in-flight calls; after
//! the grace period, calls still running are dropped. Then the connections
//! close and `stop` returns.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{self, ConnectionConfig};
use crate::connection::{self, Closure, Connection, Inbound};
use crate::context::CallContext;
use crate::error::Error;
use crate::object::{DispatchError, ObjectInfo, Reply, ResolveRequest, Service};
use crate::transport::{Address, Listener, Stream};
use crate::wire::{self, FrameBuf, Request, Status};

/// Entry point for building a server: `Server::builder()`.
#[derive(Debug)]
pub struct Server(());

impl Server {
    /// A builder with the defaults: `localhost:9099`, no objects.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Configures a server: its address, its objects, its limits.
pub struct ServerBuilder {
    addr: Address,
    config: ConnectionConfig,
    limits: Limits,
    grace_period: Duration,
    token: Option<CancellationToken>,
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    objects: Vec<(String, Arc<dyn Service>)>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            addr: Address::default(),
            config: ConnectionConfig::default(),
            limits: Limits::default(),
            grace_period: config::DEFAULT_GRACE_PERIOD,
            token: None,
            signal: None,
            objects: Vec::new(),
        }
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("addr", &self.addr)
            .field(
                "objects",
                &self.objects.iter().map(|o| &o.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Where to listen. Default `localhost:9099` (bound on 127.0.0.1); use
    /// port 0 to let the OS pick one (see [`ServerHandle::local_addr`]).
    pub fn addr(mut self, addr: impl Into<Address>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Exposes `service` under its trait's name (e.g. `"Calculator"`).
    pub fn expose(self, service: impl Service) -> Self {
        let name = service.descriptor().trait_name.to_owned();
        self.expose_as(name, service)
    }

    /// Exposes `service` under `name`. Exposing two objects under one name
    /// makes [`ServerBuilder::start`] fail with [`Error::DuplicateObject`].
    pub fn expose_as(mut self, name: impl Into<String>, service: impl Service) -> Self {
        self.objects.push((name.into(), Arc::new(service)));
        self
    }

    /// Hosts a [name server](crate::nameserver) with an empty directory under
    /// `"NameServer"`. Registrations last as long as the registering
    /// connection, so consider `.idle_timeout(None)` (see the module docs).
    pub fn name_server(self) -> Self {
        self.expose(crate::nameserver::service())
    }

    /// Largest request frame accepted, in bytes. Default 16 MiB; clamped to
    /// 1 KiB ..= 1 GiB. Checked on the length prefix before any allocation.
    /// Worst case: one frame of this size buffered per connection while it arrives.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.max_frame_size = config::clamp_frame_size(bytes);
        self
    }

    /// Bytes of replies queued per connection before handlers wait for the
    /// client to read. Default 1 MiB. Worst case: twice this plus one frame
    /// per connection.
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.config.write_buffer = bytes.max(1);
        self
    }

    /// Time a new connection has to send its handshake. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Most connections open at once. Default 4096. A connection beyond it is
    /// answered with a go-away (the client's connect fails with
    /// [`Error::Overloaded`]) and closed. Worst-case memory is this many
    /// times the per-connection worst case (one frame being read plus twice
    /// the write buffer plus one frame).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }

    /// Most calls in flight on one connection. Default 4096. A call beyond it
    /// is answered at once with [`Error::Overloaded`] and does not run.
    /// Worst case: this many handler futures, each holding its decoded
    /// arguments and, while it waits to be sent, its encoded reply.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.limits.max_in_flight = n.max(1);
        self
    }

    /// How long a connection with no call in flight and no incoming traffic
    /// stays open. Default 5 min; `None` keeps idle connections forever. The
    /// check runs once per period, so a quiet connection closes between one
    /// and two periods after its last activity. Clients reconnect
    /// transparently on their next call.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }

    /// Time in-flight calls get to finish after shutdown starts; calls still
    /// running then are dropped. Default 10 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Shuts the server down gracefully when `token` is cancelled. The server
    /// uses a child of it, so [`ServerHandle::stop`] does not cancel `token`.
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Shuts the server down gracefully when `signal` completes: for
    /// example [`shutdown_signal()`](crate::shutdown_signal), so that Ctrl-C
    /// and SIGTERM stop the server as [`ServerHandle::stop`] does. The
    /// future is polled from the moment the server starts.
    pub fn shutdown_on<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// Binds the address and starts serving in the background. Fails at once
    /// (no retry) if the address is in use, naming it.
    pub async fn start(mut self) -> Result<ServerHandle, Error> {
        let signal = self.signal.take();
        let shared = self.into_shared()?;
        let (listener, local_addr) = Listener::bind(&shared.bind_addr).await?;
        tracing::info!(addr = %local_addr, "listening");
        shared.tracker.spawn(accept_loop(shared.clone(), listener));
        spawn_supervisor(&shared);
        if let Some(signal) = signal {
            let token = shared.token.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = signal => token.cancel(),
                    _ = token.cancelled() => {}
                }
            });
        }
        Ok(ServerHandle { shared, local_addr })
    }

    /// Starts and serves until the shutdown token (see
    /// [`ServerBuilder::shutdown_token`]) is cancelled, then shuts down gracefully.
    pub async fn serve(self) -> Result<(), Error> {
        let handle = self.start().await?;
        handle.stopped().await;
        Ok(())
    }

    fn into_shared(self) -> Result<Arc<Shared>, Error> {
        let mut by_name = HashMap::new();
        let mut objects = Vec::with_capacity(self.objects.len());
        for (name, service) in self.objects {
            let handle = u32::try_from(objects.len() + 1)
                .map_err(|_| Error::DuplicateObject { name: name.clone() })?;
            if by_name.insert(name.clone(), handle).is_some() {
                return Err(Error::DuplicateObject { name });
            }
            objects.push(Exposed {
                name: Arc::from(name),
                service,
            });
        }
        let token = self.token.map(|t| t.child_token()).unwrap_or_default();
        Ok(Arc::new(Shared {
            bind_addr: self.addr,
            objects,
            by_name,
            config: self.config,
            limits: self.limits,
            gauges: Gauges::default(),
            grace_period: self.grace_period,
            token,
            hard_stop: CancellationToken::new(),
            stopped: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
        }))
    }
}

struct Exposed {
    name: Arc<str>,
    service: Arc<dyn Service>,
}

#[derive(Debug, Clone)]
struct Limits {
    max_connections: usize,
    max_in_flight: usize,
    idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: config::DEFAULT_MAX_CONNECTIONS,
            max_in_flight: config::DEFAULT_MAX_IN_FLIGHT,
            idle_timeout: Some(config::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

#[derive(Debug, Default)]
struct Gauges {
    connections: AtomicUsize,
    refusing: AtomicUsize,
    in_flight: AtomicUsize,
    buffered: Arc<AtomicUsize>,
}

/// A snapshot of a server's load, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open (handshaking or established).
    pub connections: usize,
    /// Calls running (handler futures not yet finished or dropped).
    pub in_flight: usize,
    /// Reply bytes encoded and not yet written to a socket, all connections.
    pub buffered_bytes: usize,
}

/// Closes a connection when dropped.
struct CloseOnDrop(Arc<Connection>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0
            .fail_all(Closure::Lost("the server ended the connection".into()));
    }
}

/// The calls of one connection that run as tasks (those that did not finish
/// on their first poll), by request id. Each counts against
/// `max_in_flight` from the moment its place is reserved until it is
/// cancelled, aborted, or its task ends — whichever comes first, on every path.
#[derive(Default)]
struct InFlight {
    table: Mutex<Table>,
    /// `table.calls.len()`, readable without the lock.
    count: AtomicUsize,
}

#[derive(Default)]
struct Table {
    calls: HashMap<u64, Entry>,
    /// Tells apart two calls that used the same id one after the other.
    next_seq: u64,
}

struct Entry {
    seq: u64,
    /// Set once the call's task exists.
    abort: Option<AbortHandle>,
}

/// A call's place in [`InFlight`]. It exists before the call's task and
/// moves into it, so however the task ends — finished, panicked, aborted
/// before or after its first poll — dropping it frees the place (unless a
/// cancel freed it already).
struct Slot {
    in_flight: Arc<InFlight>,
    id: u64,
    seq: u64,
}

impl InFlight {
    /// Calls in the table.
    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Reserves a place for call `id`; `None` if a call with this id is
    /// already in flight (a protocol violation).
    fn reserve(self: &Arc<Self>, id: u64) -> Option<Slot> {
        let mut table = self.lock();
        if table.calls.contains_key(&id) {
            return None;
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        table.calls.insert(id, Entry { seq, abort: None });
        self.count.store(table.calls.len(), Ordering::Relaxed);
        Some(Slot {
            in_flight: self.clone(),
            id,
            seq,
        })
    }

    /// Records how to abort the task now running the call of `id`/`seq`,
    /// if that call is still in the table.
    fn started(&self, id: u64, seq: u64, abort: AbortHandle) {
        let mut table = self.lock();
        match table.calls.get_mut(&id) {
            Some(entry) if entry.seq == seq => entry.abort = Some(abort),
            // The task ended already (and freed its place).
            _ => {}
        }
    }

    /// Frees call `id`'s place at once and aborts its task.
    fn cancel(&self, id: u64) -> bool {
        let entry = {
            let mut table = self.lock();
            let entry = table.calls.remove(&id);
            self.count.store(table.calls.len(), Ordering::Relaxed);
            entry
        };
        match entry {
            Some(entry) => {
                if let Some(abort) = entry.abort {
                    abort.abort();
                }
                true
            }
            None => false,
        }
    }

    /// Frees every place and aborts every task.
    fn abort_all(&self) {
        let calls = {
            let mut table = self.lock();
            self.count.store(0, Ordering::Relaxed);
            std::mem::take(&mut table.calls)
        };
        for entry in calls.into_values() {
            if let Some(abort) = entry.abort {
                abort.abort();
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.in_flight.lock();
        if table.calls.get(&self.id).is_some_and(|e| e.seq == self.seq) {
            table.calls.remove(&self.id);
            self.in_flight
                .count
                .store(table.calls.len(), Ordering::Relaxed);
        }
    }
}

/// Decrements a gauge when dropped (whether the work finished or was aborted).
struct GaugeGuard<'a>(&'a AtomicUsize);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared {
    bind_addr: Address,
    /// Object `handle` is `objects[handle - 1]`; handle 0 is the system object.
    objects: Vec<Exposed>,
    by_name: HashMap<String, u32>,
    config: ConnectionConfig,
    limits: Limits,
    gauges: Gauges,
    grace_period: Duration,
    /// Cancelled to start a graceful shutdown.
    token: CancellationToken,
    /// Cancelled when the grace period is over: remaining calls are dropped.
    hard_stop: CancellationToken,
    /// Cancelled when everything has stopped.
    stopped: CancellationToken,
    /// The accept loop and every connection task.
    tracker: TaskTracker,
    /// Numbers connections for [`CallContext::connection_id`].
    next_connection_id: AtomicU64,
}

/// A running server. Dropping it starts a graceful shutdown in the background;
/// call [`ServerHandle::stop`] to wait for it.
pub struct ServerHandle {
    shared: Arc<Shared>,
    local_addr: Address,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.token.cancel();
    }
}

impl ServerHandle {
    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> &Address {
        &self.local_addr
    }

    /// The token whose cancellation shuts this server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.token.clone()
    }

    /// Shuts down gracefully and returns when every connection has closed:
    /// at most the grace period plus the time to flush final replies.
    pub async fn stop(self) {
        self.shared.token.cancel();
        self.stopped().await;
    }

    /// Current load: connections, calls in flight, reply bytes buffered.
    pub fn stats(&self) -> ServerStats {
        let g = &self.shared.gauges;
        ServerStats {
            connections: g.connections.load(Ordering::Relaxed),
            in_flight: g.in_flight.load(Ordering::Relaxed),
            buffered_bytes: g.buffered.load(Ordering::Relaxed),
        }
    }

    /// Stops at once, as if the process died: no go-away, calls in flight
    /// are dropped, connections close. Returns when everything has stopped.
    pub async fn abort(self) {
        self.shared.hard_stop.cancel();
        self.shared.token.cancel();
        self.stopped().await;
    }

    /// Waits until the server has stopped (after its token is cancelled).
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await;
    }

    /// Serves one already-open byte stream (an in-memory pipe, a TLS stream...)
    /// as if it had been accepted.
    pub fn serve_io<T>(&self, io: T)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let stream = Stream::from_io(io, "io".to_owned());
        if self.shared.token.is_cancelled() {
            return;
        }
        match ConnectionSlot::take(&self.shared) {
            Some(slot) => {
                self.shared.tracker.spawn(serve_connection(slot, stream));
            }
            None => tracing::warn!("connection limit reached; refusing a stream"),
        }
    }
}

/// Waits for the shutdown signal, enforces the grace period, and marks the end.
fn spawn_supervisor(shared: &Arc<Shared>) {
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.token.cancelled().await;
        tracing::info!("shutting down");
        shared.tracker.close();
        tokio::select! {
            _ = shared.tracker.wait() => {}
            _ = tokio::time::sleep(shared.grace_period) => {
                tracing::warn!("grace period over; dropping calls still running");
                shared.hard_stop.cancel();
                shared.tracker.wait().await;
            }
        }
        tracing::info!("stopped");
        shared.stopped.cancel();
    });
}

async fn accept_loop(shared: Arc<Shared>, listener: Listener) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.token.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(stream) => match ConnectionSlot::take(&shared) {
                Some(slot) => {
                    shared.tracker.spawn(serve_connection(slot, stream));
                }
                None => {
                    tracing::warn!(peer = %stream.peer, "connection limit reached; refusing");
                    // Refusals are short (1 s at most) and themselves
                    // bounded: past that, the socket is just closed.
                    if let Some(refusal) = Refusal::take(&shared) {
                        shared.tracker.spawn(refuse(stream, refusal));
                    }
                }
            },
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "accept failed for one connection");
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; pausing");
                tokio::select! {
                    _ = shared.token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    // Dropping the listener here refuses new connections from now on.
}

/// One of the `max_connections` places, counted from accept (not from when
/// the connection's task first runs, so a burst cannot overshoot) until the
/// connection is gone.
struct ConnectionSlot(Arc<Shared>);

impl ConnectionSlot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        count_up_to(&shared.gauges.connections, shared.limits.max_connections)
            .then(|| Self(shared.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.gauges.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds one to `counter` unless it has reached `limit`; says whether it did.
fn count_up_to(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// Most refusals in progress at once.
const MAX_REFUSALS: usize = 64;

/// One of the [`MAX_REFUSALS`] places for a connection being refused.
struct Refusal(Arc<Shared>);

impl Refusal {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        count_up_to(&shared.gauges.refusing, MAX_REFUSALS).then(|| Self(shared.clone()))
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        self.0.gauges.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells a connection over the limit why it is refused, lets it finish
/// sending its hello (so the close is not a reset), and closes it.
async fn refuse(stream: Stream, _refusal: Refusal) {
    let Stream {
        mut read,
        mut write,
        ..
    } = stream;
    let frame = FrameBuf::go_away(wire::GOAWAY_CONNECTION_LIMIT).into_unchecked();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        write.write_all(&frame).await?;
        write.shutdown().await?;
        let mut sink = [0u8; 256];
        while read.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Most bytes a closing connection reads and discards after its last frame
/// (read into one small buffer: this bounds work, not memory).
const LINGER_BYTES: usize = 1 << 30;

/// A closing connection whose peer sends nothing for this long is closed
/// without waiting further for the peer to close its side.
const LINGER_QUIET: Duration = Duration::from_millis(250);

/// After the last go-away is written and the write side shut down: reads and
/// discards what the peer still sends until it closes its side (it has read
/// our end of stream) or falls quiet for [`LINGER_QUIET`], for at most
/// `limit` and [`LINGER_BYTES`]. Closing a socket while the peer is still
/// sending makes the kernel answer with a reset, which discards our last
/// frames (the go-away among them) before the peer has read them.
async fn linger(frames: &mut connection::Frames, limit: Duration) {
    let mut discarded = frames.read_buffer().len();
    let read = frames.get_mut();
    let mut sink = [0u8; 8 * 1024];
    let _ = tokio::time::timeout(limit, async {
        while discarded <= LINGER_BYTES {
            match tokio::time::timeout(LINGER_QUIET, read.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                // End of stream, an error, or a quiet peer.
                _ => break,
            }
        }
    })
    .await;
}

/// Per-connection serving state: the calls in flight, by request id.
struct ConnServer {
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    handlers: TaskTracker,
    /// Calls that did not finish on their first poll and run as tasks.
    in_flight: Arc<InFlight>,
    /// Set when a call finishes, so the idle timer counts from then.
    activity: Arc<AtomicBool>,
    /// Per object handle: the service this connection calls (the shared one,
    /// or its own instance for per-connection objects), set on first use.
    instances: Vec<OnceLock<Arc<dyn Service>>>,
    peer: Arc<str>,
    connection_id: u64,
}

async fn serve_connection(slot: ConnectionSlot, stream: Stream) {
    let shared = slot.0.clone();
    let span = tracing::debug_span!("ipc.conn", peer = %stream.peer);
    let _slot = slot;
    let serve = async {
        let handshake = tokio::select! {
            r = tokio::time::timeout(
                shared.config.handshake_timeout,
                connection::handshake_as_server(stream, &shared.config),
            ) => r,
            _ = shared.token.cancelled() => return,
        };
        let (frames, write, hello, peer) = match handshake {
            Ok(Ok(parts)) => parts,
            // Connecting and leaving without a word is what health checks
            // and liveness probes do: not worth a warning.
            Ok(Err(e @ Error::ConnectionLost { .. })) => {
                tracing::debug!(error = %e, "peer left before the handshake");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "handshake failed; closing connection");
                return;
            }
            Err(_) => {
                tracing::warn!("handshake timed out; closing connection");
                return;
            }
        };
        let conn = Arc::new(Connection::new(
            &shared.config,
            connection::peer_limit(&hello),
            peer,
            shared.gauges.buffered.clone(),
        ));
        let writer = connection::spawn_writer(&conn, write);
        // However this task ends (even by a panic), the connection is closed
        // and its pending calls fail: nothing waits on a dead connection.
        let _close = CloseOnDrop(conn.clone());
        let server = ConnServer {
            shared: shared.clone(),
            conn: conn.clone(),
            handlers: TaskTracker::new(),
            in_flight: Arc::default(),
            activity: Arc::default(),
            instances: shared.objects.iter().map(|_| OnceLock::new()).collect(),
            peer: Arc::from(conn.peer.as_str()),
            connection_id: shared.next_connection_id.fetch_add(1, Ordering::Relaxed),
        };
        let mut frames = frames;
        let closure = server.run(&mut frames).await;
        tracing::debug!(?closure, "connection closing");
        let graceful = matches!(closure, Closure::ShuttingDown);
        conn.fail_all(closure);
        let abort = writer.abort_handle();
        let flushed = tokio::select! {
            w = writer => matches!(w, Ok(Ok(()))),
            _ = shared.hard_stop.cancelled() => {
                abort.abort();
                false
            }
        };
        if graceful && flushed {
            tokio::select! {
                // Bounded by the grace period: by its end during a shutdown
                // (the hard stop), and by its length after an idle close.
                _ = linger(&mut frames, shared.grace_period) => {}
                _ = shared.hard_stop.cancelled() => {}
            }
        }
    };
    if span.is_disabled() {
        serve.await;
    } else {
        serve.instrument(span).await;
    }
}

impl ConnServer {
    /// Reads and dispatches until the peer leaves, the protocol breaks, or a
    /// shutdown has drained this connection.
    async fn run(&self, frames: &mut connection::Frames) -> Closure {
        let shared = &self.shared;
        let mut draining = false;
        // The highest request id read, told to the client when closing.
        let mut last_read = 0;
        let idle = shared.limits.idle_timeout;
        let idle_timer = tokio::time::sleep(idle.unwrap_or(Duration::MAX));
        tokio::pin!(idle_timer);
        // Whether a frame arrived since the idle timer was last armed. The
        // timer is re-armed only when it fires, not on every frame, so a
        // connection closes between one and two idle periods after it fell quiet.
        let mut traffic = false;
        // Made once: a fresh `cancelled()` per frame would lock the token.
        let hard_stop = shared.hard_stop.cancelled();
        tokio::pin!(hard_stop);
        let shutdown = shared.token.cancelled();
        tokio::pin!(shutdown);
        loop {
            let frame = tokio::select! {
                biased;
                _ = &mut hard_stop => {
                    self.abort_all();
                    return Closure::ShuttingDown;
                }
                _ = &mut shutdown, if !draining => {
                    draining = true;
                    self.go_away();
                    continue;
                }
                _ = self.handlers.wait(), if draining => {
                    let last = FrameBuf::go_away_after(wire::GOAWAY_SHUTDOWN, last_read);
                    let _ = self.conn.outbox.push_now(last.into_unchecked());
                    return Closure::ShuttingDown;
                }
                _ = &mut idle_timer, if idle.is_some() && !draining => {
                    let recently_busy = std::mem::take(&mut traffic)
                        | self.activity.swap(false, Ordering::Relaxed);
                    if !recently_busy && self.in_flight.len() == 0 {
                        tracing::debug!("idle timeout; closing connection");
                        draining = true;
                        self.go_away();
                    } else if self.conn.outbox.stalled() {
                        // Replies queued a whole period and none written:
                        // the peer stopped reading. Free its slot.
                        tracing::warn!("the peer stopped reading; closing connection");
                        self.abort_all();
                        return Closure::Lost("the peer stopped reading".into());
                    } else if let Some(idle) = idle {
                        idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                    }
                    continue;
                }
                f = frames.next() => f,
            };
            traffic = true;
            let frame = match frame {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    let e = connection::io_to_protocol(e);
                    tracing::warn!(error = %e, "closing connection");
                    self.abort_all();
                    return Closure::Lost(e.to_string());
                }
                None => {
                    tracing::debug!("peer closed the connection");
                    self.abort_all();
                    return Closure::Lost("the peer closed the connection".into());
                }
            };
            let inbound = self.conn.on_frame(frame);
            if let Ok(Some(Inbound::Request(r))) = &inbound {
                last_read = last_read.max(r.id);
            }
            match inbound {
                Ok(None) => {}
                Ok(Some(Inbound::Request(r))) => {
                    // Stop reading requests while replies cannot be sent: a
                    // client that does not read cannot make us buffer more.
                    // The wait ends at the grace deadline, or when the peer
                    // has read nothing for an idle period.
                    let handled = tokio::select! {
                        biased;
                        _ = &mut hard_stop => {
                            self.abort_all();
                            return Closure::ShuttingDown;
                        }
                        h = self.handle_request(r, draining) => h,
                    };
                    if let Err(e) = handled {
                        tracing::warn!(error = %e, "closing connection");
                        self.abort_all();
                        return Closure::Lost(e.to_string());
                    }
                }
                Ok(Some(Inbound::Cancel(id))) => self.cancel(id),
                Err(e) => {
                    tracing::warn!(error = %e, "closing connection");
                    self.abort_all();
                    return Closure::Lost(e.to_string());
                }
            }
        }
    }

    /// Waits for write space, then starts the request (or, while draining,
    /// refuses it). An error closes the connection.
    async fn handle_request(&self, r: Request, draining: bool) -> Result<(), Error> {
        let space = self.conn.outbox.has_space();
        match self.shared.limits.idle_timeout {
            Some(stall) => {
                tokio::time::timeout(stall, space)
                    .await
                    .map_err(|_| Error::ConnectionLost {
                        reason: format!("the peer read nothing for {stall:?}"),
                    })?
            }
            None => space.await,
        }
        if draining {
            let reply = Reply::error(Status::ShuttingDown, "");
            self.answer(r.id, r.oneway, reply).await;
            return Ok(());
        }
        self.dispatch(r).await
    }

    /// Announces the shutdown and stops taking calls; `run` ends when the
    /// calls in flight are done.
    fn go_away(&self) {
        let frame = FrameBuf::go_away(wire::GOAWAY_SHUTDOWN).into_unchecked();
        let _ = self.conn.outbox.push_now(frame);
        self.handlers.close();
    }

    async fn reply(&self, id: u64, reply: Reply) {
        self.conn.send_reply(id, reply.0).await;
    }

    /// Replies, or for a oneway call (no one is waiting) logs what went wrong.
    async fn answer(&self, id: u64, oneway: bool, reply: Reply) {
        if oneway {
            reply.log_if_error();
        } else {
            self.reply(id, reply).await;
        }
    }

    fn cancel(&self, id: u64) {
        if self.in_flight.cancel(id) {
            tracing::debug!(id, "call cancelled by the client");
        }
    }

    fn abort_all(&self) {
        self.in_flight.abort_all();
    }

    /// Starts a request. An error means the peer broke the protocol.
    async fn dispatch(&self, req: Request) -> Result<(), Error> {
        let oneway = req.oneway;
        if req.object == wire::SYSTEM_OBJECT {
            let reply = self.system_call(&req);
            self.answer(req.id, oneway, reply).await;
            return Ok(());
        }
        let found = usize::try_from(req.object)
            .ok()
            .and_then(|h| h.checked_sub(1))
            .and_then(|i| Some((self.shared.objects.get(i)?, self.instances.get(i)?)));
        let Some((exposed, instance)) = found else {
            let detail = format!("no object has handle {}", req.object);
            let reply = Reply::error(Status::UnknownObject, &detail);
            self.answer(req.id, oneway, reply).await;
            return Ok(());
        };
        // User code runs here, on the connection's own task: the instance
        // factory and the arguments' `Deserialize`. A panic in either is
        // that call's failure, not the connection's.
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // Per-connection objects get their instance on first use.
            let service = instance.get_or_init(|| {
                exposed
                    .service
                    .for_connection()
                    .unwrap_or_else(|| exposed.service.clone())
            });
            (service.descriptor(), service.call(req.method, &req.args))
        }));
        let (descriptor, started) = match started {
            Ok(started) => started,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(%message, "panic while starting a call");
                let reply = Reply::error(Status::Panic, &message);
                self.answer(req.id, oneway, reply).await;
                return Ok(());
            }
        };
        let future = match started {
            Ok(f) => f,
            Err(e) => {
                let reply = match e {
                    DispatchError::UnknownMethod(m) => {
                        let detail = format!(
                            "object `{}` (trait `{}`) has no method #{m}",
                            exposed.name, descriptor.trait_name
                        );
                        Reply::error(Status::UnknownMethod, &detail)
                    }
                    DispatchError::BadArguments(detail) => {
                        Reply::error(Status::BadRequest, &detail)
                    }
                    DispatchError::NoInstance => {
                        Reply::error(Status::UnknownObject, "object has no instance")
                    }
                };
                self.answer(req.id, oneway, reply).await;
                return Ok(());
            }
        };
        let future = CallContext {
            peer: self.peer.clone(),
            connection_id: self.connection_id,
            object: exposed.name.clone(),
            request_id: req.id,
        }
        .scope(future);
        let method = descriptor
            .methods
            .get(usize::from(req.method))
            .map_or("?", |m| m.name);
        let span = tracing::debug_span!("ipc.handle", object = %exposed.name, method, id = req.id);
        let id = req.id;
        let deadline = (req.deadline_ms > 0).then(|| Duration::from_millis(req.deadline_ms.into()));
        if self.in_flight.len() >= self.shared.limits.max_in_flight {
            let detail = format!(
                "{} calls already in flight on this connection",
                self.shared.limits.max_in_flight
            );
            self.answer(id, oneway, Reply::error(Status::Overloaded, &detail))
                .await;
            return Ok(());
        }
        let conn = self.conn.clone();
        let activity = self.activity.clone();
        let shared = self.shared.clone();
        let task = async move {
            let _running = GaugeGuard::new(&shared.gauges.in_flight);
            let mut guarded = std::pin::pin!(AssertUnwindSafe(future).catch_unwind());
            // The deadline timer is armed only if the handler has to wait:
            // most finish on their first poll and never need one.
            let first = std::future::poll_fn(|cx| Poll::Ready(guarded.as_mut().poll(cx))).await;
            let outcome = match (first, deadline) {
                (Poll::Ready(done), _) => Some(done),
                (Poll::Pending, Some(d)) => tokio::time::timeout(d, guarded).await.ok(),
                (Poll::Pending, None) => Some(guarded.await),
            };
            activity.store(true, Ordering::Relaxed);
            match outcome {
                Some(Ok(reply)) if oneway => reply.log_if_error(),
                Some(Ok(reply)) => conn.send_reply(id, reply.0).await,
                Some(Err(panic)) => {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(%message, oneway, "handler panicked");
                    if !oneway {
                        conn.send_reply(id, Reply::error(Status::Panic, &message).0)
                            .await;
                    }
                }
                // The caller has given up by now: no late reply.
                None => tracing::debug!(?deadline, "deadline passed; call dropped"),
            }
        };
        // Entering a disabled span on every poll still costs: skip it.
        let mut task: Pin<Box<dyn Future<Output = ()> + Send>> = if span.is_disabled() {
            Box::pin(task)
        } else {
            Box::pin(task.instrument(span))
        };
        // Most handlers finish on their first poll: run that poll here and
        // spare them a task, a table entry and a timer. Only a handler that
        // has to wait gets them.
        let first = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx))).await;
        if first.is_ready() {
            return Ok(());
        }
        // The call counts against the limit until its reply is queued, it is
        // cancelled, or its task is dropped: the slot exists before the task
        // and moves into it.
        let Some(slot) = self.in_flight.reserve(id) else {
            return Err(Error::Protocol {
                detail: format!("request id {id} is already in flight"),
            });
        };
        let seq = slot.seq;
        let handle = self.handlers.spawn(async move {
            let _slot = slot;
            task.await;
        });
        self.in_flight.started(id, seq, handle.abort_handle());
        Ok(())
    }

    /// The built-in object: method 0 resolves a name to a handle.
    fn system_call(&self, req: &Request) -> Reply {
        if req.method == wire::SYSTEM_LIST {
            let list: Vec<ObjectInfo> = self
                .shared
                .objects
                .iter()
                .map(|o| ObjectInfo::new(&o.name, o.service.descriptor()))
                .collect();
            return Reply::value(&list);
        }
        if req.method != wire::SYSTEM_RESOLVE {
            return Reply::error(
                Status::UnknownMethod,
                &format!("the system object has no method #{}", req.method),
            );
        }
        let lookup: ResolveRequest = match wire::decode(&req.args) {
            Ok(l) => l,
            Err(e) => return Reply::error(Status::BadRequest, &e.to_string()),
        };
        let Some(&handle) = self.shared.by_name.get(&lookup.name) else {
            return Reply::error(Status::UnknownObject, &lookup.name);
        };
        let exposed = usize::try_from(handle)
            .ok()
            .and_then(|h| h.checked_sub(1))
            .and_then(|i| self.shared.objects.get(i));
        let Some(exposed) = exposed else {
            return Reply::error(Status::UnknownObject, &lookup.name);
        };
        match exposed.service.descriptor().mismatch(&lookup) {
            None => Reply::value(&handle),
            Some(detail) => Reply::error(Status::TraitMismatch, &detail),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections here are single map operations that cannot panic halfway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
