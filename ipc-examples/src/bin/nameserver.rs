//! Serves only a [name server](ipc_core::nameserver) until Ctrl-C or SIGTERM, then shuts
//! down gracefully.
//!
//! ```text
//! nameserver [--addr HOST:PORT|unix:PATH]      (default localhost:9090)
//! ```
//!
//! The default port, 9090, is the one Pyro4's name server uses (the objects'
//! own servers default to 9099). Idle connections are never closed: a
//! process's registrations last exactly as long as its connection.
//!
//! Prints `listening on ADDR` once the address is bound. Exits 0 after Ctrl-C
//! (SIGINT) or SIGTERM (calls in flight finish first), non-zero at once if
//! the address cannot be bound, 2 on bad usage.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use ipc_core::Address;
use ipc_core::nameserver::DEFAULT_NAME_SERVER_ADDR;
use ipc_examples::{Args, ArgsError};

const USAGE: &str = "usage: nameserver [--addr HOST:PORT|unix:PATH]   (default localhost:9090)";

#[tokio::main]
async fn main() -> ExitCode {
    ipc_examples::init_tracing();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `Args` defaults to the objects' port; the name server has its own.
    let addr_given = argv
        .iter()
        .any(|a| a == "--addr" || a.starts_with("--addr="));
    let args = match Args::parse(argv) {
        Ok(args) if args.rest.is_empty() => args,
        Ok(args) => return usage_error(&format!("unexpected argument `{}`", args.rest[0])),
        Err(ArgsError::Invalid(why)) => return usage_error(&why),
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
    };
    let addr = if addr_given {
        args.addr.clone()
    } else {
        Address::from(DEFAULT_NAME_SERVER_ADDR)
    };

    let server = match args.server() {
        Ok(builder) => builder,
        Err(why) => return usage_error(&why),
    };
    let server = server
        .addr(addr)
        // Registrations end with their connection: never close quiet ones.
        .idle_timeout(None)
        .name_server();
    ipc_examples::serve_until_signal("nameserver", server).await
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("nameserver: {why}\n{USAGE}");
    ExitCode::from(2)
}
