//! `#[idempotent]` is accepted, stripped from the trait, and recorded in the
//! proxy's descriptor.
#![deny(warnings, missing_docs)]

use ipc_core::{Proxy, expose};

/// A store.
#[expose]
pub trait Store {
    /// Reads a value: safe to retry.
    #[idempotent]
    async fn get(&self, key: String) -> u64;
    /// Writes a value: not retried.
    async fn put(&self, key: String, value: u64);
    /// Fire and forget.
    #[oneway]
    async fn touch(&self, key: String);
    /// Fire and forget, written with an explicit `()`.
    #[oneway]
    async fn ping(&self) -> ();
}

struct Mem;

impl Store for Mem {
    async fn get(&self, _key: String) -> u64 {
        1
    }
    async fn put(&self, _key: String, _value: u64) {}
    async fn touch(&self, _key: String) {}
    async fn ping(&self) {}
}

fn main() {
    let methods = <StoreProxy as Proxy>::DESCRIPTOR.methods;
    assert!(methods[0].idempotent);
    assert!(!methods[1].idempotent);
    assert!(methods[2].oneway && methods[3].oneway && !methods[0].oneway);
    let _per_connection = StoreServer::per_connection(|| Mem);
    let _server = StoreServer::new(Mem);
}
