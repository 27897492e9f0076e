//! A documented trait in a crate that denies every warning and missing docs:
//! the generated proxy and server add no warnings of their own, and the
//! descriptor reflects the trait as written.
#![deny(warnings, missing_docs)]

use std::sync::Arc;

use ipc_core::__private::{ObjectDescriptor, Proxy};
use ipc_core::{Client, Server, expose};
use serde::{Deserialize, Serialize};

/// Why a calculation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivideByZero,
}

/// A remote calculator.
#[expose]
pub trait Calculator {
    /// Returns the answer.
    async fn answer(&self) -> i64;
    /// Negates `a`.
    async fn negate(&self, a: i64) -> i64;
    /// Adds `a * scale` to `b`.
    async fn scaled_add(&self, a: i64, b: i64, scale: i64) -> i64;
    /// Divides `a` by `b`.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Does nothing and returns nothing.
    async fn ping(&self);
    // Undocumented: the proxy method still gets a generated doc comment, or
    // `missing_docs` would fire on it.
    #[allow(missing_docs)]
    async fn checksum(&self, data: Vec<u8>) -> u64;
}

/// Version 1 of a store: keys are `u32`.
pub mod v1 {
    /// A key-value store.
    #[ipc_core::expose]
    pub trait Store {
        /// Reads a key.
        async fn get(&self, key: u32) -> Option<String>;
    }
}

/// Version 2 of the same store: keys became `u64`, nothing else changed.
pub mod v2 {
    /// A key-value store.
    #[ipc_core::expose]
    pub trait Store {
        /// Reads a key.
        async fn get(&self, key: u64) -> Option<String>;
    }
}

struct Calc;

impl Calculator for Calc {
    async fn answer(&self) -> i64 {
        42
    }
    async fn negate(&self, a: i64) -> i64 {
        -a
    }
    async fn scaled_add(&self, a: i64, b: i64, scale: i64) -> i64 {
        a * scale + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
    async fn ping(&self) {}
    async fn checksum(&self, data: Vec<u8>) -> u64 {
        data.iter().map(|&b| u64::from(b)).sum()
    }
}

fn signatures(d: &ObjectDescriptor) -> Vec<&'static str> {
    d.methods.iter().map(|m| m.signature).collect()
}

fn main() {
    let d = CalculatorProxy::DESCRIPTOR;
    assert_eq!(d.trait_name, "Calculator");
    let names: Vec<_> = d.methods.iter().map(|m| m.name).collect();
    assert_eq!(names, ["answer", "negate", "scaled_add", "div", "ping", "checksum"]);
    assert_eq!(
        signatures(d),
        [
            "answer()->i64",
            "negate(i64)->i64",
            "scaled_add(i64,i64,i64)->i64",
            "div(i64,i64)->Result<i64,MathError>",
            "ping()->()",
            "checksum(Vec<u8>)->u64",
        ]
    );

    // Same trait name, one argument type changed: the proxy of one must not
    // be accepted for the other.
    let (s1, s2) = (v1::StoreProxy::DESCRIPTOR, v2::StoreProxy::DESCRIPTOR);
    assert_eq!(s1.trait_name, s2.trait_name);
    assert_eq!(signatures(s1), ["get(u32)->Option<String>"]);
    assert_eq!(signatures(s2), ["get(u64)->Option<String>"]);
    assert_ne!(s1.fingerprint, s2.fingerprint);
    assert_ne!(d.fingerprint, s1.fingerprint);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let shared = Arc::new(Calc);
        let server = Server::builder()
            .addr("127.0.0.1:0")
            .expose(CalculatorServer::from_arc(Arc::clone(&shared)))
            .expose_as("second", CalculatorServer::new(Calc).clone())
            .start()
            .await
            .expect("server starts");
        let client = Client::connect(server.local_addr()).await.expect("connects");
        let calc: CalculatorProxy = client.get_exposed_object().await.expect("lookup");
        assert_eq!(calc.object_name(), "Calculator");
        assert_eq!(calc.answer().await.expect("answer"), 42);
        assert_eq!(calc.negate(5).await.expect("negate"), -5);
        assert_eq!(calc.scaled_add(2, 1, 10).await.expect("scaled_add"), 21);
        assert_eq!(calc.div(7, 2).await.expect("div"), 3);
        assert!(matches!(
            calc.div(1, 0).await,
            Err(ipc_core::CallError::App(MathError::DivideByZero))
        ));
        calc.ping().await.expect("ping");
        assert_eq!(calc.checksum(vec![1, 2, 250]).await.expect("checksum"), 253);

        let second: CalculatorProxy = client
            .get_exposed_object_named("second")
            .await
            .expect("lookup by name");
        assert_eq!(second.clone().object_name(), "second");
        assert_eq!(second.negate(-3).await.expect("negate"), 3);
        server.stop().await;
    });
}
