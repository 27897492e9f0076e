//! Stage 3: code generation. Every path is absolute (`::core`, `::std`,
//! `::ipc_core::__private`) so the output compiles under
//! `#![no_implicit_prelude]` and whatever the user has in scope.

mod client;
mod server;
mod trait_def;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::model::Trait;

/// The rewritten trait, its server adapter and its client proxy.
pub(crate) fn generate(model: &Trait) -> TokenStream {
    let trait_def = trait_def::generate(model);
    let server = server::generate(model);
    let client = client::generate(model);
    quote! {
        #trait_def
        #server
        #client
    }
}

/// On error: the input unchanged (so code using the trait still resolves) plus
/// the errors.
pub(crate) fn fallback(input: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    quote! {
        #input
        #errors
    }
}

pub(crate) fn proxy_ident(model: &Trait) -> syn::Ident {
    format_ident!("{}Proxy", model.ident)
}

pub(crate) fn server_ident(model: &Trait) -> syn::Ident {
    format_ident!("{}Server", model.ident)
}
