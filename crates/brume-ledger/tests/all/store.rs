use std::sync::Arc;

use brume_ledger::row::{Aggregate, LedgerRow, SealedRow};
use brume_ledger::store::{LedgerStore, ListQuery, PaymentStatus, RowFilter, StatusUpdate};

use crate::backend::Backend;
use crate::row;

crate::on_both_backends!(
    append_get_and_reopen,
    rows_must_be_sealed,
    duplicates_fail_their_call_only,
    list_pages_filters_and_aggregates,
    status_is_mutable_and_apart,
    sealed_rows_append_like_rows,
    a_large_call_is_atomic,
    scan_reads_in_append_order,
    a_tailing_scan_sees_every_row_once_while_appends_run,
);

async fn append_get_and_reopen(store: Backend) {
    let r = row(1, "acct-a");
    store.append(vec![r.clone()]).await.expect("append");
    let got = store.get("w-000001", true).await.expect("get");
    assert_eq!(got.as_ref(), Some(&r));
    let public = store
        .get("w-000001", false)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(public, r.public());
    assert_eq!(store.get("nope", false).await.expect("get"), None);
    let store = store.reopen().await;
    assert_eq!(store.get("w-000001", true).await.expect("get"), Some(r));
}

async fn rows_must_be_sealed(store: Backend) {
    let mut r = row(1, "a");
    r.data.fee_currency = "EUR".into(); // content changed, hashes not
    let e = store.append(vec![r]).await.expect_err("unsealed");
    assert_eq!(e.code(), "invalid_row");
    let e = store
        .append(vec![row(2, "a").public()])
        .await
        .expect_err("no private");
    assert_eq!(e.code(), "invalid_row");
    assert_eq!(store.get("w-000001", false).await.expect("get"), None);
}

/// Concurrent callers share group commits; a duplicate fails only its own
/// call, whatever batch it lands in.
async fn duplicates_fail_their_call_only(store: Backend) {
    store.append(vec![row(0, "a")]).await.expect("first");
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 1..=200u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Every 10th call also carries row 0, which is taken.
            let mut rows = vec![row(i, "a")];
            if i % 10 == 0 {
                rows.push(row(0, "a"));
            }
            store.append(rows).await
        }));
    }
    for (i, t) in (1..=200u64).zip(tasks) {
        let r = t.await.expect("join");
        if i % 10 == 0 {
            let e = r.expect_err("duplicate");
            assert_eq!(e.code(), "duplicate_work_id");
            assert!(e.to_string().contains("w-000000"));
            // The call is atomic: its fresh row is not stored either.
            assert_eq!(
                store.get(&format!("w-{i:06}"), false).await.expect("get"),
                None
            );
        } else {
            r.expect("append");
            assert!(
                store
                    .get(&format!("w-{i:06}"), false)
                    .await
                    .expect("get")
                    .is_some()
            );
        }
    }
    let all = store
        .aggregate(RowFilter::default())
        .await
        .expect("aggregate");
    assert_eq!(all.rows, 1 + 180);
}

async fn list_pages_filters_and_aggregates(store: Backend) {
    let rows: Vec<LedgerRow> = (0..25u64)
        .map(|i| row(i, if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    // Appended out of order: listing is by time.
    let mut shuffled = rows.clone();
    shuffled.reverse();
    store.append(shuffled).await.expect("append");

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(ListQuery {
                cursor,
                limit: Some(7),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        pages += 1;
        assert!(page.corrupt.is_empty());
        assert!(page.rows.iter().all(|r| r.private.is_none()));
        seen.extend(page.rows.into_iter().map(|r| r.data.work_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let want: Vec<String> = rows.iter().map(|r| r.data.work_id.clone()).collect();
    assert_eq!(seen, want);

    // Time range [5, 15) of the odd account: 5, 7, 9, 11, 13.
    let filter = RowFilter {
        from_ms: Some(1_700_000_005_000),
        to_ms: Some(1_700_000_015_000),
        account: Some("odd".into()),
    };
    let page = store
        .list(ListQuery {
            filter: filter.clone(),
            private: true,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    let ids: Vec<&str> = page.rows.iter().map(|r| r.data.work_id.as_str()).collect();
    assert_eq!(
        ids,
        ["w-000005", "w-000007", "w-000009", "w-000011", "w-000013"]
    );
    assert!(page.rows.iter().all(|r| r.private.is_some()));
    assert_eq!(page.next_cursor, None);

    let summary = store.aggregate(filter).await.expect("aggregate");
    assert_eq!(summary.rows, 5);
    let want: Aggregate = page.rows.iter().map(|r| &r.row_hash).collect();
    assert_eq!(summary.aggregate, want);

    let e = store
        .list(ListQuery {
            cursor: Some("garbage".into()),
            ..ListQuery::default()
        })
        .await
        .expect_err("cursor");
    assert_eq!(e.code(), "invalid_cursor");
}

async fn status_is_mutable_and_apart(store: Backend) {
    store
        .append(vec![row(1, "a"), row(2, "a")])
        .await
        .expect("append");
    let before = store.get("w-000001", true).await.expect("get");
    let update = |status, tx: Option<&str>| StatusUpdate {
        work_ids: vec!["w-000001".into(), "w-000002".into()],
        entity: "acct-a".into(),
        status,
        settling_tx: tx.map(str::to_string),
    };
    store
        .set_status(update(PaymentStatus::Collected, None))
        .await
        .expect("set");
    store
        .set_status(update(PaymentStatus::Paid, Some("0xabc")))
        .await
        .expect("set");
    let st = store.statuses("w-000002").await.expect("statuses");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].entity, "acct-a");
    assert_eq!(st[0].status, PaymentStatus::Paid);
    assert_eq!(st[0].settling_tx.as_deref(), Some("0xabc"));
    // The row itself is unchanged.
    assert_eq!(store.get("w-000001", true).await.expect("get"), before);

    // Atomic: an unknown work id fails the whole update.
    let e = store
        .set_status(StatusUpdate {
            work_ids: vec!["w-000001".into(), "w-404".into()],
            entity: "acct-b".into(),
            status: PaymentStatus::Collected,
            settling_tx: None,
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), "not_found");
    assert_eq!(store.statuses("w-000001").await.expect("statuses").len(), 1);
}

/// The database itself refuses to change or delete a row, even through a
/// raw connection that bypasses the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_updates_and_deletes() {
    let store = Backend::sqlite();
    let Backend::Sqlite(_, store) = &store else {
        unreachable!()
    };
    store.append(vec![row(1, "a")]).await.expect("append");
    let conn = rusqlite::Connection::open(store.path()).expect("raw");
    for sql in [
        "UPDATE ledger_rows SET fuel = 1 WHERE work_id = 'w-000001'",
        "UPDATE ledger_rows SET row_hash = zeroblob(32)",
        "UPDATE ledger_rows SET data = x'00', private = x'00'",
        "DELETE FROM ledger_rows WHERE work_id = 'w-000001'",
        "DELETE FROM ledger_rows",
    ] {
        let e = conn.execute(sql, []).expect_err(sql);
        assert!(
            e.to_string().contains("ledger rows are immutable"),
            "{sql}: {e}"
        );
    }
    // INSERT OR REPLACE would delete the old row and insert a new one.
    let e = conn
        .execute(
            "INSERT OR REPLACE INTO ledger_rows
             SELECT * FROM ledger_rows WHERE work_id = 'w-000001'",
            [],
        )
        .expect_err("replace");
    assert!(e.to_string().contains("duplicate work id"), "{e}");
    assert_eq!(
        store.get("w-000001", true).await.expect("get"),
        Some(row(1, "a"))
    );
}

/// Sealed rows skip the second hashing, with the same guarantees: stored
/// as they are, atomic per call, duplicates refused.
async fn sealed_rows_append_like_rows(store: Backend) {
    let sealed = |i| SealedRow::check(row(i, "a")).expect("sealed");
    store
        .append_sealed(vec![sealed(1), sealed(2)])
        .await
        .expect("append");
    assert_eq!(
        store.get("w-000002", true).await.expect("get"),
        Some(row(2, "a"))
    );
    let e = store
        .append_sealed(vec![sealed(3), sealed(1)])
        .await
        .expect_err("duplicate");
    assert_eq!(e.code(), "duplicate_work_id");
    assert_eq!(store.get("w-000003", false).await.expect("get"), None);
    // A row edited after sealing cannot become a SealedRow.
    let mut r = row(4, "a");
    r.data.fee_micros += 1;
    assert_eq!(
        SealedRow::check(r).expect_err("edited").code(),
        "invalid_row"
    );
}

/// A call larger than one INSERT statement is still atomic.
async fn a_large_call_is_atomic(store: Backend) {
    store.append(vec![row(150, "a")]).await.expect("first");
    let rows: Vec<LedgerRow> = (0..200u64).map(|i| row(i, "a")).collect();
    let e = store.append(rows).await.expect_err("duplicate");
    assert_eq!(e.code(), "duplicate_work_id");
    assert!(e.to_string().contains("w-000150"), "{e}");
    let all = store
        .aggregate(RowFilter::default())
        .await
        .expect("aggregate");
    assert_eq!(all.rows, 1);
    let rows: Vec<LedgerRow> = (1000..1200u64).map(|i| row(i, "a")).collect();
    store.append(rows).await.expect("append");
    let all = store
        .aggregate(RowFilter::default())
        .await
        .expect("aggregate");
    assert_eq!(all.rows, 201);
}

/// Scans read rows in the order they were appended (within a call too),
/// from any sequence number on.
async fn scan_reads_in_append_order(store: Backend) {
    let first: Vec<LedgerRow> = (6..=10u64).rev().map(|i| row(i, "a")).collect();
    store.append(first).await.expect("append");
    store.append(vec![row(1, "a")]).await.expect("append");
    let all = store.scan(0, 100).await.expect("scan");
    let ids: Vec<&str> = all.iter().map(|(_, r)| r.data.work_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "w-000010", "w-000009", "w-000008", "w-000007", "w-000006", "w-000001"
        ]
    );
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "sequence grows");
    assert!(all.iter().all(|(_, r)| r.private.is_none()));
    let rest = store.scan(all[2].0, 2).await.expect("scan");
    let ids: Vec<&str> = rest.iter().map(|(_, r)| r.data.work_id.as_str()).collect();
    assert_eq!(ids, ["w-000007", "w-000006"]);
}

/// Settlement tails the ledger by sequence number: while many callers
/// append at once (on PostgreSQL, batches copied on one connection while
/// the previous one commits on the other), a reader that keeps scanning
/// from the last number it saw never skips a row, nor sees one twice.
async fn a_tailing_scan_sees_every_row_once_while_appends_run(store: Backend) {
    const CALLERS: u64 = 8;
    const CALLS: u64 = 40;
    const ROWS: u64 = 25;
    let store = Arc::new(store);
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let store = store.clone();
        callers.push(tokio::spawn(async move {
            for call in 0..CALLS {
                let base = (c * CALLS + call) * ROWS;
                let rows = (base..base + ROWS).map(|i| row(i, "a")).collect();
                store.append(rows).await.expect("append");
            }
        }));
    }
    let tail = tokio::spawn({
        let store = store.clone();
        async move {
            let (mut after, mut seen) = (0u64, Vec::new());
            loop {
                let finished = *done.borrow_and_update();
                let page = store.scan(after, 1000).await.expect("scan");
                if page.is_empty() {
                    if finished {
                        return seen;
                    }
                    // Wait for more appends (or their end) without spinning.
                    tokio::task::yield_now().await;
                    continue;
                }
                for (seq, r) in page {
                    assert!(seq > after, "sequence grows");
                    after = seq;
                    seen.push(r.data.work_id);
                }
            }
        }
    });
    for c in callers {
        c.await.expect("caller");
    }
    done_tx.send(true).expect("tail");
    let mut seen = tail.await.expect("tail");
    let total = (CALLERS * CALLS * ROWS) as usize;
    assert_eq!(seen.len(), total, "every row seen");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "each once");
}

/// On PostgreSQL the database refuses changes twice over: the broker's
/// role and the owner have no UPDATE, DELETE or TRUNCATE privilege, and
/// triggers stop even a superuser (who ignores privileges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_updates_and_deletes() {
    let store = Backend::postgres().await;
    let Backend::Postgres(db, pg) = &store else {
        unreachable!()
    };
    pg.append(vec![row(1, "a")]).await.expect("append");
    for (url, want) in [
        (&db.app_url, "permission denied"),
        (&db.owner_url, "permission denied"),
        (&db.superuser_url, "ledger rows are immutable"),
    ] {
        let client = brume_pg::connect(url).await.expect("connect");
        for sql in [
            "UPDATE ledger_rows SET fuel = 1 WHERE work_id = 'w-000001'",
            "UPDATE ledger_rows SET row_hash = '\\x00'",
            "DELETE FROM ledger_rows WHERE work_id = 'w-000001'",
            "TRUNCATE ledger_rows",
        ] {
            let e = client.batch_execute(sql).await.expect_err(sql);
            let msg = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            assert!(msg.contains(want), "{url}: {sql}: {msg}");
        }
    }
    assert_eq!(
        pg.get("w-000001", true).await.expect("get"),
        Some(row(1, "a"))
    );
}
