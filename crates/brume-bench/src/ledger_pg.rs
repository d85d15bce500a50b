//! `brume bench ledger --store postgres`: the PostgreSQL ledger store's
//! ingest against one plain binary `COPY` of the same rows (see
//! [`crate::ledger`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use brume_ledger::store::LedgerStore;
use brume_ledger::store::postgres::PgStore;
use brume_pg::Cluster;
use brume_pg::tokio_postgres::Client;
use bytes::Bytes;
use futures_util::{SinkExt as _, TryStreamExt as _};

use crate::ledger::{audit, figures, ingest, template};

/// At most this many rows in the baseline's `COPY` (held in memory).
const BASELINE_ROWS: u64 = 1_000_000;

/// Where a bench's database lives: a throwaway cluster, or a fresh
/// database on a given server (dropped at the end).
pub(crate) struct Server {
    _cluster: Option<Cluster>,
    admin: Client,
    db: String,
    /// The fresh database's URL.
    pub url: String,
}

impl Server {
    pub(crate) async fn start(url: Option<String>) -> anyhow::Result<Server> {
        let (cluster, admin_url) = match url {
            Some(url) => (None, url),
            None => {
                let c = tokio::task::spawn_blocking(Cluster::start).await??;
                let admin = c.url("postgres", "postgres");
                (Some(c), admin)
            }
        };
        let admin = brume_pg::connect(&admin_url)
            .await
            .context("connect to the bench's PostgreSQL server")?;
        let db = format!("brume_bench_{}", std::process::id());
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .context("create the bench database (the role needs CREATEDB)")?;
        let url = with_database(&admin_url, &db);
        Ok(Server {
            _cluster: cluster,
            admin,
            db,
            url,
        })
    }

    pub(crate) async fn drop_database(&self) -> anyhow::Result<()> {
        self.admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            .await?;
        Ok(())
    }
}

/// `url` with its database replaced by `db` (the path of a URL, before any
/// query string).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

pub async fn run(
    duration: Duration,
    url: Option<String>,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let server = Server::start(url).await?;
    let result = measure(&server.url, duration, out).await;
    server.drop_database().await?;
    result
}

async fn measure(
    url: &str,
    duration: Duration,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let store: Arc<dyn LedgerStore> = Arc::new(PgStore::open(url).await?);
    let template = template()?;
    let (rows, ingest_rate, commit) =
        ingest(&store, &template, duration.mul_f64(0.45), out).await?;
    let client = brume_pg::connect(url).await?;
    let (n, baseline) = copy_baseline(&client, rows.min(BASELINE_ROWS)).await?;
    let ratio = ingest_rate / baseline;
    out(&format!(
        "baseline (one binary COPY of the same rows, same layout, no triggers): {n} rows = \
         {baseline:.0} rows/s; ratio {ratio:.3}"
    ));
    let audit = audit(store.as_ref(), rows, out).await?;
    Ok(figures(
        "postgres",
        rows,
        ingest_rate,
        baseline,
        audit,
        &commit,
    ))
}

/// The first `n` stored rows' bytes, copied out in binary, then timed
/// copied in (one `COPY`, one transaction) into a table of the same
/// layout and indexes without triggers. Returns the rows and rows/s.
async fn copy_baseline(client: &Client, n: u64) -> anyhow::Result<(u64, f64)> {
    const COLS: &str = "work_id, timestamp_ms, requester, provider, fuel, row_hash, data, private";
    client
        .batch_execute("CREATE TABLE baseline (LIKE ledger_rows INCLUDING ALL)")
        .await?;
    let limit = i64::try_from(n)?;
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT {COLS} FROM ledger_rows ORDER BY seq LIMIT {limit}) TO STDOUT (FORMAT binary)"
        ))
        .await?;
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    let start = Instant::now();
    client.batch_execute("BEGIN").await?;
    let sink = client
        .copy_in::<_, Bytes>(&format!(
            "COPY baseline ({COLS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in chunks {
        sink.as_mut().feed(chunk).await?;
    }
    let copied = sink.as_mut().finish().await?;
    client.batch_execute("COMMIT").await?;
    Ok((copied, copied as f64 / start.elapsed().as_secs_f64()))
}
