use ipc_core::expose;

#[expose]
pub trait Config {
    async fn name(&self) -> &str;
}

fn main() {}
