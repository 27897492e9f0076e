//! The server's side of the handshake fed the fuzzer's bytes: Hellos with
//! malformed authentication fields, proofs, frames sent too early.
//!
//! Two servers per process expose `ipc_fuzz::Target`, with a short
//! handshake timeout (100 ms): one requires a shared key, one has none.
//! For each input the harness opens a fresh in-memory connection to one of
//! them, writes what the input asks for, then reads (and discards) until
//! the server closes, and checks:
//!
//! - nothing panicked in the server (libFuzzer's panic hook aborts);
//! - no handler ran on the keyed server: the fuzzer cannot forge a proof.
//!   Nor on the keyless one unless the connection opened with a valid
//!   keyless Hello (a client offering a key to a server without one is
//!   refused: no silent downgrade);
//! - a connection that cannot be established is closed by the server within
//!   the handshake timeout (plus 10 ms), whatever arrives or does not;
//! - once the client's end is closed, the server gives back every counter.
//!
//! Input: the first byte is a set of flags, the rest is "the input".
//!
//! | bits | meaning |
//! |---|---|
//! | 0x01 | the server with the key (else the one without) |
//! | 0x06 | what the harness sends, `(flags >> 1) & 3`: 0 a Hello offering a key, then the input; 1 a Hello without authentication fields, then the input; 2 only the input (its own Hello, or none); 3 a Hello offering a key, then, having read the server's Hello, the correct AuthProof (computed from the README's formula) and the input in the same write (frames before AuthOk, which the server must refuse) |
//! | 0x08 | write in pieces of 1 to 13 bytes, letting the server run between (not for the proof and what follows it in mode 3) |
//!
//! In mode 3 the harness also checks the server's proof against the
//! README's formula, and, when the input is empty, that AuthOk follows.
//! All waits are in the paused runtime's virtual time (see `ipc_fuzz`).

#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use hmac::{Hmac, KeyInit, Mac};
use ipc_core::wire::{self, Message};
use ipc_core::{AuthKey, ServerHandle};
use ipc_fuzz::{Drained, Objects, frames};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tokio_util::codec::Decoder;

/// The keyed server's key.
const KEY: &[u8] = b"fuzzing key: sixteen bytes and more";
/// Both servers' handshake timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(100);
/// How much later than the handshake timeout a connection may close.
const SLACK: Duration = Duration::from_millis(10);
/// Nothing from the server for this long (virtual time): it has done all it
/// can without a timer.
const QUIET: Duration = Duration::from_millis(20);
/// The client's nonce when the harness offers a key.
const CLIENT_NONCE: [u8; 32] = [0x5a; 32];
/// The frame limit the harness announces.
const MAX_FRAME: u32 = 64 * 1024;

struct Server {
    handle: ServerHandle,
    objects: Objects,
}

fn server(keyed: bool) -> &'static Server {
    static KEYED: OnceLock<Server> = OnceLock::new();
    static OPEN: OnceLock<Server> = OnceLock::new();
    let cell = if keyed { &KEYED } else { &OPEN };
    cell.get_or_init(|| {
        let objects = Objects::default();
        let handle = ipc_fuzz::start_server(objects.clone(), |b| {
            let b = b
                .handshake_timeout(HANDSHAKE_TIMEOUT)
                .max_frame_size(64 * 1024)
                .write_buffer(16 * 1024);
            if keyed {
                b.auth_key(AuthKey::new(KEY).expect("the key is long enough"))
            } else {
                b
            }
        });
        Server { handle, objects }
    })
}

/// `role`'s proof, as the README's "Authentication" section defines it:
/// HMAC-SHA256(key, "ipc-auth" ‖ version u16 LE ‖ role ‖ client nonce ‖ server nonce).
fn proof(role: u8, client: &[u8; 32], server: &[u8; 32]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY).expect("HMAC takes any key");
    mac.update(b"ipc-auth");
    mac.update(&2u16.to_le_bytes());
    mac.update(&[role]);
    mac.update(client);
    mac.update(server);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Whether `bytes` open with a Hello a keyless server accepts: the first
/// frame (within the handshake's 256-byte limit) is a Hello of version 2
/// whose authentication fields are absent or `00`.
fn opens_keyless(bytes: &[u8]) -> bool {
    let mut codec = wire::codec(wire::HANDSHAKE_FRAME_MAX);
    let mut buf = BytesMut::from(bytes);
    let Ok(Some(first)) = codec.decode(&mut buf) else {
        return false;
    };
    matches!(
        wire::parse(first.freeze()),
        Ok(Message::Hello(h)) if h.version == wire::PROTOCOL_VERSION && (h.rest.is_empty() || h.rest[..] == [0])
    )
}

fn offer_hello() -> Vec<u8> {
    let mut auth = vec![1u8];
    auth.extend_from_slice(&CLIENT_NONCE);
    frames::hello(2, MAX_FRAME, &auth)
}

/// Mode 3: reads the server's Hello and sends the proof it asks for, with
/// `tail` in the same write. `Some(true)` if the key exchange succeeded
/// (both proofs are good), `Some(false)` if the server did not ask for a
/// proof (it has no key), `None` if the connection ended.
async fn authenticate(
    read: &mut ipc_fuzz::ClientRead,
    write: &mut ipc_fuzz::ClientWrite,
    keyed: bool,
    tail: &[u8],
) -> Option<bool> {
    let answer = tokio::time::timeout(QUIET, ipc_fuzz::read_frame(read, wire::HANDSHAKE_FRAME_MAX))
        .await
        .ok()??;
    let Ok(Message::Hello(hello)) = wire::parse(answer.into()) else {
        panic!("the server did not answer a Hello with a Hello");
    };
    let rest = &hello.rest[..];
    if !keyed {
        // "A server without a key answers a client that offers one with a
        // Hello ending in `00` and closes" (no fields at all also says "no key").
        assert!(
            rest.is_empty() || rest == [0],
            "a keyless server answered a key offer with authentication fields {rest:02x?}"
        );
        ipc_fuzz::send(write, tail, false).await;
        return Some(false);
    }
    assert!(
        rest.len() == 65 && rest[0] == 1,
        "the keyed server's Hello has no nonce and proof: {rest:02x?}"
    );
    let mut server_nonce = [0u8; 32];
    server_nonce.copy_from_slice(&rest[1..33]);
    assert_eq!(
        rest[33..],
        proof(b'S', &CLIENT_NONCE, &server_nonce),
        "the server's proof is not the README's HMAC"
    );
    let mut bytes = frames::frame(
        frames::AUTH_PROOF,
        0,
        &proof(b'C', &CLIENT_NONCE, &server_nonce),
    );
    bytes.extend_from_slice(tail);
    // One write: the frames after the proof are in the server's pipe when
    // it reads the proof.
    if !ipc_fuzz::send(write, &bytes, false).await {
        return None;
    }
    if tail.is_empty() {
        let ok = tokio::time::timeout(QUIET, ipc_fuzz::read_frame(read, wire::HANDSHAKE_FRAME_MAX))
            .await
            .ok()
            .flatten();
        let ok = ok.map(|f| wire::parse(f.into()));
        assert!(
            matches!(ok, Some(Ok(Message::AuthOk))),
            "a correct proof, alone, was not accepted with AuthOk: {ok:?}"
        );
    }
    Some(true)
}

async fn handshake(keyed: bool, mode: u8, chunked: bool, input: &[u8]) {
    let server = server(keyed);
    let calls_before = server.objects.calls.load(Ordering::Relaxed);
    let start = tokio::time::Instant::now();
    let (mut read, mut write) = ipc_fuzz::connect(&server.handle);

    // Whether the connection may legitimately be established, and whether
    // handlers may then run.
    let (may_open, may_call) = match mode {
        0 => {
            let bytes = [offer_hello(), input.to_vec()].concat();
            ipc_fuzz::send(&mut write, &bytes, chunked).await;
            (false, false)
        }
        1 => {
            let bytes = [frames::hello(2, MAX_FRAME, &[]), input.to_vec()].concat();
            ipc_fuzz::send(&mut write, &bytes, chunked).await;
            (!keyed, !keyed)
        }
        2 => {
            ipc_fuzz::send(&mut write, input, chunked).await;
            let keyless = !keyed && opens_keyless(input);
            (keyless, keyless)
        }
        _ => {
            ipc_fuzz::send(&mut write, &offer_hello(), chunked).await;
            let opened = authenticate(&mut read, &mut write, keyed, input).await;
            // Open only with good proofs and nothing sent before AuthOk;
            // even then nothing was sent to call.
            (opened == Some(true) && input.is_empty(), false)
        }
    };

    let bound = start + HANDSHAKE_TIMEOUT + SLACK;
    let ended = tokio::time::timeout_at(
        bound,
        ipc_fuzz::drain(&mut read, QUIET + HANDSHAKE_TIMEOUT, usize::MAX),
    )
    .await;
    let closed = matches!(ended, Ok(Drained::Closed));
    if !may_open {
        assert!(
            closed,
            "the server kept a connection that cannot be established open past its handshake \
             timeout (keyed: {keyed}, mode: {mode})"
        );
    }
    if !may_call {
        let calls = server.objects.calls.load(Ordering::Relaxed) - calls_before;
        assert_eq!(
            calls, 0,
            "{calls} handler(s) ran on a connection that never authenticated (keyed: {keyed}, mode: {mode})"
        );
    }
    drop((read, write));
    ipc_fuzz::assert_settles(&server.handle).await;
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let keyed = flags & 0x01 != 0;
    let mode = (flags >> 1) & 3;
    let chunked = flags & 0x08 != 0;
    // Both servers start before the first input runs (outside `block_on`).
    let _ = server(keyed);
    ipc_fuzz::run(handshake(keyed, mode, chunked, input));
});
