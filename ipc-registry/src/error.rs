//! [`RegistryError`]: why a registry operation failed.

use std::time::Duration;

/// Why a registry operation failed. Failures of a registration's upkeep and
/// of a watch after they started are not reported here: they are retried in
/// the background, and logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached, or the connection to it failed.
    #[error("registry at `{endpoint}` unreachable")]
    Unreachable {
        /// Where the registry was looked for.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry did not answer in time.
    #[error("registry at `{endpoint}` did not answer within {after:?}")]
    Timeout {
        /// Where the registry was looked for.
        endpoint: String,
        /// How long was waited.
        after: Duration,
    },
    /// The registry refused the request (a name taken by another process,
    /// a limit of the name server, a permission of etcd...).
    #[error("the registry refused: {detail}")]
    Refused {
        /// What it said.
        detail: String,
    },
    /// An instance is not acceptable: a service name or instance id that is
    /// empty or contains `/`, an address that does not parse, a
    /// registration too large.
    #[error("invalid instance: {detail}")]
    InvalidInstance {
        /// What is wrong with it.
        detail: String,
    },
    /// A setting is not acceptable (a TTL under one second, no endpoint).
    #[error("invalid registry setting: {detail}")]
    Config {
        /// What is wrong with it.
        detail: String,
    },
    /// The local etcd process of `etcd::LocalEtcd` (feature `etcd`) could not be
    /// started.
    #[error("cannot start etcd: {detail}")]
    Etcd {
        /// What went wrong, and how to fix it.
        detail: String,
    },
}

impl RegistryError {
    /// True when the registry could not be reached or did not answer: a
    /// later attempt may succeed.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }
}
