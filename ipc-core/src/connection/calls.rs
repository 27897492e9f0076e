//! Calls this side makes: request ids, and the table that matches each
//! response to the call waiting for it.
//!
//! Every request (but a oneway one) gets exactly one response, even after
//! the caller gave up on it: a cancelled call is answered `Cancelled`, one
//! past its deadline `DeadlineExceeded`. So a call's entry stays in the
//! table until its response arrives, and a response for an id that is not
//! in the table breaks the protocol. An abandoned call's late response is
//! decoded and dropped, so remote objects inside it are released.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::oneshot;

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
    /// The caller waits.
    Waiting(Waiter, Option<Discard>),
    /// The caller gave up; the response is still to come.
    Abandoned(Option<Discard>),
}

/// Hashes request ids this side issued itself (sequential, never chosen by
/// the peer, so no flooding concern): one multiply instead of SipHash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct State {
    map: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
    closed: Option<Closure>,
}

/// The calls of one connection waiting for their responses.
#[derive(Default)]
pub(crate) struct Calls {
    state: Mutex<State>,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are map operations that cannot panic halfway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the connection ended, once it has.
    pub(crate) fn closure(&self) -> Option<Closure> {
        self.lock().closed.clone()
    }

    /// Calls waiting for a response (abandoned ones included).
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Ends every pending call with `closure`'s error and refuses new ones.
    /// Calls the peer says it never read (ids above `peer_last_read`) did not
    /// run: they fail with `ShuttingDown`, which callers may safely retry.
    pub(crate) fn fail_all(&self, closure: &Closure, peer_last_read: u64) {
        let map = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(closure.clone());
            }
            std::mem::take(&mut st.map)
        };
        for (id, pending) in map {
            if let Pending::Waiting(waiter, _) = pending {
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
    pub(crate) async fn send_call<'a>(
        self: &'a Arc<Self>,
        frame: FrameBuf,
        discard: Option<Discard>,
        opens_stream: bool,
    ) -> Result<PendingCall<'a>, Error> {
        self.send_call_then(frame, discard, opens_stream, || {})
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
        on_queued: impl FnOnce(),
    ) -> Result<PendingCall<'a>, Error> {
        if self.is_going_away() {
            return Err(Error::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let mut refused = false;
        let mut stream = None;
        let queued = self
            .outbox
            .push_numbered(frame, |id| {
                let mut st = self.calls.lock();
                if st.closed.is_some() {
                    refused = true;
                    return;
                }
                if let Some(tx) = tx.take() {
                    st.map.insert(id, Pending::Waiting(tx, discard));
                }
                on_queued();
                if opens_stream {
                    stream = Some(self.consumers.open(id, self.config.stream_window));
                }
            })
            .await;
        let id = match queued {
            Ok(id) if !refused => id,
            _ => return Err(self.refusal()),
        };
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
            self.consumers.abandon(id);
            let _ = self.outbox.push_now(FrameBuf::cancel(id));
        }
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
            Some(Pending::Waiting(waiter, discard)) => {
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
