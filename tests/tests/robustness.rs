//! Regressions from review: ways a client could hang shutdown, wedge a
//! connection or overshoot a limit.

use std::time::Duration;

use ipc_core::{Client, Error, expose};
use ipc_tests::*;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::AsyncWriteExt;

fn hello() -> Vec<u8> {
    raw::hello(1 << 20)
}

/// A request with no arguments for `method` of handle 1.
fn request(id: u64, method: u16) -> Vec<u8> {
    raw::request(id, 1, method, &[])
}

#[tokio::test]
async fn stop_is_bounded_by_the_grace_period_even_if_a_draining_client_never_reads() {
    within(20, async {
        let (gate, mut started) = GateImpl::new();
        let server = start(|b| {
            b.grace_period(Duration::from_millis(300))
                .write_buffer(4 * 1024)
                .expose(GateServer::new(gate))
        })
        .await;
        let token = server.shutdown_token();
        let (a, mut b) = tokio::io::duplex(16 * 1024);
        server.serve_io(a);
        b.write_all(&hello()).await.unwrap();
        // Method 0, `wait_for_gate`: stays in flight until the grace period ends.
        b.write_all(&request(1, 0)).await.unwrap();
        started.recv().await.unwrap();
        let stop = tokio::spawn(server.stop());
        token.cancelled().await;
        // Then a flood of calls, each refused with a reply nobody reads.
        let flood = tokio::spawn(async move {
            for id in 2..200_000u64 {
                if b.write_all(&request(id, 1)).await.is_err() {
                    break;
                }
            }
            b
        });
        stop.await.unwrap();
        flood.abort();
    })
    .await;
}

/// An argument whose decoding panics (a bug in user code).
#[derive(Debug, Serialize)]
pub struct Bomb(u8);

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u8::deserialize(d)?;
        if v == 13 {
            panic!("unlucky number");
        }
        Ok(Bomb(v))
    }
}

#[expose]
pub trait Defuse {
    /// Takes a bomb.
    async fn take(&self, bomb: Bomb) -> u8;
}

struct Defuser;

impl Defuse for Defuser {
    async fn take(&self, bomb: Bomb) -> u8 {
        bomb.0
    }
}

#[tokio::test]
async fn a_panic_while_decoding_arguments_fails_that_call_only() {
    within(10, async {
        let server = start(|b| b.expose(DefuseServer::new(Defuser))).await;
        let client = connect(&server).await;
        let proxy: DefuseProxy = client.get_exposed_object().await.unwrap();
        match proxy.take(Bomb(13)).await {
            Err(Error::RemotePanic { message }) => {
                assert!(message.contains("unlucky"), "{message}")
            }
            other => panic!("expected a remote panic, got {other:?}"),
        }
        assert_eq!(proxy.take(Bomb(7)).await.unwrap(), 7);
        assert_eq!(server.stats().connections, 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_call_after_close_reconnects() {
    within(10, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let client = connect(&server).await;
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(1, 1).await.unwrap(), 2);
        client.close();
        assert_eq!(calc.add(2, 2).await.unwrap(), 4);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_connections_cannot_overshoot_the_connection_limit() {
    within(20, async {
        let server = start(|b| {
            b.max_connections(2)
                .handshake_timeout(Duration::from_secs(5))
                .expose(CalculatorServer::new(Calc))
        })
        .await;
        let addr = server.local_addr().as_socket_addr().unwrap();
        // Twenty silent connections at once: two take the slots (until their
        // handshake times out), the rest are refused.
        let mut silent = Vec::new();
        for _ in 0..20 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        match Client::connect(server.local_addr()).await {
            Err(Error::Overloaded { .. }) => {}
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert!(server.stats().connections <= 2, "{:?}", server.stats());
        drop(silent);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_calls_share_one_failed_reconnect_round_instead_of_queueing() {
    within(30, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let client = Client::builder()
            .addr(server.local_addr())
            .reconnect(ipc_core::config::Reconnect {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(200),
            })
            .connect()
            .await
            .unwrap();
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        server.stop().await;
        // Learn that the connection is gone (this call may race the goodbye).
        let _ = calc.add(0, 0).await;
        // One round takes about 300 ms of backoff; twenty rounds one after
        // another would take six seconds.
        let began = std::time::Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let calc = calc.clone();
                tokio::spawn(async move { calc.add(1, 1).await })
            })
            .collect();
        for call in calls {
            let err = call.await.unwrap().unwrap_err();
            assert!(err.is_connection_error(), "{err:?}");
        }
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{:?}",
            began.elapsed()
        );
    })
    .await;
}
