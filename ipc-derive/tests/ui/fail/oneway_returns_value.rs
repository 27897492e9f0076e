use ipc_core::expose;

#[expose]
pub trait Log {
    #[oneway]
    async fn write(&self, line: String) -> u64;
    #[oneway(fast)]
    async fn flush(&self);
}

fn main() {}
