//! Audited functions: optimistic verification of invocations.
//!
//! An invocation with `x-brume-verify: audit` (or from an account in
//! `[broker.trust] audit_accounts`) runs in the deterministic profile, with
//! its seed and clock in the assignment, and its provider's signed receipt
//! is checked like a job's. Its answer goes back at once. Afterwards a
//! sampled share of audited calls (`audit_share_ppm`, default one in ten)
//! is re-executed by the broker (`reexec.rs`, one at a time, off the
//! response path, unbilled). A result the re-execution refutes is a proven
//! cheat: the provider is banned and slashed with a proof (its receipt, the
//! broker-signed assignment, the signed re-execution and the work), and the
//! caller is refunded the call's fee by a row of its own
//! (`audit-refund-<work id>`: the operator pays, out of the slashed stake
//! it received; the requester receives), which the next settlement run
//! pays out. The audited row itself settles like any other: the refund is
//! credited in the next settlement rather than the row held back.

use std::sync::Arc;

use brume_api::receipt::CheatProof;

use crate::Shared;
use crate::metrics::OutcomeLabels;
use crate::work::{Class, Completion, Work};

/// Whether `work` is an audited invocation (the only invocations whose
/// receipt is checked).
fn audited(work: &Work) -> bool {
    work.spec.class == Class::Sync && work.spec.wants_receipt
}

/// After an audited call's answer: samples it, and if drawn, re-executes it
/// in the background.
pub(crate) fn after(shared: &Arc<Shared>, work: &Arc<Work>, completion: &Completion) {
    let Completion::Done { provider, cost, .. } = completion else {
        return;
    };
    if !audited(work) {
        return;
    }
    let share = shared.config.trust.audit_share_ppm();
    if rand::random_range(0..1_000_000) >= share {
        return;
    }
    let Some(receipt) = work.receipt() else {
        return;
    };
    let refund = cost.as_ref().map_or(0, |c| c.token_amount);
    let (shared2, work, provider) = (shared.clone(), work.clone(), provider.clone());
    shared.tasks.spawn(async move {
        audit(&shared2, &work, receipt, &provider, refund).await;
    });
}

async fn audit(
    shared: &Arc<Shared>,
    work: &Work,
    receipt: brume_api::receipt::SignedReceipt,
    provider: &str,
    refund: u128,
) {
    let assign = work.assignment(receipt.receipt.attempt);
    let truth = match crate::reexec::reexecute(shared, &assign).await {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(work = %work.id, "the audit decided nothing: {why}");
            return;
        }
    };
    let refuted = truth.reexecution.refutes(&receipt.receipt);
    let outcome = if refuted { "refuted" } else { "confirmed" };
    shared
        .metrics
        .audits
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
    if !refuted {
        return;
    }
    tracing::warn!(work = %work.id, %provider, "an audit refuted a provider's answer");
    let proof = CheatProof {
        cheat: crate::verify::assigned(shared, &receipt, &work.spec.limits),
        quorum: Vec::new(),
        reexecution: Some(truth),
        work: crate::reexec::for_proof(assign),
    };
    crate::verify::punish(shared, provider, &proof, "proven cheat (audit)").await;
    if refund > 0 {
        let requester = work.spec.account.to_string();
        let row = shared.ledger.audit_refund(work.id, &requester, refund);
        shared.ledger.append_sealed(work.id, row).await;
    }
}
