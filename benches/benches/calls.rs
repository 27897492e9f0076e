//! Criterion benchmarks: `ipc` next to the raw-TCP ceiling and tarpc, over
//! loopback TCP, in `compare`'s arrangement (servers on one runtime, clients
//! on another, each with one worker thread; every call runs in a task on the
//! client runtime).
//!
//! Groups (one function per column in each): `add_sequential` (one call in
//! flight), `add_64_in_flight` (scenario (b): 64 tasks calling back to back
//! on one connection), `echo_64KiB` and `echo_1MiB` (scenario (d)).
//! `cargo run --release -p benches --bin compare` runs every scenario in one
//! process and prints the table.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use benches::columns::{Column, Conn, RunningServer, Runtimes, start_server};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// One column, running: its runtimes, its server and one client connection.
struct Fixture {
    column: Column,
    conn: Conn,
    rts: Runtimes,
    _server: RunningServer,
}

impl Fixture {
    fn new(column: Column) -> Self {
        let rts = Runtimes::new().expect("runtimes");
        let server = rts
            .server
            .block_on(start_server(column))
            .expect("start server");
        let conn = rts
            .client
            .block_on(Conn::connect(column, &server.target))
            .expect("connect");
        Self {
            column,
            conn,
            rts,
            _server: server,
        }
    }

    /// Time for `iters` calls of `add` made by `in_flight` tasks, each calling
    /// back to back (closed loop), all on the client runtime.
    fn add_closed_loop(&self, in_flight: u64, iters: u64) -> Duration {
        let per_task = iters.div_ceil(in_flight).max(1);
        let conn = self.conn.clone();
        self.rts.client.block_on(async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..in_flight)
                .map(|k| {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        for i in 0..per_task {
                            assert_eq!(conn.add(i, k).await.expect("add"), i + k);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            // Scale to exactly `iters` calls.
            start
                .elapsed()
                .mul_f64(iters as f64 / (per_task * in_flight) as f64)
        })
    }

    /// Time for `iters` echoes of `payload`, one after another.
    fn echo(&self, payload: &[u8], iters: u64) -> Duration {
        let conn = self.conn.clone();
        let payload = payload.to_vec();
        self.rts.client.block_on(async move {
            tokio::spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let back = conn.echo(payload.clone()).await.expect("echo");
                    assert_eq!(back.len(), payload.len());
                }
                start.elapsed()
            })
            .await
            .expect("task")
        })
    }
}

fn bench(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = Column::available().into_iter().map(Fixture::new).collect();

    for (group, in_flight) in [("add_sequential", 1), ("add_64_in_flight", 64)] {
        let mut g = c.benchmark_group(group);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Elements(1));
        for f in &fixtures {
            g.bench_function(BenchmarkId::from_parameter(f.column.name()), |b| {
                b.iter_custom(|iters| f.add_closed_loop(in_flight, iters))
            });
        }
        g.finish();
    }

    for (group, size) in [("echo_64KiB", 64 * 1024), ("echo_1MiB", 1024 * 1024)] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut g = c.benchmark_group(group);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        g.sample_size(20);
        g.throughput(Throughput::Bytes(size as u64));
        for f in &fixtures {
            g.bench_function(BenchmarkId::from_parameter(f.column.name()), |b| {
                b.iter_custom(|iters| f.echo(&payload, iters))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
