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

use crate::wire::{Frame, FrameBuf};

/// Frames shorter than this are copied into the shared coalescing buffer.
const COALESCE_MAX: usize = 16 * 1024;
/// At most this many slices per `writev`.
const MAX_IOV: usize = 64;
/// A batch of this many chunks or fewer is written from a small array.
const FEW_IOV: usize = 8;
/// A coalescing buffer that grew beyond this is released after use, so a burst
/// does not pin memory on an idle connection.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The queue is closed: the connection is shutting down or dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Debug)]
struct State {
    /// Frames in order; `small` logically follows the last chunk.
    chunks: VecDeque<Bytes>,
    small: BytesMut,
    queued: usize,
    /// No more pushes; the writer drains what is queued, then shuts the stream down.
    closed: bool,
    /// The id the next request frame gets ([`Outbox::push_numbered`]).
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
            small: BytesMut::new(),
            queued: 0,
            closed: false,
            next_id: 1,
        }
    }
}

/// The outcome of one try to append.
enum Attempt<R> {
    Done(Result<Option<R>, Closed>),
    /// No room: the frame is given back.
    Full(FrameBuf),
}

/// Admits a frame unless `stop` is set (read under the queue's lock).
fn unless(stop: &AtomicBool) -> impl FnMut(&mut State, &mut FrameBuf) -> Option<()> + '_ {
    move |_, _| (!stop.load(Ordering::Acquire)).then_some(())
}

/// The outbound queue. Shared by everything that sends on the connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer (a wake before it waits is kept).
    wake_writer: WriterSignal,
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
            wake_writer: WriterSignal::default(),
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

    /// Appends a frame, waiting while the queue is over its high-water mark.
    pub(crate) async fn push(&self, frame: FrameBuf) -> Result<(), Closed> {
        self.push_with(frame, |_, _| Some(())).await.map(|_| ())
    }

    /// Appends a request frame, giving it the next request id of this
    /// connection (so ids on the wire strictly increase, whichever task
    /// queues first) and calling `on_id` with it before the frame can be
    /// written. Waits while the queue is over its high-water mark.
    pub(crate) async fn push_numbered(
        &self,
        frame: FrameBuf,
        on_id: impl FnOnce(u64),
    ) -> Result<u64, Closed> {
        let mut on_id = Some(on_id);
        let numbered = self
            .push_with(frame, |st, frame| {
                let id = st.next_id;
                st.next_id += 1;
                frame.set_id(id);
                if let Some(on_id) = on_id.take() {
                    on_id(id);
                }
                Some(id)
            })
            .await?;
        numbered.ok_or(Closed)
    }

    /// Appends a frame unless `stop` is set, checked under the queue's lock:
    /// once `stop` is set, no frame pushed this way can land after anything
    /// queued since. Says whether it was appended.
    pub(crate) async fn push_unless(
        &self,
        frame: FrameBuf,
        stop: &AtomicBool,
    ) -> Result<bool, Closed> {
        let appended = self.push_with(frame, unless(stop)).await?;
        Ok(appended.is_some())
    }

    /// As [`Outbox::push_unless`], without waiting: the frame comes back
    /// (`Err`) when the queue is full.
    pub(crate) fn try_push_unless(
        &self,
        frame: FrameBuf,
        stop: &AtomicBool,
    ) -> Result<Result<bool, Closed>, FrameBuf> {
        match self.try_append(frame, &mut unless(stop)) {
            Attempt::Done(r) => Ok(r.map(|appended| appended.is_some())),
            Attempt::Full(frame) => Err(frame),
        }
    }

    /// Appends a frame without waiting for space. For small control frames
    /// (cancel, go-away, credit, release, stream ends) that must go out even
    /// from synchronous code.
    pub(crate) fn push_now(&self, frame: FrameBuf) -> Result<(), Closed> {
        let mut st = self.lock();
        if st.closed {
            return Err(Closed);
        }
        self.append(&mut st, frame);
        Ok(())
    }

    /// The one way frames get in: under the lock, once there is room,
    /// `admit` may number the frame (and say so) or decline it (`None`);
    /// then it is appended.
    async fn push_with<R>(
        &self,
        frame: FrameBuf,
        mut admit: impl FnMut(&mut State, &mut FrameBuf) -> Option<R>,
    ) -> Result<Option<R>, Closed> {
        // Fast path: there is room (the usual case), no waiter to set up.
        let mut frame = match self.try_append(frame, &mut admit) {
            Attempt::Done(r) => return r,
            Attempt::Full(frame) => frame,
        };
        loop {
            // Registered before the check, so a wake-up in between is not lost.
            let mut notified = pin!(self.space.notified());
            notified.as_mut().enable();
            frame = match self.try_append(frame, &mut admit) {
                Attempt::Done(r) => return r,
                Attempt::Full(frame) => frame,
            };
            notified.await;
        }
    }

    fn try_append<R>(
        &self,
        mut frame: FrameBuf,
        admit: &mut impl FnMut(&mut State, &mut FrameBuf) -> Option<R>,
    ) -> Attempt<R> {
        let mut st = self.lock();
        if st.closed {
            return Attempt::Done(Err(Closed));
        }
        if st.queued >= self.high_water {
            return Attempt::Full(frame);
        }
        match admit(&mut st, &mut frame) {
            Some(r) => {
                self.append(&mut st, frame);
                Attempt::Done(Ok(Some(r)))
            }
            None => Attempt::Done(Ok(None)),
        }
    }

    /// Waits until the queue is below its high-water mark (or closed). Used to
    /// stop reading requests while replies cannot be sent.
    pub(crate) async fn has_space(&self) {
        // Fast path: there is room (the usual case), no waiter to set up.
        if self.has_room_now() {
            return;
        }
        loop {
            let mut notified = pin!(self.space.notified());
            notified.as_mut().enable();
            if self.has_room_now() {
                return;
            }
            notified.await;
        }
    }

    /// Whether a frame may be appended now (or the queue is closed, when
    /// nothing is worth waiting for).
    pub(crate) fn has_room_now(&self) -> bool {
        let st = self.lock();
        st.closed || st.queued < self.high_water
    }

    /// Accounts for `len` more queued bytes, waking the writer if the queue
    /// was empty (if not, it is awake or about to take what is queued).
    fn count_in(&self, st: &mut State, len: usize) {
        if st.queued == 0 {
            self.wake_writer.raise();
        }
        st.queued += len;
        self.gauge.fetch_add(len, Ordering::Relaxed);
    }

    /// Small frames are copied into the coalescing buffer (and their buffer
    /// reused); frames carrying large payloads go in by reference.
    fn append(&self, st: &mut State, mut frame: FrameBuf) {
        frame.seal();
        if let Some(bytes) = frame.contiguous().filter(|b| b.len() <= COALESCE_MAX) {
            self.count_in(st, bytes.len());
            st.small.extend_from_slice(bytes);
            frame.recycle();
            return;
        }
        let frame = frame.into_frame();
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
        self.wake_writer.raise();
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

    /// The id the next request frame will get: every id below it was issued.
    pub(crate) fn next_id(&self) -> u64 {
        self.lock().next_id
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
        // Only a full queue has pushers waiting (they wait, and check again,
        // only after seeing it full under this lock).
        let was_full = st.queued >= self.high_water;
        st.queued = 0;
        drop(st);
        if was_full {
            self.space.notify_waiters();
        }
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
                outbox.wake_writer.wait().await;
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
        let n = match batch.len() {
            // The usual batch: the coalesced small frames alone.
            1 => io.write(&batch[0]).await?,
            2..=FEW_IOV => write_slices::<_, FEW_IOV>(io, batch).await?,
            _ => write_slices::<_, MAX_IOV>(io, batch).await?,
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

/// Writes the first (at most `N`) chunks of `batch` in one vectored write.
async fn write_slices<W, const N: usize>(io: &mut W, batch: &VecDeque<Bytes>) -> io::Result<usize>
where
    W: AsyncWrite + Unpin,
{
    let mut iov = [IoSlice::new(&[]); N];
    let mut count = 0;
    for (slot, chunk) in iov.iter_mut().zip(batch.iter()) {
        *slot = IoSlice::new(chunk);
        count += 1;
    }
    io.write_vectored(&iov[..count]).await
}

/// Wakes the writer: a flag and the writer's waker. A wake while the writer
/// is busy is kept and seen at its next wait. (Cheaper than a `Notify`,
/// whose waiters sit behind a lock: the writer waits once per batch.)
#[derive(Debug, Default)]
struct WriterSignal {
    raised: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl WriterSignal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until raised (at once if it was since the last wait), and
    /// lowers it.
    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.raised.swap(false, Ordering::AcqRel) {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: seen here.
            if self.raised.swap(false, Ordering::AcqRel) {
                return std::task::Poll::Ready(());
            }
            std::task::Poll::Pending
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{LENGTH_PREFIX, MAX_FRAME_SIZE_CAP};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    /// A response frame whose body is `len` bytes of `byte`.
    fn frame(byte: u8, len: usize) -> FrameBuf {
        let body = vec![byte; len];
        FrameBuf::response(
            crate::wire::Status::Ok,
            &crate::Bytes::from(body),
            MAX_FRAME_SIZE_CAP,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn frames_arrive_in_order_small_and_large_mixed() {
        let outbox = Arc::new(Outbox::new(1 << 20, Arc::default()));
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut expected = Vec::new();
        for i in 0..50u8 {
            let len = if i % 7 == 0 { 40_000 } else { 10 };
            let f = frame(i, len);
            expected.extend_from_slice(&f.clone().into_frame().to_contiguous());
            outbox.push(f).await.unwrap();
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
        outbox.push(frame(0, 150)).await.unwrap();
        assert!(outbox.queued_bytes() >= 150);
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.push(frame(1, 10)).await }
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

    #[tokio::test]
    async fn numbered_frames_get_strictly_increasing_ids_in_queue_order() {
        let outbox = Arc::new(Outbox::new(1 << 20, Arc::default()));
        let mut seen = Vec::new();
        for _ in 0..5 {
            let f = FrameBuf::request(false, 1, 0, 0, &(), MAX_FRAME_SIZE_CAP).unwrap();
            let id = outbox.push_numbered(f, |id| seen.push(id)).await.unwrap();
            assert_eq!(Some(&id), seen.last());
        }
        assert_eq!(seen, [1, 2, 3, 4, 5]);
        outbox.close();
        let (a, mut b) = tokio::io::duplex(1 << 16);
        run_writer(&outbox, a).await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        let ids: Vec<u64> = got
            .chunks(LENGTH_PREFIX + 19)
            .map(|f| u64::from_le_bytes(f[5..13].try_into().unwrap()))
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
    }
}
