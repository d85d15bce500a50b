//! The plain types of a unit of work, at the bottom of the broker: what
//! matching needs, the `Assign` payload, the events of its attempts and how
//! it ended. Nothing here knows about jobs, the ledger or verification;
//! [`crate::lifecycle`] connects a unit to whoever waits for it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brume_api::receipt::SignedReceipt;
use brume_api::rest::Price;
use brume_api::wire::{self, Assign};
use brume_api::{ApiError, Limits, Profile, ServiceKind, WorkId};
use bytes::Bytes;

/// A provider's session, as the scheduler knows it.
pub(crate) type ProviderId = u64;

/// What work asks of a provider (checked by the scheduler): its tier's
/// needs, with a job's declared shape on top.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TierNeeds {
    pub min_threads: u32,
    pub min_mips: u64,
    /// Measured at the handshake (`measure.rs`).
    pub min_mbps: u64,
    /// The job's expected runtime: a provider that keeps hours must have
    /// this long left in them.
    pub runtime_ms: Option<u64>,
}

impl TierNeeds {
    /// Whether a provider keeping `hours` has time left for the work.
    pub fn fits_hours(&self, hours: Option<[u8; 2]>) -> bool {
        match (self.runtime_ms, hours) {
            (Some(ms), Some(h)) => wire::hours_left_ms(h, crate::now_ms()) >= ms,
            _ => true,
        }
    }
}

/// Provider addresses that already hold a unit of a set (the replicas of
/// one job): no address gets two.
#[derive(Debug, Default)]
pub(crate) struct Distinct(parking_lot::Mutex<HashSet<String>>);

impl Distinct {
    /// Whether the provider at `address` may take a unit of the set.
    pub fn allows(&self, address: &str) -> bool {
        !self.0.lock().contains(address)
    }

    /// Records that `address` took a unit of the set.
    pub fn take(&self, address: &str) {
        self.0.lock().insert(address.to_string());
    }
}

/// The latency class of a unit of work: functions go before batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) enum Class {
    /// An invocation: someone waits on the line.
    Sync,
    /// A job or a replica of one.
    #[default]
    Batch,
}

/// Everything that describes one unit of work, fixed at submission.
#[derive(Debug, Clone)]
pub(crate) struct WorkSpec {
    pub service: Option<String>,
    pub digest: String,
    pub kind: ServiceKind,
    pub profile: Profile,
    pub limits: Limits,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Bytes,
    pub http: Option<wire::HttpRequest>,
    pub max_price: Option<Price>,
    pub max_attempts: u32,
    pub progress_ms: Option<u64>,
    pub seed: u64,
    pub clock_start_ms: u64,
    /// What the admitted tier asks of a provider.
    pub needs: TierNeeds,
    /// The developer's signature over the module, if it was published signed.
    pub module_signature: Option<wire::ModuleSignature>,
    /// The set whose units must run on distinct provider addresses.
    pub distinct: Option<Arc<Distinct>>,
    /// A provider address that must not run it (a verifier run avoids the
    /// provider whose result it checks).
    pub avoid: Option<String>,
    /// The one provider address that may run it (a call's
    /// `x-brume-provider`: a probe of that provider).
    pub only: Option<String>,
    /// The trust tiers it may run on (bit `t` for tier `t`).
    pub tiers: u8,
    /// Its requester's organisation (tier-1 providers run only theirs).
    pub org: Option<String>,
    /// Whether its result must come with a valid signed receipt (jobs,
    /// replicas, audited and replicated calls).
    pub wants_receipt: bool,
    /// Its latency class.
    pub class: Class,
    /// The account it is queued under (fairness is between accounts).
    pub account: Arc<str>,
    /// What only container jobs have.
    pub oci: OciNeeds,
    /// Its session (`x-brume-affinity`), keyed for its account.
    pub affinity: Option<wire::Affinity>,
    /// A lease's hold (see `leases.rs`): it holds a slot and runs nothing.
    pub lease: bool,
}

/// A container job's files and GPUs (empty for everything else).
#[derive(Debug, Clone, Default)]
pub(crate) struct OciNeeds {
    /// Files placed in its work dir, and files it returns.
    pub inputs: Vec<brume_api::data::Input>,
    pub outputs: Vec<String>,
    /// GPUs it needs (0: none).
    pub gpus: u32,
    /// vCPUs it gets (0: one).
    pub vcpus: u32,
    /// Its container may reach the network.
    pub network: bool,
    /// Its image in a registry, pinned by digest, if it names one.
    pub image: Option<String>,
}

impl OciNeeds {
    /// Whether a provider has the slots (as vCPUs) it needs, beside the
    /// `gpus_busy` its other jobs hold the GPUs, and the network if asked.
    pub fn fits(&self, caps: &wire::Capabilities, gpus_busy: u32) -> bool {
        let gpus = caps.gpus.as_ref().map_or(0, |g| g.count);
        gpus.saturating_sub(gpus_busy) >= self.gpus
            && caps.slots >= self.vcpus
            && (caps.network || !self.network)
    }
}

/// What a unit of work was billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Token base units.
    pub token_amount: u128,
    /// The tier it ran at.
    pub tier: String,
}

/// How a unit of work ended, as seen by whoever waits for it.
#[derive(Debug)]
pub(crate) enum Completion {
    Done {
        outcome: Box<wire::Outcome>,
        provider: String,
        /// The provider's advertised speed (for the slow-provider refund).
        fitness_mips: u64,
        /// Its GPUs' benchmarked speed, each (bills the usage's `gpu_us`).
        gpu_milli_tflops: u64,
        attempts: u32,
        /// What the ledger billed (set by the lifecycle).
        cost: Option<Cost>,
    },
    Failed {
        error: ApiError,
        attempts: u32,
    },
}

/// What happened to an attempt, reported by the scheduler by work id.
#[derive(Debug, Clone)]
pub(crate) enum WorkEvent {
    Assigned {
        attempt: u32,
        provider: String,
    },
    Running {
        attempt: u32,
        provider: String,
    },
    Progress {
        attempt: u32,
        fuel: u64,
        stderr: Bytes,
    },
    Retry {
        attempt: u32,
        why: String,
    },
}

/// What a cancelled attempt had used when it was cancelled: the fuel of
/// its provider's last progress report and the time since it was sent.
#[derive(Debug, Clone)]
pub(crate) struct RanSoFar {
    pub provider: String,
    pub fitness_mips: u64,
    pub gpu_milli_tflops: u64,
    pub attempt: u32,
    pub fuel: u64,
    pub wall_us: u64,
    /// GPU device time held so far: the GPUs granted × `wall_us`.
    pub gpu_us: u64,
}

/// Where [`crate::sched::Scheduler::cancel`] found the work.
#[derive(Debug)]
pub(crate) enum Cancelled {
    /// Not here: already finished, or never submitted.
    Unknown,
    /// Waiting in the queue: it never ran.
    Queued,
    /// Running on a provider, which was told to stop.
    Running(RanSoFar),
}

#[derive(Debug, Default)]
struct WorkState {
    /// Attempts started (assignments accepted or in flight).
    attempt: u32,
    /// Providers that refused this work; not offered to them again.
    refused: HashSet<ProviderId>,
    /// Set once: exactly one completion per work.
    finished: bool,
}

/// One unit of work: its spec and the state of its attempts.
#[derive(Debug)]
pub(crate) struct Work {
    pub id: WorkId,
    pub spec: WorkSpec,
    pub enqueued_at: parking_lot::Mutex<Instant>,
    pub queue_deadline: Instant,
    state: parking_lot::Mutex<WorkState>,
    /// The signed receipt of the result (jobs and replicas), once checked.
    receipt: parking_lot::Mutex<Option<SignedReceipt>>,
    /// Its place in the order of arrival at the scheduler (0: not yet).
    arrival: AtomicU64,
    /// Its place in the order of first dispatch to a provider (0: not yet).
    dispatch: AtomicU64,
    /// Its session moved to a new provider with it (the old one was lost).
    moved: std::sync::atomic::AtomicBool,
}

impl Work {
    pub fn new(
        id: WorkId,
        spec: WorkSpec,
        queue_timeout: Duration,
        attempts_so_far: u32,
    ) -> Arc<Work> {
        let now = Instant::now();
        Arc::new(Work {
            id,
            spec,
            enqueued_at: parking_lot::Mutex::new(now),
            queue_deadline: now + queue_timeout,
            state: parking_lot::Mutex::new(WorkState {
                attempt: attempts_so_far,
                ..WorkState::default()
            }),
            receipt: parking_lot::Mutex::new(None),
            arrival: AtomicU64::new(0),
            dispatch: AtomicU64::new(0),
            moved: Default::default(),
        })
    }

    /// Its arrival number at the scheduler (0 before it arrives).
    pub fn arrival(&self) -> u64 {
        self.arrival.load(Ordering::Relaxed)
    }

    /// Sets the arrival number unless it has one.
    pub fn arrive(&self, seq: u64) {
        let _ = self
            .arrival
            .compare_exchange(0, seq, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Its first dispatch number (0 before it is first assigned).
    pub fn dispatch(&self) -> u64 {
        self.dispatch.load(Ordering::Relaxed)
    }

    /// Whether its session moved to a new provider with it.
    pub fn moved_session(&self) -> bool {
        self.moved.load(Ordering::Relaxed)
    }

    pub fn set_moved_session(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Sets the dispatch number unless it has one.
    pub fn dispatched(&self, seq: u64) {
        let _ = self
            .dispatch
            .compare_exchange(0, seq, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn attempts(&self) -> u32 {
        self.state.lock().attempt
    }

    /// Starts an attempt; returns its number.
    pub fn next_attempt(&self) -> u32 {
        let mut st = self.state.lock();
        st.attempt += 1;
        st.attempt
    }

    /// A provider refused the work: not offered to it again, and the
    /// attempt it was offered does not count.
    pub fn refused_by(&self, id: ProviderId) {
        let mut st = self.state.lock();
        st.refused.insert(id);
        st.attempt = st.attempt.saturating_sub(1);
    }

    /// A provider had no room for the work after all: it may be offered
    /// again (to it too), and the attempt does not count.
    pub fn bounced(&self) {
        let mut st = self.state.lock();
        st.attempt = st.attempt.saturating_sub(1);
    }

    pub fn was_refused_by(&self, id: ProviderId) -> bool {
        self.state.lock().refused.contains(&id)
    }

    /// What attempt `attempt` of this work asks of a provider (also what
    /// its receipt is rebuilt from).
    pub fn assignment(&self, attempt: u32) -> Assign {
        let s = &self.spec;
        Assign {
            work_id: self.id,
            attempt,
            digest: s.digest.clone(),
            service: s.service.clone(),
            kind: s.kind,
            profile: s.profile,
            limits: s.limits,
            args: s.args.clone(),
            env: s.env.clone(),
            stdin: s.stdin.clone(),
            http: s.http.clone(),
            progress_ms: s.progress_ms,
            seed: s.seed,
            clock_start_ms: s.clock_start_ms,
            module_signature: s.module_signature.clone(),
            batched_receipt: !s.wants_receipt,
            inputs: s.oci.inputs.clone(),
            outputs: s.oci.outputs.clone(),
            gpus: s.oci.gpus,
            vcpus: s.oci.vcpus,
            network: s.oci.network,
            image: s.oci.image.clone(),
            max_price: s.max_price,
            affinity: s.affinity.clone(),
            lease: s.lease,
        }
    }

    pub fn set_receipt(&self, r: SignedReceipt) {
        *self.receipt.lock() = Some(r);
    }

    pub fn receipt(&self) -> Option<SignedReceipt> {
        self.receipt.lock().clone()
    }

    pub fn is_finished(&self) -> bool {
        self.state.lock().finished
    }

    /// Marks the work finished; false if it already was. Only the
    /// lifecycle claims: whoever claims delivers the one completion.
    pub fn claim(&self) -> bool {
        let mut st = self.state.lock();
        if st.finished {
            return false;
        }
        st.finished = true;
        true
    }
}

/// Holds a provider's claims on a result to what the broker can bound.
///
/// A container's CPU time is its provider's own claim, in fuel at its
/// speed: it is held to the wall time the broker saw (assignment to
/// result) × the vCPUs granted × the speed the broker placed it by. Its
/// GPU time is held to that wall time × the GPUs granted. Work that was
/// granted no GPU (all wasm work) has none.
pub(crate) fn bound_claims(
    usage: &mut brume_api::Usage,
    spec: &WorkSpec,
    seen_us: u64,
    placed_mips: u64,
) {
    let gpus = u64::from(spec.oci.gpus);
    usage.gpu_us = usage.gpu_us.min(seen_us.saturating_mul(gpus));
    if spec.kind != ServiceKind::Oci {
        return;
    }
    // MIPS is instructions per microsecond.
    let most = seen_us
        .saturating_mul(placed_mips)
        .saturating_mul(u64::from(spec.oci.vcpus.max(1)));
    usage.fuel = usage.fuel.min(most);
    usage.wall_us = usage.wall_us.min(seen_us);
}

/// A provider's GPU speed as the broker counts it: each GPU's benchmarked
/// speed, at most [`wire::MAX_GPU_MILLI_TFLOPS`] (0 without GPUs).
pub(crate) fn gpu_speed(caps: &wire::Capabilities) -> u64 {
    caps.gpus
        .as_ref()
        .map_or(0, |g| g.milli_tflops.min(wire::MAX_GPU_MILLI_TFLOPS))
}
