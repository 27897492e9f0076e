//! Property tests for the frame codec: what `FrameBuf` writes, the length-delimited
//! codec and `wire::parse` read back exactly, however the byte stream is split;
//! and a length prefix past the limit is refused before anything is allocated for it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use ipc_core::wire::{self, FrameBuf, Message, Status};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodecError};

/// The frame limit both sides use in the round-trip properties: well above the
/// largest generated frame, so `finish` never refuses one.
const LIMIT: usize = 1 << 20;
/// The largest generated payload (bytes, or characters of a string).
const MAX_PAYLOAD: usize = 100 * 1024;

/// A struct argument, to cover derived serde impls with nested enums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    tags: Vec<u16>,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle { radius: u32 },
    Poly(Vec<(i32, i32)>),
}

/// A request's argument tuple, one variant per Rust signature.
#[derive(Debug, Clone, PartialEq)]
enum Args {
    /// `fn f()`
    Unit,
    /// `fn f(a: i64, b: i64)`
    Ints(i64, i64),
    /// `fn f(data: Vec<u8>)`
    Blob(Vec<u8>),
    /// `fn f(s: String)`
    Text(String),
    /// `fn f(names: Vec<String>, limit: Option<u64>, flag: bool)`
    Mixed(Vec<String>, Option<u64>, bool),
    /// `fn f(r: Record)`
    Record(Record),
}

/// A response's body, as its status says to read it.
#[derive(Debug, Clone, PartialEq)]
enum Body {
    /// `FrameBuf::response_empty`.
    Empty,
    Text(String),
    Blob(Vec<u8>),
    Sizes(u64, u64),
}

/// One frame as the sender meant it.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Hello {
        max_frame_size: usize,
    },
    Request {
        id: u64,
        object: u32,
        method: u16,
        deadline_ms: u32,
        args: Args,
    },
    Response {
        id: u64,
        status: Status,
        body: Body,
    },
    Cancel {
        id: u64,
    },
    GoAway {
        reason: u64,
        /// Sent with `FrameBuf::go_away_after` when present.
        last_request: Option<u64>,
    },
}

/// A cheap deterministic byte source, so that 100 KiB payloads do not cost
/// 100 K strategy draws (and shrink by their length alone).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        // xorshift64 has a fixed point at 0.
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Payload lengths: mostly small, sometimes up to `MAX_PAYLOAD`.
fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..64usize,
        3 => 0..4096usize,
        1 => 0..=MAX_PAYLOAD,
    ]
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    (payload_len(), any::<u64>()).prop_map(|(len, seed)| {
        let mut rng = XorShift(seed);
        (0..len).map(|_| rng.next() as u8).collect()
    })
}

/// Strings mixing one- to four-byte UTF-8 characters.
fn text() -> impl Strategy<Value = String> {
    const CHARS: [char; 8] = ['a', 'Z', '0', ' ', '\0', 'é', '€', '😀'];
    (payload_len(), any::<u64>()).prop_map(|(len, seed)| {
        let mut rng = XorShift(seed);
        (0..len)
            .map(|_| CHARS[(rng.next() % CHARS.len() as u64) as usize])
            .collect()
    })
}

fn short_text() -> impl Strategy<Value = String> {
    "[a-z\u{e9}\u{1f600}]{0,12}"
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Point),
        any::<u32>().prop_map(|radius| Shape::Circle { radius }),
        prop::collection::vec(any::<(i32, i32)>(), 0..8).prop_map(Shape::Poly),
    ]
}

fn args() -> impl Strategy<Value = Args> {
    prop_oneof![
        Just(Args::Unit),
        any::<(i64, i64)>().prop_map(|(a, b)| Args::Ints(a, b)),
        blob().prop_map(Args::Blob),
        text().prop_map(Args::Text),
        (
            prop::collection::vec(short_text(), 0..8),
            any::<Option<u64>>(),
            any::<bool>()
        )
            .prop_map(|(names, limit, flag)| Args::Mixed(names, limit, flag)),
        (
            short_text(),
            prop::collection::vec(any::<u16>(), 0..16),
            shape()
        )
            .prop_map(|(name, tags, shape)| Args::Record(Record { name, tags, shape })),
    ]
}

/// A status with a body of the type the README gives for it.
fn response() -> impl Strategy<Value = (Status, Body)> {
    let value = prop_oneof![
        blob().prop_map(Body::Blob),
        text().prop_map(Body::Text),
        any::<(u64, u64)>().prop_map(|(a, b)| Body::Sizes(a, b)),
    ];
    let detail = prop_oneof![
        Just(Status::UnknownObject),
        Just(Status::UnknownMethod),
        Just(Status::TraitMismatch),
        Just(Status::BadRequest),
        Just(Status::Panic),
        Just(Status::EncodeFailed),
        Just(Status::Overloaded),
    ];
    prop_oneof![
        (prop_oneof![Just(Status::Ok), Just(Status::AppError)], value),
        (detail, text().prop_map(Body::Text)),
        Just((Status::ShuttingDown, Body::Empty)),
        any::<(u64, u64)>().prop_map(|(a, b)| (Status::FrameTooLarge, Body::Sizes(a, b))),
    ]
}

fn go_away_reason() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(wire::GOAWAY_SHUTDOWN),
        Just(wire::GOAWAY_CONNECTION_LIMIT),
        any::<u64>(),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        1 => (0usize..=u32::MAX as usize + 1)
            .prop_map(|max_frame_size| Frame::Hello { max_frame_size }),
        5 => (any::<u64>(), any::<u32>(), any::<u16>(), any::<u32>(), args()).prop_map(
            |(id, object, method, deadline_ms, args)| Frame::Request {
                id,
                object,
                method,
                deadline_ms,
                args,
            }
        ),
        4 => (any::<u64>(), response())
            .prop_map(|(id, (status, body))| Frame::Response { id, status, body }),
        1 => any::<u64>().prop_map(|id| Frame::Cancel { id }),
        1 => (go_away_reason(), any::<Option<u64>>())
            .prop_map(|(reason, last_request)| Frame::GoAway { reason, last_request }),
    ]
}

/// A request frame with id `id` (ids are normally set when queued).
fn numbered<A: serde::Serialize + ?Sized>(
    id: u64,
    object: u32,
    method: u16,
    deadline_ms: u32,
    args: &A,
) -> Result<FrameBuf, wire::EncodeError> {
    let mut f = FrameBuf::request(
        false,
        object,
        method,
        deadline_ms,
        args,
        wire::MAX_FRAME_SIZE_CAP,
    )?;
    f.set_id(id);
    Ok(f)
}

fn request(id: u64, object: u32, method: u16, deadline_ms: u32, args: &Args) -> FrameBuf {
    let built = match args {
        Args::Unit => numbered(id, object, method, deadline_ms, &()),
        Args::Ints(a, b) => numbered(id, object, method, deadline_ms, &(a, b)),
        Args::Blob(data) => numbered(id, object, method, deadline_ms, &(data,)),
        Args::Text(s) => numbered(id, object, method, deadline_ms, &(s,)),
        Args::Mixed(names, limit, flag) => {
            numbered(id, object, method, deadline_ms, &(names, limit, flag))
        }
        Args::Record(r) => numbered(id, object, method, deadline_ms, &(r,)),
    };
    built.unwrap_or_else(|e| panic!("encoding {args:?} failed: {e}"))
}

fn response_frame(id: u64, status: Status, body: &Body) -> FrameBuf {
    let built = match body {
        Body::Empty => Ok(FrameBuf::response_empty(status)),
        Body::Text(s) => FrameBuf::response(status, s, wire::MAX_FRAME_SIZE_CAP),
        Body::Blob(data) => FrameBuf::response(status, data, wire::MAX_FRAME_SIZE_CAP),
        Body::Sizes(a, b) => FrameBuf::response(status, &(a, b), wire::MAX_FRAME_SIZE_CAP),
    };
    let mut f = built.unwrap_or_else(|e| panic!("encoding {body:?} failed: {e}"));
    f.set_id(id);
    f
}

/// The bytes `frame` puts on the wire, length prefix included.
fn encode(frame: &Frame) -> BytesMut {
    let f = match frame {
        Frame::Hello { max_frame_size } => FrameBuf::hello(*max_frame_size, &[]),
        Frame::Request {
            id,
            object,
            method,
            deadline_ms,
            args,
        } => request(*id, *object, *method, *deadline_ms, args),
        Frame::Response { id, status, body } => response_frame(*id, *status, body),
        Frame::Cancel { id } => FrameBuf::cancel(*id),
        Frame::GoAway {
            reason,
            last_request: None,
        } => FrameBuf::go_away(*reason),
        Frame::GoAway {
            reason,
            last_request: Some(last),
        } => FrameBuf::go_away_after(*reason, *last),
    };
    // Control frames go out unchecked in the real code; everything else is checked.
    match frame {
        Frame::Hello { .. } | Frame::Cancel { .. } | Frame::GoAway { .. } => f.into_unchecked(),
        _ => BytesMut::from(
            &f.finish(LIMIT)
                .unwrap_or_else(|e| panic!("a generated frame exceeds the limit: {e:?}"))
                .to_contiguous()[..],
        ),
    }
}

fn decoded<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, TestCaseError> {
    wire::decode(bytes).map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))
}

fn check_args(expected: &Args, bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = match expected {
        Args::Unit => decoded::<()>(bytes).map(|()| Args::Unit)?,
        Args::Ints(..) => decoded::<(i64, i64)>(bytes).map(|(a, b)| Args::Ints(a, b))?,
        Args::Blob(_) => decoded::<(Vec<u8>,)>(bytes).map(|(d,)| Args::Blob(d))?,
        Args::Text(_) => decoded::<(String,)>(bytes).map(|(s,)| Args::Text(s))?,
        Args::Mixed(..) => decoded::<(Vec<String>, Option<u64>, bool)>(bytes)
            .map(|(n, l, f)| Args::Mixed(n, l, f))?,
        Args::Record(_) => decoded::<(Record,)>(bytes).map(|(r,)| Args::Record(r))?,
    };
    prop_assert_eq!(&got, expected);
    Ok(())
}

fn check_body(expected: &Body, bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = match expected {
        Body::Empty => {
            prop_assert!(bytes.is_empty(), "empty body has {} bytes", bytes.len());
            Body::Empty
        }
        Body::Text(_) => Body::Text(decoded(bytes)?),
        Body::Blob(_) => Body::Blob(decoded(bytes)?),
        Body::Sizes(..) => decoded::<(u64, u64)>(bytes).map(|(a, b)| Body::Sizes(a, b))?,
    };
    prop_assert_eq!(&got, expected);
    Ok(())
}

/// Checks that a received frame body is `expected`.
fn check_frame(expected: &Frame, body: Bytes) -> Result<(), TestCaseError> {
    let message = wire::parse(body).map_err(|e| TestCaseError::fail(format!("parse: {e}")))?;
    match (expected, message) {
        (Frame::Hello { max_frame_size }, Message::Hello(h)) => {
            prop_assert_eq!(h.version, wire::PROTOCOL_VERSION);
            let announced = u32::try_from(*max_frame_size).unwrap_or(u32::MAX);
            prop_assert_eq!(h.max_frame_size, announced);
        }
        (
            Frame::Request {
                id,
                object,
                method,
                deadline_ms,
                args,
            },
            Message::Request(r),
        ) => {
            prop_assert_eq!(
                (r.id, r.object, r.method, r.deadline_ms),
                (*id, *object, *method, *deadline_ms)
            );
            check_args(args, &r.args)?;
        }
        (
            Frame::Response { id, status, body },
            Message::Response {
                id: got_id,
                status: got_status,
                body: got_body,
            },
        ) => {
            prop_assert_eq!((got_id, got_status), (*id, *status));
            check_body(body, &got_body)?;
        }
        (Frame::Cancel { id }, Message::Cancel { id: got }) => prop_assert_eq!(got, *id),
        (
            Frame::GoAway {
                reason,
                last_request,
            },
            Message::GoAway {
                reason: got,
                last_request: got_last,
            },
        ) => {
            prop_assert_eq!((got, got_last), (*reason, *last_request));
        }
        (expected, got) => {
            return Err(TestCaseError::fail(format!(
                "expected {expected:?}, got {got:?}"
            )));
        }
    }
    Ok(())
}

/// Splits `stream` at `cuts` (taken modulo its length + 1, so any value is a
/// valid cut). Chunks may be empty.
fn split(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        chunks.push(stream[start..cut].to_vec());
        start = cut;
    }
    chunks.push(stream[start..].to_vec());
    chunks
}

/// Feeds `chunks` one by one into `Decoder::decode`, collecting every frame.
fn decode_chunks(max: usize, chunks: &[Vec<u8>]) -> Result<Vec<Bytes>, TestCaseError> {
    let mut codec = wire::codec(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame.freeze()),
                Ok(None) => break,
                Err(e) => return Err(TestCaseError::fail(format!("codec: {e}"))),
            }
        }
    }
    // Nothing is left over: the stream ends on a frame boundary.
    prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
    match codec.decode_eof(&mut buf) {
        Ok(None) => {}
        other => return Err(TestCaseError::fail(format!("at eof: {other:?}"))),
    }
    Ok(frames)
}

/// An `AsyncRead` that hands out one chunk per read (less if the caller's
/// buffer is smaller) and says `Pending` before every chunk, like a socket
/// whose data trickles in.
struct Trickle {
    chunks: VecDeque<Vec<u8>>,
    offset: usize,
    ready: bool,
}

impl Trickle {
    fn new(chunks: Vec<Vec<u8>>) -> Self {
        // An empty read means end of stream, so empty chunks are dropped.
        let chunks = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        Self {
            chunks,
            offset: 0,
            ready: false,
        }
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let this = &mut *self;
        let Some(chunk) = this.chunks.front() else {
            return Poll::Ready(Ok(()));
        };
        let n = buf.remaining().min(chunk.len() - this.offset);
        buf.put_slice(&chunk[this.offset..this.offset + n]);
        this.offset += n;
        if this.offset == chunk.len() {
            this.chunks.pop_front();
            this.offset = 0;
            this.ready = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads `chunks` through `FramedRead`, collecting every frame until a clean end.
fn read_framed(chunks: Vec<Vec<u8>>) -> Result<Vec<Bytes>, TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(format!("runtime: {e}")))?;
    rt.block_on(async {
        let mut framed = FramedRead::new(Trickle::new(chunks), wire::codec(LIMIT));
        let mut frames = Vec::new();
        while let Some(frame) = framed.next().await {
            let frame = frame.map_err(|e| TestCaseError::fail(format!("codec: {e}")))?;
            frames.push(frame.freeze());
        }
        Ok(frames)
    })
}

fn check_all(expected: &[Frame], got: Vec<Bytes>) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), expected.len(), "frame count");
    for (frame, body) in expected.iter().zip(got) {
        check_frame(frame, body)?;
    }
    Ok(())
}

fn stream_of(frames: &[Frame]) -> Vec<u8> {
    let mut stream = Vec::new();
    for f in frames {
        stream.extend_from_slice(&encode(f));
    }
    stream
}

/// Is `e` the codec's "frame too large" error?
fn is_too_large(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random frames, concatenated and split at random points, come out of the
    /// codec and `parse` exactly as sent.
    #[test]
    fn frames_round_trip_under_random_chunking(
        frames in prop::collection::vec(frame(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let stream = stream_of(&frames);
        let chunks = split(&stream, &cuts);
        check_all(&frames, decode_chunks(LIMIT, &chunks)?)?;
    }

    /// The same through `FramedRead` over a reader that trickles chunks in.
    #[test]
    fn frames_round_trip_through_framed_read(
        frames in prop::collection::vec(frame(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let stream = stream_of(&frames);
        check_all(&frames, read_framed(split(&stream, &cuts))?)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Small frames fed a few bytes at a time, so every split point of the
    /// header and the fixed fields gets exercised.
    #[test]
    fn small_frames_round_trip_in_tiny_chunks(
        frames in prop::collection::vec(
            frame().prop_filter("small", |f| encode(f).len() <= 256),
            1..8,
        ),
        step in 1usize..=5,
    ) {
        let stream = stream_of(&frames);
        let chunks: Vec<Vec<u8>> = stream.chunks(step).map(<[u8]>::to_vec).collect();
        check_all(&frames, decode_chunks(LIMIT, &chunks)?)?;
    }

    /// A length prefix claiming more than the limit is an error as soon as the
    /// prefix is complete: no byte of the claimed body needs to arrive, and no
    /// buffer of the claimed size is reserved.
    #[test]
    fn oversized_length_prefix_is_refused_before_allocating(
        max in wire::MIN_FRAME_SIZE..=64 * 1024usize,
        over in 1u64..=u64::from(u32::MAX),
        split_at in 0usize..=4,
        trailing in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let claimed = u32::try_from((max as u64).saturating_add(over)).unwrap_or(u32::MAX);
        let mut stream = claimed.to_le_bytes().to_vec();
        stream.extend_from_slice(&trailing);
        let mut codec = wire::codec(max);
        let mut buf = BytesMut::new();

        buf.extend_from_slice(&stream[..split_at]);
        if split_at < 4 {
            // An incomplete prefix is not yet an error.
            prop_assert!(matches!(codec.decode(&mut buf), Ok(None)));
        }
        buf.extend_from_slice(&stream[split_at..]);
        match codec.decode(&mut buf) {
            Err(e) => prop_assert!(is_too_large(&e), "wrong error: {e}"),
            Ok(other) => prop_assert!(false, "accepted a {claimed}-byte frame: {other:?}"),
        }
        prop_assert!(buf.capacity() < max, "reserved {} bytes", buf.capacity());
    }

    /// A frame exactly at the limit passes both `finish` and the codec; one byte
    /// more is refused by both.
    #[test]
    fn frame_at_the_limit_passes_and_one_past_it_is_refused(
        len in 0usize..=8 * 1024,
        id in any::<u64>(),
    ) {
        // An empty-bodied response padded with `len` raw body bytes.
        let mut bytes = FrameBuf::response_empty(Status::Ok).into_unchecked();
        bytes.put_bytes(0xAB, len);
        let body_len = bytes.len() - wire::LENGTH_PREFIX;
        let prefix = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
        bytes[..wire::LENGTH_PREFIX].copy_from_slice(&prefix);

        let at_limit = decode_chunks(body_len, &[bytes.to_vec()])?;
        prop_assert_eq!(at_limit.len(), 1);
        match wire::parse(at_limit[0].clone()) {
            Ok(Message::Response { status: Status::Ok, body, .. }) => {
                prop_assert_eq!(body.len(), len);
            }
            other => prop_assert!(false, "parsed as {other:?}"),
        }

        if body_len > 0 {
            let mut buf = BytesMut::from(&bytes[..]);
            match wire::codec(body_len - 1).decode(&mut buf) {
                Err(e) => prop_assert!(is_too_large(&e), "wrong error: {e}"),
                Ok(other) => prop_assert!(false, "accepted: {other:?}"),
            }
        }

        let build = || {
            numbered(id, 1, 0, 0, &(vec![7u8; len],))
                .map_err(|e| TestCaseError::fail(e.to_string()))
        };
        let size = build()?.body_len();
        prop_assert_eq!(
            build()?.finish(size - 1).err(),
            Some(wire::FrameTooLarge { size, limit: size - 1 })
        );
        let wire_bytes = build()?
            .finish(size)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(
            decode_chunks(size, &[wire_bytes.to_contiguous().to_vec()])?.len(),
            1
        );
    }
}
