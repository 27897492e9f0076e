//! Acceptance 3: a `datastore serve` child process is killed with SIGKILL
//! while a client streams persistent sets. After a restart every
//! acknowledged set is there (counted), and every value there is whole.
#![cfg(unix)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use ipc_core::{Client, config::Reconnect};
use ipc_datastore::{DataStoreProxy, Value};

/// How long a child may take to start.
const STARTUP: Duration = Duration::from_secs(30);
/// In-flight sets on the one connection.
const IN_FLIGHT: usize = 16;
/// Acknowledged sets before the kill.
const ACKED_BEFORE_KILL: usize = 400;

/// A `datastore serve` child, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_datastore"))
            .args(["serve", "--addr", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start datastore serve");
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = lines
                .recv_timeout(STARTUP)
                .expect("datastore serve did not say where it listens");
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        Self { child, addr }
    }

    async fn proxy(&self) -> DataStoreProxy {
        let client = Client::builder()
            .addr(self.addr.as_str())
            .reconnect(Reconnect::NEVER)
            .connect()
            .await
            .expect("connect");
        client.get_exposed_object().await.expect("the datastore")
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait for the killed server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value written to key `name`: its length and bytes follow from the
/// name, so a value cut short or mixed with another is detected.
fn value_for(name: &str) -> Value {
    let seed = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let len = 1 + (seed % 16_384) as usize;
    let data: Vec<u8> = (0..len)
        .map(|i| (seed as usize).wrapping_add(i * 7) as u8)
        .collect();
    Value::raw("crash-test", data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_persistent_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let proxy = server.proxy().await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (enough_tx, enough) = tokio::sync::oneshot::channel::<()>();
    let enough_tx = Arc::new(Mutex::new(Some(enough_tx)));
    let mut writers = Vec::new();
    for task in 0..IN_FLIGHT {
        let (proxy, acked, enough_tx) = (proxy.clone(), acked.clone(), enough_tx.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("t{task}-{i}");
                let value = value_for(&name);
                // Ends at the first failure: the server is gone.
                if proxy
                    .set("crash".into(), name.clone(), value, true)
                    .await
                    .is_err()
                {
                    return;
                }
                let mut acked = acked.lock().unwrap();
                acked.push(name);
                if acked.len() >= ACKED_BEFORE_KILL {
                    if let Some(tx) = enough_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), enough)
        .await
        .expect("the writers did not get enough sets acknowledged")
        .expect("a writer");
    // The writers are still streaming sets as the server dies.
    server.kill_9();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a writer did not notice the server died")
            .unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    drop(proxy);

    let server = Server::start(dir.path());
    let proxy = server.proxy().await;
    let stored = tokio::time::timeout(Duration::from_secs(60), proxy.list(Some("crash".into())))
        .await
        .expect("list in time")
        .unwrap();
    let names = stored.get("crash").cloned().unwrap_or_default();
    let present: std::collections::HashSet<&String> = names.iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged sets lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    // Every value there, acknowledged or not, is whole.
    for name in &names {
        let entry = tokio::time::timeout(
            Duration::from_secs(30),
            proxy.get("crash".into(), name.clone()),
        )
        .await
        .expect("get in time")
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is listed but cannot be read"));
        assert!(entry.persistent);
        assert!(entry.value == value_for(name), "{name} is damaged");
    }
    eprintln!(
        "{} sets acknowledged before the kill, {} values after the restart",
        acked.len(),
        names.len()
    );
}
