//! Looking objects up by name, once per connection and trait.
//!
//! The server numbers the lookups it reads on a connection, from 0, and
//! handle `LOOKUP_BASE + n` stands for what the n-th found (README, "Objects
//! and the system object"). Lookups are counted here as they are queued, in
//! the order they go out, so a call can be sent to that handle before the
//! lookup's answer arrives — the lookup and the first call share one round
//! trip. If the lookup fails, the server answers the call with the same
//! failure and runs nothing. Later calls use the handle the answer gives.
//!
//! Each lookup is sent and awaited by a task of its own, so callers that
//! give up early (a short timeout) leave it to finish for the others, and
//! proxies of the same trait share it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::connection::Connection;
use crate::error::Error;
use crate::object::{ObjectDescriptor, ResolveRequest};
use crate::wire::{self, FrameBuf, Status};

/// Where a lookup is.
#[derive(Clone)]
pub(crate) enum Progress {
    /// Not queued yet.
    Unsent,
    /// Queued: calls may go to this handle, which stands for its outcome.
    Sent(u32),
    /// Answered.
    Done(Result<u32, Arc<Error>>),
}

/// One lookup of a name for a trait on one connection.
pub(crate) struct Lookup {
    progress: watch::Receiver<Progress>,
}

impl Lookup {
    /// Waits until it is at least queued: its handle, or its outcome.
    pub(crate) async fn sent(&self) -> Progress {
        let mut rx = self.progress.clone();
        match rx.wait_for(|p| !matches!(p, Progress::Unsent)).await {
            Ok(p) => p.clone(),
            Err(_) => Progress::Done(Err(Arc::new(abandoned()))),
        }
    }

    /// Waits for the answer.
    pub(crate) async fn answer(&self) -> Result<u32, Error> {
        let mut rx = self.progress.clone();
        let done = match rx.wait_for(|p| matches!(p, Progress::Done(_))).await {
            Ok(p) => p.clone(),
            Err(_) => Progress::Done(Err(Arc::new(abandoned()))),
        };
        match done {
            Progress::Done(Ok(handle)) => Ok(handle),
            Progress::Done(Err(e)) => Err(e.duplicate()),
            _ => Err(abandoned()),
        }
    }

    /// Whether its task ended without an answer (dropped with its runtime).
    fn is_abandoned(&self) -> bool {
        self.progress.has_changed().is_err()
            && !matches!(*self.progress.borrow(), Progress::Done(_))
    }
}

fn abandoned() -> Error {
    Error::ConnectionLost {
        reason: "the lookup was abandoned before its answer".into(),
    }
}

/// An object name and the fingerprint of the trait it is looked up for.
type Key = (Arc<str>, u64);

/// Lookups remembered per connection; the server remembers as many, so
/// later ones get no handle before their answer.
const MAX_REMEMBERED: u32 = 16 * 1024;

/// The lookups made on one connection.
#[derive(Default)]
pub(crate) struct Lookups {
    /// Lookups queued so far; the next one's handle is this plus one.
    queued: AtomicU32,
    /// By name and trait fingerprint.
    table: Mutex<HashMap<Key, Arc<Lookup>>>,
}

impl Lookups {
    /// The lookup of `name` for `descriptor`'s trait on `conn`: the one
    /// made before, or a new one, sent by a task of its own.
    pub(crate) fn get(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        name: &Arc<str>,
        descriptor: &'static ObjectDescriptor,
    ) -> Arc<Lookup> {
        let key = (name.clone(), descriptor.fingerprint);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lookup) = table.get(&key).filter(|l| !l.is_abandoned()) {
            return lookup.clone();
        }
        // The entry exists before the task: if the task never runs (its
        // runtime shuts down), the sender goes with it and waiters learn so.
        let (tx, rx) = watch::channel(Progress::Unsent);
        let lookup = Arc::new(Lookup { progress: rx });
        // Bounded like the server's table: past it, lookups are not shared.
        if table.len() < MAX_REMEMBERED as usize {
            table.insert(key, lookup.clone());
        }
        drop(table);
        let request = ResolveRequest::new(name, descriptor);
        tokio::spawn(look_up(
            self.clone(),
            conn.clone(),
            request,
            name.clone(),
            tx,
        ));
        lookup
    }
}

/// Sends one lookup and publishes its handle, then its answer.
async fn look_up(
    lookups: Arc<Lookups>,
    conn: Arc<Connection>,
    request: ResolveRequest,
    name: Arc<str>,
    progress: watch::Sender<Progress>,
) {
    let deadline_ms = wire::deadline_ms(conn.config.call_timeout);
    let outcome = async {
        let frame = FrameBuf::request(
            false,
            wire::SYSTEM_OBJECT,
            wire::SYSTEM_RESOLVE,
            deadline_ms,
            &request,
            conn.peer_max_frame(),
        );
        let frame = match frame {
            Ok(frame) => frame,
            // Larger than the protocol's minimum frame: wait for the hello.
            Err(_) if !conn.is_established() => {
                conn.established().await?;
                FrameBuf::request(
                    false,
                    wire::SYSTEM_OBJECT,
                    wire::SYSTEM_RESOLVE,
                    deadline_ms,
                    &request,
                    conn.peer_max_frame(),
                )
                .map_err(|e| Error::Encode {
                    detail: e.to_string(),
                })?
            }
            Err(e) => {
                return Err(Error::Encode {
                    detail: e.to_string(),
                });
            }
        };
        let pending = conn
            .send_call_then(frame, None, false, None, || {
                let n = lookups.queued.fetch_add(1, Ordering::Relaxed);
                if n < MAX_REMEMBERED {
                    progress.send_replace(Progress::Sent(wire::LOOKUP_BASE + n));
                }
            })
            .await?;
        let response = pending.response().await?;
        match response.status {
            Status::Ok => wire::decode::<u32>(&response.body).map_err(|e| Error::Decode {
                detail: e.to_string(),
            }),
            status => Err(Error::from_status(status, &response.body, &name)),
        }
    }
    .await;
    if let Err(e) = &outcome {
        tracing::debug!(object = %name, error = %e, "lookup failed");
    }
    progress.send_replace(Progress::Done(outcome.map_err(Arc::new)));
}
