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

/// Payloads at least this long are not copied into an outgoing frame: the
/// frame refers to them and the socket gets them by vectored write.
pub(crate) const OUT_OF_LINE_MIN: usize = 32 * 1024;

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() < OUT_OF_LINE_MIN {
            return serializer.serialize_bytes(&self.0);
        }
        // Offer the buffer to the frame writer, which recognises the slice
        // it is asked to copy and takes a reference instead. Any other
        // serializer just copies, and the offer is withdrawn.
        OUT_OF_LINE.with(|o| o.borrow_mut().push(self.0.clone()));
        let result = serializer.serialize_bytes(&self.0);
        OUT_OF_LINE.with(|o| {
            let mut offers = o.borrow_mut();
            if let Some(i) = offers.iter().position(|b| same(b, &self.0)) {
                offers.swap_remove(i);
            }
        });
        result
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// The offered buffer whose bytes are exactly `slice`, if any.
pub(crate) fn take_out_of_line(slice: &[u8]) -> Option<bytes::Bytes> {
    OUT_OF_LINE.with(|o| {
        let mut offers = o.borrow_mut();
        let i = offers.iter().position(|b| same(b, slice))?;
        Some(offers.swap_remove(i))
    })
}

thread_local! {
    /// Large buffers being serialized on this thread, offered to the frame
    /// writer by reference.
    static OUT_OF_LINE: RefCell<Vec<bytes::Bytes>> = const { RefCell::new(Vec::new()) };

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
    if frame.len() < SHARE_MIN {
        // Nothing in it is long enough to be shared: no need to register.
        return decode();
    }
    let previous = FRAME.with(|f| f.borrow_mut().replace(frame.clone()));
    let _reset = Reset(previous);
    decode()
}

/// Payloads shorter than this are copied out of the frame even when they
/// could be views: a small value kept by a handler must not pin the whole
/// receive buffer it arrived in.
const SHARE_MIN: usize = 4 * 1024;

/// A view of `slice` if it lies inside the frame being decoded, else a copy.
fn share_or_copy(slice: &[u8]) -> bytes::Bytes {
    if slice.len() < SHARE_MIN {
        return bytes::Bytes::copy_from_slice(slice);
    }
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

#[cfg(test)]
mod out_of_line_tests {
    use super::*;
    use crate::wire::{self, Frame, FrameBuf, Message, Status};

    #[test]
    fn large_payloads_are_spliced_in_by_reference_and_read_back_whole() {
        let big = Bytes::from(vec![9u8; 100_000]);
        let mut f = FrameBuf::response(Status::Ok, &(1u8, big.clone(), 2u8), 1 << 30).unwrap();
        f.set_id(5);
        let frame = f.finish(1 << 20).unwrap();
        let Frame::Parts(parts) = &frame else {
            panic!("expected parts, got one buffer")
        };
        // The payload part is the caller's buffer itself.
        assert!(parts.iter().any(|p| same(p, &big)));
        let flat = frame.to_contiguous();
        let contiguous = {
            let mut body = flat.slice(wire::LENGTH_PREFIX..);
            let Message::Response { id, body: b, .. } = wire::parse(body.split_off(0)).unwrap()
            else {
                panic!("not a response")
            };
            assert_eq!(id, 5);
            b
        };
        let (a, b, c): (u8, Bytes, u8) = wire::decode(&contiguous).unwrap();
        assert_eq!((a, c), (1, 2));
        assert_eq!(b, big);
        // Identical to what a plain encoding produces.
        let plain = wire::encode_to_vec(&(1u8, big, 2u8)).unwrap();
        assert!(contiguous[..] == plain[..], "differs from a plain encoding");
        assert!(OUT_OF_LINE.with(|o| o.borrow().is_empty()));
    }
}
