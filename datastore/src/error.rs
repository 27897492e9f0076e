//! [`StoreError`]: every way a datastore operation can fail, as it crosses
//! the wire.

use serde::{Deserialize, Serialize};

/// Why a datastore operation failed.
///
/// It is the error type `E` of the [`DataStore`](crate::DataStore) methods
/// that return `Result`, so a client sees it as
/// [`CallError::App`](ipc_core::CallError::App), apart from transport
/// failures ([`CallError::Rpc`](ipc_core::CallError::Rpc)). It crosses the
/// wire as a variant index and its fields, never as text to parse; match on
/// variants, not messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The value (its data plus its type name) is larger than
    /// [`Limits::max_value_size`](crate::Limits::max_value_size).
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// Bytes of the value: data plus type name.
        size: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// An author, name or type name is longer than
    /// [`Limits::max_key_len`](crate::Limits::max_key_len).
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    KeyTooLong {
        /// Which string: `"author"`, `"name"` or `"type name"`.
        what: String,
        /// Its length, in bytes.
        len: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The author already has
    /// [`Limits::max_keys_per_author`](crate::Limits::max_keys_per_author)
    /// keys, and the operation would add one more.
    #[error("author `{author}` already has {limit} keys, the most allowed")]
    TooManyKeys {
        /// The author.
        author: String,
        /// The limit, in keys.
        limit: u64,
    },
    /// [`Limits::max_authors`](crate::Limits::max_authors) authors already
    /// have keys, and the operation would add one more.
    #[error("{limit} authors already have keys, the most allowed")]
    TooManyAuthors {
        /// The limit, in authors.
        limit: u64,
    },
    /// The operation would make the store hold more than
    /// [`Limits::max_total_bytes`](crate::Limits::max_total_bytes) (for
    /// `save`: the saved copies).
    #[error("the store is full: {needed} bytes needed, the limit is {limit}")]
    StoreFull {
        /// What the store would hold after the operation, in bytes.
        needed: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// [`Limits::max_watchers`](crate::Limits::max_watchers) watches are
    /// already open.
    #[error("{limit} watches are open, the most allowed")]
    TooManyWatchers {
        /// The limit, in open watches.
        limit: u64,
    },
    /// The version of the key is not the one expected (`set_if_version`).
    /// Version 0 stands for "no such key".
    #[error("version conflict: expected version {expected}, the key is at {actual}")]
    VersionConflict {
        /// The version the caller expected.
        expected: u64,
        /// The version the key has (0: it does not exist).
        actual: u64,
    },
    /// Reading or writing the data directory failed, or the store was
    /// closed. After a failed commit the store refuses every change that
    /// needs the disk until it is restarted (it goes on serving from
    /// memory).
    #[error("storage error: {detail}")]
    Storage {
        /// What failed.
        detail: String,
    },
    /// A typed helper asked for a value as one type, and it was stored as
    /// another (or, stored as untyped JSON, it does not decode as that type).
    #[error("type mismatch: the value is a `{found}`, not a `{expected}`")]
    TypeMismatch {
        /// The type asked for.
        expected: String,
        /// The type name the value was stored with.
        found: String,
    },
    /// A typed helper could not encode a value, or could not decode one
    /// stored with the expected type name.
    #[error("cannot {action} a `{type_name}`: {detail}")]
    Codec {
        /// `"encode"` or `"decode"`.
        action: String,
        /// The type.
        type_name: String,
        /// What serde reported.
        detail: String,
    },
}

impl StoreError {
    /// A [`StoreError::Storage`] from anything that went wrong on disk.
    pub(crate) fn storage(detail: impl std::fmt::Display) -> Self {
        Self::Storage {
            detail: detail.to_string(),
        }
    }
}
