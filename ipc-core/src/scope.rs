//! Which connection the value being encoded or decoded travels on.
//!
//! Most values do not care. Two do: a [`crate::Remote`] object is exported
//! on (or imported from) one connection, and a reply must stop encoding at
//! the receiving peer's frame limit. The connection machinery enters a scope
//! around every encode and decode it does — a call's arguments, a reply, a
//! stream item — and around every poll of a handler's future (which encodes
//! its own reply), so serde impls deep inside a value can find out.
//!
//! The connection is kept as `dyn Any`: this module sits below the
//! connection layer and must not name it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::context::CallContext;

/// The connection of the current encode or decode.
#[derive(Clone)]
pub(crate) struct Scope {
    /// The largest frame the receiving peer accepts.
    pub(crate) peer_max_frame: usize,
    /// The connection itself (a `connection::Connection`).
    pub(crate) conn: Arc<dyn Any + Send + Sync>,
    /// The call being served, inside a handler.
    pub(crate) context: Option<CallContext>,
}

thread_local! {
    // A `Cell`: entering and leaving are one `replace` each, with no borrow
    // flag to keep (they happen several times per call).
    static CURRENT: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// Restores the previous scope when dropped.
pub(crate) struct Entered(Option<Scope>);

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| c.set(previous));
    }
}

/// Makes `scope` current until the returned guard is dropped.
pub(crate) fn enter(scope: Scope) -> Entered {
    Entered(CURRENT.with(|c| c.replace(Some(scope))))
}

/// Runs `f` with `scope` current. (By value: a scope holds an `Arc`, and
/// most callers make it for this one use.)
pub(crate) fn with<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    let _entered = enter(scope);
    f()
}

/// Runs `f` with the scope in `slot` current, moving it in for the call and
/// back out after (even by a panic): for a loop that enters the same scope
/// again and again, without a copy each time. Outside, `slot` is `None`
/// only while `f` runs.
pub(crate) fn lend<R>(slot: &mut Option<Scope>, f: impl FnOnce() -> R) -> R {
    /// Puts the scope back into `home` and the previous one into the
    /// thread-local.
    struct Back<'a> {
        home: &'a mut Option<Scope>,
        previous: Option<Scope>,
    }
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            *self.home = CURRENT.with(|c| c.replace(previous));
        }
    }
    let lent = slot.take();
    let previous = CURRENT.with(|c| c.replace(lent));
    let _back = Back {
        home: slot,
        previous,
    };
    f()
}

/// The current scope, if any.
pub(crate) fn current() -> Option<Scope> {
    CURRENT.with(|c| {
        let scope = c.take();
        let copy = scope.clone();
        c.set(scope);
        copy
    })
}

/// The receiving peer's frame limit, or the protocol's cap outside a scope
/// (a local call: nothing crosses a wire).
pub(crate) fn peer_max_frame() -> usize {
    CURRENT.with(|c| {
        let scope = c.take();
        let limit = scope
            .as_ref()
            .map_or(crate::wire::MAX_FRAME_SIZE_CAP, |s| s.peer_max_frame);
        c.set(scope);
        limit
    })
}

/// A future polled with a scope entered at every poll. The scope moves into
/// the thread-local for the poll and back out after it: no copy per poll.
pub(crate) struct Scoped<F> {
    scope: Option<Scope>,
    inner: F,
}

impl<F> Scoped<F> {
    pub(crate) fn new(scope: Scope, inner: F) -> Self {
        Self {
            scope: Some(scope),
            inner,
        }
    }
}

/// Puts the scope (and the call context it carries) back into its future
/// when the poll ends, even by a panic.
struct Lent<'a> {
    home: &'a mut Option<Scope>,
    previous: Option<Scope>,
    previous_context: Option<CallContext>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let context = crate::context::swap(self.previous_context.take());
        let previous = self.previous.take();
        let mut scope = CURRENT.with(|c| c.replace(previous));
        if let Some(scope) = scope.as_mut() {
            scope.context = context;
        }
        *self.home = scope;
    }
}

impl<F: Future + Unpin> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let mut lent = this.scope.take();
        let context = lent.as_mut().and_then(|s| s.context.take());
        let previous_context = crate::context::swap(context);
        let previous = CURRENT.with(|c| c.replace(lent));
        let _back = Lent {
            home: &mut this.scope,
            previous,
            previous_context,
        };
        Pin::new(&mut this.inner).poll(cx)
    }
}

thread_local! {
    /// Why the last export in this scope was refused (a limit), so the
    /// failed encode can be reported as `Overloaded` rather than as a
    /// failure of the value's `Serialize` impl.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records that an export was refused for lack of room.
pub(crate) fn refuse(detail: String) {
    REFUSED.with(|r| *r.borrow_mut() = Some(detail));
}

/// Takes the refusal recorded by the last failed export, if any.
pub(crate) fn take_refusal() -> Option<String> {
    REFUSED.with(|r| r.borrow_mut().take())
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use super::*;

    fn scope(peer_max_frame: usize) -> Scope {
        Scope {
            peer_max_frame,
            conn: Arc::new(()),
            context: None,
        }
    }

    /// A lent scope is current while `f` runs and back in its slot after,
    /// with the outer scope current again; also when `f` panics.
    #[test]
    fn a_lent_scope_is_current_inside_and_back_in_its_slot_after() {
        let _outer = enter(scope(1));
        let mut slot = Some(scope(2));
        assert_eq!(lend(&mut slot, peer_max_frame), 2);
        assert_eq!(slot.as_ref().map(|s| s.peer_max_frame), Some(2));
        assert_eq!(peer_max_frame(), 1);

        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            lend(&mut slot, || panic!("inside the scope"))
        }));
        assert!(panicked.is_err());
        assert_eq!(slot.as_ref().map(|s| s.peer_max_frame), Some(2));
        assert_eq!(peer_max_frame(), 1);
    }
}
