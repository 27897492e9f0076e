//! The columns of the comparison, behind one interface: start a column's
//! server, connect a client to it, call `add` and `echo`, read a server
//! stream ([`StreamConn`]). What only `ipc` has (`echo_vec`, `endless`,
//! callbacks) is reached through [`Conn::ipc`] and [`RunningServer`].
//!
//! Every column runs in the same arrangement ([`Runtimes`]): its server on
//! one Tokio runtime, its clients on another, each a multi-thread runtime
//! with one worker thread.
//!
//! Besides the column, an `ipc` server may require a shared key
//! ([`start_server_with_key`]); its [`Target`] then carries the key, as it
//! carries the TLS settings of the `ipc-tls` column, so connecting is the
//! same call for every server.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;

use futures::StreamExt;
use ipc_core::server::ServerStats;
use ipc_core::{Address, AuthKey, Client, ClientBuilder, Server, ServerHandle, TlsClient};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::pki::TlsPair;
use crate::raw::{self, RawClient, RawStream};
use crate::tarpc_col::{self, TarpcBenchClient};
use crate::{BenchImpl, BenchProxy, BenchServer};

/// Any column's error.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// One implementation under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// The raw-TCP ceiling ([`crate::raw`]).
    Raw,
    /// tarpc 0.38 over TCP, bincode ([`crate::tarpc_col`]).
    Tarpc,
    /// `ipc` over TCP.
    Ipc,
    /// `ipc` over a Unix socket; only where [`unix_address`] finds one.
    IpcUnix,
    /// `ipc` over TLS (`tls://`, TCP), with a certificate made at run time
    /// ([`TlsPair`]).
    IpcTls,
}

impl Column {
    /// Every column, in table order.
    pub const ALL: [Column; 5] = [
        Column::Raw,
        Column::Tarpc,
        Column::Ipc,
        Column::IpcUnix,
        Column::IpcTls,
    ];

    /// The column's name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Tarpc => "tarpc",
            Self::Ipc => "ipc",
            Self::IpcUnix => "ipc-unix",
            Self::IpcTls => "ipc-tls",
        }
    }

    /// The column named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The columns this build can run: all but `ipc-unix` where
    /// `ipc_core::Address` has no Unix variant.
    pub fn available() -> Vec<Column> {
        Self::ALL
            .into_iter()
            .filter(|c| *c != Self::IpcUnix || unix_address("probe").is_some())
            .collect()
    }
}

// ---------------------------------------------------------------------------
// ipc-unix: the Unix-socket column.
//
// Detected at run time: `"unix:<path>"` is parsed as an `Address`, and the
// column runs if that yields a variant other than `Tcp` (not on a platform
// without Unix sockets).
// ---------------------------------------------------------------------------

/// A fresh Unix socket address for `ipc`, if `ipc_core::Address` has a Unix
/// variant; `None` otherwise (the `ipc-unix` column is then skipped).
pub fn unix_address(tag: &str) -> Option<Address> {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "ipc-bench-{}-{tag}-{}.sock",
        std::process::id(),
        next_socket_number()
    ));
    let addr: Address = format!("unix:{}", path.display()).parse().ok()?;
    if matches!(addr, Address::Tcp(_)) {
        return None;
    }
    let _ = std::fs::remove_file(&path);
    Some(addr)
}

fn next_socket_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The two runtimes every column runs on: servers on `server`, clients on
/// `client`, each a multi-thread runtime with one worker thread.
#[derive(Debug)]
pub struct Runtimes {
    /// Where servers run.
    pub server: Runtime,
    /// Where clients run.
    pub client: Runtime,
}

impl Runtimes {
    /// Builds both runtimes.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            server: one_worker("bench-server")?,
            client: one_worker("bench-client")?,
        })
    }
}

/// A multi-thread runtime with one worker thread.
pub fn one_worker(name: &str) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Where a column's clients connect.
#[derive(Debug, Clone)]
pub enum Target {
    /// A TCP socket address (raw and tarpc).
    Socket(SocketAddr),
    /// An `ipc` server.
    Ipc(IpcTarget),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Socket(a) => a.fmt(f),
            Self::Ipc(t) => t.addr.fmt(f),
        }
    }
}

/// An `ipc` server's address and what a client needs to be let in.
#[derive(Debug, Clone)]
pub struct IpcTarget {
    /// Where it listens.
    pub addr: Address,
    /// TLS settings, for a `tls://` address.
    pub tls: Option<TlsClient>,
    /// The shared key it requires, if any.
    pub key: Option<AuthKey>,
}

impl IpcTarget {
    /// A server without TLS or key.
    pub fn plain(addr: Address) -> Self {
        Self {
            addr,
            tls: None,
            key: None,
        }
    }

    /// A client builder for this server: its address, TLS settings and key.
    pub fn builder(&self) -> ClientBuilder {
        let mut builder = Client::builder().addr(self.addr.clone());
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.clone());
        }
        if let Some(key) = &self.key {
            builder = builder.auth_key(key.clone());
        }
        builder
    }
}

/// A running server of some column. Dropping it stops serving new
/// connections; dropping its runtime ends everything.
#[derive(Debug)]
pub struct RunningServer {
    /// Where clients connect.
    pub target: Target,
    _guard: Guard,
}

impl RunningServer {
    /// The server's counters, for an `ipc` column.
    pub fn ipc_stats(&self) -> Option<ServerStats> {
        match &self._guard {
            Guard::Ipc(handle, _) => Some(handle.stats()),
            Guard::Task(_) => None,
        }
    }

    /// Items taken so far from the `endless` streams of this server, for an
    /// `ipc` column ([`BenchImpl::produced`]).
    pub fn ipc_produced(&self) -> Option<u64> {
        match &self._guard {
            Guard::Ipc(_, bench) => Some(bench.produced()),
            Guard::Task(_) => None,
        }
    }
}

#[derive(Debug)]
enum Guard {
    Task(JoinHandle<()>),
    Ipc(ServerHandle, BenchImpl),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Self::Task(t) = self {
            t.abort();
        }
    }
}

/// Starts `column`'s server on a free loopback port (or a fresh Unix socket
/// path). Must run on the server runtime.
pub async fn start_server(column: Column) -> Result<RunningServer, BoxError> {
    start_server_with_key(column, None).await
}

/// As [`start_server`], the server requiring `key` if there is one (`ipc`
/// columns only).
pub async fn start_server_with_key(
    column: Column,
    key: Option<AuthKey>,
) -> Result<RunningServer, BoxError> {
    if key.is_some() && matches!(column, Column::Raw | Column::Tarpc) {
        return Err(format!("{} has no shared key", column.name()).into());
    }
    let (target, guard) = match column {
        Column::Raw => {
            let (addr, task) = raw::serve("127.0.0.1:0").await?;
            (Target::Socket(addr), Guard::Task(task))
        }
        Column::Tarpc => {
            let (addr, task) = tarpc_col::serve("127.0.0.1:0").await?;
            (Target::Socket(addr), Guard::Task(task))
        }
        Column::Ipc | Column::IpcUnix | Column::IpcTls => {
            let (addr, tls) = match column {
                Column::IpcUnix => (
                    unix_address("server").ok_or("ipc_core::Address has no Unix variant")?,
                    None,
                ),
                Column::IpcTls => ("tls://127.0.0.1:0".parse()?, Some(TlsPair::generate()?)),
                _ => (Address::from("127.0.0.1:0"), None),
            };
            let bench = BenchImpl::default();
            let mut builder = Server::builder()
                .addr(addr)
                .expose(BenchServer::new(bench.clone()));
            if let Some(tls) = &tls {
                builder = builder.tls(tls.server.clone());
            }
            if let Some(key) = &key {
                builder = builder.auth_key(key.clone());
            }
            let handle = builder.start().await?;
            let target = IpcTarget {
                addr: handle.local_addr().clone(),
                tls: tls.map(|t| t.client),
                key,
            };
            (Target::Ipc(target), Guard::Ipc(handle, bench))
        }
    };
    Ok(RunningServer {
        target,
        _guard: guard,
    })
}

/// A client connection of some column, ready to call; clones share the
/// connection, and dropping the last one closes it.
#[derive(Debug, Clone)]
pub enum Conn {
    /// The raw ceiling.
    Raw(RawClient),
    /// tarpc.
    Tarpc(TarpcBenchClient),
    /// `ipc` (TCP or Unix).
    Ipc(BenchProxy),
}

impl Conn {
    /// Opens a connection of `column` to `target` and makes it ready for
    /// calls: for `ipc` that is connect + handshake + `get_exposed_object`
    /// (one round trip that resolves the object and checks its trait), the
    /// checked way in. Must run on the client runtime.
    pub async fn connect(column: Column, target: &Target) -> Result<Self, BoxError> {
        Ok(match (column, target) {
            (Column::Raw, Target::Socket(a)) => Conn::Raw(RawClient::connect(*a).await?),
            (Column::Tarpc, Target::Socket(a)) => Conn::Tarpc(tarpc_col::connect(*a).await?),
            (Column::Ipc | Column::IpcUnix | Column::IpcTls, Target::Ipc(t)) => {
                let client = t.builder().connect().await?;
                Conn::Ipc(client.get_exposed_object().await?)
            }
            _ => return Err(format!("{} cannot connect to {target}", column.name()).into()),
        })
    }

    /// As [`Conn::connect`], the pipelined way in for `ipc`:
    /// `connect_lazy` (the hello goes out, nothing is awaited) and
    /// `Client::proxy` (the lookup goes out with the first call), so the
    /// first call's round trip carries hello, lookup and call. With a
    /// shared key `connect_lazy` waits for the authentication first. The
    /// same as [`Conn::connect`] for raw and tarpc.
    pub async fn connect_pipelined(column: Column, target: &Target) -> Result<Self, BoxError> {
        match (column, target) {
            (Column::Ipc | Column::IpcUnix | Column::IpcTls, Target::Ipc(t)) => {
                let client = t.builder().connect_lazy().await?;
                Ok(Conn::Ipc(client.proxy()))
            }
            _ => Self::connect(column, target).await,
        }
    }

    /// `a + b`, computed by the server.
    pub async fn add(&self, a: u64, b: u64) -> Result<u64, BoxError> {
        Ok(match self {
            Self::Raw(c) => c.add(a, b).await?,
            Self::Tarpc(c) => c.add(tarpc_col::ctx(), a, b).await?,
            Self::Ipc(p) => p.add(a, b).await?,
        })
    }

    /// `data`, sent to the server and back.
    pub async fn echo(&self, data: Vec<u8>) -> Result<Vec<u8>, BoxError> {
        Ok(match self {
            Self::Raw(c) => c.echo(data).await?,
            Self::Tarpc(c) => c.echo(tarpc_col::ctx(), data).await?,
            // Same boundary as raw: one copy in (encoding), one out.
            Self::Ipc(p) => p.echo(data.into()).await?.to_vec(),
        })
    }

    /// The `ipc` proxy, for an `ipc` column.
    pub fn ipc(&self) -> Option<&BenchProxy> {
        match self {
            Self::Ipc(p) => Some(p),
            Self::Raw(_) | Self::Tarpc(_) => None,
        }
    }
}

/// A consumer of server streams: the numbers `0..n` pushed by the server.
/// tarpc has no server push, so no variant.
#[derive(Debug)]
pub enum StreamConn {
    /// The raw ceiling, on a connection of its own ([`RawStream`]).
    Raw(RawStream),
    /// `ipc`'s `Bench::count` (TCP or Unix).
    Ipc(BenchProxy),
}

impl StreamConn {
    /// Opens a consumer of `column` on `target`, ready to ask for streams.
    /// Must run on the client runtime.
    pub async fn connect(column: Column, target: &Target) -> Result<Self, BoxError> {
        Ok(match (column, target) {
            (Column::Raw, Target::Socket(a)) => StreamConn::Raw(RawStream::connect(*a).await?),
            (Column::Ipc | Column::IpcUnix | Column::IpcTls, _) => {
                match Conn::connect(column, target).await? {
                    Conn::Ipc(p) => StreamConn::Ipc(p),
                    _ => return Err("an ipc column connected as another".into()),
                }
            }
            _ => return Err(format!("{} has no server streams", column.name()).into()),
        })
    }

    /// Asks for `0..n` and reads it to its end, checking that every item is
    /// the next number; returns how many items arrived.
    pub async fn count(&mut self, n: u64) -> Result<u64, BoxError> {
        match self {
            Self::Raw(s) => Ok(s.count(n).await?),
            Self::Ipc(p) => {
                let mut items = p.count(n).await?;
                let mut seen = 0u64;
                while let Some(item) = items.next().await {
                    if item? != seen {
                        return Err("stream item out of order".into());
                    }
                    seen += 1;
                }
                Ok(seen)
            }
        }
    }
}
