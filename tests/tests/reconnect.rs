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
    let client = Client::builder()
        .addr(addr)
        .reconnect(policy)
        .connect()
        .await
        .unwrap();
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
