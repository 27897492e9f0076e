use ipc_core::expose;

#[expose]
pub trait Kv {
    async fn get(&self, key: String) -> Option<String>;
}

struct Store;

impl Kv for Store {
    // `async` forgotten in the implementation.
    fn get(&self, _key: String) -> Option<String> {
        None
    }
}

fn main() {}
