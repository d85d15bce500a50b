//! Jobs: durable work with a story (events) and a stored result.
//!
//! A job's row is committed before `POST /v1/jobs` answers 202. Every state
//! change and event is queued to the database writer in order; the final
//! event and the result are committed together. Open jobs are re-queued when
//! the broker starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brume_api::receipt::SignedReceipt;
use brume_api::rest::{
    EventKind, JobEvent, JobInfo, JobResult, JobState, Output, Price, Verification, VerifyPolicy,
};
use brume_api::wire::Outcome;
use brume_api::{ApiError, ErrorCode, Limits, Profile, ServiceKind, Usage, WorkId};
use bytes::Bytes;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::Shared;
use crate::ledger::Billing;
use crate::lifecycle::{Bill, Finished, Waiter};
use crate::store::{Store, StoreError};
use crate::work::{Completion, WorkEvent};
use crate::work::{Work, WorkSpec};

/// What is stored of a job's request: everything needed to run it again
/// after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredJob {
    pub service: Option<String>,
    pub digest: String,
    pub kind: ServiceKind,
    /// Full argv, argv\[0\] first.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Output,
    pub limits: Limits,
    pub profile: Profile,
    /// Deterministic profile's seed (absent in rows written before it existed).
    #[serde(default)]
    pub seed: u64,
    pub max_attempts: u32,
    pub queue_timeout_ms: u64,
    pub max_price: Option<Price>,
    pub labels: BTreeMap<String, String>,
    /// The ledger's participants, fixed at submission (absent in rows
    /// written before the ledger).
    #[serde(default)]
    pub requester: String,
    #[serde(default)]
    pub end_user: String,
    #[serde(default)]
    pub developer: String,
    /// The tier and price cap it was admitted under (absent in rows written
    /// before deals: the default tier, uncapped).
    #[serde(default)]
    pub admission: Option<brume_ledger::deal::Admission>,
    /// Its declared shape, for the overrun surcharge.
    #[serde(default)]
    pub declared: brume_ledger::penalty::Declared,
    /// How its result is verified.
    #[serde(default)]
    pub verify: Option<VerifyPolicy>,
    /// The trust tiers it may run on (`None`: the account's default).
    #[serde(default)]
    pub tiers: Option<Vec<u8>>,
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
    pub id: WorkId,
    pub stored: StoredJob,
    store: Store,
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
        };
        match outcome {
            Outcome::Exited {
                exit_code,
                stdout,
                stderr,
                usage,
            } => ended(
                JobState::Succeeded,
                Some(exit_code),
                stdout,
                stderr,
                usage,
                None,
            ),
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
        store: Store,
    ) -> Arc<JobEntry> {
        let (live, _) = broadcast::channel(256);
        Arc::new(JobEntry {
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
    /// result (if any) go to the database in one write, hence one commit.
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
        let id = self.id.to_string();
        let body = serde_json::to_string(&ev).unwrap_or_default();
        let info = inner.info.clone();
        self.store.write_later(move |tx| {
            if let Some(r) = result {
                tx.execute(
                    "UPDATE jobs SET exit_code = ?2, stdout = ?3, stderr = ?4, usage = ?5, receipt = ?6, verification = ?7 WHERE id = ?1",
                    params![
                        id,
                        r.exit_code,
                        r.stdout.0.to_vec(),
                        r.stderr.0.to_vec(),
                        serde_json::to_string(&r.usage).unwrap_or_default(),
                        r.receipt.as_ref().and_then(|x| serde_json::to_string(x).ok()),
                        r.verification.as_ref().and_then(|x| serde_json::to_string(x).ok())
                    ],
                )?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO job_events (job_id, seq, body) VALUES (?1, ?2, ?3)",
                params![id, ev.seq as i64, body],
            )?;
            if persist_state {
                update_row(tx, &info)?;
            }
            Ok(())
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
        needs,
        module_signature,
        distinct: None,
        avoid: None,
        wants_receipt: true,
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
        hold: None,
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
    insert(&shared.store, &info, &stored).await?;
    let entry = JobEntry::new(id, stored, info, Vec::new(), shared.store.clone());
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
    let signature = shared
        .registry
        .module_signature(entry.stored.service.as_deref(), &entry.stored.digest);
    let timeout = Duration::from_millis(entry.stored.queue_timeout_ms);
    if let Some(
        policy @ (brume_api::rest::VerifyPolicy::Replicate { .. }
        | brume_api::rest::VerifyPolicy::Adaptive
        | brume_api::rest::VerifyPolicy::Verifier { .. }),
    ) = entry.stored.verify.clone()
    {
        // The replicas are billed one by one when the group is decided; the
        // job's reservation ends when it does.
        drop(hold);
        let (stored, progress, trust) = (
            entry.stored.clone(),
            shared.config.progress_interval,
            shared.config.trust.clone(),
        );
        let billing = job_billing(&entry.stored);
        shared.jobs.lock().insert(entry.id, (entry.clone(), None));
        crate::verify::start(
            shared,
            (entry.id, entry),
            policy,
            Box::new(move || work_spec(&stored, progress, needs, signature.clone(), &trust)),
            billing,
            timeout,
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
    shared.jobs.lock().insert(entry.id, (entry.clone(), None));
    shared.lifecycle.submit(work, Bill::Durable(billing), entry);
}

/// Re-queues the jobs that were open when the broker last stopped.
pub(crate) async fn recover(shared: &Arc<Shared>) -> Result<(), crate::StoreError> {
    let open = open_jobs(&shared.store).await?;
    if !open.is_empty() {
        tracing::info!("re-queueing {} unfinished job(s)", open.len());
    }
    for (mut info, stored, events) in open {
        // An attempt cut short by the broker's own crash is not the job's
        // fault: a recovered job always gets at least one more attempt.
        let attempts = info.attempts.min(stored.max_attempts.saturating_sub(1));
        info.state = JobState::Queued;
        let entry = JobEntry::new(info.id, stored, info, events, shared.store.clone());
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

fn update_row(tx: &rusqlite::Transaction<'_>, info: &JobInfo) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE jobs SET state = ?2, attempts = ?3, provider = ?4, error = ?5, updated_at_ms = ?6 WHERE id = ?1",
        params![
            info.id.to_string(),
            info.state.as_str(),
            info.attempts,
            info.provider,
            info.error.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default()),
            info.updated_at_ms as i64
        ],
    )?;
    Ok(())
}

/// Commits a new job (row and first event) and waits until it is durable.
pub(crate) async fn insert(
    store: &Store,
    info: &JobInfo,
    stored: &StoredJob,
) -> Result<(), StoreError> {
    let id = info.id.to_string();
    let spec = serde_json::to_string(stored).unwrap_or_default();
    let state = info.state.as_str();
    let created = info.created_at_ms as i64;
    store
        .write(move |tx| {
            tx.execute(
                "INSERT INTO jobs (id, spec, state, attempts, created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, 0, ?4, ?4)",
                params![id, spec, state, created],
            )?;
            Ok(())
        })
        .await
}

const INFO_COLUMNS: &str =
    "id, spec, state, attempts, provider, error, created_at_ms, updated_at_ms";

fn info_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(JobInfo, StoredJob)> {
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let id: String = r.get(0)?;
    let spec: String = r.get(1)?;
    let state: String = r.get(2)?;
    let stored: StoredJob = serde_json::from_str(&spec).map_err(|e| bad(1, e.to_string()))?;
    let error: Option<String> = r.get(5)?;
    let info = JobInfo {
        id: id.parse().map_err(|e: uuid::Error| bad(0, e.to_string()))?,
        state: state.parse().map_err(|e: String| bad(2, e))?,
        service: stored.service.clone(),
        digest: stored.digest.clone(),
        attempts: r.get(3)?,
        max_attempts: stored.max_attempts,
        provider: r.get(4)?,
        created_at_ms: r.get::<_, i64>(6)? as u64,
        updated_at_ms: r.get::<_, i64>(7)? as u64,
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        labels: stored.labels.clone(),
    };
    Ok((info, stored))
}

pub(crate) async fn load_info(store: &Store, id: WorkId) -> Result<Option<JobInfo>, StoreError> {
    store
        .read(move |c| {
            c.query_row(
                &format!("SELECT {INFO_COLUMNS} FROM jobs WHERE id = ?1"),
                [id.to_string()],
                info_from_row,
            )
            .optional()
            .map(|o| o.map(|(i, _)| i))
        })
        .await
}

pub(crate) async fn list(
    store: &Store,
    state: Option<JobState>,
    limit: u32,
) -> Result<Vec<JobInfo>, StoreError> {
    store
        .read(move |c| {
            let (sql, arg) = match state {
                Some(s) => (
                    format!(
                        "SELECT {INFO_COLUMNS} FROM jobs WHERE state = ?1 ORDER BY id DESC LIMIT ?2"
                    ),
                    s.as_str().to_string(),
                ),
                None => (
                    format!(
                        "SELECT {INFO_COLUMNS} FROM jobs WHERE ?1 = ?1 ORDER BY id DESC LIMIT ?2"
                    ),
                    String::new(),
                ),
            };
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params![arg, limit], info_from_row)?;
            rows.map(|r| r.map(|(i, _)| i)).collect()
        })
        .await
}

/// Jobs that were not final when the broker stopped, oldest first.
pub(crate) async fn open_jobs(
    store: &Store,
) -> Result<Vec<(JobInfo, StoredJob, Vec<JobEvent>)>, StoreError> {
    store
        .read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {INFO_COLUMNS} FROM jobs WHERE state IN ('queued','assigned','running') ORDER BY id"
            ))?;
            let jobs: Vec<(JobInfo, StoredJob)> = stmt.query_map([], info_from_row)?.collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(jobs.len());
            for (info, stored) in jobs {
                let events = events_sync(c, info.id)?;
                out.push((info, stored, events));
            }
            Ok(out)
        })
        .await
}

fn events_sync(c: &rusqlite::Connection, id: WorkId) -> rusqlite::Result<Vec<JobEvent>> {
    let mut stmt = c.prepare("SELECT body FROM job_events WHERE job_id = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([id.to_string()], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for body in rows {
        if let Ok(ev) = serde_json::from_str(&body?) {
            out.push(ev);
        }
    }
    Ok(out)
}

pub(crate) async fn load_events(store: &Store, id: WorkId) -> Result<Vec<JobEvent>, StoreError> {
    store.read(move |c| events_sync(c, id)).await
}

pub(crate) async fn load_result(
    store: &Store,
    id: WorkId,
) -> Result<Option<JobResult>, StoreError> {
    store
        .read(move |c| {
            c.query_row(
                "SELECT state, exit_code, stdout, stderr, usage, attempts, provider, error, receipt, verification FROM jobs WHERE id = ?1",
                [id.to_string()],
                |r| {
                    let state: String = r.get(0)?;
                    let usage: Option<String> = r.get(4)?;
                    let error: Option<String> = r.get(7)?;
                    let receipt: Option<String> = r.get(8)?;
                    let verification: Option<String> = r.get(9)?;
                    Ok((
                        (state, receipt, verification),
                        r.get::<_, Option<i32>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?,
                        usage,
                        r.get::<_, u32>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        error,
                    ))
                },
            )
            .optional()
        })
        .await
        .map(|row| {
            row.and_then(|((state, receipt, verification), exit_code, stdout, stderr, usage, attempts, provider, error)| {
                let state: JobState = state.parse().ok()?;
                Some(JobResult {
                    id,
                    state,
                    exit_code,
                    stdout: Output(stdout.unwrap_or_default().into()),
                    stderr: Output(stderr.unwrap_or_default().into()),
                    usage: usage.and_then(|u| serde_json::from_str(&u).ok()).unwrap_or_default(),
                    attempts,
                    provider,
                    error: error.and_then(|e| serde_json::from_str(&e).ok()),
                    receipt: receipt.and_then(|x| serde_json::from_str(&x).ok()),
                    verification: verification.and_then(|x| serde_json::from_str(&x).ok()),
                })
            })
        })
}
