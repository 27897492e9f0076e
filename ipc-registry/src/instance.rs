//! [`Instance`]: one replica of a service, as a registry records it, and
//! how it is written into a backend (its key and its value).

use std::collections::BTreeMap;

use ipc_core::client::Endpoint;
use ipc_core::{Address, ObjectDescriptor, Proxy};
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;

/// The key prefix both backends use by default: an instance of service
/// `calc` with id `a1` is stored under `ipc/services/calc/a1`.
pub const DEFAULT_PREFIX: &str = "ipc/services";

/// Largest encoded instance (address, names, metadata), in bytes; larger
/// ones are refused when registered. Both backends hold at most this per
/// instance; the name server's own limit is the same
/// ([`ipc_core::nameserver::MAX_METADATA_BYTES`]).
pub const MAX_INSTANCE_BYTES: usize = 4096;

/// One replica of a service: where it is, what it serves, and free-form
/// metadata (a zone, a weight...).
///
/// ```
/// use ipc_registry::Instance;
/// # #[ipc_core::expose] pub trait Calc { /// Adds.
/// # async fn add(&self, a: i64, b: i64) -> i64; }
///
/// let i = Instance::new::<CalcProxy>("calc", "10.0.0.7:7000").with_metadata("zone", "eu-1");
/// assert_eq!(i.trait_name, "Calc");
/// assert_eq!(i.object, "Calc");
/// assert_eq!(i.id.len(), 16); // random unless set with `with_id`
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instance {
    /// The service's name: what clients look up. Not empty, no `/`.
    pub service: String,
    /// This replica's id, unique within the service. Not empty, no `/`.
    /// Default: 16 random hex digits.
    pub id: String,
    /// The replica's server, as an [`Address`] string (`HOST:PORT`,
    /// `unix:PATH`, `tls://HOST:PORT`): reachable from the clients.
    pub addr: String,
    /// The name the object is exposed under on that server. Default: its
    /// trait's name (what [`ipc_core::ServerBuilder::expose`] uses).
    pub object: String,
    /// The trait it serves.
    pub trait_name: String,
    /// The trait's fingerprint: a proxy only uses replicas whose trait and
    /// fingerprint are its own.
    pub fingerprint: u64,
    /// Free-form pairs for clients to read.
    pub metadata: BTreeMap<String, String>,
}

impl Instance {
    /// A replica of `service` at `addr` serving the trait of proxy `P`
    /// under its trait's name, with a random id.
    pub fn new<P: Proxy>(service: impl Into<String>, addr: impl Into<Address>) -> Self {
        Self::of(service, addr, P::DESCRIPTOR)
    }

    /// As [`Instance::new`], for the trait `descriptor` describes.
    pub fn of(
        service: impl Into<String>,
        addr: impl Into<Address>,
        descriptor: &'static ObjectDescriptor,
    ) -> Self {
        Self {
            service: service.into(),
            id: random_id(),
            addr: addr.into().to_string(),
            object: descriptor.trait_name.to_owned(),
            trait_name: descriptor.trait_name.to_owned(),
            fingerprint: descriptor.fingerprint,
            metadata: BTreeMap::new(),
        }
    }

    /// The same instance with id `id`.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The same instance, its object exposed under `object` (see
    /// [`ipc_core::ServerBuilder::expose_as`]).
    pub fn with_object(mut self, object: impl Into<String>) -> Self {
        self.object = object.into();
        self
    }

    /// The same instance with `key` set to `value` in its metadata.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Where a client connects to this replica, and what it must serve.
    pub fn endpoint(&self) -> Result<Endpoint, RegistryError> {
        let addr: Address = self
            .addr
            .parse()
            .map_err(|e| RegistryError::InvalidInstance {
                detail: format!("address `{}`: {e}", self.addr),
            })?;
        Ok(Endpoint::new(addr, self.object.clone())
            .with_trait(self.trait_name.clone(), self.fingerprint))
    }

    /// Checks what every backend requires, before anything is sent.
    pub(crate) fn check(&self) -> Result<(), RegistryError> {
        check_segment("service name", &self.service)?;
        check_segment("instance id", &self.id)?;
        self.endpoint()?;
        let size = self.value().len();
        if size > MAX_INSTANCE_BYTES {
            return Err(RegistryError::InvalidInstance {
                detail: format!("{size} bytes encoded, more than {MAX_INSTANCE_BYTES}"),
            });
        }
        Ok(())
    }

    /// Its key: `<prefix>/<service>/<id>`.
    pub(crate) fn key(&self, prefix: &str) -> String {
        format!("{}{}", service_prefix(prefix, &self.service), self.id)
    }

    /// Its value in etcd: JSON (see the crate docs).
    pub(crate) fn value(&self) -> Vec<u8> {
        let value = Value {
            addr: self.addr.clone(),
            object: self.object.clone(),
            trait_name: self.trait_name.clone(),
            fingerprint: format!("{:016x}", self.fingerprint),
            metadata: self.metadata.clone(),
        };
        // A struct of strings and a string map always serialises.
        serde_json::to_vec(&value).unwrap_or_default()
    }

    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    /// The instance stored under `key` with `value`; `None` (logged) if
    /// either is malformed: a registry may hold entries we did not write.
    pub(crate) fn decode(prefix: &str, key: &str, value: &[u8]) -> Option<Self> {
        let (service, id) = split_key(prefix, key)?;
        let value: Value = match serde_json::from_slice(value) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%key, error = %e, "registry entry is not an ipc instance; ignored");
                return None;
            }
        };
        let Ok(fingerprint) = u64::from_str_radix(&value.fingerprint, 16) else {
            tracing::warn!(%key, fingerprint = %value.fingerprint,
                "registry entry has a malformed fingerprint; ignored");
            return None;
        };
        Some(Self {
            service,
            id,
            addr: value.addr,
            object: value.object,
            trait_name: value.trait_name,
            fingerprint,
            metadata: value.metadata,
        })
    }
}

/// What etcd stores for an instance (and the name server's metadata
/// mirrors): `{"addr":…,"object":…,"trait":…,"fingerprint":"<16 hex>","metadata":{…}}`.
#[derive(Serialize, Deserialize)]
struct Value {
    addr: String,
    object: String,
    #[serde(rename = "trait")]
    trait_name: String,
    fingerprint: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// `<prefix>/<service>/`: the keys of every instance of `service`.
pub(crate) fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{}/{service}/", prefix.trim_end_matches('/'))
}

/// `<prefix>/<start>`: the keys of every service whose name starts with
/// `start`.
pub(crate) fn list_prefix(prefix: &str, start: &str) -> String {
    format!("{}/{start}", prefix.trim_end_matches('/'))
}

/// `(service, id)` of a key under `prefix`.
pub(crate) fn split_key(prefix: &str, key: &str) -> Option<(String, String)> {
    let rest = key
        .strip_prefix(prefix.trim_end_matches('/'))?
        .strip_prefix('/')?;
    let (service, id) = rest.split_once('/')?;
    if service.is_empty() || id.is_empty() || id.contains('/') {
        return None;
    }
    Some((service.to_owned(), id.to_owned()))
}

pub(crate) fn check_segment(what: &str, s: &str) -> Result<(), RegistryError> {
    if s.is_empty() || s.contains('/') {
        return Err(RegistryError::InvalidInstance {
            detail: format!("{what} `{s}`: must be non-empty and contain no `/`"),
        });
    }
    Ok(())
}

/// 16 random hex digits.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: the time and process id are unique enough for
        // an id that only has to differ between replicas.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (now ^ (u64::from(std::process::id()) << 32)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_service_and_id() {
        assert_eq!(
            split_key("ipc/services", "ipc/services/calc/a1"),
            Some(("calc".into(), "a1".into()))
        );
        assert_eq!(split_key("ipc/services/", "ipc/services/calc/a1/x"), None);
        assert_eq!(split_key("ipc/services", "ipc/servicesX/calc/a1"), None);
        assert_eq!(service_prefix("p/", "calc"), "p/calc/");
    }
}
