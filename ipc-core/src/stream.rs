//! [`Streaming<T>`]: a server-push stream of typed items.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::{Connection, Inbox, Received, Receiver};
use crate::error::Error;
use crate::scope;
use crate::service::{BoxedSource, ItemSource, Reply};
use crate::wire::{self, EncodeError, FrameBuf, Status};

/// A stream of `T` items that a method returns, pushed by the server as it
/// produces them.
///
/// In the trait, a method returns `Streaming<T>` (or `Result<Streaming<T>, E>`
/// to refuse with a typed error before any item). The server's
/// implementation builds one from any [`futures::Stream`] with
/// [`Streaming::new`]; the caller gets one back from the proxy and reads it
/// as a [`Stream`] of `Result<T, Error>`:
///
/// - `Some(Ok(item))`: the next item, in order. An item may itself be a
///   `Result<_, E>`, so a producer can report an error for one item and go on;
/// - `None`: the producer's stream ended cleanly;
/// - `Some(Err(e))`, then `None`: it ended otherwise — the server shut down
///   (`Error::ShuttingDown`), the connection was lost
///   (`Error::ConnectionLost`), the producer panicked (`Error::RemotePanic`).
///
/// Flow control: the server polls its stream only while the caller has room
/// for more (a window of 256 KiB of encoded items by default, see
/// `stream_window` on the builders), so a caller that stops reading holds
/// the producer at one window, and the connection's other calls and
/// streams go on. Dropping the caller's `Streaming` cancels the stream: the
/// server drops the producer.
///
/// ```
/// use futures::StreamExt;
/// use ipc_core::{expose, Streaming};
///
/// #[expose]
/// pub trait Ticker {
///     /// Counts from 0 to `n - 1`.
///     async fn count(&self, n: u64) -> Streaming<u64>;
/// }
///
/// struct Counter;
/// impl Ticker for Counter {
///     async fn count(&self, n: u64) -> Streaming<u64> {
///         Streaming::new(futures::stream::iter(0..n))
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ipc_core::Error> {
/// # let server = ipc_core::Server::builder().addr("127.0.0.1:0")
/// #     .expose(TickerServer::new(Counter)).start().await?;
/// # let client = ipc_core::Client::connect(server.local_addr()).await?;
/// let ticker: TickerProxy = client.get_exposed_object().await?;
/// let mut numbers = ticker.count(3).await?;
/// while let Some(n) = numbers.next().await {
///     println!("{}", n?);
/// }
/// # server.stop().await;
/// # Ok(()) }
/// ```
pub struct Streaming<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    /// Built by this process, not sent anywhere.
    Local(Pin<Box<dyn Stream<Item = T> + Send>>),
    /// Arriving over a connection.
    Received {
        receiver: Receiver,
        /// The connection's scope, lent to each item's decode.
        scope: Option<scope::Scope>,
        items: PhantomData<fn() -> T>,
    },
    /// Returned by a local call: items encoded as for the wire.
    Source(BoxedSource),
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Local(_) => "local",
            Inner::Received { .. } => "received",
            Inner::Source(_) => "local call",
        };
        f.debug_struct("Streaming").field("kind", &kind).finish()
    }
}

impl<T: Send + 'static> Streaming<T> {
    /// A stream of the items `stream` yields, for a handler to return.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Self {
            inner: Inner::Local(Box::pin(stream)),
        }
    }

    /// A stream of the items of `items`, lazily.
    pub fn iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::new(futures::stream::iter(items))
    }

    /// A stream that ends at once.
    pub fn empty() -> Self {
        Self::new(futures::stream::empty())
    }
}

impl<T: Send + 'static> FromIterator<T> for Streaming<T> {
    /// A stream of the collected items.
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        Self::iter(items.into_iter().collect::<Vec<_>>())
    }
}

impl<T: DeserializeOwned + Send + 'static> Streaming<T> {
    /// The stream opened by request `id` on `conn`, arriving in `inbox`.
    pub(crate) fn received(conn: &Arc<Connection>, id: u64, inbox: Arc<Inbox>) -> Self {
        Self {
            inner: Inner::Received {
                receiver: conn.receiver(id, inbox, discard_item::<T>),
                scope: Some(conn.scope()),
                items: PhantomData,
            },
        }
    }

    /// The stream a local call returned.
    pub(crate) fn from_source(source: BoxedSource) -> Self {
        Self {
            inner: Inner::Source(source),
        }
    }
}

/// Decodes and drops an item nobody will read.
fn discard_item<T: DeserializeOwned>(conn: &Arc<Connection>, item: &Bytes) {
    let _ = scope::with(conn.scope(), || wire::decode_shared::<T>(item));
}

fn decode_item<T: DeserializeOwned>(item: &Bytes) -> Result<T, Error> {
    wire::decode_shared(item).map_err(|e| Error::Decode {
        detail: e.to_string(),
    })
}

impl<T: DeserializeOwned> Stream for Streaming<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Local(stream) => stream.as_mut().poll_next(cx).map(|item| item.map(Ok)),
            Inner::Received {
                receiver,
                scope: lent,
                ..
            } => match receiver.poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Received::Item(item)) => {
                    Poll::Ready(Some(scope::lend(lent, || decode_item(&item))))
                }
                Poll::Ready(Received::End) => Poll::Ready(None),
                Poll::Ready(Received::Failed(status, body)) => {
                    Poll::Ready(Some(Err(Error::from_status(status, &body, "stream"))))
                }
                Poll::Ready(Received::Lost(e)) => Poll::Ready(Some(Err(e))),
            },
            Inner::Source(source) => {
                match source.as_mut().poll_item(cx, 0, wire::MAX_FRAME_SIZE_CAP) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Ready(Some(Ok(frame))) => {
                        let bytes = frame.into_frame().to_contiguous();
                        Poll::Ready(Some(
                            match wire::parse(bytes.slice(wire::LENGTH_PREFIX..)) {
                                Ok(wire::Message::StreamItem { item, .. }) => decode_item(&item),
                                _ => Err(Error::Protocol {
                                    detail: "a local stream produced something other than an item"
                                        .into(),
                                }),
                            },
                        ))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Encode {
                        detail: e.to_string(),
                    }))),
                }
            }
        }
    }
}

/// Feeds a stream's items to the connection, encoded.
struct Source<T>(Streaming<T>);

impl<T> ItemSource for Source<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn poll_item(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        id: u64,
        limit: usize,
    ) -> Poll<Option<Result<FrameBuf, EncodeError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.0).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(item))) => {
                Poll::Ready(Some(FrameBuf::stream_item(id, &item, limit)))
            }
            // A stream received from elsewhere and passed on, which failed.
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(EncodeError::Serde(format!(
                "the stream being passed on failed: {e}"
            ))))),
        }
    }
}

/// The reply of a method returning `Streaming<T>` (used by generated code).
pub fn stream_reply<T>(stream: Streaming<T>) -> Reply
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    Reply::stream(Box::pin(Source(stream)))
}

/// The reply of a method returning `Result<Streaming<T>, E>` (used by
/// generated code).
pub fn stream_result_reply<T, E>(result: Result<Streaming<T>, E>) -> Reply
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Serialize,
{
    match result {
        Ok(stream) => stream_reply(stream),
        Err(e) => Reply::encoded(Status::AppError, &e),
    }
}
