use ipc_core::expose;

#[expose]
pub trait Internals {
    async fn __ipc_call(&self) -> u64;
    async fn lookup(&self, __ipc_args: Vec<u8>) -> u64;
}

fn main() {}
