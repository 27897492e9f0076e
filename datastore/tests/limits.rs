//! Acceptance 6: each limit works at the limit, gives its typed error past
//! it, and the store goes on serving.
#![allow(clippy::unwrap_used)]

mod support;

use ipc_core::CallError;
use ipc_datastore::{DataStoreClient, KEY_OVERHEAD, Limits, StoreError, Value};
use support::{Served, within};

fn raw(len: usize) -> Value {
    Value::raw("t", vec![7u8; len])
}

async fn set(
    c: &DataStoreClient,
    author: &str,
    name: &str,
    value: Value,
) -> Result<u64, StoreError> {
    match c
        .proxy()
        .set(author.into(), name.into(), value, false)
        .await
    {
        Ok(v) => Ok(v),
        Err(CallError::App(e)) => Err(e),
        Err(e) => panic!("framework error: {e}"),
    }
}

/// The store still answers and takes a small value.
async fn still_serving(c: &DataStoreClient) {
    set(c, "health", "check", raw(1)).await.unwrap();
    assert!(
        c.proxy()
            .get("health".into(), "check".into())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn value_size() {
    within(async {
        let s = Served::start(Limits::default().max_value_size(1000)).await;
        let c = s.client().await;
        // Data plus the type name ("t", 1 byte).
        set(&c, "a", "n", raw(999)).await.unwrap();
        assert_eq!(
            set(&c, "a", "n", raw(1000)).await,
            Err(StoreError::ValueTooLarge {
                size: 1001,
                limit: 1000
            })
        );
        // The old value stays.
        let e = c
            .proxy()
            .get("a".into(), "n".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.value.data.len(), 999);
        still_serving(&c).await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn key_length() {
    within(async {
        let s = Served::start(Limits::default().max_key_len(8)).await;
        let c = s.client().await;
        set(&c, "aaaaaaaa", "nnnnnnnn", Value::raw("tttttttt", vec![]))
            .await
            .unwrap();
        let too_long = |what: &str| StoreError::KeyTooLong {
            what: what.into(),
            len: 9,
            limit: 8,
        };
        assert_eq!(
            set(&c, "aaaaaaaaa", "n", raw(1)).await,
            Err(too_long("author"))
        );
        assert_eq!(
            set(&c, "a", "nnnnnnnnn", raw(1)).await,
            Err(too_long("name"))
        );
        assert_eq!(
            set(&c, "a", "n", Value::raw("ttttttttt", vec![])).await,
            Err(too_long("type name"))
        );
        match c.proxy().watch("aaaaaaaaa".into(), None).await {
            Err(CallError::App(e)) => assert_eq!(e, too_long("author")),
            other => panic!("expected KeyTooLong, got {other:?}"),
        }
        still_serving(&c).await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn keys_per_author() {
    within(async {
        let s = Served::start(Limits::default().max_keys_per_author(3)).await;
        let c = s.client().await;
        for name in ["k1", "k2", "k3"] {
            set(&c, "a", name, raw(1)).await.unwrap();
        }
        assert_eq!(
            set(&c, "a", "k4", raw(1)).await,
            Err(StoreError::TooManyKeys {
                author: "a".into(),
                limit: 3
            })
        );
        // Replacing a key is not adding one; other authors have their own.
        set(&c, "a", "k1", raw(2)).await.unwrap();
        set(&c, "b", "k4", raw(1)).await.unwrap();
        // A deleted key makes room.
        c.proxy().delete("a".into(), "k2".into()).await.unwrap();
        set(&c, "a", "k4", raw(1)).await.unwrap();

        // restore is all or nothing: saved k1, k3, k4; now k5, k6 instead.
        c.proxy().save(Some("a".into())).await.unwrap();
        c.proxy().delete("a".into(), "k1".into()).await.unwrap();
        c.proxy().delete("a".into(), "k3".into()).await.unwrap();
        set(&c, "a", "k5", raw(1)).await.unwrap();
        set(&c, "a", "k6", raw(1)).await.unwrap();
        match c.proxy().restore(Some("a".into())).await {
            Err(CallError::App(StoreError::TooManyKeys { limit: 3, .. })) => {}
            other => panic!("expected TooManyKeys, got {other:?}"),
        }
        assert_eq!(
            c.proxy().list(Some("a".into())).await.unwrap()["a"],
            ["k4", "k5", "k6"]
        );
        still_serving(&c).await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn authors() {
    within(async {
        let s = Served::start(Limits::default().max_authors(3)).await;
        let c = s.client().await;
        for author in ["a", "b", "c"] {
            set(&c, author, "n", raw(1)).await.unwrap();
        }
        assert_eq!(
            set(&c, "d", "n", raw(1)).await,
            Err(StoreError::TooManyAuthors { limit: 3 })
        );
        // Existing authors may add keys.
        set(&c, "a", "more", raw(1)).await.unwrap();
        // An author whose last key is deleted no longer counts.
        c.proxy().delete("c".into(), "n".into()).await.unwrap();
        set(&c, "d", "n", raw(1)).await.unwrap();
        // A watch on a new author is not an author with keys.
        let _watch = c.proxy().watch("e".into(), None).await.unwrap();
        assert_eq!(
            set(&c, "e", "n", raw(1)).await,
            Err(StoreError::TooManyAuthors { limit: 3 })
        );
        c.proxy().delete("d".into(), "n".into()).await.unwrap();
        set(&c, "health", "check", raw(1)).await.unwrap();
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn total_bytes() {
    // One key "a"/"n" with a value of type "t" and `len` bytes of data.
    let charge = |len: usize| 1 + 1 + 1 + len + KEY_OVERHEAD;
    let limit = charge(500) + charge(100);
    within(async {
        let s = Served::start(Limits::default().max_total_bytes(limit)).await;
        let c = s.client().await;
        set(&c, "a", "n", raw(500)).await.unwrap();
        set(&c, "b", "n", raw(100)).await.unwrap(); // exactly full
        assert_eq!(
            set(&c, "b", "n", raw(101)).await,
            Err(StoreError::StoreFull {
                needed: limit as u64 + 1,
                limit: limit as u64
            })
        );
        assert!(matches!(
            set(&c, "c", "n", raw(0)).await,
            Err(StoreError::StoreFull { .. })
        ));
        // A smaller replacement frees room.
        set(&c, "a", "n", raw(400)).await.unwrap();
        set(&c, "b", "n", raw(200)).await.unwrap();

        // Saved copies have a budget of the same size.
        assert_eq!(c.proxy().save(Some("a".into())).await.unwrap(), 1);
        c.proxy().delete("a".into(), "n".into()).await.unwrap();
        set(&c, "b", "n", raw(500)).await.unwrap();
        match c.proxy().save(Some("b".into())).await {
            Err(CallError::App(StoreError::StoreFull { .. })) => {}
            other => panic!("expected StoreFull, got {other:?}"),
        }
        assert_eq!(c.proxy().delete_saved(Some("a".into())).await.unwrap(), 1);
        assert_eq!(c.proxy().save(Some("b".into())).await.unwrap(), 1);
        c.proxy().delete("b".into(), "n".into()).await.unwrap();
        still_serving(&c).await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn watchers() {
    within(async {
        let s = Served::start(Limits::default().max_watchers(2)).await;
        let c = s.client().await;
        let first = c.proxy().watch("a".into(), None).await.unwrap();
        let _second = c.proxy().watch("b".into(), Some("n".into())).await.unwrap();
        match c.proxy().watch("c".into(), None).await {
            Err(CallError::App(e)) => assert_eq!(e, StoreError::TooManyWatchers { limit: 2 }),
            other => panic!("expected TooManyWatchers, got {other:?}"),
        }
        // Dropping a watch frees its place once the server has dropped the
        // stream; nothing tells the client when, so try until it works.
        drop(first);
        loop {
            match c.proxy().watch("c".into(), None).await {
                Ok(_) => break,
                Err(CallError::App(StoreError::TooManyWatchers { .. })) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        still_serving(&c).await;
        s.stop().await;
    })
    .await;
}
