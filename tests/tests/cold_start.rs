//! Cold start in one round trip: `ClientBuilder::connect_lazy` sends the
//! hello without waiting, and a proxy from `Client::proxy` sends its lookup
//! with its first call. The guarantees stay: a lookup that fails fails that
//! call and nothing runs; a version mismatch reports both versions; a
//! refused handshake fails the first call with the refusal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::{Client, Error, Proxy, Server, expose};
use ipc_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Counts the calls that ran.
#[expose]
pub trait Counter {
    /// Adds `by`, returns the new total.
    async fn bump(&self, by: u64) -> u64;
    /// Returns `text`'s length (for large first requests).
    async fn measure(&self, text: String) -> u64;
}

/// Another version of `Counter`: same name, another signature.
mod v2 {
    use ipc_core::expose;

    /// `bump` takes two numbers here.
    #[expose]
    pub trait Counter {
        /// Adds `a` and `b`.
        async fn bump(&self, a: u64, b: u64) -> u64;
        /// As in version 1.
        async fn measure(&self, text: String) -> u64;
    }
}

#[derive(Clone, Default)]
struct Tally(Arc<AtomicU64>);

impl Counter for Tally {
    async fn bump(&self, by: u64) -> u64 {
        self.0.fetch_add(by, Ordering::SeqCst) + by
    }
    async fn measure(&self, text: String) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst);
        text.len() as u64
    }
}

async fn lazy_client(addr: impl Into<ipc_core::Address>) -> Client {
    Client::builder()
        .addr(addr)
        .connect_lazy()
        .await
        .expect("the socket connects")
}

/// A fake server that answers nothing until it has read three frames:
/// proof that the client sent the hello, the lookup and the call without
/// waiting for any answer. Then it answers them as a server would.
#[tokio::test]
async fn hello_lookup_and_first_call_go_out_before_any_answer() {
    within(10, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (mut r, mut w) = socket.into_split();
            let mut frames = Vec::new();
            while frames.len() < 3 {
                let frame = raw::read_frame(&mut r).await.unwrap().expect("a frame");
                frames.push(frame);
            }
            let (hello, lookup, call) = (&frames[0], &frames[1], &frames[2]);
            assert_eq!(hello.0, 0, "first the hello");
            assert_eq!(lookup.0, 1, "then a request");
            assert_eq!(
                &lookup.2[0..6],
                &[0, 0, 0, 0, 0, 0],
                "to the system object's resolve"
            );
            assert_eq!(call.0, 1, "then the call");
            let handle = u32::from_le_bytes(call.2[0..4].try_into().unwrap());
            assert_eq!(
                handle,
                ipc_core::wire::LOOKUP_BASE,
                "addressed to the first lookup's handle"
            );
            w.write_all(&raw::hello(1 << 20)).await.unwrap();
            w.write_all(&raw::response(lookup.1, 0, &1u32.to_le_bytes()))
                .await
                .unwrap();
            let mut body = call.2[10..18].to_vec(); // bump(by): echo `by` + 100
            let by = u64::from_le_bytes(body[..].try_into().unwrap());
            body = (by + 100).to_le_bytes().to_vec();
            w.write_all(&raw::response(call.1, 0, &body)).await.unwrap();
            // Later calls use the handle the lookup returned.
            let next = raw::read_frame(&mut r)
                .await
                .unwrap()
                .expect("a second call");
            assert_eq!(u32::from_le_bytes(next.2[0..4].try_into().unwrap()), 1);
            w.write_all(&raw::response(next.1, 0, &7u64.to_le_bytes()))
                .await
                .unwrap();
        });
        let client = lazy_client(addr).await;
        let counter: CounterProxy = client.proxy();
        assert_eq!(counter.bump(5).await.unwrap(), 105);
        assert_eq!(counter.bump(1).await.unwrap(), 7);
        fake.await.unwrap();
    })
    .await;
}

each_transport! {
    #[tokio::test]
    async fn a_pipelined_first_call_works_and_later_calls_reuse_the_handle(transport) {
        within(10, async {
            let tally = Tally::default();
            let server = transport
                .start(|b| b.expose(CounterServer::new(tally.clone())))
                .await;
            let client = lazy_client(server.local_addr()).await;
            let counter: CounterProxy = client.proxy();
            assert_eq!(counter.bump(2).await.unwrap(), 2);
            assert_eq!(counter.bump(3).await.unwrap(), 5);
            // Clones and new proxies share the lookup.
            let again: CounterProxy = client.proxy();
            assert_eq!(again.bump(1).await.unwrap(), 6);
            server.stop().await;
        })
        .await;
    }
}

#[tokio::test]
async fn a_trait_mismatch_on_a_pipelined_first_call_fails_it_and_runs_nothing() {
    within(10, async {
        let tally = Tally::default();
        let server = start(|b| b.expose(CounterServer::new(tally.clone()))).await;
        let client = lazy_client(server.local_addr()).await;
        let wrong: v2::CounterProxy = client.proxy();
        match wrong.bump(1, 2).await {
            Err(Error::TraitMismatch {
                object,
                server_fingerprint,
                proxy_fingerprint,
                detail,
            }) => {
                assert_eq!(object, "Counter");
                assert_eq!(server_fingerprint, CounterProxy::DESCRIPTOR.fingerprint);
                assert_eq!(proxy_fingerprint, v2::CounterProxy::DESCRIPTOR.fingerprint);
                assert!(detail.contains("bump(u64,u64)->u64"), "{detail}");
            }
            other => panic!("expected TraitMismatch, got {other:?}"),
        }
        // Again (the failure is remembered for this connection), and with a
        // large argument that waits for nothing.
        assert!(matches!(
            wrong.measure("x".repeat(5000)).await,
            Err(Error::TraitMismatch { .. })
        ));
        assert_eq!(tally.0.load(Ordering::SeqCst), 0, "no handler ran");
        // The right trait on the same connection works.
        let right: CounterProxy = client.proxy();
        assert_eq!(right.bump(4).await.unwrap(), 4);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_unknown_name_on_a_pipelined_first_call_fails_it_and_runs_nothing() {
    within(10, async {
        let tally = Tally::default();
        let server = start(|b| b.expose(CounterServer::new(tally.clone()))).await;
        let client = lazy_client(server.local_addr()).await;
        let nobody: CounterProxy = client.proxy_named("Nobody");
        match nobody.bump(1).await {
            Err(Error::UnknownObject { name }) => assert_eq!(name, "Nobody"),
            other => panic!("expected UnknownObject, got {other:?}"),
        }
        assert_eq!(tally.0.load(Ordering::SeqCst), 0);
        server.stop().await;
    })
    .await;
}

/// A fake server of protocol version 3: it answers the hello with its own
/// and closes, as the README says.
#[tokio::test]
async fn a_version_mismatch_on_a_pipelined_first_call_reports_both_versions() {
    within(10, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (mut r, mut w) = socket.into_split();
            let hello = raw::read_frame(&mut r).await.unwrap().expect("a hello");
            assert_eq!(hello.0, 0);
            let mut p = b"IPCR".to_vec();
            p.extend_from_slice(&3u16.to_le_bytes());
            p.extend_from_slice(&(1u32 << 20).to_le_bytes());
            w.write_all(&raw::frame(0, 0, &p)).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let client = lazy_client(addr).await;
        let counter: CounterProxy = client.proxy();
        match counter.bump(1).await {
            Err(Error::ProtocolMismatch { detail }) => {
                assert!(detail.contains("version 2"), "{detail}");
                assert!(detail.contains('3'), "{detail}");
            }
            other => panic!("expected ProtocolMismatch, got {other:?}"),
        }
        fake.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_lazy_client_at_the_connection_limit_fails_its_first_call_as_overloaded() {
    within(10, async {
        let tally = Tally::default();
        let server = start(|b| {
            b.max_connections(1)
                .expose(CounterServer::new(tally.clone()))
        })
        .await;
        let first = connect(&server).await;
        let held: CounterProxy = first.get_exposed_object().await.unwrap();
        let client = lazy_client(server.local_addr()).await;
        let counter: CounterProxy = client.proxy();
        match counter.bump(1).await {
            Err(Error::Overloaded { detail }) => assert!(detail.contains("connection limit")),
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(tally.0.load(Ordering::SeqCst), 0);
        assert_eq!(held.bump(1).await.unwrap(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_first_request_larger_than_the_protocol_minimum_waits_for_the_hello() {
    within(10, async {
        let tally = Tally::default();
        let server = start(|b| b.expose(CounterServer::new(tally.clone()))).await;
        let client = lazy_client(server.local_addr()).await;
        let counter: CounterProxy = client.proxy();
        assert_eq!(counter.measure("y".repeat(100_000)).await.unwrap(), 100_000);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_checked_path_still_fails_at_lookup() {
    within(10, async {
        let server = start(|b| b.expose(CounterServer::new(Tally::default()))).await;
        let client = lazy_client(server.local_addr()).await;
        match client.get_exposed_object::<v2::CounterProxy>().await {
            Err(Error::TraitMismatch { .. }) => {}
            other => panic!("expected TraitMismatch at lookup, got {other:?}"),
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn with_a_key_a_lazy_client_authenticates_before_anything_else() {
    within(10, async {
        let key = ipc_core::AuthKey::new(b"0123456789abcdef0123").unwrap();
        let server = Server::builder()
            .addr("127.0.0.1:0")
            .auth_key(key.clone())
            .expose(CounterServer::new(Tally::default()))
            .start()
            .await
            .unwrap();
        let client = Client::builder()
            .addr(server.local_addr())
            .auth_key(key)
            .connect_lazy()
            .await
            .unwrap();
        let counter: CounterProxy = client.proxy();
        assert_eq!(counter.bump(3).await.unwrap(), 3);
        // Without the key, the server refuses: the lazy client learns it at
        // its first call.
        let keyless = lazy_client(server.local_addr()).await;
        let counter: CounterProxy = keyless.proxy();
        assert!(matches!(
            counter.bump(1).await,
            Err(Error::AuthFailed { .. })
        ));
        server.stop().await;
    })
    .await;
}

/// Thousands of proxies and racing first calls on one lazy connection: every
/// call is answered right, with one shared lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_from_many_proxies_share_the_lookup() {
    within(30, async {
        let tally = Tally::default();
        let server = start(|b| b.expose(CounterServer::new(tally.clone()))).await;
        let client = lazy_client(server.local_addr()).await;
        let mut calls = Vec::new();
        for _ in 0..2000 {
            let counter: CounterProxy = client.proxy();
            calls.push(tokio::spawn(async move { counter.bump(1).await }));
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(tally.0.load(Ordering::SeqCst), 2000);
        server.stop().await;
    })
    .await;
}

/// The server side, from a raw socket: handle `LOOKUP_BASE + n` stands for
/// the n-th lookup's outcome — unknown before it, its failure after a failed
/// one (a trait mismatch with both fingerprints), the object after a
/// successful one; the object's own handle works as before.
#[tokio::test]
async fn lookup_handles_stand_for_what_each_lookup_found() {
    within(10, async {
        let tally = Tally::default();
        let server = start(|b| b.expose(CounterServer::new(tally.clone()))).await;
        let (mut r, mut w) = raw::connect(server.local_addr()).await.unwrap();
        w.write_all(&raw::hello(1 << 20)).await.unwrap();
        assert_eq!(raw::read_frame(&mut r).await.unwrap().unwrap().0, 0);
        let base = ipc_core::wire::LOOKUP_BASE;
        let bump = |id: u64, handle: u32| raw::request(id, handle, 0, &1u64.to_le_bytes());
        let lookup = |id: u64, d: &ipc_core::ObjectDescriptor| {
            let args = ipc_core::wire::encode_to_vec(&(
                "Counter",
                d.trait_name,
                d.fingerprint,
                d.methods.iter().map(|m| m.signature).collect::<Vec<_>>(),
            ))
            .unwrap();
            raw::request(id, 0, 0, &args)
        };
        // Before any lookup: unknown. Then a failed lookup (another version)
        // and a call to its handle, sent together; then a good lookup.
        let mut batch = bump(1, base);
        batch.extend(lookup(2, v2::CounterProxy::DESCRIPTOR));
        batch.extend(bump(3, base));
        batch.extend(lookup(4, CounterProxy::DESCRIPTOR));
        batch.extend(bump(5, base + 1));
        w.write_all(&batch).await.unwrap();
        let mut answers = std::collections::HashMap::new();
        for _ in 0..5 {
            let (kind, id, body) = raw::read_frame(&mut r).await.unwrap().unwrap();
            assert_eq!(kind, 2);
            answers.insert(id, body);
        }
        assert_eq!(answers[&1][0], 16, "no lookup yet: unknown object");
        assert_eq!(answers[&2][0], 18, "the lookup: trait mismatch");
        assert_eq!(answers[&3][0], 18, "its handle answers the same");
        let fingerprints = |b: &[u8]| {
            (
                u64::from_le_bytes(b[1..9].try_into().unwrap()),
                u64::from_le_bytes(b[9..17].try_into().unwrap()),
            )
        };
        assert_eq!(fingerprints(&answers[&3]), fingerprints(&answers[&2]));
        assert_eq!(answers[&4][0], 0, "the good lookup");
        let handle = u32::from_le_bytes(answers[&4][1..5].try_into().unwrap());
        assert!(handle < base, "a named object's own handle: {handle}");
        assert_eq!(
            &answers[&5][..],
            &[&[0u8][..], &1u64.to_le_bytes()].concat()[..]
        );
        w.write_all(&bump(6, handle)).await.unwrap();
        let (_, id, body) = raw::read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(
            (id, &body[..]),
            (6, &[&[0u8][..], &2u64.to_le_bytes()].concat()[..])
        );
        assert_eq!(
            tally.0.load(Ordering::SeqCst),
            2,
            "only the two good calls ran"
        );
        server.stop().await;
    })
    .await;
}
