//! A proxy outlives its connection: the server restarts, the next call reconnects.

use std::time::Duration;

use ipc_core::config::Reconnect;
use ipc_core::{Client, Error, Server, ServerHandle, expose};
use ipc_tests::*;
use tokio::sync::mpsc;

#[expose]
pub trait Flaky {
    /// On the first server, hangs until the server dies; later, answers.
    async fn hang(&self) -> u32;
    /// The same, but safe to run twice.
    #[idempotent]
    async fn hang_idempotent(&self) -> u32;
    /// Which server instance answered.
    async fn instance(&self) -> u32;
}

struct FlakyImpl {
    instance: u32,
    started: mpsc::UnboundedSender<()>,
}

impl FlakyImpl {
    async fn maybe_hang(&self) -> u32 {
        let _ = self.started.send(());
        if self.instance == 1 {
            std::future::pending::<()>().await;
        }
        self.instance
    }
}

impl Flaky for FlakyImpl {
    async fn hang(&self) -> u32 {
        self.maybe_hang().await
    }
    async fn hang_idempotent(&self) -> u32 {
        self.maybe_hang().await
    }
    async fn instance(&self) -> u32 {
        self.instance
    }
}

async fn serve(addr: &str, instance: u32) -> (ServerHandle, mpsc::UnboundedReceiver<()>) {
    let (started, rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .addr(addr)
        .expose(FlakyServer::new(FlakyImpl { instance, started }))
        .start()
        .await
        .unwrap();
    (server, rx)
}

/// A proxy through a new client of `addr` with the given reconnect policy
/// (the proxy keeps its client alive).
async fn proxy_to(addr: &str, policy: Reconnect) -> FlakyProxy {
    proxy_through(Client::builder().addr(addr).reconnect(policy)).await
}

/// A proxy through a new client built by `builder`.
async fn proxy_through(builder: ipc_core::ClientBuilder) -> FlakyProxy {
    let client = builder.connect().await.unwrap();
    client.get_exposed_object().await.unwrap()
}

fn patient() -> Reconnect {
    Reconnect {
        max_attempts: 50,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn after_a_server_restart_the_same_proxy_reconnects_and_only_idempotent_calls_are_retried() {
    within(30, async {
        let (first, mut started) = serve("127.0.0.1:0", 1).await;
        let addr = first.local_addr().to_string();
        let proxy = proxy_to(&addr, patient()).await;
        assert_eq!(proxy.instance().await.unwrap(), 1);

        let plain = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.hang().await }
        });
        let idempotent = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.hang_idempotent().await }
        });
        started.recv().await.unwrap();
        started.recv().await.unwrap();

        // The server dies with both calls in flight, and comes back on the same port.
        first.abort().await;
        let (second, _started) = serve(&addr, 2).await;

        match plain.await.unwrap() {
            Err(Error::ConnectionLost { .. }) => {}
            other => panic!("the plain call must fail with ConnectionLost, got {other:?}"),
        }
        assert_eq!(idempotent.await.unwrap().unwrap(), 2);
        assert_eq!(proxy.instance().await.unwrap(), 2);
        second.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_next_call_after_a_restart_succeeds_without_any_failed_call_first() {
    within(30, async {
        let (first, _s1) = serve("127.0.0.1:0", 1).await;
        let addr = first.local_addr().to_string();
        let proxy = proxy_to(&addr, patient()).await;
        assert_eq!(proxy.instance().await.unwrap(), 1);
        first.stop().await;
        let (second, _s2) = serve(&addr, 2).await;
        // The old connection is gone; this call reconnects and looks the object up again.
        assert_eq!(proxy.instance().await.unwrap(), 2);
        second.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reconnecting_gives_up_after_the_configured_attempts() {
    within(30, async {
        let (first, _s1) = serve("127.0.0.1:0", 1).await;
        let addr = first.local_addr().to_string();
        let proxy = proxy_to(
            &addr,
            Reconnect {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
            },
        )
        .await;
        first.stop().await;
        // The first call may still race the server's goodbye (and fail with
        // ShuttingDown: it did not run); by its end the loss is known.
        let first_try = proxy.instance().await.unwrap_err();
        assert!(first_try.is_connection_error(), "{first_try:?}");
        match proxy.instance().await {
            Err(Error::Connect { addr: a, .. }) => assert_eq!(a, addr),
            other => panic!("expected a Connect error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn without_reconnect_a_lost_connection_stays_lost() {
    within(30, async {
        let (first, _s1) = serve("127.0.0.1:0", 1).await;
        let addr = first.local_addr().to_string();
        let proxy = proxy_to(&addr, Reconnect::NEVER).await;
        first.stop().await;
        let (second, _s2) = serve(&addr, 2).await;
        let err = proxy.instance().await.unwrap_err();
        assert!(err.is_connection_error(), "{err:?}");
        second.stop().await;
    })
    .await;
}

/// A hand-written server on `listener`: the first connection answers the
/// lookup, then refuses every call as "shutting down, not run" after a
/// go-away; every later connection is accepted, counted and closed at once
/// (a failed attempt). Returns the count of accepted connections.
fn refusing_server(
    listener: tokio::net::TcpListener,
    calls: usize,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let Ok((mut first, _)) = listener.accept().await else {
            return;
        };
        count.fetch_add(1, Ordering::SeqCst);
        // Later connections: each one a failed attempt.
        let later = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        let _ = raw::read_frame(&mut first).await;
        first.write_all(&raw::hello(1 << 20)).await.unwrap();
        let mut held = Vec::new();
        while let Ok(Some((kind, id, payload))) = raw::read_frame(&mut first).await {
            if kind != 1 {
                continue;
            }
            if payload[..4] == 0u32.to_le_bytes() {
                // The lookup: object handle 1.
                first
                    .write_all(&raw::response(id, 0, &1u32.to_le_bytes()))
                    .await
                    .unwrap();
                continue;
            }
            held.push(id);
            if held.len() == calls {
                break;
            }
        }
        first.write_all(&raw::go_away(0, None)).await.unwrap();
        for id in held {
            first.write_all(&raw::response(id, 21, &[])).await.unwrap();
        }
        let _ = first.shutdown().await;
        let _ = later.await;
    });
    accepted
}

#[tokio::test]
async fn calls_the_server_did_not_run_reconnect_with_the_whole_policy_before_failing() {
    use std::sync::atomic::Ordering;
    within(30, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let calls = 8;
        let accepted = refusing_server(listener, calls);
        let policy = Reconnect {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        };
        let proxy = proxy_to(&addr, policy).await;
        let tasks: Vec<_> = (0..calls)
            .map(|_| {
                let proxy = proxy.clone();
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    let result = proxy.instance().await;
                    (result, accepted.load(Ordering::SeqCst))
                })
            })
            .collect();
        for task in tasks {
            let (result, accepted_then) = task.await.unwrap();
            let error = result.unwrap_err();
            assert!(error.is_connection_error(), "{error:?}");
            // The first connection, then a whole round of 8 failed attempts.
            assert!(
                accepted_then > 8,
                "the call failed with {error:?} after {} reconnect attempts, not 8",
                accepted_then - 1
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_restart_churn_no_call_fails_to_connect_while_its_policy_has_attempts_left() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    within(120, async {
        let (first, _s) = serve("127.0.0.1:0", 1).await;
        let addr = first.local_addr().to_string();
        // About 900 ms of attempts; the server is back within 20-60 ms.
        let policy = Reconnect {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        };
        let proxy = proxy_to(&addr, policy).await;
        let done = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let proxy = proxy.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let (mut ok, mut failures) = (0u32, Vec::new());
                    while !done.load(Ordering::Relaxed) {
                        match proxy.instance().await {
                            Ok(_) => ok += 1,
                            Err(e) => failures.push(e),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        let mut server = first;
        for round in 0..30u64 {
            // Up for 100 ms, then down for 20-60 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if round % 2 == 0 {
                server.stop().await;
            } else {
                server.abort().await;
            }
            tokio::time::sleep(Duration::from_millis(20 + (round * 7) % 41)).await;
            server = serve(&addr, 1).await.0;
        }
        done.store(true, Ordering::Relaxed);
        let mut total_ok = 0;
        for caller in callers {
            let (ok, failures) = caller.await.unwrap();
            total_ok += ok;
            for e in failures {
                // Calls in flight when the server is aborted may be lost;
                // none may give up connecting with attempts left.
                assert!(
                    matches!(e, Error::ConnectionLost { .. }),
                    "a call failed with {e:?}"
                );
            }
        }
        assert!(total_ok > 0);
        server.stop().await;
    })
    .await;
}

/// A client of `addr` that waits `wait` for the server, with two attempts a
/// round 100 ms apart (the next round is due 100 ms after one fails).
async fn short_rounds_to(addr: &str, wait: bool) -> FlakyProxy {
    let policy = Reconnect {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
    };
    proxy_through(
        Client::builder()
            .addr(addr)
            .reconnect(policy)
            .wait_for_server(wait),
    )
    .await
}

#[tokio::test]
async fn after_a_failed_round_calls_fail_at_once_until_the_next_round_is_due() {
    within(30, async {
        let (first, _s1) = serve("127.0.0.1:0", 1).await;
        let addr = first.local_addr().to_string();
        let proxy = short_rounds_to(&addr, false).await;
        assert_eq!(proxy.instance().await.unwrap(), 1);
        first.stop().await;
        // This call makes the round of attempts (real sockets, real clock).
        let first_failure = proxy.instance().await.unwrap_err();
        assert!(first_failure.is_connection_error(), "{first_failure:?}");

        // From here on no socket is touched until the next round is due, so
        // the paused clock counts exactly how long the failing calls wait:
        // a call that started a round would sleep the 100 ms backoff.
        tokio::time::pause();
        let began = tokio::time::Instant::now();
        for _ in 0..100 {
            match proxy.instance().await {
                Err(Error::Connect { addr: a, .. }) => assert_eq!(a, addr),
                other => panic!("expected the round's Connect error, got {other:?}"),
            }
        }
        let waited = began.elapsed();
        assert!(waited < Duration::from_millis(50), "{waited:?}");
        tokio::time::resume();

        // The server comes back; once the backoff has passed, the next call
        // starts a round and reconnects.
        let (second, _s2) = serve(&addr, 2).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(proxy.instance().await.unwrap(), 2);
        second.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_told_to_wait_for_the_server_holds_calls_until_it_is_back() {
    within(30, async {
        let (first, _s1) = serve("127.0.0.1:0", 1).await;
        let addr = first.local_addr().to_string();
        let proxy = short_rounds_to(&addr, true).await;
        assert_eq!(proxy.instance().await.unwrap(), 1);
        first.stop().await;
        let waiting = tokio::spawn({
            let proxy = proxy.clone();
            async move { proxy.instance().await }
        });
        // Long enough for several failed rounds of two attempts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "the call gave up instead of waiting"
        );
        let (second, _s2) = serve(&addr, 2).await;
        assert_eq!(waiting.await.unwrap().unwrap(), 2);
        second.stop().await;
    })
    .await;
}
