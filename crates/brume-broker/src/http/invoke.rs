//! Sync calls: `POST /v1/functions/{name}/invoke` (commands) and `/fn/{name}/…`
//! (`wasi:http` components), answered when the unit completes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use brume_api::wire::{self, Outcome};
use brume_api::{ApiError, ErrorCode, Profile, ServiceKind, WorkId, headers as xh};
use bytes::Bytes;

use super::admission::{SyncVerify, admit, end_user, reserve};
use super::auth::Auth;
use super::federation;
use super::services;
use super::{Fail, Res, Sh, TIERS_HEADER, body_or_fail, header_str, parse_tiers};
use crate::Shared;
use crate::ledger::{self, Billing};
use crate::lifecycle::{Bill, Finished, Oneshot, Waiter};
use crate::work::{Class, Completion, Work, WorkSpec};

/// Cancels the work if the HTTP request goes away before it finishes.
struct CancelOnDrop {
    shared: Arc<Shared>,
    work: Option<Arc<Work>>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(work) = self.work.take()
            && !work.is_finished()
        {
            let error = ApiError::new(ErrorCode::Cancelled, "the caller went away");
            self.shared.lifecycle.cancel_later(work.id, error);
        }
    }
}

/// Refuses a new call (503 `overloaded`, with a `Retry-After`) when too
/// many calls wait or the oldest has waited too long. Only functions count:
/// queued batch work does not make the broker refuse calls. A call no
/// connected provider could take (none in its trust tiers, or fewer than
/// its replicas) is refused at once (503 `provider_unavailable`), not
/// queued until its queue timeout.
pub(super) fn check_overload(shared: &Shared, spec: &WorkSpec, verify: SyncVerify) -> Res<()> {
    let (depth, age, rate, providers, eligible) = shared.lifecycle.read(|s| {
        (
            s.queued(Class::Sync),
            s.oldest_wait(Class::Sync),
            s.sync_rate(),
            s.providers.len(),
            s.providers
                .values()
                .filter(|p| (spec.tiers >> p.tier) & 1 == 1)
                .count(),
        )
    });
    if providers == 0 {
        return Err(Fail::new(
            ErrorCode::ProviderUnavailable,
            "no provider is connected to this broker",
        ));
    }
    let needed = match verify {
        SyncVerify::Replicate(n) => n as usize,
        _ => 1,
    };
    if eligible < needed {
        return Err(Fail::new(
            ErrorCode::ProviderUnavailable,
            format!(
                "{eligible} connected provider(s) in the trust tiers this call allows; it needs {needed}"
            ),
        ));
    }
    if depth >= shared.config.overload_queue_depth || age >= shared.config.overload_queue_age {
        let retry_after = retry_after_s(depth, rate);
        return Err(Fail(
            ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "{depth} calls are waiting (oldest {} ms); retry in {retry_after} s",
                    age.as_millis()
                ),
            )
            .retry_after(retry_after),
        ));
    }
    Ok(())
}

/// How long the calls queued now take to drain at the observed rate of
/// calls dispatched per second, in whole seconds (1 to 60).
fn retry_after_s(depth: usize, per_s: f64) -> u64 {
    let secs = depth as f64 / per_s.max(1.0);
    (secs.ceil() as u64).clamp(1, 60)
}

/// Where a call stood in the scheduler's orders (see `brume_api::headers`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Order {
    pub arrival: u64,
    pub dispatch: u64,
}

/// A sync call's answer.
pub(super) struct Answer {
    id: WorkId,
    completion: Completion,
    order: Order,
    /// A replicated call's agreeing replicas, of those that ran.
    verified: Option<(usize, usize)>,
    /// Its affinity session moved to a new provider.
    moved: bool,
}

impl Answer {
    /// The call's work id and how it ended.
    pub fn into_completion(self) -> (WorkId, Completion) {
        (self.id, self.completion)
    }

    pub fn response(self) -> Response {
        let mut resp = completion_response(self.id, self.completion);
        order_headers(resp.headers_mut(), self.order);
        if let Some((agreed, of)) = self.verified
            && let Ok(v) = HeaderValue::from_str(&format!("{agreed}/{of}"))
        {
            resp.headers_mut()
                .insert(HeaderName::from_static(xh::VERIFIED), v);
        }
        if self.moved {
            resp.headers_mut().insert(
                HeaderName::from_static(xh::AFFINITY_STATE),
                HeaderValue::from_static("moved"),
            );
        }
        resp
    }
}

/// How long a sync call may take, queue and retries included.
fn sync_deadline(shared: &Shared, spec: &WorkSpec) -> Duration {
    shared.config.invoke_queue_timeout
        + Duration::from_millis(spec.limits.timeout_ms) * spec.max_attempts
        + Duration::from_secs(5)
}

pub(super) async fn run_sync(
    shared: &Arc<Shared>,
    spec: WorkSpec,
    billing: Billing,
    verify: SyncVerify,
) -> Answer {
    if let SyncVerify::Replicate(n) = verify {
        return run_replicated(shared, spec, billing, n).await;
    }
    let id = WorkId::new();
    let deadline = sync_deadline(shared, &spec);
    let (waiter, rx) = Oneshot::new();
    let work = Work::new(id, spec, shared.config.invoke_queue_timeout, 0);
    let mut guard = CancelOnDrop {
        shared: shared.clone(),
        work: Some(work.clone()),
    };
    shared
        .lifecycle
        .submit(work.clone(), Bill::Queued(billing), waiter);
    let completion = match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => Completion::Failed {
            error: ApiError::new(ErrorCode::Internal, "the work was dropped"),
            attempts: work.attempts(),
        },
        Err(_) => {
            // Let the guard cancel it; report a timeout.
            return Answer {
                id,
                completion: timed_out(deadline, work.attempts()),
                order: Order::default(),
                verified: None,
                moved: false,
            };
        }
    };
    guard.work = None;
    crate::audit::after(shared, &work, &completion);
    let moved = work.moved_session();
    let order = Order {
        arrival: work.arrival(),
        dispatch: work.dispatch(),
    };
    Answer {
        id,
        completion,
        order,
        verified: None,
        moved,
    }
}

fn timed_out(deadline: Duration, attempts: u32) -> Completion {
    Completion::Failed {
        error: ApiError::new(ErrorCode::Timeout, format!("no result within {deadline:?}")),
        attempts,
    }
}

/// Hears a replica group's decision.
struct Decided(parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<Finished>>>);

impl std::fmt::Debug for Decided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decided")
    }
}

impl Waiter for Decided {
    fn complete(&self, finished: Finished) {
        if let Some(tx) = self.0.lock().take() {
            let _ = tx.send(finished);
        }
    }
}

/// Cancels a replicated call's replicas if its caller goes away first.
struct CancelGroupOnDrop(Option<(Arc<Shared>, WorkId)>);

impl Drop for CancelGroupOnDrop {
    fn drop(&mut self) {
        if let Some((shared, id)) = self.0.take() {
            let s = shared.clone();
            shared.tasks.spawn(async move {
                crate::verify::cancel(&s, id).await;
            });
        }
    }
}

/// A `replicate=N` call: `n` replicas on distinct providers, run
/// deterministically with one seed; the result a majority agrees on is the
/// answer (a disagreement is settled by the broker's re-execution, as for
/// jobs: `verify.rs`). Each agreeing replica is billed.
async fn run_replicated(
    shared: &Arc<Shared>,
    spec: WorkSpec,
    mut billing: Billing,
    n: u32,
) -> Answer {
    let id = WorkId::new();
    // A disagreement's re-execution may take one more run's time.
    let deadline = sync_deadline(shared, &spec) + Duration::from_millis(spec.limits.timeout_ms);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = Arc::new(Decided(parking_lot::Mutex::new(Some(tx))));
    let hold = billing.hold.take();
    let policy = brume_api::rest::VerifyPolicy::Replicate {
        n,
        quorum: n / 2 + 1,
    };
    crate::verify::start(
        shared,
        (id, waiter),
        policy,
        Box::new(move || spec.clone()),
        billing,
        shared.config.invoke_queue_timeout,
        hold,
    );
    let mut guard = CancelGroupOnDrop(Some((shared.clone(), id)));
    let finished = tokio::time::timeout(deadline, rx).await;
    let (completion, verified) = match finished {
        Ok(Ok(f)) => {
            guard.0 = None;
            let verified = f.verification.as_ref().map(|v| {
                let agreed = v.replicas.iter().filter(|r| r.agreed).count();
                (agreed, v.replicas.len())
            });
            (f.completion, verified)
        }
        Ok(Err(_)) => (
            Completion::Failed {
                error: ApiError::new(ErrorCode::Internal, "the replicas were dropped"),
                attempts: 0,
            },
            None,
        ),
        Err(_) => (timed_out(deadline, 0), None),
    };
    Answer {
        id,
        completion,
        order: Order::default(),
        verified,
        moved: false,
    }
}

pub(super) fn xb_headers(
    h: &mut HeaderMap,
    id: WorkId,
    provider: &str,
    fuel: Option<u64>,
    attempts: u32,
) {
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put(xh::WORK_ID, id.to_string());
    if !provider.is_empty() {
        put(xh::PROVIDER, provider.to_string());
    }
    if let Some(f) = fuel {
        put(xh::FUEL, f.to_string());
    }
    put(xh::ATTEMPTS, attempts.to_string());
}

/// The call's arrival and dispatch numbers, once it was dispatched.
fn order_headers(h: &mut HeaderMap, order: Order) {
    if order.dispatch == 0 {
        return;
    }
    h.insert(HeaderName::from_static(xh::ARRIVAL), order.arrival.into());
    h.insert(HeaderName::from_static(xh::DISPATCH), order.dispatch.into());
}

pub(super) fn completion_response(id: WorkId, c: Completion) -> Response {
    match c {
        Completion::Done {
            outcome,
            provider,
            attempts,
            cost,
            ..
        } => {
            let fuel = outcome.usage().fuel;
            let mut resp = match *outcome {
                Outcome::Exited {
                    exit_code, stdout, ..
                } => {
                    let mut r = Response::new(Body::from(stdout));
                    r.headers_mut().insert(
                        axum::http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    if let Ok(v) = HeaderValue::from_str(&exit_code.to_string()) {
                        r.headers_mut()
                            .insert(HeaderName::from_static(xh::EXIT_CODE), v);
                    }
                    r
                }
                Outcome::Responded { response, .. } => {
                    let mut r = Response::new(Body::from(response.body));
                    *r.status_mut() =
                        StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
                    for (name, value) in response.headers {
                        let skip = matches!(
                            name.to_ascii_lowercase().as_str(),
                            "content-length"
                                | "transfer-encoding"
                                | "connection"
                                | "keep-alive"
                                | "upgrade"
                        );
                        if skip {
                            continue;
                        }
                        if let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(name.as_bytes()),
                            HeaderValue::from_bytes(&value),
                        ) {
                            r.headers_mut().append(n, v);
                        }
                    }
                    r
                }
                Outcome::Failed { code, message, .. } => {
                    let code = ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal);
                    Fail::new(code, message).into_response()
                }
            };
            xb_headers(resp.headers_mut(), id, &provider, Some(fuel), attempts);
            if let Some(cost) = cost {
                if let Ok(v) = HeaderValue::from_str(&cost.token_amount.to_string()) {
                    resp.headers_mut()
                        .insert(HeaderName::from_static(ledger::COST_HEADER), v);
                }
                if let Ok(v) = HeaderValue::from_str(&cost.tier) {
                    resp.headers_mut()
                        .insert(HeaderName::from_static(ledger::TIER_HEADER), v);
                }
            }
            resp
        }
        Completion::Failed { error, attempts } => {
            let mut resp = Fail(error).into_response();
            xb_headers(resp.headers_mut(), id, "", None, attempts);
            resp
        }
    }
}

pub(super) fn query_args(query: Option<&str>) -> Vec<String> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "arg")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn bad(message: String) -> Fail {
    Fail::new(ErrorCode::InvalidRequest, message)
}

/// The call's price cap (`x-brume-price-cap`, fiat micro-units), if any.
fn price_cap(headers: &HeaderMap) -> Res<Option<u64>> {
    let name = ledger::PRICE_CAP_HEADER;
    header_str(headers, name)?
        .map(|v| {
            Some(v)
                .filter(|v| (1..=15).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "{name}: {v:?} is not a whole number of fiat micro-units (at most 15 digits)"
                    ))
                })
        })
        .transpose()
}

/// The call's fee bid per compute hour (`x-brume-max-fee-per-hour`,
/// micro-tokens), if any.
fn fee_bid(headers: &HeaderMap) -> Res<Option<u64>> {
    let name = brume_api::rest::MAX_FEE_PER_HOUR_HEADER;
    header_str(headers, name)?
        .map(|v| {
            Some(v)
                .filter(|v| (1..=19).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "{name}: {v:?} is not a positive whole number of micro-tokens"
                    ))
                })
        })
        .transpose()
}

/// The provider a call asks to run on (`x-brume-provider`, to probe it):
/// 400 if it is not an address, 503 `provider_unavailable` if it is not
/// connected here.
fn pinned(shared: &Shared, headers: &HeaderMap) -> Res<Option<String>> {
    let Some(address) = header_str(headers, xh::PROVIDER)? else {
        return Ok(None);
    };
    let valid = address.len() == 42
        && address.starts_with("0x")
        && address[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(bad(format!(
            "{}: {address:?} is not a provider address (0x and 40 hex digits)",
            xh::PROVIDER
        )));
    }
    let here = shared.lifecycle.read(|s| {
        s.providers
            .values()
            .any(|p| p.address.eq_ignore_ascii_case(address))
    });
    if !here {
        return Err(Fail::new(
            ErrorCode::ProviderUnavailable,
            format!("provider {address} is not connected to this broker"),
        ));
    }
    Ok(Some(address.to_ascii_lowercase()))
}

/// What the two sync paths share: the service must exist and be `kind`,
/// and the body fit the input limit. (Whether the broker has room is
/// `check_overload`'s question.)
/// Where a service of `kind` is called, for a call at the wrong place.
fn wrong_kind(name: &str, kind: ServiceKind) -> String {
    match kind {
        ServiceKind::Http => format!("{name} is an http service: call it at /fn/{name}/"),
        ServiceKind::Command => {
            format!("{name} is a command service: call it at /v1/functions/{name}/invoke")
        }
        ServiceKind::Oci => {
            format!("{name} is an oci container image: it runs as a job (POST /v1/jobs)")
        }
    }
}

pub(super) fn sync_work(
    shared: &Shared,
    auth: Auth,
    headers: &HeaderMap,
    name: &str,
    kind: ServiceKind,
    body: Result<Bytes, BytesRejection>,
) -> Res<(WorkSpec, Billing, Bytes, SyncVerify)> {
    auth.require(brume_api::rest::Scope::Invoke)?;
    let resolved = services::resolve(shared, name, &auth.name)?;
    let svc = &resolved.info;
    let tier = header_str(headers, ledger::TIER_HEADER)?;
    let cap = price_cap(headers)?;
    let admission = admit(shared, &auth.name, tier, cap, &svc.digest)?;
    let bid = fee_bid(headers)?;
    super::admission::check_bid(shared, &admission, bid)?;
    let affinity =
        super::admission::session(shared, &auth.name, header_str(headers, xh::AFFINITY)?)?;
    let billing = Billing {
        requester: auth.name,
        end_user: end_user(headers)?,
        developer: resolved.developer.clone(),
        request_line: String::new(),
        request_headers: Vec::new(),
        admission: Some(admission),
        declared: Default::default(),
        columns: super::admission::columns(headers)?,
        hold: None,
        anonymous: auth.anonymous,
    };
    if svc.kind != kind {
        return Err(Fail::new(ErrorCode::WrongKind, wrong_kind(name, svc.kind)));
    }
    let body = body_or_fail(body, "body")?;
    let limits = shared.config.default_limits;
    if body.len() as u64 > limits.max_input_bytes {
        return Err(Fail::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "body: {} bytes is over the {} byte input limit",
                body.len(),
                limits.max_input_bytes
            ),
        ));
    }
    let module_signature = resolved.module_signature.clone();
    let tiers = match header_str(headers, TIERS_HEADER)? {
        None => shared.config.trust.default_tiers(&billing.requester),
        Some(v) => parse_tiers(v).map_err(|m| bad(format!("{TIERS_HEADER}: {m}")))?,
    };
    let org = shared.config.trust.org_of_account(&billing.requester);
    let verify = super::admission::sync_verify(headers, &shared.config.trust, &billing.requester)?;
    // Audited and replicated calls run deterministically, and their
    // receipts are checked one by one.
    let checked = verify != SyncVerify::None;
    let spec = WorkSpec {
        service: Some(resolved.reference),
        digest: resolved.info.digest.clone(),
        kind,
        profile: if checked {
            Profile::Deterministic
        } else {
            Profile::Standard
        },
        limits,
        args: Vec::new(),
        env: Vec::new(),
        stdin: Bytes::new(),
        http: None,
        max_price: bid.map(brume_api::rest::bid_to_price),
        max_attempts: shared.config.max_attempts,
        progress_ms: None,
        seed: if checked { rand::random() } else { 0 },
        clock_start_ms: if checked { crate::now_ms() } else { 0 },
        needs: shared.ledger.needs(Some(&admission)),
        module_signature,
        distinct: None,
        avoid: None,
        only: pinned(shared, headers)?,
        tiers,
        org,
        wants_receipt: checked,
        class: Class::Sync,
        account: billing.requester.as_str().into(),
        oci: Default::default(),
        affinity,
        lease: false,
    };
    Ok((spec, billing, body, verify))
}

/// The most this call may cost here (what its hold is, for an account
/// with escrow).
fn max_cost(shared: &Shared, billing: &Billing, spec: &WorkSpec, verify: SyncVerify) -> u128 {
    billing
        .admission
        .as_ref()
        .and_then(|a| {
            shared
                .ledger
                .max_cost(a, &spec.limits, &billing.declared, 0)
                .ok()
        })
        .map_or(0, |c| c.saturating_mul(verify.units().into()))
}

/// The service's `owner~name` (without the version: a version number is
/// this broker's own).
fn unversioned(spec: &WorkSpec) -> String {
    let reference = spec.service.as_deref().unwrap_or_default();
    reference
        .split_once(brume_api::names::VERSION_SEP)
        .map_or(reference, |(name, _)| name)
        .to_string()
}

#[utoipa::path(post, path = "/v1/functions/{service}/invoke", tag = "invoke",
    params(super::params::ServicePath, super::params::CallHeaders),
    request_body(content = brume_api::rest::Binary, content_type = "application/octet-stream", description = "The function's stdin; the query string's `key=value` pairs become its arguments"),
    responses((status = 200, description = "The function's stdout; `x-brume-work-id`, `x-brume-fuel`, `x-brume-cost` and the other `x-brume-*` headers describe the run", body = brume_api::rest::Binary, content_type = "application/octet-stream")),
    security(("api_key" = [])))]
pub(super) async fn invoke(
    State(shared): Sh,
    auth: Auth,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    let hops = federation::incoming_hops(&auth, &headers)?;
    let (mut spec, mut billing, body, verify) =
        sync_work(&shared, auth, &headers, &name, ServiceKind::Command, body)?;
    if let Err(busy) = check_overload(&shared, &spec, verify) {
        let call = federation::Call {
            service: unversioned(&spec),
            kind: ServiceKind::Command,
            method: Method::POST,
            rest: query.map(|q| format!("?{q}")).unwrap_or_default(),
            headers,
            body,
        };
        billing.hold = reserve(&shared, &billing, &spec.limits, 0, verify.units().into()).await?;
        let cap = max_cost(&shared, &billing, &spec, verify);
        return federation::forward(&shared, hops, call, busy, billing, cap).await;
    }
    billing.hold = reserve(&shared, &billing, &spec.limits, 0, verify.units().into()).await?;
    billing.request_line = match &query {
        Some(q) => format!("POST /v1/functions/{name}/invoke?{q} HTTP/1.1"),
        None => format!("POST /v1/functions/{name}/invoke HTTP/1.1"),
    };
    spec.args = vec![name];
    spec.args.extend(query_args(query.as_deref()));
    spec.stdin = body;
    Ok(run_sync(&shared, spec, billing, verify).await.response())
}

/// `GET /v1/receipts/{work_id}`: the proof of a recent call's receipt (its
/// Merkle path to the root its provider signed), for the account that made
/// the call or an `admin` key. 404 for anyone else, for a call whose batch
/// is not signed yet, and once the call is older than the broker keeps.
#[utoipa::path(get, path = "/v1/receipts/{work_id}", tag = "invoke",
    params(("work_id" = String, Path, format = Uuid, description = "The call's `x-brume-work-id`")),
    responses((status = 200, description = "The call's receipt and its Merkle path to the root its provider signed", body = brume_api::batch::ReceiptInclusion)),
    security(("api_key" = [])))]
pub(super) async fn receipt(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<brume_api::batch::ReceiptInclusion>> {
    auth.require_any(&[brume_api::rest::Scope::Invoke, brume_api::rest::Scope::Read])?;
    let missing = || {
        Fail::new(
            ErrorCode::NotFound,
            format!(
                "no signed receipt for call {id}: the call is not yours, its provider has not signed its batch yet (within a second), or it is older than the last {} calls this broker keeps",
                crate::receipts::KEPT_RECEIPTS
            ),
        )
    };
    let work_id: WorkId = id.parse().map_err(|_| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("call id: {id:?} is not a work id"),
        )
    })?;
    match shared.receipts.proof(work_id) {
        Some((proof, account)) if auth.sees(&account) => Ok(axum::Json(proof)),
        _ => Err(missing()),
    }
}

#[utoipa::path(method(get, post, put, delete, patch, head, options), path = "/fn/{service}", tag = "invoke",
    params(super::params::ServicePath, super::params::CallHeaders),
    request_body(content = brume_api::rest::Binary, content_type = "application/octet-stream", description = "Passed through to the component"),
    responses((status = 200, description = "The component's response, as it answered (any status, headers and body); `x-brume-*` headers describe the run")),
    security(("api_key" = [])))]
pub(super) async fn call_http_root(
    state: Sh,
    auth: Auth,
    Path(name): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    forward(
        state,
        auth,
        name,
        String::new(),
        method,
        query,
        headers,
        body,
    )
    .await
}

#[utoipa::path(method(get, post, put, delete, patch, head, options), path = "/fn/{service}/{path}", tag = "invoke",
    params(super::params::ServicePath, ("path" = String, Path, description = "The rest of the path, passed through"), super::params::CallHeaders),
    request_body(content = brume_api::rest::Binary, content_type = "application/octet-stream", description = "Passed through to the component"),
    responses((status = 200, description = "The component's response, as it answered (any status, headers and body); `x-brume-*` headers describe the run")),
    security(("api_key" = [])))]
pub(super) async fn call_http(
    state: Sh,
    auth: Auth,
    Path((name, path)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    forward(state, auth, name, path, method, query, headers, body).await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    State(shared): Sh,
    auth: Auth,
    name: String,
    path: String,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    let hops = federation::incoming_hops(&auth, &headers)?;
    let (mut spec, mut billing, body, verify) =
        sync_work(&shared, auth, &headers, &name, ServiceKind::Http, body)?;
    if let Err(busy) = check_overload(&shared, &spec, verify) {
        let mut rest = format!("/{path}");
        if let Some(q) = &query {
            rest.push('?');
            rest.push_str(q);
        }
        let call = federation::Call {
            service: unversioned(&spec),
            kind: ServiceKind::Http,
            method,
            rest,
            headers,
            body,
        };
        billing.hold = reserve(&shared, &billing, &spec.limits, 0, verify.units().into()).await?;
        let cap = max_cost(&shared, &billing, &spec, verify);
        return federation::forward(&shared, hops, call, busy, billing, cap).await;
    }
    billing.hold = reserve(&shared, &billing, &spec.limits, 0, verify.units().into()).await?;
    billing.request_headers =
        Billing::headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    let (request, line) = http_request(&method, &path, query, &headers, body);
    billing.request_line = format!("{method} /fn/{name}{line} HTTP/1.1");
    spec.http = Some(request);
    Ok(run_sync(&shared, spec, billing, verify).await.response())
}

/// The request a provider's component gets for `method /path?query`, and
/// its `/path?query`. The broker's API key is consumed here; it never
/// reaches a provider.
pub(super) fn http_request(
    method: &Method,
    path: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> (wire::HttpRequest, String) {
    let mut uri = format!("/{path}");
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(&q);
    }
    let headers = super::passed_on(headers)
        .map(|(n, v)| (n.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    let request = wire::HttpRequest {
        method: method.as_str().to_string(),
        uri: uri.clone(),
        headers,
        body,
    };
    (request, uri)
}

#[cfg(test)]
mod tests {
    use super::retry_after_s;

    #[test]
    fn retry_after_follows_the_queue_and_the_rate() {
        assert_eq!(retry_after_s(0, 0.0), 1);
        assert_eq!(retry_after_s(500, 100.0), 5);
        assert_eq!(retry_after_s(501, 100.0), 6);
        assert_eq!(retry_after_s(10, 0.0), 10, "no rate yet: one per second");
        assert_eq!(retry_after_s(1_000_000, 10.0), 60);
    }
}
