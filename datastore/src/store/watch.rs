//! A watch's queue: bounded, filled by writers without waiting, drained by
//! the watch's stream; and the stream itself.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::Stream;

use crate::value::WatchEvent;

/// One open watch: which keys it wants and the events queued for it.
#[derive(Debug)]
pub(crate) struct Subscriber {
    /// The one name watched, or `None` for every key of the author.
    name: Option<String>,
    max_events: usize,
    max_bytes: usize,
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Events with the bytes each was charged.
    events: VecDeque<(WatchEvent, usize)>,
    bytes: usize,
    /// Set when a change did not fit: the version of the first change
    /// dropped. While set, every change is dropped; once the queue is
    /// drained the stream yields `Lagged` and clears it.
    lagged_from: Option<u64>,
    waker: Option<Waker>,
}

impl Subscriber {
    pub(crate) fn new(name: Option<String>, max_events: usize, max_bytes: usize) -> Self {
        Self {
            name,
            max_events: max_events.max(1),
            max_bytes,
            queue: Mutex::default(),
        }
    }

    /// Whether a change of `name` concerns this watch.
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.name.as_deref().is_none_or(|n| n == name)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` (of `version`, charged `cost` bytes), or drops it and
    /// marks the watch lagged if the queue is full. Never waits.
    pub(crate) fn push(&self, event: WatchEvent, version: u64, cost: usize) {
        let mut q = self.lock();
        if q.lagged_from.is_some() {
            return;
        }
        let full = !q.events.is_empty()
            && (q.events.len() >= self.max_events || q.bytes + cost > self.max_bytes);
        if full {
            q.lagged_from = Some(version);
        } else {
            q.events.push_back((event, cost));
            q.bytes += cost;
        }
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<WatchEvent> {
        let mut q = self.lock();
        if let Some((event, cost)) = q.events.pop_front() {
            q.bytes -= cost;
            return Poll::Ready(event);
        }
        if let Some(from_version) = q.lagged_from.take() {
            return Poll::Ready(WatchEvent::Lagged { from_version });
        }
        match &mut q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The stream a `watch` call returns: never ends by itself; dropping it
/// (the client cancelled, the connection closed) runs `on_drop`, which
/// unsubscribes.
pub(crate) struct WatchStream {
    subscriber: Arc<Subscriber>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl WatchStream {
    pub(crate) fn new(subscriber: Arc<Subscriber>, on_drop: Box<dyn FnOnce() + Send>) -> Self {
        Self {
            subscriber,
            on_drop: Some(on_drop),
        }
    }
}

impl Stream for WatchStream {
    type Item = WatchEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.subscriber.poll_next(cx).map(Some)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn deleted(version: u64) -> WatchEvent {
        WatchEvent::Deleted {
            author: "a".into(),
            name: "n".into(),
            version,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_then_reports_lagged_then_resumes() {
        let sub = Arc::new(Subscriber::new(None, 3, usize::MAX));
        let mut stream = WatchStream::new(sub.clone(), Box::new(|| {}));
        for v in 1..=10 {
            sub.push(deleted(v), v, 1);
        }
        for v in 1..=3 {
            assert_eq!(stream.next().await, Some(deleted(v)));
        }
        assert_eq!(
            stream.next().await,
            Some(WatchEvent::Lagged { from_version: 4 })
        );
        sub.push(deleted(11), 11, 1);
        assert_eq!(stream.next().await, Some(deleted(11)));
    }

    #[tokio::test]
    async fn the_byte_bound_counts_but_an_empty_queue_takes_one_event() {
        let sub = Arc::new(Subscriber::new(None, 100, 10));
        let mut stream = WatchStream::new(sub.clone(), Box::new(|| {}));
        sub.push(deleted(1), 1, 50); // larger than the bound, queue empty: taken
        sub.push(deleted(2), 2, 1); // now full
        assert_eq!(stream.next().await, Some(deleted(1)));
        assert_eq!(
            stream.next().await,
            Some(WatchEvent::Lagged { from_version: 2 })
        );
    }

    #[test]
    fn dropping_the_stream_runs_its_unsubscribe() {
        let (tx, rx) = std::sync::mpsc::channel();
        let stream = WatchStream::new(
            Arc::new(Subscriber::new(Some("x".into()), 1, 1)),
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
        assert!(stream.subscriber.wants("x") && !stream.subscriber.wants("y"));
        drop(stream);
        assert!(rx.try_recv().is_ok());
    }
}
