//! What the example programs share: the [`Greeter`] interface served by
//! `hello-server` and called by `hello-client` (`hello-server` serves the
//! [`Calculator`] too, for clients in other languages such as the Python
//! one), the `--addr ADDR` argument
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
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ipc_core::{Address, DEFAULT_ADDR, expose};
use serde::{Deserialize, Serialize};

pub mod chat;
pub mod cluster;

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

/// The error of [`Calculator::div`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivideByZero,
}

/// The calculator of the README, served by `hello-server` beside the
/// [`Greeter`].
#[expose]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`, failing on a zero divisor.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

/// The implementation `hello-server` serves (`add` wraps around on overflow).
#[derive(Debug, Clone, Copy, Default)]
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a.wrapping_div(b))
        }
    }
}

/// The command line of a hello program: `[--addr ADDR] [security options]
/// [ARGS...]`.
///
/// Security options (all take a file path):
///
/// | option | meaning |
/// |---|---|
/// | `--key-file PATH` | the shared authentication key (both sides) |
/// | `--cert PATH`, `--key PATH` | a certificate chain and its private key, PEM: the server's for TLS, or the client's for mutual TLS |
/// | `--client-ca PATH` | (server) require client certificates signed by this CA: mutual TLS |
/// | `--ca PATH` | (client) trust this CA for the server's certificate |
/// | `--metrics HOST:PORT` | (server) serve Prometheus metrics at `http://HOST:PORT/metrics` |
///
/// TLS is used when the address is `tls://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Args {
    /// The address from `--addr ADDR` (or `--addr=ADDR`), where `ADDR` is
    /// `HOST:PORT`, `tcp:HOST:PORT`, `tls://HOST:PORT` or `unix:PATH` (see
    /// [`Address`]); [`DEFAULT_ADDR`] (`localhost:9099`) when absent.
    pub addr: Address,
    /// `--key-file PATH`.
    pub key_file: Option<PathBuf>,
    /// `--cert PATH`.
    pub cert: Option<PathBuf>,
    /// `--key PATH`.
    pub key: Option<PathBuf>,
    /// `--client-ca PATH`.
    pub client_ca: Option<PathBuf>,
    /// `--ca PATH`.
    pub ca: Option<PathBuf>,
    /// `--metrics HOST:PORT`: where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
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

/// The options that take a value.
const VALUED: [&str; 7] = [
    "--addr",
    "--key-file",
    "--cert",
    "--key",
    "--client-ca",
    "--ca",
    "--metrics",
];

impl Args {
    /// Parses the arguments after the program name, e.g.
    /// `Args::parse(std::env::args().skip(1))`.
    ///
    /// # Errors
    ///
    /// [`ArgsError::Help`] for `-h`/`--help`; [`ArgsError::Invalid`] for an
    /// unknown option, a missing value, a malformed `--addr`, or an option
    /// given twice.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ArgsError> {
        let mut values: [Option<String>; 7] = Default::default();
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(ArgsError::Help);
            }
            if arg == "--" {
                rest.extend(args.by_ref());
                break;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => {
                    (name.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let Some(slot) = VALUED.iter().position(|o| *o == name) else {
                if arg.starts_with('-') && arg != "-" {
                    return Err(ArgsError::Invalid(format!("unknown option `{arg}`")));
                }
                rest.push(arg);
                continue;
            };
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| ArgsError::Invalid(format!("`{name}` needs a value")))?,
            };
            if values[slot].replace(value).is_some() {
                return Err(ArgsError::Invalid(format!("`{name}` given twice")));
            }
        }
        let [addr, key_file, cert, key, client_ca, ca, metrics] = values;
        Ok(Self {
            addr: match addr {
                Some(a) => parse_addr(&a)?,
                None => Address::from(DEFAULT_ADDR),
            },
            key_file: key_file.map(PathBuf::from),
            cert: cert.map(PathBuf::from),
            key: key.map(PathBuf::from),
            client_ca: client_ca.map(PathBuf::from),
            ca: ca.map(PathBuf::from),
            metrics: match metrics {
                Some(m) => Some(m.parse().map_err(|e| {
                    ArgsError::Invalid(format!(
                        "`--metrics {m}`: {e} (give an IP address and a port, e.g. 127.0.0.1:9100)"
                    ))
                })?),
                None => None,
            },
            rest,
        })
    }

    /// A server builder for these options: the address, the shared key, TLS.
    ///
    /// # Errors
    ///
    /// A message saying which option is wrong (a file that cannot be read,
    /// TLS options without a `tls://` address...).
    pub fn server(&self) -> Result<ipc_core::ServerBuilder, String> {
        let mut builder = ipc_core::Server::builder().addr(&self.addr);
        if let Some(path) = &self.key_file {
            builder =
                builder.auth_key(ipc_core::AuthKey::from_file(path).map_err(|e| e.to_string())?);
        }
        if self.ca.is_some() {
            return Err("`--ca` is a client option (the server uses `--client-ca`)".into());
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let mut tls =
                    ipc_core::TlsServer::from_pem_files(cert, key).map_err(|e| e.to_string())?;
                if let Some(ca) = &self.client_ca {
                    tls = tls
                        .require_client_certificates(ca)
                        .map_err(|e| e.to_string())?;
                }
                builder = builder.tls(tls);
            }
            (None, None) if self.client_ca.is_none() => {}
            _ => return Err("TLS needs both `--cert` and `--key`".into()),
        }
        Ok(builder)
    }

    /// A client builder for these options: the address, the shared key, TLS.
    ///
    /// # Errors
    ///
    /// A message saying which option is wrong.
    pub fn client(&self) -> Result<ipc_core::ClientBuilder, String> {
        let mut builder = ipc_core::Client::builder().addr(&self.addr);
        if let Some(path) = &self.key_file {
            builder =
                builder.auth_key(ipc_core::AuthKey::from_file(path).map_err(|e| e.to_string())?);
        }
        if self.client_ca.is_some() {
            return Err("`--client-ca` is a server option (the client uses `--ca`)".into());
        }
        if let Some(ca) = &self.ca {
            let mut tls = ipc_core::TlsClient::from_ca_file(ca).map_err(|e| e.to_string())?;
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(cert, key).map_err(|e| e.to_string())?;
                }
                (None, None) => {}
                _ => return Err("a client certificate needs both `--cert` and `--key`".into()),
            }
            builder = builder.tls(tls);
        } else if self.cert.is_some() || self.key.is_some() {
            return Err("`--cert`/`--key` on a client need `--ca` (TLS)".into());
        }
        Ok(builder)
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

/// Installs a Prometheus recorder for the `metrics` facade and serves what it
/// records as text at `http://ADDR/metrics` (on the current runtime). Call
/// it before starting a server, whose metric handles are taken from the
/// recorder installed then. Metric names: [`ipc_core::telemetry`].
///
/// # Errors
///
/// The address cannot be bound, or another recorder is installed.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
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

    /// Arguments with `addr` and `rest` and no security option.
    fn plain(addr: Address, rest: Vec<String>) -> Args {
        Args {
            addr,
            key_file: None,
            cert: None,
            key: None,
            client_ca: None,
            ca: None,
            metrics: None,
            rest,
        }
    }

    fn invalid(args: &[&str]) -> bool {
        matches!(parse(args), Err(ArgsError::Invalid(_)))
    }

    #[test]
    fn addr_defaults_to_localhost_9099() {
        assert_eq!(
            parse(&["World"]),
            Ok(plain(Address::from("localhost:9099"), vec!["World".into()]))
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
                Ok(plain(Address::from("127.0.0.1:7000"), vec!["World".into()]))
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
                Ok(plain(Address::Unix(path.into()), vec!["World".into()]))
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
    fn security_options_are_read_and_checked() {
        let args = parse(&[
            "--addr",
            "tls://127.0.0.1:9443",
            "--key-file",
            "k",
            "--cert=c.pem",
            "--key",
            "k.pem",
            "--client-ca",
            "ca.pem",
            "NAME",
        ])
        .unwrap();
        assert_eq!(args.addr, Address::Tls("127.0.0.1:9443".into()));
        assert_eq!(args.key_file.as_deref(), Some(std::path::Path::new("k")));
        assert_eq!(args.cert.as_deref(), Some(std::path::Path::new("c.pem")));
        assert_eq!(args.key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert_eq!(
            args.client_ca.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(args.rest, ["NAME"]);
        assert!(invalid(&["--key-file"]));
        assert!(invalid(&["--ca", "a", "--ca", "b"]));
        // Options meant for the other side, or half of a pair.
        assert!(parse(&["--ca", "ca.pem"]).unwrap().server().is_err());
        assert!(parse(&["--client-ca", "ca.pem"]).unwrap().client().is_err());
        assert!(parse(&["--cert", "c.pem"]).unwrap().server().is_err());
        // A key file that does not exist is named.
        let e = parse(&["--key-file", "/nonexistent/key"])
            .unwrap()
            .server()
            .unwrap_err();
        assert!(e.contains("/nonexistent/key"), "{e}");
    }

    #[test]
    fn help_is_asked_for() {
        assert_eq!(parse(&["World", "--help"]), Err(ArgsError::Help));
        assert_eq!(parse(&["-h"]), Err(ArgsError::Help));
    }
}
