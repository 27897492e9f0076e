use ipc_core::expose;

#[expose]
pub trait Clock {
    fn now(&self) -> u64;
}

fn main() {}
