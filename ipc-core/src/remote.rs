//! [`Remote<P>`]: an object passed over a connection — a callback the
//! caller hands to the server, or an object a method returns.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{self, Serialize, Serializer};

use crate::client::{ObjectRef, Proxy};
use crate::connection::Connection;
use crate::service::Service;
use crate::{scope, wire};

/// An object of the trait behind proxy type `P`, passed over a connection.
///
/// Use it in an `#[expose]` trait wherever an object should cross instead of
/// a value:
///
/// - **as an argument** — a callback: the caller passes one of its own
///   objects, `Remote::new(ListenerServer::new(my_listener))`; the server's
///   handler receives a `Remote<ListenerProxy>` and calls it, during the call
///   or later, over the same connection (the client opens no listening
///   socket);
/// - **as a return value** — the server creates an object per call (a
///   session, a cursor) and returns `Remote::new(SessionServer::new(session))`;
///   the caller receives a `Remote<SessionProxy>` whose calls go to that
///   object alone.
///
/// A `Remote<P>` dereferences to the proxy `P`, so its methods are called
/// directly. Before it is sent, calls go to the local object.
///
/// **Lifetime.** The object lives on its owner's side until the other side
/// drops the last clone of the proxy it received (a release message tells
/// the owner), or the connection closes; then the owner drops it. A call on
/// an object that is gone fails with `Error::UnknownObject`; one whose
/// connection is gone fails with `Error::ConnectionLost`. Remote objects do
/// not survive a reconnect: they belong to one connection.
///
/// Only the process that serves an object can send it: a `Remote` received
/// from the peer cannot be passed on (encoding it fails).
///
/// ```
/// use ipc_core::{expose, Remote};
///
/// #[expose]
/// pub trait Counter {
///     /// Adds one and returns the count.
///     async fn bump(&self) -> u64;
/// }
///
/// #[expose]
/// pub trait Factory {
///     /// A fresh counter, with its own state.
///     async fn counter(&self) -> Remote<CounterProxy>;
/// }
///
/// #[derive(Default)]
/// struct Count(std::sync::atomic::AtomicU64);
/// impl Counter for Count {
///     async fn bump(&self) -> u64 {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
///     }
/// }
///
/// struct Make;
/// impl Factory for Make {
///     async fn counter(&self) -> Remote<CounterProxy> {
///         Remote::new(CounterServer::new(Count::default()))
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_core::Error> {
/// # let server = ipc_core::Server::builder().addr("127.0.0.1:0")
/// #     .expose(FactoryServer::new(Make)).start().await?;
/// # let client = ipc_core::Client::connect(server.local_addr()).await?;
/// let factory: FactoryProxy = client.get_exposed_object().await?;
/// let a = factory.counter().await?;
/// let b = factory.counter().await?;
/// assert_eq!(a.bump().await?, 1);
/// assert_eq!(a.bump().await?, 2);
/// assert_eq!(b.bump().await?, 1); // its own state
/// # server.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Remote<P> {
    proxy: P,
}

/// Ties a served object to the proxy type of its trait: implemented by
/// `#[expose]` for `{Trait}Server<T>` and `{Trait}Proxy`, so that
/// [`Remote::new`] takes only a server of the right trait.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not serve the trait of `{P}`",
    label = "expected the `{{Trait}}Server` of the proxy's trait",
    note = "wrap your implementation: `Remote::new(ListenerServer::new(my_listener))` for a `Remote<ListenerProxy>`"
)]
pub trait Serves<P: Proxy>: Service {}

impl<P: Proxy> Remote<P> {
    /// Wraps an object this process serves, to send it over a connection.
    pub fn new<S: Serves<P>>(service: S) -> Self {
        let service: Arc<dyn Service> = Arc::new(service);
        Self {
            proxy: P::from_object(ObjectRef::local(service, P::DESCRIPTOR)),
        }
    }

    /// The proxy.
    pub fn proxy(&self) -> &P {
        &self.proxy
    }

    /// The proxy, by value.
    pub fn into_proxy(self) -> P {
        self.proxy
    }
}

impl<P> Deref for Remote<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.proxy
    }
}

impl<P: Proxy> fmt::Debug for Remote<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Remote").field(self.proxy.object()).finish()
    }
}

impl<P: Proxy> Serialize for Remote<P> {
    /// On the wire: the object's handle on the connection (`u32`, from 2³¹
    /// up), exported as it is encoded.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(service) = self.proxy.object().local_service() else {
            return Err(ser::Error::custom(
                "only an object this process serves can be sent: wrap it with `Remote::new`; \
                 a remote object received from a peer cannot be passed on",
            ));
        };
        let Some(conn) = Connection::current() else {
            return Err(ser::Error::custom(
                "a remote object can only be sent in a call's arguments, its reply or a stream item",
            ));
        };
        match conn.export(service.clone()) {
            Ok(handle) => serializer.serialize_u32(handle),
            Err(e @ crate::Error::Overloaded { .. }) => {
                scope::refuse(e.to_string());
                Err(ser::Error::custom(e))
            }
            Err(e) => Err(ser::Error::custom(e)),
        }
    }
}

impl<'de, P: Proxy> Deserialize<'de> for Remote<P> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if crate::schema::is_tracing() {
            return Err(de::Error::custom(
                "an object handle (`Remote<P>`): only a proxy can use it",
            ));
        }
        let handle = u32::deserialize(deserializer)?;
        if handle < wire::EXPORT_BASE {
            return Err(de::Error::custom(format!(
                "{handle} is not the handle of an exported object"
            )));
        }
        let Some(conn) = Connection::current() else {
            return Err(de::Error::custom(
                "a remote object can only be received over a connection",
            ));
        };
        Ok(Self {
            proxy: P::from_object(ObjectRef::imported(conn, handle, P::DESCRIPTOR)),
        })
    }
}
