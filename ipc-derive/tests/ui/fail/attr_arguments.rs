use ipc_core::expose;

#[expose(foo)]
pub trait Store {
    async fn len(&self) -> u64;
}

fn main() {}
