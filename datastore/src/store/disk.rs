//! The data directory: one redb database, read once at start, and the
//! committer thread that writes every change to it, many changes per
//! durable commit (group commit).
//!
//! Tables: `values` holds the persistent keys, `saved` the copies made by
//! `save`, both `(author, name) → record`; `meta` holds the version
//! ceiling. A record is `format u8 (1) | flags u8 (bit 0: persistent) |
//! version u64 LE | type-name length u32 LE | type name | data`. redb
//! commits are atomic, so a record is on disk whole or not at all.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::StoreError;
use crate::value::Value;

/// The database file a store keeps in its data directory.
pub const FILE_NAME: &str = "datastore.redb";

type Key<'a> = (&'a str, &'a str);
const VALUES: TableDefinition<'_, Key<'_>, &[u8]> = TableDefinition::new("values");
const SAVED: TableDefinition<'_, Key<'_>, &[u8]> = TableDefinition::new("saved");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Every version below it may have been handed out; versions after a
/// restart start here.
const CEILING: &str = "version_ceiling";

/// Most jobs in one commit.
const MAX_BATCH: usize = 4096;

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 4;

/// A value as it is written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) version: u64,
    pub(crate) persistent: bool,
    pub(crate) value: Value,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let ty = self.value.type_name.as_bytes();
        let mut out = Vec::with_capacity(HEADER + ty.len() + self.value.data.len());
        out.push(FORMAT);
        out.push(u8::from(self.persistent));
        out.extend_from_slice(&self.version.to_le_bytes());
        // Type names are at most `max_key_len` bytes, far below 4 GiB.
        out.extend_from_slice(&u32::try_from(ty.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(ty);
        out.extend_from_slice(&self.value.data);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (&format, rest) = bytes.split_first().ok_or("empty record")?;
        if format != FORMAT {
            return Err(format!("unknown record format {format}"));
        }
        let (&flags, rest) = rest.split_first().ok_or("truncated record")?;
        let (version, rest) = rest.split_first_chunk::<8>().ok_or("truncated record")?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or("truncated record")?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|e| e.to_string())?;
        if rest.len() < len {
            return Err("truncated type name".into());
        }
        let (ty, data) = rest.split_at(len);
        let type_name = std::str::from_utf8(ty).map_err(|_| "type name is not UTF-8")?;
        Ok(Self {
            version: u64::from_le_bytes(*version),
            persistent: flags & 1 == 1,
            value: Value::raw(type_name, data.to_vec()),
        })
    }
}

/// A saved or persistent value with its key.
pub(crate) type Row = (String, String, Record);

/// One change to the database.
#[derive(Debug)]
pub(crate) enum Write {
    /// Writes a persistent value.
    Put {
        author: String,
        name: String,
        record: Record,
    },
    /// Removes a persistent value.
    Remove { author: String, name: String },
    /// Removes every persistent value.
    RemoveAll,
    /// Replaces the saved copies of `author` (of everyone: `None`).
    Save {
        author: Option<String>,
        rows: Vec<Row>,
    },
    /// Reads the saved copies of `author` (of everyone: `None`) into
    /// [`Outcome::rows`].
    ReadSaved { author: Option<String> },
    /// Deletes the saved copies of `author` (of everyone: `None`), counting
    /// them in [`Outcome::deleted`].
    DeleteSaved { author: Option<String> },
    /// Raises the version ceiling.
    Ceiling(u64),
}

/// What a job's writes produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) rows: Vec<Row>,
    pub(crate) deleted: u64,
}

/// Writes that commit together, and who waits for them.
#[derive(Debug)]
pub(crate) struct Job {
    writes: Vec<Write>,
    reply: Option<oneshot::Sender<Result<Outcome, StoreError>>>,
}

impl Job {
    /// A job someone waits for; the receiver gets its outcome once it is
    /// durable.
    pub(crate) fn waited(
        writes: Vec<Write>,
    ) -> (Self, oneshot::Receiver<Result<Outcome, StoreError>>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                writes,
                reply: Some(tx),
            },
            rx,
        )
    }

    /// A job nobody waits for.
    pub(crate) fn unwaited(writes: Vec<Write>) -> Self {
        Self {
            writes,
            reply: None,
        }
    }

    fn answer(self, outcome: Result<Outcome, StoreError>) {
        if let Some(reply) = self.reply {
            // The caller may have gone (a cancelled call): nothing to do.
            let _ = reply.send(outcome);
        }
    }
}

/// What the store and the committer share: the durable version ceiling,
/// and whether a commit failed.
#[derive(Debug, Default)]
pub(crate) struct DiskStatus {
    ceiling: AtomicU64,
    /// Signalled when the ceiling rises or a commit fails.
    pub(crate) changed: Notify,
    failure: Mutex<Option<String>>,
}

impl DiskStatus {
    /// Every version below this is safe to hand out: a restart begins at
    /// or above it.
    pub(crate) fn ceiling(&self) -> u64 {
        self.ceiling.load(Ordering::Acquire)
    }

    /// The error every change that needs the disk gets after a failed
    /// commit.
    pub(crate) fn failure(&self) -> Option<StoreError> {
        let failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.as_ref().map(|why| {
            StoreError::storage(format!(
                "an earlier commit failed ({why}); restart the server to reload from disk"
            ))
        })
    }

    fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(why);
        drop(failure);
        self.changed.notify_waiters();
    }
}

/// What [`open`] found on disk.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) db: Database,
    /// The persistent values.
    pub(crate) values: Vec<Row>,
    /// Every saved copy, for the store's accounting of saved bytes.
    pub(crate) saved: Vec<(String, String, Value)>,
    /// The first version to hand out.
    pub(crate) next_version: u64,
    /// The ceiling now durable: versions below it may be handed out.
    pub(crate) ceiling: u64,
    pub(crate) path: PathBuf,
}

/// Opens (creating it if needed) the database in `dir`, reads it, and
/// durably reserves the versions `[next_version, next_version + block)`.
pub(crate) fn open(dir: &Path, block: u64) -> Result<Loaded, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::storage(format!(
            "cannot create the directory {}: {e}",
            dir.display()
        ))
    })?;
    let path = dir.join(FILE_NAME);
    let db = Database::create(&path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => {
            StoreError::storage(format!("{} is in use by another datastore", path.display()))
        }
        e => StoreError::storage(format!("cannot open {}: {e}", path.display())),
    })?;
    let loaded = read_all(&db, block).map_err(|e| match e {
        ReadError::Redb(e) => StoreError::storage(format!("cannot read {}: {e}", path.display())),
        ReadError::Damaged(why) => StoreError::storage(format!("{}: {why}", path.display())),
    })?;
    let (values, saved, next_version, ceiling) = loaded;
    Ok(Loaded {
        db,
        values,
        saved,
        next_version,
        ceiling,
        path,
    })
}

/// A redb error, boxed (redb's own is large).
#[derive(Debug)]
struct DbError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        Self(Box::new(e.into()))
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

enum ReadError {
    Redb(DbError),
    Damaged(String),
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        Self::Redb(DbError::from(e))
    }
}

type ReadAll = (Vec<Row>, Vec<(String, String, Value)>, u64, u64);

/// In one write transaction: creates the tables if new, reads them, and
/// raises the ceiling.
fn read_all(db: &Database, block: u64) -> Result<ReadAll, ReadError> {
    let txn = db.begin_write()?;
    let read = {
        let values = txn.open_table(VALUES)?;
        let saved = txn.open_table(SAVED)?;
        let mut meta = txn.open_table(META)?;
        let mut rows = Vec::new();
        let mut highest = 0;
        for item in values.iter()? {
            let (key, bytes) = item?;
            let (author, name) = key.value();
            let record = Record::decode(bytes.value()).map_err(|why| {
                ReadError::Damaged(format!("the value of {author}/{name} is damaged: {why}"))
            })?;
            highest = highest.max(record.version);
            rows.push((author.to_owned(), name.to_owned(), record));
        }
        let mut copies = Vec::new();
        for item in saved.iter()? {
            let (key, bytes) = item?;
            let (author, name) = key.value();
            let record = Record::decode(bytes.value()).map_err(|why| {
                ReadError::Damaged(format!(
                    "the saved copy of {author}/{name} is damaged: {why}"
                ))
            })?;
            copies.push((author.to_owned(), name.to_owned(), record.value));
        }
        let stored = meta.get(CEILING)?.map(|v| v.value()).unwrap_or(0);
        let next = stored.max(highest.saturating_add(1)).max(1);
        let ceiling = next.saturating_add(block);
        meta.insert(CEILING, ceiling)?;
        (rows, copies, next, ceiling)
    };
    txn.commit()?;
    Ok(read)
}

/// Starts the committer thread over `db`. It ends once every sender of the
/// returned channel is dropped and the jobs already sent are committed;
/// then it closes the database.
pub(crate) fn spawn_committer(
    db: Database,
    status: Arc<DiskStatus>,
    ceiling: u64,
) -> Result<(mpsc::UnboundedSender<Job>, std::thread::JoinHandle<()>), StoreError> {
    status.ceiling.store(ceiling, Ordering::Release);
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("datastore-commit".into())
        .spawn(move || run(&db, rx, &status))
        .map_err(|e| StoreError::storage(format!("cannot start the committer thread: {e}")))?;
    Ok((tx, thread))
}

fn run(db: &Database, mut jobs: mpsc::UnboundedReceiver<Job>, status: &DiskStatus) {
    let mut batch = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Some(e) = status.failure() {
            for job in batch.drain(..) {
                job.answer(Err(e.clone()));
            }
            continue;
        }
        match commit(db, &mut batch) {
            Ok((outcomes, ceiling)) => {
                if let Some(c) = ceiling {
                    status.ceiling.fetch_max(c, Ordering::AcqRel);
                    status.changed.notify_waiters();
                }
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    job.answer(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "datastore commit failed; refusing changes that need the disk");
                status.fail(e.to_string());
                let e = StoreError::storage(format!("commit failed: {e}"));
                for job in batch.drain(..) {
                    job.answer(Err(e.clone()));
                }
            }
        }
    }
}

/// Applies every job's writes in one transaction and commits it durably.
/// Returns each job's outcome, in order, and the new ceiling if one was
/// written.
fn commit(db: &Database, batch: &mut [Job]) -> Result<(Vec<Outcome>, Option<u64>), DbError> {
    let txn = db.begin_write()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut ceiling = None;
    {
        let mut values = txn.open_table(VALUES)?;
        let mut saved = txn.open_table(SAVED)?;
        let mut meta = txn.open_table(META)?;
        for job in batch.iter_mut() {
            let mut outcome = Outcome::default();
            for write in job.writes.drain(..) {
                match write {
                    Write::Put {
                        author,
                        name,
                        record,
                    } => {
                        values
                            .insert((author.as_str(), name.as_str()), record.encode().as_slice())?;
                    }
                    Write::Remove { author, name } => {
                        values.remove((author.as_str(), name.as_str()))?;
                    }
                    Write::RemoveAll => values.retain(|_, _| false)?,
                    Write::Save { author, rows } => {
                        match &author {
                            Some(a) => {
                                for name in names_of(&saved, a)? {
                                    saved.remove((a.as_str(), name.as_str()))?;
                                }
                            }
                            None => saved.retain(|_, _| false)?,
                        }
                        for (a, n, record) in rows {
                            saved.insert((a.as_str(), n.as_str()), record.encode().as_slice())?;
                        }
                    }
                    Write::ReadSaved { author } => {
                        outcome.rows = read_saved(&saved, author.as_deref())?;
                    }
                    Write::DeleteSaved { author } => {
                        outcome.deleted += match &author {
                            Some(a) => {
                                let names = names_of(&saved, a)?;
                                for name in &names {
                                    saved.remove((a.as_str(), name.as_str()))?;
                                }
                                names.len() as u64
                            }
                            None => {
                                let n = saved.len()?;
                                saved.retain(|_, _| false)?;
                                n
                            }
                        };
                    }
                    Write::Ceiling(c) => {
                        meta.insert(CEILING, c)?;
                        ceiling = Some(ceiling.unwrap_or(0).max(c));
                    }
                }
            }
            outcomes.push(outcome);
        }
    }
    txn.commit()?;
    Ok((outcomes, ceiling))
}

/// The names `author` has in `table`.
fn names_of(
    table: &impl ReadableTable<Key<'static>, &'static [u8]>,
    author: &str,
) -> Result<Vec<String>, DbError> {
    let mut names = Vec::new();
    for item in table.range((author, "")..)? {
        let (key, _) = item?;
        let (a, name) = key.value();
        if a != author {
            break;
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// The saved copies of `author` (of everyone: `None`).
fn read_saved(
    table: &impl ReadableTable<Key<'static>, &'static [u8]>,
    author: Option<&str>,
) -> Result<Vec<Row>, DbError> {
    let mut rows = Vec::new();
    let range = match author {
        Some(a) => table.range((a, "")..)?,
        None => table.iter()?,
    };
    for item in range {
        let (key, bytes) = item?;
        let (a, name) = key.value();
        if author.is_some_and(|wanted| wanted != a) {
            break;
        }
        // A damaged copy is skipped, not fatal: the rest can be restored.
        match Record::decode(bytes.value()) {
            Ok(record) => rows.push((a.to_owned(), name.to_owned(), record)),
            Err(why) => tracing::warn!(author = a, name, why, "skipping a damaged saved copy"),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let record = Record {
            version: 0x0102_0304_0506_0708,
            persistent: true,
            value: Value::raw("ty", vec![1, 2, 3]),
        };
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Ok(record));
        for cut in 0..HEADER + 2 {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(Record::decode(&other).is_err());
    }

    #[test]
    fn reopening_starts_above_every_version_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), 100).unwrap();
        assert_eq!((first.next_version, first.ceiling), (1, 101));
        drop(first);
        // Nothing was written, yet versions below the old ceiling may have
        // been handed out for values in memory: the next run starts above.
        let second = open(dir.path(), 100).unwrap();
        assert_eq!((second.next_version, second.ceiling), (101, 201));
    }

    #[test]
    fn a_second_store_on_one_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), 10).unwrap();
        let e = open(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
    }
}
