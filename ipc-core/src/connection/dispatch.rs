//! Requests from the peer: finding the object, running the handler,
//! answering.
//!
//! Most handlers finish on their first poll: that poll runs here, on the
//! connection's reader, and such a call costs no task, no table entry and
//! no timer. A handler that has to wait becomes a task with a place in
//! `in_flight` (what `max_in_flight` limits), under the call's deadline.
//! A handler that returns a stream opens it: the stream is then produced on
//! that task (or, for a handler that finished at once, on a new one).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use tracing::Instrument;

use super::Connection;
use super::in_flight::{Cancelled, Slot};
use crate::context::{Access, CallContext};
use crate::error::Error;
use crate::scope::{self, Scope, Scoped};
use crate::service::{BoxedSource, DispatchError, Outcome, Reply};
use crate::telemetry::{CallRecord, Outcome as Ended};
use crate::wire::{self, FrameBuf, Request, Status};

/// A call the authorization rule refused.
struct Denied;

/// One unit of a shared count, given back when dropped.
pub(crate) struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    pub(crate) fn take(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// As [`Gauge`], owning its count (for tasks).
struct OwnedGauge(Arc<super::Gauges>);

impl OwnedGauge {
    fn take(gauges: &Arc<super::Gauges>) -> Self {
        gauges.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(gauges.clone())
    }
}

impl Drop for OwnedGauge {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

impl Connection {
    /// A request from the peer. An error closes the connection.
    pub(super) async fn on_request(
        self: &Arc<Self>,
        request: Request,
        draining: bool,
    ) -> Result<(), Error> {
        let last = self.last_read();
        if request.id <= last {
            return Err(Error::Protocol {
                detail: format!(
                    "request id {} after {last}: request ids must increase",
                    request.id
                ),
            });
        }
        self.last_read.store(request.id, Ordering::Relaxed);
        // Stop reading requests while replies cannot be sent: a peer that
        // does not read cannot make this side buffer more. The wait ends
        // when the peer has read nothing for the stall timeout.
        self.wait_for_room().await?;
        if draining {
            self.answer(
                request.id,
                request.oneway,
                Reply::empty(Status::ShuttingDown),
            )
            .await;
            return Ok(());
        }
        self.dispatch(request).await;
        Ok(())
    }

    async fn wait_for_room(&self) -> Result<(), Error> {
        // The usual case, without a timer or a waiter.
        if self.outbox.has_room_now() {
            return Ok(());
        }
        let room = self.outbox.has_space();
        match self.config.stall_timeout {
            Some(stall) => {
                tokio::time::timeout(stall, room)
                    .await
                    .map_err(|_| Error::ConnectionLost {
                        reason: format!("the peer read nothing for {stall:?}"),
                    })
            }
            None => {
                room.await;
                Ok(())
            }
        }
    }

    /// The peer no longer wants the answer to request `id`.
    pub(super) fn on_cancel(&self, id: u64) {
        match self.in_flight.cancel(id) {
            Cancelled::Call => {
                tracing::debug!(id, "call cancelled by the peer");
                let mut frame = FrameBuf::response_empty(Status::Cancelled);
                frame.set_id(id);
                let _ = self.outbox.push_now(frame);
            }
            Cancelled::Stream => {
                tracing::debug!(id, "stream cancelled by the peer");
                let end = FrameBuf::stream_end(id, Status::Cancelled, &());
                let _ = self.outbox.push_now(end);
            }
            // Finished already (its answer is on its way), or never seen.
            Cancelled::Nothing => {}
        }
    }

    /// Sends `reply` to request `id`, or for a oneway call (no one is
    /// waiting) logs what went wrong.
    async fn answer(self: &Arc<Self>, id: u64, oneway: bool, reply: Reply) {
        if oneway {
            reply.log_if_error();
            return;
        }
        match reply.0 {
            Outcome::Frame(frame) => self.send_response(id, frame).await,
            Outcome::Stream(source) => self.open_stream_now(id, source).await,
        }
    }

    async fn send_response(&self, id: u64, mut frame: FrameBuf) {
        frame.set_id(id);
        if self.outbox.push(frame).await.is_err() {
            tracing::debug!(id, "connection closed before the reply could be sent");
        }
    }

    /// Opens the stream a handler returned on its first poll: a new task
    /// produces it.
    async fn open_stream_now(self: &Arc<Self>, id: u64, source: BoxedSource) {
        let (slot, credit) = match self.in_flight.reserve_stream(id, self.config.max_streams) {
            Ok(reserved) => reserved,
            Err(true) => {
                let detail = format!(
                    "{} streams already open on this connection",
                    self.config.max_streams
                );
                self.send_response(id, reply_frame(Reply::error(Status::Overloaded, &detail)))
                    .await;
                return;
            }
            Err(false) => return,
        };
        self.send_response(id, FrameBuf::response_empty(Status::Ok))
            .await;
        let conn = self.clone();
        let seq = slot.seq();
        let task = self
            .handlers
            .spawn(super::streams::produce(conn, slot, credit, source));
        self.in_flight.started(id, seq, task.abort_handle());
    }

    /// Starts a request.
    async fn dispatch(self: &Arc<Self>, request: Request) {
        let scope = self.scope();
        if request.object == wire::SYSTEM_OBJECT {
            let reply = scope::with(scope, || self.host.system(self, &request));
            self.answer(request.id, request.oneway, reply).await;
            return;
        }
        let Request {
            id,
            object,
            method,
            deadline_ms,
            args,
            oneway,
        } = request;
        // User code runs here, on the reader: a per-connection object's
        // factory, and the arguments' `Deserialize`. A panic in either is
        // that call's failure, not the connection's.
        let named = object < wire::EXPORT_BASE;
        let started = scope::with(scope.clone(), || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let target = if named {
                    self.host.named(object)?
                } else {
                    self.exported(object).ok_or(None)?
                };
                // The server's rule decides before any user code runs for
                // the call (objects a side exported are theirs to call).
                let method_name = target
                    .service
                    .descriptor()
                    .methods
                    .get(usize::from(method))
                    .map(|m| m.name);
                if let (true, Some(method_name)) = (named, method_name) {
                    let access = Access::Call {
                        object: &target.name,
                        method: method_name,
                    };
                    if !self.host.authorize(&self.peer_info, access) {
                        return Ok((target, Err(Denied)));
                    }
                }
                let started = target.service.call(method, &args);
                Ok((target, Ok(started)))
            }))
        });
        let (target, future) = match started {
            Ok(Ok((target, Err(Denied)))) => {
                tracing::debug!(object = %target.name, method, peer = %self.peer, "call refused by the authorization rule");
                let detail = format!(
                    "this peer may not call method #{method} of `{}`",
                    target.name
                );
                self.answer(id, oneway, Reply::error(Status::PermissionDenied, &detail))
                    .await;
                return;
            }
            Ok(Ok((target, Ok(Ok(future))))) => (target, future),
            Ok(Err(Some(reply))) => {
                // A handle whose lookup failed: answered as the lookup was.
                self.answer(id, oneway, reply).await;
                return;
            }
            Ok(Err(None)) => {
                let detail = if object >= wire::EXPORT_BASE {
                    format!("no object has handle {object}: it was released, or never exported")
                } else {
                    format!("no object has handle {object}")
                };
                self.answer(id, oneway, Reply::error(Status::UnknownObject, &detail))
                    .await;
                return;
            }
            Ok(Ok((target, Ok(Err(e))))) => {
                let reply = match e {
                    DispatchError::UnknownMethod(m) => {
                        let detail = format!(
                            "object `{}` (trait `{}`) has no method #{m}",
                            target.name,
                            target.service.descriptor().trait_name
                        );
                        Reply::error(Status::UnknownMethod, &detail)
                    }
                    DispatchError::BadArguments(detail) => {
                        Reply::error(Status::BadRequest, &detail)
                    }
                    DispatchError::NoInstance => {
                        Reply::error(Status::UnknownObject, "object has no instance")
                    }
                };
                self.answer(id, oneway, reply).await;
                return;
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(%message, "panic while starting a call");
                self.answer(id, oneway, Reply::error(Status::Panic, &message))
                    .await;
                return;
            }
        };
        let max = self.config.max_in_flight;
        if self.in_flight.len() >= max {
            let detail = format!("{max} calls already in flight on this connection");
            self.answer(id, oneway, Reply::error(Status::Overloaded, &detail))
                .await;
            return;
        }
        let descriptor = target.service.descriptor();
        let method_name = descriptor
            .methods
            .get(usize::from(method))
            .map_or("?", |m| m.name);
        // With tracing's `log` feature on, even a disabled span costs.
        let span = if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug_span!("ipc.handle", object = %target.name, method = method_name, id)
        } else {
            tracing::Span::none()
        };
        // Logged and counted when it ends (as cancelled if dropped first).
        let record = CallRecord::start(&target.name, method, method_name, target.metrics.as_ref());
        let context = CallContext {
            peer: self.peer_info.clone(),
            object: target.name.clone(),
            request_id: id,
        };
        // Counted from here until the handler's future is gone.
        let running = OwnedGauge::take(&self.gauges);
        let scope = Scope {
            context: Some(context),
            ..scope
        };
        let mut handler = AssertUnwindSafe(Scoped::new(scope, future)).catch_unwind();
        // The first poll, here. Entering a disabled span on every poll still
        // costs: skip it.
        let first = {
            let _entered = (!span.is_disabled()).then(|| span.enter());
            std::future::poll_fn(|cx| Poll::Ready(handler.poll_unpin(cx))).await
        };
        match first {
            Poll::Ready(outcome) => {
                if let Some(record) = record {
                    record.finish(ended(&outcome));
                }
                drop(running);
                self.activity.store(true, Ordering::Relaxed);
                self.conclude(id, oneway, outcome, None).await;
            }
            Poll::Pending => {
                // The call counts against the limit until its reply is
                // queued, it is cancelled, or its task is dropped: the slot
                // exists before the task and moves into it.
                let Some(slot) = self.in_flight.reserve(id) else {
                    // Ids increase, so this cannot happen; answer anyway.
                    self.answer(
                        id,
                        oneway,
                        Reply::error(Status::BadRequest, "duplicate request id"),
                    )
                    .await;
                    return;
                };
                let seq = slot.seq();
                let deadline = (deadline_ms > 0).then(|| Duration::from_millis(deadline_ms.into()));
                let conn = self.clone();
                let task = async move {
                    let outcome = match deadline {
                        Some(d) => tokio::time::timeout(d, handler).await.ok(),
                        None => Some(handler.await),
                    };
                    if let Some(record) = record {
                        record.finish(outcome.as_ref().map_or(Ended::Timeout, ended));
                    }
                    drop(running);
                    conn.activity.store(true, Ordering::Relaxed);
                    match outcome {
                        Some(outcome) => conn.conclude(id, oneway, outcome, Some(slot)).await,
                        None => {
                            tracing::debug!(?deadline, "deadline passed; call dropped");
                            if !oneway && conn.in_flight.claim(&slot) {
                                conn.send_response(
                                    id,
                                    FrameBuf::response_empty(Status::DeadlineExceeded),
                                )
                                .await;
                            }
                        }
                    }
                };
                let handle = if span.is_disabled() {
                    self.handlers.spawn(task)
                } else {
                    self.handlers.spawn(task.instrument(span))
                };
                self.in_flight.started(id, seq, handle.abort_handle());
            }
        }
    }

    /// Answers a call whose handler has finished (or panicked). `slot`: its
    /// place in `in_flight`, if it ran as a task; then it answers only if no
    /// cancel came first, and a stream it opens is produced on this task.
    async fn conclude(
        self: &Arc<Self>,
        id: u64,
        oneway: bool,
        outcome: std::thread::Result<Reply>,
        slot: Option<Slot>,
    ) {
        let reply = match outcome {
            Ok(reply) => reply,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(%message, oneway, "handler panicked");
                Reply::error(Status::Panic, &message)
            }
        };
        let Some(slot) = slot else {
            self.answer(id, oneway, reply).await;
            return;
        };
        if oneway {
            reply.log_if_error();
            return;
        }
        match reply.0 {
            Outcome::Frame(frame) => {
                if self.in_flight.claim(&slot) {
                    self.send_response(id, frame).await;
                }
            }
            Outcome::Stream(source) => match self
                .in_flight
                .to_stream(&slot, self.config.max_streams)
            {
                Ok(()) => {
                    self.send_response(id, FrameBuf::response_empty(Status::Ok))
                        .await;
                    match self.in_flight.opened(&slot) {
                        Ok(credit) => {
                            super::streams::produce(self.clone(), slot, credit, source).await;
                        }
                        Err(status) => {
                            drop(source);
                            let _ = self
                                .outbox
                                .push(FrameBuf::stream_end(id, status, &()))
                                .await;
                        }
                    }
                }
                Err(true) => {
                    let detail = format!(
                        "{} streams already open on this connection",
                        self.config.max_streams
                    );
                    self.send_response(id, reply_frame(Reply::error(Status::Overloaded, &detail)))
                        .await;
                }
                // Cancelled while the handler ran: answered already.
                Err(false) => {}
            },
        }
    }
}

/// How a handler's run ended, for its record.
fn ended(outcome: &std::thread::Result<Reply>) -> Ended {
    match outcome {
        Ok(reply) => Ended::of(reply.status()),
        Err(_) => Ended::Panic,
    }
}

/// The frame of an error reply (which is never a stream).
fn reply_frame(reply: Reply) -> FrameBuf {
    match reply.0 {
        Outcome::Frame(frame) => frame,
        Outcome::Stream(_) => FrameBuf::response_empty(Status::Overloaded),
    }
}
