//! Serves the [`Greeter`](ipc_examples::Greeter) and the
//! [`Calculator`](ipc_examples::Calculator) until Ctrl-C or SIGTERM, then
//! shuts down gracefully.
//!
//! ```text
//! hello-server [--addr HOST:PORT|unix:PATH]      (default localhost:9099)
//! hello-server --key-file KEY                     (clients must prove they hold KEY)
//! hello-server --addr tls://HOST:PORT --cert CHAIN.pem --key KEY.pem [--client-ca CA.pem]
//! hello-server --metrics 127.0.0.1:9100              (Prometheus text at /metrics)
//! ```
//!
//! Prints `listening on ADDR` once the address is bound. Exits 0 after Ctrl-C
//! (SIGINT) or SIGTERM (calls in flight finish first), non-zero at once if
//! the address cannot be bound, 2 on bad usage.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use ipc_examples::{Args, ArgsError, Calc, CalculatorServer, GreeterServer, Hello};

const USAGE: &str = "usage: hello-server [--addr HOST:PORT|tls://HOST:PORT|unix:PATH] \
     [--key-file PATH] [--cert CHAIN.pem --key KEY.pem [--client-ca CA.pem]] \
     [--metrics IP:PORT]   (default localhost:9099)";

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

    if let Some(addr) = args.metrics {
        // Before the server starts: it takes its metric handles then.
        if let Err(why) = ipc_examples::serve_metrics(addr) {
            eprintln!("hello-server: {why}");
            return ExitCode::FAILURE;
        }
        println!("metrics on http://{addr}/metrics");
    }
    let server = match args.server() {
        Ok(builder) => builder
            .expose(GreeterServer::new(Hello))
            .expose(CalculatorServer::new(Calc)),
        Err(why) => return usage_error(&why),
    };
    ipc_examples::serve_until_signal("hello-server", server).await
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("hello-server: {why}\n{USAGE}");
    ExitCode::from(2)
}
