//! The registry on etcd (feature `etcd`): acceptance 1, 3, 4, 5 and 7
//! against a real etcd that each test starts on free ports (and stops).
//! Without an `etcd` binary these tests fail, saying how to install one.
#![cfg(feature = "etcd")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

mod support;

use std::time::{Duration, Instant};

use ipc_registry::EtcdRegistry;
use ipc_registry::etcd::LocalEtcd;
use support::*;

/// A fresh etcd and a registry on it with a 2 s lease TTL.
async fn etcd() -> (LocalEtcd, EtcdRegistry) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let etcd = match LocalEtcd::start().await {
        Ok(etcd) => etcd,
        Err(e) => panic!("{e}"),
    };
    let registry = EtcdRegistry::builder([etcd.endpoint()])
        .ttl(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    (etcd, registry)
}

#[tokio::test]
async fn three_replicas_share_3000_calls() {
    within(60, async {
        let (_etcd, registry) = etcd().await;
        spreads_calls_over_three_replicas(&registry).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_of_a_replica_under_load_fails_no_call() {
    within(60, async {
        let (_etcd, registry) = etcd().await;
        graceful_stop_under_load_fails_no_call(&registry).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_while_calls_run_gets_calls_within_a_second() {
    within(60, async {
        let (_etcd, registry) = etcd().await;
        added_replica_gets_calls_within_a_second(&registry).await;
    })
    .await;
}

#[tokio::test]
async fn a_replica_of_another_trait_is_never_chosen_and_is_logged() {
    within(60, async {
        let (_etcd, registry) = etcd().await;
        replica_of_another_trait_is_never_chosen_and_logged(&registry).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_keeps_calls_flowing_and_registrations_come_back() {
    within(90, async {
        let (mut etcd, registry) = etcd().await;
        let servers = [
            replica(&registry, "a").await,
            replica(&registry, "b").await,
            replica(&registry, "c").await,
        ];
        let set = replicas(&registry).await;
        until_ready(&set, 3).await;
        let load = Load::start(&set.proxy());
        load.calls(200).await;

        // etcd dies and comes back: calls go on meanwhile, from the set
        // the proxy had.
        etcd.kill().await;
        load.calls(500).await;
        etcd.restart().await.unwrap();
        until_registered(&registry, &["a", "b", "c"]).await;
        load.calls(200).await;

        // etcd comes back with nothing at all: the replicas register again
        // on their own (their leases are gone, new ones are granted), and
        // calls go on meanwhile.
        etcd.restart_empty().await.unwrap();
        let back = Instant::now();
        until_registered(&registry, &["a", "b", "c"]).await;
        eprintln!(
            "registrations back {:?} after an empty etcd started",
            back.elapsed()
        );
        load.calls(200).await;
        let (ok, failed) = load.finish().await;
        assert!(
            failed.is_empty(),
            "{} of {ok} calls failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert_eq!(set.ready(), 3, "{:?}", set.status());

        // The client's watch resumed: a replica that leaves now leaves
        // its set.
        let [a, b, c] = servers;
        b.stop().await;
        set.wait_until(|s| s.iter().all(|r| r.id != "b")).await;
        a.stop().await;
        c.stop().await;
    })
    .await;
}
