//! What an exposed trait looks like on the wire ([`ObjectDescriptor`]), how
//! a lookup checks it, and the directory's types ([`ObjectInfo`]).
//!
//! `#[expose]` writes the descriptors; you normally only read the directory.

use serde::{Deserialize, Serialize};

/// The shape of an exposed trait, compared at lookup so that a proxy built
/// from a different trait (or a different version of it) is refused up front.
#[derive(Debug)]
pub struct ObjectDescriptor {
    /// The trait's name; the default object name.
    pub trait_name: &'static str,
    /// The methods in declaration order (the index is the wire method id).
    pub methods: &'static [MethodDescriptor],
    /// A 64-bit FNV-1a hash of the trait name and every method signature.
    pub fingerprint: u64,
}

/// One method of an exposed trait.
#[derive(Debug)]
pub struct MethodDescriptor {
    /// The method's name.
    pub name: &'static str,
    /// Its signature as written: `name(ArgType,..)->Ret`.
    pub signature: &'static str,
    /// Marked `#[idempotent]`: safe to run twice, so retried automatically
    /// when the connection is lost mid-call.
    pub idempotent: bool,
    /// Marked `#[oneway]`: the caller does not wait for the method to run.
    pub oneway: bool,
    /// Returns a server-push stream (`Streaming<T>`).
    pub streaming: bool,
    /// Takes remote objects (`Remote<P>`) among its arguments: callbacks.
    pub object_args: bool,
    /// Returns remote objects (`Remote<P>`).
    pub object_return: bool,
}

/// One exposed object, as the server's directory lists it
/// ([`crate::Client::objects`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The name it is exposed under.
    pub name: String,
    /// The trait it implements.
    pub trait_name: String,
    /// The trait's fingerprint (see [`ObjectDescriptor::fingerprint`]).
    pub fingerprint: u64,
    /// Its methods, in declaration order.
    pub methods: Vec<MethodInfo>,
}

/// One method in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodInfo {
    /// The method's name.
    pub name: String,
    /// Its signature: `name(ArgType,..)->Ret`.
    pub signature: String,
    /// Whether it is `#[oneway]`.
    pub oneway: bool,
    /// Whether it is `#[idempotent]`.
    pub idempotent: bool,
    /// Whether it returns a server-push stream.
    pub streaming: bool,
    /// Whether it takes remote objects (callbacks) among its arguments.
    pub object_args: bool,
    /// Whether it returns remote objects.
    pub object_return: bool,
}

impl ObjectInfo {
    pub(crate) fn new(name: &str, d: &ObjectDescriptor) -> Self {
        Self {
            name: name.to_owned(),
            trait_name: d.trait_name.to_owned(),
            fingerprint: d.fingerprint,
            methods: d
                .methods
                .iter()
                .map(|m| MethodInfo {
                    name: m.name.to_owned(),
                    signature: m.signature.to_owned(),
                    oneway: m.oneway,
                    idempotent: m.idempotent,
                    streaming: m.streaming,
                    object_args: m.object_args,
                    object_return: m.object_return,
                })
                .collect(),
        }
    }
}

impl ObjectDescriptor {
    /// How `other` (the caller's view) differs from `self`, or `None` when
    /// they match.
    pub(crate) fn mismatch(&self, other: &ResolveRequest) -> Option<Mismatch> {
        let detail = self.mismatch_detail(other)?;
        Some(Mismatch {
            server_fingerprint: self.fingerprint,
            caller_fingerprint: other.fingerprint,
            detail,
        })
    }

    fn mismatch_detail(&self, other: &ResolveRequest) -> Option<String> {
        if self.trait_name != other.trait_name {
            return Some(format!(
                "the server exposes trait `{}`, the proxy is for trait `{}`",
                self.trait_name, other.trait_name
            ));
        }
        if self.fingerprint == other.fingerprint
            && self.methods.len() == other.signatures.len()
            && self
                .methods
                .iter()
                .zip(&other.signatures)
                .all(|(m, s)| m.signature == s)
        {
            return None;
        }
        for (i, m) in self.methods.iter().enumerate() {
            match other.signatures.get(i) {
                Some(s) if s == m.signature => {}
                Some(s) => {
                    return Some(format!(
                        "method #{i} is `{}` on the server but `{s}` in the proxy",
                        m.signature
                    ));
                }
                None => {
                    return Some(format!(
                        "the server has method `{}` that the proxy lacks",
                        m.signature
                    ));
                }
            }
        }
        if let Some(extra) = other.signatures.get(self.methods.len()) {
            return Some(format!(
                "the proxy has method `{extra}` that the server lacks"
            ));
        }
        Some(format!(
            "fingerprints differ (server {:016x}, proxy {:016x})",
            self.fingerprint, other.fingerprint
        ))
    }
}

/// The body of a trait-mismatch reply (status 18).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mismatch {
    pub(crate) server_fingerprint: u64,
    pub(crate) caller_fingerprint: u64,
    pub(crate) detail: String,
}

/// The body of a lookup: "give me a handle for `name`, which I believe implements this trait".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResolveRequest {
    pub(crate) name: String,
    pub(crate) trait_name: String,
    pub(crate) fingerprint: u64,
    pub(crate) signatures: Vec<String>,
}

impl ResolveRequest {
    pub(crate) fn new(name: &str, d: &ObjectDescriptor) -> Self {
        Self {
            name: name.to_owned(),
            trait_name: d.trait_name.to_owned(),
            fingerprint: d.fingerprint,
            signatures: d.methods.iter().map(|m| m.signature.to_owned()).collect(),
        }
    }
}
