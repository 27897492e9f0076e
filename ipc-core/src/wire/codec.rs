//! The body encoding: bincode 2 through serde, little-endian fixed-width
//! integers. Every bincode call of the crate is here, and every decode runs
//! under a byte limit and the nesting limit of `depth`.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::MAX_FRAME_SIZE_CAP;
use super::frame::BufWriter;

/// An encoding error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The value's `Serialize` impl failed.
    #[error("{0}")]
    Serde(String),
    /// The frame would exceed the receiver's limit; encoding stopped there.
    #[error("a frame of at least {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The body's size when encoding stopped (at least this).
        size: usize,
        /// The receiver's limit in bytes.
        limit: usize,
    },
}

/// A decoding error: the bytes do not hold a value of the expected type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Encoding needs no byte limit of bincode's: frames stop at their own
/// (see `BufWriter`).
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

/// Encodes `value` into a frame being built.
pub(super) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    writer: BufWriter<'_>,
) -> Result<(), EncodeError> {
    bincode::serde::encode_into_writer(value, writer, ENCODE_CONFIG)
        .map_err(|e| EncodeError::Serde(e.to_string()))
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
    bincode::serde::encode_to_vec(value, ENCODE_CONFIG)
        .map_err(|e| EncodeError::Serde(e.to_string()))
}
