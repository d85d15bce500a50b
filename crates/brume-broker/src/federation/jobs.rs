//! Jobs forwarded to a peer broker: which broker runs each (durably, so a
//! restart still relays and bills them), and the watcher that bills the
//! caller once the peer's job is over.
//!
//! A forwarded job keeps the id the executing broker gave it (ids are
//! UUIDv7, unique across brokers): the origin relays `GET /v1/jobs/{id}`,
//! its events, its result and its cancel to that broker, so the
//! requester's view doesn't change. When the job ends, the origin reads
//! the executing broker's row for it and bills its caller the same amount
//! (capped at what the job may cost here) in a row `forwarded-<id>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brume_api::WorkId;
use brume_api::rest::{JobInfo, JobState};
use brume_sql::{Sql, V};
use parking_lot::RwLock;

use crate::escrow::Hold;
use crate::store::{self, Store};
use crate::{Shared, StoreError, StoreFuture};

/// A job another broker runs for a caller of this one.
#[derive(Debug, Clone)]
pub(crate) struct ForwardedJob {
    pub id: WorkId,
    /// This broker's caller: who may see it, and who pays.
    pub requester: String,
    /// The executing broker (the next hop), its URL and certificate pin.
    pub peer: String,
    pub url: String,
    pub tls_sha256: Option<String>,
    /// The most it may cost here (what its hold was).
    pub cap: u128,
    pub billed: bool,
}

/// The forwarded jobs' storage.
pub(crate) trait ForwardedStore: Send + Sync {
    fn load(&self) -> StoreFuture<'_, Vec<ForwardedJob>>;
    fn record(&self, job: ForwardedJob) -> StoreFuture<'_, ()>;
    fn billed(&self, id: WorkId) -> StoreFuture<'_, ()>;
}

/// A forwarded job and its hold until it is billed (none after a
/// restart: holds live in memory).
type Held = (ForwardedJob, Option<Arc<Hold>>);

/// Forwarded jobs by id, and their holds until they are billed.
pub(crate) struct ForwardedJobs {
    store: Arc<dyn ForwardedStore>,
    jobs: RwLock<HashMap<WorkId, Held>>,
}

impl std::fmt::Debug for ForwardedJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardedJobs")
            .field("jobs", &self.jobs.read().len())
            .finish_non_exhaustive()
    }
}

impl ForwardedJobs {
    pub async fn open(store: Arc<dyn ForwardedStore>) -> Result<ForwardedJobs, StoreError> {
        let jobs = store
            .load()
            .await?
            .into_iter()
            .map(|j| (j.id, (j, None)))
            .collect();
        Ok(ForwardedJobs {
            store,
            jobs: RwLock::new(jobs),
        })
    }

    /// The job, if this broker forwarded it.
    pub fn get(&self, id: WorkId) -> Option<ForwardedJob> {
        self.jobs.read().get(&id).map(|(j, _)| j.clone())
    }

    /// Records a job the peer accepted (durably, before the caller hears
    /// of it), with its hold.
    pub async fn record(
        &self,
        job: ForwardedJob,
        hold: Option<Arc<Hold>>,
    ) -> Result<(), StoreError> {
        self.store.record(job.clone()).await?;
        self.jobs.write().insert(job.id, (job, hold));
        Ok(())
    }

    /// The jobs not billed yet (to watch after a restart).
    pub fn unbilled(&self) -> Vec<WorkId> {
        self.jobs
            .read()
            .values()
            .filter(|(j, _)| !j.billed)
            .map(|(j, _)| j.id)
            .collect()
    }

    async fn mark_billed(&self, id: WorkId) -> Result<(), StoreError> {
        self.store.billed(id).await?;
        if let Some((j, hold)) = self.jobs.write().get_mut(&id) {
            j.billed = true;
            if let Some(h) = hold.take() {
                h.release();
            }
        }
        Ok(())
    }
}

/// Watches a forwarded job until it is over at its broker, then bills
/// the caller what that broker billed this one. Polls, slowing down to
/// every [`MAX_POLL`]; a peer that can't be reached is retried.
pub(crate) async fn watch(shared: Arc<Shared>, id: WorkId) {
    let Some(job) = shared.federation.jobs().and_then(|j| j.get(id)) else {
        return;
    };
    let mut wait = Duration::from_millis(200);
    let cost = loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_POLL);
        match peer_cost(&shared, &job).await {
            Ok(Some(cost)) => break cost,
            Ok(None) => {}
            Err(e) => tracing::warn!(job = %id, peer = %job.peer, "a forwarded job's broker: {e}"),
        }
    };
    let amount = cost.min(job.cap);
    if amount > 0 {
        let own = shared.identity.address().to_string();
        let row = shared
            .ledger
            .forwarded(&id.to_string(), &job.requester, &job.peer, &own, amount);
        shared.ledger.append_sealed(id, row).await;
    }
    if let Some(jobs) = shared.federation.jobs()
        && let Err(e) = jobs.mark_billed(id).await
    {
        tracing::error!(job = %id, "record a forwarded job billed: {e}");
    }
}

/// The slowest a forwarded job's state is polled.
const MAX_POLL: Duration = Duration::from_secs(5);

/// What the peer billed for the job once it is over (0 without a row: a
/// job cancelled before it ran); `None` while it runs.
async fn peer_cost(shared: &Shared, job: &ForwardedJob) -> Result<Option<u128>, String> {
    let client = shared
        .federation
        .client(shared, &job.url, job.tls_sha256.as_deref())
        .map_err(|e| e.to_string())?;
    let get = |path: String| {
        let client = client.clone();
        async move {
            client
                .relay(
                    http::Method::GET,
                    &path,
                    http::HeaderMap::new(),
                    bytes::Bytes::new(),
                )
                .await
                .map_err(|e| e.to_string())
        }
    };
    let info = get(format!("/v1/jobs/{}", job.id)).await?;
    let info: JobInfo = serde_json::from_slice(info.body())
        .map_err(|e| format!("its job {}: {e} ({})", job.id, info.status()))?;
    if !info.state.is_final() {
        return Ok(None);
    }
    if info.state == JobState::Cancelled && info.attempts == 0 {
        return Ok(Some(0));
    }
    let row = get(format!("/v1/ledger/rows/{}", job.id)).await?;
    if row.status() == http::StatusCode::NOT_FOUND {
        return Ok(Some(0));
    }
    let row: brume_ledger::row::LedgerRow = serde_json::from_slice(row.body())
        .map_err(|e| format!("its row for {}: {e} ({})", job.id, row.status()))?;
    // Sealed (its hashes recompute), and billed to this broker.
    let row = brume_ledger::row::SealedRow::check(row)
        .map_err(|e| format!("its row for {}: {e}", job.id))?;
    let d = &row.row().data;
    if !d.requester.eq_ignore_ascii_case(&shared.broker_id) {
        return Err(format!(
            "its row for {} bills {}, not this broker",
            job.id, d.requester
        ));
    }
    Ok(Some(d.token_amount))
}

/// The forwarded jobs' table, made when the component opens.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS forwarded_jobs (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    peer TEXT NOT NULL,
    url TEXT NOT NULL,
    tls_sha256 TEXT,
    cap TEXT NOT NULL,
    billed INTEGER NOT NULL DEFAULT 0
);
";

fn load(c: &mut dyn Sql) -> Result<Vec<ForwardedJob>, StoreError> {
    let rows = c.query(
        "SELECT id, requester, peer, url, tls_sha256, cap, billed FROM forwarded_jobs",
        &[],
    )?;
    let mut out = Vec::new();
    for r in &rows {
        let id = r.t(0)?;
        let Ok(id) = id.parse() else {
            tracing::warn!(%id, "a forwarded job's id does not parse: skipped");
            continue;
        };
        out.push(ForwardedJob {
            id,
            requester: r.t(1)?,
            peer: r.t(2)?,
            url: r.t(3)?,
            tls_sha256: r.ot(4)?,
            cap: r.t(5)?.parse().unwrap_or(0),
            billed: r.i(6)? != 0,
        });
    }
    Ok(out)
}

impl ForwardedStore for Store {
    fn load(&self) -> StoreFuture<'_, Vec<ForwardedJob>> {
        Box::pin(async move {
            self.write(|c| store::sqlite_layout(c, SCHEMA)).await?;
            self.read(load).await
        })
    }

    fn record(&self, j: ForwardedJob) -> StoreFuture<'_, ()> {
        store::writing(self, move |c| {
            c.exec(
                "INSERT INTO forwarded_jobs (id, requester, peer, url, tls_sha256, cap, billed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET requester = excluded.requester,
                 peer = excluded.peer, url = excluded.url, tls_sha256 = excluded.tls_sha256,
                 cap = excluded.cap, billed = excluded.billed",
                &[
                    V::T(&j.id.to_string()),
                    V::T(&j.requester),
                    V::T(&j.peer),
                    V::T(&j.url),
                    j.tls_sha256.as_ref().into(),
                    V::T(&j.cap.to_string()),
                    V::I(j.billed.into()),
                ],
            )?;
            Ok(())
        })
    }

    fn billed(&self, id: WorkId) -> StoreFuture<'_, ()> {
        store::writing(self, move |c| {
            c.exec(
                "UPDATE forwarded_jobs SET billed = 1 WHERE id = ?1",
                &[V::T(&id.to_string())],
            )?;
            Ok(())
        })
    }
}
