//! Criterion benchmarks of `ipc` over loopback TCP: one call at a time, and
//! 64 calls in flight on one connection.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use benches::{BenchImpl, BenchProxy, BenchServer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipc_core::{Client, Server};

/// Awaits every task in order.
async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (server, proxy) = rt.block_on(async {
        let server = Server::builder()
            .addr("127.0.0.1:0")
            .expose(BenchServer::new(BenchImpl))
            .start()
            .await
            .expect("server");
        let client = Client::connect(server.local_addr()).await.expect("client");
        let proxy: BenchProxy = client.get_exposed_object().await.expect("proxy");
        (server, proxy)
    });

    let mut g = c.benchmark_group("ipc_tcp");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    g.bench_function("add_sequential", |b| {
        b.to_async(&rt)
            .iter(|| async { proxy.add(1, 2).await.expect("add") })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("add_64_in_flight", |b| {
        b.to_async(&rt).iter(|| async {
            let tasks = (0..64)
                .map(|i| {
                    let p = proxy.clone();
                    tokio::spawn(async move { p.add(i, 1).await.expect("add") })
                })
                .collect();
            join_all(tasks).await
        })
    });
    g.throughput(Throughput::Bytes(64 * 1024));
    let payload = vec![7u8; 64 * 1024];
    g.bench_function("echo_64KiB", |b| {
        b.to_async(&rt)
            .iter(|| async { proxy.echo(payload.clone()).await.expect("echo") })
    });
    g.finish();
    rt.block_on(server.stop());
}

criterion_group!(benches, bench);
criterion_main!(benches);
