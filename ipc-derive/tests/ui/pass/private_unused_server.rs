//! A private trait whose generated server (and proxy) are never used: no
//! `dead_code` or other warnings from the generated items.
#![deny(warnings)]

use ipc_core::expose;

#[expose]
trait Internal {
    async fn tick(&self, step: u32) -> u32;
}

struct Ticker;

impl Internal for Ticker {
    async fn tick(&self, step: u32) -> u32 {
        step + 1
    }
}

fn main() {
    let _future = Ticker.tick(1);
}
