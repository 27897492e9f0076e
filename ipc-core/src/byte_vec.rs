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
