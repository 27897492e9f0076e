//! Sample values of any serde type, made by its own `Deserialize` impl:
//! across samples, every variant of every enum inside it, however deeply
//! nested. Their serialization is what `serde-reflection` traces.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, IntoDeserializer};

/// A sample of `T`, taking the next variants `coverage` wants; the reason
/// if `T`'s `Deserialize` impl refuses it.
pub(super) fn sample<T: DeserializeOwned>(coverage: &mut Coverage) -> Result<T, String> {
    T::deserialize(Sampler { coverage, depth: 0 }).map_err(|e| e.0)
}

/// Below this depth a sample has one item in each sequence and map and a
/// value in each option; from it on, none, and the first variant of each
/// enum: so a type that contains itself (`struct Node { children:
/// Vec<Node> }`) gets a finite sample.
const SAMPLE_DEPTH: u32 = 24;

/// Deeper than this, sampling fails (a type whose first variant contains
/// itself without an option or a sequence in between has no finite sample).
const MAX_SAMPLE_DEPTH: u32 = 120;

/// Which variants of each enum the samples hold so far.
#[derive(Default)]
pub(super) struct Coverage {
    /// By the enum's serde name: the next variant to sample, and which were.
    enums: BTreeMap<&'static str, (usize, Vec<bool>)>,
}

impl Coverage {
    /// The variant of `name` (with `count` variants) the next sample takes.
    fn pick(&mut self, name: &'static str, count: usize, depth: u32) -> usize {
        let (next, seen) = self
            .enums
            .entry(name)
            .or_insert_with(|| (0, vec![false; count]));
        if depth >= SAMPLE_DEPTH || seen.is_empty() {
            return 0;
        }
        let picked = *next % seen.len();
        seen[picked] = true;
        *next = picked + 1;
        picked
    }

    /// Whether every variant of every enum met was sampled.
    pub(super) fn complete(&self) -> bool {
        self.enums.values().all(|(_, seen)| seen.iter().all(|s| *s))
    }
}

/// Why a sample could not be made.
#[derive(Debug)]
struct SampleError(String);

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SampleError {}

impl de::Error for SampleError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// A `Deserializer` that makes up a sample value of whatever type asks:
/// small non-zero numbers, empty strings, one item per sequence and map
/// (near the top), and, across samples, each enum variant in turn.
struct Sampler<'c> {
    coverage: &'c mut Coverage,
    depth: u32,
}

impl<'c> Sampler<'c> {
    /// The sampler for a value nested one level deeper.
    fn deeper(&mut self) -> Result<Sampler<'_>, SampleError> {
        if self.depth >= MAX_SAMPLE_DEPTH {
            return Err(SampleError(format!(
                "a sample of it nests deeper than {MAX_SAMPLE_DEPTH} levels (does its first \
                 variant contain itself?)"
            )));
        }
        Ok(Sampler {
            coverage: &mut *self.coverage,
            depth: self.depth + 1,
        })
    }

    /// Items in a sampled sequence or map at this depth.
    fn items(&self) -> usize {
        usize::from(self.depth < SAMPLE_DEPTH)
    }
}

/// `deserialize_*` methods that visit a fixed primitive.
macro_rules! sample_primitives {
    ($($method:ident => $visit:ident($($value:expr)?);)*) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, SampleError> {
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Sampler<'_> {
    type Error = SampleError;

    sample_primitives! {
        deserialize_bool => visit_bool(false);
        deserialize_i8 => visit_i8(1);
        deserialize_i16 => visit_i16(1);
        deserialize_i32 => visit_i32(1);
        deserialize_i64 => visit_i64(1);
        deserialize_i128 => visit_i128(1);
        deserialize_u8 => visit_u8(1);
        deserialize_u16 => visit_u16(1);
        deserialize_u32 => visit_u32(1);
        deserialize_u64 => visit_u64(1);
        deserialize_u128 => visit_u128(1);
        deserialize_f32 => visit_f32(1.0);
        deserialize_f64 => visit_f64(1.0);
        deserialize_char => visit_char('a');
        deserialize_str => visit_str("");
        deserialize_string => visit_string(String::new());
        deserialize_bytes => visit_bytes(&[]);
        deserialize_byte_buf => visit_byte_buf(Vec::new());
        deserialize_unit => visit_unit();
        deserialize_ignored_any => visit_unit();
    }

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, SampleError> {
        Err(SampleError(
            "its `Deserialize` impl needs a self-describing format (untagged or internally \
             tagged enums, `flatten`...), which bincode is not"
                .into(),
        ))
    }

    fn deserialize_identifier<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, SampleError> {
        Err(SampleError(
            "it reads field names, which bincode does not write".into(),
        ))
    }

    fn deserialize_option<V: de::Visitor<'de>>(
        mut self,
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        if self.items() == 0 {
            return visitor.visit_none();
        }
        visitor.visit_some(self.deeper()?)
    }

    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        mut self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        visitor.visit_newtype_struct(self.deeper()?)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, SampleError> {
        let items = self.items();
        visitor.visit_seq(Items {
            sampler: self.deeper()?,
            left: items,
        })
    }

    fn deserialize_tuple<V: de::Visitor<'de>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        visitor.visit_seq(Items {
            sampler: self.deeper()?,
            left: len,
        })
    }

    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: de::Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, SampleError> {
        let items = self.items();
        visitor.visit_map(Items {
            sampler: self.deeper()?,
            left: items,
        })
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        let variant = self.coverage.pick(name, variants.len(), self.depth);
        visitor.visit_enum(Variant {
            sampler: self.deeper()?,
            index: u32::try_from(variant).unwrap_or(u32::MAX),
        })
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The items of a sampled sequence, tuple, struct or map.
struct Items<'c> {
    sampler: Sampler<'c>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = SampleError;

    fn next_element_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, SampleError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.sampler.deeper()?).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_> {
    type Error = SampleError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SampleError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.sampler.deeper()?).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, SampleError> {
        seed.deserialize(self.sampler.deeper()?)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The variant a sample takes, chosen by [`Coverage::pick`].
struct Variant<'c> {
    sampler: Sampler<'c>,
    index: u32,
}

impl<'de, 'c> de::EnumAccess<'de> for Variant<'c> {
    type Error = SampleError;
    type Variant = Sampler<'c>;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Sampler<'c>), SampleError> {
        let index: de::value::U32Deserializer<SampleError> = self.index.into_deserializer();
        Ok((seed.deserialize(index)?, self.sampler))
    }
}

impl<'de> de::VariantAccess<'de> for Sampler<'_> {
    type Error = SampleError;

    fn unit_variant(self) -> Result<(), SampleError> {
        Ok(())
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, SampleError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: de::Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SampleError> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}
