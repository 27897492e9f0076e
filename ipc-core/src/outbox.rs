//! The outbound queue of one connection and the writer task that drains it.
//!
//! Callers (proxy calls, handlers) encode their frame themselves and append it
//! here; the writer takes *everything* queued at once and hands it to the
//! socket in one vectored write, so a burst of small frames costs one syscall
//! rather than one each. Small frames are copied into one contiguous buffer;
//! large ones are queued as their own chunk without a copy.
//!
//! Memory is bounded: [`Outbox::push`] waits while `high_water` bytes are
//! queued, so at most `high_water + one frame` bytes sit in the queue and the
//! same again in the writer's hands. Every byte from append until written is
//! counted in a shared gauge (the server sums its connections in it).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::wire::Frame;

/// Frames shorter than this are copied into the shared coalescing buffer.
const COALESCE_MAX: usize = 16 * 1024;
/// At most this many slices per `writev`.
const MAX_IOV: usize = 64;
/// A coalescing buffer that grew beyond this is released after use, so a burst
/// does not pin memory on an idle connection.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The queue is closed: the connection is shutting down or dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Debug, Default)]
struct State {
    /// Frames in order; `small` logically follows the last chunk.
    chunks: VecDeque<Bytes>,
    small: BytesMut,
    queued: usize,
    /// No more pushes; the writer drains what is queued, then shuts the stream down.
    closed: bool,
}

/// The outbound queue. Shared by everything that sends on the connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer (permit semantics: a wake before it waits is kept).
    wake_writer: Notify,
    /// Wakes pushers waiting for space.
    space: Notify,
    high_water: usize,
    /// Bytes appended and not yet written (queue + writer's batch), shared.
    gauge: Arc<AtomicUsize>,
    /// Set by the writer after each completed write; see [`Outbox::stalled`].
    progress: AtomicBool,
    /// Bytes the writer has taken and not finished writing.
    in_writer: AtomicUsize,
    /// Whether bytes were waiting at the last [`Outbox::stalled`] check.
    was_waiting: AtomicBool,
    /// Mirrors `State::closed`, readable without the lock.
    closed: AtomicBool,
}

impl Outbox {
    pub(crate) fn new(high_water: usize, gauge: Arc<AtomicUsize>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake_writer: Notify::new(),
            space: Notify::new(),
            high_water,
            gauge,
            progress: AtomicBool::new(false),
            in_writer: AtomicUsize::new(0),
            was_waiting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent
        // (every critical section is a few infallible buffer operations).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a complete frame, waiting while the queue is over its high-water mark.
    pub(crate) async fn push(&self, frame: impl Into<Frame>) -> Result<(), Closed> {
        // Fast path: there is room (the usual case), no waiter to set up.
        let mut frame = match self.try_append(frame.into())? {
            None => return Ok(()),
            Some(full) => full,
        };
        loop {
            // Registered before the check, so a wake-up in between is not lost.
            let mut notified = pin!(self.space.notified());
            notified.as_mut().enable();
            frame = match self.try_append(frame)? {
                None => return Ok(()),
                Some(full) => full,
            };
            notified.await;
        }
    }

    /// Appends `frame` if the queue is below its high-water mark; gives it
    /// back if not.
    fn try_append(&self, frame: Frame) -> Result<Option<Frame>, Closed> {
        let mut st = self.lock();
        if st.closed {
            return Err(Closed);
        }
        if st.queued >= self.high_water {
            return Ok(Some(frame));
        }
        self.append(&mut st, frame);
        Ok(None)
    }

    /// Appends a copy of a small frame (as [`Outbox::push`]); the caller
    /// keeps its buffer.
    pub(crate) async fn push_copy(&self, frame: &[u8]) -> Result<(), Closed> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err(Closed);
            }
            if st.queued < self.high_water && frame.len() <= COALESCE_MAX {
                self.count_in(&mut st, frame.len());
                st.small.extend_from_slice(frame);
                return Ok(());
            }
        }
        // Full or closed: the slow path, kept out of line (callers' futures
        // stay small).
        Box::pin(self.push(Bytes::copy_from_slice(frame))).await
    }

    /// Appends a frame without waiting for space. For small control frames
    /// (cancel, go-away) that must go out even from synchronous code.
    pub(crate) fn push_now(&self, frame: impl Into<Frame>) -> Result<(), Closed> {
        let frame = frame.into();
        let mut st = self.lock();
        if st.closed {
            return Err(Closed);
        }
        self.append(&mut st, frame);
        Ok(())
    }

    /// Waits until the queue is below its high-water mark (or closed). Used to
    /// stop reading requests while replies cannot be sent.
    pub(crate) async fn has_space(&self) {
        loop {
            let mut notified = pin!(self.space.notified());
            notified.as_mut().enable();
            {
                let st = self.lock();
                if st.closed || st.queued < self.high_water {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Accounts for `len` more queued bytes, waking the writer if the queue
    /// was empty (if not, it is awake or about to take what is queued).
    fn count_in(&self, st: &mut State, len: usize) {
        if st.queued == 0 {
            self.wake_writer.notify_one();
        }
        st.queued += len;
        self.gauge.fetch_add(len, Ordering::Relaxed);
    }

    fn append(&self, st: &mut State, frame: Frame) {
        self.count_in(st, frame.len());
        match frame {
            Frame::One(frame) => Self::append_part(st, frame),
            Frame::Parts(parts) => {
                for part in parts {
                    Self::append_part(st, part);
                }
            }
        }
    }

    fn append_part(st: &mut State, part: Bytes) {
        if part.len() <= COALESCE_MAX {
            st.small.extend_from_slice(&part);
        } else {
            if !st.small.is_empty() {
                let small = st.small.split().freeze();
                st.chunks.push_back(small);
            }
            st.chunks.push_back(part);
        }
    }

    /// Stops accepting frames; the writer sends what is queued, then shuts down.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.closed.store(true, Ordering::Release);
        self.wake_writer.notify_one();
        self.space.notify_waiters();
    }

    /// Bytes queued and not yet taken by the writer.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.lock().queued
    }

    /// True if bytes were waiting at the last call and still are, and nothing
    /// was written in between: asked once per period, it means the peer has
    /// read nothing for a whole period.
    pub(crate) fn stalled(&self) -> bool {
        let progressed = self.progress.swap(false, Ordering::Relaxed);
        let waiting = self.gauge_local() > 0;
        let was_waiting = self.was_waiting.swap(waiting, Ordering::Relaxed);
        waiting && was_waiting && !progressed
    }

    /// Whether the queue takes no more frames.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn gauge_local(&self) -> usize {
        self.lock().queued + self.in_writer.load(Ordering::Relaxed)
    }

    fn written(&self, bytes: usize) {
        self.progress.store(true, Ordering::Relaxed);
        self.gauge.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Moves everything queued into `batch`. Returns false when closed and empty.
    fn take(&self, batch: &mut VecDeque<Bytes>) -> bool {
        let mut st = self.lock();
        if st.queued == 0 {
            if st.small.capacity() > KEEP_CAPACITY {
                st.small = BytesMut::new();
            }
            return !st.closed;
        }
        batch.append(&mut st.chunks);
        if !st.small.is_empty() {
            let small = st.small.split().freeze();
            batch.push_back(small);
        }
        st.queued = 0;
        drop(st);
        self.space.notify_waiters();
        true
    }
}

/// Drains `outbox` into `io` until the outbox is closed and empty, then shuts
/// the stream down. Returns early on a write error, after closing the outbox.
pub(crate) async fn run_writer<W>(outbox: &Outbox, mut io: W) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut batch = VecDeque::new();
    // However this ends (including the task being aborted), nothing stays
    // counted in the gauge.
    let _release = ReleaseOnDrop(outbox);
    let result = async {
        loop {
            if !outbox.take(&mut batch) {
                break;
            }
            if batch.is_empty() {
                outbox.wake_writer.notified().await;
                // Woken by the first frame of a burst: let the tasks that are
                // ready run first, so this write carries the whole burst
                // rather than one frame per syscall.
                tokio::task::yield_now().await;
                continue;
            }
            let in_hand = batch.iter().map(Bytes::len).sum();
            outbox.in_writer.store(in_hand, Ordering::Relaxed);
            write_batch(&mut io, &mut batch, &outbox.progress).await?;
            io.flush().await?;
            // Both at once (no await between): the bytes leave the gauge
            // exactly once, here or in `release_all`.
            outbox.in_writer.store(0, Ordering::Relaxed);
            outbox.written(in_hand);
        }
        io.shutdown().await
    }
    .await;
    if result.is_err() {
        outbox.close();
    }
    result
}

/// Calls [`Outbox::release_all`] when dropped.
pub(crate) struct ReleaseOnDrop<'a>(pub(crate) &'a Outbox);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release_all();
    }
}

impl Outbox {
    /// Closes the queue, drops what is queued and takes every byte still
    /// counted (queued, or in the writer's hands) out of the gauge. Called
    /// when the writer ends, however it ends; safe to call more than once.
    pub(crate) fn release_all(&self) {
        let queued = {
            let mut st = self.lock();
            st.closed = true;
            self.closed.store(true, Ordering::Release);
            st.chunks.clear();
            st.small = BytesMut::new();
            std::mem::take(&mut st.queued)
        };
        let in_hand = self.in_writer.swap(0, Ordering::Relaxed);
        self.written(in_hand + queued);
        self.space.notify_waiters();
    }
}

async fn write_batch<W>(
    io: &mut W,
    batch: &mut VecDeque<Bytes>,
    progress: &AtomicBool,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while !batch.is_empty() {
        let n = {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, chunk) in iov.iter_mut().zip(batch.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            io.write_vectored(&iov[..count]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // The peer is reading, however slowly.
        progress.store(true, Ordering::Relaxed);
        let mut left = n;
        while left > 0 {
            let Some(front) = batch.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                batch.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn frames_arrive_in_order_small_and_large_mixed() {
        let outbox = Arc::new(Outbox::new(1 << 20, Arc::default()));
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut expected = Vec::new();
        for i in 0..50u8 {
            let len = if i % 7 == 0 { 40_000 } else { 10 };
            let frame = BytesMut::from(&vec![i; len][..]);
            expected.extend_from_slice(&frame);
            outbox.push(frame).await.unwrap();
        }
        outbox.close();
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { run_writer(&outbox, a).await }
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn push_waits_at_high_water_and_fails_after_close() {
        let outbox = Arc::new(Outbox::new(100, Arc::default()));
        outbox.push(BytesMut::from(&[0u8; 150][..])).await.unwrap();
        assert_eq!(outbox.queued_bytes(), 150);
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.push(BytesMut::from(&[1u8; 10][..])).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        outbox.close();
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r, Err(Closed));
    }
}
