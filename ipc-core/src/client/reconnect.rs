//! The client's current connection and how it gets a new one.
//!
//! Every call that needs a connection either gets one or fails after a whole
//! round of attempts (the `Reconnect` policy) has failed: its own, or the
//! one it waited for — one round at a time, shared by the calls that arrive
//! during it. After a failed round, calls fail at once with its error until
//! the next attempt is due (the policy's next backoff), unless the client
//! waits for the server: then they wait, round after round, until their
//! deadline. This is gRPC's "transient failure" channel state.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ClientBuilder;
use super::lookups::Lookups;
use crate::connection::Connection;
use crate::error::Error;
use crate::transport::Address;

/// The connection calls go out on, and which one it is.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) conn: Arc<Connection>,
    /// Bumped on every reconnect; object handles are cached per generation.
    pub(crate) generation: u32,
    /// The lookups made on this connection.
    pub(crate) lookups: Arc<Lookups>,
}

/// A round of reconnect attempts that failed: every attempt the policy
/// allows was made.
#[derive(Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
    /// When the next attempt is due. Until then calls fail at once with
    /// this failure, unless the client waits for the server.
    retry_at: tokio::time::Instant,
}

/// The client's connection state, shared by its clones and proxies.
pub(crate) struct Links {
    /// The address as given, for errors.
    pub(crate) addr: Address,
    /// Where to reconnect; `None` for clients over a caller-supplied stream.
    target: Option<Address>,
    pub(crate) settings: ClientBuilder,
    /// Shared, so that a call takes it with one reference count.
    current: Mutex<Arc<Link>>,
    /// Held by the call running a round of reconnect attempts; calls that
    /// need a connection meanwhile wait for the round's outcome.
    round: tokio::sync::Mutex<()>,
    /// How the last round ended, if it failed.
    failed: Mutex<Option<Failure>>,
    /// Rounds of reconnect attempts finished so far (either way).
    rounds: AtomicU64,
}

impl Drop for Links {
    fn drop(&mut self) {
        self.current().conn.unhold();
    }
}

impl Links {
    /// `conn` is held once on the links' behalf.
    pub(crate) fn new(
        addr: Address,
        target: Option<Address>,
        settings: ClientBuilder,
        conn: Arc<Connection>,
    ) -> Self {
        Self {
            addr,
            target,
            settings,
            current: Mutex::new(Arc::new(Link {
                conn,
                generation: 1,
                lookups: Arc::default(),
            })),
            round: tokio::sync::Mutex::new(()),
            failed: Mutex::new(None),
            rounds: AtomicU64::new(0),
        }
    }

    pub(crate) fn current(&self) -> Arc<Link> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A connection that takes new calls: the current one, or a new one made
    /// by a round of attempts that follows the reconnect policy.
    pub(crate) async fn live(&self) -> Result<Arc<Link>, Error> {
        let link = self.current();
        if link.conn.takes_calls() {
            return Ok(link);
        }
        // Boxed: the reconnect state machine is large and rarely needed, and
        // inline it would make every call's future that much bigger.
        Box::pin(self.reconnect(link)).await
    }

    /// The last round's failure, while its backoff runs.
    fn recent_failure(&self) -> Option<Failure> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .as_ref()
            .filter(|f| f.retry_at > tokio::time::Instant::now())
            .cloned()
    }

    fn failure_error(&self, failure: &Failure) -> Error {
        Error::Connect {
            addr: self.addr.to_string(),
            source: io::Error::new(failure.kind, failure.message.clone()),
        }
    }

    async fn reconnect(&self, link: Arc<Link>) -> Result<Arc<Link>, Error> {
        let policy = self.settings.reconnect;
        let Some(target) = self.target.as_ref().filter(|_| policy.max_attempts > 0) else {
            return Err(link.conn.refusal());
        };
        loop {
            if let Some(failure) = self.recent_failure() {
                if !self.settings.wait_for_server {
                    // Failing at once must still yield now and then, or a
                    // caller retrying in a loop would starve its thread.
                    tokio::task::consume_budget().await;
                    return Err(self.failure_error(&failure));
                }
                tokio::time::sleep_until(failure.retry_at).await;
            }
            let seen = self.rounds.load(Ordering::Acquire);
            let _turn = self.round.lock().await;
            let link = self.current();
            if link.conn.takes_calls() {
                return Ok(link);
            }
            if self.rounds.load(Ordering::Acquire) != seen {
                // A round ended while this call waited for its turn. If it
                // failed, it made every attempt the policy allows: share its
                // outcome rather than queue another round behind it.
                if let Some(failure) = self.recent_failure() {
                    if self.settings.wait_for_server {
                        continue;
                    }
                    return Err(self.failure_error(&failure));
                }
            }
            match self.round_of_attempts(target, link.generation).await {
                Ok(link) => return Ok(link),
                Err(e) if self.settings.wait_for_server => {
                    tracing::debug!(addr = %self.addr, error = %e, "still waiting for the server");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Up to `max_attempts` connection attempts with the policy's backoff
    /// between them. Records the outcome for the calls that waited.
    async fn round_of_attempts(
        &self,
        target: &Address,
        generation: u32,
    ) -> Result<Arc<Link>, Error> {
        let policy = self.settings.reconnect;
        let mut last = None;
        for attempt in 0..policy.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(policy.backoff(attempt - 1)).await;
            }
            match self.settings.open(target, true).await {
                Ok(conn) => {
                    tracing::info!(addr = %self.addr, attempt, "reconnected");
                    let link = Arc::new(Link {
                        conn,
                        generation: generation.wrapping_add(1).max(1),
                        lookups: Arc::default(),
                    });
                    let old = std::mem::replace(
                        &mut *self.current.lock().unwrap_or_else(|p| p.into_inner()),
                        link.clone(),
                    );
                    // The old connection stays open while proxies to objects
                    // imported on it live; otherwise it closes now.
                    old.conn.unhold();
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.rounds.fetch_add(1, Ordering::AcqRel);
                    return Ok(link);
                }
                Err(e) => {
                    tracing::debug!(addr = %self.addr, attempt, error = %e, "reconnect failed");
                    last = Some(e);
                }
            }
        }
        let last = last.unwrap_or_else(|| Error::ConnectionLost {
            reason: "no reconnect attempt was made".into(),
        });
        let (kind, message) = match &last {
            Error::Connect { source, .. } => (source.kind(), source.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        let next_due = policy.backoff(policy.max_attempts.saturating_sub(1));
        tracing::warn!(
            addr = %self.addr,
            attempts = policy.max_attempts,
            error = %last,
            retry_in = ?next_due,
            "could not reconnect",
        );
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failure {
            kind,
            message,
            retry_at: tokio::time::Instant::now() + next_due,
        });
        self.rounds.fetch_add(1, Ordering::AcqRel);
        Err(last)
    }
}
