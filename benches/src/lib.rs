//! Shared pieces of the `ipc` benchmarks: the benchmarked traits and their
//! implementations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipc_core::{Remote, Streaming, expose};
use serde::{Deserialize, Serialize};

/// A user's own struct holding bytes in a plain `Vec<u8>` field: serde
/// (and so `ipc`) moves it one `u8` at a time (the (d'') benchmark).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// The payload.
    pub data: Vec<u8>,
}

/// [`Blob`] with its field marked `#[serde(with = "serde_bytes")]`: the
/// same bytes on the wire, moved as one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteBlob {
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The service every benchmark column implements (the raw and tarpc columns
/// implement `add` and `echo`, raw also `count`; the rest is `ipc`'s alone).
#[expose]
pub trait Bench {
    /// Adds two numbers (the small-call benchmark).
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns its argument (the payload benchmark).
    async fn echo(&self, data: ipc_core::Bytes) -> ipc_core::Bytes;
    /// Returns its argument, declared as a plain `Vec<u8>` (the payload
    /// benchmark as most users would first write it).
    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns its argument, a struct with a plain `Vec<u8>` field (the
    /// payload benchmark with bytes inside a user type).
    async fn echo_blob(&self, blob: Blob) -> Blob;
    /// Returns its argument, a struct whose `Vec<u8>` field is marked
    /// `#[serde(with = "serde_bytes")]`.
    async fn echo_byte_blob(&self, blob: ByteBlob) -> ByteBlob;
    /// Pushes the numbers `0..n` (the server-stream benchmark).
    async fn count(&self, n: u64) -> Streaming<u64>;
    /// Pushes `0, 1, 2, …` without end; counts every item the server takes
    /// from it (see [`BenchImpl::produced`]).
    async fn endless(&self) -> Streaming<u64>;
    /// Calls `cb.pong(i, 1)` back to back for `warmup_ms`, then for
    /// `measure_ms`, timing each call of the second part; returns those
    /// round trips in nanoseconds, or what went wrong (the callback
    /// benchmark).
    async fn ping_back(
        &self,
        cb: Remote<PongProxy>,
        warmup_ms: u64,
        measure_ms: u64,
    ) -> Result<Vec<u64>, String>;
}

/// The callback object of [`Bench::ping_back`], served by the client.
#[expose]
pub trait Pong {
    /// Adds two numbers: [`Bench::add`] the other way round.
    async fn pong(&self, a: u64, b: u64) -> u64;
}

/// The implementation of [`Bench`].
#[derive(Debug, Clone, Default)]
pub struct BenchImpl {
    produced: Arc<AtomicU64>,
}

impl BenchImpl {
    /// Items taken so far from every [`Bench::endless`] stream of this
    /// object (and its clones).
    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::Relaxed)
    }
}

impl Bench for BenchImpl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, data: ipc_core::Bytes) -> ipc_core::Bytes {
        data
    }

    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn echo_blob(&self, blob: Blob) -> Blob {
        blob
    }

    async fn echo_byte_blob(&self, blob: ByteBlob) -> ByteBlob {
        blob
    }

    async fn count(&self, n: u64) -> Streaming<u64> {
        Streaming::iter(0..n)
    }

    async fn endless(&self) -> Streaming<u64> {
        let produced = self.produced.clone();
        Streaming::new(futures::stream::iter(0u64..).inspect(move |_| {
            produced.fetch_add(1, Ordering::Relaxed);
        }))
    }

    async fn ping_back(
        &self,
        cb: Remote<PongProxy>,
        warmup_ms: u64,
        measure_ms: u64,
    ) -> Result<Vec<u64>, String> {
        let mut i = 0u64;
        let call = async |i: u64| -> Result<(), String> {
            let got = cb.pong(i, 1).await.map_err(|e| e.to_string())?;
            if got == i.wrapping_add(1) {
                Ok(())
            } else {
                Err(format!("pong({i}, 1) returned {got}"))
            }
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(warmup_ms) {
            call(i).await?;
            i += 1;
        }
        let mut nanos = Vec::with_capacity(1 << 16);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(measure_ms) {
            let t = Instant::now();
            call(i).await?;
            nanos.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            i += 1;
        }
        Ok(nanos)
    }
}

/// The implementation of [`Pong`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PongImpl;

impl Pong for PongImpl {
    async fn pong(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

pub mod columns;
pub mod pki;
pub mod raw;
pub mod recorder;
pub mod tarpc_col;
