//! Transports: addresses, listening, connecting, and the one seam every
//! connection goes through (any `AsyncRead + AsyncWrite` byte stream).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;

/// The read half of a connection's byte stream.
pub(crate) type BoxedRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection's byte stream.
pub(crate) type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Where a server listens or a client connects.
///
/// Parsed from a string: `HOST:PORT` (a name such as `localhost:9099`, or an
/// IP address such as `127.0.0.1:0` or `[::1]:9099`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP `host:port`; the host may be a name, resolved when used.
    Tcp(String),
}

impl Address {
    /// The TCP socket address, if this is a TCP address holding a literal IP.
    pub fn as_socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(s) => s.parse().ok(),
        }
    }
}

impl Default for Address {
    /// `localhost:9099`, the default of the original system.
    fn default() -> Self {
        Self::Tcp(crate::config::DEFAULT_ADDR.to_owned())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(s) => f.write_str(s),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("tcp:").unwrap_or(s);
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(s.to_owned()))
            }
            _ => Err(Error::InvalidAddress {
                addr: s.to_owned(),
                reason: "expected HOST:PORT, for example localhost:9099",
            }),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Self::Tcp(a.to_string())
    }
}

impl From<&Address> for Address {
    fn from(a: &Address) -> Self {
        a.clone()
    }
}

impl From<&str> for Address {
    /// Takes the string as a TCP `host:port` as is; it is checked when used.
    fn from(s: &str) -> Self {
        Self::Tcp(s.strip_prefix("tcp:").unwrap_or(s).to_owned())
    }
}

impl From<String> for Address {
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}

/// A bound listener.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
}

/// An accepted or connected stream, split, with a label for logs.
pub(crate) struct Stream {
    pub(crate) read: BoxedRead,
    pub(crate) write: BoxedWrite,
    pub(crate) peer: String,
}

impl Stream {
    fn tcp(s: TcpStream, peer: String) -> Self {
        // Small frames must not wait for Nagle; the outbox batches writes itself.
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        Self {
            read: Box::new(r),
            write: Box::new(w),
            peer,
        }
    }

    /// Any byte stream: in-memory pipes in tests, TLS wrappers, and so on.
    pub(crate) fn from_io<T>(io: T, peer: String) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        Self {
            read: Box::new(r),
            write: Box::new(w),
            peer,
        }
    }
}

impl Listener {
    /// Binds at once; a busy port is an error naming the address, never a retry.
    pub(crate) async fn bind(addr: &Address) -> Result<(Self, Address), Error> {
        match addr {
            Address::Tcp(s) => {
                let bind_err = |source| Error::Bind {
                    addr: s.clone(),
                    source,
                };
                let mut candidates: Vec<SocketAddr> = tokio::net::lookup_host(s.as_str())
                    .await
                    .map_err(bind_err)?
                    .collect();
                // `localhost` resolves to both families; prefer IPv4 so the
                // address is the same on every machine.
                candidates.sort_by_key(|a| !a.is_ipv4());
                let first = candidates.first().copied().ok_or_else(|| {
                    bind_err(io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "the host name resolved to no address",
                    ))
                })?;
                let listener = TcpListener::bind(first).await.map_err(bind_err)?;
                let local = listener.local_addr().map_err(bind_err)?;
                Ok((Self::Tcp(listener), Address::from(local)))
            }
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok(Stream::tcp(s, peer.to_string()))
            }
        }
    }
}

/// Connects to `addr`, trying each resolved address in turn.
pub(crate) async fn connect(addr: &Address) -> Result<Stream, Error> {
    match addr {
        Address::Tcp(s) => {
            let stream = TcpStream::connect(s.as_str())
                .await
                .map_err(|source| Error::Connect {
                    addr: s.clone(),
                    source,
                })?;
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| s.clone());
            Ok(Stream::tcp(stream, peer))
        }
    }
}
