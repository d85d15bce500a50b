//! Re-verifies ledger rows from their data.
//!
//! With the public columns only (anyone), [`audit`] recomputes each row hash
//! from the public pairs, and [`audit_json`] also checks that the
//! `custom_hash` and `private_hash` columns are present and well formed (64
//! hex digits). Whether those hashes match the private data cannot be
//! checked without the private data: a public auditor sees only that the
//! hashes themselves were not changed (changing one breaks the row hash).
//!
//! With private access (a row's owner, or the operator on its own data
//! directory), [`audit`] also recomputes `private_hash` and `custom_hash`
//! from the private columns, so an edited private value is caught.

use serde::{Deserialize, Serialize};

use crate::row::{Aggregate, Hash32, LedgerRow, custom_hash, private_hash};
use crate::store::{LedgerError, LedgerStore, ListQuery, MAX_PAGE, RowFilter};

/// What is wrong with a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The stored row hash is not the hash of the public columns.
    RowHash { stored: Hash32, computed: Hash32 },
    /// The custom fields do not hash to `custom_hash`.
    CustomHash { stored: Hash32, computed: Hash32 },
    /// The internal private columns do not hash to `private_hash`.
    PrivateHash { stored: Hash32, computed: Hash32 },
    /// A hash column is missing or not 32 bytes of hex.
    MalformedHash { column: String },
    /// The row could not be decoded at all.
    Undecodable { detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    pub work_id: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditReport {
    /// Rows examined (including the undecodable ones).
    pub rows: u64,
    /// Rows whose private columns were checked too.
    pub private_checked: u64,
    /// XOR of the stored row hashes of the decodable rows.
    pub aggregate: Aggregate,
    pub findings: Vec<Finding>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The work ids with findings, each once, in order of first finding.
    pub fn bad_rows(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.findings {
            if !out.contains(&f.work_id.as_str()) {
                out.push(&f.work_id);
            }
        }
        out
    }

    /// Adds another report's figures (auditing page by page).
    pub fn merge(&mut self, other: AuditReport) {
        self.rows += other.rows;
        self.private_checked += other.private_checked;
        self.aggregate.add(&other.aggregate.hash().0);
        self.findings.extend(other.findings);
    }

    fn check(&mut self, row: &LedgerRow) {
        self.rows += 1;
        self.aggregate.add(&row.row_hash.0);
        let work_id = || row.data.work_id.clone();
        let computed = row.compute_row_hash();
        if computed != row.row_hash {
            self.findings.push(Finding {
                work_id: work_id(),
                problem: Problem::RowHash {
                    stored: row.row_hash,
                    computed,
                },
            });
        }
        if let Some(p) = &row.private {
            self.private_checked += 1;
            let computed = custom_hash(p);
            if computed != row.custom_hash {
                self.findings.push(Finding {
                    work_id: work_id(),
                    problem: Problem::CustomHash {
                        stored: row.custom_hash,
                        computed,
                    },
                });
            }
            let computed = private_hash(p);
            if computed != row.private_hash {
                self.findings.push(Finding {
                    work_id: work_id(),
                    problem: Problem::PrivateHash {
                        stored: row.private_hash,
                        computed,
                    },
                });
            }
        }
    }
}

/// Audits decoded rows: the row hash always, the private hashes when the
/// rows carry their private columns. (Decoded rows have well-formed hash
/// columns by construction; [`audit_json`] checks the format.)
pub fn audit(rows: &[LedgerRow]) -> AuditReport {
    let mut report = AuditReport::default();
    for row in rows {
        report.check(row);
    }
    report
}

/// Audits rows as JSON objects (as served by the public API): checks that
/// each hash column is present and 64 hex digits, then audits the row.
pub fn audit_json(rows: &[serde_json::Value]) -> AuditReport {
    let mut report = AuditReport::default();
    for v in rows {
        let work_id = v
            .get("work_id")
            .and_then(|w| w.as_str())
            .unwrap_or("?")
            .to_string();
        let mut well_formed = true;
        for column in ["custom_hash", "private_hash", "row_hash"] {
            let ok = v
                .get(column)
                .and_then(|h| h.as_str())
                .and_then(Hash32::parse)
                .is_some();
            if !ok {
                well_formed = false;
                report.findings.push(Finding {
                    work_id: work_id.clone(),
                    problem: Problem::MalformedHash {
                        column: column.into(),
                    },
                });
            }
        }
        if !well_formed {
            report.rows += 1;
            continue;
        }
        match LedgerRow::deserialize(v) {
            Ok(row) => report.check(&row),
            Err(e) => {
                report.rows += 1;
                report.findings.push(Finding {
                    work_id,
                    problem: Problem::Undecodable {
                        detail: e.to_string(),
                    },
                });
            }
        }
    }
    report
}

/// Audits every row of a store that `filter` selects, page by page. Rows
/// the store cannot decode are findings, not errors.
pub async fn audit_store(
    store: &dyn LedgerStore,
    filter: RowFilter,
    private: bool,
) -> Result<AuditReport, LedgerError> {
    let mut report = AuditReport::default();
    let mut cursor = None;
    loop {
        let page = store
            .list(ListQuery {
                filter: filter.clone(),
                cursor,
                limit: Some(MAX_PAGE),
                private,
            })
            .await?;
        report.merge(audit(&page.rows));
        for c in page.corrupt {
            report.rows += 1;
            report.findings.push(Finding {
                work_id: c.work_id,
                problem: Problem::Undecodable { detail: c.detail },
            });
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(report),
        }
    }
}
