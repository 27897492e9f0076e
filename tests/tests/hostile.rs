//! Hostile input on one raw TCP connection closes (or gets a typed error on)
//! only that connection: a well-behaved client connected before the attack
//! keeps getting correct answers throughout, a fresh one connects afterwards,
//! the server never buffers more than its frame limit, and nothing panics.
//!
//! The hostile bytes are written by hand from the README's wire protocol
//! (see `hostile/raw.rs`), not with `ipc_core::wire`.

#[path = "hostile/raw.rs"]
mod raw;

use std::panic;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipc_core::{CancellationToken, Client, Proxy, ServerBuilder, ServerHandle};
use ipc_tests::*;
use raw::{Raw, STATUS_BAD_REQUEST, STATUS_OK};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

/// Panics anywhere in this process except this binary's own assertions.
static PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_HOOK: Once = Once::new();

/// Installs (once) a panic hook that counts panics outside this test file, so
/// a failed assertion here does not also fail every test running beside it.
/// Nothing in this binary panics on purpose: any count is a server panic.
fn count_panics() {
    PANIC_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let ours = info
                .location()
                .is_some_and(|l| l.file().replace('\\', "/").contains("tests/hostile"));
            if !ours {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// The process's peak virtual size in KiB (Linux only).
fn vm_peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmPeak:"))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// How much the peak virtual size may grow during one test. Far below the
/// 4 GiB and 1 TiB that the hostile frames claim, and above the noise of
/// thread stacks and allocator arenas of tests running in parallel.
const PEAK_GROWTH_LIMIT_KIB: u64 = 1 << 20;

/// A server with `Calculator` (handle 1), `Greeter` (2) and `Gate` (3), and a
/// well-behaved client calling `add` in a loop for the whole test.
struct Scene {
    server: ServerHandle,
    _client: Client,
    bystander: CalculatorProxy,
    stop_bystander: CancellationToken,
    bystander_task: JoinHandle<Result<u64, String>>,
    started: UnboundedReceiver<()>,
    peak_before: Option<u64>,
}

async fn scene(build: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Scene {
    count_panics();
    let peak_before = vm_peak_kib();
    let (gate, started) = GateImpl::new();
    let server = start(|b| {
        build(
            b.grace_period(Duration::from_secs(1))
                .expose(CalculatorServer::new(Calc))
                .expose(GreeterServer::new(Hello))
                .expose(GateServer::new(gate)),
        )
    })
    .await;
    let client = connect(&server).await;
    let bystander: CalculatorProxy = match client.get_exposed_object().await {
        Ok(p) => p,
        Err(e) => panic!("the bystander could not resolve Calculator: {e}"),
    };
    assert_eq!(bystander.add(2, 3).await.ok(), Some(5));
    let stop_bystander = CancellationToken::new();
    let bystander_task = tokio::spawn(keep_adding(bystander.clone(), stop_bystander.clone()));
    Scene {
        server,
        _client: client,
        bystander,
        stop_bystander,
        bystander_task,
        started,
        peak_before,
    }
}

/// Calls `add(n, 1)` until `stop`, at least once; the number of correct answers.
async fn keep_adding(calc: CalculatorProxy, stop: CancellationToken) -> Result<u64, String> {
    let mut n: u64 = 0;
    loop {
        let a = n as i64;
        match calc.add(a, 1).await {
            Ok(v) if v == a + 1 => n += 1,
            other => return Err(format!("add({a}, 1) during the attack gave {other:?}")),
        }
        if stop.is_cancelled() {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl Scene {
    /// Checks the server is unharmed: the client from before the attack and a
    /// fresh one both add correctly, memory stayed bounded, nothing panicked.
    async fn assert_unharmed(self) {
        self.stop_bystander.cancel();
        match self.bystander_task.await {
            Ok(Ok(n)) => assert!(n >= 1),
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("the bystander task failed: {e}"),
        }
        assert_eq!(
            self.bystander.add(2, 3).await.ok(),
            Some(5),
            "the client connected before the attack stopped working"
        );
        let fresh = connect(&self.server).await;
        let calc: CalculatorProxy = match fresh.get_exposed_object().await {
            Ok(p) => p,
            Err(e) => panic!("a fresh client could not resolve Calculator: {e}"),
        };
        assert_eq!(calc.add(2, 3).await.ok(), Some(5));
        if let (Some(before), Some(after)) = (self.peak_before, vm_peak_kib()) {
            assert!(
                after.saturating_sub(before) < PEAK_GROWTH_LIMIT_KIB,
                "peak virtual size grew by {} KiB during the attack",
                after - before
            );
        }
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "something panicked (see the output above)"
        );
        self.server.stop().await;
    }
}

#[tokio::test]
async fn http_request_instead_of_hello_closes_connection_without_answer() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::connect(&scene.server).await;
        // "GET " read as a length prefix is 517 MiB: past the 16 MiB limit.
        raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_magic_in_hello_closes_connection_without_answer() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::connect(&scene.server).await;
        raw.send(&raw::hello(b"IPCX", 2, 1 << 20)).await;
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_protocol_version_gets_server_hello_then_close() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::connect(&scene.server).await;
        raw.send(&raw::hello(b"IPCR", 3, 1 << 20)).await;
        let theirs = raw.read_frame().await;
        raw::assert_server_hello(&theirs);
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn truncated_frame_then_half_close_closes_connection() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        let mut partial = 100u32.to_le_bytes().to_vec();
        partial.extend_from_slice(&[raw::REQUEST, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        raw.send(&partial).await;
        if let Err(e) = raw.stream.shutdown().await {
            panic!("shutting down the write half failed: {e}");
        }
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn length_prefix_of_4_gib_closes_connection_before_buffering() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        let mut hostile = u32::MAX.to_le_bytes().to_vec();
        hostile.extend_from_slice(&[raw::REQUEST, 1, 0, 0, 0, 0, 0, 0, 0]);
        raw.send(&hostile).await;
        // Closed without the other 4 GiB ever arriving: the prefix was refused
        // as it stood. `assert_unharmed` checks the peak memory too.
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn frame_at_the_limit_is_served_and_one_byte_past_it_closes_connection() {
    within(10, async {
        let scene = scene(|b| b.max_frame_size(1024)).await;
        // kind + id (9) + object, method, deadline (10) + String length (8) + 997 = 1024.
        let name = "n".repeat(997);
        let at_limit = raw::request(1, 2, 0, &raw::string(&name));
        assert_eq!(at_limit.len(), 4 + 1024);
        let mut raw = Raw::handshaken(&scene.server).await;
        raw.send(&at_limit).await;
        let reply = raw.read_frame().await;
        let greeting = raw::string(&format!("Hello, {name}!"));
        assert_eq!(
            (reply.id, reply.response()),
            (1, (STATUS_OK, &greeting[..]))
        );

        let past_limit = raw::request(2, 2, 0, &raw::string(&format!("{name}n")));
        assert_eq!(past_limit.len(), 4 + 1025);
        raw.send(&past_limit).await;
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn argument_claiming_a_huge_string_gets_bad_request_and_connection_stays_usable() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        let greeter = raw.resolve(1, GreeterProxy::DESCRIPTOR).await;
        let calc = raw.resolve(2, CalculatorProxy::DESCRIPTOR).await;
        assert_eq!((calc, greeter), (1, 2), "handles follow exposure order");

        // `greet(name: String)` with a name claiming 1 TiB, in a 38-byte frame.
        let reply = raw.call(3, greeter, 0, &raw::huge_string_claim()).await;
        let (status, body) = reply.response();
        assert_eq!(status, STATUS_BAD_REQUEST, "{reply:?}");
        assert_string_body(body);

        raw.assert_add_works(4, calc).await;
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn resolve_claiming_a_huge_name_gets_bad_request_and_connection_stays_usable() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        let reply = raw.call(1, 0, 0, &raw::huge_string_claim()).await;
        let (status, body) = reply.response();
        assert_eq!(status, STATUS_BAD_REQUEST, "{reply:?}");
        assert_string_body(body);

        let calc = raw.resolve(2, CalculatorProxy::DESCRIPTOR).await;
        raw.assert_add_works(3, calc).await;
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_message_kind_closes_connection() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        raw.send(&raw::frame(200, 1, &[])).await;
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn response_to_a_request_never_issued_closes_connection() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        // The server never sent a request on this connection.
        let mut payload = vec![STATUS_OK];
        payload.extend_from_slice(&5i64.to_le_bytes());
        raw.send(&raw::frame(raw::RESPONSE, 0xDEAD_BEEF, &payload))
            .await;
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn duplicate_request_id_in_flight_closes_connection() {
    within(10, async {
        let mut scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        let gate = raw.resolve(1, GateProxy::DESCRIPTOR).await;
        // `wait_for_gate` (method 0, no arguments) waits until the gate opens,
        // which it never does here.
        raw.send(&raw::request(5, gate, 0, &[])).await;
        assert_eq!(scene.started.recv().await, Some(()));
        raw.send(&raw::request(5, gate, 0, &[])).await;
        assert_eq!(raw.expect_closed().await, b"");
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn connection_sending_nothing_is_closed_after_the_handshake_timeout() {
    within(10, async {
        let scene = scene(|b| b.handshake_timeout(Duration::from_millis(200))).await;
        let mut raw = Raw::connect(&scene.server).await;
        let connected = Instant::now();
        assert_eq!(raw.expect_closed().await, b"");
        let waited = connected.elapsed();
        assert!(
            waited >= Duration::from_millis(150),
            "closed after {waited:?}"
        );
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn partial_hello_is_closed_after_the_handshake_timeout() {
    within(10, async {
        let scene = scene(|b| b.handshake_timeout(Duration::from_millis(200))).await;
        let mut raw = Raw::connect(&scene.server).await;
        let hello = raw::good_hello();
        raw.send(&hello[..hello.len() / 2]).await;
        let sent = Instant::now();
        assert_eq!(raw.expect_closed().await, b"");
        let waited = sent.elapsed();
        assert!(
            waited >= Duration::from_millis(150),
            "closed after {waited:?}"
        );
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn silence_after_a_complete_hello_is_not_a_handshake_timeout() {
    within(10, async {
        let scene = scene(|b| b.handshake_timeout(Duration::from_millis(200))).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        // The handshake is over: an idle connection is a legitimate one.
        raw.expect_open_and_silent(Duration::from_millis(600)).await;
        raw.assert_add_works(1, 1).await;
        scene.assert_unharmed().await;
    })
    .await;
}

/// Checks a status-19 body is a bincode `String` detail.
fn assert_string_body(body: &[u8]) {
    assert!(body.len() >= 8, "not a String: {body:?}");
    let mut len = [0u8; 8];
    len.copy_from_slice(&body[..8]);
    assert_eq!(u64::from_le_bytes(len) as usize, body.len() - 8);
    assert!(std::str::from_utf8(&body[8..]).is_ok_and(|s| !s.is_empty()));
}

/// A factory of objects, for attacks on exported-object handles.
#[ipc_core::expose]
pub trait Tokens {
    /// A new object, exported to the caller.
    async fn token(&self) -> ipc_core::Remote<GreeterProxy>;
}

struct TokenMaker;

impl Tokens for TokenMaker {
    async fn token(&self) -> ipc_core::Remote<GreeterProxy> {
        ipc_core::Remote::new(GreeterServer::new(Hello))
    }
}

/// Handle 4 in the scene: the `Tokens` factory.
const TOKENS: u32 = 4;
const KIND_STREAM_ITEM: u8 = 6;
const KIND_STREAM_END: u8 = 7;
const KIND_CREDIT: u8 = 8;
const KIND_RELEASE: u8 = 9;
const STATUS_UNKNOWN_OBJECT: u8 = 16;

/// Asks the factory for an object; its handle.
async fn exported_handle(raw: &mut Raw, id: u64) -> u32 {
    let reply = raw.call(id, TOKENS, 0, &[]).await;
    let (status, body) = reply.response();
    assert_eq!(status, STATUS_OK, "{reply:?}");
    let handle = u32::from_le_bytes(body.try_into().unwrap());
    assert!(
        handle >= 1 << 31,
        "exported handles start at 2^31: {handle}"
    );
    handle
}

#[tokio::test]
async fn stream_frames_for_streams_that_were_never_opened_close_the_connection() {
    within(20, async {
        for frame in [
            raw::frame(KIND_STREAM_ITEM, 99, &7u64.to_le_bytes()),
            raw::frame(KIND_STREAM_END, 99, &[0]),
            raw::frame(KIND_CREDIT, 99, &4096u32.to_le_bytes()),
        ] {
            let scene = scene(|b| b.expose(TokensServer::new(TokenMaker))).await;
            let mut raw = Raw::handshaken(&scene.server).await;
            raw.assert_add_works(1, 1).await;
            raw.send(&frame).await;
            raw.expect_closed().await;
            scene.assert_unharmed().await;
        }
    })
    .await;
}

#[tokio::test]
async fn releasing_an_object_never_exported_closes_the_connection() {
    within(10, async {
        let scene = scene(|b| b.expose(TokensServer::new(TokenMaker))).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        raw.send(&raw::frame(KIND_RELEASE, (1 << 31) + 5, &[]))
            .await;
        raw.expect_closed().await;
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn releasing_an_object_twice_closes_the_connection_and_a_released_one_is_unknown() {
    within(10, async {
        let scene = scene(|b| b.expose(TokensServer::new(TokenMaker))).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        let handle = exported_handle(&mut raw, 1).await;
        // Its method 0 is `greet(String)`.
        let reply = raw.call(2, handle, 0, &raw::string("Eve")).await;
        assert_eq!(reply.response().0, STATUS_OK);
        assert_eq!(scene.server.stats().remote_objects, 1);
        raw.send(&raw::frame(KIND_RELEASE, u64::from(handle), &[]))
            .await;
        // Released: calls to it are refused, typed; the connection goes on.
        let reply = raw.call(3, handle, 0, &raw::string("Eve")).await;
        assert_eq!(reply.response().0, STATUS_UNKNOWN_OBJECT, "{reply:?}");
        assert_eq!(scene.server.stats().remote_objects, 0);
        raw.assert_add_works(4, 1).await;
        // Twice: the peer is broken.
        raw.send(&raw::frame(KIND_RELEASE, u64::from(handle), &[]))
            .await;
        raw.expect_closed().await;
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn request_ids_that_do_not_increase_close_the_connection() {
    within(10, async {
        let scene = scene(|b| b).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        raw.assert_add_works(5, 1).await;
        raw.send(&raw::request(5, 1, 0, &raw::add_args(1, 1))).await;
        raw.expect_closed().await;
        scene.assert_unharmed().await;
    })
    .await;
}

#[tokio::test]
async fn a_peer_that_never_releases_cannot_export_past_the_objects_limit() {
    within(10, async {
        let scene = scene(|b| b.max_objects(3).expose(TokensServer::new(TokenMaker))).await;
        let mut raw = Raw::handshaken(&scene.server).await;
        for id in 1..=3 {
            exported_handle(&mut raw, id).await;
        }
        let reply = raw.call(4, TOKENS, 0, &[]).await;
        assert_eq!(reply.response().0, 24, "past the limit: {reply:?}");
        assert_eq!(scene.server.stats().remote_objects, 3);
        drop(raw);
        eventually(5, "the objects are released with the connection", || {
            scene.server.stats().remote_objects == 0
        })
        .await;
        scene.assert_unharmed().await;
    })
    .await;
}
