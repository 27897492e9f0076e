//! The `cluster` example as real processes: the demo runs to completion
//! (acceptance 8), and `kill -9` of a replica process during a stream of
//! calls (acceptance 2) — on the embedded name server, and with the `etcd`
//! feature on etcd.
//!
//! Every wait has a deadline; children are killed when a test ends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipc_examples::cluster::WorkProxy;
use ipc_registry::{Locate, Registry, ReplicaState, WatchEvent};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const CLUSTER: &str = env!("CARGO_BIN_EXE_cluster");
/// The service name `cluster replica` registers under.
const SERVICE: &str = "cluster-work";

async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("the test did not finish in time")
}

/// Runs the demo with `args`; checks it exits 0 ending with `calls ok=N
/// failed=0` and that the calls moved off the stopped replica.
async fn demo(args: &[&str]) {
    let out = Command::new(CLUSTER)
        .args(args)
        .args(["--calls", "600"])
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert_eq!(
        stdout.lines().last(),
        Some("calls ok=600 failed=0"),
        "{stdout}\n{stderr}"
    );
    let rest = stdout
        .lines()
        .find(|l| l.starts_with("after the rest:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(!rest.contains("r1=0") && !rest.contains("r3=0"), "{stdout}");
}

#[tokio::test]
async fn cluster_demo_runs_to_completion_on_the_name_server() {
    within(60, demo(&[])).await;
}

/// A replica process and its stdout.
struct ReplicaProcess {
    child: Child,
    _lines: Lines<BufReader<ChildStdout>>,
}

async fn spawn_replica(registry_args: &[String], id: &str) -> ReplicaProcess {
    let mut child = Command::new(CLUSTER)
        .arg("replica")
        .args(["--id", id])
        .args(registry_args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("replica exited early");
        if line == "registered" {
            break;
        }
    }
    ReplicaProcess {
        child,
        _lines: lines,
    }
}

/// One call's outcome in the stream.
struct Outcome {
    at: Instant,
    idempotent: bool,
    error: Option<ipc_core::Error>,
}

/// Acceptance 2, on `registry` (whose replicas are processes registered
/// with `registry_args`): `kill -9` of one replica while idempotent and
/// non-idempotent calls stream through a balanced proxy.
async fn kill_9_during_calls(registry: &dyn Registry, registry_args: &[String], backend: &str) {
    let mut replicas = Vec::new();
    for id in ["p1", "p2", "p3"] {
        replicas.push(spawn_replica(registry_args, id).await);
    }
    let set = Locate::new(SERVICE)
        .replicas::<WorkProxy>(registry)
        .await
        .unwrap();
    set.wait_until(|s| s.iter().filter(|r| r.state == ReplicaState::Ready).count() == 3)
        .await;
    let work = set.proxy();

    // 4 tasks of idempotent calls, 4 of non-idempotent 20 ms calls.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (work, stop, outcomes) = (work.clone(), stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                let idempotent = t % 2 == 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = if idempotent {
                        work.whoami().await
                    } else {
                        work.slow(20).await
                    };
                    outcomes.lock().unwrap().push(Outcome {
                        at: Instant::now(),
                        idempotent,
                        error: r.err(),
                    });
                }
            })
        })
        .collect();
    let count = || outcomes.lock().unwrap().len();
    let until_calls = |n: usize| async move {
        while count() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    until_calls(300).await;

    let mut victim = replicas.remove(0);
    let killed = Instant::now();
    victim.child.start_kill().unwrap(); // SIGKILL
    victim.child.wait().await.unwrap();
    let before = count();
    until_calls(before + 600).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let all: Vec<Outcome> = std::mem::take(&mut *outcomes.lock().unwrap());
    let failed: Vec<&Outcome> = all.iter().filter(|o| o.error.is_some()).collect();
    let idempotent_failed = failed.iter().filter(|o| o.idempotent).count();
    assert_eq!(
        idempotent_failed,
        0,
        "idempotent calls failed: {:?}",
        failed
            .iter()
            .map(|o| o.error.as_ref().unwrap().to_string())
            .collect::<Vec<_>>()
    );
    for o in &failed {
        let e = o.error.as_ref().unwrap();
        assert!(
            e.is_connection_error(),
            "a non-idempotent call failed with {e}"
        );
    }
    // At most the 4 non-idempotent calls in flight on the victim fail.
    assert!(failed.len() <= 4, "{} calls failed", failed.len());
    let last_failure = failed.iter().map(|o| o.at).max();
    if let Some(last) = last_failure {
        let later_ok = all
            .iter()
            .filter(|o| !o.idempotent && o.at > last && o.error.is_none())
            .count();
        assert!(
            later_ok > 0,
            "no non-idempotent call succeeded after the failures"
        );
    }
    let calls_after = all.len() - before;
    let to_last = last_failure.map_or(Duration::ZERO, |t| t.saturating_duration_since(killed));
    let lost = failed.len();

    // The registry drops the dead replica (etcd: when its lease expires).
    let mut watch = registry.watch(SERVICE).await.unwrap();
    let mut live: Vec<String> = Vec::new();
    while let Some(event) = watch.next().await {
        match event {
            WatchEvent::Snapshot(all) => live = all.into_iter().map(|i| i.id).collect(),
            WatchEvent::Down { id, .. } => live.retain(|i| *i != id),
            WatchEvent::Up(i) => live.push(i.id),
            _ => {}
        }
        if live.len() == 2 {
            break;
        }
    }
    live.sort();
    assert_eq!(live, ["p2", "p3"]);
    let listed_two = killed.elapsed();
    eprintln!(
        "failover ({backend}): calls lost={} (non-idempotent, in flight on the killed replica), \
         kill -> last failed call {:?}, {} calls after the kill, registry lists 2 after {:?}",
        lost, to_last, calls_after, listed_two
    );
    assert_eq!(registry.lookup(SERVICE).await.unwrap().len(), 2);
    for mut r in replicas {
        let _ = r.child.start_kill();
        let _ = r.child.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_process_on_the_name_server_loses_no_idempotent_call() {
    within(60, async {
        let names = ipc_core::Server::builder()
            .addr("127.0.0.1:0")
            .idle_timeout(None)
            .name_server()
            .start()
            .await
            .unwrap();
        let registry = ipc_registry::NameServerRegistry::new(names.local_addr());
        let args = vec!["--name-server".to_owned(), names.local_addr().to_string()];
        kill_9_during_calls(&registry, &args, "name server").await;
    })
    .await;
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use ipc_registry::EtcdRegistry;
    use ipc_registry::etcd::LocalEtcd;

    async fn local_etcd() -> LocalEtcd {
        match LocalEtcd::start().await {
            Ok(etcd) => etcd,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn cluster_demo_runs_to_completion_on_etcd() {
        within(60, async {
            let etcd = local_etcd().await;
            demo(&["--etcd", &etcd.endpoint()]).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_9_of_a_replica_process_on_etcd_loses_no_idempotent_call() {
        within(60, async {
            let etcd = local_etcd().await;
            let registry = EtcdRegistry::builder([etcd.endpoint()])
                .connect()
                .await
                .unwrap();
            let args = vec![
                "--etcd".to_owned(),
                etcd.endpoint(),
                "--ttl".to_owned(),
                "2".to_owned(),
            ];
            kill_9_during_calls(&registry, &args, "etcd, TTL 2 s").await;
        })
        .await;
    }
}
