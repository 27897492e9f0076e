//! `compare`: `ipc` side by side with a raw-TCP ceiling and tarpc, every
//! scenario for every column in one process.
//!
//! ```sh
//! cargo run --release -p benches --bin compare            # full run, under 5 min
//! cargo run --release -p benches --bin compare -- --quick # under 2 min
//! # some scenarios / some columns (e.g. to profile):
//! cargo run --release -p benches --bin compare -- --only b,h --columns raw,ipc
//! ```
//!
//! (times on the 2-vCPU development VM). `--only` takes the letters below:
//! `g` is measured with `b`, `d'` and `d''` with `d`, `e'` and `e''` with
//! `e`, `h2` with `h`.
//!
//! Columns ([`benches::columns`]): `raw` (hand-written `LengthDelimitedCodec`
//! exchange, the ceiling), `tarpc` (0.38, bincode over TCP), `ipc` (TCP),
//! `ipc-unix` (a Unix socket, where `ipc_core::Address` has that variant),
//! and `ipc-tls`: `ipc` over `tls://` (TCP, TLS 1.3 with `rustls` + `ring`)
//! with a CA and server certificate made at run time ([`benches::pki`]),
//! run for (b), (d) at 1 MiB and (e), (e') only. A cell a column cannot fill
//! (tarpc has no server push; callbacks are `ipc`'s alone; `ipc-tls` outside
//! its rows) shows "—".
//!
//! Arrangement, the same for every column: for each (scenario, column) a fresh
//! pair of runtimes, servers on one and clients on the other, each
//! `new_multi_thread().worker_threads(1)`. Every scenario runs for every
//! column once per round; the column order rotates between rounds (3 rounds),
//! and each cell of the table is the median of the rounds.
//!
//! Scenarios and how each is measured:
//!
//! - **(a) sequential latency**: one connection, one task calling `add`
//!   back to back; each call timed with `Instant`; p50/p99 µs. The whole
//!   process (every thread, via `sched_setaffinity` on each entry of
//!   `/proc/self/task`; the runtimes are built after, so their threads inherit
//!   it) is pinned to one core for this scenario (and (i)) only, then
//!   restored.
//! - **(b) pipelined**: one connection, 64 tasks each calling `add` back to
//!   back (closed loop, 64 calls in flight); calls/s over the measuring
//!   window after a warm-up.
//! - **(g) CPU per call** in (b): process CPU time
//!   (`CLOCK_PROCESS_CPUTIME_ID`: client, server and this harness together)
//!   over the same window, divided by the calls completed in it. Reported
//!   for (c) as well.
//! - **(c) many connections**: 32 connections × 8 tasks each, as (b).
//! - **(d) throughput**: one connection, one task calling `echo` with 64 KiB,
//!   then 1 MiB, back to back; MiB/s counts the payload once per call (the
//!   request's; the reply carries as much again).
//! - **(d') `Vec<u8>` echo**: as (d), in the same run on the same
//!   connection, with `ipc`'s `echo_vec`, declared `Vec<u8>` in the trait
//!   instead of `ipc_core::Bytes` (what serde does with a plain `Vec<u8>`).
//!   `ipc` columns only: the raw and tarpc cells repeat their (d) figures
//!   (raw has no serde; tarpc's `echo` already takes `Vec<u8>`).
//! - **(d'') bytes inside a user struct**: as (d) at 1 MiB, in the same run
//!   on the same connection, with `Bench::echo_blob` (a struct
//!   `Blob { data: Vec<u8> }`, which serde moves one `u8` at a time) and
//!   `Bench::echo_byte_blob` (the same field marked
//!   `#[serde(with = "serde_bytes")]`), each over half of (d)'s warm-up and
//!   measuring windows. `ipc` and `ipc-unix` only.
//! - **(e) cold start, checked**: a new connection made ready the checked
//!   way (for `ipc`: `connect`, which waits for the handshake, then
//!   `get_exposed_object`, which waits for the lookup) and one `add`, timed
//!   together, then closed; p50 µs over many (after 3 unmeasured ones).
//! - **(e') cold start, pipelined** (`ipc` columns): as (e) with
//!   `Client::builder().addr(..).connect_lazy()` (the hello goes out, nothing
//!   is awaited past TCP, and TLS for `ipc-tls`) and `client.proxy()` (the
//!   lookup goes out with the first call): hello, lookup and `add` share one
//!   round trip. The raw and tarpc cells repeat (e): they have no other way
//!   in. (e) and (e') alternate connection by connection on the same server.
//! - **(e'') cold start with a shared key** (`ipc`, `ipc-unix`): (e')'s code
//!   against a second server that requires a shared key (`auth_key` on both
//!   builders), alternating with (e) and (e'). With a key `connect_lazy`
//!   waits for the authentication (no request may precede it), so this is
//!   the price of the key at connect.
//! - **(f) server memory per idle connection**: the column's server runs
//!   alone in a child process (this binary, `--mem-server COLUMN`, same
//!   one-worker runtime), so the client side's memory is not in the figure.
//!   The parent opens 10 warm-up connections (each makes one `add`), reads
//!   the child's resident set (`VmRSS` from `/proc/self/status`, asked over a
//!   pipe), opens 1,000 more connections that each make one `add` and then
//!   stay idle, waits 500 ms, reads it again: KiB per connection =
//!   difference / 1,000. Kernel socket buffers are not in RSS, so not
//!   counted; nor are pages the warm-up touched, freed and the connections
//!   reuse, nor allocated but never touched buffers. So the figure is the
//!   user-space memory an idle connection really occupies, possibly a
//!   little under it. Target for `ipc`: ≤ 16 KiB.
//! - **(h) server stream**: one consumer reads a stream of 100,000 `u64`
//!   (warm-up), then two of 1,000,000, on the same connection, checking
//!   that each item is the next number; items/s = 1,000,000 ÷ the time from
//!   asking for the stream to its end, the faster of the two (a stream
//!   takes well under a second, so one busy moment of the host skews it). `ipc`: `Bench::count` returning
//!   `Streaming::iter(0..n)`, default client window (256 KiB). `raw`
//!   ([`benches::raw::RawStream`]): a connection of its own; a tiny request
//!   frame starts it; the server's read task makes one length-delimited
//!   frame per item (request id + item) into a bounded queue that the same
//!   coalescing writer as the raw calls drains; the end is a frame with the
//!   id alone. No tarpc: it has no server push. Target: ipc ≥ 0.7× raw.
//! - **(h2) server memory held by a stalled stream** (`ipc` columns): on a
//!   second connection to the (h) server, the client opens `Bench::endless`
//!   (`0, 1, 2, …`, every item the server takes counted) with the default
//!   window, 256 KiB, and reads nothing. Every 10 ms the harness reads the
//!   producer's item counter and `ServerStats::buffered_bytes` (reply and
//!   item bytes queued and not yet written); once both have stayed the same
//!   for 250 ms the producer has stopped (giving up, as a failure, after
//!   10 s), and the row is `buffered_bytes` then. The items made are shown
//!   under the table. Items the server has written sit in socket buffers
//!   and in the client's window, not in this figure. Target: ≤ window +
//!   16 KiB.
//! - **(i) callback round trip** (`ipc` columns): pinned to one core like
//!   (a), one connection. First a plain call's p50: `add` back to back, as
//!   in (a). Then one call of `Bench::ping_back` with a callback the client
//!   serves (`Remote<PongProxy>`, passed once); the server's handler calls
//!   `cb.pong(i, 1)` (the same arguments and reply as `add`) back to back
//!   and times each call with `Instant` itself, returning the times; p50 of
//!   those. So both figures are a caller's round trip, `add` client →
//!   server → client and `pong` server → client → server, with no export or
//!   release of the callback inside either. Each half runs for half of
//!   (a)'s warm-up and measuring windows. The ratio row is callback ÷
//!   plain, median of the rounds' own ratios. Target: ≤ 1.2.
//! - **(j) balanced proxy** (`ipc` column): three `Bench` servers on the
//!   server runtime. First 64 tasks call `add` back to back through a plain
//!   proxy to one of them, then through a balanced proxy
//!   (`ipc_core::client::Replicas`, default policy) over all three, each
//!   for half of (b)'s warm-up and measuring windows, and in between through
//!   a balanced proxy over the one (the layer alone, without spreading the
//!   calls over three connections); CPU µs per call of the whole process
//!   for each, and balanced ÷ plain (the median of the rounds' own
//!   ratios). Target: ≤ 1.10.
//!
//! Ratios are ipc/raw and ipc/tarpc of the medians; for throughput higher is
//! better, for latency, CPU and memory lower is better. The last line printed
//! is the machine-readable summary:
//! `summary pipelined_vs_tarpc=A pipelined_vs_raw=B many_conns_vs_tarpc=C mib_vs_raw=D seq_p50_vs_raw=E stream_vs_raw=F callback_vs_call=G vec_vs_bytes=H first_call_vs_raw=I first_call_checked_vs_raw=J tls_pipelined_vs_plain=K tls_mib_vs_plain=L key_connect_vs_plain=M balanced_vs_plain_cpu=N`
//! where A, B and C are ratios of calls/s in (b), (b) and (c), D is the
//! geometric mean of ipc/raw MiB/s at 64 KiB and 1 MiB in (d), E is ipc/raw
//! of the p50 in (a) (above 1: ipc is slower), F is ipc/raw items/s in (h),
//! G is (i)'s callback ÷ plain p50 for ipc (above 1: callbacks are slower),
//! H is the lower of ipc's (d') ÷ (d) MiB/s at 64 KiB and at 1 MiB, I and J
//! are ipc/raw of the p50 in (e') and (e), K and L are `ipc-tls` ÷ `ipc` of
//! (b)'s calls/s and (d)'s 1 MiB MiB/s, and M is ipc's (e'') ÷ (e') p50
//! (above 1: the key costs at connect), N is (j)'s balanced ÷ plain CPU
//! per call. A key whose scenario did not run is
//! `nan`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::columns::{
    BoxError, Column, Conn, IpcTarget, RunningServer, Runtimes, StreamConn, Target, one_worker,
    start_server, start_server_with_key,
};
use benches::{BenchImpl, BenchProxy, BenchServer, Blob, ByteBlob, PongImpl, PongServer};
use ipc_core::client::{Endpoint, Membership, Replicas, ReplicasBuilder};
use ipc_core::{AuthKey, Client, Remote, Server};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;

/// Rounds per run; each cell is the median over them.
const ROUNDS: usize = 3;
/// Calls in flight in (b).
const PIPELINE: usize = 64;
/// Connections and calls in flight per connection in (c).
const MANY_CONNS: usize = 32;
const MANY_PER_CONN: usize = 8;
/// Payload sizes of (d).
const ECHO_SMALL: usize = 64 * 1024;
const ECHO_LARGE: usize = 1024 * 1024;
/// Idle connections opened in (f), and warm-up connections before them.
const IDLE_CONNS: usize = 1000;
const IDLE_WARM: usize = 10;
/// Items of the measured stream in (h), and of the warm-up stream before it.
const STREAM_ITEMS: u64 = 1_000_000;
const STREAM_WARM: u64 = 100_000;
/// Measured streams per round in (h); the fastest counts (one stream takes
/// well under a second, so a busy neighbour skews a single one).
const STREAM_TRIES: usize = 2;
/// The client's default `stream_window` (bytes of item frames), as
/// documented; (h2) uses the default and checks against this.
const DEFAULT_STREAM_WINDOW: usize = 256 * 1024;
/// What (h2) allows a stalled stream to hold beyond the window.
const HELD_SLACK: usize = 16 * 1024;
/// (h2): how often the server's counters are read, how long they must stay
/// unchanged to count as stopped, and how long to wait at most.
const HELD_POLL: Duration = Duration::from_millis(10);
const HELD_STABLE: Duration = Duration::from_millis(250);
const HELD_GIVE_UP: Duration = Duration::from_secs(10);
/// The shared key of (e''): any 16+ bytes do, both ends know it.
const BENCH_KEY: &[u8] = b"ipc bench shared key (not secret)";
/// Targets printed under the table.
const STREAM_TARGET: f64 = 0.7;
const CALLBACK_TARGET: f64 = 1.2;
/// (d'), (d'') with `serde_bytes`: ipc ÷ ipc's own (d) at the same size.
const BLOCK_TARGET: f64 = 0.9;
/// (e'): ipc ÷ raw p50 of connect + first call.
const FIRST_CALL_TARGET: f64 = 1.2;
/// (j): balanced ÷ plain CPU per call.
const BALANCED_TARGET: f64 = 1.10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Scenario {
    A,
    B,
    C,
    D,
    E,
    F,
    H,
    I,
    J,
}

impl Scenario {
    const ALL: [Scenario; 9] = [
        Self::A,
        Self::B,
        Self::C,
        Self::D,
        Self::E,
        Self::F,
        Self::H,
        Self::I,
        Self::J,
    ];

    fn from_letter(s: &str) -> Option<Self> {
        Some(match s {
            "a" => Self::A,
            "b" | "g" => Self::B,
            "c" => Self::C,
            "d" | "d'" | "d''" => Self::D,
            "e" | "e'" | "e''" => Self::E,
            "f" => Self::F,
            "h" | "h2" => Self::H,
            "i" => Self::I,
            "j" => Self::J,
            _ => return None,
        })
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Metric {
    SeqP50,
    SeqP99,
    PipeCalls,
    PipeCallsRecorded,
    PipeCpu,
    ManyCalls,
    ManyCpu,
    EchoSmall,
    EchoLarge,
    EchoVecSmall,
    EchoVecLarge,
    EchoBlob,
    EchoByteBlob,
    ColdP50,
    ColdLazyP50,
    ColdKeyP50,
    MemPerConn,
    StreamItems,
    StreamHeld,
    /// Not a row: items the (h2) producer made before it stopped, shown
    /// under the table.
    StreamTaken,
    CallbackP50,
    CallbackPlainP50,
    CallbackRatio,
    BalancedCpu,
    BalancedPlainCpu,
    BalancedOneCpu,
    BalancedRatio,
}

impl Metric {
    const ALL: [Metric; 26] = [
        Self::SeqP50,
        Self::SeqP99,
        Self::PipeCalls,
        Self::PipeCallsRecorded,
        Self::PipeCpu,
        Self::ManyCalls,
        Self::ManyCpu,
        Self::EchoSmall,
        Self::EchoLarge,
        Self::EchoVecSmall,
        Self::EchoVecLarge,
        Self::EchoBlob,
        Self::EchoByteBlob,
        Self::ColdP50,
        Self::ColdLazyP50,
        Self::ColdKeyP50,
        Self::MemPerConn,
        Self::StreamItems,
        Self::StreamHeld,
        Self::CallbackP50,
        Self::CallbackPlainP50,
        Self::CallbackRatio,
        Self::BalancedCpu,
        Self::BalancedPlainCpu,
        Self::BalancedOneCpu,
        Self::BalancedRatio,
    ];

    /// (scenario, unit)
    fn label(self) -> (&'static str, &'static str) {
        match self {
            Self::SeqP50 => ("(a) sequential `add`, 1 core", "p50 µs"),
            Self::SeqP99 => ("(a) sequential `add`, 1 core", "p99 µs"),
            Self::PipeCalls => ("(b) 1 conn × 64 in flight, `add`", "calls/s"),
            Self::PipeCallsRecorded => ("(b') (b) with a `metrics` recorder recording", "calls/s"),
            Self::PipeCpu => ("(g) CPU per call in (b)", "CPU µs/call"),
            Self::ManyCalls => ("(c) 32 conns × 8 in flight, `add`", "calls/s"),
            Self::ManyCpu => ("(c) CPU per call", "CPU µs/call"),
            Self::EchoSmall => ("(d) echo 64 KiB, 1 in flight", "MiB/s"),
            Self::EchoLarge => ("(d) echo 1 MiB, 1 in flight", "MiB/s"),
            Self::EchoVecSmall => ("(d') echo 64 KiB as `Vec<u8>`", "MiB/s"),
            Self::EchoVecLarge => ("(d') echo 1 MiB as `Vec<u8>`", "MiB/s"),
            Self::EchoBlob => ("(d'') echo 1 MiB in `Blob { data: Vec<u8> }`", "MiB/s"),
            Self::EchoByteBlob => ("(d'') the same with `serde_bytes`", "MiB/s"),
            Self::ColdP50 => ("(e) connect + lookup + first call, checked", "p50 µs"),
            Self::ColdLazyP50 => ("(e') connect + first call, pipelined", "p50 µs"),
            Self::ColdKeyP50 => ("(e'') (e') with a shared key", "p50 µs"),
            Self::MemPerConn => ("(f) server memory per idle conn (1,000)", "KiB"),
            Self::StreamItems => ("(h) server stream of 1,000,000 `u64`", "items/s"),
            Self::StreamHeld => (
                "(h2) server memory held by a stalled stream (window 256 KiB)",
                "bytes",
            ),
            Self::StreamTaken => ("(h2) items made before the producer stopped", "items"),
            Self::CallbackP50 => ("(i) callback server→client→server, 1 core", "p50 µs"),
            Self::CallbackPlainP50 => ("(i) plain `add` in the same run", "p50 µs"),
            Self::CallbackRatio => ("(i) callback ÷ plain call", "ratio"),
            Self::BalancedCpu => (
                "(j) 64 in flight via a balanced proxy, 3 replicas",
                "CPU µs/call",
            ),
            Self::BalancedPlainCpu => ("(j) the same via a plain proxy to one", "CPU µs/call"),
            Self::BalancedOneCpu => (
                "(j) the same via a balanced proxy over that one",
                "CPU µs/call",
            ),
            Self::BalancedRatio => ("(j) balanced ÷ plain CPU per call", "ratio"),
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Self::PipeCalls
            | Self::PipeCallsRecorded
            | Self::ManyCalls
            | Self::EchoSmall
            | Self::EchoLarge
            | Self::EchoVecSmall
            | Self::EchoVecLarge
            | Self::EchoBlob
            | Self::EchoByteBlob
            | Self::StreamItems
            | Self::StreamHeld
            | Self::StreamTaken => format!("{v:.0}"),
            Self::SeqP50
            | Self::SeqP99
            | Self::ColdP50
            | Self::ColdLazyP50
            | Self::ColdKeyP50
            | Self::CallbackP50
            | Self::CallbackPlainP50 => format!("{v:.1}"),
            Self::PipeCpu
            | Self::ManyCpu
            | Self::CallbackRatio
            | Self::BalancedCpu
            | Self::BalancedPlainCpu
            | Self::BalancedOneCpu
            | Self::BalancedRatio => format!("{v:.2}"),
            Self::MemPerConn => format!("{v:.1}"),
        }
    }

    /// The metric whose figures fill this row's `column` cell: the (d')
    /// rows repeat (d) for raw (no serde there) and tarpc (whose `echo`
    /// already takes a `Vec<u8>`); (e') repeats (e) for them (no other way
    /// in).
    fn source(self, column: Column) -> Metric {
        match (self, column) {
            (Self::EchoVecSmall, Column::Raw | Column::Tarpc) => Self::EchoSmall,
            (Self::EchoVecLarge, Column::Raw | Column::Tarpc) => Self::EchoLarge,
            (Self::ColdLazyP50, Column::Raw | Column::Tarpc) => Self::ColdP50,
            _ => self,
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    quick: bool,
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    cold_iters: usize,
    scenarios: Vec<Scenario>,
    columns: Vec<Column>,
}

type Results = HashMap<(Metric, Column), Vec<f64>>;

fn main() {
    raise_open_file_limit();
    // Installed, switched off, for the whole run: (b') switches it on.
    benches::recorder::install();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--mem-server") {
        let column = args.get(i + 1).and_then(|c| Column::from_name(c));
        let Some(column) = column else {
            eprintln!("--mem-server needs a column name");
            std::process::exit(2);
        };
        if let Err(e) = mem_server(column) {
            eprintln!("mem-server {}: {e}", column.name());
            std::process::exit(1);
        }
        return;
    }
    let settings = match parse_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{e}\nusage: compare [--quick] [--rounds N] [--only a,b,c,d,e,f,h,i,j] [--columns raw,tarpc,ipc,ipc-unix,ipc-tls]"
            );
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let results = run_all(&settings);
    print_report(&settings, &results, started.elapsed());
}

fn parse_args(args: &[String]) -> Result<Settings, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut s = Settings {
        quick,
        rounds: ROUNDS,
        warmup: Duration::from_millis(if quick { 200 } else { 500 }),
        measure: Duration::from_millis(if quick { 600 } else { 2000 }),
        cold_iters: if quick { 40 } else { 200 },
        scenarios: Scenario::ALL.to_vec(),
        columns: Column::available(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "--rounds" => {
                s.rounds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--rounds needs a positive number")?;
            }
            "--only" => {
                let list = it.next().ok_or("--only needs a list")?;
                s.scenarios = list
                    .split(',')
                    .map(|l| Scenario::from_letter(l.trim()).ok_or(format!("no scenario {l}")))
                    .collect::<Result<_, _>>()?;
                s.scenarios.sort();
                s.scenarios.dedup();
            }
            "--columns" => {
                let list = it.next().ok_or("--columns needs a list")?;
                let available = Column::available();
                s.columns = list
                    .split(',')
                    .map(|c| {
                        Column::from_name(c.trim())
                            .filter(|c| available.contains(c))
                            .ok_or(format!("no column {c} in this build"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(s)
}

fn run_all(s: &Settings) -> Results {
    let mut results = Results::new();
    for round in 0..s.rounds {
        let mut order = s.columns.clone();
        let n = order.len().max(1);
        order.rotate_left(round % n);
        let names: Vec<_> = order.iter().map(|c| c.name()).collect();
        eprintln!("round {}/{}: columns {names:?}", round + 1, s.rounds);
        for &scenario in &s.scenarios {
            for &column in &order {
                match run_scenario(scenario, column, s) {
                    Ok(metrics) if metrics.is_empty() => {
                        eprintln!("  {scenario:?} {:<8} — (not applicable)", column.name());
                    }
                    Ok(metrics) => {
                        let shown: Vec<String> = metrics
                            .iter()
                            .map(|(m, v)| format!("{} {}", m.format(*v), m.label().1))
                            .collect();
                        eprintln!("  {scenario:?} {:<8} {}", column.name(), shown.join(", "));
                        for (m, v) in metrics {
                            results.entry((m, column)).or_default().push(v);
                        }
                    }
                    Err(e) => eprintln!("  {scenario:?} {:<8} FAILED: {e}", column.name()),
                }
            }
        }
    }
    results
}

fn run_scenario(
    scenario: Scenario,
    column: Column,
    s: &Settings,
) -> Result<Vec<(Metric, f64)>, BoxError> {
    match scenario {
        // The TLS column has its rows in (b), (d) and (e) only.
        Scenario::A | Scenario::C | Scenario::F | Scenario::H | Scenario::I
            if column == Column::IpcTls =>
        {
            Ok(Vec::new())
        }
        Scenario::A => sequential_latency(column, s),
        Scenario::B => {
            let (calls, cpu) = closed_loop(column, s, 1, PIPELINE)?;
            let mut rows = vec![(Metric::PipeCalls, calls), (Metric::PipeCpu, cpu)];
            if column == Column::Ipc {
                // (b'): the same with the server's metrics recording.
                let (recorded, _) =
                    benches::recorder::recording(|| closed_loop(column, s, 1, PIPELINE))?;
                rows.push((Metric::PipeCallsRecorded, recorded));
            }
            Ok(rows)
        }
        Scenario::C => {
            let (calls, cpu) = closed_loop(column, s, MANY_CONNS, MANY_PER_CONN)?;
            Ok(vec![(Metric::ManyCalls, calls), (Metric::ManyCpu, cpu)])
        }
        Scenario::D => echo_throughput(column, s),
        Scenario::E => cold_start(column, s),
        Scenario::F => Ok(vec![(Metric::MemPerConn, server_memory(column)?)]),
        // tarpc has no server push.
        Scenario::H if column == Column::Tarpc => Ok(Vec::new()),
        Scenario::H => server_stream(column),
        // Callbacks are `ipc`'s alone.
        Scenario::I if !is_ipc(column) => Ok(Vec::new()),
        Scenario::I => callback_latency(column, s),
        // One column is enough: it compares ipc with itself.
        Scenario::J if column != Column::Ipc => Ok(Vec::new()),
        Scenario::J => balanced_cpu(s),
    }
}

/// The plain `ipc` columns (not `ipc-tls`, which has only a few rows).
fn is_ipc(column: Column) -> bool {
    matches!(column, Column::Ipc | Column::IpcUnix)
}

/// Starts `column`'s server on a fresh pair of runtimes, runs `f` with them,
/// then drops the client runtime and the server runtime (ending every task).
fn with_server<T>(
    column: Column,
    f: impl FnOnce(&Runtimes, &RunningServer) -> Result<T, BoxError>,
) -> Result<T, BoxError> {
    let rts = Runtimes::new()?;
    let server = rts.server.block_on(start_server(column))?;
    let out = f(&rts, &server);
    let Runtimes {
        server: srt,
        client,
    } = rts;
    drop(client);
    drop(server);
    drop(srt);
    out
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The value at quantile `q` (0..=1) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn check_add(got: u64, a: u64, b: u64) -> Result<(), BoxError> {
    if got == a.wrapping_add(b) {
        Ok(())
    } else {
        Err(format!("add({a}, {b}) returned {got}").into())
    }
}

// --- (a) ---------------------------------------------------------------

fn sequential_latency(column: Column, s: &Settings) -> Result<Vec<(Metric, f64)>, BoxError> {
    let (warmup, measure) = (s.warmup, s.measure);
    on_one_core(|| {
        with_server(column, |rts, server| {
            rts.client.block_on(async move {
                let conn = Conn::connect(column, &server.target).await?;
                let spawned = tokio::spawn(add_latencies(conn, warmup, measure));
                let lat = spawned.await??;
                Ok(vec![
                    (Metric::SeqP50, quantile(&lat, 0.50)),
                    (Metric::SeqP99, quantile(&lat, 0.99)),
                ])
            })
        })
    })
}

/// Calls `add` back to back for `warmup`, then for `measure`, timing each
/// call of the second part; the times in µs, sorted.
async fn add_latencies(
    conn: Conn,
    warmup: Duration,
    measure: Duration,
) -> Result<Vec<f64>, BoxError> {
    let mut lat = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < warmup {
        check_add(conn.add(i, 1).await?, i, 1)?;
        i += 1;
    }
    let start = Instant::now();
    while start.elapsed() < measure {
        let t = Instant::now();
        let got = conn.add(i, 1).await?;
        lat.push(micros(t.elapsed()));
        check_add(got, i, 1)?;
        i += 1;
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// Runs `f` with the whole process pinned to one core (the first of its
/// affinity mask; runtimes built inside inherit it), then restores the mask.
fn on_one_core<T>(f: impl FnOnce() -> Result<T, BoxError>) -> Result<T, BoxError> {
    let original = sched_getaffinity(Pid::from_raw(0))?;
    let core = (0..CpuSet::count())
        .find(|&c| original.is_set(c).unwrap_or(false))
        .ok_or("no CPU in this process's affinity mask")?;
    let mut one = CpuSet::new();
    one.set(core)?;
    set_process_affinity(&one)?;
    let result = f();
    set_process_affinity(&original)?;
    result
}

/// Sets the CPU affinity of every thread of this process.
fn set_process_affinity(set: &CpuSet) -> Result<(), BoxError> {
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may have exited since the listing; ignore that.
        let _ = sched_setaffinity(Pid::from_raw(tid), set);
    }
    Ok(())
}

// --- (b), (c), (g) -------------------------------------------------------

/// `conns` connections × `per_conn` tasks each calling `add` back to back;
/// returns (calls/s, CPU µs per call) over the measuring window.
fn closed_loop(
    column: Column,
    s: &Settings,
    conns: usize,
    per_conn: usize,
) -> Result<(f64, f64), BoxError> {
    let (warmup, measure) = (s.warmup, s.measure);
    with_server(column, |rts, server| {
        let target = &server.target;
        rts.client.block_on(async move {
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::with_capacity(conns * per_conn);
            for _ in 0..conns {
                let conn = Conn::connect(column, target).await?;
                for k in 0..per_conn as u64 {
                    let (conn, stop, count) = (conn.clone(), stop.clone(), count.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            check_add(conn.add(i, k).await?, i, k)?;
                            count.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                        Ok::<_, BoxError>(())
                    }));
                }
            }
            tokio::time::sleep(warmup).await;
            let (c0, cpu0, t0) = (count.load(Ordering::Relaxed), cpu_time()?, Instant::now());
            tokio::time::sleep(measure).await;
            let (c1, cpu1, t1) = (count.load(Ordering::Relaxed), cpu_time()?, Instant::now());
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await??;
            }
            let calls = (c1 - c0) as f64;
            if calls == 0.0 {
                return Err("no call completed".into());
            }
            Ok((
                calls / (t1 - t0).as_secs_f64(),
                micros(cpu1.saturating_sub(cpu0)) / calls,
            ))
        })
    })
}

/// CPU time of the whole process (every thread), user + system.
fn cpu_time() -> Result<Duration, BoxError> {
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)?;
    Ok(Duration::new(
        u64::try_from(t.tv_sec())?,
        u32::try_from(t.tv_nsec())?,
    ))
}

// --- (d), (d'), (d'') -----------------------------------------------------

/// How a (d) run sends its payload.
#[derive(Debug, Clone, Copy)]
enum Payload {
    /// `Conn::echo`: `ipc_core::Bytes` for `ipc`, the column's own for the
    /// others.
    Bytes,
    /// `Bench::echo_vec`: a `Vec<u8>` argument.
    Vec,
    /// `Bench::echo_blob`: a `Vec<u8>` field of a user struct.
    Blob,
    /// `Bench::echo_byte_blob`: the same field with `serde_bytes`.
    ByteBlob,
}

/// (d) for every column (1 MiB only for `ipc-tls`), then (d') and (d'')
/// for the `ipc` columns: the same loop with another method.
fn echo_throughput(column: Column, s: &Settings) -> Result<Vec<(Metric, f64)>, BoxError> {
    let (warmup, measure) = (s.warmup, s.measure);
    with_server(column, |rts, server| {
        rts.client.block_on(async move {
            let conn = Conn::connect(column, &server.target).await?;
            let spawned = tokio::spawn(async move {
                let mut runs = Vec::new();
                if column != Column::IpcTls {
                    runs.push((Metric::EchoSmall, ECHO_SMALL, Payload::Bytes));
                }
                runs.push((Metric::EchoLarge, ECHO_LARGE, Payload::Bytes));
                if is_ipc(column) {
                    runs.extend([
                        (Metric::EchoVecSmall, ECHO_SMALL, Payload::Vec),
                        (Metric::EchoVecLarge, ECHO_LARGE, Payload::Vec),
                        (Metric::EchoBlob, ECHO_LARGE, Payload::Blob),
                        (Metric::EchoByteBlob, ECHO_LARGE, Payload::ByteBlob),
                    ]);
                }
                let mut out = Vec::new();
                for (metric, size, how) in runs {
                    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
                    let call = async |payload: &Vec<u8>| -> Result<(), BoxError> {
                        let data = payload.clone();
                        let back = match (how, conn.ipc()) {
                            (Payload::Bytes, _) => conn.echo(data).await?,
                            (Payload::Vec, Some(p)) => p.echo_vec(data).await?,
                            (Payload::Blob, Some(p)) => p.echo_blob(Blob { data }).await?.data,
                            (Payload::ByteBlob, Some(p)) => {
                                p.echo_byte_blob(ByteBlob { data }).await?.data
                            }
                            (_, None) => return Err("an ipc payload on another column".into()),
                        };
                        if back.len() != size || back[size - 1] != payload[size - 1] {
                            return Err("echo returned other bytes".into());
                        }
                        Ok(())
                    };
                    // (d'') gets half the windows: it is extra, and keeps
                    // the full run within its time.
                    let (warmup, measure) = match how {
                        Payload::Blob | Payload::ByteBlob => (warmup / 2, measure / 2),
                        Payload::Bytes | Payload::Vec => (warmup, measure),
                    };
                    let start = Instant::now();
                    while start.elapsed() < warmup {
                        call(&payload).await?;
                    }
                    let (start, mut calls) = (Instant::now(), 0u64);
                    while start.elapsed() < measure {
                        call(&payload).await?;
                        calls += 1;
                    }
                    let mib = (calls as f64 * size as f64) / (1024.0 * 1024.0);
                    out.push((metric, mib / start.elapsed().as_secs_f64()));
                }
                Ok::<_, BoxError>(out)
            });
            spawned.await?
        })
    })
}

// --- (e), (e'), (e'') --------------------------------------------------------

/// One way into a server in (e): which row, how to connect, which server.
#[derive(Debug, Clone)]
struct ColdWay {
    metric: Metric,
    pipelined: bool,
    target: Target,
}

/// (e) for every column; (e') for the `ipc` columns and `ipc-tls`; (e'')
/// for the `ipc` columns, on a second server that requires a key. The ways
/// alternate connection by connection, so a busy moment of the host falls
/// on all of them alike.
fn cold_start(column: Column, s: &Settings) -> Result<Vec<(Metric, f64)>, BoxError> {
    let iters = s.cold_iters;
    with_server(column, |rts, server| {
        let mut ways = vec![ColdWay {
            metric: Metric::ColdP50,
            pipelined: false,
            target: server.target.clone(),
        }];
        if is_ipc(column) || column == Column::IpcTls {
            ways.push(ColdWay {
                metric: Metric::ColdLazyP50,
                pipelined: true,
                target: server.target.clone(),
            });
        }
        // The keyed server lives until the measuring is done (dropped below,
        // before the server runtime).
        let mut keyed = None;
        if is_ipc(column) {
            let key = AuthKey::new(BENCH_KEY)?;
            let with_key = rts
                .server
                .block_on(start_server_with_key(column, Some(key)))?;
            ways.push(ColdWay {
                metric: Metric::ColdKeyP50,
                pipelined: true,
                target: with_key.target.clone(),
            });
            keyed = Some(with_key);
        }
        let out = rts.client.block_on(async move {
            let spawned = tokio::spawn(async move {
                let mut lat: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); ways.len()];
                for i in 0..iters + 3 {
                    for (way, lat) in ways.iter().zip(&mut lat) {
                        let t = Instant::now();
                        let conn = if way.pipelined {
                            Conn::connect_pipelined(column, &way.target).await?
                        } else {
                            Conn::connect(column, &way.target).await?
                        };
                        check_add(conn.add(1, 2).await?, 1, 2)?;
                        let took = t.elapsed();
                        drop(conn);
                        if i >= 3 {
                            lat.push(micros(took));
                        }
                    }
                }
                let out: Vec<(Metric, f64)> = ways
                    .iter()
                    .zip(lat)
                    .map(|(way, mut lat)| {
                        lat.sort_by(f64::total_cmp);
                        (way.metric, quantile(&lat, 0.50))
                    })
                    .collect();
                Ok::<_, BoxError>(out)
            });
            spawned.await?
        });
        drop(keyed);
        out
    })
}

// --- (f) -----------------------------------------------------------------

/// The child side of (f): serve `column` on a one-worker runtime, print
/// `target ADDR`, then answer each `rss` line on stdin with `rss BYTES`;
/// exit at end of input.
fn mem_server(column: Column) -> Result<(), BoxError> {
    let rt = one_worker("bench-server")?;
    let server = rt.block_on(start_server(column))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "target {}", server.target)?;
    stdout.flush()?;
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "rss" {
            writeln!(stdout, "rss {}", rss_bytes()?)?;
            stdout.flush()?;
        }
    }
    drop(server);
    drop(rt);
    Ok(())
}

/// This process's resident set size, from `VmRSS` in `/proc/self/status`.
fn rss_bytes() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

struct MemChild {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl MemChild {
    fn spawn(column: Column) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--mem-server", column.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
        Ok(Self {
            child,
            input,
            output,
        })
    }

    fn line(&mut self, prefix: &str) -> Result<String, BoxError> {
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        line.trim()
            .strip_prefix(prefix)
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| format!("child said {line:?}, expected {prefix}").into())
    }

    fn rss(&mut self) -> Result<u64, BoxError> {
        let input = self.input.as_mut().ok_or("child stdin closed")?;
        writeln!(input, "rss")?;
        input.flush()?;
        Ok(self.line("rss")?.parse()?)
    }
}

impl Drop for MemChild {
    fn drop(&mut self) {
        drop(self.input.take());
        let _ = self.child.wait();
    }
}

/// (f): KiB of server RSS per idle connection; see the module docs.
fn server_memory(column: Column) -> Result<f64, BoxError> {
    let mut child = MemChild::spawn(column)?;
    let shown = child.line("target")?;
    let target = match column {
        Column::Raw | Column::Tarpc => Target::Socket(shown.parse()?),
        Column::Ipc | Column::IpcUnix => Target::Ipc(IpcTarget::plain(shown.parse()?)),
        Column::IpcTls => return Err("no memory figure for ipc-tls".into()),
    };
    let rt = one_worker("bench-client")?;
    let per_conn = rt.block_on(async {
        let open = async |n: usize, conns: &mut Vec<Conn>| -> Result<(), BoxError> {
            for i in 0..n as u64 {
                let conn = Conn::connect(column, &target).await?;
                check_add(conn.add(i, 1).await?, i, 1)?;
                conns.push(conn);
            }
            Ok(())
        };
        let mut conns = Vec::with_capacity(IDLE_WARM + IDLE_CONNS);
        open(IDLE_WARM, &mut conns).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = child.rss()?;
        open(IDLE_CONNS, &mut conns).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = child.rss()?;
        drop(conns);
        Ok::<_, BoxError>(after.saturating_sub(before) as f64 / IDLE_CONNS as f64 / 1024.0)
    });
    drop(rt);
    drop(child);
    per_conn
}

/// Raises the soft open-file limit to the hard one: (f) holds 1,000+
/// sockets in each process.
fn raise_open_file_limit() {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let need = (2 * (IDLE_CONNS + IDLE_WARM) + 64) as u64;
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < need {
            eprintln!("warning: open-file limit {soft} < {need}; scenario (f) may fail");
        }
    }
}

// --- (h), (h2) --------------------------------------------------------------

/// (h): items/s of one stream of [`STREAM_ITEMS`] after a warm-up stream;
/// for `ipc` columns also (h2).
fn server_stream(column: Column) -> Result<Vec<(Metric, f64)>, BoxError> {
    with_server(column, |rts, server| {
        rts.client.block_on(async move {
            let target = server.target.clone();
            let spawned = tokio::spawn(async move {
                let mut consumer = StreamConn::connect(column, &target).await?;
                let expect = async |consumer: &mut StreamConn, n: u64| -> Result<(), BoxError> {
                    let got = consumer.count(n).await?;
                    if got == n {
                        Ok(())
                    } else {
                        Err(format!("stream of {n} items ended after {got}").into())
                    }
                };
                expect(&mut consumer, STREAM_WARM).await?;
                let mut best = Duration::MAX;
                for _ in 0..STREAM_TRIES {
                    let t = Instant::now();
                    expect(&mut consumer, STREAM_ITEMS).await?;
                    best = best.min(t.elapsed());
                }
                Ok::<_, BoxError>(STREAM_ITEMS as f64 / best.as_secs_f64())
            });
            let mut out = vec![(Metric::StreamItems, spawned.await??)];
            if is_ipc(column) {
                let conn = Conn::connect(column, &server.target).await?;
                let proxy = conn.ipc().ok_or("an ipc column without a proxy")?;
                let (held, taken) = stalled_stream(proxy, server).await?;
                out.push((Metric::StreamHeld, held));
                out.push((Metric::StreamTaken, taken));
            }
            Ok(out)
        })
    })
}

/// (h2): opens an endless stream, reads nothing, waits until the server's
/// producer stops (its item counter and `buffered_bytes` unchanged for
/// [`HELD_STABLE`]); returns `buffered_bytes` then, and the items made.
async fn stalled_stream(
    proxy: &benches::BenchProxy,
    server: &RunningServer,
) -> Result<(f64, f64), BoxError> {
    let read = || -> Result<(u64, usize, usize), BoxError> {
        let stats = server.ipc_stats().ok_or("no server stats")?;
        let produced = server.ipc_produced().ok_or("no producer counter")?;
        Ok((produced, stats.buffered_bytes, stats.streams))
    };
    let (before, _, _) = read()?;
    let stream = proxy.endless().await?;
    let start = Instant::now();
    let mut last = read()?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(HELD_POLL).await;
        let now = read()?;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now.0 > before && since.elapsed() >= HELD_STABLE {
            break;
        }
        if start.elapsed() > HELD_GIVE_UP {
            return Err(format!(
                "producer still running after {HELD_GIVE_UP:?}: {} items taken, {} bytes buffered",
                now.0 - before,
                now.1
            )
            .into());
        }
    }
    let (produced, buffered, streams) = last;
    if streams != 1 {
        eprintln!("    (h2) warning: the server counts {streams} streams, expected 1");
    }
    drop(stream);
    // Dropping the stream should end the producer on the server.
    let start = Instant::now();
    while read()?.2 != 0 {
        if start.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "    (h2) warning: the server still counts a stream 2 s after the consumer dropped it"
            );
            break;
        }
        tokio::time::sleep(HELD_POLL).await;
    }
    Ok((buffered as f64, (produced - before) as f64))
}

// --- (i) -----------------------------------------------------------------

/// (i): on one core, `add`'s latency as in (a), then the server's own timing
/// of a callback into the client (`Bench::ping_back`), on one connection;
/// each half gets half of (a)'s warm-up and measuring windows.
fn callback_latency(column: Column, s: &Settings) -> Result<Vec<(Metric, f64)>, BoxError> {
    let (warmup, measure) = (s.warmup / 2, s.measure / 2);
    on_one_core(|| {
        with_server(column, |rts, server| {
            rts.client.block_on(async move {
                let conn = Conn::connect(column, &server.target).await?;
                let spawned = tokio::spawn(async move {
                    let proxy = conn.ipc().ok_or("an ipc column without a proxy")?.clone();
                    let plain = add_latencies(conn, warmup, measure).await?;
                    let cb = Remote::new(PongServer::new(PongImpl));
                    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    let mut back: Vec<f64> = proxy
                        .ping_back(cb, millis(warmup), millis(measure))
                        .await
                        .map_err(|e| format!("ping_back: {e}"))?
                        .into_iter()
                        .map(|ns| ns as f64 / 1e3)
                        .collect();
                    back.sort_by(f64::total_cmp);
                    Ok::<_, BoxError>((quantile(&plain, 0.5), quantile(&back, 0.5)))
                });
                let (plain, back) = spawned.await??;
                Ok(vec![
                    (Metric::CallbackP50, back),
                    (Metric::CallbackPlainP50, plain),
                    (Metric::CallbackRatio, back / plain),
                ])
            })
        })
    })
}

// --- (j) -----------------------------------------------------------------

/// (j): CPU per call with 64 calls in flight, through a plain proxy to one
/// of three servers, then through a balanced proxy over the three.
fn balanced_cpu(s: &Settings) -> Result<Vec<(Metric, f64)>, BoxError> {
    let (warmup, measure) = (s.warmup / 2, s.measure / 2);
    let rts = Runtimes::new()?;
    let servers = rts.server.block_on(async {
        let mut servers = Vec::new();
        for _ in 0..3 {
            let server = Server::builder()
                .addr("127.0.0.1:0")
                .expose(BenchServer::new(BenchImpl::default()))
                .start()
                .await?;
            servers.push(server);
        }
        Ok::<_, BoxError>(servers)
    })?;
    let (plain, one, balanced) = rts.client.block_on(async {
        let client = Client::connect(servers[0].local_addr()).await?;
        let plain: BenchProxy = client.get_exposed_object().await?;
        let replicas: Replicas<BenchProxy> = ReplicasBuilder::new("bench").build();
        let members = servers
            .iter()
            .enumerate()
            .map(|(i, server)| (i.to_string(), Endpoint::new(server.local_addr(), "Bench")))
            .collect();
        replicas.apply(Membership::Reset(members));
        // The balancing layer alone: a set of one replica.
        let single: Replicas<BenchProxy> = ReplicasBuilder::new("bench-1").build();
        let first = Endpoint::new(servers[0].local_addr(), "Bench");
        single.apply(Membership::Reset(vec![("0".to_owned(), first)]));
        replicas.settled().await;
        single.settled().await;
        if replicas.ready() != 3 || single.ready() != 1 {
            return Err(format!("replicas not ready: {:?}", replicas.status()).into());
        }
        let plain = pipelined_cpu(plain, warmup, measure).await?;
        let one = pipelined_cpu(single.proxy(), warmup, measure).await?;
        let balanced = pipelined_cpu(replicas.proxy(), warmup, measure).await?;
        Ok::<_, BoxError>((plain, one, balanced))
    })?;
    drop(servers);
    Ok(vec![
        (Metric::BalancedCpu, balanced),
        (Metric::BalancedPlainCpu, plain),
        (Metric::BalancedOneCpu, one),
        (Metric::BalancedRatio, balanced / plain),
    ])
}

/// [`PIPELINE`] tasks calling `add` through `proxy` back to back: CPU µs
/// per call over the measuring window.
async fn pipelined_cpu(
    proxy: BenchProxy,
    warmup: Duration,
    measure: Duration,
) -> Result<f64, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..PIPELINE as u64)
        .map(|k| {
            let (proxy, stop, count) = (proxy.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    check_add(proxy.add(i, k).await?, i, k)?;
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    let (c0, cpu0) = (count.load(Ordering::Relaxed), cpu_time()?);
    tokio::time::sleep(measure).await;
    let (c1, cpu1) = (count.load(Ordering::Relaxed), cpu_time()?);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let calls = (c1 - c0) as f64;
    if calls == 0.0 {
        return Err("no call completed".into());
    }
    Ok(micros(cpu1.saturating_sub(cpu0)) / calls)
}

// --- report --------------------------------------------------------------

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs, {model}")
}

fn print_report(s: &Settings, results: &Results, took: Duration) {
    let med = |m: Metric, c: Column| results.get(&(m.source(c), c)).and_then(|v| median(v));
    let ratio = |m: Metric, other: Column| match (med(m, Column::Ipc), med(m, other)) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    };
    let cell = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("—".to_owned(), f);
    // `a` ÷ `b` of the medians, for the summary and the notes.
    let over = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    };
    let times = |v: Option<f64>| cell(v, &|v| format!("{v:.2}×"));

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n## ipc vs raw TCP vs tarpc ({}; {} round(s), median; {}; {:.0} s)\n",
        machine(),
        s.rounds,
        if s.quick { "quick" } else { "full" },
        took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "Servers on one runtime, clients on another, each multi-thread with 1 worker; loopback TCP."
    );
    let _ = writeln!(
        out,
        "Ratios are ipc ÷ other: above 1 is better for calls/s, MiB/s and items/s, worse for µs, KiB and bytes.\n"
    );
    let mut header = "| scenario | unit |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for c in &s.columns {
        header.push_str(&format!(" {} |", c.name()));
        rule.push_str("---:|");
    }
    header.push_str(" ipc/raw | ipc/tarpc |");
    rule.push_str("---:|---:|");
    let _ = writeln!(out, "{header}\n{rule}");
    let measured = |m: Metric| s.columns.iter().any(|c| results.contains_key(&(m, *c)));
    for m in Metric::ALL {
        if !measured(m) {
            continue;
        }
        let (scenario, unit) = m.label();
        let mut row = format!("| {scenario} | {unit} |");
        for c in &s.columns {
            row.push_str(&format!(" {} |", cell(med(m, *c), &|v| m.format(v))));
        }
        let r = |o| cell(ratio(m, o), &|v| format!("{v:.2}"));
        row.push_str(&format!(" {} | {} |", r(Column::Raw), r(Column::Tarpc)));
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
    let mut notes = Vec::new();
    if measured(Metric::EchoVecSmall) {
        notes.push(format!(
            "(d') raw and tarpc cells repeat (d): raw has no serde, and tarpc's `echo` already takes a `Vec<u8>`. \
             Target for ipc: ≥ {BLOCK_TARGET}× its own (d) at the same size (`Vec<u8>` arguments go as one block); \
             ipc's (d') ÷ (d): {} at 64 KiB, {} at 1 MiB.",
            times(over(med(Metric::EchoVecSmall, Column::Ipc), med(Metric::EchoSmall, Column::Ipc))),
            times(over(med(Metric::EchoVecLarge, Column::Ipc), med(Metric::EchoLarge, Column::Ipc))),
        ));
    }
    if measured(Metric::EchoBlob) {
        let large = med(Metric::EchoLarge, Column::Ipc);
        notes.push(format!(
            "(d'') ipc columns only. Target with `#[serde(with = \"serde_bytes\")]`: ≥ {BLOCK_TARGET}× ipc's (d) at 1 MiB \
             (got {}); the plain field has none: serde moves it one `u8` at a time (got {}).",
            times(over(med(Metric::EchoByteBlob, Column::Ipc), large)),
            times(over(med(Metric::EchoBlob, Column::Ipc), large)),
        ));
    }
    if measured(Metric::ColdLazyP50) {
        notes.push(format!(
            "(e') raw and tarpc cells repeat (e): they have no other way in. Target for ipc: ≤ {FIRST_CALL_TARGET}× raw \
             (one round trip after connect, as raw). (e) and (e') alternate connection by connection."
        ));
    }
    if measured(Metric::ColdKeyP50) {
        notes.push(format!(
            "(e'') (e')'s code against a server requiring a shared key (`auth_key`); with a key `connect_lazy` waits \
             for the authentication round trip. No target; ipc (e'') ÷ (e'): {}.",
            times(over(med(Metric::ColdKeyP50, Column::Ipc), med(Metric::ColdLazyP50, Column::Ipc))),
        ));
    }
    if s.columns.contains(&Column::IpcTls) {
        let tls = |m: Metric| times(over(med(m, Column::IpcTls), med(m, Column::Ipc)));
        notes.push(format!(
            "ipc-tls: `tls://` (TLS 1.3, rustls + ring, a CA and server certificate made at run time with rcgen), \
             rows (b), (g), (d) 1 MiB, (e), (e') only. No target; ipc-tls ÷ ipc: (b) {}, (d) 1 MiB {}, (e) {}, (e') {}.",
            tls(Metric::PipeCalls),
            tls(Metric::EchoLarge),
            tls(Metric::ColdP50),
            tls(Metric::ColdLazyP50),
        ));
    }
    if measured(Metric::PipeCallsRecorded) {
        notes.push(format!(
            "(b') ipc only: a recorder (atomic storage) installed and recording every call's outcome, duration and \
             in-flight count; every other row runs with it switched off (no-op handles, as with no recorder). \
             ipc (b') ÷ (b): {}.",
            times(over(med(Metric::PipeCallsRecorded, Column::Ipc), med(Metric::PipeCalls, Column::Ipc))),
        ));
    }
    if measured(Metric::MemPerConn) {
        notes.push("(f) target for ipc: ≤ 16 KiB per idle connection.".to_owned());
    }
    if measured(Metric::StreamItems) {
        notes.push(format!(
            "(h) target for ipc: ≥ {STREAM_TARGET}× raw. tarpc has no server push."
        ));
    }
    if measured(Metric::StreamHeld) {
        notes.push(format!(
            "(h2) target for ipc: ≤ {} bytes (the default window {} KiB + {} KiB). \
             The producer had made {} items (ipc) / {} (ipc-unix) when it stopped.",
            DEFAULT_STREAM_WINDOW + HELD_SLACK,
            DEFAULT_STREAM_WINDOW / 1024,
            HELD_SLACK / 1024,
            cell(med(Metric::StreamTaken, Column::Ipc), &|v| format!(
                "{v:.0}"
            )),
            cell(med(Metric::StreamTaken, Column::IpcUnix), &|v| format!(
                "{v:.0}"
            )),
        ));
    }
    if measured(Metric::CallbackRatio) {
        notes.push(format!(
            "(i) target for ipc: callback ÷ plain call ≤ {CALLBACK_TARGET}; the ratio is the median of each round's own ratio."
        ));
    }
    if measured(Metric::BalancedRatio) {
        notes.push(format!(
            "(j) target for ipc: balanced ÷ plain CPU per call ≤ {BALANCED_TARGET}; the ratio is the median of each round's own ratio."
        ));
    }
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    let _ = writeln!(out);

    let fmt = |v: Option<f64>| v.map_or("nan".to_owned(), |v| format!("{v:.2}"));
    let mib = match (
        ratio(Metric::EchoSmall, Column::Raw),
        ratio(Metric::EchoLarge, Column::Raw),
    ) {
        (Some(a), Some(b)) => Some((a * b).sqrt()),
        _ => None,
    };
    let vec_vs = |vec: Metric, bytes: Metric| over(med(vec, Column::Ipc), med(bytes, Column::Ipc));
    let tls_vs = |m: Metric| over(med(m, Column::IpcTls), med(m, Column::Ipc));
    let vec_vs_bytes = match (
        vec_vs(Metric::EchoVecSmall, Metric::EchoSmall),
        vec_vs(Metric::EchoVecLarge, Metric::EchoLarge),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => None,
    };
    let _ = writeln!(
        out,
        "summary pipelined_vs_tarpc={} pipelined_vs_raw={} many_conns_vs_tarpc={} mib_vs_raw={} seq_p50_vs_raw={} stream_vs_raw={} callback_vs_call={} vec_vs_bytes={} first_call_vs_raw={} first_call_checked_vs_raw={} tls_pipelined_vs_plain={} tls_mib_vs_plain={} key_connect_vs_plain={} recorder_vs_none={} balanced_vs_plain_cpu={}",
        fmt(ratio(Metric::PipeCalls, Column::Tarpc)),
        fmt(ratio(Metric::PipeCalls, Column::Raw)),
        fmt(ratio(Metric::ManyCalls, Column::Tarpc)),
        fmt(mib),
        fmt(ratio(Metric::SeqP50, Column::Raw)),
        fmt(ratio(Metric::StreamItems, Column::Raw)),
        fmt(med(Metric::CallbackRatio, Column::Ipc)),
        fmt(vec_vs_bytes),
        fmt(ratio(Metric::ColdLazyP50, Column::Raw)),
        fmt(ratio(Metric::ColdP50, Column::Raw)),
        fmt(tls_vs(Metric::PipeCalls)),
        fmt(tls_vs(Metric::EchoLarge)),
        fmt(vec_vs(Metric::ColdKeyP50, Metric::ColdLazyP50)),
        fmt(vec_vs(Metric::PipeCallsRecorded, Metric::PipeCalls)),
        fmt(med(Metric::BalancedRatio, Column::Ipc)),
    );
    let _ = out.flush();
}
