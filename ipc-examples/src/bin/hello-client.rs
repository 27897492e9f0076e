//! Asks a running `hello-server` to greet someone and prints the answer.
//!
//! ```text
//! hello-client [--addr HOST:PORT|unix:PATH] NAME      (default localhost:9099)
//! ```
//!
//! Prints `Hello, NAME!` and exits 0; prints the error to stderr and exits 1
//! if the call fails (no server, wrong object...); exits 2 on bad usage.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use ipc_core::{Address, Client, Error};
use ipc_examples::{Args, ArgsError, GreeterProxy};

const USAGE: &str =
    "usage: hello-client [--addr HOST:PORT|unix:PATH] NAME   (default localhost:9099)";

#[tokio::main]
async fn main() -> ExitCode {
    ipc_examples::init_tracing();
    let (addr, name) = match Args::parse(std::env::args().skip(1)) {
        Ok(Args { addr, mut rest }) if rest.len() == 1 => (addr, rest.remove(0)),
        Ok(Args { rest, .. }) if rest.is_empty() => return usage_error("missing NAME"),
        Ok(_) => return usage_error("expected exactly one NAME"),
        Err(ArgsError::Invalid(why)) => return usage_error(&why),
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
    };

    match greet(addr, name).await {
        Ok(greeting) => {
            println!("{greeting}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // For example: "could not connect to localhost:9099: Connection refused".
            eprintln!("hello-client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn greet(addr: Address, name: String) -> Result<String, Error> {
    let client = Client::connect(addr).await?;
    let greeter: GreeterProxy = client.get_exposed_object().await?;
    greeter.greet(name).await
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("hello-client: {why}\n{USAGE}");
    ExitCode::from(2)
}
