//! `kill -9` during ingest loses no acknowledged row, on either backend.
//!
//! The test re-runs its own binary as the child (`crash_child`, with
//! `BRUME_LEDGER_CRASH_DIR` or `BRUME_LEDGER_CRASH_URL` set): it appends
//! rows from several tasks and prints `ACK <work id>` once each append
//! returns. The parent kills it with SIGKILL mid-stream, reopens the store
//! and looks every id up. On PostgreSQL the server is also crashed
//! (`pg_ctl stop -m immediate`) under a running ingest, and restarted.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use std::sync::Arc;

use brume_ledger::store::postgres::PgStore;
use brume_ledger::store::{LedgerStore, RowFilter, SqliteStore};
use brume_pg::Cluster;
use brume_pg::cluster::APP_ROLE;

use crate::backend::cluster;
use crate::row;

const DIR_VAR: &str = "BRUME_LEDGER_CRASH_DIR";
const URL_VAR: &str = "BRUME_LEDGER_CRASH_URL";

/// The child: appends until killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    let dir = std::env::var_os(DIR_VAR);
    let url = std::env::var(URL_VAR).ok();
    if dir.is_none() && url.is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store: Arc<dyn LedgerStore> = match (dir, url) {
            (Some(dir), _) => {
                Arc::new(SqliteStore::open(std::path::Path::new(&dir)).expect("open"))
            }
            (None, Some(url)) => Arc::new(PgStore::open(&url).await.expect("open")),
            (None, None) => unreachable!(),
        };
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let i = n * 4 + w;
                    store.append(vec![row(i, "crash")]).await.expect("append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK w-{i:06}").expect("stdout");
                    out.flush().expect("flush");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
    });
}

/// Runs the child with `var` set to `value`, kills it with SIGKILL once it
/// has acknowledged 200 rows, and returns every id it acknowledged.
fn kill_child_mid_stream(var: &str, value: &std::ffi::OsStr) -> Vec<String> {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "crash::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ACK ") {
                let _ = tx.send(id.to_string());
            }
        }
    });
    // Kill it mid-stream, once it has acknowledged a good number of rows
    // (the child appends forever, so more are in flight).
    let mut acked = Vec::new();
    while acked.len() < 200 {
        match rx.recv() {
            Ok(id) => acked.push(id),
            Err(_) => panic!("the child stopped after {} acknowledgements", acked.len()),
        }
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    // Acknowledgements it printed before it died count too.
    acked.extend(rx.iter());
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().as_os_str().to_owned();
    let acked = tokio::task::spawn_blocking(move || kill_child_mid_stream(DIR_VAR, &path))
        .await
        .expect("join");
    let store = SqliteStore::open(dir.path()).expect("reopen");
    all_stored(&store, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_loses_no_acknowledged_row() {
    let db = cluster().await.database("crash").await.expect("database");
    drop(PgStore::open(&db.owner_url).await.expect("migrate"));
    PgStore::grant(&db.owner_url, APP_ROLE)
        .await
        .expect("grant");
    let url = std::ffi::OsString::from(&db.app_url);
    let acked = tokio::task::spawn_blocking(move || kill_child_mid_stream(URL_VAR, &url))
        .await
        .expect("join");
    let store = PgStore::open(&db.app_url).await.expect("reopen");
    all_stored(&store, &acked).await;
}

/// The server itself crashes under a running ingest (no shutdown
/// checkpoint: the restart replays the WAL). Appends in flight fail; every
/// one that returned is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_server_crash_loses_no_acknowledged_row() {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("join")
        .expect("cluster");
    let cluster = Arc::new(cluster);
    let db = cluster.database("crash").await.expect("database");
    let store = PgStore::open(&db.owner_url).await.expect("open");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (store, tx) = (store.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let i = n * 4 + w;
                if store.append(vec![row(i, "crash")]).await.is_err() {
                    break;
                }
                if tx.send(format!("w-{i:06}")).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut acked = Vec::new();
    while acked.len() < 200 {
        acked.push(rx.recv().await.expect("the appends stopped early"));
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.crash())
        .await
        .expect("join")
        .expect("crash the server");
    for t in tasks {
        t.await.expect("join");
    }
    while let Ok(id) = rx.try_recv() {
        acked.push(id);
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .expect("join")
        .expect("restart");
    // The old store reconnects on its own.
    all_stored(&store, &acked).await;
}

/// Every acknowledged id is stored.
async fn all_stored(store: &dyn LedgerStore, acked: &[String]) {
    for id in acked {
        assert!(
            store.get(id, false).await.expect("get").is_some(),
            "acknowledged row {id} was lost"
        );
    }
    let stored = store
        .aggregate(RowFilter::default())
        .await
        .expect("aggregate");
    assert!(stored.rows >= acked.len() as u64);
    eprintln!("{} acknowledged, {} stored", acked.len(), stored.rows);
}
