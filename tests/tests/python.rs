//! The Python client's test suite, run against real servers.
//!
//! This test starts the servers the suite needs — the examples' `Greeter`
//! and `Calculator`, a `Kitchen` covering every type shape, a server with a
//! shared key, one on a Unix socket, and a `Control` object through which
//! the Python tests start, stop, abort and swap servers of their own — then
//! runs `python3 -m unittest discover -s python/tests` with their addresses
//! in environment variables, and fails when any Python test fails, printing
//! the suite's output. `IPC_PYTHON_TESTS="pattern other"` runs only the
//! Python tests matching one of the patterns (`unittest -k`).
//!
//! `python3` (3.9 or later) must be on `PATH` (or named by `IPC_PYTHON`, to
//! run the suite with another interpreter): without it this test fails,
//! saying how to install it. It is never skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipc_core::{Bytes, Remote, Server, ServerBuilder, ServerHandle, Streaming, expose};
use ipc_examples::{Calc, CalculatorServer, GreeterProxy, GreeterServer, Hello};
use serde::{Deserialize, Serialize};

/// The key of the key-protected server.
const KEY: &str = "python-suite-shared-key-0123456789";

/// The whole suite's deadline; each Python test has its own, shorter one.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------
// Kitchen: every type shape
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    x: i32,
    y: i32,
}

/// Nests itself through an option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inner {
    label: String,
    tags: Vec<String>,
    next: Option<Box<Inner>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nothing;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meters(f64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair(u8, String);

/// An enum with every kind of variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    Empty,
    Circle(Meters),
    Rect(u32, u32),
    Poly { points: Vec<Point>, closed: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Level {
    Low,
    High,
}

/// One field of every shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Everything {
    flag: bool,
    small: i8,
    short: i16,
    int: i32,
    long: i64,
    huge: i128,
    byte: u8,
    ushort: u16,
    uint: u32,
    ulong: u64,
    uhuge: u128,
    single: f32,
    double: f64,
    letter: char,
    text: String,
    blob: Bytes,
    raw: Vec<u8>,
    maybe: Option<u64>,
    maybe_maybe: Option<Option<String>>,
    shapes: Vec<Shape>,
    levels: BTreeMap<String, Level>,
    by_id: BTreeMap<u32, Vec<Point>>,
    triple: (u8, String, Level),
    grid: [u16; 3],
    nothing: Nothing,
    unit: (),
    meters: Meters,
    pair: Pair,
    inner: Inner,
}

/// The error of `Kitchen::fail`, of every variant kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KitchenError {
    NotFound,
    Invalid { reason: String },
    Code(i32),
    Pair(u8, u8),
}

/// The type-shape service the Python suite calls.
#[expose]
pub trait Kitchen {
    /// Returns its argument.
    async fn echo(&self, value: Everything) -> Everything;
    /// The bincode encoding of its argument as this server sees it.
    async fn encoded(&self, value: Everything) -> Vec<u8>;
    /// Returns its argument.
    async fn echo_shape(&self, shape: Shape) -> Shape;
    /// Returns its argument (`ipc_core::Bytes`).
    async fn echo_bytes(&self, bytes: Bytes) -> Bytes;
    /// Returns its argument (`Vec<u8>`).
    async fn echo_vec(&self, bytes: Vec<u8>) -> Vec<u8>;
    /// `len` bytes.
    async fn sized(&self, len: u64) -> Vec<u8>;
    /// u64::MAX, i64::MIN, NaN, i128::MIN, u128::MAX, "", "ünï©ødé 🦀".
    async fn extremes(&self) -> (u64, i64, f64, i128, u128, String, String);
    /// The bits of `x`, as received.
    async fn f64_bits(&self, x: f64) -> u64;
    /// `x` made from these bits.
    async fn f64_from_bits(&self, bits: u64) -> f64;
    /// Fails with the error named by `kind`, or returns 7.
    async fn fail(&self, kind: String) -> Result<u32, KitchenError>;
    /// Panics with `message`.
    async fn panic(&self, message: String) -> u32;
    /// Sleeps `ms` milliseconds; returns `ms`.
    async fn sleep_ms(&self, ms: u64) -> u64;
    /// 0, 1, .. n-1.
    async fn count(&self, n: u64) -> Streaming<u64>;
    /// `n` shapes, or `Invalid` for n = 0.
    async fn shapes(&self, n: u64) -> Result<Streaming<Shape>, KitchenError>;
    /// 1, 2, then the producer panics.
    async fn stream_then_panic(&self) -> Streaming<u32>;
    /// Records `n`, unanswered.
    #[oneway]
    async fn note(&self, n: u64);
    /// What `note` recorded, in order.
    async fn notes(&self) -> Vec<u64>;
    /// Returns 1; safe to send again.
    #[idempotent]
    async fn ping(&self) -> u32;
    /// Takes an object: not callable from Python.
    async fn subscribe(&self, greeter: Remote<GreeterProxy>) -> u32;
}

#[derive(Default)]
struct KitchenImpl {
    notes: Mutex<Vec<u64>>,
}

impl Kitchen for KitchenImpl {
    async fn echo(&self, value: Everything) -> Everything {
        value
    }
    async fn encoded(&self, value: Everything) -> Vec<u8> {
        ipc_core::wire::encode_to_vec(&value).unwrap_or_default()
    }
    async fn echo_shape(&self, shape: Shape) -> Shape {
        shape
    }
    async fn echo_bytes(&self, bytes: Bytes) -> Bytes {
        bytes
    }
    async fn echo_vec(&self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }
    async fn sized(&self, len: u64) -> Vec<u8> {
        vec![7; usize::try_from(len).unwrap_or(0)]
    }
    async fn extremes(&self) -> (u64, i64, f64, i128, u128, String, String) {
        (
            u64::MAX,
            i64::MIN,
            f64::NAN,
            i128::MIN,
            u128::MAX,
            String::new(),
            "ünï©ødé 🦀".into(),
        )
    }
    async fn f64_bits(&self, x: f64) -> u64 {
        x.to_bits()
    }
    async fn f64_from_bits(&self, bits: u64) -> f64 {
        f64::from_bits(bits)
    }
    async fn fail(&self, kind: String) -> Result<u32, KitchenError> {
        match kind.as_str() {
            "not_found" => Err(KitchenError::NotFound),
            "invalid" => Err(KitchenError::Invalid {
                reason: "bad input".into(),
            }),
            "code" => Err(KitchenError::Code(-7)),
            "pair" => Err(KitchenError::Pair(1, 2)),
            _ => Ok(7),
        }
    }
    async fn panic(&self, message: String) -> u32 {
        panic!("{message}")
    }
    async fn sleep_ms(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn count(&self, n: u64) -> Streaming<u64> {
        Streaming::new(futures::stream::iter(0..n))
    }
    async fn shapes(&self, n: u64) -> Result<Streaming<Shape>, KitchenError> {
        if n == 0 {
            return Err(KitchenError::Invalid {
                reason: "no shapes".into(),
            });
        }
        let shapes = (0..n).map(|i| match i % 3 {
            0 => Shape::Empty,
            1 => Shape::Rect(u32::try_from(i).unwrap_or(0), 2),
            _ => Shape::Poly {
                points: vec![Point { x: -1, y: 1 }],
                closed: true,
            },
        });
        Ok(Streaming::new(futures::stream::iter(shapes)))
    }
    async fn stream_then_panic(&self) -> Streaming<u32> {
        let items = futures::stream::iter([1u32, 2, 3]).map(|i| {
            if i == 3 {
                panic!("the producer gave up")
            }
            i
        });
        Streaming::new(items)
    }
    async fn note(&self, n: u64) {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).push(n);
    }
    async fn notes(&self) -> Vec<u64> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    async fn ping(&self) -> u32 {
        1
    }
    async fn subscribe(&self, greeter: Remote<GreeterProxy>) -> u32 {
        drop(greeter);
        0
    }
}

// ---------------------------------------------------------------------------
// Versioned: one name, two versions of its trait
// ---------------------------------------------------------------------------

mod v1 {
    use ipc_core::expose;

    /// The first version.
    #[expose]
    pub trait Versioned {
        /// The version.
        async fn version(&self) -> u32;
    }

    pub struct One;

    impl Versioned for One {
        async fn version(&self) -> u32 {
            1
        }
    }
}

mod v2 {
    use ipc_core::expose;

    /// The second version: `version` takes an argument now.
    #[expose]
    pub trait Versioned {
        /// The version, plus `offset`.
        async fn version(&self, offset: u32) -> u32;
    }

    pub struct Two;

    impl Versioned for Two {
        async fn version(&self, offset: u32) -> u32 {
            2 + offset
        }
    }
}

// ---------------------------------------------------------------------------
// Control: the Python tests' handle on servers of their own
// ---------------------------------------------------------------------------

/// Starts, inspects and stops servers for the Python tests.
#[expose]
pub trait Control {
    /// Starts a server of `kind` at `addr` (`""`: a free loopback port);
    /// its address. Kinds: `calc` (Greeter and Calculator), `kitchen`,
    /// `small` (a kitchen accepting 4 KiB frames), `narrow` (a kitchen
    /// running one call at a time), `guarded` (a calculator whose `div` is
    /// refused and a hidden greeter), `v1`, `v2` (`Versioned`).
    async fn start(&self, kind: String, addr: String) -> Result<String, String>;
    /// Stops the server at `addr` gracefully, in the background.
    async fn begin_stop(&self, addr: String) -> bool;
    /// Stops the server at `addr` gracefully and waits until it has stopped.
    async fn stop(&self, addr: String) -> bool;
    /// Stops the server at `addr` at once, as if its process died.
    async fn abort(&self, addr: String) -> bool;
    /// Calls running on the server at `addr`.
    async fn in_flight(&self, addr: String) -> u64;
    /// Streams being produced by the server at `addr`.
    async fn streams(&self, addr: String) -> u64;
}

#[derive(Clone, Default)]
struct Servers(Arc<Mutex<HashMap<String, ServerHandle>>>);

impl Servers {
    fn add(&self, server: ServerHandle) -> String {
        let addr = server.local_addr().to_string();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.clone(), server);
        addr
    }

    fn take(&self, addr: &str) -> Option<ServerHandle> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr)
    }

    fn stats(&self, addr: &str) -> Option<ipc_core::server::ServerStats> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .map(ServerHandle::stats)
    }
}

struct ControlImpl {
    servers: Servers,
}

fn kind_builder(kind: &str, addr: &str) -> Result<ServerBuilder, String> {
    let addr = if addr.is_empty() { "127.0.0.1:0" } else { addr };
    let b = Server::builder()
        .addr(addr)
        .grace_period(Duration::from_secs(5));
    Ok(match kind {
        "calc" => b
            .expose(GreeterServer::new(Hello))
            .expose(CalculatorServer::new(Calc)),
        "kitchen" => b
            .max_frame_size(64 << 20)
            .expose(KitchenServer::new(KitchenImpl::default())),
        "small" => b
            .max_frame_size(4096)
            .expose(KitchenServer::new(KitchenImpl::default())),
        "narrow" => b
            .max_in_flight(1)
            .expose(KitchenServer::new(KitchenImpl::default())),
        "guarded" => b
            .authorize(|_, access| match access {
                ipc_core::Access::Call { method, .. } => method != "div",
                ipc_core::Access::Object { object } => object != "Greeter",
                _ => true,
            })
            .expose(GreeterServer::new(Hello))
            .expose(CalculatorServer::new(Calc)),
        "v1" => b.expose_as("Versioned", v1::VersionedServer::new(v1::One)),
        "v2" => b.expose_as("Versioned", v2::VersionedServer::new(v2::Two)),
        other => return Err(format!("no server kind {other:?}")),
    })
}

impl Control for ControlImpl {
    async fn start(&self, kind: String, addr: String) -> Result<String, String> {
        let server = kind_builder(&kind, &addr)?
            .start()
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.servers.add(server))
    }
    async fn begin_stop(&self, addr: String) -> bool {
        match self.servers.take(&addr) {
            Some(server) => {
                tokio::spawn(server.stop());
                true
            }
            None => false,
        }
    }
    async fn stop(&self, addr: String) -> bool {
        match self.servers.take(&addr) {
            Some(server) => {
                server.stop().await;
                true
            }
            None => false,
        }
    }
    async fn abort(&self, addr: String) -> bool {
        match self.servers.take(&addr) {
            Some(server) => {
                server.abort().await;
                true
            }
            None => false,
        }
    }
    async fn in_flight(&self, addr: String) -> u64 {
        self.servers
            .stats(&addr)
            .map_or(0, |s| u64::try_from(s.in_flight).unwrap_or(u64::MAX))
    }
    async fn streams(&self, addr: String) -> u64 {
        self.servers
            .stats(&addr)
            .map_or(0, |s| u64::try_from(s.streams).unwrap_or(u64::MAX))
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// `python3`, checked to be 3.9 or later; fails the test saying how to get
/// it otherwise.
fn python3() -> PathBuf {
    const HOW: &str = "the Python client's tests need `python3` (3.9 or later) on PATH: \
                       install it (Debian/Ubuntu: `apt-get install python3`; macOS: \
                       `brew install python`; or from python.org), then run the tests again";
    let python = std::env::var_os("IPC_PYTHON").unwrap_or_else(|| "python3".into());
    let out = match std::process::Command::new(&python)
        .arg("--version")
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("{HOW} (running `python3 --version` failed: {e})"),
    };
    let version =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let numbers: Vec<u32> = version
        .trim()
        .trim_start_matches("Python ")
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    if !out.status.success() || numbers.len() < 2 || (numbers[0], numbers[1]) < (3, 9) {
        panic!("{HOW} (found {:?})", version.trim());
    }
    PathBuf::from(python)
}

/// The `python/` directory of the workspace.
fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("python"))
        .unwrap_or_else(|| PathBuf::from("../python"))
}

async fn start(builder: ServerBuilder) -> ServerHandle {
    match builder.start().await {
        Ok(server) => server,
        Err(e) => panic!("a server for the Python suite did not start: {e}"),
    }
}

#[test]
fn python_client_suite_passes_against_real_servers() {
    let python = python3();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    };
    runtime.block_on(async {
        let servers = Servers::default();
        let start_kind = |kind: &str| {
            let builder = kind_builder(kind, "");
            async move {
                match builder {
                    Ok(b) => start(b).await,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let calc = servers.add(start_kind("calc").await);
        let kitchen = servers.add(start_kind("kitchen").await);
        let keyed = start(
            Server::builder()
                .addr("127.0.0.1:0")
                .auth_key(ipc_core::AuthKey::new(KEY).unwrap_or_else(|e| panic!("{e}")))
                .expose(CalculatorServer::new(Calc)),
        )
        .await;
        let unix_path = ipc_tests::fresh_socket_path();
        let unix = start(
            Server::builder()
                .addr(format!("unix:{}", unix_path.display()).as_str())
                .expose(GreeterServer::new(Hello))
                .expose(CalculatorServer::new(Calc)),
        )
        .await;
        let control = start(
            Server::builder()
                .addr("127.0.0.1:0")
                .expose(ControlServer::new(ControlImpl {
                    servers: servers.clone(),
                })),
        )
        .await;

        let mut command = tokio::process::Command::new(&python);
        command
            .current_dir(python_dir())
            .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
            .env("PYTHONPATH", python_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("IPC_TEST_CALC", &calc)
            .env("IPC_TEST_KITCHEN", &kitchen)
            .env("IPC_TEST_KEYED", keyed.local_addr().to_string())
            .env("IPC_TEST_KEY", KEY)
            .env("IPC_TEST_UNIX", unix.local_addr().to_string())
            .env("IPC_TEST_CONTROL", control.local_addr().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Ok(patterns) = std::env::var("IPC_PYTHON_TESTS") {
            for pattern in patterns.split([',', ' ']).filter(|p| !p.is_empty()) {
                command.args(["-k", pattern]);
            }
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!("could not start the Python suite: {e}"),
        };
        let output = match tokio::time::timeout(SUITE_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("the Python suite could not be run: {e}"),
            Err(_) => panic!("the Python suite did not finish in {SUITE_TIMEOUT:?}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("--- python suite stdout ---\n{stdout}\n--- python suite stderr ---\n{stderr}");
        assert!(
            output.status.success(),
            "the Python suite failed ({}); its output is above",
            output.status
        );
        assert!(
            stderr.contains("\nOK") && !stderr.contains("Ran 0 tests"),
            "the Python suite ran no tests or did not report OK"
        );
        unix.stop().await;
        keyed.stop().await;
        control.stop().await;
    });
}
