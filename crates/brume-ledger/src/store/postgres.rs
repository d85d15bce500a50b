//! The PostgreSQL ledger store, [`PgStore`]: the same [`LedgerStore`]
//! guarantees as [`SqliteStore`](super::SqliteStore), on a server.
//!
//! - **Layout** (component `ledger`, versioned by [`brume_pg::migrate`]):
//!   `ledger_rows` has the same columns as SQLite's, plus `seq`, an
//!   identity that [`scan`](LedgerStore::scan) reads in order. Text that
//!   queries sort on is `COLLATE "C"` (byte order, as in SQLite), so pages
//!   and cursors are the same on both backends.
//! - **Immutability in the database.** Triggers raise `ledger rows are
//!   immutable` on any `UPDATE`, `DELETE` or `TRUNCATE` of `ledger_rows`,
//!   and the migration revokes those privileges from `PUBLIC` and from the
//!   owner itself. A broker should connect as a role that owns nothing and
//!   holds only what [`APP_GRANTS`] grants ([`PgStore::grant`]).
//! - **Writes** go to one writer task that owns two connections: it takes
//!   everything queued (up to [`MAX_BATCH_ROWS`] rows) and runs it in one
//!   transaction, copying a batch of appends on one connection while the
//!   previous batch commits on the other (see [`write_loop`] for why the
//!   order still holds). Consecutive appends are one binary `COPY`; if the server
//!   refuses it as a duplicate, the batch is rolled back and replayed one
//!   call at a time, each under a savepoint, so that only the calls with a
//!   taken work id fail. Status updates run under savepoints too. A call
//!   returns once `COMMIT` has returned, with `synchronous_commit` at least
//!   `on` (the writer raises a weaker session setting): the row is in the
//!   server's flushed WAL, and on its synchronous standbys if it has any.
//!   Because batches are copied, and committed, one after the other, a row
//!   committed later has a larger `seq`: one broker writes one ledger
//!   database.
//! - **Reads** are pipelined over a few connections of their own.
//! - A connection that the server dropped (a restart, a failover) is
//!   replaced on next use; the writer's batch in flight fails with a
//!   storage error (so nothing failed is acknowledged).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use brume_pg::tokio_postgres::binary_copy::BinaryCopyInWriter;
use brume_pg::tokio_postgres::types::{ToSql, Type};
use brume_pg::tokio_postgres::{Client, CopyInSink, Row, Transaction};
use brume_pg::{Migration, sqlstate};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{
    AggregateSummary, Arg, CorruptRow, DEFAULT_PAGE, EncodedRow, EntityStatus, LedgerError,
    LedgerFuture, LedgerStore, ListQuery, MAX_BATCH_ROWS, MAX_PAGE, MAX_SCAN, Op, Page,
    PaymentStatus, RawRow, RowFilter, StatusUpdate, answer, append_op, append_sealed_op,
    filter_sql, from_i64, parse_cursor, status_op,
};
use crate::row::{Hash32, LedgerRow, SealedRow};

/// The ledger's migrations (component `ledger`).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: r#"
CREATE TABLE ledger_rows (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_id TEXT COLLATE "C" NOT NULL UNIQUE,
    timestamp_ms BIGINT NOT NULL,
    requester TEXT COLLATE "C" NOT NULL,
    provider TEXT NOT NULL,
    fuel BIGINT NOT NULL,
    row_hash BYTEA NOT NULL,
    data BYTEA NOT NULL,
    private BYTEA NOT NULL
);
CREATE INDEX ledger_rows_by_time ON ledger_rows (timestamp_ms, work_id);
CREATE INDEX ledger_rows_by_requester ON ledger_rows (requester, timestamp_ms, work_id);
CREATE FUNCTION brume_ledger_rows_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are immutable';
END $$;
CREATE TRIGGER ledger_rows_no_change BEFORE UPDATE OR DELETE ON ledger_rows
    FOR EACH ROW EXECUTE FUNCTION brume_ledger_rows_immutable();
CREATE TRIGGER ledger_rows_no_truncate BEFORE TRUNCATE ON ledger_rows
    FOR EACH STATEMENT EXECUTE FUNCTION brume_ledger_rows_immutable();
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_rows FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_rows FROM CURRENT_USER;
CREATE TABLE ledger_status (
    work_id TEXT COLLATE "C" NOT NULL,
    entity TEXT COLLATE "C" NOT NULL,
    status TEXT NOT NULL,
    settling_tx TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (work_id, entity)
);
"#,
}];

/// What a broker's role needs, no more: rows can be read and added, never
/// changed; statuses can be set. `{role}` is the role.
pub const APP_GRANTS: &str = "GRANT SELECT, INSERT ON ledger_rows TO {role};
GRANT SELECT, INSERT, UPDATE ON ledger_status TO {role};
GRANT SELECT ON brume_migrations TO {role};";

/// Read connections beside the writer's.
const READERS: usize = 4;

/// The columns a `COPY` fills, and their types.
const COPY_SQL: &str = "COPY ledger_rows (work_id, timestamp_ms, requester, provider, fuel, \
                        row_hash, data, private) FROM STDIN (FORMAT binary)";
const COPY_TYPES: [Type; 8] = [
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::BYTEA,
    Type::BYTEA,
    Type::BYTEA,
];

/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

impl From<brume_pg::tokio_postgres::Error> for LedgerError {
    fn from(e: brume_pg::tokio_postgres::Error) -> LedgerError {
        LedgerError::Storage(match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        })
    }
}

impl From<brume_pg::Error> for LedgerError {
    fn from(e: brume_pg::Error) -> LedgerError {
        LedgerError::Storage(e.to_string())
    }
}

/// A connection that is replaced when the server has dropped it.
struct Conn {
    url: String,
    client: parking_lot::Mutex<Option<Arc<Client>>>,
}

impl Conn {
    async fn get(&self) -> Result<Arc<Client>, LedgerError> {
        if let Some(c) = self.client.lock().as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(brume_pg::connect(&self.url).await?);
        *self.client.lock() = Some(c.clone());
        Ok(c)
    }
}

struct Request {
    op: Op,
    done: oneshot::Sender<Result<(), LedgerError>>,
}

struct Inner {
    writer: mpsc::UnboundedSender<Request>,
    readers: Vec<Conn>,
    next: AtomicUsize,
    url: String,
}

/// The PostgreSQL ledger store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url`, brings the ledger's tables to the newest layout
    /// (if this role may; a role that owns nothing needs them current), and
    /// starts the writer task on the current runtime.
    pub async fn open(url: &str) -> Result<PgStore, LedgerError> {
        let mut writer = brume_pg::connect(url).await.map_err(|e| {
            LedgerError::Storage(format!("ledger database {}: {e}", brume_pg::redacted(url)))
        })?;
        brume_pg::migrate(&mut writer, "ledger", MIGRATIONS).await?;
        brume_pg::durable_commits(&writer).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writers = vec![
            Writer {
                url: url.to_string(),
                client: Some(writer),
            },
            Writer {
                url: url.to_string(),
                client: None,
            },
        ];
        tokio::spawn(write_loop(writers, rx));
        let readers = (0..READERS)
            .map(|_| Conn {
                url: url.to_string(),
                client: parking_lot::Mutex::new(None),
            })
            .collect();
        Ok(PgStore {
            inner: Arc::new(Inner {
                writer: tx,
                readers,
                next: AtomicUsize::new(0),
                url: url.to_string(),
            }),
        })
    }

    /// Grants `role` what a broker needs (see [`APP_GRANTS`]); run as the
    /// tables' owner, after [`open`](Self::open) created them.
    pub async fn grant(owner_url: &str, role: &str) -> Result<(), LedgerError> {
        if role.is_empty() || !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(LedgerError::InvalidRow {
                column: "role".into(),
                reason: "letters, digits and _ only".into(),
            });
        }
        let client = brume_pg::connect(owner_url).await?;
        client
            .batch_execute(&APP_GRANTS.replace("{role}", role))
            .await?;
        Ok(())
    }

    /// The URL it connects to, without its password.
    pub fn url(&self) -> String {
        brume_pg::redacted(&self.inner.url)
    }

    async fn submit(&self, op: Op) -> Result<(), LedgerError> {
        let (done, wait) = oneshot::channel();
        self.inner
            .writer
            .send(Request { op, done })
            .map_err(|_| LedgerError::Closed)?;
        wait.await.map_err(|_| LedgerError::Closed)?
    }

    async fn reader(&self) -> Result<Arc<Client>, LedgerError> {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % READERS;
        self.inner.readers[i].get().await
    }
}

struct Writer {
    url: String,
    client: Option<Client>,
}

impl Writer {
    async fn client(&mut self) -> Result<&mut Client, LedgerError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let c = brume_pg::connect(&self.url).await?;
            brume_pg::durable_commits(&c).await?;
            self.client = Some(c);
        }
        self.client
            .as_mut()
            .ok_or_else(|| LedgerError::Storage("no connection".into()))
    }
}

/// Takes everything queued (up to [`MAX_BATCH_ROWS`] rows), commits it
/// once, answers every caller; until every sender is gone.
///
/// Two connections take turns so that a batch of appends is copied while
/// the previous batch's `COMMIT` waits for its WAL flush. The order holds:
/// a batch's `COPY` starts once the previous one's has ended (so its rows
/// have larger `seq`s), and its `COMMIT` is sent once the previous one's
/// has returned (so rows become visible in `seq` order, as
/// [`scan`](LedgerStore::scan) needs). Any other batch waits for the
/// commit in flight and runs alone.
async fn write_loop(mut idle: Vec<Writer>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let url = idle.first().map(|w| w.url.clone()).unwrap_or_default();
    let mut inflight: Option<tokio::task::JoinHandle<Writer>> = None;
    while let Some(first) = rx.recv().await {
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
        let mut w = match idle.pop() {
            Some(w) => w,
            None => landed(&mut inflight, &url).await,
        };
        let copied = if ops.iter().all(|op| matches!(op, Op::Append(_))) {
            Some(begin_and_copy(&mut w, &ops).await)
        } else {
            None
        };
        // Whatever this batch is, the previous one commits first.
        if inflight.is_some() {
            idle.push(landed(&mut inflight, &url).await);
        }
        match copied {
            Some(Copied::Done) => {
                let n = ops.len();
                inflight = Some(tokio::spawn(async move {
                    let committed = match w.client.as_ref() {
                        Some(c) => c.batch_execute("COMMIT").await.map_err(LedgerError::from),
                        None => Err(LedgerError::Storage("no connection".into())),
                    };
                    answer(dones, committed.map(|()| (0..n).map(|_| Ok(())).collect()));
                    w
                }));
            }
            Some(Copied::Duplicate) => {
                rollback(&mut w).await;
                let results = match w.client().await {
                    Ok(client) => replay(client, &ops).await,
                    Err(e) => Err(e),
                };
                answer(dones, results);
                idle.push(w);
            }
            Some(Copied::Failed(e)) => {
                rollback(&mut w).await;
                answer(dones, Err(e));
                idle.push(w);
            }
            None => {
                answer(dones, commit(&mut w, &ops).await);
                idle.push(w);
            }
        }
    }
    if inflight.is_some() {
        landed(&mut inflight, &url).await;
    }
}

/// Waits for the commit in flight; its connection (a fresh one to
/// connect, should its task have died).
async fn landed(inflight: &mut Option<tokio::task::JoinHandle<Writer>>, url: &str) -> Writer {
    let fresh = || Writer {
        url: url.to_string(),
        client: None,
    };
    match inflight.take() {
        Some(task) => task.await.unwrap_or_else(|_| fresh()),
        None => fresh(),
    }
}

/// How [`begin_and_copy`] went.
enum Copied {
    /// In an open transaction, to commit.
    Done,
    /// A work id is taken: roll back and replay call by call.
    Duplicate,
    Failed(LedgerError),
}

/// Opens a transaction and copies every row of `ops` (appends only) in
/// one `COPY`; the caller commits or rolls back.
async fn begin_and_copy(w: &mut Writer, ops: &[Op]) -> Copied {
    let client = match w.client().await {
        Ok(c) => c,
        Err(e) => return Copied::Failed(e),
    };
    let rows = ops.iter().flat_map(|op| match op {
        Op::Append(rows) => rows.as_slice(),
        Op::Status(..) => &[],
    });
    let copied = async {
        client.batch_execute("BEGIN").await?;
        copy_rows(client.copy_in(COPY_SQL).await?, rows).await
    };
    match copied.await {
        Ok(()) => Copied::Done,
        Err(e) if sqlstate(&e) == Some(UNIQUE_VIOLATION) => Copied::Duplicate,
        Err(e) => Copied::Failed(e.into()),
    }
}

/// Ends a failed transaction; a connection that can't is dropped (and
/// replaced on next use).
async fn rollback(w: &mut Writer) {
    let ok = match w.client.as_ref() {
        Some(c) => c.batch_execute("ROLLBACK").await.is_ok(),
        None => true,
    };
    if !ok {
        w.client = None;
    }
}

/// One transaction for a batch with status updates: the fast path copies
/// runs of appends in one `COPY` each; a duplicate anywhere replays the
/// batch call by call.
async fn commit(w: &mut Writer, ops: &[Op]) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
    let client = w.client().await?;
    let mut tx = client.transaction().await?;
    match fast_batch(&mut tx, ops).await {
        Ok(results) => {
            tx.commit().await?;
            return Ok(results);
        }
        Err(e) if sqlstate(&e) == Some(UNIQUE_VIOLATION) => tx.rollback().await?,
        Err(e) => return Err(e.into()),
    }
    replay(client, ops).await
}

/// The batch again, one call at a time under savepoints, in one
/// transaction: only the calls with a taken work id fail.
async fn replay(
    client: &mut Client,
    ops: &[Op],
) -> Result<Vec<Result<(), LedgerError>>, LedgerError> {
    let mut tx = client.transaction().await?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(one_op(&mut tx, op).await?);
    }
    tx.commit().await?;
    Ok(results)
}

/// Every op in order, consecutive appends in one `COPY`; a status update
/// under a savepoint (its failure is its own). Errors (a duplicate among
/// them) fail the batch.
async fn fast_batch(
    tx: &mut Transaction<'_>,
    ops: &[Op],
) -> Result<Vec<Result<(), LedgerError>>, brume_pg::tokio_postgres::Error> {
    let mut results = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        let run = ops[i..]
            .iter()
            .take_while(|op| matches!(op, Op::Append(_)))
            .count();
        if run > 0 {
            let rows = ops[i..i + run].iter().flat_map(|op| match op {
                Op::Append(rows) => rows.as_slice(),
                Op::Status(..) => &[],
            });
            copy_rows(tx.copy_in(COPY_SQL).await?, rows).await?;
            results.extend((0..run).map(|_| Ok(())));
            i += run;
        } else {
            let Op::Status(u, now) = &ops[i] else {
                unreachable!("a run of zero appends starts with a status");
            };
            results.push(status_in_savepoint(tx, u, *now).await?);
            i += 1;
        }
    }
    Ok(results)
}

/// One op under a savepoint: a duplicate or an unknown row fails it alone.
async fn one_op(tx: &mut Transaction<'_>, op: &Op) -> Result<Result<(), LedgerError>, LedgerError> {
    match op {
        Op::Append(rows) => {
            let sp = tx.savepoint("op").await?;
            match copy_rows(sp.copy_in(COPY_SQL).await?, rows.iter()).await {
                Ok(()) => {
                    sp.commit().await?;
                    Ok(Ok(()))
                }
                Err(e) if sqlstate(&e) == Some(UNIQUE_VIOLATION) => {
                    sp.rollback().await?;
                    Ok(Err(find_duplicate(tx, rows).await?))
                }
                Err(e) => Err(e.into()),
            }
        }
        Op::Status(u, now) => Ok(status_in_savepoint(tx, u, *now).await?),
    }
}

/// Which work id of a refused append is taken.
async fn find_duplicate(
    tx: &Transaction<'_>,
    rows: &[EncodedRow],
) -> Result<LedgerError, LedgerError> {
    let ids: Vec<&str> = rows.iter().map(|r| r.work_id.as_str()).collect();
    let taken = tx
        .query_opt(
            "SELECT work_id FROM ledger_rows WHERE work_id = ANY($1) LIMIT 1",
            &[&ids],
        )
        .await?;
    Ok(match taken {
        Some(r) => LedgerError::DuplicateWorkId(r.get(0)),
        None => LedgerError::Storage(
            "an insert was refused as a duplicate, but no work id is taken".into(),
        ),
    })
}

/// Writes `rows` into a `COPY` the caller started (`copy_in(COPY_SQL)` on
/// a client or a transaction).
async fn copy_rows<'r>(
    sink: CopyInSink<Bytes>,
    rows: impl Iterator<Item = &'r EncodedRow>,
) -> Result<(), brume_pg::tokio_postgres::Error> {
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
    let mut writer = std::pin::pin!(writer);
    for r in rows {
        let values: [&(dyn ToSql + Sync); 8] = [
            &r.work_id,
            &r.timestamp_ms,
            &r.requester,
            &r.provider,
            &r.fuel,
            &&r.row_hash[..],
            &r.data,
            &r.private,
        ];
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// A status update under a savepoint; `Ok(Err(_))` if a work id is unknown
/// (then nothing of it is applied).
async fn status_in_savepoint(
    tx: &mut Transaction<'_>,
    u: &StatusUpdate,
    now: i64,
) -> Result<Result<(), LedgerError>, brume_pg::tokio_postgres::Error> {
    let sp = tx.savepoint("status").await?;
    let ids: Vec<&str> = u.work_ids.iter().map(String::as_str).collect();
    let known: Vec<String> = sp
        .query(
            "SELECT work_id FROM ledger_rows WHERE work_id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(missing) = ids.iter().find(|id| !known.iter().any(|k| k == *id)) {
        sp.rollback().await?;
        return Ok(Err(LedgerError::NotFound((*missing).to_string())));
    }
    sp.execute(
        "INSERT INTO ledger_status (work_id, entity, status, settling_tx, updated_ms)
         SELECT id, $2, $3, $4, $5 FROM unnest($1::text[]) AS id
         ON CONFLICT (work_id, entity) DO UPDATE SET
             status = excluded.status, settling_tx = excluded.settling_tx,
             updated_ms = excluded.updated_ms",
        &[&ids, &u.entity, &u.status.as_str(), &u.settling_tx, &now],
    )
    .await?;
    sp.commit().await?;
    Ok(Ok(()))
}

/// A stored row's columns (`SELECT_COLS` order from `at`), as [`RawRow`].
fn raw_row(r: &Row, at: usize) -> Result<RawRow, LedgerError> {
    let text =
        |i: usize| -> Result<Vec<u8>, LedgerError> { Ok(r.try_get::<_, String>(i)?.into_bytes()) };
    let bytes = |i: usize| -> Result<Vec<u8>, LedgerError> {
        Ok(r.try_get::<_, Option<Vec<u8>>>(i)?.unwrap_or_default())
    };
    Ok(RawRow {
        work_id: text(at)?,
        timestamp_ms: r.try_get(at + 1)?,
        requester: text(at + 2)?,
        provider: text(at + 3)?,
        fuel: r.try_get(at + 4)?,
        row_hash: bytes(at + 5)?,
        data: bytes(at + 6)?,
        private: bytes(at + 7)?,
    })
}

/// `filter_sql`'s arguments as PostgreSQL parameters.
fn params(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Int(n) => n as &(dyn ToSql + Sync),
            Arg::Text(s) => s as &(dyn ToSql + Sync),
        })
        .collect()
}

/// SQLite's `?N` placeholders as PostgreSQL's `$N`, and SQLite's
/// `NULL`-for-private column as a typed one.
fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$").replace(", NULL", ", NULL::bytea")
}

fn parse_status(work_id: &str, status: &str) -> Result<PaymentStatus, LedgerError> {
    PaymentStatus::parse(status).ok_or_else(|| LedgerError::Corrupt {
        work_id: work_id.to_string(),
        detail: format!("status {status:?}"),
    })
}

impl LedgerStore for PgStore {
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
        Box::pin(async move {
            let cols = if private {
                super::SELECT_COLS
            } else {
                super::SELECT_PUBLIC_COLS
            };
            let sql = pg_sql(&format!(
                "SELECT {cols} FROM ledger_rows WHERE work_id = $1"
            ));
            let client = self.reader().await?;
            let row = client.query_opt(&sql, &[&work_id]).await?;
            row.map(|r| raw_row(&r, 0)?.decode(private)).transpose()
        })
    }

    fn list(&self, q: ListQuery) -> LedgerFuture<'_, Page> {
        Box::pin(async move {
            let limit = match q.limit {
                None | Some(0) => DEFAULT_PAGE,
                Some(n) => n.min(MAX_PAGE),
            };
            let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
            let cols = if q.private {
                super::SELECT_COLS
            } else {
                super::SELECT_PUBLIC_COLS
            };
            let (sql, args) = filter_sql(cols, &q.filter, after, Some(limit));
            let client = self.reader().await?;
            let rows = client.query(&pg_sql(&sql), &params(&args)).await?;
            let mut page = Page::default();
            if rows.len() == limit
                && let Some(last) = rows.last()
            {
                let raw = raw_row(last, 0)?;
                page.next_cursor = Some(format!(
                    "{}:{}",
                    raw.timestamp_ms.unwrap_or_default(),
                    raw.work_id()
                ));
            }
            for r in &rows {
                let raw = raw_row(r, 0)?;
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
        })
    }

    fn set_status(&self, update: StatusUpdate) -> LedgerFuture<'_, ()> {
        Box::pin(async move { self.submit(status_op(update)?).await })
    }

    fn statuses<'a>(&'a self, work_id: &'a str) -> LedgerFuture<'a, Vec<EntityStatus>> {
        Box::pin(async move {
            let client = self.reader().await?;
            let rows = client
                .query(
                    "SELECT entity, status, settling_tx, updated_ms FROM ledger_status
                     WHERE work_id = $1 ORDER BY entity",
                    &[&work_id],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(EntityStatus {
                        entity: r.try_get(0)?,
                        status: parse_status(work_id, r.try_get(1)?)?,
                        settling_tx: r.try_get(2)?,
                        updated_ms: from_i64(r.try_get(3)?),
                    })
                })
                .collect()
        })
    }

    fn aggregate(&self, filter: RowFilter) -> LedgerFuture<'_, AggregateSummary> {
        Box::pin(async move {
            use futures_util::TryStreamExt as _;
            let (sql, args) = filter_sql("work_id, row_hash", &filter, None, None);
            let client = self.reader().await?;
            let stream = client.query_raw(&pg_sql(&sql), params(&args)).await?;
            let mut stream = std::pin::pin!(stream);
            let mut summary = AggregateSummary::default();
            while let Some(r) = stream.try_next().await? {
                let hash: &[u8] = r.try_get(1)?;
                let hash = Hash32::from_slice(hash).ok_or_else(|| LedgerError::Corrupt {
                    work_id: r.try_get::<_, String>(0).unwrap_or_default(),
                    detail: "row_hash is not 32 bytes".into(),
                })?;
                summary.aggregate.add(&hash.0);
                summary.rows += 1;
            }
            Ok(summary)
        })
    }

    fn status_page(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> LedgerFuture<'_, Vec<(String, EntityStatus)>> {
        Box::pin(async move {
            let (work, entity) = after.unwrap_or_default();
            let client = self.reader().await?;
            let rows = client
                .query(
                    "SELECT work_id, entity, status, settling_tx, updated_ms FROM ledger_status
                     WHERE (work_id, entity) > ($1, $2) ORDER BY work_id, entity LIMIT $3",
                    &[&work, &entity, &(limit as i64)],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let work_id: String = r.try_get(0)?;
                    let status = parse_status(&work_id, r.try_get(2)?)?;
                    Ok((
                        work_id,
                        EntityStatus {
                            entity: r.try_get(1)?,
                            status,
                            settling_tx: r.try_get(3)?,
                            updated_ms: from_i64(r.try_get(4)?),
                        },
                    ))
                })
                .collect()
        })
    }

    fn scan(&self, after: u64, limit: usize) -> LedgerFuture<'_, Vec<(u64, LedgerRow)>> {
        let limit = limit.clamp(1, MAX_SCAN);
        Box::pin(async move {
            let sql = pg_sql(&format!(
                "SELECT seq, {} FROM ledger_rows WHERE seq > $1 ORDER BY seq LIMIT $2",
                super::SELECT_PUBLIC_COLS
            ));
            let client = self.reader().await?;
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let rows = client.query(&sql, &[&after, &(limit as i64)]).await?;
            rows.iter()
                .map(|r| {
                    let seq: i64 = r.try_get(0)?;
                    let row = raw_row(r, 1)?.decode(false)?;
                    Ok((u64::try_from(seq).unwrap_or_default(), row))
                })
                .collect()
        })
    }
}
