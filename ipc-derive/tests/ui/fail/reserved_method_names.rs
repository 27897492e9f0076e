use ipc_core::expose;

#[expose]
pub trait Registry {
    async fn object_name(&self) -> String;
    async fn clone(&self) -> u64;
}

fn main() {}
