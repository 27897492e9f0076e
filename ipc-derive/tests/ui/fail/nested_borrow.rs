use std::borrow::Cow;

use ipc_core::expose;

#[expose]
pub trait Directory {
    async fn lookup(&self, names: Vec<&str>) -> Option<Cow<'_, str>>;
}

fn main() {}
