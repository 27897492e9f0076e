//! Callbacks: objects the client passes to the server as arguments, which
//! the server calls over the same connection — during the call
//! (re-entrantly, on one thread too) and later — until the client goes away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipc_core::{Remote, expose};
use ipc_tests::*;
use tokio::sync::mpsc;

#[expose]
pub trait Listener {
    /// Receives an event; returns how many it has received so far.
    async fn on_event(&self, event: String) -> u64;
}

#[expose]
pub trait Hub {
    /// Keeps `listener` and calls it once before returning (the caller's
    /// call is still pending: a re-entrant call). Returns what it answered.
    async fn subscribe(&self, listener: Remote<ListenerProxy>) -> u64;
    /// Calls every listener kept, from a task of its own, with `event`.
    /// Returns at once.
    async fn publish_later(&self, event: String);
    /// Calls every listener kept, now; the results in order (`Err` text
    /// for a listener whose call failed).
    async fn publish_now(&self, event: String) -> Vec<Result<u64, String>>;
}

#[derive(Default, Clone)]
struct HubImpl {
    listeners: Arc<Mutex<Vec<ListenerProxy>>>,
    /// What each later publication gathered.
    published: Option<mpsc::UnboundedSender<Vec<Result<u64, String>>>>,
}

async fn call_all(listeners: Vec<ListenerProxy>, event: String) -> Vec<Result<u64, String>> {
    let mut out = Vec::new();
    for l in listeners {
        out.push(l.on_event(event.clone()).await.map_err(|e| e.to_string()));
    }
    out
}

impl Hub for HubImpl {
    async fn subscribe(&self, listener: Remote<ListenerProxy>) -> u64 {
        let answer = listener.on_event("welcome".into()).await.unwrap_or(0);
        self.listeners.lock().unwrap().push(listener.into_proxy());
        answer
    }

    async fn publish_later(&self, event: String) {
        let listeners = self.listeners.lock().unwrap().clone();
        let published = self.published.clone();
        tokio::spawn(async move {
            let results = call_all(listeners, event).await;
            if let Some(tx) = published {
                let _ = tx.send(results);
            }
        });
    }

    async fn publish_now(&self, event: String) -> Vec<Result<u64, String>> {
        let listeners = self.listeners.lock().unwrap().clone();
        call_all(listeners, event).await
    }
}

/// A listener that counts and reports what it receives.
struct Counting {
    seen: AtomicU64,
    events: mpsc::UnboundedSender<String>,
}

impl Listener for Counting {
    async fn on_event(&self, event: String) -> u64 {
        let _ = self.events.send(event);
        self.seen.fetch_add(1, Ordering::SeqCst) + 1
    }
}

fn listener() -> (Remote<ListenerProxy>, mpsc::UnboundedReceiver<String>) {
    let (events, rx) = mpsc::unbounded_channel();
    let remote = Remote::new(ListenerServer::new(Counting {
        seen: AtomicU64::new(0),
        events,
    }));
    (remote, rx)
}

async fn callbacks_arrive_during_the_call_and_later(
    hub: &HubProxy,
    published: &mut mpsc::UnboundedReceiver<Vec<Result<u64, String>>>,
) {
    let (remote, mut events) = listener();
    // The server calls back while this call is pending.
    assert_eq!(hub.subscribe(remote).await.unwrap(), 1);
    assert_eq!(events.recv().await.unwrap(), "welcome");
    // And later, from a task of its own, after this call returned.
    hub.publish_later("news".into()).await.unwrap();
    assert_eq!(events.recv().await.unwrap(), "news");
    assert_eq!(published.recv().await.unwrap(), [Ok(2)]);
}

each_transport! {
    #[tokio::test]
    async fn the_server_calls_the_clients_object_during_the_call_and_later(transport) {
        within(10, async {
            let (tx, mut published) = mpsc::unbounded_channel();
            let hub = HubImpl { published: Some(tx), ..HubImpl::default() };
            let server = transport.start(|b| b.expose(HubServer::new(hub))).await;
            let client = connect(&server).await;
            let hub: HubProxy = client.get_exposed_object().await.unwrap();
            callbacks_arrive_during_the_call_and_later(&hub, &mut published).await;
            server.stop().await;
        })
        .await;
    }
}

#[test]
fn re_entrant_callbacks_complete_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(within(10, async {
        let (tx, mut published) = mpsc::unbounded_channel();
        let hub = HubImpl {
            published: Some(tx),
            ..HubImpl::default()
        };
        let server = start(|b| b.expose(HubServer::new(hub))).await;
        let client = connect(&server).await;
        let hub: HubProxy = client.get_exposed_object().await.unwrap();
        callbacks_arrive_during_the_call_and_later(&hub, &mut published).await;
        server.stop().await;
    }));
}

#[tokio::test]
async fn after_the_client_disconnects_the_servers_callback_fails_with_a_connection_error() {
    within(10, async {
        let hub = HubImpl::default();
        let listeners = hub.listeners.clone();
        let server = start(|b| b.expose(HubServer::new(hub))).await;
        let client = connect(&server).await;
        let hub: HubProxy = client.get_exposed_object().await.unwrap();
        let (remote, _events) = listener();
        hub.subscribe(remote).await.unwrap();
        let kept = listeners.lock().unwrap()[0].clone();
        drop(hub);
        drop(client);
        // The server's proxy now fails with a connection error, promptly.
        let failed = loop {
            match kept.on_event("anyone?".into()).await {
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => break e,
            }
        };
        assert!(failed.is_connection_error(), "{failed:?}");
        eventually(5, "the callback is released", || {
            server.stats().connections == 0
        })
        .await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_directory_shows_methods_that_take_objects() {
    within(10, async {
        let server = start(|b| b.expose(HubServer::new(HubImpl::default()))).await;
        let objects = connect(&server).await.objects().await.unwrap();
        let method = |name: &str| {
            objects[0]
                .methods
                .iter()
                .find(|m| m.name == name)
                .cloned()
                .unwrap()
        };
        let subscribe = method("subscribe");
        assert!(subscribe.object_args && !subscribe.object_return);
        assert_eq!(subscribe.signature, "subscribe(Remote<ListenerProxy>)->u64");
        let publish = method("publish_now");
        assert!(!publish.object_args && !publish.object_return);
        server.stop().await;
    })
    .await;
}
