//! What the datastore's tests share: a store served on a free port over a
//! temporary directory, clients for it, a restart, and a deadline for
//! everything that could hang.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use ipc_core::{Address, Client, Server, ServerHandle};
use ipc_datastore::{DataStoreClient, DataStoreServer, Limits, Store};
use tempfile::TempDir;

/// How long any test step may take before the test is declared hung.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(out) => out,
        Err(_) => panic!("the test did not finish within {DEADLINE:?}"),
    }
}

/// A store in a temporary directory, served on a free port.
pub struct Served {
    pub dir: TempDir,
    pub limits: Limits,
    pub store: Store,
    pub server: ServerHandle,
}

impl Served {
    pub async fn start(limits: Limits) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (store, server) = serve(&dir, limits.clone()).await;
        Self {
            dir,
            limits,
            store,
            server,
        }
    }

    pub fn addr(&self) -> Address {
        self.server.local_addr().clone()
    }

    /// A client on a connection of its own.
    pub async fn client(&self) -> DataStoreClient {
        DataStoreClient::connect(self.addr())
            .await
            .expect("connect to the datastore")
    }

    /// A client whose streams get a window of `window` bytes.
    pub async fn client_with_window(&self, window: u32) -> DataStoreClient {
        let client = Client::builder()
            .addr(self.addr())
            .stream_window(window)
            .connect()
            .await
            .expect("connect to the datastore");
        DataStoreClient::over(&client).await.expect("the datastore")
    }

    /// Stops the server, closes the store, and starts both again over the
    /// same directory (on a new port).
    pub async fn restart(self) -> Self {
        let Self {
            dir,
            limits,
            store,
            server,
        } = self;
        server.stop().await;
        store.close().await;
        drop(store);
        let (store, server) = serve(&dir, limits.clone()).await;
        Self {
            dir,
            limits,
            store,
            server,
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
        self.store.close().await;
    }
}

async fn serve(dir: &TempDir, limits: Limits) -> (Store, ServerHandle) {
    let store = Store::open(dir.path(), limits).expect("open the store");
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .expose(DataStoreServer::new(store.clone()))
        .start()
        .await
        .expect("start the server");
    (store, server)
}
