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
