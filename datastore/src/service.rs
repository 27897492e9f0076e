//! The remote interface: [`DataStore`], and what `#[expose]` generates from
//! it, [`DataStoreServer`] and [`DataStoreProxy`].

use std::collections::BTreeMap;

use ipc_core::{Streaming, expose};

use crate::error::StoreError;
use crate::value::{Entry, IfChanged, Value, WatchEvent};

/// A shared store of values keyed by (author, name).
///
/// [`Store`](crate::Store) implements it; serve it with
/// `DataStoreServer::new(store)` and call it through a [`DataStoreProxy`]
/// (or the typed [`DataStoreClient`](crate::DataStoreClient)). Every change
/// gets a new version, greater than any before it.
#[expose]
pub trait DataStore {
    /// Sets `author`/`name` to `value` and returns its new version.
    /// With `persist`, returns only once the value is on disk (and it
    /// survives restarts); without, the value lives in memory only, and a
    /// copy left on disk by an earlier persistent set is removed (durably)
    /// before this returns.
    async fn set(
        &self,
        author: String,
        name: String,
        value: Value,
        persist: bool,
    ) -> Result<u64, StoreError>;

    /// As [`set`](DataStore::set), without waiting for an answer: a failure
    /// is logged by the server.
    #[oneway]
    async fn set_nowait(&self, author: String, name: String, value: Value, persist: bool);

    /// Sets `author`/`name` only if its version is `expected_version` (0:
    /// only if it does not exist), for read-modify-write without races;
    /// otherwise fails with [`StoreError::VersionConflict`] and changes
    /// nothing.
    async fn set_if_version(
        &self,
        author: String,
        name: String,
        value: Value,
        expected_version: u64,
        persist: bool,
    ) -> Result<u64, StoreError>;

    /// The value of `author`/`name`, if it is set.
    #[idempotent]
    async fn get(&self, author: String, name: String) -> Option<Entry>;

    /// The value of `author`/`name` if its version is not `since_version`
    /// (a version the caller already has).
    #[idempotent]
    async fn get_if_changed(&self, author: String, name: String, since_version: u64) -> IfChanged;

    /// Deletes `author`/`name` and returns what it held; `None` if it was
    /// not set. A persistent value is removed from disk before this
    /// returns.
    async fn delete(&self, author: String, name: String) -> Result<Option<Entry>, StoreError>;

    /// The names set by each author (or by `author` alone), sorted.
    #[idempotent]
    async fn list(&self, author: Option<String>) -> BTreeMap<String, Vec<String>>;

    /// Deletes every key of every author, persistent ones from disk too,
    /// and returns how many there were. Saved copies (`save`) stay.
    async fn clear_all(&self) -> Result<u64, StoreError>;

    /// Every change to `author`/`name` (or, without a name, to every key
    /// of `author`) from now on, as it happens: sets, deletions and, for a
    /// subscriber that falls behind, [`WatchEvent::Lagged`]. Changes made
    /// after this call returns are all delivered (or covered by a
    /// `Lagged`), in version order.
    async fn watch(
        &self,
        author: String,
        name: Option<String>,
    ) -> Result<Streaming<WatchEvent>, StoreError>;

    /// Saves a copy of every current value of `author` (of every author
    /// with `None`) on disk, persistent or not, replacing the copy saved
    /// before; returns how many values were saved. `restore` brings it back.
    async fn save(&self, author: Option<String>) -> Result<u64, StoreError>;

    /// Sets every value saved by `save` for `author` (or for every author)
    /// again, each with a new version and as persistent as it was when
    /// saved; keys that were not saved are left alone. Returns how many
    /// values were restored.
    async fn restore(&self, author: Option<String>) -> Result<u64, StoreError>;

    /// Deletes the copies saved by `save` for `author` (or all of them);
    /// returns how many values they held.
    async fn delete_saved(&self, author: Option<String>) -> Result<u64, StoreError>;

    /// Makes `author`/`name` persistent: writes it to disk and returns once
    /// it is there. `false` if there is no such key. The version does not
    /// change.
    async fn add_persistence(&self, author: String, name: String) -> Result<bool, StoreError>;

    /// Makes `author`/`name` live in memory only: removes it from disk and
    /// returns once it is gone there. `false` if there is no such key.
    async fn remove_persistence(&self, author: String, name: String) -> Result<bool, StoreError>;
}
