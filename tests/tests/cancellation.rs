//! Calls abandoned by their callers — dropped after one poll, cut short by a
//! `timeout`, panicking, or on a connection that closes — give back every
//! slot they took: the connection stays usable and the server's counts
//! return to zero.

use std::time::Duration;

use ipc_core::Error;
use ipc_tests::*;

/// Sends the call (first poll), then drops its future: the request and a
/// Cancel leave back to back.
async fn send_and_drop<F: std::future::Future>(call: F) {
    let mut call = std::pin::pin!(call);
    let _ = futures::future::poll_immediate(call.as_mut()).await;
}

/// On one thread the client's writer sends each request and its Cancel in
/// one write, so the server reads the Cancel before the handler's task has
/// ever run: the abort-before-first-poll path, every time.
#[tokio::test(flavor = "current_thread")]
async fn calls_cancelled_before_their_handler_task_first_runs_release_their_slot() {
    within(30, async {
        let (gate, _probes) = GateImpl::probed();
        let server = start(|b| b.max_in_flight(8).expose(GateServer::new(gate))).await;
        let client = connect(&server).await;
        let gate: GateProxy = client.get_exposed_object().await.unwrap();
        for _ in 0..200 {
            send_and_drop(gate.sleep_ms(60_000)).await;
        }
        // Each of those took one of the 8 places; all must be back.
        for i in 0..20 {
            match gate.sleep_ms(0).await {
                Ok(0) => {}
                other => panic!("call {i} after the drops: {other:?}"),
            }
        }
        eventually(10, "no call in flight", || server.stats().in_flight == 0).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_calls_dropped_after_one_poll_leave_the_connection_usable() {
    within(120, async {
        let (gate, _probes) = GateImpl::probed();
        let server = start(|b| b.expose(GateServer::new(gate))).await;
        let client = connect(&server).await;
        let gate: GateProxy = client.get_exposed_object().await.unwrap();
        for _ in 0..20_000 {
            send_and_drop(gate.sleep_ms(1_000)).await;
        }
        assert_eq!(gate.fast().await.unwrap(), 2);
        eventually(10, "no call in flight", || server.stats().in_flight == 0).await;
        // Still usable at full width: the default limit's worth of calls at once.
        let many = (0..4_000).map(|_| gate.sleep_ms(1));
        for r in futures::future::join_all(many).await {
            assert_eq!(r.unwrap(), 1);
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_short_by_tiny_timeouts_never_make_the_connection_overloaded() {
    within(120, async {
        let (gate, _probes) = GateImpl::probed();
        let server = start(|b| b.max_in_flight(64).expose(GateServer::new(gate))).await;
        let client = connect(&server).await;
        let gate: GateProxy = client.get_exposed_object().await.unwrap();
        // 5,000 abandoned calls: 78 times the in-flight limit, so a slot
        // leaked per call (or per few calls) would show. From 4 callers at
        // once (each timeout lasts about a timer tick, 1 ms, however short).
        let callers = (0..4u64).map(|caller| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let mut overloaded = 0;
                for i in (caller..5_000).step_by(4) {
                    let d = Duration::from_micros(i % 200);
                    if let Ok(Err(Error::Overloaded { .. })) =
                        tokio::time::timeout(d, gate.sleep_ms(1_000)).await
                    {
                        overloaded += 1;
                    }
                }
                overloaded
            })
        });
        let mut overloaded = 0;
        for caller in futures::future::join_all(callers).await {
            overloaded += caller.unwrap();
        }
        // At most 64 abandoned calls may still be running when the next
        // call starts; never a lasting refusal.
        eventually(10, "no call in flight", || server.stats().in_flight == 0).await;
        assert_eq!(gate.fast().await.unwrap(), 2, "after {overloaded} refusals");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_calls_whose_handlers_panic_release_their_slot() {
    within(30, async {
        let (gate, _probes) = GateImpl::probed();
        let server = start(|b| b.max_in_flight(8).expose(GateServer::new(gate))).await;
        let client = connect(&server).await;
        let gate: GateProxy = client.get_exposed_object().await.unwrap();
        for _ in 0..100 {
            send_and_drop(gate.sleep_then_panic(0)).await;
        }
        for _ in 0..8 {
            assert!(matches!(
                gate.sleep_then_panic(1).await,
                Err(Error::RemotePanic { .. })
            ));
        }
        assert_eq!(gate.fast().await.unwrap(), 2);
        eventually(10, "no call in flight", || server.stats().in_flight == 0).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_closed_amid_dropped_calls_leaves_no_call_counted() {
    within(30, async {
        let (gate, _probes) = GateImpl::probed();
        let server = start(|b| b.max_in_flight(8).expose(GateServer::new(gate))).await;
        let client = connect(&server).await;
        let gate: GateProxy = client.get_exposed_object().await.unwrap();
        for round in 0..10 {
            for _ in 0..50 {
                send_and_drop(gate.sleep_ms(60_000)).await;
            }
            // Some still waiting, some never started: the close takes them all.
            let waiting: Vec<_> = (0..4)
                .map(|_| {
                    let gate = gate.clone();
                    tokio::spawn(async move { gate.sleep_ms(60_000).await.map(|_| ()) })
                })
                .collect();
            tokio::task::yield_now().await;
            client.close();
            for w in waiting {
                let failed = w.await.unwrap();
                assert!(matches!(failed, Err(e) if e.is_connection_error()));
            }
            // The next call reconnects and runs.
            assert_eq!(gate.sleep_ms(0).await.unwrap(), 0, "round {round}");
        }
        eventually(10, "no call in flight", || server.stats().in_flight == 0).await;
        eventually(10, "one connection", || server.stats().connections == 1).await;
        server.stop().await;
    })
    .await;
}
