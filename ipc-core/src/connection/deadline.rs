//! A call's deadline, and the sweep that enforces it with one timer per
//! connection instead of one per call.
//!
//! A call waits for two kinds of things. Before its request is queued (a
//! connection, a lookup, room in the outbox, the server's hello) the caller
//! waits itself, and [`within`] arms a timer for it, but only once one of
//! those waits is actually pending: the usual call never does. Once the
//! request is queued, the call's entry in the calls table carries the
//! deadline and the connection's sweep task ends it there: it sleeps until
//! the earliest deadline in the table, fails every call past its own with
//! `Timeout` (and tells the peer to cancel it), and sleeps again. So a call
//! that is answered in time costs no timer at all.
//!
//! The sweep runs on the connection's runtime, as do its reader and writer.
//! If that is a current-thread runtime, a call made from another runtime
//! keeps a timer of its own: a current-thread runtime runs its tasks only
//! while something blocks on it, which may not be the case while the caller
//! waits.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::task::Unconstrained;
use tokio::time::{Instant, Sleep};

use super::Connection;

/// When a call gives up, and what its `Timeout` error says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    pub(crate) at: Instant,
    pub(crate) after: Duration,
}

/// One call's deadline, shared by the caller's wait ([`within`]) and the
/// request in flight (which hands it to the connection's sweep).
#[derive(Debug)]
pub(crate) struct Deadline {
    /// `None`: a timeout so long that it never comes.
    due: Option<Due>,
    /// Set while a queued request's entry carries the deadline (the sweep
    /// watches it): the caller then needs no timer of its own.
    swept: AtomicBool,
}

impl Deadline {
    /// `after` from now.
    pub(crate) fn after(after: Duration) -> Self {
        Self {
            due: Instant::now()
                .checked_add(after)
                .map(|at| Due { at, after }),
            swept: AtomicBool::new(false),
        }
    }

    /// When the call gives up, if ever.
    pub(crate) fn due(&self) -> Option<Due> {
        self.due
    }

    /// Whether the connection's sweep watches the call now.
    pub(crate) fn set_swept(&self, swept: bool) {
        self.swept.store(swept, Ordering::Release);
    }

    fn is_swept(&self) -> bool {
        self.swept.load(Ordering::Acquire)
    }
}

/// Runs `call` until it completes or `deadline` passes (`None`). A timer is
/// armed only while `call` is pending on something the connection's sweep
/// does not watch; it is made once and kept while it may be needed.
/// (`call` is pinned by the caller: a call's future is large, and moving it
/// in here would copy it.)
pub(crate) async fn within<F: Future>(
    deadline: &Deadline,
    mut call: Pin<&mut F>,
) -> Option<F::Output> {
    let mut timer: Option<Pin<Box<Unconstrained<Sleep>>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(out) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if deadline.is_swept() {
            timer = None;
            return Poll::Pending;
        }
        let Some(due) = deadline.due else {
            return Poll::Pending;
        };
        // Out of line: a call that waits before its request is queued is
        // rare, and the timer would make every call's future larger.
        // Unconstrained by the task's budget, as `tokio::time::timeout`'s
        // timer: a call that spent it must still see its deadline.
        let timer = timer.get_or_insert_with(|| {
            Box::pin(tokio::task::unconstrained(tokio::time::sleep_until(due.at)))
        });
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// The sweep of one connection: ends calls past their deadlines until the
/// connection closes (which signals it). Spawned by the first call that
/// needs it, on the connection's runtime; the running flag is cleared
/// however the task ends (also when it is dropped before it first runs), so
/// the next call starts another.
pub(super) fn spawn_sweep(conn: &Arc<Connection>) {
    /// Clears the running flag when the task ends or is dropped.
    struct Running(Arc<Connection>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.calls.sweep_ended();
        }
    }
    let running = Running(conn.clone());
    let Some(runtime) = &conn.runtime else {
        // Not reached: calls are swept only on a connection with a runtime.
        return;
    };
    runtime.spawn(async move {
        let conn = &running.0;
        loop {
            let signal = conn.calls.sweep_signal();
            let mut signal = pin!(signal);
            signal.as_mut().enable();
            let Some(next) = conn.expire_calls(Instant::now()) else {
                // Closed.
                return;
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = signal => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => signal.await,
            }
        }
    });
}
