//! [`NameServerRegistry`]: the registry on the embedded `ipc` name server.
//!
//! Instances are names in the name server's directory (`<prefix>/S/I`),
//! with the trait and fingerprint in the registration's metadata
//! (`ipc.trait`, `ipc.fingerprint`). A name server entry lives as long as
//! the connection that registered it, so there is no lease: a replica that
//! dies (even by `kill -9`) is removed as soon as the name server sees its
//! connection close. Each registration has a connection of its own, and
//! watches its own name on it: when that connection is lost (the name
//! server restarted), the registration is made again, with backoff.

use std::time::Duration;

use futures::StreamExt;
use ipc_core::config::Reconnect;
use ipc_core::nameserver::{NameEvent, NameServerProxy, Registration as NameRegistration};
use ipc_core::{Address, CallError, Client, ClientBuilder, Streaming};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::RegistryError;
use crate::instance::{
    DEFAULT_PREFIX, Instance, check_segment, list_prefix, service_prefix, split_key,
};
use crate::registry::{Registration, Registry, Watch, WatchEvent, backoff};

/// Metadata key holding the instance's trait name.
const TRAIT_KEY: &str = "ipc.trait";
/// Metadata key holding the instance's fingerprint (16 hex digits).
const FINGERPRINT_KEY: &str = "ipc.fingerprint";

/// The registry on an `ipc` name server: no setup beyond a name server
/// (the `nameserver` program, or [`ipc_core::ServerBuilder::name_server`]).
///
/// Instances are names in the name server's directory (`<prefix>/S/I`),
/// with the trait and fingerprint in the registration's metadata
/// (`ipc.trait`, `ipc.fingerprint`). A name server entry lives as long as
/// the connection that registered it, so there is no lease: a replica that
/// dies (even by `kill -9`) is removed as soon as the name server sees its
/// connection close. Each registration has a connection of its own, and
/// watches its own name on it: when that connection is lost (the name
/// server restarted), the registration is made again, with backoff.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let names = ipc_core::Server::builder().addr("127.0.0.1:0").idle_timeout(None)
/// #     .name_server().start().await?;
/// use ipc_registry::{NameServerRegistry, Registry};
///
/// let registry = NameServerRegistry::new(names.local_addr());
/// assert!(registry.lookup("calc").await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NameServerRegistry {
    addr: Address,
    prefix: String,
    client: ClientBuilder,
}

impl NameServerRegistry {
    /// The name server at `addr`, key prefix [`DEFAULT_PREFIX`], default
    /// client settings.
    pub fn new(addr: impl Into<Address>) -> Self {
        Self {
            addr: addr.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            client: ClientBuilder::default(),
        }
    }

    /// The key prefix: an instance is the name `<prefix>/S/I`. Default
    /// [`DEFAULT_PREFIX`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Settings for the connections to the name server (timeouts, TLS, a
    /// shared key). Default: `ClientBuilder`'s. Its address and reconnect
    /// policy are not used: lost connections are handled here.
    pub fn client(mut self, client: ClientBuilder) -> Self {
        self.client = client;
        self
    }

    async fn connect(&self) -> Result<(Client, NameServerProxy), RegistryError> {
        let client = self
            .client
            .clone()
            .addr(self.addr.clone())
            .reconnect(Reconnect::NEVER)
            .connect()
            .await
            .map_err(|e| self.unreachable(e))?;
        let ns = client
            .get_exposed_object::<NameServerProxy>()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok((client, ns))
    }

    fn unreachable(&self, e: ipc_core::Error) -> RegistryError {
        if e.is_timeout() {
            return RegistryError::Timeout {
                endpoint: self.addr.to_string(),
                after: Duration::ZERO,
            };
        }
        RegistryError::Unreachable {
            endpoint: self.addr.to_string(),
            source: Box::new(e),
        }
    }

    /// Registers `name` on a new connection, and watches it there (the
    /// watch ends when the connection does).
    async fn register_once(
        &self,
        name: &str,
        registration: &NameRegistration,
    ) -> Result<Held, RegistryError> {
        let (client, ns) = self.connect().await?;
        match ns.register(name.to_owned(), registration.clone()).await {
            Ok(()) => {}
            Err(CallError::App(e)) => {
                return Err(RegistryError::Refused {
                    detail: e.to_string(),
                });
            }
            Err(CallError::Rpc(e)) => return Err(self.unreachable(e)),
            Err(e) => {
                return Err(RegistryError::Refused {
                    detail: e.to_string(),
                });
            }
        }
        let watch = ns
            .watch(name.to_owned())
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(Held {
            _client: client,
            ns,
            watch,
        })
    }

    /// Keeps `name` registered until `stop`, then removes it.
    async fn keep(
        self,
        name: String,
        registration: NameRegistration,
        mut held: Held,
        stop: CancellationToken,
    ) -> Result<(), RegistryError> {
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    return match held.ns.remove(name.clone()).await {
                        Ok(_) => Ok(()),
                        // The connection is gone: so is the name.
                        Err(e) if e.is_connection_error() => Ok(()),
                        Err(e) => Err(self.unreachable(e)),
                    };
                }
                item = held.watch.next() => match item {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => tracing::warn!(%name, error = %e,
                        "lost the name server; registering again"),
                    None => tracing::warn!(%name, "lost the name server; registering again"),
                },
            }
            let mut failures = 0;
            held = loop {
                failures += 1;
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
                match self.register_once(&name, &registration).await {
                    Ok(held) => {
                        tracing::info!(%name, "registered again");
                        break held;
                    }
                    Err(e) if failures == 1 => tracing::warn!(%name, error = %e,
                        "cannot register again yet; retrying"),
                    Err(e) => tracing::debug!(%name, error = %e, "cannot register again yet"),
                }
            };
        }
    }

    async fn watch_once(&self, prefix: &str) -> Result<Followed, RegistryError> {
        let (client, ns) = self.connect().await?;
        let stream = ns
            .watch(prefix.to_owned())
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(Followed {
            _client: client,
            stream,
        })
    }

    /// Forwards `followed`'s events, then watches again after each loss,
    /// until the receiver is gone.
    async fn follow(self, prefix: String, mut followed: Followed, tx: mpsc::Sender<WatchEvent>) {
        loop {
            loop {
                let item = tokio::select! {
                    item = followed.stream.next() => item,
                    _ = tx.closed() => return,
                };
                let event = match item {
                    Some(Ok(event)) => event,
                    Some(Err(e)) => {
                        tracing::warn!(%prefix, error = %e, "watch of the name server lost; watching again");
                        break;
                    }
                    None => {
                        tracing::warn!(%prefix, "watch of the name server ended; watching again");
                        break;
                    }
                };
                if let Some(event) = self.translate(event) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            let mut failures = 0;
            followed = loop {
                failures += 1;
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
                match self.watch_once(&prefix).await {
                    Ok(f) => break f,
                    Err(e) => tracing::debug!(%prefix, error = %e, "cannot watch again yet"),
                }
            };
        }
    }

    fn translate(&self, event: NameEvent) -> Option<WatchEvent> {
        match event {
            NameEvent::Snapshot(all) => Some(WatchEvent::Snapshot(
                all.iter()
                    .filter_map(|(name, r)| self.decode(name, r))
                    .collect(),
            )),
            NameEvent::Registered { name, registration } => {
                self.decode(&name, &registration).map(WatchEvent::Up)
            }
            NameEvent::Removed { name } => {
                split_key(&self.prefix, &name).map(|(service, id)| WatchEvent::Down { service, id })
            }
            _ => None,
        }
    }

    /// The instance a name server entry stands for; `None` (logged) for
    /// entries under the prefix that this crate did not write.
    fn decode(&self, name: &str, r: &NameRegistration) -> Option<Instance> {
        let (service, id) = split_key(&self.prefix, name)?;
        let trait_name = r.metadata.get(TRAIT_KEY);
        let fingerprint = r
            .metadata
            .get(FINGERPRINT_KEY)
            .and_then(|f| u64::from_str_radix(f, 16).ok());
        let (Some(trait_name), Some(fingerprint)) = (trait_name, fingerprint) else {
            tracing::warn!(%name, "name server entry without a trait and fingerprint; ignored");
            return None;
        };
        let mut metadata = r.metadata.clone();
        metadata.remove(TRAIT_KEY);
        metadata.remove(FINGERPRINT_KEY);
        Some(Instance {
            service,
            id,
            addr: r.addr.clone(),
            object: r.object.clone(),
            trait_name: trait_name.clone(),
            fingerprint,
            metadata,
        })
    }

    async fn list_under(&self, prefix: String) -> Result<Vec<Instance>, RegistryError> {
        let (_client, ns) = self.connect().await?;
        let all = ns.list(prefix).await.map_err(|e| self.unreachable(e))?;
        Ok(all.iter().filter_map(|(n, r)| self.decode(n, r)).collect())
    }
}

/// A registration's connection and the watch of its own name on it.
struct Held {
    _client: Client,
    ns: NameServerProxy,
    watch: Streaming<NameEvent>,
}

/// A watch and the connection it runs on.
struct Followed {
    _client: Client,
    stream: Streaming<NameEvent>,
}

/// Events a watcher has not read yet, per watch. Worst case: this many
/// instances ([`crate::MAX_INSTANCE_BYTES`] each) held for a slow reader.
const WATCH_BUFFER: usize = 64;

fn to_registration(instance: &Instance) -> Result<NameRegistration, RegistryError> {
    let addr: Address = instance
        .addr
        .parse()
        .map_err(|e| RegistryError::InvalidInstance {
            detail: format!("address `{}`: {e}", instance.addr),
        })?;
    let mut registration = NameRegistration::new(addr, instance.object.clone());
    for (k, v) in &instance.metadata {
        registration = registration.with_metadata(k.clone(), v.clone());
    }
    Ok(registration
        .with_metadata(TRAIT_KEY, instance.trait_name.clone())
        .with_metadata(FINGERPRINT_KEY, format!("{:016x}", instance.fingerprint)))
}

impl Registry for NameServerRegistry {
    fn register(
        &self,
        instance: Instance,
    ) -> futures::future::BoxFuture<'_, Result<Registration, RegistryError>> {
        Box::pin(async move {
            instance.check()?;
            let name = instance.key(&self.prefix);
            let registration = to_registration(&instance)?;
            let held = self.register_once(&name, &registration).await?;
            let stop = CancellationToken::new();
            let task = tokio::spawn(self.clone().keep(name, registration, held, stop.clone()));
            Ok(Registration::new(instance, stop, task))
        })
    }

    fn lookup<'a>(
        &'a self,
        service: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        Box::pin(async move {
            check_segment("service name", service)?;
            self.list_under(service_prefix(&self.prefix, service)).await
        })
    }

    fn list<'a>(
        &'a self,
        start: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        Box::pin(async move { self.list_under(list_prefix(&self.prefix, start)).await })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Watch, RegistryError>> {
        Box::pin(async move {
            check_segment("service name", service)?;
            let prefix = service_prefix(&self.prefix, service);
            let followed = self.watch_once(&prefix).await?;
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            tokio::spawn(self.clone().follow(prefix, followed, tx));
            Ok(receiver_stream(rx))
        })
    }
}

/// The events `rx` receives, as a [`Watch`].
pub(crate) fn receiver_stream(rx: mpsc::Receiver<WatchEvent>) -> Watch {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
}
