//! What the `cluster` example's replicas serve: [`Work`], whose every
//! answer names the replica that gave it.

use std::time::Duration;

use ipc_core::expose;

/// A replicated service.
#[expose]
pub trait Work {
    /// The id of the replica that answers.
    #[idempotent]
    async fn whoami(&self) -> String;
    /// The id of the replica that answers, after `ms` milliseconds of
    /// "work". Not idempotent: a balanced proxy does not send it to
    /// another replica once it may have run.
    async fn slow(&self, ms: u64) -> String;
}

/// One replica: it answers with its id.
#[derive(Debug, Clone)]
pub struct Replica(pub String);

impl Work for Replica {
    async fn whoami(&self) -> String {
        self.0.clone()
    }

    async fn slow(&self, ms: u64) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.clone()
    }
}
