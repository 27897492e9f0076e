//! `Vec<u8>` arguments and return values — bare, in `Option`, as the `T` of
//! a `Result` — round-trip bit for bit at every size that matters, over both
//! transports, and mix with other arguments. (They travel as one block; the
//! wire layout is pinned by a unit test in `ipc_core::wire`.)

use ipc_core::{CallError, Client, Error, Server, expose};
use ipc_tests::*;

/// Byte vectors in every position the macro recognises.
#[expose]
pub trait Blobs {
    /// Returns its argument.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns its argument; `None` stays `None`.
    async fn echo_opt(&self, data: Option<Vec<u8>>) -> Option<Vec<u8>>;
    /// Returns its argument, or refuses when `refuse`.
    async fn echo_or_refuse(&self, data: Vec<u8>, refuse: bool) -> Result<Vec<u8>, String>;
    /// Returns its optional argument, or refuses when it is empty.
    async fn echo_opt_or_refuse(&self, data: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, String>;
    /// Paths written out in full.
    async fn echo_std(&self, data: std::vec::Vec<u8>) -> ::std::vec::Vec<u8>;
    /// Byte vectors between other arguments: `(a, reversed data, b)`.
    async fn between(&self, a: u32, data: Vec<u8>, b: String) -> (u32, Vec<u8>, String);
    /// Two byte vectors, concatenated.
    async fn concat(&self, first: Vec<u8>, second: Option<Vec<u8>>) -> Vec<u8>;
}

struct Store;

impl Blobs for Store {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn echo_opt(&self, data: Option<Vec<u8>>) -> Option<Vec<u8>> {
        data
    }
    async fn echo_or_refuse(&self, data: Vec<u8>, refuse: bool) -> Result<Vec<u8>, String> {
        if refuse {
            Err(format!("refused {} bytes", data.len()))
        } else {
            Ok(data)
        }
    }
    async fn echo_opt_or_refuse(&self, data: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, String> {
        match data {
            Some(d) if d.is_empty() => Err("empty".into()),
            other => Ok(other),
        }
    }
    async fn echo_std(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn between(&self, a: u32, mut data: Vec<u8>, b: String) -> (u32, Vec<u8>, String) {
        data.reverse();
        (a, data, b)
    }
    async fn concat(&self, mut first: Vec<u8>, second: Option<Vec<u8>>) -> Vec<u8> {
        first.extend(second.unwrap_or_default());
        first
    }
}

/// `len` bytes that differ from their neighbours (a fixed pseudo-random
/// sequence), so a dropped, repeated or swapped byte shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const SIZES: [usize; 4] = [0, 1, 64 * 1024, 16 * 1024 * 1024];
/// Room for a 16 MiB vector and its frame on both sides.
const LIMIT: usize = 32 * 1024 * 1024;

async fn blobs(transport: Transport) -> (ipc_core::ServerHandle, BlobsProxy) {
    let server = transport
        .start(|b| b.max_frame_size(LIMIT).expose(BlobsServer::new(Store)))
        .await;
    let client = Client::builder()
        .addr(server.local_addr())
        .max_frame_size(LIMIT)
        .connect()
        .await
        .unwrap();
    let proxy = client.get_exposed_object().await.unwrap();
    (server, proxy)
}

each_transport! {
    #[tokio::test]
    async fn vec_u8_round_trips_bit_for_bit_at_0_1_64k_and_16m_bytes(transport) {
        within(60, async {
            let (server, p) = blobs(transport).await;
            for (i, len) in SIZES.into_iter().enumerate() {
                let data = pattern(len, i as u64 + 1);
                assert_eq!(p.echo(data.clone()).await.unwrap(), data, "echo, {len} bytes");
                assert_eq!(p.echo_std(data.clone()).await.unwrap(), data, "echo_std, {len}");
                assert_eq!(
                    p.echo_opt(Some(data.clone())).await.unwrap(),
                    Some(data.clone()),
                    "echo_opt, {len} bytes"
                );
                assert_eq!(
                    p.echo_or_refuse(data.clone(), false).await.unwrap(),
                    data,
                    "Result Ok, {len} bytes"
                );
                match p.echo_or_refuse(data.clone(), true).await {
                    Err(CallError::App(e)) => assert_eq!(e, format!("refused {len} bytes")),
                    other => panic!("expected the app error, got {:?}", other.map(|v| v.len())),
                }
                let mut reversed = data.clone();
                reversed.reverse();
                assert_eq!(
                    p.between(7, data.clone(), "tail".into()).await.unwrap(),
                    (7, reversed, "tail".to_string()),
                    "between, {len} bytes"
                );
            }
            assert_eq!(p.echo_opt(None).await.unwrap(), None);
            server.stop().await;
        })
        .await;
    }
}

#[tokio::test]
async fn option_and_result_forms_keep_none_empty_and_errors_apart() {
    within(10, async {
        let (server, p) = blobs(Transport::Tcp).await;
        assert_eq!(
            p.echo_opt(Some(Vec::new())).await.unwrap(),
            Some(Vec::new())
        );
        assert_eq!(p.echo_opt_or_refuse(None).await.unwrap(), None);
        assert_eq!(
            p.echo_opt_or_refuse(Some(vec![0, 255])).await.unwrap(),
            Some(vec![0, 255])
        );
        match p.echo_opt_or_refuse(Some(Vec::new())).await {
            Err(CallError::App(e)) => assert_eq!(e, "empty"),
            other => panic!("expected the app error, got {other:?}"),
        }
        assert_eq!(
            p.concat(vec![1, 2], Some(vec![3])).await.unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(p.concat(vec![1, 2], None).await.unwrap(), vec![1, 2]);
        server.stop().await;
    })
    .await;
}

/// The layout seen from outside: a hand-written request whose argument is
/// a `u64` length and the bytes is understood, and the reply is laid out the
/// same way.
#[tokio::test]
async fn a_hand_written_length_and_bytes_request_is_understood() {
    use tokio::io::AsyncWriteExt;
    within(10, async {
        let server = Server::builder()
            .addr("127.0.0.1:0")
            .expose(BlobsServer::new(Store))
            .start()
            .await
            .unwrap();
        let (mut r, mut w) = raw::connect(server.local_addr()).await.unwrap();
        w.write_all(&raw::hello(1 << 20)).await.unwrap();
        let (kind, _, _) = raw::read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(kind, 0, "the server's hello");
        let name = "Blobs".to_string();
        let lookup = ipc_core::wire::encode_to_vec(&(
            &name,
            &name,
            <BlobsProxy as ipc_core::Proxy>::DESCRIPTOR.fingerprint,
            <BlobsProxy as ipc_core::Proxy>::DESCRIPTOR
                .methods
                .iter()
                .map(|m| m.signature.to_string())
                .collect::<Vec<_>>(),
        ))
        .unwrap();
        w.write_all(&raw::request(1, 0, 0, &lookup)).await.unwrap();
        let (_, _, body) = raw::read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(body[0], 0, "resolved: {body:?}");
        let handle = u32::from_le_bytes(body[1..5].try_into().unwrap());
        let data = pattern(1000, 9);
        let args = [&(data.len() as u64).to_le_bytes()[..], &data].concat();
        w.write_all(&raw::request(2, handle, 0, &args))
            .await
            .unwrap();
        let (kind, id, body) = raw::read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((kind, id), (2, 2));
        assert_eq!(body[0], 0, "status ok");
        assert_eq!(
            &body[1..],
            &args[..],
            "the reply is a u64 length, then the bytes"
        );
        server.stop().await;
    })
    .await;
}

/// A `Vec<u8>` argument larger than the server accepts is refused on the
/// caller's side with `FrameTooLarge` (it is sent from its own memory, so
/// the check is on the size, not on a copy), and the connection goes on.
#[tokio::test]
async fn an_oversized_vec_argument_is_frame_too_large_and_the_connection_goes_on() {
    within(30, async {
        let limit = 256 * 1024;
        let server = Server::builder()
            .addr("127.0.0.1:0")
            .max_frame_size(limit)
            .expose(BlobsServer::new(Store))
            .start()
            .await
            .unwrap();
        let client = Client::builder()
            .addr(server.local_addr())
            .connect()
            .await
            .unwrap();
        let p: BlobsProxy = client.get_exposed_object().await.unwrap();
        let fits = pattern(limit / 2, 3);
        assert_eq!(p.echo(fits.clone()).await.unwrap(), fits);
        match p.echo(pattern(limit + 1, 4)).await {
            Err(Error::FrameTooLarge { size, limit: l }) => {
                assert_eq!(l, limit);
                assert!(size > limit, "size {size}, limit {limit}");
            }
            other => panic!("expected FrameTooLarge, got {:?}", other.map(|v| v.len())),
        }
        match p.echo_opt(Some(pattern(limit + 1, 5))).await {
            Err(Error::FrameTooLarge { .. }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(p.echo(fits.clone()).await.unwrap(), fits);
        server.stop().await;
    })
    .await;
}
