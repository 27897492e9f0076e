//! Shared pieces of the `ipc` benchmarks: the benchmarked trait and its
//! implementation.

use ipc_core::expose;

/// The service every benchmark column implements.
#[expose]
pub trait Bench {
    /// Adds two numbers (the small-call benchmark).
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns its argument (the payload benchmark).
    async fn echo(&self, data: ipc_core::Bytes) -> ipc_core::Bytes;
}

/// The implementation of [`Bench`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BenchImpl;

impl Bench for BenchImpl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: ipc_core::Bytes) -> ipc_core::Bytes {
        data
    }
}

pub mod columns;
pub mod raw;
pub mod tarpc_col;
