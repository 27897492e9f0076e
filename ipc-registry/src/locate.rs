//! [`locate_all`] and [`Locate`]: a balanced proxy over a service's
//! replicas, kept current by a registry's watch.

use std::sync::Arc;

use futures::StreamExt;
use ipc_core::client::{Membership, Policy, Replicas, ReplicasBuilder};
use ipc_core::{ClientBuilder, Proxy};

use crate::error::RegistryError;
use crate::instance::Instance;
use crate::registry::{Registry, WatchEvent};

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
        let service: Arc<str> = Arc::from(self.service);
        replicas.follow(watch.filter_map(move |event| {
            let service = service.clone();
            async move { membership(&service, event) }
        }));
        Ok(replicas)
    }
}

/// What a watch event changes in the replica set.
fn membership(service: &str, event: WatchEvent) -> Option<Membership> {
    match event {
        WatchEvent::Snapshot(all) => Some(Membership::Reset(
            all.iter().filter_map(|i| member(service, i)).collect(),
        )),
        WatchEvent::Up(instance) => {
            member(service, &instance).map(|(id, endpoint)| Membership::Joined(id, endpoint))
        }
        WatchEvent::Down { id, .. } => Some(Membership::Left(id)),
    }
}

fn member(service: &str, instance: &Instance) -> Option<(String, ipc_core::client::Endpoint)> {
    match instance.endpoint() {
        Ok(endpoint) => Some((instance.id.clone(), endpoint)),
        Err(e) => {
            tracing::warn!(%service, id = %instance.id, error = %e,
                "registered instance has an unusable address; ignored");
            None
        }
    }
}
