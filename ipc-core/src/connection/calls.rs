//! Calls this side makes: request ids, and the table that matches each
//! response to the call waiting for it.
//!
//! Every request (but a oneway one) gets exactly one response, even after
//! the caller gave up on it: a cancelled call is answered `Cancelled`, one
//! past its deadline `DeadlineExceeded`. So a call's entry stays in the
//! table until its response arrives, and a response for an id that is not
//! in the table breaks the protocol. An abandoned call's late response is
//! decoded and dropped, so remote objects inside it are released.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::deadline::{Deadline, Due};
use super::id_map::IdMap;
use super::streams::Inbox;
use super::{Closure, Connection};
use crate::error::Error;
use crate::wire::{FrameBuf, Status};

/// A response as received, decoded later by the caller that waits for it.
pub(crate) struct Response {
    pub(crate) status: Status,
    pub(crate) body: Bytes,
    /// For a call that opens a stream: where its items arrive.
    pub(crate) stream: Option<Arc<Inbox>>,
}

/// Decodes and drops the response of a call nobody waits for any more, so
/// that remote objects inside it are released.
pub(crate) type Discard = fn(&Arc<Connection>, &Response);

type Waiter = oneshot::Sender<Result<Response, Error>>;

enum Pending {
    /// The caller waits; until `Due`, if the sweep watches the call.
    Waiting(Waiter, Option<Discard>, Option<Due>),
    /// The caller gave up; the response is still to come.
    Abandoned(Option<Discard>),
}

#[derive(Default)]
struct State {
    map: IdMap<Pending>,
    closed: Option<Closure>,
    /// Whether the sweep task runs.
    sweeping: bool,
    /// When the sweep looks at the table next, at the latest (`None`: when
    /// signalled).
    sweep_at: Option<Instant>,
}

/// What a call with a deadline asks of the sweep.
enum Sweep {
    /// Nothing: it wakes before the deadline anyway.
    Nothing,
    /// Wake it: it sleeps past the deadline.
    Signal,
    /// Start it.
    Start,
}

impl State {
    /// Makes sure the sweep looks at the table by `at`.
    fn sweep_by(&mut self, at: Instant) -> Sweep {
        if !self.sweeping {
            self.sweeping = true;
            self.sweep_at = Some(at);
            return Sweep::Start;
        }
        match self.sweep_at {
            Some(next) if next <= at => Sweep::Nothing,
            _ => {
                self.sweep_at = Some(at);
                Sweep::Signal
            }
        }
    }
}

/// The calls of one connection waiting for their responses.
#[derive(Default)]
pub(crate) struct Calls {
    state: Mutex<State>,
    /// Mirrors `State::closed.is_some()`, readable without the lock (every
    /// call asks whether its connection is still open).
    closed: AtomicBool,
    /// Wakes the sweep (a call due before it would wake, or the end).
    sweep: Notify,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are map operations that cannot panic halfway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the connection ended, once it has.
    pub(crate) fn closure(&self) -> Option<Closure> {
        if !self.is_closed() {
            return None;
        }
        self.lock().closed.clone()
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Calls waiting for a response (abandoned ones included).
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// What the sweep waits on between looks at the table.
    pub(super) fn sweep_signal(&self) -> tokio::sync::futures::Notified<'_> {
        self.sweep.notified()
    }

    /// The sweep task has ended (or was dropped): the next call with a
    /// deadline starts another.
    pub(super) fn sweep_ended(&self) {
        let mut st = self.lock();
        st.sweeping = false;
        st.sweep_at = None;
    }

    /// Ends every pending call with `closure`'s error and refuses new ones.
    /// Calls the peer says it never read (ids above `peer_last_read`) did not
    /// run: they fail with `ShuttingDown`, which callers may safely retry.
    pub(crate) fn fail_all(&self, closure: &Closure, peer_last_read: u64) {
        let map = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(closure.clone());
                self.closed.store(true, Ordering::Release);
            }
            std::mem::take(&mut st.map)
        };
        // The sweep ends too.
        self.sweep.notify_one();
        for (id, pending) in map {
            if let Pending::Waiting(waiter, ..) = pending {
                let error = if id > peer_last_read {
                    Error::ShuttingDown
                } else {
                    closure.to_error()
                };
                let _ = waiter.send(Err(error));
            }
        }
    }
}

/// A call on its way: dropping it before its response arrived abandons it
/// (the peer is told to cancel it).
pub(crate) struct PendingCall<'a> {
    conn: &'a Arc<Connection>,
    id: u64,
    rx: oneshot::Receiver<Result<Response, Error>>,
    discard: Option<Discard>,
    armed: bool,
    stream: Option<Arc<Inbox>>,
    /// The call's deadline, while the sweep watches it.
    swept: Option<&'a Deadline>,
}

impl PendingCall<'_> {
    /// The request id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the response.
    pub(crate) async fn response(mut self) -> Result<Response, Error> {
        let received = (&mut self.rx).await;
        self.armed = false;
        if let Some(deadline) = self.swept.take() {
            deadline.set_swept(false);
        }
        match received {
            Ok(Ok(mut r)) => {
                r.stream = self.stream.take();
                Ok(r)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.conn.refusal()),
        }
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if let Some(deadline) = self.swept.take() {
            deadline.set_swept(false);
        }
        if !self.armed {
            return;
        }
        // The response may be here already, unread: release what is in it.
        if let Ok(Ok(response)) = self.rx.try_recv() {
            self.conn.drop_unread(self.id, &response, self.discard);
            return;
        }
        self.conn.abandon(self.id, self.discard);
    }
}

impl Connection {
    /// Queues a request and registers for its response. The request gets
    /// its id when queued, so ids on the wire strictly increase.
    /// `discard` decodes the response if it arrives after the caller gave up.
    /// With a `deadline`, the call fails with `Timeout` when it passes (see
    /// [`super::deadline`]).
    pub(crate) async fn send_call<'a>(
        self: &'a Arc<Self>,
        frame: FrameBuf,
        discard: Option<Discard>,
        opens_stream: bool,
        deadline: Option<&'a Deadline>,
    ) -> Result<PendingCall<'a>, Error> {
        self.send_call_then(frame, discard, opens_stream, deadline, || {})
            .await
    }

    /// As [`Connection::send_call`], calling `on_queued` when the request
    /// takes its place in the queue (under the queue's lock: in the order
    /// requests go out).
    pub(crate) async fn send_call_then<'a>(
        self: &'a Arc<Self>,
        frame: FrameBuf,
        discard: Option<Discard>,
        opens_stream: bool,
        deadline: Option<&'a Deadline>,
        on_queued: impl FnOnce(),
    ) -> Result<PendingCall<'a>, Error> {
        if self.is_going_away() {
            return Err(Error::ShuttingDown);
        }
        // The sweep runs on this connection's runtime: a caller it cannot
        // count on keeps its own timer.
        let due = deadline
            .and_then(Deadline::due)
            .filter(|_| self.sweeps_for_caller());
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let mut refused = false;
        let mut stream = None;
        let mut sweep = Sweep::Nothing;
        let queued = self
            .outbox
            .push_numbered(frame, |id| {
                let mut st = self.calls.lock();
                if st.closed.is_some() {
                    refused = true;
                    return;
                }
                if let Some(tx) = tx.take() {
                    st.map.insert(id, Pending::Waiting(tx, discard, due));
                    if let Some(due) = due {
                        sweep = st.sweep_by(due.at);
                    }
                }
                on_queued();
                if opens_stream {
                    stream = Some(self.consumers.open(id, self.config.stream_window));
                }
            })
            .await;
        match sweep {
            Sweep::Nothing => {}
            Sweep::Signal => self.calls.sweep.notify_one(),
            Sweep::Start => super::deadline::spawn_sweep(self),
        }
        let id = match queued {
            Ok(id) if !refused => id,
            _ => return Err(self.refusal()),
        };
        let swept = deadline.filter(|_| due.is_some());
        if let Some(deadline) = swept {
            deadline.set_swept(true);
        }
        if opens_stream {
            // The producer may send nothing before this first grant.
            let _ = self
                .outbox
                .push_now(FrameBuf::credit(id, self.config.stream_window));
        }
        Ok(PendingCall {
            conn: self,
            id,
            rx,
            discard,
            armed: true,
            stream,
            swept,
        })
    }

    /// Queues a oneway request (no response will come).
    pub(crate) async fn send_oneway(&self, frame: FrameBuf) -> Result<(), Error> {
        if self.is_going_away() {
            return Err(Error::ShuttingDown);
        }
        self.outbox
            .push_numbered(frame, |_| {})
            .await
            .map(|_| ())
            .map_err(|_| self.refusal())
    }

    /// Forgets a call whose caller stopped waiting, and tells the peer.
    fn abandon(self: &Arc<Self>, id: u64, discard: Option<Discard>) {
        let abandoned = {
            let mut st = self.calls.lock();
            match st.map.get_mut(&id) {
                Some(pending @ Pending::Waiting(..)) => {
                    *pending = Pending::Abandoned(discard);
                    true
                }
                _ => false,
            }
        };
        if abandoned {
            self.cancel_abandoned(id);
        }
    }

    /// Tells the peer that nobody waits for the answer to call `id` (and
    /// stops taking the stream it may open).
    fn cancel_abandoned(&self, id: u64) {
        self.consumers.abandon(id);
        let _ = self.outbox.push_now(FrameBuf::cancel(id));
    }

    /// Ends every call whose deadline is at or before `now` with `Timeout`
    /// (the peer is told to cancel it). Returns the next deadline, if any;
    /// `None` once the connection has closed.
    pub(super) fn expire_calls(self: &Arc<Self>, now: Instant) -> Option<Option<Instant>> {
        let mut expired = Vec::new();
        let next = {
            let mut st = self.calls.lock();
            if st.closed.is_some() {
                return None;
            }
            let mut next: Option<Instant> = None;
            for (&id, pending) in &mut st.map {
                let Pending::Waiting(_, discard, Some(due)) = pending else {
                    continue;
                };
                if due.at > now {
                    next = Some(next.map_or(due.at, |n| n.min(due.at)));
                    continue;
                }
                let after = due.after;
                let discard = *discard;
                if let Pending::Waiting(waiter, ..) =
                    std::mem::replace(pending, Pending::Abandoned(discard))
                {
                    expired.push((id, waiter, after));
                }
            }
            st.sweep_at = next;
            next
        };
        for (id, waiter, after) in expired {
            let _ = waiter.send(Err(Error::Timeout { after }));
            self.cancel_abandoned(id);
        }
        Some(next)
    }

    /// A response that arrived for a caller that is gone: releases the
    /// objects in it, and cancels the stream it opened, if any.
    fn drop_unread(self: &Arc<Self>, id: u64, response: &Response, discard: Option<Discard>) {
        if let Some(discard) = discard {
            discard(self, response);
        }
        if response.status != Status::Ok {
            // No stream was opened.
            self.consumers.remove(id);
        } else if self.consumers.abandon(id) {
            let _ = self.outbox.push_now(FrameBuf::cancel(id));
        }
    }

    /// Routes a response to its call.
    pub(super) fn on_response(
        self: &Arc<Self>,
        id: u64,
        status: Status,
        body: Bytes,
    ) -> Result<(), Error> {
        let pending = self.calls.lock().map.remove(&id);
        let response = Response {
            status,
            body,
            stream: None,
        };
        match pending {
            Some(Pending::Waiting(waiter, discard, _)) => {
                if let Err(Ok(response)) = waiter.send(Ok(response)) {
                    // The caller went away between the two, and its drop
                    // found nothing to read yet.
                    self.drop_unread(id, &response, discard);
                }
                Ok(())
            }
            Some(Pending::Abandoned(discard)) => {
                tracing::trace!(id, ?status, "response for an abandoned call");
                if status != Status::Ok {
                    // No stream was opened (or the call was cancelled first).
                    self.consumers.remove(id);
                }
                if let Some(discard) = discard {
                    discard(self, &response);
                }
                Ok(())
            }
            None => Err(Error::Protocol {
                detail: format!("a response to request {id}, which awaits none"),
            }),
        }
    }
}
