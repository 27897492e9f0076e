//! A server process for tests that kill it: exposes [`ipc_tests::Gate`] on a
//! free loopback port, prints `listening on ADDR`, and serves until killed.

use std::io::Write;

use ipc_core::Server;
use ipc_tests::{GateImpl, GateServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (gate, _started) = GateImpl::new();
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .expose(GateServer::new(gate))
        .start()
        .await?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", server.local_addr())?;
    out.flush()?;
    server.stopped().await;
    Ok(())
}
