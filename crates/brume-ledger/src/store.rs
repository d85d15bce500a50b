//! The ledger's store: the [`LedgerStore`] trait, its SQLite
//! implementation, [`SqliteStore`] (the embedded default), and its
//! PostgreSQL one, [`postgres::PgStore`].
//!
//! # The trait
//!
//! [`LedgerStore`] has no SQLite type in it, so that a PostgreSQL store can
//! implement it too. Its futures are boxed so that `dyn LedgerStore` works.
//!
//! - [`append`](LedgerStore::append) returns once the rows are durable. A call
//!   is atomic: either all its rows are stored or none is. A work id that is
//!   already stored (or that appears twice in the call) fails the call with
//!   [`LedgerError::DuplicateWorkId`]; the calls committed in the same group
//!   commit are not affected.
//! - There is no update and no delete of a row. The only mutable data is the
//!   payment status per (row, entity), in a table of its own
//!   ([`set_status`](LedgerStore::set_status)).
//!
//! # SQLite
//!
//! - WAL, `synchronous=FULL`: a commit is fsynced before any caller is
//!   acknowledged, so neither `kill -9` nor a power cut loses an
//!   acknowledged row.
//! - One writer thread ([`brume_sqlite::GroupCommit`]) owns the write
//!   connection. Calls queue requests to it; it takes everything queued (up
//!   to [`MAX_BATCH_ROWS`] rows), runs it
//!   in one transaction, commits once, then answers every caller. There is
//!   no timer: the batch is whatever queued during the previous commit, so a
//!   lone write waits for one commit. Each call is atomic on its own: an
//!   append of up to 64 rows is one multi-row `INSERT` (SQLite rolls a
//!   failed statement back alone), a larger one or a status update runs
//!   under a savepoint. A storage error (not a refused row) fails the whole
//!   batch, and nothing of it is committed. Statement journals are kept in
//!   memory (`temp_store=MEMORY`); the writer checkpoints the WAL every
//!   8192 pages.
//! - Rows are checked (bounds, and their three hashes recomputed), and
//!   serialised by the caller's task; [`append_sealed`](LedgerStore::append_sealed)
//!   takes [`SealedRow`]s, which are sealed by construction, and skips the
//!   hashing. The writer only binds parameters to cached prepared
//!   statements.
//! - Layout (version 2, in `user_version`; a database of another layout is
//!   refused): `ledger_rows` has the columns that queries filter or sort on,
//!   `work_id` (unique), `timestamp_ms`, `requester`, `provider`, plus
//!   `fuel` and `row_hash`; every other public value is in the `data` blob
//!   and the private columns in the `private` blob (the format is in the
//!   `codec` module). Indexes: by (`timestamp_ms`, `work_id`) and by
//!   (`requester`, `timestamp_ms`, `work_id`). A blob or column that does not
//!   decode makes its row corrupt ([`Page::corrupt`]), not the query fail.
//! - Reads run on `spawn_blocking` with connections of their own (a
//!   [`brume_sqlite::ReadPool`] of 8), beside the writer (WAL).
//! - The database refuses changes too: triggers abort any `UPDATE` or
//!   `DELETE` of `ledger_rows` with `ledger rows are immutable`, and any
//!   insert of a work id already stored with `duplicate work id`, so that
//!   `INSERT OR REPLACE` cannot replace a row either (whatever the
//!   connection's `recursive_triggers`).

pub mod postgres;

use std::future::Future;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use brume_sqlite::{GroupCommit, Handler, Options, ReadPool};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::row::{Aggregate, Hash32, LedgerRow, RowData, RowUsage, SealedRow};

/// Every error of the ledger. [`code`](LedgerError::code) is stable.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{column}: {len} is over the limit of {max}")]
    TooLarge {
        column: String,
        len: usize,
        max: usize,
    },
    #[error("{column}: {reason}")]
    InvalidRow { column: String, reason: String },
    #[error("the {column} sum to {sum}, the fee is {fee} token base units")]
    PayoutMismatch {
        column: &'static str,
        sum: u128,
        fee: u128,
    },
    #[error("work id {0} is already in the ledger")]
    DuplicateWorkId(String),
    #[error("work id {0} is not in the ledger")]
    NotFound(String),
    #[error("row {work_id} is corrupt: {detail}")]
    Corrupt { work_id: String, detail: String },
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("ledger storage: {0}")]
    Storage(String),
    #[error("the ledger writer has stopped")]
    Closed,
}

impl LedgerError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::TooLarge { .. } => "field_too_large",
            LedgerError::InvalidRow { .. } => "invalid_row",
            LedgerError::PayoutMismatch { .. } => "payout_mismatch",
            LedgerError::DuplicateWorkId(_) => "duplicate_work_id",
            LedgerError::NotFound(_) => "not_found",
            LedgerError::Corrupt { .. } => "corrupt_row",
            LedgerError::InvalidCursor => "invalid_cursor",
            LedgerError::Storage(_) => "storage",
            LedgerError::Closed => "closed",
        }
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> LedgerError {
        LedgerError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for LedgerError {
    fn from(e: std::io::Error) -> LedgerError {
        LedgerError::Storage(e.to_string())
    }
}

impl From<brume_sqlite::Error> for LedgerError {
    fn from(e: brume_sqlite::Error) -> LedgerError {
        match e {
            brume_sqlite::Error::Closed => LedgerError::Closed,
            e => LedgerError::Storage(e.to_string()),
        }
    }
}

/// A boxed future (so that `dyn LedgerStore` works).
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// Which rows: a time range (`from_ms` inclusive, `to_ms` exclusive) and
/// optionally one requester account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowFilter {
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// The requester account that owns the rows.
    pub account: Option<String>,
}

/// The default and the largest page.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// A page request. Rows come in (timestamp, work id) order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListQuery {
    pub filter: RowFilter,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to [`MAX_PAGE`]; [`DEFAULT_PAGE`] when absent or 0.
    pub limit: Option<usize>,
    /// Include the private columns (only for the rows' owner).
    pub private: bool,
}

/// A row the store holds but cannot decode (its bytes were altered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CorruptRow {
    pub work_id: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page {
    pub rows: Vec<LedgerRow>,
    /// Rows in this page that could not be decoded.
    pub corrupt: Vec<CorruptRow>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// The payment status of one entity in one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Not yet settled (also the status of an entity with no record).
    Pending,
    /// The entity (a payer) has paid in.
    Collected,
    /// The entity (a beneficiary) has been paid out.
    Paid,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Collected => "collected",
            PaymentStatus::Paid => "paid",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        match s {
            "pending" => Some(PaymentStatus::Pending),
            "collected" => Some(PaymentStatus::Collected),
            "paid" => Some(PaymentStatus::Paid),
            _ => None,
        }
    }
}

/// Sets the status of one entity in many rows (a rollup settles many rows
/// at once). Atomic: an unknown work id fails the whole update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusUpdate {
    pub work_ids: Vec<String>,
    pub entity: String,
    pub status: PaymentStatus,
    pub settling_tx: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntityStatus {
    pub entity: String,
    pub status: PaymentStatus,
    pub settling_tx: Option<String>,
    pub updated_ms: u64,
}

/// How many rows match a filter, and the XOR of their row hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AggregateSummary {
    pub rows: u64,
    pub aggregate: Aggregate,
}

/// The ledger's storage, whatever the database.
pub trait LedgerStore: Send + Sync {
    /// Stores sealed rows (with their private columns); returns once they
    /// are durable. Atomic per call; see the module docs.
    fn append(&self, rows: Vec<LedgerRow>) -> LedgerFuture<'_, ()>;

    /// [`append`](LedgerStore::append) for rows known to be sealed: the
    /// store need not recompute their hashes. Same guarantees.
    fn append_sealed(&self, rows: Vec<SealedRow>) -> LedgerFuture<'_, ()> {
        self.append(rows.into_iter().map(SealedRow::into_row).collect())
    }

    /// One row, with its private columns if `private`.
    fn get<'a>(&'a self, work_id: &'a str, private: bool) -> LedgerFuture<'a, Option<LedgerRow>>;

    /// One page of rows.
    fn list(&self, query: ListQuery) -> LedgerFuture<'_, Page>;

    /// Changes the mutable payment status (the only mutable data).
    fn set_status(&self, update: StatusUpdate) -> LedgerFuture<'_, ()>;

    /// The recorded statuses of a row, by entity.
    fn statuses<'a>(&'a self, work_id: &'a str) -> LedgerFuture<'a, Vec<EntityStatus>>;

    /// The count and XOR aggregate of the rows a filter selects.
    fn aggregate(&self, filter: RowFilter) -> LedgerFuture<'_, AggregateSummary>;

    /// At most `limit` recorded statuses after `(work id, entity)` (`None`:
    /// from the first), ordered by work id then entity: how an audit reads
    /// them all.
    fn status_page(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> LedgerFuture<'_, Vec<(String, EntityStatus)>>;

    /// At most `limit` rows (1 to [`MAX_SCAN`]) appended after sequence
    /// number `after` (0: from the first), in append order, with their
    /// public columns and sequence numbers. Sequence numbers only grow: a
    /// row appended later has a larger one (settlement reads the ledger
    /// this way). Rows that can't be decoded are errors here.
    fn scan(&self, after: u64, limit: usize) -> LedgerFuture<'_, Vec<(u64, LedgerRow)>>;
}

/// A shared store is a store (so that `Arc<dyn LedgerStore>` goes where a
/// store goes).
impl<T: LedgerStore + ?Sized> LedgerStore for Arc<T> {
    fn append(&self, rows: Vec<LedgerRow>) -> LedgerFuture<'_, ()> {
        (**self).append(rows)
    }

    fn append_sealed(&self, rows: Vec<SealedRow>) -> LedgerFuture<'_, ()> {
        (**self).append_sealed(rows)
    }

    fn get<'a>(&'a self, work_id: &'a str, private: bool) -> LedgerFuture<'a, Option<LedgerRow>> {
        (**self).get(work_id, private)
    }

    fn list(&self, query: ListQuery) -> LedgerFuture<'_, Page> {
        (**self).list(query)
    }

    fn set_status(&self, update: StatusUpdate) -> LedgerFuture<'_, ()> {
        (**self).set_status(update)
    }

    fn statuses<'a>(&'a self, work_id: &'a str) -> LedgerFuture<'a, Vec<EntityStatus>> {
        (**self).statuses(work_id)
    }

    fn aggregate(&self, filter: RowFilter) -> LedgerFuture<'_, AggregateSummary> {
        (**self).aggregate(filter)
    }

    fn status_page(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> LedgerFuture<'_, Vec<(String, EntityStatus)>> {
        (**self).status_page(after, limit)
    }

    fn scan(&self, after: u64, limit: usize) -> LedgerFuture<'_, Vec<(u64, LedgerRow)>> {
        (**self).scan(after, limit)
    }
}

/// Opens the store at `location`: a `postgres://` URL, or else a directory
/// for SQLite (opened on a blocking thread).
pub async fn open(location: &str) -> Result<Arc<dyn LedgerStore>, LedgerError> {
    if brume_pg::is_url(location) {
        return Ok(Arc::new(postgres::PgStore::open(location).await?));
    }
    let dir = PathBuf::from(location);
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
        .await
        .map_err(|e| LedgerError::Storage(e.to_string()))??;
    Ok(Arc::new(store))
}

/// The largest page of [`LedgerStore::scan`].
pub const MAX_SCAN: usize = 100_000;

/// The file name of the database in its directory.
pub const DB_FILE: &str = "ledger.db";

/// At most this many rows in one group commit.
pub const MAX_BATCH_ROWS: usize = 8192;

/// The writer checkpoints the WAL once it holds this many pages.
const WAL_CHECKPOINT_PAGES: i64 = 8192;

/// The layout version, in `PRAGMA user_version`.
const LAYOUT_VERSION: i64 = 2;

/// Only the columns that queries filter or sort on (and `fuel`, and the row
/// hash that aggregates read) are columns of their own; the rest of the
/// public data is one compact blob (`data`), the private data another
/// (`private`). See [`codec`] for the blobs' format.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_rows (
    work_id TEXT NOT NULL UNIQUE,
    timestamp_ms INTEGER NOT NULL,
    requester TEXT NOT NULL,
    provider TEXT NOT NULL,
    fuel INTEGER NOT NULL,
    row_hash BLOB NOT NULL,
    data BLOB NOT NULL,
    private BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_rows_by_time ON ledger_rows(timestamp_ms, work_id);
CREATE INDEX IF NOT EXISTS ledger_rows_by_requester
    ON ledger_rows(requester, timestamp_ms, work_id);
CREATE TRIGGER IF NOT EXISTS ledger_rows_no_update BEFORE UPDATE ON ledger_rows
BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END;
CREATE TRIGGER IF NOT EXISTS ledger_rows_no_delete BEFORE DELETE ON ledger_rows
BEGIN SELECT RAISE(ABORT, 'ledger rows are immutable'); END;
CREATE TRIGGER IF NOT EXISTS ledger_rows_no_replace BEFORE INSERT ON ledger_rows
WHEN EXISTS (SELECT 1 FROM ledger_rows WHERE work_id = NEW.work_id)
BEGIN SELECT RAISE(ABORT, 'duplicate work id'); END;
CREATE TABLE IF NOT EXISTS ledger_status (
    work_id TEXT NOT NULL,
    entity TEXT NOT NULL,
    status TEXT NOT NULL,
    settling_tx TEXT,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (work_id, entity)
) WITHOUT ROWID;
PRAGMA user_version = 2;
";

/// Rows per `INSERT` statement (8 parameters each). A call of at most this
/// many rows is one statement, atomic by itself.
const ROWS_PER_INSERT: usize = 64;

/// `INSERT INTO ledger_rows … VALUES (…), …` for 1 to [`ROWS_PER_INSERT`]
/// rows (index `n - 1`).
fn insert_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (1..=ROWS_PER_INSERT)
            .map(|n| {
                let mut s = String::from(
                    "INSERT INTO ledger_rows (work_id, timestamp_ms, requester, provider, fuel, \
                     row_hash, data, private) VALUES ",
                );
                for i in 0..n {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str("(?,?,?,?,?,?,?,?)");
                }
                s
            })
            .collect()
    });
    &all[n.clamp(1, ROWS_PER_INSERT) - 1]
}

const SELECT_COLS: &str =
    "work_id, timestamp_ms, requester, provider, fuel, row_hash, data, private";
const SELECT_PUBLIC_COLS: &str =
    "work_id, timestamp_ms, requester, provider, fuel, row_hash, data, NULL";

/// The ledger's connection settings (beside WAL and `synchronous=FULL`).
fn options() -> Options {
    Options::new()
        .pragma("recursive_triggers", "ON")
        // Statement and savepoint journals in memory, not in temporary files.
        .pragma("temp_store", "MEMORY")
        // Checkpoint less often than every 1000 pages: a page that many
        // commits change is copied back once. (Only the writer commits.)
        .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string())
        .statement_cache(ROWS_PER_INSERT + 16)
}

/// Opens a connection with the ledger's settings.
fn open_conn(path: &Path) -> Result<Connection, LedgerError> {
    brume_sqlite::open(path, &options()).map_err(|e| brume_sqlite::Error::from(e).into())
}

/// Creates the schema, or checks that an existing database has this layout.
fn init_schema(conn: &Connection) -> Result<(), LedgerError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_rows: bool = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_rows'")?
        .exists([])?;
    if has_rows && version != LAYOUT_VERSION {
        return Err(LedgerError::Storage(format!(
            "the ledger database has layout {version}, this brume reads layout \
             {LAYOUT_VERSION} only"
        )));
    }
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// A row ready for the writer: checked, hashed, serialised.
#[derive(Debug)]
struct EncodedRow {
    work_id: String,
    timestamp_ms: i64,
    requester: String,
    provider: String,
    fuel: i64,
    row_hash: [u8; 32],
    data: Vec<u8>,
    private: Vec<u8>,
}

/// u64 columns are stored as the i64 of the same bits (SQLite integers are
/// signed); `from_i64` undoes it.
fn to_i64(n: u64) -> i64 {
    i64::from_ne_bytes(n.to_ne_bytes())
}

fn from_i64(n: i64) -> u64 {
    u64::from_ne_bytes(n.to_ne_bytes())
}

/// Checks that a row's hashes are those of its content, then serialises it.
fn encode_row(row: &LedgerRow) -> Result<EncodedRow, LedgerError> {
    row.check_sealed()?;
    Ok(encode_sealed(row))
}

/// Serialises a row whose hashes are known to match (a [`SealedRow`], or
/// one that [`encode_row`] checked).
fn encode_sealed(row: &LedgerRow) -> EncodedRow {
    let d = &row.data;
    let private = row.private.as_ref().map(codec::private).unwrap_or_default();
    EncodedRow {
        work_id: d.work_id.clone(),
        timestamp_ms: to_i64(d.timestamp_ms),
        requester: d.requester.clone(),
        provider: d.provider.clone(),
        fuel: to_i64(d.usage.fuel),
        row_hash: row.row_hash.0,
        data: codec::data(row),
        private,
    }
}

/// The two blobs of a stored row (see the module).
mod codec;

enum Op {
    Append(Vec<EncodedRow>),
    Status(StatusUpdate, i64),
}

impl Op {
    fn rows(&self) -> usize {
        match self {
            Op::Append(rows) => rows.len(),
            Op::Status(u, _) => u.work_ids.len(),
        }
    }
}

struct Request {
    op: Op,
    done: oneshot::Sender<Result<(), LedgerError>>,
}

struct Inner {
    writer: GroupCommit<Request>,
    reads: ReadPool,
    path: PathBuf,
}

/// The SQLite ledger store; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/ledger.db` and starts the writer
    /// thread.
    pub fn open(dir: &Path) -> Result<SqliteStore, LedgerError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let conn = open_conn(&path)?;
        init_schema(&conn)?;
        let writer = GroupCommit::start("brume-ledger-writer", MAX_BATCH_ROWS, Writer { conn })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer,
                reads: ReadPool::new(&path, &options(), ReadPool::DEFAULT_SIZE),
                path,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn submit(&self, op: Op) -> Result<(), LedgerError> {
        let (done, wait) = oneshot::channel();
        self.inner
            .writer
            .send(Request { op, done })
            .map_err(|_| LedgerError::Closed)?;
        wait.await.map_err(|_| LedgerError::Closed)?
    }

    /// Runs a read on a blocking thread, with a pooled connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        self.inner.reads.read(f).await
    }

    /// Stops accepting writes; the writer thread ends once the queued ones
    /// are committed. (Dropping every clone does the same.)
    pub fn close(&self) {
        self.inner.writer.close();
    }
}

impl LedgerStore for SqliteStore {
    fn append(&self, rows: Vec<LedgerRow>) -> LedgerFuture<'_, ()> {
        Box::pin(async move {
            match append_op(&rows)? {
                Some(op) => self.submit(op).await,
                None => Ok(()),
            }
        })
    }

    fn append_sealed(&self, rows: Vec<SealedRow>) -> LedgerFuture<'_, ()> {
        Box::pin(async move {
            match append_sealed_op(&rows)? {
                Some(op) => self.submit(op).await,
                None => Ok(()),
            }
        })
    }

    fn get<'a>(&'a self, work_id: &'a str, private: bool) -> LedgerFuture<'a, Option<LedgerRow>> {
        let work_id = work_id.to_string();
        Box::pin(self.read(move |conn| {
            let cols = if private {
                SELECT_COLS
            } else {
                SELECT_PUBLIC_COLS
            };
            let sql = format!("SELECT {cols} FROM ledger_rows WHERE work_id = ?1");
            let mut stmt = conn.prepare_cached(&sql)?;
            let raw = stmt.query_row([&work_id], RawRow::read).optional()?;
            raw.map(|r| r.decode(private)).transpose()
        }))
    }

    fn list(&self, query: ListQuery) -> LedgerFuture<'_, Page> {
        Box::pin(self.read(move |conn| list(conn, &query)))
    }

    fn set_status(&self, update: StatusUpdate) -> LedgerFuture<'_, ()> {
        Box::pin(async move { self.submit(status_op(update)?).await })
    }

    fn status_page(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> LedgerFuture<'_, Vec<(String, EntityStatus)>> {
        Box::pin(self.read(move |conn| {
            let (work, entity) = after.unwrap_or_default();
            let mut stmt = conn.prepare_cached(
                "SELECT work_id, entity, status, settling_tx, updated_ms FROM ledger_status
                 WHERE (work_id, entity) > (?1, ?2) ORDER BY work_id, entity LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![work, entity, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (work_id, entity, status, settling_tx, updated_ms) = row?;
                let status = PaymentStatus::parse(&status).ok_or_else(|| LedgerError::Corrupt {
                    work_id: work_id.clone(),
                    detail: format!("status {status:?}"),
                })?;
                out.push((
                    work_id,
                    EntityStatus {
                        entity,
                        status,
                        settling_tx,
                        updated_ms: from_i64(updated_ms),
                    },
                ));
            }
            Ok(out)
        }))
    }

    fn statuses<'a>(&'a self, work_id: &'a str) -> LedgerFuture<'a, Vec<EntityStatus>> {
        let work_id = work_id.to_string();
        Box::pin(self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT entity, status, settling_tx, updated_ms FROM ledger_status
                 WHERE work_id = ?1 ORDER BY entity",
            )?;
            let rows = stmt.query_map([&work_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (entity, status, settling_tx, updated_ms) = row?;
                let status = PaymentStatus::parse(&status).ok_or_else(|| LedgerError::Corrupt {
                    work_id: work_id.clone(),
                    detail: format!("status {status:?}"),
                })?;
                out.push(EntityStatus {
                    entity,
                    status,
                    settling_tx,
                    updated_ms: from_i64(updated_ms),
                });
            }
            Ok(out)
        }))
    }

    fn aggregate(&self, filter: RowFilter) -> LedgerFuture<'_, AggregateSummary> {
        Box::pin(self.read(move |conn| {
            let (sql, args) = filter_sql("work_id, row_hash", &filter, None, None);
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
            let mut summary = AggregateSummary::default();
            while let Some(r) = rows.next()? {
                let hash: Vec<u8> = r.get(1)?;
                let hash = Hash32::from_slice(&hash).ok_or_else(|| LedgerError::Corrupt {
                    work_id: r.get::<_, String>(0).unwrap_or_default(),
                    detail: "row_hash is not 32 bytes".into(),
                })?;
                summary.aggregate.add(&hash.0);
                summary.rows += 1;
            }
            Ok(summary)
        }))
    }

    fn scan(&self, after: u64, limit: usize) -> LedgerFuture<'_, Vec<(u64, LedgerRow)>> {
        let limit = limit.clamp(1, MAX_SCAN);
        Box::pin(self.read(move |conn| {
            // The rowid is the sequence number: rows are never deleted, so
            // SQLite gives each new row max(rowid) + 1.
            let sql = format!(
                "SELECT rowid, {SELECT_PUBLIC_COLS} FROM ledger_rows WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![i64::try_from(after).unwrap_or(i64::MAX), limit as i64])?;
            let mut out = Vec::with_capacity(limit);
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let raw = RawRow::read_at(r, 1)?;
                out.push((u64::try_from(seq).unwrap_or_default(), raw.decode(false)?));
            }
            Ok(out)
        }))
    }
}

/// The writer's op for an append call (checked, hashed, serialised by the
/// caller's task); `None` for no rows.
fn append_op(rows: &[LedgerRow]) -> Result<Option<Op>, LedgerError> {
    if rows.is_empty() {
        return Ok(None);
    }
    check_unique(rows.iter())?;
    let encoded = rows.iter().map(encode_row).collect::<Result<_, _>>()?;
    Ok(Some(Op::Append(encoded)))
}

/// [`append_op`] for rows sealed by construction (no second hashing).
fn append_sealed_op(rows: &[SealedRow]) -> Result<Option<Op>, LedgerError> {
    if rows.is_empty() {
        return Ok(None);
    }
    check_unique(rows.iter().map(SealedRow::row))?;
    Ok(Some(Op::Append(
        rows.iter().map(|r| encode_sealed(r.row())).collect(),
    )))
}

/// The writer's op for a status update, its entity checked.
fn status_op(update: StatusUpdate) -> Result<Op, LedgerError> {
    if update.entity.is_empty() || update.entity.len() > crate::row::MAX_ID_BYTES {
        return Err(LedgerError::InvalidRow {
            column: "entity".into(),
            reason: "1 to 256 bytes".into(),
        });
    }
    Ok(Op::Status(update, to_i64(now_ms())))
}

/// Fails a call whose rows repeat a work id (before it is queued).
fn check_unique<'a>(rows: impl ExactSizeIterator<Item = &'a LedgerRow>) -> Result<(), LedgerError> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    for r in rows {
        if !seen.insert(r.data.work_id.as_str()) {
            return Err(LedgerError::DuplicateWorkId(r.data.work_id.clone()));
        }
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A query argument.
#[derive(Debug)]
enum Arg {
    Int(i64),
    Text(String),
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Int(n) => n.to_sql(),
            Arg::Text(s) => s.to_sql(),
        }
    }
}

/// `SELECT cols FROM ledger_rows WHERE <filter> [AND after cursor] ORDER BY
/// timestamp_ms, work_id [LIMIT n]`.
fn filter_sql(
    cols: &str,
    f: &RowFilter,
    after: Option<(i64, String)>,
    limit: Option<usize>,
) -> (String, Vec<Arg>) {
    let mut sql = format!("SELECT {cols} FROM ledger_rows WHERE TRUE");
    let mut args = Vec::new();
    let mut arg = |sql: &mut String, cond: &str, a: Arg| {
        args.push(a);
        sql.push_str(&cond.replace('?', &format!("?{}", args.len())));
    };
    if let Some(account) = &f.account {
        arg(&mut sql, " AND requester = ?", Arg::Text(account.clone()));
    }
    if let Some(from) = f.from_ms {
        arg(
            &mut sql,
            " AND timestamp_ms >= ?",
            Arg::Int(to_i64(from.min(i64::MAX as u64))),
        );
    }
    if let Some(to) = f.to_ms {
        arg(
            &mut sql,
            " AND timestamp_ms < ?",
            Arg::Int(to_i64(to.min(i64::MAX as u64))),
        );
    }
    if let Some((ts, id)) = after {
        args.push(Arg::Int(ts));
        args.push(Arg::Text(id));
        let n = args.len();
        sql.push_str(&format!(
            " AND (timestamp_ms, work_id) > (?{}, ?{n})",
            n - 1
        ));
    }
    sql.push_str(" ORDER BY timestamp_ms, work_id");
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    (sql, args)
}

fn parse_cursor(s: &str) -> Result<(i64, String), LedgerError> {
    let (ts, id) = s.split_once(':').ok_or(LedgerError::InvalidCursor)?;
    let ts = ts.parse::<i64>().map_err(|_| LedgerError::InvalidCursor)?;
    Ok((ts, id.to_string()))
}

fn list(conn: &Connection, q: &ListQuery) -> Result<Page, LedgerError> {
    let limit = match q.limit {
        None | Some(0) => DEFAULT_PAGE,
        Some(n) => n.min(MAX_PAGE),
    };
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let cols = if q.private {
        SELECT_COLS
    } else {
        SELECT_PUBLIC_COLS
    };
    let (sql, args) = filter_sql(cols, &q.filter, after, Some(limit));
    let mut stmt = conn.prepare_cached(&sql)?;
    let raws = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), RawRow::read)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut page = Page::default();
    if raws.len() == limit
        && let Some(last) = raws.last()
    {
        page.next_cursor = Some(format!(
            "{}:{}",
            last.timestamp_ms.unwrap_or_default(),
            last.work_id()
        ));
    }
    for raw in raws {
        let work_id = raw.work_id();
        match raw.decode(q.private) {
            Ok(row) => page.rows.push(row),
            Err(e) => page.corrupt.push(CorruptRow {
                work_id,
                detail: e.to_string(),
            }),
        }
    }
    Ok(page)
}

/// A row as stored, before decoding. Every column is read as it is, whatever
/// its type, so that a tampered column makes the row corrupt rather than
/// failing the whole query.
struct RawRow {
    work_id: Vec<u8>,
    timestamp_ms: Option<i64>,
    requester: Vec<u8>,
    provider: Vec<u8>,
    fuel: Option<i64>,
    row_hash: Vec<u8>,
    data: Vec<u8>,
    private: Vec<u8>,
}

/// The bytes of a text or blob value (empty for anything else).
fn raw_bytes(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Vec<u8>> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(i)? {
        ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
        _ => Vec::new(),
    })
}

fn raw_int(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<i64>> {
    Ok(match r.get_ref(i)? {
        rusqlite::types::ValueRef::Integer(n) => Some(n),
        _ => None,
    })
}

impl RawRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        RawRow::read_at(r, 0)
    }

    /// The row's columns starting at column `at` (`SELECT_COLS` order).
    fn read_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            work_id: raw_bytes(r, at)?,
            timestamp_ms: raw_int(r, at + 1)?,
            requester: raw_bytes(r, at + 2)?,
            provider: raw_bytes(r, at + 3)?,
            fuel: raw_int(r, at + 4)?,
            row_hash: raw_bytes(r, at + 5)?,
            data: raw_bytes(r, at + 6)?,
            private: raw_bytes(r, at + 7)?,
        })
    }

    fn work_id(&self) -> String {
        String::from_utf8_lossy(&self.work_id).into_owned()
    }

    fn decode(self, private: bool) -> Result<LedgerRow, LedgerError> {
        let work_id = self.work_id();
        let corrupt = |detail: String| LedgerError::Corrupt {
            work_id: work_id.clone(),
            detail,
        };
        let text = |b: Vec<u8>, name: &str| {
            String::from_utf8(b).map_err(|_| corrupt(format!("{name} is not UTF-8 text")))
        };
        let int = |n: Option<i64>, name: &str| {
            n.map(from_i64)
                .ok_or_else(|| corrupt(format!("{name} is not an integer")))
        };
        let row_hash = Hash32::from_slice(&self.row_hash)
            .ok_or_else(|| corrupt("row_hash is not 32 bytes".into()))?;
        let d = codec::decode_data(&self.data).map_err(|e| corrupt(format!("data: {e}")))?;
        let private = if private {
            Some(
                codec::decode_private(&self.private)
                    .map_err(|e| corrupt(format!("private: {e}")))?,
            )
        } else {
            None
        };
        let [wall_us, peak_memory_bytes, bytes_in, bytes_out] = d.usage;
        Ok(LedgerRow {
            data: RowData {
                schema_version: d.schema_version,
                work_id: text(self.work_id, "work_id")?,
                timestamp_ms: int(self.timestamp_ms, "timestamp_ms")?,
                requester: text(self.requester, "requester")?,
                end_user: d.end_user,
                provider: text(self.provider, "provider")?,
                developer: d.developer,
                operator: d.operator,
                charities: d.charities,
                service_digest: d.service_digest,
                tier: d.tier,
                usage: RowUsage {
                    fuel: int(self.fuel, "fuel")?,
                    wall_us,
                    peak_memory_bytes,
                    bytes_in,
                    bytes_out,
                    gpu_flop: d.gpu_flop,
                },
                fee_currency: d.fee_currency,
                fee_micros: d.fee_micros,
                token_amount: d.token_amount,
                surcharge: d.surcharge,
                rate: d.rate,
                payers: d.payers,
                payouts: d.payouts,
                price_multiplier_ppm: d.price_multiplier_ppm,
                utilisation_ppm: d.utilisation_ppm,
            },
            private_hash: d.private_hash,
            custom_hash: d.custom_hash,
            row_hash,
            private,
        })
    }
}

/// The writer thread's state: the write connection.
struct Writer {
    conn: Connection,
}

impl Handler for Writer {
    type Request = Request;

    /// Batches are bounded by rows ([`MAX_BATCH_ROWS`]).
    fn weight(&self, r: &Request) -> usize {
        r.op.rows()
    }

    fn handle(&mut self, batch: Vec<Request>) -> ControlFlow<()> {
        let (ops, dones): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.done)).unzip();
        answer(dones, commit_batch(&mut self.conn, &ops));
        ControlFlow::Continue(())
    }
}

/// Answers a batch's callers, in order: each its own result, or all the
/// batch's failure.
pub(crate) fn answer(
    dones: Vec<oneshot::Sender<Result<(), LedgerError>>>,
    results: Result<Vec<Result<(), LedgerError>>, LedgerError>,
) {
    match results {
        Ok(results) => {
            for (done, r) in dones.into_iter().zip(results) {
                let _ = done.send(r);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for done in dones {
                let _ = done.send(Err(LedgerError::Storage(msg.clone())));
            }
        }
    }
}

/// Runs every op in one transaction and commits once. Each op is atomic on
/// its own, so that a failing op (a duplicate work id, an unknown row)
/// leaves the others intact: an append of at most [`ROWS_PER_INSERT`] rows
/// is one statement, which SQLite rolls back alone when it fails; a larger
/// append or a status update runs under a savepoint. Returns each op's
/// outcome; `Err` if the batch failed as a whole (a storage error: then
/// nothing was committed).
fn commit_batch(
    conn: &mut Connection,
    ops: &[Op],
) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let r = match op {
            Op::Append(rows) if rows.len() <= ROWS_PER_INSERT => match insert_rows(&tx, rows) {
                Ok(()) => Ok(()),
                Err(e) if is_duplicate(&e) => Err(find_duplicate(&tx, rows)),
                Err(e) => return Err(e.into()),
            },
            Op::Append(rows) => in_savepoint(&tx, |tx| {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    match insert_rows(tx, chunk) {
                        Ok(()) => {}
                        Err(e) if is_duplicate(&e) => return Ok(Err(())),
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Ok(()))
            })?
            .map_err(|()| find_duplicate(&tx, rows)),
            Op::Status(u, now) => in_savepoint(&tx, |tx| Ok(apply_status(tx, u, *now)))?,
        };
        results.push(r);
    }
    tx.commit()?;
    Ok(results)
}

/// Runs `f` under a savepoint, rolled back if `f` returns `Ok(Err(_))`.
fn in_savepoint<T, E>(
    tx: &rusqlite::Transaction<'_>,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<Result<T, E>, LedgerError>,
) -> Result<Result<T, E>, LedgerError> {
    tx.prepare_cached("SAVEPOINT op")?.execute([])?;
    let r = f(tx)?;
    if r.is_err() {
        tx.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    tx.prepare_cached("RELEASE op")?.execute([])?;
    Ok(r)
}

/// One multi-row `INSERT` of 1 to [`ROWS_PER_INSERT`] rows.
fn insert_rows(tx: &rusqlite::Transaction<'_>, rows: &[EncodedRow]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(insert_sql(rows.len()))?;
    let mut i = 1;
    for r in rows {
        stmt.raw_bind_parameter(i, r.work_id.as_str())?;
        stmt.raw_bind_parameter(i + 1, r.timestamp_ms)?;
        stmt.raw_bind_parameter(i + 2, r.requester.as_str())?;
        stmt.raw_bind_parameter(i + 3, r.provider.as_str())?;
        stmt.raw_bind_parameter(i + 4, r.fuel)?;
        stmt.raw_bind_parameter(i + 5, &r.row_hash[..])?;
        stmt.raw_bind_parameter(i + 6, &r.data[..])?;
        stmt.raw_bind_parameter(i + 7, &r.private[..])?;
        i += 8;
    }
    stmt.raw_execute()?;
    Ok(())
}

/// The insert of a work id already stored: refused by the trigger (or, were
/// it dropped, by the unique index).
fn is_duplicate(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg)) => {
            f.code == rusqlite::ErrorCode::ConstraintViolation
                && (msg.contains("duplicate work id") || msg.contains("ledger_rows.work_id"))
        }
        _ => false,
    }
}

/// Which work id of a refused append is taken (the append was rolled back):
/// one that repeats in the call, or one already stored.
fn find_duplicate(tx: &rusqlite::Transaction<'_>, rows: &[EncodedRow]) -> LedgerError {
    let mut seen = std::collections::HashSet::new();
    if let Some(r) = rows.iter().find(|r| !seen.insert(r.work_id.as_str())) {
        return LedgerError::DuplicateWorkId(r.work_id.clone());
    }
    let stored = |id: &str| -> rusqlite::Result<bool> {
        tx.prepare_cached("SELECT 1 FROM ledger_rows WHERE work_id = ?1")?
            .exists([id])
    };
    for r in rows {
        match stored(&r.work_id) {
            Ok(true) => return LedgerError::DuplicateWorkId(r.work_id.clone()),
            Ok(false) => {}
            Err(e) => return e.into(),
        }
    }
    LedgerError::Storage("an insert was refused as a duplicate, but no work id is taken".into())
}

fn apply_status(
    tx: &rusqlite::Transaction<'_>,
    u: &StatusUpdate,
    now: i64,
) -> Result<(), LedgerError> {
    let mut exists = tx.prepare_cached("SELECT 1 FROM ledger_rows WHERE work_id = ?1")?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO ledger_status (work_id, entity, status, settling_tx, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (work_id, entity) DO UPDATE SET
             status = excluded.status, settling_tx = excluded.settling_tx,
             updated_ms = excluded.updated_ms",
    )?;
    for id in &u.work_ids {
        if !exists.exists([id])? {
            return Err(LedgerError::NotFound(id.clone()));
        }
        upsert.execute(params![id, u.entity, u.status.as_str(), u.settling_tx, now])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::example_row;

    fn row(id: &str) -> LedgerRow {
        let mut r = example_row().expect("example row");
        r.data.work_id = id.into();
        let p = r.private.take().expect("private");
        LedgerRow::seal(r.data, p).expect("seal")
    }

    fn encoded(ids: &[&str]) -> Op {
        Op::Append(
            ids.iter()
                .map(|id| encode_row(&row(id)).expect("encode"))
                .collect(),
        )
    }

    /// Ops of one group commit: a failing op rolls back alone.
    #[test]
    fn a_duplicate_fails_its_call_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_conn(&dir.path().join(DB_FILE)).expect("open");
        conn.execute_batch(SCHEMA).expect("schema");
        let ops = vec![
            encoded(&["a", "b"]),
            encoded(&["c", "a"]), // a is taken by the first call
            encoded(&["d", "d"]), // duplicate within the call
            encoded(&["e"]),
        ];
        let results = commit_batch(&mut conn, &ops).expect("commit");
        let codes: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.code()))
            .collect();
        assert_eq!(
            codes,
            [
                None,
                Some("duplicate_work_id"),
                Some("duplicate_work_id"),
                None
            ]
        );
        let mut stmt = conn
            .prepare("SELECT work_id FROM ledger_rows ORDER BY work_id")
            .expect("prepare");
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(ids, ["a", "b", "e"]);
    }

    /// A `data` blob written before format 2 (an old database) decodes as
    /// a version 1 row that still checks; a version 2 row round-trips.
    #[test]
    fn format_1_blobs_decode_as_version_1_rows() {
        let v1 = row("old");
        let mut blob = codec::data(&v1);
        // Format 3 ends in the version (1), gpu_flop (0), the multiplier
        // (10^6: 3 bytes) and the utilisation (0); format 1 has none.
        assert_eq!(blob[0], 3);
        assert_eq!(blob[blob.len() - 6..blob.len() - 4], [1, 0]);
        blob.truncate(blob.len() - 6);
        blob[0] = 1;
        let d = codec::decode_data(&blob).expect("format 1 decodes");
        assert_eq!((d.schema_version, d.gpu_flop), (1, 0));
        let mut v2 = example_row().expect("row");
        v2.data.schema_version = 2;
        v2.data.usage.gpu_flop = u128::MAX;
        let p = v2.private.take().expect("private");
        let v2 = LedgerRow::seal(v2.data, p).expect("seal");
        let d = codec::decode_data(&codec::data(&v2)).expect("format 2 decodes");
        assert_eq!((d.schema_version, d.gpu_flop), (2, u128::MAX));
        blob[0] = 4;
        assert!(
            codec::decode_data(&blob).is_err(),
            "an unknown format is corrupt"
        );
    }

    #[test]
    fn cursor_round_trip() {
        assert_eq!(parse_cursor("12:a:b").ok(), Some((12, "a:b".to_string())));
        assert!(parse_cursor("x:a").is_err());
        assert!(parse_cursor("12").is_err());
    }
}
