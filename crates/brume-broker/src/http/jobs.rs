//! `/v1/jobs`: submit, read, list, follow (SSE), cancel.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use brume_api::rest::{JobConfirmation, JobDispute};
use brume_api::rest::{JobEvent, JobInfo, JobList, JobResult, JobSpec, JobState, Scope};
use brume_api::{ApiError, ErrorCode, Profile, ServiceKind, WorkId};
use bytes::Bytes;
use serde::Deserialize;

use super::admission::{admit, end_user, reserve};
use super::auth::Auth;
use super::services;
use super::{Fail, Res, Sh, body_or_fail};
use crate::Shared;
use crate::jobs::{JobEntry, StoredJob};
use crate::ledger::Billing;
use brume_ledger::penalty::Declared;

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    params(("x-brume-end-user" = Option<String>, Header, pattern = "^[\\t -~]{0,256}$", description = "Your own customer, recorded on the job's ledger row (at most 256 bytes)")),
    request_body = JobSpec,
    responses((status = 202, description = "Accepted: stored and queued", body = JobInfo)),
    security(("api_key" = [])))]
pub(super) async fn submit_job(
    State(shared): Sh,
    auth: Auth,
    req_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<axum::response::Response> {
    auth.require(Scope::Jobs)?;
    let hops = super::federation::incoming_hops(&auth, &req_headers)?;
    let end_user = end_user(&req_headers)?;
    let spec = parse_spec(body)?;
    let c = &shared.config;
    let limits = spec
        .limits
        .resolve(&c.default_limits, &c.max_limits)
        .map_err(Fail)?;
    let Module {
        service,
        digest,
        developer,
        kind,
    } = module(&shared, &spec, &auth.name)?;
    let stdin = stdin_within(&spec, &limits)?;
    let admission = admit(
        &shared,
        &auth.name,
        spec.tier.as_deref(),
        spec.price_cap_micros,
        &digest,
    )?;
    super::admission::check_bid(&shared, &admission, spec.max_fee_per_hour)?;
    super::admission::session(&shared, &auth.name, spec.affinity.as_deref())?;
    let billing = Billing {
        requester: auth.name.clone(),
        anonymous: auth.anonymous,
        admission: Some(admission),
        declared: Declared {
            runtime_ms: spec.expect.runtime_ms,
            memory_bytes: spec.expect.memory_bytes,
        },
        ..Billing::default()
    };
    // The hold covers every run the job's policy (or its account's
    // default) may make.
    let policy = spec
        .verify
        .clone()
        .or_else(|| shared.config.trust.default_verify(&auth.name));
    let units = crate::verify::max_units(policy.as_ref());
    let gpus = spec.gpus.unwrap_or(0);
    let hold = reserve(&shared, &billing, &limits, gpus, units).await?;
    let cap = shared
        .ledger
        .max_cost(&admission, &limits, &billing.declared, gpus)
        .map_or(0, |c| c.saturating_mul(units));
    let offer = super::federation::JobOffer {
        spec: &spec,
        service: service.as_deref(),
        requester: &auth.name,
        hold: hold.clone(),
        cap,
    };
    if let Some(resp) = super::federation::offer_job(&shared, hops, offer).await {
        return Ok(resp);
    }
    let resolved = Resolved {
        kind,
        developer,
        service,
        digest,
        limits,
        stdin,
        requester: auth.name,
        end_user,
        admission,
    };
    let stored = stored_job(&shared, &spec, resolved);
    accept(&shared, stored, spec.labels, hold).await
}

/// The job's stdin, if it fits its input limit.
fn stdin_within(spec: &JobSpec, limits: &brume_api::Limits) -> Res<brume_api::rest::Output> {
    let stdin = spec.stdin.clone().unwrap_or_default();
    if stdin.0.len() as u64 > limits.max_input_bytes {
        return Err(Fail::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "stdin: {} bytes is over the {} byte input limit",
                stdin.0.len(),
                limits.max_input_bytes
            ),
        ));
    }
    Ok(stdin)
}

/// Stores the job (durable before the 202) and queues it.
async fn accept(
    shared: &Arc<Shared>,
    stored: StoredJob,
    labels: std::collections::BTreeMap<String, String>,
    hold: Option<Arc<crate::escrow::Hold>>,
) -> Res<axum::response::Response> {
    if stored.confirm
        && !matches!(
            stored.verify,
            None | Some(brume_api::rest::VerifyPolicy::None)
        )
    {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            "confirm: this account's work is verified by default, and a job paid on confirmation can't be verified yet",
        ));
    }
    let entry = crate::jobs::submit(shared, stored, labels, hold).await?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", entry.id)) {
        headers.insert(axum::http::header::LOCATION, v);
    }
    Ok(axum::response::IntoResponse::into_response((
        StatusCode::ACCEPTED,
        headers,
        axum::Json(entry.info()),
    )))
}

/// What the broker decided about a job spec before storing it.
struct Resolved {
    kind: ServiceKind,
    service: Option<String>,
    digest: String,
    developer: String,
    limits: brume_api::Limits,
    stdin: brume_api::rest::Output,
    requester: String,
    end_user: String,
    admission: brume_ledger::deal::Admission,
}

/// The job as stored: the spec with the broker's defaults and decisions.
fn stored_job(shared: &Shared, spec: &JobSpec, r: Resolved) -> StoredJob {
    let c = &shared.config;
    // The job's own policy, else its account's default.
    let verify = spec
        .verify
        .clone()
        .or_else(|| c.trust.default_verify(&r.requester));
    // argv[0] is the service as the spec wrote it.
    let mut argv = vec![spec.service.clone().unwrap_or_else(|| "main.wasm".into())];
    argv.extend(spec.args.iter().cloned());
    StoredJob {
        affinity: spec
            .affinity
            .as_deref()
            .map(|key| c.affinity.session(&r.requester, key)),
        service: r.service,
        digest: r.digest,
        kind: r.kind,
        argv,
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        stdin: r.stdin,
        limits: r.limits,
        // Verified work runs deterministically (replicas must agree), and
        // so does work paid on confirmation (a dispute re-executes it).
        profile: match verify {
            _ if spec.confirm => Profile::Deterministic,
            Some(
                brume_api::rest::VerifyPolicy::Replicate { .. }
                | brume_api::rest::VerifyPolicy::Adaptive
                | brume_api::rest::VerifyPolicy::Verifier { .. },
            ) => Profile::Deterministic,
            _ => spec.profile,
        },
        seed: spec.seed.unwrap_or(0),
        max_attempts: spec.max_attempts.unwrap_or(c.max_attempts),
        queue_timeout_ms: spec
            .queue_timeout_ms
            .unwrap_or(c.job_queue_timeout.as_millis() as u64),
        // The bid caps the price per giga-instruction too.
        max_price: match (spec.max_price, spec.max_fee_per_hour) {
            (p, None) => p,
            (p, Some(bid)) => Some(
                p.unwrap_or(u64::MAX)
                    .min(brume_api::rest::bid_to_price(bid)),
            ),
        },
        labels: spec.labels.clone(),
        developer: r.developer,
        requester: r.requester,
        end_user: r.end_user,
        admission: Some(r.admission),
        declared: Declared {
            runtime_ms: spec.expect.runtime_ms,
            memory_bytes: spec.expect.memory_bytes,
        },
        verify,
        tiers: spec.tiers.clone(),
        columns: spec.columns.clone(),
        confirm: spec.confirm,
        // Checked with the spec (`JobSpec::validate`).
        inputs: brume_api::data::check(&spec.inputs, &spec.outputs).unwrap_or_default(),
        outputs: spec.outputs.clone(),
        gpus: spec.gpus.unwrap_or(0),
        vcpus: spec.vcpus.unwrap_or(0),
        network: spec.network,
        min_mbps: spec.expect.mbps.unwrap_or(0),
        image: spec.image.clone(),
    }
}

/// The job spec in the body, parsed (errors name the field) and validated.
fn parse_spec(body: Result<Bytes, BytesRejection>) -> Res<JobSpec> {
    let body = body_or_fail(body, "job spec")?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let spec: JobSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path == "." || path.is_empty() {
            format!("job spec: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        Fail::new(ErrorCode::InvalidRequest, msg)
    })?;
    spec.validate().map_err(Fail)?;
    Ok(spec)
}

/// What a job runs, resolved from its spec.
struct Module {
    /// The service's `owner~name@N`, if named by service.
    service: Option<String>,
    digest: String,
    /// The royalty payee.
    developer: String,
    /// A WASI command or an OCI image.
    kind: ServiceKind,
}

/// The module a job runs: a service (optionally pinned to a digest: a
/// version with that digest) or a bare uploaded digest, of a command.
fn module(shared: &Shared, spec: &JobSpec, caller: &str) -> Res<Module> {
    let digest_of = |d: &str| {
        brume_api::parse_digest(d)
            .map(hex::encode)
            .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("digest: {e}")))
    };
    if let Some(image) = &spec.image {
        if spec.service.is_some() || spec.digest.is_some() {
            return Err(Fail::new(
                ErrorCode::InvalidRequest,
                "image: give an image, or a service or digest, not both",
            ));
        }
        let r = brume_oci::registry::Reference::parse(image)
            .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("image: {e}")))?;
        oci_rules(shared, spec, caller)?;
        return Ok(Module {
            service: None,
            digest: r.digest,
            developer: String::new(),
            kind: ServiceKind::Oci,
        });
    }
    let (module, kind) = match (&spec.service, &spec.digest) {
        (Some(name), pin) => {
            // A digest given with a service pins the version: a concurrent
            // publish must not swap what runs.
            let pin = pin.as_deref().map(digest_of).transpose()?;
            let reference = match &pin {
                Some(d) if !name.contains(brume_api::names::VERSION_SEP) => format!("{name}@{d}"),
                _ => name.clone(),
            };
            let r = services::resolve(shared, &reference, caller)?;
            if let Some(pin) = pin
                && pin != r.info.digest
            {
                return Err(Fail::new(
                    ErrorCode::Conflict,
                    format!("digest: service {name} is {}, not {pin}", r.info.digest),
                ));
            }
            let kind = r.info.kind;
            let module = Module {
                service: Some(r.reference),
                digest: r.info.digest,
                developer: r.developer,
                kind,
            };
            (module, kind)
        }
        (None, Some(d)) => {
            let digest = digest_of(d)?;
            let kind = shared.registry.kind_of_digest(&digest).ok_or_else(|| {
                Fail::new(
                    ErrorCode::NotFound,
                    format!("digest: no uploaded module has digest {digest}"),
                )
            })?;
            let (developer, _) = shared.registry.by_digest(&digest);
            let module = Module {
                service: None,
                digest,
                developer,
                kind,
            };
            (module, kind)
        }
        (None, None) => return Err(Fail::new(ErrorCode::InvalidRequest, "service: required")),
    };
    if kind == ServiceKind::Http {
        return Err(Fail::new(
            ErrorCode::WrongKind,
            "service: jobs run commands and oci images; http services are called at /fn/{name}/",
        ));
    }
    if kind == ServiceKind::Oci {
        oci_rules(shared, spec, caller)?;
    } else if spec.gpus.is_some() || spec.vcpus.is_some() {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            "gpus, vcpus: only oci jobs ask for GPUs or vCPUs (a wasm job's threads are its tier's)",
        ));
    } else if spec.network {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            "network: only oci jobs may ask for the network (wasm jobs have none)",
        ));
    }
    Ok(module)
}

/// What an OCI job may not ask: containers are not deterministic, so
/// replicas can't be compared nor a dispute re-executed. A verifier
/// service and reputation still apply.
fn oci_rules(shared: &Shared, spec: &JobSpec, caller: &str) -> Res<()> {
    use brume_api::rest::VerifyPolicy;
    let verify = spec
        .verify
        .clone()
        .or_else(|| shared.config.trust.default_verify(caller));
    let refuse = |why: &str| Err(Fail::new(ErrorCode::InvalidRequest, why.to_owned()));
    match verify {
        Some(VerifyPolicy::Replicate { .. } | VerifyPolicy::Adaptive) => refuse(
            "verify: an oci job is not deterministic, so replicas can't be compared; use a verifier service or none",
        ),
        _ if spec.confirm => {
            refuse("confirm: an oci job is not deterministic, so a rejection can't be re-executed")
        }
        _ if spec.profile == Profile::Deterministic => {
            refuse("profile: an oci job can't run in the deterministic profile")
        }
        _ => Ok(()),
    }
}

pub(super) fn job_id(s: &str) -> Res<WorkId> {
    s.parse().map_err(|_| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("job id: {s:?} is not a job id"),
        )
    })
}

pub(super) fn entry(shared: &Shared, id: WorkId) -> Option<Arc<JobEntry>> {
    shared.jobs.entry(id)
}

pub(super) fn no_job(id: WorkId) -> Fail {
    Fail::new(ErrorCode::NotFound, format!("no job {id}"))
}

/// The job `id` if the caller may read it: its own (or any, with
/// `admin`). Another account's job answers 404, so that its existence
/// doesn't leak.
pub(super) async fn readable(shared: &Shared, auth: &Auth, id: WorkId) -> Res<JobInfo> {
    auth.require_any(&[Scope::Jobs, Scope::Read])?;
    match shared.jobs.info(id).await? {
        Some((info, owner)) if auth.sees(&owner) => Ok(info),
        _ => Err(no_job(id)),
    }
}

/// A `confirm: true` job of the caller's (with the `jobs` scope): its info
/// and when it was confirmed or disputed, if it was. 409 for a job that
/// does not wait for a confirmation.
async fn deposit(shared: &Shared, auth: &Auth, id: WorkId) -> Res<(JobInfo, Option<u64>)> {
    let info = readable(shared, auth, id).await?;
    auth.require(Scope::Jobs)?;
    let (wants, decided) = shared.jobs.confirmation(id).await?;
    if !wants {
        return Err(conflict(format!(
            "job {id} was not submitted with confirm: true; its payment does not wait"
        )));
    }
    Ok((info, decided))
}

fn conflict(message: String) -> Fail {
    Fail::new(ErrorCode::Conflict, message)
}

/// `POST /v1/jobs/{id}/confirm`: the requester accepts the result of a
/// `confirm: true` job; its payment may settle. Confirming twice is a
/// no-op.
#[utoipa::path(post, path = "/v1/jobs/{id}/confirm", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job id (a UUIDv7)")),
    responses((status = 200, description = "Confirmed: the payment is released", body = JobConfirmation)),
    security(("api_key" = [])))]
pub(super) async fn confirm_job(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<brume_api::rest::JobConfirmation>> {
    let id = job_id(&id)?;
    let (info, decided) = deposit(&shared, &auth, id).await?;
    let (confirmed_ms, already_released) = match decided {
        Some(at) => (at, false),
        None if !info.state.is_final() => {
            return Err(conflict(format!(
                "job {id} is still {}: confirm its result once it has one",
                info.state.as_str()
            )));
        }
        None => shared.jobs.confirm(id).await?,
    };
    Ok(axum::Json(brume_api::rest::JobConfirmation {
        id,
        confirmed_ms,
        already_released,
    }))
}

/// `POST /v1/jobs/{id}/reject`: the requester disputes the result of a
/// `confirm: true` job; the broker re-executes it and the loser pays (see
/// `dispute.rs`). The response waits for the re-execution.
#[utoipa::path(post, path = "/v1/jobs/{id}/reject", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job id (a UUIDv7)")),
    responses((status = 200, description = "Rejected: the job goes to a dispute", body = JobDispute)),
    security(("api_key" = [])))]
pub(super) async fn reject_job(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<brume_api::rest::JobDispute>> {
    let id = job_id(&id)?;
    let (info, decided) = deposit(&shared, &auth, id).await?;
    if decided.is_some() {
        return Err(conflict(format!(
            "job {id} was already confirmed or disputed"
        )));
    }
    if info.state != JobState::Succeeded {
        return Err(conflict(format!(
            "job {id} is {}: only a result can be disputed",
            info.state.as_str()
        )));
    }
    let requester = shared
        .jobs
        .info(id)
        .await?
        .map(|(_, owner)| owner)
        .unwrap_or_default();
    match crate::dispute::dispute(&shared, id, &requester).await {
        Ok(d) => Ok(axum::Json(d)),
        Err(crate::dispute::Refused::NoReceipt) => Err(conflict(format!(
            "job {id} has no signed result to dispute"
        ))),
        Err(crate::dispute::Refused::Store(e)) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job id (a UUIDv7)")),
    responses((status = 200, description = "The job", body = JobInfo)),
    security(("api_key" = [])))]
pub(super) async fn get_job(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<JobInfo>> {
    let id = job_id(&id)?;
    readable(&shared, &auth, id).await.map(axum::Json)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs in this state.
    state: Option<JobState>,
    /// At most this many (default 100, at most 1000).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "The caller's jobs, newest first", body = JobList)),
    security(("api_key" = [])))]
pub(super) async fn list_jobs(
    State(shared): Sh,
    auth: Auth,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Res<axum::Json<JobList>> {
    auth.require_any(&[Scope::Jobs, Scope::Read])?;
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("query: {}", e.body_text()),
        )
    })?;
    let state = q.state;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    // The caller's own jobs (every account's with `admin`), including
    // every acknowledged change.
    let account = (!auth.scopes.contains(&Scope::Admin)).then(|| auth.name.clone());
    let jobs = shared.jobs.list(state, account, limit).await?;
    Ok(axum::Json(JobList { jobs }))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job id (a UUIDv7)")),
    responses((status = 200, description = "The result of a finished job", body = JobResult)),
    security(("api_key" = [])))]
pub(super) async fn job_result(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<brume_api::rest::JobResult>> {
    let id = job_id(&id)?;
    readable(&shared, &auth, id).await?;
    let not_final = |state: JobState| {
        Fail::new(
            ErrorCode::Conflict,
            format!(
                "job {id} is {}; its result is available once it finishes",
                state.as_str()
            ),
        )
    };
    if let Some(e) = entry(&shared, id) {
        return match e.result() {
            Some(r) => Ok(axum::Json(r)),
            None => Err(not_final(e.info().state)),
        };
    }
    match shared.jobs.stored_result(id).await? {
        Some(r) if r.state.is_final() => Ok(axum::Json(r)),
        Some(r) => Err(not_final(r.state)),
        None => Err(no_job(id)),
    }
}

#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, format = Uuid, description = "The job id (a UUIDv7)")),
    responses((status = 200, description = "Cancelled (or already final: the job as it ended)", body = JobInfo)),
    security(("api_key" = [])))]
pub(super) async fn cancel_job(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<JobInfo>> {
    let id = job_id(&id)?;
    let info = readable(&shared, &auth, id).await?;
    auth.require(Scope::Jobs)?;
    let Some(e) = entry(&shared, id) else {
        return Err(Fail::new(
            ErrorCode::Conflict,
            format!("job {id} is already {}", info.state.as_str()),
        ));
    };
    if crate::verify::cancel(&shared, id).await {
        return Ok(axum::Json(e.info()));
    }
    // Running: it pays what it used so far (see lifecycle.rs).
    let error = ApiError::new(ErrorCode::Cancelled, "cancelled by the requester");
    let cancelled = shared.lifecycle.cancel(id, error).await;
    if !cancelled {
        return Err(Fail::new(
            ErrorCode::Conflict,
            format!("job {id} is already {}", e.info().state.as_str()),
        ));
    }
    Ok(axum::Json(e.info()))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "The job id (a UUIDv7)"), ("last-event-id" = Option<String>, Header, description = "Resume after this event's `seq`")),
    responses((status = 200, description = "Server-sent events, one `JobEvent` (JSON) each, ending with the final one", body = JobEvent, content_type = "text/event-stream")),
    security(("api_key" = [])))]
pub(super) async fn job_events(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Res<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    let id = job_id(&id)?;
    readable(&shared, &auth, id).await?;
    let (history, live, job) = match entry(&shared, id) {
        Some(e) => {
            let (h, rx) = e.follow();
            (h, Some(rx), Some(e))
        }
        None => {
            let h = shared.jobs.stored_events(id).await?;
            if h.is_empty() && shared.jobs.info(id).await?.is_none() {
                return Err(no_job(id));
            }
            (h, None, None)
        }
    };
    struct St {
        pending: std::collections::VecDeque<brume_api::rest::JobEvent>,
        live: Option<tokio::sync::broadcast::Receiver<brume_api::rest::JobEvent>>,
        job: Option<Arc<JobEntry>>,
        next: u64,
        done: bool,
    }
    // A client resuming a broken stream sends the last id it saw.
    let next = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |last| last + 1);
    let st = St {
        pending: history.into(),
        live,
        job,
        next,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(ev) = st.pending.pop_front() {
                if ev.seq < st.next {
                    continue;
                }
                st.next = ev.seq + 1;
                st.done = ev.kind.is_final();
                let event = Event::default()
                    .event(ev.kind.as_str())
                    .id(ev.seq.to_string())
                    .data(serde_json::to_string(&ev).unwrap_or_default());
                return Some((Ok(event), st));
            }
            let rx = st.live.as_mut()?;
            match rx.recv().await {
                Ok(ev) => st.pending.push_back(ev),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind: re-read what we missed from the job.
                    if let Some(job) = &st.job {
                        let (all, _) = job.follow();
                        st.pending
                            .extend(all.into_iter().filter(|e| e.seq >= st.next));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
