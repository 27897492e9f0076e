//! Serving one connection: the handshake, the read loop (with draining on
//! shutdown and the idle timer), the lingering close, and what the server
//! serves by name (its objects and the system object).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;

use futures::{FutureExt, StreamExt};
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use super::Shared;
use super::accept::ConnectionSlot;
use super::lookups::{Found, Lookups};
use crate::connection::{self, Closure, Connection, Host, Labels, Target};
use crate::context::{Access, Peer};
use crate::error::Error;
use crate::object::{ObjectInfo, ResolveRequest};
use crate::schema::ObjectSchema;
use crate::service::{Reply, Service};
use crate::transport::Socket;
use crate::wire::{self, Request, Status};

/// What a server connection serves by name.
struct ServerHost {
    shared: Arc<Shared>,
    /// Per exposed object: the service this connection calls (the shared
    /// one, or its own instance for per-connection objects), set on first use.
    instances: Vec<OnceLock<Arc<dyn Service>>>,
    /// What each handle this connection was given stands for.
    lookups: Lookups,
}

impl Host for ServerHost {
    fn named(&self, handle: u32) -> Result<Target, Option<Reply>> {
        let i = if handle >= wire::LOOKUP_BASE {
            match self.lookups.get(handle).ok_or(None)? {
                Found::Object(i) => i,
                Found::Failed(status, fingerprints) => {
                    return Err(Some(Found::refusal(status, fingerprints, handle)));
                }
            }
        } else {
            usize::try_from(handle)
                .ok()
                .and_then(|h| h.checked_sub(1))
                .ok_or(None)?
        };
        let exposed = self.shared.objects.get(i).ok_or(None)?;
        // Per-connection objects get their instance on first use.
        let service = self.instances.get(i).ok_or(None)?.get_or_init(|| {
            exposed
                .service
                .for_connection()
                .unwrap_or_else(|| exposed.service.clone())
        });
        Ok(Target {
            name: exposed.name.clone(),
            service: service.clone(),
            metrics: exposed.metrics.clone(),
        })
    }

    fn authorize(&self, peer: &Peer, access: Access<'_>) -> bool {
        self.shared.authorize.as_ref().is_none_or(|rule| {
            // A rule that panics refuses.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rule(peer, access)))
                .unwrap_or(false)
        })
    }

    /// Method 0 resolves a name to a handle, method 1 lists the directory,
    /// method 2 describes an object's method types. Objects the peer may not
    /// see are absent from all three.
    fn system(&self, conn: &Arc<Connection>, request: &Request) -> Reply {
        match request.method {
            wire::SYSTEM_RESOLVE => self.resolve(conn, request),
            wire::SYSTEM_LIST => {
                if let Err(e) = wire::decode::<()>(&request.args) {
                    return Reply::error(Status::BadRequest, &e.to_string());
                }
                let list: Vec<ObjectInfo> = self
                    .shared
                    .objects
                    .iter()
                    .filter(|o| self.may_see(conn, &o.name))
                    .map(|o| ObjectInfo::new(&o.name, o.service.descriptor()))
                    .collect();
                Reply::value(&list)
            }
            wire::SYSTEM_SCHEMA => self.schema(conn, request),
            other => Reply::error(
                Status::UnknownMethod,
                &format!("the system object has no method #{other}"),
            ),
        }
    }
}

impl ServerHost {
    fn may_see(&self, conn: &Connection, object: &str) -> bool {
        self.authorize(&conn.peer_info, Access::Object { object })
    }

    /// Method 2: the schema of the object named in the argument; status 16
    /// for a name that is unknown or hidden from the peer, as `resolve`.
    fn schema(&self, conn: &Connection, request: &Request) -> Reply {
        let name: String = match wire::decode(&request.args) {
            Ok(name) => name,
            Err(e) => return Reply::error(Status::BadRequest, &e.to_string()),
        };
        match self.shared.objects.iter().find(|o| *o.name == *name) {
            Some(o) if self.may_see(conn, &name) => {
                let service = &o.service;
                Reply::value(&ObjectSchema::new(
                    &name,
                    service.descriptor(),
                    service.schema(),
                ))
            }
            _ => Reply::error(Status::UnknownObject, &name),
        }
    }

    /// A lookup, remembered in the order read, whatever it finds (see
    /// `lookups`), so that a client may call it before the answer.
    fn resolve(&self, conn: &Connection, request: &Request) -> Reply {
        let (found, failure, name) = match wire::decode::<ResolveRequest>(&request.args) {
            Ok(lookup) => {
                let (found, failure) = self.look_up(conn, &lookup);
                (found, failure, lookup.name)
            }
            Err(e) => (
                Found::failure(Status::BadRequest, None),
                Some(Reply::error(Status::BadRequest, &e.to_string())),
                String::new(),
            ),
        };
        self.lookups.record(found);
        let result = match found {
            Found::Object(_) => "found",
            Found::Failed(Status::UnknownObject, _) => "unknown object",
            Found::Failed(Status::TraitMismatch, _) => "trait mismatch",
            Found::Failed(..) => "bad request",
        };
        tracing::debug!(name = %name, result, "object lookup");
        match (found, failure) {
            (_, Some(failure)) => failure,
            (Found::Object(i), None) => Reply::value(&u32::try_from(i + 1).unwrap_or(0)),
            (Found::Failed(status, _), None) => Reply::error(status, "lookup failed"),
        }
    }

    /// What a lookup finds, and the answer if that is a failure.
    fn look_up(&self, conn: &Connection, lookup: &ResolveRequest) -> (Found, Option<Reply>) {
        let index = self
            .shared
            .by_name
            .get(&lookup.name)
            .filter(|_| self.may_see(conn, &lookup.name))
            .and_then(|&handle| usize::try_from(handle).ok()?.checked_sub(1));
        let Some((index, exposed)) = index.and_then(|i| Some((i, self.shared.objects.get(i)?)))
        else {
            return (
                Found::failure(Status::UnknownObject, None),
                Some(Reply::error(Status::UnknownObject, &lookup.name)),
            );
        };
        match exposed.service.descriptor().mismatch(lookup) {
            None => (Found::Object(index), None),
            Some(mismatch) => (
                Found::failure(Status::TraitMismatch, Some(&mismatch)),
                Some(Reply::encoded(Status::TraitMismatch, &mismatch)),
            ),
        }
    }
}

/// Serves one accepted connection until it ends.
pub(super) async fn serve(slot: ConnectionSlot, socket: Socket) {
    let shared = slot.0.clone();
    let span = tracing::debug_span!("ipc.conn", peer = %socket.peer);
    let _slot = slot;
    let work = async {
        let host = ServerHost {
            shared: shared.clone(),
            instances: shared.objects.iter().map(|_| OnceLock::new()).collect(),
            lookups: Lookups::default(),
        };
        let connection_id = shared
            .next_connection_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let peer_of = |who: &connection::Identity<'_>| {
            Peer::new(
                who.peer,
                connection_id,
                who.key_authenticated,
                who.certificate.clone(),
                who.credentials,
            )
        };
        // TLS (if any), the hello and authentication: all within the
        // handshake timeout, all before anything else is read.
        let opening = async {
            let stream = match &shared.tls {
                Some(tls) => tls.accept(socket).await?,
                None => socket.plain(),
            };
            let stream = match &shared.metrics {
                Some(metrics) => metrics.count(stream),
                None => stream,
            };
            connection::handshake_as_server(stream, &shared.config, |who| {
                host.authorize(&peer_of(who), Access::Connect)
            })
            .await
        };
        let handshake = tokio::select! {
            r = tokio::time::timeout(shared.config.handshake_timeout, opening) => r,
            _ = shared.token.cancelled() => return,
        };
        let handshake = match handshake {
            Ok(Ok(handshake)) => handshake,
            // Connecting and leaving without a word is what health checks
            // and liveness probes do: not worth a warning.
            Ok(Err(e @ Error::ConnectionLost { .. })) => {
                tracing::debug!(error = %e, "peer left before the handshake");
                return;
            }
            // Logged (rate-limited, or at info) where it was found.
            Ok(Err(Error::AuthFailed { .. } | Error::PermissionDenied { .. })) => return,
            // An HTTP request or a port scan: worth a line, not a warning.
            Ok(Err(e @ Error::ProtocolMismatch { .. })) => {
                tracing::info!(error = %e, "closing connection");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "handshake failed; closing connection");
                return;
            }
            Err(_) => {
                tracing::warn!("handshake timed out; closing connection");
                return;
            }
        };
        let peer_limit = handshake.peer_limit();
        let connection::Handshake {
            mut frames,
            write,
            peer,
            local,
            key_authenticated,
            certificate,
            credentials,
            reply,
            ..
        } = handshake;
        let _open = shared.metrics.as_ref().map(|m| m.connection());
        tracing::debug!(peer = %peer, connection_id, "connection accepted");
        let peer = Arc::new(peer_of(&connection::Identity {
            peer: &peer,
            key_authenticated,
            certificate,
            credentials,
        }));
        let conn = Connection::new(
            &shared.config,
            Some(peer_limit),
            Labels { local, peer },
            Arc::new(host),
            shared.gauges.connection.clone(),
            1,
        );
        // Our hello (without a key), first in the queue.
        let writer = connection::spawn_writer(&conn, write, reply);
        let _close = connection::CloseOnDrop {
            conn: conn.clone(),
            why: "the server ended the connection",
        };
        let closure = run(&shared, &conn, &mut frames).await;
        tracing::debug!(%closure, "connection closing");
        let graceful = matches!(closure, Closure::ShuttingDown);
        conn.close(closure);
        let abort = writer.abort_handle();
        let flushed = tokio::select! {
            w = writer => matches!(w, Ok(Ok(()))),
            _ = shared.hard_stop.cancelled() => {
                abort.abort();
                false
            }
        };
        if graceful && flushed {
            tokio::select! {
                // Bounded by the grace period: by its end during a shutdown
                // (the hard stop), and by its length after an idle close.
                _ = linger(&mut frames, shared.grace_period) => {}
                _ = shared.hard_stop.cancelled() => {}
            }
        }
    };
    if span.is_disabled() {
        work.await;
    } else {
        work.instrument(span).await;
    }
}

/// Reads and handles frames until the peer leaves, the protocol breaks, or
/// a shutdown has drained the connection.
async fn run(shared: &Shared, conn: &Arc<Connection>, frames: &mut connection::Frames) -> Closure {
    let mut draining = false;
    let idle = shared.limits.idle_timeout;
    let idle_timer = tokio::time::sleep(idle.unwrap_or(Duration::MAX));
    tokio::pin!(idle_timer);
    // Whether a frame arrived since the idle timer was last armed. The
    // timer is re-armed only when it fires, not on every frame, so a
    // connection closes between one and two idle periods after it fell quiet.
    let mut traffic = false;
    // Made once: a fresh `cancelled()` per frame would lock the token. And
    // polled only once they woke the task: every poll of a token locks it.
    let hard_stop = shared.hard_stop.cancelled();
    tokio::pin!(hard_stop);
    let mut hard_stop = OnWake::new(hard_stop);
    let shutdown = shared.token.cancelled();
    tokio::pin!(shutdown);
    let mut shutdown = OnWake::new(shutdown);
    let mut idle_timer = OnWake::new(idle_timer);
    // Frames taken straight from the read buffer since the last full wait.
    let mut buffered_run = 0;
    loop {
        // A frame already read (the usual case under load) is taken without
        // polling the stop signals and the idle timer, unless one of them
        // has fired; at most `BUFFERED_RUN` in a row.
        // (Only those the select below would poll: a branch switched off
        // keeps its flag set.)
        let idle_on = idle.is_some() && !draining;
        let fired = hard_stop.is_woken()
            || (!draining && shutdown.is_woken())
            || (idle_on && idle_timer.is_woken());
        let ready = if !fired && buffered_run < BUFFERED_RUN && !frames.read_buffer().is_empty() {
            frames.next().now_or_never()
        } else {
            None
        };
        let frame = match ready {
            Some(frame) => {
                buffered_run += 1;
                frame
            }
            None => {
                buffered_run = 0;
                tokio::select! {
                biased;
                _ = &mut hard_stop => return Closure::ShuttingDown,
                _ = &mut shutdown, if !draining => {
                    draining = true;
                    conn.begin_drain();
                    continue;
                }
                _ = conn.handlers.wait(), if draining => {
                    conn.say_goodbye();
                    return Closure::ShuttingDown;
                }
                _ = &mut idle_timer, if idle.is_some() && !draining => {
                    let recently_busy = std::mem::take(&mut traffic) | conn.take_activity();
                    if !recently_busy && !conn.is_busy() {
                        tracing::debug!("idle timeout; closing connection");
                        draining = true;
                        conn.begin_drain();
                    } else if conn.outbox.stalled() {
                        // Replies queued a whole period and none written: the
                        // peer stopped reading. Free its slot.
                        tracing::warn!("the peer stopped reading; closing connection");
                        return Closure::Lost("the peer stopped reading".into());
                    } else if let Some(idle) = idle {
                        idle_timer
                            .inner_mut()
                            .reset(tokio::time::Instant::now() + idle);
                    }
                    continue;
                }
                f = frames.next() => f,
                    }
            }
        };
        traffic = true;
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                let e = connection::io_to_protocol(e);
                tracing::warn!(error = %e, "closing connection");
                return Closure::Lost(e.to_string());
            }
            None => {
                tracing::debug!("peer closed the connection");
                return Closure::PeerClosed;
            }
        };
        // Handling a request may wait for room to reply; that wait ends at
        // the grace deadline.
        // (The frame first: one handled at once never polls the stop.)
        let handled = tokio::select! {
            biased;
            h = conn.on_frame(frame, draining) => h,
            _ = &mut hard_stop => return Closure::ShuttingDown,
        };
        if let Err(e) = handled {
            tracing::warn!(error = %e, "closing connection");
            return Closure::Lost(e.to_string());
        }
    }
}

/// Frames the read loop takes from its buffer in a row before it looks at
/// the stop signals and the idle timer again.
const BUFFERED_RUN: u32 = 64;

/// A future polled again only after it woke the task (or when first
/// polled): for what the read loop waits on beside every frame (the stop
/// signals, whose every poll takes a lock, and the idle timer). Between
/// wake-ups a poll costs an atomic swap and a waker check.
struct OnWake<'a, F> {
    inner: Pin<&'a mut F>,
    woken: Arc<WakeFlag>,
}

/// Set when the wrapped future wakes; wakes the task that polls it.
#[derive(Default)]
struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a, F: Future> OnWake<'a, F> {
    fn new(inner: Pin<&'a mut F>) -> Self {
        let woken = Arc::new(WakeFlag::default());
        // Polled the first time.
        woken.woken.store(true, Ordering::Relaxed);
        Self { inner, woken }
    }

    /// Whether it woke the task since it was last polled (or was never
    /// polled): then its next poll may find it ready.
    fn is_woken(&self) -> bool {
        self.woken.woken.load(Ordering::Acquire)
    }

    /// The future, to change it; it is polled at the next poll.
    fn inner_mut(&mut self) -> Pin<&mut F> {
        self.woken.woken.store(true, Ordering::Relaxed);
        self.inner.as_mut()
    }
}

impl<F: Future> Future for OnWake<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.woken.task.register(cx.waker());
        if !this.woken.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.woken.clone());
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// The buffer a closing connection reads and discards into.
const LINGER_BUFFER: usize = 8 * 1024;

/// Most bytes a closing connection reads and discards after its last frame
/// (read into one small buffer: this bounds work, not memory).
const LINGER_BYTES: usize = 1 << 30;

/// A closing connection whose peer sends nothing for this long is closed
/// without waiting further for the peer to close its side.
const LINGER_QUIET: Duration = Duration::from_millis(250);

/// After the last go-away is written and the write side shut down: reads and
/// discards what the peer still sends until it closes its side (it has read
/// our end of stream) or falls quiet for [`LINGER_QUIET`], for at most
/// `limit` and [`LINGER_BYTES`]. Closing a socket while the peer is still
/// sending makes the kernel answer with a reset, which discards our last
/// frames (the go-away among them) before the peer has read them.
async fn linger(frames: &mut connection::Frames, limit: Duration) {
    let mut discarded = frames.read_buffer().len();
    let read = frames.get_mut();
    // On the heap, and only now: in the future it would make every
    // connection's task 8 KiB larger for its whole life.
    let mut sink = vec![0u8; LINGER_BUFFER];
    let _ = tokio::time::timeout(limit, async {
        while discarded <= LINGER_BYTES {
            match tokio::time::timeout(LINGER_QUIET, read.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                // End of stream, an error, or a quiet peer.
                _ => break,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task is as large as `serve`'s largest state for its
    /// whole life, idle or not: the closing linger must keep its buffer off
    /// it (an 8 KiB array there cost every idle connection 6 KiB of
    /// resident memory).
    #[test]
    fn lingering_keeps_its_buffer_off_the_connection_task() {
        let (read, _write) = tokio::io::duplex(64);
        let read: crate::transport::BoxedRead = Box::new(read);
        let mut frames =
            connection::Frames::new(read, tokio_util::codec::LengthDelimitedCodec::new());
        let lingering = linger(&mut frames, Duration::from_secs(1));
        let size = std::mem::size_of_val(&lingering);
        assert!(size < 1024, "the linger future is {size} bytes");
    }
}
