//! Acceptance 4: watches. Two subscribers each see every change to their
//! keys, in order, deletions included; a subscriber that stops reading gets
//! a `Lagged` item after the bound, and writers go on at the same rate.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Instant;

use futures::StreamExt;
use ipc_core::Streaming;
use ipc_datastore::{DataStoreClient, Limits, Value, WatchEvent};
use support::{Served, within};

/// A change as the writer saw it: (author, name, version, deleted).
type Change = (String, String, u64, bool);

fn as_change(event: &WatchEvent) -> Change {
    match event {
        WatchEvent::Set {
            author,
            name,
            version,
            ..
        } => (author.clone(), name.clone(), *version, false),
        WatchEvent::Deleted {
            author,
            name,
            version,
        } => (author.clone(), name.clone(), *version, true),
        WatchEvent::Lagged { .. } => panic!("unexpected {event:?}"),
    }
}

async fn next(stream: &mut Streaming<WatchEvent>) -> WatchEvent {
    match stream.next().await {
        Some(Ok(event)) => event,
        other => panic!("the watch ended: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_see_every_change_to_their_keys_in_order() {
    within(async {
        let s = Served::start(Limits::default()).await;
        // Each subscriber and the writer on a connection of its own.
        let one_key = s.client().await;
        let whole_author = s.client().await;
        let mut title = one_key
            .proxy()
            .watch("alice".into(), Some("title".into()))
            .await
            .unwrap();
        let mut alice = whole_author
            .proxy()
            .watch("alice".into(), None)
            .await
            .unwrap();

        let writer = s.client().await;
        let keys = [("alice", "title"), ("alice", "other"), ("bob", "title")];
        let mut changes: Vec<Change> = Vec::new();
        for i in 0..300u32 {
            let (author, name) = keys[(i as usize * 7 + i as usize / 3) % keys.len()];
            let (version, deleted) = if i % 5 == 4 {
                match writer
                    .proxy()
                    .delete(author.into(), name.into())
                    .await
                    .unwrap()
                {
                    // Deleting a missing key changes nothing: no event.
                    None => continue,
                    Some(_) => {
                        // The deletion's version is the one after the
                        // deleted value's; read it back from the watch.
                        (0, true)
                    }
                }
            } else {
                let v = writer.set(author, name, &i, i % 3 == 0).await.unwrap();
                (v, false)
            };
            changes.push((author.into(), name.into(), version, deleted));
        }
        // A last change to the watched key marks the end for both.
        let end = writer
            .set("alice", "title", &u32::MAX, false)
            .await
            .unwrap();
        changes.push(("alice".into(), "title".into(), end, false));

        for (stream, wants) in [
            (
                &mut title,
                Box::new(|c: &Change| c.0 == "alice" && c.1 == "title")
                    as Box<dyn Fn(&Change) -> bool>,
            ),
            (&mut alice, Box::new(|c: &Change| c.0 == "alice")),
        ] {
            let expected: Vec<&Change> = changes.iter().filter(|c| wants(c)).collect();
            let mut last = 0;
            for want in expected {
                let got = as_change(&next(stream).await);
                assert!(
                    got.2 > last,
                    "versions out of order: {} after {last}",
                    got.2
                );
                last = got.2;
                assert_eq!((&got.0, &got.1, got.3), (&want.0, &want.1, want.3));
                if !want.3 {
                    assert_eq!(got.2, want.2);
                }
            }
            assert_eq!(last, end, "the end marker is the last change delivered");
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_lagged_then_resumes() {
    within(async {
        let s = Served::start(Limits::default().watch_buffer(16)).await;
        // A small stream window, so little waits in the connection either.
        let slow = s.client_with_window(1024).await;
        let mut stream = slow.proxy().watch("a".into(), None).await.unwrap();
        let writer = s.client().await;
        let mut versions = Vec::new();
        for i in 0..2000u32 {
            versions.push(writer.set("a", "k", &i, false).await.unwrap());
        }
        // Read: some changes in order, then Lagged naming the first missed.
        let mut delivered = 0;
        let from_version = loop {
            match next(&mut stream).await {
                WatchEvent::Lagged { from_version } => break from_version,
                event => {
                    let (_, _, version, _) = as_change(&event);
                    assert_eq!(
                        version, versions[delivered],
                        "changes before the lag are in order"
                    );
                    delivered += 1;
                }
            }
        };
        assert!(
            delivered < 200,
            "{delivered} changes were held for a subscriber that did not read"
        );
        assert_eq!(from_version, versions[delivered], "the first change missed");
        // The current value is there to re-read; later changes arrive again.
        let current = writer.get::<u32>("a", "k").await.unwrap().unwrap();
        assert_eq!((current.value, current.version), (1999, versions[1999]));
        let v = writer.set("a", "k", &5000u32, false).await.unwrap();
        assert_eq!(as_change(&next(&mut stream).await).2, v);
        s.stop().await;
    })
    .await;
}

/// Sets per second of `n` sets of one key of `author`, one after another.
async fn set_rate(writer: &DataStoreClient, author: &str, n: u32) -> f64 {
    let value = Value::encode(&0u64).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        writer
            .proxy()
            .set(author.into(), "k".into(), value.clone(), false)
            .await
            .unwrap();
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_slow_writers() {
    within(async {
        let s = Served::start(Limits::default().watch_buffer(16)).await;
        let slow = s.client_with_window(1024).await;
        // Opened and never read while the writer runs.
        let mut stalled = slow.proxy().watch("watched".into(), None).await.unwrap();
        let writer = s.client().await;
        // The same writer alternates between an author nobody watches and
        // the stalled one's; the best of three runs of each is compared.
        let (mut free, mut watched) = (0f64, 0f64);
        for _ in 0..3 {
            free = free.max(set_rate(&writer, "free", 1500).await);
            watched = watched.max(set_rate(&writer, "watched", 1500).await);
        }
        assert!(
            watched >= 0.5 * free,
            "sets/s with a stalled subscriber: {watched:.0}, without: {free:.0}"
        );
        // And the subscriber really was behind: it lagged.
        let mut lagged = false;
        for _ in 0..200 {
            if matches!(next(&mut stalled).await, WatchEvent::Lagged { .. }) {
                lagged = true;
                break;
            }
        }
        assert!(lagged, "the stalled subscriber never lagged");
        s.stop().await;
    })
    .await;
}
