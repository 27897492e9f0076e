//! Returned objects: a method returns a new object (a session, a counter)
//! and the caller gets a proxy to it alone. It lives until the caller drops
//! its last proxy, or the connection closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::{Error, Remote, expose};
use ipc_tests::*;

#[expose]
pub trait Counter {
    /// Adds one; the new count.
    async fn bump(&self) -> u64;
}

#[expose]
pub trait Factory {
    /// A new counter, with its own state, that reports when it is dropped.
    async fn counter(&self) -> Remote<CounterProxy>;
    /// How many counters are alive.
    async fn alive(&self) -> u64;
}

struct Count {
    n: AtomicU64,
    alive: Arc<AtomicU64>,
}

impl Drop for Count {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counter for Count {
    async fn bump(&self) -> u64 {
        self.n.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[derive(Clone, Default)]
struct Make {
    alive: Arc<AtomicU64>,
}

impl Factory for Make {
    async fn counter(&self) -> Remote<CounterProxy> {
        self.alive.fetch_add(1, Ordering::SeqCst);
        Remote::new(CounterServer::new(Count {
            n: AtomicU64::new(0),
            alive: self.alive.clone(),
        }))
    }

    async fn alive(&self) -> u64 {
        self.alive.load(Ordering::SeqCst)
    }
}

each_transport! {
    #[tokio::test]
    async fn returned_objects_have_their_own_state_and_are_released_with_their_last_proxy(transport) {
        within(10, async {
            let make = Make::default();
            let alive = make.alive.clone();
            let server = transport.start(|b| b.expose(FactoryServer::new(make))).await;
            let client = connect(&server).await;
            let factory: FactoryProxy = client.get_exposed_object().await.unwrap();
            let a = factory.counter().await.unwrap();
            let b = factory.counter().await.unwrap();
            assert_eq!(a.bump().await.unwrap(), 1);
            assert_eq!(a.bump().await.unwrap(), 2);
            assert_eq!(b.bump().await.unwrap(), 1);
            assert_eq!(server.stats().remote_objects, 2);
            // Clones share the object; dropping all of them releases it.
            let a2 = a.clone();
            drop(a);
            assert_eq!(a2.bump().await.unwrap(), 3);
            let a_proxy = a2.into_proxy();
            drop(a_proxy);
            eventually(5, "one object left", || server.stats().remote_objects == 1).await;
            eventually(5, "its instance dropped", || alive.load(Ordering::SeqCst) == 1).await;
            assert_eq!(b.bump().await.unwrap(), 2);
            // Closing the connection releases the rest.
            drop(b);
            let c = factory.counter().await.unwrap();
            assert_eq!(c.bump().await.unwrap(), 1);
            client.close();
            eventually(5, "nothing exported", || server.stats().remote_objects == 0).await;
            eventually(5, "every instance dropped", || alive.load(Ordering::SeqCst) == 0).await;
            // A proxy whose connection is gone fails, typed, and says why.
            match c.bump().await {
                Err(Error::ConnectionLost { reason }) => {
                    assert!(reason.contains("reconnect"), "{reason}")
                }
                other => panic!("expected ConnectionLost, got {other:?}"),
            }
            server.stop().await;
        })
        .await;
    }
}

#[tokio::test]
async fn a_returned_object_keeps_its_connection_after_the_client_is_dropped() {
    within(10, async {
        let server = start(|b| b.expose(FactoryServer::new(Make::default()))).await;
        let client = connect(&server).await;
        let factory: FactoryProxy = client.get_exposed_object().await.unwrap();
        let counter = factory.counter().await.unwrap();
        drop(factory);
        drop(client);
        assert_eq!(counter.bump().await.unwrap(), 1);
        drop(counter);
        eventually(5, "the connection closes", || {
            server.stats().connections == 0
        })
        .await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn objects_past_the_limit_are_refused_as_overloaded() {
    within(10, async {
        let server = start(|b| b.max_objects(2).expose(FactoryServer::new(Make::default()))).await;
        let client = connect(&server).await;
        let factory: FactoryProxy = client.get_exposed_object().await.unwrap();
        let a = factory.counter().await.unwrap();
        let _b = factory.counter().await.unwrap();
        match factory.counter().await {
            Err(Error::Overloaded { detail }) => assert!(detail.contains("objects"), "{detail}"),
            other => panic!("expected Overloaded, got {other:?}"),
        }
        drop(a);
        eventually(5, "one released", || server.stats().remote_objects == 1).await;
        let _c = factory.counter().await.unwrap();
        // The refused counter's instance was dropped at once.
        assert_eq!(factory.alive().await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_directory_shows_methods_that_return_objects() {
    within(10, async {
        let server = start(|b| b.expose(FactoryServer::new(Make::default()))).await;
        let objects = connect(&server).await.objects().await.unwrap();
        let counter = objects[0]
            .methods
            .iter()
            .find(|m| m.name == "counter")
            .cloned()
            .unwrap();
        assert!(counter.object_return && !counter.object_args);
        server.stop().await;
    })
    .await;
}
