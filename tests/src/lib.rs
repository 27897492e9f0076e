//! Shared fixtures for the integration tests: example traits, their
//! implementations, helpers to start a server on a free port, and
//! [`each_transport!`] to run one scenario over every [`Transport`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipc_core::{Address, Client, Server, ServerBuilder, ServerHandle, expose};

pub mod pki;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

/// The error of [`Calculator::div`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// `b` was zero.
    DivideByZero,
}

/// The trait of the issue's example.
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
    /// Reports that it started, sleeps `ms` milliseconds, and reports on the
    /// `dropped` probe if its future is dropped before finishing.
    async fn sleep_observed(&self, ms: u64) -> u64;
    /// Returns its argument, carried as `ipc_core::Bytes`.
    async fn echo_bytes(&self, bytes: ipc_core::Bytes) -> ipc_core::Bytes;
    /// Sleeps `ms` milliseconds of (tokio) time, then panics.
    async fn sleep_then_panic(&self, ms: u64) -> u64;
}

/// A [`Gate`] implementation driven by the test.
#[derive(Clone)]
pub struct GateImpl {
    /// Opened by the test.
    pub gate: Arc<Notify>,
    /// One message per `wait_for_gate` / `sleep_observed` call that has started.
    pub started: mpsc::UnboundedSender<()>,
    /// One message per `sleep_observed` call dropped before it finished.
    pub dropped: mpsc::UnboundedSender<()>,
}

/// What the test observes of a [`GateImpl`].
pub struct Probes {
    /// A message per handler that started.
    pub started: mpsc::UnboundedReceiver<()>,
    /// A message per `sleep_observed` handler dropped before finishing.
    pub dropped: mpsc::UnboundedReceiver<()>,
}

impl GateImpl {
    /// A gate and the receiver of its "started" notices.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<()>) {
        let (gate, probes) = Self::probed();
        (gate, probes.started)
    }

    /// A gate and all its probes.
    pub fn probed() -> (Self, Probes) {
        let (started, started_rx) = mpsc::unbounded_channel();
        let (dropped, dropped_rx) = mpsc::unbounded_channel();
        (
            Self {
                gate: Arc::new(Notify::new()),
                started,
                dropped,
            },
            Probes {
                started: started_rx,
                dropped: dropped_rx,
            },
        )
    }
}

/// Reports on a channel when dropped, unless disarmed.
struct DropProbe {
    tx: Option<mpsc::UnboundedSender<()>>,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
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
    async fn sleep_observed(&self, ms: u64) -> u64 {
        let mut probe = DropProbe {
            tx: Some(self.dropped.clone()),
        };
        let _ = self.started.send(());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        probe.tx = None;
        ms
    }
    async fn echo_bytes(&self, bytes: ipc_core::Bytes) -> ipc_core::Bytes {
        bytes
    }
    async fn sleep_then_panic(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        panic!("woke up to panic after {ms} ms")
    }
}

/// Serves `server` to an in-memory pipe and returns a client on its other
/// end: for paused-clock tests, where real sockets would race the clock.
pub async fn connect_in_memory(server: &ServerHandle) -> Client {
    let (a, b) = tokio::io::duplex(1 << 20);
    server.serve_io(a);
    match Client::builder().connect_io(b).await {
        Ok(c) => c,
        Err(e) => panic!("in-memory client did not connect: {e}"),
    }
}

/// Starts a server on a free loopback port with `build` applied.
pub async fn start(build: impl FnOnce(ServerBuilder) -> ServerBuilder) -> ServerHandle {
    Transport::Tcp.start(build).await
}

/// A kind of socket the server listens on and the client connects over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP on the loopback interface, on a port the OS picks.
    Tcp,
    /// A Unix domain socket at a fresh path in the temporary directory.
    #[cfg(unix)]
    Unix,
}

impl Transport {
    /// An address of this transport no server of this process has used:
    /// `127.0.0.1:0`, or a Unix socket path unique to this process and call.
    pub fn fresh_addr(self) -> Address {
        match self {
            Self::Tcp => Address::from("127.0.0.1:0"),
            #[cfg(unix)]
            Self::Unix => Address::Unix(fresh_socket_path()),
        }
    }

    /// Starts a server on a fresh address of this transport with `build`
    /// applied; [`connect`] reaches it.
    pub async fn start(self, build: impl FnOnce(ServerBuilder) -> ServerBuilder) -> ServerHandle {
        let addr = self.fresh_addr();
        match build(Server::builder().addr(&addr)).start().await {
            Ok(s) => s,
            Err(e) => panic!("server did not start on {addr}: {e}"),
        }
    }
}

/// A path in the temporary directory for a Unix socket, unique to this
/// process and call; nothing is created there.
#[cfg(unix)]
pub fn fresh_socket_path() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ipc-test-{}-{n}.sock", std::process::id()))
}

/// Runs each test body once per [`Transport`]: every
/// `#[attr] async fn name(transport) { .. }` inside becomes `tcp::name` and
/// (on Unix) `unix::name`, with `transport` bound to the [`Transport`].
/// The attributes are kept, so `#[tokio::test(flavor = "multi_thread",
/// worker_threads = 2)]` works as well as `#[tokio::test]`. Invoke it once
/// per test file; the modules `use super::*`.
///
/// ```ignore
/// each_transport! {
///     #[tokio::test]
///     async fn add_works(transport) {
///         let server = transport.start(|b| b.expose(CalculatorServer::new(Calc))).await;
///         let calc: CalculatorProxy = connect(&server).await.get_exposed_object().await.unwrap();
///         assert_eq!(calc.add(2, 3).await.unwrap(), 5);
///     }
/// }
/// ```
#[macro_export]
macro_rules! each_transport {
    ($($(#[$attr:meta])* async fn $name:ident($transport:ident) $body:block)*) => {
        mod tcp {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$attr])*
                async fn $name() {
                    let $transport = $crate::Transport::Tcp;
                    $body
                }
            )*
        }

        #[cfg(unix)]
        mod unix {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$attr])*
                async fn $name() {
                    let $transport = $crate::Transport::Unix;
                    $body
                }
            )*
        }
    };
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

/// Waits until `condition` holds, checking every millisecond, and fails the
/// test if it does not within `secs` seconds. For state that changes on
/// another task without a signal to await (counters in `stats()`).
pub async fn eventually(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            panic!("after {secs} s, still not true: {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Frames written by hand from the README's layout, for tests that play a
/// raw (possibly misbehaving) client.
pub mod raw {
    /// One whole frame: length prefix (u32 LE, not counting itself), kind,
    /// id (u64 LE), payload.
    pub fn frame(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(1 + 8 + payload.len()).unwrap_or(u32::MAX);
        let mut f = Vec::with_capacity(4 + 1 + 8 + payload.len());
        f.extend_from_slice(&len.to_le_bytes());
        f.push(kind);
        f.extend_from_slice(&id.to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The client hello: magic, protocol version 2, and the largest frame
    /// the client accepts.
    pub fn hello(max_frame: u32) -> Vec<u8> {
        let mut p = b"IPCR".to_vec();
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&max_frame.to_le_bytes());
        frame(0, 0, &p)
    }

    /// A response to request `id` with `status` and an encoded `body`.
    pub fn response(id: u64, status: u8, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(1 + body.len());
        p.push(status);
        p.extend_from_slice(body);
        frame(2, id, &p)
    }

    /// A go-away with `reason`, carrying `last_read` if given.
    pub fn go_away(reason: u64, last_read: Option<u64>) -> Vec<u8> {
        let payload = last_read.map(u64::to_le_bytes);
        frame(4, reason, payload.as_ref().map_or(&[][..], |p| &p[..]))
    }

    /// The read and write halves of a raw byte stream.
    pub type Halves = (
        Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    );

    /// Opens a plain socket to `addr` (TCP or Unix), split in two halves.
    pub async fn connect(addr: &ipc_core::Address) -> std::io::Result<Halves> {
        connect_with_receive_buffer(addr, None).await
    }

    /// As [`connect`]; over TCP, with the socket's receive buffer set to
    /// `bytes` (a small one makes the server's replies queue on its side).
    pub async fn connect_with_receive_buffer(
        addr: &ipc_core::Address,
        bytes: Option<u32>,
    ) -> std::io::Result<Halves> {
        if let Some(path) = addr.as_unix_path() {
            #[cfg(unix)]
            {
                let (r, w) = tokio::net::UnixStream::connect(path).await?.into_split();
                return Ok((Box::new(r), Box::new(w)));
            }
            #[cfg(not(unix))]
            return Err(std::io::ErrorKind::Unsupported.into());
        }
        let target: std::net::SocketAddr = match addr.as_socket_addr() {
            Some(a) => a,
            None => tokio::net::lookup_host(addr.to_string())
                .await?
                .next()
                .ok_or(std::io::ErrorKind::AddrNotAvailable)?,
        };
        let socket = if target.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(bytes) = bytes {
            socket.set_recv_buffer_size(bytes)?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok((Box::new(r), Box::new(w)))
    }

    /// Reads one frame: `(kind, id, payload)`, or `None` at end of stream.
    pub async fn read_frame<R>(r: &mut R) -> std::io::Result<Option<(u8, u64, Vec<u8>)>>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let mut len = [0u8; 4];
        match r.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len < 9 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes is shorter than its header"),
            ));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..9]);
        Ok(Some((body[0], u64::from_le_bytes(id), body[9..].to_vec())))
    }

    /// A request (no deadline) for `method` of object `handle`, with `args`
    /// already encoded.
    pub fn request(id: u64, handle: u32, method: u16, args: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(10 + args.len());
        p.extend_from_slice(&handle.to_le_bytes());
        p.extend_from_slice(&method.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(args);
        frame(1, id, &p)
    }
}
