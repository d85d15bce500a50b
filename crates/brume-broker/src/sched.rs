//! Scheduling: the FCFS queue, the provider index, matching, assignment
//! and failover.
//!
//! Everything here runs under one short `parking_lot::Mutex` held by
//! [`crate::Shared`]; no I/O happens under it (frames go to a provider's
//! unbounded outbound channel, which never blocks).
//!
//! Matching does not scan every provider. Providers with a free slot sit in
//! `idle`, ordered by load (busy slots / slots); those that have a module
//! compiled also sit in `warm[digest]`, ordered the same way. A match walks
//! `warm[digest]` first, then `idle`, in load order, and takes the first
//! provider that also passes the per-work checks (memory, allowed service,
//! price, not refused before). Each walk is capped at [`SCAN_CAP`]
//! candidates, so a match costs O(log n + SCAN_CAP) whatever the number of
//! providers; work that finds no match within the cap waits in the queue
//! and is retried whenever a slot frees. Keeping the indexes current costs
//! O(cached modules × log n) per load change of one provider.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use brume_api::rest::{Price, Reputation};
use brume_api::wire::{self, Assign, Capabilities, ToProvider};
use brume_api::{ApiError, ErrorCode, Limits, Profile, ServiceKind, WorkId};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::jobs::JobEntry;

pub(crate) type ProviderId = u64;

/// How many candidates one match inspects per index at most.
pub(crate) const SCAN_CAP: usize = 256;
/// How deep into the queue a freed slot looks for work it can take.
const QUEUE_SCAN_CAP: usize = 256;

/// Everything that describes one unit of work, fixed at submission.
#[derive(Debug)]
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
    pub needs: crate::ledger::TierNeeds,
    /// The developer's signature over the module, if it was published signed.
    pub module_signature: Option<wire::ModuleSignature>,
    /// The replica group, for a replica of a replicated job.
    pub replica: Option<Arc<crate::verify::ReplicaGroup>>,
    /// A provider address that must not run it (a verifier run avoids the
    /// provider whose result it checks).
    pub avoid: Option<String>,
    /// The trust tiers it may run on (bit `t` for tier `t`).
    pub tiers: u8,
    /// Its requester's organisation (tier-1 providers run only theirs).
    pub org: Option<String>,
    /// Who the ledger row names and what it records privately.
    pub billing: crate::ledger::Billing,
}

/// Where [`Scheduler::cancel`] found the work.
#[derive(Debug)]
pub(crate) enum Cancelled {
    /// Not here: already finished, or never submitted.
    Unknown,
    /// Waiting in the queue: it never ran.
    Queued,
    /// Running on a provider, which was told to stop.
    Running(crate::ledger::RanSoFar),
}

/// How a unit of work ended, as seen by whoever waits for it.
#[derive(Debug)]
pub(crate) enum Completion {
    Done {
        outcome: Box<wire::Outcome>,
        provider: String,
        /// The provider's advertised speed (for the slow-provider refund).
        fitness_mips: u64,
        attempts: u32,
        /// What the ledger billed (set by `ledger::finish`).
        cost: Option<crate::ledger::Cost>,
    },
    Failed {
        error: ApiError,
        attempts: u32,
    },
}

/// Who waits for the result.
#[derive(Debug)]
pub(crate) enum Sink {
    /// A sync invocation: an HTTP handler awaits this.
    Invoke(parking_lot::Mutex<Option<oneshot::Sender<Completion>>>),
    /// A job: its entry records events and the result.
    Job(Arc<JobEntry>),
    /// Replica `usize` of a replicated job.
    Replica(Arc<crate::verify::ReplicaGroup>, usize),
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

#[derive(Debug)]
pub(crate) struct Work {
    pub id: WorkId,
    pub spec: WorkSpec,
    pub sink: Sink,
    pub enqueued_at: parking_lot::Mutex<Instant>,
    pub queue_deadline: Instant,
    state: parking_lot::Mutex<WorkState>,
    /// The signed receipt of the result (jobs and replicas), once checked.
    receipt: parking_lot::Mutex<Option<brume_api::receipt::SignedReceipt>>,
}

impl Work {
    pub fn new(
        id: WorkId,
        spec: WorkSpec,
        sink: Sink,
        queue_timeout: Duration,
        attempts_so_far: u32,
    ) -> Arc<Work> {
        let now = Instant::now();
        Arc::new(Work {
            id,
            spec,
            sink,
            enqueued_at: parking_lot::Mutex::new(now),
            queue_deadline: now + queue_timeout,
            state: parking_lot::Mutex::new(WorkState {
                attempt: attempts_so_far,
                ..WorkState::default()
            }),
            receipt: parking_lot::Mutex::new(None),
        })
    }

    pub fn attempts(&self) -> u32 {
        self.state.lock().attempt
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
        }
    }

    /// Whether its result must come with a valid signed receipt (jobs and
    /// replicas; invocations are signed but not checked on their path).
    pub fn wants_receipt(&self) -> bool {
        !matches!(self.sink, Sink::Invoke(_))
    }

    pub fn set_receipt(&self, r: brume_api::receipt::SignedReceipt) {
        *self.receipt.lock() = Some(r);
    }

    pub fn receipt(&self) -> Option<brume_api::receipt::SignedReceipt> {
        self.receipt.lock().clone()
    }

    pub fn is_finished(&self) -> bool {
        self.state.lock().finished
    }

    /// Delivers the one completion of this work. Later calls do nothing and
    /// return false (a late result from an earlier attempt, say).
    pub fn finish(&self, completion: Completion) -> bool {
        if !self.claim() {
            return false;
        }
        self.deliver(completion);
        true
    }

    /// Marks the work finished; false if it already was. Whoever claims it
    /// must [`deliver`](Work::deliver) its completion.
    pub fn claim(&self) -> bool {
        let mut st = self.state.lock();
        if st.finished {
            return false;
        }
        st.finished = true;
        true
    }

    /// Hands the completion to whoever waits (after a successful claim).
    pub fn deliver(&self, completion: Completion) {
        // Its row, if any, was charged to the escrow before this point.
        if let Some(hold) = &self.spec.billing.hold {
            hold.release();
        }
        match &self.sink {
            Sink::Invoke(tx) => {
                if let Some(tx) = tx.lock().take() {
                    let _ = tx.send(completion);
                }
            }
            Sink::Job(job) => job.complete(completion),
            Sink::Replica(group, i) => group.record(*i, self.receipt(), completion),
        }
    }

    pub(crate) fn job(&self) -> Option<&Arc<JobEntry>> {
        match &self.sink {
            Sink::Job(j) => Some(j),
            Sink::Invoke(_) | Sink::Replica(..) => None,
        }
    }
}

/// One connected provider, as the scheduler sees it.
#[derive(Debug)]
pub(crate) struct ProviderEntry {
    pub address: String,
    pub caps: Capabilities,
    pub price_ask: Price,
    pub busy: u32,
    pub mem_busy: u64,
    pub draining: bool,
    pub cached: HashSet<String>,
    pub tx: mpsc::UnboundedSender<Message>,
    pub work_done: u64,
    pub connected_at_ms: u64,
    /// Its allowance to the payout account, as last read.
    pub stake: u128,
    /// `stake >= min_stake`: only then does it get work.
    pub staked: bool,
    /// Its trust tier (1–4, see `trust.rs`) and, in tier 1, its organisation.
    pub tier: u8,
    pub org: Option<String>,
    next_channel: u32,
    channels: HashSet<u32>,
    /// The key under which it is indexed now (None: not indexed).
    indexed: Option<u32>,
}

impl ProviderEntry {
    pub fn new(
        address: String,
        caps: Capabilities,
        price_ask: Price,
        tx: mpsc::UnboundedSender<Message>,
    ) -> Self {
        let cached = caps.cached.iter().cloned().collect();
        ProviderEntry {
            address,
            caps,
            price_ask,
            busy: 0,
            mem_busy: 0,
            draining: false,
            cached,
            tx,
            work_done: 0,
            connected_at_ms: crate::now_ms(),
            stake: 0,
            staked: true,
            tier: 4,
            org: None,
            next_channel: 1,
            channels: HashSet::new(),
            indexed: None,
        }
    }

    fn load_key(&self) -> u32 {
        ((self.busy as u64 * 65_536) / self.caps.slots.max(1) as u64) as u32
    }

    fn has_free_slot(&self) -> bool {
        !self.draining && self.busy < self.caps.slots
    }

    fn accepts(&self, id: ProviderId, work: &Work, refused: &HashSet<ProviderId>) -> bool {
        let s = &work.spec;
        self.has_free_slot()
            && self.staked
            && self.caps.memory_bytes.saturating_sub(self.mem_busy) >= s.limits.memory_bytes
            && self.caps.slots >= s.needs.min_threads
            && s.replica.as_ref().is_none_or(|g| g.allows(&self.address))
            && s.avoid
                .as_ref()
                .is_none_or(|a| !a.eq_ignore_ascii_case(&self.address))
            && (s.tiers >> self.tier) & 1 == 1
            && (self.tier != 1 || s.org == self.org)
            && self.caps.fitness_mips >= s.needs.min_mips
            && match (&self.caps.allowed_services, &s.service) {
                (None, _) => true,
                (Some(list), Some(name)) => list.iter().any(|a| a == name),
                (Some(_), None) => false,
            }
            && s.max_price.is_none_or(|max| self.price_ask <= max)
            && !refused.contains(&id)
    }
}

/// An attempt on a provider, keyed by (provider, channel).
#[derive(Debug)]
pub(crate) struct Inflight {
    pub work: Arc<Work>,
    pub attempt: u32,
    pub sent_at: Instant,
    pub accepted: bool,
    /// Fuel in the attempt's last progress report.
    pub fuel: u64,
}

/// Totals for `/v1/status` and metrics, kept incrementally.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub slots: u64,
    pub slots_busy: u64,
    pub memory: u64,
    pub memory_busy: u64,
}

/// Things to do after the lock is released.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct After {
    pub finish: Vec<(Arc<Work>, Completion)>,
    pub retries: u64,
}

impl After {
    #[cfg(test)]
    pub fn run(self) {
        for (work, c) in self.finish {
            work.finish(c);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    pub providers: HashMap<ProviderId, ProviderEntry>,
    idle: BTreeSet<(u32, ProviderId)>,
    warm: HashMap<String, BTreeSet<(u32, ProviderId)>>,
    queue: VecDeque<Arc<Work>>,
    inflight: HashMap<(ProviderId, u32), Inflight>,
    by_work: HashMap<WorkId, (ProviderId, u32)>,
    pub totals: Totals,
    /// The least stake a provider needs to get work.
    pub min_stake: u128,
    /// Each provider's track record, by lowercase address (kept across its
    /// sessions, in memory).
    pub reputation: HashMap<String, Reputation>,
}

/// How many acceptable providers `pick` compares by reputation.
const RANK_AMONG: usize = 8;

impl Scheduler {
    /// The track record of `address` (created empty).
    pub fn reputation_mut(&mut self, address: &str) -> &mut Reputation {
        self.reputation
            .entry(address.to_ascii_lowercase())
            .or_default()
    }

    pub fn reputation(&self, address: &str) -> Reputation {
        self.reputation
            .get(&address.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    pub fn with_min_stake(min_stake: u128) -> Scheduler {
        Scheduler {
            min_stake,
            ..Scheduler::default()
        }
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// How long the oldest queued work has waited.
    pub fn oldest_wait(&self) -> Duration {
        self.queue
            .front()
            .map(|w| w.enqueued_at.lock().elapsed())
            .unwrap_or_default()
    }

    fn unindex(&mut self, id: ProviderId) {
        let Some(p) = self.providers.get_mut(&id) else {
            return;
        };
        if let Some(key) = p.indexed.take() {
            self.idle.remove(&(key, id));
            for d in &p.cached {
                if let Some(set) = self.warm.get_mut(d) {
                    set.remove(&(key, id));
                    if set.is_empty() {
                        self.warm.remove(d);
                    }
                }
            }
        }
    }

    fn index(&mut self, id: ProviderId) {
        let Some(p) = self.providers.get_mut(&id) else {
            return;
        };
        if !p.has_free_slot() {
            return;
        }
        let key = p.load_key();
        p.indexed = Some(key);
        self.idle.insert((key, id));
        for d in &p.cached {
            self.warm.entry(d.clone()).or_default().insert((key, id));
        }
    }

    /// A provider finished its handshake.
    pub fn add_provider(&mut self, id: ProviderId, entry: ProviderEntry, after: &mut After) {
        self.totals.slots += entry.caps.slots as u64;
        self.totals.memory += entry.caps.memory_bytes;
        self.providers.insert(id, entry);
        self.index(id);
        self.fill(id, after);
    }

    /// A provider's stake was read: one that now meets `min_stake` takes
    /// queued work at once.
    pub fn set_stake(&mut self, id: ProviderId, stake: u128, after: &mut After) {
        let min = self.min_stake;
        let Some(p) = self.providers.get_mut(&id) else {
            return;
        };
        let was = p.staked;
        p.stake = stake;
        p.staked = stake >= min;
        if p.staked && !was {
            self.fill(id, after);
        }
    }

    /// A provider reports newly compiled modules.
    pub fn add_cached(&mut self, id: ProviderId, digests: Vec<String>) {
        self.unindex(id);
        if let Some(p) = self.providers.get_mut(&id) {
            p.cached.extend(digests);
        }
        self.index(id);
    }

    pub fn set_draining(&mut self, id: ProviderId) {
        self.unindex(id);
        if let Some(p) = self.providers.get_mut(&id) {
            p.draining = true;
        }
    }

    /// A provider is gone: its in-flight work goes back to the head of the
    /// queue with attempt + 1, or fails once out of attempts.
    pub fn remove_provider(
        &mut self,
        id: ProviderId,
        reason: &str,
        after: &mut After,
    ) -> Option<ProviderEntry> {
        self.unindex(id);
        let entry = self.providers.remove(&id)?;
        self.totals.slots -= entry.caps.slots as u64;
        self.totals.memory -= entry.caps.memory_bytes;
        let mut lost: Vec<Inflight> = Vec::new();
        for ch in &entry.channels {
            if let Some(inf) = self.inflight.remove(&(id, *ch)) {
                self.by_work.remove(&inf.work.id);
                self.totals.slots_busy -= 1;
                self.totals.memory_busy -= inf.work.spec.limits.memory_bytes;
                lost.push(inf);
            }
        }
        // Oldest first, so they regain the head of the queue in order.
        lost.sort_by_key(|inf| inf.work.id);
        if !lost.is_empty() {
            let r = self.reputation_mut(&entry.address);
            r.failures += lost.len() as u64;
            r.consecutive_valid = 0;
        }
        for inf in lost.into_iter().rev() {
            let msg = format!("provider {} {reason}", entry.address);
            self.retry(inf.work, &msg, after);
        }
        Some(entry)
    }

    /// Puts work whose attempt failed (not by its own fault) back at the
    /// head of the queue, or fails it once out of attempts.
    fn retry(&mut self, work: Arc<Work>, why: &str, after: &mut After) {
        if work.is_finished() {
            return;
        }
        let attempts = work.attempts();
        if attempts >= work.spec.max_attempts {
            let error = ApiError::new(
                ErrorCode::ProviderUnavailable,
                format!("{why}; gave up after {attempts} attempt(s)"),
            );
            after
                .finish
                .push((work, Completion::Failed { error, attempts }));
            return;
        }
        after.retries += 1;
        if let Some(job) = work.job() {
            job.event_retry(attempts, why);
        }
        self.submit_front(work, after);
    }

    /// New work: assign it at once if some provider matches, else queue it.
    pub fn submit(&mut self, work: Arc<Work>, after: &mut After) {
        match self.pick(&work) {
            Some(id) => self.assign(id, work, after),
            None => {
                *work.enqueued_at.lock() = Instant::now();
                self.queue.push_back(work);
            }
        }
    }

    fn submit_front(&mut self, work: Arc<Work>, after: &mut After) {
        match self.pick(&work) {
            Some(id) => self.assign(id, work, after),
            None => {
                *work.enqueued_at.lock() = Instant::now();
                self.queue.push_front(work);
            }
        }
    }

    fn pick(&self, work: &Work) -> Option<ProviderId> {
        let refused = &work.state.lock().refused;
        let ok = |id: &ProviderId| {
            self.providers
                .get(id)
                .is_some_and(|p| p.accepts(*id, work, refused))
        };
        // Among the first few acceptable providers (warm ones first, then by
        // load), the one with the longest run of verified results; ties go
        // to the less loaded.
        let rank = |id: &ProviderId| {
            self.providers
                .get(id)
                .map_or(0, |p| self.reputation(&p.address).consecutive_valid)
        };
        let best = |set: &BTreeSet<(u32, ProviderId)>| {
            set.iter()
                .take(SCAN_CAP)
                .filter(|(_, id)| ok(id))
                .take(RANK_AMONG)
                .map(|&(_, id)| id)
                .enumerate()
                .max_by_key(|(i, id)| (rank(id), std::cmp::Reverse(*i)))
                .map(|(_, id)| id)
        };
        if let Some(set) = self.warm.get(&work.spec.digest)
            && let Some(id) = best(set)
        {
            return Some(id);
        }
        best(&self.idle)
    }

    fn assign(&mut self, id: ProviderId, work: Arc<Work>, after: &mut After) {
        self.unindex(id);
        let Some(p) = self.providers.get_mut(&id) else {
            self.queue.push_front(work);
            return;
        };
        let channel = p.next_channel;
        p.next_channel = p.next_channel.wrapping_add(1).max(1);
        p.busy += 1;
        p.mem_busy += work.spec.limits.memory_bytes;
        p.channels.insert(channel);
        let attempt = {
            let mut st = work.state.lock();
            st.attempt += 1;
            st.attempt
        };
        let s = &work.spec;
        if let Some(g) = &s.replica {
            g.taken.lock().insert(p.address.clone());
        }
        let frame = ToProvider::Assign(Box::new(work.assignment(attempt))).encode(channel);
        let sent = p.tx.send(Message::Binary(frame)).is_ok();
        let address = p.address.clone();
        self.totals.slots_busy += 1;
        self.totals.memory_busy += s.limits.memory_bytes;
        if let Some(job) = work.job() {
            job.event_assigned(attempt, &address);
        }
        self.by_work.insert(work.id, (id, channel));
        self.inflight.insert(
            (id, channel),
            Inflight {
                work,
                attempt,
                sent_at: Instant::now(),
                accepted: false,
                fuel: 0,
            },
        );
        self.index(id);
        if !sent {
            // The session is ending; its teardown will requeue this attempt.
            tracing::debug!("provider {address} outbound closed during assign");
        }
        let _ = after;
    }

    /// Frees the slot an attempt held. Returns the attempt.
    fn release(&mut self, id: ProviderId, channel: u32) -> Option<Inflight> {
        let inf = self.inflight.remove(&(id, channel))?;
        if self.by_work.get(&inf.work.id) == Some(&(id, channel)) {
            self.by_work.remove(&inf.work.id);
        }
        self.unindex(id);
        if let Some(p) = self.providers.get_mut(&id) {
            p.busy -= 1;
            p.mem_busy -= inf.work.spec.limits.memory_bytes;
            p.channels.remove(&channel);
        }
        self.totals.slots_busy -= 1;
        self.totals.memory_busy -= inf.work.spec.limits.memory_bytes;
        self.index(id);
        Some(inf)
    }

    /// Gives a provider with free slots the oldest queued work it can take.
    fn fill(&mut self, id: ProviderId, after: &mut After) {
        loop {
            let Some(p) = self.providers.get(&id) else {
                return;
            };
            if !p.has_free_slot() || self.queue.is_empty() {
                return;
            }
            let mut found = None;
            let mut dead = Vec::new();
            for (i, w) in self.queue.iter().enumerate().take(QUEUE_SCAN_CAP) {
                if w.is_finished() {
                    dead.push(i);
                    continue;
                }
                if p.accepts(id, w, &w.state.lock().refused) {
                    found = Some(i);
                    break;
                }
            }
            for i in dead.into_iter().rev() {
                self.queue.remove(i);
                if let Some(f) = found.as_mut()
                    && *f > i
                {
                    *f -= 1;
                }
            }
            let Some(i) = found else { return };
            let Some(work) = self.queue.remove(i) else {
                return;
            };
            self.assign(id, work, after);
        }
    }

    /// The provider accepted the attempt on `channel`.
    pub fn accepted(&mut self, id: ProviderId, channel: u32) {
        if let Some(inf) = self.inflight.get_mut(&(id, channel))
            && !inf.accepted
        {
            inf.accepted = true;
            if let Some(job) = inf.work.job() {
                job.event_running(
                    inf.attempt,
                    &self
                        .providers
                        .get(&id)
                        .map(|p| p.address.clone())
                        .unwrap_or_default(),
                );
            }
        }
    }

    /// Progress on `channel` (jobs only).
    pub fn progress(&mut self, id: ProviderId, channel: u32, p: &wire::Progress) {
        if let Some(inf) = self.inflight.get_mut(&(id, channel)) {
            inf.fuel = inf.fuel.max(p.fuel);
            if let Some(job) = inf.work.job() {
                job.event_progress(inf.attempt, p.fuel, &p.stderr);
            }
        }
    }

    /// The attempt on `channel` ended with `outcome`.
    pub fn done(
        &mut self,
        id: ProviderId,
        channel: u32,
        outcome: Box<wire::Outcome>,
        after: &mut After,
    ) {
        let Some(inf) = self.release(id, channel) else {
            // A late result from an attempt already reassigned or cancelled.
            return;
        };
        let (provider, fitness_mips) = match self.providers.get_mut(&id) {
            Some(p) => {
                p.work_done += 1;
                (p.address.clone(), p.caps.fitness_mips)
            }
            None => (String::new(), 0),
        };
        let latency = u64::try_from(inf.sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        let r = self.reputation_mut(&provider);
        r.results += 1;
        // A running mean: no samples kept.
        let mean = i128::from(r.mean_latency_us);
        r.mean_latency_us =
            u64::try_from(mean + (i128::from(latency) - mean) / i128::from(r.results)).unwrap_or(0);
        after.finish.push((
            inf.work,
            Completion::Done {
                outcome,
                provider,
                fitness_mips,
                attempts: inf.attempt,
                cost: None,
            },
        ));
        self.fill(id, after);
    }

    /// The work in flight on `channel` and its attempt number.
    pub fn inflight_work(&self, id: ProviderId, channel: u32) -> Option<(Arc<Work>, u32)> {
        self.inflight
            .get(&(id, channel))
            .map(|inf| (inf.work.clone(), inf.attempt))
    }

    /// The attempt on `channel` returned a result the broker can't accept
    /// (its receipt's signature doesn't verify): a provider failure, retried
    /// elsewhere like a lost attempt.
    pub fn bad_result(&mut self, id: ProviderId, channel: u32, why: &str, after: &mut After) {
        let Some(inf) = self.release(id, channel) else {
            return;
        };
        self.retry(inf.work, why, after);
        self.fill(id, after);
    }

    /// The provider would not run the attempt on `channel`: offer it
    /// elsewhere (a refusal is not a failure and costs no attempt).
    pub fn refused(&mut self, id: ProviderId, channel: u32, reason: &str, after: &mut After) {
        let Some(inf) = self.release(id, channel) else {
            return;
        };
        {
            let mut st = inf.work.state.lock();
            st.refused.insert(id);
            st.attempt = st.attempt.saturating_sub(1);
        }
        tracing::debug!(work = %inf.work.id, "provider refused: {reason}");
        if !inf.work.is_finished() {
            self.submit_front(inf.work, after);
        }
        self.fill(id, after);
    }

    /// Cancels work wherever it is: tells its provider to stop, or takes
    /// it off the queue.
    pub fn cancel(&mut self, work_id: WorkId, after: &mut After) -> Cancelled {
        if let Some(&(id, channel)) = self.by_work.get(&work_id) {
            let (provider, fitness_mips) = match self.providers.get(&id) {
                Some(p) => {
                    let _ =
                        p.tx.send(Message::Binary(ToProvider::Cancel.encode(channel)));
                    (p.address.clone(), p.caps.fitness_mips)
                }
                None => (String::new(), 0),
            };
            let ran = self
                .release(id, channel)
                .map(|inf| crate::ledger::RanSoFar {
                    provider,
                    fitness_mips,
                    attempt: inf.attempt,
                    fuel: inf.fuel,
                    wall_us: u64::try_from(inf.sent_at.elapsed().as_micros()).unwrap_or(u64::MAX),
                });
            self.fill(id, after);
            return ran.map_or(Cancelled::Unknown, Cancelled::Running);
        }
        if let Some(i) = self.queue.iter().position(|w| w.id == work_id) {
            self.queue.remove(i);
            return Cancelled::Queued;
        }
        Cancelled::Unknown
    }

    /// Periodic upkeep: attempts not accepted in time count as a provider
    /// failure; queued work past its queue timeout fails.
    pub fn sweep(&mut self, ack_timeout: Duration, after: &mut After) {
        let now = Instant::now();
        let late: Vec<(ProviderId, u32)> = self
            .inflight
            .iter()
            .filter(|(_, inf)| !inf.accepted && now.duration_since(inf.sent_at) > ack_timeout)
            .map(|(k, _)| *k)
            .collect();
        for (id, channel) in late {
            if let Some(p) = self.providers.get(&id) {
                let _ =
                    p.tx.send(Message::Binary(ToProvider::Cancel.encode(channel)));
            }
            if let Some(inf) = self.release(id, channel) {
                let who = self
                    .providers
                    .get(&id)
                    .map(|p| p.address.clone())
                    .unwrap_or_default();
                let why = format!("provider {who} did not acknowledge within {ack_timeout:?}");
                let r = self.reputation_mut(&who);
                r.timeouts += 1;
                r.consecutive_valid = 0;
                self.retry(inf.work, &why, after);
                self.fill(id, after);
            }
        }
        let mut i = 0;
        while i < self.queue.len() {
            let w = &self.queue[i];
            if w.is_finished() {
                self.queue.remove(i);
            } else if now >= w.queue_deadline {
                if let Some(w) = self.queue.remove(i) {
                    let attempts = w.attempts();
                    let error = if self.providers.is_empty() && attempts > 0 {
                        ApiError::new(
                            ErrorCode::ProviderUnavailable,
                            format!("no provider came back after {attempts} attempt(s)"),
                        )
                    } else {
                        ApiError::new(
                            ErrorCode::QueueTimeout,
                            "no provider took the work before its queue timeout",
                        )
                    };
                    after
                        .finish
                        .push((w, Completion::Failed { error, attempts }));
                }
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(slots: u32, memory: u64, allowed: Option<Vec<&str>>, cached: &[&str]) -> Capabilities {
        Capabilities {
            slots,
            memory_bytes: memory,
            fitness_mips: 1000,
            region: "test".into(),
            allowed_services: allowed.map(|a| a.into_iter().map(String::from).collect()),
            cached: cached.iter().map(|s| s.to_string()).collect(),
            org: None,
            attestation: None,
        }
    }

    fn provider(
        s: &mut Scheduler,
        id: ProviderId,
        caps: Capabilities,
        ask: Price,
    ) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut after = After::default();
        s.add_provider(
            id,
            ProviderEntry::new(format!("0x{id:040x}"), caps, ask, tx),
            &mut after,
        );
        after.run();
        rx
    }

    fn work(service: &str, digest: &str, memory: u64, max_price: Option<Price>) -> Arc<Work> {
        let spec = WorkSpec {
            service: Some(service.into()),
            digest: digest.into(),
            kind: ServiceKind::Command,
            profile: Profile::Standard,
            limits: Limits {
                memory_bytes: memory,
                ..Limits::default()
            },
            args: vec![],
            env: vec![],
            stdin: Bytes::new(),
            http: None,
            max_price,
            max_attempts: 2,
            progress_ms: None,
            seed: 0,
            clock_start_ms: 0,
            needs: Default::default(),
            module_signature: None,
            replica: None,
            avoid: None,
            tiers: crate::trust::ALL_TIERS,
            org: None,
            billing: Default::default(),
        };
        let (tx, _rx) = oneshot::channel();
        Work::new(
            WorkId::new(),
            spec,
            Sink::Invoke(parking_lot::Mutex::new(Some(tx))),
            Duration::from_secs(60),
            0,
        )
    }

    /// Submits `w` and returns the provider it went to (None: queued).
    fn place(s: &mut Scheduler, w: &Arc<Work>) -> Option<ProviderId> {
        let mut after = After::default();
        s.submit(w.clone(), &mut after);
        after.run();
        s.by_work.get(&w.id).map(|(p, _)| *p)
    }

    #[test]
    fn prefers_a_provider_with_the_module_then_the_least_loaded() {
        let mut s = Scheduler::default();
        let _a = provider(&mut s, 1, caps(4, 1 << 30, None, &[]), 0);
        let _b = provider(&mut s, 2, caps(4, 1 << 30, None, &["d1"]), 0);
        let _c = provider(&mut s, 3, caps(4, 1 << 30, None, &[]), 0);
        // Warm wins even over equally idle providers.
        assert_eq!(place(&mut s, &work("f", "d1", 1, None)), Some(2));
        assert_eq!(place(&mut s, &work("f", "d1", 1, None)), Some(2));
        // Cold work goes to the least loaded (1 or 3, not 2 which is busy).
        let p = place(&mut s, &work("g", "d2", 1, None));
        assert!(matches!(p, Some(1) | Some(3)), "{p:?}");
        let q = place(&mut s, &work("g", "d2", 1, None));
        assert!(
            matches!(q, Some(1) | Some(3)) && q != p,
            "{q:?} after {p:?}"
        );
    }

    #[test]
    fn matching_checks_memory_service_and_price() {
        let mut s = Scheduler::default();
        let _small = provider(&mut s, 1, caps(4, 100, None, &[]), 0);
        let _picky = provider(&mut s, 2, caps(4, 1 << 30, Some(vec!["only"]), &[]), 0);
        let _dear = provider(&mut s, 3, caps(4, 1 << 30, None, &[]), 50);
        assert_eq!(
            place(&mut s, &work("x", "d", 1 << 20, Some(10))),
            None,
            "no provider fits"
        );
        assert_eq!(place(&mut s, &work("x", "d", 1 << 20, Some(50))), Some(3));
        assert_eq!(place(&mut s, &work("only", "d", 1 << 20, Some(0))), Some(2));
        assert_eq!(place(&mut s, &work("x", "d", 10, Some(0))), Some(1));
    }

    #[test]
    fn freed_slots_take_queued_work_first_come_first_served() {
        let mut s = Scheduler::default();
        let _p = provider(&mut s, 1, caps(1, 1 << 30, None, &[]), 0);
        let first = work("f", "d", 1, None);
        let second = work("f", "d", 1, None);
        let third = work("f", "d", 1, None);
        assert_eq!(place(&mut s, &first), Some(1));
        assert_eq!(place(&mut s, &second), None);
        assert_eq!(place(&mut s, &third), None);
        let (_, ch) = s.by_work[&first.id];
        let mut after = After::default();
        let outcome = Box::new(wire::Outcome::Exited {
            exit_code: 0,
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            usage: Default::default(),
        });
        s.done(1, ch, outcome.clone(), &mut after);
        after.run();
        assert!(first.is_finished());
        assert_eq!(
            s.by_work.get(&second.id).map(|x| x.0),
            Some(1),
            "the oldest queued work runs next"
        );
        assert!(!s.by_work.contains_key(&third.id));
        // A late result for an attempt no longer in flight is ignored.
        let mut after = After::default();
        s.done(1, ch, outcome, &mut after);
        assert!(after.finish.is_empty());
    }

    #[test]
    fn a_lost_provider_requeues_its_work_until_attempts_run_out() {
        let mut s = Scheduler::default();
        let _a = provider(&mut s, 1, caps(1, 1 << 30, None, &[]), 0);
        let w = work("f", "d", 1, None);
        assert_eq!(place(&mut s, &w), Some(1));
        let _b = provider(&mut s, 2, caps(1, 1 << 30, None, &[]), 0);
        let mut after = After::default();
        s.remove_provider(1, "disconnected", &mut after);
        assert_eq!(after.retries, 1);
        after.run();
        assert_eq!(
            s.by_work.get(&w.id).map(|x| x.0),
            Some(2),
            "attempt 2 on the other provider"
        );
        let mut after = After::default();
        s.remove_provider(2, "disconnected", &mut after);
        assert_eq!(after.finish.len(), 1, "max_attempts = 2 reached");
        match &after.finish[0].1 {
            Completion::Failed { error, attempts } => {
                assert_eq!(error.code, ErrorCode::ProviderUnavailable);
                assert_eq!(*attempts, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ten_thousand_providers_all_get_work_through_the_index() {
        let mut s = Scheduler::default();
        let mut rxs = Vec::new();
        for id in 1..=10_000u64 {
            rxs.push(provider(&mut s, id, caps(1, 1 << 30, None, &[]), 0));
        }
        let works: Vec<_> = (0..10_000).map(|_| work("f", "d", 1, None)).collect();
        let mut used = HashSet::new();
        for w in &works {
            let p = place(&mut s, w).expect("a free provider exists");
            assert!(
                used.insert(p),
                "provider {p} got two units while others were idle"
            );
        }
        assert_eq!(s.totals.slots_busy, 10_000);
        assert_eq!(
            place(&mut s, &work("f", "d", 1, None)),
            None,
            "all busy: queued"
        );
        assert_eq!(s.queue_len(), 1);
    }
}
