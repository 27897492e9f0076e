//! The client: one connection, many proxies, many calls in flight.
//!
//! Calls encode their request in the caller's task, register a waiter under a
//! fresh request id, and queue the frame; the connection's reader task routes
//! each response to its waiter by id, in whatever order they arrive. When the
//! connection ends, every waiter is failed at once.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::config::{self, ConnectionConfig, Reconnect};
use crate::connection::{self, Closure, Connection, Frames, Inbound, Response};
use crate::error::{CallError, Error};
use crate::object::{ObjectDescriptor, ObjectInfo, Proxy, Reply, ResolveRequest};
use crate::transport::{self, Address, Stream};
use crate::wire::{self, FrameBuf, Status};

/// A connection to a server, from which typed proxies are made.
///
/// Cheap to clone; every clone and every proxy made from it share one
/// connection. The connection closes when the last of them is dropped, or on
/// [`Client::close`]. If it is lost (server restart, idle timeout, network),
/// the next call reconnects (see [`ClientBuilder::reconnect`]); calls that were
/// in flight fail with [`Error::ConnectionLost`] and are not replayed, except
/// for methods marked `#[idempotent]`.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_core::Error> {
/// let client = ipc_core::Client::connect("localhost:9099").await?;
/// # drop(client);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    addr: String,
    /// Where to reconnect; `None` for clients over a caller-supplied stream.
    target: Option<Address>,
    settings: ClientBuilder,
    link: Mutex<Link>,
    /// Held by the call running a round of reconnect attempts; calls that
    /// need a connection meanwhile wait for the round's outcome.
    round: tokio::sync::Mutex<()>,
    /// How the last round ended, if it failed.
    failed: Mutex<Option<Failure>>,
    /// Rounds of reconnect attempts finished so far (either way).
    rounds: AtomicU64,
}

/// A round of reconnect attempts that failed: every attempt the policy
/// allows was made.
#[derive(Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
    /// When the next attempt is due. Until then calls fail at once with
    /// this failure, unless the client waits for the server.
    retry_at: tokio::time::Instant,
}

#[derive(Clone)]
struct Link {
    conn: Arc<Connection>,
    /// Bumped on every reconnect; object handles are cached per generation.
    generation: u32,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.current().conn.outbox.close();
    }
}

impl ClientInner {
    fn current(&self) -> Link {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A connection that takes new calls: the current one, or a new one made
    /// by a round of attempts that follows the reconnect policy.
    async fn live(&self) -> Result<Link, Error> {
        let link = self.current();
        if link.conn.takes_calls() {
            return Ok(link);
        }
        // Boxed: the reconnect state machine is large and rarely needed, and
        // inline it would make every call's future (moved on each poll
        // setup) that much bigger.
        Box::pin(self.reconnect(link)).await
    }

    /// The last round's failure, while its backoff runs.
    fn recent_failure(&self) -> Option<Failure> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .as_ref()
            .filter(|f| f.retry_at > tokio::time::Instant::now())
            .cloned()
    }

    fn failure_error(&self, failure: &Failure) -> Error {
        Error::Connect {
            addr: self.addr.clone(),
            source: io::Error::new(failure.kind, failure.message.clone()),
        }
    }

    /// Every call that needs a connection either gets one or fails after a
    /// whole round of attempts has failed: its own, or the one it waited
    /// for (one round at a time, shared by the calls that arrive during it).
    /// After a failed round, calls fail at once until the next attempt is
    /// due, unless the client waits for the server.
    async fn reconnect(&self, link: Link) -> Result<Link, Error> {
        let policy = self.settings.reconnect;
        let Some(target) = self.target.as_ref().filter(|_| policy.max_attempts > 0) else {
            return Err(link.conn.refusal());
        };
        loop {
            if let Some(failure) = self.recent_failure() {
                if !self.settings.wait_for_server {
                    // Failing at once must still yield now and then, or a
                    // caller retrying in a loop would starve its thread.
                    tokio::task::consume_budget().await;
                    return Err(self.failure_error(&failure));
                }
                tokio::time::sleep_until(failure.retry_at).await;
            }
            let seen = self.rounds.load(Ordering::Acquire);
            let _turn = self.round.lock().await;
            let link = self.current();
            if link.conn.takes_calls() {
                return Ok(link);
            }
            if self.rounds.load(Ordering::Acquire) != seen {
                // A round ended while this call waited for its turn. If it
                // failed, it made every attempt the policy allows: share its
                // outcome rather than queue another round behind it.
                if let Some(failure) = self.recent_failure() {
                    if self.settings.wait_for_server {
                        continue;
                    }
                    return Err(self.failure_error(&failure));
                }
            }
            match self.round_of_attempts(target, link.generation).await {
                Ok(link) => return Ok(link),
                Err(e) if self.settings.wait_for_server => {
                    tracing::debug!(addr = %self.addr, error = %e, "still waiting for the server");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Up to `max_attempts` connection attempts with the policy's backoff
    /// between them. Records the outcome for the calls that waited.
    async fn round_of_attempts(&self, target: &Address, generation: u32) -> Result<Link, Error> {
        let policy = self.settings.reconnect;
        let mut last = None;
        for attempt in 0..policy.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(policy.backoff(attempt - 1)).await;
            }
            match self.settings.open(target).await {
                Ok(conn) => {
                    tracing::info!(addr = %self.addr, attempt, "reconnected");
                    let link = Link {
                        conn,
                        generation: generation.wrapping_add(1).max(1),
                    };
                    *self.link.lock().unwrap_or_else(|p| p.into_inner()) = link.clone();
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.rounds.fetch_add(1, Ordering::AcqRel);
                    return Ok(link);
                }
                Err(e) => {
                    tracing::debug!(addr = %self.addr, attempt, error = %e, "reconnect failed");
                    last = Some(e);
                }
            }
        }
        let last = last.unwrap_or_else(|| Error::ConnectionLost {
            reason: "no reconnect attempt was made".into(),
        });
        let (kind, message) = match &last {
            Error::Connect { source, .. } => (source.kind(), source.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        let next_due = policy.backoff(policy.max_attempts.saturating_sub(1));
        tracing::warn!(
            addr = %self.addr,
            attempts = policy.max_attempts,
            error = %last,
            retry_in = ?next_due,
            "could not reconnect",
        );
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failure {
            kind,
            message,
            retry_at: tokio::time::Instant::now() + next_due,
        });
        self.rounds.fetch_add(1, Ordering::AcqRel);
        Err(last)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("closed", &self.inner.current().conn.is_closed())
            .finish()
    }
}

/// Configures and opens a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: Address,
    config: ConnectionConfig,
    connect_timeout: Duration,
    call_timeout: Duration,
    reconnect: Reconnect,
    wait_for_server: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            addr: Address::default(),
            config: ConnectionConfig::default(),
            connect_timeout: config::DEFAULT_CONNECT_TIMEOUT,
            call_timeout: config::DEFAULT_CALL_TIMEOUT,
            reconnect: Reconnect::default(),
            wait_for_server: false,
        }
    }
}

impl ClientBuilder {
    /// The server's address. Default: `localhost:9099`.
    pub fn addr(mut self, addr: impl Into<Address>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Largest reply frame accepted, in bytes. Default 16 MiB; clamped to
    /// 1 KiB ..= 1 GiB. Told to the server, which answers a larger reply with
    /// [`Error::FrameTooLarge`] instead of sending it. Worst case: one frame of
    /// this size buffered while it arrives.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.max_frame_size = config::clamp_frame_size(bytes);
        self
    }

    /// Bytes of requests queued before callers wait for the socket. Default 1 MiB.
    /// Worst case: twice this plus one frame per connection.
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.config.write_buffer = bytes.max(1);
        self
    }

    /// Time allowed to connect and complete the handshake. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Default deadline of every call made through this client's proxies
    /// (reconnecting included). Default 60 s. Override per proxy with the
    /// generated `with_timeout`. The server drops a call whose deadline passed.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How to reconnect after the connection is lost. Default: 5 attempts,
    /// backoff 50 ms doubling up to 1 s. [`Reconnect::NEVER`] turns it off.
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = policy;
        self
    }

    /// What calls do while the server cannot be reached. Default `false`:
    /// after a round of reconnect attempts has failed, calls fail at once
    /// with its [`Error::Connect`] until the next attempt is due (the
    /// policy's next backoff), then the next call starts a new round.
    /// `true`: calls wait for the server instead, round after round, until
    /// their deadline ([`ClientBuilder::call_timeout`]).
    pub fn wait_for_server(mut self, wait: bool) -> Self {
        self.wait_for_server = wait;
        self
    }

    /// Connects to the configured address.
    pub async fn connect(self) -> Result<Client, Error> {
        let target = self.addr.clone();
        let conn = self.open(&target).await?;
        Ok(self.into_client(conn, target.to_string(), Some(target)))
    }

    /// Runs the client over an already-open byte stream (an in-memory pipe,
    /// a TLS stream...). Such a client cannot reconnect.
    pub async fn connect_io<T>(self, io: T) -> Result<Client, Error>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let stream = Stream::from_io(io, "io".to_owned());
        let conn = tokio::time::timeout(self.connect_timeout, self.start(stream))
            .await
            .map_err(|_| Error::Connect {
                addr: "io".to_owned(),
                source: io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
            })??;
        Ok(self.into_client(conn, "io".to_owned(), None))
    }

    fn into_client(self, conn: Arc<Connection>, addr: String, target: Option<Address>) -> Client {
        tracing::debug!(%addr, "connected");
        Client {
            inner: Arc::new(ClientInner {
                addr,
                target,
                settings: self,
                link: Mutex::new(Link {
                    conn,
                    generation: 1,
                }),
                round: tokio::sync::Mutex::new(()),
                failed: Mutex::new(None),
                rounds: AtomicU64::new(0),
            }),
        }
    }

    /// Connects and handshakes, within the connect timeout.
    async fn open(&self, target: &Address) -> Result<Arc<Connection>, Error> {
        let addr = target.to_string();
        let timed_out = || Error::Connect {
            addr: addr.clone(),
            source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        };
        tokio::time::timeout(self.connect_timeout, async {
            let stream = transport::connect(target).await?;
            self.start(stream).await
        })
        .await
        .map_err(|_| timed_out())?
    }

    async fn start(&self, stream: Stream) -> Result<Arc<Connection>, Error> {
        let (frames, write, hello, peer) =
            connection::handshake_as_client(stream, &self.config).await?;
        let conn = Arc::new(Connection::new(
            &self.config,
            connection::peer_limit(&hello),
            peer,
            Arc::default(),
        ));
        let writer = connection::spawn_writer(&conn, write);
        tokio::spawn(read_loop(conn.clone(), frames, writer));
        Ok(conn)
    }
}

/// Routes incoming frames until the connection ends, then fails what is pending.
async fn read_loop(
    conn: Arc<Connection>,
    mut frames: Frames,
    writer: tokio::task::JoinHandle<io::Result<()>>,
) {
    let closure = loop {
        let frame = match frames.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => break Closure::Lost(connection::io_to_protocol(e).to_string()),
            None if conn.is_going_away() => {
                break Closure::Lost("the server shut down before answering".into());
            }
            None => break Closure::Lost("the server closed the connection".into()),
        };
        match conn.on_frame(frame) {
            Ok(None) | Ok(Some(Inbound::Cancel(_))) => {}
            Ok(Some(Inbound::Request(r))) => {
                // This client exposes nothing (yet): answer, don't hang the caller.
                let reply = Reply::error(Status::UnknownObject, "this peer exposes no objects");
                conn.send_reply(r.id, reply.0).await;
            }
            Err(e) => {
                tracing::warn!(peer = %conn.peer, error = %e, "closing connection");
                break Closure::Lost(e.to_string());
            }
        }
    };
    tracing::debug!(peer = %conn.peer, ?closure, "connection ended");
    conn.fail_all(closure);
    let _ = writer.await;
}

impl Client {
    /// Connects to `addr` with default settings. See [`Client::builder`] for more.
    pub async fn connect(addr: impl Into<Address>) -> Result<Self, Error> {
        Self::builder().addr(addr).connect().await
    }

    /// A builder, starting from the defaults (`localhost:9099`).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A proxy for the object exposed under its trait's name (e.g. `"Calculator"`
    /// for `CalculatorProxy`). Fails here, not at the first call, if the server
    /// exposes no such object or exposes a different trait (or version) under it.
    pub async fn get_exposed_object<P: Proxy>(&self) -> Result<P, Error> {
        self.get_exposed_object_named(P::DESCRIPTOR.trait_name)
            .await
    }

    /// A proxy for the object exposed under `name`. Same checks as
    /// [`Client::get_exposed_object`].
    pub async fn get_exposed_object_named<P: Proxy>(&self, name: &str) -> Result<P, Error> {
        let object = ObjectRef {
            client: self.clone(),
            name: Arc::from(name),
            descriptor: P::DESCRIPTOR,
            cached: Arc::new(AtomicU64::new(0)),
            timeout: self.inner.settings.call_timeout,
        };
        let timeout = object.timeout;
        tokio::time::timeout(timeout, async {
            let link = self.inner.live().await?;
            object.handle_on(&link).await
        })
        .await
        .map_err(|_| Error::Timeout { after: timeout })??;
        Ok(P::from_object(object))
    }

    /// The server's directory: every object it exposes, with its trait,
    /// methods and fingerprint.
    pub async fn objects(&self) -> Result<Vec<ObjectInfo>, Error> {
        let timeout = self.inner.settings.call_timeout;
        let deadline_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let list = async {
            let link = self.inner.live().await?;
            let frame =
                FrameBuf::request(0, wire::SYSTEM_OBJECT, wire::SYSTEM_LIST, deadline_ms, &())
                    .map_err(|e| Error::Encode {
                        detail: e.to_string(),
                    })?;
            let response = round_trip(&link.conn, frame).await.0?;
            match response.status {
                Status::Ok => decode_body(&response),
                other => Err(Error::Protocol {
                    detail: format!("the directory answered with status {other:?}"),
                }),
            }
        };
        tokio::time::timeout(timeout, list)
            .await
            .map_err(|_| Error::Timeout { after: timeout })?
    }

    /// Closes the connection: queued requests are still sent, calls waiting
    /// for a reply fail with [`Error::ConnectionLost`] once the server hangs up.
    /// Later calls reconnect (if the client has an address and reconnecting is on).
    pub fn close(&self) {
        self.inner.current().conn.outbox.close();
    }

    /// Whether the current connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.current().conn.is_closed()
    }

    /// This end's address on the current connection (`IP:PORT`, `unix:PATH`,
    /// or `io` for a caller-supplied stream), as the server sees it as its peer.
    pub fn local_addr(&self) -> String {
        self.inner.current().conn.local.clone()
    }

    /// The address this client connects to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }
}

/// A resolved remote object: what a generated proxy wraps. Cheap to clone.
#[derive(Clone)]
pub struct ObjectRef {
    client: Client,
    name: Arc<str>,
    descriptor: &'static ObjectDescriptor,
    /// `(generation << 32) | handle` of the last lookup, shared by clones;
    /// 0 means not looked up on any connection yet.
    cached: Arc<AtomicU64>,
    timeout: Duration,
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectRef")
            .field("name", &self.name)
            .field("trait", &self.descriptor.trait_name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Removes a call's waiter (and tells the server) if the call future is
/// dropped before its reply arrived.
struct CallGuard<'a> {
    conn: &'a Connection,
    id: u64,
    armed: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.abandon(self.id);
        }
    }
}

/// Extra attempts for a call that did not run (any method) or whose
/// connection was lost (`#[idempotent]` methods only).
const MAX_RETRIES: u32 = 2;

impl ObjectRef {
    /// The name the object was looked up under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this object is reached through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The deadline applied to each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same object with another per-call deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// Calls a method that returns a plain value.
    pub fn call<'a, A, R>(
        &'a self,
        method: u16,
        args: &A,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'a
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned + 'a,
    {
        let frame = FrameBuf::request(0, 0, method, self.deadline_ms(), args);
        async move {
            let response = self.invoke(method, frame).await?;
            match response.status {
                Status::Ok => decode_body(&response),
                Status::AppError => Err(Error::Protocol {
                    detail: "an application error for a method that has none".into(),
                }),
                other => Err(self.status_error(other, &response.body)),
            }
        }
    }

    /// Calls a `#[oneway]` method: returns once the request is handed to the
    /// connection, without waiting for the server. Oneway calls from one proxy
    /// start on the server in the order they were made.
    pub fn call_oneway<'a, A>(
        &'a self,
        method: u16,
        args: &A,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a
    where
        A: Serialize + ?Sized,
    {
        let frame = FrameBuf::oneway(0, 0, method, args);
        async move {
            let mut frame = frame.map_err(|e| Error::Encode {
                detail: e.to_string(),
            })?;
            let send = async {
                let link = self.client.inner.live().await?;
                frame.set_object(self.handle_on(&link).await?);
                let conn = &link.conn;
                let size = frame.body_len();
                if size > conn.peer_max_frame {
                    return Err(Error::FrameTooLarge {
                        size,
                        limit: conn.peer_max_frame,
                    });
                }
                frame.set_id(conn.next_request_id());
                conn.outbox
                    .push(frame.into_frame())
                    .await
                    .map_err(|_| conn.refusal())
            };
            tokio::time::timeout(self.timeout, send)
                .await
                .map_err(|_| Error::Timeout {
                    after: self.timeout,
                })?
        }
    }

    /// Calls a method that returns `Result<T, E>`.
    pub fn call_fallible<'a, A, T, E>(
        &'a self,
        method: u16,
        args: &A,
    ) -> impl Future<Output = Result<T, CallError<E>>> + Send + 'a
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned + 'a,
        E: DeserializeOwned + 'a,
    {
        let frame = FrameBuf::request(0, 0, method, self.deadline_ms(), args);
        async move {
            let response = self.invoke(method, frame).await?;
            match response.status {
                Status::Ok => Ok(decode_body(&response)?),
                Status::AppError => Err(CallError::App(decode_body(&response)?)),
                other => Err(CallError::Rpc(self.status_error(other, &response.body))),
            }
        }
    }

    /// The deadline as sent to the server: whole milliseconds, rounded up.
    fn deadline_ms(&self) -> u32 {
        let ms = self.timeout.as_micros().div_ceil(1000);
        u32::try_from(ms).unwrap_or(u32::MAX).max(1)
    }

    /// Sends the request (reconnecting and retrying as allowed) under the
    /// call's deadline and returns the raw response.
    async fn invoke(
        &self,
        method: u16,
        frame: Result<FrameBuf, wire::EncodeError>,
    ) -> Result<Response, Error> {
        let info = self.descriptor.methods.get(usize::from(method));
        let method_name = info.map_or("?", |m| m.name);
        let idempotent = info.is_some_and(|m| m.idempotent);
        let span = tracing::debug_span!(
            "ipc.call",
            object = %self.name,
            method = method_name,
            id = tracing::field::Empty,
        );
        let frame = frame.map_err(|e| Error::Encode {
            detail: e.to_string(),
        })?;
        let attempts = async {
            let mut frame = frame;
            let mut attempt = 0;
            // Why the last attempt did not run, if it did not.
            let mut not_run: Option<Error> = None;
            loop {
                // A call sent again gets a connection the same way as a new
                // one: following the reconnect policy. If there is none, a
                // call the server refused fails with that refusal
                // (`ShuttingDown`: it did not run), the root cause.
                let link = match self.client.inner.live().await {
                    Ok(link) => link,
                    Err(e) => return Err(not_run.take().unwrap_or(e)),
                };
                frame.set_object(self.handle_on(&link).await?);
                let (result, sent) = round_trip(&link.conn, frame).await;
                // The call never left, or the server says it did not run:
                // sending it again (on a new connection) is safe for any
                // method. If it may have run, only idempotent methods go again.
                let not_run_now = sent.as_ref().is_some_and(|s| !s.left)
                    || matches!(&result, Ok(r) if r.status == Status::ShuttingDown)
                    || matches!(&result, Err(Error::ShuttingDown));
                let retry = not_run_now
                    || matches!(&result, Err(e) if idempotent && e.is_connection_error());
                match sent {
                    Some(sent) if retry && attempt < MAX_RETRIES => {
                        attempt += 1;
                        tracing::debug!(attempt, not_run = not_run_now, "sending the call again");
                        frame = sent.frame;
                        not_run = not_run_now.then(|| result.err().unwrap_or(Error::ShuttingDown));
                    }
                    Some(sent) => {
                        sent.frame.recycle();
                        return result;
                    }
                    None => return result,
                }
            }
        };
        let timed = tokio::time::timeout(self.timeout, attempts);
        // Entering a disabled span on every poll still costs: skip it.
        let result = if span.is_disabled() {
            timed.await
        } else {
            timed.instrument(span).await
        };
        result.map_err(|_| Error::Timeout {
            after: self.timeout,
        })?
    }

    /// The object's handle on this connection, looking it up (and checking
    /// the trait) once per connection.
    async fn handle_on(&self, link: &Link) -> Result<u32, Error> {
        let cached = self.cached.load(Ordering::Acquire);
        if cached >> 32 == u64::from(link.generation) {
            return Ok(cached as u32);
        }
        // Once per connection: kept out of line, like reconnecting.
        Box::pin(self.resolve(link)).await
    }

    async fn resolve(&self, link: &Link) -> Result<u32, Error> {
        let request = ResolveRequest::new(&self.name, self.descriptor);
        let frame = FrameBuf::request(
            0,
            wire::SYSTEM_OBJECT,
            wire::SYSTEM_RESOLVE,
            self.deadline_ms(),
            &request,
        )
        .map_err(|e| Error::Encode {
            detail: e.to_string(),
        })?;
        let response = round_trip(&link.conn, frame).await.0?;
        let handle: u32 = match response.status {
            Status::Ok => decode_body(&response)?,
            other => return Err(self.status_error(other, &response.body)),
        };
        self.cached.store(
            (u64::from(link.generation) << 32) | u64::from(handle),
            Ordering::Release,
        );
        Ok(handle)
    }

    fn status_error(&self, status: Status, body: &[u8]) -> Error {
        let detail = || wire::decode::<String>(body).unwrap_or_default();
        match status {
            Status::UnknownObject => Error::UnknownObject {
                name: self.name.to_string(),
            },
            Status::UnknownMethod => Error::UnknownMethod { detail: detail() },
            Status::TraitMismatch => Error::TraitMismatch {
                object: self.name.to_string(),
                detail: detail(),
            },
            Status::BadRequest => Error::BadRequest { detail: detail() },
            Status::Panic => Error::RemotePanic { message: detail() },
            Status::ShuttingDown => Error::ShuttingDown,
            Status::Overloaded => Error::Overloaded { detail: detail() },
            Status::FrameTooLarge => {
                let (size, limit) = wire::decode::<(u64, u64)>(body).unwrap_or_default();
                Error::FrameTooLarge {
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                }
            }
            Status::EncodeFailed => Error::Encode { detail: detail() },
            Status::Ok | Status::AppError => Error::Protocol {
                detail: "unexpected status".into(),
            },
        }
    }
}

/// The request bytes of an attempt, kept (shared, not copied) in case the
/// call is sent again.
struct Sent {
    frame: FrameBuf,
    /// Whether the bytes were handed to the connection; if not, the call
    /// certainly did not run.
    left: bool,
}

/// One request on one connection: register, send, wait for the response.
async fn round_trip(
    conn: &Connection,
    mut frame: FrameBuf,
) -> (Result<Response, Error>, Option<Sent>) {
    let size = frame.body_len();
    if size > conn.peer_max_frame {
        let error = Error::FrameTooLarge {
            size,
            limit: conn.peer_max_frame,
        };
        return (Err(error), None);
    }
    let (id, rx) = match conn.register() {
        Ok(registered) => registered,
        Err(e) => return (Err(e), Some(Sent { frame, left: false })),
    };
    tracing::Span::current().record("id", id);
    frame.set_id(id);
    frame.seal();
    let mut guard = CallGuard {
        conn,
        id,
        armed: true,
    };
    // Small frames are copied into the connection's write buffer (they would
    // be anyway); frames carrying large payloads go by reference.
    let pushed = match frame.contiguous() {
        Some(bytes) => conn.outbox.push_copy(bytes).await,
        None => conn.outbox.push(frame.clone().into_frame()).await,
    };
    if pushed.is_err() {
        return (Err(conn.refusal()), Some(Sent { frame, left: false }));
    }
    let result = rx.await;
    guard.armed = false;
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(Error::ConnectionLost {
            reason: "the connection ended".into(),
        }),
    };
    (result, Some(Sent { frame, left: true }))
}

fn decode_body<T: DeserializeOwned>(response: &Response) -> Result<T, Error> {
    wire::decode_shared(&response.body).map_err(|e| Error::Decode {
        detail: e.to_string(),
    })
}
