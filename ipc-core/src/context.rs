//! [`CallContext`]: who is calling, readable from inside a handler without
//! changing the trait's signature.

use std::sync::Arc;

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
    pub(crate) peer: Arc<str>,
    pub(crate) connection_id: u64,
    pub(crate) object: Arc<str>,
    pub(crate) request_id: u64,
}

impl CallContext {
    /// The context of the call being served by the current task, if any.
    /// Available in the handler's own future (not in tasks it spawns).
    pub fn current() -> Option<Self> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The caller's address as the server saw it: `IP:PORT` for TCP, the
    /// socket's peer for Unix sockets, `io` for streams handed in directly.
    pub fn peer_addr(&self) -> &str {
        &self.peer
    }

    /// A number identifying the caller's connection, unique within the server.
    pub fn connection_id(&self) -> u64 {
        self.connection_id
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
    static CURRENT: std::cell::RefCell<Option<CallContext>> = const { std::cell::RefCell::new(None) };
}

/// Makes `context` current, returning the one it replaces (to restore).
pub(crate) fn swap(context: Option<CallContext>) -> Option<CallContext> {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), context))
}
