//! brume-sqlite's tests, in one binary: real SQLite files in temp dirs.

mod db;
mod group;
mod read;

use std::sync::mpsc;

use brume_sqlite::{Db, Error, Options};
use tokio::sync::oneshot;

/// A [`Db`] over `dir/test.db` with a table `t (id INTEGER PRIMARY KEY, v
/// TEXT UNIQUE)`.
pub fn db(dir: &tempfile::TempDir, options: &Options) -> Db {
    let path = dir.path().join("test.db");
    let conn = brume_sqlite::open(&path, options).expect("open");
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE);
         CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (id INTEGER PRIMARY KEY,
             parent INTEGER NOT NULL REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
    )
    .expect("schema");
    Db::start("test-writer", conn, &path, options).expect("start")
}

/// Every `v` of `t`, in insertion order, as a reader sees it.
pub async fn values(db: &Db) -> Vec<String> {
    db.read(|c| {
        let mut stmt = c.prepare("SELECT v FROM t ORDER BY id")?;
        let v = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok::<_, Error>(v)
    })
    .await
    .expect("read")
}

/// Holds the writer: a write that inserts `v`, tells the test it is
/// running, and waits for the release (or for the test to drop it).
#[derive(Debug)]
pub struct Gate {
    pub release: mpsc::Sender<()>,
    pub done: oneshot::Receiver<Result<(), Error>>,
}

pub async fn hold_writer(db: &Db, v: &str) -> Gate {
    let (entered_tx, entered) = oneshot::channel();
    let (release, wait) = mpsc::channel::<()>();
    let v = v.to_string();
    let write = db.write(move |tx| {
        tx.execute("INSERT INTO t (v) VALUES (?1)", [&v])?;
        let _ = entered_tx.send(());
        let _ = wait.recv();
        Ok::<_, Error>(())
    });
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(write.await);
    });
    entered.await.expect("the gate write runs");
    Gate { release, done }
}

impl Gate {
    pub async fn open(self) {
        self.release.send(()).expect("release");
        self.done
            .await
            .expect("gate answer")
            .expect("the gate commits");
    }
}
