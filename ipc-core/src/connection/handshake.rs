//! The handshake: each side sends a hello (magic, protocol version, the
//! largest frame it accepts) and reads the other's; with a shared key, a
//! challenge–response follows (see `auth` and the README), and nothing else
//! is read before it succeeds.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::auth::{self, Role};
use crate::config::ConnectionConfig;
use crate::error::Error;
use crate::transport::{BoxedRead, BoxedWrite, PeerCertificate, Stream, UnixCredentials};
use crate::wire::{self, AUTH_LEN, FrameBuf, Hello, Message, PROTOCOL_VERSION};

/// Incoming frames, split and size-checked.
pub(crate) type Frames = FramedRead<BoxedRead, LengthDelimitedCodec>;

/// A connection whose handshake is done.
pub(crate) struct Handshake {
    /// Incoming frames, now checked against our configured frame limit.
    pub(crate) frames: Frames,
    pub(crate) write: BoxedWrite,
    /// The peer's hello.
    pub(crate) hello: Hello,
    /// The peer's address.
    pub(crate) peer: String,
    /// Ours.
    pub(crate) local: String,
    /// Both sides proved they hold the shared key.
    pub(crate) key_authenticated: bool,
    /// The peer's verified TLS certificate, if any.
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
    /// A Unix socket peer's credentials.
    pub(crate) credentials: Option<UnixCredentials>,
    /// Our hello, when it is still to be sent: queued first on the
    /// connection's outbox, it goes out in one write with the answers to
    /// whatever the client sent behind its own hello.
    pub(crate) reply: Option<FrameBuf>,
}

impl Handshake {
    /// The peer's frame limit, as announced, within what the protocol allows.
    pub(crate) fn peer_limit(&self) -> usize {
        crate::config::clamp_frame_size(self.hello.max_frame_size as usize)
    }
}

/// What the server knows of a peer when it decides whether to admit it.
pub(crate) struct Identity<'a> {
    pub(crate) peer: &'a str,
    pub(crate) key_authenticated: bool,
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
    pub(crate) credentials: Option<UnixCredentials>,
}

/// Authentication fields of a hello: 0 (none), or 1 then a nonce (and, in
/// the server's, its proof when the client offered a key).
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    None,
    Key {
        nonce: [u8; AUTH_LEN],
        proof: Option<[u8; AUTH_LEN]>,
    },
}

impl Offer {
    fn read(rest: &[u8]) -> Result<Self, Error> {
        let bad = || Error::Protocol {
            detail: "malformed authentication fields in the hello".into(),
        };
        let mut rest = rest;
        if rest.is_empty() {
            return Ok(Self::None);
        }
        match rest.get_u8() {
            0 if rest.is_empty() => Ok(Self::None),
            1 if rest.len() == AUTH_LEN || rest.len() == 2 * AUTH_LEN => {
                let mut nonce = [0u8; AUTH_LEN];
                rest.copy_to_slice(&mut nonce);
                let proof = (!rest.is_empty()).then(|| {
                    let mut proof = [0u8; AUTH_LEN];
                    rest.copy_to_slice(&mut proof);
                    proof
                });
                Ok(Self::Key { nonce, proof })
            }
            _ => Err(bad()),
        }
    }

    fn write(&self) -> Vec<u8> {
        match self {
            Self::None => Vec::new(),
            Self::Key { nonce, proof } => {
                let mut out = vec![1u8];
                out.extend_from_slice(nonce);
                if let Some(proof) = proof {
                    out.extend_from_slice(proof);
                }
                out
            }
        }
    }
}

/// Reads a frame used in the handshake; end of stream and oversize are errors.
async fn next_frame(frames: &mut Frames) -> Result<BytesMut, Error> {
    match frames.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) if crate::transport::tls_failure(&e).is_some() => Err(Error::Tls {
            detail: crate::transport::tls_failure(&e).unwrap_or_default(),
        }),
        Some(Err(e)) if crate::transport::looks_like_tls(frames.read_buffer()) => Err(Error::Tls {
            detail: format!(
                "the peer speaks TLS, this side does not ({e}): use a tls:// address with \
                     TLS settings on both sides"
            ),
        }),
        // The first length prefix alone was over the handshake limit: these
        // are not ipc frames (an HTTP request, a port scanner, ...).
        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(not_an_ipc_peer(frames.read_buffer()))
        }
        Some(Err(e)) => Err(io_to_protocol(e)),
        None => Err(Error::ConnectionLost {
            reason: "the peer closed the connection during the handshake".into(),
        }),
    }
}

/// What bytes that cannot open an ipc connection stand for, showing (at
/// most 24 of) them escaped.
fn not_an_ipc_peer(start: &[u8]) -> Error {
    let shown = start.get(..24).unwrap_or(start);
    let http = [
        &b"GET "[..],
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"PRI * HTTP",
    ]
    .iter()
    .any(|method| start.starts_with(method));
    Error::ProtocolMismatch {
        detail: format!(
            "not an ipc peer: it opened with \"{}\" instead of a hello frame{}",
            shown.escape_ascii(),
            if http { " (an HTTP request)" } else { "" },
        ),
    }
}

/// Maps a read error to the error a caller should see.
pub(crate) fn io_to_protocol(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::Protocol {
            detail: format!("unreadable frame: {e}"),
        }
    } else {
        Error::ConnectionLost {
            reason: e.to_string(),
        }
    }
}

fn expect_hello(frame: BytesMut) -> Result<Hello, Error> {
    match wire::parse(frame.freeze()) {
        Ok(Message::Hello(h)) => Ok(h),
        Ok(Message::GoAway { reason, .. }) => Err(go_away_error(reason)),
        Ok(_) => Err(Error::Protocol {
            detail: "expected a hello frame first".into(),
        }),
        Err(wire::ProtocolError::BadMagic(m)) => Err(Error::ProtocolMismatch {
            detail: format!(
                "the peer sent {m:02x?} instead of the magic bytes; it is not an ipc peer"
            ),
        }),
        Err(e) => Err(Error::Protocol {
            detail: e.to_string(),
        }),
    }
}

/// The error a go-away received during the handshake stands for.
fn go_away_error(reason: u64) -> Error {
    match reason {
        wire::GOAWAY_CONNECTION_LIMIT => Error::Overloaded {
            detail: "the server is at its connection limit".into(),
        },
        wire::GOAWAY_AUTH_FAILED => Error::AuthFailed {
            reason: "the server refused the key: it does not match".into(),
        },
        wire::GOAWAY_PERMISSION_DENIED => Error::PermissionDenied {
            detail: "the server does not accept connections from this client".into(),
        },
        _ => Error::ShuttingDown,
    }
}

fn version_mismatch(theirs: u16) -> Error {
    Error::ProtocolMismatch {
        detail: format!(
            "this side speaks protocol version {PROTOCOL_VERSION}, the peer speaks {theirs}"
        ),
    }
}

/// A stream being handshaken: size-checked incoming frames, the write
/// half, and what is known of the peer.
struct Opened {
    frames: Frames,
    write: BoxedWrite,
    peer: String,
    local: String,
    certificate: Option<Arc<PeerCertificate>>,
    credentials: Option<UnixCredentials>,
}

fn open_frames(stream: Stream) -> Opened {
    let Stream {
        read,
        write,
        peer,
        local,
        credentials,
        certificate,
    } = stream;
    // Until the handshake is done, nothing bigger than a hello is accepted:
    // a stranger cannot make us reserve a whole frame limit.
    let frames = FramedRead::with_capacity(read, wire::codec(wire::HANDSHAKE_FRAME_MAX), 8 * 1024);
    Opened {
        frames,
        write,
        peer,
        local,
        certificate,
        credentials,
    }
}

/// After a successful handshake: the configured frame limit from now on.
fn established(mut frames: Frames, config: &ConnectionConfig) -> Frames {
    frames
        .decoder_mut()
        .set_max_frame_length(config.max_frame_size);
    frames
}

async fn send(write: &mut BoxedWrite, frame: FrameBuf) -> Result<(), Error> {
    write
        .write_all(&frame.into_unchecked())
        .await
        .map_err(|e| Error::ConnectionLost {
            reason: format!("sending the handshake: {e}"),
        })
}

/// Our hello: our frame limit and `offer`.
fn hello_frame(config: &ConnectionConfig, offer: &Offer) -> FrameBuf {
    FrameBuf::hello(config.max_frame_size, &offer.write())
}

async fn send_hello(
    write: &mut BoxedWrite,
    config: &ConnectionConfig,
    offer: &Offer,
) -> Result<(), Error> {
    send(write, hello_frame(config, offer)).await
}

/// A client's handshake under way: the server's hello is still to be read.
/// Without a key, our hello is not sent yet either: it is queued first on
/// the connection's outbox ([`ClientOpening::hello`]), so that it goes out
/// in one write with the requests behind it; with a key,
/// [`complete_as_client`] sends it.
pub(crate) struct ClientOpening {
    pub(crate) frames: Frames,
    pub(crate) write: BoxedWrite,
    pub(crate) peer: String,
    pub(crate) local: String,
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
    pub(crate) credentials: Option<UnixCredentials>,
    ours: Offer,
}

impl ClientOpening {
    /// Whether this side offered a key: then nothing but the proof may
    /// follow the hello until the server accepts it.
    pub(crate) fn offers_key(&self) -> bool {
        matches!(self.ours, Offer::Key { .. })
    }

    /// Our hello, to be sent before anything else.
    pub(crate) fn hello(&self, config: &ConnectionConfig) -> FrameBuf {
        hello_frame(config, &self.ours)
    }
}

/// Splits the stream and prepares our hello (offering the key, if we have
/// one).
pub(crate) fn begin_as_client(
    stream: Stream,
    config: &ConnectionConfig,
) -> Result<ClientOpening, Error> {
    let Opened {
        frames,
        write,
        peer,
        local,
        certificate,
        credentials,
    } = open_frames(stream);
    let ours = match &config.auth_key {
        Some(_) => Offer::Key {
            nonce: auth::nonce()?,
            proof: None,
        },
        None => Offer::None,
    };
    Ok(ClientOpening {
        frames,
        write,
        peer,
        local,
        certificate,
        credentials,
        ours,
    })
}

/// Reads the server's hello and checks its version (the authentication
/// fields are left to the caller).
async fn read_server_hello(frames: &mut Frames) -> Result<(Hello, Offer), Error> {
    let theirs = expect_hello(next_frame(frames).await?)?;
    if theirs.version != PROTOCOL_VERSION {
        return Err(version_mismatch(theirs.version));
    }
    let offered = Offer::read(&theirs.rest)?;
    Ok((theirs, offered))
}

fn key_required() -> Error {
    Error::AuthFailed {
        reason: "the server requires a key: set one with ClientBuilder::auth_key".into(),
    }
}

/// For a client that offered no key and did not wait: reads the server's
/// hello, then switches `frames` to the configured limit. Returns the
/// server's frame limit.
pub(crate) async fn finish_without_key(
    frames: &mut Frames,
    config: &ConnectionConfig,
) -> Result<usize, Error> {
    let (theirs, offered) = read_server_hello(frames).await?;
    if offered != Offer::None {
        return Err(key_required());
    }
    frames
        .decoder_mut()
        .set_max_frame_length(config.max_frame_size);
    Ok(crate::config::clamp_frame_size(
        theirs.max_frame_size as usize,
    ))
}

/// Reads the server's hello and authenticates: the rest of the handshake of
/// a client that waits for it (always, with a key).
pub(crate) async fn complete_as_client(
    opening: ClientOpening,
    config: &ConnectionConfig,
) -> Result<Handshake, Error> {
    let ClientOpening {
        mut frames,
        mut write,
        peer,
        local,
        certificate,
        credentials,
        ours,
    } = opening;
    send_hello(&mut write, config, &ours).await?;
    let (theirs, offered) = read_server_hello(&mut frames).await?;
    let key_authenticated = match (&config.auth_key, &ours, offered) {
        (None, _, Offer::None) => false,
        (None, _, Offer::Key { .. }) => return Err(key_required()),
        (Some(_), _, Offer::None) => {
            return Err(Error::AuthFailed {
                reason: "the server does not use a key; refusing to go on without authentication"
                    .into(),
            });
        }
        (
            Some(key),
            Offer::Key { nonce: client, .. },
            Offer::Key {
                nonce: server,
                proof,
            },
        ) => {
            let proven =
                proof.is_some_and(|p| auth::verify(key, Role::Server, client, &server, &p));
            if !proven {
                return Err(Error::AuthFailed {
                    reason: "the key does not match: the server could not prove it holds this \
                             client's key"
                        .into(),
                });
            }
            let ours = auth::proof(key, Role::Client, client, &server);
            send(&mut write, FrameBuf::auth_proof(&ours)).await?;
            match next_frame(&mut frames)
                .await
                .map(|f| wire::parse(f.freeze()))
            {
                Ok(Ok(Message::AuthOk)) => true,
                Ok(Ok(Message::GoAway { reason, .. })) => return Err(go_away_error(reason)),
                Ok(_) => {
                    return Err(Error::Protocol {
                        detail: "expected the server to accept or refuse the key".into(),
                    });
                }
                Err(Error::ConnectionLost { .. }) => {
                    return Err(Error::AuthFailed {
                        reason: "the server closed the connection during authentication".into(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        (Some(_), Offer::None, _) => {
            return Err(Error::AuthFailed {
                reason: "no key was offered".into(),
            });
        }
    };
    Ok(Handshake {
        frames: established(frames, config),
        write,
        hello: theirs,
        peer,
        local,
        key_authenticated,
        certificate,
        credentials,
        reply: None,
    })
}

/// Why the server's authorization refused a peer during the handshake.
fn refused(peer: &str) -> Error {
    tracing::info!(%peer, "connection refused by the authorization rule");
    Error::PermissionDenied {
        detail: "the authorization rule refused the connection".into(),
    }
}

/// Refuses the peer: go-away reason 3, then close.
async fn refuse(write: &mut BoxedWrite) {
    let _ = send(write, FrameBuf::go_away(wire::GOAWAY_PERMISSION_DENIED)).await;
    let _ = write.shutdown().await;
}

/// Reads the client's hello and answers it, then authenticates the client
/// if this server has a key. Used by servers. On a version mismatch our
/// hello is still sent so the client can report both versions. `admit`
/// (the authorization rule) decides once the peer is known: before our
/// hello without a key, before our acceptance with one; a refused peer gets
/// a go-away (reason 3) in their place.
pub(crate) async fn handshake_as_server(
    stream: Stream,
    config: &ConnectionConfig,
    admit: impl FnOnce(&Identity<'_>) -> bool,
) -> Result<Handshake, Error> {
    let Opened {
        mut frames,
        mut write,
        peer,
        local,
        certificate,
        credentials,
    } = open_frames(stream);
    let identity = |key_authenticated| Identity {
        peer: &peer,
        key_authenticated,
        certificate: certificate.clone(),
        credentials,
    };
    let theirs = expect_hello(next_frame(&mut frames).await?)?;
    if theirs.version != PROTOCOL_VERSION {
        send_hello(&mut write, config, &Offer::None).await?;
        let _ = write.shutdown().await;
        return Err(version_mismatch(theirs.version));
    }
    let offered = Offer::read(&theirs.rest)?;
    // Without a key our hello is queued on the connection rather than
    // written here (see `Handshake::reply`).
    let mut reply = None;
    let key_authenticated = match (&config.auth_key, offered) {
        (None, Offer::None) => {
            if !admit(&identity(false)) {
                refuse(&mut write).await;
                return Err(refused(&peer));
            }
            reply = Some(hello_frame(config, &Offer::None));
            false
        }
        (None, Offer::Key { .. }) => {
            // Say so (no key here), and do not go on: no silent downgrade.
            send_hello(&mut write, config, &Offer::None).await?;
            let _ = write.shutdown().await;
            auth::warn_failed(&peer, "the client offered a key; this server has none");
            return Err(Error::AuthFailed {
                reason: "the client offered a key; this server has none".into(),
            });
        }
        (Some(_), Offer::None) => {
            let challenge = Offer::Key {
                nonce: auth::nonce()?,
                proof: None,
            };
            send_hello(&mut write, config, &challenge).await?;
            let _ = write.shutdown().await;
            auth::warn_failed(&peer, "the client offered no key");
            return Err(Error::AuthFailed {
                reason: "the client offered no key".into(),
            });
        }
        (Some(key), Offer::Key { nonce: client, .. }) => {
            let server = auth::nonce()?;
            let answer = Offer::Key {
                nonce: server,
                proof: Some(auth::proof(key, Role::Server, &client, &server)),
            };
            send_hello(&mut write, config, &answer).await?;
            let next = match next_frame(&mut frames).await {
                Ok(frame) => wire::parse(frame.freeze()),
                Err(Error::ConnectionLost { .. }) => {
                    // What a client does when our proof is not of its key.
                    auth::warn_failed(
                        &peer,
                        "the client left: its key is not ours, or it has none",
                    );
                    return Err(Error::AuthFailed {
                        reason: "the client left during authentication".into(),
                    });
                }
                Err(e) => return Err(e),
            };
            let claimed = match next {
                Ok(Message::AuthProof { proof }) => proof,
                _ => {
                    auth::warn_failed(&peer, "expected the client's proof");
                    return Err(Error::AuthFailed {
                        reason: "the client sent something else than its proof".into(),
                    });
                }
            };
            if !auth::verify(key, Role::Client, &client, &server, &claimed) {
                auth::warn_failed(&peer, "the key does not match");
                let _ = send(&mut write, FrameBuf::go_away(wire::GOAWAY_AUTH_FAILED)).await;
                let _ = write.shutdown().await;
                return Err(Error::AuthFailed {
                    reason: "the client's proof does not match the key".into(),
                });
            }
            // Nothing may come before our acceptance: a client that sends
            // requests without waiting for it is refused, whatever they are.
            let early = !frames.read_buffer().is_empty()
                || futures::FutureExt::now_or_never(frames.next()).is_some();
            if early {
                auth::warn_failed(&peer, "frames sent before authentication was accepted");
                return Err(Error::AuthFailed {
                    reason: "the client sent frames before the server accepted its key".into(),
                });
            }
            if !admit(&identity(true)) {
                refuse(&mut write).await;
                return Err(refused(&peer));
            }
            send(&mut write, FrameBuf::auth_ok()).await?;
            true
        }
    };
    Ok(Handshake {
        frames: established(frames, config),
        write,
        hello: theirs,
        peer,
        local,
        key_authenticated,
        certificate,
        credentials,
        reply,
    })
}
