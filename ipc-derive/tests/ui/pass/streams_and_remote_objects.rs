//! Streams and remote objects in every accepted position, used end to end.
#![deny(warnings, missing_docs)]

use ipc_core::{expose, Remote, Streaming};

/// A callback.
#[expose]
pub trait Listener {
    /// An event.
    async fn on_event(&self, event: String) -> u64;
}

/// Streams and objects.
#[expose]
pub trait Feed {
    /// A stream.
    async fn numbers(&self, n: u64) -> Streaming<u64>;
    /// A stream, or a typed refusal.
    async fn maybe(&self, open: bool) -> Result<Streaming<Result<u64, String>>, String>;
    /// Takes a callback.
    async fn subscribe(&self, listener: Remote<ListenerProxy>) -> u64;
    /// Returns an object.
    async fn session(&self) -> Remote<ListenerProxy>;
    /// Returns an object, or a typed refusal.
    async fn maybe_session(&self, ok: bool) -> Result<Option<Remote<ListenerProxy>>, String>;
}

struct Count;
impl Listener for Count {
    async fn on_event(&self, _event: String) -> u64 {
        1
    }
}

struct Impl;
impl Feed for Impl {
    async fn numbers(&self, n: u64) -> Streaming<u64> {
        Streaming::iter(0..n)
    }
    async fn maybe(&self, open: bool) -> Result<Streaming<Result<u64, String>>, String> {
        if open {
            Ok(Streaming::iter([Ok(1), Err("two".to_owned())]))
        } else {
            Err("closed".into())
        }
    }
    async fn subscribe(&self, listener: Remote<ListenerProxy>) -> u64 {
        listener.on_event("hi".into()).await.unwrap_or(0)
    }
    async fn session(&self) -> Remote<ListenerProxy> {
        Remote::new(ListenerServer::new(Count))
    }
    async fn maybe_session(&self, ok: bool) -> Result<Option<Remote<ListenerProxy>>, String> {
        if ok {
            Ok(Some(Remote::new(ListenerServer::new(Count))))
        } else {
            Err("no".into())
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    use futures::StreamExt;
    let server = ipc_core::Server::builder()
        .addr("127.0.0.1:0")
        .expose(FeedServer::new(Impl))
        .start()
        .await
        .unwrap();
    let client = ipc_core::Client::connect(server.local_addr()).await.unwrap();
    let feed: FeedProxy = client.get_exposed_object().await.unwrap();
    let numbers: Vec<u64> = feed
        .numbers(3)
        .await
        .unwrap()
        .map(|n| n.unwrap())
        .collect()
        .await;
    assert_eq!(numbers, [0, 1, 2]);
    assert!(feed.maybe(false).await.is_err());
    let first = feed.maybe(true).await.unwrap().next().await;
    assert!(matches!(first, Some(Ok(Ok(1)))));
    let listener = Remote::new(ListenerServer::new(Count));
    assert_eq!(feed.subscribe(listener).await.unwrap(), 1);
    assert_eq!(feed.session().await.unwrap().on_event("x".into()).await.unwrap(), 1);
    let session = feed.maybe_session(true).await.unwrap().unwrap();
    assert_eq!(session.on_event("y".into()).await.unwrap(), 1);
    server.stop().await;
}
