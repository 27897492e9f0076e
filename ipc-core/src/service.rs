//! The server side of an object: [`Service`] (what `#[expose]` implements
//! for `{Trait}Server<T>`), the [`Reply`] a handler produces, and the
//! erased item source behind a server-push stream.
//!
//! Generated code uses these through `ipc_core::__private`; you normally
//! never do.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;

use crate::object::ObjectDescriptor;
use crate::scope;
use crate::wire::{self, EncodeError, FrameBuf, Status};

/// The future a handler runs; it resolves to the encoded reply.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// The producer side of a server-push stream, with its item type erased:
/// polls the next item and encodes it as a stream-item frame.
pub trait ItemSource: Send {
    /// The next item of stream `id`, encoded (stopping at `limit` bytes),
    /// `None` at the end.
    fn poll_item(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        id: u64,
        limit: usize,
    ) -> Poll<Option<Result<FrameBuf, EncodeError>>>;
}

/// A boxed [`ItemSource`].
pub type BoxedSource = Pin<Box<dyn ItemSource>>;

/// A handler's outcome, ready to be addressed and sent.
pub struct Reply(pub(crate) Outcome);

/// What a [`Reply`] holds.
pub(crate) enum Outcome {
    /// An encoded response frame (its id is set when it is sent).
    Frame(FrameBuf),
    /// A stream to open: a response with status `Ok` and an empty body, then
    /// the items.
    Stream(BoxedSource),
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Outcome::Frame(frame) => f
                .debug_struct("Reply")
                .field("status", &frame.status())
                .field("len", &frame.body_len())
                .finish(),
            Outcome::Stream(_) => f.write_str("Reply(stream)"),
        }
    }
}

impl Reply {
    /// The reply of a method that returned a plain value.
    pub fn value<T: Serialize + ?Sized>(value: &T) -> Self {
        Self::encoded(Status::Ok, value)
    }

    /// The reply of a method that returned `Result<T, E>`.
    pub fn result<T: Serialize, E: Serialize>(result: &Result<T, E>) -> Self {
        match result {
            Ok(v) => Self::encoded(Status::Ok, v),
            Err(e) => Self::encoded(Status::AppError, e),
        }
    }

    /// The reply that opens a stream fed by `source`.
    pub fn stream(source: BoxedSource) -> Self {
        Self(Outcome::Stream(source))
    }

    /// A body encoded for the peer of the current scope, stopping at its
    /// frame limit.
    pub(crate) fn encoded<T: Serialize + ?Sized>(status: Status, body: &T) -> Self {
        let limit = scope::peer_max_frame();
        match FrameBuf::response(status, body, limit) {
            Ok(f) => Self(Outcome::Frame(f)),
            Err(e) => Self::encode_failure(e),
        }
    }

    /// The reply that reports why a body could not be encoded.
    pub(crate) fn encode_failure(e: EncodeError) -> Self {
        if let Some(detail) = scope::take_refusal() {
            return Self::error(Status::Overloaded, &detail);
        }
        match e {
            EncodeError::TooLarge { size, limit } => Self::too_large(size, limit),
            other => Self::error(Status::EncodeFailed, &other.to_string()),
        }
    }

    /// Status 22 with `(size, limit)`.
    pub(crate) fn too_large(size: usize, limit: usize) -> Self {
        let body = (size as u64, limit as u64);
        match FrameBuf::response(Status::FrameTooLarge, &body, wire::MAX_FRAME_SIZE_CAP) {
            Ok(f) => Self(Outcome::Frame(f)),
            Err(_) => Self(Outcome::Frame(FrameBuf::response_empty(
                Status::FrameTooLarge,
            ))),
        }
    }

    /// An error status with a `String` detail.
    pub(crate) fn error(status: Status, detail: &str) -> Self {
        match FrameBuf::response(status, detail, wire::MAX_FRAME_SIZE_CAP) {
            Ok(f) => Self(Outcome::Frame(f)),
            // Encoding a `str` cannot fail.
            Err(_) => Self(Outcome::Frame(FrameBuf::response_empty(status))),
        }
    }

    /// An error status with an empty body.
    pub(crate) fn empty(status: Status) -> Self {
        Self(Outcome::Frame(FrameBuf::response_empty(status)))
    }

    /// The reply's status (`Ok` for a stream).
    pub(crate) fn status(&self) -> Status {
        match &self.0 {
            Outcome::Frame(f) => f.status(),
            Outcome::Stream(_) => Status::Ok,
        }
    }

    /// For oneway calls, whose outcome nobody receives: logs an error outcome.
    pub(crate) fn log_if_error(&self) {
        let status = self.status();
        if status != Status::Ok {
            tracing::warn!(?status, "oneway call failed");
        }
    }
}

/// Why a request could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum DispatchError {
    /// No method with this index.
    UnknownMethod(u16),
    /// The argument bytes do not decode to the method's parameter types.
    BadArguments(String),
    /// A per-connection factory was called directly (a server bug).
    NoInstance,
}

/// A type that can be an argument of an exposed method; checked by the code
/// `#[expose]` generates, so that a type that cannot travel is reported at
/// the argument that names it.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of an exposed method",
    label = "arguments must implement `Serialize` + `DeserializeOwned`",
    note = "derive both on the type: `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait Argument {}

impl<T: Serialize + serde::de::DeserializeOwned> Argument for T {}

/// A type that can be returned by an exposed method (as a value, or as the
/// `Ok` or `Err` of a `Result`, or as a stream's items).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by an exposed method",
    label = "return values (a `Result`'s `Ok` and `Err`, a stream's items) must implement \
             `Serialize` + `DeserializeOwned`",
    note = "derive both on the type: `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait Returned {}

impl<T: Serialize + serde::de::DeserializeOwned> Returned for T {}

/// What a method of an `#[expose]` trait returns: a future of its declared
/// return type. Implementations write `async fn`, which gives one; the
/// trait's documentation shows `impl Handler<T> + Send`.
#[diagnostic::on_unimplemented(
    message = "a method of an `#[expose]` trait must be `async`: `{Self}` is not a future",
    label = "write `async fn` here, as in the trait"
)]
pub trait Handler<T>: Future<Output = T> {}

impl<F: Future<Output = T>, T> Handler<T> for F {}

/// Compiles only if `T` can be an argument.
#[doc(hidden)]
pub fn check_argument<T: Argument>() {}

/// Compiles only if `T` can be returned.
#[doc(hidden)]
pub fn check_returned<T: Returned>() {}

/// Decodes a method's argument tuple (used by generated code).
pub fn decode_args<A: serde::de::DeserializeOwned>(
    bytes: &bytes::Bytes,
) -> Result<A, DispatchError> {
    wire::decode_shared(bytes).map_err(|e| DispatchError::BadArguments(e.to_string()))
}

/// Where a served object's implementation comes from (used by generated code).
pub enum Instance<T> {
    /// One implementation shared by every connection.
    Shared(Arc<T>),
    /// A fresh implementation per connection, made by this factory when the
    /// connection first calls the object and dropped when it closes.
    PerConnection(Arc<dyn Fn() -> T + Send + Sync>),
}

impl<T> Instance<T> {
    /// The implementation to call, unless this is a per-connection factory.
    pub fn shared(&self) -> Option<&Arc<T>> {
        match self {
            Self::Shared(t) => Some(t),
            Self::PerConnection(_) => None,
        }
    }

    /// A new implementation, if this is a per-connection factory.
    pub fn fresh(&self) -> Option<Arc<T>> {
        match self {
            Self::Shared(_) => None,
            Self::PerConnection(make) => Some(Arc::new(make())),
        }
    }
}

impl<T> Clone for Instance<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Shared(t) => Self::Shared(t.clone()),
            Self::PerConnection(f) => Self::PerConnection(f.clone()),
        }
    }
}

/// The server side of an exposed object. Implemented by the `{Trait}Server`
/// type that `#[expose]` generates; hand one to [`crate::ServerBuilder::expose`],
/// or to [`crate::Remote::new`] to pass it to the other side of a connection.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a served object",
    label = "expected the `{{Trait}}Server` that `#[expose]` generates",
    note = "wrap the implementation: `CalculatorServer::new(my_calculator)`"
)]
pub trait Service: Send + Sync + 'static {
    /// The trait this object implements.
    fn descriptor(&self) -> &'static ObjectDescriptor;

    /// Decodes the arguments of method `method` and returns the future that runs it.
    fn call(&self, method: u16, args: &bytes::Bytes) -> Result<HandlerFuture, DispatchError>;

    /// For objects served one instance per connection: a service bound to a
    /// fresh instance, used for the rest of a connection's life. `None` (the
    /// default) means one instance serves every connection.
    fn for_connection(&self) -> Option<Arc<dyn Service>> {
        None
    }

    /// The formats of the trait's methods, traced once, for clients in other
    /// languages (system method 2). `None` (the default): not described.
    fn schema(&self) -> Option<&'static crate::schema::TraitSchema> {
        None
    }
}
