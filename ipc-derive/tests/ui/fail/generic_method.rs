use ipc_core::expose;

#[expose]
pub trait Store {
    async fn put<T>(&self, value: T);
}

fn main() {}
