//! [`FrameBuf`]: a frame being built, and [`Frame`]: one ready for the socket.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::codec::{self, EncodeError};
use super::{
    HEADER_LEN, HELLO_LEN, Kind, LENGTH_PREFIX, MAGIC, PROTOCOL_VERSION, REQUEST_FIXED, Status,
};

/// A frame being built, length prefix included, so it is written to the
/// socket without another copy. Large [`crate::Bytes`] values inside it are
/// not copied in: they stay separate chunks, spliced in at their offset and
/// handed to the socket as they are (vectored write).
#[derive(Debug, Clone)]
pub struct FrameBuf {
    buf: BytesMut,
    /// `(offset in buf, chunk)`: the chunk's bytes follow `buf[..offset]`.
    chunks: Vec<(usize, Bytes)>,
}

thread_local! {
    /// Buffers of frames already sent, kept to build the next ones without
    /// an allocation.
    static SPARE: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many spare buffers per thread...
const SPARE_MAX: usize = 16;
/// ...of at most this capacity each (so at most 256 KiB per thread).
const SPARE_MAX_CAPACITY: usize = 16 * 1024;

/// A finished frame, ready for the socket: one buffer, or (when it carries
/// large byte payloads by reference) several, to be written in order.
#[derive(Debug, Clone)]
pub enum Frame {
    /// The whole frame.
    One(Bytes),
    /// The frame in pieces.
    Parts(Vec<Bytes>),
}

impl Frame {
    /// Total length in bytes, length prefix included.
    pub fn len(&self) -> usize {
        match self {
            Self::One(b) => b.len(),
            Self::Parts(p) => p.iter().map(Bytes::len).sum(),
        }
    }

    /// Whether the frame has no bytes (never true for a real frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one contiguous buffer (copies if it is in parts).
    pub fn to_contiguous(&self) -> Bytes {
        match self {
            Self::One(b) => b.clone(),
            Self::Parts(p) => p.concat().into(),
        }
    }
}

impl From<BytesMut> for Frame {
    fn from(b: BytesMut) -> Self {
        Self::One(b.freeze())
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Self {
        Self::One(b)
    }
}

impl FrameBuf {
    fn start(kind: Kind, id: u64, capacity: usize) -> Self {
        let want = LENGTH_PREFIX + HEADER_LEN + capacity;
        let mut buf = SPARE
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| BytesMut::with_capacity(want.max(256)));
        buf.reserve(want);
        buf.put_u32_le(0);
        buf.put_u8(kind as u8);
        buf.put_u64_le(id);
        Self {
            buf,
            chunks: Vec::new(),
        }
    }

    /// A hello frame: magic, version, our frame limit, then `rest`
    /// (authentication fields, if any).
    pub fn hello(max_frame_size: usize, rest: &[u8]) -> Self {
        let mut f = Self::start(Kind::Hello, 0, HELLO_LEN + rest.len());
        f.buf.put_slice(&MAGIC);
        f.buf.put_u16_le(PROTOCOL_VERSION);
        f.buf
            .put_u32_le(u32::try_from(max_frame_size).unwrap_or(u32::MAX));
        f.buf.put_slice(rest);
        f
    }

    /// A request frame (kind 1, or 5 when `oneway`) with its arguments
    /// encoded in place; its id is set when it is queued
    /// ([`FrameBuf::set_id`]). Encoding stops with
    /// [`EncodeError::TooLarge`] as soon as the body would exceed `limit`.
    pub fn request<A: Serialize + ?Sized>(
        oneway: bool,
        object: u32,
        method: u16,
        deadline_ms: u32,
        args: &A,
        limit: usize,
    ) -> Result<Self, EncodeError> {
        let kind = if oneway { Kind::Oneway } else { Kind::Request };
        let mut f = Self::start(kind, 0, REQUEST_FIXED + 32);
        f.buf.put_u32_le(object);
        f.buf.put_u16_le(method);
        f.buf.put_u32_le(deadline_ms);
        f.encode(args, limit)?;
        Ok(f)
    }

    /// A response frame whose request id is filled in later by
    /// [`FrameBuf::set_id`]. Encoding stops at `limit`, as for requests.
    pub fn response<T: Serialize + ?Sized>(
        status: Status,
        body: &T,
        limit: usize,
    ) -> Result<Self, EncodeError> {
        let mut f = Self::start(Kind::Response, 0, 1 + 16);
        f.buf.put_u8(status as u8);
        f.encode(body, limit)?;
        Ok(f)
    }

    /// A response frame with an empty body.
    pub fn response_empty(status: Status) -> Self {
        let mut f = Self::start(Kind::Response, 0, 1);
        f.buf.put_u8(status as u8);
        f
    }

    /// One item of the stream opened by request `id`. Encoding stops at `limit`.
    pub fn stream_item<T: Serialize + ?Sized>(
        id: u64,
        item: &T,
        limit: usize,
    ) -> Result<Self, EncodeError> {
        let mut f = Self::start(Kind::StreamItem, id, 16);
        f.encode(item, limit)?;
        Ok(f)
    }

    /// The end of the stream opened by request `id`: a status and a body laid
    /// out as a response's with that status (empty for `Ok`, `ShuttingDown`
    /// and `Cancelled`).
    pub fn stream_end<T: Serialize + ?Sized>(id: u64, status: Status, body: &T) -> Self {
        let mut f = Self::start(Kind::StreamEnd, id, 1 + 16);
        f.buf.put_u8(status as u8);
        if f.encode(body, super::MAX_FRAME_SIZE_CAP).is_err() {
            // Bodies here are strings and integer pairs; should one fail,
            // the end still goes out, without its detail.
            f.buf.truncate(LENGTH_PREFIX + HEADER_LEN + 1);
            f.chunks.clear();
        }
        f
    }

    /// Grants the producer of the stream opened by request `id` `bytes` more.
    pub fn credit(id: u64, bytes: u32) -> Self {
        let mut f = Self::start(Kind::Credit, id, 4);
        f.buf.put_u32_le(bytes);
        f
    }

    /// Tells the owner of exported object `handle` that its last proxy is gone.
    pub fn release(handle: u32) -> Self {
        Self::start(Kind::Release, u64::from(handle), 0)
    }

    /// The client's proof of the shared key.
    pub fn auth_proof(proof: &[u8; super::AUTH_LEN]) -> Self {
        let mut f = Self::start(Kind::AuthProof, 0, super::AUTH_LEN);
        f.buf.put_slice(proof);
        f
    }

    /// The server's acceptance of the client's proof.
    pub fn auth_ok() -> Self {
        Self::start(Kind::AuthOk, 0, 0)
    }

    /// A cancel frame.
    pub fn cancel(id: u64) -> Self {
        Self::start(Kind::Cancel, id, 0)
    }

    /// A go-away frame with a reason code.
    pub fn go_away(reason: u64) -> Self {
        Self::start(Kind::GoAway, reason, 0)
    }

    /// The last go-away before closing: names the highest request id read,
    /// so the peer knows which of its unanswered requests never ran.
    pub fn go_away_after(reason: u64, last_request: u64) -> Self {
        let mut f = Self::start(Kind::GoAway, reason, 8);
        f.buf.put_u64_le(last_request);
        f
    }

    /// Overwrites the request id (used for responses, which are built before
    /// they know where they go).
    pub fn set_id(&mut self, id: u64) {
        self.buf[LENGTH_PREFIX + 1..LENGTH_PREFIX + HEADER_LEN].copy_from_slice(&id.to_le_bytes());
    }

    /// Overwrites a request's object handle (known only once looked up on
    /// the connection the request goes out on).
    pub fn set_object(&mut self, object: u32) {
        let at = LENGTH_PREFIX + HEADER_LEN;
        self.buf[at..at + 4].copy_from_slice(&object.to_le_bytes());
    }

    /// The status of a response frame.
    pub fn status(&self) -> Status {
        self.buf
            .get(LENGTH_PREFIX + HEADER_LEN)
            .and_then(|&b| Status::from_u8(b))
            .unwrap_or(Status::Ok)
    }

    /// Length of the frame body (what the length prefix will say).
    pub fn body_len(&self) -> usize {
        self.buf.len() - LENGTH_PREFIX + self.chunks.iter().map(|(_, c)| c.len()).sum::<usize>()
    }

    /// Checks the body against the receiver's limit, writes the length prefix
    /// and returns the bytes to put on the wire.
    pub fn finish(self, limit: usize) -> Result<Frame, FrameTooLarge> {
        let size = self.body_len();
        if size > limit {
            return Err(FrameTooLarge { size, limit });
        }
        Ok(self.into_frame())
    }

    /// Gives the frame's buffer back for reuse by the next frame built on this
    /// thread (after its bytes were copied out, e.g. by
    /// [`FrameBuf::contiguous`]). Large or shared buffers are just dropped.
    pub fn recycle(self) {
        let mut buf = self.buf;
        if !self.chunks.is_empty() || buf.capacity() > SPARE_MAX_CAPACITY {
            return;
        }
        buf.clear();
        SPARE.with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARE_MAX {
                spare.push(buf);
            }
        });
    }

    /// Writes the length prefix in place, so the frame can be sent by
    /// reference ([`FrameBuf::contiguous`]) and kept for a second attempt.
    pub fn seal(&mut self) {
        let len = u32::try_from(self.body_len()).unwrap_or(u32::MAX);
        self.buf[..LENGTH_PREFIX].copy_from_slice(&len.to_le_bytes());
    }

    /// The sealed frame's bytes, if it is one contiguous buffer (no large
    /// payload chunks).
    pub fn contiguous(&self) -> Option<&[u8]> {
        self.chunks.is_empty().then_some(&self.buf[..])
    }

    /// Writes the length prefix without a limit check (the caller checked
    /// [`FrameBuf::body_len`], or the frame is a small control frame).
    pub fn into_frame(mut self) -> Frame {
        let len = u32::try_from(self.body_len()).unwrap_or(u32::MAX);
        self.buf[..LENGTH_PREFIX].copy_from_slice(&len.to_le_bytes());
        if self.chunks.is_empty() {
            return Frame::One(self.buf.freeze());
        }
        let mut head = self.buf;
        let mut parts = Vec::with_capacity(2 * self.chunks.len() + 1);
        let mut taken = 0;
        for (offset, chunk) in self.chunks {
            parts.push(head.split_to(offset - taken).freeze());
            taken = offset;
            parts.push(chunk);
        }
        if !head.is_empty() {
            parts.push(head.freeze());
        }
        Frame::Parts(parts)
    }

    /// The frame as one contiguous buffer (for the handshake and control
    /// frames, which never carry chunks; copies if the frame has any).
    pub fn into_unchecked(self) -> BytesMut {
        match self.into_frame() {
            Frame::One(b) => BytesMut::from(&b[..]),
            parts @ Frame::Parts(_) => BytesMut::from(&parts.to_contiguous()[..]),
        }
    }

    /// Encodes `value` at the end of the frame, failing as soon as the body
    /// would exceed `limit` bytes (nothing past the limit is copied).
    fn encode<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        limit: usize,
    ) -> Result<(), EncodeError> {
        let before = self.body_len();
        let mut over = None;
        let writer = BufWriter {
            buf: &mut self.buf,
            chunks: &mut self.chunks,
            room: limit.saturating_sub(before),
            used: 0,
            over: &mut over,
        };
        match codec::encode_into(value, writer) {
            Ok(()) => Ok(()),
            Err(e) => Err(match over {
                Some(size) => EncodeError::TooLarge {
                    size: before + size,
                    limit,
                },
                None => e,
            }),
        }
    }
}

/// A frame body exceeded the receiver's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The body's size in bytes.
    pub size: usize,
    /// The receiver's limit in bytes.
    pub limit: usize,
}

/// Appends encoded bytes to a frame, up to `room` bytes.
pub(super) struct BufWriter<'a> {
    buf: &'a mut BytesMut,
    chunks: &'a mut Vec<(usize, Bytes)>,
    /// Bytes that may still be added.
    room: usize,
    /// Bytes added so far.
    used: usize,
    /// Set when a write would go past `room`: how many bytes the value had
    /// reached by then.
    over: &'a mut Option<usize>,
}

impl bincode::enc::write::Writer for BufWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if bytes.len() > self.room {
            // The value does not fit: stop now rather than encode it whole.
            *self.over = Some(self.used + bytes.len());
            return Err(bincode::error::EncodeError::UnexpectedEnd);
        }
        self.room -= bytes.len();
        self.used += bytes.len();
        if bytes.len() >= crate::payload::OUT_OF_LINE_MIN {
            // The payload of a large `ipc_core::Bytes`: keep a reference to
            // it instead of copying it into the frame.
            if let Some(chunk) = crate::payload::take_out_of_line(bytes) {
                self.chunks.push((self.buf.len(), chunk));
                return Ok(());
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}
