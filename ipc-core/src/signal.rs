//! [`shutdown_signal`]: the signals that ask a service to stop (Ctrl-C, and
//! SIGTERM from systemd, Docker or Kubernetes), as a future to hand to
//! [`ServerBuilder::shutdown_on`](crate::ServerBuilder::shutdown_on).

use std::future::Future;
use std::io;

/// A future that completes when the process is asked to stop: SIGINT
/// (Ctrl-C) or SIGTERM on Unix, Ctrl-C elsewhere.
///
/// The handlers are installed when this function returns, not when the
/// future is first polled, so a signal that arrives at any later moment is
/// caught instead of killing the process. Call it from within a Tokio
/// runtime.
///
/// ```no_run
/// # use ipc_core::{expose, Server};
/// # #[expose] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
/// # struct Calc;
/// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
/// Server::builder()
///     .expose(CalculatorServer::new(Calc))
///     .shutdown_on(ipc_core::shutdown_signal()?)
///     .serve()
///     .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// A handler could not be installed (see `tokio::signal`).
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "asked to stop");
        })
    }
    #[cfg(windows)]
    {
        let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
        Ok(async move {
            ctrl_c.recv().await;
            tracing::info!(signal = "Ctrl-C", "asked to stop");
        })
    }
    #[cfg(not(any(unix, windows)))]
    {
        Err::<std::future::Pending<()>, _>(io::Error::new(
            io::ErrorKind::Unsupported,
            "signals are not supported on this platform",
        ))
    }
}
