//! Deadlines and cancellation: a caller that stops waiting stops the work.

use std::time::Duration;

use ipc_core::Error;
use ipc_tests::*;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn deadline_fails_the_call_drops_the_handler_and_keeps_the_connection() {
    within(60, async {
        let (gate, mut probes) = GateImpl::probed();
        let server = start(|b| b.expose(GateServer::new(gate))).await;
        let client = connect_in_memory(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();

        let began = Instant::now();
        let result = proxy
            .with_timeout(Duration::from_millis(50))
            .sleep_observed(10_000)
            .await;
        let elapsed = began.elapsed();
        match result {
            Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(50)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(60), "{elapsed:?}");
        // The handler started and its future was dropped, long before its 10 s.
        probes.started.recv().await.unwrap();
        tokio::time::timeout(Duration::from_millis(100), probes.dropped.recv())
            .await
            .expect("the handler was not dropped")
            .unwrap();
        assert_eq!(server.stats().in_flight, 0);
        // Same proxy, same connection: still fine.
        assert_eq!(proxy.fast().await.unwrap(), 2);
        assert_eq!(proxy.timeout(), ipc_core::config::DEFAULT_CALL_TIMEOUT);
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn server_drops_a_handler_past_the_deadline_it_was_sent() {
    within(60, async {
        let (gate, mut probes) = GateImpl::probed();
        let server = start(|b| b.expose(GateServer::new(gate))).await;
        let client = connect_in_memory(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let call = tokio::spawn({
            let proxy = proxy.with_timeout(Duration::from_secs(1));
            async move { proxy.sleep_observed(5_000).await }
        });
        probes.started.recv().await.unwrap();
        let began = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), probes.dropped.recv())
            .await
            .expect("the server kept the handler past its deadline")
            .unwrap();
        assert!(began.elapsed() <= Duration::from_millis(1_001));
        assert!(matches!(call.await.unwrap(), Err(Error::Timeout { .. })));
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_future_drops_the_handler_on_the_server() {
    within(60, async {
        let (gate, mut probes) = GateImpl::probed();
        let server = start(|b| b.expose(GateServer::new(gate))).await;
        let client = connect_in_memory(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let call = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.sleep_observed(60_000).await }
        });
        probes.started.recv().await.unwrap();
        assert_eq!(server.stats().in_flight, 1);
        call.abort();
        tokio::time::timeout(Duration::from_millis(100), probes.dropped.recv())
            .await
            .expect("the handler was not dropped within 100 ms")
            .unwrap();
        assert_eq!(server.stats().in_flight, 0);
        assert_eq!(proxy.fast().await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn closing_the_client_drops_all_its_handlers_on_the_server() {
    within(10, async {
        let (gate, mut probes) = GateImpl::probed();
        let server = start(|b| b.expose(GateServer::new(gate))).await;
        let client = connect(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let proxy = proxy.clone();
                tokio::spawn(async move { proxy.sleep_observed(60_000).await })
            })
            .collect();
        for _ in 0..3 {
            probes.started.recv().await.unwrap();
        }
        client.close();
        for _ in 0..3 {
            probes.dropped.recv().await.unwrap();
        }
        for call in calls {
            let err = call.await.unwrap().unwrap_err();
            assert!(err.is_connection_error(), "{err:?}");
        }
        server.stop().await;
    })
    .await;
}

/// Code generic over any proxy sets a deadline through the `Proxy` trait.
fn impatient<P: ipc_core::Proxy>(proxy: &P, limit: Duration) -> P {
    assert_eq!(proxy.timeout(), ipc_core::config::DEFAULT_CALL_TIMEOUT);
    proxy.with_timeout(limit)
}

#[tokio::test(start_paused = true)]
async fn a_generic_function_sets_a_deadline_through_the_proxy_trait() {
    within(60, async {
        let (gate, _probes) = GateImpl::probed();
        let server = start(|b| b.expose(GateServer::new(gate))).await;
        let client = connect_in_memory(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(ipc_core::Proxy::object_name(&proxy), "Gate");
        let hurried = impatient(&proxy, Duration::from_millis(30));
        assert_eq!(
            ipc_core::Proxy::timeout(&hurried),
            Duration::from_millis(30)
        );
        match hurried.sleep_ms(10_000).await {
            Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(30)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        // The original proxy keeps its own deadline.
        assert_eq!(proxy.sleep_ms(5).await.unwrap(), 5);
        server.stop().await;
    })
    .await;
}
