//! The store's memory: every key, the open watches, the accounting behind
//! the limits, and the versions. Pure: each change returns the disk writes
//! it needs, which the caller queues under the same lock, so the disk sees
//! changes in version order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::disk::{DiskStatus, Job, Outcome, Record, Row, Write};
use super::watch::Subscriber;
use crate::config::{EVENT_OVERHEAD, KEY_OVERHEAD, Limits};
use crate::error::StoreError;
use crate::value::{Entry, Value, WatchEvent};

/// Bytes a key counts against [`Limits::max_total_bytes`].
pub(crate) fn charge(author: &str, name: &str, value: &Value) -> usize {
    author.len() + name.len() + value.size() + KEY_OVERHEAD
}

#[derive(Debug)]
struct Slot {
    value: Value,
    version: u64,
    persistent: bool,
}

impl Slot {
    fn entry(&self) -> Entry {
        Entry {
            value: self.value.clone(),
            version: self.version,
            persistent: self.persistent,
        }
    }
}

/// An author's keys and the watches on them. Kept while it has either.
#[derive(Debug, Default)]
struct Author {
    keys: HashMap<String, Slot>,
    watchers: Vec<Arc<Subscriber>>,
}

impl Author {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.watchers.is_empty()
    }

    /// Queues `event` for every watch that wants `name`.
    fn publish(&self, name: &str, version: u64, event: impl FnOnce() -> (WatchEvent, usize)) {
        let mut watchers = self.watchers.iter().filter(|w| w.wants(name)).peekable();
        if watchers.peek().is_none() {
            return;
        }
        let (event, cost) = event();
        for w in watchers {
            w.push(event.clone(), version, cost);
        }
    }
}

/// Hands out versions below the durable ceiling, and asks for a higher one
/// before they run out.
#[derive(Debug)]
pub(crate) struct Versions {
    next: u64,
    /// The highest ceiling asked for so far.
    requested: u64,
    block: u64,
}

impl Versions {
    pub(crate) fn new(next: u64, ceiling: u64, block: u64) -> Self {
        Self {
            next,
            requested: ceiling,
            block: block.max(2),
        }
    }

    /// Whether `n` more versions fit below `ceiling`, and a higher ceiling
    /// to ask for if the reserve is half used.
    pub(crate) fn check(&mut self, n: u64, ceiling: u64) -> (bool, Option<u64>) {
        let wanted = self.next.saturating_add(n);
        let raise = if wanted.saturating_add(self.block / 2) > self.requested {
            self.requested = wanted.saturating_add(self.block);
            Some(self.requested)
        } else {
            None
        };
        (wanted <= ceiling, raise)
    }

    /// The next version; the caller has made sure it fits with
    /// [`Versions::check`].
    fn take(&mut self) -> u64 {
        let v = self.next;
        self.next += 1;
        v
    }
}

/// Everything in memory, behind the store's one lock.
#[derive(Debug)]
pub(crate) struct State {
    limits: Limits,
    authors: HashMap<String, Author>,
    /// Authors with at least one key.
    with_keys: usize,
    keys: usize,
    /// Sum of [`charge`] over every key.
    bytes: usize,
    /// Bytes of saved copies, by author, and their sum.
    saved: HashMap<String, usize>,
    saved_total: usize,
    watchers: usize,
    pub(crate) versions: Versions,
    /// Where disk writes go; `None` once the store is closed.
    pub(crate) committer: Option<mpsc::UnboundedSender<Job>>,
    status: Arc<DiskStatus>,
}

/// A pending disk acknowledgement, if the change needed one.
pub(crate) type Ack = Option<oneshot::Receiver<Result<Outcome, StoreError>>>;

impl State {
    pub(crate) fn new(
        limits: Limits,
        versions: Versions,
        committer: mpsc::UnboundedSender<Job>,
        status: Arc<DiskStatus>,
    ) -> Self {
        Self {
            limits,
            authors: HashMap::new(),
            with_keys: 0,
            keys: 0,
            bytes: 0,
            saved: HashMap::new(),
            saved_total: 0,
            watchers: 0,
            versions,
            committer: Some(committer),
            status,
        }
    }

    /// Puts what was on disk back, without limits (they may have been
    /// lowered since) and without new versions.
    pub(crate) fn load(&mut self, values: Vec<Row>, saved: Vec<(String, String, Value)>) {
        for (author, name, record) in values {
            let cost = charge(&author, &name, &record.value);
            let a = self.authors.entry(author).or_default();
            if a.keys.is_empty() {
                self.with_keys += 1;
            }
            a.keys.insert(
                name,
                Slot {
                    value: record.value,
                    version: record.version,
                    persistent: true,
                },
            );
            self.keys += 1;
            self.bytes += cost;
        }
        for (author, name, value) in saved {
            let cost = charge(&author, &name, &value);
            *self.saved.entry(author).or_default() += cost;
            self.saved_total += cost;
        }
    }

    pub(crate) fn keys(&self) -> usize {
        self.keys
    }

    /// An error if changes that need the disk cannot be made now.
    pub(crate) fn disk_ready(&self) -> Result<(), StoreError> {
        if let Some(e) = self.status.failure() {
            return Err(e);
        }
        match &self.committer {
            None => Err(StoreError::storage("the store is closed")),
            Some(c) if c.is_closed() => {
                Err(StoreError::storage("the committer thread has stopped"))
            }
            Some(_) => Ok(()),
        }
    }

    /// Queues `writes`; the receiver answers once they are durable.
    pub(crate) fn submit(&self, writes: Vec<Write>) -> Result<Ack, StoreError> {
        if writes.is_empty() {
            return Ok(None);
        }
        let (job, ack) = Job::waited(writes);
        self.send(job)?;
        Ok(Some(ack))
    }

    /// Queues a job nobody waits for.
    pub(crate) fn send(&self, job: Job) -> Result<(), StoreError> {
        let committer = self
            .committer
            .as_ref()
            .ok_or_else(|| StoreError::storage("the store is closed"))?;
        committer
            .send(job)
            .map_err(|_| StoreError::storage("the committer thread has stopped"))
    }

    // ---- reads ----------------------------------------------------------

    pub(crate) fn get(&self, author: &str, name: &str) -> Option<Entry> {
        self.authors.get(author)?.keys.get(name).map(Slot::entry)
    }

    pub(crate) fn version_of(&self, author: &str, name: &str) -> Option<u64> {
        Some(self.authors.get(author)?.keys.get(name)?.version)
    }

    pub(crate) fn list(&self, author: Option<&str>) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        let mut add = |author: &str, a: &Author| {
            if !a.keys.is_empty() {
                let mut names: Vec<String> = a.keys.keys().cloned().collect();
                names.sort_unstable();
                out.insert(author.to_owned(), names);
            }
        };
        match author {
            Some(author) => {
                if let Some(a) = self.authors.get(author) {
                    add(author, a);
                }
            }
            None => {
                for (author, a) in &self.authors {
                    add(author, a);
                }
            }
        }
        out
    }

    /// Keys `author` has (every author: `None`).
    pub(crate) fn count(&self, author: Option<&str>) -> usize {
        match author {
            Some(a) => self.authors.get(a).map_or(0, |a| a.keys.len()),
            None => self.keys,
        }
    }

    // ---- changes --------------------------------------------------------

    /// `set` and `set_if_version`: checks, then [`State::put`]. Needs one
    /// version.
    pub(crate) fn set(
        &mut self,
        author: String,
        name: String,
        value: Value,
        persist: bool,
        expected: Option<u64>,
    ) -> Result<(u64, Ack), StoreError> {
        let new_cost = charge(&author, &name, &value);
        let (actual, old_cost, was_persistent, author_keys) = match self.authors.get(&author) {
            None => (0, 0, false, 0),
            Some(a) => match a.keys.get(&name) {
                Some(s) => (
                    s.version,
                    charge(&author, &name, &s.value),
                    s.persistent,
                    a.keys.len(),
                ),
                None => (0, 0, false, a.keys.len()),
            },
        };
        if let Some(expected) = expected {
            if expected != actual {
                return Err(StoreError::VersionConflict { expected, actual });
            }
        }
        if actual == 0 {
            self.check_new_key(&author, author_keys, 1)?;
            self.check_authors(usize::from(author_keys == 0))?;
        }
        self.check_bytes(self.bytes - old_cost + new_cost)?;
        if persist || was_persistent {
            self.disk_ready()?;
        }
        let (version, write) = self.put(author, name, value, persist);
        Ok((version, self.submit(write.into_iter().collect())?))
    }

    fn check_new_key(
        &self,
        author: &str,
        author_keys: usize,
        adding: usize,
    ) -> Result<(), StoreError> {
        if author_keys + adding > self.limits.max_keys_per_author {
            return Err(StoreError::TooManyKeys {
                author: author.to_owned(),
                limit: self.limits.max_keys_per_author as u64,
            });
        }
        Ok(())
    }

    fn check_bytes(&self, needed: usize) -> Result<(), StoreError> {
        if needed > self.limits.max_total_bytes {
            return Err(StoreError::StoreFull {
                needed: needed as u64,
                limit: self.limits.max_total_bytes as u64,
            });
        }
        Ok(())
    }

    fn check_authors(&self, new_authors: usize) -> Result<(), StoreError> {
        if new_authors > 0 && self.with_keys + new_authors > self.limits.max_authors {
            return Err(StoreError::TooManyAuthors {
                limit: self.limits.max_authors as u64,
            });
        }
        Ok(())
    }

    /// Sets a key whose limits were checked, tells its watchers, and
    /// returns its version and the disk write it needs.
    fn put(
        &mut self,
        author: String,
        name: String,
        value: Value,
        persist: bool,
    ) -> (u64, Option<Write>) {
        let version = self.versions.take();
        let new_cost = charge(&author, &name, &value);
        let a = self.authors.entry(author.clone()).or_default();
        a.publish(&name, version, || {
            let cost = author.len() + name.len() + value.size() + EVENT_OVERHEAD;
            let event = WatchEvent::Set {
                author: author.clone(),
                name: name.clone(),
                value: value.clone(),
                version,
                persistent: persist,
            };
            (event, cost)
        });
        // The value is copied (a reference count and its type name) only
        // when the disk needs it too.
        let (value, on_disk) = if persist {
            (value.clone(), Some(value))
        } else {
            (value, None)
        };
        let slot = Slot {
            value,
            version,
            persistent: persist,
        };
        let (was_persistent, name) = match a.keys.get_mut(&name) {
            Some(old) => {
                self.bytes -= charge(&author, &name, &old.value);
                let was = old.persistent;
                *old = slot;
                (was, Some(name))
            }
            None => {
                if a.keys.is_empty() {
                    self.with_keys += 1;
                }
                self.keys += 1;
                // The name is needed again only for a disk write.
                if persist {
                    a.keys.insert(name.clone(), slot);
                    (false, Some(name))
                } else {
                    a.keys.insert(name, slot);
                    (false, None)
                }
            }
        };
        self.bytes += new_cost;
        let write = match (on_disk, name) {
            (Some(value), Some(name)) => Some(Write::Put {
                author,
                name,
                record: Record {
                    version,
                    persistent: true,
                    value,
                },
            }),
            (None, Some(name)) if was_persistent => Some(Write::Remove { author, name }),
            _ => None,
        };
        (version, write)
    }

    /// Deletes a key. Needs one version.
    pub(crate) fn delete(
        &mut self,
        author: &str,
        name: &str,
    ) -> Result<(Option<Entry>, Ack), StoreError> {
        let Some(persistent) = self
            .authors
            .get(author)
            .and_then(|a| a.keys.get(name))
            .map(|s| s.persistent)
        else {
            return Ok((None, None));
        };
        if persistent {
            self.disk_ready()?;
        }
        let (entry, write) = self.remove(author, name);
        Ok((entry, self.submit(write.into_iter().collect())?))
    }

    /// Removes a key, tells its watchers, and returns what it held and the
    /// disk write it needs.
    fn remove(&mut self, author: &str, name: &str) -> (Option<Entry>, Option<Write>) {
        let Some(a) = self.authors.get_mut(author) else {
            return (None, None);
        };
        let Some(slot) = a.keys.remove(name) else {
            return (None, None);
        };
        let version = self.versions.take();
        self.keys -= 1;
        self.bytes -= charge(author, name, &slot.value);
        if a.keys.is_empty() {
            self.with_keys -= 1;
        }
        a.publish(name, version, || {
            let event = WatchEvent::Deleted {
                author: author.to_owned(),
                name: name.to_owned(),
                version,
            };
            (event, author.len() + name.len() + EVENT_OVERHEAD)
        });
        if a.is_empty() {
            self.authors.remove(author);
        }
        let write = slot.persistent.then(|| Write::Remove {
            author: author.to_owned(),
            name: name.to_owned(),
        });
        (Some(slot.entry()), write)
    }

    /// Deletes every key. Needs [`State::keys`] versions.
    pub(crate) fn clear_all(&mut self) -> Result<(u64, Ack), StoreError> {
        let any_persistent = self
            .authors
            .values()
            .any(|a| a.keys.values().any(|s| s.persistent));
        if any_persistent {
            self.disk_ready()?;
        }
        let keys: Vec<(String, String)> = self
            .authors
            .iter()
            .flat_map(|(author, a)| a.keys.keys().map(|name| (author.clone(), name.clone())))
            .collect();
        for (author, name) in &keys {
            self.remove(author, name);
        }
        let writes = if any_persistent {
            vec![Write::RemoveAll]
        } else {
            Vec::new()
        };
        Ok((keys.len() as u64, self.submit(writes)?))
    }

    /// Makes a key persistent or not. No version.
    pub(crate) fn set_persistence(
        &mut self,
        author: &str,
        name: &str,
        persist: bool,
    ) -> Result<(bool, Ack), StoreError> {
        let Some(slot) = self.authors.get(author).and_then(|a| a.keys.get(name)) else {
            return Ok((false, None));
        };
        if slot.persistent == persist {
            return Ok((true, None));
        }
        self.disk_ready()?;
        let write = if persist {
            Write::Put {
                author: author.to_owned(),
                name: name.to_owned(),
                record: Record {
                    version: slot.version,
                    persistent: true,
                    value: slot.value.clone(),
                },
            }
        } else {
            Write::Remove {
                author: author.to_owned(),
                name: name.to_owned(),
            }
        };
        if let Some(slot) = self
            .authors
            .get_mut(author)
            .and_then(|a| a.keys.get_mut(name))
        {
            slot.persistent = persist;
        }
        Ok((true, self.submit(vec![write])?))
    }

    /// Saves copies of `author`'s values (of everyone's). No version.
    pub(crate) fn save(&mut self, author: Option<&str>) -> Result<(u64, Ack), StoreError> {
        let mut rows = Vec::new();
        let mut by_author: HashMap<String, usize> = HashMap::new();
        for (a, state) in &self.authors {
            if author.is_some_and(|wanted| wanted != a) {
                continue;
            }
            for (name, slot) in &state.keys {
                *by_author.entry(a.clone()).or_default() += charge(a, name, &slot.value);
                rows.push((
                    a.clone(),
                    name.clone(),
                    Record {
                        version: slot.version,
                        persistent: slot.persistent,
                        value: slot.value.clone(),
                    },
                ));
            }
        }
        let replaced = match author {
            Some(a) => self.saved.get(a).copied().unwrap_or(0),
            None => self.saved_total,
        };
        let adding: usize = by_author.values().sum();
        let needed = self.saved_total - replaced + adding;
        if needed > self.limits.max_total_bytes {
            return Err(StoreError::StoreFull {
                needed: needed as u64,
                limit: self.limits.max_total_bytes as u64,
            });
        }
        self.disk_ready()?;
        match author {
            Some(a) => {
                self.saved.remove(a);
            }
            None => self.saved.clear(),
        }
        self.saved.extend(by_author);
        self.saved_total = needed;
        let count = rows.len() as u64;
        let write = Write::Save {
            author: author.map(str::to_owned),
            rows,
        };
        Ok((count, self.submit(vec![write])?))
    }

    /// Forgets the saved copies of `author` (of everyone). No version.
    pub(crate) fn delete_saved(&mut self, author: Option<&str>) -> Result<Ack, StoreError> {
        self.disk_ready()?;
        match author {
            Some(a) => self.saved_total -= self.saved.remove(a).unwrap_or(0),
            None => {
                self.saved.clear();
                self.saved_total = 0;
            }
        }
        self.submit(vec![Write::DeleteSaved {
            author: author.map(str::to_owned),
        }])
    }

    /// Sets every row again (`restore`), all or nothing as far as the
    /// limits go. Needs `rows.len()` versions.
    pub(crate) fn restore(&mut self, rows: Vec<Row>) -> Result<(u64, Ack), StoreError> {
        let mut new_keys: HashMap<&str, usize> = HashMap::new();
        let mut bytes = self.bytes;
        let mut disk = false;
        for (author, name, record) in &rows {
            let existing = self
                .authors
                .get(author.as_str())
                .and_then(|a| a.keys.get(name));
            match existing {
                Some(slot) => {
                    bytes -= charge(author, name, &slot.value);
                    disk |= slot.persistent;
                }
                None => *new_keys.entry(author).or_default() += 1,
            }
            bytes += charge(author, name, &record.value);
            disk |= record.persistent;
        }
        let mut new_authors = 0;
        for (author, adding) in &new_keys {
            let have = self.count(Some(author));
            self.check_new_key(author, have, *adding)?;
            if have == 0 {
                new_authors += 1;
            }
        }
        self.check_authors(new_authors)?;
        self.check_bytes(bytes)?;
        if disk {
            self.disk_ready()?;
        }
        let count = rows.len() as u64;
        let mut writes = Vec::new();
        for (author, name, record) in rows {
            let (_, write) = self.put(author, name, record.value, record.persistent);
            writes.extend(write);
        }
        Ok((count, self.submit(writes)?))
    }

    // ---- watches --------------------------------------------------------

    /// Registers a watch.
    pub(crate) fn subscribe(
        &mut self,
        author: &str,
        name: Option<String>,
    ) -> Result<Arc<Subscriber>, StoreError> {
        if self.watchers >= self.limits.max_watchers {
            return Err(StoreError::TooManyWatchers {
                limit: self.limits.max_watchers as u64,
            });
        }
        let sub = Arc::new(Subscriber::new(
            name,
            self.limits.watch_buffer,
            self.limits.watch_buffer_bytes,
        ));
        self.authors
            .entry(author.to_owned())
            .or_default()
            .watchers
            .push(sub.clone());
        self.watchers += 1;
        Ok(sub)
    }

    /// Removes a watch.
    pub(crate) fn unsubscribe(&mut self, author: &str, sub: &Arc<Subscriber>) {
        let Some(a) = self.authors.get_mut(author) else {
            return;
        };
        let before = a.watchers.len();
        a.watchers.retain(|w| !Arc::ptr_eq(w, sub));
        self.watchers -= before - a.watchers.len();
        if a.is_empty() {
            self.authors.remove(author);
        }
    }
}
