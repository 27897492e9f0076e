//! Transports: addresses, listening, connecting, TLS, and the one seam every
//! connection goes through (any `AsyncRead + AsyncWrite` byte stream).
//!
//! A listener or a connect gives a `Socket` (TCP, Unix, or a stream handed
//! in); TLS, when the address says `tls://`, wraps it (`tls`); the result is
//! a `Stream`, split in halves, with what is known of the peer.

mod tls;
#[cfg(unix)]
mod unix;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;

pub use tls::{PeerCertificate, TlsClient, TlsServer};
pub(crate) use tls::{TlsAcceptor, failure as tls_failure, looks_like_tls};

/// The read half of a connection's byte stream.
pub(crate) type BoxedRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection's byte stream.
pub(crate) type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Where a server listens or a client connects.
///
/// Parsed from a string (with [`str::parse`], or leniently with `From<&str>`):
///
/// | string | address |
/// |---|---|
/// | `HOST:PORT`, `tcp:HOST:PORT` | [`Address::Tcp`]: a name such as `localhost:9099`, or an IP address such as `127.0.0.1:0` or `[::1]:9099` |
/// | `unix:PATH` | [`Address::Unix`]: an absolute (`unix:/run/app.sock`) or relative (`unix:app.sock`) socket path; everything after `unix:` is the path, as is |
/// | `tls://HOST:PORT` | [`Address::Tls`]: TCP with TLS (needs TLS settings on the builder) |
///
/// [`Display`](fmt::Display) writes the same forms back (`unix:/run/app.sock`),
/// so an address printed by a server can be handed to a client.
///
/// ```
/// use ipc_core::Address;
/// use std::path::Path;
///
/// let tcp: Address = "tcp:127.0.0.1:9099".parse()?;
/// assert_eq!(tcp, Address::Tcp("127.0.0.1:9099".into()));
/// let unix: Address = "unix:/tmp/app.sock".parse()?;
/// assert_eq!(unix.as_unix_path(), Some(Path::new("/tmp/app.sock")));
/// assert_eq!(unix.to_string(), "unix:/tmp/app.sock");
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP `host:port`; the host may be a name, resolved when used.
    Tcp(String),
    /// A TCP `host:port` with TLS over it: `tls://HOST:PORT`. The server
    /// needs [`TlsServer`] settings, the client [`TlsClient`] settings.
    Tls(String),
    /// A Unix domain socket at this path (Unix only; elsewhere binding and
    /// connecting fail with [`io::ErrorKind::Unsupported`]). A relative path
    /// is resolved against the current directory when used.
    ///
    /// **Binding** creates the socket file. If the path already exists:
    ///
    /// - a socket no one listens on (a server that crashed left it behind;
    ///   connecting to it is refused) is removed and replaced;
    /// - a socket a server answers on makes the bind fail at once with
    ///   [`Error::Bind`] naming the path (kind [`io::ErrorKind::AddrInUse`]);
    ///   the other server's socket is left alone;
    /// - anything else (a regular file, a directory, a symbolic link) is never
    ///   deleted: the bind fails with [`Error::Bind`] naming the path.
    ///
    /// **Shutting down** (the server's listener being dropped once its accept
    /// loop ends, as after [`ServerHandle::stop`](crate::ServerHandle::stop))
    /// removes the socket file, but only if the path is still the socket this
    /// server created, so a newer server's socket on the same path survives.
    /// A killed process leaves the file behind; the next bind replaces it.
    ///
    /// The OS limits the path's length (about 100 bytes); a longer one fails
    /// to bind or connect.
    Unix(PathBuf),
}

impl Address {
    /// The TCP socket address, if this is a TCP (or TLS) address holding a
    /// literal IP.
    pub fn as_socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(s) | Self::Tls(s) => s.parse().ok(),
            Self::Unix(_) => None,
        }
    }

    /// The socket path, if this is a Unix domain socket address.
    pub fn as_unix_path(&self) -> Option<&Path> {
        match self {
            Self::Tcp(_) | Self::Tls(_) => None,
            Self::Unix(p) => Some(p),
        }
    }

    /// Whether this is a `tls://` address.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// The host of a TCP or TLS address (without brackets for IPv6).
    pub(crate) fn host(&self) -> Option<&str> {
        match self {
            Self::Tcp(s) | Self::Tls(s) => {
                let (host, _) = s.rsplit_once(':')?;
                Some(host.trim_start_matches('[').trim_end_matches(']'))
            }
            Self::Unix(_) => None,
        }
    }
}

/// The prefix of a Unix domain socket address: `unix:PATH`.
const UNIX_PREFIX: &str = "unix:";
/// The optional prefix of a TCP address: `tcp:HOST:PORT`.
const TCP_PREFIX: &str = "tcp:";
/// The prefix of a TLS address: `tls://HOST:PORT`.
const TLS_PREFIX: &str = "tls://";

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
            Self::Tls(s) => write!(f, "{TLS_PREFIX}{s}"),
            // A path that is not UTF-8 is written lossily.
            Self::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses `HOST:PORT`, `tcp:HOST:PORT`, `tls://HOST:PORT` or `unix:PATH`
    /// (see [`Address`]). An IPv6 host is written in brackets (`[::1]:9099`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix(UNIX_PREFIX) {
            return if path.is_empty() {
                Err(Error::InvalidAddress {
                    addr: s.to_owned(),
                    reason: "expected unix:PATH, for example unix:/tmp/ipc.sock",
                })
            } else {
                Ok(Self::Unix(PathBuf::from(path)))
            };
        }
        let (tls, rest) = match s.strip_prefix(TLS_PREFIX) {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix(TCP_PREFIX).unwrap_or(s)),
        };
        check_host_port(rest).map_err(|reason| Error::InvalidAddress {
            addr: s.to_owned(),
            reason,
        })?;
        Ok(if tls {
            Self::Tls(rest.to_owned())
        } else {
            Self::Tcp(rest.to_owned())
        })
    }
}

/// Checks `HOST:PORT`: a port 0..=65535; a host that is a name or an IPv4
/// address, or an IPv6 address in brackets.
fn check_host_port(s: &str) -> Result<(), &'static str> {
    const EXPECTED: &str = "expected HOST:PORT, tls://HOST:PORT or unix:PATH, for example \
                            localhost:9099";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(EXPECTED);
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EXPECTED);
    }
    if port.parse::<u16>().is_err() {
        return Err("the port must be between 0 and 65535");
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => Ok(()),
            _ => Err("expected an IPv6 address in brackets, for example [::1]:9099"),
        };
    }
    if host.contains(':') {
        return Err("write an IPv6 address in brackets, for example [::1]:9099");
    }
    let name_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !name_ok {
        return Err(EXPECTED);
    }
    Ok(())
}

impl Address {
    /// Checks an address made with `From<&str>` (which accepts anything) as
    /// [`str::parse`] would: connecting and binding do, before any I/O.
    pub fn check(&self) -> Result<(), Error> {
        let invalid = |reason| Error::InvalidAddress {
            addr: self.to_string(),
            reason,
        };
        match self {
            Self::Tcp(s) | Self::Tls(s) => check_host_port(s).map_err(invalid),
            Self::Unix(p) if p.as_os_str().is_empty() => Err(invalid(
                "expected unix:PATH, for example unix:/tmp/ipc.sock",
            )),
            Self::Unix(_) => Ok(()),
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
    /// `unix:PATH` is a Unix socket path; anything else is taken as a TCP
    /// `host:port` (an optional `tcp:` prefix removed), as is. It is checked
    /// ([`Address::check`]) before connecting or binding, so a malformed one
    /// fails with `Error::InvalidAddress` naming it before any I/O. Use
    /// [`str::parse`] to check it at once.
    fn from(s: &str) -> Self {
        if let Some(path) = s.strip_prefix(UNIX_PREFIX) {
            return Self::Unix(PathBuf::from(path));
        }
        // A malformed address is kept as written, so the error names it.
        s.parse().unwrap_or_else(|_| Self::Tcp(s.to_owned()))
    }
}

impl From<String> for Address {
    /// As `From<&str>`.
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<PathBuf> for Address {
    /// A Unix domain socket at this path.
    fn from(p: PathBuf) -> Self {
        Self::Unix(p)
    }
}

impl From<&Path> for Address {
    /// A Unix domain socket at this path.
    fn from(p: &Path) -> Self {
        Self::Unix(p.to_owned())
    }
}

/// A Unix peer's credentials, from the socket (`SO_PEERCRED`): who the
/// process on the other end runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct UnixCredentials {
    /// The peer's user id.
    pub uid: u32,
    /// The peer's group id.
    pub gid: u32,
    /// The peer's process id, where the platform says.
    pub pid: Option<i32>,
}

/// A bound listener.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(unix::SocketListener),
}

/// Any byte stream a connection can run over.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A connected or accepted byte stream, before TLS.
pub(crate) enum RawSocket {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    /// A stream handed in (`serve_io`, `connect_io`).
    Io(Box<dyn Duplex>),
}

/// A socket with what is known of its ends.
pub(crate) struct Socket {
    pub(crate) raw: RawSocket,
    /// The peer's address, for logs and the call context.
    pub(crate) peer: String,
    /// This end's address, in the same form.
    pub(crate) local: String,
    /// A Unix socket peer's credentials.
    pub(crate) credentials: Option<UnixCredentials>,
}

impl Socket {
    fn tcp(s: TcpStream, peer: String) -> Self {
        // Small frames must not wait for Nagle; the outbox batches writes itself.
        let _ = s.set_nodelay(true);
        let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
        Self {
            raw: RawSocket::Tcp(s),
            peer,
            local,
            credentials: None,
        }
    }

    /// Any byte stream: in-memory pipes in tests, a TLS stream made outside...
    pub(crate) fn from_io<T: AsyncRead + AsyncWrite + Send + 'static>(io: T, peer: String) -> Self {
        Self {
            raw: RawSocket::Io(Box::new(Box::pin(io))),
            peer,
            local: "io".to_owned(),
            credentials: None,
        }
    }

    /// The stream without TLS.
    pub(crate) fn plain(self) -> Stream {
        let (read, write): (BoxedRead, BoxedWrite) = match self.raw {
            // Owned halves: no lock between reader and writer.
            RawSocket::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            #[cfg(unix)]
            RawSocket::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            RawSocket::Io(io) => {
                let (r, w) = tokio::io::split(io);
                (Box::new(r), Box::new(w))
            }
        };
        Stream {
            read,
            write,
            peer: self.peer,
            local: self.local,
            credentials: self.credentials,
            certificate: None,
        }
    }
}

/// A connection's byte stream, split, with what is known of the peer.
pub(crate) struct Stream {
    pub(crate) read: BoxedRead,
    pub(crate) write: BoxedWrite,
    pub(crate) peer: String,
    /// This end's address, in the same form as `peer`.
    pub(crate) local: String,
    /// A Unix socket peer's credentials.
    pub(crate) credentials: Option<UnixCredentials>,
    /// The peer's verified TLS certificate, if it presented one.
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
}

impl Listener {
    /// Binds at once; a busy port or a live socket is an error naming the
    /// address, never a retry. A Unix socket file gets permissions `mode`.
    pub(crate) async fn bind(addr: &Address, mode: u32) -> Result<(Self, Address), Error> {
        addr.check()?;
        match addr {
            Address::Tcp(s) | Address::Tls(s) => {
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
                let local = match addr {
                    Address::Tls(_) => Address::Tls(local.to_string()),
                    _ => Address::from(local),
                };
                Ok((Self::Tcp(listener), local))
            }
            #[cfg(unix)]
            Address::Unix(path) => {
                let listener = unix::SocketListener::bind(path, mode)
                    .await
                    .map_err(|source| Error::Bind {
                        addr: addr.to_string(),
                        source,
                    })?;
                Ok((Self::Unix(listener), addr.clone()))
            }
            #[cfg(not(unix))]
            Address::Unix(_) => {
                let _ = mode;
                Err(Error::Bind {
                    addr: addr.to_string(),
                    source: unix_unsupported(),
                })
            }
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<Socket> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok(Socket::tcp(s, peer.to_string()))
            }
            #[cfg(unix)]
            Self::Unix(l) => l.accept().await,
        }
    }
}

/// Connects to `addr`, trying each resolved address in turn. TLS, if the
/// address asks for it, is the caller's next step.
pub(crate) async fn connect(addr: &Address) -> Result<Socket, Error> {
    addr.check()?;
    match addr {
        Address::Tcp(s) | Address::Tls(s) => {
            let stream = TcpStream::connect(s.as_str())
                .await
                .map_err(|source| Error::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| s.clone());
            Ok(Socket::tcp(stream, peer))
        }
        #[cfg(unix)]
        Address::Unix(path) => unix::connect(path).await.map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        }),
        #[cfg(not(unix))]
        Address::Unix(_) => Err(Error::Connect {
            addr: addr.to_string(),
            source: unix_unsupported(),
        }),
    }
}

#[cfg(not(unix))]
fn unix_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Unix domain sockets are not supported on this platform",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Address, Error> {
        s.parse()
    }

    #[test]
    fn host_port_with_or_without_tcp_prefix_is_tcp() {
        for (s, want) in [
            ("localhost:9099", "localhost:9099"),
            ("tcp:localhost:9099", "localhost:9099"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("[::1]:9099", "[::1]:9099"),
            ("tcp:[::1]:9099", "[::1]:9099"),
        ] {
            assert_eq!(parse(s).unwrap(), Address::Tcp(want.into()), "{s}");
            assert_eq!(Address::from(s), Address::Tcp(want.into()), "{s}");
        }
    }

    #[test]
    fn unix_prefix_is_a_socket_path_absolute_or_relative() {
        for (s, want) in [
            ("unix:/tmp/ipc.sock", "/tmp/ipc.sock"),
            ("unix:ipc.sock", "ipc.sock"),
            ("unix:./dir/ipc.sock", "./dir/ipc.sock"),
            // Everything after the prefix is the path, colons included.
            ("unix:/tmp/a:1", "/tmp/a:1"),
        ] {
            let want = Address::Unix(PathBuf::from(want));
            assert_eq!(parse(s).unwrap(), want, "{s}");
            assert_eq!(Address::from(s), want, "{s}");
            assert_eq!(Address::from(s.to_owned()), want, "{s}");
        }
        assert_eq!(
            Address::from(PathBuf::from("/tmp/x.sock")),
            Address::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            Address::from(Path::new("x.sock")),
            Address::Unix("x.sock".into())
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "localhost:9099",
            "127.0.0.1:0",
            "[::1]:9099",
            "unix:/tmp/ipc.sock",
            "unix:rel/ipc.sock",
        ] {
            let a = parse(s).unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(parse(&a.to_string()).unwrap(), a);
        }
        assert_eq!(parse("tcp:localhost:1").unwrap().to_string(), "localhost:1");
    }

    #[test]
    fn malformed_addresses_are_invalid() {
        for s in [
            "",
            "unix:",
            "localhost",
            ":9099",
            "host:notaport",
            "tcp:",
            "host:70000",
            "localhost:99999",
            "::1:80",
            "tcp://x",
            "tcp://x:80",
            "[::1:80",
            "[nothost]:80",
            "local host:80",
            "host:+80",
            "tls://",
        ] {
            assert!(
                matches!(parse(s), Err(Error::InvalidAddress { ref addr, .. }) if addr == s),
                "{s:?} parsed, or the error does not name it"
            );
            if !s.starts_with(UNIX_PREFIX) || s == "unix:" {
                assert!(Address::from(s).check().is_err(), "{s:?} passed the check");
            }
        }
    }

    #[test]
    fn only_tcp_literals_have_a_socket_addr() {
        assert_eq!(
            parse("127.0.0.1:80").unwrap().as_socket_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert_eq!(parse("localhost:80").unwrap().as_socket_addr(), None);
        let unix = parse("unix:/tmp/s").unwrap();
        assert_eq!(unix.as_socket_addr(), None);
        assert_eq!(unix.as_unix_path(), Some(Path::new("/tmp/s")));
        assert_eq!(parse("localhost:80").unwrap().as_unix_path(), None);
    }
}
