//! Jobs: durable work with a story (events) and a stored result.
//!
//! A job's row is committed before `POST /v1/jobs` answers 202. Every state
//! change and event is queued to the database writer in order; the final
//! event and the result are committed together. Open jobs are re-queued when
//! the broker starts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brume_api::receipt::SignedReceipt;
use brume_api::rest::{EventKind, JobEvent, JobInfo, JobResult, JobState, Output, Verification};
use brume_api::wire::Outcome;
use brume_api::{ApiError, ErrorCode, Usage, WorkId};
use bytes::Bytes;
use tokio::sync::broadcast;

use crate::Shared;
use crate::StoreFuture;
use crate::ledger::Billing;
use crate::lifecycle::{Bill, Finished, Waiter};
use crate::store::StoreError;
use crate::work::{Completion, WorkEvent};
use crate::work::{Work, WorkSpec};

mod sql;
mod stored;

pub(crate) use stored::StoredJob;

/// One change to a stored job: an event, with the job's new state (if it
/// changed) and its result (at the end).
#[derive(Debug)]
pub(crate) struct JobRecord {
    pub id: WorkId,
    pub event: JobEvent,
    pub info: Option<JobInfo>,
    pub result: Option<JobResult>,
}

/// The storage jobs need. No SQLite type in it.
pub(crate) trait JobStore: Send + Sync + std::fmt::Debug {
    /// Stores a new job; returns once it is durable.
    fn insert(&self, info: JobInfo, stored: StoredJob) -> StoreFuture<'_, ()>;
    /// Queues a change without waiting. Changes apply in the order queued.
    fn record(&self, record: JobRecord);
    /// Waits until every change queued so far is durable.
    fn flush(&self) -> StoreFuture<'_, ()>;
    /// A job's info and the account that submitted it.
    fn info(&self, id: WorkId) -> StoreFuture<'_, Option<(JobInfo, String)>>;
    /// The newest jobs first, in `state` and of `account` if given.
    fn list(
        &self,
        state: Option<JobState>,
        account: Option<String>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<JobInfo>>;
    /// The jobs not final when the broker stopped, oldest first.
    fn open_jobs(&self) -> StoreFuture<'_, Vec<(JobInfo, StoredJob, Vec<JobEvent>)>>;
    fn events(&self, id: WorkId) -> StoreFuture<'_, Vec<JobEvent>>;
    fn result(&self, id: WorkId) -> StoreFuture<'_, Option<JobResult>>;
    /// Records that a job's requester confirmed it; returns once durable.
    fn confirm(&self, id: WorkId, at_ms: u64) -> StoreFuture<'_, ()>;
    /// Whether job `id` was submitted with `confirm`, and when it was
    /// confirmed (if it was).
    fn confirmation(&self, id: WorkId) -> StoreFuture<'_, (bool, Option<u64>)>;
    /// Job `id` as stored (its request, the broker's decisions).
    fn stored(&self, id: WorkId) -> StoreFuture<'_, Option<StoredJob>>;
    /// Jobs with `confirm` not yet confirmed, with when each ended (if it
    /// did).
    fn awaiting_confirmation(&self) -> StoreFuture<'_, Vec<(WorkId, Option<u64>)>>;
}

/// Each job's entry with when it was seen finished.
type Entries = HashMap<WorkId, (Arc<JobEntry>, Option<Instant>)>;

/// The jobs component: open jobs in memory, finished ones until their
/// retention passes, and the store behind them.
#[derive(Debug)]
pub(crate) struct Jobs {
    store: Arc<dyn JobStore>,
    /// Each entry with when it was seen finished.
    entries: parking_lot::Mutex<Entries>,
    retention: Duration,
    /// The jobs whose payment waits for a confirmation.
    deposits: Arc<crate::deposits::Deposits>,
}

impl Jobs {
    /// Jobs over `store`, with `config`'s retention and confirmation
    /// window.
    pub fn new(store: Arc<dyn JobStore>, config: &crate::BrokerConfig) -> Jobs {
        Jobs {
            store,
            entries: Default::default(),
            retention: config.finished_job_retention,
            deposits: crate::deposits::Deposits::new(config.settlement.confirm_window_ms),
        }
    }

    /// What holds `confirm` jobs' rows out of settlement.
    pub fn gate(&self) -> Arc<crate::deposits::Deposits> {
        self.deposits.clone()
    }

    /// Job `id`'s work, rebuilt from what was stored (for a dispute's
    /// re-execution).
    pub async fn rebuilt_work(
        &self,
        shared: &Shared,
        id: WorkId,
    ) -> Result<Option<(StoredJob, Arc<Work>)>, StoreError> {
        let Some(stored) = self.store.stored(id).await? else {
            return Ok(None);
        };
        let needs = shared.ledger.needs(stored.admission.as_ref());
        let signature = shared.registry.module_signature(
            stored.service.as_deref(),
            &stored.requester,
            &stored.digest,
        );
        let spec = work_spec(
            &stored,
            shared.config.progress_interval,
            needs,
            signature,
            &shared.config.trust,
        );
        let timeout = Duration::from_millis(stored.queue_timeout_ms);
        Ok(Some((stored, Work::new(id, spec, timeout, 0))))
    }

    /// The requester confirms job `id` (its `confirm` checked by the
    /// caller): durable, then its row may settle. Whether the window had
    /// already released it.
    pub async fn confirm(&self, id: WorkId) -> Result<(u64, bool), StoreError> {
        let at = crate::now_ms();
        self.store.confirm(id, at).await?;
        Ok((at, self.deposits.confirmed(id)))
    }

    /// Whether job `id` waits for a confirmation at all, and when it was
    /// confirmed.
    pub async fn confirmation(&self, id: WorkId) -> Result<(bool, Option<u64>), StoreError> {
        self.store.confirmation(id).await
    }

    /// A job in memory.
    pub fn entry(&self, id: WorkId) -> Option<Arc<JobEntry>> {
        self.entries.lock().get(&id).map(|(e, _)| e.clone())
    }

    fn keep(&self, entry: &Arc<JobEntry>) {
        self.entries.lock().insert(entry.id, (entry.clone(), None));
    }

    /// How many jobs in memory are not final.
    pub fn open_count(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|(e, _)| !e.is_final())
            .count()
    }

    /// Forgets the jobs finished longer than the retention ago (they are
    /// read from the store from then on).
    pub fn sweep(&self) {
        let keep = self.retention;
        self.entries.lock().retain(|_, (entry, finished)| {
            if finished.is_none() && entry.is_final() {
                *finished = Some(Instant::now());
            }
            finished.is_none_or(|t| t.elapsed() < keep)
        });
    }

    /// A job's info and the account that submitted it: from memory, else
    /// from the store.
    pub async fn info(&self, id: WorkId) -> Result<Option<(JobInfo, String)>, StoreError> {
        match self.entry(id) {
            Some(e) => Ok(Some((e.info(), e.stored.requester.clone()))),
            None => self.store.info(id).await,
        }
    }

    /// The newest jobs first (everything recorded so far included), in
    /// `state` and of `account` if given.
    pub async fn list(
        &self,
        state: Option<JobState>,
        account: Option<String>,
        limit: u32,
    ) -> Result<Vec<JobInfo>, StoreError> {
        self.store.flush().await?;
        self.store.list(state, account, limit).await
    }

    /// A finished job's stored result.
    pub async fn stored_result(&self, id: WorkId) -> Result<Option<JobResult>, StoreError> {
        self.store.result(id).await
    }

    /// A finished job's result: from memory, else (once every record
    /// queued so far is durable) from the store.
    pub async fn result(&self, id: WorkId) -> Result<Option<JobResult>, StoreError> {
        if let Some(r) = self.entry(id).and_then(|e| e.result()) {
            return Ok(Some(r));
        }
        self.store.flush().await?;
        self.store.result(id).await
    }

    /// A job's stored events.
    pub async fn stored_events(&self, id: WorkId) -> Result<Vec<JobEvent>, StoreError> {
        self.store.events(id).await
    }

    /// Waits until every change recorded so far is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

#[derive(Debug)]
struct Inner {
    info: JobInfo,
    events: Vec<JobEvent>,
    result: Option<JobResult>,
    /// The signed receipt of the attempt whose result the job keeps.
    receipt: Option<SignedReceipt>,
    /// How a replicated job's result was decided.
    verification: Option<Verification>,
}

/// A job in memory: its info, its events so far, and a channel for live
/// event followers.
#[derive(Debug)]
pub(crate) struct JobEntry {
    /// Told when a `confirm` job ends.
    deposits: Option<Arc<crate::deposits::Deposits>>,
    pub id: WorkId,
    pub stored: StoredJob,
    store: Arc<dyn JobStore>,
    inner: parking_lot::Mutex<Inner>,
    live: broadcast::Sender<JobEvent>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a job's end records, from its completion.
struct Ending {
    state: JobState,
    exit_code: Option<i32>,
    stdout: Bytes,
    stderr: Bytes,
    usage: Usage,
    error: Option<ApiError>,
    attempts: u32,
    provider: Option<String>,
    outputs: Vec<brume_api::data::OutputRef>,
}

impl Ending {
    fn of(completion: Completion) -> Ending {
        let (outcome, provider, attempts) = match completion {
            Completion::Done {
                outcome,
                provider,
                attempts,
                ..
            } => (*outcome, Some(provider), attempts),
            Completion::Failed { error, attempts } => {
                let state = if error.code == ErrorCode::Cancelled {
                    JobState::Cancelled
                } else {
                    JobState::Failed
                };
                return Ending {
                    state,
                    exit_code: None,
                    stdout: Bytes::new(),
                    stderr: Bytes::new(),
                    usage: Usage::default(),
                    error: Some(error),
                    attempts,
                    provider: None,
                    outputs: Vec::new(),
                };
            }
        };
        let ended = |state, exit_code, stdout, stderr, usage, error| Ending {
            state,
            exit_code,
            stdout,
            stderr,
            usage,
            error,
            attempts,
            provider,
            outputs: Vec::new(),
        };
        match outcome {
            Outcome::Exited {
                exit_code,
                stdout,
                stderr,
                usage,
                outputs,
            } => Ending {
                outputs: outputs.iter().map(|o| o.reference()).collect(),
                ..ended(
                    JobState::Succeeded,
                    Some(exit_code),
                    stdout,
                    stderr,
                    usage,
                    None,
                )
            },
            Outcome::Responded {
                response,
                stderr,
                usage,
            } => ended(
                JobState::Succeeded,
                None,
                response.body,
                stderr,
                usage,
                None,
            ),
            Outcome::Failed {
                code,
                message,
                usage,
                stdout,
                stderr,
            } => {
                let code = ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal);
                let error = Some(ApiError::new(code, message));
                ended(JobState::Failed, None, stdout, stderr, usage, error)
            }
        }
    }
}

impl JobEntry {
    pub fn new(
        id: WorkId,
        stored: StoredJob,
        info: JobInfo,
        events: Vec<JobEvent>,
        jobs: &Jobs,
    ) -> Arc<JobEntry> {
        let (live, _) = broadcast::channel(256);
        let store = jobs.store.clone();
        let deposits = stored.confirm.then(|| {
            jobs.deposits.submitted(id);
            jobs.deposits.clone()
        });
        Arc::new(JobEntry {
            deposits,
            id,
            stored,
            store,
            inner: parking_lot::Mutex::new(Inner {
                info,
                events,
                result: None,
                receipt: None,
                verification: None,
            }),
            live,
        })
    }

    pub fn info(&self) -> JobInfo {
        self.inner.lock().info.clone()
    }

    pub fn is_final(&self) -> bool {
        self.inner.lock().info.state.is_final()
    }

    pub fn result(&self) -> Option<JobResult> {
        self.inner.lock().result.clone()
    }

    /// Events so far, plus a receiver for the ones after them.
    pub fn follow(&self) -> (Vec<JobEvent>, broadcast::Receiver<JobEvent>) {
        let inner = self.inner.lock();
        (inner.events.clone(), self.live.subscribe())
    }

    fn push(&self, inner: &mut Inner, ev: JobEvent, persist_state: bool) {
        self.push_with(inner, ev, persist_state, None);
    }

    /// Records `ev`; its row, the job's state (if `persist_state`) and the
    /// result (if any) go to the store as one record, in order.
    fn push_with(
        &self,
        inner: &mut Inner,
        mut ev: JobEvent,
        persist_state: bool,
        result: Option<JobResult>,
    ) {
        ev.seq = inner.events.len() as u64;
        inner.info.updated_at_ms = ev.at_ms;
        inner.events.push(ev.clone());
        self.store.record(JobRecord {
            id: self.id,
            event: ev,
            info: persist_state.then(|| inner.info.clone()),
            result,
        });
        let _ = self.live.send(inner.events[inner.events.len() - 1].clone());
    }

    fn event(kind: EventKind, attempt: u32) -> JobEvent {
        JobEvent {
            seq: 0,
            at_ms: crate::now_ms(),
            kind,
            attempt,
            provider: None,
            fuel: None,
            stderr: None,
            error: None,
            message: None,
            exit_code: None,
        }
    }

    pub fn event_queued(&self, note: Option<&str>) {
        let mut inner = self.inner.lock();
        inner.info.state = JobState::Queued;
        let mut ev = Self::event(EventKind::Queued, inner.info.attempts);
        ev.message = note.map(str::to_string);
        self.push(&mut inner, ev, true);
    }

    pub fn event_assigned(&self, attempt: u32, provider: &str) {
        let mut inner = self.inner.lock();
        if inner.info.state.is_final() {
            return;
        }
        inner.info.state = JobState::Assigned;
        inner.info.attempts = attempt;
        inner.info.provider = Some(provider.to_string());
        let mut ev = Self::event(EventKind::Assigned, attempt);
        ev.provider = Some(provider.to_string());
        self.push(&mut inner, ev, true);
    }

    pub fn event_running(&self, attempt: u32, provider: &str) {
        let mut inner = self.inner.lock();
        if inner.info.state.is_final() {
            return;
        }
        inner.info.state = JobState::Running;
        let mut ev = Self::event(EventKind::Running, attempt);
        ev.provider = Some(provider.to_string());
        self.push(&mut inner, ev, true);
    }

    pub fn event_progress(&self, attempt: u32, fuel: u64, stderr: &[u8]) {
        let mut inner = self.inner.lock();
        if inner.info.state.is_final() {
            return;
        }
        let mut ev = Self::event(EventKind::Progress, attempt);
        ev.fuel = Some(fuel);
        if !stderr.is_empty() {
            ev.stderr = Some(lossy(stderr));
        }
        self.push(&mut inner, ev, false);
    }

    pub fn event_retry(&self, attempt: u32, why: &str) {
        let mut inner = self.inner.lock();
        if inner.info.state.is_final() {
            return;
        }
        inner.info.state = JobState::Queued;
        let mut ev = Self::event(EventKind::Retry, attempt);
        ev.error = Some(ApiError::new(ErrorCode::ProviderUnavailable, why));
        self.push(&mut inner, ev, true);
    }

    /// Records the receipt of an attempt's result (checked by the session).
    fn set_receipt(&self, receipt: SignedReceipt) {
        let mut inner = self.inner.lock();
        if !inner.info.state.is_final() {
            inner.receipt = Some(receipt);
        }
    }

    /// Records how a replicated job's result was decided (before
    /// [`JobEntry::complete`]).
    fn set_verification(&self, v: Verification) {
        let mut inner = self.inner.lock();
        if !inner.info.state.is_final() {
            inner.verification = Some(v);
        }
    }

    fn complete_with(&self, completion: Completion) {
        if self.is_final() {
            return;
        }
        let from_provider = matches!(completion, Completion::Done { .. });
        let Ending {
            state,
            exit_code,
            stdout,
            stderr,
            usage,
            error,
            attempts,
            provider,
            outputs,
        } = Ending::of(completion);
        let mut inner = self.inner.lock();
        inner.info.state = state;
        inner.info.attempts = attempts.max(inner.info.attempts);
        if provider.is_some() {
            inner.info.provider = provider;
        }
        inner.info.error = error.clone();
        let result = JobResult {
            id: self.id,
            state,
            exit_code,
            stdout: Output(stdout),
            stderr: Output(stderr),
            usage,
            attempts: inner.info.attempts,
            provider: inner.info.provider.clone(),
            error: error.clone(),
            receipt: if from_provider {
                inner.receipt.clone()
            } else {
                None
            },
            verification: inner.verification.clone(),
            outputs,
        };
        inner.result = Some(result.clone());
        let kind = match state {
            JobState::Succeeded => EventKind::Succeeded,
            JobState::Cancelled => EventKind::Cancelled,
            _ => EventKind::Failed,
        };
        let mut ev = Self::event(kind, inner.info.attempts);
        ev.exit_code = exit_code;
        ev.error = error;
        ev.provider = inner.info.provider.clone();
        self.push_with(&mut inner, ev, true, Some(result));
        drop(inner);
        if let Some(d) = &self.deposits {
            d.finished(self.id, crate::now_ms());
        }
    }
}

// ---- starting jobs ----------------------------------------------------------

/// A job's work; `module_signature` is looked up by digest when the job
/// starts (`Registry::module_signature`), not stored with the job.
fn work_spec(
    stored: &StoredJob,
    progress: Duration,
    needs: crate::work::TierNeeds,
    module_signature: Option<brume_api::wire::ModuleSignature>,
    trust: &crate::trust::TrustConfig,
) -> WorkSpec {
    WorkSpec {
        tiers: stored
            .tiers
            .as_deref()
            .and_then(|t| crate::trust::tier_set(t).ok())
            .unwrap_or_else(|| trust.default_tiers(&stored.requester)),
        org: trust.org_of_account(&stored.requester),
        service: stored.service.clone(),
        digest: stored.digest.clone(),
        kind: stored.kind,
        profile: stored.profile,
        limits: stored.limits,
        args: stored.argv.clone(),
        env: stored.env.clone(),
        stdin: stored.stdin.0.clone(),
        http: None,
        max_price: stored.max_price,
        max_attempts: stored.max_attempts,
        progress_ms: Some(progress.as_millis() as u64),
        seed: stored.seed,
        clock_start_ms: 0,
        needs: crate::work::TierNeeds {
            min_mbps: needs.min_mbps.max(stored.min_mbps),
            runtime_ms: stored.declared.runtime_ms,
            ..needs
        },
        module_signature,
        distinct: None,
        avoid: None,
        only: None,
        wants_receipt: true,
        class: crate::work::Class::Batch,
        account: stored.requester.as_str().into(),
        oci: crate::work::OciNeeds {
            inputs: stored.inputs.clone(),
            outputs: stored.outputs.clone(),
            gpus: stored.gpus,
            vcpus: stored.vcpus,
            network: stored.network,
            image: stored.image.clone(),
        },
        affinity: stored.affinity.clone(),
        lease: false,
    }
}

/// Who a job's rows name.
fn job_billing(stored: &StoredJob) -> Billing {
    Billing {
        requester: stored.requester.clone(),
        end_user: stored.end_user.clone(),
        developer: stored.developer.clone(),
        request_line: String::new(),
        request_headers: Vec::new(),
        admission: stored.admission,
        declared: stored.declared,
        columns: stored.columns.clone(),
        hold: None,
        // Its trust slot, if any, went with the broker that took it.
        anonymous: false,
    }
}

/// Records a new job (durable before this returns) and queues it; `hold`
/// is its escrow reservation.
pub(crate) async fn submit(
    shared: &Arc<Shared>,
    stored: StoredJob,
    labels: BTreeMap<String, String>,
    hold: Option<Arc<crate::escrow::Hold>>,
) -> Result<Arc<JobEntry>, StoreError> {
    let now = crate::now_ms();
    let id = WorkId::new();
    let info = JobInfo {
        id,
        state: JobState::Queued,
        service: stored.service.clone(),
        digest: stored.digest.clone(),
        attempts: 0,
        max_attempts: stored.max_attempts,
        provider: None,
        created_at_ms: now,
        updated_at_ms: now,
        error: None,
        labels,
    };
    let jobs = &shared.jobs;
    jobs.store.insert(info.clone(), stored.clone()).await?;
    let entry = JobEntry::new(id, stored, info, Vec::new(), jobs);
    entry.event_queued(None);
    start(shared, entry.clone(), 0, hold);
    Ok(entry)
}

/// Queues a job (verified ones as a replica group, see `verify.rs`); `hold` is its escrow reservation (none for a job
/// re-queued at start-up: its account's charges are counted from the
/// ledger).
pub(crate) fn start(
    shared: &Arc<Shared>,
    entry: Arc<JobEntry>,
    attempts: u32,
    hold: Option<Arc<crate::escrow::Hold>>,
) {
    let needs = shared.ledger.needs(entry.stored.admission.as_ref());
    let signature = shared.registry.module_signature(
        entry.stored.service.as_deref(),
        &entry.stored.requester,
        &entry.stored.digest,
    );
    let timeout = Duration::from_millis(entry.stored.queue_timeout_ms);
    if let Some(
        policy @ (brume_api::rest::VerifyPolicy::Replicate { .. }
        | brume_api::rest::VerifyPolicy::Adaptive
        | brume_api::rest::VerifyPolicy::Verifier { .. }),
    ) = entry.stored.verify.clone()
    {
        // The replicas are billed one by one when the group is decided; the
        // job's reservation (sized for the policy) ends when it is.
        let (stored, progress, trust) = (
            entry.stored.clone(),
            shared.config.progress_interval,
            shared.config.trust.clone(),
        );
        let billing = job_billing(&entry.stored);
        shared.jobs.keep(&entry);
        crate::verify::start(
            shared,
            (entry.id, entry),
            policy,
            Box::new(move || work_spec(&stored, progress, needs, signature.clone(), &trust)),
            billing,
            timeout,
            hold,
        );
        return;
    }
    let spec = work_spec(
        &entry.stored,
        shared.config.progress_interval,
        needs,
        signature,
        &shared.config.trust,
    );
    let mut billing = job_billing(&entry.stored);
    billing.hold = hold;
    let work = Work::new(entry.id, spec, timeout, attempts);
    shared.jobs.keep(&entry);
    shared.lifecycle.submit(work, Bill::Durable(billing), entry);
}

/// Re-queues the jobs that were open when the broker last stopped.
pub(crate) async fn recover(shared: &Arc<Shared>) -> Result<(), crate::StoreError> {
    // Finished jobs still waiting for a confirmation (open ones are
    // registered as they are re-queued below).
    for (id, ended) in shared.jobs.store.awaiting_confirmation().await? {
        if let Some(at) = ended {
            shared.jobs.deposits.finished(id, at);
        }
    }
    let open = shared.jobs.store.open_jobs().await?;
    if !open.is_empty() {
        tracing::info!("re-queueing {} unfinished job(s)", open.len());
    }
    for (mut info, stored, events) in open {
        // An attempt cut short by the broker's own crash is not the job's
        // fault: a recovered job always gets at least one more attempt.
        let attempts = info.attempts.min(stored.max_attempts.saturating_sub(1));
        info.state = JobState::Queued;
        let entry = JobEntry::new(info.id, stored, info, events, &shared.jobs);
        entry.event_queued(Some("re-queued after a broker restart"));
        start(shared, entry, attempts, None);
    }
    Ok(())
}

impl Waiter for JobEntry {
    fn event(&self, event: &WorkEvent) {
        match event {
            WorkEvent::Assigned { attempt, provider } => self.event_assigned(*attempt, provider),
            WorkEvent::Running { attempt, provider } => self.event_running(*attempt, provider),
            WorkEvent::Progress {
                attempt,
                fuel,
                stderr,
            } => self.event_progress(*attempt, *fuel, stderr),
            WorkEvent::Retry { attempt, why } => self.event_retry(*attempt, why),
        }
    }

    /// Records the end of the job (the lifecycle calls it once).
    fn complete(&self, finished: Finished) {
        if let Some(v) = finished.verification {
            self.set_verification(v);
        }
        if let Some(r) = finished.receipt {
            self.set_receipt(r);
        }
        self.complete_with(finished.completion);
    }
}
