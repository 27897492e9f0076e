use ipc_core::expose;

#[expose]
pub trait Store {
    #[idempotent(always)]
    async fn get(&self, key: String) -> u64;
    #[idempotent]
    #[idempotent]
    async fn put(&self, key: String, value: u64);
}

fn main() {}
