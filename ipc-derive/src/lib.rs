//! The `#[expose]` attribute of the `ipc` framework. Use it through
//! `ipc_core::expose`; the generated code refers to `::ipc_core` only.
//!
//! The macro works in stages: `parse` reads the trait, `validate` checks it
//! against what the runtime supports (collecting *every* error, each with its
//! span) and builds the `model`, and `codegen` writes the rewritten trait,
//! the server adapter and the client proxy. On error the trait is emitted
//! unchanged beside the errors, so one mistake does not cascade.
//!
//! Set `IPC_EXPAND_DEBUG=1` while building to print each expansion to stderr.

mod codegen;
mod model;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Exposes a trait as a remote interface; see `ipc_core` for the full story.
#[proc_macro_attribute]
pub fn expose(args: TokenStream, input: TokenStream) -> TokenStream {
    expand(args.into(), input.into()).into()
}

fn expand(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let item = match parse::parse(args, input.clone()) {
        Ok(item) => item,
        Err(e) => return codegen::fallback(input, e),
    };
    let out = match validate::validate(&item) {
        Ok(model) => codegen::generate(&model),
        Err(e) => codegen::fallback_trait(item, e),
    };
    if std::env::var_os("IPC_EXPAND_DEBUG").is_some() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{out}");
        }
    }
    out
}
