use brume_ledger::audit::{Problem, audit, audit_json, audit_store};
use brume_ledger::row::{Hash32, LedgerRow};
use brume_ledger::store::{LedgerStore, RowFilter, SqliteStore};

use crate::row;

fn rows() -> Vec<LedgerRow> {
    (0..5u64).map(|i| row(i, "acct")).collect()
}

#[test]
fn clean_rows_audit_clean() {
    let rows = rows();
    let report = audit(&rows);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.rows, 5);
    assert_eq!(report.private_checked, 5);
    let public: Vec<_> = rows.iter().map(LedgerRow::public).collect();
    let report = audit(&public);
    assert!(report.is_clean());
    assert_eq!(report.private_checked, 0);
}

#[test]
fn an_edited_public_value_is_caught() {
    let mut rows = rows();
    rows[3].data.payouts[0].beneficiary = "0xattacker".into();
    let report = audit(&rows);
    assert_eq!(report.bad_rows(), ["w-000003"]);
    assert!(matches!(
        report.findings[0].problem,
        Problem::RowHash { .. }
    ));
}

/// A private value edited: with private access the private hashes no longer
/// match. Without it, the public data is intact and the audit can only check
/// that the hash columns are well formed.
#[test]
fn an_edited_private_value_is_caught_with_private_access() {
    let mut rows = rows();
    if let Some(p) = rows[1].private.as_mut() {
        p.custom_fields.insert("n".into(), "999".into());
    }
    if let Some(p) = rows[2].private.as_mut() {
        p.request_line = "GET /other HTTP/1.1".into();
    }
    let report = audit(&rows);
    assert_eq!(report.bad_rows(), ["w-000001", "w-000002"]);
    assert!(matches!(
        report.findings[0].problem,
        Problem::CustomHash { .. }
    ));
    assert!(matches!(
        report.findings[1].problem,
        Problem::PrivateHash { .. }
    ));
    let public: Vec<_> = rows.iter().map(LedgerRow::public).collect();
    assert!(audit(&public).is_clean());
    // Re-hashing the edited private data into custom_hash breaks the row hash.
    if let Some(p) = rows[1].private.as_ref() {
        rows[1].custom_hash = brume_ledger::row::custom_hash(p);
    }
    let report = audit(&rows[1..2]);
    assert!(matches!(
        report.findings[0].problem,
        Problem::RowHash { .. }
    ));
}

#[test]
fn json_hash_columns_must_be_well_formed() {
    let rows = rows();
    let mut values: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::to_value(r.public()).expect("json"))
        .collect();
    assert!(audit_json(&values).is_clean());
    values[0]["custom_hash"] = "abcd".into();
    if let Some(o) = values[1].as_object_mut() {
        o.remove("private_hash");
    }
    values[2]["fee_micros"] = 1.into();
    values[4]["fee_micros"] = "oops".into();
    let report = audit_json(&values);
    assert_eq!(report.rows, 5);
    assert_eq!(
        report.bad_rows(),
        ["w-000000", "w-000001", "w-000002", "w-000004"]
    );
    assert_eq!(
        report.findings[0].problem,
        Problem::MalformedHash {
            column: "custom_hash".into()
        }
    );
    assert!(matches!(
        report.findings[2].problem,
        Problem::RowHash { .. }
    ));
    assert!(matches!(
        report.findings[3].problem,
        Problem::Undecodable { .. }
    ));
}

/// An attacker with the database file: drops the triggers, edits values,
/// and the audit names every edited row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_database_file_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    store.append(rows()).await.expect("append");
    let clean = audit_store(&store, RowFilter::default(), true)
        .await
        .expect("audit");
    assert!(clean.is_clean(), "{clean:?}");
    let stored = store
        .aggregate(RowFilter::default())
        .await
        .expect("aggregate");
    assert_eq!(clean.aggregate, stored.aggregate);

    let conn = rusqlite::Connection::open(store.path()).expect("raw");
    conn.execute_batch(
        "DROP TRIGGER ledger_rows_no_update;
         -- a public value in a column
         UPDATE ledger_rows SET fuel = 1 WHERE work_id = 'w-000001';
         -- a public value in the data blob: the tier standard -> standarx
         UPDATE ledger_rows SET data = CAST(replace(data, 'standard', 'standarx') AS BLOB)
             WHERE work_id = 'w-000000';
         -- a private value in the private blob: the custom field n = \"2\"
         -- (encoded len 1, 'n', len 1, '2') becomes \"7\"
         UPDATE ledger_rows SET private = CAST(replace(private, x'016e0132', x'016e0137') AS BLOB)
             WHERE work_id = 'w-000002';
         -- a row hash, rewritten to another well-formed value
         UPDATE ledger_rows SET row_hash = zeroblob(32) WHERE work_id = 'w-000003';
         -- a hash that is no longer 32 bytes (custom_hash ends the data blob)
         UPDATE ledger_rows SET data = substr(data, 1, length(data) - 31)
             WHERE work_id = 'w-000004';",
    )
    .expect("tamper");
    drop(conn);

    let report = audit_store(&store, RowFilter::default(), true)
        .await
        .expect("audit");
    assert_eq!(report.rows, 5);
    assert_eq!(
        report.bad_rows(),
        ["w-000000", "w-000001", "w-000002", "w-000003", "w-000004"]
    );
    let problem = |id: &str| {
        report
            .findings
            .iter()
            .find(|f| f.work_id == id)
            .map(|f| f.problem.clone())
    };
    assert!(matches!(problem("w-000000"), Some(Problem::RowHash { .. })));
    assert!(matches!(problem("w-000001"), Some(Problem::RowHash { .. })));
    assert!(matches!(
        problem("w-000002"),
        Some(Problem::CustomHash { .. })
    ));
    assert!(matches!(
        problem("w-000003"),
        Some(Problem::RowHash { stored, .. }) if stored == Hash32([0; 32])
    ));
    assert!(matches!(
        problem("w-000004"),
        Some(Problem::Undecodable { .. })
    ));

    // Without private access the private edit is invisible (the public data
    // is intact); the rest is still caught.
    let public = audit_store(&store, RowFilter::default(), false)
        .await
        .expect("audit");
    assert_eq!(
        public.bad_rows(),
        ["w-000000", "w-000001", "w-000003", "w-000004"]
    );
}
