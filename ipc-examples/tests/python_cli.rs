//! The Python command line (`python -m ipc`) against the real `hello-server`
//! binary: the acceptance check, run as a newcomer would.
//!
//! Needs `python3` (3.9 or later) on `PATH`, or `IPC_PYTHON`; without one it
//! fails saying how to install it. Every wait has a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// A `hello-server` on a free port, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hello-server"))
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hello-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("hello-server did not say where it listens");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
            .to_owned();
        Self { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> std::ffi::OsString {
    std::env::var_os("IPC_PYTHON").unwrap_or_else(|| "python3".into())
}

/// `python -m ipc ARGS`, with the workspace's `python/` on the path.
fn cli(args: &[&str]) -> Output {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python");
    let mut command = Command::new(python());
    command
        .args(["-m", "ipc"])
        .args(args)
        .env("PYTHONPATH", &dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(command.output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!(
            "`python3 -m ipc` could not run ({e}): the Python CLI needs python3 (3.9 or later) \
             on PATH; install it (`apt-get install python3`, `brew install python`) or set \
             IPC_PYTHON"
        ),
        Err(_) => panic!("`python3 -m ipc {args:?}` did not finish in {DEADLINE:?}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn python_cli_lists_and_calls_hello_server() {
    let server = Server::start();
    let listed = cli(&["list", &server.addr]);
    let stdout = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        stdout.contains("Greeter (trait Greeter, fingerprint "),
        "{stdout}"
    );
    assert!(stdout.contains("  greet(String)->String\n"), "{stdout}");
    assert!(stdout.contains("Calculator (trait Calculator"), "{stdout}");

    let added = cli(&["call", &server.addr, "Calculator", "add", "2", "3"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert_eq!(text(&added.stdout), "5\n");

    let greeted = cli(&["call", &server.addr, "Greeter", "greet", "Ada"]);
    assert_eq!(text(&greeted.stdout), "\"Hello, Ada!\"\n");

    let divided = cli(&["call", &server.addr, "Calculator", "div", "1", "0"]);
    assert_eq!(divided.status.code(), Some(1));
    assert!(text(&divided.stderr).contains("DivideByZero"));
}
