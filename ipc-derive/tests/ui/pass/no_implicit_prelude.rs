//! The generated code names everything by absolute path, so it compiles in a
//! module without the prelude (and without anything else in scope).
#![deny(warnings)]

#[allow(dead_code)]
mod hygiene {
    #![no_implicit_prelude]

    use ::ipc_core::expose;

    /// A trait whose error type is a local enum.
    #[derive(::core::fmt::Debug, ::serde::Serialize, ::serde::Deserialize)]
    pub enum Failure {
        /// Something went wrong.
        Failed,
    }

    /// Exposed from a module without the prelude.
    #[expose]
    pub trait Hygienic {
        /// No arguments.
        async fn unit(&self);
        /// Owned arguments of std types.
        async fn join(
            &self,
            parts: ::std::vec::Vec<::std::string::String>,
            separator: ::std::string::String,
        ) -> ::std::string::String;
        /// A fallible method.
        async fn check(&self, ok: bool) -> ::core::result::Result<u8, Failure>;
        /// An optional value.
        async fn find(&self, key: u32) -> ::core::option::Option<u64>;
    }

    pub struct Impl;

    impl Hygienic for Impl {
        async fn unit(&self) {}
        async fn join(
            &self,
            parts: ::std::vec::Vec<::std::string::String>,
            separator: ::std::string::String,
        ) -> ::std::string::String {
            parts.join(&separator)
        }
        async fn check(&self, ok: bool) -> ::core::result::Result<u8, Failure> {
            if ok {
                ::core::result::Result::Ok(1)
            } else {
                ::core::result::Result::Err(Failure::Failed)
            }
        }
        async fn find(&self, key: u32) -> ::core::option::Option<u64> {
            ::core::option::Option::Some(::core::convert::From::from(key))
        }
    }

    pub fn server() -> HygienicServer<Impl> {
        HygienicServer::new(Impl)
    }
}

fn main() {
    use ipc_core::__private::{Proxy, Service};

    let server = hygiene::server();
    let descriptor = server.descriptor();
    assert_eq!(descriptor.trait_name, "Hygienic");
    assert_eq!(descriptor.fingerprint, hygiene::HygienicProxy::DESCRIPTOR.fingerprint);
    assert_eq!(descriptor.methods.len(), 4);
}
