//! [`Bytes`]: a byte buffer that crosses the wire in bulk and, on arrival,
//! without a copy.
//!
//! `Vec<u8>` works as an argument or return type, but serde moves it one
//! element at a time. `ipc_core::Bytes` is written as one block, and when
//! decoded from a received frame it is a view into that frame: no allocation,
//! no copy.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A cheaply cloneable, immutable byte buffer for method arguments and
/// return values (a wrapper around [`bytes::Bytes`]).
///
/// ```
/// let b = ipc_core::Bytes::from(vec![1u8, 2, 3]);
/// assert_eq!(&b[..], &[1, 2, 3]);
/// let v: Vec<u8> = b.to_vec();
/// assert_eq!(v.len(), 3);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(bytes::Bytes);

impl Bytes {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self(bytes::Bytes::new())
    }

    /// A buffer over static data, without copying it.
    pub const fn from_static(data: &'static [u8]) -> Self {
        Self(bytes::Bytes::from_static(data))
    }

    /// The inner [`bytes::Bytes`].
    pub fn into_inner(self) -> bytes::Bytes {
        self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v.into())
    }
}

impl From<bytes::Bytes> for Bytes {
    fn from(b: bytes::Bytes) -> Self {
        Self(b)
    }
}

impl From<Bytes> for bytes::Bytes {
    fn from(b: Bytes) -> Self {
        b.0
    }
}

impl From<&'static [u8]> for Bytes {
    fn from(s: &'static [u8]) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for Bytes {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

thread_local! {
    /// The frame being decoded on this thread, if any: borrowed byte slices
    /// inside it become views of it instead of copies.
    static FRAME: RefCell<Option<bytes::Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `frame` registered as the frame being decoded.
pub(crate) fn with_frame<R>(frame: &bytes::Bytes, decode: impl FnOnce() -> R) -> R {
    struct Reset(Option<bytes::Bytes>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            FRAME.with(|f| *f.borrow_mut() = previous);
        }
    }
    let previous = FRAME.with(|f| f.borrow_mut().replace(frame.clone()));
    let _reset = Reset(previous);
    decode()
}

/// A view of `slice` if it lies inside the frame being decoded, else a copy.
fn share_or_copy(slice: &[u8]) -> bytes::Bytes {
    FRAME.with(|f| {
        let frame = f.borrow();
        match frame.as_ref() {
            Some(frame) if contains(frame, slice) => frame.slice_ref(slice),
            _ => bytes::Bytes::copy_from_slice(slice),
        }
    })
}

fn contains(frame: &[u8], slice: &[u8]) -> bool {
    let start = frame.as_ptr() as usize;
    let end = start + frame.len();
    let s = slice.as_ptr() as usize;
    !slice.is_empty() && s >= start && s + slice.len() <= end
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Bytes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte buffer")
            }

            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
                Ok(Bytes(share_or_copy(v)))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(bytes::Bytes::copy_from_slice(v)))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v.into()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Bytes(v.into()))
            }
        }

        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    #[test]
    fn decoded_from_a_frame_it_is_a_view_of_the_frame() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let encoded =
            bytes::Bytes::from(wire::encode_to_vec(&(7u32, Bytes::from(data.clone()))).unwrap());
        let (n, b): (u32, Bytes) = wire::decode_shared(&encoded).unwrap();
        assert_eq!(n, 7);
        assert_eq!(&b[..], &data[..]);
        assert!(contains(&encoded, &b), "not a view of the frame");
    }

    #[test]
    fn decoded_without_a_frame_it_is_a_copy_and_equal() {
        let encoded = wire::encode_to_vec(&Bytes::from_static(b"hello")).unwrap();
        let b: Bytes = wire::decode(&encoded).unwrap();
        assert_eq!(&b[..], b"hello");
        assert!(!contains(&encoded, &b));
    }

    #[test]
    fn wire_format_is_a_length_then_the_bytes() {
        let encoded = wire::encode_to_vec(&Bytes::from_static(b"abc")).unwrap();
        assert_eq!(encoded, [3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c']);
        let as_vec: Vec<u8> = wire::decode(&encoded).unwrap();
        assert_eq!(as_vec, b"abc");
    }
}
