//! Stage 3: code generation. Every path is absolute (`::core`, `::std`,
//! `::ipc_core::__private`) so the output compiles under
//! `#![no_implicit_prelude]` and whatever the user has in scope.

mod client;
mod schema;
mod server;
mod trait_def;

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ItemTrait, Pat, TraitItem};

use crate::model::{Trait, Wire};

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

/// On a validation error: the trait as written, except that argument
/// patterns in methods without a body become `_`, so rustc does not repeat
/// the macro's error with one of its own ("patterns aren't allowed in
/// functions without bodies").
pub(crate) fn fallback_trait(mut item: ItemTrait, error: syn::Error) -> TokenStream {
    crate::model::strip_method_attributes(&mut item);
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        if f.default.is_some() {
            continue;
        }
        for input in &mut f.sig.inputs {
            let FnArg::Typed(pt) = input else { continue };
            let plain = matches!(
                &*pt.pat,
                Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none()
            );
            if !plain {
                *pt.pat = Pat::Wild(syn::PatWild {
                    attrs: Vec::new(),
                    underscore_token: syn::Token![_](pt.pat.span()),
                });
            }
        }
    }
    fallback(item.into_token_stream(), error)
}

pub(crate) fn proxy_ident(model: &Trait) -> syn::Ident {
    format_ident!("{}Proxy", model.ident)
}

pub(crate) fn server_ident(model: &Trait) -> syn::Ident {
    format_ident!("{}Server", model.ident)
}

/// The generated type a value of this form is read from the wire as, if
/// not its own (a tuple struct: also a pattern with a binding).
pub(crate) fn wire_type(wire: Wire) -> Option<TokenStream> {
    match wire {
        Wire::Serde => None,
        Wire::ByteVec => Some(quote!(::ipc_core::__private::ByteVec)),
        Wire::OptByteVec => Some(quote!(::ipc_core::__private::OptByteVec)),
    }
}

/// The function that turns an owned value of this form into what is
/// written to the wire, if not the value itself: a `Vec<u8>` is handed over
/// as a `SendVec`, so a large one is not copied into the frame.
pub(crate) fn send_fn(wire: Wire) -> Option<TokenStream> {
    match wire {
        Wire::Serde => None,
        Wire::ByteVec => Some(quote!(::ipc_core::__private::SendVec::new)),
        Wire::OptByteVec => Some(quote!(::ipc_core::__private::SendVec::optional)),
    }
}

/// `value` (owned) as it is written to the wire.
pub(crate) fn to_wire(wire: Wire, value: impl ToTokens) -> TokenStream {
    match send_fn(wire) {
        None => value.into_token_stream(),
        Some(f) => quote!(#f(#value)),
    }
}

/// The pattern that binds `ident` to a value of this form read from the
/// wire (unwrapping it).
pub(crate) fn read_pattern(wire: Wire, ident: impl ToTokens) -> TokenStream {
    match wire_type(wire) {
        None => ident.into_token_stream(),
        Some(t) => quote!(#t(#ident)),
    }
}

/// The type a value declared `ty` is read from the wire as.
pub(crate) fn wire_read_type(wire: Wire, ty: impl ToTokens) -> TokenStream {
    wire_type(wire).unwrap_or_else(|| ty.into_token_stream())
}

/// The function that turns the wire form back into the declared type
/// (`None`: no conversion).
pub(crate) fn from_wire(wire: Wire) -> Option<TokenStream> {
    wire_type(wire).map(|t| quote!(#t::into_inner))
}
