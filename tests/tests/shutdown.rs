//! Starting on a busy address, graceful shutdown, and a server that vanishes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_core::{Client, Error, Server};
use ipc_tests::*;

each_transport! {
    #[tokio::test]
    async fn start_on_a_busy_address_fails_at_once_naming_the_address(transport) {
        within(5, async {
            let first = transport.start(|b| b.expose(CalculatorServer::new(Calc))).await;
            let addr = first.local_addr().to_string();
            let began = Instant::now();
            let second = Server::builder()
                .addr(addr.as_str())
                .expose(CalculatorServer::new(Calc))
                .start()
                .await;
            assert!(began.elapsed() < Duration::from_secs(1));
            match second {
                Err(e @ Error::Bind { .. }) => assert!(e.to_string().contains(&addr), "{e}"),
                other => panic!("expected a Bind error, got {other:?}"),
            }
            first.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn shutdown_drains_in_flight_calls_then_refuses_connections(transport) {
        within(10, async {
            let (gate, mut started) = GateImpl::new();
            let opener = gate.gate.clone();
            let server = transport.start(|b| b.expose(GateServer::new(gate))).await;
            let addr = server.local_addr().clone();
            let token = server.shutdown_token();
            let client = connect(&server).await;
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();

            let in_flight = tokio::spawn({
                let proxy = proxy.clone();
                async move { proxy.wait_for_gate().await }
            });
            started.recv().await.unwrap();

            let stop = tokio::spawn(server.stop());
            token.cancelled().await;
            // Shutdown has begun; the call in flight is still being served.
            assert!(!stop.is_finished());
            opener.notify_one();
            assert_eq!(in_flight.await.unwrap().unwrap(), 1);
            stop.await.unwrap();

            // After stop: the client's next call fails promptly, and new
            // connections are refused.
            let next = proxy.fast().await.unwrap_err();
            assert!(next.is_connection_error(), "{next:?}");
            assert!(Client::connect(&addr).await.is_err());
        })
        .await;
    }

    #[tokio::test]
    async fn caller_supplied_token_drives_shutdown(transport) {
        within(10, async {
            let token = tokio_util::sync::CancellationToken::new();
            let server = transport.start(|b| {
                b.shutdown_token(token.clone())
                    .expose(CalculatorServer::new(Calc))
            })
            .await;
            let client = connect(&server).await;
            let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
            assert_eq!(calc.add(1, 2).await.unwrap(), 3);
            token.cancel();
            server.stopped().await;
            let err = calc.add(1, 2).await.unwrap_err();
            assert!(err.is_connection_error(), "{err:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn new_calls_during_drain_get_shutting_down(transport) {
        within(10, async {
            let (gate, mut started) = GateImpl::new();
            let opener = gate.gate.clone();
            let server = transport.start(|b| b.expose(GateServer::new(gate))).await;
            let token = server.shutdown_token();
            let client = connect(&server).await;
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();
            let in_flight = tokio::spawn({
                let proxy = proxy.clone();
                async move { proxy.wait_for_gate().await }
            });
            started.recv().await.unwrap();
            let stop = tokio::spawn(server.stop());
            token.cancelled().await;
            // Whether the go-away has reached the client yet or not, a new call
            // does not run and says why.
            match proxy.fast().await {
                Err(Error::ShuttingDown) => {}
                other => panic!("expected ShuttingDown, got {other:?}"),
            }
            opener.notify_one();
            assert_eq!(in_flight.await.unwrap().unwrap(), 1);
            stop.await.unwrap();
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_flooding_requests_during_stop_still_read_both_go_aways(transport) {
        within(120, async {
            for run in 0..50 {
                let server = transport
                    .start(|b| {
                        // A small write buffer keeps each client's backlog of
                        // unread answers (before the go-away) short.
                        b.grace_period(Duration::from_secs(10))
                            .write_buffer(16 * 1024)
                            .expose(CalculatorServer::new(Calc))
                    })
                    .await;
                let (flooding, mut in_flow) = tokio::sync::mpsc::unbounded_channel();
                let clients: Vec<_> = (0..50)
                    .map(|_| {
                        tokio::spawn(flood_until_last_go_away(
                            server.local_addr().clone(),
                            flooding.clone(),
                        ))
                    })
                    .collect();
                for _ in 0..50 {
                    in_flow.recv().await.unwrap();
                }
                server.stop().await;
                for (i, client) in clients.into_iter().enumerate() {
                    let (go_aways, ended) = client.await.unwrap();
                    assert_eq!(
                        go_aways.len(),
                        2,
                        "run {run}, client {i}: go-aways {go_aways:?}, reading ended with {ended:?}"
                    );
                    assert!(go_aways[0].is_empty(), "the first go-away carries no id");
                    assert_eq!(go_aways[1].len(), 8, "the last carries the last id read");
                    assert!(ended.is_ok(), "run {run}, client {i}: {ended:?}");
                }
            }
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn grace_period_bounds_shutdown_and_the_dropped_call_fails() {
    // In-memory pipes: the paused clock must not race real socket I/O.
    within(30, async {
        let (gate, mut started) = GateImpl::new();
        let server = start(|b| {
            b.grace_period(Duration::from_secs(2))
                .expose(GateServer::new(gate))
        })
        .await;
        let (a, b) = tokio::io::duplex(64 * 1024);
        server.serve_io(a);
        let client = Client::builder().connect_io(b).await.unwrap();
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let stuck = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.wait_for_gate().await }
        });
        started.recv().await.unwrap();
        let began = tokio::time::Instant::now();
        server.stop().await;
        let waited = began.elapsed();
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        let err = stuck.await.unwrap().unwrap_err();
        assert!(err.is_connection_error(), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn pending_calls_fail_within_a_second_when_the_server_process_dies() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_slow-server"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = within(30, line).await.unwrap().unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let result = within(10, async {
        let client = Client::connect(addr.as_str()).await.unwrap();
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let pending = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.sleep_ms(60_000).await }
        });
        // Make sure the call reached the server: a later call on the same
        // connection has answered.
        assert_eq!(proxy.fast().await.unwrap(), 2);
        child.kill().unwrap();
        let killed = Instant::now();
        let err = pending.await.unwrap().unwrap_err();
        (killed.elapsed(), err)
    })
    .await;
    let _ = child.wait();
    let (elapsed, err) = result;
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert!(err.is_connection_error(), "{err:?}");
}

/// A raw client that, once its first call is answered, sends `add`
/// requests as fast as it can until it has read the server's last go-away,
/// then closes its side. Says on `flooding` when it is in full flow. Returns
/// the go-aways it read (their payloads) and how its reading ended.
async fn flood_until_last_go_away(
    addr: ipc_core::Address,
    flooding: tokio::sync::mpsc::UnboundedSender<()>,
) -> (Vec<Vec<u8>>, std::io::Result<()>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncWriteExt;
    let mut args = 2i64.to_le_bytes().to_vec();
    args.extend_from_slice(&3i64.to_le_bytes());
    // A small receive window: the server's last frames are still queued on
    // its side when it closes, as with a client on a slow link.
    let (read, mut write) = raw::connect_with_receive_buffer(&addr, Some(4096))
        .await
        .unwrap();
    let mut read = tokio::io::BufReader::with_capacity(16 * 1024, read);
    write.write_all(&raw::hello(1 << 20)).await.unwrap();
    write
        .write_all(&raw::request(1, 1, 0, &args))
        .await
        .unwrap();
    // The server's hello, then the first answer: the connection is served.
    for _ in 0..2 {
        raw::read_frame(&mut read).await.unwrap().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut batch = Vec::new();
            let mut id = 2u64;
            let mut batches = 0;
            while !stop.load(Ordering::Relaxed) {
                batch.clear();
                for _ in 0..32 {
                    batch.extend(raw::request(id, 1, 0, &args));
                    id += 1;
                }
                if write.write_all(&batch).await.is_err() {
                    return;
                }
                batches += 1;
                if batches == 8 {
                    let _ = flooding.send(());
                }
            }
            let _ = write.shutdown().await;
        }
    });
    let mut go_aways = Vec::new();
    let ended = loop {
        match raw::read_frame(&mut read).await {
            Ok(Some((4, _, payload))) => {
                let last = !payload.is_empty();
                go_aways.push(payload);
                if last {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let _ = flood.await;
    (go_aways, ended)
}
