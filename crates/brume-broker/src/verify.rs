//! Verification by replication, and what a proven cheat costs.
//!
//! A job with `verify: replicate {n, quorum}` runs as `n` replica works
//! ([`ReplicaGroup`]), deterministically, on providers with distinct
//! addresses (the scheduler checks the group's [`Distinct`] set). Each replica's
//! result comes with its provider's signed receipt (checked by the session).
//! Once every replica has ended, [`decide`]:
//!
//! - groups the results by (output digest, fuel). If they all agree, a
//!   group of at least `quorum` wins and the job completes with its result
//!   and receipt.
//! - If they disagree, the broker re-executes the work itself
//!   ([`crate::reexec`]) and its result decides, quorum or not: the
//!   replicas that match it win, and every provider that signed another
//!   result is a proven cheat. A [`CheatProof`] (its receipt, the broker's
//!   signed re-execution, the agreeing receipts and the work) is recorded
//!   with the job, its address is banned (session closed, reconnects
//!   refused), its stake is slashed to the operator's account with the
//!   proof's sha256 as the anchor, and it is not paid. Nobody is slashed on
//!   other providers' word alone: a colluding majority loses to the
//!   re-execution.
//! - If the re-execution decides nothing (the broker's own deadline), the
//!   quorum rule stands alone and nobody is punished; dissenters are not
//!   paid.
//! - every replica in the winning group writes its own ledger row, billed to
//!   the requester (the requester pays for the replicas its policy asked
//!   for); the cheat's writes none. Re-executions cost the requester
//!   nothing.
//!
//! Replicas are units of the lifecycle billed later ([`Bill::Deferred`]):
//! their group bills the agreeing ones once decided, and completes the job
//! through its [`Waiter`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use brume_api::receipt::{
    Assignment, CheatProof, Reexecution, SignedAssignment, SignedReceipt, SignedReexecution,
};
use brume_api::rest::{ReplicaResult, Verification, VerifyPolicy};
use brume_api::wire::Outcome;
use brume_api::{ApiError, ErrorCode, WorkId};
use sha2::{Digest as _, Sha256};

use crate::Shared;
use crate::ledger::Billing;
use crate::lifecycle::{Bill, Finished, Oneshot, Waiter};
use crate::work::{Completion, Distinct, Work, WorkSpec};

/// Under `adaptive`, a provider with a shorter run of consecutive verified
/// results always has its result checked by a second replica.
pub(crate) const ADAPTIVE_MIN_RUN: u64 = 10;

/// The replicas of one job.
pub(crate) struct ReplicaGroup {
    /// The job's id and who waits for its result.
    pub job_id: WorkId,
    job: Arc<dyn Waiter>,
    pub policy: VerifyPolicy,
    /// Addresses of the providers given a replica: no address gets two.
    distinct: Arc<Distinct>,
    state: parking_lot::Mutex<GroupState>,
    shared: Weak<Shared>,
    /// A new replica's spec (adaptive groups grow).
    make: Box<dyn Fn() -> WorkSpec + Send + Sync>,
    /// Who each agreeing replica's row names.
    billing: Billing,
    queue_timeout: std::time::Duration,
    /// The job's escrow hold, for its most replicas and verifier runs
    /// ([`max_units`]): released once every row of the group is charged.
    hold: Option<Arc<crate::escrow::Hold>>,
}

/// The most units a policy can run for one job, which its escrow hold
/// covers: `n` replicas; for adaptive, two replicas and a third if one is
/// lost; for a verifier, three runs and three verifier runs. (A dispute's
/// re-execution is the broker's, unbilled.)
pub(crate) fn max_units(policy: Option<&VerifyPolicy>) -> u128 {
    match policy {
        None | Some(VerifyPolicy::None) => 1,
        Some(VerifyPolicy::Replicate { n, .. }) => u128::from(*n),
        Some(VerifyPolicy::Adaptive) => 3,
        Some(VerifyPolicy::Verifier { .. }) => 6,
    }
}

/// The waiter of one replica (by index) of a group.
#[derive(Debug)]
struct ReplicaWaiter(Arc<ReplicaGroup>, usize);

impl Waiter for ReplicaWaiter {
    fn complete(&self, finished: Finished) {
        self.0.record(self.1, finished.receipt, finished.completion);
    }
}

impl std::fmt::Debug for ReplicaGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaGroup")
            .field("job", &self.job_id)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct GroupState {
    children: Vec<Arc<Work>>,
    ended: Vec<Option<Ended>>,
    /// Agreeing results needed (adaptive: 1 unchecked, then 2).
    quorum: u32,
    /// Verifier policy: the replica (work id) the verifier accepted.
    accepted: Option<WorkId>,
    cancelled: bool,
    decided: bool,
}

#[derive(Debug)]
enum Ended {
    Done(Box<DoneReplica>),
    Failed,
}

/// A replica that returned a result with a checked receipt.
struct Returned {
    work: Arc<Work>,
    outcome: Box<Outcome>,
    provider: String,
    fitness_mips: u64,
    attempts: u32,
    receipt: SignedReceipt,
}

/// What replicas must share to agree: the output and the fuel.
fn result_key(r: &SignedReceipt) -> (String, u64) {
    (r.receipt.output_digest.clone(), r.receipt.fuel)
}

#[derive(Debug)]
struct DoneReplica {
    work: Arc<Work>,
    outcome: Box<Outcome>,
    provider: String,
    fitness_mips: u64,
    attempts: u32,
    receipt: Option<SignedReceipt>,
}

impl ReplicaGroup {
    /// A replica's completion (from the lifecycle), with the receipt the
    /// session checked.
    fn record(
        self: &Arc<Self>,
        index: usize,
        receipt: Option<SignedReceipt>,
        completion: Completion,
    ) {
        let all_ended = {
            let mut st = self.state.lock();
            let Some(work) = st.children.get(index).cloned() else {
                return;
            };
            let ended = match completion {
                Completion::Done {
                    outcome,
                    provider,
                    fitness_mips,
                    attempts,
                    ..
                } => Ended::Done(Box::new(DoneReplica {
                    work,
                    outcome,
                    provider,
                    fitness_mips,
                    attempts,
                    receipt,
                })),
                Completion::Failed { .. } => Ended::Failed,
            };
            if let Some(slot) = st.ended.get_mut(index) {
                *slot = Some(ended);
            }
            let done = st.ended.iter().all(Option::is_some) && !st.decided;
            if done {
                st.decided = true;
            }
            done
        };
        if all_ended && let Some(shared) = self.shared.upgrade() {
            let group = self.clone();
            let lifecycle = shared.lifecycle.clone();
            lifecycle.spawn(async move {
                match &group.policy {
                    VerifyPolicy::Adaptive if extend(&shared, &group) => {}
                    VerifyPolicy::Verifier { service } => {
                        if !check(&shared, &group, service).await {
                            decide(&shared, &group).await;
                        }
                    }
                    _ => decide(&shared, &group).await,
                }
            });
        }
    }

    /// Adds a replica (a new work on a provider not used yet).
    fn add_replica(self: &Arc<Self>, shared: &Arc<Shared>) -> WorkId {
        let (work, index) = {
            let mut st = self.state.lock();
            let index = st.ended.len();
            st.ended.push(None);
            st.decided = false;
            let mut spec = (self.make)();
            spec.distinct = Some(self.distinct.clone());
            let work = Work::new(WorkId::new(), spec, self.queue_timeout, 0);
            st.children.push(work.clone());
            (work, index)
        };
        let id = work.id;
        let waiter = Arc::new(ReplicaWaiter(self.clone(), index));
        shared.lifecycle.submit(work, Bill::Deferred, waiter);
        id
    }
}

/// The adaptive policy's next step once every replica so far has ended:
/// true if it added a replica (the group is decided later).
///
/// - One result: checked by a second replica if its provider's run of
///   consecutive verified results is under [`ADAPTIVE_MIN_RUN`], else with
///   probability 1/run; unchecked, it is delivered as is.
/// - One of two replicas lost: a third replica, with a quorum of two.
///   (Two results that disagree go to [`decide`], which re-executes.)
fn extend(shared: &Arc<Shared>, group: &Arc<ReplicaGroup>) -> bool {
    let (n, results): (usize, Vec<(String, String, u64)>) = {
        let st = group.state.lock();
        if st.cancelled {
            return false;
        }
        let results = st
            .ended
            .iter()
            .flatten()
            .filter_map(|e| match e {
                Ended::Done(d) => d.receipt.as_ref().map(|r| {
                    (
                        d.provider.clone(),
                        r.receipt.output_digest.clone(),
                        r.receipt.fuel,
                    )
                }),
                Ended::Failed => None,
            })
            .collect();
        (st.ended.len(), results)
    };
    let check = match (n, results.as_slice()) {
        (1, [(provider, _, _)]) => {
            let run = shared
                .lifecycle
                .read(|s| s.reputation(provider).consecutive_valid);
            run < ADAPTIVE_MIN_RUN || rand::random::<f64>() < 1.0 / run as f64
        }
        (2, [_]) => true,
        _ => false,
    };
    if check {
        group.state.lock().quorum = 2;
        let _ = group.add_replica(shared);
    }
    check
}

/// Starts a verified job: `replicate {n, quorum}` starts `n` replica works
/// (each with its own work id); `adaptive` starts one and grows.
pub(crate) fn start(
    shared: &Arc<Shared>,
    job: (WorkId, Arc<dyn Waiter>),
    policy: VerifyPolicy,
    make: Box<dyn Fn() -> WorkSpec + Send + Sync>,
    billing: Billing,
    queue_timeout: std::time::Duration,
    hold: Option<Arc<crate::escrow::Hold>>,
) {
    let (n, quorum) = match policy {
        VerifyPolicy::Replicate { n, quorum } => (n, quorum),
        VerifyPolicy::Adaptive | VerifyPolicy::Verifier { .. } | VerifyPolicy::None => (1, 1),
    };
    let group = Arc::new(ReplicaGroup {
        job_id: job.0,
        job: job.1,
        policy,
        distinct: Default::default(),
        state: parking_lot::Mutex::new(GroupState {
            quorum,
            ..GroupState::default()
        }),
        shared: Arc::downgrade(shared),
        make,
        billing,
        queue_timeout,
        hold,
    });
    shared.replicas.insert(group.clone());
    for _ in 0..n {
        let _ = group.add_replica(shared);
    }
}

/// The replicated jobs in progress, by job id.
#[derive(Debug, Default)]
pub(crate) struct Replicas(parking_lot::Mutex<HashMap<WorkId, Arc<ReplicaGroup>>>);

impl Replicas {
    fn insert(&self, group: Arc<ReplicaGroup>) {
        self.0.lock().insert(group.job_id, group);
    }

    fn get(&self, job: WorkId) -> Option<Arc<ReplicaGroup>> {
        self.0.lock().get(&job).cloned()
    }

    fn remove(&self, job: WorkId) {
        self.0.lock().remove(&job);
    }
}

/// Cancels a replicated job's replicas; false if it is not one (or over).
pub(crate) async fn cancel(shared: &Arc<Shared>, job: WorkId) -> bool {
    let Some(group) = shared.replicas.get(job) else {
        return false;
    };
    let children = {
        let mut st = group.state.lock();
        st.cancelled = true;
        st.children.clone()
    };
    for w in children {
        let error = ApiError::new(ErrorCode::Cancelled, "cancelled by the requester");
        shared.lifecycle.cancel(w.id, error).await;
    }
    true
}

/// The verifier policy's step once the newest replica has ended: runs the
/// verifier service on its result; true if the group goes on (a rejected
/// result is run again on another provider, up to 3 replicas), false if it
/// is to be decided (accepted, or out of tries).
async fn check(shared: &Arc<Shared>, group: &Arc<ReplicaGroup>, service: &str) -> bool {
    const TRIES: usize = 3;
    let (tries, newest) = {
        let st = group.state.lock();
        let newest = match st.ended.last() {
            Some(Some(Ended::Done(d))) => Some((d.work.id, d.provider.clone(), d.outcome.clone())),
            _ => None,
        };
        (st.ended.len(), newest)
    };
    let retry = |shared: &Arc<Shared>| {
        if tries < TRIES {
            let _ = group.add_replica(shared);
            true
        } else {
            false
        }
    };
    let Some((work_id, provider, outcome)) = newest else {
        return retry(shared);
    };
    let accepted = match *outcome {
        Outcome::Exited {
            exit_code, stdout, ..
        } => run_verifier(shared, group, service, &provider, exit_code, stdout).await,
        _ => false,
    };
    if accepted {
        group.state.lock().accepted = Some(work_id);
        return false;
    }
    tracing::info!(job = %group.job_id, %provider, "the verifier rejected a result");
    shared.lifecycle.with_sched(|s, _| {
        s.reputation_mut(&provider).consecutive_valid = 0;
    });
    retry(shared)
}

/// Runs `service` on a job's result (see `VerifyPolicy::Verifier`) on
/// another provider than the one that returned it; true if it exits 0.
async fn run_verifier(
    shared: &Arc<Shared>,
    group: &Arc<ReplicaGroup>,
    service: &str,
    checked: &str,
    exit_code: i32,
    stdout: bytes::Bytes,
) -> bool {
    let mut spec = (group.make)();
    // Named as the job's account would name it (its own namespace first).
    let svc = match shared.registry.resolve(service, &spec.account) {
        Ok(svc) => svc,
        Err(e) => {
            tracing::warn!(job = %group.job_id, "verifier service {service}: {}", e.message);
            return false;
        }
    };
    let mut args = vec![service.to_string()];
    args.extend(spec.args.iter().skip(1).cloned());
    spec.service = Some(svc.reference);
    spec.digest = svc.info.digest;
    spec.kind = brume_api::ServiceKind::Command;
    spec.profile = brume_api::Profile::Standard;
    spec.args = args;
    spec.env = vec![("BRUME_EXIT_CODE".into(), exit_code.to_string())];
    spec.stdin = stdout;
    spec.progress_ms = None;
    spec.module_signature = None;
    spec.distinct = None;
    spec.wants_receipt = false;
    spec.avoid = Some(checked.to_string());
    spec.only = None;
    let (waiter, rx) = Oneshot::new();
    let work = Work::new(WorkId::new(), spec, group.queue_timeout, 0);
    let bill = Bill::Queued(group.billing.clone());
    shared.lifecycle.submit(work, bill, waiter);
    matches!(
        rx.await,
        Ok(Completion::Done { outcome, .. })
            if matches!(*outcome, Outcome::Exited { exit_code: 0, .. })
    )
}

/// What a group's state holds once every replica has ended.
struct Taken {
    done: Vec<Returned>,
    children: Vec<Arc<Work>>,
    cancelled: bool,
    quorum: u32,
    accepted: Option<WorkId>,
}

impl ReplicaGroup {
    /// Takes the ended replicas out of the group: the ones that returned a
    /// result with a checked receipt, and every replica work.
    fn take_ended(&self) -> Taken {
        let mut st = self.state.lock();
        let done = std::mem::take(&mut st.ended)
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                Ended::Done(d) => {
                    let d = *d;
                    d.receipt.map(|receipt| Returned {
                        work: d.work,
                        outcome: d.outcome,
                        provider: d.provider,
                        fitness_mips: d.fitness_mips,
                        attempts: d.attempts,
                        receipt,
                    })
                }
                Ended::Failed => None,
            })
            .collect();
        Taken {
            done,
            children: std::mem::take(&mut st.children),
            cancelled: st.cancelled,
            quorum: st.quorum,
            accepted: st.accepted,
        }
    }

    /// The replicas (indexes into `e.done`) whose result wins: the
    /// verifier's accepted one, the ones that match the broker's
    /// re-execution (`truth`), or the largest group of at least `quorum`
    /// agreeing results. `None`: no winner.
    fn winner(&self, e: &Taken, truth: Option<&Reexecution>) -> Option<Vec<usize>> {
        let mut groups: HashMap<(String, u64), Vec<usize>> = HashMap::new();
        for (i, d) in e.done.iter().enumerate() {
            groups.entry(result_key(&d.receipt)).or_default().push(i);
        }
        if let VerifyPolicy::Verifier { .. } = self.policy {
            // The verifier's word, not a vote: the accepted replica alone.
            return e
                .accepted
                .and_then(|id| e.done.iter().position(|d| d.work.id == id))
                .map(|i| vec![i]);
        }
        if let Some(t) = truth {
            // The broker's own run decides, whatever the count.
            return groups.remove(&(t.output_digest.clone(), t.fuel));
        }
        groups
            .into_values()
            .filter(|v| v.len() as u32 >= e.quorum)
            .max_by_key(Vec::len)
    }
}

/// Decides a group whose replicas have all ended (see the module docs).
async fn decide(shared: &Arc<Shared>, group: &Arc<ReplicaGroup>) {
    let e = group.take_ended();
    let by_verifier = matches!(group.policy, VerifyPolicy::Verifier { .. });
    let truth = if by_verifier {
        None
    } else {
        settle(shared, group, &e.done).await
    };
    let winner = group.winner(&e, truth.as_ref().map(|t| &t.reexecution));
    let agreed: HashSet<usize> = winner.iter().flatten().copied().collect();
    let mut verification = Verification {
        policy: group.policy.clone(),
        replicas: e
            .done
            .iter()
            .enumerate()
            .map(|(i, d)| ReplicaResult {
                provider: d.provider.clone(),
                output_digest: d.receipt.receipt.output_digest.clone(),
                fuel: d.receipt.receipt.fuel,
                status: d.receipt.receipt.status.clone(),
                agreed: agreed.contains(&i),
            })
            .collect(),
        cheaters: Vec::new(),
        proofs: Vec::new(),
    };
    // Reputation: a replica that agreed with its quorum is a verified
    // result; one that didn't ends its provider's run. (A result nobody
    // checked verifies nothing.)
    if winner.is_some() && (e.done.len() >= 2 || by_verifier) {
        record_reputation(shared, &e.done, &agreed);
    }
    // Cheats: signed something else than the broker's re-execution got.
    // (A verifier's rejection proves nothing to third parties: no ban, but
    // no pay.)
    if let Some(t) = &truth {
        punish_cheats(shared, group, &e.done, &agreed, t, &mut verification).await;
    }
    // Bill the replicas that won (all of them when nothing decided).
    let judged = winner.is_some() || by_verifier || truth.is_some();
    let billed = |i: &usize| !judged || agreed.contains(i);
    let cost = bill(shared, group, &e.done, billed).await;
    let attempts: u32 = e.children.iter().map(|w| w.attempts()).sum();
    let (completion, receipt) = if e.cancelled {
        let error = ApiError::new(ErrorCode::Cancelled, "cancelled by the requester");
        (Completion::Failed { error, attempts }, None)
    } else if let Some(w) = &winner {
        let r = &e.done[w[0]];
        let done = Completion::Done {
            outcome: r.outcome.clone(),
            provider: r.provider.clone(),
            fitness_mips: r.fitness_mips,
            // Replicated work is wasm: it holds no GPU.
            gpu_milli_tflops: 0,
            attempts,
            cost: Some(cost),
        };
        (done, Some(r.receipt.clone()))
    } else {
        let message = if truth.is_some() {
            format!(
                "no replica's result matched the broker's re-execution ({} of {} returned a result)",
                e.done.len(),
                e.children.len()
            )
        } else {
            format!(
                "no {} of the {} replicas agreed ({} returned a result)",
                e.quorum,
                e.children.len(),
                e.done.len()
            )
        };
        let error = ApiError::new(ErrorCode::Unverified, message);
        (Completion::Failed { error, attempts }, None)
    };
    // Every row of the group is charged (`bill` above): the hold ends.
    if let Some(h) = &group.hold {
        h.release();
    }
    group.job.complete(Finished {
        completion,
        receipt,
        verification: Some(verification),
    });
    shared.replicas.remove(group.job_id);
}

/// Counts each checked result: agreeing ones extend their provider's run
/// of verified results, the others end it.
fn record_reputation(shared: &Shared, done: &[Returned], agreed: &HashSet<usize>) {
    shared.lifecycle.with_sched(|sched, _| {
        for (i, d) in done.iter().enumerate() {
            let r = sched.reputation_mut(&d.provider);
            if agreed.contains(&i) {
                r.valid += 1;
                r.consecutive_valid += 1;
            } else {
                r.consecutive_valid = 0;
            }
        }
    });
}

/// Writes one durable row per replica that `billed` keeps; returns their
/// total and the tier they ran at.
async fn bill(
    shared: &Shared,
    group: &ReplicaGroup,
    done: &[Returned],
    billed: impl Fn(&usize) -> bool,
) -> crate::work::Cost {
    let mut cost = crate::work::Cost {
        token_amount: 0,
        tier: String::new(),
    };
    for (_, d) in done.iter().enumerate().filter(|(i, _)| billed(i)) {
        let usage = d.outcome.usage();
        let ran = crate::ledger::Ran {
            provider: &d.provider,
            fitness_mips: d.fitness_mips,
            gpu_milli_tflops: 0,
            usage: &usage,
            attempts: d.attempts,
            cancelled: false,
        };
        let (row, c) = shared.ledger.build(&d.work, &group.billing, ran);
        if let Some(c) = c {
            cost.token_amount += c.token_amount;
            cost.tier = c.tier;
        }
        shared.ledger.append_sealed(d.work.id, row).await;
    }
    cost
}

/// Re-executes a group's work when its results disagree: the broker's
/// signed result, or `None` when they agree or the re-execution decided
/// nothing.
async fn settle(
    shared: &Arc<Shared>,
    group: &ReplicaGroup,
    done: &[Returned],
) -> Option<SignedReexecution> {
    let first = done.first()?;
    let key = result_key(&first.receipt);
    if done.iter().all(|d| result_key(&d.receipt) == key) {
        return None;
    }
    let assign = first.work.assignment(first.receipt.receipt.attempt);
    tracing::warn!(job = %group.job_id, "replicas disagree: re-executing the work");
    match crate::reexec::reexecute(shared, &assign).await {
        Ok(x) => Some(x),
        Err(why) => {
            tracing::warn!(job = %group.job_id, "the re-execution decided nothing: {why}");
            None
        }
    }
}

/// Bans and slashes every replica whose signed result the broker's
/// re-execution `truth` refutes, with a proof against each: its receipt,
/// the re-execution, the agreeing receipts and the work.
async fn punish_cheats(
    shared: &Arc<Shared>,
    group: &ReplicaGroup,
    done: &[Returned],
    agreed: &HashSet<usize>,
    truth: &SignedReexecution,
    verification: &mut Verification,
) {
    let limits = (group.make)().limits;
    let witnesses: Vec<SignedReceipt> = done
        .iter()
        .enumerate()
        .filter(|(i, _)| agreed.contains(i))
        .map(|(_, d)| assigned(shared, &d.receipt, &limits))
        .collect();
    for d in done {
        if !truth.reexecution.refutes(&d.receipt.receipt) {
            continue;
        }
        let proof = CheatProof {
            cheat: assigned(shared, &d.receipt, &limits),
            quorum: witnesses.clone(),
            reexecution: Some(truth.clone()),
            work: crate::reexec::for_proof(d.work.assignment(d.receipt.receipt.attempt)),
        };
        punish(shared, &d.provider, &proof, "proven cheat (replication)").await;
        verification.cheaters.push(d.provider.clone());
        verification.proofs.push(proof);
    }
}

/// `r` with the broker's signed assignment (the broker rebuilt `r` from
/// its own assignment, so the fields it signs are its own). Unsigned if the
/// broker's key can't sign, which a proof's check then reports.
pub(crate) fn assigned(
    shared: &Shared,
    r: &SignedReceipt,
    limits: &brume_api::Limits,
) -> SignedReceipt {
    assigned_by(&shared.identity, r, limits)
}

/// [`assigned`] with the broker's identity alone (for a blocking thread).
pub(crate) fn assigned_by(
    identity: &brume_identity::Identity,
    r: &SignedReceipt,
    limits: &brume_api::Limits,
) -> SignedReceipt {
    let broker = identity.address().to_string();
    let assignment = Assignment::of(&broker, &r.receipt, limits);
    let signature = match identity.sign_message(assignment.message().as_bytes()) {
        Ok(sig) => format!("0x{}", hex::encode(sig)),
        Err(e) => {
            tracing::error!("the broker's key could not sign an assignment: {e}");
            String::new()
        }
    };
    SignedReceipt {
        assignment: Some(SignedAssignment {
            assignment,
            signature,
        }),
        ..r.clone()
    }
}

/// A proven cheat: banned (session closed, reconnects refused), stake
/// slashed with the proof's digest as the anchor.
pub(crate) async fn punish(shared: &Arc<Shared>, address: &str, proof: &CheatProof, why: &str) {
    let body = serde_json::to_vec(proof).unwrap_or_default();
    let digest: [u8; 32] = Sha256::digest(&body).into();
    tracing::warn!(provider = %address, proof = %hex::encode(digest), "proven cheat: banning and slashing");
    crate::standings::ban(shared, address, why, Some(&body)).await;
    crate::federation::report_cheat(shared, address, proof, &body);
    let Ok(provider) = address.parse::<brume_chain::Address>() else {
        return;
    };
    let stake = shared
        .chain
        .settlement()
        .slashable(provider)
        .await
        .unwrap_or(0);
    if stake == 0 {
        tracing::warn!(provider = %address, "a proven cheat has no stake to slash");
        return;
    }
    match slash(shared, provider, stake, digest.into()).await {
        Ok(tx) => tracing::warn!(provider = %address, amount = stake, tx = %tx, "slashed"),
        Err(e) => tracing::error!(provider = %address, code = e.code(), "slashing failed: {e}"),
    }
}

/// Slashes `amount` of `provider`'s stake to the operator's account.
pub(crate) async fn slash(
    shared: &Shared,
    provider: brume_chain::Address,
    amount: u128,
    evidence: brume_chain::Anchor,
) -> Result<brume_chain::B256, brume_chain::ChainError> {
    shared
        .chain
        .settlement()
        .slash(provider, amount, evidence)
        .await
}
