use ipc_core::expose;

#[expose]
pub trait Store {
    const CAPACITY: usize;
    async fn len(&self) -> u64;
}

fn main() {}
