//! Acceptance 1: every operation round-trips through the Rust client, and
//! the typed helpers refuse a wrong type with a clear error.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use futures::StreamExt;
use ipc_core::CallError;
use ipc_datastore::{IfChanged, Limits, StoreError, Value, WatchEvent};
use serde::{Deserialize, Serialize};
use support::{Served, within};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NowPlaying {
    title: String,
    position_s: u32,
}

fn app(e: CallError<StoreError>) -> StoreError {
    match e.into_app() {
        Ok(e) => e,
        Err(rpc) => panic!("expected the store's error, got the framework's: {rpc}"),
    }
}

#[tokio::test]
async fn typed_values_round_trip_with_increasing_versions() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        let playing = NowPlaying {
            title: "Blade Runner".into(),
            position_s: 42,
        };
        let v1 = c.set("player", "now", &playing, false).await.unwrap();
        let v2 = c.set("player", "volume", &80u8, true).await.unwrap();
        let tags = vec!["a".to_owned(), "b".to_owned()];
        let v3 = c.set("player", "tags", &tags, false).await.unwrap();
        assert!(v1 < v2 && v2 < v3);

        let got = c.get::<NowPlaying>("player", "now").await.unwrap().unwrap();
        assert_eq!(
            (got.value, got.version, got.persistent),
            (playing, v1, false)
        );
        let got = c.get::<u8>("player", "volume").await.unwrap().unwrap();
        assert_eq!((got.value, got.version, got.persistent), (80, v2, true));
        let got = c.get::<Vec<String>>("player", "tags").await.unwrap();
        assert!(matches!(got, Some(t) if t.value == ["a", "b"]));
        assert!(c.get::<u8>("player", "missing").await.unwrap().is_none());
        assert!(c.get::<u8>("nobody", "volume").await.unwrap().is_none());

        // Replacing a value gives it a higher version.
        let v4 = c.set("player", "volume", &81u8, true).await.unwrap();
        assert!(v4 > v3);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_type_is_a_clear_type_mismatch() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        c.set("player", "title", "Alien", false).await.unwrap();
        let e = app(c.get::<u32>("player", "title").await.unwrap_err());
        assert_eq!(
            e,
            StoreError::TypeMismatch {
                expected: "u32".into(),
                found: "alloc::string::String".into(),
            }
        );
        assert_eq!(
            e.to_string(),
            "type mismatch: the value is a `alloc::string::String`, not a `u32`"
        );
        // A struct with the same JSON shape but another name is refused too.
        #[derive(Debug, Serialize, Deserialize)]
        struct Other {
            title: String,
            position_s: u32,
        }
        let np = NowPlaying {
            title: "x".into(),
            position_s: 1,
        };
        c.set("player", "now", &np, false).await.unwrap();
        assert!(matches!(
            app(c.get::<Other>("player", "now").await.unwrap_err()),
            StoreError::TypeMismatch { .. }
        ));
        // The value is untouched and still reads as its own type.
        assert_eq!(
            c.get::<String>("player", "title")
                .await
                .unwrap()
                .unwrap()
                .value,
            "Alien"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn raw_bytes_round_trip_for_other_languages() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        let bytes: Vec<u8> = (0..=255).collect();
        let value = Value::raw("image/png", bytes.clone());
        let v = c
            .proxy()
            .set("art".into(), "cover".into(), value.clone(), true)
            .await
            .unwrap();
        let entry = c
            .proxy()
            .get("art".into(), "cover".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((entry.value, entry.version), (value, v));
        // Typed reads refuse it, naming its type.
        assert_eq!(
            app(c.get::<Vec<u8>>("art", "cover").await.unwrap_err()),
            StoreError::TypeMismatch {
                expected: "alloc::vec::Vec<u8>".into(),
                found: "image/png".into()
            }
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn set_nowait_applies_without_an_answer() {
    within(async {
        let s = Served::start(Limits::default().max_value_size(100)).await;
        let c = s.client().await;
        let mut watch = c.proxy().watch("a".into(), Some("k".into())).await.unwrap();
        // One that fails (too large) is logged by the server; the next works.
        c.proxy()
            .set_nowait("a".into(), "k".into(), Value::raw("t", vec![0; 200]), false)
            .await
            .unwrap();
        c.proxy()
            .set_nowait(
                "a".into(),
                "k".into(),
                Value::encode("small").unwrap(),
                false,
            )
            .await
            .unwrap();
        match watch.next().await {
            Some(Ok(WatchEvent::Set { value, .. })) => {
                assert_eq!(value.decode::<String>().unwrap(), "small");
            }
            other => panic!("expected the set, got {other:?}"),
        }
        assert_eq!(
            c.get::<String>("a", "k").await.unwrap().unwrap().value,
            "small"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn set_if_version_replaces_only_the_expected_version() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        // 0 means "must not exist".
        let v1 = c.set_if_version("a", "n", &1u32, 0, false).await.unwrap();
        assert_eq!(
            app(c
                .set_if_version("a", "n", &2u32, 0, false)
                .await
                .unwrap_err()),
            StoreError::VersionConflict {
                expected: 0,
                actual: v1
            }
        );
        let v2 = c.set_if_version("a", "n", &2u32, v1, true).await.unwrap();
        assert_eq!(
            app(c
                .set_if_version("a", "n", &3u32, v1, false)
                .await
                .unwrap_err()),
            StoreError::VersionConflict {
                expected: v1,
                actual: v2
            }
        );
        let got = c.get::<u32>("a", "n").await.unwrap().unwrap();
        assert_eq!((got.value, got.version, got.persistent), (2, v2, true));
        // The helper's read-modify-write loop.
        let t = c
            .update::<u32, _>("a", "n", false, |v| v.unwrap_or(0) + 10)
            .await
            .unwrap();
        assert_eq!(t.value, 12);
        assert!(t.version > v2);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn get_if_changed_sends_nothing_for_the_version_held() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        let p = c.proxy();
        let v1 = c.set("a", "n", "one", false).await.unwrap();
        assert_eq!(
            p.get_if_changed("a".into(), "n".into(), v1).await.unwrap(),
            IfChanged::Unchanged
        );
        let v2 = c.set("a", "n", "two", false).await.unwrap();
        match p.get_if_changed("a".into(), "n".into(), v1).await.unwrap() {
            IfChanged::Changed(e) => {
                assert_eq!(e.version, v2);
                assert_eq!(e.value.decode::<String>().unwrap(), "two");
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        c.proxy().delete("a".into(), "n".into()).await.unwrap();
        assert_eq!(
            p.get_if_changed("a".into(), "n".into(), v2).await.unwrap(),
            IfChanged::Absent
        );
        // Recreated: a new version, never the old one again.
        let v3 = c.set("a", "n", "two", false).await.unwrap();
        assert!(v3 > v2);
        assert!(matches!(
            p.get_if_changed("a".into(), "n".into(), v2).await.unwrap(),
            IfChanged::Changed(e) if e.version == v3
        ));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delete_list_and_clear_all() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        let p = c.proxy();
        for (author, name) in [("bob", "y"), ("alice", "b"), ("alice", "a"), ("bob", "x")] {
            c.set(author, name, "v", name == "x").await.unwrap();
        }
        let all = p.list(None).await.unwrap();
        let want: BTreeMap<String, Vec<String>> = [
            ("alice".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
            ("bob".to_owned(), vec!["x".to_owned(), "y".to_owned()]),
        ]
        .into();
        assert_eq!(all, want);
        let bob = p.list(Some("bob".into())).await.unwrap();
        assert_eq!(bob.keys().collect::<Vec<_>>(), ["bob"]);
        assert!(p.list(Some("nobody".into())).await.unwrap().is_empty());

        let old = p.delete("alice".into(), "a".into()).await.unwrap().unwrap();
        assert_eq!(old.value.decode::<String>().unwrap(), "v");
        assert!(
            p.delete("alice".into(), "a".into())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(p.list(Some("alice".into())).await.unwrap()["alice"], ["b"]);

        assert_eq!(p.clear_all().await.unwrap(), 3);
        assert!(p.list(None).await.unwrap().is_empty());
        assert_eq!(p.clear_all().await.unwrap(), 0);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn save_restore_and_delete_saved() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        let p = c.proxy();
        c.set("alice", "a", "saved a", false).await.unwrap();
        c.set("alice", "b", "saved b", true).await.unwrap();
        c.set("bob", "x", "saved x", false).await.unwrap();
        assert_eq!(p.save(Some("alice".into())).await.unwrap(), 2);

        c.set("alice", "a", "changed", false).await.unwrap();
        let before = c.set("alice", "c", "not saved", false).await.unwrap();
        p.delete("alice".into(), "b".into()).await.unwrap();
        assert_eq!(p.restore(Some("alice".into())).await.unwrap(), 2);
        let a = c.get::<String>("alice", "a").await.unwrap().unwrap();
        let b = c.get::<String>("alice", "b").await.unwrap().unwrap();
        assert_eq!((a.value.as_str(), a.persistent), ("saved a", false));
        assert_eq!((b.value.as_str(), b.persistent), ("saved b", true));
        assert!(a.version > before && b.version > before);
        // Keys that were not saved are left alone.
        assert_eq!(
            c.get::<String>("alice", "c").await.unwrap().unwrap().value,
            "not saved"
        );
        // Nothing was saved for bob.
        assert_eq!(p.restore(Some("bob".into())).await.unwrap(), 0);

        // Saving everyone replaces every saved copy.
        assert_eq!(p.save(None).await.unwrap(), 4);
        assert_eq!(p.delete_saved(Some("bob".into())).await.unwrap(), 1);
        assert_eq!(p.delete_saved(None).await.unwrap(), 3);
        assert_eq!(p.restore(None).await.unwrap(), 0);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn persistence_can_be_added_and_removed() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        let p = c.proxy();
        let v = c.set("a", "n", "v", false).await.unwrap();
        assert!(p.add_persistence("a".into(), "n".into()).await.unwrap());
        let e = p.get("a".into(), "n".into()).await.unwrap().unwrap();
        assert_eq!((e.persistent, e.version), (true, v));
        assert!(p.remove_persistence("a".into(), "n".into()).await.unwrap());
        assert!(
            !p.get("a".into(), "n".into())
                .await
                .unwrap()
                .unwrap()
                .persistent
        );
        assert!(!p.add_persistence("a".into(), "zz".into()).await.unwrap());
        assert!(!p.remove_persistence("zz".into(), "n".into()).await.unwrap());
        s.stop().await;
    })
    .await;
}
