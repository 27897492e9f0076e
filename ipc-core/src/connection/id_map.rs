//! A map keyed by request ids this side issued itself.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// A map from request ids this side issued to `V`: the calls waiting for
/// their responses, the streams being received.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Hashes request ids this side issued itself (sequential, never chosen by
/// the peer, so no flooding concern): one multiply instead of SipHash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
