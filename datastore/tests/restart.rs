//! Acceptance 2: after a restart persistent values are back with their
//! versions and non-persistent ones are gone; versions never go back.

mod support;

use ipc_datastore::Limits;
use support::{Served, within};

#[tokio::test]
async fn persistent_values_come_back_with_their_versions_and_the_rest_do_not() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        let kept = c.set("a", "kept", "on disk", true).await.unwrap();
        c.set("a", "memory", "in memory", false).await.unwrap();
        // Persistent, then replaced by a non-persistent set: gone from disk.
        c.set("a", "demoted", "first", true).await.unwrap();
        c.set("a", "demoted", "second", false).await.unwrap();
        // Made persistent afterwards, keeping its version.
        let promoted = c.set("a", "promoted", "late", false).await.unwrap();
        assert!(
            c.proxy()
                .add_persistence("a".into(), "promoted".into())
                .await
                .unwrap()
        );
        // Persistent, then made memory-only.
        c.set("a", "unpersisted", "x", true).await.unwrap();
        assert!(
            c.proxy()
                .remove_persistence("a".into(), "unpersisted".into())
                .await
                .unwrap()
        );
        // Persistent, then deleted.
        c.set("b", "deleted", "x", true).await.unwrap();
        c.proxy()
            .delete("b".into(), "deleted".into())
            .await
            .unwrap();
        let last = c.set("c", "last", "in memory", false).await.unwrap();
        drop(c);

        let s = s.restart().await;
        let c = s.client().await;
        let got = c.get::<String>("a", "kept").await.unwrap().unwrap();
        assert_eq!(
            (got.value.as_str(), got.version, got.persistent),
            ("on disk", kept, true)
        );
        let got = c.get::<String>("a", "promoted").await.unwrap().unwrap();
        assert_eq!((got.value.as_str(), got.version), ("late", promoted));
        for (author, name) in [
            ("a", "memory"),
            ("a", "demoted"),
            ("a", "unpersisted"),
            ("b", "deleted"),
            ("c", "last"),
        ] {
            assert!(
                c.get::<String>(author, name).await.unwrap().is_none(),
                "{author}/{name} survived the restart"
            );
        }
        let names = c.proxy().list(None).await.unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(names["a"], ["kept", "promoted"]);

        // New versions are above every version handed out before, the
        // non-persistent ones included.
        let next = c.set("c", "last", "again", false).await.unwrap();
        assert!(next > last, "version {next} after a restart, {last} before");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn clear_all_removes_persistent_values_from_disk() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        c.set("a", "x", &1u8, true).await.unwrap();
        c.set("b", "y", &2u8, true).await.unwrap();
        assert_eq!(c.proxy().clear_all().await.unwrap(), 2);
        drop(c);
        let s = s.restart().await;
        let c = s.client().await;
        assert!(c.proxy().list(None).await.unwrap().is_empty());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn saved_copies_survive_a_restart_and_restore_brings_them_back() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let c = s.client().await;
        c.set("a", "m", "memory only", false).await.unwrap();
        c.set("a", "p", "persistent", true).await.unwrap();
        assert_eq!(c.proxy().save(None).await.unwrap(), 2);
        drop(c);
        let s = s.restart().await;
        let c = s.client().await;
        assert!(c.get::<String>("a", "m").await.unwrap().is_none());
        assert_eq!(c.proxy().restore(Some("a".into())).await.unwrap(), 2);
        let m = c.get::<String>("a", "m").await.unwrap().unwrap();
        assert_eq!((m.value.as_str(), m.persistent), ("memory only", false));
        let p = c.get::<String>("a", "p").await.unwrap().unwrap();
        assert_eq!((p.value.as_str(), p.persistent), ("persistent", true));
        s.stop().await;
    })
    .await;
}
