//! [`Registry`]: the one interface both backends implement, and the
//! [`Registration`] a replica holds while it is registered.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use ipc_core::ServerHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::RegistryError;
use crate::instance::Instance;

/// A change to the instances of a watched service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// Every instance now: replaces whatever the watcher knew. The first
    /// event of a watch, and sent again after the watch had to be restarted
    /// (the registry was unreachable for a while).
    Snapshot(Vec<Instance>),
    /// An instance was registered, or its registration changed.
    Up(Instance),
    /// An instance was deregistered, or its lease expired.
    Down {
        /// Its service.
        service: String,
        /// Its id.
        id: String,
    },
}

/// The changes to one service's instances, for as long as it is read. It
/// does not end while the registry is unreachable: it pauses, and resumes
/// with a [`WatchEvent::Snapshot`] when the registry is back.
pub type Watch = BoxStream<'static, WatchEvent>;

/// A service registry: where replicas register and clients find them.
///
/// Two backends implement it: [`crate::NameServerRegistry`] (the embedded
/// `ipc` name server, no setup) and, with the `etcd` feature,
/// `EtcdRegistry`. Both store an instance of service `S` with id
/// `I` under the key `<prefix>/S/I` (prefix [`crate::DEFAULT_PREFIX`]).
///
/// Its methods return boxed futures, so that a `&dyn Registry` works.
pub trait Registry: fmt::Debug + Send + Sync {
    /// Registers `instance`, and keeps it registered — renewing its lease,
    /// re-registering after the registry comes back — until the returned
    /// [`Registration`] is deregistered or dropped, or the process dies.
    /// Fails if the instance is invalid or the first registration fails.
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, RegistryError>>;

    /// Every live instance of `service`, by id.
    fn lookup<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>>;

    /// Every live instance of every service whose name starts with
    /// `start` (all for `""`), by service then id.
    fn list<'a>(&'a self, start: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>>;

    /// Follows `service`'s instances: a [`WatchEvent::Snapshot`] first, then
    /// each change as the registry reports it (pushed, not polled). Fails
    /// if the registry cannot be reached for the first snapshot; later
    /// outages are retried in the background (and logged).
    fn watch<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Watch, RegistryError>>;
}

/// An instance kept registered by a background task. Deregister it with
/// [`Registration::deregister`] (waits until the registry has removed it),
/// or hand it to a server with [`Registration::deregister_on_stop`].
/// Dropped, it is deregistered in the background.
pub struct Registration {
    instance: Instance,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), RegistryError>>>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Longest [`Registration::deregister`] waits for the registry.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

impl Registration {
    /// A registration whose upkeep runs in `task`: it keeps `instance`
    /// registered until `stop` is cancelled, then deregisters it and ends.
    /// For backends.
    pub(crate) fn new(
        instance: Instance,
        stop: CancellationToken,
        task: JoinHandle<Result<(), RegistryError>>,
    ) -> Self {
        Self {
            instance,
            stop,
            task: Some(task),
        }
    }

    /// What is registered.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Removes the instance from the registry (etcd: revokes its lease) and
    /// returns once the registry has, or after [`DEREGISTER_TIMEOUT`] (the
    /// lease then expires by itself).
    pub async fn deregister(mut self) -> Result<(), RegistryError> {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(DEREGISTER_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(RegistryError::Refused {
                detail: format!("the registration task failed: {join}"),
            }),
            Err(_) => Err(RegistryError::Timeout {
                endpoint: self.instance.key(""),
                after: DEREGISTER_TIMEOUT,
            }),
        }
    }

    /// Deregisters when `server` starts a graceful shutdown, *before* it
    /// stops accepting and sends GoAway (see
    /// [`ServerHandle::before_drain`]): clients stop choosing this replica
    /// while it still serves, then it drains. A failure is logged.
    pub fn deregister_on_stop(self, server: &ServerHandle) {
        server.before_drain(async move {
            let key = format!("{}/{}", self.instance.service, self.instance.id);
            match self.deregister().await {
                Ok(()) => tracing::info!(instance = %key, "deregistered before draining"),
                Err(e) => tracing::warn!(instance = %key, error = %e,
                    "could not deregister before draining; the entry goes when it expires"),
            }
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The task deregisters and ends by itself.
        self.stop.cancel();
    }
}

/// Waits before retrying after the `failures`-th failure in a row: 100 ms,
/// doubling, at most 2 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(Duration::from_secs(2))
}
