use ipc_core::expose;

#[expose]
pub trait Store {
    type Item;
    async fn len(&self) -> u64;
}

fn main() {}
