use std::rc::Rc;

use ipc_core::expose;

#[expose]
pub trait Counter {
    async fn next(&self) -> u64;
}

struct Local;

impl Counter for Local {
    async fn next(&self) -> u64 {
        let n = Rc::new(1);
        tokio::task::yield_now().await;
        *n
    }
}

fn main() {}
