//! Acceptance 7: the command line as separate processes — `serve`, `set`,
//! `get`, `list`, `delete`, `watch` — the way a user runs them.
//!
//! Every wait has a deadline, and a child still running when a test ends
//! is killed. Servers listen on port 0 and announce their address.
#![cfg(unix)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_datastore");

/// A running `datastore` with its output collected in the background.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start datastore");
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Self {
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// The next line printed, within the deadline.
    fn line(&mut self) -> String {
        match self.stdout.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("no line ({e:?}); stderr: {}", self.stderr())
            }
        }
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "datastore did not exit in time");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished command printed.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs a client command against `addr` to completion.
fn run(addr: &str, args: &[&str]) -> Output {
    // The command, the address, then the rest (which may hold `--`).
    let mut all = vec![args[0], "--addr", addr];
    all.extend_from_slice(&args[1..]);
    let mut p = Running::spawn(&all);
    let status = p.wait();
    // Ends at end of output, which the exit has closed.
    let stdout = p.stdout.iter().map(|l| l + "\n").collect();
    Output {
        code: status.code(),
        stdout,
        stderr: p.stderr(),
    }
}

fn ok(addr: &str, args: &[&str]) -> String {
    let out = run(addr, args);
    assert_eq!(out.code, Some(0), "{args:?} failed: {}", out.stderr);
    out.stdout
}

/// `datastore serve` over `dir`; returns it with the address it announced.
fn serve(dir: &Path) -> (Running, String) {
    let dir = dir.to_str().expect("a UTF-8 temporary path");
    let mut server = Running::spawn(&["serve", "--addr", "127.0.0.1:0", "--dir", dir]);
    let data = server.line();
    assert_eq!(data, format!("data in {dir}/{}", ipc_datastore::FILE_NAME));
    let listening = server.line();
    let addr = listening
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {listening:?}"))
        .to_owned();
    (server, addr)
}

fn version(stdout: &str) -> u64 {
    stdout
        .trim()
        .strip_prefix("version ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("expected `version N`, got {stdout:?}"))
}

#[test]
fn serve_set_get_list_delete_and_watch_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = serve(dir.path());

    let mut watch = Running::spawn(&["watch", "alice", "--addr", &addr]);
    assert_eq!(watch.line(), "watching alice");

    let title = version(&ok(&addr, &["set", "alice", "title", "Hello world"]));
    let meta = version(&ok(
        &addr,
        &[
            "set",
            "alice",
            "meta",
            r#"{"a": [1, 2]}"#,
            "--json",
            "--persist",
        ],
    ));
    ok(&addr, &["set", "bob", "x", "--", "-5"]);
    assert!(meta > title);

    // Shown back as given: a string as itself, JSON as written.
    assert_eq!(ok(&addr, &["get", "alice", "title"]), "Hello world\n");
    assert_eq!(ok(&addr, &["get", "alice", "meta"]), "{\"a\": [1, 2]}\n");
    assert_eq!(ok(&addr, &["get", "bob", "x"]), "-5\n");
    assert_eq!(ok(&addr, &["list"]), "alice\n  meta\n  title\nbob\n  x\n");
    assert_eq!(ok(&addr, &["list", "bob"]), "bob\n  x\n");

    let missing = run(&addr, &["get", "alice", "nothing"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("alice nothing is not set"),
        "{}",
        missing.stderr
    );

    assert_eq!(
        ok(&addr, &["delete", "alice", "title"]),
        "deleted alice title\n"
    );

    // The watcher printed each change of alice's, in order, bob's not.
    assert_eq!(
        watch.line(),
        format!("alice title = Hello world (version {title})")
    );
    assert_eq!(
        watch.line(),
        format!("alice meta = {{\"a\": [1, 2]}} (version {meta})")
    );
    let deleted = watch.line();
    assert!(
        deleted.starts_with("alice title deleted (version "),
        "{deleted}"
    );
    watch.signal("INT");
    assert!(watch.wait().success());

    // Graceful stop on SIGTERM; the persistent value survives, the rest not.
    server.signal("TERM");
    assert_eq!(server.line(), "shutting down");
    assert_eq!(server.line(), "stopped");
    assert!(server.wait().success());
    let (_server, addr) = serve(dir.path());
    assert_eq!(ok(&addr, &["get", "alice", "meta"]), "{\"a\": [1, 2]}\n");
    assert_eq!(ok(&addr, &["list"]), "alice\n  meta\n");
}

#[test]
fn bad_usage_exits_2_and_help_exits_0() {
    let mut p = Running::spawn(&["set", "only-author"]);
    assert_eq!(p.wait().code(), Some(2));
    assert!(p.stderr().contains("`set` needs AUTHOR NAME VALUE"));
    let mut p = Running::spawn(&["--help"]);
    assert!(p.wait().success());
    assert!(p.line().starts_with("usage: datastore COMMAND"));
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _) = serve(dir.path());
    let dir = dir.path().to_str().unwrap();
    let mut second = Running::spawn(&["serve", "--addr", "127.0.0.1:0", "--dir", dir]);
    assert_eq!(second.wait().code(), Some(1));
    assert!(second.stderr().contains("in use by another datastore"));
}
