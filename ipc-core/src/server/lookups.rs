//! The lookups of one connection. The server numbers the lookup requests
//! it reads on a connection, from 0, and handle `LOOKUP_BASE + n` stands for
//! what the n-th found: the object (as its own handle does), or, if the
//! lookup failed, the failure, which every call to it gets. A client can
//! therefore send a lookup and a first call together, without waiting (one
//! round trip): if the lookup fails, so does the call, and nothing runs.

use std::sync::Mutex;

use crate::object::Mismatch;
use crate::service::Reply;
use crate::wire::{LOOKUP_BASE, Status};

/// Lookups remembered per connection (the handles of later ones are
/// unknown: their callers use the handle the lookup returns). A client that
/// reuses handles needs one per object it uses.
pub(crate) const MAX_LOOKUPS: usize = 16 * 1024;

/// What a lookup found.
#[derive(Clone, Copy)]
pub(super) enum Found {
    /// The object at this index of the server's list.
    Object(usize),
    /// Nothing a call could run: its status, and for a trait mismatch the
    /// two fingerprints.
    Failed(Status, Option<(u64, u64)>),
}

/// One connection's lookups, in the order read.
#[derive(Default)]
pub(super) struct Lookups {
    found: Mutex<Vec<Found>>,
}

impl Lookups {
    /// Remembers what the next lookup found (until [`MAX_LOOKUPS`]).
    pub(super) fn record(&self, found: Found) {
        let mut all = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() < MAX_LOOKUPS {
            all.push(found);
        }
    }

    /// What the lookup behind `handle` (at least `LOOKUP_BASE`) found.
    pub(super) fn get(&self, handle: u32) -> Option<Found> {
        let n = usize::try_from(handle.checked_sub(LOOKUP_BASE)?).ok()?;
        let all = self.found.lock().unwrap_or_else(|p| p.into_inner());
        all.get(n).copied()
    }
}

impl Found {
    /// A failed lookup, from its answer.
    pub(super) fn failure(status: Status, mismatch: Option<&Mismatch>) -> Self {
        Self::Failed(
            status,
            mismatch.map(|m| (m.server_fingerprint, m.caller_fingerprint)),
        )
    }

    /// The answer of a call to the handle of a failed lookup.
    pub(super) fn refusal(status: Status, fingerprints: Option<(u64, u64)>, handle: u32) -> Reply {
        let detail = format!("handle {handle} stands for a lookup that failed");
        match (status, fingerprints) {
            (Status::TraitMismatch, Some((server, caller))) => {
                Reply::encoded(Status::TraitMismatch, &(server, caller, detail))
            }
            (status, _) => Reply::error(status, &detail),
        }
    }
}
