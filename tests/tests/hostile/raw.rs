//! Frames written and read by hand from the README's "Wire protocol" section,
//! independently of `ipc_core::wire`, so the tests check the documented format.
//!
//! Layout: `length: u32 LE` (not counting itself), `kind: u8`, `id: u64 LE`,
//! payload. Bodies are bincode with little-endian fixed-width integers.

use std::time::Duration;

use ipc_core::{ObjectDescriptor, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use ipc_tests::raw::{frame, request};

pub(crate) const HELLO: u8 = 0;
pub(crate) const REQUEST: u8 = 1;
pub(crate) const RESPONSE: u8 = 2;

pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_BAD_REQUEST: u8 = 19;

/// The frame limit this raw client announces in its hello.
const OUR_MAX_FRAME: u32 = 1 << 20;
/// How long a read may wait for the server before the test calls it a hang.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A hello frame with the given magic, version and frame limit.
pub(crate) fn hello(magic: &[u8; 4], version: u16, max_frame: u32) -> Vec<u8> {
    let mut p = magic.to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&max_frame.to_le_bytes());
    frame(HELLO, 0, &p)
}

/// The hello a well-behaved client sends.
pub(crate) fn good_hello() -> Vec<u8> {
    ipc_tests::raw::hello(OUR_MAX_FRAME)
}

/// bincode of a `String`: a `u64` length, then the bytes.
pub(crate) fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

/// bincode of `(i64, i64)`: the arguments of `Calculator::add`.
pub(crate) fn add_args(a: i64, b: i64) -> Vec<u8> {
    [a.to_le_bytes(), b.to_le_bytes()].concat()
}

/// bincode of a `String` whose length claims `1 << 40` bytes but holds three.
pub(crate) fn huge_string_claim() -> Vec<u8> {
    let mut b = (1u64 << 40).to_le_bytes().to_vec();
    b.extend_from_slice(b"abc");
    b
}

/// bincode of the system `resolve` arguments:
/// `(name: String, trait_name: String, fingerprint: u64, signatures: Vec<String>)`.
pub(crate) fn resolve_args(name: &str, d: &ObjectDescriptor) -> Vec<u8> {
    let mut b = string(name);
    b.extend(string(d.trait_name));
    b.extend_from_slice(&d.fingerprint.to_le_bytes());
    b.extend_from_slice(&(d.methods.len() as u64).to_le_bytes());
    for m in d.methods {
        b.extend(string(m.signature));
    }
    b
}

/// A frame as read back: kind, id, payload.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) id: u64,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// A response's status byte and body; fails the test for any other kind.
    pub(crate) fn response(&self) -> (u8, &[u8]) {
        assert_eq!(self.kind, RESPONSE, "expected a response, got {self:?}");
        assert!(!self.payload.is_empty(), "a response without a status");
        (self.payload[0], &self.payload[1..])
    }
}

/// A hand-driven connection to a server.
pub(crate) struct Raw {
    pub(crate) stream: TcpStream,
}

impl Raw {
    /// Opens a TCP connection and sends nothing.
    pub(crate) async fn connect(server: &ServerHandle) -> Self {
        let addr = server
            .local_addr()
            .as_socket_addr()
            .unwrap_or_else(|| panic!("not a socket address: {}", server.local_addr()));
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("raw connect to {addr} failed: {e}"));
        Self { stream }
    }

    /// Opens a connection and completes the handshake, checking the server's hello.
    pub(crate) async fn handshaken(server: &ServerHandle) -> Self {
        let mut raw = Self::connect(server).await;
        raw.send(&good_hello()).await;
        let theirs = raw.read_frame().await;
        assert_server_hello(&theirs);
        raw
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("raw write failed: {e}"));
    }

    /// Reads one frame, failing the test on EOF, error or a hang.
    pub(crate) async fn read_frame(&mut self) -> Frame {
        let read = async {
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = u32::from_le_bytes(len) as usize;
            assert!(
                (9..=OUR_MAX_FRAME as usize).contains(&len),
                "the server sent a frame of {len} bytes, beyond what we announced"
            );
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await?;
            std::io::Result::Ok(body)
        };
        let body = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => panic!("expected a frame, the read failed: {e}"),
            Err(_) => panic!("expected a frame, the server sent nothing"),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..9]);
        Frame {
            kind: body[0],
            id: u64::from_le_bytes(id),
            payload: body[9..].to_vec(),
        }
    }

    /// Sends a request and reads the frame that answers it.
    pub(crate) async fn call(&mut self, id: u64, object: u32, method: u16, args: &[u8]) -> Frame {
        self.send(&request(id, object, method, args)).await;
        let reply = self.read_frame().await;
        assert_eq!(reply.id, id, "a reply to another request: {reply:?}");
        reply
    }

    /// Resolves `d`'s trait name through the system object (handle 0, method 0).
    pub(crate) async fn resolve(&mut self, id: u64, d: &ObjectDescriptor) -> u32 {
        let reply = self.call(id, 0, 0, &resolve_args(d.trait_name, d)).await;
        let (status, body) = reply.response();
        assert_eq!(status, STATUS_OK, "resolve failed: {reply:?}");
        let handle: [u8; 4] = body
            .try_into()
            .unwrap_or_else(|_| panic!("a handle is a u32, got {body:?}"));
        u32::from_le_bytes(handle)
    }

    /// Checks `add(2, 3)` on `handle` answers `Ok(5)` as the README's example bytes.
    pub(crate) async fn assert_add_works(&mut self, id: u64, handle: u32) {
        let reply = self.call(id, handle, 0, &add_args(2, 3)).await;
        assert_eq!(reply.response(), (STATUS_OK, &5i64.to_le_bytes()[..]));
    }

    /// Reads until the server closes the connection (EOF or reset) and
    /// returns what arrived first; fails the test if it stays open.
    pub(crate) async fn expect_closed(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let drained = tokio::time::timeout(READ_TIMEOUT, async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "the server kept the connection open (received {} bytes)",
            got.len()
        );
        got
    }

    /// Asserts nothing arrives and the connection stays open for `wait`.
    pub(crate) async fn expect_open_and_silent(&mut self, wait: Duration) {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => panic!("the server closed the connection"),
            Ok(Ok(n)) => panic!("unexpected bytes from the server: {:?}", &buf[..n]),
            Ok(Err(e)) => panic!("the connection failed: {e}"),
        }
    }
}

/// Checks a frame is the server's hello: id 0, magic `IPCR`, version 2, a sane limit.
pub(crate) fn assert_server_hello(f: &Frame) {
    assert_eq!((f.kind, f.id), (HELLO, 0), "expected a hello, got {f:?}");
    assert_eq!(f.payload.len(), 10, "a hello payload is 10 bytes: {f:?}");
    assert_eq!(&f.payload[..4], b"IPCR");
    assert_eq!(u16::from_le_bytes([f.payload[4], f.payload[5]]), 2);
    let limit = u32::from_le_bytes([f.payload[6], f.payload[7], f.payload[8], f.payload[9]]);
    assert!(
        (1 << 10..=1 << 30).contains(&limit),
        "the server announced a frame limit of {limit}"
    );
}
