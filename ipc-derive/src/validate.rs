//! Stage 2: checks the trait against what the runtime supports and builds the
//! model. Every problem becomes a spanned error saying what *is* allowed; all
//! of them are reported together.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::visit::Visit;
use syn::{
    FnArg, GenericArgument, Generics, ItemTrait, Pat, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type,
};

use crate::model::{Arg, Method, Output, Trait, Wire};

const METHOD_FORM: &str = "`#[expose]` methods must be `async fn name(&self, arg: Type, ..) -> T`";

/// Names the generated proxy already uses for itself.
const RESERVED: &[&str] = &[
    "object_name",
    "from_object",
    "with_timeout",
    "timeout",
    "clone",
    "clone_from",
    "fmt",
];

#[derive(Default)]
struct Errors {
    all: Option<syn::Error>,
    count: usize,
}

impl Errors {
    /// Records an error spanning all of `tokens` (first to last token).
    fn push(&mut self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        let e = syn::Error::new_spanned(tokens, msg);
        self.count += 1;
        match &mut self.all {
            Some(all) => all.combine(e),
            None => self.all = Some(e),
        }
    }
}

pub(crate) fn validate(item: &ItemTrait) -> syn::Result<Trait> {
    let mut errors = Errors::default();
    if let Some(generics) = generics_tokens(&item.generics) {
        errors.push(
            generics,
            "`#[expose]` traits cannot be generic: every method needs one concrete wire type",
        );
    }
    if let Some(unsafety) = &item.unsafety {
        errors.push(unsafety, "`#[expose]` traits cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        errors.push(auto, "`#[expose]` traits cannot be `auto` traits");
    }

    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                if let Some(m) = method(f, &mut errors) {
                    methods.push(m);
                }
            }
            other => errors.push(
                other,
                "`#[expose]` traits may contain only `async fn` methods (no associated types, \
                 constants or macros)",
            ),
        }
    }
    if methods.len() > usize::from(u16::MAX) {
        errors.push(
            &item.ident,
            "`#[expose]` traits may have at most 65535 methods",
        );
    }
    if let Some(e) = errors.all {
        return Err(e);
    }

    let mut hasher = Fnv::new();
    hasher.write(item.ident.to_string().as_bytes());
    for m in &methods {
        hasher.write(b"|");
        hasher.write(m.signature.as_bytes());
    }
    Ok(Trait {
        item: item.clone(),
        vis: item.vis.clone(),
        ident: item.ident.clone(),
        methods,
        fingerprint: hasher.finish(),
    })
}

fn method(f: &TraitItemFn, errors: &mut Errors) -> Option<Method> {
    let sig = &f.sig;
    let before = errors.count;
    let idempotent = marker(
        f,
        "idempotent",
        "it marks a method as safe to retry",
        errors,
    );
    let oneway = marker(
        f,
        "oneway",
        "it marks a method whose caller does not wait",
        errors,
    );
    for attr in &f.attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            errors.push(
                attr,
                "`#[expose]` methods cannot be conditional (`#[cfg]`): a method's position \
                 is its wire id, so client and server must see the same list; put the \
                 `#[cfg]` on the whole trait instead",
            );
        }
    }
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            format!("{METHOD_FORM}; `{}` is not `async`", sig.ident),
        );
    }
    if let Some(c) = &sig.constness {
        errors.push(c, format!("{METHOD_FORM}; `const fn` is not allowed"));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(u, format!("{METHOD_FORM}; `unsafe fn` is not allowed"));
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi, format!("{METHOD_FORM}; `extern` is not allowed"));
    }
    if let Some(v) = &sig.variadic {
        errors.push(
            v,
            format!("{METHOD_FORM}; variadic arguments are not allowed"),
        );
    }
    if let Some(generics) = generics_tokens(&sig.generics) {
        errors.push(
            generics,
            "`#[expose]` methods cannot be generic (no type, lifetime or const parameters, no \
             `where`): each argument needs one concrete wire type",
        );
    }
    if let Some(body) = &f.default {
        errors.push(
            body,
            "`#[expose]` methods cannot have a default body; implement them in the `impl`",
        );
    }
    let name = sig.ident.to_string();
    if name.starts_with("__ipc") || RESERVED.contains(&name.as_str()) {
        errors.push(
            &sig.ident,
            format!(
                "`{name}` collides with a name the generated proxy uses itself; rename it \
                 (reserved: {} and names starting with `__ipc`)",
                RESERVED
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) => {
            // `&'_ self` is `&self`; a named lifetime (`&'static self`)
            // cannot be met by the server, which lends the object per call.
            // (Reported once: a declared `<'a>` is already an error above.)
            let named_lifetime = sig.generics.params.is_empty()
                && r.reference
                    .as_ref()
                    .and_then(|(_, l)| l.as_ref())
                    .is_some_and(|l| l.ident != "_");
            if r.reference.is_none()
                || named_lifetime
                || r.mutability.is_some()
                || r.colon_token.is_some()
            {
                errors.push(
                    r,
                    format!("{METHOD_FORM}; the receiver must be `&self` (not `self`, `&mut self`, `&'a self` or `self: Type`)"),
                );
            }
        }
        Some(other) => errors.push(
            other,
            format!("{METHOD_FORM}; the first parameter must be `&self`"),
        ),
        None => errors.push(
            &sig.ident,
            format!("{METHOD_FORM}; `{name}` has no `&self` parameter"),
        ),
    }

    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(pt) = input else {
            errors.push(input, "only the first parameter can be `self`");
            continue;
        };
        let ident = match &*pt.pat {
            Pat::Ident(pi)
                if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none() =>
            {
                Some(pi.ident.clone())
            }
            _ => None,
        };
        let Some(ident) = ident else {
            errors.push(
                &pt.pat,
                "`#[expose]` arguments must be plain names (`name: Type`), not patterns, `_`, \
                 `mut` or `ref`",
            );
            continue;
        };
        if ident.to_string().starts_with("__ipc") {
            errors.push(
                &ident,
                "argument names starting with `__ipc` are reserved for generated code",
            );
        }
        check_wire_type(&pt.ty, "argument", errors);
        if let Some(stream) = mention(&pt.ty, "Streaming") {
            errors.push(
                stream,
                "`Streaming<T>` cannot be an argument (streams from caller to server are not \
                 supported yet); a method may return `Streaming<T>` or \
                 `Result<Streaming<T>, E>`",
            );
        }
        args.push(Arg {
            ident,
            wire: wire_form(&pt.ty),
            ty: (*pt.ty).clone(),
        });
    }

    let returns: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    check_wire_type(&returns, "return", errors);
    if oneway && !matches!(&returns, Type::Tuple(t) if t.elems.is_empty()) {
        errors.push(
            &sig.output,
            "`#[oneway]` methods must return `()`: no one waits for their result",
        );
    }
    let output = output_of(&returns, errors);
    if idempotent && output.is_stream() {
        errors.push(
            &sig.output,
            "`#[idempotent]` methods are sent again after a lost connection, which a stream \
             is not: remove `#[idempotent]`",
        );
    }
    if errors.count > before {
        // The caller goes on to check later methods; this one builds nothing.
        return None;
    }
    let signature = format!(
        "{name}({})->{}",
        args.iter()
            .map(|a| type_string(&a.ty))
            .collect::<Vec<_>>()
            .join(","),
        type_string(&returns)
    );
    let object_args = args.iter().any(|a| mention(&a.ty, "Remote").is_some());
    let object_return = mention(&returns, "Remote").is_some();
    let returns_wire = match &output {
        Output::Value => wire_form(&returns),
        Output::Fallible { ok, .. } => wire_form(ok),
        Output::Stream | Output::FallibleStream { .. } => Wire::Serde,
    };
    Some(Method {
        returns_wire,
        idempotent,
        oneway,
        object_args,
        object_return,
        ident: sig.ident.clone(),
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        args,
        returns,
        output,
        signature,
    })
}

/// Reads a bare marker attribute such as `#[idempotent]`, given at most once.
fn marker(f: &TraitItemFn, name: &str, meaning: &str, errors: &mut Errors) -> bool {
    let mut seen = false;
    for attr in f.attrs.iter().filter(|a| a.path().is_ident(name)) {
        if !matches!(attr.meta, syn::Meta::Path(_)) {
            errors.push(attr, format!("`#[{name}]` takes no arguments: {meaning}"));
        } else if seen {
            errors.push(attr, format!("`#[{name}]` is given twice"));
        }
        seen = true;
    }
    seen
}

/// The generic parameters and `where` clause, when there are any.
fn generics_tokens(g: &Generics) -> Option<TokenStream> {
    if g.params.is_empty() && g.where_clause.is_none() {
        return None;
    }
    let mut tokens = TokenStream::new();
    if !g.params.is_empty() {
        g.to_tokens(&mut tokens);
    }
    g.where_clause.to_tokens(&mut tokens);
    Some(tokens)
}

/// Rejects types that cannot cross the wire as owned values, wherever they
/// appear inside the type (`Vec<&str>` as well as `&str`).
fn check_wire_type(ty: &Type, what: &str, errors: &mut Errors) {
    WireType { what, errors }.visit_type(ty);
}

struct WireType<'a> {
    what: &'a str,
    errors: &'a mut Errors,
}

impl<'ast> Visit<'ast> for WireType<'_> {
    // Each rejected form is reported once and not looked into further.
    fn visit_type(&mut self, ty: &'ast Type) {
        let what = self.what;
        match ty {
            Type::Reference(_) => self.errors.push(
                ty,
                format!(
                    "`#[expose]` {what} types must be owned (`String`, not `&str`; `Vec<T>`, not \
                     `&[T]`)"
                ),
            ),
            Type::ImplTrait(_) => self.errors.push(
                ty,
                format!("`#[expose]` {what} types must be concrete; `impl Trait` is not allowed"),
            ),
            Type::TraitObject(_) => self.errors.push(
                ty,
                format!("`#[expose]` {what} types must be concrete; `dyn Trait` is not allowed"),
            ),
            Type::Ptr(_) => self.errors.push(
                ty,
                format!("`#[expose]` {what} types must be owned; raw pointers are not allowed"),
            ),
            Type::Infer(_) => self.errors.push(
                ty,
                format!("`#[expose]` {what} types must be written out; `_` is not allowed"),
            ),
            _ => syn::visit::visit_type(self, ty),
        }
    }

    fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
        if lifetime.ident != "static" {
            let what = self.what;
            self.errors.push(
                lifetime,
                format!(
                    "`#[expose]` {what} types must be owned; only the `'static` lifetime is \
                     allowed"
                ),
            );
        }
    }

    fn visit_path_segment(&mut self, segment: &'ast syn::PathSegment) {
        if segment.ident == "Self" {
            let what = self.what;
            self.errors.push(
                &segment.ident,
                format!("`#[expose]` {what} types cannot mention `Self`; name the type"),
            );
        }
        syn::visit::visit_path_segment(self, segment);
    }
}

/// How a method's return type travels: a value, a `Result`, or a stream.
/// `Streaming<T>` may be the whole return type or the `T` of `Result<T, E>`,
/// and nowhere else.
fn output_of(returns: &Type, errors: &mut Errors) -> Output {
    const PLACE: &str = "`Streaming<T>` must be the whole return type, or the `T` of \
                         `Result<T, E>`";
    let check_item = |ty: &Type, errors: &mut Errors| {
        if let Some(inner) = stream_item(ty).and_then(|item| mention(&item, "Streaming")) {
            errors.push(
                inner,
                format!("{PLACE}; a stream of streams is not supported"),
            );
        }
    };
    if stream_item(returns).is_some() {
        check_item(returns, errors);
        return Output::Stream;
    }
    match result_parts(returns) {
        Some((ok, err)) if stream_item(&ok).is_some() => {
            check_item(&ok, errors);
            if let Some(stream) = mention(&err, "Streaming") {
                errors.push(stream, PLACE);
            }
            Output::FallibleStream {
                ok: Box::new(ok),
                err: Box::new(err),
            }
        }
        parts => {
            if let Some(stream) = mention(returns, "Streaming") {
                errors.push(stream, PLACE);
            }
            match parts {
                Some((ok, err)) => Output::Fallible {
                    ok: Box::new(ok),
                    err: Box::new(err),
                },
                None => Output::Value,
            }
        }
    }
}

/// Recognises `Vec<u8>` and `Option<Vec<u8>>` as written (bare, or through
/// `std`/`alloc`/`core` paths). An alias is not seen through: it keeps serde's
/// element-by-element encoding, which puts the same bytes on the wire.
fn wire_form(ty: &Type) -> Wire {
    if is_byte_vec(ty) {
        return Wire::ByteVec;
    }
    match single_argument(ty, "Option", "option") {
        Some(inner) if is_byte_vec(inner) => Wire::OptByteVec,
        _ => Wire::Serde,
    }
}

fn is_byte_vec(ty: &Type) -> bool {
    matches!(
        single_argument(ty, "Vec", "vec"),
        Some(Type::Path(p)) if p.qself.is_none() && p.path.is_ident("u8")
    )
}

/// `Name<T>` → `T`, when the path is `Name` or `{std,alloc,core}::module::Name`.
fn single_argument<'a>(ty: &'a Type, name: &str, module: &str) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let segments: Vec<_> = p.path.segments.iter().collect();
    let (last, prefix) = segments.split_last()?;
    let prefix_ok = match prefix {
        [] => p.path.leading_colon.is_none(),
        [root, m] => {
            ["std", "alloc", "core"].iter().any(|r| root.ident == r)
                && m.ident == module
                && root.arguments.is_none()
                && m.arguments.is_none()
        }
        _ => false,
    };
    if !prefix_ok || last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(GenericArgument::Type(t)) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}

/// `Streaming<T>` (as written, by its last path segment) → `T`.
pub(crate) fn stream_item(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if p.qself.is_some() || last.ident != "Streaming" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(GenericArgument::Type(t)) if args.args.len() == 1 => Some(t.clone()),
        _ => None,
    }
}

/// The first path segment named `name` anywhere inside `ty`, if any.
fn mention(ty: &Type, name: &str) -> Option<syn::Ident> {
    struct Find<'a> {
        name: &'a str,
        found: Option<syn::Ident>,
    }
    impl<'ast> Visit<'ast> for Find<'_> {
        fn visit_path_segment(&mut self, segment: &'ast syn::PathSegment) {
            if self.found.is_none() && segment.ident == self.name {
                self.found = Some(segment.ident.clone());
            }
            syn::visit::visit_path_segment(self, segment);
        }
    }
    let mut find = Find { name, found: None };
    find.visit_type(ty);
    find.found
}

/// `Result<T, E>` (as written, by its last path segment) → `(T, E)`.
fn result_parts(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let ok = types.next()?;
    let err = types.next()?;
    if types.next().is_some() || args.args.len() != 2 {
        return None;
    }
    Some((ok, err))
}

/// A type as text without insignificant spaces: `Vec<u8>`, `(i64,String)`.
fn type_string(ty: &Type) -> String {
    let raw = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(raw.len());
    let chars: Vec<char> = raw.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
            let next = chars.get(i + 1).copied();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if word(prev) && word(next) {
                out.push(' ');
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// 64-bit FNV-1a: small, stable across builds and platforms.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
