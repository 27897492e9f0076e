use ipc_core::{expose, Remote};

#[expose]
pub trait Listener {
    async fn on_event(&self, event: String);
}

#[expose]
pub trait Other {
    async fn other(&self);
}

struct Impl;
impl Other for Impl {
    async fn other(&self) {}
}

fn main() {
    // A server of another trait cannot stand for a `Listener`.
    let _: Remote<ListenerProxy> = Remote::new(OtherServer::new(Impl));
    // Nor can the implementation itself, unwrapped.
    let _: Remote<OtherProxy> = Remote::new(Impl);
}
