use ipc_core::expose;

#[expose]
pub trait Factory {
    async fn create(name: String) -> u64;
}

fn main() {}
