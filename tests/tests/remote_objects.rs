//! The original system's remote-object features: oneway calls, the object
//! directory, per-connection instances and the call context.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_core::{CallContext, Proxy, expose};
use ipc_tests::*;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

#[expose]
pub trait Journal {
    /// Sleeps `ms`, then records `entry`.
    #[oneway]
    async fn record_later(&self, entry: u32, ms: u64);
    /// Records `entry` at once.
    #[oneway]
    async fn record(&self, entry: u32);
    /// Panics.
    #[oneway]
    async fn explode(&self);
    /// What was recorded, in order.
    async fn entries(&self) -> Vec<u32>;
}

#[derive(Clone, Default)]
struct JournalImpl {
    entries: Arc<Mutex<Vec<u32>>>,
    recorded: Arc<Notify>,
}

impl Journal for JournalImpl {
    async fn record_later(&self, entry: u32, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.record(entry).await;
    }
    async fn record(&self, entry: u32) {
        self.entries.lock().unwrap().push(entry);
        self.recorded.notify_one();
    }
    async fn explode(&self) {
        panic!("oneway boom");
    }
    async fn entries(&self) -> Vec<u32> {
        self.entries.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn oneway_call_returns_before_the_handler_finishes_and_its_effect_shows_later() {
    within(60, async {
        let journal = JournalImpl::default();
        let recorded = journal.recorded.clone();
        let server = start(|b| b.expose(JournalServer::new(journal))).await;
        let client = connect_in_memory(&server).await;
        let proxy: JournalProxy = client.get_exposed_object().await.unwrap();

        let began = Instant::now();
        proxy.record_later(7, 1_000).await.unwrap();
        assert!(
            began.elapsed() < Duration::from_millis(100),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(proxy.entries().await.unwrap(), Vec::<u32>::new());

        recorded.notified().await;
        assert!(began.elapsed() >= Duration::from_millis(1_000));
        assert_eq!(proxy.entries().await.unwrap(), vec![7]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oneway_calls_from_one_proxy_start_in_the_order_sent() {
    within(10, async {
        let server = start(|b| b.expose(JournalServer::new(JournalImpl::default()))).await;
        let client = connect(&server).await;
        let proxy: JournalProxy = client.get_exposed_object().await.unwrap();
        for i in 0..200 {
            proxy.record(i).await.unwrap();
        }
        // A two-way call sent after them is read after them, so by its answer
        // every oneway call has started (and these finish at once).
        let entries = proxy.entries().await.unwrap();
        assert_eq!(entries, (0..200).collect::<Vec<_>>());
        server.stop().await;
    })
    .await;
}

/// Collects what `tracing` writes, to check what the server logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn oneway_panic_is_logged_contained_and_the_connection_keeps_working() {
    // A current-thread runtime: server and client run on this thread, so a
    // thread-local subscriber sees the server's events.
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    within(10, async {
        let server = start(|b| b.expose(JournalServer::new(JournalImpl::default()))).await;
        let client = connect(&server).await;
        let proxy: JournalProxy = client.get_exposed_object().await.unwrap();
        proxy.explode().await.unwrap();
        proxy.record(1).await.unwrap();
        // The two-way call is read after the oneway ones: they have run.
        assert_eq!(proxy.entries().await.unwrap(), vec![1]);
        server.stop().await;
    })
    .await;
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("handler panicked"), "{logged}");
    assert!(logged.contains("oneway boom"), "{logged}");
}

#[tokio::test]
async fn directory_lists_exactly_the_exposed_objects_with_methods_and_fingerprints() {
    within(10, async {
        let server = start(|b| {
            b.expose(CalculatorServer::new(Calc))
                .expose_as("greeter", GreeterServer::new(Hello))
                .expose(JournalServer::new(JournalImpl::default()))
        })
        .await;
        let client = connect(&server).await;
        let mut objects = client.objects().await.unwrap();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<_> = objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["Calculator", "Journal", "greeter"]);
        for (object, d) in objects.iter().zip([
            <CalculatorProxy as Proxy>::DESCRIPTOR,
            <JournalProxy as Proxy>::DESCRIPTOR,
            <GreeterProxy as Proxy>::DESCRIPTOR,
        ]) {
            assert_eq!(object.trait_name, d.trait_name);
            assert_eq!(object.fingerprint, d.fingerprint);
            let methods: Vec<_> = object.methods.iter().map(|m| m.name.as_str()).collect();
            let expected: Vec<_> = d.methods.iter().map(|m| m.name).collect();
            assert_eq!(methods, expected);
        }
        let journal = &objects[1];
        let oneway: Vec<_> = journal.methods.iter().map(|m| m.oneway).collect();
        assert_eq!(oneway, [true, true, true, false]);
        assert_eq!(
            objects[0].methods[1].signature,
            "div(i64,i64)->Result<i64,MathError>"
        );
        server.stop().await;
    })
    .await;
}

#[expose]
pub trait Counter {
    /// Adds one and returns the new count.
    async fn increment(&self) -> u64;
    /// The count.
    async fn get(&self) -> u64;
}

struct CounterImpl {
    count: Mutex<u64>,
    dropped: mpsc::UnboundedSender<u64>,
}

impl Drop for CounterImpl {
    fn drop(&mut self) {
        let _ = self.dropped.send(*self.count.lock().unwrap());
    }
}

impl Counter for CounterImpl {
    async fn increment(&self) -> u64 {
        let mut c = self.count.lock().unwrap();
        *c += 1;
        *c
    }
    async fn get(&self) -> u64 {
        *self.count.lock().unwrap()
    }
}

#[tokio::test]
async fn per_connection_instances_keep_their_own_state_and_drop_with_the_connection() {
    within(10, async {
        let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
        let server = start(move |b| {
            b.expose(CounterServer::per_connection(move || CounterImpl {
                count: Mutex::new(0),
                dropped: dropped_tx.clone(),
            }))
        })
        .await;
        let a = connect(&server).await;
        let b = connect(&server).await;
        let c = connect(&server).await;
        let ca: CounterProxy = a.get_exposed_object().await.unwrap();
        let cb: CounterProxy = b.get_exposed_object().await.unwrap();
        let cc: CounterProxy = c.get_exposed_object().await.unwrap();
        for _ in 0..3 {
            ca.increment().await.unwrap();
        }
        cb.increment().await.unwrap();
        assert_eq!(ca.get().await.unwrap(), 3);
        assert_eq!(cb.get().await.unwrap(), 1);
        assert_eq!(cc.get().await.unwrap(), 0);
        // Closing a's connection drops a's instance (and only it).
        a.close();
        assert_eq!(dropped.recv().await.unwrap(), 3);
        assert_eq!(cb.get().await.unwrap(), 1);
        assert!(dropped.try_recv().is_err());
        server.stop().await;
    })
    .await;
}

#[expose]
pub trait WhoAmI {
    /// What the server knows about this call.
    async fn context(&self) -> (String, u64, String, u64);
}

struct WhoAmIImpl;

impl WhoAmI for WhoAmIImpl {
    async fn context(&self) -> (String, u64, String, u64) {
        let ctx = CallContext::current().expect("inside a handler");
        (
            ctx.peer_addr().to_string(),
            ctx.connection_id(),
            ctx.object_name().to_owned(),
            ctx.request_id(),
        )
    }
}

#[tokio::test]
async fn handler_sees_the_callers_address_connection_object_and_request() {
    within(10, async {
        let server = start(|b| b.expose_as("me", WhoAmIServer::new(WhoAmIImpl))).await;
        let first = connect(&server).await;
        let second = connect(&server).await;
        let p1: WhoAmIProxy = first.get_exposed_object_named("me").await.unwrap();
        let p2: WhoAmIProxy = second.get_exposed_object_named("me").await.unwrap();
        let (peer, conn1, object, id1) = p1.context().await.unwrap();
        assert_eq!(peer, first.local_addr().to_string());
        assert_eq!(object, "me");
        let (_, conn1_again, _, id2) = p1.context().await.unwrap();
        assert_eq!(conn1, conn1_again);
        assert!(id2 > id1);
        let (peer2, conn2, _, _) = p2.context().await.unwrap();
        assert_ne!(conn1, conn2);
        assert_eq!(peer2, second.local_addr().to_string());
        assert!(CallContext::current().is_none());
        server.stop().await;
    })
    .await;
}
