//! Runs the example binaries as real processes, the way a newcomer does.
//!
//! Every wait has a deadline, so a hang fails the test instead of stalling the
//! suite, and a child still running when a test ends is killed. Servers listen
//! on port 0 and announce their address on stdout; nothing uses port 9099.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long anything may take before the test is declared hung.
const DEADLINE: Duration = Duration::from_secs(10);

/// A running example binary with its output collected in the background.
struct Running {
    name: &'static str,
    child: Child,
    /// The child's standard input, if it was piped.
    stdin: Option<std::process::ChildStdin>,
    /// Lines of stdout as they are printed; disconnected at end of output.
    stdout: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    fn spawn(name: &'static str, path: &str, args: &[&str]) -> Self {
        Self::spawn_with(name, path, args, false)
    }

    /// As [`Running::spawn`], with standard input piped (see [`Running::say`]).
    fn spawn_with(name: &'static str, path: &str, args: &[&str], piped: bool) -> Self {
        let mut child = Command::new(path)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(if piped { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
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
        let stdin = child.stdin.take();
        Self {
            name,
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// Writes a line to the child's standard input.
    fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes the child's standard input (end of input).
    fn hang_up(&mut self) {
        self.stdin = None;
    }

    /// Reads lines until one equals `want`, failing on a hang or end of output.
    fn expect_line(&mut self, want: &str) {
        loop {
            let line = self.next_line();
            if line == want {
                return;
            }
        }
    }

    /// The next line the process prints, waiting at most `DEADLINE`.
    fn next_line(&mut self) -> String {
        let received = self.stdout.recv_timeout(DEADLINE);
        match received {
            Ok(line) => line,
            Err(e) => {
                // Kill it first: its stderr is complete only once it has exited.
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.finish_stderr();
                panic!("{} printed no line ({e:?}); stderr: {stderr}", self.name)
            }
        }
    }

    /// Waits for the process to exit, failing the test after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {limit:?}", self.name);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The rest of stdout; call after the process has exited.
    fn rest_of_stdout(&mut self) -> String {
        self.stdout.iter().map(|l| l + "\n").collect()
    }

    /// All of stderr; blocks until the process has closed it.
    fn finish_stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    #[cfg(unix)]
    fn interrupt(&self) {
        self.signal("INT");
    }

    /// Sends SIGTERM, as systemd, Docker and Kubernetes do to stop a service.
    #[cfg(unix)]
    fn terminate(&self) {
        self.signal("TERM");
    }

    #[cfg(unix)]
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
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

/// What a finished run printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a binary to completion within `DEADLINE`.
fn run(name: &'static str, path: &str, args: &[&str]) -> Finished {
    let mut p = Running::spawn(name, path, args);
    let status = p.wait(DEADLINE);
    Finished {
        status,
        stdout: p.rest_of_stdout(),
        stderr: p.finish_stderr(),
    }
}

fn hello_server(args: &[&str]) -> Running {
    Running::spawn("hello-server", env!("CARGO_BIN_EXE_hello-server"), args)
}

fn hello_client(args: &[&str]) -> Finished {
    run("hello-client", env!("CARGO_BIN_EXE_hello-client"), args)
}

/// Starts a server on a free port and returns it with the address it announced.
fn started_server() -> (Running, String) {
    let mut server = hello_server(&["--addr", "127.0.0.1:0"]);
    let line = server.next_line();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .to_owned();
    (server, addr)
}

/// An address where, almost certainly, nothing listens: a port the OS just
/// handed out and took back.
fn unused_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").to_string()
}

#[test]
fn client_prints_the_servers_greeting_and_exits_0() {
    let (_server, addr) = started_server();
    let out = hello_client(&["--addr", &addr, "World"]);
    assert!(
        out.status.success(),
        "{:?}; stderr: {}",
        out.status,
        out.stderr
    );
    assert_eq!(out.stdout, "Hello, World!\n");

    // The server keeps serving: a second client, a name needing `--`.
    let out = hello_client(&["--addr", &addr, "--", "-Ünïcödé-"]);
    assert!(
        out.status.success(),
        "{:?}; stderr: {}",
        out.status,
        out.stderr
    );
    assert_eq!(out.stdout, "Hello, -Ünïcödé-!\n");
}

#[test]
fn client_lists_the_servers_objects() {
    let (_server, addr) = started_server();
    let out = hello_client(&["--addr", &addr, "--list"]);
    assert!(
        out.status.success(),
        "{:?}; stderr: {}",
        out.status,
        out.stderr
    );
    assert!(
        out.stdout
            .starts_with("Greeter (trait Greeter, fingerprint "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("    greet(String)->String\n"),
        "{}",
        out.stdout
    );
    // After `--`, "--list" is just a name.
    let out = hello_client(&["--addr", &addr, "--", "--list"]);
    assert_eq!(out.stdout, "Hello, --list!\n");
}

#[cfg(unix)]
#[test]
fn server_exits_0_promptly_on_sigint() {
    let (mut server, addr) = started_server();
    // Make sure it is serving, not just bound, before interrupting it.
    assert!(hello_client(&["--addr", &addr, "World"]).status.success());

    server.interrupt();
    let status = server.wait(Duration::from_secs(5));
    assert!(
        status.success(),
        "{status:?}; stderr: {}",
        server.finish_stderr()
    );
    assert!(server.rest_of_stdout().contains("stopped"));
}

/// A Unix socket path in the temporary directory, unique to this process
/// and call; nothing is created there.
#[cfg(unix)]
fn fresh_socket_path() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ipc-examples-{}-{n}.sock", std::process::id()))
}

#[cfg(unix)]
#[test]
fn hello_over_a_unix_socket_then_sigint_removes_the_socket_file() {
    let path = fresh_socket_path();
    let addr = format!("unix:{}", path.display());
    let mut server = hello_server(&["--addr", &addr]);
    assert_eq!(server.next_line(), format!("listening on {addr}"));
    assert!(path.exists());

    let out = hello_client(&["--addr", &addr, "World"]);
    assert!(
        out.status.success(),
        "{:?}; stderr: {}",
        out.status,
        out.stderr
    );
    assert_eq!(out.stdout, "Hello, World!\n");

    // A second server on the live socket fails at once, naming it, and
    // leaves the first one serving.
    let mut second = hello_server(&["--addr", &addr]);
    let status = second.wait(Duration::from_secs(2));
    let stderr = second.finish_stderr();
    assert!(!status.success(), "a second server started on {addr}");
    assert!(
        stderr.contains(&addr),
        "stderr does not name {addr}: {stderr:?}"
    );
    assert!(hello_client(&["--addr", &addr, "again"]).status.success());

    server.interrupt();
    let status = server.wait(Duration::from_secs(5));
    assert!(
        status.success(),
        "{status:?}; stderr: {}",
        server.finish_stderr()
    );
    assert!(!path.exists(), "the socket file outlived the server");
}

#[cfg(unix)]
#[test]
fn sigterm_during_a_slow_call_lets_it_finish_then_exits_0_and_removes_the_socket_file() {
    use ipc_examples::GreeterProxy;

    let path = fresh_socket_path();
    let addr = format!("unix:{}", path.display());
    let mut server = hello_server(&["--addr", &addr]);
    assert_eq!(server.next_line(), format!("listening on {addr}"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let slow = runtime.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let client = ipc_core::Client::connect(addr.as_str()).await.unwrap();
            let greeter: GreeterProxy = client.get_exposed_object().await.unwrap();
            let slow = tokio::spawn({
                let greeter = greeter.clone();
                async move { greeter.greet_after("Slow".into(), 1_500).await }
            });
            // Requests on one connection are read in order: once this one
            // is answered, the server has the slow call in hand.
            tokio::task::yield_now().await;
            assert_eq!(greeter.greet("Fast".into()).await.unwrap(), "Hello, Fast!");
            server.terminate();
            // The slow call finishes although the server was told to stop.
            slow.await.unwrap()
        })
        .await
        .expect("the slow call hung")
    });
    assert_eq!(slow.unwrap(), "Hello, Slow!");
    let status = server.wait(Duration::from_secs(5));
    assert!(
        status.success(),
        "{status:?}; stderr: {}",
        server.finish_stderr()
    );
    assert!(server.rest_of_stdout().contains("stopped"));
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn server_on_a_busy_port_exits_non_zero_at_once_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local_addr").to_string();

    let mut server = hello_server(&["--addr", &addr]);
    let status = server.wait(Duration::from_secs(1));
    let stderr = server.finish_stderr();
    assert!(!status.success(), "the server started on a busy port");
    assert!(
        stderr.contains(&addr),
        "stderr does not name {addr}: {stderr:?}"
    );
    assert_eq!(
        server.rest_of_stdout(),
        "",
        "it must not claim to be listening"
    );
}

#[test]
fn client_without_a_server_exits_1_with_a_message_naming_the_address() {
    let addr = unused_addr();
    let out = hello_client(&["--addr", &addr, "World"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains(&addr), "stderr: {:?}", out.stderr);
}

#[test]
fn bad_usage_prints_the_usage_and_exits_2() {
    for args in [
        &[][..],
        &["a", "b"],
        &["--addr"],
        &["--addr", "nonsense", "World"],
    ] {
        let out = hello_client(args);
        assert_eq!(out.status.code(), Some(2), "hello-client {args:?}");
        assert!(
            out.stderr.contains("usage: hello-client"),
            "{:?}",
            out.stderr
        );
    }
    let mut server = hello_server(&["unexpected"]);
    assert_eq!(server.wait(DEADLINE).code(), Some(2));
    assert!(server.finish_stderr().contains("usage: hello-server"));
}

#[test]
fn demo_runs_to_completion_showing_the_typed_errors() {
    let out = run("demo", env!("CARGO_BIN_EXE_demo"), &[]);
    assert!(
        out.status.success(),
        "{:?}; stderr: {}",
        out.status,
        out.stderr
    );
    assert!(out.stdout.contains("add(2, 3)  = 5"), "{}", out.stdout);
    assert!(out.stdout.contains("DivideByZero"), "{}", out.stdout);
    assert!(
        out.stdout.contains("no object named `Abacus`"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("stopped gracefully"), "{}", out.stdout);
}

/// The demo is the first thing anyone runs: its output is the same every
/// time (but for the port the server got).
#[test]
fn demo_output_is_the_same_from_run_to_run() {
    let without_port = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .map(|w| if w.contains("127.0.0.1:") { "ADDR" } else { w })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let first = run("demo", env!("CARGO_BIN_EXE_demo"), &[]);
    assert!(first.status.success(), "{}", first.stderr);
    for _ in 0..3 {
        let again = run("demo", env!("CARGO_BIN_EXE_demo"), &[]);
        assert!(again.status.success(), "{}", again.stderr);
        assert_eq!(without_port(&first.stdout), without_port(&again.stdout));
    }
}

fn chat(args: &[&str]) -> Running {
    Running::spawn_with("chat", env!("CARGO_BIN_EXE_chat"), args, true)
}

#[test]
fn chat_runs_its_scripted_members_to_completion() {
    let out = run("chat", env!("CARGO_BIN_EXE_chat"), &[]);
    assert!(
        out.status.success(),
        "{:?}; stderr: {}",
        out.status,
        out.stderr
    );
    assert_eq!(
        out.stdout,
        "alice got: alice: hi bob\n\
         alice got: bob: hi alice\n\
         alice got: alice: see you\n\
         bob got: alice: hi bob\n\
         bob got: bob: hi alice\n\
         bob got: alice: see you\n"
    );
}

#[cfg(unix)]
#[test]
fn chat_members_in_separate_processes_see_every_message_in_order() {
    let mut room = chat(&["serve", "--addr", "127.0.0.1:0"]);
    let line = room.next_line();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .to_owned();
    // The directory shows which methods take objects.
    let listed = hello_client(&["--addr", &addr, "--list"]);
    assert!(
        listed.stdout.contains(
            "    join(String,Remote<MemberProxy>)->Result<u64,ChatError> [takes objects]\n"
        ),
        "{}",
        listed.stdout
    );
    let mut alice = chat(&["join", "--addr", &addr, "alice"]);
    alice.expect_line("joined as alice");
    let mut bob = chat(&["join", "--addr", &addr, "bob"]);
    bob.expect_line("joined as bob");

    alice.say("hello from alice");
    alice.expect_line("alice got: alice: hello from alice");
    bob.expect_line("bob got: alice: hello from alice");
    bob.say("hello from bob");
    bob.expect_line("bob got: bob: hello from bob");
    alice.expect_line("alice got: bob: hello from bob");

    for member in [&mut alice, &mut bob] {
        member.hang_up();
        let status = member.wait(DEADLINE);
        assert!(
            status.success(),
            "{status:?}; stderr: {}",
            member.finish_stderr()
        );
    }
    room.terminate();
    let status = room.wait(Duration::from_secs(5));
    assert!(
        status.success(),
        "{status:?}; stderr: {}",
        room.finish_stderr()
    );
}

/// A directory of its own under the temporary directory.
fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ipc-examples-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate
/// (`alice`), made now, as PEM files in `dir`: (ca, server, server key,
/// client, client key).
fn certificates(dir: &std::path::Path) -> [String; 5] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "examples CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, ip: bool| {
        let mut p = CertificateParams::new(vec![name.to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        if ip {
            p.subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        }
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf("localhost", true);
    let (client, client_key) = leaf("alice", false);
    let files = [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", server),
        ("server-key.pem", server_key),
        ("client.pem", client),
        ("client-key.pem", client_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write");
        path.display().to_string()
    })
}

#[test]
fn hello_with_a_key_file_then_over_tls_and_mutual_tls() {
    let dir = scratch_dir("security");
    let key = dir.join("key");
    std::fs::write(&key, "a shared key for the process test\n").expect("write key");
    let key = key.display().to_string();

    // A shared key: the client with it is greeted, the one without refused.
    let mut server = hello_server(&["--addr", "127.0.0.1:0", "--key-file", &key]);
    let addr = server.next_line().replace("listening on ", "");
    let out = hello_client(&["--addr", &addr, "--key-file", &key, "Ada"]);
    assert_eq!(out.stdout, "Hello, Ada!\n", "stderr: {}", out.stderr);
    let out = hello_client(&["--addr", &addr, "Eve"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("key"), "{}", out.stderr);
    server.terminate();
    assert!(server.wait(Duration::from_secs(5)).success());

    // TLS, then mutual TLS.
    let [ca, cert, cert_key, client, client_key] = certificates(&dir);
    let mut server = hello_server(&[
        "--addr",
        "tls://127.0.0.1:0",
        "--cert",
        &cert,
        "--key",
        &cert_key,
    ]);
    let addr = server.next_line().replace("listening on ", "");
    assert!(addr.starts_with("tls://127.0.0.1:"), "{addr}");
    let out = hello_client(&["--addr", &addr, "--ca", &ca, "Ada"]);
    assert_eq!(out.stdout, "Hello, Ada!\n", "stderr: {}", out.stderr);
    server.terminate();
    assert!(server.wait(Duration::from_secs(5)).success());

    let mut server = hello_server(&[
        "--addr",
        "tls://127.0.0.1:0",
        "--cert",
        &cert,
        "--key",
        &cert_key,
        "--client-ca",
        &ca,
    ]);
    let addr = server.next_line().replace("listening on ", "");
    let out = hello_client(&[
        "--addr",
        &addr,
        "--ca",
        &ca,
        "--cert",
        &client,
        "--key",
        &client_key,
        "Alice",
    ]);
    assert_eq!(out.stdout, "Hello, Alice!\n", "stderr: {}", out.stderr);
    let out = hello_client(&["--addr", &addr, "--ca", &ca, "Nobody"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    server.terminate();
    assert!(server.wait(Duration::from_secs(5)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The body of `GET /metrics` from `addr` (HOST:PORT).
fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut socket = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
    socket
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("send the request");
    let mut response = String::new();
    socket
        .read_to_string(&mut response)
        .expect("read the response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[test]
fn server_with_metrics_serves_prometheus_counters_after_a_few_calls() {
    let metrics_addr = unused_addr();
    let mut server = hello_server(&["--addr", "127.0.0.1:0", "--metrics", &metrics_addr]);
    server.expect_line(&format!("metrics on http://{metrics_addr}/metrics"));
    let line = server.next_line();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .to_owned();
    for name in ["Ada", "Grace", "Edsger"] {
        let out = hello_client(&["--addr", &addr, name]);
        assert!(
            out.status.success(),
            "{:?}; stderr: {}",
            out.status,
            out.stderr
        );
    }
    let body = scrape(&metrics_addr);
    let sample = |name: &str, labels: &[&str]| -> Option<String> {
        body.lines()
            .find(|l| {
                l.starts_with(name)
                    && l[name.len()..].starts_with(['{', ' '])
                    && labels.iter().all(|label| l.contains(label))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    let greet_ok = [
        r#"object="Greeter""#,
        r#"method="greet""#,
        r#"outcome="ok""#,
    ];
    assert_eq!(
        sample("ipc_server_calls_total", &greet_ok).as_deref(),
        Some("3"),
        "{body}"
    );
    assert_eq!(
        sample("ipc_server_connections_total", &[]).as_deref(),
        Some("3"),
        "{body}"
    );
    // Open connections: the clients may or may not have been seen leaving yet.
    assert!(sample("ipc_server_connections", &[]).is_some(), "{body}");
    assert!(
        sample(
            "ipc_server_call_duration_seconds_count",
            &[r#"method="greet""#]
        )
        .as_deref()
            == Some("3"),
        "{body}"
    );
    let received: u64 = sample("ipc_server_bytes_received_total", &[])
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(received > 0, "{body}");
    server.interrupt();
    assert!(server.wait(DEADLINE).success());
}
