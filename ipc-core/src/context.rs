//! Who is calling: [`Peer`] (what the server knows of the other end of a
//! connection), [`CallContext`] (that, plus the call, readable from inside a
//! handler without changing the trait's signature), and [`Access`] (what an
//! authorization rule is asked about).

use std::sync::Arc;

use crate::transport::{Address, PeerCertificate, UnixCredentials};

/// What is known of the other end of a connection: its address, and how it
/// proved who it is — a TLS client certificate (mutual TLS), the shared key,
/// and for Unix sockets the peer process's credentials.
#[derive(Debug, Clone)]
pub struct Peer {
    /// For logs.
    pub(crate) addr: Arc<str>,
    address: Address,
    pub(crate) connection_id: u64,
    pub(crate) key_authenticated: bool,
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
    pub(crate) credentials: Option<UnixCredentials>,
}

impl Peer {
    pub(crate) fn new(
        addr: &str,
        connection_id: u64,
        key_authenticated: bool,
        certificate: Option<Arc<PeerCertificate>>,
        credentials: Option<UnixCredentials>,
    ) -> Self {
        Self {
            addr: Arc::from(addr),
            address: Address::from(addr),
            connection_id,
            key_authenticated,
            certificate,
            credentials,
        }
    }

    /// The peer's address as this side sees it: `IP:PORT` for TCP, the
    /// socket's peer for Unix sockets, `io` for streams handed in directly.
    /// Comparable with the client's own [`crate::Client::local_addr`].
    pub fn addr(&self) -> &Address {
        &self.address
    }

    /// A number identifying the connection, unique within the server.
    pub fn connection_id(&self) -> u64 {
        self.connection_id
    }

    /// Whether the peer proved it holds the shared key (a "key holder").
    pub fn key_authenticated(&self) -> bool {
        self.key_authenticated
    }

    /// The peer's TLS certificate, verified during the handshake (mutual TLS).
    pub fn certificate(&self) -> Option<&PeerCertificate> {
        self.certificate.as_deref()
    }

    /// A Unix socket peer's user, group and process ids.
    pub fn credentials(&self) -> Option<UnixCredentials> {
        self.credentials
    }
}

/// What an authorization rule (`ServerBuilder::authorize`) is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access<'a> {
    /// May this peer use the server at all? Asked once, after the handshake;
    /// `false` closes the connection (the client's connect fails with
    /// `Error::PermissionDenied`).
    Connect,
    /// May this peer see and look up the object? Asked by lookups and the
    /// directory; `false` hides the object (`UnknownObject`).
    Object {
        /// The name it is exposed under.
        object: &'a str,
    },
    /// May this peer call this method? Asked before every call to a named
    /// object; `false` answers `PermissionDenied` and the handler does not run.
    Call {
        /// The name the object is exposed under.
        object: &'a str,
        /// The method's name.
        method: &'a str,
    },
}

/// Facts about the call a handler is serving. Read it with
/// [`CallContext::current`] from inside an exposed method.
///
/// ```
/// # use ipc_core::CallContext;
/// // Outside a handler there is none.
/// assert!(CallContext::current().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct CallContext {
    pub(crate) peer: Arc<Peer>,
    pub(crate) object: Arc<str>,
    pub(crate) request_id: u64,
}

impl CallContext {
    /// The context of the call being served by the current task, if any.
    /// Available in the handler's own future (not in tasks it spawns).
    pub fn current() -> Option<Self> {
        CURRENT.with(|c| {
            let context = c.take();
            let copy = context.clone();
            c.set(context);
            copy
        })
    }

    /// Who is calling.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The caller's address as the server saw it: `IP:PORT` for TCP, the
    /// socket's peer for Unix sockets, `io` for streams handed in directly.
    pub fn peer_addr(&self) -> &Address {
        self.peer.addr()
    }

    /// A number identifying the caller's connection, unique within the server.
    pub fn connection_id(&self) -> u64 {
        self.peer.connection_id
    }

    /// The caller's verified TLS certificate (mutual TLS), if any.
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.peer.certificate()
    }

    /// A Unix socket caller's user, group and process ids.
    pub fn peer_credentials(&self) -> Option<UnixCredentials> {
        self.peer.credentials
    }

    /// The name the called object is exposed under.
    pub fn object_name(&self) -> &str {
        &self.object
    }

    /// The request id of this call (unique among the connection's calls in flight).
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
}

thread_local! {
    /// The context of the handler being polled on this thread.
    static CURRENT: std::cell::Cell<Option<CallContext>> = const { std::cell::Cell::new(None) };
}

/// Makes `context` current, returning the one it replaces (to restore).
pub(crate) fn swap(context: Option<CallContext>) -> Option<CallContext> {
    CURRENT.with(|c| c.replace(context))
}
