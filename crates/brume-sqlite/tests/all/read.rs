//! [`ReadPool`]: bounded, concurrent, typed errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use brume_sqlite::{Error, Options, ReadPool};

fn pool(dir: &tempfile::TempDir, size: usize) -> ReadPool {
    let path = dir.path().join("r.db");
    let conn = brume_sqlite::open(&path, &Options::new()).expect("open");
    conn.execute_batch(
        "CREATE TABLE n (x INTEGER NOT NULL);
         WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 1000)
         INSERT INTO n SELECT x FROM s;",
    )
    .expect("fill");
    ReadPool::new(&path, &Options::new(), size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_run_concurrently_up_to_the_pool_size() {
    let dir = tempfile::tempdir().expect("tmp");
    let pool = pool(&dir, 4);
    // Each read waits (bounded) until four reads have started: that only
    // happens if four run at once. The pool must never run a fifth.
    let started = Arc::new((Mutex::new(0usize), Condvar::new()));
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut reads = Vec::new();
    for i in 0..12i64 {
        let (started, active, most) = (started.clone(), active.clone(), most.clone());
        let pool = pool.clone();
        reads.push(tokio::spawn(async move {
            pool.read(move |c| {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let (count, cv) = &*started;
                let mut n = count.lock().expect("lock");
                *n += 1;
                cv.notify_all();
                let (n, timeout) = cv
                    .wait_timeout_while(n, Duration::from_secs(10), |n| *n < 4)
                    .expect("wait");
                drop(n);
                assert!(!timeout.timed_out(), "four reads never ran at once");
                let sum: i64 =
                    c.query_row("SELECT SUM(x) FROM n WHERE x > ?1", [i], |r| r.get(0))?;
                active.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Error>(sum)
            })
            .await
        }));
    }
    for (i, r) in reads.into_iter().enumerate() {
        let i = i as i64;
        let sum = r.await.expect("task").expect("read");
        assert_eq!(sum, 500_500 - i * (i + 1) / 2);
    }
    assert_eq!(most.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn read_errors_are_typed_and_the_pool_survives_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let pool = pool(&dir, 1);
    let r = pool
        .read(|c| Ok::<i64, Error>(c.query_row("SELECT nope FROM n", [], |r| r.get(0))?))
        .await;
    assert!(matches!(r, Err(Error::Sql(_))), "{r:?}");
    let r = pool
        .read(|_| -> Result<(), Error> { panic!("a read that panics") })
        .await;
    assert!(matches!(r, Err(Error::Panicked)), "{r:?}");
    // The closure's own error type passes through.
    #[derive(Debug, PartialEq)]
    enum Mine {
        Refused,
        Db,
    }
    impl From<Error> for Mine {
        fn from(_: Error) -> Mine {
            Mine::Db
        }
    }
    assert_eq!(
        pool.read(|_| Err::<(), _>(Mine::Refused)).await,
        Err(Mine::Refused)
    );
    let n: i64 = pool
        .read(|c| Ok::<_, Error>(c.query_row("SELECT COUNT(*) FROM n", [], |r| r.get(0))?))
        .await
        .expect("read after failures");
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("missing").join("x.db");
    let e = brume_sqlite::open(&path, &Options::new()).expect_err("no such directory");
    assert_eq!(e.path, path);
    assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    let pool = ReadPool::new(&path, &Options::new(), 2);
    match pool.read(|_| Ok::<(), Error>(())).await {
        Err(Error::Open(e)) => assert_eq!(e.path, path),
        other => panic!("{other:?}"),
    }
}

#[test]
fn options_apply_their_pragmas() {
    let dir = tempfile::tempdir().expect("tmp");
    let options = Options::new()
        .busy_timeout(Duration::from_millis(1234))
        .pragma("wal_autocheckpoint", "8192")
        .pragma("temp_store", "MEMORY")
        .pragma("recursive_triggers", "ON");
    let c = brume_sqlite::open(&dir.path().join("o.db"), &options).expect("open");
    let get = |name: &str| -> String {
        c.pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .expect("pragma")
    };
    assert_eq!(get("journal_mode"), r#"Text("wal")"#);
    assert_eq!(get("synchronous"), "Integer(2)"); // FULL
    assert_eq!(get("busy_timeout"), "Integer(1234)");
    assert_eq!(get("wal_autocheckpoint"), "Integer(8192)");
    assert_eq!(get("temp_store"), "Integer(2)"); // MEMORY
    assert_eq!(get("recursive_triggers"), "Integer(1)");
    let bad = brume_sqlite::open(
        &dir.path().join("p.db"),
        &Options::new().pragma("no such; pragma", "1"),
    );
    assert!(bad.is_err());
}
