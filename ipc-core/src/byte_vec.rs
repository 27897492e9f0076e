//! `Vec<u8>` as one block on the wire (used by generated code).
//!
//! serde moves a `Vec<u8>` one element at a time: for bincode that is a call
//! per byte on both sides. `#[expose]` wraps every argument and return value
//! declared `Vec<u8>` or `Option<Vec<u8>>` (also as the `T` of a
//! `Result<T, E>`) in these types, which are written with `serialize_bytes`
//! and read with `deserialize_byte_buf`: one copy, no per-byte work. The bytes
//! on the wire are the same as serde's sequence of `u8` (a `u64` length, then
//! the bytes), so a peer that does not wrap — another language, an older
//! build — reads and writes them unchanged.
//!
//! On the way out the generated code owns the vector, so it hands it over as
//! a [`SendVec`]: a large one is given to the frame by reference, as a large
//! [`crate::Bytes`] is (the socket writes it from the vector's own memory),
//! and only a small one is copied into the frame.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A `Vec<u8>` argument or return value, encoded as one block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ByteVec(pub Vec<u8>);

impl ByteVec {
    /// The bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

/// An `Option<Vec<u8>>` argument or return value, its bytes encoded as one
/// block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptByteVec(pub Option<Vec<u8>>);

impl OptByteVec {
    /// The optional bytes.
    pub fn into_inner(self) -> Option<Vec<u8>> {
        self.0
    }
}

/// A `Vec<u8>` argument or return value being sent, written as one block
/// (the same bytes as [`ByteVec`]). Made by generated code, which owns the
/// vector: one of 32 KiB or more (without much spare capacity) becomes a
/// [`crate::Bytes`] without a copy and is referred to by the frame instead
/// of copied into it.
#[derive(Debug)]
pub enum SendVec {
    /// A small vector, copied into the frame.
    Inline(Vec<u8>),
    /// A large one, referred to by the frame.
    Shared(crate::Bytes),
}

impl SendVec {
    /// Wraps a vector for sending. One with much spare capacity (over an
    /// eighth of its length) is copied as a small one is: referred to by a
    /// queued frame, its whole allocation would stay alive while the queue
    /// counts only its length.
    pub fn new(bytes: Vec<u8>) -> Self {
        let spare = bytes.capacity() - bytes.len();
        if bytes.len() < crate::payload::OUT_OF_LINE_MIN || spare > bytes.len() / 8 {
            Self::Inline(bytes)
        } else {
            // No copy: the `Bytes` takes over the vector's allocation.
            Self::Shared(crate::Bytes::from(bytes))
        }
    }

    /// Wraps an optional vector for sending (the same bytes as
    /// [`OptByteVec`]: `serialize_none`, or `serialize_some` of the block).
    pub fn optional(bytes: Option<Vec<u8>>) -> Option<Self> {
        bytes.map(Self::new)
    }
}

impl Serialize for SendVec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Inline(bytes) => serializer.serialize_bytes(bytes),
            Self::Shared(bytes) => bytes.serialize(serializer),
        }
    }
}

/// Borrowed bytes written as one block.
struct Block<'a>(&'a [u8]);

impl Serialize for Block<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl Serialize for ByteVec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl Serialize for OptByteVec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => serializer.serialize_none(),
            Some(bytes) => serializer.serialize_some(&Block(bytes)),
        }
    }
}

/// Reads a byte block; also a sequence of `u8`, for formats that write one.
struct BlockVisitor;

impl<'de> Visitor<'de> for BlockVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte array")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The claimed length is not trusted for more than a page.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for ByteVec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BlockVisitor).map(Self)
    }
}

impl<'de> Deserialize<'de> for OptByteVec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OptionVisitor;
        impl<'de> Visitor<'de> for OptionVisitor {
            type Value = Option<Vec<u8>>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an optional byte array")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_byte_buf(BlockVisitor).map(Some)
            }
        }
        deserializer.deserialize_option(OptionVisitor).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Frame, FrameBuf, Status};

    /// What generated code sends is byte for byte what it reads back as
    /// `ByteVec`/`OptByteVec` (and serde's `Vec<u8>`), small or large.
    #[test]
    fn sent_vectors_have_the_byte_vec_layout_at_every_size() {
        for len in [0usize, 1, 4096, crate::payload::OUT_OF_LINE_MIN, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let sent = wire::encode_to_vec(&SendVec::new(data.clone())).unwrap();
            assert_eq!(sent, wire::encode_to_vec(&ByteVec(data.clone())).unwrap());
            assert_eq!(sent, wire::encode_to_vec(&data).unwrap(), "{len} bytes");
            let some = wire::encode_to_vec(&SendVec::optional(Some(data.clone()))).unwrap();
            assert_eq!(
                some,
                wire::encode_to_vec(&OptByteVec(Some(data.clone()))).unwrap()
            );
            assert_eq!(wire::decode::<OptByteVec>(&some).unwrap().0, Some(data));
        }
        assert_eq!(
            wire::encode_to_vec(&SendVec::optional(None)).unwrap(),
            [0u8]
        );
    }

    /// A large vector is referred to by the frame, not copied into it; a
    /// small one is copied.
    #[test]
    fn a_large_sent_vector_is_referred_to_by_the_frame_not_copied() {
        let large = vec![7u8; crate::payload::OUT_OF_LINE_MIN];
        let at = large.as_ptr();
        let f = FrameBuf::response(Status::Ok, &SendVec::new(large), 1 << 30).unwrap();
        let Frame::Parts(parts) = f.finish(1 << 20).unwrap() else {
            panic!("expected the vector as a part of its own")
        };
        assert!(
            parts.iter().any(|p| p.as_ptr() == at),
            "the vector's own memory is a part of the frame"
        );

        let small = vec![7u8; 100];
        let f = FrameBuf::response(Status::Ok, &SendVec::new(small), 1 << 30).unwrap();
        assert!(matches!(f.finish(1 << 20).unwrap(), Frame::One(_)));

        // Mostly spare capacity: copied, so the frame does not keep the
        // whole allocation alive.
        let mut roomy = Vec::with_capacity(16 * crate::payload::OUT_OF_LINE_MIN);
        roomy.resize(crate::payload::OUT_OF_LINE_MIN, 7u8);
        assert!(matches!(SendVec::new(roomy), SendVec::Inline(_)));
        let mut snug = Vec::with_capacity(crate::payload::OUT_OF_LINE_MIN + 64);
        snug.resize(crate::payload::OUT_OF_LINE_MIN, 7u8);
        assert!(matches!(SendVec::new(snug), SendVec::Shared(_)));
    }
}
