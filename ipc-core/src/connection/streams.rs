//! Server-push streams, both ends.
//!
//! A stream is opened by a request whose method returns one; its items
//! (`StreamItem`), its end (`StreamEnd`, exactly one) and its credit
//! (`Credit`) all carry that request's id.
//!
//! Flow control is credit in bytes of item frames (their length fields):
//! the consumer grants a window when it sends the request, and more as its
//! user takes items. The producer is polled only while it has room, so a
//! consumer that stops reading holds the producer to one window, and the
//! connection's reader never waits for a slow consumer (each stream's
//! queue is bounded by its own window). One stalled stream therefore stops
//! nothing else on the connection.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::task::AtomicWaker;
use tracing::Instrument;

use super::id_map::IdMap;
use super::in_flight::{Credit, Slot};
use super::{Closure, Connection};
use crate::error::Error;
use crate::service::BoxedSource;
use crate::wire::{EncodeError, FrameBuf, HEADER_LEN, Status};

/// Decodes and drops an item nobody will read, so that remote objects
/// inside it are released.
pub(crate) type DiscardItem = fn(&Arc<Connection>, &Bytes);

/// Produces stream `slot.id()` from `source` until it ends, is cancelled,
/// or the connection closes. Runs on its own task (the handler's, or one
/// spawned for it); the slot frees the stream's place however it ends.
pub(super) async fn produce(
    conn: Arc<Connection>,
    slot: Slot,
    credit: Arc<Credit>,
    mut source: BoxedSource,
) {
    let id = slot.id();
    let span = tracing::debug_span!("ipc.stream", id, peer = %conn.peer);
    let work = async {
        let _open = super::dispatch::Gauge::take(&conn.gauges.streams);
        let mut scope = Some(conn.scope());
        let mut items = 0u64;
        // The source is polled for one item ahead of the credit: an item
        // then waits (alone) for room, and the stream's end is known, and
        // sent, without any. So at most one item beyond the window is held.
        // Items the source has ready while there is credit and room in the
        // outbox are queued as they come, inside one poll (one entry into
        // the scope for the run of them); only one that has to wait leaves it.
        let mut waiting: Option<FrameBuf> = None;
        let (status, detail) = loop {
            if credit.ended.load(std::sync::atomic::Ordering::Acquire) {
                return items;
            }
            let next = std::future::poll_fn(|cx| {
                let polled = crate::scope::lend(&mut scope, || {
                    std::panic::catch_unwind(AssertUnwindSafe(|| {
                        loop {
                            let frame =
                                match source.as_mut().poll_item(cx, id, conn.peer_max_frame()) {
                                    Poll::Ready(Some(Ok(frame))) => frame,
                                    Poll::Ready(Some(Err(e))) => {
                                        return Poll::Ready(Next::Failed(e));
                                    }
                                    Poll::Ready(None) => return Poll::Ready(Next::Ended),
                                    Poll::Pending => return Poll::Pending,
                                };
                            if !credit.has_room() {
                                waiting = Some(frame);
                                return Poll::Ready(Next::Waits);
                            }
                            let len = frame.body_len();
                            match conn.outbox.try_push_unless(frame, &credit.ended) {
                                Ok(Ok(true)) => {
                                    credit.spend(len);
                                    items += 1;
                                }
                                // Ended by a cancel or a shutdown, which sent the end.
                                Ok(Ok(false) | Err(_)) => return Poll::Ready(Next::Stopped),
                                Err(frame) => {
                                    waiting = Some(frame);
                                    return Poll::Ready(Next::Waits);
                                }
                            }
                        }
                    }))
                });
                match polled {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(next)) => Poll::Ready(Ok(next)),
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            })
            .await;
            match next {
                Ok(Next::Waits) => {
                    let Some(frame) = waiting.take() else {
                        continue;
                    };
                    if !credit.wait().await {
                        // Ended by a cancel or a shutdown, which sent the end.
                        return items;
                    }
                    let len = frame.body_len();
                    match conn.outbox.push_unless(frame, &credit.ended).await {
                        Ok(true) => {
                            credit.spend(len);
                            items += 1;
                        }
                        // Ended by a cancel or a shutdown, which sent the end.
                        Ok(false) | Err(_) => return items,
                    }
                }
                Ok(Next::Stopped) => return items,
                Ok(Next::Failed(EncodeError::TooLarge { size, limit })) => {
                    tracing::warn!(
                        size,
                        limit,
                        "a stream item exceeds the consumer's frame limit"
                    );
                    break (Status::FrameTooLarge, End::Sizes(size as u64, limit as u64));
                }
                Ok(Next::Failed(e)) => break (Status::EncodeFailed, End::Detail(e.to_string())),
                Ok(Next::Ended) => break (Status::Ok, End::Nothing),
                Err(panic) => {
                    let message = super::dispatch::panic_message(panic.as_ref());
                    tracing::error!(%message, "stream producer panicked");
                    break (Status::Panic, End::Detail(message));
                }
            }
        };
        // Dropped before the end is sent: its `Drop` runs now, not later.
        drop(source);
        if conn.in_flight.finish_stream(&slot) {
            let frame = match &detail {
                End::Nothing => FrameBuf::stream_end(id, status, &()),
                End::Detail(d) => FrameBuf::stream_end(id, status, d.as_str()),
                End::Sizes(size, limit) => FrameBuf::stream_end(id, status, &(*size, *limit)),
            };
            let _ = conn.outbox.push(frame).await;
        }
        items
    };
    let items = if span.is_disabled() {
        work.await
    } else {
        work.instrument(span.clone()).await
    };
    let _entered = span.enter();
    tracing::debug!(items, "stream ended");
    drop(slot);
}

/// How a producer's poll of its source ended.
enum Next {
    /// An item that has to wait for credit or room is in `waiting`.
    Waits,
    /// The stream was ended (cancelled, shut down) or the connection
    /// closed: nothing more is sent.
    Stopped,
    /// The source ended.
    Ended,
    /// The source failed to encode an item.
    Failed(EncodeError),
}

/// What a stream's end carries besides its status.
enum End {
    Nothing,
    Detail(String),
    Sizes(u64, u64),
}

/// How a stream being received ended.
#[derive(Debug)]
enum Ending {
    /// The producer sent its end.
    Sent(Status, Bytes),
    /// The connection ended first.
    Lost(Closure),
}

#[derive(Default)]
struct InboxState {
    items: VecDeque<Bytes>,
    /// Bytes the producer may still send (what was granted minus what came).
    available: i64,
    end: Option<Ending>,
    /// The consumer is gone: items are discarded as they come.
    dropped: bool,
    discard: Option<DiscardItem>,
}

/// The queue of one stream being received.
#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    waker: AtomicWaker,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type InboxMap = IdMap<Arc<Inbox>>;

/// The streams this side receives, by the id of the request that opened them.
#[derive(Default)]
pub(crate) struct Consumers {
    map: Mutex<InboxMap>,
}

impl Consumers {
    fn lock(&self) -> MutexGuard<'_, InboxMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams being received.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Prepares to receive the stream request `id` may open, granting `window`.
    pub(crate) fn open(&self, id: u64, window: u32) -> Arc<Inbox> {
        let inbox = Inbox::default();
        inbox.lock().available = i64::from(window);
        let inbox = Arc::new(inbox);
        self.lock().insert(id, inbox.clone());
        inbox
    }

    fn get(&self, id: u64) -> Option<Arc<Inbox>> {
        self.lock().get(&id).cloned()
    }

    /// Forgets stream `id` (it was never opened).
    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The consumer of stream `id` is gone: discards what is queued and what
    /// still comes, until the end arrives. Says whether there was such a stream.
    pub(crate) fn abandon(&self, id: u64) -> bool {
        let Some(inbox) = self.get(id) else {
            return false;
        };
        let mut st = inbox.lock();
        st.dropped = true;
        st.items.clear();
        true
    }

    /// Ends every stream with the connection's closure.
    pub(crate) fn fail_all(&self, closure: &Closure) {
        let all: Vec<Arc<Inbox>> = self.lock().drain().map(|(_, inbox)| inbox).collect();
        for inbox in all {
            inbox.lock().end = Some(Ending::Lost(closure.clone()));
            inbox.waker.wake();
        }
    }
}

impl Connection {
    /// An item arrived for stream `id`.
    pub(super) fn on_stream_item(self: &Arc<Self>, id: u64, item: Bytes) -> Result<(), Error> {
        let Some(inbox) = self.consumers.get(id) else {
            return self.unknown_stream(id, "an item");
        };
        let discard = {
            let mut st = inbox.lock();
            if st.available <= 0 {
                return Err(Error::Protocol {
                    detail: format!("stream {id} sent an item beyond the credit it was given"),
                });
            }
            st.available -= i64::try_from(HEADER_LEN + item.len()).unwrap_or(i64::MAX);
            if st.dropped {
                st.discard
            } else {
                st.items.push_back(item);
                drop(st);
                inbox.waker.wake();
                return Ok(());
            }
        };
        if let Some(discard) = discard {
            discard(self, &item);
        }
        Ok(())
    }

    /// Stream `id` ended.
    pub(super) fn on_stream_end(
        self: &Arc<Self>,
        id: u64,
        status: Status,
        body: Bytes,
    ) -> Result<(), Error> {
        let Some(inbox) = self.consumers.lock().remove(&id) else {
            return self.unknown_stream(id, "an end");
        };
        inbox.lock().end = Some(Ending::Sent(status, body));
        inbox.waker.wake();
        Ok(())
    }

    /// A stream frame for an id with no stream: the tail of a stream this
    /// side dropped (ignored), or a protocol violation.
    fn unknown_stream(&self, id: u64, what: &str) -> Result<(), Error> {
        if id < self.outbox.next_id() {
            tracing::trace!(id, what, "stream frame after the stream was dropped");
            Ok(())
        } else {
            Err(Error::Protocol {
                detail: format!("{what} for stream {id}, which was never opened"),
            })
        }
    }

    /// The consumer of stream `id` grants its producer (this side) more room.
    pub(super) fn on_credit(&self, id: u64, bytes: u32) -> Result<(), Error> {
        if self.in_flight.grant(id, bytes) || id <= self.last_read() {
            // Granted; or for a stream that has ended meanwhile (the grant
            // crossed its end on the wire).
            Ok(())
        } else {
            Err(Error::Protocol {
                detail: format!("credit for stream {id}, which was never opened"),
            })
        }
    }

    /// The receiving end of the stream opened by request `id`, whose items
    /// arrive in `inbox`.
    pub(crate) fn receiver(
        self: &Arc<Self>,
        id: u64,
        inbox: Arc<Inbox>,
        discard: DiscardItem,
    ) -> Receiver {
        inbox.lock().discard = Some(discard);
        Receiver {
            conn: self.clone(),
            id,
            inbox,
            unacked: 0,
            done: false,
        }
    }
}

/// The receiving end of one stream: its items as they arrive, raw.
pub(crate) struct Receiver {
    conn: Arc<Connection>,
    id: u64,
    inbox: Arc<Inbox>,
    /// Bytes taken since the last grant.
    unacked: u32,
    /// The end has been handed out.
    done: bool,
}

/// What [`Receiver::poll_next`] yields.
pub(crate) enum Received {
    Item(Bytes),
    /// The stream ended cleanly.
    End,
    /// The stream ended abnormally: how.
    Failed(Status, Bytes),
    /// The connection ended first.
    Lost(Error),
}

impl Receiver {
    /// The next item, or how the stream ended (once; then `End`).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        if self.done {
            return Poll::Ready(Received::End);
        }
        let taken = self.take();
        let taken = match taken {
            Some(t) => t,
            None => {
                self.inbox.waker.register(cx.waker());
                // Checked again after registering: an item may have come between.
                match self.take() {
                    Some(t) => t,
                    None => return Poll::Pending,
                }
            }
        };
        Poll::Ready(match taken {
            Taken::Item(item) => {
                self.consumed(HEADER_LEN + item.len());
                Received::Item(item)
            }
            Taken::End(ending) => {
                self.done = true;
                match ending {
                    Ending::Sent(Status::Ok, _) => Received::End,
                    Ending::Sent(status, body) => Received::Failed(status, body),
                    Ending::Lost(closure) => Received::Lost(closure.to_error()),
                }
            }
        })
    }

    fn take(&self) -> Option<Taken> {
        let mut st = self.inbox.lock();
        if let Some(item) = st.items.pop_front() {
            return Some(Taken::Item(item));
        }
        st.end.take().map(Taken::End)
    }

    /// Grants the producer what was taken, once it is half a window.
    fn consumed(&mut self, bytes: usize) {
        self.unacked = self
            .unacked
            .saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
        if self.unacked < self.conn.config.stream_window / 2 {
            return;
        }
        let grant = std::mem::take(&mut self.unacked);
        {
            let mut st = self.inbox.lock();
            st.available = st.available.saturating_add(i64::from(grant));
        }
        let _ = self.conn.outbox.push_now(FrameBuf::credit(self.id, grant));
    }
}

enum Taken {
    Item(Bytes),
    End(Ending),
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (queued, ended) = {
            let mut st = self.inbox.lock();
            st.dropped = true;
            (std::mem::take(&mut st.items), st.end.is_some())
        };
        if let Some(discard) = self.inbox.lock().discard {
            for item in &queued {
                discard(&self.conn, item);
            }
        }
        // Ended already (the end is in the queue, unread): nothing to cancel.
        if !ended && !self.conn.is_closed() {
            let _ = self.conn.outbox.push_now(FrameBuf::cancel(self.id));
        }
    }
}
