//! What the peer started that still runs on this side, by request id: calls
//! whose handler did not finish on its first poll (they run as tasks), and
//! the streams this side produces.
//!
//! Every entry is taken and given back by a [`Slot`] that exists before the
//! task running it and moves into that task: however the task ends
//! (finished, panicked, aborted before or after its first poll) dropping the
//! slot frees the entry, unless a cancel freed it first. Exactly one side
//! answers each call: whoever removes (or claims) the entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::wire::Status;

/// Room a stream's producer has: bytes it may still send, and a wake-up
/// for when more is granted.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    available: AtomicI64,
    granted: Notify,
    /// Set when the stream has ended (cancelled, shut down): the producer
    /// must send nothing more.
    pub(crate) ended: AtomicBool,
}

impl Credit {
    fn new(initial: u64) -> Self {
        Self {
            available: AtomicI64::new(clamp(initial)),
            ..Self::default()
        }
    }

    fn grant(&self, bytes: u64) {
        let _ = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_add(clamp(bytes)))
            });
        self.granted.notify_one();
    }

    /// Whether an item may be sent now: there is room and the stream has
    /// not ended.
    pub(crate) fn has_room(&self) -> bool {
        !self.ended.load(Ordering::Acquire) && self.available.load(Ordering::Acquire) > 0
    }

    /// Uses `bytes` of the room (it may go below zero: an item is sent
    /// whole once there is any room).
    pub(crate) fn spend(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.available.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Waits until there is room, or the stream has ended (`false`).
    pub(crate) async fn wait(&self) -> bool {
        // The usual case, without a waiter to set up.
        if self.has_room() {
            return true;
        }
        loop {
            let granted = self.granted.notified();
            if self.ended.load(Ordering::Acquire) {
                return false;
            }
            if self.available.load(Ordering::Acquire) > 0 {
                return true;
            }
            granted.await;
        }
    }

    /// Marks the stream ended and wakes its producer if it waits for room.
    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.granted.notify_one();
    }
}

fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

enum State {
    /// A handler runs. Credit granted before it returned a stream is kept.
    Running { early_credit: u64 },
    /// The handler has finished and its reply is being queued: a cancel
    /// comes too late.
    Claimed,
    /// The handler returned a stream and the response opening it is being
    /// queued. A cancel now is remembered and acted on once it is.
    Opening {
        early_credit: u64,
        /// How it was ended while opening (cancelled, shut down), if it was.
        ended: Option<Status>,
    },
    /// The stream is being produced.
    Streaming(Arc<Credit>),
}

impl State {
    fn is_stream(&self) -> bool {
        matches!(self, Self::Opening { .. } | Self::Streaming(_))
    }
}

struct Entry {
    seq: u64,
    state: State,
    /// Set once the entry's task exists.
    abort: Option<AbortHandle>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    /// Tells apart two entries that used the same id one after the other.
    next_seq: u64,
    /// Entries that are streams.
    streams: usize,
}

/// The table. `calls` mirrors the number of entries that are not streams
/// (what `max_in_flight` limits), readable without the lock.
#[derive(Default)]
pub(crate) struct InFlight {
    table: Mutex<Table>,
    calls: AtomicUsize,
}

/// An entry's place in the table; see the module docs.
pub(crate) struct Slot {
    in_flight: Arc<InFlight>,
    id: u64,
    seq: u64,
}

impl Slot {
    /// The request id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// What a cancel found.
pub(crate) enum Cancelled {
    /// A running call, now aborted: answer it `Cancelled`.
    Call,
    /// A stream, now ended and its producer aborted: end it `Cancelled`.
    Stream,
    /// Nothing to cancel (finished, or never started).
    Nothing,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Critical sections are single map operations that cannot panic halfway.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recount(&self, table: &Table) {
        self.calls
            .store(table.entries.len() - table.streams, Ordering::Relaxed);
    }

    /// Calls running as tasks (streams not counted).
    pub(crate) fn len(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Streams being produced.
    pub(crate) fn streams(&self) -> usize {
        self.lock().streams
    }

    /// Reserves a place for call `id`; `None` if an entry with this id
    /// exists (a protocol violation: ids increase).
    pub(crate) fn reserve(self: &Arc<Self>, id: u64) -> Option<Slot> {
        self.insert(id, State::Running { early_credit: 0 })
    }

    /// Reserves a place for a stream opened by a handler that finished at
    /// once (no task yet), with `limit` streams at most; `Err(true)` at the
    /// limit, `Err(false)` if the id is taken.
    pub(crate) fn reserve_stream(
        self: &Arc<Self>,
        id: u64,
        limit: usize,
    ) -> Result<(Slot, Arc<Credit>), bool> {
        if self.lock().streams >= limit {
            return Err(true);
        }
        let credit = Arc::new(Credit::new(0));
        let slot = self
            .insert(id, State::Streaming(credit.clone()))
            .ok_or(false)?;
        Ok((slot, credit))
    }

    fn insert(self: &Arc<Self>, id: u64, state: State) -> Option<Slot> {
        let mut table = self.lock();
        if table.entries.contains_key(&id) {
            return None;
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        if state.is_stream() {
            table.streams += 1;
        }
        table.entries.insert(
            id,
            Entry {
                seq,
                state,
                abort: None,
            },
        );
        self.recount(&table);
        Some(Slot {
            in_flight: self.clone(),
            id,
            seq,
        })
    }

    /// Records how to abort the task now running `slot`'s entry.
    pub(crate) fn started(&self, slot_id: u64, seq: u64, abort: AbortHandle) {
        let mut table = self.lock();
        match table.entries.get_mut(&slot_id) {
            Some(entry) if entry.seq == seq => entry.abort = Some(abort),
            // The task ended already (and freed its place).
            _ => {}
        }
    }

    /// The running call of `slot` has finished: claims the right to answer
    /// it. `false` if it was cancelled meanwhile (answered already).
    pub(crate) fn claim(&self, slot: &Slot) -> bool {
        let mut table = self.lock();
        match table.entries.get_mut(&slot.id) {
            Some(entry) if entry.seq == slot.seq => {
                entry.state = State::Claimed;
                true
            }
            _ => false,
        }
    }

    /// The running call of `slot` returned a stream: marks its entry as
    /// opening one (keeping credit granted so far), unless `limit` streams
    /// are open (`Err(true)`: the entry is claimed, answer `Overloaded`) or
    /// it was cancelled meanwhile (`Err(false)`: answered already).
    pub(crate) fn to_stream(&self, slot: &Slot, limit: usize) -> Result<(), bool> {
        let mut table = self.lock();
        let streams = table.streams;
        let Some(entry) = table
            .entries
            .get_mut(&slot.id)
            .filter(|e| e.seq == slot.seq)
        else {
            return Err(false);
        };
        let State::Running { early_credit } = entry.state else {
            return Err(false);
        };
        if streams >= limit {
            entry.state = State::Claimed;
            return Err(true);
        }
        entry.state = State::Opening {
            early_credit,
            ended: None,
        };
        table.streams += 1;
        self.recount(&table);
        Ok(())
    }

    /// The response opening `slot`'s stream is queued: the stream is now
    /// produced with the credit granted so far. `Err(status)` if it was
    /// ended while opening (the entry is then gone: end it with `status`).
    pub(crate) fn opened(&self, slot: &Slot) -> Result<Arc<Credit>, Status> {
        let mut table = self.lock();
        let Some(entry) = table
            .entries
            .get_mut(&slot.id)
            .filter(|e| e.seq == slot.seq)
        else {
            return Err(Status::Cancelled);
        };
        match entry.state {
            State::Opening {
                early_credit,
                ended: None,
            } => {
                let credit = Arc::new(Credit::new(early_credit));
                entry.state = State::Streaming(credit.clone());
                Ok(credit)
            }
            State::Opening {
                ended: Some(status),
                ..
            } => {
                self.remove_entry(&mut table, slot.id);
                Err(status)
            }
            _ => Err(Status::Cancelled),
        }
    }

    /// The stream of `slot` has ended by itself: claims the right to send
    /// its end (`false` if a cancel or a shutdown ended it first).
    pub(crate) fn finish_stream(&self, slot: &Slot) -> bool {
        let mut table = self.lock();
        let ours = table
            .entries
            .get(&slot.id)
            .is_some_and(|e| e.seq == slot.seq && matches!(e.state, State::Streaming(_)));
        if ours {
            self.remove_entry(&mut table, slot.id);
        }
        ours
    }

    /// Grants `bytes` more to the stream `id` (or to the call that may
    /// still open it). `false` if there is no such entry.
    pub(crate) fn grant(&self, id: u64, bytes: u32) -> bool {
        let mut table = self.lock();
        match table.entries.get_mut(&id).map(|e| &mut e.state) {
            Some(State::Running { early_credit }) | Some(State::Opening { early_credit, .. }) => {
                *early_credit = early_credit.saturating_add(u64::from(bytes));
                true
            }
            Some(State::Streaming(credit)) => {
                credit.grant(u64::from(bytes));
                true
            }
            Some(State::Claimed) => true,
            None => false,
        }
    }

    /// Cancels what request `id` started, if it still runs.
    pub(crate) fn cancel(&self, id: u64) -> Cancelled {
        let removed = {
            let mut table = self.lock();
            match table.entries.get_mut(&id).map(|e| &mut e.state) {
                Some(State::Running { .. }) | Some(State::Streaming(_)) => {
                    self.remove_entry(&mut table, id)
                }
                Some(State::Opening { ended, .. }) => {
                    // Acted on once the opening response is queued.
                    *ended = Some(Status::Cancelled);
                    None
                }
                Some(State::Claimed) | None => None,
            }
        };
        match removed {
            Some(entry) => {
                if let Some(abort) = entry.abort {
                    abort.abort();
                }
                match entry.state {
                    State::Streaming(credit) => {
                        credit.end();
                        Cancelled::Stream
                    }
                    _ => Cancelled::Call,
                }
            }
            None => Cancelled::Nothing,
        }
    }

    /// Ends every stream (shutdown): removes them, stops their producers.
    /// Returns their ids, to tell the peer. Streams still opening are ended
    /// by their own task once their opening response is queued.
    pub(crate) fn end_streams(&self) -> Vec<u64> {
        let ended: Vec<(u64, Entry)> = {
            let mut table = self.lock();
            for entry in table.entries.values_mut() {
                if let State::Opening { ended, .. } = &mut entry.state {
                    *ended = Some(Status::ShuttingDown);
                }
            }
            let ids: Vec<u64> = table
                .entries
                .iter()
                .filter(|(_, e)| matches!(e.state, State::Streaming(_)))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| Some((id, self.remove_entry(&mut table, id)?)))
                .collect()
        };
        ended
            .into_iter()
            .map(|(id, entry)| {
                if let State::Streaming(credit) = &entry.state {
                    credit.end();
                }
                if let Some(abort) = entry.abort {
                    abort.abort();
                }
                id
            })
            .collect()
    }

    /// Frees every place and aborts every task.
    pub(crate) fn abort_all(&self) {
        let entries = {
            let mut table = self.lock();
            table.streams = 0;
            let entries = std::mem::take(&mut table.entries);
            self.recount(&table);
            entries
        };
        for entry in entries.into_values() {
            if let State::Streaming(credit) = &entry.state {
                credit.end();
            }
            if let Some(abort) = entry.abort {
                abort.abort();
            }
        }
    }

    fn remove_entry(&self, table: &mut Table, id: u64) -> Option<Entry> {
        let entry = table.entries.remove(&id)?;
        if entry.state.is_stream() {
            table.streams -= 1;
        }
        self.recount(table);
        Some(entry)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.in_flight.lock();
        if table
            .entries
            .get(&self.id)
            .is_some_and(|e| e.seq == self.seq)
        {
            self.in_flight.remove_entry(&mut table, self.id);
        }
    }
}

impl Slot {
    /// The sequence number telling this entry apart.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}
