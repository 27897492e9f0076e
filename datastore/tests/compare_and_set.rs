//! Acceptance 5: compare-and-set under 8 concurrent incrementing clients:
//! the final counter equals the number of successful increments.

mod support;

use std::sync::Arc;

use ipc_core::CallError;
use ipc_datastore::{Limits, StoreError};
use support::{Served, within};
use tokio::sync::Barrier;

const CLIENTS: usize = 8;
const ATTEMPTS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_never_lost() {
    within(async {
        let s = Served::start(Limits::default()).await;
        let start = Arc::new(Barrier::new(CLIENTS));
        let mut tasks = Vec::new();
        for i in 0..CLIENTS {
            // Each on its own connection; half of them persist.
            let c = s.client().await;
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let (mut won, mut lost) = (0u64, 0u64);
                for _ in 0..ATTEMPTS {
                    let (n, version) = match c.get::<u64>("shared", "counter").await.unwrap() {
                        Some(t) => (t.value, t.version),
                        None => (0, 0),
                    };
                    match c
                        .set_if_version("shared", "counter", &(n + 1), version, i % 2 == 0)
                        .await
                    {
                        Ok(_) => won += 1,
                        Err(CallError::App(StoreError::VersionConflict { expected, actual })) => {
                            assert_eq!(expected, version);
                            assert_ne!(actual, version);
                            lost += 1;
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                (won, lost)
            }));
        }
        let (mut won, mut lost) = (0, 0);
        for t in tasks {
            let (w, l) = t.await.unwrap();
            won += w;
            lost += l;
        }
        assert_eq!(won + lost, (CLIENTS * ATTEMPTS) as u64);
        assert!(won > 0);
        let c = s.client().await;
        let counter = c.get::<u64>("shared", "counter").await.unwrap().unwrap();
        assert_eq!(
            counter.value, won,
            "{won} increments succeeded ({lost} conflicts), the counter says {}",
            counter.value
        );
        s.stop().await;
    })
    .await;
}
