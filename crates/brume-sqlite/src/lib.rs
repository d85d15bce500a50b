//! brume's SQLite pattern: one writer thread that commits in groups, and
//! readers on blocking threads beside it.
//!
//! Every SQLite database of brume (the broker's state, the ledger, the dev
//! chain, the settlement journal) is used the same way:
//!
//! - [`open`] opens a connection with [`Options`]: a busy timeout, WAL, and
//!   `synchronous=FULL`, so that a commit is on disk before anyone is told
//!   it happened (neither `kill -9` nor a power cut loses it), plus the
//!   database's own pragmas.
//! - [`GroupCommit`] is a named writer thread that owns some state (a
//!   connection, or more) and receives requests over a channel. It takes
//!   everything queued, up to a weight (rows, transactions), and hands the
//!   batch to a [`Handler`], which commits it once and answers each caller.
//!   There is no timer: a batch is whatever queued while the previous one
//!   was committing, so a lone request waits for one commit and many
//!   share one fsync.
//! - [`ReadPool`] runs reads on `tokio::task::spawn_blocking` with pooled
//!   connections of their own (WAL lets them run beside the writer), at most
//!   a fixed number at a time.
//! - [`Db`] puts the two together for closures: [`Db::write`] runs a closure
//!   in the next group commit, under its own savepoint, and returns once it
//!   is durable.
//!
//! Nothing here blocks the async runtime: SQLite runs on the writer thread
//! or on blocking threads, and callers wait on channels.
//!
//! ```
//! use brume_sqlite::{Db, Error, Options};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! # let dir = tempfile::tempdir().expect("temp dir");
//! let db = Db::open("example-writer", &dir.path().join("x.db"), &Options::new())?;
//! db.write(|tx| Ok::<_, Error>(tx.execute_batch("CREATE TABLE t (v TEXT)")?))
//!     .await?;
//! // Durable once it returns; the closure's own error type would do too.
//! db.write(|tx| Ok::<_, Error>(tx.execute("INSERT INTO t VALUES ('a')", [])?))
//!     .await?;
//! let n: i64 = db
//!     .read(|c| Ok::<_, Error>(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
//!     .await?;
//! assert_eq!(n, 1);
//! db.close();
//! assert!(matches!(db.flush().await, Err(Error::Closed)));
//! # Ok(())
//! # }
//! ```

mod db;
mod group;
mod read;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

pub use db::Db;
pub use group::{Closed, GroupCommit, Handler};
pub use read::ReadPool;
pub use rusqlite;

/// How [`open`] sets up a connection.
///
/// Always: the busy timeout, `journal_mode=WAL` and `synchronous=FULL`
/// (WAL with `FULL` syncs the log at each commit, so a commit returns only
/// once it is durable). Then the extra pragmas, in order, and the size of
/// the prepared statement cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    busy_timeout: Duration,
    pragmas: Vec<(String, String)>,
    statement_cache: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            busy_timeout: Duration::from_secs(5),
            pragmas: Vec::new(),
            statement_cache: None,
        }
    }
}

impl Options {
    /// A 5 s busy timeout, WAL, `synchronous=FULL`, no extra pragma.
    pub fn new() -> Options {
        Options::default()
    }

    /// How long a statement waits for another connection's lock before it
    /// fails with `SQLITE_BUSY`.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Options {
        self.busy_timeout = timeout;
        self
    }

    /// Adds `PRAGMA name = 'value'`, run after the defaults (so it can
    /// override them) and after the pragmas added before it. The value is
    /// text: SQLite reads `'8192'` as 8192 where a pragma takes a number.
    #[must_use]
    pub fn pragma(mut self, name: &str, value: impl Into<String>) -> Options {
        self.pragmas.push((name.to_string(), value.into()));
        self
    }

    /// The capacity of the connection's prepared statement cache
    /// (rusqlite's default is 16).
    #[must_use]
    pub fn statement_cache(mut self, capacity: usize) -> Options {
        self.statement_cache = Some(capacity);
        self
    }
}

/// A database that could not be opened or set up, with its path.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct OpenError {
    /// The database file.
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

/// Opens (creating if needed) the database at `path` with `options`.
/// Blocking: call it off the async runtime.
pub fn open(path: &Path, options: &Options) -> Result<Connection, OpenError> {
    let wrap = |source| OpenError {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(wrap)?;
    conn.busy_timeout(options.busy_timeout).map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(wrap)?;
    for (name, value) in &options.pragmas {
        conn.pragma_update(None, name, value).map_err(wrap)?;
    }
    if let Some(capacity) = options.statement_cache {
        conn.set_prepared_statement_cache_capacity(capacity);
    }
    Ok(conn)
}

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A statement of this crate's own failed (a savepoint, say).
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    /// The group transaction failed (to begin, to keep a write's savepoint,
    /// or to commit): none of the batch's writes is stored. Every caller of
    /// the batch gets it, hence the `Arc`.
    #[error("the group commit failed, none of its writes is stored: {0}")]
    Commit(#[source] Arc<rusqlite::Error>),
    /// The writer has stopped (closed, or its thread ended), or the runtime
    /// is shutting down.
    #[error("the database writer has stopped")]
    Closed,
    /// The closure panicked; a write's changes were rolled back.
    #[error("a database closure panicked")]
    Panicked,
    /// The writer thread could not be started.
    #[error("cannot start the database writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

impl From<Closed> for Error {
    fn from(_: Closed) -> Error {
        Error::Closed
    }
}
