//! Unix domain sockets: what happens to the socket file when a server starts
//! over an old one, stops, or finds something else at its path. (The
//! scenarios shared with TCP run over both in the other test files.)
#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

use ipc_core::{Address, Client, Error, Server, ServerHandle};
use ipc_tests::*;

/// Starts a calculator server on the socket at `path`.
async fn start_at(path: &Path) -> Result<ServerHandle, Error> {
    Server::builder()
        .addr(path)
        .expose(CalculatorServer::new(Calc))
        .start()
        .await
}

/// Connects to `addr` and checks that the calculator answers.
async fn assert_serves(addr: &Address) {
    let client = match Client::connect(addr).await {
        Ok(c) => c,
        Err(e) => panic!("no server answers on {addr}: {e}"),
    };
    let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
}

/// Asserts that `result` is a bind error naming `path` that came at once.
fn assert_bind_error_naming(result: Result<ServerHandle, Error>, path: &Path, began: Instant) {
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    match result {
        Err(e @ Error::Bind { .. }) => {
            let path = path.display().to_string();
            assert!(e.to_string().contains(&path), "{e} does not name {path}");
        }
        other => panic!("expected a Bind error, got {other:?}"),
    }
}

#[tokio::test]
async fn server_and_client_talk_over_a_unix_socket_addressed_as_a_string() {
    within(10, async {
        let path = fresh_socket_path();
        let addr = format!("unix:{}", path.display());
        let server = Server::builder()
            .addr(addr.as_str())
            .expose(CalculatorServer::new(Calc))
            .start()
            .await
            .unwrap();
        assert_eq!(server.local_addr().to_string(), addr);
        assert!(path.exists());
        assert_serves(&addr.parse().unwrap()).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn stale_socket_file_of_a_crashed_server_is_replaced() {
    within(10, async {
        let path = fresh_socket_path();
        // A server that dies without cleaning up leaves its socket file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let server = start_at(&path).await.unwrap();
        assert_serves(server.local_addr()).await;
        server.stop().await;
        assert!(!path.exists());
    })
    .await;
}

#[tokio::test]
async fn start_on_a_live_socket_fails_at_once_and_the_first_server_keeps_serving() {
    within(10, async {
        let first = Transport::Unix
            .start(|b| b.expose(CalculatorServer::new(Calc)))
            .await;
        let path = first.local_addr().as_unix_path().unwrap().to_owned();

        let began = Instant::now();
        let second = start_at(&path).await;
        assert_bind_error_naming(second, &path, began);

        // The failed start neither removed nor replaced the live socket.
        assert!(path.exists());
        assert_serves(first.local_addr()).await;
        first.stop().await;
        assert!(!path.exists());
    })
    .await;
}

#[tokio::test]
async fn socket_file_is_removed_after_stop_and_connecting_then_fails() {
    within(10, async {
        let server = Transport::Unix
            .start(|b| b.expose(CalculatorServer::new(Calc)))
            .await;
        let addr = server.local_addr().clone();
        let path = addr.as_unix_path().unwrap().to_owned();
        assert!(path.exists());
        server.stop().await;
        assert!(!path.exists(), "{} is still there", path.display());
        match Client::connect(&addr).await {
            Err(e @ Error::Connect { .. }) => {
                assert!(e.to_string().contains(&addr.to_string()), "{e}")
            }
            other => panic!("expected a Connect error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn something_other_than_a_socket_at_the_path_is_left_alone_and_start_fails() {
    within(10, async {
        // A regular file.
        let path = fresh_socket_path();
        std::fs::write(&path, b"precious").unwrap();
        let began = Instant::now();
        assert_bind_error_naming(start_at(&path).await, &path, began);
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();

        // A directory.
        let path = fresh_socket_path();
        std::fs::create_dir(&path).unwrap();
        let began = Instant::now();
        assert_bind_error_naming(start_at(&path).await, &path, began);
        assert!(path.is_dir());
        std::fs::remove_dir(&path).unwrap();

        // A symbolic link to a stale socket: neither is removed.
        let target = fresh_socket_path();
        drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
        let path = fresh_socket_path();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let began = Instant::now();
        assert_bind_error_naming(start_at(&path).await, &path, began);
        assert!(path.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(target.exists());
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&target).unwrap();
    })
    .await;
}

#[tokio::test]
async fn stopping_an_old_server_leaves_a_newer_servers_socket_alone() {
    within(10, async {
        let path = fresh_socket_path();
        let old = start_at(&path).await.unwrap();
        // Someone removes the old server's file and a new server takes the path.
        std::fs::remove_file(&path).unwrap();
        let new = start_at(&path).await.unwrap();

        old.stop().await;
        assert!(path.exists(), "the old server removed the new one's socket");
        assert_serves(new.local_addr()).await;
        new.stop().await;
        assert!(!path.exists());
    })
    .await;
}

#[tokio::test]
async fn connecting_to_a_missing_socket_fails_at_once_naming_the_path() {
    within(10, async {
        let addr = Address::Unix(fresh_socket_path());
        let began = Instant::now();
        match Client::connect(&addr).await {
            Err(e @ Error::Connect { .. }) => {
                assert!(e.to_string().contains(&addr.to_string()), "{e}")
            }
            other => panic!("expected a Connect error, got {other:?}"),
        }
        assert!(began.elapsed() < Duration::from_secs(1));
    })
    .await;
}
