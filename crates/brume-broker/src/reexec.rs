//! Disputes settled by re-execution: when the replicas of a deterministic
//! job disagree, the broker runs the work itself, in its own sandbox, with
//! the assignment's module, input, seed, clock and limits, through the same
//! conversions a provider uses (`brume-exec`). Its result is the truth:
//! whoever signed another result is a cheat, and the broker's signed
//! [`Reexecution`] is the proof's ground (a), which anyone holding the
//! module can check by re-running it (`brume verify-proof --reexecute`).
//!
//! Re-executions run one at a time ([`Reexecutions`]) within the
//! work's own limits, and cost the requester nothing. A re-execution that
//! ends in a fault that says nothing about the work (the broker's own
//! deadline, an internal error) is inconclusive: then nobody is judged.

use std::sync::Arc;

use brume_api::receipt::{Reexecution, SignedReexecution};
use brume_api::wire::{Assign, Outcome};

use crate::Shared;

/// Sandbox faults of a re-execution that depend on the machine that ran
/// it, not on the work: such a run decides nothing.
const INCONCLUSIVE: &[&str] = &["timeout", "internal"];

/// The most compiled modules the validator keeps for re-executions (an
/// audited function is re-executed again and again: it must not be
/// compiled each time).
const KEEP_COMPILED: usize = 16;

/// One validator run at a time (re-executions and the fitness challenge's
/// fuel), and the modules it keeps compiled, least recently used first.
#[derive(Debug)]
pub(crate) struct Reexecutions {
    one: tokio::sync::Semaphore,
    compiled: parking_lot::Mutex<std::collections::VecDeque<brume_sandbox::Digest>>,
}

impl Reexecutions {
    pub(crate) fn new() -> Reexecutions {
        Reexecutions {
            one: tokio::sync::Semaphore::new(1),
            compiled: parking_lot::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Waits for the validator.
    pub(crate) async fn acquire(
        &self,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, tokio::sync::AcquireError> {
        self.one.acquire().await
    }

    /// Records that `digest` was used; returns the module to evict, if
    /// more than [`KEEP_COMPILED`] are kept.
    fn used(&self, digest: brume_sandbox::Digest) -> Option<brume_sandbox::Digest> {
        let mut kept = self.compiled.lock();
        kept.retain(|d| *d != digest);
        kept.push_back(digest);
        (kept.len() > KEEP_COMPILED)
            .then(|| kept.pop_front())
            .flatten()
    }
}

/// A proof carries the work in full (for anyone to re-run it) only when its
/// input is at most this big.
pub(crate) const MAX_PROOF_INPUT: usize = 1 << 20;

/// Re-runs `assign` deterministically and signs what came of it; `Err`
/// (why) when the run decides nothing.
pub(crate) async fn reexecute(
    shared: &Arc<Shared>,
    assign: &Assign,
) -> Result<SignedReexecution, String> {
    if assign.profile != brume_api::Profile::Deterministic {
        return Err("only deterministic work can be re-executed".into());
    }
    let Ok(_one) = shared.reexecutions.acquire().await else {
        return Err("the broker is stopping".into());
    };
    let program = program(shared, &assign.digest).await?;
    let outcome = run(shared, &program, assign).await?;
    let reexecution = Reexecution::new(assign, &shared.identity.address().to_string(), &outcome);
    let signature = shared
        .identity
        .sign_message(reexecution.message().as_bytes())
        .map_err(|e| format!("signing the re-execution: {e}"))?;
    Ok(SignedReexecution {
        reexecution,
        signature: format!("0x{}", hex::encode(signature)),
    })
}

/// Runs `assign` on the validator (whose permit the caller holds); `Err`
/// when the run decides nothing.
async fn run(
    shared: &Arc<Shared>,
    program: &brume_sandbox::Program,
    assign: &Assign,
) -> Result<Outcome, String> {
    let outcome = brume_exec::run(&shared.validator, program, assign).await;
    if let Some(old) = shared.reexecutions.used(program.digest()) {
        shared.validator.evict(&old);
    }
    if let Outcome::Failed { code, message, .. } = &outcome
        && INCONCLUSIVE.contains(&code.as_str())
    {
        return Err(format!("the re-execution ended in {code}: {message}"));
    }
    Ok(outcome)
}

/// Re-runs `assign` with a module fetched from elsewhere (a peer's proof
/// of cheat), checked against the digest the assignment names; `Err`
/// when it is not that module or the run decides nothing.
pub(crate) async fn rerun_fetched(
    shared: &Arc<Shared>,
    module: bytes::Bytes,
    assign: &Assign,
) -> Result<Reexecution, String> {
    if assign.profile != brume_api::Profile::Deterministic {
        return Err("only deterministic work can be re-executed".into());
    }
    let Ok(_one) = shared.reexecutions.acquire().await else {
        return Err("the broker is stopping".into());
    };
    let profile = brume_sandbox::Profile::Deterministic;
    let sh = shared.clone();
    let program = tokio::task::spawn_blocking(move || sh.validator.load(&module, profile))
        .await
        .map_err(|e| format!("loading the module: {e}"))?
        .map_err(|e| format!("loading the module: {e}"))?;
    if program.digest().to_string() != assign.digest {
        return Err(format!(
            "the module fetched is {}, not the {} assigned",
            program.digest(),
            assign.digest
        ));
    }
    let outcome = run(shared, &program, assign).await?;
    Ok(Reexecution::new(
        assign,
        &shared.identity.address().to_string(),
        &outcome,
    ))
}

/// The module compiled for the validator: kept from an earlier
/// re-execution (the validator has no disk cache: a memory lookup), else
/// read from the registry and compiled off the runtime.
async fn program(shared: &Arc<Shared>, digest: &str) -> Result<brume_sandbox::Program, String> {
    let profile = brume_sandbox::Profile::Deterministic;
    if let Ok(d) = digest.parse::<brume_sandbox::Digest>()
        && let Ok(Some(p)) = shared.validator.load_cached(&d, profile)
    {
        return Ok(p);
    }
    let bytes = match shared.registry.module(digest.to_string()).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(format!("module {digest} is not stored here")),
        Err(e) => return Err(format!("module {digest}: {e}")),
    };
    let sh = shared.clone();
    tokio::task::spawn_blocking(move || sh.validator.load(&bytes, profile))
        .await
        .map_err(|e| format!("loading the module: {e}"))?
        .map_err(|e| format!("loading the module: {e}"))
}

/// `assign` for a proof: without progress reporting, and only if its input
/// is small enough to carry ([`MAX_PROOF_INPUT`]).
pub(crate) fn for_proof(mut assign: Assign) -> Option<Box<Assign>> {
    let size = assign.stdin.len() + assign.http.as_ref().map_or(0, |h| h.body.len());
    assign.progress_ms = None;
    (size <= MAX_PROOF_INPUT).then(|| Box::new(assign))
}
