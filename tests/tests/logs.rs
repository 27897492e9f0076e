//! What a server logs at `debug`: each accepted connection, each object
//! lookup and each finished call with their fields, a clean close as
//! "closed by peer", and a stranger's bytes as "not an ipc peer".
//!
//! Each test runs on a current-thread runtime with a thread-local
//! subscriber, which sees everything the server and client do. They are in a
//! binary of their own: a test without a subscriber running beside them
//! could have tracing cache "nobody listens" for a call site.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ipc_core::Error;
use ipc_tests::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Log output collected in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The first line containing every one of `parts`, or a failure that
    /// shows everything captured.
    fn line_with(&self, parts: &[&str]) -> String {
        let text = self.text();
        match text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            Some(line) => line.to_owned(),
            None => panic!("no log line contains all of {parts:?}; captured:\n{text}"),
        }
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_debug_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    (captured, guard)
}

#[tokio::test(flavor = "current_thread")]
async fn debug_logs_show_the_accept_the_lookup_each_call_and_a_clean_close() {
    let (logs, _guard) = capture_debug_logs();
    within(20, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let client = connect(&server).await;
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(2, 3).await.unwrap(), 5);
        assert!(calc.div(1, 0).await.is_err());
        let missing = client
            .get_exposed_object_named::<CalculatorProxy>("Nope")
            .await;
        assert!(
            matches!(missing, Err(Error::UnknownObject { .. })),
            "{missing:?}"
        );
        let client_addr = client.local_addr().to_string();
        drop(calc);
        drop(client);
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            eventually(10, "", || logs.text().contains("connection closing")),
        )
        .await;
        assert!(
            ended.is_ok(),
            "no `connection closing` line; captured:\n{}",
            logs.text()
        );

        let accepted = logs.line_with(&["connection accepted", "connection_id="]);
        assert!(accepted.contains(&client_addr), "{accepted}");
        logs.line_with(&["object lookup", "name=Calculator", "found"]);
        logs.line_with(&["object lookup", "name=Nope", "unknown object"]);
        let add = logs.line_with(&["call finished", "method=\"add\"", "outcome=\"ok\""]);
        assert!(add.contains("object=Calculator"), "{add}");
        assert!(add.contains("duration_us="), "{add}");
        logs.line_with(&["call finished", "method=\"div\"", "outcome=\"app_error\""]);
        let closing = logs.line_with(&["connection closing"]);
        assert!(closing.contains("closed by peer"), "{closing}");
        assert!(!closing.contains("lost"), "{closing}");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_http_request_is_logged_as_not_an_ipc_peer() {
    let (logs, _guard) = capture_debug_logs();
    within(20, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let mut socket = tokio::net::TcpStream::connect(server.local_addr().to_string())
            .await
            .unwrap();
        socket
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The server closes the connection without answering.
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
        eventually(10, "the server logged the stranger", || {
            logs.text().contains("not an ipc peer")
        })
        .await;
        let line = logs.line_with(&["not an ipc peer"]);
        assert!(line.contains("HTTP"), "{line}");
        assert!(!line.contains("frame size too big"), "{line}");
        server.stop().await;
    })
    .await;
}
