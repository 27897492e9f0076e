//! A shared, durable, versioned datastore served over `ipc`.
//!
//! Values are keyed by (author, name) — one program sets "now playing",
//! others read it — and are arbitrary bytes with a type name ([`Value`]).
//! Every change gets a version that only goes up ([`Entry::version`]), so
//! a reader can ask for a value only if it changed
//! ([`DataStore::get_if_changed`]) or replace it only if nobody else did
//! ([`DataStore::set_if_version`]), and [`DataStore::watch`] pushes every
//! change to a subscriber as it happens. Persistent values are on disk
//! (redb) before `set` returns and survive a crash of the server.
//!
//! - [`DataStore`]: the remote interface (`#[expose]`d), with
//!   [`DataStoreServer`] and [`DataStoreProxy`];
//! - [`Store`]: its implementation, over a data directory;
//! - [`DataStoreClient`]: typed helpers over the proxy (`set::<T>`,
//!   `get::<T>`, a compare-and-set `update`);
//! - [`Limits`]: how much the store may hold; [`StoreError`]: what fails.
//!
//! The `datastore` program serves a store and is its command line
//! (`datastore serve`, `datastore set AUTHOR NAME VALUE`, `datastore
//! watch AUTHOR`...).
//!
//! ```
//! use ipc_datastore::{DataStoreClient, DataStoreServer, Limits, Store, WatchEvent};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), Limits::default())?;
//! let server = ipc_core::Server::builder()
//!     .addr("127.0.0.1:0")
//!     .expose(DataStoreServer::new(store.clone()))
//!     .start()
//!     .await?;
//!
//! let client = DataStoreClient::connect(server.local_addr()).await?;
//! let mut changes = client.proxy().watch("player".into(), None).await?;
//!
//! let v1 = client.set("player", "volume", &80u8, true).await?; // on disk now
//! let got = client.get::<u8>("player", "volume").await?.ok_or("missing")?;
//! assert_eq!((got.value, got.version), (80, v1));
//! // A wrong type is a typed error, not garbage:
//! assert!(client.get::<String>("player", "volume").await.is_err());
//! // Read-modify-write without races (compare-and-set, retried):
//! let plays = client.update("player", "plays", false, |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//! assert_eq!(plays.value, 1);
//!
//! // The watch saw both changes, in order.
//! use futures::StreamExt;
//! match changes.next().await {
//!     Some(Ok(WatchEvent::Set { name, version, .. })) => assert_eq!((name.as_str(), version), ("volume", v1)),
//!     other => panic!("{other:?}"),
//! }
//! assert!(matches!(changes.next().await, Some(Ok(WatchEvent::Set { name, .. })) if name == "plays"));
//!
//! server.stop().await;
//! store.close().await;
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod service;
mod store;
mod value;

pub use client::{DataStoreClient, Typed};
pub use config::{EVENT_OVERHEAD, KEY_OVERHEAD, Limits};
pub use error::StoreError;
pub use service::{DataStore, DataStoreProxy, DataStoreServer};
pub use store::{FILE_NAME, Store};
pub use value::{Entry, IfChanged, JSON_TYPE, Value, WatchEvent, type_label};

/// The address `datastore serve` listens on, and its clients call, by
/// default: one port above `ipc`'s own default.
pub const DEFAULT_ADDR: &str = "localhost:9100";
