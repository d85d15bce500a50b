//! The broker's durable state: API keys, services, jobs and their events,
//! leases, accounts, and the operator's word on providers
//! (`provider_trust`, bans). Module bytes live beside it as files
//! (`blobs/{sha256}`) in the data dir, on either backend.
//!
//! [`Store`] is one handle over two backends, SQLite (the default,
//! `DATA/broker.db`, `sqlite.rs`) and PostgreSQL ([`postgres`]). Each
//! component writes its statements once, over [`brume_sql::Sql`], in the
//! dialect both share, and runs them through [`Store::read`],
//! [`Store::write`] and [`Store::write_later`]:
//!
//! - one writer owns the write connection. Writes are closures sent to it;
//!   it runs everything queued in one transaction, each write under its
//!   own savepoint (a failing write is rolled back alone), and commits once
//!   (group commit), then acknowledges each write. Writes apply in the
//!   order they were queued;
//! - reads run on other connections, on blocking threads, and see every
//!   write acknowledged before they started.
//!
//! Nothing here blocks the async runtime.

use std::path::{Path, PathBuf};

use brume_sql::{Dialect, Sql};

use crate::StoreFuture;

pub mod keys;
pub mod postgres;
pub mod providers;
mod sqlite;

pub use providers::{Standing, provider_status};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A statement PostgreSQL refused, or a connection it dropped.
    #[error("database {location}: {message}")]
    Pg { location: String, message: String },
    #[error("the database writer has stopped")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A group commit failed (nothing of its batch is stored), or a write
    /// panicked (and was rolled back).
    #[error("database: {0}")]
    Db(#[source] brume_sqlite::Error),
    /// A stored record that does not decode.
    #[error("database: a corrupt record: {0}")]
    Corrupt(String),
}

impl From<brume_sql::Error> for StoreError {
    fn from(e: brume_sql::Error) -> StoreError {
        match e {
            brume_sql::Error::Sqlite(e) => StoreError::Sql(e),
            brume_sql::Error::Column(m) => StoreError::Corrupt(m),
            e @ brume_sql::Error::Pg(_) => StoreError::Pg {
                location: "postgres".into(),
                message: e.to_string(),
            },
        }
    }
}

impl From<brume_sqlite::Error> for StoreError {
    fn from(e: brume_sqlite::Error) -> StoreError {
        match e {
            brume_sqlite::Error::Open(e) => e.into(),
            brume_sqlite::Error::Sql(e) => StoreError::Sql(e),
            brume_sqlite::Error::Closed => StoreError::Closed,
            brume_sqlite::Error::Spawn(e) => StoreError::Io(e),
            e => StoreError::Db(e),
        }
    }
}

impl From<brume_sqlite::OpenError> for StoreError {
    fn from(e: brume_sqlite::OpenError) -> StoreError {
        StoreError::Open {
            path: e.path.display().to_string(),
            source: e.source,
        }
    }
}

/// A unit of work on the store: statements over one connection, in the
/// transaction (or savepoint) the store opened for it.
pub type Work<T> = Box<dyn FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send>;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    blobs: PathBuf,
}

#[derive(Clone)]
enum Db {
    Sqlite(sqlite::Lite),
    Postgres(postgres::PgDb),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location())
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

/// The directory of module files under a data dir.
fn blobs_in(dir: &Path) -> Result<PathBuf, StoreError> {
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs)?;
    Ok(blobs)
}

impl Store {
    /// Opens (creating if needed) `dir/broker.db` and starts its writer.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::Sqlite(sqlite::Lite::open(dir)?),
            blobs: blobs_in(dir)?,
        })
    }

    /// Connects to the PostgreSQL database at `url` (bringing the broker's
    /// tables to the newest layout if this role may), with module files
    /// under `dir`.
    pub async fn open_postgres(url: &str, dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::Postgres(postgres::PgDb::open(url).await?),
            blobs: blobs_in(dir)?,
        })
    }

    /// Opens the store a broker with data dir `dir` and ledger location
    /// `ledger` uses: PostgreSQL when the ledger is there, else SQLite.
    pub async fn open_beside(dir: &Path, ledger: Option<&str>) -> Result<Store, StoreError> {
        let store = match ledger.filter(|l| brume_pg::is_url(l)) {
            Some(url) => Store::open_postgres(url, dir).await,
            None => Store::open(dir),
        }?;
        tracing::debug!(store = %store.location(), "broker store open");
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        match self.db {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Where it is, for messages (a path, or a URL without its password).
    pub fn location(&self) -> String {
        match &self.db {
            Db::Sqlite(l) => l.path().display().to_string(),
            Db::Postgres(p) => p.location(),
        }
    }

    /// Runs `f` in the next group commit and waits until it is durable. If
    /// `f` fails, its changes are rolled back (the other writes of the
    /// batch still commit) and its error is returned.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.db {
            Db::Sqlite(l) => l.write(Box::new(f)).await,
            Db::Postgres(p) => p.write(Box::new(f)).await,
        }
    }

    /// Queues `f` for the next group commit without waiting. Writes are
    /// applied in the order they were queued. A failure is logged (and
    /// the write rolled back).
    pub fn write_later(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<(), StoreError> + Send + 'static,
    ) {
        let queued = match &self.db {
            Db::Sqlite(l) => l.write_later(Box::new(f)),
            Db::Postgres(p) => p.write_later(Box::new(f)),
        };
        if queued.is_err() {
            tracing::error!("database writer has stopped; a write was dropped");
        }
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }

    /// Runs a read on a blocking thread, with a pooled connection.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.db {
            Db::Sqlite(l) => l.read(Box::new(f)).await,
            Db::Postgres(p) => p.read(Box::new(f)).await,
        }
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs.join(digest)
    }

    /// Writes a module file atomically (temp file, fsync, rename).
    pub async fn put_blob(&self, digest: String, bytes: bytes::Bytes) -> Result<(), StoreError> {
        let path = self.blob_path(&digest);
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            if path.exists() {
                return Ok(());
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    pub async fn get_blob(&self, digest: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        match tokio::fs::read(self.blob_path(digest)).await {
            Ok(b) => Ok(Some(b.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The store as a [`brume_sql::Backend`]: components whose SQL is written
/// against that trait (leases) run on it as on any other backend.
impl brume_sql::Backend for Store {
    type Error = StoreError;

    fn location(&self) -> String {
        Store::location(self)
    }

    fn run<T: Send + 'static>(
        &self,
        write: bool,
        op: brume_sql::Op<T, StoreError>,
    ) -> brume_sql::OpFuture<'_, T, StoreError> {
        if write {
            Box::pin(self.write(op))
        } else {
            Box::pin(self.read(op))
        }
    }
}

/// [`Store::write`] as a [`StoreFuture`], for storage traits' methods.
pub(crate) fn writing<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send + 'static,
) -> StoreFuture<'_, T> {
    Box::pin(store.write(f))
}

/// [`Store::read`] as a [`StoreFuture`].
pub(crate) fn reading<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send + 'static,
) -> StoreFuture<'_, T> {
    Box::pin(store.read(f))
}

/// Runs a component's SQLite layout (`CREATE TABLE IF NOT EXISTS …`); on
/// PostgreSQL its tables come from [`postgres::MIGRATIONS`] instead.
pub(crate) fn sqlite_layout(c: &mut dyn Sql, ddl: &str) -> Result<(), StoreError> {
    if c.dialect() == Dialect::Sqlite {
        c.batch(ddl)?;
    }
    Ok(())
}

/// A JSON column, decoded (a record that does not decode is corrupt).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
