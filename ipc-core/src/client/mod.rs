//! The client: one connection, many proxies, many calls in flight.
//!
//! A call encodes its request on the connection it goes out on, which gives
//! it the next request id; the connection's reader routes each response to
//! its call by id, in whatever order they arrive. When the connection ends,
//! every call waiting on it fails at once. The client's connection serves
//! too: objects it passes to the server (callbacks) are called over it.

mod lookups;
mod object_ref;
mod reconnect;
mod replicas;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{self, ConnectionConfig, Reconnect};
use crate::connection::{self, Closure, Connection, Frames, Gauges, Labels, NoHost};
use crate::context::Peer;
use crate::error::Error;
use crate::object::{ObjectDescriptor, ObjectInfo};
use crate::transport::{self, Address, Socket, Stream, TlsClient};

pub use object_ref::ObjectRef;
pub(crate) use reconnect::Link;
use reconnect::Links;
pub use replicas::{
    Endpoint, Membership, Policy, ReplicaState, ReplicaStatus, Replicas, ReplicasBuilder,
};

/// A connection to a server, from which typed proxies are made.
///
/// Cheap to clone; every clone and every proxy made from it share one
/// connection. The connection closes when the last of them is dropped (and
/// no proxy to an object the server returned on it is left), or on
/// [`Client::close`]. If it is lost (server restart, idle timeout, network),
/// the next call reconnects (see [`ClientBuilder::reconnect`]); calls that
/// were in flight fail with [`Error::ConnectionLost`] and are not replayed,
/// except for methods marked `#[idempotent]`.
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
    links: Arc<Links>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.links.addr)
            .field("closed", &self.links.current().conn.is_closed())
            .finish()
    }
}

/// The client side of an exposed trait: the `{Trait}Proxy` type that
/// `#[expose]` generates. Obtain one with [`Client::get_exposed_object`], or
/// receive one as a [`crate::Remote`].
///
/// Its methods work on any proxy, so generic code can set a deadline:
///
/// ```
/// use std::time::Duration;
/// use ipc_core::Proxy;
///
/// fn impatient<P: Proxy>(proxy: &P) -> P {
///     proxy.with_timeout(Duration::from_millis(100))
/// }
/// # let _ = impatient::<ipc_core::nameserver::NameServerProxy>;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a proxy type",
    label = "expected the `{{Trait}}Proxy` that `#[expose]` generates",
    note = "name the proxy type: `let calc: CalculatorProxy = client.get_exposed_object().await?;`"
)]
pub trait Proxy: Clone + Send + Sync + Sized + 'static {
    /// The trait this proxy speaks.
    const DESCRIPTOR: &'static ObjectDescriptor;

    /// Wraps an object reference.
    #[doc(hidden)]
    fn from_object(object: ObjectRef) -> Self;

    /// The object reference inside.
    #[doc(hidden)]
    fn object(&self) -> &ObjectRef;

    /// The name the remote object was looked up under (its trait's name for
    /// objects passed over a connection).
    fn object_name(&self) -> &str {
        self.object().name()
    }

    /// The deadline applied to each call made through this proxy.
    fn timeout(&self) -> Duration {
        self.object().timeout()
    }

    /// This proxy with another deadline for each call. Cheap: shares the
    /// connection.
    fn with_timeout(&self, timeout: Duration) -> Self {
        Self::from_object(self.object().with_timeout(timeout))
    }
}

/// Configures and opens a [`Client`]. Every setting has a default (listed
/// on each method and in the README's "Defaults and limits").
///
/// ```no_run
/// use std::time::Duration;
/// use ipc_core::Client;
/// use ipc_core::config::Reconnect;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_core::Error> {
/// let client = Client::builder()
///     .addr("localhost:9099")                     // the default
///     .call_timeout(Duration::from_secs(5))       // default 60 s
///     .reconnect(Reconnect {                      // default 5 attempts, 50 ms..1 s
///         max_attempts: 10,
///         initial_backoff: Duration::from_millis(100),
///         max_backoff: Duration::from_secs(2),
///     })
///     .wait_for_server(true)                      // default: fail fast between rounds
///     .connect()
///     .await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: Address,
    config: ConnectionConfig,
    connect_timeout: Duration,
    call_timeout: Duration,
    pub(crate) reconnect: Reconnect,
    pub(crate) wait_for_server: bool,
    tls: Option<TlsClient>,
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
            tls: None,
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
    /// (reconnecting included), including proxies to objects the server
    /// returns. Default 60 s. Override per proxy with `with_timeout`. The
    /// server drops a call whose deadline passed.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self.config.call_timeout = timeout;
        self
    }

    /// Bytes of stream items (item frames) the server may send ahead of
    /// what this client has read, per stream. Default 256 KiB. A stream the
    /// caller stops reading holds the server's producer at this; worst case
    /// held by this client per open stream: this plus one frame.
    pub fn stream_window(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes.max(1);
        self
    }

    /// Most objects this client exports to the server at once (callbacks
    /// passed as [`crate::Remote`] arguments and not yet released). Default
    /// 4096; a call that would export one more fails with
    /// [`Error::Overloaded`] before it is sent.
    pub fn max_objects(mut self, n: usize) -> Self {
        self.config.max_objects = n;
        self
    }

    /// Most calls the server makes into this client's callbacks that run at
    /// once. Default 4096; past it the server's call gets
    /// [`Error::Overloaded`].
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n.max(1);
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

    /// Proves to the server that this client holds `key`, and checks the
    /// server proves it too, in the handshake (see
    /// [`ServerBuilder::auth_key`](crate::ServerBuilder::auth_key)). A server
    /// without a key, or with another, makes the connect fail with
    /// [`Error::AuthFailed`]. Default: no key.
    pub fn auth_key(mut self, key: crate::AuthKey) -> Self {
        self.config.auth_key = Some(key);
        self
    }

    /// TLS settings, for (and only for) a `tls://HOST:PORT` address: the CAs
    /// to trust, the server name, a client certificate for mutual TLS.
    pub fn tls(mut self, tls: TlsClient) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects to the configured address and completes the handshake (and
    /// authentication, with a key): a server that refuses — another protocol
    /// version, its connection limit, a key it requires, its authorization
    /// rule — fails this call.
    pub async fn connect(self) -> Result<Client, Error> {
        let target = self.addr.clone();
        let conn = self.open(&target, true).await?;
        Ok(self.into_client(conn, target.clone(), Some(target)))
    }

    /// Connects to the configured address and sends the hello without
    /// waiting for the server's: the first lookup or call goes out right
    /// behind it. With [`Client::proxy`] as well, connecting and the first
    /// call take one round trip instead of three (hello, lookup, call).
    ///
    /// What [`ClientBuilder::connect`] would report about the handshake (a
    /// protocol version mismatch with both versions, the connection limit,
    /// a key the server requires, its authorization rule) is reported by
    /// the first lookup or call instead, and fails everything queued behind
    /// the hello; nothing of it runs. Connecting itself (refused,
    /// unreachable, TLS) still fails here. With a shared key there is
    /// nothing to gain — no request may precede the authentication — and
    /// this behaves as `connect`.
    pub async fn connect_lazy(self) -> Result<Client, Error> {
        let target = self.addr.clone();
        let conn = self.open(&target, false).await?;
        Ok(self.into_client(conn, target.clone(), Some(target)))
    }

    /// Runs the client over an already-open byte stream (an in-memory pipe,
    /// a TLS stream made elsewhere...). Such a client cannot reconnect. With
    /// TLS settings ([`ClientBuilder::tls`], naming the server), TLS runs over
    /// the stream.
    pub async fn connect_io<T>(self, io: T) -> Result<Client, Error>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let socket = Socket::from_io(io, "io".to_owned());
        let opening = async {
            let stream = match &self.tls {
                Some(tls) => tls.connector()?.connect(socket, None).await?,
                None => socket.plain(),
            };
            let conn = self.start(stream).await?;
            let closer = CloseUnlessEstablished(&conn);
            conn.established().await?;
            drop(closer);
            Ok::<_, Error>(conn)
        };
        let conn = tokio::time::timeout(self.connect_timeout, opening)
            .await
            .map_err(|_| Error::Connect {
                addr: "io".to_owned(),
                source: io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
            })??;
        Ok(self.into_client(conn, Address::from("io"), None))
    }

    fn into_client(self, conn: Arc<Connection>, addr: Address, target: Option<Address>) -> Client {
        tracing::debug!(%addr, "connected");
        Client {
            links: Arc::new(Links::new(addr, target, self, conn)),
        }
    }

    /// Connects and sends the hello, within the connect timeout; with
    /// `wait`, also waits for the server's (a reconnect counts only a
    /// connection the server accepted).
    pub(crate) async fn open(
        &self,
        target: &Address,
        wait: bool,
    ) -> Result<Arc<Connection>, Error> {
        let addr = target.to_string();
        let timed_out = || Error::Connect {
            addr: addr.clone(),
            source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        };
        let tls = match (target.is_tls(), &self.tls) {
            (true, Some(tls)) => Some(tls.connector()?),
            (false, None) => None,
            (true, None) => {
                return Err(Error::Config {
                    detail: format!(
                        "`{target}` is a TLS address: say which CAs to trust with \
                         ClientBuilder::tls"
                    ),
                });
            }
            (false, Some(_)) => {
                return Err(Error::Config {
                    detail: format!(
                        "TLS settings were given, but `{target}` is not a TLS address: use \
                         tls://HOST:PORT"
                    ),
                });
            }
        };
        tokio::time::timeout(self.connect_timeout, async {
            let socket = transport::connect(target).await?;
            let stream = match tls {
                Some(tls) => tls.connect(socket, target.host()).await?,
                None => socket.plain(),
            };
            let conn = self.start(stream).await?;
            if wait {
                // Dropped by the timeout, or failed: either way the
                // connection is closed (its reader ends when the peer does).
                let closer = CloseUnlessEstablished(&conn);
                conn.established().await?;
                drop(closer);
            }
            Ok::<_, Error>(conn)
        })
        .await
        .map_err(|_| timed_out())?
    }

    /// Sends the hello and starts the connection's reader and writer. The
    /// connection is held once, for the client's links.
    ///
    /// Without a key, requests may follow the hello at once: the reader
    /// takes the server's hello first (the connection is established then),
    /// and a failed handshake fails whatever was queued behind it with its
    /// error. With a key, the whole handshake comes first.
    async fn start(&self, stream: Stream) -> Result<Arc<Connection>, Error> {
        let opening = connection::begin_as_client(stream, &self.config)?;
        if !opening.offers_key() {
            let hello = opening.hello(&self.config);
            let connection::ClientOpening {
                frames,
                write,
                peer,
                local,
                certificate,
                credentials,
                ..
            } = opening;
            let peer = Arc::new(Peer::new(&peer, 0, false, certificate, credentials));
            let conn = Connection::new(
                &self.config,
                None,
                Labels { local, peer },
                Arc::new(NoHost),
                Arc::new(Gauges::default()),
                1,
            );
            let writer = connection::spawn_writer(&conn, write, Some(hello));
            let hello = Some(self.connect_timeout);
            tokio::spawn(read_loop(reading(&conn), frames, writer, hello));
            return Ok(conn);
        }
        let handshake = connection::complete_as_client(opening, &self.config).await?;
        let peer_limit = handshake.peer_limit();
        let connection::Handshake {
            frames,
            write,
            peer,
            local,
            key_authenticated,
            certificate,
            credentials,
            ..
        } = handshake;
        let peer = Arc::new(Peer::new(
            &peer,
            0,
            key_authenticated,
            certificate,
            credentials,
        ));
        let conn = Connection::new(
            &self.config,
            Some(peer_limit),
            Labels { local, peer },
            Arc::new(NoHost),
            Arc::new(Gauges::default()),
            1,
        );
        let writer = connection::spawn_writer(&conn, write, None);
        tokio::spawn(read_loop(reading(&conn), frames, writer, None));
        Ok(conn)
    }
}

/// Closes a connection whose hello did not arrive, when dropped before
/// being disarmed (by a timeout, or on the error path).
struct CloseUnlessEstablished<'a>(&'a Arc<Connection>);

impl Drop for CloseUnlessEstablished<'_> {
    fn drop(&mut self) {
        if !self.0.is_established() {
            self.0.close(Closure::Lost(
                "the server did not complete the handshake".into(),
            ));
        }
    }
}

/// The reader's hold on `conn`: made before its task, so that the
/// connection closes even if the task is dropped before it runs (its
/// runtime shut down).
fn reading(conn: &Arc<Connection>) -> connection::CloseOnDrop {
    connection::CloseOnDrop {
        conn: conn.clone(),
        why: "the connection's reader task ended unexpectedly (its runtime shut down?)",
    }
}

/// Handles incoming frames until the connection ends, then ends what is
/// pending on it. `hello`: the server's hello is still to come, within this
/// long.
async fn read_loop(
    reading: connection::CloseOnDrop,
    mut frames: Frames,
    writer: tokio::task::JoinHandle<io::Result<()>>,
    hello: Option<Duration>,
) {
    let conn = reading.conn.clone();
    if let Some(within) = hello {
        let opened = tokio::time::timeout(
            within,
            connection::finish_without_key(&mut frames, &conn.config),
        )
        .await;
        let failed = match opened {
            Ok(Ok(peer_limit)) => {
                conn.establish(peer_limit);
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => Some(Error::Connect {
                addr: conn.peer.to_string(),
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server did not answer the hello",
                ),
            }),
        };
        if let Some(e) = failed {
            tracing::debug!(peer = %conn.peer, error = %e, "handshake failed");
            conn.close(Closure::Handshake(Arc::new(e)));
            let _ = writer.await;
            return;
        }
    }
    let closure = loop {
        let frame = match frames.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => break Closure::Lost(connection::io_to_protocol(e).to_string()),
            None if conn.is_going_away() => break Closure::ShuttingDown,
            None => break Closure::PeerClosed,
        };
        if let Err(e) = conn.on_frame(frame, false).await {
            tracing::warn!(peer = %conn.peer, error = %e, "closing connection");
            break Closure::Lost(e.to_string());
        }
    };
    tracing::debug!(peer = %conn.peer, %closure, "connection ended");
    conn.close(closure);
    let _ = writer.await;
}

impl Client {
    /// Connects to the default address, `localhost:9099`, with default
    /// settings: the client side of a zero-configuration server.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), ipc_core::Error> {
    /// let client = ipc_core::Client::connect_default().await?;
    /// println!("connected to {}", client.addr());
    /// # Ok(()) }
    /// ```
    pub async fn connect_default() -> Result<Self, Error> {
        Self::builder().connect().await
    }

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
        let object = ObjectRef::named(
            self.clone(),
            name,
            P::DESCRIPTOR,
            self.links.settings.call_timeout,
        );
        object.resolve_now().await?;
        Ok(P::from_object(object))
    }

    /// A proxy for the object exposed under its trait's name, without asking
    /// the server first: the lookup goes out with the first call, in the same
    /// round trip. If the server has no such object, or another trait (or
    /// version) under the name, that first call fails with the error
    /// [`Client::get_exposed_object`] would have given, and nothing runs.
    /// Later calls (until a reconnect) use the handle the lookup returned.
    pub fn proxy<P: Proxy>(&self) -> P {
        self.proxy_named(P::DESCRIPTOR.trait_name)
    }

    /// As [`Client::proxy`], for the object exposed under `name`.
    pub fn proxy_named<P: Proxy>(&self, name: &str) -> P {
        P::from_object(ObjectRef::named(
            self.clone(),
            name,
            P::DESCRIPTOR,
            self.links.settings.call_timeout,
        ))
    }

    /// The server's directory: every object it exposes, with its trait,
    /// methods and fingerprint.
    ///
    /// ```
    /// use ipc_core::{Client, Server, expose};
    ///
    /// #[expose]
    /// pub trait Greeter {
    ///     async fn greet(&self, name: String) -> String;
    /// }
    /// struct Hi;
    /// impl Greeter for Hi {
    ///     async fn greet(&self, name: String) -> String { format!("Hi, {name}") }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ipc_core::Error> {
    /// let server = Server::builder().addr("127.0.0.1:0").expose(GreeterServer::new(Hi)).start().await?;
    /// let client = Client::connect(server.local_addr()).await?;
    /// for object in client.objects().await? {
    ///     println!("{} (trait {})", object.name, object.trait_name);
    ///     for method in &object.methods {
    ///         println!("    {}", method.signature);
    ///     }
    /// }
    /// let objects = client.objects().await?;
    /// assert_eq!(objects[0].methods[0].signature, "greet(String)->String");
    /// # server.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn objects(&self) -> Result<Vec<ObjectInfo>, Error> {
        object_ref::directory(self).await
    }

    /// The schema of the object exposed under `name`: every method's
    /// argument and return formats and the named types they use (see
    /// [`crate::schema`]), what a client without the trait needs to call it.
    /// Fails with [`Error::UnknownObject`] if the server exposes no such
    /// object, or hides it from this client.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ipc_core::Error> {
    /// let client = ipc_core::Client::connect("localhost:9099").await?;
    /// let schema = client.schema("Calculator").await?;
    /// for method in &schema.methods {
    ///     println!("{}: {:?} -> {:?}", method.name, method.args, method.output);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn schema(&self, name: &str) -> Result<crate::ObjectSchema, Error> {
        object_ref::schema(self, name).await
    }

    /// Closes the connection: queued requests are still sent, calls waiting
    /// for a reply fail with [`Error::ConnectionLost`] once the server hangs up.
    /// Later calls reconnect (if the client has an address and reconnecting is on).
    pub fn close(&self) {
        self.links.current().conn.outbox.close();
    }

    /// Whether the current connection has ended.
    pub fn is_closed(&self) -> bool {
        self.links.current().conn.is_closed()
    }

    /// This end's address on the current connection (`IP:PORT`, `unix:PATH`,
    /// or `io` for a caller-supplied stream), as the server sees it as its peer.
    pub fn local_addr(&self) -> Address {
        Address::from(self.links.current().conn.local.as_str())
    }

    /// The address this client connects to (`io` for a client over a
    /// caller-supplied stream).
    pub fn addr(&self) -> &Address {
        &self.links.addr
    }

    /// The connection state behind this client.
    pub(crate) fn links(&self) -> &Links {
        &self.links
    }

    /// The default call deadline.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.links.settings.call_timeout
    }
}
