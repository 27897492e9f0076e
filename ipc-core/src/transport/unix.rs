//! Unix domain sockets: binding over a stale socket file, and removing ours
//! when done.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use super::{RawSocket, Socket, UNIX_PREFIX, UnixCredentials};

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
    pub(crate) async fn bind(path: &Path, mode: u32) -> io::Result<Self> {
        let listener = match UnixListener::bind(path) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                remove_stale(path, e).await?;
                // Fails with AddrInUse again if another server took the
                // path meanwhile: no loop.
                UnixListener::bind(path)?
            }
            other => other?,
        };
        // Before the first accept: who may connect is who may write the
        // file. (Connecting needs write permission on it.)
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        Ok(Self {
            listener,
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
            created: FileId::socket_at(path),
        })
    }

    pub(crate) async fn accept(&self) -> io::Result<Socket> {
        let (s, peer) = self.listener.accept().await?;
        let credentials = credentials(&s);
        let label = match peer.as_pathname() {
            Some(p) => format!("{UNIX_PREFIX}{}", p.display()),
            // Clients rarely bind a name; the peer's process id tells
            // connections apart in logs.
            None => match credentials.and_then(|c| c.pid) {
                Some(pid) => format!("{UNIX_PREFIX}unnamed (pid {pid})"),
                None => format!("{UNIX_PREFIX}unnamed"),
            },
        };
        Ok(unix_socket(s, label, credentials))
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
pub(crate) async fn connect(path: &Path) -> io::Result<Socket> {
    let s = UnixStream::connect(path).await?;
    let credentials = credentials(&s);
    Ok(unix_socket(
        s,
        format!("{UNIX_PREFIX}{}", path.display()),
        credentials,
    ))
}

/// The peer's credentials, as the kernel reports them.
fn credentials(s: &UnixStream) -> Option<UnixCredentials> {
    let c = s.peer_cred().ok()?;
    Some(UnixCredentials {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    })
}

fn unix_socket(s: UnixStream, peer: String, credentials: Option<UnixCredentials>) -> Socket {
    let local = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
        .unwrap_or_else(|| "unix:unnamed".to_owned());
    Socket {
        raw: RawSocket::Unix(s),
        peer,
        local,
        credentials,
    }
}
