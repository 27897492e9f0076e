//! A fixed number of `add` calls, for counting what one call costs under a
//! profiler (the `compare` binary runs for a fixed time instead, which a
//! profiler's slowdown would distort):
//!
//! ```text
//! cargo build --release -p benches --bin callcost
//! valgrind --tool=callgrind target/release/callcost ipc pipelined 20000
//! valgrind --tool=callgrind target/release/callcost raw pipelined 20000
//! taskset -c 0 valgrind --tool=callgrind target/release/callcost ipc sequential 20000
//! perf stat -e context-switches target/release/callcost ipc cold 2000
//! valgrind --tool=callgrind target/release/callcost ipc stream 200000
//! ```
//!
//! Arguments: the column (`raw` or `ipc`), the shape (`pipelined`: 64 tasks
//! calling back to back over one connection, as `compare`'s (b);
//! `sequential`: one task, as (a); `cold`: a new connection per call, as
//! (e'); `stream`: one server stream of that many `u64` items, read to its
//! end, as (h)), and the number of calls (items), after 1,000 warm-up calls
//! (none for `cold`; a warm-up stream of 1,000 items for `stream`).
//! Instructions per call: the profile's total divided by the calls made,
//! warm-up included. Servers and clients each run on a one-worker runtime,
//! as in `compare`.
#![allow(clippy::print_stderr)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::columns::BoxError;
use benches::raw::{RawClient, RawStream};
use benches::{BenchImpl, BenchProxy, BenchServer};
use ipc_core::{Client, Server};

/// Calls in flight in the pipelined shape.
const PIPELINE: u64 = 64;
/// Calls made before the counted ones.
const WARMUP: u64 = 1000;

#[derive(Clone)]
enum Conn {
    Raw(RawClient),
    Ipc(BenchProxy),
}

impl Conn {
    async fn connect(column: &str, addr: SocketAddr) -> Result<Self, BoxError> {
        Ok(if column == "raw" {
            Self::Raw(RawClient::connect(addr).await?)
        } else {
            // As (e'): the hello, the lookup and the first call leave together.
            let client = Client::builder()
                .addr(addr.to_string())
                .connect_lazy()
                .await?;
            Self::Ipc(client.proxy())
        })
    }

    async fn add(&self, a: u64, b: u64) -> Result<(), BoxError> {
        let sum = match self {
            Self::Raw(c) => c.add(a, b).await?,
            Self::Ipc(p) => p.add(a, b).await?,
        };
        if sum != a.wrapping_add(b) {
            return Err(format!("{a} + {b} came back as {sum}").into());
        }
        Ok(())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(column), Some(shape), Some(calls)) = (
        args.first().filter(|c| *c == "raw" || *c == "ipc"),
        args.get(1)
            .filter(|s| ["pipelined", "sequential", "cold", "stream"].contains(&s.as_str())),
        args.get(2).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: callcost raw|ipc pipelined|sequential|cold|stream CALLS");
        std::process::exit(2);
    };
    if let Err(e) = run(column, shape, calls) {
        eprintln!("callcost: {e}");
        std::process::exit(1);
    }
}

fn run(column: &str, shape: &str, calls: u64) -> Result<(), BoxError> {
    let server_rt = runtime()?;
    let client_rt = runtime()?;
    let (addr, raw_server, ipc_server) = server_rt.block_on(async {
        if column == "raw" {
            let (addr, task) = benches::raw::serve("127.0.0.1:0").await?;
            Ok::<_, BoxError>((addr, Some(task), None))
        } else {
            let server = Server::builder()
                .addr("127.0.0.1:0")
                .expose(BenchServer::new(BenchImpl::default()))
                .start()
                .await?;
            let addr: SocketAddr = server.local_addr().to_string().parse()?;
            Ok((addr, None, Some(server)))
        }
    })?;
    let column = column.to_owned();
    let shape = shape.to_owned();
    let took = client_rt.block_on(async move {
        tokio::spawn(async move {
            if shape == "cold" {
                let started = Instant::now();
                for i in 0..calls {
                    Conn::connect(&column, addr).await?.add(i, 1).await?;
                }
                return Ok::<_, BoxError>(started.elapsed());
            }
            if shape == "stream" {
                return stream(&column, addr, calls).await;
            }
            let conn = Conn::connect(&column, addr).await?;
            for i in 0..WARMUP {
                conn.add(i, 1).await?;
            }
            let started = Instant::now();
            if shape == "sequential" {
                for i in 0..calls {
                    conn.add(i, 1).await?;
                }
                return Ok(started.elapsed());
            }
            let taken = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for k in 0..PIPELINE {
                let (conn, taken) = (conn.clone(), taken.clone());
                tasks.push(tokio::spawn(async move {
                    let mut i = 0;
                    while taken.fetch_add(1, Ordering::Relaxed) < calls {
                        conn.add(i, k).await?;
                        i += 1;
                    }
                    Ok::<_, BoxError>(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            Ok(started.elapsed())
        })
        .await?
    })?;
    eprintln!(
        "{calls} calls in {took:?}: {:.0} calls/s",
        calls as f64 / took.as_secs_f64()
    );
    if let Some(server) = ipc_server {
        server_rt.block_on(server.stop());
    }
    if let Some(task) = raw_server {
        task.abort();
    }
    Ok(())
}

/// Reads a warm-up stream of [`WARMUP`] items, then one of `items`, checking
/// that every item is the next number; returns how long the second took.
async fn stream(column: &str, addr: SocketAddr, items: u64) -> Result<Duration, BoxError> {
    use futures::StreamExt;
    if column == "raw" {
        let mut conn = RawStream::connect(addr).await?;
        conn.count(WARMUP).await?;
        let started = Instant::now();
        let got = conn.count(items).await?;
        if got != items {
            return Err(format!("the stream ended after {got} of {items} items").into());
        }
        return Ok(started.elapsed());
    }
    let client = Client::builder()
        .addr(addr.to_string())
        .connect_lazy()
        .await?;
    let proxy: BenchProxy = client.proxy();
    let mut started = Instant::now();
    for n in [WARMUP, items] {
        started = Instant::now();
        let mut stream = proxy.count(n).await?;
        let mut next = 0;
        while let Some(item) = stream.next().await {
            if item? != next {
                return Err(format!("item {next} out of order").into());
            }
            next += 1;
        }
        if next != n {
            return Err(format!("the stream ended after {next} of {n} items").into());
        }
    }
    Ok(started.elapsed())
}
