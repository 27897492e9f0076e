//! Server-push streams: complete and in order, flow control that holds a
//! producer at the consumer's window, cancellation, fairness between streams
//! on one connection, and how streams end when the server goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ipc_core::{Client, Error, Streaming, expose};
use ipc_tests::*;
use tokio::sync::mpsc;

#[expose]
pub trait Feeds {
    /// `0..n`.
    async fn count(&self, n: u64) -> Streaming<u64>;
    /// `0..n`, but item `fail_at` is an error and the stream goes on.
    async fn results(&self, n: u64, fail_at: u64) -> Streaming<Result<u64, String>>;
    /// 0, 1, 2... forever, counting every item it produces and reporting
    /// when it is dropped.
    async fn endless(&self) -> Streaming<u64>;
    /// Opens a stream or refuses with a typed error.
    async fn maybe(&self, open: bool) -> Result<Streaming<u64>, String>;
    /// An ordinary call.
    async fn ping(&self) -> u32;
}

/// What the test sees of the producers.
#[derive(Clone)]
struct Probes {
    /// Items produced by `endless` streams, all together.
    produced: Arc<AtomicU64>,
    /// One message per `endless` stream dropped.
    dropped: mpsc::UnboundedSender<()>,
}

/// Sends on `dropped` when the producer holding it is dropped.
struct OnDrop(mpsc::UnboundedSender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Feeds for Probes {
    async fn count(&self, n: u64) -> Streaming<u64> {
        Streaming::iter(0..n)
    }

    async fn results(&self, n: u64, fail_at: u64) -> Streaming<Result<u64, String>> {
        Streaming::iter((0..n).map(move |i| {
            if i == fail_at {
                Err(format!("item {i} failed"))
            } else {
                Ok(i)
            }
        }))
    }

    async fn endless(&self) -> Streaming<u64> {
        let produced = self.produced.clone();
        let guard = OnDrop(self.dropped.clone());
        Streaming::new(futures::stream::unfold((0u64, guard), move |(i, guard)| {
            let produced = produced.clone();
            async move {
                produced.fetch_add(1, Ordering::SeqCst);
                Some((i, (i + 1, guard)))
            }
        }))
    }

    async fn maybe(&self, open: bool) -> Result<Streaming<u64>, String> {
        if open {
            Ok(Streaming::iter([7, 8, 9]))
        } else {
            Err("refused".into())
        }
    }

    async fn ping(&self) -> u32 {
        1
    }
}

fn probes() -> (Probes, mpsc::UnboundedReceiver<()>) {
    let (dropped, rx) = mpsc::unbounded_channel();
    let probes = Probes {
        produced: Arc::default(),
        dropped,
    };
    (probes, rx)
}

each_transport! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_of_100_000_items_arrives_complete_and_in_order(transport) {
        within(60, async {
            let (feeds, _dropped) = probes();
            let server = transport.start(|b| b.expose(FeedsServer::new(feeds))).await;
            let client = connect(&server).await;
            let feeds: FeedsProxy = client.get_exposed_object().await.unwrap();
            let mut stream = feeds.count(100_000).await.unwrap();
            let mut expected = 0;
            while let Some(item) = stream.next().await {
                assert_eq!(item.unwrap(), expected);
                expected += 1;
            }
            assert_eq!(expected, 100_000);
            // The end is clean, and stays so.
            assert!(stream.next().await.is_none());
            assert_eq!(feeds.ping().await.unwrap(), 1);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn stop_ends_an_endless_stream_with_shutting_down_within_the_grace_period(transport) {
        within(10, async {
            let (feeds, _dropped) = probes();
            let server = transport
                .start(|b| b.grace_period(Duration::from_secs(5)).expose(FeedsServer::new(feeds)))
                .await;
            let client = connect(&server).await;
            let feeds: FeedsProxy = client.get_exposed_object().await.unwrap();
            let mut stream = feeds.endless().await.unwrap();
            assert_eq!(stream.next().await.unwrap().unwrap(), 0);
            let stop = tokio::spawn(server.stop());
            let ended = loop {
                match stream.next().await {
                    Some(Ok(_)) => continue,
                    other => break other,
                }
            };
            assert!(matches!(ended, Some(Err(Error::ShuttingDown))), "{ended:?}");
            assert!(stream.next().await.is_none());
            // The stream did not hold the shutdown for its grace period.
            tokio::time::timeout(Duration::from_secs(4), stop).await.unwrap().unwrap();
        })
        .await;
    }
}

#[tokio::test]
async fn a_stream_of_results_delivers_the_error_item_and_goes_on() {
    within(10, async {
        let (feeds, _dropped) = probes();
        let server = start(|b| b.expose(FeedsServer::new(feeds))).await;
        let feeds: FeedsProxy = connect(&server).await.get_exposed_object().await.unwrap();
        let items: Vec<Result<u64, String>> = feeds
            .results(5, 2)
            .await
            .unwrap()
            .map(|item| item.unwrap())
            .collect()
            .await;
        assert_eq!(
            items,
            [Ok(0), Ok(1), Err("item 2 failed".to_owned()), Ok(3), Ok(4)]
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_fallible_stream_method_refuses_with_its_typed_error_or_opens() {
    within(10, async {
        let (feeds, _dropped) = probes();
        let server = start(|b| b.expose(FeedsServer::new(feeds))).await;
        let feeds: FeedsProxy = connect(&server).await.get_exposed_object().await.unwrap();
        match feeds.maybe(false).await {
            Err(ipc_core::CallError::App(e)) => assert_eq!(e, "refused"),
            other => panic!("expected the app error, got {other:?}"),
        }
        let items: Vec<u64> = feeds
            .maybe(true)
            .await
            .unwrap()
            .map(|i| i.unwrap())
            .collect()
            .await;
        assert_eq!(items, [7, 8, 9]);
        server.stop().await;
    })
    .await;
}

/// Bytes of one `u64` item frame, as credit counts it: kind, id, 8 bytes.
const U64_ITEM: u64 = 1 + 8 + 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_holds_the_producer_at_its_window() {
    within(30, async {
        let window: u32 = 4096;
        let (feeds, _dropped) = probes();
        let produced = feeds.produced.clone();
        let server = start(|b| b.expose(FeedsServer::new(feeds))).await;
        let client = Client::builder()
            .addr(server.local_addr())
            .stream_window(window)
            .connect()
            .await
            .unwrap();
        let feeds: FeedsProxy = client.get_exposed_object().await.unwrap();
        let mut stream = feeds.endless().await.unwrap();
        // The producer may start an item while it has any room left: at most
        // one window's worth, rounded up to whole items, plus the one it is
        // polled for when the room runs out.
        let most = u64::from(window).div_ceil(U64_ITEM) + 1;
        eventually(10, "the producer filled the window", || {
            produced.load(Ordering::SeqCst) >= most - 1
        })
        .await;
        // Nothing is read for a while: the producer must not go on.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = produced.load(Ordering::SeqCst);
        assert!(held <= most, "{held} items produced for a window of {most}");
        let buffered = server.stats().buffered_bytes;
        assert!(
            buffered <= window as usize + 16 * 1024,
            "{buffered} bytes buffered on the server"
        );
        // Reading again resumes the stream.
        for expected in 0..10 * most {
            assert_eq!(stream.next().await.unwrap().unwrap(), expected);
        }
        assert!(produced.load(Ordering::SeqCst) >= 10 * most);
        drop(stream);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dropping_the_callers_stream_drops_the_producer() {
    within(10, async {
        let (feeds, mut dropped) = probes();
        let server = start(|b| b.expose(FeedsServer::new(feeds))).await;
        let feeds: FeedsProxy = connect(&server).await.get_exposed_object().await.unwrap();
        let mut stream = feeds.endless().await.unwrap();
        for expected in 0..10 {
            assert_eq!(stream.next().await.unwrap().unwrap(), expected);
        }
        drop(stream);
        // The producer's `Drop` runs, promptly.
        dropped.recv().await.unwrap();
        eventually(5, "no stream open", || server.stats().streams == 0).await;
        assert_eq!(feeds.ping().await.unwrap(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalled_stream_stops_neither_the_other_streams_nor_calls() {
    within(60, async {
        let (feeds, _dropped) = probes();
        let server = start(|b| b.expose(FeedsServer::new(feeds))).await;
        let client = Client::builder()
            .addr(server.local_addr())
            .stream_window(8 * 1024)
            .connect()
            .await
            .unwrap();
        let feeds: FeedsProxy = client.get_exposed_object().await.unwrap();
        // Never read.
        let stalled = feeds.endless().await.unwrap();
        let readers: Vec<_> = (0..9)
            .map(|_| {
                let feeds = feeds.clone();
                tokio::spawn(async move {
                    let mut stream = feeds.count(20_000).await.unwrap();
                    let mut n = 0u64;
                    while let Some(item) = stream.next().await {
                        assert_eq!(item.unwrap(), n);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap(), 20_000);
        }
        assert_eq!(feeds.ping().await.unwrap(), 1);
        drop(stalled);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_killed_server_ends_the_stream_with_a_connection_error_at_once() {
    within(10, async {
        let (feeds, _dropped) = probes();
        let server = start(|b| b.expose(FeedsServer::new(feeds))).await;
        let feeds: FeedsProxy = connect(&server).await.get_exposed_object().await.unwrap();
        let mut stream = feeds.endless().await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        server.abort().await;
        let ended = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => continue,
                    other => break other,
                }
            }
        })
        .await
        .expect("the stream did not end within a second");
        match ended {
            Some(Err(e)) => assert!(e.is_connection_error(), "{e:?}"),
            other => panic!("expected a connection error, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_as_overloaded() {
    within(10, async {
        let (feeds, _dropped) = probes();
        let server = start(|b| b.max_streams(2).expose(FeedsServer::new(feeds))).await;
        let feeds: FeedsProxy = connect(&server).await.get_exposed_object().await.unwrap();
        let a = feeds.endless().await.unwrap();
        let b = feeds.endless().await.unwrap();
        match feeds.endless().await {
            Err(Error::Overloaded { detail }) => assert!(detail.contains("streams"), "{detail}"),
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(feeds.ping().await.unwrap(), 1);
        drop(a);
        eventually(5, "one stream open", || server.stats().streams == 1).await;
        let c = feeds.endless().await.unwrap();
        drop((b, c));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_directory_shows_streaming_methods_as_such() {
    within(10, async {
        let (feeds, _dropped) = probes();
        let server = start(|b| b.expose(FeedsServer::new(feeds))).await;
        let objects = connect(&server).await.objects().await.unwrap();
        let methods = &objects[0].methods;
        let count = methods.iter().find(|m| m.name == "count").unwrap();
        assert!(count.streaming);
        assert_eq!(count.signature, "count(u64)->Streaming<u64>");
        let ping = methods.iter().find(|m| m.name == "ping").unwrap();
        assert!(!ping.streaming);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_server_sending_more_than_its_credit_gets_its_connection_closed() {
    use tokio::io::AsyncWriteExt;
    within(10, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let window: u32 = 1024;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = raw::read_frame(&mut socket).await;
            socket.write_all(&raw::hello(1 << 20)).await.unwrap();
            // The lookup, then the call that opens the stream.
            let (_, id, _) = raw::read_frame(&mut socket).await.unwrap().unwrap();
            socket
                .write_all(&raw::response(id, 0, &1u32.to_le_bytes()))
                .await
                .unwrap();
            let (kind, id, _) = raw::read_frame(&mut socket).await.unwrap().unwrap();
            assert_eq!(kind, 1);
            socket.write_all(&raw::response(id, 0, &[])).await.unwrap();
            // Twice the window the client granted, at once.
            let item = raw::frame(6, id, &5u64.to_le_bytes());
            let flood: Vec<u8> = (0..2 * window / 17 + 2)
                .flat_map(|_| item.clone())
                .collect();
            let _ = socket.write_all(&flood).await;
            // The client hangs up.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink).await;
        });
        let client = Client::builder()
            .addr(addr.as_str())
            .stream_window(window)
            .connect()
            .await
            .unwrap();
        let feeds: FeedsProxy = client.get_exposed_object().await.unwrap();
        let mut stream = feeds.endless().await.unwrap();
        let ended = loop {
            match stream.next().await {
                Some(Ok(item)) => assert_eq!(item, 5),
                other => break other,
            }
        };
        match ended {
            Some(Err(Error::ConnectionLost { reason })) => {
                assert!(reason.contains("credit"), "{reason}")
            }
            other => panic!("expected the connection to be closed, got {other:?}"),
        }
        server.await.unwrap();
    })
    .await;
}
