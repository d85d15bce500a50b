//! [`Db`]: closures in group commits.

use brume_sqlite::{Closed, Error, Options};

use crate::{db, hold_writer, values};

fn insert(v: String) -> impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), Error> + Send {
    move |tx| {
        tx.execute("INSERT INTO t (v) VALUES (?1)", [&v])?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_apply_in_the_order_they_are_queued() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = db(&dir, &Options::new());
    // Queued while the writer is busy, so they share batches.
    let gate = hold_writer(&db, "gate").await;
    let mut waits = Vec::new();
    for i in 0..300 {
        if i % 3 == 0 {
            db.write_later(insert(format!("{i:03}"))).expect("queued");
        } else {
            waits.push(db.write(insert(format!("{i:03}"))));
        }
    }
    gate.open().await;
    for w in waits {
        w.await.expect("write");
    }
    db.flush().await.expect("flush");
    let want: Vec<String> = std::iter::once("gate".to_string())
        .chain((0..300).map(|i| format!("{i:03}")))
        .collect();
    assert_eq!(values(&db).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_rolls_back_alone_and_the_batch_commits() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = db(&dir, &Options::new());
    let gate = hold_writer(&db, "gate").await;
    // All four queue during the gate's commit: the next batch.
    let a = db.write(insert("a".into()));
    let b = db.write(|tx| {
        tx.execute("INSERT INTO t (v) VALUES ('b')", [])?;
        // A unique violation after a change that must not survive.
        tx.execute("INSERT INTO t (v) VALUES ('a')", [])?;
        Ok::<_, Error>(())
    });
    let c = db.write(|tx| -> Result<(), Error> {
        tx.execute("INSERT INTO t (v) VALUES ('c')", [])?;
        panic!("a write that panics");
    });
    let d = db.write(|tx| {
        tx.execute("INSERT INTO t (v) VALUES ('d')", [])?;
        Ok::<_, Error>(tx.last_insert_rowid())
    });
    gate.open().await;
    a.await.expect("a commits");
    match b.await {
        Err(Error::Sql(rusqlite::Error::SqliteFailure(f, _))) => {
            assert_eq!(f.code, rusqlite::ErrorCode::ConstraintViolation);
        }
        other => panic!("b: {other:?}"),
    }
    assert!(matches!(c.await, Err(Error::Panicked)));
    // d's rowid follows a's: b's and c's rows were rolled back.
    assert_eq!(d.await.expect("d commits"), 3);
    assert_eq!(values(&db).await, ["gate", "a", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_write_of_its_batch() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = db(&dir, &Options::new().pragma("foreign_keys", "ON"));
    let gate = hold_writer(&db, "gate").await;
    // An orphan child passes its statement (the key is deferred) but fails
    // the commit, and with it the other write of the batch.
    let orphan = db.write(|tx| {
        tx.execute("INSERT INTO child (id, parent) VALUES (1, 99)", [])?;
        Ok::<_, Error>(())
    });
    let other = db.write(insert("x".into()));
    gate.open().await;
    for r in [orphan.await, other.await] {
        match r {
            Err(Error::Commit(e)) => assert!(e.to_string().contains("FOREIGN KEY"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(values(&db).await, ["gate"]);
    let children: i64 = db
        .read(|c| Ok::<_, Error>(c.query_row("SELECT COUNT(*) FROM child", [], |r| r.get(0))?))
        .await
        .expect("read");
    assert_eq!(children, 0);
    // The writer goes on.
    db.write(insert("y".into())).await.expect("y commits");
    assert_eq!(values(&db).await, ["gate", "y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_visible_to_readers_when_it_returns() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = db(&dir, &Options::new());
    let mut tasks = Vec::new();
    for task in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let v = format!("{task}-{i}");
                let id = db
                    .write({
                        let v = v.clone();
                        move |tx| {
                            tx.execute("INSERT INTO t (v) VALUES (?1)", [&v])?;
                            Ok::<_, Error>(tx.last_insert_rowid())
                        }
                    })
                    .await
                    .expect("write");
                let seen: Option<String> = db
                    .read(move |c| {
                        use rusqlite::OptionalExtension as _;
                        Ok::<_, Error>(
                            c.query_row("SELECT v FROM t WHERE id = ?1", [id], |r| r.get(0))
                                .optional()?,
                        )
                    })
                    .await
                    .expect("read");
                assert_eq!(seen.as_deref(), Some(v.as_str()));
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(values(&db).await.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_refuses_later_writes_and_lets_queued_ones_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = db(&dir, &Options::new());
    let clone = db.clone();
    let gate = hold_writer(&db, "gate").await;
    let queued: Vec<_> = (0..10).map(|i| db.write(insert(format!("q{i}")))).collect();
    db.write_later(insert("later".into()))
        .expect("queued before close");
    db.close();
    assert!(matches!(
        clone.write(insert("late".into())).await,
        Err(Error::Closed)
    ));
    assert_eq!(clone.write_later(insert("late".into())), Err(Closed));
    assert!(matches!(db.flush().await, Err(Error::Closed)));
    gate.open().await;
    for q in queued {
        q.await.expect("a write queued before close commits");
    }
    let mut want = vec!["gate".to_string()];
    want.extend((0..10).map(|i| format!("q{i}")));
    want.push("later".into());
    // Reads go on after close.
    assert_eq!(values(&db).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_beside_an_open_write_transaction() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = db(&dir, &Options::new());
    db.write(insert("before".into())).await.expect("write");
    // The gate has inserted its row and holds the transaction open.
    let gate = hold_writer(&db, "uncommitted").await;
    assert_eq!(values(&db).await, ["before"]);
    gate.open().await;
    assert_eq!(values(&db).await, ["before", "uncommitted"]);
}
