use ipc_core::expose;

#[expose]
pub trait Registry {
    async fn get(&self) -> u64
    where
        Self: Sized;
}

fn main() {}
