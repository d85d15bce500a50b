//! What runs settled, per row: a row's status for `/v1/status`, and the
//! updates of the ledger's status column once a run is done (the `marks`
//! a run's payouts plan leaves, kept until no later run needs them).

use brume_sql::{Sql, V};

use super::{RowStatus, from_json, i, int, text};
use crate::{SettleError, Slim};

fn status(account: &str, role: &str, status: &str, tx: Option<String>) -> RowStatus {
    RowStatus {
        account: account.to_string(),
        role: role.into(),
        status: status.into(),
        tx_hash: tx,
    }
}

/// The status of each of a row's payers and beneficiaries.
pub(crate) fn row_status(
    c: &mut dyn Sql,
    seq: u64,
    payers: &[String],
    beneficiaries: &[String],
) -> Result<Vec<RowStatus>, SettleError> {
    if let Some(row) = text(c, "SELECT row FROM deferred WHERE seq = ?1", &[i(seq)])? {
        return deferred_row_status(c, &from_json(&row)?, beneficiaries);
    }
    let run = match int(c, "SELECT run FROM late WHERE seq = ?1", &[i(seq)])? {
        Some(r) => Some(r),
        None => int(
            c,
            "SELECT id FROM runs WHERE from_seq < ?1 AND to_seq >= ?1 AND phase = 'done'",
            &[i(seq)],
        )?,
    };
    let Some(run) = run else {
        return Ok(payers
            .iter()
            .map(|p| status(p, "payer", "unsettled", None))
            .chain(
                beneficiaries
                    .iter()
                    .map(|b| status(b, "beneficiary", "unsettled", None)),
            )
            .collect());
    };
    let done_tx = |c: &mut dyn Sql, kind: &str, account: &str| {
        text(
            c,
            "SELECT tx_hash FROM intents WHERE run = ?1 AND kind = ?2 AND account = ?3
                AND state = 'done'",
            &[V::I(run), V::T(kind), V::T(account)],
        )
    };
    let mut out = Vec::new();
    for p in payers {
        let tx = done_tx(c, "collect", p)?;
        let s = if tx.is_some() {
            "collected"
        } else {
            "unsettled"
        };
        out.push(status(p, "payer", s, tx));
    }
    for b in beneficiaries {
        if let Some(tx) = done_tx(c, "payout", b)? {
            out.push(status(b, "beneficiary", "paid", Some(tx)));
            continue;
        }
        let carried = c.one(
            "SELECT paid_intent FROM carry WHERE run = ?1 AND account = ?2",
            &[V::I(run), V::T(b)],
        )?;
        match carried.map(|r| r.oi(0)).transpose()? {
            Some(Some(intent)) => {
                let tx = text(
                    c,
                    "SELECT tx_hash FROM intents WHERE id = ?1",
                    &[V::I(intent)],
                )?;
                out.push(status(b, "beneficiary", "paid", tx));
            }
            Some(None) => out.push(status(b, "beneficiary", "carried", None)),
            None => out.push(status(b, "beneficiary", "unsettled", None)),
        }
    }
    Ok(out)
}

/// A deferred row's parts: held (collected, waiting for the others) or
/// deferred; its beneficiaries unsettled.
fn deferred_row_status(
    c: &mut dyn Sql,
    row: &Slim,
    beneficiaries: &[String],
) -> Result<Vec<RowStatus>, SettleError> {
    let mut out = Vec::new();
    for p in &row.parts {
        let tx = match p.collected {
            Some(id) => text(c, "SELECT tx_hash FROM intents WHERE id = ?1", &[V::I(id)])?,
            None => None,
        };
        let s = if tx.is_some() { "held" } else { "deferred" };
        out.push(status(&p.account, "payer", s, tx));
    }
    for b in beneficiaries {
        out.push(status(b, "beneficiary", "unsettled", None));
    }
    Ok(out)
}

/// Finished runs whose rows' statuses are not yet in the ledger.
pub(crate) fn unmarked_runs(c: &mut dyn Sql) -> Result<Vec<i64>, SettleError> {
    c.query(
        "SELECT id FROM runs WHERE phase = 'done'
         AND id NOT IN (SELECT run FROM marked_runs) ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| Ok(r.i(0)?))
    .collect()
}

/// What a finished run settled, as updates of the ledger's status column:
/// the payers of the rows it completed `collected` (with the collection's
/// transaction: this run's, or an earlier one's that held the part), their
/// beneficiaries `paid` (with this run's payout), and the beneficiaries of
/// earlier rows whose carried-over amounts this run paid. A beneficiary
/// carried over stays `pending` until a later run pays it. An entity that
/// both pays and receives in a row ends `paid`.
pub(crate) fn status_updates(
    c: &mut dyn Sql,
    run: i64,
) -> Result<Vec<brume_ledger::store::StatusUpdate>, SettleError> {
    use brume_ledger::store::{PaymentStatus, StatusUpdate};
    type Groups = std::collections::BTreeMap<(String, &'static str, Option<String>), Vec<String>>;
    let mut groups = Groups::new();
    let mut add = |entity: String, status: &'static str, tx: Option<String>, work_id: String| {
        groups
            .entry((entity, status, tx))
            .or_default()
            .push(work_id);
    };
    for r in c.query(
        "SELECT m.work_id, m.entity,
            (SELECT tx_hash FROM intents i WHERE i.run = m.run AND i.kind = 'collect'
                AND i.account = m.entity AND i.state = 'done' LIMIT 1),
            (SELECT i.tx_hash FROM held_log h JOIN intents i ON i.id = h.intent
                WHERE h.seq = m.seq AND i.account = m.entity AND i.state = 'done' LIMIT 1)
         FROM marks m WHERE m.run = ?1 AND m.role = 'payer'",
        &[V::I(run)],
    )? {
        add(r.t(1)?, "collected", r.ot(3)?.or(r.ot(2)?), r.t(0)?);
    }
    for r in c.query(
        "SELECT m.work_id, m.entity, m.zero,
            (SELECT tx_hash FROM intents i WHERE i.run = m.run AND i.kind = 'payout'
                AND i.account = m.entity AND i.state = 'done' LIMIT 1)
         FROM marks m WHERE m.run = ?1 AND m.role = 'beneficiary'",
        &[V::I(run)],
    )? {
        match (r.i(2)? != 0, r.ot(3)?) {
            (_, Some(tx)) => add(r.t(1)?, "paid", Some(tx), r.t(0)?),
            (true, None) => add(r.t(1)?, "paid", None, r.t(0)?),
            (false, None) => {} // carried over
        }
    }
    for r in c.query(
        "SELECT m.work_id, m.entity, i.tx_hash
         FROM carry k JOIN intents i ON i.id = k.paid_intent
         JOIN marks m ON m.run = k.run AND m.entity = k.account AND m.role = 'beneficiary'
         WHERE i.run = ?1 AND i.state = 'done' AND m.zero = 0",
        &[V::I(run)],
    )? {
        add(r.t(1)?, "paid", r.ot(2)?, r.t(0)?);
    }
    // Parts this run collected of rows it had to defer (another payer
    // could not pay): held, but collected, and in this collection's anchor.
    for r in c.query(
        "SELECT d.row, i.account, i.tx_hash FROM held_log h
         JOIN intents i ON i.id = h.intent JOIN deferred d ON d.seq = h.seq
         WHERE i.run = ?1 AND i.state = 'done'",
        &[V::I(run)],
    )? {
        let slim: Slim = from_json(&r.t(0)?)?;
        add(r.t(1)?, "collected", r.ot(2)?, slim.work_id);
    }
    // `collected` before `paid`: an entity that pays and receives in one
    // row (a requester's refund) ends `paid`.
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|((_, status, _), _)| *status != "collected");
    Ok(groups
        .into_iter()
        .map(|((entity, status, settling_tx), mut work_ids)| {
            work_ids.sort();
            work_ids.dedup();
            StatusUpdate {
                work_ids,
                entity,
                status: if status == "paid" {
                    PaymentStatus::Paid
                } else {
                    PaymentStatus::Collected
                },
                settling_tx,
            }
        })
        .collect())
}

/// Records that a run's statuses are in the ledger, and forgets the marks
/// no later run needs: all but those of beneficiaries still carried over.
pub(crate) fn marked(c: &mut dyn Sql, run: i64) -> Result<(), SettleError> {
    c.exec(
        "INSERT INTO marked_runs (run) VALUES (?1) ON CONFLICT DO NOTHING",
        &[V::I(run)],
    )?;
    c.exec(
        "DELETE FROM marks WHERE run = ?1 AND NOT (role = 'beneficiary' AND zero = 0
            AND EXISTS (SELECT 1 FROM carry k WHERE k.run = marks.run
                AND k.account = marks.entity AND k.paid_intent IS NULL))",
        &[V::I(run)],
    )?;
    // Carries this run paid: their earlier runs' marks are done with.
    c.exec(
        "DELETE FROM marks WHERE role = 'beneficiary' AND EXISTS (
            SELECT 1 FROM carry k JOIN intents i ON i.id = k.paid_intent
            WHERE i.run = ?1 AND k.run = marks.run AND k.account = marks.entity)",
        &[V::I(run)],
    )?;
    Ok(())
}
