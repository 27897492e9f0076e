//! Writes the `seed-*` inputs of `server_session` and `server_handshake`
//! into `corpus/<target>/`: small, valid conversations with the objects of
//! `ipc_fuzz` (every method, every frame kind), and the attacks issues 10
//! and 11 name. Run from the `fuzz` folder:
//!
//! ```sh
//! cargo run --example make_seeds
//! ```

use std::path::Path;

use ipc_core::wire::encode_to_vec;
use ipc_fuzz::frames::*;
use ipc_fuzz::{MAX_BLOB, PANICKING_COUNT};
use serde::Serialize;

/// `Target`'s method indices (declaration order).
const ADD: u16 = 0;
const ECHO: u16 = 1;
const COUNT: u16 = 2;
const BLOBS: u16 = 3;
const ENDLESS: u16 = 4;
const OPEN: u16 = 5;
const CELLS: u16 = 6;
const NOTIFY: u16 = 7;
const DRAIN: u16 = 8;
const BOOM: u16 = 9;
const STALL: u16 = 10;
const POKE: u16 = 11;
/// `Cell`'s.
const BUMP: u16 = 0;
const CRACK: u16 = 1;
/// The handle of `Target` once the harness has looked it up.
const TARGET: u32 = ipc_fuzz::TARGET_HANDLE;

fn args<T: Serialize>(value: &T) -> Vec<u8> {
    encode_to_vec(value).expect("seed arguments encode")
}

// A seed's request `n` goes out as id `n + 1`: the harness's own lookup of
// `Target` is request 1. Frames that carry the *server's* request ids
// (answers to callbacks, items of the stream the server consumes) use them
// as they are.

/// The seed's request `n` to `object`.
fn call(n: u64, object: u32, method: u16, a: &[u8]) -> Vec<u8> {
    request(n + 1, object, method, a)
}

/// As [`call`], with a deadline, to `Target`.
fn call_with_deadline(n: u64, method: u16, deadline_ms: u32) -> Vec<u8> {
    ipc_fuzz::frames::call(false, n + 1, TARGET, method, deadline_ms, &args(&()))
}

/// As [`call`], oneway, to `Target`.
fn call_oneway(n: u64, method: u16, a: &[u8]) -> Vec<u8> {
    ipc_fuzz::frames::call(true, n + 1, TARGET, method, 0, a)
}

/// Credit for the stream the seed's request `n` opened.
fn grant(n: u64, bytes: u32) -> Vec<u8> {
    credit(n + 1, bytes)
}

/// Cancels the seed's request `n`.
fn cancel(n: u64) -> Vec<u8> {
    frame(CANCEL, n + 1, &[])
}

fn release(handle: u32) -> Vec<u8> {
    frame(RELEASE, u64::from(handle), &[])
}

/// The harness's lookup of `Target`, for seeds that send their own Hello.
fn lookup() -> Vec<u8> {
    request(1, 0, 0, &ipc_fuzz::lookup_args())
}

fn write(dir: &Path, name: &str, flags: u8, frames: &[Vec<u8>]) {
    let mut bytes = vec![flags];
    for f in frames {
        bytes.extend_from_slice(f);
    }
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn session_seeds(dir: &Path) {
    let none = args(&());
    write(dir, "add", 0, &[call(1, TARGET, ADD, &args(&(2u64, 3u64)))]);
    write(
        dir,
        "system",
        0,
        &[
            call(1, 0, 1, &none),
            call(
                2,
                0,
                0,
                &args(&("Target", "Target", 0u64, Vec::<String>::new())),
            ),
            call(3, 0, 7, &none),
            call(4, 9, 0, &none),
        ],
    );
    write(
        dir,
        "streams",
        0,
        &[
            call(1, TARGET, COUNT, &args(&(5u64,))),
            grant(1, 4096),
            call(2, TARGET, COUNT, &args(&(PANICKING_COUNT,))),
            grant(2, 4096),
            call(3, TARGET, COUNT, &args(&(0u64,))),
            grant(3, 1),
        ],
    );
    write(
        dir,
        "endless-cancel",
        0,
        &[
            call(1, TARGET, ENDLESS, &none),
            grant(1, 1000),
            grant(1, 1000),
            cancel(1),
            grant(1, 10),
            call(2, TARGET, ENDLESS, &none),
            grant(2, u32::MAX),
        ],
    );
    write(
        dir,
        "endless-unread",
        0x02,
        &[
            call(1, TARGET, ENDLESS, &none),
            grant(1, u32::MAX),
            grant(1, u32::MAX),
        ],
    );
    write(
        dir,
        "credit-before-call",
        0,
        &[grant(1, 4096), call(1, TARGET, COUNT, &args(&(3u64,)))],
    );
    write(
        dir,
        "objects",
        0,
        &[
            call(1, TARGET, OPEN, &args(&(7u64,))),
            call(2, EXPORT_BASE, BUMP, &none),
            call(3, EXPORT_BASE, CRACK, &none),
            release(EXPORT_BASE),
            call(4, EXPORT_BASE, BUMP, &none),
            release(EXPORT_BASE),
        ],
    );
    write(
        dir,
        "cells",
        // In pieces: the producer runs (and exports) between the frames.
        0x04,
        &[
            call(1, TARGET, CELLS, &args(&(3u64,))),
            grant(1, 4096),
            release(EXPORT_BASE + 1),
            call(2, EXPORT_BASE + 2, BUMP, &none),
            call(3, TARGET, CELLS, &args(&(1000u64,))),
            grant(3, 40),
            cancel(3),
        ],
    );
    write(
        dir,
        "callback",
        0,
        &[
            call(1, TARGET, NOTIFY, &args(&(EXPORT_BASE, 9u64))),
            // The server's own first request (id 1) is the callback call.
            outcome(RESPONSE, 1, 0, &42u64.to_le_bytes()),
            call(2, TARGET, NOTIFY, &args(&(EXPORT_BASE + 1, 10u64))),
            outcome(RESPONSE, 2, 20, &args(&"listener broke")),
            call(3, TARGET, NOTIFY, &args(&(EXPORT_BASE + 2, 11u64))),
        ],
    );
    write(
        dir,
        "consumer",
        0,
        &[
            call(1, TARGET, DRAIN, &args(&(EXPORT_BASE, 5u64))),
            // The server calls `feed` (its request 1) and grants credit: the
            // stream opens, three items, the end.
            outcome(RESPONSE, 1, 0, &[]),
            frame(STREAM_ITEM, 1, &0u64.to_le_bytes()),
            frame(STREAM_ITEM, 1, &1u64.to_le_bytes()),
            frame(STREAM_ITEM, 1, &2u64.to_le_bytes()),
            outcome(STREAM_END, 1, 0, &[]),
            call(2, TARGET, DRAIN, &args(&(EXPORT_BASE + 1, 1u64))),
            outcome(RESPONSE, 2, 0, &[]),
            frame(STREAM_ITEM, 2, &7u64.to_le_bytes()),
            frame(STREAM_ITEM, 2, &8u64.to_le_bytes()),
            outcome(STREAM_END, 2, 21, &[]),
        ],
    );
    write(
        dir,
        "consumer-overrun",
        0,
        &[
            call(1, TARGET, DRAIN, &args(&(EXPORT_BASE, 1000u64))),
            outcome(RESPONSE, 1, 0, &[]),
            // The server grants 4096 bytes (its `stream_window`): the third
            // item comes with no credit left, which closes the connection.
            frame(STREAM_ITEM, 1, &vec![0u8; 3000]),
            frame(STREAM_ITEM, 1, &vec![0u8; 3000]),
            frame(STREAM_ITEM, 1, &vec![0u8; 3000]),
        ],
    );
    write(
        dir,
        "panics-and-cancels",
        0,
        &[
            call(1, TARGET, BOOM, &args(&("bang",))),
            call_with_deadline(2, STALL, 5),
            call(3, TARGET, STALL, &none),
            cancel(3),
            cancel(3),
            call_oneway(4, POKE, &args(&(1u64,))),
            call_oneway(5, BOOM, &args(&("quiet",))),
            call(6, TARGET, STALL, &none),
        ],
    );
    let mut limits = Vec::new();
    let mut id = 0;
    for _ in 0..17 {
        id += 1;
        limits.push(call(id, TARGET, STALL, &none));
    }
    for _ in 0..5 {
        id += 1;
        limits.push(call(id, TARGET, ENDLESS, &none));
    }
    for _ in 0..9 {
        id += 1;
        limits.push(call(id, TARGET, OPEN, &args(&(0u64,))));
    }
    write(dir, "limits", 0, &limits);
    write(
        dir,
        "small-limit",
        0x08,
        &[
            call(1, TARGET, ECHO, &args(&(vec![1u8; 2000],))),
            call(2, TARGET, BLOBS, &args(&(3u64, 2000u32))),
            grant(2, 100_000),
            call(3, TARGET, BLOBS, &args(&(3u64, MAX_BLOB))),
            grant(3, 1),
        ],
    );
    write(
        dir,
        "chunked",
        0x04,
        &[
            call(1, TARGET, COUNT, &args(&(20u64,))),
            grant(1, 64),
            cancel(1),
            call(2, TARGET, CELLS, &args(&(2u64,))),
            grant(2, 4096),
        ],
    );
    write(
        dir,
        "half-close",
        0x10,
        &[
            call(1, TARGET, STALL, &none),
            call(2, TARGET, ENDLESS, &none),
            grant(2, 4096),
        ],
    );
    write(
        dir,
        "own-hello",
        0x01,
        &[
            hello(2, 4096, &[0]),
            lookup(),
            call(1, TARGET, ADD, &args(&(1u64, 1u64))),
        ],
    );
    // Each of these breaks the protocol: the server closes.
    write(dir, "second-hello", 0x20, &[hello(2, 4096, &[])]);
    write(
        dir,
        "auth-after",
        0,
        &[frame(AUTH_PROOF, 0, &[0; 32]), frame(AUTH_OK, 0, &[])],
    );
    write(dir, "credit-unknown", 0, &[grant(99, 1)]);
    write(dir, "item-unknown", 0, &[frame(STREAM_ITEM, 5, &[1])]);
    write(
        dir,
        "ids-decrease",
        0,
        &[
            call(5, TARGET, ADD, &args(&(1u64, 2u64))),
            call(4, TARGET, ADD, &args(&(1u64, 2u64))),
        ],
    );
    write(
        dir,
        "go-away",
        0,
        &[
            frame(GO_AWAY, 0, &7u64.to_le_bytes()),
            call(1, TARGET, ADD, &args(&(1u64, 2u64))),
        ],
    );
}

fn handshake_seeds(dir: &Path) {
    const KEYED: u8 = 0x01;
    let offer = |mode: u8| mode << 1;
    let add = [lookup(), call(1, TARGET, ADD, &args(&(2u64, 3u64)))].concat();
    let mut nonce_and_proof = vec![1u8];
    nonce_and_proof.extend_from_slice(&[7; 64]);
    let mut nonce = vec![1u8];
    nonce.extend_from_slice(&[7; 32]);

    write(
        dir,
        "keyed-wrong-proof",
        KEYED | offer(0),
        &[frame(AUTH_PROOF, 0, &[0; 32])],
    );
    write(
        dir,
        "keyed-request-for-proof",
        KEYED | offer(0),
        std::slice::from_ref(&add),
    );
    write(
        dir,
        "keyed-short-proof",
        KEYED | offer(0),
        &[frame(AUTH_PROOF, 0, &[0; 31])],
    );
    write(dir, "keyed-silent", KEYED | offer(0), &[]);
    write(
        dir,
        "keyed-no-offer",
        KEYED | offer(1),
        std::slice::from_ref(&add),
    );
    write(
        dir,
        "keyed-offer-with-proof",
        KEYED | offer(2),
        &[
            hello(2, 4096, &nonce_and_proof),
            frame(AUTH_PROOF, 0, &[0; 32]),
        ],
    );
    write(
        dir,
        "keyed-bad-fields",
        KEYED | offer(2),
        &[hello(2, 4096, &[1, 2, 3])],
    );
    write(
        dir,
        "keyed-old-version",
        KEYED | offer(2),
        &[hello(1, 4096, &nonce)],
    );
    write(
        dir,
        "keyed-early-frames",
        KEYED | offer(3),
        std::slice::from_ref(&add),
    );
    write(dir, "keyed-early-partial", KEYED | offer(3), &[vec![0x10]]);
    write(dir, "keyed-proof-then-nothing", KEYED | offer(3), &[]);
    write(
        dir,
        "keyed-chunked",
        KEYED | offer(0) | 0x08,
        &[frame(AUTH_PROOF, 0, &[9; 32]), add.clone()],
    );
    write(
        dir,
        "open-key-offered",
        offer(0),
        std::slice::from_ref(&add),
    );
    write(
        dir,
        "open-key-offered-proof",
        offer(3),
        std::slice::from_ref(&add),
    );
    write(dir, "open-plain", offer(1), std::slice::from_ref(&add));
    write(
        dir,
        "open-own-hello",
        offer(2),
        &[hello(2, 4096, &[0]), add.clone()],
    );
    write(
        dir,
        "open-own-hello-key",
        offer(2),
        &[hello(2, 4096, &nonce), add.clone()],
    );
    write(
        dir,
        "open-bad-magic",
        offer(2),
        &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()],
    );
    write(
        dir,
        "open-oversized-hello",
        offer(2),
        &[hello(2, 4096, &[0; 300])],
    );
    write(
        dir,
        "open-request-first",
        offer(2),
        std::slice::from_ref(&add),
    );
    write(
        dir,
        "open-go-away-first",
        offer(2),
        &[frame(GO_AWAY, 1, &[])],
    );
}

fn main() {
    for (target, make) in [
        ("server_session", session_seeds as fn(&Path)),
        ("server_handshake", handshake_seeds),
    ] {
        let dir = Path::new("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("the corpus folder can be made");
        make(&dir);
        println!("wrote the seeds of {target} in {}", dir.display());
    }
}
