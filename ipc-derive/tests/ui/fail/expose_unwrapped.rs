use ipc_core::{expose, Server};

#[expose]
pub trait Kv {
    async fn get(&self, key: String) -> Option<String>;
}

struct Store;

impl Kv for Store {
    async fn get(&self, _key: String) -> Option<String> {
        None
    }
}

fn main() {
    // The implementation itself, not wrapped in `KvServer::new`.
    let _ = Server::builder().expose(Store);
}
