use ipc_core::expose;

#[expose]
pub trait Registry {
    async fn get(&'static self) -> u64;
}

fn main() {}
