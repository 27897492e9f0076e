//! A tour of `ipc` in one process: expose a calculator, call it through its
//! proxy, see both kinds of error, and shut the server down gracefully.
//!
//! ```text
//! cargo run -p ipc-examples --bin demo
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use ipc_core::{CallError, Client, Error, Server, expose};
use serde::{Deserialize, Serialize};

/// The error of [`Calculator::div`]: an ordinary application type, sent
/// across the wire as a value.
#[derive(Debug, Serialize, Deserialize)]
enum MathError {
    /// The divisor was zero.
    DivideByZero,
}

/// The remote interface. `#[expose]` generates `CalculatorServer<T>` for the
/// serving side and `CalculatorProxy` for the calling side.
#[expose]
trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`, failing on a zero divisor.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

/// The implementation: plain `async fn`s, nothing about networking.
struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ipc_examples::init_tracing();

    // Port 0: the OS picks a free port, so the demo never collides with
    // anything (servers default to localhost:9099).
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .expose(CalculatorServer::new(Calc))
        .start()
        .await?;
    println!(
        "1. server: exposing `Calculator` on {}",
        server.local_addr()
    );

    let client = Client::connect(server.local_addr()).await?;
    let calc: CalculatorProxy = client.get_exposed_object().await?;
    println!("2. client: connected and looked up `Calculator`");

    println!("3. add(2, 3)  = {}", calc.add(2, 3).await?);
    println!("4. div(7, 2)  = {}", calc.div(7, 2).await?);

    // A method's own error arrives typed, apart from framework errors.
    match calc.div(1, 0).await {
        Err(CallError::App(MathError::DivideByZero)) => {
            println!("5. div(1, 0)  failed with the method's own error: DivideByZero");
        }
        other => return Err(format!("expected DivideByZero, got {other:?}").into()),
    }

    // Looking up a name the server does not expose fails at once, typed too.
    match client
        .get_exposed_object_named::<CalculatorProxy>("Abacus")
        .await
    {
        Err(e @ Error::UnknownObject { .. }) => println!("6. lookup of `Abacus`: {e}"),
        other => return Err(format!("expected UnknownObject, got {other:?}").into()),
    }

    // Graceful: new connections are refused, calls in flight are allowed to finish.
    server.stop().await;
    println!("7. server: stopped gracefully");

    // The client sees the server is gone: a connection error, not a hang.
    match calc.add(1, 1).await {
        // Which connection error depends on timing (the server's goodbye,
        // or a refused reconnect); the demo's output does not.
        Err(e) if e.is_connection_error() => {
            println!("8. add(1, 1) after stop: a connection error, as expected");
            tracing::debug!(error = %e, "the call after stop");
        }
        other => return Err(format!("expected a connection error, got {other:?}").into()),
    }
    Ok(())
}
