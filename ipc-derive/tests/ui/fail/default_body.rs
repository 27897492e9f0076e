use ipc_core::expose;

#[expose]
pub trait Greeter {
    async fn greet(&self, name: String) -> String {
        format!("hello, {name}")
    }
}

fn main() {}
