//! The user's trait, with each `async fn` rewritten to return
//! `impl Handler<T> + Send` (a future of `T`): implementations still write
//! `async fn`, and the compiler then proves their futures can run on a
//! multi-threaded server. A plain `fn` in an implementation is told to be
//! `async` by `Handler`'s diagnostic.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{ReturnType, TraitItem};

use crate::model::Trait;

pub(crate) fn generate(model: &Trait) -> TokenStream {
    let mut item = model.item.clone();
    crate::model::strip_method_attributes(&mut item);
    let mut returns = model.methods.iter().map(|m| &m.returns);
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        let Some(ret) = returns.next() else { break };
        // Spanned at the user's `async`, so "future cannot be sent between
        // threads" in an impl points back at the trait method that requires it.
        let span = f
            .sig
            .asyncness
            .map_or_else(|| f.sig.ident.span(), |a| a.span);
        f.sig.asyncness = None;
        f.sig.output = ReturnType::Type(
            Default::default(),
            Box::new(syn::parse_quote_spanned! {span=>
                impl ::ipc_core::Handler<#ret> + ::core::marker::Send
            }),
        );
    }
    quote!(#item)
}
