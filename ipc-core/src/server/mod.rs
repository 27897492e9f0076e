//! The server: named objects, one task per connection, and graceful
//! shutdown driven by a [`CancellationToken`].
//!
//! `accept` takes connections (within `max_connections`), `conn` serves each
//! one (the handshake, the read loop, draining, the lingering close); what
//! a connection does with the frames it reads is the shared connection
//! machinery's.
//!
//! Shutdown, step by step: the token is cancelled (by [`ServerHandle::stop`],
//! by dropping the handle, by the caller's own token or
//! [`ServerBuilder::shutdown_on`]); the tasks given to
//! [`ServerHandle::before_drain`] run (a registry deregistration, say) while
//! the server still serves; then the listener closes, so new connections
//! are refused; every connection sends `GoAway`, ends its streams
//! (`ShuttingDown`), answers new requests with `ShuttingDown` and waits for
//! its in-flight calls; after the grace period, calls still running are
//! dropped. Then the connections close and `stop` returns.

mod accept;
mod conn;
mod lookups;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, ConnectionConfig};
use crate::connection::Gauges as ConnectionGauges;
use crate::context::{Access, Peer};
use crate::error::Error;
use crate::service::Service;
use crate::telemetry::{ObjectMetrics, ServerMetrics};
use crate::transport::{Address, Listener, Socket, TlsAcceptor, TlsServer};

use accept::{ConnectionSlot, accept_loop};

/// Entry point for building a server: `Server::builder()`.
#[derive(Debug)]
pub struct Server(());

impl Server {
    /// A builder with the defaults: `localhost:9099`, no objects.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// Configures a server: its address, its objects, its limits. Every setting
/// has a default (listed on each method and in the README's "Defaults and
/// limits"); set only what you need.
///
/// ```
/// use std::time::Duration;
/// use ipc_core::{Server, expose};
///
/// #[expose]
/// pub trait Clock {
///     async fn now_ms(&self) -> u64;
/// }
/// struct Wall;
/// impl Clock for Wall {
///     async fn now_ms(&self) -> u64 { 1_700_000_000_000 }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_core::Error> {
/// let server = Server::builder()
///     .addr("127.0.0.1:0")                   // default localhost:9099
///     .expose(ClockServer::new(Wall))         // named "Clock"
///     .expose_as("backup-clock", ClockServer::new(Wall))
///     .max_connections(100)                   // default 4096
///     .grace_period(Duration::from_secs(2))   // default 10 s
///     .start()
///     .await?;
/// println!("serving on {}", server.local_addr());
/// server.stop().await;
/// # Ok(()) }
/// ```
pub struct ServerBuilder {
    addr: Address,
    config: ConnectionConfig,
    limits: Limits,
    grace_period: Duration,
    token: Option<CancellationToken>,
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    objects: Vec<(String, Arc<dyn Service>)>,
    tls: Option<TlsServer>,
    authorize: Option<Authorizer>,
    unix_mode: u32,
    metrics: bool,
}

/// An authorization rule (see [`ServerBuilder::authorize`]).
pub(crate) type Authorizer = Arc<dyn Fn(&Peer, Access<'_>) -> bool + Send + Sync>;

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
            tls: None,
            authorize: None,
            unix_mode: config::DEFAULT_UNIX_MODE,
            metrics: true,
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
        self.config.max_in_flight = n.max(1);
        self
    }

    /// Most server-push streams open at once on one connection. Default
    /// 1024. A call that would open one more is answered
    /// [`Error::Overloaded`]. Worst case: this many producers, each with at
    /// most the client's stream window of items sent and not yet read.
    pub fn max_streams(mut self, n: usize) -> Self {
        self.config.max_streams = n;
        self
    }

    /// Most objects the server exports on one connection at once (objects
    /// its methods return, as [`crate::Remote`]). Default 4096. A reply that
    /// would export one more is answered [`Error::Overloaded`]. Worst case:
    /// this many objects alive per connection.
    pub fn max_objects(mut self, n: usize) -> Self {
        self.config.max_objects = n;
        self
    }

    /// Bytes of stream items (item frames) this server lets a client send
    /// ahead of what it has consumed, per stream it receives. Default
    /// 256 KiB. (Servers receive streams only from clients' callbacks.)
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes.max(1);
        self
    }

    /// Default deadline of calls the server makes through proxies it
    /// received (callbacks). Default 60 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// How long a connection with no call in flight and no incoming traffic
    /// stays open. Default 5 min; `None` keeps idle connections forever. The
    /// check runs once per period, so a quiet connection closes between one
    /// and two periods after its last activity. Clients reconnect
    /// transparently on their next call.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.idle_timeout = timeout;
        self.config.stall_timeout = timeout;
        self
    }

    /// Whether to report metrics through the [`metrics`] facade (names in
    /// [`crate::telemetry`]): per object and method, calls by outcome, calls
    /// in flight and their duration; connections and bytes. Default `true`:
    /// they go to the recorder installed when a method is first called (and,
    /// for connections and bytes, when the server starts), and cost two clock
    /// reads per call when none is. `false` turns them off entirely.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
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

    /// Requires every client to prove it holds `key` (and proves this server
    /// holds it too) before anything else is read: a mutual HMAC-SHA256
    /// challenge–response over fresh nonces from both sides, costing one
    /// round trip at connect and nothing per call. The key never crosses
    /// the wire and is never logged. Default: no key. A client without the
    /// key, or with another, gets [`Error::AuthFailed`]; so does a client with
    /// a key when the server has none (no silent downgrade).
    pub fn auth_key(mut self, key: crate::AuthKey) -> Self {
        self.config.auth_key = Some(key);
        self
    }

    /// Serves TLS (needed by, and only by, a `tls://HOST:PORT` address;
    /// [`ServerBuilder::start`] fails with [`Error::Config`] otherwise). The
    /// TLS handshake runs in the connection's task, within the handshake
    /// timeout, under `max_connections`.
    pub fn tls(mut self, tls: TlsServer) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Decides who may do what: `rule(peer, access)` is asked once per
    /// connection ([`Access::Connect`]: `false` closes it), for each object
    /// a lookup or the directory would show ([`Access::Object`]: `false`
    /// hides it), and before each call to a named object ([`Access::Call`]:
    /// `false` answers [`Error::PermissionDenied`] and the handler never
    /// runs). `peer` tells who is calling: address, TLS certificate, shared
    /// key, Unix credentials. Default: everything is allowed. The rule runs
    /// on the connection's reader: keep it quick.
    ///
    /// ```
    /// use ipc_core::{Access, Server};
    /// // Only the server's own user may connect over a Unix socket;
    /// // nobody may call `shutdown` on `Admin`.
    /// let me = 0; // the server's uid
    /// let server = Server::builder().authorize(move |peer, access| match access {
    ///     Access::Connect => peer.credentials().is_none_or(|c| c.uid == me),
    ///     Access::Call { object: "Admin", method: "shutdown" } => false,
    ///     _ => true,
    /// });
    /// # drop(server);
    /// ```
    pub fn authorize<F>(mut self, rule: F) -> Self
    where
        F: Fn(&Peer, Access<'_>) -> bool + Send + Sync + 'static,
    {
        self.authorize = Some(Arc::new(rule));
        self
    }

    /// Permissions of the socket file when listening on a Unix socket.
    /// Default `0o600`: only the server's own user can connect (connecting
    /// needs write permission on the file). Set before the first accept.
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.unix_mode = mode;
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
        let unix_mode = self.unix_mode;
        let shared = self.into_shared()?;
        let (listener, local_addr) = Listener::bind(&shared.bind_addr, unix_mode).await?;
        tracing::info!(addr = %local_addr, "listening");
        shared.tracker.spawn(accept_loop(shared.clone(), listener));
        spawn_supervisor(&shared);
        if let Some(signal) = signal {
            let token = shared.requested.clone();
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
            let name: Arc<str> = Arc::from(name);
            let metrics = self.metrics.then(|| {
                Arc::new(ObjectMetrics::new(
                    name.clone(),
                    service.descriptor().methods.len(),
                ))
            });
            objects.push(Exposed {
                name,
                service,
                metrics,
            });
        }
        let tls = match (self.addr.is_tls(), &self.tls) {
            (true, Some(tls)) => Some(tls.acceptor()?),
            (false, None) => None,
            (true, None) => {
                return Err(Error::Config {
                    detail: format!(
                        "`{}` is a TLS address: give the server its certificate with \
                         ServerBuilder::tls",
                        self.addr
                    ),
                });
            }
            (false, Some(_)) => {
                return Err(Error::Config {
                    detail: format!(
                        "TLS settings were given, but `{}` is not a TLS address: use tls://HOST:PORT",
                        self.addr
                    ),
                });
            }
        };
        let requested = self.token.map(|t| t.child_token()).unwrap_or_default();
        Ok(Arc::new(Shared {
            bind_addr: self.addr,
            objects,
            by_name,
            config: self.config,
            limits: self.limits,
            gauges: Gauges::default(),
            grace_period: self.grace_period,
            requested,
            before_drain: Mutex::new(Some(Vec::new())),
            token: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            stopped: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
            tls,
            authorize: self.authorize,
            metrics: self.metrics.then(ServerMetrics::register),
        }))
    }
}

/// A task given to [`ServerHandle::before_drain`].
type BeforeDrain = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Exposed {
    name: Arc<str>,
    service: Arc<dyn Service>,
    /// Its metric handles, unless metrics are off.
    metrics: Option<Arc<ObjectMetrics>>,
}

#[derive(Debug, Clone)]
struct Limits {
    max_connections: usize,
    idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: config::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(config::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

#[derive(Debug, Default)]
struct Gauges {
    connections: AtomicUsize,
    refusing: AtomicUsize,
    /// Summed over the connections.
    connection: Arc<ConnectionGauges>,
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
    /// Server-push streams being produced, all connections.
    pub streams: usize,
    /// Objects the server has exported (returned as [`crate::Remote`]) and
    /// the clients have not released, all connections.
    pub remote_objects: usize,
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
    /// Cancelled to ask for a graceful shutdown (the token users see).
    requested: CancellationToken,
    /// What runs between the request and the drain; `None` once taken.
    before_drain: Mutex<Option<Vec<BeforeDrain>>>,
    /// Cancelled when draining starts: the listener closes, connections
    /// send GoAway.
    token: CancellationToken,
    /// Cancelled when the grace period is over: remaining calls are dropped.
    hard_stop: CancellationToken,
    /// Cancelled when everything has stopped.
    stopped: CancellationToken,
    /// The accept loop and every connection task.
    tracker: TaskTracker,
    /// Numbers connections for [`crate::CallContext::connection_id`].
    next_connection_id: AtomicU64,
    /// TLS, for a `tls://` address.
    tls: Option<TlsAcceptor>,
    /// Who may do what.
    authorize: Option<Authorizer>,
    /// Connections and bytes, unless metrics are off.
    metrics: Option<ServerMetrics>,
}

/// A running server. Dropping it starts a graceful shutdown in the background;
/// call [`ServerHandle::stop`] to wait for it.
#[must_use = "dropping the handle stops the server: keep it while serving, or call `stop().await`"]
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
        self.shared.requested.cancel();
    }
}

impl ServerHandle {
    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> &Address {
        &self.local_addr
    }

    /// The token whose cancellation shuts this server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.requested.clone()
    }

    /// Shuts down gracefully and returns when every connection has closed:
    /// at most the tasks given to [`ServerHandle::before_drain`], then the
    /// grace period plus the time to flush final replies.
    pub async fn stop(self) {
        self.shared.requested.cancel();
        self.stopped().await;
    }

    /// Runs `task` when a graceful shutdown starts, before the server stops
    /// accepting and sends GoAway: the place to withdraw this server from a
    /// registry, so that clients stop choosing it before it drains. Until
    /// every such task has finished (at most the grace period, then the
    /// drain starts anyway) the server serves as usual. Tasks run
    /// concurrently; [`ServerHandle::abort`] skips them. Given after the
    /// shutdown started, `task` is spawned at once.
    pub fn before_drain<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = self
            .shared
            .before_drain
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match tasks.as_mut() {
            Some(tasks) => tasks.push(Box::pin(task)),
            None => {
                tokio::spawn(task);
            }
        }
    }

    /// Current load: connections, calls in flight, reply bytes buffered,
    /// streams open, objects exported.
    pub fn stats(&self) -> ServerStats {
        let g = &self.shared.gauges;
        let c = &g.connection;
        ServerStats {
            connections: g.connections.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            buffered_bytes: c.buffered.load(Ordering::Relaxed),
            streams: c.streams.load(Ordering::Relaxed),
            remote_objects: c.objects.load(Ordering::Relaxed),
        }
    }

    /// Stops at once, as if the process died: no go-away, calls in flight
    /// are dropped, connections close. Returns when everything has stopped.
    pub async fn abort(self) {
        self.shared.hard_stop.cancel();
        self.shared.token.cancel();
        self.shared.requested.cancel();
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
        let socket = Socket::from_io(io, "io".to_owned());
        if self.shared.token.is_cancelled() {
            return;
        }
        match ConnectionSlot::take(&self.shared) {
            Some(slot) => {
                self.shared.tracker.spawn(conn::serve(slot, socket));
            }
            None => tracing::warn!("connection limit reached; refusing a stream"),
        }
    }
}

/// Waits for the shutdown signal, enforces the grace period, and marks the end.
fn spawn_supervisor(shared: &Arc<Shared>) {
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.requested.cancelled().await;
        let tasks = shared
            .before_drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        if !tasks.is_empty() && !shared.hard_stop.is_cancelled() {
            tokio::select! {
                _ = futures::future::join_all(tasks) => {}
                _ = tokio::time::sleep(shared.grace_period) => {
                    tracing::warn!("before-drain tasks still running after the grace period; draining");
                }
                _ = shared.hard_stop.cancelled() => {}
            }
        }
        shared.token.cancel();
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
