use ipc_core::expose;

#[expose]
pub trait Geometry {
    async fn area(&self, (w, h): (i32, i32)) -> i32;
}

fn main() {}
