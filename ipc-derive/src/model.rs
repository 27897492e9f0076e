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
    /// `name(Arg,..)->Ret`, as compared between client and server.
    pub(crate) signature: String,
}

pub(crate) struct Arg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// What the method returns, which decides the proxy's error type.
pub(crate) enum Output {
    /// A plain value (`()` when nothing is written).
    Value(Type),
    /// `Result<T, E>`: `E` reaches the caller as `CallError::App(E)`.
    Fallible { ok: Type, err: Type },
}
