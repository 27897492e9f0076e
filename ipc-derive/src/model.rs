//! Stage 2 output: the trait as the code generator needs it. Keeps the
//! original syntax (identifiers, types, attributes) so spans survive.

use syn::{Attribute, Ident, ItemTrait, Type, Visibility};

/// A validated `#[expose]` trait.
pub(crate) struct Trait {
    /// The trait as written (rewritten by codegen).
    pub(crate) item: ItemTrait,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    pub(crate) methods: Vec<Method>,
    /// FNV-1a of the trait name and every method signature.
    pub(crate) fingerprint: u64,
}

/// One method, in declaration order (its index is its wire id).
pub(crate) struct Method {
    pub(crate) ident: Ident,
    /// `#[doc]` attributes, carried over to the proxy.
    pub(crate) docs: Vec<Attribute>,
    pub(crate) args: Vec<Arg>,
    /// The return type as written (`()` when omitted).
    pub(crate) returns: Type,
    pub(crate) output: Output,
    /// How the value returned (for `Result<T, E>`: the `T`) is written.
    pub(crate) returns_wire: Wire,
    /// `name(Arg,..)->Ret`, as compared between client and server.
    pub(crate) signature: String,
    /// Marked `#[idempotent]`: the client may retry it after a lost connection.
    pub(crate) idempotent: bool,
    /// Marked `#[oneway]`: the proxy does not wait for the server.
    pub(crate) oneway: bool,
    /// Takes remote objects (`Remote<P>`) among its arguments.
    pub(crate) object_args: bool,
    /// Returns remote objects.
    pub(crate) object_return: bool,
}

/// Method attributes that belong to `#[expose]`: read by the macro and
/// removed from the trait it emits.
pub(crate) const METHOD_ATTRIBUTES: &[&str] = &["idempotent", "oneway"];

/// Removes [`METHOD_ATTRIBUTES`] from every method of `item`.
pub(crate) fn strip_method_attributes(item: &mut ItemTrait) {
    for trait_item in &mut item.items {
        if let syn::TraitItem::Fn(f) = trait_item {
            f.attrs
                .retain(|a| !METHOD_ATTRIBUTES.iter().any(|name| a.path().is_ident(name)));
        }
    }
}

pub(crate) struct Arg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    pub(crate) wire: Wire,
}

/// How a value is written by the generated code. Byte vectors are wrapped so
/// that they are encoded as one block instead of byte by byte; the bytes on
/// the wire are the same either way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Through the type's own serde impls.
    Serde,
    /// `Vec<u8>`, through `ByteVec`.
    ByteVec,
    /// `Option<Vec<u8>>`, through `OptByteVec`.
    OptByteVec,
}

/// What the method returns, which decides the proxy's error type and how
/// the reply travels.
pub(crate) enum Output {
    /// A plain value: [`Method::returns`] (`()` when nothing is written).
    Value,
    /// `Result<T, E>`: `E` reaches the caller as `CallError::App(E)`.
    Fallible { ok: Box<Type>, err: Box<Type> },
    /// `Streaming<T>`: a server-push stream.
    Stream,
    /// `Result<Streaming<T>, E>`: a stream, or a typed refusal.
    FallibleStream { ok: Box<Type>, err: Box<Type> },
}

impl Output {
    /// Whether the method returns a stream.
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self, Self::Stream | Self::FallibleStream { .. })
    }
}
