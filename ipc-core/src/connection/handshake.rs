//! The handshake: each side sends a hello (magic, protocol version, the
//! largest frame it accepts) and reads the other's.

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::config::ConnectionConfig;
use crate::error::Error;
use crate::transport::{BoxedRead, BoxedWrite, Stream};
use crate::wire::{self, FrameBuf, Hello, Message, PROTOCOL_VERSION};

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
}

impl Handshake {
    /// The peer's frame limit, as announced, within what the protocol allows.
    pub(crate) fn peer_limit(&self) -> usize {
        crate::config::clamp_frame_size(self.hello.max_frame_size as usize)
    }
}

/// Reads a frame used in the handshake; end of stream and oversize are errors.
async fn next_frame(frames: &mut Frames) -> Result<BytesMut, Error> {
    match frames.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(io_to_protocol(e)),
        None => Err(Error::ConnectionLost {
            reason: "the peer closed the connection during the handshake".into(),
        }),
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
        Ok(Message::GoAway { reason, .. }) if reason == wire::GOAWAY_CONNECTION_LIMIT => {
            Err(Error::Overloaded {
                detail: "the server is at its connection limit".into(),
            })
        }
        Ok(Message::GoAway { .. }) => Err(Error::ShuttingDown),
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

fn version_mismatch(theirs: u16) -> Error {
    Error::ProtocolMismatch {
        detail: format!(
            "this side speaks protocol version {PROTOCOL_VERSION}, the peer speaks {theirs}"
        ),
    }
}

/// Splits the stream into size-checked incoming frames and the write half.
fn open_frames(stream: Stream) -> (Frames, BoxedWrite, (String, String)) {
    let Stream {
        read,
        write,
        peer,
        local,
    } = stream;
    // Until the handshake is done, nothing bigger than a hello is accepted:
    // a stranger cannot make us reserve a whole frame limit.
    let frames = FramedRead::with_capacity(read, wire::codec(wire::HANDSHAKE_FRAME_MAX), 8 * 1024);
    (frames, write, (peer, local))
}

/// After a successful handshake: the configured frame limit from now on.
fn established(mut frames: Frames, config: &ConnectionConfig) -> Frames {
    frames
        .decoder_mut()
        .set_max_frame_length(config.max_frame_size);
    frames
}

/// Sends our hello, announcing our frame limit.
async fn send_hello(write: &mut BoxedWrite, config: &ConnectionConfig) -> Result<(), Error> {
    let hello = FrameBuf::hello(config.max_frame_size, &[]).into_unchecked();
    write
        .write_all(&hello)
        .await
        .map_err(|e| Error::ConnectionLost {
            reason: format!("sending the handshake: {e}"),
        })
}

/// Splits the stream, sends our hello, reads theirs. Used by clients.
pub(crate) async fn handshake_as_client(
    stream: Stream,
    config: &ConnectionConfig,
) -> Result<Handshake, Error> {
    let (mut frames, mut write, (peer, local)) = open_frames(stream);
    send_hello(&mut write, config).await?;
    let theirs = expect_hello(next_frame(&mut frames).await?)?;
    if theirs.version != PROTOCOL_VERSION {
        return Err(version_mismatch(theirs.version));
    }
    Ok(Handshake {
        frames: established(frames, config),
        write,
        hello: theirs,
        peer,
        local,
    })
}

/// Reads the client's hello and answers it. Used by servers. On a version
/// mismatch our hello is still sent so the client can report both versions.
pub(crate) async fn handshake_as_server(
    stream: Stream,
    config: &ConnectionConfig,
) -> Result<Handshake, Error> {
    let (mut frames, mut write, (peer, local)) = open_frames(stream);
    let theirs = expect_hello(next_frame(&mut frames).await?)?;
    send_hello(&mut write, config).await?;
    if theirs.version != PROTOCOL_VERSION {
        let _ = write.shutdown().await;
        return Err(version_mismatch(theirs.version));
    }
    Ok(Handshake {
        frames: established(frames, config),
        write,
        hello: theirs,
        peer,
        local,
    })
}
