//! Exposed objects: what a trait looks like on the wire ([`ObjectDescriptor`]),
//! the server side of an object ([`Service`]) and the client side ([`Proxy`]).
//!
//! `#[expose]` implements these; you normally never do.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::client::ObjectRef;
use crate::wire::{self, FrameBuf, Status};

/// The shape of an exposed trait, compared at lookup so that a proxy built
/// from a different trait (or a different version of it) is refused up front.
#[derive(Debug)]
pub struct ObjectDescriptor {
    /// The trait's name; the default object name.
    pub trait_name: &'static str,
    /// The methods in declaration order (the index is the wire method id).
    pub methods: &'static [MethodDescriptor],
    /// A 64-bit FNV-1a hash of the trait name and every method signature.
    pub fingerprint: u64,
}

/// One method of an exposed trait.
#[derive(Debug)]
pub struct MethodDescriptor {
    /// The method's name.
    pub name: &'static str,
    /// Its signature as written: `name(ArgType,..)->Ret`.
    pub signature: &'static str,
    /// Marked `#[idempotent]`: safe to run twice, so retried automatically
    /// when the connection is lost mid-call.
    pub idempotent: bool,
    /// Marked `#[oneway]`: the caller does not wait for the method to run.
    pub oneway: bool,
}

/// One exposed object, as the server's directory lists it
/// ([`crate::Client::objects`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The name it is exposed under.
    pub name: String,
    /// The trait it implements.
    pub trait_name: String,
    /// The trait's fingerprint (see [`ObjectDescriptor::fingerprint`]).
    pub fingerprint: u64,
    /// Its methods, in declaration order.
    pub methods: Vec<MethodInfo>,
}

/// One method in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodInfo {
    /// The method's name.
    pub name: String,
    /// Its signature: `name(ArgType,..)->Ret`.
    pub signature: String,
    /// Whether it is `#[oneway]`.
    pub oneway: bool,
    /// Whether it is `#[idempotent]`.
    pub idempotent: bool,
}

impl ObjectInfo {
    pub(crate) fn new(name: &str, d: &ObjectDescriptor) -> Self {
        Self {
            name: name.to_owned(),
            trait_name: d.trait_name.to_owned(),
            fingerprint: d.fingerprint,
            methods: d
                .methods
                .iter()
                .map(|m| MethodInfo {
                    name: m.name.to_owned(),
                    signature: m.signature.to_owned(),
                    oneway: m.oneway,
                    idempotent: m.idempotent,
                })
                .collect(),
        }
    }
}

/// Where a served object's implementation comes from (used by generated code).
pub enum Instance<T> {
    /// One implementation shared by every connection.
    Shared(std::sync::Arc<T>),
    /// A fresh implementation per connection, made by this factory when the
    /// connection first calls the object and dropped when it closes.
    PerConnection(std::sync::Arc<dyn Fn() -> T + Send + Sync>),
}

impl<T> Instance<T> {
    /// The implementation to call, unless this is a per-connection factory.
    pub fn shared(&self) -> Option<&std::sync::Arc<T>> {
        match self {
            Self::Shared(t) => Some(t),
            Self::PerConnection(_) => None,
        }
    }

    /// A new implementation, if this is a per-connection factory.
    pub fn fresh(&self) -> Option<std::sync::Arc<T>> {
        match self {
            Self::Shared(_) => None,
            Self::PerConnection(make) => Some(std::sync::Arc::new(make())),
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

impl ObjectDescriptor {
    /// Explains how `other` (the caller's view) differs from `self`, or `None`
    /// when they match.
    pub(crate) fn mismatch(&self, other: &ResolveRequest) -> Option<String> {
        if self.trait_name != other.trait_name {
            return Some(format!(
                "the server exposes trait `{}`, the proxy is for trait `{}`",
                self.trait_name, other.trait_name
            ));
        }
        if self.fingerprint == other.fingerprint
            && self.methods.len() == other.signatures.len()
            && self
                .methods
                .iter()
                .zip(&other.signatures)
                .all(|(m, s)| m.signature == s)
        {
            return None;
        }
        for (i, m) in self.methods.iter().enumerate() {
            match other.signatures.get(i) {
                Some(s) if s == m.signature => {}
                Some(s) => {
                    return Some(format!(
                        "method #{i} is `{}` on the server but `{s}` in the proxy",
                        m.signature
                    ));
                }
                None => {
                    return Some(format!(
                        "the server has method `{}` that the proxy lacks",
                        m.signature
                    ));
                }
            }
        }
        if let Some(extra) = other.signatures.get(self.methods.len()) {
            return Some(format!(
                "the proxy has method `{extra}` that the server lacks"
            ));
        }
        Some(format!(
            "fingerprints differ (server {:016x}, proxy {:016x})",
            self.fingerprint, other.fingerprint
        ))
    }
}

/// The body of a lookup: "give me a handle for `name`, which I believe implements this trait".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResolveRequest {
    pub(crate) name: String,
    pub(crate) trait_name: String,
    pub(crate) fingerprint: u64,
    pub(crate) signatures: Vec<String>,
}

impl ResolveRequest {
    pub(crate) fn new(name: &str, d: &ObjectDescriptor) -> Self {
        Self {
            name: name.to_owned(),
            trait_name: d.trait_name.to_owned(),
            fingerprint: d.fingerprint,
            signatures: d.methods.iter().map(|m| m.signature.to_owned()).collect(),
        }
    }
}

/// The future a handler runs; it resolves to the encoded reply.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// A handler's encoded outcome, ready to be addressed and sent.
pub struct Reply(pub(crate) FrameBuf);

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("len", &self.0.body_len())
            .finish()
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

    pub(crate) fn encoded<T: Serialize + ?Sized>(status: Status, body: &T) -> Self {
        match FrameBuf::response(status, body) {
            Ok(f) => Self(f),
            Err(e) => Self::error(Status::EncodeFailed, &e.to_string()),
        }
    }

    /// For oneway calls, whose outcome nobody receives: logs an error outcome.
    pub(crate) fn log_if_error(&self) {
        let status = self.0.status();
        if status != Status::Ok {
            tracing::warn!(?status, "oneway call failed");
        }
    }

    pub(crate) fn error(status: Status, detail: &str) -> Self {
        match FrameBuf::response(status, detail) {
            Ok(f) => Self(f),
            // Encoding a `str` cannot fail.
            Err(_) => Self(FrameBuf::response_empty(status)),
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

/// Decodes a method's argument tuple (used by generated code).
pub fn decode_args<A: serde::de::DeserializeOwned>(
    bytes: &bytes::Bytes,
) -> Result<A, DispatchError> {
    wire::decode_shared(bytes).map_err(|e| DispatchError::BadArguments(e.to_string()))
}

/// The server side of an exposed object. Implemented by the `{Trait}Server`
/// type that `#[expose]` generates; hand one to [`crate::ServerBuilder::expose`].
pub trait Service: Send + Sync + 'static {
    /// The trait this object implements.
    fn descriptor(&self) -> &'static ObjectDescriptor;

    /// Decodes the arguments of method `method` and returns the future that runs it.
    fn call(&self, method: u16, args: &bytes::Bytes) -> Result<HandlerFuture, DispatchError>;

    /// For objects served one instance per connection: a service bound to a
    /// fresh instance, used for the rest of a connection's life. `None` (the
    /// default) means one instance serves every connection.
    fn for_connection(&self) -> Option<std::sync::Arc<dyn Service>> {
        None
    }
}

/// The client side of an exposed trait: the `{Trait}Proxy` type that
/// `#[expose]` generates. Obtain one with [`crate::Client::get_exposed_object`].
pub trait Proxy: Clone + Send + Sync + Sized + 'static {
    /// The trait this proxy speaks.
    const DESCRIPTOR: &'static ObjectDescriptor;

    /// Wraps a resolved object reference.
    #[doc(hidden)]
    fn from_object(object: ObjectRef) -> Self;
}
