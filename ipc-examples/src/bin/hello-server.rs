//! Serves the [`Greeter`](ipc_examples::Greeter) until Ctrl-C, then shuts
//! down gracefully.
//!
//! ```text
//! hello-server [--addr HOST:PORT|unix:PATH]      (default localhost:9099)
//! ```
//!
//! Prints `listening on ADDR` once the address is bound. Exits 0 after a Ctrl-C
//! (SIGINT), non-zero at once if the address cannot be bound, 2 on bad usage.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;

use ipc_core::Server;
use ipc_examples::{Args, ArgsError, GreeterServer, Hello};

const USAGE: &str = "usage: hello-server [--addr HOST:PORT|unix:PATH]   (default localhost:9099)";

#[tokio::main]
async fn main() -> ExitCode {
    ipc_examples::init_tracing();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) if args.rest.is_empty() => args,
        Ok(args) => return usage_error(&format!("unexpected argument `{}`", args.rest[0])),
        Err(ArgsError::Invalid(why)) => return usage_error(&why),
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
    };

    // Catch Ctrl-C before saying we are up, so it always means "shut down".
    let ctrl_c = match ipc_examples::ctrl_c() {
        Ok(ctrl_c) => ctrl_c,
        Err(e) => return fail(&format!("cannot catch Ctrl-C: {e}")),
    };

    let server = match Server::builder()
        .addr(args.addr)
        .expose(GreeterServer::new(Hello))
        .start()
        .await
    {
        Ok(server) => server,
        // A busy port fails here at once; the message names the address.
        Err(e) => return fail(&e.to_string()),
    };
    println!("listening on {}", server.local_addr());
    // Whoever started us may be waiting for that line.
    let _ = std::io::stdout().flush();

    ctrl_c.await;
    println!("Ctrl-C: shutting down");
    // Refuses new connections and lets calls in flight finish.
    server.stop().await;
    println!("stopped");
    ExitCode::SUCCESS
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("hello-server: {why}\n{USAGE}");
    ExitCode::from(2)
}

fn fail(why: &str) -> ExitCode {
    eprintln!("hello-server: {why}");
    ExitCode::FAILURE
}
