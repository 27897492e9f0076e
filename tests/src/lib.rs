//! Shared fixtures for the integration tests: example traits, their
//! implementations, and helpers to start a server on a free port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipc_core::{Client, Server, ServerBuilder, ServerHandle, expose};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

/// The error of [`Calculator::div`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// `b` was zero.
    DivideByZero,
}

/// The trait of the example.
#[expose]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

/// The obvious calculator.
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
}

/// A second trait, for multi-object tests.
#[expose]
pub trait Greeter {
    /// Greets `name`.
    async fn greet(&self, name: String) -> String;
}

/// Says hello.
pub struct Hello;

impl Greeter for Hello {
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

/// Methods whose timing the test controls.
#[expose]
pub trait Gate {
    /// Reports that it started, then waits until the test opens the gate.
    async fn wait_for_gate(&self) -> u32;
    /// Returns at once.
    async fn fast(&self) -> u32;
    /// Sleeps for `ms` milliseconds of (tokio) time.
    async fn sleep_ms(&self, ms: u64) -> u64;
    /// Panics with `message`.
    async fn boom(&self, message: String) -> u32;
    /// Returns its argument.
    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8>;
    /// Returns `len` bytes.
    async fn make(&self, len: u64) -> Vec<u8>;
}

/// A [`Gate`] implementation driven by the test.
#[derive(Clone)]
pub struct GateImpl {
    /// Opened by the test.
    pub gate: Arc<Notify>,
    /// One message per `wait_for_gate` call that has started.
    pub started: mpsc::UnboundedSender<()>,
}

impl GateImpl {
    /// A gate and the receiver of its "started" notices.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<()>) {
        let (started, rx) = mpsc::unbounded_channel();
        (
            Self {
                gate: Arc::new(Notify::new()),
                started,
            },
            rx,
        )
    }
}

impl Gate for GateImpl {
    async fn wait_for_gate(&self) -> u32 {
        let opened = self.gate.notified();
        let _ = self.started.send(());
        opened.await;
        1
    }
    async fn fast(&self) -> u32 {
        2
    }
    async fn sleep_ms(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn boom(&self, message: String) -> u32 {
        panic!("{message}")
    }
    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }
    async fn make(&self, len: u64) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }
}

/// Starts a server on a free loopback port with `build` applied.
pub async fn start(build: impl FnOnce(ServerBuilder) -> ServerBuilder) -> ServerHandle {
    match build(Server::builder().addr("127.0.0.1:0")).start().await {
        Ok(s) => s,
        Err(e) => panic!("server did not start: {e}"),
    }
}

/// Connects a client to `server`.
pub async fn connect(server: &ServerHandle) -> Client {
    match Client::connect(server.local_addr()).await {
        Ok(c) => c,
        Err(e) => panic!("client did not connect: {e}"),
    }
}

/// Runs `f`, failing the test instead of hanging it after `secs` seconds.
pub async fn within<F: Future>(secs: u64, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: the operation hung"),
    }
}
