use ipc_core::expose;

#[expose]
pub trait Store {
    async fn get<'a>(&'a self, key: String) -> String;
}

fn main() {}
