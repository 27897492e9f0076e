//! The input is the byte stream a server reads from one connection.
//!
//! It goes through the frame codec the server uses (64 KiB limit) until the first
//! codec error (where the server closes the connection), every frame through
//! `wire::parse`, and every request's arguments, response's or stream end's
//! body and stream item through `wire::decode` into a few representative
//! types. Nothing may panic, and a body that decodes must re-encode to
//! exactly the same bytes (the encoding is canonical, so two peers can never
//! disagree about a value). Frames with no opaque payload (Hello, Cancel,
//! GoAway, Credit, Release, AuthProof, AuthOk, and responses and stream ends
//! whose body is empty or a `String`) are built again with `FrameBuf`, the
//! encoder peers send with, and must come out byte for byte the same.
//!
//! The stream is decoded twice, whole and in small chunks, and both must yield
//! the same frames and the same outcome.

#![no_main]

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use ipc_core::wire::{self, FrameBuf, Message};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio_util::codec::Decoder;

/// The server's frame limit in this target.
const MAX_FRAME: usize = 64 * 1024;

/// A user-defined argument type: derived impls, enums with every variant shape.
#[derive(Debug, Serialize, Deserialize)]
enum Command {
    Ping,
    Put {
        key: String,
        value: Vec<u8>,
        ttl: Option<u32>,
    },
    Batch(Vec<(u32, Option<String>)>),
    Scale(f64, i8),
}

/// A recursive argument type: `wire::decode` must refuse values nested too
/// deeply instead of recursing until the stack overflows.
#[derive(Debug, Serialize, Deserialize)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
    Pair(Box<Tree>, Box<Tree>),
}

/// A struct with a map (maps accept keys in any order, so no re-encode check).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Record {
    name: String,
    flags: BTreeMap<String, u64>,
    command: Command,
    done: bool,
    initial: char,
}

/// Decodes `bytes` as `T`; if that works, re-encoding must give `bytes` back.
fn canonical<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    if let Ok(value) = wire::decode::<T>(bytes) {
        let again = wire::encode_to_vec(&value).expect("a decoded value re-encodes");
        assert_eq!(again, bytes, "decoding then encoding changed the bytes");
    }
}

/// The frame body `frame` (what follows the length prefix) built again with
/// the encoder a peer sends with; `None` for a message whose payload is an
/// opaque body (requests, items), which `exercise` checks value by value.
///
/// Hello, AuthProof and AuthOk carry id 0 on the wire and their receivers
/// read no id, so they are compared with the id the encoder writes (0)
/// patched to the frame's.
fn rebuilt(message: &Message, frame: &[u8]) -> Option<Vec<u8>> {
    let built = match message {
        Message::Hello(h) if h.version == wire::PROTOCOL_VERSION => {
            FrameBuf::hello(h.max_frame_size as usize, &h.rest)
        }
        Message::Cancel { id } => FrameBuf::cancel(*id),
        Message::GoAway {
            reason,
            last_request: None,
        } => FrameBuf::go_away(*reason),
        Message::GoAway {
            reason,
            last_request: Some(last),
        } => FrameBuf::go_away_after(*reason, *last),
        Message::Credit { id, bytes } => FrameBuf::credit(*id, *bytes),
        Message::Release { handle } => FrameBuf::release(*handle),
        Message::AuthProof { proof } => FrameBuf::auth_proof(proof),
        Message::AuthOk => FrameBuf::auth_ok(),
        Message::Response { id, status, body } | Message::StreamEnd { id, status, body } => {
            let is_end = matches!(message, Message::StreamEnd { .. });
            let mut f = match (body.is_empty(), wire::decode::<String>(body)) {
                (true, _) if is_end => FrameBuf::stream_end(*id, *status, &()),
                (true, _) => FrameBuf::response_empty(*status),
                (false, Ok(detail)) if is_end => {
                    FrameBuf::stream_end(*id, *status, detail.as_str())
                }
                (false, Ok(detail)) => {
                    FrameBuf::response(*status, detail.as_str(), wire::MAX_FRAME_SIZE_CAP).ok()?
                }
                (false, Err(_)) => return None,
            };
            f.set_id(*id);
            f
        }
        _ => return None,
    };
    let mut bytes = built.into_unchecked()[wire::LENGTH_PREFIX..].to_vec();
    if matches!(
        message,
        Message::Hello(_) | Message::AuthProof { .. } | Message::AuthOk
    ) {
        bytes[1..wire::HEADER_LEN].copy_from_slice(&frame[1..wire::HEADER_LEN]);
    }
    Some(bytes)
}

fn exercise(message: Message, frame: &[u8]) {
    if let Some(again) = rebuilt(&message, frame) {
        assert_eq!(
            again, frame,
            "parsing then building the frame changed it: {message:?}"
        );
    }
    match message {
        Message::Request(r) => {
            canonical::<(i64, i64)>(&r.args);
            canonical::<(String,)>(&r.args);
            canonical::<(Vec<u8>,)>(&r.args);
            canonical::<(Vec<String>, Option<u64>)>(&r.args);
            canonical::<(Command,)>(&r.args);
            // The system object's `resolve(name, trait_name, fingerprint, signatures)`.
            canonical::<(String, String, u64, Vec<String>)>(&r.args);
            canonical::<()>(&r.args);
            canonical::<(Tree,)>(&r.args);
            let _ = wire::decode::<(Record,)>(&r.args);
            // Bytes decoded from a frame are views of it, not copies (small
            // ones, under 4 KiB, are copied on purpose).
            if let Ok((b,)) = wire::decode_shared::<(ipc_core::Bytes,)>(&r.args) {
                let frame = r.args.as_ptr_range();
                assert!(
                    b.len() < 4096 || frame.contains(&b.as_ptr()),
                    "shared bytes were copied"
                );
                let again = wire::encode_to_vec(&(b,)).expect("a decoded value re-encodes");
                assert_eq!(again, r.args, "decoding then encoding changed the bytes");
            }
        }
        Message::Response { body, .. } | Message::StreamEnd { body, .. } => {
            canonical::<String>(&body);
            canonical::<(u64, u64)>(&body);
            canonical::<(u64, u64, String)>(&body);
        }
        Message::StreamItem { item, .. } => {
            canonical::<u64>(&item);
            canonical::<Vec<u8>>(&item);
            canonical::<Result<u64, String>>(&item);
            canonical::<Command>(&item);
        }
        Message::Release { handle } => {
            assert_eq!(
                u64::from(handle),
                u64::from_le_bytes(frame[1..9].try_into().expect("an id"))
            );
        }
        // Checked by `rebuilt`; nothing more in them.
        Message::Hello(_)
        | Message::Cancel { .. }
        | Message::GoAway { .. }
        | Message::Credit { .. }
        | Message::AuthProof { .. }
        | Message::AuthOk => {}
        // A kind added to `ipc-core` later: parsing it must still not panic.
        _ => {}
    }
}

/// Runs the codec over `chunks` (`total` bytes in all) as a server would: frames
/// until the first error. Returns the frames and whether the stream ended in an
/// error.
fn frames<'a>(chunks: impl Iterator<Item = &'a [u8]>, total: usize) -> (Vec<Bytes>, bool) {
    let mut codec = wire::codec(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME, "frame over the limit");
                    out.push(frame.freeze());
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        // The buffer is bounded by what arrived and one frame, whatever a
        // length prefix claims.
        assert!(
            buf.capacity() <= 2 * (MAX_FRAME + wire::LENGTH_PREFIX + total),
            "buffer grew to {} bytes",
            buf.capacity()
        );
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let (whole, whole_err) = frames(std::iter::once(data), data.len());

    // Split into chunks of 1..=13 bytes, sizes derived from the input itself.
    let mut seed = data.len() as u32 | 1;
    let mut rest = data;
    let chunked = std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (1 + seed % 13) as usize;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        Some(head)
    });
    let (pieces, pieces_err) = frames(chunked, data.len());
    assert_eq!(whole, pieces, "chunking changed the frames");
    assert_eq!(whole_err, pieces_err, "chunking changed the outcome");

    for frame in whole {
        if let Ok(message) = wire::parse(frame.clone()) {
            exercise(message, &frame);
        }
    }
});
