//! Unit tests of the frame layout.

use super::*;
use bytes::Bytes;

fn body(f: FrameBuf) -> Bytes {
    f.into_frame().to_contiguous().slice(LENGTH_PREFIX..)
}

const CAP: usize = MAX_FRAME_SIZE_CAP;

/// A request frame with id `id`.
fn request<A: serde::Serialize + ?Sized>(
    id: u64,
    object: u32,
    method: u16,
    deadline_ms: u32,
    args: &A,
) -> FrameBuf {
    let mut f = FrameBuf::request(false, object, method, deadline_ms, args, CAP).unwrap();
    f.set_id(id);
    f
}

#[test]
fn readme_example_bytes_are_exact() {
    let request = request(7, 1, 0, 0, &(2i64, 3i64)).into_unchecked();
    let expected: Vec<u8> = [
        &[0x23, 0, 0, 0, 1][..],
        &7u64.to_le_bytes(),
        &1u32.to_le_bytes(),
        &0u16.to_le_bytes(),
        &0u32.to_le_bytes(),
        &2i64.to_le_bytes(),
        &3i64.to_le_bytes(),
    ]
    .concat();
    assert_eq!(&request[..], &expected[..]);
    assert_eq!(request.len(), 39);

    let mut response = FrameBuf::response(Status::Ok, &5i64, CAP).unwrap();
    response.set_id(7);
    let response = response.into_unchecked();
    let expected: Vec<u8> = [
        &[0x12, 0, 0, 0, 2][..],
        &7u64.to_le_bytes(),
        &[0],
        &5i64.to_le_bytes(),
    ]
    .concat();
    assert_eq!(&response[..], &expected[..]);
}

#[test]
fn request_round_trips() {
    let f = request(7, 3, 2, 50, &(1i64, String::from("x")));
    let Message::Request(r) = parse(body(f)).unwrap() else {
        panic!("not a request")
    };
    assert_eq!((r.id, r.object, r.method, r.deadline_ms), (7, 3, 2, 50));
    let args: (i64, String) = decode(&r.args).unwrap();
    assert_eq!(args, (1, "x".into()));
}

#[test]
fn response_id_is_patched() {
    let mut f = FrameBuf::response(Status::AppError, &5u8, CAP).unwrap();
    f.set_id(99);
    let m = parse(body(f)).unwrap();
    assert_eq!(
        m,
        Message::Response {
            id: 99,
            status: Status::AppError,
            body: Bytes::from_static(&[5])
        }
    );
}

#[test]
fn hello_carries_version_and_limit() {
    let m = parse(body(FrameBuf::hello(4096, &[]))).unwrap();
    assert_eq!(
        m,
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            max_frame_size: 4096,
            rest: Bytes::new(),
        })
    );
}

#[test]
fn oversized_frame_is_refused_with_sizes() {
    let f = request(1, 1, 0, 0, &vec![0u8; 100]);
    let size = f.body_len();
    let err = f.finish(50).unwrap_err();
    assert_eq!(err, FrameTooLarge { size, limit: 50 });
}

#[test]
fn huge_claimed_string_fails_without_allocating_it() {
    // A u64 length claiming 4 GiB, followed by 3 bytes.
    let mut b = (4u64 << 30).to_le_bytes().to_vec();
    b.extend_from_slice(b"abc");
    assert!(decode::<String>(&b).is_err());
    assert!(decode::<Vec<u64>>(&b).is_err());
}

#[test]
fn trailing_bytes_are_an_error() {
    let b = encode_to_vec(&(1u32, 2u32)).unwrap();
    assert!(decode::<u32>(&b).is_err());
    assert_eq!(decode::<(u32, u32)>(&b).unwrap(), (1, 2));
}

#[test]
fn unknown_kind_and_truncation_are_errors() {
    let mut b = vec![12u8];
    b.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(
        parse(Bytes::from(b)).unwrap_err(),
        ProtocolError::UnknownKind(12)
    );
    assert!(matches!(
        parse(Bytes::from_static(&[1, 0])),
        Err(ProtocolError::Truncated { .. })
    ));
}

#[test]
fn encoding_stops_at_the_limit_without_encoding_the_rest() {
    // 16 MiB would not fit a 1 KiB limit: the encoder stops at the first
    // write past it and reports how far it got.
    let big = vec![1u64; 2 << 20];
    match FrameBuf::request(false, 1, 0, 0, &(big,), 1024) {
        Err(EncodeError::TooLarge { size, limit }) => {
            assert_eq!(limit, 1024);
            assert!(size > 1024 && size < 2048, "stopped at {size}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Exactly at the limit it fits.
    let fits = FrameBuf::request(false, 1, 0, 0, &(), 19).unwrap();
    assert_eq!(fits.body_len(), 19);
    assert!(matches!(
        FrameBuf::request(false, 1, 0, 0, &(1u8,), 19),
        Err(EncodeError::TooLarge {
            size: 20,
            limit: 19
        })
    ));
}

#[test]
fn stream_frames_round_trip() {
    let item = FrameBuf::stream_item(9, &42u64, CAP).unwrap();
    assert_eq!(
        parse(body(item)).unwrap(),
        Message::StreamItem {
            id: 9,
            item: Bytes::from(42u64.to_le_bytes().to_vec()),
        }
    );
    assert_eq!(
        parse(body(FrameBuf::stream_end(9, Status::Ok, &()))).unwrap(),
        Message::StreamEnd {
            id: 9,
            status: Status::Ok,
            body: Bytes::new(),
        }
    );
    let Message::StreamEnd {
        status, body: b, ..
    } = parse(body(FrameBuf::stream_end(9, Status::Panic, "boom"))).unwrap()
    else {
        panic!("not a stream end")
    };
    assert_eq!(status, Status::Panic);
    assert_eq!(decode::<String>(&b).unwrap(), "boom");
    assert_eq!(
        parse(body(FrameBuf::credit(9, 4096))).unwrap(),
        Message::Credit { id: 9, bytes: 4096 }
    );
    assert_eq!(
        parse(body(FrameBuf::release(EXPORT_BASE + 3))).unwrap(),
        Message::Release {
            handle: EXPORT_BASE + 3
        }
    );
}

#[test]
fn control_frames_with_extra_bytes_are_errors() {
    for kind in [3u8, 8, 9] {
        let mut b = vec![kind];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.push(7);
        assert!(parse(Bytes::from(b)).is_err(), "kind {kind}");
    }
    // A go-away's payload is nothing or one u64.
    let mut b = vec![4u8];
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&[1, 2, 3]);
    assert!(parse(Bytes::from(b)).is_err());
}

/// `Vec<u8>` arguments and returns are written by generated code through
/// `ByteVec`/`OptByteVec` as one block: the bytes must be the documented
/// layout (a `u64` length, then the bytes), the same as serde's sequence of
/// `u8`, and each form must read the other's.
#[test]
fn byte_vectors_are_a_u64_length_then_the_bytes() {
    use crate::byte_vec::{ByteVec, OptByteVec};
    for len in [0usize, 1, 255, 65_536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let documented = [&(len as u64).to_le_bytes()[..], &data].concat();
        let block = encode_to_vec(&ByteVec(data.clone())).unwrap();
        assert_eq!(block, documented, "ByteVec, {len} bytes");
        assert_eq!(
            encode_to_vec(&data).unwrap(),
            documented,
            "Vec<u8>, {len} bytes"
        );
        assert_eq!(decode::<ByteVec>(&documented).unwrap().0, data);
        assert_eq!(decode::<Vec<u8>>(&block).unwrap(), data);

        // As an argument tuple, between other values.
        let args = (7u32, ByteVec(data.clone()), String::from("x"));
        let plain = (7u32, data.clone(), String::from("x"));
        assert_eq!(
            encode_to_vec(&args).unwrap(),
            encode_to_vec(&plain).unwrap()
        );

        // Option: a u8 tag, then the block.
        let some = [&[1u8][..], &documented].concat();
        assert_eq!(
            encode_to_vec(&OptByteVec(Some(data.clone()))).unwrap(),
            some
        );
        assert_eq!(encode_to_vec(&Some(data.clone())).unwrap(), some);
        assert_eq!(decode::<OptByteVec>(&some).unwrap().0, Some(data));
    }
    assert_eq!(encode_to_vec(&OptByteVec(None)).unwrap(), [0u8]);
    assert_eq!(decode::<OptByteVec>(&[0u8]).unwrap().0, None);
    // A length claiming more bytes than the body holds is an error, not an
    // allocation of the claimed size.
    let lying = [&(1u64 << 40).to_le_bytes()[..], &[1, 2, 3]].concat();
    assert!(decode::<ByteVec>(&lying).is_err());
}

#[test]
fn deadlines_are_whole_milliseconds_rounded_up_never_zero() {
    use std::time::Duration;
    assert_eq!(super::deadline_ms(Duration::from_micros(1)), 1);
    assert_eq!(super::deadline_ms(Duration::ZERO), 1);
    assert_eq!(super::deadline_ms(Duration::from_micros(1_200)), 2);
    assert_eq!(super::deadline_ms(Duration::from_millis(60_000)), 60_000);
    assert_eq!(super::deadline_ms(Duration::from_secs(u64::MAX)), u32::MAX);
}
