//! [`Limits`]: how much a store may hold, with their defaults and what they
//! cost at worst.

/// Bytes every key is charged on top of its strings and value, for the
/// map entry and bookkeeping around it, so that
/// [`Limits::max_total_bytes`] bounds memory even for many tiny keys.
pub const KEY_OVERHEAD: usize = 128;

/// Bytes every queued watch event is charged on top of its strings and
/// value, against [`Limits::watch_buffer_bytes`].
pub const EVENT_OVERHEAD: usize = 64;

/// What a [`Store`](crate::Store) may hold. Each limit is checked before
/// anything changes; past it the operation fails with its own
/// [`StoreError`](crate::StoreError) variant and the store goes on.
///
/// ```
/// let limits = ipc_datastore::Limits::default()
///     .max_value_size(64 * 1024)
///     .max_authors(100);
/// # let _ = limits;
/// ```
///
/// Worst cases with the defaults: the values in memory take at most
/// `max_total_bytes` (256 MiB) plus hash-map slack (up to about 2×); the
/// data file holds at most `max_total_bytes` of persistent values plus
/// `max_total_bytes` of saved copies, which redb stores in B-tree pages
/// (up to about 2× again; the file grows to its high-water mark and does
/// not shrink). Open watches add at most `max_watchers` × (the larger of
/// `watch_buffer_bytes` and one value) plus one `ipc` stream window each:
/// 256 × (1 MiB + 256 KiB) ≈ 320 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    pub(crate) max_value_size: usize,
    pub(crate) max_key_len: usize,
    pub(crate) max_keys_per_author: usize,
    pub(crate) max_authors: usize,
    pub(crate) max_total_bytes: usize,
    pub(crate) max_watchers: usize,
    pub(crate) watch_buffer: usize,
    pub(crate) watch_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_size: 1024 * 1024,
            max_key_len: 1024,
            max_keys_per_author: 10_000,
            max_authors: 1_000,
            max_total_bytes: 256 * 1024 * 1024,
            max_watchers: 256,
            watch_buffer: 1024,
            watch_buffer_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// The defaults (the same as [`Limits::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Largest value, in bytes of data plus type name. Default 1 MiB.
    /// Checked before the store changes: a larger value is refused with
    /// [`StoreError::ValueTooLarge`](crate::StoreError::ValueTooLarge). A
    /// value must also fit in one `ipc` frame (16 MiB by default), or the
    /// call fails with `Error::FrameTooLarge` before it reaches the store.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Longest author, name or type name, in bytes. Default 1 KiB.
    /// [`StoreError::KeyTooLong`](crate::StoreError::KeyTooLong) past it.
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = bytes;
        self
    }

    /// Most keys one author may have. Default 10,000. Setting a new key
    /// beyond it fails with
    /// [`StoreError::TooManyKeys`](crate::StoreError::TooManyKeys);
    /// replacing an existing one works.
    pub fn max_keys_per_author(mut self, keys: usize) -> Self {
        self.max_keys_per_author = keys;
        self
    }

    /// Most authors with at least one key. Default 1,000. The first key of
    /// one more author fails with
    /// [`StoreError::TooManyAuthors`](crate::StoreError::TooManyAuthors).
    pub fn max_authors(mut self, authors: usize) -> Self {
        self.max_authors = authors;
        self
    }

    /// Most bytes the store holds: for every key its author, name, type
    /// name, data and [`KEY_OVERHEAD`]. Default 256 MiB. Saved copies
    /// (`save`) have a budget of the same size of their own. Past it:
    /// [`StoreError::StoreFull`](crate::StoreError::StoreFull).
    pub fn max_total_bytes(mut self, bytes: usize) -> Self {
        self.max_total_bytes = bytes;
        self
    }

    /// Most watches open at once, over all connections. Default 256. One
    /// more is refused with
    /// [`StoreError::TooManyWatchers`](crate::StoreError::TooManyWatchers).
    /// Worst case: this many × (the larger of
    /// [`watch_buffer_bytes`](Limits::watch_buffer_bytes) and one value,
    /// plus the connection's stream window).
    pub fn max_watchers(mut self, watchers: usize) -> Self {
        self.max_watchers = watchers;
        self
    }

    /// Most events queued for one watch that its client has not taken yet
    /// (beyond what the `ipc` stream window already carries). Default
    /// 1,024 events. When a change would exceed it (or
    /// [`watch_buffer_bytes`](Limits::watch_buffer_bytes)), the watch drops
    /// changes until its client catches up, then receives
    /// [`WatchEvent::Lagged`](crate::WatchEvent::Lagged). Writers never
    /// wait for watchers. At least 1.
    pub fn watch_buffer(mut self, events: usize) -> Self {
        self.watch_buffer = events.max(1);
        self
    }

    /// Most bytes queued for one watch: each event's strings, value and
    /// [`EVENT_OVERHEAD`]. Default 1 MiB. An empty queue takes one event of
    /// any size, so a watch holds at most the larger of this and one
    /// value.
    pub fn watch_buffer_bytes(mut self, bytes: usize) -> Self {
        self.watch_buffer_bytes = bytes;
        self
    }
}
