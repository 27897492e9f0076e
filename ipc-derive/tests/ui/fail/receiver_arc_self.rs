use std::sync::Arc;

use ipc_core::expose;

#[expose]
pub trait Shared {
    async fn get(self: Arc<Self>) -> u64;
}

fn main() {}
