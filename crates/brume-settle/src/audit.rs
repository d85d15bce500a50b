//! The settlement audit, from the ledger and the chain alone.
//!
//! It reads no settlement journal: only the ledger's rows (their columns,
//! whose hashes it recomputes), the ledger's status column (which
//! transaction settled each entity of each row) and the chain's
//! collections and payouts ([`Settlement::movements`]). So it holds even
//! when the journal is lost, and an operator who keeps one can't hide
//! behind it.
//!
//! What it checks:
//! - every row's hash matches its columns (a **tampered row** fails here,
//!   and in every anchor it is part of);
//! - every collection on the chain is one payer's group: the rows whose
//!   status names that transaction for that payer, whose parts sum to the
//!   amount and whose hashes XOR to the anchor;
//! - every payout batch: each payment is one beneficiary's group likewise
//!   (amount to the unit), and the batch's anchor is
//!   [`crate::payout_anchor`] of them (a **tampered anchor** fails here);
//! - every movement has rows behind it (a **transfer with no rows** is
//!   untraced), and every transaction a row names is on the chain.
//!
//! One inference: the ledger keeps one status per entity and row, so for
//! an entity that both pays and is paid in a row (a requester's refund)
//! it says `paid`. That part's collection is taken to be the entity's
//! last collection before the payout: where settlement put it, unless the
//! row waited for another payer across runs.

use std::collections::HashMap;

use brume_chain::{Address, Anchor, MoveKind, Movement, Settlement};
use brume_ledger::store::PaymentStatus;
use serde::{Deserialize, Serialize};

use crate::{Group, Resolver, RowSource, SettleError, Slim, anchor_of};

/// What [`audit`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleAudit {
    /// Ledger rows read.
    pub rows: u64,
    /// Collections and payouts on the chain checked.
    pub transfers: u64,
    /// Rows, groups or anchors that do not match.
    pub mismatched: Vec<String>,
    /// Movements with no rows behind them.
    pub untraced: Vec<String>,
}

impl SettleAudit {
    pub fn is_clean(&self) -> bool {
        self.mismatched.is_empty() && self.untraced.is_empty()
    }
}

/// The most findings of each kind kept (the counts go on).
const MAX_FINDINGS: usize = 1_000;

/// A part whose collection the status column can't name (see the module
/// docs): (payer, amount, row hash, the payout transaction of the row).
type Unnamed = (Address, u128, [u8; 32], String);

/// A payment of a batch: beneficiary, amount, its rows' aggregate.
type Payment = (Address, u128, [u8; 32]);

/// Audits settlement from `rows` (the ledger) and `chain` alone.
pub async fn audit(
    rows: &dyn RowSource,
    chain: &dyn Settlement,
    resolve: &Resolver,
    page: usize,
) -> Result<SettleAudit, SettleError> {
    let page = page.clamp(1, brume_ledger::store::MAX_SCAN);
    let mut report = SettleAudit::default();
    let mismatch = |report: &mut SettleAudit, m: String| {
        if report.mismatched.len() < MAX_FINDINGS {
            report.mismatched.push(m);
        }
    };

    // Which transaction settled each entity of each row.
    let mut statuses: HashMap<String, Vec<(String, PaymentStatus, String)>> = HashMap::new();
    let mut after = None;
    loop {
        let batch = rows.status_page(after.clone(), page).await?;
        let Some((work, last)) = batch.last() else {
            break;
        };
        after = Some((work.clone(), last.entity.clone()));
        let full = batch.len() == page;
        for (work_id, s) in batch {
            if let Some(tx) = s.settling_tx {
                statuses
                    .entry(work_id)
                    .or_default()
                    .push((s.entity, s.status, tx));
            }
        }
        if !full {
            break;
        }
    }

    // The ledger's groups: (transaction, address) → rows.
    let mut collected: HashMap<(String, Address), Group> = HashMap::new();
    let mut paid: HashMap<(String, Address), Group> = HashMap::new();
    let mut unnamed: Vec<Unnamed> = Vec::new();
    let mut after = 0;
    loop {
        let batch = rows.scan(after, page).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        let full = batch.len() == page;
        for r in batch {
            report.rows += 1;
            let hash = r.row.compute_row_hash();
            if hash != r.row.row_hash {
                mismatch(
                    &mut report,
                    format!(
                        "row {}: its hash {} does not match its columns ({hash})",
                        r.row.data.work_id, r.row.row_hash
                    ),
                );
            }
            let Some(settled) = statuses.remove(&r.row.data.work_id) else {
                continue;
            };
            let mut slim = Slim::from_row(r.seq, r.row);
            slim.hash = hash.0;
            for (entity, status, tx) in settled {
                let Some(address) = resolve(&entity) else {
                    mismatch(
                        &mut report,
                        format!(
                            "row {}: {entity} is settled in tx {tx} but is not an address",
                            slim.work_id
                        ),
                    );
                    continue;
                };
                let pays = slim
                    .parts
                    .iter()
                    .find(|p| p.account == entity)
                    .map_or(0, |p| p.amount);
                let gets = slim
                    .payouts
                    .iter()
                    .find(|(b, _)| *b == entity)
                    .map_or(0, |(_, a)| *a);
                match status {
                    PaymentStatus::Collected if pays > 0 => collected
                        .entry((tx, address))
                        .or_default()
                        .add(pays, &slim.hash),
                    PaymentStatus::Paid => {
                        if pays > 0 {
                            unnamed.push((address, pays, slim.hash, tx.clone()));
                        }
                        if gets > 0 {
                            paid.entry((tx, address)).or_default().add(gets, &slim.hash);
                        }
                    }
                    _ => {}
                }
            }
        }
        if !full {
            break;
        }
    }

    // The chain's movements, in order.
    let mut moves: Vec<Movement> = Vec::new();
    let mut cursor = None;
    loop {
        let batch = chain
            .movements(cursor, brume_chain::MAX_HISTORY_PAGE)
            .await?;
        let Some(last) = batch.last() else { break };
        cursor = Some(last.pos);
        let full = batch.len() == brume_chain::MAX_HISTORY_PAGE;
        moves.extend(batch);
        if !full {
            break;
        }
    }
    report.transfers = moves.len() as u64;

    // Unnamed parts: the payer's last collection before the row's payout.
    for (payer, amount, hash, payout_tx) in unnamed {
        let paid_at = moves
            .iter()
            .position(|m| m.kind == MoveKind::Paid && m.tx_hash.to_string() == payout_tx);
        let collection = paid_at.and_then(|end| {
            moves[..end]
                .iter()
                .rev()
                .find(|m| m.kind == MoveKind::Collected && m.party == payer)
        });
        match collection {
            Some(m) => collected
                .entry((m.tx_hash.to_string(), payer))
                .or_default()
                .add(amount, &hash),
            None => mismatch(
                &mut report,
                format!(
                    "{payer} paid in a row settled by tx {payout_tx}, but no collection of it precedes that payout"
                ),
            ),
        }
    }

    // Each movement against its group; payouts batch by anchor.
    let mut batches: Vec<(Anchor, Vec<Payment>)> = Vec::new();
    for m in &moves {
        let key = (m.tx_hash.to_string(), m.party);
        let (what, groups) = match m.kind {
            MoveKind::Collected => ("collection from", &mut collected),
            MoveKind::Paid => ("payout to", &mut paid),
        };
        let what = format!("{what} {} of {} (tx {})", m.party, m.amount, m.tx_hash);
        let Some(g) = groups.remove(&key) else {
            if report.untraced.len() < MAX_FINDINGS {
                report.untraced.push(format!(
                    "{what}, anchor {}: no ledger row is settled by it",
                    m.anchor
                ));
            }
            continue;
        };
        if g.amount != m.amount {
            mismatch(
                &mut report,
                format!("{what}: its {} rows sum to {}", g.rows, g.amount),
            );
        }
        match m.kind {
            MoveKind::Collected => {
                if anchor_of(&g.aggregate) != m.anchor {
                    mismatch(
                        &mut report,
                        format!(
                            "{what}: anchor {} but its {} rows aggregate to {}",
                            m.anchor,
                            g.rows,
                            anchor_of(&g.aggregate)
                        ),
                    );
                }
            }
            MoveKind::Paid => {
                let entry = (m.party, m.amount, g.aggregate.0.0);
                match batches.iter_mut().find(|(a, _)| *a == m.anchor) {
                    Some((_, b)) => b.push(entry),
                    None => batches.push((m.anchor, vec![entry])),
                }
            }
        }
    }
    for (anchor, payments) in batches {
        let n = payments.len();
        let expected = crate::payout_anchor(payments);
        if expected != anchor {
            mismatch(
                &mut report,
                format!(
                    "payout batch of {n} under anchor {anchor}: its rows make the anchor {expected}"
                ),
            );
        }
    }
    // What the ledger says was settled by transactions the chain lacks.
    for ((tx, address), g) in collected.into_iter().chain(paid) {
        mismatch(
            &mut report,
            format!(
                "{} rows name tx {tx} for {address} ({}), which the chain holds no settlement of",
                g.rows, g.amount
            ),
        );
    }
    Ok(report)
}
