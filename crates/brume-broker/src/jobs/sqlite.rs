//! The SQLite implementation of [`JobStore`]: the broker's
//! [`Store`], tables `jobs` and `job_events`.

use brume_api::WorkId;
use brume_api::rest::{JobEvent, JobInfo, JobResult, JobState, Output};
use rusqlite::{OptionalExtension, params};

use super::{JobRecord, JobStore, StoredJob};
use crate::StoreFuture;
use crate::store::{Store, StoreError};

impl JobStore for Store {
    fn insert(&self, info: JobInfo, stored: StoredJob) -> StoreFuture<'_, ()> {
        Box::pin(insert(self, info, stored))
    }

    fn record(&self, record: JobRecord) {
        self.write_later(move |tx| write_record(tx, record));
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(Store::flush(self))
    }

    fn info(&self, id: WorkId) -> StoreFuture<'_, Option<(JobInfo, String)>> {
        Box::pin(load_info(self, id))
    }

    fn list(
        &self,
        state: Option<JobState>,
        account: Option<String>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<JobInfo>> {
        Box::pin(list(self, state, account, limit))
    }

    fn open_jobs(&self) -> StoreFuture<'_, Vec<(JobInfo, StoredJob, Vec<JobEvent>)>> {
        Box::pin(open_jobs(self))
    }

    fn events(&self, id: WorkId) -> StoreFuture<'_, Vec<JobEvent>> {
        Box::pin(load_events(self, id))
    }

    fn result(&self, id: WorkId) -> StoreFuture<'_, Option<JobResult>> {
        Box::pin(load_result(self, id))
    }

    fn confirm(&self, id: WorkId, at_ms: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO job_confirmations (job_id, confirmed_ms) VALUES (?1, ?2)",
                params![id.to_string(), at_ms as i64],
            )?;
            Ok(())
        }))
    }

    fn confirmation(&self, id: WorkId) -> StoreFuture<'_, (bool, Option<u64>)> {
        Box::pin(self.read(move |c| {
            let id = id.to_string();
            let wants: Option<bool> = c
                .query_row(
                    "SELECT json_extract(spec, '$.confirm') = 1 FROM jobs WHERE id = ?1",
                    [&id],
                    |r| r.get::<_, Option<bool>>(0),
                )
                .optional()?
                .flatten();
            let at: Option<i64> = c
                .query_row(
                    "SELECT confirmed_ms FROM job_confirmations WHERE job_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok((wants.unwrap_or(false), at.map(|t| t as u64)))
        }))
    }

    fn stored(&self, id: WorkId) -> StoreFuture<'_, Option<StoredJob>> {
        Box::pin(self.read(move |c| {
            c.query_row(
                &format!("SELECT {INFO_COLUMNS} FROM jobs WHERE id = ?1"),
                [id.to_string()],
                info_from_row,
            )
            .optional()
            .map(|o| o.map(|(_, stored)| stored))
        }))
    }

    fn awaiting_confirmation(&self) -> StoreFuture<'_, Vec<(WorkId, Option<u64>)>> {
        Box::pin(self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, state, updated_at_ms FROM jobs
                 WHERE json_extract(spec, '$.confirm') = 1
                 AND NOT EXISTS (SELECT 1 FROM job_confirmations k WHERE k.job_id = jobs.id)",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, state, updated) = row?;
                let (Ok(id), Ok(state)) = (id.parse::<WorkId>(), state.parse::<JobState>()) else {
                    continue;
                };
                out.push((id, state.is_final().then_some(updated as u64)));
            }
            Ok(out)
        }))
    }
}

/// One event; with it the job's state (if any) and its result (if any), in
/// one write, hence one commit.
fn write_record(tx: &rusqlite::Transaction<'_>, record: JobRecord) -> rusqlite::Result<()> {
    let JobRecord {
        id,
        event,
        info,
        result,
    } = record;
    let id = id.to_string();
    if let Some(r) = result {
        tx.execute(
            "UPDATE jobs SET exit_code = ?2, stdout = ?3, stderr = ?4, usage = ?5, receipt = ?6, verification = ?7, outputs = ?8 WHERE id = ?1",
            params![
                id,
                r.exit_code,
                r.stdout.0.to_vec(),
                r.stderr.0.to_vec(),
                serde_json::to_string(&r.usage).unwrap_or_default(),
                r.receipt.as_ref().and_then(|x| serde_json::to_string(x).ok()),
                r.verification.as_ref().and_then(|x| serde_json::to_string(x).ok()),
                (!r.outputs.is_empty()).then(|| serde_json::to_string(&r.outputs).ok()).flatten()
            ],
        )?;
    }
    let body = serde_json::to_string(&event).unwrap_or_default();
    tx.execute(
        "INSERT OR REPLACE INTO job_events (job_id, seq, body) VALUES (?1, ?2, ?3)",
        params![id, event.seq as i64, body],
    )?;
    if let Some(info) = info {
        update_row(tx, &info)?;
    }
    Ok(())
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
async fn insert(store: &Store, info: JobInfo, stored: StoredJob) -> Result<(), StoreError> {
    let id = info.id.to_string();
    let spec = serde_json::to_string(&stored).unwrap_or_default();
    let state = info.state.as_str();
    let created = info.created_at_ms as i64;
    let account = stored.requester;
    store
        .write(move |tx| {
            tx.execute(
                "INSERT INTO jobs (id, spec, state, attempts, created_at_ms, updated_at_ms, account) VALUES (?1, ?2, ?3, 0, ?4, ?4, ?5)",
                params![id, spec, state, created, account],
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
        state: state
            .parse()
            .map_err(|e: brume_api::rest::UnknownJobState| bad(2, e.to_string()))?,
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

async fn load_info(store: &Store, id: WorkId) -> Result<Option<(JobInfo, String)>, StoreError> {
    store
        .read(move |c| {
            c.query_row(
                &format!("SELECT {INFO_COLUMNS} FROM jobs WHERE id = ?1"),
                [id.to_string()],
                info_from_row,
            )
            .optional()
            .map(|o| o.map(|(i, stored)| (i, stored.requester)))
        })
        .await
}

async fn list(
    store: &Store,
    state: Option<JobState>,
    account: Option<String>,
    limit: u32,
) -> Result<Vec<JobInfo>, StoreError> {
    store
        .read(move |c| {
            // `?1 IS NULL OR …`: a filter not given matches every row.
            let sql = format!(
                "SELECT {INFO_COLUMNS} FROM jobs
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR account = ?2)
                 ORDER BY id DESC LIMIT ?3"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![state.map(|s| s.as_str()), account, limit],
                info_from_row,
            )?;
            rows.map(|r| r.map(|(i, _)| i)).collect()
        })
        .await
}

/// Jobs that were not final when the broker stopped, oldest first.
async fn open_jobs(store: &Store) -> Result<Vec<(JobInfo, StoredJob, Vec<JobEvent>)>, StoreError> {
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

async fn load_events(store: &Store, id: WorkId) -> Result<Vec<JobEvent>, StoreError> {
    store.read(move |c| events_sync(c, id)).await
}

async fn load_result(store: &Store, id: WorkId) -> Result<Option<JobResult>, StoreError> {
    store
        .read(move |c| {
            c.query_row(
                "SELECT state, exit_code, stdout, stderr, usage, attempts, provider, error, receipt, verification, outputs FROM jobs WHERE id = ?1",
                [id.to_string()],
                |r| {
                    let state: String = r.get(0)?;
                    let usage: Option<String> = r.get(4)?;
                    let error: Option<String> = r.get(7)?;
                    let receipt: Option<String> = r.get(8)?;
                    let verification: Option<String> = r.get(9)?;
                    let outputs: Option<String> = r.get(10)?;
                    Ok((
                        (state, receipt, verification, outputs),
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
            row.and_then(|((state, receipt, verification, outputs), exit_code, stdout, stderr, usage, attempts, provider, error)| {
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
                    outputs: outputs.and_then(|x| serde_json::from_str(&x).ok()).unwrap_or_default(),
                })
            })
        })
}
