use ipc_core::expose;

#[expose]
pub trait Store<T> {
    async fn len(&self) -> u64;
}

fn main() {}
