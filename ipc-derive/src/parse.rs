//! Stage 1: syntax. The attribute takes no arguments and applies to a trait.

use proc_macro2::TokenStream;
use syn::ItemTrait;

/// Parses the attribute's arguments (there must be none) and the trait.
pub(crate) fn parse(args: TokenStream, input: TokenStream) -> syn::Result<ItemTrait> {
    if !args.is_empty() {
        return Err(syn::Error::new_spanned(
            args,
            "`#[expose]` takes no arguments; the object name is chosen when exposing it \
             (`ServerBuilder::expose_as`)",
        ));
    }
    syn::parse2::<ItemTrait>(input.clone()).map_err(|e| {
        let mut err = syn::Error::new(
            e.span(),
            "`#[expose]` applies to a trait: `#[expose] pub trait Name { async fn m(&self, ..) -> T; }`",
        );
        // Another kind of item (`struct`, `fn`, ..): syn's "expected `trait`"
        // adds nothing. Otherwise its message says what it could not read.
        if syn::parse2::<syn::Item>(input).is_err() {
            err.combine(e);
        }
        err
    })
}
