//! Method schemas: the types of an object's methods, described as data, so
//! a client in another language can encode arguments and decode answers
//! (bincode is not self-describing).
//!
//! The system object's method 2 answers an [`ObjectSchema`];
//! [`crate::Client::schema`] fetches one from Rust. The formats are traced
//! from the Rust types themselves, once per trait, never by reading type
//! names: each type's `Deserialize` impl makes sample values that hold every
//! variant of every enum inside it, and `serde-reflection` records the
//! format of those samples as they are serialized. A type that cannot be
//! traced (an object handle, a type whose `Deserialize` impl needs a
//! self-describing format or rejects the samples) is described as
//! [`Format::Opaque`] with the reason, and only that type: the rest of the
//! object stays usable. Two instances of one generic type (`Result<u8,
//! String>` and `Result<String, u8>`) share a serde name; the second one
//! met is named with a suffix (`Result#2`).
//!
//! Every type here is encoded like any other body (bincode, see the README's
//! "Bodies"): enums as a `u32` variant index then the payload, in the
//! declaration order below, which is part of the wire protocol.

use std::cell::Cell;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_reflection::{self as sr, FormatHolder};

use crate::object::ObjectDescriptor;

/// The schema of one exposed object: its methods' argument and return
/// formats, and every named type they use (system method 2,
/// [`crate::Client::schema`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectSchema {
    /// The name the object is exposed under.
    pub name: String,
    /// The trait it implements.
    pub trait_name: String,
    /// The trait's fingerprint, as in the directory and `resolve`.
    pub fingerprint: u64,
    /// The methods in declaration order: a method's position is its index
    /// on the wire.
    pub methods: Vec<MethodSchema>,
    /// The named types (structs and enums) the formats refer to with
    /// [`Format::TypeName`], sorted by name.
    pub types: Vec<(String, ContainerFormat)>,
}

/// One method of an [`ObjectSchema`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodSchema {
    /// The method's name.
    pub name: String,
    /// Its signature, as in the directory: `name(ArgType,..)->Ret`.
    pub signature: String,
    /// Whether it is `#[oneway]` (sent as kind 5, never answered).
    pub oneway: bool,
    /// Whether it is `#[idempotent]` (safe to send again after a lost
    /// connection).
    pub idempotent: bool,
    /// The parameters in order: name and format. The request's arguments
    /// are these values one after another.
    pub args: Vec<(String, Format)>,
    /// What a successful call answers.
    pub output: Output,
}

/// What a method returns, which says how its answer travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Output {
    /// A plain value: the body of a status-0 response.
    Value(Format),
    /// `Result<T, E>`: `T` with status 0, `E` with status 1.
    Fallible(Format, Format),
    /// `Streaming<T>`: status 0 with an empty body, then items of this format.
    Stream(Format),
    /// `Result<Streaming<T>, E>`: a stream of the first format, or `E` with
    /// status 1.
    FallibleStream(Format, Format),
}

/// The format of a value, as bincode lays it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Format {
    /// `()`: nothing.
    Unit,
    /// One byte, 0 or 1.
    Bool,
    /// 1 byte.
    I8,
    /// 2 bytes, little-endian.
    I16,
    /// 4 bytes, little-endian.
    I32,
    /// 8 bytes, little-endian (`isize` too).
    I64,
    /// 16 bytes, little-endian.
    I128,
    /// 1 byte.
    U8,
    /// 2 bytes, little-endian.
    U16,
    /// 4 bytes, little-endian.
    U32,
    /// 8 bytes, little-endian (`usize` too).
    U64,
    /// 16 bytes, little-endian.
    U128,
    /// IEEE 754, 4 bytes, little-endian.
    F32,
    /// IEEE 754, 8 bytes, little-endian.
    F64,
    /// Its UTF-8 encoding, 1 to 4 bytes.
    Char,
    /// A `u64` byte count, then UTF-8.
    Str,
    /// A `u64` byte count, then the bytes (`ipc_core::Bytes`, `serde_bytes`).
    Bytes,
    /// `u8` 0, or 1 then the value.
    Option(Box<Format>),
    /// A `u64` count, then the items (`Vec<T>`, sets, `Vec<u8>` too).
    Seq(Box<Format>),
    /// A `u64` count, then key, value, key, value...
    Map(Box<Format>, Box<Format>),
    /// The items in order, no length.
    Tuple(Vec<Format>),
    /// So many items of one format, in order, no length (`[T; N]`, and
    /// tuples whose items all have the same format).
    TupleArray(Box<Format>, u64),
    /// The named type of [`ObjectSchema::types`] with this name.
    TypeName(String),
    /// A type that could not be described, and why (an object handle such
    /// as `Remote<P>`, or a type `serde-reflection` cannot trace). A
    /// client cannot encode or decode it.
    Opaque(String),
}

/// The format of a named type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ContainerFormat {
    /// `struct S;`: nothing.
    UnitStruct,
    /// `struct S(T);`: the inner value.
    NewTypeStruct(Box<Format>),
    /// `struct S(T, U);`: the fields in order.
    TupleStruct(Vec<Format>),
    /// `struct S { a: T }`: the fields in order, with their names.
    Struct(Vec<(String, Format)>),
    /// An enum: its variants in wire-index order, from 0, with their names.
    /// The index is written as a `u32`, then the variant's payload.
    Enum(Vec<(String, VariantFormat)>),
}

/// The payload of one enum variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum VariantFormat {
    /// No payload.
    Unit,
    /// `V(T)`: the value.
    NewType(Box<Format>),
    /// `V(T, U)`: the fields in order.
    Tuple(Vec<Format>),
    /// `V { a: T }`: the fields in order, with their names.
    Struct(Vec<(String, Format)>),
}

/// The traced formats of one trait: built once by the code `#[expose]`
/// generates, then combined with a name and a descriptor for each request.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct TraitSchema {
    methods: Vec<MethodTypes>,
    types: BTreeMap<String, ContainerFormat>,
}

/// The traced formats of one method.
#[derive(Debug, Clone)]
struct MethodTypes {
    args: Vec<(String, Format)>,
    output: Output,
}

impl ObjectSchema {
    /// The schema of an object exposed as `name`, from its descriptor and
    /// the formats its service traced (`None`: it describes none, and every
    /// format is opaque).
    pub(crate) fn new(
        name: &str,
        descriptor: &ObjectDescriptor,
        traced: Option<&TraitSchema>,
    ) -> Self {
        let untraced = || Format::Opaque("the object's service describes no types".into());
        let methods = descriptor
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let types = traced.and_then(|t| t.methods.get(i));
                MethodSchema {
                    name: m.name.to_owned(),
                    signature: m.signature.to_owned(),
                    oneway: m.oneway,
                    idempotent: m.idempotent,
                    args: types.map(|t| t.args.clone()).unwrap_or_default(),
                    output: types.map_or_else(|| Output::Value(untraced()), |t| t.output.clone()),
                }
            })
            .collect();
        Self {
            name: name.to_owned(),
            trait_name: descriptor.trait_name.to_owned(),
            fingerprint: descriptor.fingerprint,
            methods,
            types: traced
                .map(|t| {
                    t.types
                        .iter()
                        .map(|(n, c)| (n.clone(), c.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

thread_local! {
    /// Set while a type is traced, so that `Remote<P>` can say it is an
    /// object handle rather than fail for want of a connection.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is tracing a type for a schema.
pub(crate) fn is_tracing() -> bool {
    TRACING.with(Cell::get)
}

/// Sets [`TRACING`] for as long as it lives.
struct TracingGuard(bool);

impl TracingGuard {
    fn set() -> Self {
        Self(TRACING.with(|t| t.replace(true)))
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        TRACING.with(|t| t.set(self.0));
    }
}

/// Builds a [`TraitSchema`] method by method (used by generated code):
/// [`method`](Self::method), then its [`arg`](Self::arg)s in order, then
/// [`returns`](Self::returns); [`finish`](Self::finish) at the end. Formats
/// come from [`SchemaProbe`]s.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct SchemaTracer {
    schema: TraitSchema,
}

/// Most samples of one type: each holds at least one more enum variant, so
/// this bounds the variants a type may reach.
const MAX_PASSES: usize = 10_000;

/// Most times one type's names are renamed to avoid a clash.
const MAX_RENAMES: usize = 64;

/// Stands for the type `T` in generated code, which gets its format with
/// `(&SchemaProbe::<T>::new()).trace_with(&mut tracer)`: [`TraceSerde`] for
/// types that are `Serialize + DeserializeOwned`, and otherwise (by autoref
/// specialization) [`TraceOther`], which says it is opaque. A type that is
/// not serde is already a compile error elsewhere; this way the schema adds
/// no second one.
#[doc(hidden)]
pub struct SchemaProbe<T: ?Sized>(std::marker::PhantomData<fn() -> T>);

impl<T: ?Sized> SchemaProbe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T: ?Sized> Default for SchemaProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The format of a serde type (see [`SchemaProbe`]).
#[doc(hidden)]
pub trait TraceSerde {
    /// Traces the type into `tracer`'s named types; its format.
    fn trace_with(&self, tracer: &mut SchemaTracer) -> Format;
}

impl<T: Serialize + DeserializeOwned> TraceSerde for SchemaProbe<T> {
    fn trace_with(&self, tracer: &mut SchemaTracer) -> Format {
        tracer.trace::<T>()
    }
}

/// The format of any other type: opaque (see [`SchemaProbe`]).
#[doc(hidden)]
pub trait TraceOther {
    /// `Opaque`, naming the type.
    fn trace_with(&self, tracer: &mut SchemaTracer) -> Format;
}

impl<T: ?Sized> TraceOther for &SchemaProbe<T> {
    fn trace_with(&self, _: &mut SchemaTracer) -> Format {
        Format::Opaque(format!(
            "{}: not `Serialize + DeserializeOwned`",
            std::any::type_name::<T>()
        ))
    }
}

impl SchemaTracer {
    /// An empty schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the next method (in declaration order).
    pub fn method(&mut self) {
        self.schema.methods.push(MethodTypes {
            args: Vec::new(),
            output: Output::Value(Format::Unit),
        });
    }

    /// The current method's next parameter.
    pub fn arg(&mut self, name: &str, format: Format) {
        if let Some(m) = self.schema.methods.last_mut() {
            m.args.push((name.to_owned(), format));
        }
    }

    /// What the current method returns.
    pub fn returns(&mut self, output: Output) {
        if let Some(m) = self.schema.methods.last_mut() {
            m.output = output;
        }
    }

    /// The schema built.
    pub fn finish(self) -> TraitSchema {
        self.schema
    }

    /// The format of `T`, its named types added to the schema's (renamed
    /// where another type already has the name), or `Opaque` with the reason.
    fn trace<T: Serialize + DeserializeOwned>(&mut self) -> Format {
        let opaque = |why: String| Format::Opaque(format!("{}: {why}", std::any::type_name::<T>()));
        let traced = {
            let _tracing = TracingGuard::set();
            // serde-reflection asserts some invariants by panicking; a type
            // that trips one is opaque, not a dead connection.
            std::panic::catch_unwind(trace_type::<T>)
                .unwrap_or_else(|_| Err("tracing it panicked".to_owned()))
        };
        let (format, registry) = match traced.and_then(|(f, r)| convert(f, r)) {
            Ok(traced) => traced,
            Err(why) => return opaque(why),
        };
        match self.merge(registry) {
            Ok(renames) => renamed(format, &renames),
            Err(why) => opaque(why),
        }
    }

    /// Adds `registry` to the schema's types. A name already taken by
    /// another type gets a suffix (`Result#2`: two instances of one generic
    /// type have one serde name); returns the renames made.
    fn merge(
        &mut self,
        registry: BTreeMap<String, ContainerFormat>,
    ) -> Result<BTreeMap<String, String>, String> {
        let known = &mut self.schema.types;
        let mut renames: BTreeMap<String, String> = BTreeMap::new();
        for _ in 0..MAX_RENAMES {
            let mut changed = false;
            for (name, container) in &registry {
                let current = renames.get(name).unwrap_or(name);
                let container = renamed_container(container.clone(), &renames);
                if known.get(current).is_none_or(|k| *k == container) {
                    continue;
                }
                let free = (2..)
                    .map(|k| format!("{name}#{k}"))
                    .find(|n| known.get(n).is_none_or(|k| *k == container))
                    .unwrap_or_default();
                renames.insert(name.clone(), free);
                changed = true;
            }
            if !changed {
                for (name, container) in registry {
                    let container = renamed_container(container, &renames);
                    let name = renames.get(&name).cloned().unwrap_or(name);
                    known.entry(name).or_insert(container);
                }
                return Ok(renames);
            }
        }
        Err("its type names clash with other types' too often".into())
    }
}

/// Traces `T`: serializes sample values of it through `serde-reflection`'s
/// tracer, which records the format of every part, struct and variant it
/// meets. The samples come from `T`'s own `Deserialize` impl, driven by
/// [`Sampler`] so that together they hold every variant of every enum
/// inside `T`, however deeply nested (`serde-reflection`'s own
/// deserialization tracing explores only the enums it is handed by name,
/// and generic code cannot name the enums inside a type).
fn trace_type<T: Serialize + DeserializeOwned>() -> Result<(sr::Format, sr::Registry), String> {
    let mut tracer = sr::Tracer::new(sr::TracerConfig::default());
    let mut samples = sr::Samples::new();
    let mut coverage = sample::Coverage::default();
    for _ in 0..MAX_PASSES {
        let value: T = sample::sample(&mut coverage)?;
        let (mut format, _) = tracer
            .trace_value(&mut samples, &value)
            .map_err(|e| e.to_string())?;
        if coverage.complete() {
            format.normalize().map_err(|e| e.to_string())?;
            let registry = tracer.registry().map_err(|e| e.to_string())?;
            return Ok((format, registry));
        }
    }
    Err("it has too many enum variants to trace".into())
}

/// `serde-reflection`'s formats as ours.
fn convert(
    format: sr::Format,
    registry: sr::Registry,
) -> Result<(Format, BTreeMap<String, ContainerFormat>), String> {
    let format = from_sr(format)?;
    let registry = registry
        .into_iter()
        .map(|(name, c)| Ok((name, container_from_sr(c)?)))
        .collect::<Result<_, String>>()?;
    Ok((format, registry))
}

fn from_sr(format: sr::Format) -> Result<Format, String> {
    let boxed = |f: Box<sr::Format>| from_sr(*f).map(Box::new);
    Ok(match format {
        sr::Format::Variable(_) => return Err("part of it could not be traced".into()),
        sr::Format::TypeName(name) => Format::TypeName(name),
        sr::Format::Unit => Format::Unit,
        sr::Format::Bool => Format::Bool,
        sr::Format::I8 => Format::I8,
        sr::Format::I16 => Format::I16,
        sr::Format::I32 => Format::I32,
        sr::Format::I64 => Format::I64,
        sr::Format::I128 => Format::I128,
        sr::Format::U8 => Format::U8,
        sr::Format::U16 => Format::U16,
        sr::Format::U32 => Format::U32,
        sr::Format::U64 => Format::U64,
        sr::Format::U128 => Format::U128,
        sr::Format::F32 => Format::F32,
        sr::Format::F64 => Format::F64,
        sr::Format::Char => Format::Char,
        sr::Format::Str => Format::Str,
        sr::Format::Bytes => Format::Bytes,
        sr::Format::Option(f) => Format::Option(boxed(f)?),
        sr::Format::Seq(f) => Format::Seq(boxed(f)?),
        sr::Format::Map { key, value } => Format::Map(boxed(key)?, boxed(value)?),
        sr::Format::Tuple(fs) => Format::Tuple(all_from_sr(fs)?),
        sr::Format::TupleArray { content, size } => {
            Format::TupleArray(boxed(content)?, u64::try_from(size).unwrap_or(u64::MAX))
        }
    })
}

fn all_from_sr(formats: Vec<sr::Format>) -> Result<Vec<Format>, String> {
    formats.into_iter().map(from_sr).collect()
}

fn named_from_sr(fields: Vec<sr::Named<sr::Format>>) -> Result<Vec<(String, Format)>, String> {
    fields
        .into_iter()
        .map(|f| Ok((f.name, from_sr(f.value)?)))
        .collect()
}

fn container_from_sr(container: sr::ContainerFormat) -> Result<ContainerFormat, String> {
    Ok(match container {
        sr::ContainerFormat::UnitStruct => ContainerFormat::UnitStruct,
        sr::ContainerFormat::NewTypeStruct(f) => {
            ContainerFormat::NewTypeStruct(Box::new(from_sr(*f)?))
        }
        sr::ContainerFormat::TupleStruct(fs) => ContainerFormat::TupleStruct(all_from_sr(fs)?),
        sr::ContainerFormat::Struct(fields) => ContainerFormat::Struct(named_from_sr(fields)?),
        sr::ContainerFormat::Enum(variants) => {
            let mut out = Vec::with_capacity(variants.len());
            for (expected, (index, variant)) in (0u32..).zip(variants) {
                if index != expected {
                    return Err(format!("variant #{expected} could not be traced"));
                }
                let payload = match variant.value {
                    sr::VariantFormat::Variable(_) => {
                        return Err(format!("variant `{}` could not be traced", variant.name));
                    }
                    sr::VariantFormat::Unit => VariantFormat::Unit,
                    sr::VariantFormat::NewType(f) => VariantFormat::NewType(Box::new(from_sr(*f)?)),
                    sr::VariantFormat::Tuple(fs) => VariantFormat::Tuple(all_from_sr(fs)?),
                    sr::VariantFormat::Struct(fields) => {
                        VariantFormat::Struct(named_from_sr(fields)?)
                    }
                };
                out.push((variant.name, payload));
            }
            ContainerFormat::Enum(out)
        }
    })
}

/// `format` with the type names in `renames` replaced.
fn renamed(format: Format, renames: &BTreeMap<String, String>) -> Format {
    if renames.is_empty() {
        return format;
    }
    let boxed = |f: Box<Format>| Box::new(renamed(*f, renames));
    match format {
        Format::TypeName(name) => Format::TypeName(renames.get(&name).cloned().unwrap_or(name)),
        Format::Option(f) => Format::Option(boxed(f)),
        Format::Seq(f) => Format::Seq(boxed(f)),
        Format::Map(k, v) => Format::Map(boxed(k), boxed(v)),
        Format::Tuple(fs) => Format::Tuple(renamed_all(fs, renames)),
        Format::TupleArray(f, n) => Format::TupleArray(boxed(f), n),
        other => other,
    }
}

fn renamed_all(formats: Vec<Format>, renames: &BTreeMap<String, String>) -> Vec<Format> {
    formats.into_iter().map(|f| renamed(f, renames)).collect()
}

fn renamed_fields(
    fields: Vec<(String, Format)>,
    renames: &BTreeMap<String, String>,
) -> Vec<(String, Format)> {
    fields
        .into_iter()
        .map(|(n, f)| (n, renamed(f, renames)))
        .collect()
}

fn renamed_container(
    container: ContainerFormat,
    renames: &BTreeMap<String, String>,
) -> ContainerFormat {
    match container {
        ContainerFormat::UnitStruct => ContainerFormat::UnitStruct,
        ContainerFormat::NewTypeStruct(f) => {
            ContainerFormat::NewTypeStruct(Box::new(renamed(*f, renames)))
        }
        ContainerFormat::TupleStruct(fs) => ContainerFormat::TupleStruct(renamed_all(fs, renames)),
        ContainerFormat::Struct(fields) => ContainerFormat::Struct(renamed_fields(fields, renames)),
        ContainerFormat::Enum(variants) => ContainerFormat::Enum(
            variants
                .into_iter()
                .map(|(name, v)| {
                    let v = match v {
                        VariantFormat::Unit => VariantFormat::Unit,
                        VariantFormat::NewType(f) => {
                            VariantFormat::NewType(Box::new(renamed(*f, renames)))
                        }
                        VariantFormat::Tuple(fs) => VariantFormat::Tuple(renamed_all(fs, renames)),
                        VariantFormat::Struct(fields) => {
                            VariantFormat::Struct(renamed_fields(fields, renames))
                        }
                    };
                    (name, v)
                })
                .collect(),
        ),
    }
}

mod sample;
#[cfg(test)]
mod tests;
