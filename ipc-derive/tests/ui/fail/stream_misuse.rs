use ipc_core::{expose, Streaming};

#[expose]
pub trait Feed {
    // Not as an argument (yet).
    async fn upload(&self, items: Streaming<u8>) -> u64;
    // Not inside another type.
    async fn many(&self) -> Vec<Streaming<u64>>;
    async fn maybe(&self) -> Option<Streaming<u64>>;
    // Not a stream of streams.
    async fn nested(&self) -> Streaming<Streaming<u64>>;
    // Not as the error of a `Result`.
    async fn backwards(&self) -> Result<u64, Streaming<u64>>;
    // Not retried, not one-way.
    #[idempotent]
    async fn retried(&self) -> Streaming<u64>;
    #[oneway]
    async fn fire(&self) -> Streaming<u64>;
}

fn main() {}
