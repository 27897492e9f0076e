//! [`EtcdRegistry`]: the registry on etcd (feature `etcd`).
//!
//! An instance is the key `<prefix>/S/I` (value: JSON, see the
//! [crate docs](crate)), bound to a lease the registering process grants
//! with a TTL ([`EtcdBuilder::ttl`], default 5 s) and renews every third
//! of it. So:
//!
//! - a process that dies, even by `kill -9`, disappears when its lease
//!   expires: at most the TTL after its last renewal;
//! - [`Registration::deregister`] revokes the lease: the key goes at once
//!   (and [`Registration::deregister_on_stop`] does so before the server
//!   drains);
//! - a lost etcd connection is retried (100 ms, doubling up to 2 s); when
//!   etcd is back, the lease is renewed if it still exists, and the key
//!   is written again (with a new lease if the old one expired). Failures
//!   are logged, never fatal to serving;
//! - a watch reads the service's keys, then follows their changes from the
//!   next revision; when it is lost it pauses (the last known set stays in
//!   use) and resumes with a fresh snapshot.
//!
//! [`LocalEtcd`] starts a throwaway etcd process, for tests and examples.

mod local;

use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions, WatchStream,
};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use local::LocalEtcd;

use crate::error::RegistryError;
use crate::instance::{
    DEFAULT_PREFIX, Instance, check_segment, list_prefix, service_prefix, split_key,
};
use crate::name_server::receiver_stream;
use crate::registry::{Registration, Registry, Watch, WatchEvent, backoff};

/// Default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Settings of an [`EtcdRegistry`].
#[derive(Debug, Clone)]
pub struct EtcdBuilder {
    endpoints: Vec<String>,
    prefix: String,
    ttl: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl EtcdBuilder {
    /// The key prefix: an instance is the key `<prefix>/S/I`. Default
    /// [`DEFAULT_PREFIX`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The TTL of each registration's lease: how long after its last
    /// renewal a dead process stays listed. Renewed every third of it.
    /// Default [`DEFAULT_TTL`] (5 s); whole seconds (rounded up), at least
    /// 1 s, checked by [`EtcdBuilder::connect`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long one request to etcd (a grant, a put, a renewal's answer, a
    /// read) may take before it counts as failed. Default 2 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting to an etcd endpoint may take. Default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects, and checks that etcd answers.
    pub async fn connect(self) -> Result<EtcdRegistry, RegistryError> {
        if self.endpoints.is_empty() {
            return Err(RegistryError::Config {
                detail: "no etcd endpoint".into(),
            });
        }
        if self.ttl < Duration::from_secs(1) {
            return Err(RegistryError::Config {
                detail: format!("lease TTL {:?} is under one second", self.ttl),
            });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), self.request_timeout);
        let endpoint = self.endpoints.join(",");
        let client = Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|e| unreachable(&endpoint, e))?;
        let registry = EtcdRegistry {
            client,
            endpoint,
            prefix: self.prefix,
            ttl_secs: i64::try_from(self.ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX),
            timeout: self.request_timeout,
        };
        let mut client = registry.client.clone();
        let probe = GetOptions::new().with_count_only();
        registry
            .timed(client.get(registry.prefix.clone(), Some(probe)))
            .await?;
        Ok(registry)
    }
}

/// The registry on etcd (see the [module docs](self)).
///
/// ```no_run
/// # async fn f() -> Result<(), ipc_registry::RegistryError> {
/// use std::time::Duration;
/// use ipc_registry::EtcdRegistry;
///
/// let registry = EtcdRegistry::builder(["http://127.0.0.1:2379"])
///     .ttl(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    /// The endpoints, for errors.
    endpoint: String,
    prefix: String,
    ttl_secs: i64,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

fn unreachable(endpoint: &str, e: etcd_client::Error) -> RegistryError {
    RegistryError::Unreachable {
        endpoint: endpoint.to_owned(),
        source: Box::new(e),
    }
}

/// How a registration's keep-alive session ended.
enum Session {
    /// Deregistration was asked for.
    Stopped,
    /// etcd says the lease is gone.
    Expired,
    /// etcd could not be reached, or did not answer.
    Failed(RegistryError),
}

impl EtcdRegistry {
    /// An etcd registry at `endpoints` (`http://HOST:PORT`), default
    /// settings; see [`EtcdBuilder`].
    pub fn builder<E: Into<String>>(endpoints: impl IntoIterator<Item = E>) -> EtcdBuilder {
        EtcdBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: DEFAULT_TTL,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// Connects to etcd at `endpoint` with default settings.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, RegistryError> {
        Self::builder([endpoint.into()]).connect().await
    }

    /// `request` within the request timeout.
    async fn timed<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result.map_err(|e| unreachable(&self.endpoint, e)),
            Err(_) => Err(RegistryError::Timeout {
                endpoint: self.endpoint.clone(),
                after: self.timeout,
            }),
        }
    }

    /// Grants a lease and writes the instance under it.
    async fn put_with_new_lease(&self, key: &str, value: &[u8]) -> Result<i64, RegistryError> {
        let mut client = self.client.clone();
        let lease = self
            .timed(client.lease_grant(self.ttl_secs, None))
            .await?
            .id();
        self.put(key, value, lease).await?;
        Ok(lease)
    }

    async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), RegistryError> {
        let mut client = self.client.clone();
        let options = PutOptions::new().with_lease(lease);
        self.timed(client.put(key, value, Some(options))).await?;
        Ok(())
    }

    /// Renews `lease` every third of the TTL until `stop`, a failure, or
    /// etcd saying the lease is gone.
    async fn renew(&self, lease: i64, stop: &CancellationToken) -> Session {
        let mut client = self.client.clone();
        let (mut keeper, mut answers) = match self.timed(client.lease_keep_alive(lease)).await {
            Ok(pair) => pair,
            Err(e) => return Session::Failed(e),
        };
        let every = Duration::from_millis(
            u64::try_from(self.ttl_secs.saturating_mul(1000) / 3).unwrap_or(1000),
        );
        loop {
            if let Err(e) = self.timed(keeper.keep_alive()).await {
                return Session::Failed(e);
            }
            match self.timed(answers.message()).await {
                Ok(Some(answer)) if answer.ttl() > 0 => {}
                Ok(Some(_)) => return Session::Expired,
                Ok(None) => {
                    return Session::Failed(RegistryError::Refused {
                        detail: "etcd ended the lease keep-alive stream".into(),
                    });
                }
                Err(e) => return Session::Failed(e),
            }
            tokio::select! {
                _ = stop.cancelled() => return Session::Stopped,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Keeps `key` registered under a live lease until `stop`, then
    /// revokes the lease.
    async fn keep(
        self,
        key: String,
        value: Vec<u8>,
        mut lease: i64,
        stop: CancellationToken,
    ) -> Result<(), RegistryError> {
        loop {
            match self.renew(lease, &stop).await {
                Session::Stopped => {
                    let mut client = self.client.clone();
                    self.timed(client.lease_revoke(lease)).await?;
                    tracing::debug!(%key, "lease revoked");
                    return Ok(());
                }
                Session::Expired => {
                    tracing::warn!(%key, "registration lease expired; registering again");
                }
                Session::Failed(e) => {
                    tracing::warn!(%key, error = %e,
                        "cannot renew the registration lease; retrying (serving goes on)");
                }
            }
            let mut failures = 0;
            lease = loop {
                failures += 1;
                tokio::select! {
                    // etcd is out of reach: the lease expires by itself.
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
                match self.restore(&key, &value, lease).await {
                    Ok(lease) => {
                        tracing::info!(%key, "registration restored");
                        break lease;
                    }
                    Err(e) => {
                        tracing::debug!(%key, error = %e, "cannot restore the registration yet")
                    }
                }
            };
        }
    }

    /// After an outage: the same lease if etcd still has it (the key
    /// written again under it), else a new one.
    async fn restore(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, RegistryError> {
        tracing::debug!(%key, lease, "restoring the registration");
        let mut client = self.client.clone();
        // Any failure here means "not known alive": a new lease is granted
        // (which fails in turn if etcd is still out of reach).
        let alive = match self.timed(client.lease_keep_alive(lease)).await {
            Ok((mut keeper, mut answers)) => {
                self.timed(keeper.keep_alive()).await.is_ok()
                    && matches!(self.timed(answers.message()).await, Ok(Some(a)) if a.ttl() > 0)
            }
            Err(_) => false,
        };
        if alive {
            self.put(key, value, lease).await?;
            Ok(lease)
        } else {
            self.put_with_new_lease(key, value).await
        }
    }

    /// The instances under `prefix` now, and the revision they are at.
    async fn read(&self, prefix: &str) -> Result<(Vec<Instance>, i64), RegistryError> {
        let mut client = self.client.clone();
        let answer = self
            .timed(client.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        let instances = answer
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                Instance::decode(&self.prefix, key, kv.value())
            })
            .collect();
        Ok((instances, revision))
    }

    /// A snapshot of `prefix` and a watch of the changes after it.
    async fn start_watch(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Instance>, WatchStream), RegistryError> {
        let (instances, revision) = self.read(prefix).await?;
        let mut client = self.client.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let stream = self.timed(client.watch(prefix, Some(options))).await?;
        Ok((instances, stream))
    }

    /// Forwards changes under `prefix` to `tx`, starting again (with a
    /// snapshot) after each loss, until the receiver is gone.
    async fn follow(self, prefix: String, mut stream: WatchStream, tx: mpsc::Sender<WatchEvent>) {
        loop {
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let answer = match message {
                    Ok(Some(answer)) => answer,
                    Ok(None) => {
                        tracing::warn!(%prefix, "etcd ended the watch; watching again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%prefix, error = %e, "etcd watch lost; watching again");
                        break;
                    }
                };
                if answer.canceled() {
                    tracing::warn!(%prefix, reason = answer.cancel_reason(),
                        "etcd cancelled the watch; watching again");
                    break;
                }
                for event in answer.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Ok(key) = kv.key_str() else { continue };
                    let change = match event.event_type() {
                        EventType::Put => {
                            Instance::decode(&self.prefix, key, kv.value()).map(WatchEvent::Up)
                        }
                        EventType::Delete => split_key(&self.prefix, key)
                            .map(|(service, id)| WatchEvent::Down { service, id }),
                    };
                    if let Some(change) = change {
                        if tx.send(change).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let mut failures = 0;
            stream = loop {
                failures += 1;
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
                match self.start_watch(&prefix).await {
                    Ok((instances, stream)) => {
                        tracing::info!(%prefix, "etcd watch resumed");
                        if tx.send(WatchEvent::Snapshot(instances)).await.is_err() {
                            return;
                        }
                        break stream;
                    }
                    Err(e) => tracing::debug!(%prefix, error = %e, "cannot watch again yet"),
                }
            };
        }
    }
}

/// Events a watcher has not read yet, per watch. Worst case: this many
/// instances ([`crate::MAX_INSTANCE_BYTES`] each) held for a slow reader.
const WATCH_BUFFER: usize = 64;

impl Registry for EtcdRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, RegistryError>> {
        Box::pin(async move {
            instance.check()?;
            let key = instance.key(&self.prefix);
            let value = instance.value();
            let lease = self.put_with_new_lease(&key, &value).await?;
            tracing::debug!(%key, lease, ttl_secs = self.ttl_secs, "registered in etcd");
            let stop = CancellationToken::new();
            let task = tokio::spawn(self.clone().keep(key, value, lease, stop.clone()));
            Ok(Registration::new(instance, stop, task))
        })
    }

    fn lookup<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        Box::pin(async move {
            check_segment("service name", service)?;
            Ok(self.read(&service_prefix(&self.prefix, service)).await?.0)
        })
    }

    fn list<'a>(&'a self, start: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        Box::pin(async move { Ok(self.read(&list_prefix(&self.prefix, start)).await?.0) })
    }

    fn watch<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Watch, RegistryError>> {
        Box::pin(async move {
            check_segment("service name", service)?;
            let prefix = service_prefix(&self.prefix, service);
            let (instances, stream) = self.start_watch(&prefix).await?;
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            // The first snapshot fits: the channel is empty.
            let _ = tx.try_send(WatchEvent::Snapshot(instances));
            tokio::spawn(self.clone().follow(prefix, stream, tx));
            Ok(receiver_stream(rx))
        })
    }
}
