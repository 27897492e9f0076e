//! The client: one connection, many proxies, many calls in flight.
//!
//! Calls encode their request in the caller's task, register a waiter under a
//! fresh request id, and queue the frame; the connection's reader task routes
//! each response to its waiter by id, in whatever order they arrive. When the
//! connection ends, every waiter is failed at once.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::config::{self, ConnectionConfig};
use crate::connection::{self, Closure, Connection, Frames, Inbound, Response};
use crate::error::{CallError, Error};
use crate::object::{ObjectDescriptor, Proxy, Reply, ResolveRequest};
use crate::transport::{self, Address, Stream};
use crate::wire::{self, FrameBuf, Status};

/// A connection to a server, from which typed proxies are made.
///
/// Cheap to clone; every clone and every proxy made from it share one
/// connection. The connection closes when the last of them is dropped, or on
/// [`Client::close`].
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
    conn: Arc<Connection>,
    addr: String,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.conn.outbox.close();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("closed", &self.inner.conn.is_closed())
            .finish()
    }
}

/// Configures and opens a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: Address,
    config: ConnectionConfig,
    connect_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            addr: Address::default(),
            config: ConnectionConfig::default(),
            connect_timeout: config::DEFAULT_CONNECT_TIMEOUT,
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

    /// Connects to the configured address.
    pub async fn connect(self) -> Result<Client, Error> {
        let addr = self.addr.to_string();
        let timed_out = || Error::Connect {
            addr: addr.clone(),
            source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        };
        let stream = tokio::time::timeout(self.connect_timeout, transport::connect(&self.addr))
            .await
            .map_err(|_| timed_out())??;
        tokio::time::timeout(self.connect_timeout, self.start(stream, addr.clone()))
            .await
            .map_err(|_| timed_out())?
    }

    /// Runs the client over an already-open byte stream (an in-memory pipe,
    /// a TLS stream...).
    pub async fn connect_io<T>(self, io: T) -> Result<Client, Error>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let stream = Stream::from_io(io, "io".to_owned());
        let fut = self.start(stream, "io".to_owned());
        tokio::time::timeout(self.connect_timeout, fut)
            .await
            .map_err(|_| Error::Connect {
                addr: "io".to_owned(),
                source: io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
            })?
    }

    async fn start(&self, stream: Stream, addr: String) -> Result<Client, Error> {
        let (frames, write, hello, peer) =
            connection::handshake_as_client(stream, &self.config).await?;
        let conn = Arc::new(Connection::new(
            &self.config,
            connection::peer_limit(&hello),
            peer,
        ));
        let writer = connection::spawn_writer(&conn, write);
        tokio::spawn(read_loop(conn.clone(), frames, writer));
        tracing::debug!(%addr, "connected");
        Ok(Client {
            inner: Arc::new(ClientInner { conn, addr }),
        })
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
            None if conn.is_going_away() => break Closure::ShuttingDown,
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
        let system = ObjectRef {
            client: self.clone(),
            handle: wire::SYSTEM_OBJECT,
            name: Arc::from("$system"),
            descriptor: &SYSTEM_DESCRIPTOR,
        };
        let request = ResolveRequest::new(name, P::DESCRIPTOR);
        let handle: u32 =
            system
                .call(wire::SYSTEM_RESOLVE, &request)
                .await
                .map_err(|e| match e {
                    Error::TraitMismatch { detail, .. } => Error::TraitMismatch {
                        object: name.to_owned(),
                        detail,
                    },
                    other => other,
                })?;
        Ok(P::from_object(ObjectRef {
            client: self.clone(),
            handle,
            name: Arc::from(name),
            descriptor: P::DESCRIPTOR,
        }))
    }

    /// Closes the connection: queued requests are still sent, calls waiting
    /// for a reply fail with [`Error::ConnectionLost`] once the server hangs up.
    pub fn close(&self) {
        self.inner.conn.outbox.close();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.conn.is_closed()
    }

    /// The address this client connected to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }
}

static SYSTEM_DESCRIPTOR: ObjectDescriptor = ObjectDescriptor {
    trait_name: "$system",
    methods: &[crate::object::MethodDescriptor {
        name: "resolve",
        signature: "resolve(ResolveRequest)->u32",
    }],
    fingerprint: 0,
};

/// A resolved remote object: what a generated proxy wraps. Cheap to clone.
#[derive(Clone)]
pub struct ObjectRef {
    client: Client,
    handle: u32,
    name: Arc<str>,
    descriptor: &'static ObjectDescriptor,
}

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectRef")
            .field("name", &self.name)
            .field("trait", &self.descriptor.trait_name)
            .field("handle", &self.handle)
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

impl ObjectRef {
    /// The name the object was looked up under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this object is reached through.
    pub fn client(&self) -> &Client {
        &self.client
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
        let frame = FrameBuf::request(0, self.handle, method, 0, args);
        async move {
            let response = self.round_trip(method, frame).await?;
            match response.status {
                Status::Ok => decode_body(&response),
                Status::AppError => Err(Error::Protocol {
                    detail: "an application error for a method that has none".into(),
                }),
                other => Err(self.status_error(other, &response.body)),
            }
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
        let frame = FrameBuf::request(0, self.handle, method, 0, args);
        async move {
            let response = self.round_trip(method, frame).await?;
            match response.status {
                Status::Ok => Ok(decode_body(&response)?),
                Status::AppError => Err(CallError::App(decode_body(&response)?)),
                other => Err(CallError::Rpc(self.status_error(other, &response.body))),
            }
        }
    }

    async fn round_trip(
        &self,
        method: u16,
        frame: Result<FrameBuf, wire::EncodeError>,
    ) -> Result<Response, Error> {
        let method_name = self
            .descriptor
            .methods
            .get(usize::from(method))
            .map_or("?", |m| m.name);
        let span = tracing::debug_span!(
            "ipc.call",
            object = %self.name,
            method = method_name,
            id = tracing::field::Empty,
        );
        let conn = &*self.client.inner.conn;
        async move {
            let mut frame = frame.map_err(|e| Error::Encode {
                detail: e.to_string(),
            })?;
            let size = frame.body_len();
            if size > conn.peer_max_frame {
                return Err(Error::FrameTooLarge {
                    size,
                    limit: conn.peer_max_frame,
                });
            }
            let (id, rx) = conn.register()?;
            tracing::Span::current().record("id", id);
            frame.set_id(id);
            let mut guard = CallGuard {
                conn,
                id,
                armed: true,
            };
            let bytes = frame.into_unchecked();
            if conn.outbox.push(bytes).await.is_err() {
                return Err(conn.register().err().unwrap_or(Error::ConnectionLost {
                    reason: "the connection is closed".into(),
                }));
            }
            let result = rx.await;
            guard.armed = false;
            match result {
                Ok(r) => r,
                Err(_) => Err(Error::ConnectionLost {
                    reason: "the connection ended".into(),
                }),
            }
        }
        .instrument(span)
        .await
    }

    fn status_error(&self, status: Status, body: &[u8]) -> Error {
        let detail = || wire::decode::<String>(body).unwrap_or_default();
        match status {
            // A lookup names the object in the detail; a call knows it itself.
            Status::UnknownObject if self.handle == wire::SYSTEM_OBJECT => {
                Error::UnknownObject { name: detail() }
            }
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

fn decode_body<T: DeserializeOwned>(response: &Response) -> Result<T, Error> {
    wire::decode(&response.body).map_err(|e| Error::Decode {
        detail: e.to_string(),
    })
}
