//! Tracing types into schemas, and their encoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::wire;

fn traced<T: Serialize + DeserializeOwned>() -> (Format, BTreeMap<String, ContainerFormat>) {
    let mut tracer = SchemaTracer::new();
    let format = tracer.trace::<T>();
    (format, tracer.finish().types)
}

fn boxed(f: Format) -> Box<Format> {
    Box::new(f)
}

fn name(n: &str) -> Format {
    Format::TypeName(n.into())
}

#[test]
fn primitives_and_std_containers_have_their_bincode_formats() {
    assert_eq!(traced::<u8>().0, Format::U8);
    assert_eq!(traced::<i128>().0, Format::I128);
    assert_eq!(traced::<usize>().0, Format::U64);
    assert_eq!(traced::<f32>().0, Format::F32);
    assert_eq!(traced::<char>().0, Format::Char);
    assert_eq!(traced::<String>().0, Format::Str);
    assert_eq!(traced::<()>().0, Format::Unit);
    assert_eq!(traced::<bool>().0, Format::Bool);
    assert_eq!(traced::<Vec<u8>>().0, Format::Seq(boxed(Format::U8)));
    assert_eq!(traced::<crate::Bytes>().0, Format::Bytes);
    assert_eq!(
        traced::<Option<String>>().0,
        Format::Option(boxed(Format::Str))
    );
    assert_eq!(
        traced::<BTreeMap<String, Vec<u32>>>().0,
        Format::Map(boxed(Format::Str), boxed(Format::Seq(boxed(Format::U32))))
    );
    assert_eq!(
        traced::<(u8, String)>().0,
        Format::Tuple(vec![Format::U8, Format::Str])
    );
    assert_eq!(
        traced::<[u16; 3]>().0,
        Format::TupleArray(boxed(Format::U16), 3)
    );
    assert!(traced::<u8>().1.is_empty());
}

#[derive(Serialize, Deserialize)]
struct Unit;

#[derive(Serialize, Deserialize)]
struct Meters(f64);

#[derive(Serialize, Deserialize)]
struct Pair(u8, String);

#[derive(Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(Meters),
    Rect(u32, u32),
    Named {
        label: String,
        inner: Option<Box<Shape>>,
    },
}

#[derive(Serialize, Deserialize)]
enum Level {
    Low,
    High,
}

#[derive(Serialize, Deserialize)]
struct Scene {
    shapes: Vec<Shape>,
    level: Option<Level>,
    unit: Unit,
    pair: Pair,
}

#[test]
fn nested_structs_and_enums_are_traced_whole_with_every_variant_in_wire_order() {
    let (format, types) = traced::<Scene>();
    assert_eq!(format, name("Scene"));
    let expected: BTreeMap<String, ContainerFormat> = [
        (
            "Scene",
            ContainerFormat::Struct(vec![
                ("shapes".into(), Format::Seq(boxed(name("Shape")))),
                ("level".into(), Format::Option(boxed(name("Level")))),
                ("unit".into(), name("Unit")),
                ("pair".into(), name("Pair")),
            ]),
        ),
        (
            "Shape",
            ContainerFormat::Enum(vec![
                ("Empty".into(), VariantFormat::Unit),
                (
                    "Circle".into(),
                    VariantFormat::NewType(boxed(name("Meters"))),
                ),
                (
                    "Rect".into(),
                    VariantFormat::Tuple(vec![Format::U32, Format::U32]),
                ),
                (
                    "Named".into(),
                    VariantFormat::Struct(vec![
                        ("label".into(), Format::Str),
                        ("inner".into(), Format::Option(boxed(name("Shape")))),
                    ]),
                ),
            ]),
        ),
        (
            "Level",
            ContainerFormat::Enum(vec![
                ("Low".into(), VariantFormat::Unit),
                ("High".into(), VariantFormat::Unit),
            ]),
        ),
        ("Unit", ContainerFormat::UnitStruct),
        ("Meters", ContainerFormat::NewTypeStruct(boxed(Format::F64))),
        (
            "Pair",
            ContainerFormat::TupleStruct(vec![Format::U8, Format::Str]),
        ),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c))
    .collect();
    assert_eq!(types, expected);
}

#[derive(Serialize, Deserialize)]
struct Node {
    children: Vec<Node>,
    tags: BTreeMap<String, Level>,
}

#[derive(Serialize, Deserialize)]
enum List {
    Cons(u8, Box<List>),
    Nil,
}

/// Runs `f` on a thread with a small stack, as a runaway trace would
/// overflow it.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(f)
        .map(|t| t.join())
    {
        Ok(Ok(r)) => r,
        _ => panic!("the thread failed"),
    }
}

#[test]
fn types_that_contain_themselves_are_traced_with_enums_inside_maps() {
    let (format, types) = on_small_stack(traced::<Node>);
    assert_eq!(format, name("Node"));
    assert_eq!(
        types.get("Node"),
        Some(&ContainerFormat::Struct(vec![
            ("children".into(), Format::Seq(boxed(name("Node")))),
            (
                "tags".into(),
                Format::Map(boxed(Format::Str), boxed(name("Level")))
            ),
        ]))
    );
    assert!(matches!(types.get("Level"), Some(ContainerFormat::Enum(v)) if v.len() == 2));
}

#[derive(Serialize, Deserialize)]
struct Endless(Box<Endless>);

#[test]
fn an_enum_whose_first_variant_contains_itself_is_traced() {
    let (format, types) = on_small_stack(traced::<List>);
    assert_eq!(format, name("List"));
    assert_eq!(
        types.get("List"),
        Some(&ContainerFormat::Enum(vec![
            (
                "Cons".into(),
                VariantFormat::Tuple(vec![Format::U8, name("List")])
            ),
            ("Nil".into(), VariantFormat::Unit),
        ]))
    );
}

#[test]
fn a_type_without_a_finite_value_is_opaque_without_overflowing_the_stack() {
    let (format, _) = on_small_stack(traced::<Endless>);
    let Format::Opaque(why) = format else {
        panic!("{format:?}")
    };
    assert!(why.contains("Endless") && why.contains("deeper"), "{why}");
}

#[test]
fn two_instances_of_one_generic_type_get_distinct_names() {
    let mut tracer = SchemaTracer::new();
    let a = tracer.trace::<Result<u64, String>>();
    let b = tracer.trace::<Result<String, u8>>();
    let c = tracer.trace::<Result<u64, String>>();
    let types = tracer.finish().types;
    assert_eq!(a, name("Result"));
    assert_eq!(b, name("Result#2"));
    assert_eq!(c, name("Result"), "a type seen before keeps its name");
    assert_eq!(
        types.get("Result#2"),
        Some(&ContainerFormat::Enum(vec![
            ("Ok".into(), VariantFormat::NewType(boxed(Format::Str))),
            ("Err".into(), VariantFormat::NewType(boxed(Format::U8))),
        ]))
    );
    assert_eq!(types.len(), 2);
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(u64),
    Text(String),
}

#[test]
fn untraceable_types_are_opaque_with_the_reason_and_the_rest_stays_described() {
    let mut tracer = SchemaTracer::new();
    tracer.method();
    let loose = tracer.trace::<Loose>();
    tracer.arg("loose", loose);
    let object = tracer.trace::<crate::Remote<crate::nameserver::NameServerProxy>>();
    tracer.arg("object", object);
    let level = tracer.trace::<Level>();
    tracer.arg("level", level);
    tracer.returns(Output::Value(Format::U8));
    let schema = tracer.finish();
    let args = &schema.methods[0].args;
    let Format::Opaque(why) = &args[0].1 else {
        panic!("{:?}", args[0])
    };
    assert!(why.contains("Loose"), "{why}");
    let Format::Opaque(why) = &args[1].1 else {
        panic!("{:?}", args[1])
    };
    assert!(why.contains("object handle"), "{why}");
    assert_eq!(args[2], ("level".into(), name("Level")));
    assert!(schema.types.contains_key("Level"));
    assert!(!is_tracing(), "the flag is reset");
}

#[test]
// Written as the generated code writes it, which the non-serde case needs.
#[allow(clippy::needless_borrow)]
fn a_probe_traces_serde_types_and_calls_others_opaque() {
    struct NotSerde;
    let mut tracer = SchemaTracer::new();
    assert_eq!(
        (&SchemaProbe::<Level>::new()).trace_with(&mut tracer),
        name("Level")
    );
    let Format::Opaque(why) = (&SchemaProbe::<NotSerde>::new()).trace_with(&mut tracer) else {
        panic!("not opaque")
    };
    assert!(why.contains("NotSerde"), "{why}");
}

#[test]
fn formats_encode_as_the_readme_lays_them_out() {
    // Variant indexes are the wire's: Opaque is 23, Enum 4, FallibleStream 3.
    let opaque = wire::encode_to_vec(&Format::Opaque("x".into())).unwrap_or_default();
    assert_eq!(opaque, [23, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'x']);
    let array = wire::encode_to_vec(&Format::TupleArray(boxed(Format::U8), 2)).unwrap_or_default();
    assert_eq!(array, [21, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    let unit_enum = ContainerFormat::Enum(vec![("A".into(), VariantFormat::Unit)]);
    assert_eq!(
        wire::encode_to_vec(&unit_enum).unwrap_or_default(),
        [
            4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'A', 0, 0, 0, 0
        ]
    );
    let stream = Output::FallibleStream(Format::Unit, Format::Bool);
    assert_eq!(
        wire::encode_to_vec(&stream).unwrap_or_default(),
        [3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    );
}

#[test]
fn an_object_schema_round_trips_through_bincode() {
    let mut tracer = SchemaTracer::new();
    tracer.method();
    let scene = tracer.trace::<Scene>();
    tracer.arg("scene", scene);
    let item = tracer.trace::<Option<Shape>>();
    let err = tracer.trace::<Level>();
    tracer.returns(Output::FallibleStream(item, err));
    let traced = tracer.finish();
    let descriptor = <crate::nameserver::NameServerProxy as crate::Proxy>::DESCRIPTOR;
    let schema = ObjectSchema::new("ns", descriptor, Some(&traced));
    assert_eq!(schema.methods.len(), descriptor.methods.len());
    assert_eq!(schema.methods[0].args[0], ("scene".into(), name("Scene")));
    assert!(
        matches!(schema.methods[1].output, Output::Value(Format::Opaque(_))),
        "untraced methods are opaque"
    );
    let bytes = wire::encode_to_vec(&schema).unwrap_or_default();
    let back: ObjectSchema = wire::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, schema);
    assert!(
        back.types.windows(2).all(|w| w[0].0 < w[1].0),
        "sorted by name"
    );
}
