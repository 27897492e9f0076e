use ipc_core::expose;

#[expose]
pub trait Session {
    async fn close(self);
}

fn main() {}
