//! The registry on the embedded name server: acceptance 6 (tests 1, 3 and
//! 4 against this backend), 7, and what the name server adds (a dead
//! replica goes at once, watch, lookup and list).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use ipc_core::{Server, ServerHandle};
use ipc_registry::{Instance, NameServerRegistry, Registry, locate_all};
use support::*;

async fn name_server() -> (ServerHandle, NameServerRegistry) {
    let names = Server::builder()
        .addr("127.0.0.1:0")
        .idle_timeout(None)
        .name_server()
        .start()
        .await
        .unwrap();
    let registry = NameServerRegistry::new(names.local_addr());
    (names, registry)
}

#[tokio::test]
async fn three_replicas_share_3000_calls() {
    within(60, async {
        let (_names, registry) = name_server().await;
        spreads_calls_over_three_replicas(&registry).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_of_a_replica_under_load_fails_no_call() {
    within(60, async {
        let (_names, registry) = name_server().await;
        graceful_stop_under_load_fails_no_call(&registry).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_while_calls_run_gets_calls_within_a_second() {
    within(60, async {
        let (_names, registry) = name_server().await;
        added_replica_gets_calls_within_a_second(&registry).await;
    })
    .await;
}

#[tokio::test]
async fn a_replica_of_another_trait_is_never_chosen_and_is_logged() {
    within(60, async {
        let (_names, registry) = name_server().await;
        replica_of_another_trait_is_never_chosen_and_logged(&registry).await;
    })
    .await;
}

#[tokio::test]
async fn lookup_and_list_show_live_instances_and_deregister_removes_one() {
    within(30, async {
        let (_names, registry) = name_server().await;
        let a = replica(&registry, "a").await;
        let server = Server::builder()
            .addr("127.0.0.1:0")
            .expose(WorkServer::new(Replica("b".into())))
            .start()
            .await
            .unwrap();
        let b = registry
            .register(
                Instance::new::<WorkProxy>("work", server.local_addr())
                    .with_id("b")
                    .with_metadata("zone", "z1"),
            )
            .await
            .unwrap();
        let found = registry.lookup("work").await.unwrap();
        assert_eq!(
            found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(found[1].metadata["zone"], "z1");
        assert_eq!(found[1].trait_name, "Work");
        assert_eq!(registry.list("wo").await.unwrap().len(), 2);
        assert!(registry.list("x").await.unwrap().is_empty());
        b.deregister().await.unwrap();
        let found = registry.lookup("work").await.unwrap();
        assert_eq!(found.len(), 1);
        a.stop().await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn no_replica_fails_at_once_naming_the_service() {
    within(30, async {
        let (_names, registry) = name_server().await;
        let work: WorkProxy = locate_all(&registry, "work").await.unwrap();
        let e = work.whoami().await.unwrap_err();
        assert!(
            matches!(e, ipc_core::Error::NoReplicas { ref service } if service == "work"),
            "{e}"
        );
        assert!(e.to_string().contains("work"));
    })
    .await;
}

#[tokio::test]
async fn invalid_instances_are_refused_before_anything_is_sent() {
    within(30, async {
        let (_names, registry) = name_server().await;
        let bad = Instance::new::<WorkProxy>("a/b", "127.0.0.1:1");
        assert!(matches!(
            registry.register(bad).await,
            Err(ipc_registry::RegistryError::InvalidInstance { .. })
        ));
        let big = Instance::new::<WorkProxy>("work", "127.0.0.1:1")
            .with_metadata("x", "y".repeat(ipc_registry::MAX_INSTANCE_BYTES));
        assert!(matches!(
            registry.register(big).await,
            Err(ipc_registry::RegistryError::InvalidInstance { .. })
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_server_restart_brings_registrations_back_and_costs_no_call() {
    within(30, async {
        let (names, registry) = name_server().await;
        let addr = names.local_addr().clone();
        let servers = [replica(&registry, "a").await, replica(&registry, "b").await];
        let set = replicas(&registry).await;
        until_ready(&set, 2).await;
        let load = Load::start(&set.proxy());
        load.calls(200).await;
        names.stop().await;
        load.calls(200).await;
        // The same address again: the replicas register themselves again.
        let names = Server::builder()
            .addr(addr.clone())
            .idle_timeout(None)
            .name_server()
            .start()
            .await
            .unwrap();
        until_registered(&registry, &["a", "b"]).await;
        load.calls(200).await;
        let (ok, failed) = load.finish().await;
        assert!(
            failed.is_empty(),
            "{} of {ok} failed: {failed:?}",
            failed.len()
        );
        // The client's watch resumed: a replica that leaves now leaves its set.
        let [a, b] = servers;
        b.stop().await;
        set.wait_until(|s| s.iter().all(|r| r.id != "b")).await;
        a.stop().await;
        names.stop().await;
    })
    .await;
}
