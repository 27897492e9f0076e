//! What the example programs share: the [`Greeter`] interface served by
//! `hello-server` and called by `hello-client`, the `--addr ADDR` argument
//! both accept (`HOST:PORT` for TCP, `unix:PATH` for a Unix domain socket),
//! and logging set up from `RUST_LOG`.
//!
//! Run them in two terminals:
//!
//! ```text
//! cargo run -p ipc-examples --bin hello-server
//! cargo run -p ipc-examples --bin hello-client -- World
//! ```
//!
//! or, over a Unix domain socket:
//!
//! ```text
//! cargo run -p ipc-examples --bin hello-server -- --addr unix:/tmp/hello.sock
//! cargo run -p ipc-examples --bin hello-client -- --addr unix:/tmp/hello.sock World
//! ```

use std::io;
use std::process::ExitCode;

use ipc_core::{Address, DEFAULT_ADDR, expose};

pub mod chat;

/// A remote interface with one method. `#[expose]` also generates
/// `GreeterServer<T>`, which serves an implementation, and `GreeterProxy`,
/// which calls one from another process.
#[expose]
pub trait Greeter {
    /// Returns a greeting for `name`.
    async fn greet(&self, name: String) -> String;
    /// Returns the same greeting after waiting `delay_ms` milliseconds: a
    /// slow call, to watch a graceful shutdown let it finish.
    async fn greet_after(&self, name: String, delay_ms: u64) -> String;
}

/// The implementation `hello-server` serves: `greet("World")` is `"Hello, World!"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hello;

impl Greeter for Hello {
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }

    async fn greet_after(&self, name: String, delay_ms: u64) -> String {
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        self.greet(name).await
    }
}

/// The command line of a hello program: `[--addr ADDR] [ARGS...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The address from `--addr ADDR` (or `--addr=ADDR`), where `ADDR` is
    /// `HOST:PORT`, `tcp:HOST:PORT` or `unix:PATH` (see [`Address`]);
    /// [`DEFAULT_ADDR`] (`localhost:9099`) when absent.
    pub addr: Address,
    /// The other arguments, in order. `--` ends the options, so a name may
    /// start with `-`.
    pub rest: Vec<String>,
}

/// Why [`Args::parse`] did not return arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// `-h` or `--help` was given: print the usage and exit 0.
    Help,
    /// The arguments are wrong, for the reason given: print it with the usage
    /// and exit 2.
    Invalid(String),
}

impl Args {
    /// Parses the arguments after the program name, e.g.
    /// `Args::parse(std::env::args().skip(1))`.
    ///
    /// # Errors
    ///
    /// [`ArgsError::Help`] for `-h`/`--help`; [`ArgsError::Invalid`] for an
    /// unknown option, a missing or malformed `--addr` value, or `--addr` twice.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ArgsError> {
        let mut addr = None;
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let value = match arg.as_str() {
                "-h" | "--help" => return Err(ArgsError::Help),
                "--" => {
                    rest.extend(args.by_ref());
                    break;
                }
                "--addr" => args
                    .next()
                    .ok_or_else(|| ArgsError::Invalid("`--addr` needs a value".into()))?,
                other => match other.strip_prefix("--addr=") {
                    Some(value) => value.to_owned(),
                    None if other.starts_with('-') && other != "-" => {
                        return Err(ArgsError::Invalid(format!("unknown option `{other}`")));
                    }
                    None => {
                        rest.push(arg);
                        continue;
                    }
                },
            };
            if addr.is_some() {
                return Err(ArgsError::Invalid("`--addr` given twice".into()));
            }
            addr = Some(parse_addr(&value)?);
        }
        Ok(Self {
            addr: addr.unwrap_or_else(|| Address::from(DEFAULT_ADDR)),
            rest,
        })
    }
}

fn parse_addr(value: &str) -> Result<Address, ArgsError> {
    value.parse().map_err(|_| {
        ArgsError::Invalid(format!(
            "invalid address `{value}`: expected HOST:PORT or unix:PATH, \
             for example {DEFAULT_ADDR} or unix:/tmp/hello.sock"
        ))
    })
}

/// Logs to stderr at the level `RUST_LOG` asks for (for example
/// `RUST_LOG=ipc_core=debug`); warnings and errors only when it is unset.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already set, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Starts `server`, prints `listening on ADDR` (flushed: whoever started the
/// program may be waiting for that line), serves until Ctrl-C (SIGINT) or
/// SIGTERM, then shuts down gracefully: calls in flight finish, a Unix
/// socket file is removed, and the exit code is 0. Errors (a busy address,
/// no signal handler) are printed to stderr prefixed with `program`, and
/// give a failing exit code at once.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn serve_until_signal(program: &str, server: ipc_core::ServerBuilder) -> ExitCode {
    let fail = |why: String| {
        eprintln!("{program}: {why}");
        ExitCode::FAILURE
    };
    // Catch the signals before saying we are up, so they always mean "shut down".
    let signal = match ipc_core::shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => return fail(format!("cannot catch Ctrl-C and SIGTERM: {e}")),
    };
    let server = match server.start().await {
        Ok(server) => server,
        // A busy port fails here at once; the message names the address.
        Err(e) => return fail(e.to_string()),
    };
    println!("listening on {}", server.local_addr());
    let _ = io::Write::flush(&mut io::stdout());

    signal.await;
    println!("shutting down");
    let _ = io::Write::flush(&mut io::stdout());
    // Refuses new connections and lets calls in flight finish.
    server.stop().await;
    println!("stopped");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, ArgsError> {
        Args::parse(args.iter().map(|s| (*s).to_owned()))
    }

    fn invalid(args: &[&str]) -> bool {
        matches!(parse(args), Err(ArgsError::Invalid(_)))
    }

    #[test]
    fn addr_defaults_to_localhost_9099() {
        assert_eq!(
            parse(&["World"]),
            Ok(Args {
                addr: Address::from("localhost:9099"),
                rest: vec!["World".into()],
            })
        );
    }

    #[test]
    fn addr_is_taken_in_either_form_and_any_position() {
        for args in [
            &["--addr", "127.0.0.1:7000", "World"][..],
            &["World", "--addr", "127.0.0.1:7000"][..],
            &["--addr=127.0.0.1:7000", "World"][..],
        ] {
            assert_eq!(
                parse(args),
                Ok(Args {
                    addr: Address::from("127.0.0.1:7000"),
                    rest: vec!["World".into()],
                })
            );
        }
    }

    #[test]
    fn addr_may_be_a_unix_socket_path() {
        for (args, path) in [
            (
                &["--addr", "unix:/tmp/hello.sock", "World"][..],
                "/tmp/hello.sock",
            ),
            (&["--addr=unix:hello.sock", "World"][..], "hello.sock"),
        ] {
            assert_eq!(
                parse(args),
                Ok(Args {
                    addr: Address::Unix(path.into()),
                    rest: vec!["World".into()],
                })
            );
        }
        assert_eq!(
            parse(&["--addr", "tcp:127.0.0.1:7000"]).map(|a| a.addr),
            Ok(Address::from("127.0.0.1:7000"))
        );
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(
            parse(&["--", "--addr"]).map(|a| a.rest),
            Ok(vec!["--addr".to_owned()])
        );
    }

    #[test]
    fn bad_usage_is_invalid() {
        assert!(invalid(&["--addr"]));
        assert!(invalid(&["--addr", "nonsense"]));
        assert!(invalid(&["--addr", "host:notaport"]));
        assert!(invalid(&["--addr", "unix:"]));
        assert!(invalid(&["--addr", "a:1", "--addr", "b:2"]));
        assert!(invalid(&["--verbose"]));
    }

    #[test]
    fn help_is_asked_for() {
        assert_eq!(parse(&["World", "--help"]), Err(ArgsError::Help));
        assert_eq!(parse(&["-h"]), Err(ArgsError::Help));
    }
}
