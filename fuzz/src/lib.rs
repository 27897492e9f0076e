//! What the fuzz targets that drive a whole server share: the objects they
//! expose, one Tokio runtime per process, a raw client that writes bytes
//! into an in-memory connection, and hand-built frames (from the README's
//! wire protocol) for seeds and for the harness's own Hello.
//!
//! # Time
//!
//! The runtime is a current-thread one started with its clock *paused*
//! (`start_paused`). A connection here is a `tokio::io::duplex` pipe, not a
//! socket, so every wake-up comes from this thread: when no task can run,
//! the runtime is idle and Tokio jumps its clock to the next timer. Every
//! wait in the harness ("nothing arrived for 20 ms", "the handshake
//! timeout has passed", "the counters are back within 1 s") is therefore a
//! wait in virtual time: it costs no wall-clock time, ends only once the
//! server has done everything it could do without a timer firing, and
//! happens the same way on every run of an input. No assertion depends on
//! the wall clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ipc_core::server::ServerStats;
use ipc_core::{Remote, ServerBuilder, ServerHandle, Streaming, expose};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::runtime::Runtime;

/// `count(n)` with this `n` yields three items, then its stream panics.
pub const PANICKING_COUNT: u64 = 0xBAD;
/// Most items `count` and `blobs` yield.
pub const MAX_ITEMS: u64 = 1000;
/// Largest item `blobs` yields, in bytes.
pub const MAX_BLOB: u32 = 64 * 1024;

/// The object the fuzzed servers expose (handle 1): one method of each
/// shape the protocol knows.
#[expose]
pub trait Target {
    /// A plain call.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns its argument (a reply that may exceed the caller's limit).
    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8>;
    /// `0..n`, at most [`MAX_ITEMS`] items; see [`PANICKING_COUNT`].
    async fn count(&self, n: u64) -> Streaming<u64>;
    /// `n` items of `size` bytes each (capped), which may exceed the
    /// caller's frame limit.
    async fn blobs(&self, n: u64, size: u32) -> Streaming<Vec<u8>>;
    /// Never ends.
    async fn endless(&self) -> Streaming<u64>;
    /// A fresh object (exported on the connection).
    async fn open(&self, start: u64) -> Remote<CellProxy>;
    /// A stream of fresh objects, each exported as its item is encoded.
    async fn cells(&self, n: u64) -> Streaming<Remote<CellProxy>>;
    /// Calls the caller's callback once; its answer, or 0 if the call failed.
    async fn notify(&self, listener: Remote<ListenerProxy>, value: u64) -> u64;
    /// Reads up to `max` items of the stream the caller's callback returns
    /// (the server as a stream consumer); how many it got.
    async fn drain(&self, listener: Remote<ListenerProxy>, max: u64) -> u64;
    /// Panics (without running the panic hook, see [`deliberate_panic`]).
    async fn boom(&self, message: String) -> u64;
    /// Never returns: stays in flight until cancelled, timed out or dropped.
    async fn stall(&self) -> u64;
    /// A oneway call.
    #[oneway]
    async fn poke(&self, value: u64);
}

/// An object made per call by `open` and `cells`.
#[expose]
pub trait Cell {
    /// Adds one; the new value.
    async fn bump(&self) -> u64;
    /// Panics, from a call to an exported object.
    async fn crack(&self) -> u64;
}

/// A callback the client exports; the server only ever holds proxies to it.
#[expose]
pub trait Listener {
    /// One event; the listener's answer.
    async fn event(&self, value: u64) -> u64;
    /// A stream the listener pushes to the server.
    async fn feed(&self) -> Streaming<u64>;
}

/// Unwinds without running the panic hook. libFuzzer's hook aborts the
/// process on any panic (that is how a panic in the server becomes a
/// crash), so the panics the objects raise on purpose must not run it;
/// `ipc-core` still catches them (`catch_unwind`) as it would any panic.
pub fn deliberate_panic(message: String) -> ! {
    std::panic::resume_unwind(Box::new(message))
}

/// [`Target`] and [`Cell`] implemented, counting every handler that runs.
#[derive(Clone, Default)]
pub struct Objects {
    /// Handlers started (any method of any object above).
    pub calls: Arc<AtomicUsize>,
}

impl Objects {
    fn called(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn cell(&self, start: u64) -> Remote<CellProxy> {
        Remote::new(CellServer::new(CellImpl {
            value: AtomicU64::new(start),
            objects: self.clone(),
        }))
    }
}

impl Target for Objects {
    async fn add(&self, a: u64, b: u64) -> u64 {
        self.called();
        a.wrapping_add(b)
    }

    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8> {
        self.called();
        bytes
    }

    async fn count(&self, n: u64) -> Streaming<u64> {
        self.called();
        if n == PANICKING_COUNT {
            return Streaming::new(futures::stream::iter(0..).map(|i| {
                if i == 3 {
                    deliberate_panic("the stream broke".into());
                }
                i
            }));
        }
        Streaming::iter(0..n.min(MAX_ITEMS))
    }

    async fn blobs(&self, n: u64, size: u32) -> Streaming<Vec<u8>> {
        self.called();
        let size = size.min(MAX_BLOB) as usize;
        Streaming::iter((0..n.min(MAX_ITEMS)).map(move |i| vec![i as u8; size]))
    }

    async fn endless(&self) -> Streaming<u64> {
        self.called();
        Streaming::new(futures::stream::iter(0..))
    }

    async fn open(&self, start: u64) -> Remote<CellProxy> {
        self.called();
        self.cell(start)
    }

    async fn cells(&self, n: u64) -> Streaming<Remote<CellProxy>> {
        self.called();
        let objects = self.clone();
        Streaming::iter((0..n.min(MAX_ITEMS)).map(move |i| objects.cell(i)))
    }

    async fn notify(&self, listener: Remote<ListenerProxy>, value: u64) -> u64 {
        self.called();
        listener.event(value).await.unwrap_or(0)
    }

    async fn drain(&self, listener: Remote<ListenerProxy>, max: u64) -> u64 {
        self.called();
        let Ok(mut feed) = listener.feed().await else {
            return 0;
        };
        let mut got = 0;
        while got < max.min(MAX_ITEMS) {
            match feed.next().await {
                Some(Ok(_)) => got += 1,
                Some(Err(_)) | None => break,
            }
        }
        got
    }

    async fn boom(&self, message: String) -> u64 {
        self.called();
        deliberate_panic(message)
    }

    async fn stall(&self) -> u64 {
        self.called();
        std::future::pending::<()>().await;
        0
    }

    async fn poke(&self, _value: u64) {
        self.called();
    }
}

struct CellImpl {
    value: AtomicU64,
    objects: Objects,
}

impl Cell for CellImpl {
    async fn bump(&self) -> u64 {
        self.objects.called();
        self.value.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    async fn crack(&self) -> u64 {
        self.objects.called();
        deliberate_panic("the cell cracked".into())
    }
}

/// The one runtime of this process: current-thread, clock paused (see the
/// crate docs).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// Starts a server exposing `objects` (as handle 1) with `build` applied,
/// on the process's runtime. Call it outside `block_on`, once per server
/// (keep the handle in a static: dropping it stops the server).
pub fn start_server(
    objects: Objects,
    build: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> ServerHandle {
    runtime().block_on(async {
        // The listener is never used: connections come through `serve_io`.
        build(ipc_core::Server::builder().addr("127.0.0.1:0"))
            .expose(TargetServer::new(objects))
            .start()
            .await
            .expect("the fuzzed server starts")
    })
}

/// The handle of [`Target`] after the first lookup of a connection: lookups
/// are numbered from 1 in the order the server reads them (README, "Objects
/// and the system object").
pub const TARGET_HANDLE: u32 = 1;

/// The arguments of the system object's `resolve` for [`Target`]: `(name,
/// trait name, fingerprint, signatures)`, from the descriptor `#[expose]`
/// wrote (so the lookup succeeds).
pub fn lookup_args() -> Vec<u8> {
    let d = <TargetProxy as ipc_core::Proxy>::DESCRIPTOR;
    let signatures: Vec<&str> = d.methods.iter().map(|m| m.signature).collect();
    ipc_core::wire::encode_to_vec(&(d.trait_name, d.trait_name, d.fingerprint, signatures))
        .expect("lookup arguments encode")
}

/// What a well-behaved client sends first: its Hello (announcing
/// `max_frame`, with authentication fields `auth`), then, if `lookup`, a
/// lookup of [`Target`] as request 1 (so that handle 1 is [`Target`] and the
/// input's own request ids start at 2).
pub fn preamble(max_frame: u32, auth: &[u8], lookup: bool) -> Vec<u8> {
    let mut bytes = frames::hello(2, max_frame, auth);
    if lookup {
        bytes.extend_from_slice(&frames::request(1, 0, 0, &lookup_args()));
    }
    bytes
}

/// Whether every counter of `stats` is back to zero.
pub fn settled(stats: &ServerStats) -> bool {
    stats.connections == 0
        && stats.in_flight == 0
        && stats.streams == 0
        && stats.remote_objects == 0
        && stats.buffered_bytes == 0
}

/// After the client end is gone: waits (up to 1 s of virtual time, far
/// more than the in-memory teardown needs, far less than any timer a
/// connection could be waiting for) until the server has given back every
/// counter, and panics with the stats if it has not.
pub async fn assert_settles(server: &ServerHandle) {
    let wait = tokio::time::timeout(Duration::from_secs(1), async {
        while !settled(&server.stats()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    if tracing() {
        eprintln!("stats at close: {:?}", server.stats());
    }
    if wait.await.is_err() {
        panic!(
            "a closed connection kept server resources: {:?}",
            server.stats()
        );
    }
}

/// Bytes each direction of a connection's pipe holds before its writer waits.
pub const PIPE_BYTES: usize = 64 * 1024;

/// What the client reads (the server's output).
pub type ClientRead = ReadHalf<DuplexStream>;
/// What the client writes (the server's input).
pub type ClientWrite = WriteHalf<DuplexStream>;

/// Opens an in-memory connection, hands its other end to `server`, and
/// returns the client's halves.
pub fn connect(server: &ServerHandle) -> (ClientRead, ClientWrite) {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    server.serve_io(theirs);
    tokio::io::split(ours)
}

/// Writes `bytes`, in pieces of 1 to 13 bytes (with a yield between, so the
/// server runs between pieces) when `chunked`. `false` if the server closed
/// its end first.
pub async fn send(write: &mut ClientWrite, bytes: &[u8], chunked: bool) -> bool {
    if !chunked {
        return write.write_all(bytes).await.is_ok();
    }
    for piece in pieces(bytes) {
        if write.write_all(piece).await.is_err() {
            return false;
        }
        tokio::task::yield_now().await;
    }
    true
}

/// How [`drain`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The server closed its end.
    Closed,
    /// Nothing arrived for the quiet period.
    Quiet,
    /// The byte budget was read.
    Budget,
}

/// Reads and discards what the server writes until it closes its end, or
/// nothing arrives for `quiet`, or `budget` bytes were read. Time is
/// virtual: see the crate docs.
pub async fn drain(read: &mut ClientRead, quiet: Duration, budget: usize) -> Drained {
    drain_frames(read, quiet, budget, |_| {}).await
}

/// As [`drain`], handing each whole frame the server writes (the bytes
/// after its length prefix) to `on_frame`.
pub async fn drain_frames(
    read: &mut ClientRead,
    quiet: Duration,
    budget: usize,
    mut on_frame: impl FnMut(&[u8]),
) -> Drained {
    let mut sink = vec![0u8; 16 * 1024];
    let mut total = 0;
    let mut seen = Vec::new();
    let drained = loop {
        match tokio::time::timeout(quiet, read.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Drained::Closed,
            Ok(Ok(n)) => {
                seen.extend_from_slice(&sink[..n]);
                take_frames(&mut seen, &mut on_frame);
                total += n;
                if total >= budget {
                    break Drained::Budget;
                }
            }
            Err(_) => break Drained::Quiet,
        }
    };
    if tracing() {
        eprintln!("<- {drained:?} after {total} bytes");
    }
    drained
}

/// Removes the whole frames at the start of `seen`, handing each to
/// `on_frame` (and printing it when tracing).
fn take_frames(seen: &mut Vec<u8>, on_frame: &mut impl FnMut(&[u8])) {
    let mut at = 0;
    while seen.len() - at >= 4 {
        let prefix = [seen[at], seen[at + 1], seen[at + 2], seen[at + 3]];
        let len = u32::from_le_bytes(prefix) as usize;
        if seen.len() - at - 4 < len {
            break;
        }
        let body = &seen[at + 4..at + 4 + len];
        at += 4 + len;
        if tracing() && len >= 9 {
            let id = u64::from_le_bytes(body[1..9].try_into().unwrap_or_default());
            let payload = &body[9..];
            let shown = &payload[..payload.len().min(24)];
            eprintln!(
                "<- kind {} id {id} payload {} bytes {shown:02x?}",
                body[0],
                payload.len()
            );
        }
        on_frame(body);
    }
    seen.drain(..at);
}

/// Whether `IPC_FUZZ_TRACE` is set: then [`drain`] prints each frame the
/// server writes (for checking what a seed or a crash input does).
pub fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("IPC_FUZZ_TRACE").is_some())
}

/// Reads one whole frame body (what follows its length prefix), refusing
/// one longer than `max`; `None` at end of stream or on an error.
pub async fn read_frame(read: &mut ClientRead, max: usize) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    read.read_exact(&mut prefix).await.ok()?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return None;
    }
    let mut body = vec![0u8; len];
    read.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Splits `bytes` into pieces of 1 to 13 bytes, sizes derived from the
/// bytes themselves (so an input always splits the same way).
pub fn pieces(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut seed = (bytes.len() as u32) | 1;
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (1 + seed % 13) as usize;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        Some(head)
    })
}

/// Runs `session` on the process's runtime.
pub fn run<F: Future>(session: F) -> F::Output {
    runtime().block_on(session)
}

/// Frames written by hand from the README's "Wire protocol" section.
pub mod frames {
    /// Kind bytes.
    pub const HELLO: u8 = 0;
    /// A call.
    pub const REQUEST: u8 = 1;
    /// An answer.
    pub const RESPONSE: u8 = 2;
    /// The caller gives up on a call.
    pub const CANCEL: u8 = 3;
    /// The sender is leaving.
    pub const GO_AWAY: u8 = 4;
    /// A call answered by nothing.
    pub const ONEWAY: u8 = 5;
    /// One item of a stream.
    pub const STREAM_ITEM: u8 = 6;
    /// The end of a stream.
    pub const STREAM_END: u8 = 7;
    /// More room for a stream.
    pub const CREDIT: u8 = 8;
    /// The last proxy to an exported object is gone.
    pub const RELEASE: u8 = 9;
    /// The client's proof of the shared key.
    pub const AUTH_PROOF: u8 = 10;
    /// The server accepts the proof.
    pub const AUTH_OK: u8 = 11;

    /// The first handle of an object exported on a connection.
    pub const EXPORT_BASE: u32 = 1 << 31;

    /// Length prefix (u32 LE, counting what follows), kind, id (u64 LE), payload.
    pub fn frame(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(9 + payload.len()).unwrap_or(u32::MAX);
        let mut f = Vec::with_capacity(13 + payload.len());
        f.extend_from_slice(&len.to_le_bytes());
        f.push(kind);
        f.extend_from_slice(&id.to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A Hello: magic, version, the largest frame the sender accepts, then
    /// `auth` (the authentication fields, as they are).
    pub fn hello(version: u16, max_frame: u32, auth: &[u8]) -> Vec<u8> {
        let mut p = b"IPCR".to_vec();
        p.extend_from_slice(&version.to_le_bytes());
        p.extend_from_slice(&max_frame.to_le_bytes());
        p.extend_from_slice(auth);
        frame(HELLO, 0, &p)
    }

    /// A Request (or a Oneway) to method `method` of object `object`, with
    /// `deadline_ms` (0: none) and arguments `args`, already encoded.
    pub fn call(
        oneway: bool,
        id: u64,
        object: u32,
        method: u16,
        deadline_ms: u32,
        args: &[u8],
    ) -> Vec<u8> {
        let mut p = Vec::with_capacity(10 + args.len());
        p.extend_from_slice(&object.to_le_bytes());
        p.extend_from_slice(&method.to_le_bytes());
        p.extend_from_slice(&deadline_ms.to_le_bytes());
        p.extend_from_slice(args);
        frame(if oneway { ONEWAY } else { REQUEST }, id, &p)
    }

    /// A Request without a deadline.
    pub fn request(id: u64, object: u32, method: u16, args: &[u8]) -> Vec<u8> {
        call(false, id, object, method, 0, args)
    }

    /// A Response or StreamEnd (`kind`) with `status` and an encoded body.
    pub fn outcome(kind: u8, id: u64, status: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![status];
        p.extend_from_slice(body);
        frame(kind, id, &p)
    }

    /// A Credit granting `bytes` to the stream request `id` opened.
    pub fn credit(id: u64, bytes: u32) -> Vec<u8> {
        frame(CREDIT, id, &bytes.to_le_bytes())
    }

    /// A little-endian u64, as bincode encodes one.
    pub fn u64_le(v: u64) -> [u8; 8] {
        v.to_le_bytes()
    }
}
