//! Scheduling: the queues (see [`queue`] for their order: functions first,
//! accounts in turn, FCFS within one), the provider index, matching,
//! assignment and failover.
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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use brume_api::rest::Reputation;
use brume_api::wire::{self, ToProvider};
use brume_api::{ApiError, ErrorCode, WorkId};

pub(crate) use crate::work::ProviderId;
use crate::work::{Cancelled, Class, Completion, RanSoFar, Work, WorkEvent};

mod affinity;
mod entry;
mod queue;
mod reputation;

pub use affinity::AffinityConfig;
pub(crate) use entry::ProviderEntry;

/// How many candidates one match inspects per index at most.
pub(crate) const SCAN_CAP: usize = 256;

/// The share of a provider's slots kept for functions, in parts per
/// million: batch work never holds them (default: a quarter).
pub(crate) const DEFAULT_FUNCTION_RESERVE_PPM: u32 = 250_000;

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
    /// Attempt events, in order, by work id.
    pub events: Vec<(WorkId, WorkEvent)>,
    /// Units that ended: the lifecycle delivers each at most once.
    pub finish: Vec<(Arc<Work>, Completion)>,
    pub retries: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    pub providers: HashMap<ProviderId, ProviderEntry>,
    idle: BTreeSet<(u32, ProviderId)>,
    warm: HashMap<String, BTreeSet<(u32, ProviderId)>>,
    queue: queue::Queues,
    /// The last number given to an arrival or a first dispatch: one
    /// sequence for both, so that they can be compared.
    order: u64,
    /// Functions dispatched, to measure their service rate.
    sync_rate: Rate,
    inflight: HashMap<(ProviderId, u32), Inflight>,
    by_work: HashMap<WorkId, (ProviderId, u32)>,
    pub totals: Totals,
    /// The least stake a provider needs to get work.
    pub min_stake: u128,
    /// Each provider's track record, by lowercase address (kept across its
    /// sessions; loaded at start-up and saved by the lifecycle).
    reputation: HashMap<String, Reputation>,
    /// Addresses whose record changed since the last save.
    reputation_dirty: HashSet<String>,
    /// Affinity sessions' providers.
    sessions: affinity::Sessions,
    /// Where each new unit's matching time goes (`/metrics`).
    pub match_time: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// Events per second over the last whole window of [`Rate::WINDOW`].
#[derive(Debug, Default)]
struct Rate {
    started: Option<Instant>,
    count: u64,
    per_s: f64,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(1);

    fn tick(&mut self) {
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        self.count += 1;
        let elapsed = now.duration_since(started);
        if elapsed >= Self::WINDOW {
            self.per_s = self.count as f64 / elapsed.as_secs_f64();
            self.count = 0;
            self.started = Some(now);
        }
    }
}

/// How many acceptable providers `pick` compares by reputation.
const RANK_AMONG: usize = 8;

/// How many acceptable providers a replica is drawn among.
const DRAW_AMONG: usize = 32;

impl Scheduler {
    pub fn with_min_stake(min_stake: u128) -> Scheduler {
        Scheduler {
            min_stake,
            ..Scheduler::default()
        }
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// How much work of `class` waits.
    pub fn queued(&self, class: Class) -> usize {
        self.queue.len_of(class)
    }

    /// Functions dispatched per second, as last measured.
    pub fn sync_rate(&self) -> f64 {
        self.sync_rate.per_s
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Whether `account` may use affinity session `key` (see
    /// [`AffinityConfig::max_per_account`]).
    pub fn admits_session(&self, account: &str, key: &str, max: usize) -> bool {
        self.sessions.admits(account, key, max)
    }

    fn session_allows(&self, work: &Work, id: ProviderId) -> bool {
        work.spec
            .affinity
            .as_ref()
            .is_none_or(|a| self.sessions.allows(&a.key, id))
    }

    /// How long the oldest queued work of `class` has waited.
    pub fn oldest_wait(&self, class: Class) -> Duration {
        self.queue.oldest_wait(class)
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

    /// A provider stops taking work for now (its idle conditions), or
    /// takes it again; its session and in-flight work stay.
    pub fn set_paused(&mut self, id: ProviderId, paused: bool, after: &mut After) {
        self.unindex(id);
        if let Some(p) = self.providers.get_mut(&id) {
            p.paused = paused;
        }
        if !paused {
            self.index(id);
            self.fill(id, after);
        }
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
        let sessions = self.sessions.lose(id);
        for inf in lost.into_iter().rev() {
            let msg = format!("provider {} {reason}", entry.address);
            self.retry(inf.work, &msg, after);
        }
        if sessions > 0 {
            // Queued units of its sessions may now go to any provider.
            let idle: Vec<ProviderId> = self.idle.iter().take(SCAN_CAP).map(|&(_, p)| p).collect();
            for p in idle {
                self.fill(p, after);
            }
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
        after.events.push((
            work.id,
            WorkEvent::Retry {
                attempt: attempts,
                why: why.to_string(),
            },
        ));
        self.submit_front(work, after);
    }

    /// New work: assign it at once if some provider matches, else queue it.
    /// (Queued work never waits while a provider could take it: every slot
    /// that frees looks at the queue first, so new work can't overtake.)
    pub fn submit(&mut self, work: Arc<Work>, after: &mut After) {
        self.order += 1;
        work.arrive(self.order);
        let started = Instant::now();
        let picked = self.pick(&work);
        if let Some(h) = &self.match_time {
            h.observe(started.elapsed().as_secs_f64());
        }
        match picked {
            Some(id) => self.assign(id, work, after),
            None => self.queue.push_back(work),
        }
    }

    fn submit_front(&mut self, work: Arc<Work>, after: &mut After) {
        match self.pick(&work) {
            Some(id) => self.assign(id, work, after),
            None => self.queue.push_front(work),
        }
    }

    fn pick(&self, work: &Work) -> Option<ProviderId> {
        let ok = |id: &ProviderId| {
            self.providers.get(id).is_some_and(|p| p.accepts(*id, work))
                && self.session_allows(work, *id)
        };
        if let Some(a) = &work.spec.affinity
            && let affinity::Place::On(id) = self.sessions.place(&a.key)
        {
            return ok(&id).then_some(id);
        }
        if work.spec.distinct.is_some() {
            return self.draw_by_stake(ok);
        }
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

    /// A replica's provider: drawn at random among the first acceptable
    /// providers with a free slot, weighted by stake (uniformly if none has
    /// any), as the CGN draws its miners. Not by reputation rank, which
    /// sybils with long runs of honest work could climb to collude.
    fn draw_by_stake(&self, ok: impl Fn(&ProviderId) -> bool) -> Option<ProviderId> {
        let candidates: Vec<(ProviderId, u128)> = self
            .idle
            .iter()
            .take(SCAN_CAP)
            .filter(|(_, id)| ok(id))
            .take(DRAW_AMONG)
            .map(|&(_, id)| (id, self.providers.get(&id).map_or(0, |p| p.stake)))
            .collect();
        let total = candidates
            .iter()
            .fold(0u128, |t, (_, stake)| t.saturating_add(*stake));
        if total == 0 {
            let n = candidates.len();
            return (n > 0).then(|| candidates[rand::random::<u64>() as usize % n].0);
        }
        let mut point = rand::random::<u128>() % total;
        for (id, stake) in &candidates {
            if point < *stake {
                return Some(*id);
            }
            point -= stake;
        }
        candidates.last().map(|(id, _)| *id)
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
        p.batch_busy += u32::from(work.spec.class == Class::Batch);
        p.gpu_busy += work.spec.oci.gpus;
        if work.dispatch() == 0 {
            self.order += 1;
            work.dispatched(self.order);
            if work.spec.class == Class::Sync {
                self.sync_rate.tick();
            }
        }
        p.mem_busy += work.spec.limits.memory_bytes;
        p.channels.insert(channel);
        let attempt = work.next_attempt();
        let s = &work.spec;
        if let Some(d) = &s.distinct {
            d.take(&p.address);
        }
        if let Some(a) = &s.affinity {
            let ttl = Duration::from_millis(a.ttl_ms);
            if self
                .sessions
                .bind(&a.key, &s.account, id, ttl, Instant::now())
            {
                work.set_moved_session();
            }
        }
        let frame = ToProvider::Assign(Box::new(work.assignment(attempt))).encode(channel);
        let sent = p.tx.send(Message::Binary(frame)).is_ok();
        let address = p.address.clone();
        self.totals.slots_busy += 1;
        self.totals.memory_busy += s.limits.memory_bytes;
        after.events.push((
            work.id,
            WorkEvent::Assigned {
                attempt,
                provider: address.clone(),
            },
        ));
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
            p.batch_busy -= u32::from(inf.work.spec.class == Class::Batch);
            p.gpu_busy -= inf.work.spec.oci.gpus;
            p.full = false;
            p.mem_busy -= inf.work.spec.limits.memory_bytes;
            p.channels.remove(&channel);
        }
        self.totals.slots_busy -= 1;
        self.totals.memory_busy -= inf.work.spec.limits.memory_bytes;
        self.index(id);
        Some(inf)
    }

    /// Gives a provider with free slots queued work, in the queue's order
    /// (functions first, then accounts in turn).
    fn fill(&mut self, id: ProviderId, after: &mut After) {
        loop {
            let Some(p) = self.providers.get(&id) else {
                return;
            };
            if !p.has_free_slot() || self.queue.is_empty() {
                return;
            }
            let work = [Class::Sync, Class::Batch].into_iter().find_map(|class| {
                if !p.has_slot_for(class) {
                    return None;
                }
                let sessions = &self.sessions;
                self.queue.take(class, p.tier, p.caps.policy, |w| {
                    p.accepts(id, w)
                        && w.spec
                            .affinity
                            .as_ref()
                            .is_none_or(|a| sessions.allows(&a.key, id))
                })
            });
            let Some(work) = work else { return };
            self.assign(id, work, after);
        }
    }

    /// The provider accepted the attempt on `channel`.
    pub fn accepted(&mut self, id: ProviderId, channel: u32, after: &mut After) {
        if let Some(inf) = self.inflight.get_mut(&(id, channel))
            && !inf.accepted
        {
            inf.accepted = true;
            let provider = self
                .providers
                .get(&id)
                .map(|p| p.address.clone())
                .unwrap_or_default();
            after.events.push((
                inf.work.id,
                WorkEvent::Running {
                    attempt: inf.attempt,
                    provider,
                },
            ));
        }
    }

    /// Progress on `channel` (jobs only).
    pub fn progress(&mut self, id: ProviderId, channel: u32, p: wire::Progress, after: &mut After) {
        if let Some(inf) = self.inflight.get_mut(&(id, channel)) {
            inf.fuel = inf.fuel.max(p.fuel);
            after.events.push((
                inf.work.id,
                WorkEvent::Progress {
                    attempt: inf.attempt,
                    fuel: p.fuel,
                    stderr: p.stderr,
                },
            ));
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
        let (provider, fitness_mips, gpu_milli_tflops) = match self.providers.get_mut(&id) {
            Some(p) => {
                p.work_done += 1;
                let gpu = crate::work::gpu_speed(&p.caps);
                (p.address.clone(), p.caps.fitness_mips, gpu)
            }
            None => (String::new(), 0, 0),
        };
        let latency = u64::try_from(inf.sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut outcome = outcome;
        crate::work::bound_claims(outcome.usage_mut(), &inf.work.spec, latency, fitness_mips);
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
                gpu_milli_tflops,
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

    /// The provider would not run the attempt on `channel` (a refusal is
    /// not a failure and costs no attempt). A refusal for lack of room
    /// (`no_capacity`, `draining`) leaves the work at the head of its queue
    /// for any provider, this one included once a slot of it frees; a
    /// policy refusal (`blacklisted`, `unsigned`, `not_allowed`, …) means
    /// this provider is never offered the work again.
    pub fn refused(&mut self, id: ProviderId, channel: u32, reason: &str, after: &mut After) {
        let Some(inf) = self.release(id, channel) else {
            return;
        };
        let for_room = matches!(reason, "no_capacity" | "draining");
        tracing::debug!(work = %inf.work.id, reason, "provider refused");
        if for_room {
            inf.work.bounced();
            self.unindex(id);
            if let Some(p) = self.providers.get_mut(&id) {
                p.full = true;
            }
        } else {
            inf.work.refused_by(id);
        }
        if !inf.work.is_finished() {
            self.submit_front(inf.work, after);
        }
        self.fill(id, after);
    }

    /// Cancels work wherever it is: tells its provider to stop, or takes
    /// it off the queue.
    pub fn cancel(&mut self, work_id: WorkId, after: &mut After) -> Cancelled {
        if let Some(&(id, channel)) = self.by_work.get(&work_id) {
            let (provider, fitness_mips, gpu_milli_tflops) = match self.providers.get(&id) {
                Some(p) => {
                    let _ =
                        p.tx.send(Message::Binary(ToProvider::Cancel.encode(channel)));
                    let gpu = crate::work::gpu_speed(&p.caps);
                    (p.address.clone(), p.caps.fitness_mips, gpu)
                }
                None => (String::new(), 0, 0),
            };
            let ran = self.release(id, channel).map(|inf| {
                let wall_us = u64::try_from(inf.sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                RanSoFar {
                    provider,
                    fitness_mips,
                    gpu_milli_tflops,
                    attempt: inf.attempt,
                    fuel: inf.fuel,
                    wall_us,
                    gpu_us: wall_us.saturating_mul(u64::from(inf.work.spec.oci.gpus)),
                }
            });
            self.fill(id, after);
            return ran.map_or(Cancelled::Unknown, Cancelled::Running);
        }
        if self.queue.remove(work_id) {
            return Cancelled::Queued;
        }
        Cancelled::Unknown
    }

    /// Periodic upkeep: providers that refused for lack of room are offered
    /// work again; attempts not accepted in time count as a provider
    /// failure; queued work past its queue timeout fails.
    pub fn sweep(&mut self, ack_timeout: Duration, after: &mut After) {
        let full: Vec<ProviderId> = self
            .providers
            .iter()
            .filter(|(_, p)| p.full)
            .map(|(id, _)| *id)
            .collect();
        for id in full {
            if let Some(p) = self.providers.get_mut(&id) {
                p.full = false;
            }
            self.index(id);
            self.fill(id, after);
        }
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
        self.sessions.expire(now);
        for w in self.queue.expire(now) {
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
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fair;
