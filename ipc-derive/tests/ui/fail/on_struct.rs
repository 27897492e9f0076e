use ipc_core::expose;

#[expose]
pub struct Store {
    pub len: u64,
}

fn main() {}
