//! The wire format: frames, message kinds and the bincode body encoding.
//!
//! This is the only module that knows how bytes on the connection look. Everything
//! here is pure (no I/O), so it can be property-tested and fuzzed directly.
//!
//! # Frame layout
//!
//! Every message is one frame:
//!
//! ```text
//! +----------------+--------+----------------+-------------------+
//! | length: u32 LE | kind:u8| id: u64 LE     | payload ...       |
//! +----------------+--------+----------------+-------------------+
//!   not counted      `length` counts everything after itself
//! ```
//!
//! `length` is checked against the receiver's frame limit before any buffer is
//! allocated for the frame. All integers are little-endian. Payloads per kind:
//!
//! | kind | name     | id            | payload |
//! |------|----------|---------------|---------|
//! | 0    | Hello    | 0             | magic `b"IPCR"`, version `u16`, max frame size `u32` |
//! | 1    | Request  | request id    | object handle `u32`, method index `u16`, deadline ms `u32` (0 = none), args (bincode) |
//! | 2    | Response | request id    | status `u8`, body (bincode) |
//! | 3    | Cancel   | request id    | empty |
//! | 5    | Oneway   | request id    | as Request; no response is sent |
//! | 4    | GoAway   | reason        | optional last request id `u64` (reason 0: shutting down, 1: connection limit) |
//!
//! Kinds 6..=255 are reserved; a peer that receives one closes the connection.
//! Bodies are bincode 2 through serde with little-endian *fixed-width* integers:
//! a `String`/`Vec<T>` is a `u64` length then the elements, an enum is a `u32`
//! variant index then its fields, `Option` is a `u8` tag. Method arguments are
//! encoded as a tuple, i.e. simply one after another.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::LengthDelimitedCodec;

/// The four bytes every handshake starts with.
pub const MAGIC: [u8; 4] = *b"IPCR";
/// The protocol version this build speaks. Peers must agree exactly.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Bytes of the header every frame body starts with (kind + id).
pub const HEADER_LEN: usize = 1 + 8;
/// Bytes of a request's fixed fields after the header.
const REQUEST_FIXED: usize = 4 + 2 + 4;
/// Bytes of a hello's payload.
const HELLO_LEN: usize = 4 + 2 + 4;
/// The largest frame size a peer may be configured to accept (1 GiB).
pub const MAX_FRAME_SIZE_CAP: usize = 1 << 30;
/// The largest frame accepted before the handshake completes: a hello, or a
/// go-away sent in its place, with room to spare.
pub const HANDSHAKE_FRAME_MAX: usize = 64;
/// The smallest frame size a peer may be configured to accept (1 KiB).
pub const MIN_FRAME_SIZE: usize = 1 << 10;
/// The object handle of the built-in system object (object lookup).
pub(crate) const SYSTEM_OBJECT: u32 = 0;
/// Method index of the system object's `resolve`.
pub(crate) const SYSTEM_RESOLVE: u16 = 0;
/// Method index of the system object's `list` (the object directory).
pub(crate) const SYSTEM_LIST: u16 = 1;
/// GoAway reason: the sender is shutting down.
pub const GOAWAY_SHUTDOWN: u64 = 0;
/// GoAway reason (sent instead of a Hello): the server is at its connection limit.
pub const GOAWAY_CONNECTION_LIMIT: u64 = 1;

/// The message kinds (first byte of every frame body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Connection handshake, the first frame in each direction.
    Hello = 0,
    /// A method call.
    Request = 1,
    /// The answer to a request.
    Response = 2,
    /// The caller no longer wants the answer to a request.
    Cancel = 3,
    /// The sender is shutting down and accepts no new requests.
    GoAway = 4,
    /// A method call that gets no response (`#[oneway]`).
    Oneway = 5,
}

/// Status byte of a response: the outcome, and how to read the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The method returned; body is its return value (for `Result<T, E>`: the `T`).
    Ok = 0,
    /// The method returned `Err(e)`; body is the `E`.
    AppError = 1,
    /// No object with that handle or name; body is a `String` detail.
    UnknownObject = 16,
    /// The object has no such method; body is a `String` detail.
    UnknownMethod = 17,
    /// The caller's trait differs from the exposed one; body is a `String` detail.
    TraitMismatch = 18,
    /// The arguments could not be decoded; body is a `String` detail.
    BadRequest = 19,
    /// The handler panicked; body is the panic message as a `String`.
    Panic = 20,
    /// The peer is shutting down and did not run the call; body is empty.
    ShuttingDown = 21,
    /// The answer did not fit the caller's frame limit; body is `(u64 size, u64 limit)`.
    FrameTooLarge = 22,
    /// The return value could not be encoded; body is a `String` detail.
    EncodeFailed = 23,
    /// Too many calls in flight on this connection; the call did not run.
    /// Body is a `String` detail.
    Overloaded = 24,
}

impl Status {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Ok,
            1 => Self::AppError,
            16 => Self::UnknownObject,
            17 => Self::UnknownMethod,
            18 => Self::TraitMismatch,
            19 => Self::BadRequest,
            20 => Self::Panic,
            21 => Self::ShuttingDown,
            22 => Self::FrameTooLarge,
            23 => Self::EncodeFailed,
            24 => Self::Overloaded,
            _ => return None,
        })
    }
}

/// Why a frame could not be understood. Always closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame is shorter than its kind requires.
    #[error("truncated {kind} frame: {len} bytes")]
    Truncated {
        /// The kind that was being parsed.
        kind: &'static str,
        /// The frame's length.
        len: usize,
    },
    /// The kind byte names no known message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The response status byte names no known status.
    #[error("unknown response status {0}")]
    UnknownStatus(u8),
    /// The handshake did not start with the magic bytes.
    #[error("bad magic {0:02x?}: the peer does not speak the ipc protocol")]
    BadMagic([u8; 4]),
}

/// A parsed frame. Payload bytes are views into the received frame (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Handshake.
    Hello(Hello),
    /// A call.
    Request(Request),
    /// An answer.
    Response {
        /// The request id this answers.
        id: u64,
        /// The outcome.
        status: Status,
        /// The bincode body, read according to `status`.
        body: Bytes,
    },
    /// The caller gave up on request `id`.
    Cancel {
        /// The request id to cancel.
        id: u64,
    },
    /// The peer is shutting down or refusing the connection.
    GoAway {
        /// Why: [`GOAWAY_SHUTDOWN`] or [`GOAWAY_CONNECTION_LIMIT`].
        reason: u64,
        /// When present: the highest request id the sender read. Requests
        /// with a higher id were not run and may be sent again elsewhere.
        last_request: Option<u64>,
    },
}

/// The handshake fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's protocol version.
    pub version: u16,
    /// The largest frame the sender accepts, in bytes (length prefix excluded).
    pub max_frame_size: u32,
}

/// A call as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Caller-chosen id, unique among the caller's in-flight requests.
    pub id: u64,
    /// Handle of the target object (0 is the built-in system object).
    pub object: u32,
    /// Index of the method in the trait's declaration order.
    pub method: u16,
    /// Relative deadline in milliseconds; 0 means none.
    pub deadline_ms: u32,
    /// The bincode-encoded argument tuple.
    pub args: Bytes,
    /// Sent as kind 5: run it, answer nothing.
    pub oneway: bool,
}

/// Parses one frame body (the bytes after the length prefix).
pub fn parse(mut frame: Bytes) -> Result<Message, ProtocolError> {
    let len = frame.len();
    if len < HEADER_LEN {
        return Err(ProtocolError::Truncated { kind: "any", len });
    }
    let kind = frame.get_u8();
    let id = frame.get_u64_le();
    match kind {
        0 => {
            if frame.len() < HELLO_LEN {
                return Err(ProtocolError::Truncated { kind: "hello", len });
            }
            let mut magic = [0u8; 4];
            frame.copy_to_slice(&mut magic);
            if magic != MAGIC {
                return Err(ProtocolError::BadMagic(magic));
            }
            Ok(Message::Hello(Hello {
                version: frame.get_u16_le(),
                max_frame_size: frame.get_u32_le(),
            }))
        }
        1 | 5 => {
            if frame.len() < REQUEST_FIXED {
                return Err(ProtocolError::Truncated {
                    kind: "request",
                    len,
                });
            }
            let object = frame.get_u32_le();
            let method = frame.get_u16_le();
            let deadline_ms = frame.get_u32_le();
            Ok(Message::Request(Request {
                id,
                object,
                method,
                deadline_ms,
                args: frame,
                oneway: kind == Kind::Oneway as u8,
            }))
        }
        2 => {
            if frame.is_empty() {
                return Err(ProtocolError::Truncated {
                    kind: "response",
                    len,
                });
            }
            let raw = frame.get_u8();
            let status = Status::from_u8(raw).ok_or(ProtocolError::UnknownStatus(raw))?;
            Ok(Message::Response {
                id,
                status,
                body: frame,
            })
        }
        3 => Ok(Message::Cancel { id }),
        4 => Ok(Message::GoAway {
            reason: id,
            last_request: (frame.len() >= 8).then(|| frame.get_u64_le()),
        }),
        other => Err(ProtocolError::UnknownKind(other)),
    }
}

/// The codec that splits a byte stream into frame bodies, refusing (before
/// allocating) any frame longer than `max_frame_size`.
pub fn codec(max_frame_size: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .little_endian()
        .length_field_type::<u32>()
        .max_frame_length(max_frame_size)
        .new_codec()
}

/// An encoding error: the value's `Serialize` impl failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(String);

/// A decoding error: the bytes do not hold a value of the expected type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

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

    /// A hello frame.
    pub fn hello(max_frame_size: usize) -> Self {
        let mut f = Self::start(Kind::Hello, 0, HELLO_LEN);
        f.buf.put_slice(&MAGIC);
        f.buf.put_u16_le(PROTOCOL_VERSION);
        f.buf
            .put_u32_le(u32::try_from(max_frame_size).unwrap_or(u32::MAX));
        f
    }

    /// A request frame with its arguments encoded in place.
    pub fn request<A: Serialize + ?Sized>(
        id: u64,
        object: u32,
        method: u16,
        deadline_ms: u32,
        args: &A,
    ) -> Result<Self, EncodeError> {
        Self::call(Kind::Request, id, object, method, deadline_ms, args)
    }

    /// A oneway request frame (no response will come).
    pub fn oneway<A: Serialize + ?Sized>(
        id: u64,
        object: u32,
        method: u16,
        args: &A,
    ) -> Result<Self, EncodeError> {
        Self::call(Kind::Oneway, id, object, method, 0, args)
    }

    fn call<A: Serialize + ?Sized>(
        kind: Kind,
        id: u64,
        object: u32,
        method: u16,
        deadline_ms: u32,
        args: &A,
    ) -> Result<Self, EncodeError> {
        let mut f = Self::start(kind, id, REQUEST_FIXED + 32);
        f.buf.put_u32_le(object);
        f.buf.put_u16_le(method);
        f.buf.put_u32_le(deadline_ms);
        f.encode(args)?;
        Ok(f)
    }

    /// A response frame whose request id is filled in later by [`FrameBuf::set_id`].
    pub fn response<T: Serialize + ?Sized>(status: Status, body: &T) -> Result<Self, EncodeError> {
        let mut f = Self::start(Kind::Response, 0, 1 + 16);
        f.buf.put_u8(status as u8);
        f.encode(body)?;
        Ok(f)
    }

    /// A response frame with an empty body.
    pub fn response_empty(status: Status) -> Self {
        let mut f = Self::start(Kind::Response, 0, 1);
        f.buf.put_u8(status as u8);
        f
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

    fn encode<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        let writer = BufWriter {
            buf: &mut self.buf,
            chunks: &mut self.chunks,
        };
        bincode::serde::encode_into_writer(value, writer, ENCODE_CONFIG)
            .map_err(|e| EncodeError(e.to_string()))
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

struct BufWriter<'a> {
    buf: &'a mut BytesMut,
    chunks: &'a mut Vec<(usize, Bytes)>,
}

impl bincode::enc::write::Writer for BufWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
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

/// Encoding needs no byte limit: the frame limit is checked on the result.
const ENCODE_CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding();

type Config<const N: usize> = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<N>,
>;

const fn config<const N: usize>() -> Config<N> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<N>()
}

// Byte-limit classes for decoding. bincode allocates a string or byte buffer
// for the length it *claims* before reading it, bounded only by the configured
// limit, and that limit is a compile-time constant. Legitimate claims never
// exceed the body's own length (each claimed byte is read from it), so a body
// is decoded under the smallest class that holds its length: a hostile claim
// can then make the decoder reserve at most 16x the body's real size (at least
// 4 KiB), never more than the frame limit cap.
const LIMIT_0: usize = 1 << 12;
const LIMIT_1: usize = 1 << 16;
const LIMIT_2: usize = 1 << 20;
const LIMIT_3: usize = 1 << 24;
const LIMIT_4: usize = 1 << 28;
const LIMIT_5: usize = MAX_FRAME_SIZE_CAP;

/// Decodes a value from a complete body. Trailing bytes are an error: they mean
/// the two sides disagree about the type. So is a value nested deeper than
/// 128 levels (see `depth`), which could otherwise overflow the stack.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    use crate::depth::Limited;
    let len = body.len();
    let result = if len <= LIMIT_0 {
        bincode::serde::decode_from_slice::<Limited<T>, _>(body, config::<LIMIT_0>())
    } else if len <= LIMIT_1 {
        bincode::serde::decode_from_slice::<Limited<T>, _>(body, config::<LIMIT_1>())
    } else if len <= LIMIT_2 {
        bincode::serde::decode_from_slice::<Limited<T>, _>(body, config::<LIMIT_2>())
    } else if len <= LIMIT_3 {
        bincode::serde::decode_from_slice::<Limited<T>, _>(body, config::<LIMIT_3>())
    } else if len <= LIMIT_4 {
        bincode::serde::decode_from_slice::<Limited<T>, _>(body, config::<LIMIT_4>())
    } else {
        bincode::serde::decode_from_slice::<Limited<T>, _>(body, config::<LIMIT_5>())
    };
    match result {
        Ok((Limited(value), used)) if used == len => Ok(value),
        Ok((_, used)) => Err(DecodeError(format!(
            "{} trailing bytes after the value",
            len - used
        ))),
        // A serde error message (such as the nesting limit's) as it is.
        Err(bincode::error::DecodeError::OtherString(e)) => Err(DecodeError(e)),
        Err(e) => Err(DecodeError(e.to_string())),
    }
}

/// Decodes a value from a complete body that is part of a received frame:
/// [`crate::Bytes`] values inside it become views of the frame, not copies.
pub fn decode_shared<T: DeserializeOwned>(body: &Bytes) -> Result<T, DecodeError> {
    crate::payload::with_frame(body, || decode(body))
}

/// Encodes a value to a standalone buffer (used for small fixed bodies).
pub fn encode_to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(value, ENCODE_CONFIG).map_err(|e| EncodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(f: FrameBuf) -> Bytes {
        f.into_frame().to_contiguous().slice(LENGTH_PREFIX..)
    }

    #[test]
    fn readme_example_bytes_are_exact() {
        let request = FrameBuf::request(7, 1, 0, 0, &(2i64, 3i64))
            .unwrap()
            .into_unchecked();
        let expected: Vec<u8> = [
            &[0x23, 0, 0, 0, 1][..],
            &7u64.to_le_bytes(),
            &1u32.to_le_bytes(),
            &0u16.to_le_bytes(),
            &0u32.to_le_bytes(),
            &2i64.to_le_bytes(),
            &3i64.to_le_bytes(),
        ]
        .concat();
        assert_eq!(&request[..], &expected[..]);
        assert_eq!(request.len(), 39);

        let mut response = FrameBuf::response(Status::Ok, &5i64).unwrap();
        response.set_id(7);
        let response = response.into_unchecked();
        let expected: Vec<u8> = [
            &[0x12, 0, 0, 0, 2][..],
            &7u64.to_le_bytes(),
            &[0],
            &5i64.to_le_bytes(),
        ]
        .concat();
        assert_eq!(&response[..], &expected[..]);
    }

    #[test]
    fn request_round_trips() {
        let f = FrameBuf::request(7, 3, 2, 50, &(1i64, String::from("x"))).unwrap();
        let Message::Request(r) = parse(body(f)).unwrap() else {
            panic!("not a request")
        };
        assert_eq!((r.id, r.object, r.method, r.deadline_ms), (7, 3, 2, 50));
        let args: (i64, String) = decode(&r.args).unwrap();
        assert_eq!(args, (1, "x".into()));
    }

    #[test]
    fn response_id_is_patched() {
        let mut f = FrameBuf::response(Status::AppError, &5u8).unwrap();
        f.set_id(99);
        let m = parse(body(f)).unwrap();
        assert_eq!(
            m,
            Message::Response {
                id: 99,
                status: Status::AppError,
                body: Bytes::from_static(&[5])
            }
        );
    }

    #[test]
    fn hello_carries_version_and_limit() {
        let m = parse(body(FrameBuf::hello(4096))).unwrap();
        assert_eq!(
            m,
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                max_frame_size: 4096
            })
        );
    }

    #[test]
    fn oversized_frame_is_refused_with_sizes() {
        let f = FrameBuf::request(1, 1, 0, 0, &vec![0u8; 100]).unwrap();
        let size = f.body_len();
        let err = f.finish(50).unwrap_err();
        assert_eq!(err, FrameTooLarge { size, limit: 50 });
    }

    #[test]
    fn huge_claimed_string_fails_without_allocating_it() {
        // A u64 length claiming 4 GiB, followed by 3 bytes.
        let mut b = (4u64 << 30).to_le_bytes().to_vec();
        b.extend_from_slice(b"abc");
        assert!(decode::<String>(&b).is_err());
        assert!(decode::<Vec<u64>>(&b).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let b = encode_to_vec(&(1u32, 2u32)).unwrap();
        assert!(decode::<u32>(&b).is_err());
        assert_eq!(decode::<(u32, u32)>(&b).unwrap(), (1, 2));
    }

    #[test]
    fn unknown_kind_and_truncation_are_errors() {
        let mut b = vec![9u8];
        b.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            parse(Bytes::from(b)).unwrap_err(),
            ProtocolError::UnknownKind(9)
        );
        assert!(matches!(
            parse(Bytes::from_static(&[1, 0])),
            Err(ProtocolError::Truncated { .. })
        ));
    }
}
