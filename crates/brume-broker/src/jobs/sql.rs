//! [`JobStore`] on the broker's [`Store`]: tables `jobs`, `job_events` and
//! `job_confirmations`, in the dialect SQLite and PostgreSQL share.

use brume_api::WorkId;
use brume_api::rest::{JobEvent, JobInfo, JobResult, JobState, Output};
use brume_sql::{Dialect, Row, Sql, V};

use super::{JobRecord, JobStore, StoredJob};
use crate::StoreFuture;
use crate::store::{self, Store, StoreError, decode};

impl JobStore for Store {
    fn insert(&self, info: JobInfo, stored: StoredJob) -> StoreFuture<'_, ()> {
        Box::pin(insert(self, info, stored))
    }

    fn record(&self, record: JobRecord) {
        self.write_later(move |c| write_record(c, record));
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(Store::flush(self))
    }

    fn info(&self, id: WorkId) -> StoreFuture<'_, Option<(JobInfo, String)>> {
        store::reading(self, move |c| {
            Ok(load_stored(c, id)?.map(|(i, stored)| (i, stored.requester)))
        })
    }

    fn list(
        &self,
        state: Option<JobState>,
        account: Option<String>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<JobInfo>> {
        store::reading(self, move |c| {
            // `?1 IS NULL OR …`: a filter not given matches every row.
            let rows = c.query(
                &format!(
                    "SELECT {INFO_COLUMNS} FROM jobs
                     WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1)
                     AND (CAST(?2 AS TEXT) IS NULL OR account = ?2)
                     ORDER BY id DESC LIMIT ?3"
                ),
                &[
                    state.map(|s| s.as_str()).into(),
                    account.as_ref().into(),
                    V::I(limit.into()),
                ],
            )?;
            rows.iter().map(|r| Ok(info_from_row(r)?.0)).collect()
        })
    }

    fn open_jobs(&self) -> StoreFuture<'_, Vec<(JobInfo, StoredJob, Vec<JobEvent>)>> {
        store::reading(self, |c| {
            let rows = c.query(
                &format!(
                    "SELECT {INFO_COLUMNS} FROM jobs
                     WHERE state IN ('queued','assigned','running') ORDER BY id"
                ),
                &[],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let (info, stored) = info_from_row(r)?;
                let events = events(c, info.id)?;
                out.push((info, stored, events));
            }
            Ok(out)
        })
    }

    fn events(&self, id: WorkId) -> StoreFuture<'_, Vec<JobEvent>> {
        store::reading(self, move |c| events(c, id))
    }

    fn result(&self, id: WorkId) -> StoreFuture<'_, Option<JobResult>> {
        store::reading(self, move |c| load_result(c, id))
    }

    fn confirm(&self, id: WorkId, at_ms: u64) -> StoreFuture<'_, ()> {
        store::writing(self, move |c| {
            c.exec(
                "INSERT INTO job_confirmations (job_id, confirmed_ms) VALUES (?1, ?2)
                 ON CONFLICT (job_id) DO NOTHING",
                &[V::T(&id.to_string()), V::I(at_ms as i64)],
            )?;
            Ok(())
        })
    }

    fn confirmation(&self, id: WorkId) -> StoreFuture<'_, (bool, Option<u64>)> {
        store::reading(self, move |c| {
            let wants = load_stored(c, id)?.is_some_and(|(_, s)| s.confirm);
            let at = c.one(
                "SELECT confirmed_ms FROM job_confirmations WHERE job_id = ?1",
                &[V::T(&id.to_string())],
            )?;
            Ok((wants, at.map(|r| r.i(0)).transpose()?.map(|t| t as u64)))
        })
    }

    fn stored(&self, id: WorkId) -> StoreFuture<'_, Option<StoredJob>> {
        store::reading(self, move |c| Ok(load_stored(c, id)?.map(|(_, s)| s)))
    }

    fn awaiting_confirmation(&self) -> StoreFuture<'_, Vec<(WorkId, Option<u64>)>> {
        store::reading(self, |c| {
            let wants_confirm = match c.dialect() {
                Dialect::Sqlite => "json_extract(spec, '$.confirm') = 1",
                Dialect::Postgres => "(spec::jsonb ->> 'confirm') = 'true'",
            };
            let rows = c.query(
                &format!(
                    "SELECT id, state, updated_at_ms FROM jobs WHERE {wants_confirm}
                     AND NOT EXISTS (SELECT 1 FROM job_confirmations k WHERE k.job_id = jobs.id)"
                ),
                &[],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                let (Ok(id), Ok(state)) = (r.t(0)?.parse::<WorkId>(), r.t(1)?.parse::<JobState>())
                else {
                    continue;
                };
                out.push((id, state.is_final().then_some(r.i(2)? as u64)));
            }
            Ok(out)
        })
    }
}

/// JSON of a value that always serializes.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// One event; with it the job's state (if any) and its result (if any), in
/// one write, hence one commit.
fn write_record(c: &mut dyn Sql, record: JobRecord) -> Result<(), StoreError> {
    let JobRecord {
        id,
        event,
        info,
        result,
    } = record;
    let id = id.to_string();
    if let Some(r) = result {
        let receipt = r.receipt.as_ref().map(json);
        let verification = r.verification.as_ref().map(json);
        let outputs = (!r.outputs.is_empty()).then(|| json(&r.outputs));
        c.exec(
            "UPDATE jobs SET exit_code = ?2, stdout = ?3, stderr = ?4, usage = ?5, receipt = ?6,
             verification = ?7, outputs = ?8 WHERE id = ?1",
            &[
                V::T(&id),
                r.exit_code.map(i64::from).into(),
                V::B(&r.stdout.0),
                V::B(&r.stderr.0),
                V::T(&json(&r.usage)),
                receipt.as_ref().into(),
                verification.as_ref().into(),
                outputs.as_ref().into(),
            ],
        )?;
    }
    c.exec(
        "INSERT INTO job_events (job_id, seq, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (job_id, seq) DO UPDATE SET body = excluded.body",
        &[V::T(&id), V::I(event.seq as i64), V::T(&json(&event))],
    )?;
    if let Some(info) = info {
        let error = info.error.as_ref().map(json);
        c.exec(
            "UPDATE jobs SET state = ?2, attempts = ?3, provider = ?4, error = ?5,
             updated_at_ms = ?6 WHERE id = ?1",
            &[
                V::T(&info.id.to_string()),
                V::T(info.state.as_str()),
                V::I(info.attempts.into()),
                info.provider.as_ref().into(),
                error.as_ref().into(),
                V::I(info.updated_at_ms as i64),
            ],
        )?;
    }
    Ok(())
}

/// Commits a new job (row and first event) and waits until it is durable.
async fn insert(store: &Store, info: JobInfo, stored: StoredJob) -> Result<(), StoreError> {
    let id = info.id.to_string();
    let spec = json(&stored);
    let state = info.state.as_str();
    let created = info.created_at_ms as i64;
    let account = stored.requester;
    store
        .write(move |c| {
            c.exec(
                "INSERT INTO jobs (id, spec, state, attempts, created_at_ms, updated_at_ms, account)
                 VALUES (?1, ?2, ?3, 0, ?4, ?4, ?5)",
                &[
                    V::T(&id),
                    V::T(&spec),
                    V::T(state),
                    V::I(created),
                    V::T(&account),
                ],
            )?;
            Ok(())
        })
        .await
}

const INFO_COLUMNS: &str =
    "id, spec, state, attempts, provider, error, created_at_ms, updated_at_ms";

fn info_from_row(r: &Row) -> Result<(JobInfo, StoredJob), StoreError> {
    let id = r.t(0)?;
    let stored: StoredJob = decode(&format!("job {id}"), &r.t(1)?)?;
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("job {id}: {e}"));
    let info = JobInfo {
        id: id.parse().map_err(|e| corrupt(&e))?,
        state: r.t(2)?.parse().map_err(|e| corrupt(&e))?,
        service: stored.service.clone(),
        digest: stored.digest.clone(),
        attempts: r.i(3)?.try_into().map_err(|e| corrupt(&e))?,
        max_attempts: stored.max_attempts,
        provider: r.ot(4)?,
        created_at_ms: r.i(6)? as u64,
        updated_at_ms: r.i(7)? as u64,
        error: r.ot(5)?.and_then(|e| serde_json::from_str(&e).ok()),
        labels: stored.labels.clone(),
    };
    Ok((info, stored))
}

fn load_stored(c: &mut dyn Sql, id: WorkId) -> Result<Option<(JobInfo, StoredJob)>, StoreError> {
    let row = c.one(
        &format!("SELECT {INFO_COLUMNS} FROM jobs WHERE id = ?1"),
        &[V::T(&id.to_string())],
    )?;
    row.as_ref().map(info_from_row).transpose()
}

fn events(c: &mut dyn Sql, id: WorkId) -> Result<Vec<JobEvent>, StoreError> {
    let rows = c.query(
        "SELECT body FROM job_events WHERE job_id = ?1 ORDER BY seq",
        &[V::T(&id.to_string())],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Ok(ev) = serde_json::from_str(&r.t(0)?) {
            out.push(ev);
        }
    }
    Ok(out)
}

fn load_result(c: &mut dyn Sql, id: WorkId) -> Result<Option<JobResult>, StoreError> {
    let Some(r) = c.one(
        "SELECT state, exit_code, stdout, stderr, usage, attempts, provider, error, receipt,
         verification, outputs FROM jobs WHERE id = ?1",
        &[V::T(&id.to_string())],
    )?
    else {
        return Ok(None);
    };
    let Ok(state) = r.t(0)?.parse::<JobState>() else {
        return Ok(None);
    };
    let parse = |i: usize| -> Result<Option<String>, StoreError> { Ok(r.ot(i)?) };
    Ok(Some(JobResult {
        id,
        state,
        exit_code: r.oi(1)?.and_then(|c| i32::try_from(c).ok()),
        stdout: Output(r.ob(2)?.unwrap_or_default().into()),
        stderr: Output(r.ob(3)?.unwrap_or_default().into()),
        usage: parse(4)?
            .and_then(|u| serde_json::from_str(&u).ok())
            .unwrap_or_default(),
        attempts: r.i(5)?.try_into().unwrap_or(u32::MAX),
        provider: r.ot(6)?,
        error: parse(7)?.and_then(|e| serde_json::from_str(&e).ok()),
        receipt: parse(8)?.and_then(|x| serde_json::from_str(&x).ok()),
        verification: parse(9)?.and_then(|x| serde_json::from_str(&x).ok()),
        outputs: parse(10)?
            .and_then(|x| serde_json::from_str(&x).ok())
            .unwrap_or_default(),
    }))
}
