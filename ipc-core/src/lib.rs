//! # ipc: remote objects for async Rust
//!
//! One process exposes an object; another calls its methods as if it were
//! local. Declare the interface as a trait, put [`expose`] on it, implement it
//! with plain `async fn`s, serve it with a [`Server`], and call it through the
//! generated `{Trait}Proxy` from a [`Client`].
//!
//! ```
//! use ipc_core::{expose, Client, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, PartialEq)]
//! pub enum MathError { DivideByZero }
//!
//! #[expose]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//!     /// Divides `a` by `b`.
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
//!         if b == 0 { Err(MathError::DivideByZero) } else { Ok(a / b) }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Port 0 picks a free port; the default is localhost:9099.
//! let server = Server::builder()
//!     .addr("127.0.0.1:0")
//!     .expose(CalculatorServer::new(Calc))
//!     .start()
//!     .await?;
//!
//! let client = Client::connect(server.local_addr()).await?;
//! let calc: CalculatorProxy = client.get_exposed_object().await?;
//! assert_eq!(calc.add(2, 3).await?, 5);
//! // The method's own error arrives typed, apart from transport errors.
//! assert!(matches!(calc.div(1, 0).await, Err(ipc_core::CallError::App(MathError::DivideByZero))));
//!
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! What `#[expose]` generates (`CalculatorServer`, `CalculatorProxy`), what
//! it accepts and its method attributes are on [its page](expose).
//!
//! ## Modules
//!
//! [`wire`] is the frame format, [`client`], [`server`] and [`transport`] the
//! runtime, [`error`] the error types, [`config`] the defaults and limits,
//! [`object`] the descriptors and directory types, [`schema`] the method
//! schemas for clients in other languages, [`nameserver`] the name server.
//! [`Bytes`] carries byte payloads without copies, [`CallContext`] tells a
//! handler who is calling.

#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

// `#[expose]` names `::ipc_core::...`; this makes that path work in here too.
extern crate self as ipc_core;

mod auth;
mod byte_vec;
pub mod client;
pub mod config;
mod connection;
mod context;
mod depth;
pub mod error;
pub mod nameserver;
pub mod object;
mod outbox;
mod payload;
mod remote;
pub mod schema;
mod scope;
pub mod server;
pub mod service;
mod signal;
mod stream;
pub mod telemetry;
pub mod transport;
pub mod wire;

pub use auth::AuthKey;
pub use client::{Client, ClientBuilder, Proxy};
pub use config::{DEFAULT_ADDR, DEFAULT_HOST, DEFAULT_PORT};
pub use context::{Access, CallContext, Peer};
pub use error::{CallError, Error};
pub use object::{MethodInfo, ObjectDescriptor, ObjectInfo};
pub use payload::Bytes;
pub use remote::{Remote, Serves};
pub use schema::ObjectSchema;
pub use server::{Server, ServerBuilder, ServerHandle};
pub use service::{Handler, Service};
pub use signal::shutdown_signal;
pub use stream::Streaming;
/// The token that drives graceful shutdown ([`ServerBuilder::shutdown_token`]),
/// re-exported so you need not depend on `tokio-util` yourself.
pub use tokio_util::sync::CancellationToken;
pub use transport::{Address, TlsClient, TlsServer};

/// Turns a trait into a remote interface.
///
/// For `#[expose] trait Kv` it generates:
///
/// - the trait itself, each `async fn` now returning `impl Handler<T> +
///   Send` (a future of `T`), so the server may run handlers on any thread;
///   implementations still write `async fn`;
/// - `KvServer<T>`, which serves an implementation `T`: `KvServer::new(t)`
///   shares one `t` between all connections, `KvServer::from_arc(arc)` one
///   you keep a handle to, and `KvServer::per_connection(|| T::new())` makes
///   one per connection on its first call (per-session state), dropped when
///   the connection closes. Hand it to [`ServerBuilder::expose`] (the object
///   is then named `"Kv"`) or [`ServerBuilder::expose_as`];
/// - `KvProxy`, the client side: cheap to clone, `Send + Sync`, one `async`
///   method per trait method with the same arguments, returning
///   `Result<R, Error>`, or `Result<T, CallError<E>>` when the trait method
///   returns `Result<T, E>`. It implements [`Proxy`] (deadlines, the object's
///   name) and comes from [`Client::get_exposed_object`] or [`Client::proxy`].
///
/// Accepted: `async fn` methods taking `&self` and owned arguments
/// (`name: Type`) whose types implement `Serialize + DeserializeOwned +
/// Send`, returning such a type, `Result<T, E>`, a [`Streaming<T>`] of items,
/// or [`Remote<P>`] objects (see the README's "Objects and flows"). Anything
/// else is a compile error at the offending token saying what is allowed.
///
/// Two method attributes:
///
/// - `#[oneway]` (a method returning `()`): the proxy returns as soon as the
///   call is handed to the connection, without waiting for the server, which
///   logs the handler's errors and panics since no one waits for them.
/// - `#[idempotent]`: running the method twice is harmless, so a call in
///   flight when its connection is lost is sent again on the reconnected one
///   (other calls fail with `ConnectionLost`).
///
/// ```
/// use ipc_core::{Client, Server, expose};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[expose]
/// pub trait Counter {
///     /// Adds `n`; nothing to wait for.
///     #[oneway]
///     async fn add(&self, n: u64);
///     /// Reads the count: safe to retry.
///     #[idempotent]
///     async fn get(&self) -> u64;
/// }
///
/// #[derive(Default)]
/// struct Session(AtomicU64);
/// impl Counter for Session {
///     async fn add(&self, n: u64) { self.0.fetch_add(n, Ordering::Relaxed); }
///     async fn get(&self) -> u64 { self.0.load(Ordering::Relaxed) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_core::Error> {
/// // Each connection counts on its own.
/// let server = Server::builder()
///     .addr("127.0.0.1:0")
///     .expose(CounterServer::per_connection(Session::default))
///     .start()
///     .await?;
/// let one: CounterProxy = Client::connect(server.local_addr()).await?.get_exposed_object().await?;
/// let two: CounterProxy = Client::connect(server.local_addr()).await?.get_exposed_object().await?;
/// one.add(2).await?;
/// one.add(3).await?;
/// // Calls start on the server in the order sent; these adds end at once.
/// assert_eq!(one.get().await?, 5);
/// assert_eq!(two.get().await?, 0);
/// # server.stop().await;
/// # Ok(()) }
/// ```
pub use ipc_derive::expose;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}

/// What generated code needs. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::byte_vec::{ByteVec, OptByteVec, SendVec};
    pub use crate::client::{ObjectRef, Proxy};
    pub use crate::object::{MethodDescriptor, ObjectDescriptor};
    pub use crate::remote::Serves;
    pub use crate::schema::{
        Output as SchemaOutput, SchemaProbe, SchemaTracer, TraceOther, TraceSerde, TraitSchema,
    };
    pub use crate::service::{
        DispatchError, HandlerFuture, Instance, Reply, Service, check_argument, check_returned,
        decode_args,
    };
    pub use crate::stream::{Streaming, stream_reply, stream_result_reply};
    pub use bytes::Bytes as FrameBytes;
}
