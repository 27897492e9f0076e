use ipc_core::expose;

#[expose]
pub trait Feature {
    #[cfg(unix)]
    async fn extra(&self) -> u32;
    async fn always(&self) -> u32;
}

fn main() {}
