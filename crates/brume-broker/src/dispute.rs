//! A rejected buyer deposit (the SONM seed's): the requester of a
//! `confirm: true` job rejects its result instead of confirming it, and
//! the broker re-executes the job (`reexec.rs`: deterministic, in its own
//! sandbox) to decide. The loser pays:
//! - a result the re-execution refutes is a proven cheat: its provider is
//!   banned and slashed with a proof (as an audit's), and the requester is
//!   refunded the job's cost by a row of its own (`audit-refund-<id>`: the
//!   operator pays, out of the slashed stake);
//! - a result it confirms costs the requester the re-execution: a
//!   `dispute-fee-<id>` row, the job's cost again, to the operator.
//!
//! Either way the job's own row is then released to settlement, and the
//! job counts as decided (a second rejection or confirmation changes
//! nothing). A re-execution that decides nothing (the broker's own
//! deadline or fault) judges nobody: the row stays held, and the requester
//! may confirm, or the window release it. Confirm jobs run in the
//! deterministic profile, so that a re-execution can decide.

use std::sync::Arc;

use brume_api::WorkId;
use brume_api::receipt::CheatProof;
use brume_api::rest::JobDispute;

use crate::Shared;
use crate::store::StoreError;

/// Why a dispute could not be held.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The job has no signed result to dispute.
    NoReceipt,
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Refused {
        Refused::Store(e)
    }
}

/// Re-executes job `id` of `requester` and settles the dispute.
pub(crate) async fn dispute(
    shared: &Arc<Shared>,
    id: WorkId,
    requester: &str,
) -> Result<JobDispute, Refused> {
    let result = shared.jobs.result(id).await?;
    let (Some(result), Some((_, work))) = (result, shared.jobs.rebuilt_work(shared, id).await?)
    else {
        return Err(Refused::NoReceipt);
    };
    let Some(receipt) = result.receipt else {
        return Err(Refused::NoReceipt);
    };
    let assign = work.assignment(receipt.receipt.attempt);
    let truth = match crate::reexec::reexecute(shared, &assign).await {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(job = %id, "a dispute decided nothing: {why}");
            return Ok(JobDispute {
                id,
                verdict: "inconclusive".into(),
                detail: format!(
                    "the re-execution decided nothing ({why}); the job's payment still waits"
                ),
                amount: "0".into(),
            });
        }
    };
    let cost = brume_ledger::store::LedgerStore::get(shared.ledger.store(), &id.to_string(), false)
        .await
        .ok()
        .flatten()
        .map_or(0, |row| row.data.token_amount);
    let provider = receipt.receipt.provider.clone();
    let refuted = truth.reexecution.refutes(&receipt.receipt);
    let verdict = if refuted {
        tracing::warn!(job = %id, %provider, "a dispute refuted a provider's result");
        let proof = CheatProof {
            cheat: crate::verify::assigned(shared, &receipt, &work.spec.limits),
            quorum: Vec::new(),
            reexecution: Some(truth),
            work: crate::reexec::for_proof(assign),
        };
        crate::verify::punish(shared, &provider, &proof, "proven cheat (dispute)").await;
        if cost > 0 {
            let row = shared.ledger.audit_refund(id, requester, cost);
            shared.ledger.append_sealed(id, row).await;
        }
        JobDispute {
            id,
            verdict: "provider_cheated".into(),
            detail: format!(
                "the re-execution refuted {provider}'s result: it is banned and slashed, and the job's cost refunded"
            ),
            amount: cost.to_string(),
        }
    } else {
        tracing::info!(job = %id, %provider, "a dispute upheld a provider's result");
        if cost > 0 {
            let row = shared.ledger.dispute_fee(id, requester, cost);
            shared.ledger.append_sealed(id, row).await;
        }
        JobDispute {
            id,
            verdict: "result_upheld".into(),
            detail: format!(
                "the re-execution gave {provider}'s result: the requester pays the re-execution"
            ),
            amount: cost.to_string(),
        }
    };
    shared.jobs.confirm(id).await?;
    Ok(verdict)
}
