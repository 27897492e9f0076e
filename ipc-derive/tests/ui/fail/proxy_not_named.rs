use ipc_core::{expose, Client};

#[expose]
pub trait Kv {
    async fn get(&self, key: String) -> Option<String>;
}

async fn run(client: Client) {
    // Not a proxy type: the proxy is `KvProxy`.
    let kv: String = client.get_exposed_object().await.unwrap();
    let _ = kv;
}

fn main() {
    let _ = run;
}
