//! `brume bench ledger`: durable, hashed, group-committed ledger ingest
//! with concurrent writers, against a same-run baseline, then an audit of
//! everything written.
//!
//! - `--store sqlite` (the default): the SQLite store, against plain
//!   prepared-statement inserts of the same rows in one transaction.
//! - `--store postgres` (a throwaway cluster in a temp dir) or
//!   `--store postgres://…` (a fresh database on that server, dropped
//!   after): the PostgreSQL store (binary `COPY` per group commit), against
//!   one plain binary `COPY` of the same rows' bytes into a table of the
//!   same layout and indexes, without triggers, in one transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use brume_ledger::row::{PrivateData, RowData, SealedRow, example_row};
use brume_ledger::store::{LedgerStore, RowFilter, SqliteStore};
use serde_json::json;

use crate::{Samples, round};

/// Concurrent appenders.
const WRITERS: usize = 16;
/// Rows per `append` call. Under load the broker's batcher appends every
/// sync call's row that queued during the previous commit in one call (up to
/// 1024); 128 is a loaded broker's typical batch. (With 32 rows per call the
/// same store ingests about 86k rows/s on this VM: the commit cycle, not the
/// rows, is then the limit.)
const PER_CALL: usize = 128;

/// A fresh row from the template: new work id and timestamp, sealed (its
/// three Keccak hashes computed) as the broker would. The store takes it
/// through `append_sealed`, without hashing it a second time.
fn make(template: &(RowData, PrivateData), i: u64) -> anyhow::Result<SealedRow> {
    let (mut data, mut private) = template.clone();
    data.work_id = format!("bench-{i:012}");
    data.timestamp_ms = 1_700_000_000_000 + i;
    private.salt[..8].copy_from_slice(&i.to_be_bytes());
    Ok(SealedRow::seal(data, private)?)
}

/// Which store `brume bench ledger` measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    /// A server's URL, or `None`: a throwaway cluster.
    Postgres(Option<String>),
}

impl std::str::FromStr for Store {
    type Err = String;

    fn from_str(s: &str) -> Result<Store, String> {
        match s {
            "sqlite" => Ok(Store::Sqlite),
            "postgres" => Ok(Store::Postgres(None)),
            url if brume_pg::is_url(url) => Ok(Store::Postgres(Some(url.to_string()))),
            other => Err(format!(
                "unknown store {other:?}: sqlite, postgres (a throwaway cluster) or a \
                 postgres:// URL"
            )),
        }
    }
}

pub async fn run(
    duration: Duration,
    store: Store,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    match store {
        Store::Sqlite => run_sqlite(duration, out).await,
        Store::Postgres(url) => crate::ledger_pg::run(duration, url, out).await,
    }
}

async fn run_sqlite(
    duration: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let sqlite = Arc::new(SqliteStore::open(&dir.path().join("ledger"))?);
    let store: Arc<dyn LedgerStore> = sqlite.clone();
    let template = template()?;
    let (rows, ingest, commit) = ingest(&store, &template, duration.mul_f64(0.45), out).await?;

    // 2. Baseline: the same number of rows (pre-sealed, so no hashing is
    //    timed), plain prepared-statement inserts in one transaction.
    let n = rows.min(2_000_000);
    let base_rows = (0..n)
        .map(|i| make(&template, (1 << 62) | i).map(SealedRow::into_row))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base_path = dir.path().join("baseline.db");
    let baseline =
        tokio::task::spawn_blocking(move || sqlite_baseline(&base_path, &base_rows)).await??;
    let ratio = ingest / baseline;
    out(&format!(
        "baseline (prepared inserts, one transaction): {n} rows = {baseline:.0} rows/s; ratio {ratio:.3}"
    ));
    let audit = audit(store.as_ref(), rows, out).await?;
    sqlite.close();
    Ok(figures("sqlite", rows, ingest, baseline, audit, &commit))
}

/// The bench's JSON object, whichever the store.
pub(crate) fn figures(
    store: &str,
    rows: u64,
    ingest: f64,
    baseline: f64,
    audit: f64,
    commit: &Samples,
) -> serde_json::Value {
    json!({
        "bench": "ledger",
        "store": store,
        "ingest_rows_per_s": round(ingest, 0),
        "baseline_rows_per_s": round(baseline, 0),
        "ratio": round(ingest / baseline, 3),
        "audit_rows_per_s": round(audit, 0),
        "p99_commit_latency_ms": round(commit.ms(0.99), 3),
        "p50_commit_latency_ms": round(commit.ms(0.5), 3),
        "rows": rows,
        "writers": WRITERS,
        "rows_per_call": PER_CALL,
    })
}

/// The example row, as the template of every bench row.
pub(crate) fn template() -> anyhow::Result<Arc<(RowData, PrivateData)>> {
    let mut example = example_row()?;
    let private = example
        .private
        .take()
        .context("the example row has private columns")?;
    Ok(Arc::new((example.data, private)))
}

/// Ingest: [`WRITERS`] tasks append [`PER_CALL`] sealed rows at a time
/// until the budget is spent; each call returns once its rows are durable.
/// Returns the rows, rows/s and the append latencies.
pub(crate) async fn ingest(
    store: &Arc<dyn LedgerStore>,
    template: &Arc<(RowData, PrivateData)>,
    budget: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<(u64, f64, Samples)> {
    let start = Instant::now();
    let deadline = start + budget;
    let mut tasks = Vec::new();
    for w in 0..WRITERS as u64 {
        let store = store.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Samples::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let rows = (0..PER_CALL as u64)
                    .map(|k| make(&template, (w << 40) | (n + k)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let t = Instant::now();
                store.append_sealed(rows).await?;
                lat.record(t.elapsed());
                n += PER_CALL as u64;
            }
            Ok::<_, anyhow::Error>((n, lat))
        }));
    }
    let mut rows = 0u64;
    let mut commit = Samples::new();
    for t in tasks {
        let (n, lat) = t.await??;
        rows += n;
        commit.0.add(&lat.0).context("merge histograms")?;
    }
    let ingest_s = start.elapsed().as_secs_f64();
    let ingest = rows as f64 / ingest_s;
    out(&format!(
        "ledger ingest: {rows} rows in {ingest_s:.1} s = {ingest:.0} rows/s ({WRITERS} writers × {PER_CALL} rows/call); \
         append p50 {:.2} ms p99 {:.2} ms",
        commit.ms(0.5),
        commit.ms(0.99)
    ));
    Ok((rows, ingest, commit))
}

/// Plain prepared-statement inserts of `base_rows` in one transaction;
/// rows/s.
fn sqlite_baseline(
    base_path: &std::path::Path,
    base_rows: &[brume_ledger::row::LedgerRow],
) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(base_path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE rows (work_id TEXT NOT NULL UNIQUE, timestamp_ms INTEGER NOT NULL, \
             requester TEXT NOT NULL, provider TEXT NOT NULL, service_digest TEXT NOT NULL, \
             fuel INTEGER NOT NULL, fee_micros INTEGER NOT NULL, token_amount TEXT NOT NULL, \
             payouts TEXT NOT NULL, private TEXT NOT NULL, private_hash BLOB NOT NULL, \
             custom_hash BLOB NOT NULL, row_hash BLOB NOT NULL)",
    )?;
    let start = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for r in base_rows {
            let d = &r.data;
            stmt.execute(rusqlite::params![
                d.work_id,
                d.timestamp_ms as i64,
                d.requester,
                d.provider,
                d.service_digest,
                d.usage.fuel as i64,
                d.fee_micros as i64,
                d.token_amount.to_string(),
                serde_json::to_string(&d.payouts)?,
                serde_json::to_string(&r.private)?,
                &r.private_hash.0[..],
                &r.custom_hash.0[..],
                &r.row_hash.0[..],
            ])?;
        }
    }
    tx.commit()?;
    Ok(base_rows.len() as f64 / start.elapsed().as_secs_f64())
}

/// Audit: reads every row back and recomputes its hashes; rows/s.
pub(crate) async fn audit(
    store: &dyn LedgerStore,
    rows: u64,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let report = brume_ledger::audit::audit_store(store, RowFilter::default(), true).await?;
    let audit_s = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.is_clean(),
        "the bench ledger does not audit clean: {:?}",
        report.bad_rows()
    );
    anyhow::ensure!(
        report.rows == rows,
        "audited {} rows of {rows}",
        report.rows
    );
    let audit = report.rows as f64 / audit_s;
    out(&format!(
        "audit: {} rows in {audit_s:.1} s = {audit:.0} rows/s, clean",
        report.rows
    ));
    Ok(audit)
}
