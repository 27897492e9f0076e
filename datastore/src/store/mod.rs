//! [`Store`]: the server side. Values live in memory behind one lock;
//! persistent ones are also written to a redb database in the data
//! directory by one committer thread, which batches whatever is queued into
//! one durable commit (group commit). A change is applied in memory and
//! queued for the disk under the lock, so the disk sees changes in version
//! order; a persistent `set` returns when its commit is durable.
//!
//! - `state`: the memory (keys, limits, watches, versions), no I/O;
//! - `disk`: the database, its record format and the committer;
//! - `watch`: a watch's bounded queue and its stream.

mod disk;
mod state;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use ipc_core::Streaming;

use self::disk::{DiskStatus, Job, Write};
use self::state::{Ack, State, Versions};
use self::watch::WatchStream;
use crate::config::Limits;
use crate::error::StoreError;
use crate::service::DataStore;
use crate::value::{Entry, IfChanged, Value, WatchEvent};

pub use self::disk::FILE_NAME;

/// Versions reserved per durable step of the ceiling: a restart skips at
/// most this many, and the ceiling is raised (one small commit) once per
/// half of it.
const VERSION_BLOCK: u64 = 1 << 32;

/// The datastore: implements [`DataStore`], so serve it with
/// [`DataStoreServer`](crate::DataStoreServer).
///
/// Cheap to clone (clones share the store). [`Store::close`] flushes and
/// closes the data directory; dropping every clone closes it too, in the
/// background.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use ipc_datastore::{DataStoreServer, Limits, Store};
///
/// let store = Store::open("/var/lib/my-datastore", Limits::default())?;
/// let server = ipc_core::Server::builder()
///     .addr("localhost:9100")
///     .expose(DataStoreServer::new(store.clone()))
///     .start()
///     .await?;
/// // ... until it is time to stop:
/// server.stop().await;
/// store.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    state: Mutex<State>,
    status: Arc<DiskStatus>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store {
    /// Opens the store kept in `dir` (created if missing): loads the
    /// persistent values, with their versions, and starts the committer.
    /// Blocks while it reads the directory.
    ///
    /// # Errors
    ///
    /// [`StoreError::Storage`] if the directory cannot be created or read,
    /// a record on disk is damaged, or another store has it open.
    pub fn open(dir: impl AsRef<Path>, limits: Limits) -> Result<Self, StoreError> {
        Self::open_with_block(dir.as_ref(), limits, VERSION_BLOCK)
    }

    fn open_with_block(dir: &Path, limits: Limits, block: u64) -> Result<Self, StoreError> {
        let loaded = disk::open(dir, block)?;
        let status = Arc::new(DiskStatus::default());
        let (committer, thread) = disk::spawn_committer(loaded.db, status.clone(), loaded.ceiling)?;
        let versions = Versions::new(loaded.next_version, loaded.ceiling, block);
        let mut state = State::new(limits.clone(), versions, committer, status.clone());
        state.load(loaded.values, loaded.saved);
        tracing::info!(path = %loaded.path.display(), keys = state.keys(), "datastore opened");
        Ok(Self {
            inner: Arc::new(Inner {
                limits,
                state: Mutex::new(state),
                status,
                committer: Mutex::new(Some(thread)),
                path: loaded.path,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Finishes the writes already queued, then closes the data directory
    /// (another store may open it once this returns). Afterwards values in
    /// memory can still be read and set, but every change that needs the
    /// disk fails with [`StoreError::Storage`].
    pub async fn close(&self) {
        // Dropping the sender ends the committer after the queued jobs.
        self.inner.lock().committer = None;
        let thread = self
            .inner
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if tokio::task::spawn_blocking(move || thread.join())
                .await
                .is_err()
            {
                tracing::error!("the datastore committer thread panicked");
            }
        }
    }

    /// Runs `op` under the lock once `versions` (computed under the lock)
    /// new versions can be handed out, queues the disk writes it returns,
    /// and waits until they are durable.
    async fn change<T>(
        &self,
        versions: impl Fn(&State) -> u64,
        op: impl FnOnce(&mut State) -> Result<(T, Ack), StoreError>,
    ) -> Result<T, StoreError> {
        let mut op = Some(op);
        loop {
            // Made before the check, so a raise in between is not missed.
            let raised = self.inner.status.changed.notified();
            match self.attempt(&versions, &mut op)? {
                Some((value, ack)) => {
                    if let Some(ack) = ack {
                        match ack.await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return Err(e),
                            Err(_) => {
                                return Err(StoreError::storage("the committer thread stopped"));
                            }
                        }
                    }
                    return Ok(value);
                }
                None => {
                    if let Some(e) = self.inner.status.failure() {
                        return Err(e);
                    }
                    raised.await;
                }
            }
        }
    }

    /// One try of [`Store::change`]: `None` if the versions must wait for
    /// the ceiling to rise.
    fn attempt<T, F>(
        &self,
        versions: &impl Fn(&State) -> u64,
        op: &mut Option<F>,
    ) -> Result<Option<(T, Ack)>, StoreError>
    where
        F: FnOnce(&mut State) -> Result<(T, Ack), StoreError>,
    {
        let mut state = self.inner.lock();
        let n = versions(&state);
        let ceiling = self.inner.status.ceiling();
        let (fits, raise) = state.versions.check(n, ceiling);
        if let Some(c) = raise {
            // Not fatal by itself: if it cannot be queued, the versions run
            // out later and that change reports the error (below).
            let _ = state.send(Job::unwaited(vec![Write::Ceiling(c)]));
        }
        if !fits {
            // Waiting makes sense only if a committer can raise the ceiling.
            state.disk_ready()?;
            return Ok(None);
        }
        match op.take() {
            Some(op) => op(&mut state).map(Some),
            None => Err(StoreError::storage("internal: a change was applied twice")),
        }
    }

    /// Sends `writes` and waits for their outcome.
    async fn disk(&self, writes: Vec<Write>) -> Result<disk::Outcome, StoreError> {
        let ack = self.inner.lock().submit(writes)?;
        match ack {
            Some(ack) => ack
                .await
                .unwrap_or_else(|_| Err(StoreError::storage("the committer thread stopped"))),
            None => Ok(disk::Outcome::default()),
        }
    }

    fn check_key(&self, author: &str, name: Option<&str>) -> Result<(), StoreError> {
        let limit = self.inner.limits.max_key_len;
        for (what, s) in [("author", Some(author)), ("name", name)] {
            if let Some(s) = s {
                if s.len() > limit {
                    return Err(StoreError::KeyTooLong {
                        what: what.into(),
                        len: s.len() as u64,
                        limit: limit as u64,
                    });
                }
            }
        }
        Ok(())
    }

    fn check_value(&self, value: &Value) -> Result<(), StoreError> {
        let limits = &self.inner.limits;
        if value.type_name.len() > limits.max_key_len {
            return Err(StoreError::KeyTooLong {
                what: "type name".into(),
                len: value.type_name.len() as u64,
                limit: limits.max_key_len as u64,
            });
        }
        if value.size() > limits.max_value_size {
            return Err(StoreError::ValueTooLarge {
                size: value.size() as u64,
                limit: limits.max_value_size as u64,
            });
        }
        Ok(())
    }

    async fn set_checked(
        &self,
        author: String,
        name: String,
        value: Value,
        persist: bool,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.check_key(&author, Some(&name))?;
        self.check_value(&value)?;
        self.change(|_| 1, |s| s.set(author, name, value, persist, expected))
            .await
    }

    fn unsubscriber(
        &self,
        author: String,
        sub: Arc<watch::Subscriber>,
    ) -> Box<dyn FnOnce() + Send> {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        Box::new(move || {
            if let Some(inner) = inner.upgrade() {
                inner.lock().unsubscribe(&author, &sub);
            }
        })
    }
}

impl DataStore for Store {
    async fn set(
        &self,
        author: String,
        name: String,
        value: Value,
        persist: bool,
    ) -> Result<u64, StoreError> {
        self.set_checked(author, name, value, persist, None).await
    }

    async fn set_nowait(&self, author: String, name: String, value: Value, persist: bool) {
        let key = format!("{author}/{name}");
        if let Err(e) = self.set_checked(author, name, value, persist, None).await {
            tracing::warn!(key, error = %e, "set_nowait failed");
        }
    }

    async fn set_if_version(
        &self,
        author: String,
        name: String,
        value: Value,
        expected_version: u64,
        persist: bool,
    ) -> Result<u64, StoreError> {
        self.set_checked(author, name, value, persist, Some(expected_version))
            .await
    }

    async fn get(&self, author: String, name: String) -> Option<Entry> {
        self.inner.lock().get(&author, &name)
    }

    async fn get_if_changed(&self, author: String, name: String, since_version: u64) -> IfChanged {
        let state = self.inner.lock();
        match state.version_of(&author, &name) {
            None => IfChanged::Absent,
            Some(v) if v == since_version => IfChanged::Unchanged,
            Some(_) => state
                .get(&author, &name)
                .map_or(IfChanged::Absent, IfChanged::Changed),
        }
    }

    async fn delete(&self, author: String, name: String) -> Result<Option<Entry>, StoreError> {
        self.change(|_| 1, |s| s.delete(&author, &name)).await
    }

    async fn list(&self, author: Option<String>) -> BTreeMap<String, Vec<String>> {
        self.inner.lock().list(author.as_deref())
    }

    async fn clear_all(&self) -> Result<u64, StoreError> {
        self.change(|s| s.count(None) as u64, State::clear_all)
            .await
    }

    async fn watch(
        &self,
        author: String,
        name: Option<String>,
    ) -> Result<Streaming<WatchEvent>, StoreError> {
        self.check_key(&author, name.as_deref())?;
        let sub = self.inner.lock().subscribe(&author, name)?;
        let on_drop = self.unsubscriber(author, sub.clone());
        Ok(Streaming::new(WatchStream::new(sub, on_drop)))
    }

    async fn save(&self, author: Option<String>) -> Result<u64, StoreError> {
        self.change(|_| 0, |s| s.save(author.as_deref())).await
    }

    async fn restore(&self, author: Option<String>) -> Result<u64, StoreError> {
        let rows = self
            .disk(vec![Write::ReadSaved {
                author: author.clone(),
            }])
            .await?
            .rows;
        let n = rows.len() as u64;
        self.change(|_| n, |s| s.restore(rows)).await
    }

    async fn delete_saved(&self, author: Option<String>) -> Result<u64, StoreError> {
        let ack = self.inner.lock().delete_saved(author.as_deref())?;
        match ack {
            Some(ack) => match ack.await {
                Ok(outcome) => outcome.map(|o| o.deleted),
                Err(_) => Err(StoreError::storage("the committer thread stopped")),
            },
            None => Ok(0),
        }
    }

    async fn add_persistence(&self, author: String, name: String) -> Result<bool, StoreError> {
        self.change(|_| 0, |s| s.set_persistence(&author, &name, true))
            .await
    }

    async fn remove_persistence(&self, author: String, name: String) -> Result<bool, StoreError> {
        self.change(|_| 0, |s| s.set_persistence(&author, &name, false))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Value {
        Value::encode(s).unwrap()
    }

    #[tokio::test]
    async fn versions_wait_for_the_ceiling_and_never_go_back_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = 0;
        for round in 0..3 {
            // A block of 4: the ceiling is raised every other change, and
            // changes wait for it when they outrun the committer.
            let store = Store::open_with_block(dir.path(), Limits::default(), 4).unwrap();
            for i in 0..20 {
                let persist = i % 3 == 0;
                let v = store
                    .set("a".into(), format!("k{i}"), value("x"), persist)
                    .await
                    .unwrap();
                assert!(v > last, "round {round}: version {v} after {last}");
                last = v;
            }
            store.close().await;
        }
    }

    #[tokio::test]
    async fn a_closed_store_refuses_disk_changes_and_does_not_wait_for_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_block(dir.path(), Limits::default(), 4).unwrap();
        store.close().await;
        let closed = StoreError::storage("the store is closed");
        assert_eq!(
            store.set("a".into(), "p".into(), value("x"), true).await,
            Err(closed.clone())
        );
        // In memory it goes on until the versions reserved on disk run out;
        // then it fails instead of waiting for a raise that cannot come.
        let mut results = Vec::new();
        for i in 0..10 {
            results.push(
                store
                    .set("a".into(), format!("m{i}"), value("x"), false)
                    .await,
            );
        }
        assert!(results[0].is_ok());
        assert_eq!(results.last(), Some(&Err(closed)));
    }
}
