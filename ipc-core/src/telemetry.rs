//! What a server reports about the calls it serves: a `debug` log line per
//! call finished, and metrics through the [`metrics`] facade — per object and
//! method, calls by outcome, calls in flight and their duration; per server,
//! connections and bytes. Metric handles are registered with the recorder
//! installed when a method is first called (install yours before serving);
//! without one they are no-ops, and the per-call cost is two clock reads
//! (none at all with `ServerBuilder::metrics(false)` and `debug` off).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::Stream;
use crate::wire::Status;

/// Calls finished, by `object`, `method` and `outcome`.
pub const CALLS_TOTAL: &str = "ipc_server_calls_total";
/// Calls running, by `object` and `method`.
pub const CALLS_IN_FLIGHT: &str = "ipc_server_calls_in_flight";
/// How long calls took, in seconds, by `object` and `method`.
pub const CALL_DURATION_SECONDS: &str = "ipc_server_call_duration_seconds";
/// Connections open.
pub const CONNECTIONS: &str = "ipc_server_connections";
/// Connections accepted (that completed the handshake).
pub const CONNECTIONS_TOTAL: &str = "ipc_server_connections_total";
/// Bytes read from clients.
pub const BYTES_RECEIVED_TOTAL: &str = "ipc_server_bytes_received_total";
/// Bytes written to clients.
pub const BYTES_SENT_TOTAL: &str = "ipc_server_bytes_sent_total";

/// How a call ended, as its metrics and log line name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It returned a value (or opened a stream).
    Ok,
    /// It returned its own error (`Err(E)`).
    AppError,
    /// It failed in the framework (its reply did not encode, ...).
    Error,
    /// It panicked.
    Panic,
    /// Its deadline passed.
    Timeout,
    /// It was dropped: cancelled by the caller, or its connection closed.
    Cancelled,
}

const OUTCOMES: [Outcome; 6] = [
    Outcome::Ok,
    Outcome::AppError,
    Outcome::Error,
    Outcome::Panic,
    Outcome::Timeout,
    Outcome::Cancelled,
];

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::AppError => "app_error",
            Self::Error => "error",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome a reply with `status` reports.
    pub(crate) fn of(status: Status) -> Self {
        match status {
            Status::Ok => Self::Ok,
            Status::AppError => Self::AppError,
            Status::Panic => Self::Panic,
            _ => Self::Error,
        }
    }
}

/// The metric handles of one method.
struct MethodMetrics {
    calls: [Counter; OUTCOMES.len()],
    in_flight: Gauge,
    duration: Histogram,
}

/// The metrics of one exposed object, registered per method at its first
/// call.
pub(crate) struct ObjectMetrics {
    object: Arc<str>,
    methods: Vec<OnceLock<MethodMetrics>>,
}

impl ObjectMetrics {
    pub(crate) fn new(object: Arc<str>, methods: usize) -> Self {
        Self {
            object,
            methods: (0..methods).map(|_| OnceLock::new()).collect(),
        }
    }

    fn method(&self, index: usize, name: &'static str) -> Option<&MethodMetrics> {
        let cell = self.methods.get(index)?;
        Some(cell.get_or_init(|| {
            let object = self.object.to_string();
            let labels = [("object", object.clone()), ("method", name.to_owned())];
            MethodMetrics {
                calls: OUTCOMES.map(|o| {
                    metrics::counter!(
                        CALLS_TOTAL,
                        "object" => object.clone(),
                        "method" => name,
                        "outcome" => o.label(),
                    )
                }),
                in_flight: metrics::gauge!(CALLS_IN_FLIGHT, &labels),
                duration: metrics::histogram!(CALL_DURATION_SECONDS, &labels),
            }
        }))
    }
}

/// One call being served: logged and counted when it finishes, or, if it is
/// dropped first, as cancelled.
pub(crate) struct CallRecord {
    started: Instant,
    object: Arc<str>,
    method: &'static str,
    metrics: Option<Arc<ObjectMetrics>>,
    index: usize,
    done: bool,
}

impl CallRecord {
    /// Starts recording a call of `method` (index `index`) on `object`, if
    /// anyone is interested: `None` when the object has no metrics and
    /// `debug` logging is off.
    pub(crate) fn start(
        object: &Arc<str>,
        index: u16,
        method: &'static str,
        metrics: Option<&Arc<ObjectMetrics>>,
    ) -> Option<Self> {
        if metrics.is_none() && !tracing::enabled!(tracing::Level::DEBUG) {
            return None;
        }
        let index = usize::from(index);
        if let Some(m) = metrics.and_then(|m| m.method(index, method)) {
            m.in_flight.increment(1);
        }
        Some(Self {
            started: Instant::now(),
            object: object.clone(),
            method,
            metrics: metrics.cloned(),
            index,
            done: false,
        })
    }

    /// The call ended this way.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let took = self.started.elapsed();
        if let Some(m) = self
            .metrics
            .as_ref()
            .and_then(|m| m.method(self.index, self.method))
        {
            m.in_flight.decrement(1);
            if let Some(counter) = OUTCOMES
                .iter()
                .position(|o| *o == outcome)
                .and_then(|i| m.calls.get(i))
            {
                counter.increment(1);
            }
            m.duration.record(took.as_secs_f64());
        }
        tracing::debug!(
            object = %self.object,
            method = self.method,
            duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            outcome = outcome.label(),
            "call finished"
        );
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.record(Outcome::Cancelled);
    }
}

/// A server's connection and byte metrics.
#[derive(Clone)]
pub(crate) struct ServerMetrics {
    connections: Gauge,
    accepted: Counter,
    received: Counter,
    sent: Counter,
}

impl ServerMetrics {
    /// Registers the handles with the current recorder.
    pub(crate) fn register() -> Self {
        Self {
            connections: metrics::gauge!(CONNECTIONS),
            accepted: metrics::counter!(CONNECTIONS_TOTAL),
            received: metrics::counter!(BYTES_RECEIVED_TOTAL),
            sent: metrics::counter!(BYTES_SENT_TOTAL),
        }
    }

    /// A connection was accepted; it counts as open until the guard drops.
    pub(crate) fn connection(&self) -> OpenConnection {
        self.accepted.increment(1);
        self.connections.increment(1);
        OpenConnection(self.connections.clone())
    }

    /// Wraps a connection's byte stream to count what crosses it (after TLS
    /// decryption, before it, on the way out).
    pub(crate) fn count(&self, stream: Stream) -> Stream {
        Stream {
            read: Box::new(Counted {
                inner: stream.read,
                bytes: self.received.clone(),
            }),
            write: Box::new(Counted {
                inner: stream.write,
                bytes: self.sent.clone(),
            }),
            ..stream
        }
    }
}

/// An open connection, for the connections gauge.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

/// A byte stream half whose traffic is counted.
pub(crate) struct Counted<T> {
    inner: T,
    bytes: Counter,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.bytes.increment(read as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.bytes.increment(*n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            self.bytes.increment(*n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
