//! Transports: addresses, listening, connecting, and the one seam every
//! connection goes through (any `AsyncRead + AsyncWrite` byte stream).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
/// Parsed from a string (with [`str::parse`], or leniently with `From<&str>`):
///
/// | string | address |
/// |---|---|
/// | `HOST:PORT`, `tcp:HOST:PORT` | [`Address::Tcp`]: a name such as `localhost:9099`, or an IP address such as `127.0.0.1:0` or `[::1]:9099` |
/// | `unix:PATH` | [`Address::Unix`]: an absolute (`unix:/run/app.sock`) or relative (`unix:app.sock`) socket path; everything after `unix:` is the path, as is |
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
    /// The TCP socket address, if this is a TCP address holding a literal IP.
    pub fn as_socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(s) => s.parse().ok(),
            Self::Unix(_) => None,
        }
    }

    /// The socket path, if this is a Unix domain socket address.
    pub fn as_unix_path(&self) -> Option<&Path> {
        match self {
            Self::Tcp(_) => None,
            Self::Unix(p) => Some(p),
        }
    }
}

/// The prefix of a Unix domain socket address: `unix:PATH`.
const UNIX_PREFIX: &str = "unix:";
/// The optional prefix of a TCP address: `tcp:HOST:PORT`.
const TCP_PREFIX: &str = "tcp:";

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
            // A path that is not UTF-8 is written lossily.
            Self::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses `HOST:PORT`, `tcp:HOST:PORT` or `unix:PATH` (see [`Address`]).
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
        let s = s.strip_prefix(TCP_PREFIX).unwrap_or(s);
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(s.to_owned()))
            }
            _ => Err(Error::InvalidAddress {
                addr: s.to_owned(),
                reason: "expected HOST:PORT or unix:PATH, for example localhost:9099",
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
    /// `unix:PATH` is a Unix socket path; anything else is taken as a TCP
    /// `host:port` (an optional `tcp:` prefix removed), as is, and checked
    /// when used. Use [`str::parse`] to check it at once.
    fn from(s: &str) -> Self {
        match s.strip_prefix(UNIX_PREFIX) {
            Some(path) => Self::Unix(PathBuf::from(path)),
            None => Self::Tcp(s.strip_prefix(TCP_PREFIX).unwrap_or(s).to_owned()),
        }
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

/// A bound listener.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(unix::SocketListener),
}

/// An accepted or connected stream, split, with a label for logs.
pub(crate) struct Stream {
    pub(crate) read: BoxedRead,
    pub(crate) write: BoxedWrite,
    pub(crate) peer: String,
    /// This end's address, in the same form as `peer`.
    pub(crate) local: String,
}

impl Stream {
    fn tcp(s: TcpStream, peer: String) -> Self {
        // Small frames must not wait for Nagle; the outbox batches writes itself.
        let _ = s.set_nodelay(true);
        let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let (r, w) = s.into_split();
        Self {
            read: Box::new(r),
            write: Box::new(w),
            peer,
            local,
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
            local: "io".to_owned(),
        }
    }
}

impl Listener {
    /// Binds at once; a busy port or a live socket is an error naming the
    /// address, never a retry.
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
            #[cfg(unix)]
            Address::Unix(path) => {
                let listener =
                    unix::SocketListener::bind(path)
                        .await
                        .map_err(|source| Error::Bind {
                            addr: addr.to_string(),
                            source,
                        })?;
                Ok((Self::Unix(listener), addr.clone()))
            }
            #[cfg(not(unix))]
            Address::Unix(_) => Err(Error::Bind {
                addr: addr.to_string(),
                source: unix_unsupported(),
            }),
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok(Stream::tcp(s, peer.to_string()))
            }
            #[cfg(unix)]
            Self::Unix(l) => l.accept().await,
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

/// Unix domain sockets: binding over a stale socket file, and removing ours
/// when done.
#[cfg(unix)]
mod unix {
    use std::io;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use tokio::net::{UnixListener, UnixStream};

    use super::{Stream, UNIX_PREFIX};

    /// How long the probe of an existing socket file may take. A live server
    /// accepts (or refuses) at once; one that does neither within this time is
    /// treated as alive, so its socket is left alone.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

    /// Which file a path names: device and inode.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct FileId {
        dev: u64,
        ino: u64,
    }

    impl FileId {
        /// The socket at `path` (not following a symbolic link), if it is one.
        fn socket_at(path: &Path) -> Option<Self> {
            Self::socket(&std::fs::symlink_metadata(path).ok()?)
        }

        /// The file `meta` describes, if it is a socket.
        fn socket(meta: &std::fs::Metadata) -> Option<Self> {
            meta.file_type().is_socket().then(|| Self {
                dev: meta.dev(),
                ino: meta.ino(),
            })
        }
    }

    /// A bound Unix listener that removes its socket file when dropped, if
    /// the path still names the socket it created.
    #[derive(Debug)]
    pub(crate) struct SocketListener {
        listener: UnixListener,
        /// The path, absolute, so a later change of directory does not
        /// change which file is removed.
        path: PathBuf,
        /// The socket file created at bind time; `None` if it could not be
        /// identified, in which case nothing is removed.
        created: Option<FileId>,
    }

    impl SocketListener {
        /// Binds at `path`, replacing a stale socket file (see
        /// [`super::Address::Unix`]).
        pub(crate) async fn bind(path: &Path) -> io::Result<Self> {
            let listener = match UnixListener::bind(path) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    remove_stale(path, e).await?;
                    // Fails with AddrInUse again if another server took the
                    // path meanwhile: no loop.
                    UnixListener::bind(path)?
                }
                other => other?,
            };
            Ok(Self {
                listener,
                path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
                created: FileId::socket_at(path),
            })
        }

        pub(crate) async fn accept(&self) -> io::Result<Stream> {
            let (s, peer) = self.listener.accept().await?;
            let label = match peer.as_pathname() {
                Some(p) => format!("{UNIX_PREFIX}{}", p.display()),
                // Clients rarely bind a name; the peer's process id tells
                // connections apart in logs.
                None => match s.peer_cred().ok().and_then(|c| c.pid()) {
                    Some(pid) => format!("{UNIX_PREFIX}unnamed (pid {pid})"),
                    None => format!("{UNIX_PREFIX}unnamed"),
                },
            };
            Ok(unix_stream(s, label))
        }
    }

    impl Drop for SocketListener {
        fn drop(&mut self) {
            if self.created.is_some() && FileId::socket_at(&self.path) == self.created {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::debug!(
                        path = %self.path.display(),
                        error = %e,
                        "could not remove the socket file"
                    );
                }
            }
        }
    }

    /// `path` exists (binding it failed with `in_use`): removes it if it is
    /// a socket no one listens on; otherwise an error, leaving it alone.
    async fn remove_stale(path: &Path, in_use: io::Error) -> io::Result<()> {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            // Not a file we can see (a vanished file, an abstract name): report
            // the bind's own error.
            return Err(in_use);
        };
        let Some(before) = FileId::socket(&meta) else {
            let what = if meta.is_dir() {
                "a directory"
            } else if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "a file that is not a socket"
            };
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("the path is {what}; it was left alone"),
            ));
        };
        match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Ok(Ok(_)) | Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is listening on this socket",
                ));
            }
            Ok(Err(e)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("the socket file exists and probing it failed: {e}"),
                ));
            }
        }
        // Remove only the file just probed, not one a newer server has put
        // there since.
        if FileId::socket_at(path) != Some(before) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "the socket file was replaced while it was being probed",
            ));
        }
        tracing::info!(
            path = %path.display(),
            "removing a stale socket file no server listens on"
        );
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Connects to the socket at `path`.
    pub(crate) async fn connect(path: &Path) -> io::Result<Stream> {
        let s = UnixStream::connect(path).await?;
        Ok(unix_stream(s, format!("{UNIX_PREFIX}{}", path.display())))
    }

    fn unix_stream(s: UnixStream, peer: String) -> Stream {
        let local = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
            .unwrap_or_else(|| "unix:unnamed".to_owned());
        let (r, w) = s.into_split();
        Stream {
            read: Box::new(r),
            write: Box::new(w),
            peer,
            local,
        }
    }
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
        ] {
            assert!(
                matches!(parse(s), Err(Error::InvalidAddress { .. })),
                "{s:?} parsed"
            );
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
