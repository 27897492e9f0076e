//! Taking connections: the accept loop, the `max_connections` places, and
//! refusing connections past it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Shared, conn};
use crate::transport::{Listener, Socket, Stream, TlsAcceptor};
use crate::wire::{self, FrameBuf};

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: Listener) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.token.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(socket) => match ConnectionSlot::take(&shared) {
                Some(slot) => {
                    shared.tracker.spawn(conn::serve(slot, socket));
                }
                None => {
                    tracing::warn!(peer = %socket.peer, "connection limit reached; refusing");
                    // Refusals are short (1 s at most) and themselves
                    // bounded: past that, the socket is just closed.
                    if let Some(refusal) = Refusal::take(&shared) {
                        shared
                            .tracker
                            .spawn(refuse(socket, shared.tls.clone(), refusal));
                    }
                }
            },
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "accept failed for one connection");
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; pausing");
                tokio::select! {
                    _ = shared.token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    // Dropping the listener here refuses new connections from now on.
}

/// One of the `max_connections` places, counted from accept (not from when
/// the connection's task first runs, so a burst cannot overshoot) until the
/// connection is gone.
pub(super) struct ConnectionSlot(pub(super) Arc<Shared>);

impl ConnectionSlot {
    pub(super) fn take(shared: &Arc<Shared>) -> Option<Self> {
        count_up_to(&shared.gauges.connections, shared.limits.max_connections)
            .then(|| Self(shared.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.gauges.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds one to `counter` unless it has reached `limit`; says whether it did.
fn count_up_to(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// Most refusals in progress at once.
const MAX_REFUSALS: usize = 64;

/// One of the [`MAX_REFUSALS`] places for a connection being refused.
struct Refusal(Arc<Shared>);

impl Refusal {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        count_up_to(&shared.gauges.refusing, MAX_REFUSALS).then(|| Self(shared.clone()))
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        self.0.gauges.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells a connection over the limit why it is refused, lets it finish
/// sending its hello (so the close is not a reset), and closes it.
async fn refuse(socket: Socket, tls: Option<TlsAcceptor>, _refusal: Refusal) {
    let frame = FrameBuf::go_away(wire::GOAWAY_CONNECTION_LIMIT).into_unchecked();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        // Over TLS the refusal is said inside TLS, so the client can read it.
        let Stream {
            mut read,
            mut write,
            ..
        } = match tls {
            Some(tls) => tls
                .accept(socket)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?,
            None => socket.plain(),
        };
        write.write_all(&frame).await?;
        write.shutdown().await?;
        let mut sink = [0u8; 256];
        while read.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
