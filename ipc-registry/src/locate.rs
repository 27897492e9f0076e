//! [`locate_all`] and [`Locate`]: a balanced proxy over a service's
//! replicas, kept current by a registry's watch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use ipc_core::client::{Endpoint, Membership, Policy, Replicas, ReplicasBuilder};
use ipc_core::{ClientBuilder, Proxy};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::RegistryError;
use crate::instance::Instance;
use crate::registry::{Registry, Watch, WatchEvent};

/// How long a replica missing from a watch's *resumed* snapshot (after the
/// registry was out of reach) stays in the set: a registry that restarted
/// empty, or a name server that restarted, lists replicas again as they
/// register again, which takes them a moment. Meanwhile a replica whose
/// connection works keeps getting calls; one whose connection failed gets
/// none anyway. A replica that deregisters is removed at once.
pub const RESUME_GRACE: Duration = Duration::from_secs(5);

/// A balanced `{Trait}Proxy` over every replica of `service` in `registry`,
/// with the default settings of [`Locate`]: the usual methods and errors,
/// each call sent to one live replica (power of two choices on calls in
/// flight), the set kept current by the registry's watch.
///
/// Fails only if the registry cannot be reached for the first snapshot.
/// With no replica registered, calls fail at once with
/// [`ipc_core::Error::NoReplicas`] naming the service.
pub async fn locate_all<P: Proxy>(
    registry: &dyn Registry,
    service: &str,
) -> Result<P, RegistryError> {
    Ok(Locate::new(service).replicas::<P>(registry).await?.proxy())
}

/// Settings of a balanced proxy (see [`locate_all`]).
#[derive(Debug, Clone)]
pub struct Locate {
    service: String,
    policy: Policy,
    client: ClientBuilder,
}

impl Locate {
    /// The replicas of `service`, default policy
    /// ([`Policy::PowerOfTwoChoices`]) and client settings.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            policy: Policy::default(),
            client: ClientBuilder::default(),
        }
    }

    /// How each call's replica is chosen. Default
    /// [`Policy::PowerOfTwoChoices`]: two replicas drawn at random, the
    /// one with fewer calls in flight from this process wins.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Settings of each replica's connection and the call deadline (see
    /// [`ReplicasBuilder::client`]). Default: `ClientBuilder`'s.
    pub fn client(mut self, client: ClientBuilder) -> Self {
        self.client = client;
        self
    }

    /// The replica set, following the registry: its
    /// [`proxy`](Replicas::proxy) is the balanced proxy, its
    /// [`status`](Replicas::status) tells each replica's state. Returns
    /// after the first snapshot; calls made before the replicas' first
    /// connections complete wait for them.
    pub async fn replicas<P: Proxy>(
        self,
        registry: &dyn Registry,
    ) -> Result<Replicas<P>, RegistryError> {
        let watch = registry.watch(&self.service).await?;
        let replicas = ReplicasBuilder::new(self.service.clone())
            .policy(self.policy)
            .client(self.client)
            .build::<P>();
        replicas.follow(memberships(self.service, watch));
        Ok(replicas)
    }
}

/// The changes a watch makes to the replica set: the first snapshot is the
/// set; a later one (the watch resumed) adds what it lists and removes the
/// rest only after [`RESUME_GRACE`], unless they come back.
fn memberships(service: String, mut watch: Watch) -> impl futures::Stream<Item = Membership> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut known: HashSet<String> = HashSet::new();
        // Missing from a resumed snapshot: removed at the deadline.
        let mut missing: HashMap<String, Instant> = HashMap::new();
        let mut first = true;
        loop {
            let deadline = missing.values().min().copied();
            let event = tokio::select! {
                event = watch.next() => match event {
                    Some(event) => event,
                    None => return,
                },
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    let gone: Vec<String> = missing
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in gone {
                        missing.remove(&id);
                        known.remove(&id);
                        tracing::info!(%service, %id, "replica not registered again; removed");
                        if tx.send(Membership::Left(id)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                _ = tx.closed() => return,
            };
            let changes = match event {
                WatchEvent::Snapshot(all) => {
                    let members: Vec<(String, Endpoint)> =
                        all.iter().filter_map(|i| member(&service, i)).collect();
                    let listed: HashSet<String> =
                        members.iter().map(|(id, _)| id.clone()).collect();
                    if std::mem::take(&mut first) {
                        known = listed;
                        vec![Membership::Reset(members)]
                    } else {
                        let at = Instant::now() + RESUME_GRACE;
                        for id in known.difference(&listed) {
                            missing.entry(id.clone()).or_insert(at);
                        }
                        for id in &listed {
                            missing.remove(id);
                            known.insert(id.clone());
                        }
                        members
                            .into_iter()
                            .map(|(id, endpoint)| Membership::Joined(id, endpoint))
                            .collect()
                    }
                }
                WatchEvent::Up(instance) => match member(&service, &instance) {
                    Some((id, endpoint)) => {
                        missing.remove(&id);
                        known.insert(id.clone());
                        vec![Membership::Joined(id, endpoint)]
                    }
                    None => Vec::new(),
                },
                WatchEvent::Down { id, .. } => {
                    missing.remove(&id);
                    known.remove(&id);
                    vec![Membership::Left(id)]
                }
            };
            for change in changes {
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn member(service: &str, instance: &Instance) -> Option<(String, Endpoint)> {
    match instance.endpoint() {
        Ok(endpoint) => Some((instance.id.clone(), endpoint)),
        Err(e) => {
            tracing::warn!(%service, id = %instance.id, error = %e,
                "registered instance has an unusable address; ignored");
            None
        }
    }
}
