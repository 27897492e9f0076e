//! Asks a running `hello-server` to greet someone and prints the answer.
//!
//! ```text
//! hello-client [--addr HOST:PORT|unix:PATH] [--delay MS] NAME   (default localhost:9099)
//! hello-client [--addr HOST:PORT|unix:PATH] --list              (the server's objects)
//! ```
//!
//! Prints `Hello, NAME!` and exits 0 (with `--delay MS`, the server waits
//! that many milliseconds before answering: a slow call); prints the error to stderr and exits 1
//! if the call fails (no server, wrong object...); exits 2 on bad usage.
//! With `--list`, prints one line per exposed object (name, trait,
//! fingerprint) followed by its methods, then exits 0.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use ipc_core::{Client, Error};
use ipc_examples::{Args, ArgsError, GreeterProxy};

const USAGE: &str = "usage: hello-client [--addr HOST:PORT|tls://HOST:PORT|unix:PATH] \
     [--key-file PATH] [--ca CA.pem [--cert C.pem --key K.pem]] ([--delay MS] NAME | --list)   \
     (default localhost:9099)";

#[tokio::main]
async fn main() -> ExitCode {
    ipc_examples::init_tracing();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let list = take_flag(&mut args, "--list");
    let delay = match take_value(&mut args, "--delay").map(|v| v.map(|v| v.parse::<u64>())) {
        Ok(None) => None,
        Ok(Some(Ok(ms))) => Some(ms),
        Ok(Some(Err(_))) | Err(()) => {
            return usage_error("`--delay` needs a number of milliseconds");
        }
    };
    if list && delay.is_some() {
        return usage_error("--delay goes with a NAME, not --list");
    }
    if list {
        return match Args::parse(args) {
            Ok(args) if args.rest.is_empty() => match print_objects(&args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hello-client: {e}");
                    ExitCode::FAILURE
                }
            },
            Ok(_) => usage_error("--list takes no NAME"),
            Err(ArgsError::Invalid(why)) => usage_error(&why),
            Err(ArgsError::Help) => {
                println!("{USAGE}");
                ExitCode::SUCCESS
            }
        };
    }
    let (args, name) = match Args::parse(args) {
        Ok(mut args) if args.rest.len() == 1 => {
            let name = args.rest.remove(0);
            (args, name)
        }
        Ok(args) if args.rest.is_empty() => return usage_error("missing NAME"),
        Ok(_) => return usage_error("expected exactly one NAME"),
        Err(ArgsError::Invalid(why)) => return usage_error(&why),
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
    };

    match greet(&args, name, delay).await {
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

/// Connects as the options say (address, key, TLS).
async fn connect(args: &Args) -> Result<Client, Error> {
    match args.client() {
        Ok(builder) => builder.connect().await,
        Err(detail) => Err(Error::Config { detail }),
    }
}

async fn greet(args: &Args, name: String, delay: Option<u64>) -> Result<String, Error> {
    let client = connect(args).await?;
    let greeter: GreeterProxy = client.get_exposed_object().await?;
    match delay {
        Some(ms) => greeter.greet_after(name, ms).await,
        None => greeter.greet(name).await,
    }
}

/// Prints the server's object directory.
async fn print_objects(args: &Args) -> Result<(), Error> {
    let client = connect(args).await?;
    for object in client.objects().await? {
        println!(
            "{} (trait {}, fingerprint {:016x})",
            object.name, object.trait_name, object.fingerprint
        );
        for m in &object.methods {
            let marks: Vec<&str> = [
                (m.oneway, "oneway"),
                (m.idempotent, "idempotent"),
                (m.streaming, "stream"),
                (m.object_args, "takes objects"),
                (m.object_return, "returns objects"),
            ]
            .into_iter()
            .filter_map(|(on, mark)| on.then_some(mark))
            .collect();
            if marks.is_empty() {
                println!("    {}", m.signature);
            } else {
                println!("    {} [{}]", m.signature, marks.join(", "));
            }
        }
    }
    Ok(())
}

/// Where the options end: at `--`, after which everything is a NAME.
fn options_end(args: &[String]) -> usize {
    args.iter().position(|a| a == "--").unwrap_or(args.len())
}

/// Removes `flag` from the options; whether it was there.
fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    match args[..options_end(args)].iter().position(|a| a == flag) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    }
}

/// Removes `option VALUE` from the options; the value, if the option was
/// there; `Err` if it was there without a value.
fn take_value(args: &mut Vec<String>, option: &str) -> Result<Option<String>, ()> {
    let end = options_end(args);
    match args[..end].iter().position(|a| a == option) {
        Some(i) if i + 1 < end => {
            args.remove(i);
            Ok(Some(args.remove(i)))
        }
        Some(_) => Err(()),
        None => Ok(None),
    }
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("hello-client: {why}\n{USAGE}");
    ExitCode::from(2)
}
