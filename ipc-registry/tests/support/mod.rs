//! What the backend tests share: a service whose replicas say who they
//! are, replicas registered in a registry, and the behaviours every
//! backend must show (run by `name_server.rs` and `etcd.rs`).
#![allow(
    dead_code,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipc_core::{Server, ServerHandle, expose};
use ipc_registry::{Instance, Locate, Registry, ReplicaState, Replicas, WatchEvent};

/// A replicated service: each replica answers with its id.
#[expose]
pub trait Work {
    /// This replica's id.
    #[idempotent]
    async fn whoami(&self) -> String;
    /// This replica's id, after `ms` milliseconds. Not idempotent.
    async fn slow(&self, ms: u64) -> String;
}

/// The same methods under another trait name: another fingerprint.
#[expose]
pub trait Impostor {
    /// Its id.
    #[idempotent]
    async fn whoami(&self) -> String;
}

pub struct Replica(pub String);

impl Work for Replica {
    async fn whoami(&self) -> String {
        self.0.clone()
    }
    async fn slow(&self, ms: u64) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.clone()
    }
}

/// Runs `test` under a deadline, so a hang fails instead of stalling.
pub async fn within<F: Future>(secs: u64, test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), test)
        .await
        .expect("the test did not finish in time")
}

/// A replica server with id `id`, registered in `registry` (deregistered
/// when its server stops).
pub async fn replica(registry: &dyn Registry, id: &str) -> ServerHandle {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .expose(WorkServer::new(Replica(id.to_owned())))
        .start()
        .await
        .unwrap();
    let instance = Instance::new::<WorkProxy>("work", server.local_addr()).with_id(id);
    registry
        .register(instance)
        .await
        .unwrap()
        .deregister_on_stop(&server);
    server
}

pub async fn replicas(registry: &dyn Registry) -> Replicas<WorkProxy> {
    let set = Locate::new("work")
        .replicas::<WorkProxy>(registry)
        .await
        .unwrap();
    set.settled().await;
    set
}

/// Waits until `set` has `n` ready replicas.
pub async fn until_ready(set: &Replicas<WorkProxy>, n: usize) {
    set.wait_until(|s| s.iter().filter(|r| r.state == ReplicaState::Ready).count() == n)
        .await;
}

/// Waits until `registry`'s watch of `work` shows exactly `ids`.
pub async fn until_registered(registry: &dyn Registry, ids: &[&str]) {
    let mut watch = registry.watch("work").await.unwrap();
    let mut now: BTreeMap<String, ()> = BTreeMap::new();
    let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    while let Some(event) = watch.next().await {
        match event {
            WatchEvent::Snapshot(all) => {
                now = all.into_iter().map(|i| (i.id, ())).collect();
            }
            WatchEvent::Up(i) => {
                now.insert(i.id, ());
            }
            WatchEvent::Down { id, .. } => {
                now.remove(&id);
            }
            _ => {}
        }
        if now.keys().cloned().collect::<Vec<_>>() == want {
            return;
        }
    }
}

/// Acceptance 1: 3,000 calls through one balanced proxy all succeed and
/// every one of three replicas serves at least 20% of them.
pub async fn spreads_calls_over_three_replicas(registry: &dyn Registry) {
    let servers = [
        replica(registry, "a").await,
        replica(registry, "b").await,
        replica(registry, "c").await,
    ];
    let set = replicas(registry).await;
    until_ready(&set, 3).await;
    let work = set.proxy();
    let answers: Vec<String> = futures::stream::iter(0..3000)
        .map(|_| {
            let work = work.clone();
            async move { work.whoami().await.unwrap() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in answers {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.values().sum::<usize>(), 3000);
    for id in ["a", "b", "c"] {
        let n = counts.get(id).copied().unwrap_or(0);
        assert!(n >= 600, "replica {id} served {n} of 3000: {counts:?}");
    }
    for s in servers {
        s.stop().await;
    }
}

/// Calls from 8 tasks until `stop`: non-idempotent `slow(2)` and
/// idempotent `whoami`, counting answers per replica and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    pub failed: Arc<std::sync::Mutex<Vec<String>>>,
    pub seen: Arc<std::sync::Mutex<BTreeMap<String, Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(work: &WorkProxy) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let tasks = (0..8)
            .map(|t| {
                let (work, stop, ok, failed, seen) = (
                    work.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    seen.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let r = if (n + t) % 2 == 0 {
                            work.slow(2).await
                        } else {
                            work.whoami().await
                        };
                        match r {
                            Ok(id) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                seen.lock().unwrap().entry(id).or_insert_with(Instant::now);
                            }
                            Err(e) => {
                                failed.lock().unwrap().push(e.to_string());
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            seen,
            tasks,
        }
    }

    /// Waits until `n` more calls succeeded.
    pub async fn calls(&self, n: usize) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        while self.ok.load(Ordering::Relaxed) < target {
            {
                let failed = self.failed.lock().unwrap();
                assert!(failed.len() < 100, "calls fail: {:?}", &failed[..5]);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

/// Acceptance 3: a replica stopped gracefully under load costs no call —
/// not even a non-idempotent one.
pub async fn graceful_stop_under_load_fails_no_call(registry: &dyn Registry) {
    let a = replica(registry, "a").await;
    let b = replica(registry, "b").await;
    let c = replica(registry, "c").await;
    let set = replicas(registry).await;
    until_ready(&set, 3).await;
    let load = Load::start(&set.proxy());
    load.calls(300).await;
    assert!(
        load.seen.lock().unwrap().contains_key("b"),
        "b got no call before it stopped"
    );
    b.stop().await;
    load.calls(300).await;
    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    let left = set.status();
    assert!(
        left.iter().all(|r| r.id != "b"),
        "b is still in the set: {left:?}"
    );
    a.stop().await;
    c.stop().await;
}

/// Acceptance 4: a replica that registers while the client runs gets calls
/// within one second.
pub async fn added_replica_gets_calls_within_a_second(registry: &dyn Registry) {
    let a = replica(registry, "a").await;
    let b = replica(registry, "b").await;
    let set = replicas(registry).await;
    until_ready(&set, 2).await;
    let load = Load::start(&set.proxy());
    load.calls(100).await;
    let registered = Instant::now();
    let c = replica(registry, "c").await;
    let seen = load.seen.clone();
    let first_call = loop {
        if let Some(at) = seen.lock().unwrap().get("c") {
            break *at;
        }
        tokio::task::yield_now().await;
        assert!(
            registered.elapsed() < Duration::from_secs(5),
            "c got no call"
        );
    };
    let after = first_call.duration_since(registered);
    let (_, failed) = load.finish().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        after < Duration::from_secs(1),
        "the new replica's first call came {after:?} after it registered"
    );
    eprintln!("new replica's first call {after:?} after it registered");
    for s in [a, b, c] {
        s.stop().await;
    }
}

/// Acceptance 7: a replica registered with another trait's fingerprint is
/// never chosen, and is logged.
pub async fn replica_of_another_trait_is_never_chosen_and_logged(registry: &dyn Registry) {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish(),
    );
    let a = replica(registry, "a").await;
    let wrong = Server::builder()
        .addr("127.0.0.1:0")
        .expose(WorkServer::new(Replica("wrong".into())))
        .start()
        .await
        .unwrap();
    let instance = Instance::new::<ImpostorProxy>("work", wrong.local_addr())
        .with_id("wrong")
        .with_object("Work");
    let _registration = registry.register(instance).await.unwrap();
    let set = replicas(registry).await;
    set.wait_until(|s| {
        s.iter()
            .any(|r| r.id == "wrong" && r.state == ReplicaState::Rejected)
    })
    .await;
    let work = set.proxy();
    for _ in 0..300 {
        assert_eq!(work.whoami().await.unwrap(), "a");
    }
    let log = logs.text();
    assert!(
        log.contains("wrong") && log.contains("another trait"),
        "not logged: {log}"
    );
    a.stop().await;
    wrong.stop().await;
}

/// A log sink for one test.
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
