//! Deadlines and cancellation: a caller that stops waiting stops the work.

use std::time::Duration;

use ipc_core::{Error, ServerHandle};
use ipc_tests::*;
use tokio::time::Instant;

/// A server exposing a [`Gate`] (TCP, loopback), and the gate's probes.
async fn gate_server() -> (ServerHandle, Probes) {
    let (gate, probes) = GateImpl::probed();
    let server = start(|b| b.expose(GateServer::new(gate))).await;
    (server, probes)
}

/// [`gate_server`], and a proxy to its gate over an in-memory pipe (for
/// paused-clock tests).
async fn gate_in_memory() -> (ServerHandle, GateProxy, Probes) {
    let (server, probes) = gate_server().await;
    let client = connect_in_memory(&server).await;
    let proxy = client.get_exposed_object().await.unwrap();
    (server, proxy, probes)
}

#[tokio::test(start_paused = true)]
async fn deadline_fails_the_call_drops_the_handler_and_keeps_the_connection() {
    within(60, async {
        let (server, proxy, mut probes) = gate_in_memory().await;

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
        let (server, proxy, mut probes) = gate_in_memory().await;
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
        let (server, proxy, mut probes) = gate_in_memory().await;
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
        let (server, mut probes) = gate_server().await;
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
        let (server, proxy, _probes) = gate_in_memory().await;
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

// A call's deadline is kept in the connection's table of calls and enforced
// by one timer per connection (the sweep), not a timer per call. These pin
// what that must not change.

#[tokio::test(start_paused = true)]
async fn a_short_deadline_behind_a_long_one_still_fires_on_time() {
    within(60, async {
        let (server, proxy, mut probes) = gate_in_memory().await;
        let began = Instant::now();
        // The sweep first sleeps until this call's deadline, 10 s away...
        let long = tokio::spawn({
            let proxy = proxy.with_timeout(Duration::from_secs(10));
            async move { proxy.sleep_observed(60_000).await }
        });
        probes.started.recv().await.unwrap();
        // ...and must wake earlier for this one.
        let short = proxy.with_timeout(Duration::from_millis(100));
        let sent = Instant::now();
        match short.sleep_observed(60_000).await {
            Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(100)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        let waited = sent.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_millis(110), "{waited:?}");
        match long.await.unwrap() {
            Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_secs(10)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        let waited = began.elapsed();
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        assert!(waited < Duration::from_millis(10_010), "{waited:?}");
        // Both handlers were dropped on the server.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_millis(100), probes.dropped.recv())
                .await
                .expect("a handler was not dropped")
                .unwrap();
        }
        assert_eq!(proxy.fast().await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn hundreds_of_calls_with_mixed_deadlines_each_fail_at_their_own() {
    within(60, async {
        let (server, proxy, mut probes) = gate_in_memory().await;
        const CALLS: u64 = 300;
        let calls = (0..CALLS).map(|i| {
            // Deadlines out of order: 500 ms, 10 ms, 490 ms, 20 ms, ...
            let ms = if i % 2 == 0 { 500 - i } else { 10 + i };
            let proxy = proxy.with_timeout(Duration::from_millis(ms));
            async move {
                let sent = Instant::now();
                let result = proxy.sleep_observed(60_000).await;
                (ms, sent.elapsed(), result)
            }
        });
        for (ms, waited, result) in futures::future::join_all(calls).await {
            match result {
                Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(ms)),
                other => panic!("expected a timeout, got {other:?}"),
            }
            assert!(waited >= Duration::from_millis(ms), "{ms} ms: {waited:?}");
            assert!(
                waited < Duration::from_millis(ms + 10),
                "{ms} ms: {waited:?}"
            );
        }
        for _ in 0..CALLS {
            tokio::time::timeout(Duration::from_millis(100), probes.dropped.recv())
                .await
                .expect("a handler was not dropped")
                .unwrap();
        }
        eventually(5, "no call in flight on the server", || {
            server.stats().in_flight == 0
        })
        .await;
        // And a call with no deadline trouble still goes through.
        assert_eq!(proxy.fast().await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

/// A runtime with one worker, on threads of its own.
fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    }
}

/// A current-thread runtime: it runs its tasks only while something blocks on it.
fn current_thread() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    }
}

#[test]
fn a_call_from_another_runtime_keeps_its_deadline_when_the_connections_runtime_is_not_driven() {
    let server_rt = runtime();
    let (server, _probes) = server_rt.block_on(gate_server());
    // The connection's reader and writer live on `idle`, which nothing
    // drives once `block_on` returns.
    let idle = current_thread();
    let proxy: GateProxy = idle.block_on(async {
        let client = connect(&server).await;
        client.get_exposed_object().await.unwrap()
    });
    let caller = current_thread();
    caller.block_on(within(10, async {
        match proxy.with_timeout(Duration::from_millis(200)).fast().await {
            Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(200)),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }));
    // Driven again, the connection works.
    assert_eq!(idle.block_on(within(10, proxy.fast())).unwrap(), 2);
    drop(proxy);
    drop(idle);
    server_rt.block_on(server.stop());
}

#[test]
fn a_client_whose_runtime_shut_down_reconnects_from_the_callers_runtime() {
    let server_rt = runtime();
    let (server, _probes) = server_rt.block_on(gate_server());
    let first = runtime();
    let proxy: GateProxy = first.block_on(async {
        let client = connect(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(proxy.fast().await.unwrap(), 2);
        proxy
    });
    // The connection's tasks go with their runtime: the connection closes,
    // and the next call connects again from where it is made. It neither
    // hangs nor waits for its deadline (30 s; the watchdog fires at 10).
    drop(first);
    let caller = runtime();
    caller.block_on(within(10, async {
        assert_eq!(proxy.fast().await.unwrap(), 2);
    }));
    drop(proxy);
    drop(caller);
    server_rt.block_on(server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_hold_through_reconnects_tiny_timeouts_and_dropped_calls() {
    within(60, async {
        let (server, _probes) = gate_server().await;
        let client = connect(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let callers = (0..100u64).map(|k| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let (mut ok, mut late) = (0, 0);
                for i in 0..20u64 {
                    let limit = Duration::from_millis(1 + (k + i) % 15);
                    let work = (k * 7 + i * 3) % 25;
                    let call = proxy.with_timeout(limit);
                    if i % 5 == 4 {
                        // Polled once, then dropped (its slot and its table
                        // entry must still be given back).
                        let _ = tokio::time::timeout(Duration::ZERO, call.sleep_ms(work)).await;
                        continue;
                    }
                    // The watchdog: a call past its deadline must not hang.
                    match within(5, call.sleep_ms(work)).await {
                        Ok(n) => {
                            assert_eq!(n, work);
                            ok += 1;
                        }
                        Err(Error::Timeout { after }) => {
                            assert_eq!(after, limit);
                            late += 1;
                        }
                        Err(e) if e.is_connection_error() || matches!(e, Error::ShuttingDown) => {}
                        Err(e) => panic!("unexpected error: {e:?}"),
                    }
                }
                (ok, late)
            })
        });
        let callers: Vec<_> = callers.collect();
        // Meanwhile the connection is dropped again and again: each new one
        // gets a sweep of its own.
        let churn = tokio::spawn({
            let client = client.clone();
            async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    client.close();
                }
            }
        });
        let (mut ok, mut late) = (0, 0);
        for caller in callers {
            let (o, l) = caller.await.unwrap();
            ok += o;
            late += l;
        }
        churn.await.unwrap();
        // Both outcomes happened (limits of 1–15 ms, work of 0–24 ms).
        assert!(ok > 0 && late > 0, "ok {ok}, late {late}");
        eventually(10, "no call in flight on the server", || {
            server.stats().in_flight == 0
        })
        .await;
        assert_eq!(proxy.fast().await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[test]
fn a_call_from_another_runtime_times_out_through_the_connections_own_sweep() {
    let server_rt = runtime();
    let (server, mut probes) = server_rt.block_on(gate_server());
    // The connection lives on a multi-thread runtime, which runs its tasks
    // (the sweep among them) whatever the caller does.
    let home = runtime();
    let proxy: GateProxy = home.block_on(async {
        let client = connect(&server).await;
        client.get_exposed_object().await.unwrap()
    });
    let caller = current_thread();
    caller.block_on(within(10, async {
        match proxy
            .with_timeout(Duration::from_millis(100))
            .sleep_observed(60_000)
            .await
        {
            Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(100)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        // The server was told: the handler was dropped.
        probes.dropped.recv().await.unwrap();
        assert_eq!(proxy.fast().await.unwrap(), 2);
    }));
    drop(proxy);
    drop(home);
    server_rt.block_on(server.stop());
}
