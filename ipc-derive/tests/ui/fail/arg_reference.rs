use ipc_core::expose;

#[expose]
pub trait Greeter {
    async fn greet(&self, name: &str) -> String;
}

fn main() {}
