//! Service discovery for `ipc`: many replicas of a service under one name,
//! clients that spread their calls over them, and dead replicas dropped
//! within seconds.
//!
//! - A replica registers an [`Instance`] (service name → address, trait,
//!   fingerprint, metadata) with a [`Registry`], and keeps the returned
//!   [`Registration`]; [`Registration::deregister_on_stop`] withdraws it
//!   when its server starts a graceful shutdown, *before* the server
//!   drains.
//! - A client calls [`locate_all`] and gets the usual `{Trait}Proxy`,
//!   backed by one connection per live replica and kept current by the
//!   registry's watch (see [`ipc_core::client::Replicas`] for how calls are
//!   spread and when they go to another replica).
//!
//! # Backends
//!
//! | backend | setup | a replica that dies disappears |
//! |---|---|---|
//! | [`NameServerRegistry`] (default) | an `ipc` name server | when the name server sees its connection close (at once for a crash or `kill -9` on a live host) |
//! | `EtcdRegistry` (feature `etcd`) | an etcd cluster | when its lease expires: at most the TTL (default 5 s) |
//!
//! # Key layout
//!
//! Both backends store an instance of service `S` with id `I` under the
//! key `<prefix>/S/I`, prefix [`DEFAULT_PREFIX`] (`ipc/services`). In
//! etcd the value is JSON:
//! `{"addr":"10.0.0.7:7000","object":"Calc","trait":"Calc","fingerprint":"<16 hex digits>","metadata":{"zone":"eu-1"}}`,
//! and the key is bound to the registering process's lease. In the name
//! server it is a registration whose metadata also holds `ipc.trait` and
//! `ipc.fingerprint`. Service names and ids are non-empty and contain no
//! `/`; an encoded instance is at most [`MAX_INSTANCE_BYTES`].
//!
//! # Example
//!
//! ```
//! use ipc_core::{expose, Server};
//! use ipc_registry::{locate_all, Instance, NameServerRegistry, Registry};
//!
//! #[expose]
//! pub trait Calc {
//!     /// Adds.
//!     #[idempotent]
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//! struct Adder;
//! impl Calc for Adder {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let names = Server::builder().addr("127.0.0.1:0").idle_timeout(None).name_server().start().await?;
//! let registry = NameServerRegistry::new(names.local_addr());
//!
//! // Two replicas.
//! let mut servers = Vec::new();
//! for _ in 0..2 {
//!     let server = Server::builder().addr("127.0.0.1:0").expose(CalcServer::new(Adder)).start().await?;
//!     let registration = registry.register(Instance::new::<CalcProxy>("calc", server.local_addr())).await?;
//!     registration.deregister_on_stop(&server);
//!     servers.push(server);
//! }
//!
//! // A client: one proxy, calls spread over both.
//! let calc: CalcProxy = locate_all(&registry, "calc").await?;
//! assert_eq!(calc.add(2, 3).await?, 5);
//! # for s in servers { s.stop().await; }
//! # names.stop().await;
//! # Ok(()) }
//! ```

mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod instance;
mod locate;
mod name_server;
mod registry;

pub use error::RegistryError;
#[cfg(feature = "etcd")]
pub use etcd::EtcdRegistry;
pub use instance::{DEFAULT_PREFIX, Instance, MAX_INSTANCE_BYTES};
pub use locate::{Locate, RESUME_GRACE, locate_all};
pub use name_server::NameServerRegistry;
pub use registry::{DEREGISTER_TIMEOUT, Registration, Registry, Watch, WatchEvent};

/// The replica-set types a [`Locate`] builds on.
pub use ipc_core::client::{Policy, ReplicaState, ReplicaStatus, Replicas};
