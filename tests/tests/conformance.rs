//! The wire-protocol conformance test: an independent implementation of the
//! README's "Wire protocol" section (protocol version 2), checked against the
//! real server.
//!
//! Everything that goes on the wire here is built, and everything that comes
//! back is parsed, by the small encoder and decoder in this file, written from
//! the README alone: frames, the handshake, bincode 2 with fixed-width
//! little-endian integers, fingerprints and signatures, the directory layout,
//! streams and their credit, remote-object handles. Nothing from
//! `ipc_core::wire` (or any other `ipc_core` encoder) is used; `ipc_core` only
//! *starts* servers, from traits defined here.
//!
//! The README section is the specification: a change to it must keep this
//! file passing (change the README and this file together), and a server
//! change that breaks this file breaks the protocol.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_core::{Remote, ServerBuilder, ServerHandle, Streaming, expose};
use ipc_tests::{eventually, within};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

// ---------------------------------------------------------------------------
// Bodies: bincode 2, fixed-width little-endian integers ("Bodies" table)
// ---------------------------------------------------------------------------

/// A value written per the README's "Bodies" table.
trait Enc {
    fn enc(&self, out: &mut Vec<u8>);
}

/// A value read per the README's "Bodies" table.
trait Dec: Sized {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String>;
}

/// The unread rest of a body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("{n} bytes wanted, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
}

/// Integers and floats: their width, little-endian.
macro_rules! le_codec {
    ($($t:ty),*) => {$(
        impl Enc for $t {
            fn enc(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
        impl Dec for $t {
            fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
                let bytes = r.take(std::mem::size_of::<$t>())?;
                Ok(<$t>::from_le_bytes(bytes.try_into().map_err(|_| "width".to_string())?))
            }
        }
    )*};
}
le_codec!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

/// `usize` as 8 bytes.
impl Enc for usize {
    fn enc(&self, out: &mut Vec<u8>) {
        (*self as u64).enc(out);
    }
}

impl Dec for usize {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        usize::try_from(u64::dec(r)?).map_err(|e| e.to_string())
    }
}

/// One byte, 0 or 1; anything else does not decode.
impl Enc for bool {
    fn enc(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Dec for bool {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        match u8::dec(r)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("a bool is 0 or 1, not {b}")),
        }
    }
}

/// Its UTF-8 encoding, 1–4 bytes, no length.
impl Enc for char {
    fn enc(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 4];
        out.extend_from_slice(self.encode_utf8(&mut buf).as_bytes());
    }
}

impl Dec for char {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        let first =
            *r.0.first()
                .ok_or_else(|| "a char wanted, no bytes left".to_string())?;
        let width = match first {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            b => return Err(format!("{b:#04x} does not start a UTF-8 character")),
        };
        let s = std::str::from_utf8(r.take(width)?).map_err(|e| e.to_string())?;
        s.chars().next().ok_or_else(|| "empty char".to_string())
    }
}

/// A `u64` byte count, then the bytes.
impl Enc for str {
    fn enc(&self, out: &mut Vec<u8>) {
        (self.len() as u64).enc(out);
        out.extend_from_slice(self.as_bytes());
    }
}

impl Enc for String {
    fn enc(&self, out: &mut Vec<u8>) {
        self.as_str().enc(out);
    }
}

impl Dec for String {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        let len = usize::dec(r)?;
        let bytes = r.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
    }
}

/// A `u64` item count, then the items.
impl<T: Enc> Enc for Vec<T> {
    fn enc(&self, out: &mut Vec<u8>) {
        (self.len() as u64).enc(out);
        for item in self {
            item.enc(out);
        }
    }
}

impl<T: Dec> Dec for Vec<T> {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        let count = u64::dec(r)?;
        let mut items = Vec::new();
        for _ in 0..count {
            items.push(T::dec(r)?);
        }
        Ok(items)
    }
}

/// A `u64` pair count, then key, value, key, value...
impl<K: Enc, V: Enc> Enc for BTreeMap<K, V> {
    fn enc(&self, out: &mut Vec<u8>) {
        (self.len() as u64).enc(out);
        for (k, v) in self {
            k.enc(out);
            v.enc(out);
        }
    }
}

impl<K: Dec + Ord, V: Dec> Dec for BTreeMap<K, V> {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        let count = u64::dec(r)?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let k = K::dec(r)?;
            let v = V::dec(r)?;
            map.insert(k, v);
        }
        Ok(map)
    }
}

/// `[T; N]`: the items in order, no length.
impl<T: Enc, const N: usize> Enc for [T; N] {
    fn enc(&self, out: &mut Vec<u8>) {
        for item in self {
            item.enc(out);
        }
    }
}

impl<T: Dec, const N: usize> Dec for [T; N] {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        let items = (0..N).map(|_| T::dec(r)).collect::<Result<Vec<T>, _>>()?;
        items.try_into().map_err(|_| "array length".to_string())
    }
}

/// `u8` 0 (`None`) or 1 then the value.
impl<T: Enc> Enc for Option<T> {
    fn enc(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.enc(out);
            }
        }
    }
}

impl<T: Dec> Dec for Option<T> {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        match u8::dec(r)? {
            0 => Ok(None),
            1 => Ok(Some(T::dec(r)?)),
            b => Err(format!("an Option tag is 0 or 1, not {b}")),
        }
    }
}

/// `()` and unit structs: nothing.
impl Enc for () {
    fn enc(&self, _: &mut Vec<u8>) {}
}

impl Dec for () {
    fn dec(_: &mut Reader<'_>) -> Result<Self, String> {
        Ok(())
    }
}

impl<T: Enc + ?Sized> Enc for &T {
    fn enc(&self, out: &mut Vec<u8>) {
        (**self).enc(out);
    }
}

/// Tuples and structs: the fields in order, no length.
macro_rules! tuple_codec {
    ($($name:ident)+) => {
        impl<$($name: Enc),+> Enc for ($($name,)+) {
            #[allow(non_snake_case)]
            fn enc(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.enc(out);)+
            }
        }
        impl<$($name: Dec),+> Dec for ($($name,)+) {
            fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
                Ok(($($name::dec(r)?,)+))
            }
        }
    };
}
tuple_codec!(A);
tuple_codec!(A B);
tuple_codec!(A B C);
tuple_codec!(A B C D);
tuple_codec!(A B C D E);
tuple_codec!(A B C D E F);
tuple_codec!(A B C D E F G);

/// The bytes of `v`.
fn enc<T: Enc + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.enc(&mut out);
    out
}

/// Decodes all of `bytes` as a `T`, failing the test on an error or on
/// trailing bytes.
fn dec<T: Dec>(bytes: &[u8]) -> T {
    let mut r = Reader(bytes);
    let what = std::any::type_name::<T>();
    match T::dec(&mut r) {
        Ok(v) if r.0.is_empty() => v,
        Ok(_) => panic!("{} bytes left after a {what} in {bytes:02x?}", r.0.len()),
        Err(e) => panic!("{bytes:02x?} does not decode as {what}: {e}"),
    }
}

/// A body that should be a `String` detail, for failure messages.
fn detail(body: &[u8]) -> String {
    let mut r = Reader(body);
    match String::dec(&mut r) {
        Ok(s) if r.0.is_empty() => s,
        _ if body.len() > 64 => format!("{:02x?}... ({} bytes)", &body[..64], body.len()),
        _ => format!("{body:02x?}"),
    }
}

/// Checks a body is a `String` detail (and nothing else) and returns it.
fn string_body(status: u8, body: &[u8]) -> String {
    let mut r = Reader(body);
    match String::dec(&mut r) {
        Ok(s) if r.0.is_empty() => s,
        _ => panic!("status {status}'s body is a String detail, got {body:02x?}"),
    }
}

// ---------------------------------------------------------------------------
// Fingerprints ("Fingerprint and signatures")
// ---------------------------------------------------------------------------

/// 64-bit FNV-1a over the trait name, then `|` and the signature of each
/// method in order.
fn fingerprint(trait_name: &str, signatures: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(trait_name.as_bytes());
    for s in signatures {
        eat(b"|");
        eat(s.as_bytes());
    }
    h
}

// ---------------------------------------------------------------------------
// Frames ("Frames")
// ---------------------------------------------------------------------------

const HELLO: u8 = 0;
const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const CANCEL: u8 = 3;
const GO_AWAY: u8 = 4;
const ONEWAY: u8 = 5;
const STREAM_ITEM: u8 = 6;
const STREAM_END: u8 = 7;
const CREDIT: u8 = 8;
const RELEASE: u8 = 9;

const OK: u8 = 0;
const APP_ERROR: u8 = 1;
const UNKNOWN_OBJECT: u8 = 16;
const UNKNOWN_METHOD: u8 = 17;
const TRAIT_MISMATCH: u8 = 18;
const BAD_REQUEST: u8 = 19;
const PANICKED: u8 = 20;
const SHUTTING_DOWN: u8 = 21;
const TOO_LARGE: u8 = 22;
const ENCODE_FAILED: u8 = 23;
const OVERLOADED: u8 = 24;
const CANCELLED: u8 = 25;
const DEADLINE: u8 = 26;

const MAGIC: &[u8; 4] = b"IPCR";
const VERSION: u16 = 2;
/// The smallest and largest effective frame limits.
const MIN_LIMIT: u32 = 1024;
const MAX_LIMIT: u32 = 1 << 30;
/// The frame limit these raw clients announce unless a test says otherwise.
const MINE: u32 = 1 << 20;
/// The first exported-object handle.
const EXPORTED: u32 = 1 << 31;
/// How long one read may wait before the test calls the server hung.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A whole frame: `length` (kind + id + payload), kind, id, payload.
fn frame(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(1 + 8 + payload.len()).expect("frame too long for a test");
    let mut f = length.to_le_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(&id.to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// A Hello: magic, version, max frame size, then `extra` (authentication
/// fields of a later version; a v2 peer ignores them).
fn hello(magic: &[u8; 4], version: u16, max_frame: u32, extra: &[u8]) -> Vec<u8> {
    let mut p = magic.to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&max_frame.to_le_bytes());
    p.extend_from_slice(extra);
    frame(HELLO, 0, &p)
}

/// A Request (kind 1) or Oneway (kind 5): handle, method, deadline, arguments.
fn call_frame(
    kind: u8,
    id: u64,
    handle: u32,
    method: u16,
    deadline_ms: u32,
    args: &[u8],
) -> Vec<u8> {
    let mut p = handle.to_le_bytes().to_vec();
    p.extend_from_slice(&method.to_le_bytes());
    p.extend_from_slice(&deadline_ms.to_le_bytes());
    p.extend_from_slice(args);
    frame(kind, id, &p)
}

/// A Request without a deadline.
fn request(id: u64, handle: u32, method: u16, args: &[u8]) -> Vec<u8> {
    call_frame(REQUEST, id, handle, method, 0, args)
}

fn cancel(id: u64) -> Vec<u8> {
    frame(CANCEL, id, &[])
}

fn credit(id: u64, bytes: u32) -> Vec<u8> {
    frame(CREDIT, id, &bytes.to_le_bytes())
}

fn release(handle: u32) -> Vec<u8> {
    frame(RELEASE, u64::from(handle), &[])
}

/// A frame as received.
#[derive(Clone, PartialEq, Eq)]
struct Frame {
    kind: u8,
    id: u64,
    payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.payload[..self.payload.len().min(48)];
        write!(
            f,
            "Frame {{ kind: {}, id: {}, payload ({} bytes): {shown:02x?}{} }}",
            self.kind,
            self.id,
            self.payload.len(),
            if shown.len() < self.payload.len() {
                "..."
            } else {
                ""
            }
        )
    }
}

impl Frame {
    /// The status and body of the Response to request `id`; fails the test
    /// for any other frame.
    fn response_to(&self, id: u64) -> (u8, Vec<u8>) {
        assert_eq!(
            (self.kind, self.id),
            (RESPONSE, id),
            "expected the Response to request {id}, got {self:?}"
        );
        assert!(
            !self.payload.is_empty(),
            "a Response without a status: {self:?}"
        );
        (self.payload[0], self.payload[1..].to_vec())
    }

    /// The status and body of the StreamEnd of the stream opened by `id`.
    fn stream_end_of(&self, id: u64) -> (u8, Vec<u8>) {
        assert_eq!(
            (self.kind, self.id),
            (STREAM_END, id),
            "expected the StreamEnd of stream {id}, got {self:?}"
        );
        assert!(
            !self.payload.is_empty(),
            "a StreamEnd without a status: {self:?}"
        );
        (self.payload[0], self.payload[1..].to_vec())
    }

    /// The whole frame's bytes again, length prefix included.
    fn bytes(&self) -> Vec<u8> {
        frame(self.kind, self.id, &self.payload)
    }
}

/// Checks a frame is a v2 server Hello and returns the limit it announces.
fn server_hello(f: &Frame) -> u32 {
    assert_eq!(
        (f.kind, f.id),
        (HELLO, 0),
        "expected the server's Hello, got {f:?}"
    );
    assert!(
        f.payload.len() >= 10,
        "a Hello payload has at least 10 bytes: {f:?}"
    );
    assert_eq!(&f.payload[..4], MAGIC, "the server's magic: {f:?}");
    let version: u16 = dec(&f.payload[4..6]);
    assert_eq!(version, VERSION, "the server's protocol version: {f:?}");
    dec(&f.payload[6..10])
}

/// A raw client connection, speaking only what this file encodes.
struct Peer {
    stream: TcpStream,
    /// This side's effective limit: what it announced, clamped.
    limit: u32,
    /// The last request id used.
    last_id: u64,
}

impl Peer {
    /// Opens a TCP connection and sends nothing.
    async fn connect(server: &ServerHandle) -> Self {
        let addr = server
            .local_addr()
            .as_socket_addr()
            .unwrap_or_else(|| panic!("not a TCP address: {}", server.local_addr()));
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr} failed: {e}"));
        stream.set_nodelay(true).expect("set_nodelay");
        Self {
            stream,
            limit: MINE,
            last_id: 0,
        }
    }

    /// Connects and completes the handshake, announcing [`MINE`].
    async fn open(server: &ServerHandle) -> Self {
        Self::open_announcing(server, MINE).await
    }

    /// Connects and completes the handshake, announcing `announce`.
    async fn open_announcing(server: &ServerHandle, announce: u32) -> Self {
        let mut p = Self::connect(server).await;
        p.limit = announce.clamp(MIN_LIMIT, MAX_LIMIT);
        p.send(&hello(MAGIC, VERSION, announce, &[])).await;
        let theirs = p.frame().await;
        let limit = server_hello(&theirs);
        assert!(limit > 9, "the server announced a frame limit of {limit}");
        p
    }

    /// The next request id (strictly increasing).
    fn id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("writing {} bytes failed: {e}", bytes.len()));
    }

    /// The next frame, or `None` once the server has closed the connection
    /// (end of stream or reset). Fails the test if nothing happens for
    /// [`READ_TIMEOUT`], or if the frame breaks this side's limit.
    async fn read(&mut self) -> Option<Frame> {
        let limit = self.limit;
        let read = async {
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await.ok()?;
            let len = u32::from_le_bytes(len);
            assert!(len >= 9, "a frame's length is at least 9, got {len}");
            assert!(
                len <= limit,
                "the server sent a frame of {len} bytes, past our effective limit of {limit}"
            );
            let mut body = vec![0u8; len as usize];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(Frame {
                kind: body[0],
                id: dec(&body[1..9]),
                payload: body[9..].to_vec(),
            })
        };
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(f) => f,
            Err(_) => panic!(
                "the server neither sent a frame nor closed the connection in {READ_TIMEOUT:?}"
            ),
        }
    }

    /// The next frame; fails the test if the connection closed.
    async fn frame(&mut self) -> Frame {
        match self.read().await {
            Some(f) => f,
            None => panic!("expected a frame, the server closed the connection"),
        }
    }

    /// Reads until the server closes the connection; the frames before.
    async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.read().await {
            frames.push(f);
        }
        frames
    }

    /// Checks the server closes the connection without sending anything.
    async fn assert_closed_silently(&mut self, after: &str) {
        let frames = self.until_closed().await;
        assert!(
            frames.is_empty(),
            "after {after}, the server should close the connection and send nothing; it sent {frames:?}"
        );
    }

    /// Sends a request and returns the status and body of its Response,
    /// which must be the next frame.
    async fn call(&mut self, handle: u32, method: u16, args: &[u8]) -> (u8, Vec<u8>) {
        let id = self.id();
        self.send(&request(id, handle, method, args)).await;
        self.frame().await.response_to(id)
    }

    /// As [`Peer::call`], checking the status is `ok`; the body.
    async fn ok(&mut self, handle: u32, method: u16, args: &[u8]) -> Vec<u8> {
        let (status, body) = self.call(handle, method, args).await;
        assert_eq!(
            status,
            OK,
            "method {method} of handle {handle} failed: {}",
            detail(&body)
        );
        body
    }

    /// Resolves `name` as a `trait_name` with these signatures, computing
    /// the fingerprint; the handle.
    async fn resolve(&mut self, name: &str, trait_name: &str, signatures: &[&str]) -> u32 {
        let args = resolve_args(
            name,
            trait_name,
            fingerprint(trait_name, signatures),
            signatures,
        );
        let handle: u32 = dec(&self.ok(0, 0, &args).await);
        assert!(
            (1..EXPORTED).contains(&handle),
            "a named object's handle is in 1 ..= 2^31-1, got {handle}"
        );
        handle
    }

    /// Resolves `Conf`.
    async fn conf(&mut self) -> u32 {
        self.resolve("Conf", "Conf", &CONF_SIGS).await
    }

    /// Reads the directory (system method 1).
    async fn directory(&mut self) -> Vec<ObjectInfo> {
        dec(&self.ok(0, 1, &[]).await)
    }

    /// Calls `Conf::fast` and checks its Response is the very next frame:
    /// nothing else arrived in between.
    async fn ping(&mut self, conf: u32) {
        let id = self.id();
        self.send(&request(id, conf, conf_m::FAST, &[])).await;
        let next = self.frame().await;
        assert_eq!(
            next.response_to(id),
            (OK, enc(&2u32)),
            "the ping's answer should be the next frame"
        );
    }
}

/// The arguments of system `resolve`.
fn resolve_args(name: &str, trait_name: &str, fp: u64, signatures: &[&str]) -> Vec<u8> {
    let signatures: Vec<String> = signatures.iter().map(|s| (*s).to_owned()).collect();
    enc(&(name, trait_name, fp, signatures))
}

/// `MethodInfo`: name, signature, oneway, idempotent, streaming,
/// object_args, object_return.
type MethodInfo = (String, String, bool, bool, bool, bool, bool);
/// `ObjectInfo`: name, trait name, fingerprint, methods.
type ObjectInfo = (String, String, u64, Vec<MethodInfo>);

fn find<'a>(directory: &'a [ObjectInfo], name: &str) -> &'a ObjectInfo {
    directory
        .iter()
        .find(|o| o.0 == name)
        .unwrap_or_else(|| panic!("no {name:?} in the directory: {directory:?}"))
}

// ---------------------------------------------------------------------------
// The objects under test
// ---------------------------------------------------------------------------

/// A value whose `Serialize` always fails.
#[derive(Debug)]
pub struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unencodable)
    }
}

#[expose]
pub trait Counter {
    /// Adds one; the new count.
    async fn bump(&self) -> u64;
}

#[expose]
pub trait Listener {
    /// Hears `n`; says something back.
    async fn hear(&self, n: u64) -> u64;
}

/// One trait with every kind of method.
#[expose]
pub trait Conf {
    async fn add(&self, a: i64, b: i64) -> i64;
    #[oneway]
    async fn note(&self, n: u64);
    #[idempotent]
    async fn fast(&self) -> u32;
    async fn count(&self, n: u64) -> Streaming<u64>;
    async fn ask(&self, listener: Remote<ListenerProxy>, n: u64) -> u64;
    async fn counter(&self) -> Remote<CounterProxy>;
    /// Reports it started, then waits until the test opens the gate.
    async fn park(&self) -> u32;
    async fn sleep_ms(&self, ms: u64) -> u64;
    async fn boom(&self, message: String) -> u32;
    async fn make(&self, len: u64) -> Vec<u8>;
    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8>;
    async fn unencodable(&self) -> Unencodable;
    async fn fail(&self, reason: String) -> Result<u8, String>;
    /// Records `n` (what `note` does, answered).
    async fn record(&self, n: u64) -> u64;
    async fn notes(&self) -> Vec<u64>;
    async fn blobs(&self, n: u64, len: u64) -> Streaming<Vec<u8>>;
    /// Item 0, then the producer panics.
    async fn panicky(&self) -> Streaming<u64>;
    /// One item, which fails to encode.
    async fn bad_items(&self) -> Streaming<Unencodable>;
    /// 7, 8, 9 if `open`, else the error `"refused"` and no stream.
    async fn maybe(&self, open: bool) -> Result<Streaming<u64>, String>;
}

/// `Conf`'s signatures, as the README's grammar writes them.
const CONF_SIGS: [&str; 19] = [
    "add(i64,i64)->i64",
    "note(u64)->()",
    "fast()->u32",
    "count(u64)->Streaming<u64>",
    "ask(Remote<ListenerProxy>,u64)->u64",
    "counter()->Remote<CounterProxy>",
    "park()->u32",
    "sleep_ms(u64)->u64",
    "boom(String)->u32",
    "make(u64)->Vec<u8>",
    "echo(Vec<u8>)->Vec<u8>",
    "unencodable()->Unencodable",
    "fail(String)->Result<u8,String>",
    "record(u64)->u64",
    "notes()->Vec<u64>",
    "blobs(u64,u64)->Streaming<Vec<u8>>",
    "panicky()->Streaming<u64>",
    "bad_items()->Streaming<Unencodable>",
    "maybe(bool)->Result<Streaming<u64>,String>",
];

/// `Conf`'s method indexes: positions in the trait.
mod conf_m {
    pub(crate) const ADD: u16 = 0;
    pub(crate) const NOTE: u16 = 1;
    pub(crate) const FAST: u16 = 2;
    pub(crate) const COUNT: u16 = 3;
    pub(crate) const ASK: u16 = 4;
    pub(crate) const COUNTER: u16 = 5;
    pub(crate) const PARK: u16 = 6;
    pub(crate) const SLEEP_MS: u16 = 7;
    pub(crate) const BOOM: u16 = 8;
    pub(crate) const MAKE: u16 = 9;
    pub(crate) const ECHO: u16 = 10;
    pub(crate) const UNENCODABLE: u16 = 11;
    pub(crate) const FAIL: u16 = 12;
    pub(crate) const RECORD: u16 = 13;
    pub(crate) const NOTES: u16 = 14;
    pub(crate) const BLOBS: u16 = 15;
    pub(crate) const PANICKY: u16 = 16;
    pub(crate) const BAD_ITEMS: u16 = 17;
    pub(crate) const MAYBE: u16 = 18;
}

#[derive(Clone)]
struct ConfImpl {
    gate: Arc<Notify>,
    started: mpsc::UnboundedSender<()>,
    notes: Arc<Mutex<Vec<u64>>>,
}

#[derive(Default)]
struct Count(AtomicU64);

impl Counter for Count {
    async fn bump(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl Conf for ConfImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    async fn note(&self, n: u64) {
        self.notes.lock().expect("notes").push(n);
    }
    async fn fast(&self) -> u32 {
        2
    }
    async fn count(&self, n: u64) -> Streaming<u64> {
        Streaming::iter(0..n)
    }
    async fn ask(&self, listener: Remote<ListenerProxy>, n: u64) -> u64 {
        listener.hear(n).await.unwrap_or(u64::MAX)
    }
    async fn counter(&self) -> Remote<CounterProxy> {
        Remote::new(CounterServer::new(Count::default()))
    }
    async fn park(&self) -> u32 {
        let opened = self.gate.notified();
        let _ = self.started.send(());
        opened.await;
        1
    }
    async fn sleep_ms(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn boom(&self, message: String) -> u32 {
        panic!("{message}")
    }
    async fn make(&self, len: u64) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }
    async fn echo(&self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }
    async fn unencodable(&self) -> Unencodable {
        Unencodable
    }
    async fn fail(&self, reason: String) -> Result<u8, String> {
        Err(reason)
    }
    async fn record(&self, n: u64) -> u64 {
        self.notes.lock().expect("notes").push(n);
        n
    }
    async fn notes(&self) -> Vec<u64> {
        self.notes.lock().expect("notes").clone()
    }
    async fn blobs(&self, n: u64, len: u64) -> Streaming<Vec<u8>> {
        Streaming::iter((0..n).map(move |_| vec![7u8; len as usize]))
    }
    async fn panicky(&self) -> Streaming<u64> {
        Streaming::iter((0..3u64).map(|i| match i {
            0 => 0,
            _ => panic!("the producer panics at item {i}"),
        }))
    }
    async fn bad_items(&self) -> Streaming<Unencodable> {
        Streaming::iter([Unencodable])
    }
    async fn maybe(&self, open: bool) -> Result<Streaming<u64>, String> {
        if open {
            Ok(Streaming::iter([7, 8, 9]))
        } else {
            Err("refused".into())
        }
    }
}

/// An application error: an enum, so its variant index shows.
#[derive(Debug, Serialize, Deserialize)]
pub enum Oops {
    Negative,
    Zero,
}

/// Signatures written every way the grammar must normalise: paths, generic
/// arguments, spaces, tuples, arrays, `()`, qualified paths, lifetimes.
#[rustfmt::skip]
#[expose]
pub trait Grammar {
    async fn ping(&self);
    async fn unit(&self) -> ();
    async fn paths(&self, s: std::string::String, m: ::std::collections::BTreeMap<String, u8>) -> std :: vec :: Vec<u8>;
    async fn generics(&self, v: Vec < Option < Vec<u8> > >) -> Option<Vec<u8>>;
    async fn result(&self, a: i64, b: i64) -> Result<i64, Oops>;
    async fn result_unit(&self) -> Result< (), String >;
    async fn tuples(&self, t: (u8, (String, bool)), one: (u8,)) -> (u8, ());
    async fn array(&self, a: [u16; 3]) -> [u8;2];
    async fn qualified(&self, x: <Vec<u8> as IntoIterator>::Item) -> u8;
    async fn lifetime(&self, c: std::borrow::Cow<'static, str>) -> u8;
}

/// `Grammar`'s signatures per the README: spaces gone except one between
/// two identifier characters, paths and generic arguments kept.
const GRAMMAR_SIGS: [&str; 10] = [
    "ping()->()",
    "unit()->()",
    "paths(std::string::String,::std::collections::BTreeMap<String,u8>)->std::vec::Vec<u8>",
    "generics(Vec<Option<Vec<u8>>>)->Option<Vec<u8>>",
    "result(i64,i64)->Result<i64,Oops>",
    "result_unit()->Result<(),String>",
    "tuples((u8,(String,bool)),(u8,))->(u8,())",
    "array([u16;3])->[u8;2]",
    "qualified(<Vec<u8>as IntoIterator>::Item)->u8",
    "lifetime(std::borrow::Cow<'static,str>)->u8",
];

struct Gram;

#[allow(clippy::unused_unit)]
impl Grammar for Gram {
    async fn ping(&self) {}
    async fn unit(&self) -> () {}
    async fn paths(&self, s: String, m: BTreeMap<String, u8>) -> Vec<u8> {
        vec![s.len() as u8, m.len() as u8]
    }
    async fn generics(&self, v: Vec<Option<Vec<u8>>>) -> Option<Vec<u8>> {
        v.into_iter().flatten().next()
    }
    async fn result(&self, a: i64, b: i64) -> Result<i64, Oops> {
        match (a, b) {
            (_, 0) => Err(Oops::Zero),
            (a, _) if a < 0 => Err(Oops::Negative),
            (a, b) => Ok(a / b),
        }
    }
    async fn result_unit(&self) -> Result<(), String> {
        Ok(())
    }
    async fn tuples(&self, t: (u8, (String, bool)), one: (u8,)) -> (u8, ()) {
        (t.0 + one.0 + t.1.0.len() as u8 + u8::from(t.1.1), ())
    }
    async fn array(&self, a: [u16; 3]) -> [u8; 2] {
        [a.len() as u8, a.iter().sum::<u16>() as u8]
    }
    async fn qualified(&self, x: <Vec<u8> as IntoIterator>::Item) -> u8 {
        x
    }
    async fn lifetime(&self, c: std::borrow::Cow<'static, str>) -> u8 {
        c.len() as u8
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Unit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    Empty,
    Circle(f64),
    Rect { w: u32, h: u32 },
    Pair(u8, String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    x: i16,
    y: i16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meters(u32);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    Leaf,
    Node(Box<Tree>),
}

/// Each method returns its argument and the server's `Debug` of it, so the
/// test sees both the bytes and the value the server decoded.
#[expose]
pub trait Echo {
    async fn unit(&self, v: ()) -> ((), String);
    async fn float32(&self, v: f32) -> (f32, String);
    async fn float64(&self, v: f64) -> (f64, String);
    async fn character(&self, v: char) -> (char, String);
    async fn unsigned128(&self, v: u128) -> (u128, String);
    async fn signed128(&self, v: i128) -> (i128, String);
    async fn unit_struct(&self, v: Unit) -> (Unit, String);
    async fn shape(&self, v: Shape) -> (Shape, String);
    async fn option(&self, v: Option<u16>) -> (Option<u16>, String);
    async fn vector(&self, v: Vec<i32>) -> (Vec<i32>, String);
    async fn string(&self, v: String) -> (String, String);
    async fn boolean(&self, v: bool) -> (bool, String);
    async fn map(&self, v: BTreeMap<String, u8>) -> (BTreeMap<String, u8>, String);
    async fn point(&self, v: Point) -> (Point, String);
    async fn meters(&self, v: Meters) -> (Meters, String);
    async fn array(&self, v: [u8; 3]) -> ([u8; 3], String);
    async fn size(&self, v: usize) -> (usize, String);
    async fn small(&self, v: i8) -> (i8, String);
    /// How many `Node`s deep `t` is.
    async fn depth(&self, t: Tree) -> u32;
}

const ECHO_SIGS: [&str; 19] = [
    "unit(())->((),String)",
    "float32(f32)->(f32,String)",
    "float64(f64)->(f64,String)",
    "character(char)->(char,String)",
    "unsigned128(u128)->(u128,String)",
    "signed128(i128)->(i128,String)",
    "unit_struct(Unit)->(Unit,String)",
    "shape(Shape)->(Shape,String)",
    "option(Option<u16>)->(Option<u16>,String)",
    "vector(Vec<i32>)->(Vec<i32>,String)",
    "string(String)->(String,String)",
    "boolean(bool)->(bool,String)",
    "map(BTreeMap<String,u8>)->(BTreeMap<String,u8>,String)",
    "point(Point)->(Point,String)",
    "meters(Meters)->(Meters,String)",
    "array([u8;3])->([u8;3],String)",
    "size(usize)->(usize,String)",
    "small(i8)->(i8,String)",
    "depth(Tree)->u32",
];

struct Echoer;

fn echoed<T: fmt::Debug>(v: T) -> (T, String) {
    let shown = format!("{v:?}");
    (v, shown)
}

impl Echo for Echoer {
    async fn unit(&self, v: ()) -> ((), String) {
        echoed(v)
    }
    async fn float32(&self, v: f32) -> (f32, String) {
        echoed(v)
    }
    async fn float64(&self, v: f64) -> (f64, String) {
        echoed(v)
    }
    async fn character(&self, v: char) -> (char, String) {
        echoed(v)
    }
    async fn unsigned128(&self, v: u128) -> (u128, String) {
        echoed(v)
    }
    async fn signed128(&self, v: i128) -> (i128, String) {
        echoed(v)
    }
    async fn unit_struct(&self, v: Unit) -> (Unit, String) {
        echoed(v)
    }
    async fn shape(&self, v: Shape) -> (Shape, String) {
        echoed(v)
    }
    async fn option(&self, v: Option<u16>) -> (Option<u16>, String) {
        echoed(v)
    }
    async fn vector(&self, v: Vec<i32>) -> (Vec<i32>, String) {
        echoed(v)
    }
    async fn string(&self, v: String) -> (String, String) {
        echoed(v)
    }
    async fn boolean(&self, v: bool) -> (bool, String) {
        echoed(v)
    }
    async fn map(&self, v: BTreeMap<String, u8>) -> (BTreeMap<String, u8>, String) {
        echoed(v)
    }
    async fn point(&self, v: Point) -> (Point, String) {
        echoed(v)
    }
    async fn meters(&self, v: Meters) -> (Meters, String) {
        echoed(v)
    }
    async fn array(&self, v: [u8; 3]) -> ([u8; 3], String) {
        echoed(v)
    }
    async fn size(&self, v: usize) -> (usize, String) {
        echoed(v)
    }
    async fn small(&self, v: i8) -> (i8, String) {
        echoed(v)
    }
    async fn depth(&self, t: Tree) -> u32 {
        let mut depth = 0;
        let mut t = &t;
        while let Tree::Node(inner) = t {
            depth += 1;
            t = inner;
        }
        depth
    }
}

/// A server exposing `Conf`, `Grammar` and `Echo` (plus what `build` adds),
/// and the test's handles on `Conf`'s implementation.
struct Scene {
    server: ServerHandle,
    gate: Arc<Notify>,
    started: mpsc::UnboundedReceiver<()>,
    notes: Arc<Mutex<Vec<u64>>>,
}

impl Scene {
    /// Waits until a `park` call has started.
    async fn parked(&mut self) {
        assert_eq!(self.started.recv().await, Some(()), "park did not start");
    }

    fn notes(&self) -> Vec<u64> {
        self.notes.lock().expect("notes").clone()
    }
}

async fn scene(build: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Scene {
    let (started_tx, started) = mpsc::unbounded_channel();
    let conf = ConfImpl {
        gate: Arc::new(Notify::new()),
        started: started_tx,
        notes: Arc::default(),
    };
    let (gate, notes) = (conf.gate.clone(), conf.notes.clone());
    let server = ipc_tests::start(|b| {
        build(
            b.expose(ConfServer::new(conf))
                .expose(GrammarServer::new(Gram))
                .expose(EchoServer::new(Echoer)),
        )
    })
    .await;
    Scene {
        server,
        gate,
        started,
        notes,
    }
}

// ---------------------------------------------------------------------------
// 1. Fingerprints and the signature grammar
// ---------------------------------------------------------------------------

#[tokio::test]
async fn fingerprint_is_fnv1a_over_trait_name_and_signatures_written_per_the_grammar() {
    within(10, async {
        // The hash itself, against FNV-1a's published 64-bit test vectors.
        assert_eq!(fingerprint("", &[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint("a", &[]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fingerprint("foobar", &[]), 0x8594_4171_f739_67e8);

        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let fp = fingerprint("Grammar", &GRAMMAR_SIGS);
        let directory = p.directory().await;
        let (_, trait_name, listed_fp, methods) = find(&directory, "Grammar");
        assert_eq!(trait_name, "Grammar");
        let listed: Vec<&str> = methods.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(
            listed, GRAMMAR_SIGS,
            "signatures as the grammar writes them"
        );
        assert_eq!(*listed_fp, fp, "the fingerprint computed from the README");

        // Resolving with the computed fingerprint and signatures works, and
        // the handle answers with the layouts its signatures promise.
        let g = p.resolve("Grammar", "Grammar", &GRAMMAR_SIGS).await;
        assert_eq!(p.ok(g, 0, &[]).await, b"", "ping()->() answers nothing");
        assert_eq!(p.ok(g, 1, &[]).await, b"", "unit()->() answers nothing");
        let mut m = BTreeMap::new();
        m.insert("k".to_owned(), 1u8);
        assert_eq!(p.ok(g, 2, &enc(&("abc", m))).await, enc(&vec![3u8, 1]));
        let v: Vec<Option<Vec<u8>>> = vec![None, Some(vec![9, 8])];
        assert_eq!(p.ok(g, 3, &enc(&v)).await, enc(&Some(vec![9u8, 8])));
        // Result<T, E>: Ok is status 0 with the T, Err status 1 with the E.
        assert_eq!(p.ok(g, 4, &enc(&(6i64, 3i64))).await, enc(&2i64));
        assert_eq!(
            p.call(g, 4, &enc(&(6i64, 0i64))).await,
            (APP_ERROR, enc(&1u32))
        );
        assert_eq!(
            p.call(g, 4, &enc(&(-6i64, 3i64))).await,
            (APP_ERROR, enc(&0u32))
        );
        assert_eq!(p.ok(g, 5, &[]).await, b"", "Ok(()) is an empty body");
        let args = enc(&((1u8, ("xy", true)), (4u8,)));
        assert_eq!(
            p.ok(g, 6, &args).await,
            enc(&8u8),
            "(u8, ()) is the u8 alone"
        );
        assert_eq!(p.ok(g, 7, &enc(&[1u16, 2, 3])).await, enc(&[3u8, 6]));
        assert_eq!(p.ok(g, 8, &enc(&42u8)).await, enc(&42u8));
        assert_eq!(p.ok(g, 9, &enc(&"four")).await, enc(&4u8));
    })
    .await;
}

#[tokio::test]
async fn resolve_with_another_fingerprint_signature_or_trait_name_gets_status_18() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let server_fp = fingerprint("Conf", &CONF_SIGS);

        // The signatures right, the fingerprint off by one.
        let args = resolve_args("Conf", "Conf", server_fp + 1, &CONF_SIGS);
        let (status, body) = p.call(0, 0, &args).await;
        assert_eq!(status, TRAIT_MISMATCH, "{}", detail(&body));
        let (theirs, ours, why): (u64, u64, String) = dec(&body);
        assert_eq!((theirs, ours), (server_fp, server_fp + 1));
        assert!(!why.is_empty(), "the detail says what differs");

        // One signature different (another return type), fingerprint
        // consistent with it: what an older version of the trait sends.
        let mut other = CONF_SIGS;
        other[0] = "add(i64,i64)->i32";
        let (status, body) = p
            .call(
                0,
                0,
                &resolve_args("Conf", "Conf", fingerprint("Conf", &other), &other),
            )
            .await;
        assert_eq!(status, TRAIT_MISMATCH, "{}", detail(&body));
        let (theirs, ours, why): (u64, u64, String) = dec(&body);
        assert_eq!((theirs, ours), (server_fp, fingerprint("Conf", &other)));
        assert!(why.contains("add"), "the detail names the method: {why:?}");

        // One method fewer.
        let fewer = &CONF_SIGS[..CONF_SIGS.len() - 1];
        let (status, body) = p
            .call(
                0,
                0,
                &resolve_args("Conf", "Conf", fingerprint("Conf", fewer), fewer),
            )
            .await;
        assert_eq!(status, TRAIT_MISMATCH, "{}", detail(&body));
        assert_eq!(dec::<(u64, u64, String)>(&body).0, server_fp);

        // Another trait name under the right object name.
        let (status, body) = p
            .call(
                0,
                0,
                &resolve_args(
                    "Conf",
                    "Conff",
                    fingerprint("Conff", &CONF_SIGS),
                    &CONF_SIGS,
                ),
            )
            .await;
        assert_eq!(status, TRAIT_MISMATCH, "{}", detail(&body));
        assert_eq!(dec::<(u64, u64, String)>(&body).0, server_fp);

        // The same fingerprint but different signatures: resolve compares
        // the signatures one by one, not just the fingerprint.
        let (status, body) = p
            .call(0, 0, &resolve_args("Conf", "Conf", server_fp, &other))
            .await;
        assert_eq!(status, TRAIT_MISMATCH, "{}", detail(&body));
        let (theirs, ours, _): (u64, u64, String) = dec(&body);
        assert_eq!((theirs, ours), (server_fp, server_fp));

        // A name nobody exposes: 16 with a String detail.
        let (status, body) = p
            .call(0, 0, &resolve_args("Nope", "Conf", server_fp, &CONF_SIGS))
            .await;
        assert_eq!(status, UNKNOWN_OBJECT);
        string_body(status, &body);

        // The connection goes on.
        p.conf().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. The directory and the system object
// ---------------------------------------------------------------------------

#[tokio::test]
async fn directory_lists_every_object_with_trait_fingerprint_signatures_and_flags() {
    within(10, async {
        let s = scene(|b| b.expose_as("second", CounterServer::new(Count::default()))).await;
        let mut p = Peer::open(&s.server).await;
        let directory = p.directory().await;
        let mut names: Vec<&str> = directory.iter().map(|o| o.0.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["Conf", "Echo", "Grammar", "second"]);

        let second = find(&directory, "second");
        assert_eq!(
            second.1, "Counter",
            "the trait name, apart from the object name"
        );
        assert_eq!(second.2, fingerprint("Counter", &["bump()->u64"]));
        assert_eq!(
            second.3,
            [(
                "bump".to_owned(),
                "bump()->u64".to_owned(),
                false,
                false,
                false,
                false,
                false
            )]
        );
        let echo = find(&directory, "Echo");
        assert_eq!(
            (echo.1.as_str(), echo.2),
            ("Echo", fingerprint("Echo", &ECHO_SIGS))
        );

        let (_, trait_name, fp, methods) = find(&directory, "Conf");
        assert_eq!(trait_name, "Conf");
        assert_eq!(*fp, fingerprint("Conf", &CONF_SIGS));
        assert_eq!(methods.len(), CONF_SIGS.len());
        for (i, (m, sig)) in methods.iter().zip(CONF_SIGS).enumerate() {
            assert_eq!(m.1, sig, "method {i}'s signature");
            assert_eq!(
                Some(m.0.as_str()),
                sig.split('(').next(),
                "method {i}'s name"
            );
            // (oneway, idempotent, streaming, object_args, object_return)
            let flags = (m.2, m.3, m.4, m.5, m.6);
            let expected = match m.0.as_str() {
                "note" => (true, false, false, false, false),
                "fast" => (false, true, false, false, false),
                "count" | "blobs" | "panicky" | "bad_items" | "maybe" => {
                    (false, false, true, false, false)
                }
                "ask" => (false, false, false, true, false),
                "counter" => (false, false, false, false, true),
                _ => (false, false, false, false, false),
            };
            assert_eq!(flags, expected, "the flags of {sig}");
        }
    })
    .await;
}

#[tokio::test]
async fn system_methods_3_and_up_get_17_and_undecodable_system_arguments_get_19() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        for method in [3u16, 4, 255, u16::MAX] {
            let (status, body) = p.call(0, method, &[]).await;
            assert_eq!(
                status,
                UNKNOWN_METHOD,
                "system method {method}: {}",
                detail(&body)
            );
            string_body(status, &body);
        }
        // An unknown method of a named object is 17 as well.
        let conf = p.conf().await;
        let (status, body) = p.call(conf, CONF_SIGS.len() as u16, &[]).await;
        assert_eq!(status, UNKNOWN_METHOD, "{}", detail(&body));
        string_body(status, &body);

        // `resolve` arguments cut short, or followed by a byte.
        let args = resolve_args("Conf", "Conf", fingerprint("Conf", &CONF_SIGS), &CONF_SIGS);
        let (status, body) = p.call(0, 0, &args[..args.len() - 1]).await;
        assert_eq!(status, BAD_REQUEST, "{}", detail(&body));
        string_body(status, &body);
        let (status, body) = p.call(0, 0, &[&args[..], &[0]].concat()).await;
        assert_eq!(
            status,
            BAD_REQUEST,
            "resolve with a trailing byte: {}",
            detail(&body)
        );
        string_body(status, &body);
        // The connection goes on.
        assert_eq!(p.directory().await.len(), 3);
    })
    .await;
}

#[tokio::test]
async fn list_with_a_byte_after_its_no_arguments_gets_19() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let (status, body) = p.call(0, 1, &[0]).await;
        assert_eq!(
            status,
            BAD_REQUEST,
            "list with a trailing byte: {}",
            detail(&body)
        );
        string_body(status, &body);
        assert_eq!(p.directory().await.len(), 3);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. Frame sizes and limits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn frame_length_counts_kind_id_and_payload_and_a_request_at_the_limit_is_served() {
    within(10, async {
        // The README's worked example, byte for byte.
        let readme_request = [
            0x23, 0, 0, 0, 0x01, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
        ];
        let readme_answer = [
            0x12, 0, 0, 0, 0x02, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(request(7, 1, 0, &enc(&(2i64, 3i64))), readme_request);
        assert_eq!(
            frame(RESPONSE, 7, &[&[OK][..], &enc(&5i64)].concat()),
            readme_answer
        );

        let s = scene(|b| b.max_frame_size(4096)).await;
        let mut p = Peer::connect(&s.server).await;
        p.send(&hello(MAGIC, VERSION, MINE, &[])).await;
        assert_eq!(
            server_hello(&p.frame().await),
            4096,
            "the server announces its limit"
        );
        let conf = p.conf().await;
        // The example against the server (with the handle it gave us).
        p.last_id = 6;
        assert_eq!(p.id(), 7);
        p.send(&request(7, conf, conf_m::ADD, &enc(&(2i64, 3i64))))
            .await;
        assert_eq!(p.frame().await.bytes(), readme_answer);

        // kind + id (9) + handle, method, deadline (10) + Vec length (8) + n.
        let at_limit = request(p.id(), conf, conf_m::ECHO, &enc(&vec![5u8; 4096 - 27]));
        assert_eq!(
            at_limit.len(),
            4 + 4096,
            "length = 4096, the prefix excluded"
        );
        p.send(&at_limit).await;
        let (status, body) = p.frame().await.response_to(p.last_id);
        assert_eq!(
            (status, body.len()),
            (OK, 8 + 4096 - 27),
            "a request of exactly the limit is served"
        );

        let past = request(p.id(), conf, conf_m::ECHO, &enc(&vec![5u8; 4096 - 26]));
        assert_eq!(past.len(), 4 + 4097);
        p.send(&past).await;
        p.assert_closed_silently("a request one byte past the limit")
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_server_configured_below_1_kib_still_accepts_1_kib_frames() {
    within(10, async {
        let s = scene(|b| b.max_frame_size(100)).await;
        let mut p = Peer::connect(&s.server).await;
        p.send(&hello(MAGIC, VERSION, MINE, &[])).await;
        let announced = server_hello(&p.frame().await);
        assert!(announced <= MIN_LIMIT, "announced {announced}");
        let conf = p.conf().await;
        let at_limit = request(p.id(), conf, conf_m::ECHO, &enc(&vec![1u8; 1024 - 27]));
        assert_eq!(at_limit.len(), 4 + 1024);
        p.send(&at_limit).await;
        let (status, _) = p.frame().await.response_to(p.last_id);
        assert_eq!(
            status, OK,
            "a 1 KiB request is within every effective limit"
        );

        let past = request(p.id(), conf, conf_m::ECHO, &enc(&vec![1u8; 1024 - 26]));
        p.send(&past).await;
        p.assert_closed_silently("a 1025-byte request to a server clamped to 1 KiB")
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_client_announcing_100_bytes_receives_frames_up_to_1_kib_and_status_22_beyond() {
    within(10, async {
        // A directory larger than 100 bytes (and smaller than 1 KiB)
        // arrives whole.
        let names = ipc_tests::start(|b| b.name_server()).await;
        let mut p = Peer::open_announcing(&names, 100).await;
        assert_eq!(p.limit, MIN_LIMIT);
        let (status, body) = p.call(0, 1, &[]).await;
        assert_eq!(status, OK, "{}", detail(&body));
        assert!(body.len() > 100, "the directory is {} bytes", body.len());
        assert_eq!(dec::<Vec<ObjectInfo>>(&body)[0].0, "NameServer");

        let s = scene(|b| b).await;
        let mut p = Peer::open_announcing(&s.server, 100).await;
        // A directory larger than 1 KiB does not: 22.
        let (status, body) = p.call(0, 1, &[]).await;
        assert_eq!(status, TOO_LARGE, "{}", detail(&body));
        let (size, limit): (u64, u64) = dec(&body);
        assert_eq!(limit, u64::from(MIN_LIMIT));
        assert!(size > limit, "size {size}");

        let conf = p.conf().await;
        // Response frame: kind + id (9) + status (1) + Vec length (8) + n.
        let body = p.ok(conf, conf_m::MAKE, &enc(&(1024u64 - 18))).await;
        assert_eq!(
            body.len(),
            8 + 1024 - 18,
            "a reply of exactly 1 KiB is sent"
        );

        for len in [1024u64 - 17, 100_000] {
            let (status, body) = p.call(conf, conf_m::MAKE, &enc(&len)).await;
            assert_eq!(status, TOO_LARGE, "make({len}): {}", detail(&body));
            let (size, limit): (u64, u64) = dec(&body);
            assert_eq!(
                limit,
                u64::from(MIN_LIMIT),
                "the limit is the effective one"
            );
            assert!(
                size > limit && size <= len + 18,
                "make({len}): size {size} exceeds the limit, and is at most the whole answer"
            );
        }

        // A stream item past the limit ends the stream with 22.
        let id = p.id();
        p.send(&request(id, conf, conf_m::BLOBS, &enc(&(2u64, 2000u64))))
            .await;
        p.send(&credit(id, 1 << 20)).await;
        assert_eq!(p.frame().await.response_to(id), (OK, vec![]));
        let (status, body) = p.frame().await.stream_end_of(id);
        assert_eq!(status, TOO_LARGE, "{}", detail(&body));
        let (size, limit): (u64, u64) = dec(&body);
        assert_eq!(limit, u64::from(MIN_LIMIT));
        assert!(size > limit, "size {size}");

        // The connection is unaffected.
        p.ping(conf).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Cancel
// ---------------------------------------------------------------------------

#[tokio::test]
async fn cancel_of_a_running_call_gets_exactly_one_response_with_status_25() {
    within(10, async {
        let mut s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let id = p.id();
        p.send(&request(id, conf, conf_m::PARK, &[])).await;
        s.parked().await;
        p.send(&cancel(id)).await;
        assert_eq!(p.frame().await.response_to(id), (CANCELLED, vec![]));
        // Exactly one: the next frame answers a later request.
        p.ping(conf).await;
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn cancel_of_a_finished_call_is_ignored_and_no_second_response_arrives() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let id = p.id();
        p.send(&request(id, conf, conf_m::ADD, &enc(&(20i64, 22i64))))
            .await;
        assert_eq!(p.frame().await.response_to(id), (OK, enc(&42i64)));
        p.send(&cancel(id)).await;
        p.ping(conf).await;
        p.ping(conf).await;

        // Sent together, the Cancel may or may not catch the call: exactly
        // one Response arrives either way, the real answer or 25.
        for _ in 0..20 {
            let id = p.id();
            let mut both = request(id, conf, conf_m::ADD, &enc(&(1i64, 2i64)));
            both.extend(cancel(id));
            p.send(&both).await;
            let answer = p.frame().await.response_to(id);
            assert!(
                answer == (OK, enc(&3i64)) || answer == (CANCELLED, vec![]),
                "either the answer or 25, got {answer:?}"
            );
            p.ping(conf).await;
        }
    })
    .await;
}

#[tokio::test]
async fn cancel_for_an_unknown_id_is_ignored() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.last_id = 10;
        // An id skipped over (never sent), and one above any sent so far.
        p.send(&cancel(5)).await;
        p.send(&cancel(1_000_000)).await;
        p.ping(conf).await;
        p.ping(conf).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. Request ids; GoAway
// ---------------------------------------------------------------------------

#[tokio::test]
async fn request_ids_start_anywhere_and_one_not_above_the_previous_closes_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;

        // Ids start at any value ≥ 1 and may skip.
        let mut p = Peer::open(&s.server).await;
        p.last_id = 1_000;
        let conf = p.conf().await;
        p.last_id += 1_000;
        p.ping(conf).await;

        // Id 0 is below any first id (they start at 1): closed.
        let mut p = Peer::open(&s.server).await;
        p.send(&request(0, 0, 1, &[])).await;
        p.assert_closed_silently("a first request with id 0").await;

        // The same id again: closed, without an answer.
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.send(&request(5, conf, conf_m::ADD, &enc(&(1i64, 1i64))))
            .await;
        assert_eq!(p.frame().await.response_to(5), (OK, enc(&2i64)));
        p.send(&request(5, conf, conf_m::ADD, &enc(&(1i64, 1i64))))
            .await;
        p.assert_closed_silently("a request reusing id 5").await;

        // A lower id: closed.
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.send(&request(9, conf, conf_m::FAST, &[])).await;
        assert_eq!(p.frame().await.response_to(9).0, OK);
        p.send(&request(8, conf, conf_m::FAST, &[])).await;
        p.assert_closed_silently("a request with id 8 after id 9")
            .await;

        // Oneways share the id sequence: a oneway reusing an id closes too.
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.send(&request(4, conf, conf_m::FAST, &[])).await;
        assert_eq!(p.frame().await.response_to(4).0, OK);
        p.send(&call_frame(ONEWAY, 4, conf, conf_m::NOTE, 0, &enc(&4u64)))
            .await;
        p.assert_closed_silently("a oneway reusing id 4").await;
        assert!(!s.notes().contains(&4), "the oneway with a reused id ran");
    })
    .await;
}

#[tokio::test]
async fn shutdown_sends_go_away_answers_21_and_the_last_go_away_carries_the_last_id_read() {
    within(10, async {
        let mut s = scene(|b| b.grace_period(Duration::from_secs(5))).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let parked = p.id();
        p.send(&request(parked, conf, conf_m::PARK, &[])).await;
        s.parked().await;
        // An open stream, with credit for one item.
        let stream = p.id();
        p.send(&request(stream, conf, conf_m::COUNT, &enc(&1_000_000u64)))
            .await;
        p.send(&credit(stream, 17)).await;
        assert_eq!(p.frame().await.response_to(stream), (OK, vec![]));
        assert_eq!(
            p.frame().await,
            Frame {
                kind: STREAM_ITEM,
                id: stream,
                payload: enc(&0u64)
            }
        );

        s.server.shutdown_token().cancel();
        // GoAway (reason 0, empty) and the stream's end with 21, in either order.
        let mut first = [p.frame().await, p.frame().await];
        first.sort_by_key(|f| f.kind);
        assert_eq!(
            first[0],
            Frame {
                kind: GO_AWAY,
                id: 0,
                payload: vec![]
            },
            "the first GoAway"
        );
        assert_eq!(first[1].stream_end_of(stream), (SHUTTING_DOWN, vec![]));

        // A request after the GoAway does not run: 21.
        let late = p.id();
        p.send(&request(late, conf, conf_m::RECORD, &enc(&late)))
            .await;
        assert_eq!(p.frame().await.response_to(late), (SHUTTING_DOWN, vec![]));

        // The running call finishes and is answered, then the last GoAway
        // carries the highest id read.
        s.gate.notify_one();
        assert_eq!(p.frame().await.response_to(parked), (OK, enc(&1u32)));
        let last = p.frame().await;
        assert_eq!(
            (last.kind, last.id),
            (GO_AWAY, 0),
            "the last GoAway: {last:?}"
        );
        assert_eq!(
            dec::<u64>(&last.payload),
            late,
            "the highest request id read"
        );

        // A request above that id is not run (and not answered).
        let after = p.id();
        p.send(&request(after, conf, conf_m::RECORD, &enc(&after)))
            .await;
        p.stream
            .shutdown()
            .await
            .expect("shutting down our write half");
        let rest = p.until_closed().await;
        assert!(rest.is_empty(), "nothing follows the last GoAway: {rest:?}");
        s.server.stopped().await;
        assert_eq!(s.notes(), Vec::<u64>::new(), "neither refused request ran");
    })
    .await;
}

// ---------------------------------------------------------------------------
// 6. Oneway
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_oneway_is_never_answered_so_the_next_frame_answers_a_later_request() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        // A oneway to a oneway method, with a deadline: the layout of kind 1.
        let id = p.id();
        p.send(&call_frame(
            ONEWAY,
            id,
            conf,
            conf_m::NOTE,
            60_000,
            &enc(&7u64),
        ))
        .await;
        // Oneways whose calls fail get no answer either: a method that
        // returns something, one that panics, an unknown handle and method,
        // arguments that do not decode.
        let id = p.id();
        p.send(&call_frame(
            ONEWAY,
            id,
            conf,
            conf_m::RECORD,
            0,
            &enc(&8u64),
        ))
        .await;
        let id = p.id();
        p.send(&call_frame(
            ONEWAY,
            id,
            conf,
            conf_m::BOOM,
            0,
            &enc(&"oneway boom"),
        ))
        .await;
        let id = p.id();
        p.send(&call_frame(ONEWAY, id, 77_777, 0, 0, &[])).await;
        let id = p.id();
        p.send(&call_frame(ONEWAY, id, conf, 999, 0, &[])).await;
        let id = p.id();
        p.send(&call_frame(ONEWAY, id, conf, conf_m::NOTE, 0, &[1, 2]))
            .await;
        p.ping(conf).await;
        p.ping(conf).await;
        eventually(5, "the oneways ran", || {
            let notes = s.notes();
            notes.contains(&7) && notes.contains(&8)
        })
        .await;
        let notes: Vec<u64> = dec(&p.ok(conf, conf_m::NOTES, &[]).await);
        assert!(notes.contains(&7) && notes.contains(&8), "{notes:?}");
        p.ping(conf).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 7. Accepted and rejected input
// ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_pipelined_right_after_the_hello_are_served_after_the_server_hello() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::connect(&s.server).await;
        // The Hello, then, without waiting for the server's: the directory,
        // a resolve, an unknown system method, in one write.
        let mut all = hello(MAGIC, VERSION, MINE, &[]);
        all.extend(request(1, 0, 1, &[]));
        let args = resolve_args("Conf", "Conf", fingerprint("Conf", &CONF_SIGS), &CONF_SIGS);
        all.extend(request(2, 0, 0, &args));
        all.extend(request(3, 0, 3, &[]));
        p.send(&all).await;
        server_hello(&p.frame().await);
        let mut answers = [p.frame().await, p.frame().await, p.frame().await];
        answers.sort_by_key(|f| f.id);
        let (status, body) = answers[0].response_to(1);
        assert_eq!(status, OK);
        assert_eq!(dec::<Vec<ObjectInfo>>(&body).len(), 3);
        let (status, body) = answers[1].response_to(2);
        assert_eq!(status, OK, "{}", detail(&body));
        let conf: u32 = dec(&body);
        assert_eq!(answers[2].response_to(3).0, UNKNOWN_METHOD);
        p.last_id = 3;
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn before_the_handshake_a_length_of_256_is_awaited_and_257_closes_at_once() {
    within(10, async {
        let s = scene(|b| b.handshake_timeout(std::time::Duration::from_secs(5))).await;
        // The limit is checked on the length prefix, before the body: a
        // 256-byte frame is waited for...
        let mut p = Peer::connect(&s.server).await;
        p.send(&256u32.to_le_bytes()).await;
        let mut buf = [0u8; 1];
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            p.stream.read(&mut buf),
        )
        .await;
        assert!(
            waited.is_err(),
            "a 256-byte frame's prefix was not waited on: {waited:?}"
        );
        // ...a 257-byte one closes the connection at once, unread.
        let mut p = Peer::connect(&s.server).await;
        p.send(&257u32.to_le_bytes()).await;
        p.assert_closed_silently("a 257-byte frame before the handshake")
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_hello_says_no_authentication_by_nothing_or_a_zero_byte_and_anything_else_closes() {
    within(10, async {
        let s = scene(|b| b).await;
        // No authentication fields, or the explicit `0`: served.
        for extra in [&[][..], &[0]] {
            let mut p = Peer::connect(&s.server).await;
            p.send(&hello(MAGIC, VERSION, MINE, extra)).await;
            match p.read().await {
                Some(theirs) => server_hello(&theirs),
                None => panic!("a Hello followed by {extra:02x?} closed the connection"),
            };
            let conf = p.conf().await;
            p.ping(conf).await;
        }
        // Malformed authentication fields: closed without a reply.
        for extra in [&[0xAB; 16][..], &[1, 2, 3], &[0xFF; 237], &[0, 0]] {
            let mut p = Peer::connect(&s.server).await;
            p.send(&hello(MAGIC, VERSION, MINE, extra)).await;
            let mut rest = Vec::new();
            let read = tokio::time::timeout(READ_TIMEOUT, p.stream.read_to_end(&mut rest)).await;
            assert!(
                read.is_ok(),
                "a Hello followed by {extra:02x?} was kept open"
            );
            assert_eq!(
                rest, b"",
                "no reply to malformed authentication fields {extra:02x?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_magic_closes_the_connection_without_a_reply() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::connect(&s.server).await;
        p.send(&hello(b"IPCX", VERSION, MINE, &[])).await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(READ_TIMEOUT, p.stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server kept the connection open");
        assert_eq!(rest, b"", "no reply to a wrong magic");
    })
    .await;
}

#[tokio::test]
async fn wrong_version_gets_the_server_hello_then_close() {
    within(10, async {
        let s = scene(|b| b).await;
        for version in [1u16, 3, u16::MAX] {
            let mut p = Peer::connect(&s.server).await;
            p.send(&hello(MAGIC, version, MINE, &[])).await;
            server_hello(&p.frame().await);
            p.assert_closed_silently(&format!("a Hello of version {version}"))
                .await;
        }
    })
    .await;
}

#[tokio::test]
async fn at_the_connection_limit_the_answer_to_hello_is_go_away_reason_1() {
    within(10, async {
        let s = scene(|b| b.max_connections(1)).await;
        let mut first = Peer::open(&s.server).await;
        let mut p = Peer::connect(&s.server).await;
        p.send(&hello(MAGIC, VERSION, MINE, &[])).await;
        let frames = p.until_closed().await;
        assert_eq!(frames.len(), 1, "one GoAway, then close: {frames:?}");
        let go_away = &frames[0];
        assert_eq!(
            (go_away.kind, go_away.id),
            (GO_AWAY, 1),
            "GoAway, reason 1: {go_away:?}"
        );
        assert!(
            go_away.payload.is_empty() || go_away.payload.len() == 8,
            "a GoAway payload is empty or a u64: {go_away:?}"
        );
        let conf = first.conf().await;
        first.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn a_second_hello_closes_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        p.send(&hello(MAGIC, VERSION, MINE, &[])).await;
        p.assert_closed_silently("a second Hello").await;
    })
    .await;
}

#[tokio::test]
async fn reserved_kinds_close_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        for kind in [10u8, 11, 255] {
            let mut p = Peer::open(&s.server).await;
            p.send(&frame(kind, 1, &[])).await;
            p.assert_closed_silently(&format!("a frame of kind {kind}"))
                .await;
        }
    })
    .await;
}

#[tokio::test]
async fn trailing_bytes_after_arguments_or_arguments_that_do_not_decode_get_19() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let mut args = enc(&(1i64, 2i64));
        args.push(0);
        let (status, body) = p.call(conf, conf_m::ADD, &args).await;
        assert_eq!(status, BAD_REQUEST, "{}", detail(&body));
        string_body(status, &body);
        // Arguments to a method that takes none.
        let (status, _) = p.call(conf, conf_m::FAST, &[0]).await;
        assert_eq!(status, BAD_REQUEST);
        // Arguments cut short.
        let (status, _) = p.call(conf, conf_m::ADD, &enc(&1i64)).await;
        assert_eq!(status, BAD_REQUEST);
        // The connection goes on.
        assert_eq!(
            p.ok(conf, conf_m::ADD, &enc(&(1i64, 2i64))).await,
            enc(&3i64)
        );
    })
    .await;
}

#[tokio::test]
async fn cancel_credit_or_release_with_extra_bytes_closes_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        let cases = [
            ("a Cancel with a payload", frame(CANCEL, 1, &[0])),
            ("a Credit with 5 bytes", frame(CREDIT, 1, &[1, 0, 0, 0, 0])),
            (
                "a Release with a payload",
                frame(RELEASE, u64::from(EXPORTED), &[0]),
            ),
        ];
        for (what, bytes) in cases {
            let mut p = Peer::open(&s.server).await;
            let conf = p.conf().await;
            p.ping(conf).await;
            p.send(&bytes).await;
            p.assert_closed_silently(what).await;
        }
    })
    .await;
}

#[tokio::test]
async fn payloads_shorter_than_their_kind_requires_close_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        let cases = [
            ("a Request of 9 payload bytes", frame(REQUEST, 100, &[0; 9])),
            ("a Oneway of 3 payload bytes", frame(ONEWAY, 100, &[0; 3])),
            ("a Credit of 3 payload bytes", frame(CREDIT, 100, &[0; 3])),
            ("a GoAway of 3 payload bytes", frame(GO_AWAY, 0, &[0; 3])),
        ];
        for (what, bytes) in cases {
            let mut p = Peer::open(&s.server).await;
            let conf = p.conf().await;
            p.ping(conf).await;
            p.send(&bytes).await;
            p.assert_closed_silently(what).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_response_nobody_asked_for_closes_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.ping(conf).await;
        p.send(&frame(RESPONSE, 1, &[OK])).await;
        p.assert_closed_silently("a Response the server never asked for")
            .await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 8. Deadlines
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_call_still_running_at_its_deadline_gets_status_26() {
    within(10, async {
        let mut s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let id = p.id();
        p.send(&call_frame(REQUEST, id, conf, conf_m::PARK, 30, &[]))
            .await;
        s.parked().await;
        assert_eq!(p.frame().await.response_to(id), (DEADLINE, vec![]));
        let id = p.id();
        p.send(&call_frame(
            REQUEST,
            id,
            conf,
            conf_m::SLEEP_MS,
            20,
            &enc(&60_000u64),
        ))
        .await;
        assert_eq!(p.frame().await.response_to(id), (DEADLINE, vec![]));
        // A deadline that does not pass changes nothing.
        let id = p.id();
        p.send(&call_frame(
            REQUEST,
            id,
            conf,
            conf_m::SLEEP_MS,
            60_000,
            &enc(&5u64),
        ))
        .await;
        assert_eq!(p.frame().await.response_to(id), (OK, enc(&5u64)));
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn a_handler_that_finishes_on_its_first_run_is_answered_even_with_a_1_ms_deadline() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        for _ in 0..20 {
            let id = p.id();
            p.send(&call_frame(
                REQUEST,
                id,
                conf,
                conf_m::ADD,
                1,
                &enc(&(40i64, 2i64)),
            ))
            .await;
            assert_eq!(p.frame().await.response_to(id), (OK, enc(&42i64)));
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 9. Encodings
// ---------------------------------------------------------------------------

/// Sends `value` (hand-encoded) to an `Echo` method and checks the server
/// decoded it as `shown` and sent back the same bytes.
async fn echo_case<T>(p: &mut Peer, echo: u32, method: u16, value: T, shown: &str)
where
    T: Enc + Dec + PartialEq + fmt::Debug,
{
    let bytes = enc(&value);
    let body = p.ok(echo, method, &bytes).await;
    assert_eq!(
        &body[..bytes.len().min(body.len())],
        bytes,
        "{} echoed {value:?} as other bytes",
        ECHO_SIGS[usize::from(method)]
    );
    let (back, server_saw): (T, String) = dec(&body);
    assert_eq!(back, value);
    assert_eq!(
        server_saw, shown,
        "what the server decoded from {bytes:02x?}"
    );
}

#[tokio::test]
async fn every_type_in_the_bodies_table_round_trips_through_the_server() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let e = p.resolve("Echo", "Echo", &ECHO_SIGS).await;
        echo_case(&mut p, e, 0, (), "()").await;
        echo_case(&mut p, e, 1, 1.5f32, "1.5").await;
        echo_case(&mut p, e, 1, -0.1f32, "-0.1").await;
        echo_case(&mut p, e, 2, 6.25e-300f64, "6.25e-300").await;
        // char: UTF-8, 1 to 4 bytes, no length.
        assert_eq!(enc(&'€'), [0xE2, 0x82, 0xAC]);
        for (c, shown) in [('a', "'a'"), ('é', "'é'"), ('€', "'€'"), ('🦀', "'🦀'")] {
            echo_case(&mut p, e, 3, c, shown).await;
        }
        echo_case(&mut p, e, 4, u128::MAX - 1, &format!("{}", u128::MAX - 1)).await;
        echo_case(&mut p, e, 5, i128::MIN + 3, &format!("{}", i128::MIN + 3)).await;
        // A unit struct is nothing.
        echo_case(&mut p, e, 6, (), "Unit").await;
        // Enums: a u32 variant index, then the fields.
        echo_case(&mut p, e, 7, 0u32, "Empty").await;
        echo_case(&mut p, e, 7, (1u32, 2.5f64), "Circle(2.5)").await;
        echo_case(&mut p, e, 7, (2u32, 3u32, 4u32), "Rect { w: 3, h: 4 }").await;
        echo_case(&mut p, e, 7, (3u32, 7u8, "x".to_owned()), "Pair(7, \"x\")").await;
        echo_case(&mut p, e, 8, None::<u16>, "None").await;
        echo_case(&mut p, e, 8, Some(513u16), "Some(513)").await;
        echo_case(&mut p, e, 9, vec![1i32, -2, 3], "[1, -2, 3]").await;
        echo_case(&mut p, e, 9, Vec::<i32>::new(), "[]").await;
        echo_case(&mut p, e, 10, "héllo, wörld".to_owned(), "\"héllo, wörld\"").await;
        echo_case(&mut p, e, 11, true, "true").await;
        echo_case(&mut p, e, 11, false, "false").await;
        let map: BTreeMap<String, u8> = [("a".to_owned(), 1), ("b".to_owned(), 2)].into();
        echo_case(&mut p, e, 12, map, "{\"a\": 1, \"b\": 2}").await;
        echo_case(&mut p, e, 13, (-1i16, 2i16), "Point { x: -1, y: 2 }").await;
        echo_case(&mut p, e, 14, 5u32, "Meters(5)").await;
        echo_case(&mut p, e, 15, [1u8, 2, 3], "[1, 2, 3]").await;
        echo_case(
            &mut p,
            e,
            16,
            usize::MAX >> 1,
            &format!("{}", usize::MAX >> 1),
        )
        .await;
        echo_case(&mut p, e, 17, -5i8, "-5").await;
    })
    .await;
}

#[tokio::test]
async fn a_bool_other_than_0_or_1_and_a_value_nested_too_deep_do_not_decode() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let e = p.resolve("Echo", "Echo", &ECHO_SIGS).await;
        let (status, body) = p.call(e, 11, &[2]).await;
        assert_eq!(status, BAD_REQUEST, "a bool of 2: {}", detail(&body));
        let (status, _) = p.call(e, 7, &enc(&4u32)).await;
        assert_eq!(status, BAD_REQUEST, "an enum variant index past the last");
        let (status, _) = p.call(e, 8, &[2, 0, 0]).await;
        assert_eq!(status, BAD_REQUEST, "an Option tag of 2");

        // Tree: Node is variant 1 (with the subtree), Leaf variant 0.
        let tree = |depth: usize| {
            let mut b = enc(&1u32).repeat(depth);
            b.extend(enc(&0u32));
            b
        };
        assert_eq!(p.ok(e, 18, &tree(20)).await, enc(&20u32));
        let (status, body) = p.call(e, 18, &tree(300)).await;
        assert_eq!(status, BAD_REQUEST, "300 levels deep: {}", detail(&body));
        p.resolve("Echo", "Echo", &ECHO_SIGS).await;
    })
    .await;
}

#[tokio::test]
async fn name_server_register_and_lookup_with_a_hand_encoded_registration() {
    within(10, async {
        let s = scene(|b| b.idle_timeout(None).name_server()).await;
        let mut p = Peer::open(&s.server).await;
        // What a client in another language knows: the directory.
        let directory = p.directory().await;
        let (_, trait_name, fp, methods) = find(&directory, "NameServer").clone();
        let sigs: Vec<&str> = methods.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(
            fp,
            fingerprint(&trait_name, &sigs),
            "the listed fingerprint is FNV-1a of the listed signatures"
        );
        let index = |name: &str| {
            methods
                .iter()
                .position(|m| m.0 == name)
                .map(|i| i as u16)
                .unwrap_or_else(|| panic!("no {name} among {sigs:?}"))
        };
        let (register, lookup) = (index("register"), index("lookup"));
        assert_eq!(
            sigs[usize::from(register)],
            "register(String,Registration)->Result<(),NameError>"
        );
        assert_eq!(
            sigs[usize::from(lookup)],
            "lookup(String)->Option<Registration>"
        );
        let ns = p.resolve("NameServer", &trait_name, &sigs).await;

        // Registration: (addr String, object String, metadata BTreeMap<String, String>).
        let addr = s.server.local_addr().to_string();
        let metadata: BTreeMap<String, String> = [("version".to_owned(), "2".to_owned())].into();
        let registration = (addr.clone(), "Conf".to_owned(), metadata);
        let body = p
            .ok(ns, register, &enc(&("conf.test", &registration)))
            .await;
        assert_eq!(body, b"", "Ok(()) is an empty body");
        let body = p.ok(ns, lookup, &enc(&"conf.test")).await;
        assert_eq!(
            dec::<Option<(String, String, BTreeMap<String, String>)>>(&body),
            Some(registration.clone())
        );
        assert_eq!(p.ok(ns, lookup, &enc(&"conf.missing")).await, [0], "None");

        // NameError: 1 InvalidName { name, reason }, 3 InvalidAddress { addr, reason }.
        let (status, body) = p.call(ns, register, &enc(&("", &registration))).await;
        assert_eq!(status, APP_ERROR, "{}", detail(&body));
        let (variant, name, _reason): (u32, String, String) = dec(&body);
        assert_eq!((variant, name.as_str()), (1, ""));
        let bad = (
            "not an address".to_owned(),
            "Conf".to_owned(),
            BTreeMap::<String, String>::new(),
        );
        let (status, body) = p.call(ns, register, &enc(&("conf.bad", &bad))).await;
        assert_eq!(status, APP_ERROR, "{}", detail(&body));
        let (variant, addr_back, _reason): (u32, String, String) = dec(&body);
        assert_eq!((variant, addr_back.as_str()), (3, "not an address"));
    })
    .await;
}

// ---------------------------------------------------------------------------
// 10. Handles
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_handle_that_names_nothing_gets_status_16() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        for handle in [77_777u32, EXPORTED - 1, EXPORTED, EXPORTED + 9, u32::MAX] {
            let (status, body) = p.call(handle, 0, &[]).await;
            assert_eq!(status, UNKNOWN_OBJECT, "handle {handle}: {}", detail(&body));
            string_body(status, &body);
        }
        // A handle obtained on another connection names nothing here.
        let mut other = Peer::open(&s.server).await;
        let conf = other.conf().await;
        let counter: u32 = dec(&other.ok(conf, conf_m::COUNTER, &[]).await);
        let (status, _) = p.call(counter, 0, &[]).await;
        assert_eq!(
            status, UNKNOWN_OBJECT,
            "an exported handle of another connection"
        );
        assert_eq!(other.ok(counter, 0, &[]).await, enc(&1u64));
    })
    .await;
}

// ---------------------------------------------------------------------------
// Statuses not covered above: 1, 20, 23, 24
// ---------------------------------------------------------------------------

#[tokio::test]
async fn application_error_panic_and_unencodable_return_get_1_20_and_23() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        assert_eq!(
            p.call(conf, conf_m::FAIL, &enc(&"nope")).await,
            (APP_ERROR, enc(&"nope"))
        );
        let (status, body) = p.call(conf, conf_m::BOOM, &enc(&"conformance panic")).await;
        assert_eq!(status, PANICKED, "{}", detail(&body));
        assert_eq!(string_body(status, &body), "conformance panic");
        let (status, body) = p.call(conf, conf_m::UNENCODABLE, &[]).await;
        assert_eq!(status, ENCODE_FAILED, "{}", detail(&body));
        string_body(status, &body);
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn a_call_beyond_max_in_flight_gets_24_and_does_not_run() {
    within(10, async {
        let mut s = scene(|b| b.max_in_flight(1)).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let parked = p.id();
        p.send(&request(parked, conf, conf_m::PARK, &[])).await;
        s.parked().await;
        let (status, body) = p.call(conf, conf_m::RECORD, &enc(&1u64)).await;
        assert_eq!(status, OVERLOADED, "{}", detail(&body));
        string_body(status, &body);
        s.gate.notify_one();
        assert_eq!(p.frame().await.response_to(parked), (OK, enc(&1u32)));
        assert_eq!(p.ok(conf, conf_m::RECORD, &enc(&2u64)).await, enc(&2u64));
        assert_eq!(s.notes(), [2], "the refused call did not run");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Streams: kinds 6, 7, 8
// ---------------------------------------------------------------------------

/// The consumer's view of one stream's credit.
struct Flow {
    id: u64,
    /// Granted minus sent, in bytes of StreamItem `length`.
    balance: i64,
}

impl Flow {
    async fn grant(&mut self, p: &mut Peer, bytes: u32) {
        p.send(&credit(self.id, bytes)).await;
        self.balance += i64::from(bytes);
    }

    /// Reads the next frame: item `value`, which the producer had credit for.
    async fn item(&mut self, p: &mut Peer, value: u64) {
        let f = p.frame().await;
        assert_eq!(
            f,
            Frame {
                kind: STREAM_ITEM,
                id: self.id,
                payload: enc(&value)
            },
            "expected item {value}"
        );
        assert!(
            self.balance > 0,
            "item {value} arrived with {} bytes of credit left",
            self.balance
        );
        self.balance -= 9 + f.payload.len() as i64;
    }
}

#[tokio::test]
async fn a_stream_sends_ok_then_items_only_within_its_credit_in_bytes_then_one_end() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let id = p.id();
        p.send(&request(id, conf, conf_m::COUNT, &enc(&6u64))).await;
        assert_eq!(
            p.frame().await.response_to(id),
            (OK, vec![]),
            "a stream opens with an empty ok"
        );
        // No credit yet: no item.
        p.ping(conf).await;
        let mut flow = Flow { id, balance: 0 };
        // 40 bytes: items of 17 start at 40, 23 and 6 bytes left.
        flow.grant(&mut p, 40).await;
        for i in 0..3 {
            flow.item(&mut p, i).await;
        }
        assert_eq!(flow.balance, -11, "the third item overshot by 11 bytes");
        p.ping(conf).await;
        // The overshoot is owed: 11 more bytes leave nothing to spend.
        flow.grant(&mut p, 11).await;
        p.ping(conf).await;
        p.ping(conf).await;
        flow.grant(&mut p, 1).await;
        flow.item(&mut p, 3).await;
        p.ping(conf).await;
        flow.grant(&mut p, 1000).await;
        flow.item(&mut p, 4).await;
        flow.item(&mut p, 5).await;
        assert_eq!(p.frame().await.stream_end_of(id), (OK, vec![]));
        // Nothing follows the end; a Credit for the ended stream is ignored.
        p.send(&credit(id, 100)).await;
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn a_stream_end_needs_no_credit() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let id = p.id();
        p.send(&request(id, conf, conf_m::COUNT, &enc(&3u64))).await;
        p.send(&credit(id, 40)).await;
        assert_eq!(p.frame().await.response_to(id), (OK, vec![]));
        let mut flow = Flow { id, balance: 40 };
        for i in 0..3 {
            flow.item(&mut p, i).await;
        }
        assert_eq!(p.frame().await.stream_end_of(id), (OK, vec![]));
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn cancel_of_a_stream_ends_it_with_status_25() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let id = p.id();
        p.send(&request(id, conf, conf_m::COUNT, &enc(&u64::MAX)))
            .await;
        p.send(&credit(id, 17)).await;
        assert_eq!(p.frame().await.response_to(id), (OK, vec![]));
        let mut flow = Flow { id, balance: 17 };
        flow.item(&mut p, 0).await;
        p.send(&cancel(id)).await;
        assert_eq!(p.frame().await.stream_end_of(id), (CANCELLED, vec![]));
        p.ping(conf).await;
        eventually(5, "the stream is closed on the server", || {
            s.server.stats().streams == 0
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn credit_for_an_id_never_read_closes_and_for_one_without_a_stream_is_ignored() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.last_id = 10;
        p.ping(conf).await;
        // A call that opened no stream, and an id skipped over.
        p.send(&credit(p.last_id, 100)).await;
        p.send(&credit(5, 100)).await;
        p.ping(conf).await;
        // Above the highest request id the server has read.
        p.send(&credit(p.last_id + 1, 100)).await;
        p.assert_closed_silently("a Credit for an id above any request")
            .await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Remote objects and Release (kind 9)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_returned_object_has_a_handle_from_2_31_until_released_and_a_second_release_closes() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let a: u32 = dec(&p.ok(conf, conf_m::COUNTER, &[]).await);
        let b: u32 = dec(&p.ok(conf, conf_m::COUNTER, &[]).await);
        assert!(
            a >= EXPORTED && b >= EXPORTED,
            "exported handles are ≥ 2^31: {a}, {b}"
        );
        assert_ne!(a, b, "handles are never reused");
        assert_eq!(p.ok(a, 0, &[]).await, enc(&1u64));
        assert_eq!(p.ok(a, 0, &[]).await, enc(&2u64));
        assert_eq!(p.ok(b, 0, &[]).await, enc(&1u64));
        assert_eq!(s.server.stats().remote_objects, 2);

        p.send(&release(a)).await;
        let (status, body) = p.call(a, 0, &[]).await;
        assert_eq!(
            status,
            UNKNOWN_OBJECT,
            "a released object: {}",
            detail(&body)
        );
        string_body(status, &body);
        assert_eq!(p.ok(b, 0, &[]).await, enc(&2u64));
        eventually(5, "the released object is dropped", || {
            s.server.stats().remote_objects == 1
        })
        .await;
        let c: u32 = dec(&p.ok(conf, conf_m::COUNTER, &[]).await);
        assert!(c != a && c != b && c >= EXPORTED, "a fresh handle: {c}");

        p.send(&release(a)).await;
        p.assert_closed_silently("a second Release of the same handle")
            .await;
        eventually(
            5,
            "everything exported is dropped with the connection",
            || s.server.stats().remote_objects == 0,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_callback_object_the_client_exports_is_called_and_released_over_the_same_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let mine = EXPORTED + 7;
        // The server calls `Listener::hear(5)` on our handle, with its own id.
        let (call, id) = asked(&mut p, conf, mine).await;
        assert!(call.id >= 1);
        assert!(call.payload.len() >= 10, "{call:?}");
        assert_eq!(dec::<u32>(&call.payload[..4]), mine, "to our handle");
        assert_eq!(dec::<u16>(&call.payload[4..6]), 0, "method 0, hear");
        assert_eq!(&call.payload[10..], enc(&5u64), "hear's argument");
        p.send(&frame(
            RESPONSE,
            call.id,
            &[&[OK][..], &enc(&1005u64)].concat(),
        ))
        .await;
        // Our call's answer, and the server's Release of our object, in
        // either order.
        let mut frames = [p.frame().await, p.frame().await];
        frames.sort_by_key(|f| f.kind);
        assert_eq!(frames[0].response_to(id), (OK, enc(&1005u64)));
        assert_eq!(
            frames[1],
            Frame {
                kind: RELEASE,
                id: u64::from(mine),
                payload: vec![]
            },
            "the server releases the callback when done with it"
        );
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn stream_ends_carry_20_and_23_and_a_refused_stream_opens_none() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;

        // The producer panics after item 0: StreamEnd 20, the panic message.
        let id = p.id();
        p.send(&request(id, conf, conf_m::PANICKY, &[])).await;
        p.send(&credit(id, 1 << 16)).await;
        assert_eq!(p.frame().await.response_to(id), (OK, vec![]));
        let mut flow = Flow {
            id,
            balance: 1 << 16,
        };
        flow.item(&mut p, 0).await;
        let (status, body) = p.frame().await.stream_end_of(id);
        assert_eq!(status, PANICKED, "{}", detail(&body));
        assert!(
            string_body(status, &body).contains("the producer panics at item 1"),
            "{}",
            detail(&body)
        );

        // An item that fails to encode: StreamEnd 23.
        let id = p.id();
        p.send(&request(id, conf, conf_m::BAD_ITEMS, &[])).await;
        p.send(&credit(id, 1 << 16)).await;
        assert_eq!(p.frame().await.response_to(id), (OK, vec![]));
        let (status, body) = p.frame().await.stream_end_of(id);
        assert_eq!(status, ENCODE_FAILED, "{}", detail(&body));
        string_body(status, &body);

        // Refused with an application error: no stream opens, and a Credit
        // for it is ignored.
        let id = p.id();
        p.send(&request(id, conf, conf_m::MAYBE, &enc(&false)))
            .await;
        p.send(&credit(id, 1 << 16)).await;
        assert_eq!(
            p.frame().await.response_to(id),
            (APP_ERROR, enc(&"refused"))
        );
        p.ping(conf).await;

        // `Result<Streaming<T>, E>` that opens.
        let id = p.id();
        p.send(&request(id, conf, conf_m::MAYBE, &enc(&true))).await;
        p.send(&credit(id, 1 << 16)).await;
        assert_eq!(p.frame().await.response_to(id), (OK, vec![]));
        let mut flow = Flow {
            id,
            balance: 1 << 16,
        };
        for i in [7, 8, 9] {
            flow.item(&mut p, i).await;
        }
        assert_eq!(p.frame().await.stream_end_of(id), (OK, vec![]));
        p.ping(conf).await;
    })
    .await;
}

#[tokio::test]
async fn the_open_stream_and_exported_object_limits_get_24() {
    within(10, async {
        let s = scene(|b| b.max_streams(1).max_objects(1)).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;

        // One stream open (no credit, so it stays open); a second is refused.
        let open = p.id();
        p.send(&request(open, conf, conf_m::COUNT, &enc(&u64::MAX)))
            .await;
        assert_eq!(p.frame().await.response_to(open), (OK, vec![]));
        let (status, body) = p.call(conf, conf_m::COUNT, &enc(&3u64)).await;
        assert_eq!(status, OVERLOADED, "a second stream: {}", detail(&body));
        string_body(status, &body);
        p.send(&cancel(open)).await;
        assert_eq!(p.frame().await.stream_end_of(open), (CANCELLED, vec![]));
        eventually(5, "the cancelled stream is closed", || {
            s.server.stats().streams == 0
        })
        .await;
        let id = p.id();
        p.send(&request(id, conf, conf_m::COUNT, &enc(&0u64))).await;
        p.send(&credit(id, 100)).await;
        assert_eq!(p.frame().await.response_to(id), (OK, vec![]));
        assert_eq!(p.frame().await.stream_end_of(id), (OK, vec![]));

        // One object exported; a second is refused.
        let a: u32 = dec(&p.ok(conf, conf_m::COUNTER, &[]).await);
        let (status, body) = p.call(conf, conf_m::COUNTER, &[]).await;
        assert_eq!(
            status,
            OVERLOADED,
            "a second exported object: {}",
            detail(&body)
        );
        string_body(status, &body);
        p.send(&release(a)).await;
        eventually(5, "the released object is dropped", || {
            s.server.stats().remote_objects == 0
        })
        .await;
        let b: u32 = dec(&p.ok(conf, conf_m::COUNTER, &[]).await);
        assert_ne!(a, b);
    })
    .await;
}

#[tokio::test]
async fn a_release_of_a_handle_that_is_not_exported_closes_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.ping(conf).await;
        p.send(&release(EXPORTED + 12_345)).await;
        p.assert_closed_silently("a Release of a handle never exported")
            .await;

        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        p.ping(conf).await;
        p.send(&release(conf)).await;
        p.assert_closed_silently("a Release of a named object's handle")
            .await;
    })
    .await;
}

/// Starts `Conf::ask` with our object `mine` and returns the server's
/// request to it (`Listener::hear(5)`) and our request's id.
async fn asked(p: &mut Peer, conf: u32, mine: u32) -> (Frame, u64) {
    let id = p.id();
    p.send(&request(id, conf, conf_m::ASK, &enc(&(mine, 5u64))))
        .await;
    let call = p.frame().await;
    assert_eq!(
        call.kind, REQUEST,
        "the server's request to our object: {call:?}"
    );
    (call, id)
}

#[tokio::test]
async fn a_response_with_an_unknown_status_or_to_an_answered_request_closes_the_connection() {
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let (call, _) = asked(&mut p, conf, EXPORTED + 1).await;
        p.send(&frame(RESPONSE, call.id, &[99])).await;
        p.assert_closed_silently("a Response with status 99").await;

        let mut p = Peer::open(&s.server).await;
        let conf = p.conf().await;
        let (call, id) = asked(&mut p, conf, EXPORTED + 1).await;
        let answer = frame(RESPONSE, call.id, &[&[OK][..], &enc(&6u64)].concat());
        p.send(&answer).await;
        let mut frames = [p.frame().await, p.frame().await];
        frames.sort_by_key(|f| f.kind);
        assert_eq!(frames[0].response_to(id), (OK, enc(&6u64)));
        assert_eq!(frames[1].kind, RELEASE, "{frames:?}");
        p.send(&answer).await;
        p.assert_closed_silently("a second Response to the same request")
            .await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Method schemas (system method 2, "Method schemas")
// ---------------------------------------------------------------------------

/// `Format`, decoded per the README's layout (variant index `u32`, then the
/// payload).
#[derive(Debug, Clone, PartialEq)]
enum SFormat {
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Option(Box<SFormat>),
    Seq(Box<SFormat>),
    Map(Box<SFormat>, Box<SFormat>),
    Tuple(Vec<SFormat>),
    TupleArray(Box<SFormat>, u64),
    TypeName(String),
    Opaque(String),
}

impl Dec for SFormat {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        use SFormat::*;
        let boxed = |r: &mut Reader<'_>| SFormat::dec(r).map(Box::new);
        Ok(match u32::dec(r)? {
            0 => Unit,
            1 => Bool,
            2 => I8,
            3 => I16,
            4 => I32,
            5 => I64,
            6 => I128,
            7 => U8,
            8 => U16,
            9 => U32,
            10 => U64,
            11 => U128,
            12 => F32,
            13 => F64,
            14 => Char,
            15 => Str,
            16 => Bytes,
            17 => Option(boxed(r)?),
            18 => Seq(boxed(r)?),
            19 => Map(boxed(r)?, boxed(r)?),
            20 => Tuple(Vec::dec(r)?),
            21 => TupleArray(boxed(r)?, u64::dec(r)?),
            22 => TypeName(String::dec(r)?),
            23 => Opaque(String::dec(r)?),
            other => return Err(format!("no Format variant {other}")),
        })
    }
}

/// `VariantFormat`.
#[derive(Debug, Clone, PartialEq)]
enum SVariant {
    Unit,
    NewType(SFormat),
    Tuple(Vec<SFormat>),
    Struct(Vec<(String, SFormat)>),
}

impl Dec for SVariant {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        Ok(match u32::dec(r)? {
            0 => Self::Unit,
            1 => Self::NewType(SFormat::dec(r)?),
            2 => Self::Tuple(Vec::dec(r)?),
            3 => Self::Struct(Vec::dec(r)?),
            other => return Err(format!("no VariantFormat variant {other}")),
        })
    }
}

/// `ContainerFormat`.
#[derive(Debug, Clone, PartialEq)]
enum SContainer {
    UnitStruct,
    NewTypeStruct(SFormat),
    TupleStruct(Vec<SFormat>),
    Struct(Vec<(String, SFormat)>),
    Enum(Vec<(String, SVariant)>),
}

impl Dec for SContainer {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        Ok(match u32::dec(r)? {
            0 => Self::UnitStruct,
            1 => Self::NewTypeStruct(SFormat::dec(r)?),
            2 => Self::TupleStruct(Vec::dec(r)?),
            3 => Self::Struct(Vec::dec(r)?),
            4 => Self::Enum(Vec::dec(r)?),
            other => return Err(format!("no ContainerFormat variant {other}")),
        })
    }
}

/// `Output`.
#[derive(Debug, Clone, PartialEq)]
enum SOutput {
    Value(SFormat),
    Fallible(SFormat, SFormat),
    Stream(SFormat),
    FallibleStream(SFormat, SFormat),
}

impl Dec for SOutput {
    fn dec(r: &mut Reader<'_>) -> Result<Self, String> {
        Ok(match u32::dec(r)? {
            0 => Self::Value(SFormat::dec(r)?),
            1 => Self::Fallible(SFormat::dec(r)?, SFormat::dec(r)?),
            2 => Self::Stream(SFormat::dec(r)?),
            3 => Self::FallibleStream(SFormat::dec(r)?, SFormat::dec(r)?),
            other => return Err(format!("no Output variant {other}")),
        })
    }
}

/// `MethodSchema`: name, signature, oneway, idempotent, args, output.
type SMethod = (String, String, bool, bool, Vec<(String, SFormat)>, SOutput);
/// `ObjectSchema`: name, trait name, fingerprint, methods, types.
type SObject = (String, String, u64, Vec<SMethod>, Vec<(String, SContainer)>);

#[derive(Debug, Serialize, Deserialize)]
pub struct Spot {
    x: i32,
    y: i32,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Figure {
    Dot,
    Circle(Spot, u32),
    Poly { points: Vec<Spot>, closed: bool },
    Tag(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Id(u64);

#[derive(Debug, Serialize, Deserialize)]
pub struct Marker;

/// Every kind of output, argument names (a raw one too) and named types.
#[expose]
pub trait Shapes {
    #[idempotent]
    async fn area(&self, shape: Figure, scale: Option<f64>) -> Result<f64, String>;
    async fn index(
        &self,
        by_id: BTreeMap<String, Id>,
        raw: ipc_core::Bytes,
        pair: (u8, char),
        grid: [u16; 2],
    ) -> Marker;
    #[oneway]
    async fn forget(&self, id: Id);
    async fn watch(&self, r#type: u128) -> Result<Streaming<Figure>, ()>;
}

struct ShapesImpl;

impl Shapes for ShapesImpl {
    async fn area(&self, _: Figure, _: Option<f64>) -> Result<f64, String> {
        Ok(0.0)
    }
    async fn index(
        &self,
        _: BTreeMap<String, Id>,
        _: ipc_core::Bytes,
        _: (u8, char),
        _: [u16; 2],
    ) -> Marker {
        Marker
    }
    async fn forget(&self, _: Id) {}
    async fn watch(&self, _: u128) -> Result<Streaming<Figure>, ()> {
        Err(())
    }
}

/// Asks for the schema of `name` (system method 2); the status and body.
async fn schema_of(p: &mut Peer, name: &str) -> (u8, Vec<u8>) {
    p.call(0, 2, &enc(name)).await
}

#[tokio::test]
async fn schema_lists_each_method_with_argument_names_formats_output_and_the_named_types() {
    use SFormat::*;
    within(10, async {
        let s = scene(|b| b.expose_as("shapes", ShapesServer::new(ShapesImpl))).await;
        let mut p = Peer::open(&s.server).await;
        let (status, body) = schema_of(&mut p, "shapes").await;
        assert_eq!(status, OK, "{}", detail(&body));
        let (name, trait_name, fp, methods, types): SObject = dec(&body);
        assert_eq!((name.as_str(), trait_name.as_str()), ("shapes", "Shapes"));
        // Fingerprint and signatures are the directory's.
        let directory = p.directory().await;
        let listed = find(&directory, "shapes");
        assert_eq!(fp, listed.2);
        let signatures: Vec<&str> = methods.iter().map(|m| m.1.as_str()).collect();
        let listed_signatures: Vec<&str> = listed.3.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(signatures, listed_signatures);
        assert_eq!(fp, fingerprint("Shapes", &signatures));

        let t = |n: &str| TypeName(n.into());
        let b = Box::new;
        let arg = |n: &str, f: SFormat| (n.to_owned(), f);
        let shape: Vec<_> = methods
            .iter()
            .map(|(name, _, oneway, idempotent, args, output)| {
                (
                    name.as_str(),
                    *oneway,
                    *idempotent,
                    args.clone(),
                    output.clone(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    "area",
                    false,
                    true,
                    vec![arg("shape", t("Figure")), arg("scale", Option(b(F64)))],
                    SOutput::Fallible(F64, Str),
                ),
                (
                    "index",
                    false,
                    false,
                    vec![
                        arg("by_id", Map(b(Str), b(t("Id")))),
                        arg("raw", Bytes),
                        arg("pair", Tuple(vec![U8, Char])),
                        arg("grid", TupleArray(b(U16), 2)),
                    ],
                    SOutput::Value(t("Marker")),
                ),
                (
                    "forget",
                    true,
                    false,
                    vec![arg("id", t("Id"))],
                    SOutput::Value(Unit)
                ),
                (
                    "watch",
                    false,
                    false,
                    vec![arg("type", U128)],
                    SOutput::FallibleStream(t("Figure"), Unit),
                ),
            ]
        );
        let field = |n: &str, f: SFormat| (n.to_owned(), f);
        assert_eq!(
            types,
            vec![
                (
                    "Figure".to_owned(),
                    SContainer::Enum(vec![
                        ("Dot".to_owned(), SVariant::Unit),
                        ("Circle".to_owned(), SVariant::Tuple(vec![t("Spot"), U32])),
                        (
                            "Poly".to_owned(),
                            SVariant::Struct(vec![
                                field("points", Seq(b(t("Spot")))),
                                field("closed", Bool),
                            ])
                        ),
                        ("Tag".to_owned(), SVariant::NewType(Str)),
                    ])
                ),
                ("Id".to_owned(), SContainer::NewTypeStruct(U64)),
                ("Marker".to_owned(), SContainer::UnitStruct),
                (
                    "Spot".to_owned(),
                    SContainer::Struct(vec![field("x", I32), field("y", I32)])
                ),
            ],
            "named types, sorted by name, enum variants in index order"
        );
    })
    .await;
}

#[tokio::test]
async fn schema_describes_streams_and_results_and_makes_object_handles_opaque() {
    use SFormat::*;
    within(10, async {
        let s = scene(|b| b).await;
        let mut p = Peer::open(&s.server).await;
        let (name, _, _, methods, _): SObject = dec(&p.ok(0, 2, &enc("Conf")).await);
        assert_eq!(name, "Conf");
        assert_eq!(methods.len(), CONF_SIGS.len());
        let m = |i: u16| &methods[usize::from(i)];
        assert_eq!(m(conf_m::COUNT).5, SOutput::Stream(U64));
        assert_eq!(
            m(conf_m::ADD).4,
            vec![("a".to_owned(), I64), ("b".to_owned(), I64)]
        );
        let (note, fast) = (m(conf_m::NOTE), m(conf_m::FAST));
        assert_eq!((note.2, note.3, fast.2, fast.3), (true, false, false, true));
        let ask = &m(conf_m::ASK).4;
        assert!(
            matches!(&ask[0], (n, Opaque(why)) if n == "listener" && why.contains("Remote")),
            "a Remote<P> argument is opaque: {ask:?}"
        );
        assert_eq!(
            ask[1],
            ("n".to_owned(), U64),
            "the other arguments are described"
        );
        assert!(matches!(&m(conf_m::COUNTER).5, SOutput::Value(Opaque(_))));
        let last = methods.last().map(|m| m.5.clone());
        assert_eq!(last, Some(SOutput::FallibleStream(U64, Str)), "maybe");
    })
    .await;
}

#[tokio::test]
async fn schema_of_an_unknown_or_hidden_name_gets_16_and_undecodable_arguments_19() {
    within(10, async {
        let s = scene(|b| {
            b.authorize(|_, access| !matches!(access, ipc_core::Access::Object { object: "Echo" }))
        })
        .await;
        let mut p = Peer::open(&s.server).await;
        for name in ["Nobody", "Echo"] {
            let (status, body) = schema_of(&mut p, name).await;
            assert_eq!(status, UNKNOWN_OBJECT, "{name}: {}", detail(&body));
            assert_eq!(string_body(status, &body), name);
        }
        let (status, body) = p.call(0, 2, &[]).await;
        assert_eq!(status, BAD_REQUEST, "no name: {}", detail(&body));
        let (status, body) = p.call(0, 2, &[&enc("Conf")[..], &[0]].concat()).await;
        assert_eq!(
            status,
            BAD_REQUEST,
            "a byte after the name: {}",
            detail(&body)
        );
        // The connection goes on.
        let (status, _) = schema_of(&mut p, "Grammar").await;
        assert_eq!(status, OK);
    })
    .await;
}
