//! The wire format: frames, message kinds and the bincode body encoding.
//!
//! This is the only module that knows how bytes on the connection look. Everything
//! here is pure (no I/O), so it can be property-tested and fuzzed directly.
//! The README's "Wire protocol" section is the specification; this module
//! implements it.
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
//! | kind | name       | id            | payload |
//! |------|------------|---------------|---------|
//! | 0    | Hello      | 0             | magic `b"IPCR"`, version `u16`, max frame size `u32`, then (ignored here) more fields |
//! | 1    | Request    | request id    | object handle `u32`, method index `u16`, deadline ms `u32` (0 = none), args (bincode) |
//! | 2    | Response   | request id    | status `u8`, body (bincode) |
//! | 3    | Cancel     | request id    | empty |
//! | 4    | GoAway     | reason        | optional last request id `u64` (reason 0: shutting down, 1: connection limit) |
//! | 5    | Oneway     | request id    | as Request; no response is sent |
//! | 6    | StreamItem | request id    | one item (bincode) of the stream that request opened |
//! | 7    | StreamEnd  | request id    | status `u8`, body: how the stream ended |
//! | 8    | Credit     | request id    | bytes granted `u32`: the stream's producer may send that much more |
//! | 9    | Release    | object handle | empty: the sender dropped its last proxy to that exported object |
//! | 10   | AuthProof  | 0             | the client's proof of the shared key: 32 bytes |
//! | 11   | AuthOk     | 0             | empty: the server accepted the proof |
//!
//! Kinds 12..=255 are reserved; a peer that receives one closes the connection.
//! Bodies are bincode 2 through serde with little-endian *fixed-width* integers:
//! a `String`/`Vec<T>` is a `u64` length then the elements, an enum is a `u32`
//! variant index then its fields, `Option` is a `u8` tag. Method arguments are
//! encoded as a tuple, i.e. simply one after another.

mod codec;
mod frame;

use bytes::{Buf, Bytes};
use tokio_util::codec::LengthDelimitedCodec;

pub use codec::{DecodeError, EncodeError, decode, decode_shared, encode_to_vec};
pub use frame::{Frame, FrameBuf, FrameTooLarge};

/// A call's deadline as a request carries it: whole milliseconds, rounded
/// up, at least 1 (0 means "none"), at most `u32::MAX`.
pub(crate) fn deadline_ms(timeout: std::time::Duration) -> u32 {
    u32::try_from(timeout.as_micros().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The four bytes every handshake starts with.
pub const MAGIC: [u8; 4] = *b"IPCR";
/// The protocol version this build speaks. Peers must agree exactly.
pub const PROTOCOL_VERSION: u16 = 2;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Bytes of the header every frame body starts with (kind + id).
pub const HEADER_LEN: usize = 1 + 8;
/// Bytes of a request's fixed fields after the header.
const REQUEST_FIXED: usize = 4 + 2 + 4;
/// Bytes of a hello's payload (the fields this version reads).
const HELLO_LEN: usize = 4 + 2 + 4;
/// The largest frame size a peer may be configured to accept (1 GiB).
pub const MAX_FRAME_SIZE_CAP: usize = 1 << 30;
/// The largest frame accepted before the handshake completes: a hello, or a
/// go-away sent in its place, with room to spare.
pub const HANDSHAKE_FRAME_MAX: usize = 256;
/// The smallest frame size a peer may be configured to accept (1 KiB).
pub const MIN_FRAME_SIZE: usize = 1 << 10;
/// The object handle of the built-in system object (object lookup).
pub const SYSTEM_OBJECT: u32 = 0;
/// Method index of the system object's `resolve`.
pub const SYSTEM_RESOLVE: u16 = 0;
/// Method index of the system object's `list` (the object directory).
pub const SYSTEM_LIST: u16 = 1;
/// Method index of the system object's `schema` (an object's method types).
pub const SYSTEM_SCHEMA: u16 = 2;
/// Object handles from this one up name objects exported on one connection
/// (callbacks, returned objects); below it, a server's named objects.
pub const EXPORT_BASE: u32 = 1 << 31;
/// Handles from this one up to [`EXPORT_BASE`] stand for the object found
/// by a lookup on this connection: `LOOKUP_BASE + n` for the lookup read
/// (n+1)-th, usable before its answer arrives. Below it, a server's named
/// objects by their own handles.
pub const LOOKUP_BASE: u32 = 1 << 30;
/// GoAway reason: the sender is shutting down.
pub const GOAWAY_SHUTDOWN: u64 = 0;
/// GoAway reason (sent instead of a Hello): the server is at its connection limit.
pub const GOAWAY_CONNECTION_LIMIT: u64 = 1;
/// GoAway reason: shared-key authentication failed (the key does not match,
/// or the client offered none).
pub const GOAWAY_AUTH_FAILED: u64 = 2;
/// GoAway reason: the server's authorization refused this peer.
pub const GOAWAY_PERMISSION_DENIED: u64 = 3;
/// Bytes of an authentication nonce, and of a proof (HMAC-SHA256).
pub const AUTH_LEN: usize = 32;

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
    /// One item of a stream.
    StreamItem = 6,
    /// The end of a stream.
    StreamEnd = 7,
    /// More room for a stream's items.
    Credit = 8,
    /// An exported object's last proxy is gone.
    Release = 9,
    /// The client's proof of the shared key.
    AuthProof = 10,
    /// The server accepted the client's proof.
    AuthOk = 11,
}

/// Status byte of a response (and of a stream's end): the outcome, and how
/// to read the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Status {
    /// The method returned; body is its return value (for `Result<T, E>`: the `T`).
    /// For a stream's end: the stream ended cleanly; body empty.
    Ok = 0,
    /// The method returned `Err(e)`; body is the `E`.
    AppError = 1,
    /// No object with that handle or name; body is a `String` detail.
    UnknownObject = 16,
    /// The object has no such method; body is a `String` detail.
    UnknownMethod = 17,
    /// The caller's trait differs from the exposed one; body is
    /// `(server fingerprint u64, caller fingerprint u64, detail String)`.
    TraitMismatch = 18,
    /// The arguments could not be decoded; body is a `String` detail.
    BadRequest = 19,
    /// The handler (or stream) panicked; body is the panic message as a `String`.
    Panic = 20,
    /// The peer is shutting down and did not run the call (or ended the
    /// stream); body is empty.
    ShuttingDown = 21,
    /// The answer did not fit the caller's frame limit; body is `(u64 size, u64 limit)`.
    FrameTooLarge = 22,
    /// The return value (or a stream item) could not be encoded; body is a `String` detail.
    EncodeFailed = 23,
    /// A limit of the connection was reached (calls in flight, open streams,
    /// exported objects); the call did not run. Body is a `String` detail.
    Overloaded = 24,
    /// The caller cancelled the call (or stream) and it was dropped; body is empty.
    Cancelled = 25,
    /// The call's deadline passed and it was dropped; body is empty.
    DeadlineExceeded = 26,
    /// The server's authorization refused this call; it did not run. Body
    /// is a `String` detail.
    PermissionDenied = 27,
}

impl Status {
    /// The status with this byte, if any.
    pub fn from_u8(b: u8) -> Option<Self> {
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
            25 => Self::Cancelled,
            26 => Self::DeadlineExceeded,
            27 => Self::PermissionDenied,
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
    /// A frame that must be empty after its header is not.
    #[error("{kind} frame with {extra} bytes of payload where none belong")]
    Trailing {
        /// The kind that was being parsed.
        kind: &'static str,
        /// The unexpected bytes.
        extra: usize,
    },
}

/// A parsed frame. Payload bytes are views into the received frame (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// One item of the stream opened by request `id`.
    StreamItem {
        /// The request that opened the stream.
        id: u64,
        /// The item, bincode.
        item: Bytes,
    },
    /// The end of the stream opened by request `id`.
    StreamEnd {
        /// The request that opened the stream.
        id: u64,
        /// How it ended: [`Status::Ok`] for a clean end.
        status: Status,
        /// Read according to `status`, as a response's body.
        body: Bytes,
    },
    /// The stream's consumer grants its producer more room.
    Credit {
        /// The request that opened the stream.
        id: u64,
        /// Bytes of item frames (their length fields) the producer may add.
        bytes: u32,
    },
    /// The sender dropped its last proxy to an object the receiver exported.
    Release {
        /// The exported object's handle.
        handle: u32,
    },
    /// The client's proof that it holds the shared key.
    AuthProof {
        /// HMAC-SHA256 over the handshake (see the README).
        proof: [u8; AUTH_LEN],
    },
    /// The server accepted the client's proof.
    AuthOk,
}

/// The handshake fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's protocol version.
    pub version: u16,
    /// The largest frame the sender accepts, in bytes (length prefix excluded).
    pub max_frame_size: u32,
    /// Bytes after the fields above (later versions' fields, authentication).
    pub rest: Bytes,
}

/// A call as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Caller-chosen id: strictly increasing on each connection, per sender.
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

/// Fails if a frame that must end after `used` bytes of payload goes on.
fn nothing_after(kind: &'static str, frame: &Bytes) -> Result<(), ProtocolError> {
    if frame.is_empty() {
        Ok(())
    } else {
        Err(ProtocolError::Trailing {
            kind,
            extra: frame.len(),
        })
    }
}

fn status_byte(frame: &mut Bytes, kind: &'static str, len: usize) -> Result<Status, ProtocolError> {
    if frame.is_empty() {
        return Err(ProtocolError::Truncated { kind, len });
    }
    let raw = frame.get_u8();
    Status::from_u8(raw).ok_or(ProtocolError::UnknownStatus(raw))
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
                rest: frame,
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
            let status = status_byte(&mut frame, "response", len)?;
            Ok(Message::Response {
                id,
                status,
                body: frame,
            })
        }
        3 => {
            nothing_after("cancel", &frame)?;
            Ok(Message::Cancel { id })
        }
        4 => {
            let last_request = match frame.len() {
                0 => None,
                8 => Some(frame.get_u64_le()),
                _ => {
                    return Err(ProtocolError::Truncated {
                        kind: "go-away",
                        len,
                    });
                }
            };
            Ok(Message::GoAway {
                reason: id,
                last_request,
            })
        }
        6 => Ok(Message::StreamItem { id, item: frame }),
        7 => {
            let status = status_byte(&mut frame, "stream end", len)?;
            Ok(Message::StreamEnd {
                id,
                status,
                body: frame,
            })
        }
        8 => {
            if frame.len() < 4 {
                return Err(ProtocolError::Truncated {
                    kind: "credit",
                    len,
                });
            }
            let bytes = frame.get_u32_le();
            nothing_after("credit", &frame)?;
            Ok(Message::Credit { id, bytes })
        }
        9 => {
            nothing_after("release", &frame)?;
            let handle = u32::try_from(id).map_err(|_| ProtocolError::Truncated {
                kind: "release (handle over u32)",
                len,
            })?;
            Ok(Message::Release { handle })
        }
        10 => {
            if frame.len() != AUTH_LEN {
                return Err(ProtocolError::Truncated {
                    kind: "auth proof",
                    len,
                });
            }
            let mut proof = [0u8; AUTH_LEN];
            frame.copy_to_slice(&mut proof);
            Ok(Message::AuthProof { proof })
        }
        11 => {
            nothing_after("auth ok", &frame)?;
            Ok(Message::AuthOk)
        }
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

#[cfg(test)]
mod tests;
