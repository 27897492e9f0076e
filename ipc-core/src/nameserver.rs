//! A name server: find objects by a logical name instead of an address, like
//! Pyro4's name server and its `PYRONAME:` URIs.
//!
//! The name server is an ordinary `ipc` object (trait [`NameServer`]) that maps
//! logical names such as `"app.calc"` to a [`Registration`]: the address of the
//! server that exposes the object and the object's name there. Host it with
//! [`ServerBuilder::name_server`](crate::ServerBuilder::name_server) (next to
//! other objects) or with the `nameserver` example program (alone, on
//! `localhost:9090`).
//!
//! - A server process registers its objects with [`register`] (or
//!   [`NameServerProxy::register`]).
//! - A client finds one with [`locate`], which looks the name up, connects
//!   to the registered address and returns a typed proxy; [`resolve`] only
//!   looks it up.
//! - [`NameServerProxy::watch`] follows the names under a prefix as they
//!   are registered and removed (the `ipc-registry` crate builds its
//!   replica sets on it).
//!
//! # Registrations live as long as the registering connection
//!
//! Each connection to the name server gets its own session (the object is
//! served [per connection](NameServerServer::per_connection)). A session
//! remembers the names registered through it, and when the connection closes
//! (the process exits, crashes, or drops its last `Client` and proxy) they are
//! removed, so the directory does not list dead servers. Consequences:
//!
//! - Keep the [`Client`] (or a proxy made from it) that registered alive for
//!   as long as the registration should last.
//! - If that connection is lost (the name server restarts, the network
//!   fails), the registrations are gone. The client reconnects on its next
//!   call, but does not register again by itself: do so after an error that
//!   [`is_connection_error`](Error::is_connection_error).
//! - A server closes connections that stay idle longer than its
//!   [idle timeout](crate::ServerBuilder::idle_timeout) (default 5 minutes),
//!   which would drop the registrations of a quiet process. A server that
//!   hosts the name server should therefore use `.idle_timeout(None)`, as the
//!   `nameserver` program does.
//!
//! ```
//! use ipc_core::nameserver::{self, Registration};
//! use ipc_core::{expose, Client, Server};
//!
//! #[expose]
//! pub trait Greeter {
//!     /// Greets `name`.
//!     async fn greet(&self, name: String) -> String;
//! }
//!
//! struct Hello;
//! impl Greeter for Hello {
//!     async fn greet(&self, name: String) -> String { format!("Hello, {name}!") }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The name server (usually its own process, on localhost:9090).
//! let names = Server::builder()
//!     .addr("127.0.0.1:0")
//!     .idle_timeout(None)
//!     .name_server()
//!     .start()
//!     .await?;
//!
//! // A server process: serve the object, then register it under a logical name.
//! let greeter = Server::builder()
//!     .addr("127.0.0.1:0")
//!     .expose(GreeterServer::new(Hello))
//!     .start()
//!     .await?;
//! let registrar = Client::connect(names.local_addr()).await?;
//! nameserver::register(
//!     &registrar,
//!     "app.greeter",
//!     Registration::new(greeter.local_addr(), "Greeter"),
//! )
//! .await?;
//!
//! // A client: find it by name alone.
//! let ns = Client::connect(names.local_addr()).await?;
//! let proxy: GreeterProxy = nameserver::locate(&ns, "app.greeter").await?;
//! assert_eq!(proxy.greet("Ada".into()).await?, "Hello, Ada!");
//!
//! // The registering connection closes: the name goes with it.
//! drop(registrar);
//! # greeter.stop().await;
//! # names.stop().await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::client::Proxy;
use crate::error::{CallError, Error};
use crate::service::Service;
use crate::stream::Streaming;
use crate::transport::Address;
use crate::{CallContext, Client, expose};

/// The port the `nameserver` program listens on by default: 9090, the port
/// of Pyro4's name server.
pub const DEFAULT_NAME_SERVER_PORT: u16 = 9090;

/// The name server's default address: `localhost:9090`.
pub const DEFAULT_NAME_SERVER_ADDR: &str = "localhost:9090";

/// Where a named object lives: a server's address and the object's name there.
///
/// ```
/// use ipc_core::nameserver::Registration;
///
/// let r = Registration::new("127.0.0.1:7000", "Calculator").with_metadata("version", "2");
/// assert_eq!(r.addr, "127.0.0.1:7000");
/// assert_eq!(r.object, "Calculator");
/// assert_eq!(r.metadata["version"], "2");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Registration {
    /// The server's address as an [`Address`] string: `HOST:PORT` or
    /// `unix:PATH`. It must be reachable from the clients that look it up
    /// (not `0.0.0.0`; an absolute socket path). Checked when registered.
    pub addr: String,
    /// The name the object is exposed under on that server (by default its
    /// trait's name).
    pub object: String,
    /// Free-form key/value pairs for clients to read (version, owner...).
    pub metadata: BTreeMap<String, String>,
}

impl Registration {
    /// An object named `object` on the server at `addr`, with no metadata.
    /// `addr` is anything an [`Address`] is made from: a `&str`, a
    /// [`ServerHandle::local_addr`](crate::ServerHandle::local_addr)...
    pub fn new(addr: impl Into<Address>, object: impl Into<String>) -> Self {
        Self {
            addr: addr.into().to_string(),
            object: object.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// The same registration with `key` set to `value` in its metadata.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// Why the name server refused a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Another live connection has registered this name. It becomes free
    /// when that connection removes it or closes.
    #[error("the name `{name}` is registered by another connection")]
    Taken {
        /// The name asked for.
        name: String,
    },
    /// The name is not acceptable (it is empty).
    #[error("invalid name `{name}`: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A limit of the name server was reached (see [`MAX_NAMES_PER_CONNECTION`],
    /// [`MAX_NAME_BYTES`], [`MAX_METADATA_BYTES`]).
    #[error("limit reached: {reason}")]
    Limit {
        /// Which limit.
        reason: String,
    },
    /// The registration's address does not parse as an [`Address`].
    #[error("invalid address `{addr}`: {reason}")]
    InvalidAddress {
        /// The address given.
        addr: String,
        /// What is expected instead.
        reason: String,
    },
}

/// What [`NameServer::watch`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NameEvent {
    /// Every registration under the prefix now, sorted by name: replaces
    /// whatever the watcher knew. The first event of a watch; sent again
    /// (instead of the changes it missed) to a watcher that fell more than
    /// [`WATCH_BACKLOG`] changes behind.
    Snapshot(Vec<(String, Registration)>),
    /// `name` was registered, or its owner replaced its registration.
    Registered {
        /// The name.
        name: String,
        /// Its registration now.
        registration: Registration,
    },
    /// `name` was removed: by its owner, or because the owner's connection
    /// closed.
    Removed {
        /// The name.
        name: String,
    },
}

/// A directory of named objects, served by `ipc` itself (see the
/// [module docs](self)). Host it with
/// [`ServerBuilder::name_server`](crate::ServerBuilder::name_server) or
/// [`service`]; call it through [`NameServerProxy`].
#[expose]
pub trait NameServer {
    /// Registers `name` for `registration`, owned by the calling connection
    /// and removed when that connection closes. Registering a name this
    /// connection already owns replaces its registration. Fails with
    /// [`NameError::Taken`] if another connection owns the name,
    /// [`NameError::InvalidName`] for an empty name, and
    /// [`NameError::InvalidAddress`] if `registration.addr` does not parse.
    async fn register(&self, name: String, registration: Registration) -> Result<(), NameError>;

    /// The registration of `name`, if any connection has registered it.
    #[idempotent]
    async fn lookup(&self, name: String) -> Option<Registration>;

    /// Every registration whose name starts with `prefix` (all of them for
    /// `""`), sorted by name.
    #[idempotent]
    async fn list(&self, prefix: String) -> Vec<(String, Registration)>;

    /// Removes `name` if the calling connection registered it, and says
    /// whether it did. A name owned by another connection is left alone
    /// (`false`): only its owner, or the owner's disconnection, removes it.
    async fn remove(&self, name: String) -> bool;

    /// The registrations whose names start with `prefix` (all for `""`), and
    /// every change to them from then on: a [`NameEvent::Snapshot`] first,
    /// then one event per registration and removal, in the order they
    /// happened, for as long as the caller reads the stream (a watch keeps
    /// its connection busy, so the idle timeout does not close it). Ends
    /// with `ShuttingDown` when the name server stops, or with a connection
    /// error: watch again, and the new snapshot replaces the old state.
    async fn watch(&self, prefix: String) -> Streaming<NameEvent>;
}

/// A fresh name server with an empty directory, to expose with
/// [`ServerBuilder::expose`](crate::ServerBuilder::expose) (under
/// `"NameServer"`) or `expose_as`. Each connection gets its own session that
/// remembers what it registered; all sessions share the directory.
/// [`ServerBuilder::name_server`](crate::ServerBuilder::name_server) is a
/// shorthand for exposing this.
pub fn service() -> impl Service {
    let directory = Arc::new(Directory::new());
    NameServerServer::per_connection(move || Session::new(directory.clone()))
}

/// Looks `name` up through the name server that `name_server` is connected to
/// (the object exposed as `"NameServer"` there).
///
/// # Errors
///
/// [`Error::NotRegistered`], naming `name`, if no one has registered it; the
/// errors of [`Client::get_exposed_object`] if `name_server` does not expose
/// a name server; connection errors.
pub async fn resolve(name_server: &Client, name: &str) -> Result<Registration, Error> {
    let proxy: NameServerProxy = name_server.get_exposed_object().await?;
    proxy
        .lookup(name.to_owned())
        .await?
        .ok_or_else(|| Error::NotRegistered {
            name: name.to_owned(),
        })
}

/// Finds the object registered as `name` and returns a proxy for it: looks
/// the name up through `name_server`, connects a new [`Client`] (default
/// settings) to the registered address and asks it for the registered
/// object. The proxy keeps that client alive. The `PYRONAME:` of `ipc`.
///
/// To connect with other settings, use [`resolve`] and a
/// [`ClientBuilder`](crate::ClientBuilder).
///
/// # Errors
///
/// [`Error::NotRegistered`], naming `name`, if no one has registered it;
/// [`Error::InvalidAddress`] if the registered address does not parse; then
/// the errors of [`Client::connect`] and [`Client::get_exposed_object_named`]
/// (for example [`Error::TraitMismatch`] if the object is not a `P`).
pub async fn locate<P: Proxy>(name_server: &Client, name: &str) -> Result<P, Error> {
    let registration = resolve(name_server, name).await?;
    let addr: Address = registration.addr.parse()?;
    let client = Client::connect(addr).await?;
    client
        .get_exposed_object_named::<P>(&registration.object)
        .await
}

/// Registers `name` for `registration` through the name server that
/// `name_server` is connected to, and returns the proxy it used (to
/// [`remove`](NameServerProxy::remove) the name or register more).
///
/// The registration lasts as long as `name_server`'s connection: keep that
/// client, or the returned proxy, alive (see the [module docs](self)).
///
/// # Errors
///
/// [`CallError::App`] with a [`NameError`] if the name server refuses;
/// [`CallError::Rpc`] if it cannot be reached or is not a name server.
pub async fn register(
    name_server: &Client,
    name: &str,
    registration: Registration,
) -> Result<NameServerProxy, CallError<NameError>> {
    let proxy: NameServerProxy = name_server.get_exposed_object().await?;
    proxy.register(name.to_owned(), registration).await?;
    Ok(proxy)
}

/// Most names one connection may hold at once.
pub const MAX_NAMES_PER_CONNECTION: usize = 1024;
/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest registration (address, object name and metadata), in bytes.
/// Worst-case directory memory: connections x names x this.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Changes a name server keeps for watchers that have not read them yet. A
/// watcher further behind gets a fresh [`NameEvent::Snapshot`] instead.
/// Worst case: this many registrations ([`MAX_METADATA_BYTES`] each) held
/// for the slowest watcher.
pub const WATCH_BACKLOG: usize = 256;

/// The directory every session of one name server shares.
#[derive(Debug)]
struct Directory {
    entries: Mutex<BTreeMap<String, Entry>>,
    next_session: AtomicU64,
    /// Changes so far; bumped, and the change published, under the
    /// `entries` lock, so watchers see changes in directory order.
    revision: AtomicU64,
    changes: broadcast::Sender<Arc<Change>>,
}

/// One change to the directory, for watchers.
#[derive(Debug)]
struct Change {
    revision: u64,
    name: String,
    /// The new registration, or `None` for a removal.
    registration: Option<Registration>,
}

#[derive(Debug)]
struct Entry {
    /// The session (connection) that registered it.
    owner: u64,
    registration: Registration,
}

impl Directory {
    fn new() -> Self {
        Self {
            entries: Mutex::default(),
            next_session: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            changes: broadcast::channel(WATCH_BACKLOG).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // Every critical section is one map operation that cannot panic halfway.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells watchers about a change; the caller holds the `entries` lock.
    fn publish(&self, name: &str, registration: Option<&Registration>) {
        let revision = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        // No watcher: nothing to tell.
        let _ = self.changes.send(Arc::new(Change {
            revision,
            name: name.to_owned(),
            registration: registration.cloned(),
        }));
    }

    /// The registrations under `prefix` now, with the changes that follow
    /// them (those after the returned revision).
    fn subscribe(
        &self,
        prefix: &str,
    ) -> (
        Vec<(String, Registration)>,
        broadcast::Receiver<Arc<Change>>,
        u64,
    ) {
        let entries = self.lock();
        let receiver = self.changes.subscribe();
        let revision = self.revision.load(Ordering::Acquire);
        let snapshot = entries
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, e)| (name.clone(), e.registration.clone()))
            .collect();
        (snapshot, receiver, revision)
    }
}

/// One watch: the changes under a prefix after the last one sent.
struct Watching {
    directory: Arc<Directory>,
    prefix: String,
    receiver: broadcast::Receiver<Arc<Change>>,
    /// The revision the watcher is up to date with.
    seen: u64,
    /// The first snapshot, until sent.
    first: Option<Vec<(String, Registration)>>,
}

impl Watching {
    async fn next(mut self) -> Option<(NameEvent, Self)> {
        if let Some(snapshot) = self.first.take() {
            return Some((NameEvent::Snapshot(snapshot), self));
        }
        loop {
            match self.receiver.recv().await {
                Ok(change) => {
                    if change.revision <= self.seen || !change.name.starts_with(&self.prefix) {
                        continue;
                    }
                    self.seen = change.revision;
                    let name = change.name.clone();
                    let event = match &change.registration {
                        Some(registration) => NameEvent::Registered {
                            name,
                            registration: registration.clone(),
                        },
                        None => NameEvent::Removed { name },
                    };
                    return Some((event, self));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, prefix = %self.prefix, "watcher fell behind; resending a snapshot");
                    let (snapshot, receiver, seen) = self.directory.subscribe(&self.prefix);
                    self.receiver = receiver;
                    self.seen = seen;
                    return Some((NameEvent::Snapshot(snapshot), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// One connection's view of the name server: the names it registered.
#[derive(Debug)]
struct Session {
    directory: Arc<Directory>,
    id: u64,
    owned: Mutex<BTreeSet<String>>,
}

impl Session {
    fn new(directory: Arc<Directory>) -> Self {
        let id = directory.next_session.fetch_add(1, Ordering::Relaxed);
        Self {
            directory,
            id,
            owned: Mutex::default(),
        }
    }

    fn owned(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The caller's address, for logs.
fn peer() -> String {
    CallContext::current().map_or_else(String::new, |c| c.peer_addr().to_string())
}

impl NameServer for Session {
    async fn register(&self, name: String, registration: Registration) -> Result<(), NameError> {
        if name.is_empty() {
            return Err(NameError::InvalidName {
                name,
                reason: "a name must not be empty".into(),
            });
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(NameError::InvalidName {
                name,
                reason: format!("a name is at most {MAX_NAME_BYTES} bytes"),
            });
        }
        let size = registration.addr.len()
            + registration.object.len()
            + registration
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > MAX_METADATA_BYTES {
            return Err(NameError::Limit {
                reason: format!(
                    "a registration is at most {MAX_METADATA_BYTES} bytes, this one {size}"
                ),
            });
        }
        if !self.owned().contains(&name) && self.owned().len() >= MAX_NAMES_PER_CONNECTION {
            return Err(NameError::Limit {
                reason: format!("one connection holds at most {MAX_NAMES_PER_CONNECTION} names"),
            });
        }
        if let Err(e) = registration.addr.parse::<Address>() {
            let reason = match e {
                Error::InvalidAddress { reason, .. } => reason.to_owned(),
                other => other.to_string(),
            };
            return Err(NameError::InvalidAddress {
                addr: registration.addr,
                reason,
            });
        }
        let mut entries = self.directory.lock();
        if entries.get(&name).is_some_and(|e| e.owner != self.id) {
            return Err(NameError::Taken { name });
        }
        tracing::debug!(%name, addr = %registration.addr, object = %registration.object,
            peer = %peer(), "name registered");
        self.owned().insert(name.clone());
        self.directory.publish(&name, Some(&registration));
        entries.insert(
            name,
            Entry {
                owner: self.id,
                registration,
            },
        );
        Ok(())
    }

    async fn lookup(&self, name: String) -> Option<Registration> {
        self.directory
            .lock()
            .get(&name)
            .map(|e| e.registration.clone())
    }

    async fn list(&self, prefix: String) -> Vec<(String, Registration)> {
        self.directory
            .lock()
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .map(|(name, e)| (name.clone(), e.registration.clone()))
            .collect()
    }

    async fn remove(&self, name: String) -> bool {
        let mut entries = self.directory.lock();
        if entries.get(&name).is_none_or(|e| e.owner != self.id) {
            return false;
        }
        entries.remove(&name);
        self.directory.publish(&name, None);
        self.owned().remove(&name);
        tracing::debug!(%name, peer = %peer(), "name removed");
        true
    }

    async fn watch(&self, prefix: String) -> Streaming<NameEvent> {
        let (snapshot, receiver, seen) = self.directory.subscribe(&prefix);
        let watching = Watching {
            directory: self.directory.clone(),
            prefix,
            receiver,
            seen,
            first: Some(snapshot),
        };
        Streaming::new(futures::stream::unfold(watching, Watching::next))
    }
}

impl Drop for Session {
    /// The connection closed: its names go with it.
    fn drop(&mut self) {
        let owned = std::mem::take(&mut *self.owned());
        if owned.is_empty() {
            return;
        }
        let mut entries = self.directory.lock();
        for name in owned {
            if entries.get(&name).is_some_and(|e| e.owner == self.id) {
                tracing::debug!(%name, "connection closed; name removed");
                entries.remove(&name);
                self.directory.publish(&name, None);
            }
        }
    }
}
