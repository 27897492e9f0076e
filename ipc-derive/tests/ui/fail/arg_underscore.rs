use ipc_core::expose;

#[expose]
pub trait Sink {
    async fn put(&self, _: String);
}

fn main() {}
