//! What the store holds and sends: [`Value`] (bytes with a type name),
//! [`Entry`] (a value with its version), [`IfChanged`] and [`WatchEvent`].

use ipc_core::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The type name of values given as untyped JSON (`datastore set --json`,
/// or another language's client). A typed read accepts such a value as any
/// type it decodes to.
pub const JSON_TYPE: &str = "json";

/// A stored value: opaque bytes and the name of the type they encode.
///
/// The store never looks inside. The typed helpers
/// ([`Value::encode`], [`Value::decode`], [`DataStoreClient`](crate::DataStoreClient))
/// write JSON with the Rust type's name ([`type_label`]); clients in other
/// languages may store anything with any type name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// What `data` is, e.g. `alloc::string::String` or [`JSON_TYPE`].
    pub type_name: String,
    /// The encoded value.
    pub data: Bytes,
}

impl Value {
    /// A value of raw bytes with the given type name.
    pub fn raw(type_name: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            type_name: type_name.into(),
            data: data.into(),
        }
    }

    /// `value` as JSON, with the type name [`type_label::<T>()`](type_label).
    ///
    /// # Errors
    ///
    /// [`StoreError::Codec`] if serde cannot encode it as JSON (a map
    /// with non-string keys, say).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, StoreError> {
        let type_name = type_label::<T>();
        match serde_json::to_vec(value) {
            Ok(data) => Ok(Self::raw(type_name, data)),
            Err(e) => Err(StoreError::Codec {
                action: "encode".into(),
                type_name,
                detail: e.to_string(),
            }),
        }
    }

    /// The value as a `T`.
    ///
    /// # Errors
    ///
    /// [`StoreError::TypeMismatch`] if it was stored as another type, or
    /// as untyped JSON ([`JSON_TYPE`]) that does not decode as a `T`;
    /// [`StoreError::Codec`] if it has `T`'s name but does not decode.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        let expected = type_label::<T>();
        let untyped = self.type_name == JSON_TYPE;
        if !untyped && self.type_name != expected {
            return Err(StoreError::TypeMismatch {
                expected,
                found: self.type_name.clone(),
            });
        }
        serde_json::from_slice::<T>(&self.data).map_err(|e| {
            if untyped {
                StoreError::TypeMismatch {
                    expected,
                    found: JSON_TYPE.into(),
                }
            } else {
                StoreError::Codec {
                    action: "decode".into(),
                    type_name: expected,
                    detail: e.to_string(),
                }
            }
        })
    }

    /// A value given on a command line: a string (stored as a `String`), or
    /// with `json` untyped JSON ([`JSON_TYPE`]), stored as written.
    ///
    /// # Errors
    ///
    /// With `json`, a message if `text` is not JSON.
    pub fn from_cli(text: &str, json: bool) -> Result<Self, String> {
        if json {
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| format!("not JSON ({e}): {text}"))?;
            Ok(Self::raw(JSON_TYPE, text.trim().as_bytes().to_vec()))
        } else {
            Self::encode(text).map_err(|e| e.to_string())
        }
    }

    /// The value as a command line shows it: a string as itself, JSON as
    /// its text, other bytes as a summary (`<12 bytes of TYPE>`).
    pub fn to_cli(&self) -> String {
        if self.type_name == type_label::<String>() {
            if let Ok(s) = serde_json::from_slice::<String>(&self.data) {
                return s;
            }
        }
        match std::str::from_utf8(&self.data) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                text.to_owned()
            }
            _ => format!("<{} bytes of {}>", self.data.len(), self.type_name),
        }
    }

    /// Bytes the value counts against
    /// [`Limits::max_value_size`](crate::Limits::max_value_size): data plus
    /// type name.
    pub fn size(&self) -> usize {
        self.data.len() + self.type_name.len()
    }
}

/// The type name the typed helpers store a `T` with:
/// [`std::any::type_name`], except that `str` and `&str` are stored as
/// `String` (they encode the same), and references as their referent.
///
/// `type_name` is the compiler's description of the type: stable in
/// practice, but not promised across compiler versions. A value stored as
/// one name and read as another fails with [`StoreError::TypeMismatch`].
pub fn type_label<T: ?Sized>() -> String {
    let name = std::any::type_name::<T>().trim_start_matches('&');
    if name == "str" {
        std::any::type_name::<String>().to_owned()
    } else {
        name.to_owned()
    }
}

/// A value as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value.
    pub value: Value,
    /// Its version: it increases on every change of any key, and never goes
    /// back, also across deletes and restarts.
    pub version: u64,
    /// Whether it is kept on disk (and so survives a restart).
    pub persistent: bool,
}

/// What `get_if_changed` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IfChanged {
    /// The key is still at the version given: nothing is sent.
    Unchanged,
    /// The key has another version now.
    Changed(Entry),
    /// There is no such key (any more).
    Absent,
}

/// One item of a `watch` stream.
///
/// Events come in the order of their versions. A subscriber that falls
/// behind by more than its buffer (see
/// [`Limits::watch_buffer`](crate::Limits::watch_buffer)) gets
/// [`WatchEvent::Lagged`] instead of the changes it missed; the stream goes
/// on after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// `author`/`name` was set to `value`.
    Set {
        /// The author.
        author: String,
        /// The name.
        name: String,
        /// The new value.
        value: Value,
        /// Its version.
        version: u64,
        /// Whether it is kept on disk.
        persistent: bool,
    },
    /// `author`/`name` was deleted (by `delete` or `clear_all`).
    Deleted {
        /// The author.
        author: String,
        /// The name.
        name: String,
        /// The version of the deletion.
        version: u64,
    },
    /// The subscriber fell behind: changes from version `from_version` on
    /// were dropped for it. Re-read the watched keys (`get_if_changed` with
    /// the versions you hold, or `list` and `get`); the events after this
    /// one are complete again.
    Lagged {
        /// The version of the first change not delivered.
        from_version: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_round_trip_and_reject_other_types() {
        let v = Value::encode(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(v.type_name, "alloc::vec::Vec<u32>");
        assert_eq!(v.decode::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
        assert_eq!(
            v.decode::<String>(),
            Err(StoreError::TypeMismatch {
                expected: "alloc::string::String".into(),
                found: "alloc::vec::Vec<u32>".into(),
            })
        );
        // Same JSON, other type name: still refused.
        assert!(matches!(
            v.decode::<Vec<u64>>(),
            Err(StoreError::TypeMismatch { .. })
        ));
        // A right name over wrong bytes is a decode error.
        let bad = Value::raw(type_label::<u32>(), b"\"x\"".to_vec());
        assert!(matches!(bad.decode::<u32>(), Err(StoreError::Codec { .. })));
    }

    #[test]
    fn strings_have_one_name_however_they_are_passed() {
        assert_eq!(type_label::<str>(), type_label::<String>());
        assert_eq!(type_label::<&str>(), type_label::<String>());
        let v = Value::encode("hi").unwrap();
        assert_eq!(v.decode::<String>().unwrap(), "hi");
    }

    #[test]
    fn untyped_json_decodes_as_any_type_it_fits() {
        let v = Value::from_cli(r#" {"a": [1, 2]} "#, true).unwrap();
        assert_eq!(v.type_name, JSON_TYPE);
        let m: std::collections::BTreeMap<String, Vec<u8>> = v.decode().unwrap();
        assert_eq!(m["a"], [1, 2]);
        assert!(matches!(
            v.decode::<u64>(),
            Err(StoreError::TypeMismatch { .. })
        ));
        assert!(Value::from_cli("{oops", true).is_err());
    }

    #[test]
    fn command_line_values_are_shown_as_given() {
        for (text, json) in [
            ("plain words", false),
            ("42", false),
            ("", false),
            ("[1,2, 3]", true),
            ("\"quoted\"", true),
        ] {
            assert_eq!(Value::from_cli(text, json).unwrap().to_cli(), text);
        }
        assert_eq!(
            Value::raw("blob", vec![0xff, 0]).to_cli(),
            "<2 bytes of blob>"
        );
    }
}
