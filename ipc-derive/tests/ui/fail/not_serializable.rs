use ipc_core::expose;

pub struct Opaque;

#[expose]
pub trait Store {
    async fn put(&self, key: u32, value: Opaque);
    async fn get(&self, key: u32) -> Option<Opaque>;
}

fn main() {}
