//! `datastore-bench`: the datastore's throughput beside two ceilings, in
//! one run.
//!
//! ```sh
//! cargo run --release -p ipc-datastore --bin datastore-bench            # ~1 min
//! cargo run --release -p ipc-datastore --bin datastore-bench -- --quick # a smoke run
//! cargo run --release -p ipc-datastore --bin datastore-bench -- --dir /mnt/disk
//! ```
//!
//! Arrangement (as `benches`' `compare`): the server on one Tokio runtime,
//! the clients on another, each multi-threaded with one worker; one
//! connection; 64 tasks calling back to back (64 calls in flight, closed
//! loop); calls counted over a measuring window after a warm-up; each
//! figure the median of 3 rounds. Scenarios:
//!
//! - `add`: `ipc`'s own pipelined `add(u64, u64)` on a one-method service
//!   defined here — what any method costs over the wire;
//! - `set`, `get`: the datastore, values in memory (16-byte values, one key
//!   per task);
//! - `set --persist`: persistent sets, each acknowledged once durable;
//!   concurrent sets share commits (group commit);
//! - `redb`: direct, in-process redb, one durable commit per set, one after
//!   another (what a naive durable store costs) — the same durability per
//!   acknowledged set.
//!
//! The data directory is a fresh one under `--dir` (default: the system's
//! temporary directory), removed at the end; name a real disk, since on a
//! RAM disk durable commits cost nothing. The last line is the summary:
//! `summary set_vs_add=A get_vs_add=B persistent_vs_redb=C targets=met|missed`
//! (targets: A and B at least 0.7, C at least 5).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_core::{Client, Server, expose};
use ipc_datastore::{DataStoreProxy, DataStoreServer, Limits, Store, Value};
use tokio::runtime::Runtime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Call = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync,
>;

const IN_FLIGHT: usize = 64;
const VALUE_BYTES: usize = 16;

/// The one-method service of the `add` ceiling.
#[expose]
trait Adder {
    /// `a + b`.
    async fn add(&self, a: u64, b: u64) -> u64;
}

struct Add;

impl Adder for Add {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

struct Settings {
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    dir: PathBuf,
}

fn one_worker(name: &str) -> Result<Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Calls `call` from `IN_FLIGHT` tasks back to back on `rt`; calls per
/// second over the measuring window.
fn closed_loop(rt: &Runtime, s: &Settings, call: Call) -> Result<f64, BoxError> {
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for task in 0..IN_FLIGHT {
            let (stop, count, call) = (stop.clone(), count.clone(), call.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    call(task, i).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, BoxError>(())
            }));
        }
        tokio::time::sleep(s.warmup).await;
        let (c0, t0) = (count.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(s.measure).await;
        let (c1, t1) = (count.load(Ordering::Relaxed), Instant::now());
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await??;
        }
        Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
    })
}

fn key(task: usize) -> String {
    format!("k{task}")
}

/// One round of every scenario, in order: add, set, get, set --persist, redb.
fn round(s: &Settings, n: usize) -> Result<[f64; 5], BoxError> {
    let server_rt = one_worker("bench-server")?;
    let client_rt = one_worker("bench-client")?;
    let dir = s
        .dir
        .join(format!("datastore-bench-{}-{n}", std::process::id()));
    let store = Store::open(&dir, Limits::default())?;
    let server = server_rt.block_on(
        Server::builder()
            .addr("127.0.0.1:0")
            .expose(AdderServer::new(Add))
            .expose(DataStoreServer::new(store.clone()))
            .start(),
    )?;
    let addr = server.local_addr().clone();
    let (adder, data): (AdderProxy, DataStoreProxy) = client_rt.block_on(async {
        let client = Client::connect(addr).await?;
        Ok::<_, BoxError>((
            client.get_exposed_object().await?,
            client.get_exposed_object().await?,
        ))
    })?;
    let value = Value::raw("bench", vec![7u8; VALUE_BYTES]);

    let add: Call = Arc::new(move |task, i| {
        let adder = adder.clone();
        Box::pin(async move {
            let sum = adder.add(i, task as u64).await?;
            if sum != i.wrapping_add(task as u64) {
                return Err("wrong sum".into());
            }
            Ok(())
        })
    });
    let set = |persist: bool| -> Call {
        let (data, value) = (data.clone(), value.clone());
        Arc::new(move |task, _| {
            let (data, value) = (data.clone(), value.clone());
            Box::pin(async move {
                data.set("bench".into(), key(task), value, persist)
                    .await
                    .map_err(|e| format!("set: {e}"))?;
                Ok(())
            })
        })
    };
    let get: Call = {
        let data = data.clone();
        Arc::new(move |task, _| {
            let data = data.clone();
            Box::pin(async move {
                match data.get("bench".into(), key(task)).await? {
                    Some(e) if e.value.data.len() == VALUE_BYTES => Ok(()),
                    other => Err(format!("get returned {other:?}").into()),
                }
            })
        })
    };

    let add = closed_loop(&client_rt, s, add)?;
    let set_memory = closed_loop(&client_rt, s, set(false))?;
    let get = closed_loop(&client_rt, s, get)?;
    let set_persistent = closed_loop(&client_rt, s, set(true))?;
    drop(data);
    server_rt.block_on(server.stop());
    server_rt.block_on(store.close());
    let naive = naive_redb(s, &dir.join("naive.redb"))?;
    std::fs::remove_dir_all(&dir)?;
    Ok([add, set_memory, get, set_persistent, naive])
}

/// Sequential sets into redb directly, one durable commit each.
fn naive_redb(s: &Settings, path: &std::path::Path) -> Result<f64, BoxError> {
    const TABLE: redb::TableDefinition<'_, (&str, &str), &[u8]> =
        redb::TableDefinition::new("values");
    let db = redb::Database::create(path)?;
    let value = [7u8; VALUE_BYTES];
    let set = |i: u64| -> Result<(), BoxError> {
        let txn = db.begin_write()?; // durability: Immediate, the default
        {
            let mut table = txn.open_table(TABLE)?;
            let name = key((i % IN_FLIGHT as u64) as usize);
            table.insert(("bench", name.as_str()), value.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    };
    let mut i = 0;
    let warm_until = Instant::now() + s.warmup;
    while Instant::now() < warm_until {
        set(i)?;
        i += 1;
    }
    let (t0, c0) = (Instant::now(), i);
    while t0.elapsed() < s.measure {
        set(i)?;
        i += 1;
    }
    Ok((i - c0) as f64 / t0.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> ExitCode {
    let mut s = Settings {
        rounds: 3,
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(3),
        dir: std::env::temp_dir(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                s.rounds = 1;
                s.warmup = Duration::from_millis(200);
                s.measure = Duration::from_millis(500);
            }
            "--dir" => match args.next() {
                Some(dir) => s.dir = dir.into(),
                None => return usage("`--dir` needs a path"),
            },
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    println!(
        "datastore-bench: {IN_FLIGHT} calls in flight on one connection, {VALUE_BYTES}-byte values; \
         server and client each on a one-worker runtime; data under {}; median of {} round(s) of {:?}",
        s.dir.display(),
        s.rounds,
        s.measure
    );
    let mut columns: [Vec<f64>; 5] = Default::default();
    for n in 0..s.rounds {
        match round(&s, n) {
            Ok(figures) => {
                for (column, f) in columns.iter_mut().zip(figures) {
                    column.push(f);
                }
            }
            Err(e) => {
                eprintln!("datastore-bench: round {n} failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let [add, set, get, pset, naive] = columns.map(median);
    for (name, ops) in [
        ("ipc pipelined add", add),
        ("set (in memory)", set),
        ("get", get),
        ("set --persist (durable)", pset),
        ("redb direct, a durable commit per set", naive),
    ] {
        println!("{name:<40} {ops:>12.0} ops/s");
    }
    let (a, b, c) = (set / add, get / add, pset / naive);
    let met = a >= 0.7 && b >= 0.7 && c >= 5.0;
    println!(
        "summary set_vs_add={a:.2} get_vs_add={b:.2} persistent_vs_redb={c:.1} targets={}",
        if met { "met" } else { "missed" }
    );
    ExitCode::SUCCESS
}

fn usage(why: &str) -> ExitCode {
    eprintln!("datastore-bench: {why}\nusage: datastore-bench [--quick] [--dir PATH]");
    ExitCode::from(2)
}
