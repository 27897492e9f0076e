//! [`DataStoreClient`]: typed helpers over a [`DataStoreProxy`].

use ipc_core::{Address, CallError, Client, Error};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::service::DataStoreProxy;
use crate::value::{Entry, Value};

/// A value read by a typed helper, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed<T> {
    /// The value.
    pub value: T,
    /// Its version.
    pub version: u64,
    /// Whether it is kept on disk.
    pub persistent: bool,
}

impl<T: DeserializeOwned> Typed<T> {
    fn from_entry(entry: Entry) -> Result<Self, StoreError> {
        Ok(Self {
            value: entry.value.decode()?,
            version: entry.version,
            persistent: entry.persistent,
        })
    }
}

/// A datastore client with typed helpers: values go in and out as Rust
/// types (JSON with the type's name, see [`Value::encode`]), and reading
/// one as the wrong type fails with [`StoreError::TypeMismatch`].
///
/// Every error is a [`CallError<StoreError>`]: `App` for the store's own
/// (including type mismatches found here, on the client), `Rpc` for the
/// connection's. [`DataStoreClient::proxy`] gives the raw interface
/// (bytes, watches, persistence controls).
#[derive(Debug, Clone)]
pub struct DataStoreClient {
    proxy: DataStoreProxy,
}

impl DataStoreClient {
    /// A client over `proxy`.
    pub fn new(proxy: DataStoreProxy) -> Self {
        Self { proxy }
    }

    /// Connects to the datastore at `addr` (exposed under its default
    /// name, `DataStore`).
    ///
    /// # Errors
    ///
    /// Connecting failed, or the server exposes no (compatible) datastore.
    pub async fn connect(addr: impl Into<Address>) -> Result<Self, Error> {
        Self::over(&Client::connect(addr).await?).await
    }

    /// A client over an existing connection.
    ///
    /// # Errors
    ///
    /// The server exposes no (compatible) datastore.
    pub async fn over(client: &Client) -> Result<Self, Error> {
        Ok(Self::new(client.get_exposed_object().await?))
    }

    /// The raw interface.
    pub fn proxy(&self) -> &DataStoreProxy {
        &self.proxy
    }

    /// Sets `author`/`name` to `value`; returns the new version. With
    /// `persist`, returns once the value is on disk.
    ///
    /// # Errors
    ///
    /// [`StoreError::Codec`] if `value` cannot be encoded; the store's
    /// limits; the connection.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        author: &str,
        name: &str,
        value: &T,
        persist: bool,
    ) -> Result<u64, CallError<StoreError>> {
        let value = Value::encode(value).map_err(CallError::App)?;
        self.proxy
            .set(author.to_owned(), name.to_owned(), value, persist)
            .await
    }

    /// Sets `author`/`name` to `value` if it is at `expected_version` (0:
    /// if it does not exist); returns the new version.
    ///
    /// # Errors
    ///
    /// [`StoreError::VersionConflict`] if the version differs, and as
    /// [`DataStoreClient::set`].
    pub async fn set_if_version<T: Serialize + ?Sized>(
        &self,
        author: &str,
        name: &str,
        value: &T,
        expected_version: u64,
        persist: bool,
    ) -> Result<u64, CallError<StoreError>> {
        let value = Value::encode(value).map_err(CallError::App)?;
        self.proxy
            .set_if_version(
                author.to_owned(),
                name.to_owned(),
                value,
                expected_version,
                persist,
            )
            .await
    }

    /// The value of `author`/`name` as a `T`, if it is set.
    ///
    /// # Errors
    ///
    /// [`StoreError::TypeMismatch`] if it is not a `T`; the connection.
    pub async fn get<T: DeserializeOwned>(
        &self,
        author: &str,
        name: &str,
    ) -> Result<Option<Typed<T>>, CallError<StoreError>> {
        match self.proxy.get(author.to_owned(), name.to_owned()).await? {
            Some(entry) => Typed::from_entry(entry).map(Some).map_err(CallError::App),
            None => Ok(None),
        }
    }

    /// Read-modify-write without races: reads `author`/`name` (`None` if
    /// unset), computes the new value with `f`, and stores it if nobody
    /// changed the key meanwhile; otherwise reads again and retries.
    /// Returns what was stored.
    ///
    /// # Errors
    ///
    /// As [`DataStoreClient::get`] and [`DataStoreClient::set`]; a
    /// conflict is never returned, it is retried.
    pub async fn update<T, F>(
        &self,
        author: &str,
        name: &str,
        persist: bool,
        mut f: F,
    ) -> Result<Typed<T>, CallError<StoreError>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        loop {
            let (current, version) = match self.get::<T>(author, name).await? {
                Some(t) => (Some(t.value), t.version),
                None => (None, 0),
            };
            let value = f(current);
            match self
                .set_if_version(author, name, &value, version, persist)
                .await
            {
                Ok(version) => {
                    return Ok(Typed {
                        value,
                        version,
                        persistent: persist,
                    });
                }
                Err(CallError::App(StoreError::VersionConflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
