//! `Service::schema` for `{Trait}Server<T>`: the formats of every method's
//! arguments and return type, traced from the types as written (through
//! their `Deserialize` impls, by `ipc_core::schema`) the first time a client
//! asks, then kept for the life of the process.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;

use crate::model::{Output, Trait};
use crate::validate::stream_item;

/// The `schema` method of the generated `Service` impl.
pub(crate) fn service_method(model: &Trait) -> TokenStream {
    let format = |ty: &syn::Type| {
        quote! {
            (&::ipc_core::__private::SchemaProbe::<#ty>::new()).trace_with(&mut __ipc_schema)
        }
    };
    let methods = model.methods.iter().map(|m| {
        let args = m.args.iter().map(|a| {
            let name = a.ident.unraw().to_string();
            let arg = format(&a.ty);
            quote! {
                let __ipc_format = #arg;
                __ipc_schema.arg(#name, __ipc_format);
            }
        });
        let output = |variant: &str, types: &[&syn::Type]| {
            let variant = syn::Ident::new(variant, proc_macro2::Span::call_site());
            let formats = types.iter().map(|t| format(t));
            let names: Vec<_> = (0..types.len())
                .map(|i| quote::format_ident!("__ipc_output_{}", i))
                .collect();
            quote! {
                #(let #names = #formats;)*
                __ipc_schema.returns(::ipc_core::__private::SchemaOutput::#variant(#(#names),*));
            }
        };
        let output = match &m.output {
            Output::Value => output("Value", &[&m.returns]),
            Output::Fallible { ok, err } => output("Fallible", &[ok, err]),
            // `validate` made these outputs only for a `Streaming<T>`.
            Output::Stream => match stream_item(&m.returns) {
                Some(item) => output("Stream", &[&item]),
                None => TokenStream::new(),
            },
            Output::FallibleStream { ok, err } => match stream_item(ok) {
                Some(item) => output("FallibleStream", &[&item, err]),
                None => TokenStream::new(),
            },
        };
        quote! {
            __ipc_schema.method();
            #(#args)*
            #output
        }
    });
    quote! {
        fn schema(
            &self,
        ) -> ::core::option::Option<&'static ::ipc_core::__private::TraitSchema> {
            static __IPC_SCHEMA: ::std::sync::OnceLock<::ipc_core::__private::TraitSchema> =
                ::std::sync::OnceLock::new();
            ::core::option::Option::Some(__IPC_SCHEMA.get_or_init(|| {
                #[allow(unused_imports)]
                use ::ipc_core::__private::{TraceOther as _, TraceSerde as _};
                let mut __ipc_schema = ::ipc_core::__private::SchemaTracer::new();
                #(#methods)*
                __ipc_schema.finish()
            }))
        }
    }
}
