//! A `Vec<u8>` reply larger than the caller's frame limit is refused with
//! `FrameTooLarge` without being encoded past the limit. Measured with a
//! counting allocator, so this file holds this one test: nothing else in the
//! process allocates large buffers meanwhile.

// A global allocator is unsafe to implement; this one only forwards to the
// system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ipc_core::{Client, Error, Server, expose};
use ipc_tests::within;

/// Counts allocations (and growths) of at least [`LARGE`] bytes.
struct Counting;

const LARGE: usize = 2 * 1024 * 1024;
static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// The size of the one large allocation the handler makes on purpose.
static EXPECTED_SIZE: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if size >= LARGE && size != EXPECTED_SIZE.load(Ordering::Relaxed) {
        LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Makes byte vectors.
#[expose]
pub trait Maker {
    /// `len` bytes.
    async fn make(&self, len: u64) -> Vec<u8>;
}

struct Make;

impl Maker for Make {
    async fn make(&self, len: u64) -> Vec<u8> {
        vec![0x5a; usize::try_from(len).unwrap_or(0)]
    }
}

#[tokio::test]
async fn an_oversized_vec_reply_is_frame_too_large_without_being_encoded_past_the_limit() {
    within(30, async {
        let server = Server::builder()
            .addr("127.0.0.1:0")
            .max_frame_size(64 * 1024 * 1024)
            .expose(MakerServer::new(Make))
            .start()
            .await
            .unwrap();
        let limit = 1024 * 1024;
        let client = Client::builder()
            .addr(server.local_addr())
            .max_frame_size(limit)
            .connect()
            .await
            .unwrap();
        let maker: MakerProxy = client.get_exposed_object().await.unwrap();
        // Under the limit: fine, and no large allocation.
        assert_eq!(maker.make(1000).await.unwrap().len(), 1000);

        let len = 48 * 1024 * 1024;
        EXPECTED_SIZE.store(len, Ordering::Relaxed);
        LARGE_ALLOCATIONS.store(0, Ordering::Relaxed);
        match maker.make(len as u64).await {
            Err(Error::FrameTooLarge { size, limit: l }) => {
                assert_eq!(l, limit);
                assert!(size > limit, "size {size} is past the limit {limit}");
            }
            other => panic!("expected FrameTooLarge, got {:?}", other.map(|v| v.len())),
        }
        assert_eq!(
            LARGE_ALLOCATIONS.load(Ordering::Relaxed),
            0,
            "no buffer of {LARGE} bytes or more was allocated for the reply: encoding \
             stopped at the limit"
        );
        // The connection goes on.
        assert_eq!(maker.make(10).await.unwrap().len(), 10);
        server.stop().await;
    })
    .await;
}
