//! The ledger's store: the [`LedgerStore`] trait and its SQLite
//! implementation, [`SqliteStore`].
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
//! - One writer thread owns the write connection. Calls queue requests to
//!   it; it takes everything queued (up to [`MAX_BATCH_ROWS`] rows), runs it
//!   in one transaction with one savepoint per call, commits once, then
//!   answers every caller. There is no timer: the batch is whatever queued
//!   during the previous commit, so a lone write waits for one commit.
//! - Rows are checked, hashed and serialised by the caller's task; the
//!   writer only binds parameters to cached prepared statements.
//! - Reads run on `spawn_blocking` with connections of their own (a small
//!   pool), beside the writer (WAL).
//! - The database refuses changes too: triggers abort any `UPDATE` or
//!   `DELETE` of `ledger_rows` with `ledger rows are immutable`, and any
//!   insert of a work id already stored with `duplicate work id`, so that
//!   `INSERT OR REPLACE` cannot replace a row either (whatever the
//!   connection's `recursive_triggers`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::row::{
    Aggregate, ExchangeRate, Hash32, LedgerRow, PayerPart, Payout, PrivateData, RowData, RowUsage,
};

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

/// A boxed future (so that `dyn LedgerStore` works).
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// Which rows: a time range (`from_ms` inclusive, `to_ms` exclusive) and
/// optionally one requester account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptRow {
    pub work_id: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub rows: Vec<LedgerRow>,
    /// Rows in this page that could not be decoded.
    pub corrupt: Vec<CorruptRow>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// The payment status of one entity in one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub work_ids: Vec<String>,
    pub entity: String,
    pub status: PaymentStatus,
    pub settling_tx: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityStatus {
    pub entity: String,
    pub status: PaymentStatus,
    pub settling_tx: Option<String>,
    pub updated_ms: u64,
}

/// How many rows match a filter, and the XOR of their row hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateSummary {
    pub rows: u64,
    pub aggregate: Aggregate,
}

/// The ledger's storage, whatever the database.
pub trait LedgerStore: Send + Sync {
    /// Stores sealed rows (with their private columns); returns once they
    /// are durable. Atomic per call; see the module docs.
    fn append(&self, rows: Vec<LedgerRow>) -> LedgerFuture<'_, ()>;

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
}

/// The file name of the database in its directory.
pub const DB_FILE: &str = "ledger.db";

/// At most this many rows in one group commit.
pub const MAX_BATCH_ROWS: usize = 8192;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_rows (
    work_id TEXT NOT NULL UNIQUE,
    timestamp_ms INTEGER NOT NULL,
    requester TEXT NOT NULL,
    end_user TEXT NOT NULL,
    provider TEXT NOT NULL,
    developer TEXT NOT NULL,
    operator TEXT NOT NULL,
    charities TEXT NOT NULL,
    service_digest TEXT NOT NULL,
    tier TEXT NOT NULL,
    fuel INTEGER NOT NULL,
    wall_us INTEGER NOT NULL,
    peak_memory_bytes INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    fee_currency TEXT NOT NULL,
    fee_micros INTEGER NOT NULL,
    token_amount TEXT NOT NULL,
    rate_fiat_micros TEXT NOT NULL,
    rate_token_units TEXT NOT NULL,
    surcharge TEXT NOT NULL,
    payers TEXT NOT NULL,
    payouts TEXT NOT NULL,
    private_hash BLOB NOT NULL,
    custom_hash BLOB NOT NULL,
    row_hash BLOB NOT NULL,
    private TEXT NOT NULL
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
";

const INSERT_ROW: &str = "INSERT INTO ledger_rows (
    work_id, timestamp_ms, requester, end_user, provider, developer, operator, charities,
    service_digest, tier, fuel, wall_us, peak_memory_bytes, bytes_in, bytes_out,
    fee_currency, fee_micros, token_amount, rate_fiat_micros, rate_token_units, surcharge,
    payers, payouts, private_hash, custom_hash, row_hash, private
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
    ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)
ON CONFLICT (work_id) DO NOTHING";

const SELECT_COLS: &str = "work_id, timestamp_ms, requester, end_user, provider, developer,
    operator, charities, service_digest, tier, fuel, wall_us, peak_memory_bytes, bytes_in,
    bytes_out, fee_currency, fee_micros, token_amount, rate_fiat_micros, rate_token_units,
    surcharge, payers, payouts, private_hash, custom_hash, row_hash, private";

/// Opens a connection with the ledger's settings.
fn open_conn(path: &Path) -> Result<Connection, LedgerError> {
    let wrap = |e: rusqlite::Error| LedgerError::Storage(format!("{}: {e}", path.display()));
    let conn = Connection::open(path).map_err(wrap)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(wrap)?;
    conn.pragma_update(None, "recursive_triggers", "ON")
        .map_err(wrap)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// A row ready for the writer: checked, hashed, serialised.
#[derive(Debug)]
struct EncodedRow {
    work_id: String,
    timestamp_ms: i64,
    requester: String,
    end_user: String,
    provider: String,
    developer: String,
    operator: String,
    charities: String,
    service_digest: String,
    tier: String,
    usage: [i64; 5],
    fee_currency: String,
    fee_micros: i64,
    token_amount: String,
    rate: [String; 2],
    surcharge: String,
    payers: String,
    payouts: String,
    private_hash: [u8; 32],
    custom_hash: [u8; 32],
    row_hash: [u8; 32],
    private: String,
}

/// u64 columns are stored as the i64 of the same bits (SQLite integers are
/// signed); `from_i64` undoes it.
fn to_i64(n: u64) -> i64 {
    i64::from_ne_bytes(n.to_ne_bytes())
}

fn from_i64(n: i64) -> u64 {
    u64::from_ne_bytes(n.to_ne_bytes())
}

fn json<T: Serialize>(v: &T) -> Result<String, LedgerError> {
    serde_json::to_string(v).map_err(|e| LedgerError::Storage(e.to_string()))
}

/// Checks that a row's hashes are those of its content, then serialises it.
fn encode_row(row: LedgerRow) -> Result<EncodedRow, LedgerError> {
    let LedgerRow {
        data,
        private_hash,
        custom_hash,
        row_hash,
        private,
    } = row;
    let invalid = |reason: &str| LedgerError::InvalidRow {
        column: "row".into(),
        reason: format!("{}: {reason}", data.work_id),
    };
    let Some(private) = private else {
        return Err(invalid("append needs the private columns"));
    };
    // Re-seal: validates the bounds and recomputes the three hashes.
    let sealed = LedgerRow::seal(data, private)?;
    if sealed.private_hash != private_hash
        || sealed.custom_hash != custom_hash
        || sealed.row_hash != row_hash
    {
        return Err(LedgerError::InvalidRow {
            column: "row_hash".into(),
            reason: format!(
                "{}: the hashes do not match the content",
                sealed.data.work_id
            ),
        });
    }
    let LedgerRow {
        data: d, private, ..
    } = sealed;
    let private = json(&private)?;
    Ok(EncodedRow {
        charities: json(&d.charities)?,
        payers: json(&d.payers)?,
        payouts: json(&d.payouts)?,
        surcharge: d.surcharge.to_string(),
        timestamp_ms: to_i64(d.timestamp_ms),
        usage: [
            to_i64(d.usage.fuel),
            to_i64(d.usage.wall_us),
            to_i64(d.usage.peak_memory_bytes),
            to_i64(d.usage.bytes_in),
            to_i64(d.usage.bytes_out),
        ],
        fee_micros: to_i64(d.fee_micros),
        token_amount: d.token_amount.to_string(),
        rate: [
            d.rate.fiat_micros.to_string(),
            d.rate.token_units.to_string(),
        ],
        work_id: d.work_id,
        requester: d.requester,
        end_user: d.end_user,
        provider: d.provider,
        developer: d.developer,
        operator: d.operator,
        service_digest: d.service_digest,
        tier: d.tier,
        fee_currency: d.fee_currency,
        private_hash: private_hash.0,
        custom_hash: custom_hash.0,
        row_hash: row_hash.0,
        private,
    })
}

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
    tx: Mutex<Option<std::sync::mpsc::Sender<Request>>>,
    readers: Mutex<Vec<Connection>>,
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
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("brume-ledger-writer".into())
            .spawn(move || writer(conn, &rx))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
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
        {
            let tx = self.inner.tx.lock().unwrap_or_else(|p| p.into_inner());
            let tx = tx.as_ref().ok_or(LedgerError::Closed)?;
            tx.send(Request { op, done })
                .map_err(|_| LedgerError::Closed)?;
        }
        wait.await.map_err(|_| LedgerError::Closed)?
    }

    /// Runs a read on a blocking thread, with a pooled connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(&inner.path)?,
            };
            let out = f(&conn);
            let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < 8 {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|_| LedgerError::Closed)?
    }

    /// Stops accepting writes; the writer thread ends once the queued ones
    /// are committed. (Dropping every clone does the same.)
    pub fn close(&self) {
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

impl LedgerStore for SqliteStore {
    fn append(&self, rows: Vec<LedgerRow>) -> LedgerFuture<'_, ()> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let encoded = rows.into_iter().map(encode_row).collect::<Result<_, _>>()?;
            self.submit(Op::Append(encoded)).await
        })
    }

    fn get<'a>(&'a self, work_id: &'a str, private: bool) -> LedgerFuture<'a, Option<LedgerRow>> {
        let work_id = work_id.to_string();
        Box::pin(self.read(move |conn| {
            let sql = format!("SELECT {SELECT_COLS} FROM ledger_rows WHERE work_id = ?1");
            let mut stmt = conn.prepare_cached(&sql)?;
            let raw = stmt.query_row([&work_id], RawRow::read).optional()?;
            raw.map(|r| r.decode(private)).transpose()
        }))
    }

    fn list(&self, query: ListQuery) -> LedgerFuture<'_, Page> {
        Box::pin(self.read(move |conn| list(conn, &query)))
    }

    fn set_status(&self, update: StatusUpdate) -> LedgerFuture<'_, ()> {
        Box::pin(async move {
            if update.entity.is_empty() || update.entity.len() > crate::row::MAX_ID_BYTES {
                return Err(LedgerError::InvalidRow {
                    column: "entity".into(),
                    reason: "1 to 256 bytes".into(),
                });
            }
            self.submit(Op::Status(update, to_i64(now_ms()))).await
        })
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
    let mut sql = format!("SELECT {cols} FROM ledger_rows WHERE 1");
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
    let (sql, args) = filter_sql(SELECT_COLS, &q.filter, after, Some(limit));
    let mut stmt = conn.prepare_cached(&sql)?;
    let raws = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), RawRow::read)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut page = Page::default();
    if raws.len() == limit
        && let Some(last) = raws.last()
    {
        page.next_cursor = Some(format!("{}:{}", last.timestamp_ms, last.work_id));
    }
    for raw in raws {
        let work_id = raw.work_id.clone();
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

/// A row as stored, before decoding.
struct RawRow {
    work_id: String,
    timestamp_ms: i64,
    text: [String; 7],
    charities: String,
    usage: [i64; 5],
    fee_currency: String,
    fee_micros: i64,
    token_amount: String,
    rate: [String; 2],
    surcharge: String,
    payers: String,
    payouts: String,
    hashes: [Vec<u8>; 3],
    private: String,
}

impl RawRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            work_id: r.get(0)?,
            timestamp_ms: r.get(1)?,
            // requester, end_user, provider, developer, operator,
            // service_digest, tier
            text: [
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(8)?,
                r.get(9)?,
            ],
            charities: r.get(7)?,
            usage: [r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?],
            fee_currency: r.get(15)?,
            fee_micros: r.get(16)?,
            token_amount: r.get(17)?,
            rate: [r.get(18)?, r.get(19)?],
            surcharge: r.get(20)?,
            payers: r.get(21)?,
            payouts: r.get(22)?,
            hashes: [r.get(23)?, r.get(24)?, r.get(25)?],
            private: r.get(26)?,
        })
    }

    fn decode(self, private: bool) -> Result<LedgerRow, LedgerError> {
        let work_id = self.work_id;
        let corrupt = |detail: String| LedgerError::Corrupt {
            work_id: work_id.clone(),
            detail,
        };
        let hash = |i: usize, name: &str| {
            Hash32::from_slice(&self.hashes[i])
                .ok_or_else(|| corrupt(format!("{name} is not 32 bytes")))
        };
        let uint = |s: &str, name: &str| {
            s.parse::<u128>()
                .map_err(|_| corrupt(format!("{name} is not an integer")))
        };
        let [private_hash, custom_hash, row_hash] = [
            hash(0, "private_hash")?,
            hash(1, "custom_hash")?,
            hash(2, "row_hash")?,
        ];
        let charities: Vec<String> = serde_json::from_str(&self.charities)
            .map_err(|e| corrupt(format!("charities: {e}")))?;
        let payouts: Vec<Payout> =
            serde_json::from_str(&self.payouts).map_err(|e| corrupt(format!("payouts: {e}")))?;
        let payers: Vec<PayerPart> =
            serde_json::from_str(&self.payers).map_err(|e| corrupt(format!("payers: {e}")))?;
        let surcharge = uint(&self.surcharge, "surcharge")?;
        let private = if private {
            Some(
                serde_json::from_str::<PrivateData>(&self.private)
                    .map_err(|e| corrupt(format!("private: {e}")))?,
            )
        } else {
            None
        };
        let token_amount = uint(&self.token_amount, "token_amount")?;
        let rate = ExchangeRate {
            fiat_micros: uint(&self.rate[0], "rate_fiat_micros")?,
            token_units: uint(&self.rate[1], "rate_token_units")?,
        };
        let [
            requester,
            end_user,
            provider,
            developer,
            operator,
            service_digest,
            tier,
        ] = self.text;
        let [fuel, wall_us, peak_memory_bytes, bytes_in, bytes_out] = self.usage.map(from_i64);
        Ok(LedgerRow {
            data: RowData {
                work_id: work_id.clone(),
                timestamp_ms: from_i64(self.timestamp_ms),
                requester,
                end_user,
                provider,
                developer,
                operator,
                charities,
                service_digest,
                tier,
                usage: RowUsage {
                    fuel,
                    wall_us,
                    peak_memory_bytes,
                    bytes_in,
                    bytes_out,
                },
                fee_currency: self.fee_currency,
                fee_micros: from_i64(self.fee_micros),
                token_amount,
                surcharge,
                rate,
                payers,
                payouts,
            },
            private_hash,
            custom_hash,
            row_hash,
            private,
        })
    }
}

fn writer(mut conn: Connection, rx: &std::sync::mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut rows = first.op.rows();
        let mut batch = vec![first];
        while rows < MAX_BATCH_ROWS {
            match rx.try_recv() {
                Ok(r) => {
                    rows += r.op.rows();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let (ops, dones): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.done)).unzip();
        match commit_batch(&mut conn, &ops) {
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
}

/// Runs every op in one transaction, each under a savepoint so that a
/// failing op (a duplicate work id, an unknown row) leaves the others
/// intact, and commits once. Returns each op's outcome; `Err` if the
/// transaction itself failed (then nothing was committed).
fn commit_batch(
    conn: &mut Connection,
    ops: &[Op],
) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        tx.prepare_cached("SAVEPOINT op")?.execute([])?;
        let r = match op {
            Op::Append(rows) => append_rows(&tx, rows),
            Op::Status(u, now) => apply_status(&tx, u, *now),
        };
        if r.is_err() {
            tx.prepare_cached("ROLLBACK TO op")?.execute([])?;
        }
        tx.prepare_cached("RELEASE op")?.execute([])?;
        results.push(r);
    }
    tx.commit()?;
    Ok(results)
}

fn append_rows(tx: &rusqlite::Transaction<'_>, rows: &[EncodedRow]) -> Result<(), LedgerError> {
    let mut stmt = tx.prepare_cached(INSERT_ROW)?;
    for r in rows {
        let n = match stmt.execute(params![
            r.work_id,
            r.timestamp_ms,
            r.requester,
            r.end_user,
            r.provider,
            r.developer,
            r.operator,
            r.charities,
            r.service_digest,
            r.tier,
            r.usage[0],
            r.usage[1],
            r.usage[2],
            r.usage[3],
            r.usage[4],
            r.fee_currency,
            r.fee_micros,
            r.token_amount,
            r.rate[0],
            r.rate[1],
            r.surcharge,
            r.payers,
            r.payouts,
            &r.private_hash[..],
            &r.custom_hash[..],
            &r.row_hash[..],
            r.private,
        ]) {
            Ok(n) => n,
            Err(e) if e.to_string().contains("duplicate work id") => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(LedgerError::DuplicateWorkId(r.work_id.clone()));
        }
    }
    Ok(())
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
                .map(|id| encode_row(row(id)).expect("encode"))
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

    #[test]
    fn cursor_round_trip() {
        assert_eq!(parse_cursor("12:a:b").ok(), Some((12, "a:b".to_string())));
        assert!(parse_cursor("x:a").is_err());
        assert!(parse_cursor("12").is_err());
    }
}
