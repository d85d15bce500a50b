//! `kill -9` during ingest loses no acknowledged row.
//!
//! The test re-runs its own binary as the child (`crash_child`, with
//! `BRUME_LEDGER_CRASH_DIR` set): it appends rows from several tasks and
//! prints `ACK <work id>` once each append returns. The parent kills it
//! with SIGKILL mid-stream, reopens the store and looks every id up.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use brume_ledger::store::{LedgerStore, RowFilter, SqliteStore};

use crate::row;

const DIR_VAR: &str = "BRUME_LEDGER_CRASH_DIR";

/// The child: appends until killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = SqliteStore::open(std::path::Path::new(&dir)).expect("open");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "crash::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir.path())
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

    let store = SqliteStore::open(dir.path()).expect("reopen");
    for id in &acked {
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
