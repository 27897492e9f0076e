//! Errors: the framework's own ([`Error`]) and a method's application error
//! wrapped beside them ([`CallError`]).

use std::fmt;
use std::io;

use crate::wire::{self, Status};

/// Everything that can go wrong in `ipc` itself, as opposed to the
/// application error `E` a method may return (see [`CallError`]).
///
/// Match on the variant, never on the message. Variants are grouped:
/// connection-level (`Connect`, `Bind`, `ConnectionLost`, `ShuttingDown`,
/// `ProtocolMismatch`, `Protocol`), lookup (`UnknownObject`, `UnknownMethod`,
/// `TraitMismatch`, `DuplicateObject`), and per-call (`FrameTooLarge`,
/// `RemotePanic`, `Encode`, `Decode`, `BadRequest`).
///
/// The helpers [`is_timeout`](Error::is_timeout) and
/// [`is_connection_error`](Error::is_connection_error) exist on
/// [`CallError`] too, so one style of handling fits every method:
///
/// ```
/// use ipc_core::Error;
///
/// /// What to tell the user about a failed call.
/// fn advice(e: &Error) -> &'static str {
///     if e.is_timeout() {
///         "the server is slow: try again later"
///     } else if e.is_connection_error() {
///         "the server is not running"
///     } else if let Error::UnknownObject { .. } = e {
///         "the server does not offer this service"
///     } else {
///         "the call failed"
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Nothing listens on port 1: connecting fails with `Error::Connect`.
/// let e = ipc_core::Client::connect("127.0.0.1:1").await.unwrap_err();
/// assert_eq!(advice(&e), "the server is not running");
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Could not connect: refused, unreachable, timed out, or the name did not resolve.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An address string could not be parsed.
    #[error("invalid address `{addr}`: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is expected instead.
        reason: &'static str,
    },
    /// The server could not listen on its address (most often: the port is in use).
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection closed or failed while the call was pending, or before it was sent.
    /// The call may or may not have run on the server.
    #[error("connection lost: {reason}")]
    ConnectionLost {
        /// What was observed (end of stream, I/O error, protocol violation...).
        reason: String,
    },
    /// The peer is shutting down: it announced it, or refused this call because of it.
    /// A call that failed this way did not run.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The peers speak different protocol versions, or the peer is not an `ipc` peer.
    #[error("protocol mismatch: {detail}")]
    ProtocolMismatch {
        /// Versions or bytes seen.
        detail: String,
    },
    /// The peer broke the protocol (malformed frame, unexpected message).
    #[error("protocol violation: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// No one registered this name with the name server
    /// ([`crate::nameserver::locate`], [`crate::nameserver::resolve`]).
    #[error("the name server has no registration named `{name}`")]
    NotRegistered {
        /// The name looked up.
        name: String,
    },
    /// The server exposes no object under this name.
    #[error("the server exposes no object named `{name}`")]
    UnknownObject {
        /// The name looked up.
        name: String,
    },
    /// The object has no method with this index (the peers' traits differ).
    #[error("unknown method: {detail}")]
    UnknownMethod {
        /// Object and method.
        detail: String,
    },
    /// The proxy's trait is not the trait the server exposes under this name
    /// (different trait, or a different version of it).
    #[error(
        "trait mismatch for object `{object}`: {detail} (server fingerprint \
         {server_fingerprint:016x}, proxy {proxy_fingerprint:016x})"
    )]
    TraitMismatch {
        /// The object name looked up.
        object: String,
        /// The fingerprint of the trait the server exposes.
        server_fingerprint: u64,
        /// The fingerprint of the proxy's trait.
        proxy_fingerprint: u64,
        /// Which trait or method differs.
        detail: String,
    },
    /// Two objects were exposed under one name.
    #[error("an object named `{name}` is already exposed")]
    DuplicateObject {
        /// The name exposed twice.
        name: String,
    },
    /// A frame exceeded the receiver's limit; nothing was sent, the connection is fine.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Size of the frame body in bytes.
        size: usize,
        /// The receiver's limit in bytes.
        limit: usize,
    },
    /// The call's deadline passed before its reply arrived. The server was told
    /// to drop the call; the connection stays usable.
    #[error("the call timed out after {after:?}")]
    Timeout {
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// The server refused the work for lack of capacity (connection limit, or
    /// too many calls in flight on this connection). Nothing ran.
    #[error("the server is overloaded: {detail}")]
    Overloaded {
        /// Which limit was hit.
        detail: String,
    },
    /// The remote handler panicked. The server and the connection keep working.
    #[error("the remote method panicked: {message}")]
    RemotePanic {
        /// The panic message.
        message: String,
    },
    /// The server could not decode the call's arguments.
    #[error("the server rejected the arguments: {detail}")]
    BadRequest {
        /// The decoder's message.
        detail: String,
    },
    /// A value could not be encoded (its `Serialize` impl failed), on either side.
    #[error("could not encode: {detail}")]
    Encode {
        /// The encoder's message.
        detail: String,
    },
    /// A reply could not be decoded into the expected type.
    #[error("could not decode the reply: {detail}")]
    Decode {
        /// The decoder's message.
        detail: String,
    },
    /// A setting is unusable: an authentication key too short or unreadable,
    /// a certificate or private key file that does not parse, a `tls://`
    /// address without TLS settings (or TLS settings for a plain address).
    #[error("invalid configuration: {detail}")]
    Config {
        /// What is wrong, naming the file or setting (never a secret).
        detail: String,
    },
    /// The TLS handshake failed: an untrusted or expired certificate, a name
    /// that does not match, a missing client certificate, or a peer that does
    /// not speak TLS.
    #[error("TLS failed: {detail}")]
    Tls {
        /// What failed.
        detail: String,
    },
    /// Shared-key authentication failed: the server requires a key and none
    /// was configured, the key does not match, the server does not use a
    /// key (no silent downgrade), or the server could not prove it holds it.
    /// The connection is closed; no request was sent.
    #[error("authentication failed: {reason}")]
    AuthFailed {
        /// Which of those (never which bytes differed).
        reason: String,
    },
    /// The server's authorization refused this connection or call; the
    /// handler did not run.
    #[error("permission denied: {detail}")]
    PermissionDenied {
        /// What was refused.
        detail: String,
    },
    /// A balanced proxy (see [`crate::client::Replicas`]) has no replica it
    /// could send the call to: none is registered, or every one is down,
    /// draining or of another trait. The call did not run.
    #[error("no replica of `{service}` is available")]
    NoReplicas {
        /// The service the proxy spreads its calls over.
        service: String,
    },
    /// An I/O error outside a call (for example while accepting).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The error a response (or a stream's end) with an error `status`
    /// stands for; `object` names the object called, for messages.
    pub(crate) fn from_status(status: Status, body: &[u8], object: &str) -> Self {
        let detail = || wire::decode::<String>(body).unwrap_or_default();
        match status {
            Status::UnknownObject => Self::UnknownObject {
                name: object.to_owned(),
            },
            Status::UnknownMethod => Self::UnknownMethod { detail: detail() },
            Status::TraitMismatch => {
                let (server_fingerprint, proxy_fingerprint, detail) =
                    wire::decode::<(u64, u64, String)>(body).unwrap_or_default();
                Self::TraitMismatch {
                    object: object.to_owned(),
                    server_fingerprint,
                    proxy_fingerprint,
                    detail,
                }
            }
            Status::BadRequest => Self::BadRequest { detail: detail() },
            Status::Panic => Self::RemotePanic { message: detail() },
            Status::ShuttingDown => Self::ShuttingDown,
            Status::Overloaded => Self::Overloaded { detail: detail() },
            Status::FrameTooLarge => {
                let (size, limit) = wire::decode::<(u64, u64)>(body).unwrap_or_default();
                Self::FrameTooLarge {
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                }
            }
            Status::EncodeFailed => Self::Encode { detail: detail() },
            Status::Cancelled => Self::ConnectionLost {
                reason: "the peer cancelled the call".into(),
            },
            Status::DeadlineExceeded => Self::Timeout {
                after: std::time::Duration::ZERO,
            },
            Status::PermissionDenied => Self::PermissionDenied { detail: detail() },
            other => Self::Protocol {
                detail: format!("unexpected status {other:?}"),
            },
        }
    }

    /// A copy, for an error several callers get (a failed handshake or
    /// lookup shared by the calls that waited for it). I/O errors keep
    /// their kind and message.
    pub(crate) fn duplicate(&self) -> Self {
        let io = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            Self::Connect { addr, source } => Self::Connect {
                addr: addr.clone(),
                source: io(source),
            },
            Self::InvalidAddress { addr, reason } => Self::InvalidAddress {
                addr: addr.clone(),
                reason,
            },
            Self::Bind { addr, source } => Self::Bind {
                addr: addr.clone(),
                source: io(source),
            },
            Self::ConnectionLost { reason } => Self::ConnectionLost {
                reason: reason.clone(),
            },
            Self::ShuttingDown => Self::ShuttingDown,
            Self::ProtocolMismatch { detail } => Self::ProtocolMismatch {
                detail: detail.clone(),
            },
            Self::Protocol { detail } => Self::Protocol {
                detail: detail.clone(),
            },
            Self::UnknownObject { name } => Self::UnknownObject { name: name.clone() },
            Self::NotRegistered { name } => Self::NotRegistered { name: name.clone() },
            Self::UnknownMethod { detail } => Self::UnknownMethod {
                detail: detail.clone(),
            },
            Self::TraitMismatch {
                object,
                server_fingerprint,
                proxy_fingerprint,
                detail,
            } => Self::TraitMismatch {
                object: object.clone(),
                server_fingerprint: *server_fingerprint,
                proxy_fingerprint: *proxy_fingerprint,
                detail: detail.clone(),
            },
            Self::DuplicateObject { name } => Self::DuplicateObject { name: name.clone() },
            Self::FrameTooLarge { size, limit } => Self::FrameTooLarge {
                size: *size,
                limit: *limit,
            },
            Self::Timeout { after } => Self::Timeout { after: *after },
            Self::Overloaded { detail } => Self::Overloaded {
                detail: detail.clone(),
            },
            Self::RemotePanic { message } => Self::RemotePanic {
                message: message.clone(),
            },
            Self::BadRequest { detail } => Self::BadRequest {
                detail: detail.clone(),
            },
            Self::Encode { detail } => Self::Encode {
                detail: detail.clone(),
            },
            Self::Decode { detail } => Self::Decode {
                detail: detail.clone(),
            },
            Self::Config { detail } => Self::Config {
                detail: detail.clone(),
            },
            Self::Tls { detail } => Self::Tls {
                detail: detail.clone(),
            },
            Self::AuthFailed { reason } => Self::AuthFailed {
                reason: reason.clone(),
            },
            Self::PermissionDenied { detail } => Self::PermissionDenied {
                detail: detail.clone(),
            },
            Self::NoReplicas { service } => Self::NoReplicas {
                service: service.clone(),
            },
            Self::Io(e) => Self::Io(io(e)),
        }
    }

    /// True for [`Error::Timeout`]: the call's deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// This error, as the framework's: always `Some` (the same accessor as
    /// [`CallError::rpc`], so one style of handling fits both).
    pub fn rpc(&self) -> Option<&Error> {
        Some(self)
    }

    /// The method's own error: never, for a plain [`Error`] (the same
    /// accessor as [`CallError::app`]).
    pub fn app(&self) -> Option<&std::convert::Infallible> {
        None
    }

    /// True for errors that mean the connection is gone or going: `Connect`,
    /// `ConnectionLost`, `ShuttingDown`, and `NoReplicas` (a balanced proxy
    /// with nothing to connect to).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectionLost { .. }
                | Self::ShuttingDown
                | Self::NoReplicas { .. }
        )
    }
}

/// The error of a method declared `-> Result<T, E>`: either the method's own `E`
/// ([`CallError::App`]) or a framework failure ([`CallError::Rpc`]).
///
/// `?` converts an [`Error`] into it, and [`CallError::app`] gets at the `E`.
/// Methods that do not return `Result` have plain [`Error`] as their error type,
/// so no call site ever sees `Result<Result<..>>`.
///
/// ```
/// use ipc_core::{CallError, Client, Server, expose};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// pub enum KvError { Missing }
///
/// #[expose]
/// pub trait Kv {
///     async fn get(&self, key: String) -> Result<String, KvError>;
/// }
///
/// struct Empty;
/// impl Kv for Empty {
///     async fn get(&self, _key: String) -> Result<String, KvError> { Err(KvError::Missing) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder().addr("127.0.0.1:0").expose(KvServer::new(Empty)).start().await?;
/// let kv: KvProxy = Client::connect(server.local_addr()).await?.get_exposed_object().await?;
/// match kv.get("colour".into()).await {
///     Ok(value) => println!("{value}"),
///     // The method's own error, typed.
///     Err(CallError::App(KvError::Missing)) => println!("no such key"),
///     // The framework's: same helpers as on `Error`.
///     Err(e) if e.is_connection_error() => println!("server gone: {e}"),
///     Err(e) => return Err(e.into()),
/// }
/// let e = kv.get("colour".into()).await.unwrap_err();
/// assert_eq!(e.app(), Some(&KvError::Missing));
/// assert!(e.rpc().is_none() && !e.is_timeout());
/// # server.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The method ran and returned `Err(e)`.
    App(E),
    /// The call failed in the framework (transport, lookup, panic...).
    Rpc(Error),
}

impl<E> CallError<E> {
    /// The application error, if that is what this is.
    pub fn app(&self) -> Option<&E> {
        match self {
            Self::App(e) => Some(e),
            Self::Rpc(_) => None,
        }
    }

    /// The application error by value, or the framework error back.
    pub fn into_app(self) -> Result<E, Error> {
        match self {
            Self::App(e) => Ok(e),
            Self::Rpc(e) => Err(e),
        }
    }

    /// The framework error, if that is what this is.
    pub fn rpc(&self) -> Option<&Error> {
        match self {
            Self::App(_) => None,
            Self::Rpc(e) => Some(e),
        }
    }

    /// True for a framework [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.rpc().is_some_and(Error::is_timeout)
    }

    /// True for a framework error that means the connection is gone or
    /// going (see [`Error::is_connection_error`]).
    pub fn is_connection_error(&self) -> bool {
        self.rpc().is_some_and(Error::is_connection_error)
    }
}

impl<E> From<Error> for CallError<E> {
    fn from(e: Error) -> Self {
        Self::Rpc(e)
    }
}

impl<E: fmt::Debug> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::App(e) => write!(f, "the remote method returned an error: {e:?}"),
            Self::Rpc(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::App(_) => None,
            Self::Rpc(e) => Some(e),
        }
    }
}

impl<E: PartialEq> PartialEq<E> for CallError<E> {
    /// A `CallError` equals an `E` when it is that application error.
    fn eq(&self, other: &E) -> bool {
        matches!(self, Self::App(e) if e == other)
    }
}
