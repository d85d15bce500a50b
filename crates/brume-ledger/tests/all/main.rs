//! The ledger's integration tests, in one binary.

mod audit;
mod backend;
mod crash;
mod store;

use brume_ledger::row::{LedgerRow, example_row};

/// A sealed row: the worked example with its own work id, time and owner.
pub fn row(i: u64, requester: &str) -> LedgerRow {
    let mut r = example_row().expect("example row");
    r.data.work_id = format!("w-{i:06}");
    r.data.timestamp_ms = 1_700_000_000_000 + i * 1000;
    r.data.requester = requester.into();
    let mut p = r.private.take().expect("private");
    p.custom_fields.insert("n".into(), i.to_string());
    LedgerRow::seal(r.data, p).expect("seal")
}
