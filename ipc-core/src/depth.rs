//! A nesting limit for decoding.
//!
//! A serde `Deserialize` impl for a recursive type (`enum Tree { Leaf,
//! Node(Box<Tree>) }`) recurses once per level of the value, and bincode has no
//! limit of its own: a body of a few dozen kilobytes of nested variants
//! overflows the decoding thread's stack, which aborts the whole process. A
//! hostile peer could kill the other side with one frame.
//!
//! [`DepthLimited`] wraps a `Deserializer` and counts how deeply compound
//! values (sequences, tuples, maps, structs, enums, `Some`, newtype structs)
//! are nested, failing past [`MAX_DEPTH`]. The count is counted where nesting
//! really happens: in the `visit_*` call that hands the visitor access to the
//! inner values. Everything below that access (elements, keys, values,
//! variants and their payloads) is wrapped again with the depth one higher, so
//! the count travels down the value by value, unwinds by itself and needs no
//! shared state. Everything else is forwarded untouched: borrowed strings and
//! bytes stay borrowed (zero-copy [`crate::Bytes`] relies on it), and size
//! hints and `is_human_readable` are those of the wrapped format.
//!
//! The cost is one integer carried along and one comparison per compound; no
//! allocation.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How deeply compound values may nest. Every level of a value counts: the
/// argument tuple, each struct, enum, `Some`, newtype struct, sequence and map.
///
/// `Tree::Node(Box<Tree>)` costs one level per node, `struct N(Option<Box<N>>)`
/// two (the newtype and the `Some`). At this depth decoding needs well under
/// the 2 MiB of a Tokio worker thread's stack.
pub(crate) const MAX_DEPTH: u32 = 128;

/// The error for a value nested past [`MAX_DEPTH`].
#[cold]
#[inline(never)]
fn too_deep<E: de::Error>() -> E {
    E::custom(format_args!("nesting deeper than {MAX_DEPTH} levels"))
}

/// The depth of the values inside a compound entered at `depth`, or the error.
#[inline]
fn enter<E: de::Error>(depth: u32) -> Result<u32, E> {
    if depth < MAX_DEPTH {
        Ok(depth + 1)
    } else {
        Err(too_deep())
    }
}

/// Decodes a `T` through a [`DepthLimited`] deserializer: use `Limited<T>` in
/// place of `T` to decode with the nesting limit.
pub(crate) struct Limited<T>(pub(crate) T);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Limited<T> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(DepthLimited::new(deserializer)).map(Limited)
    }
}

/// A `Deserializer` that fails on values nested deeper than [`MAX_DEPTH`].
pub(crate) struct DepthLimited<D> {
    inner: D,
    /// Compound values entered above this one.
    depth: u32,
}

impl<D> DepthLimited<D> {
    /// Wraps `inner`, at depth zero.
    #[inline]
    pub(crate) fn new(inner: D) -> Self {
        Self { inner, depth: 0 }
    }
}

/// Forwards `deserialize_*` methods, wrapping the visitor.
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self $(, $arg: $ty)*, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* Visit { inner: visitor, depth: self.depth })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for DepthLimited<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }

    // Not forwarded: serde's hidden `__deserialize_content_v1`, whose default
    // goes through `deserialize_any` above, so it is still counted.
}

/// A `Visitor` that counts the compound it is handed and wraps its contents.
struct Visit<V> {
    inner: V,
    /// The depth of the value being visited.
    depth: u32,
}

/// Forwards scalar `visit_*` methods unchanged.
macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    #[inline]
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    #[inline]
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let depth = enter(self.depth)?;
        self.inner.visit_some(DepthLimited {
            inner: deserializer,
            depth,
        })
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let depth = enter(self.depth)?;
        self.inner.visit_newtype_struct(DepthLimited {
            inner: deserializer,
            depth,
        })
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let depth = enter(self.depth)?;
        self.inner.visit_seq(Access { inner: seq, depth })
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let depth = enter(self.depth)?;
        self.inner.visit_map(Access { inner: map, depth })
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let depth = enter(self.depth)?;
        self.inner.visit_enum(Access { inner: data, depth })
    }

    // Not forwarded: serde's hidden `__private_visit_untagged_option`, which
    // only serde's own flatten deserializer calls; it is never wrapped here.
}

/// The contents of a compound (a `SeqAccess`, `MapAccess`, `EnumAccess` or
/// `VariantAccess`), handing out its values at `depth`.
struct Access<A> {
    inner: A,
    /// The depth of the values inside.
    depth: u32,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    #[inline]
    fn next_entry_seed<K: DeserializeSeed<'de>, V: DeserializeSeed<'de>>(
        &mut self,
        key: K,
        value: V,
    ) -> Result<Option<(K::Value, V::Value)>, A::Error> {
        self.inner.next_entry_seed(
            Seed {
                inner: key,
                depth: self.depth,
            },
            Seed {
                inner: value,
                depth: self.depth,
            },
        )
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<A> {
    type Error = A::Error;
    type Variant = Access<A::Variant>;

    #[inline]
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(Seed { inner: seed, depth })?;
        Ok((
            value,
            Access {
                inner: variant,
                depth,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<A> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            depth: self.depth,
        })
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            Visit {
                inner: visitor,
                depth: self.depth,
            },
        )
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            Visit {
                inner: visitor,
                depth: self.depth,
            },
        )
    }
}

/// A `DeserializeSeed` that deserializes through a [`DepthLimited`] at `depth`.
struct Seed<S> {
    inner: S,
    depth: u32,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(DepthLimited {
            inner: deserializer,
            depth: self.depth,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::wire;

    /// One level per node.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    impl Tree {
        /// A chain of `nodes` nodes ending in a leaf: `nodes + 1` levels.
        fn chain(nodes: usize) -> Self {
            (0..nodes).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
        }
    }

    /// Two levels per `Some`: the newtype struct and the option.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct N(Option<Box<N>>);

    /// The bytes of a `Tree` chain, written by hand: each node is variant
    /// index 1 (`u32` LE), the leaf is variant 0.
    fn tree_bytes(nodes: usize) -> Vec<u8> {
        let mut b = [1u8, 0, 0, 0].repeat(nodes);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b
    }

    /// Runs `f` on a thread with a small stack: a recursion the limit did not
    /// stop would overflow it and abort the test process.
    fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap_or_else(|e| panic!("spawn: {e}"))
            .join()
            .unwrap_or_else(|_| panic!("decoding panicked"))
    }

    fn round_trip<T>(value: &T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        let bytes = wire::encode_to_vec(value).unwrap_or_else(|e| panic!("encode: {e}"));
        let back: T = wire::decode(&bytes).unwrap_or_else(|e| panic!("decode {value:?}: {e}"));
        assert_eq!(&back, value);
    }

    #[test]
    fn recursive_value_nested_100_levels_decodes() {
        let tree = Tree::chain(100);
        assert_eq!(wire::encode_to_vec(&tree).ok(), Some(tree_bytes(100)));
        round_trip(&(Tree::chain(100), 7u8));
        round_trip(&Tree::chain(100));
    }

    #[test]
    fn value_at_the_limit_decodes_and_one_level_more_fails() {
        let at_limit = MAX_DEPTH as usize - 1;
        let tree: Tree = wire::decode(&tree_bytes(at_limit)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree, Tree::chain(at_limit));

        let err = wire::decode::<Tree>(&tree_bytes(at_limit + 1)).unwrap_err();
        assert_eq!(err.to_string(), "nesting deeper than 128 levels");
        // Inside the argument tuple, the tuple is a level too.
        assert!(wire::decode::<(Tree,)>(&tree_bytes(at_limit)).is_err());
        assert!(wire::decode::<(Tree,)>(&tree_bytes(at_limit - 1)).is_ok());
    }

    #[test]
    fn deep_enum_nesting_fails_without_overflowing_the_stack() {
        let err = on_small_stack(|| wire::decode::<(Tree,)>(&tree_bytes(10_000)).unwrap_err());
        assert_eq!(err.to_string(), "nesting deeper than 128 levels");
    }

    #[test]
    fn deep_option_nesting_fails_without_overflowing_the_stack() {
        // `Some` is tag 1, `None` tag 0; the newtype struct adds no bytes.
        let mut b = vec![1u8; 10_000];
        b.push(0);
        let err = on_small_stack(move || wire::decode::<N>(&b).unwrap_err());
        assert_eq!(err.to_string(), "nesting deeper than 128 levels");

        let n = (0..60).fold(N(None), |n, _| N(Some(Box::new(n))));
        round_trip(&n);
    }

    #[test]
    fn deep_sequences_and_maps_are_limited_too() {
        // `Vec<Vec<..>>` through a recursive newtype: one length per level.
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct V(Vec<V>);
        let mut b = 1u64.to_le_bytes().repeat(10_000);
        b.extend_from_slice(&0u64.to_le_bytes());
        let err = on_small_stack(move || wire::decode::<V>(&b).unwrap_err());
        assert_eq!(err.to_string(), "nesting deeper than 128 levels");

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct M(BTreeMap<u8, M>);
        let mut b = Vec::new();
        for _ in 0..10_000 {
            b.extend_from_slice(&1u64.to_le_bytes());
            b.push(0);
        }
        b.extend_from_slice(&0u64.to_le_bytes());
        let err = on_small_stack(move || wire::decode::<M>(&b).unwrap_err());
        assert_eq!(err.to_string(), "nesting deeper than 128 levels");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(String),
        Tuple(u8, i64, char),
        Struct { name: String, tags: Vec<String> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapper(u32);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Everything {
        flag: bool,
        small: i8,
        big: u128,
        float: f64,
        letter: char,
        text: String,
        maybe: Option<u16>,
        nothing: Option<String>,
        list: Vec<String>,
        map: HashMap<String, Vec<u8>>,
        sorted: BTreeMap<u32, Option<Shape>>,
        pair: (u8, String),
        shapes: Vec<Shape>,
        unit: (),
        unit_struct: Unit,
        newtype: Wrapper,
    }

    #[test]
    fn ordinary_values_round_trip_unchanged() {
        round_trip(&(1u64, 2u64));
        round_trip(&());
        round_trip(&(String::from("x"),));
        round_trip(&(vec![String::from("a"), String::new()], Some(3u64)));
        round_trip(&Shape::Unit);
        round_trip(&Everything {
            flag: true,
            small: -3,
            big: u128::MAX - 1,
            float: 1.5,
            letter: 'é',
            text: "text".into(),
            maybe: Some(9),
            nothing: None,
            list: vec!["a".into(), "bc".into()],
            map: HashMap::from([("k".into(), vec![1, 2]), ("l".into(), vec![])]),
            sorted: BTreeMap::from([(1, None), (2, Some(Shape::Newtype("n".into())))]),
            pair: (4, "p".into()),
            shapes: vec![
                Shape::Unit,
                Shape::Newtype("s".into()),
                Shape::Tuple(1, -2, 'c'),
                Shape::Struct {
                    name: "n".into(),
                    tags: vec!["t".into()],
                },
            ],
            unit: (),
            unit_struct: Unit,
            newtype: Wrapper(5),
        });
    }

    #[test]
    fn shared_bytes_stay_views_of_the_frame() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let value = (Some(crate::Bytes::from(data.clone())), Shape::Unit);
        let frame = bytes::Bytes::from(wire::encode_to_vec(&value).unwrap_or_default());
        let (b, shape): (Option<crate::Bytes>, Shape) =
            wire::decode_shared(&frame).unwrap_or_else(|e| panic!("{e}"));
        let b = b.unwrap_or_default();
        assert_eq!((&b[..], shape), (&data[..], Shape::Unit));
        let start = frame.as_ptr() as usize;
        let at = b.as_ptr() as usize;
        assert!(
            at >= start && at + b.len() <= start + frame.len(),
            "not a view of the frame"
        );
    }

    #[test]
    fn borrowed_strings_and_bytes_stay_borrowed() {
        // `Bytes` serializes as bytes, `&[u8]` only deserializes from borrowed bytes.
        let value = ("text", crate::Bytes::from_static(b"raw"));
        let bytes = wire::encode_to_vec(&value).unwrap_or_default();
        let config = bincode::config::standard()
            .with_little_endian()
            .with_fixed_int_encoding();
        let (Limited((s, b)), used) =
            bincode::serde::borrow_decode_from_slice::<Limited<(&str, &[u8])>, _>(&bytes, config)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s, b, used), ("text", &b"raw"[..], bytes.len()));
        let range = bytes.as_ptr_range();
        assert!(range.contains(&s.as_ptr()) && range.contains(&b.as_ptr()));
    }

    #[test]
    fn format_properties_are_those_of_the_wrapped_format() {
        /// Records what the deserializer reports.
        #[derive(Debug, PartialEq)]
        struct Seen {
            human_readable: bool,
            size_hint: Option<usize>,
        }

        impl<'de> Deserialize<'de> for Seen {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V(bool);
                impl<'de> Visitor<'de> for V {
                    type Value = Seen;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a sequence")
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen, A::Error> {
                        let size_hint = seq.size_hint();
                        while seq.next_element::<u8>()?.is_some() {}
                        Ok(Seen {
                            human_readable: self.0,
                            size_hint,
                        })
                    }
                }
                let human_readable = d.is_human_readable();
                d.deserialize_seq(V(human_readable))
            }
        }

        let bytes = wire::encode_to_vec(&vec![1u8, 2, 3]).unwrap_or_default();
        let seen: Seen = wire::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            seen,
            Seen {
                human_readable: false,
                size_hint: Some(3)
            }
        );
    }

    #[test]
    fn trailing_bytes_are_still_an_error() {
        let mut bytes = wire::encode_to_vec(&(Tree::chain(3),)).unwrap_or_default();
        assert!(wire::decode::<(Tree,)>(&bytes).is_ok());
        bytes.push(0);
        let err = wire::decode::<(Tree,)>(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "1 trailing bytes after the value");
    }
}
