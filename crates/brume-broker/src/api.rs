//! The requester REST API (axum). Every error is `brume_api::ApiError` as
//! JSON with the status its code implies.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{
    DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, RawQuery, Request, State,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, request::Parts};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use brume_api::rest::{
    JobInfo, JobList, JobSpec, JobState, ProviderInfo, ProviderList, ServiceInfo, ServiceList,
    validate_service_name,
};
use brume_api::signed::{self, SignatureHeader};
use brume_api::wire::{self, Outcome};
use brume_api::{ApiError, ErrorCode, Profile, ServiceKind, WorkId, headers as xh};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::Shared;
use crate::jobs::{self, JobEntry, StoredJob};
use crate::ledger::{self, Billing};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::sched::{Cancelled, Completion, Sink, Work, WorkSpec};
use crate::store::keys;
use brume_ledger::deal::Admission;
use brume_ledger::penalty::Declared;

pub(crate) type Sh = State<Arc<Shared>>;

/// An error response.
pub(crate) struct Fail(pub ApiError);

impl Fail {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Fail {
        Fail(ApiError::new(code, message))
    }
}

impl From<crate::StoreError> for Fail {
    fn from(e: crate::StoreError) -> Fail {
        tracing::error!("store: {e}");
        Fail::new(ErrorCode::Internal, format!("storage failure: {e}"))
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self.0)).into_response();
        if self.0.code == ErrorCode::Overloaded {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

pub(crate) type Res<T> = Result<T, Fail>;

fn body_or_fail(body: Result<Bytes, BytesRejection>, what: &str) -> Res<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Fail::new(
                ErrorCode::PayloadTooLarge,
                format!("{what}: larger than this broker accepts"),
            )
        } else {
            Fail::new(
                ErrorCode::InvalidRequest,
                format!("{what}: {}", r.body_text()),
            )
        }
    })
}

/// A requester with a valid API key or a valid signature, and its account
/// (the ledger's requester, and a service's developer): the key's bound
/// address, else the key's name; for a signed request, the signer's
/// address.
pub(crate) struct Auth {
    pub name: String,
}

/// The signer of a request whose `Brume-Signature` verified (a request
/// extension set by [`verify_signed`]).
#[derive(Debug, Clone)]
struct Signer(String);

/// Signed requests seen within the skew window: (timestamp, sha256 of the
/// signature). A signature covers its timestamp, so a replay has both.
#[derive(Debug, Default)]
pub(crate) struct SeenSignatures(std::collections::BTreeSet<(u64, [u8; 32])>);

/// Checks a `Brume-Signature` request (see `brume_api::signed`): the
/// timestamp, the body's hash, the EIP-191 signature and replays. On
/// success the signer's address goes into the request for [`Auth`]; other
/// requests pass through untouched.
async fn verify_signed(State(shared): Sh, req: Request, next: Next) -> Response {
    let parsed = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(SignatureHeader::parse);
    let Some(parsed) = parsed else {
        return next.run(req).await;
    };
    match check_signed(&shared, parsed, req).await {
        Ok(req) => next.run(req).await,
        Err(fail) => fail.into_response(),
    }
}

async fn check_signed(
    shared: &Shared,
    header: Result<SignatureHeader, String>,
    req: Request,
) -> Res<Request> {
    use sha2::{Digest as _, Sha256};
    let h = header.map_err(|m| {
        Fail::new(
            ErrorCode::BadSignature,
            format!("Authorization: {} {m}", signed::SCHEME),
        )
    })?;
    let now = crate::now_ms();
    if now.abs_diff(h.timestamp_ms) > signed::MAX_SKEW_MS {
        return Err(Fail::new(
            ErrorCode::StaleSignature,
            format!(
                "the signed timestamp {} is more than {} s off the broker's clock ({now})",
                h.timestamp_ms,
                signed::MAX_SKEW_MS / 1000
            ),
        ));
    }
    let c = &shared.config;
    let limit = c
        .max_module_bytes
        .max(c.max_spec_bytes)
        .max(c.max_limits.max_input_bytes as usize);
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Fail::new(
            ErrorCode::PayloadTooLarge,
            "body: larger than this broker accepts",
        )
    })?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let message = signed::message(parts.method.as_str(), target, h.timestamp_ms, &digest);
    let signer = brume_identity::verify(message.as_bytes(), &h.signature, &h.address)
        .map_err(|e| Fail::new(ErrorCode::BadSignature, format!("request signature: {e}")))?;
    {
        let mut seen = shared.seen_signatures.lock();
        let oldest = now.saturating_sub(signed::MAX_SKEW_MS);
        seen.0 = seen.0.split_off(&(oldest, [0; 32]));
        if !seen
            .0
            .insert((h.timestamp_ms, Sha256::digest(h.signature).into()))
        {
            return Err(Fail::new(
                ErrorCode::ReplayedSignature,
                "this signature was already used: sign each request afresh",
            ));
        }
    }
    parts.extensions.insert(Signer(signer.to_string()));
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// An API key if the request carries one (and then it must be valid).
pub(crate) struct MaybeAuth(pub Option<Auth>);

impl FromRequestParts<Arc<Shared>> for MaybeAuth {
    type Rejection = Fail;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<MaybeAuth, Fail> {
        if let Some(Signer(address)) = parts.extensions.get::<Signer>() {
            return Ok(MaybeAuth(Some(Auth {
                name: address.clone(),
            })));
        }
        match bearer(parts) {
            None => Ok(MaybeAuth(None)),
            Some(token) => check_key(shared, token).await.map(|a| MaybeAuth(Some(a))),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

impl FromRequestParts<Arc<Shared>> for Auth {
    type Rejection = Fail;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Auth, Fail> {
        if let Some(Signer(address)) = parts.extensions.get::<Signer>() {
            return Ok(Auth {
                name: address.clone(),
            });
        }
        let Some(token) = bearer(parts) else {
            return Err(Fail::new(
                ErrorCode::Unauthorized,
                "an API key or a signature is required: Authorization: Bearer <key> (create one with `brume broker keys create`), or Authorization: Brume-Signature … (see the README)",
            ));
        };
        check_key(shared, token).await
    }
}

async fn check_key(shared: &Arc<Shared>, token: &str) -> Result<Auth, Fail> {
    let hash = keys::hash(token);
    let refresh = {
        let cache = shared.keys.read();
        if let Some(name) = cache.hashes.get(&hash) {
            return Ok(Auth { name: name.clone() });
        }
        // Keys minted by `brume broker keys create` while we run: look in
        // the database, at most once a second.
        cache
            .refreshed
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
    };
    if refresh {
        shared.keys.write().refreshed = Some(Instant::now());
        let found = shared.store.read(move |c| keys::name_of(c, &hash)).await?;
        if let Some(name) = found {
            shared.keys.write().hashes.insert(hash, name.clone());
            return Ok(Auth { name });
        }
    }
    Err(Fail::new(ErrorCode::Forbidden, "the API key is not valid"))
}

async fn settlement_health(State(shared): Sh) -> axum::Json<brume_api::rest::SettlementHealth> {
    axum::Json(shared.settlement.health())
}

/// Runs settlement now. Any key may ask: a run only settles what is owed,
/// and runs never overlap.
async fn settlement_run(State(shared): Sh, _auth: Auth) -> Res<axum::Json<brume_settle::Report>> {
    crate::settlement::run_once(&shared)
        .await
        .map(axum::Json)
        .map_err(Fail)
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let c = &shared.config;
    let module_limit = DefaultBodyLimit::max(c.max_module_bytes);
    let input_limit = DefaultBodyLimit::max(c.max_limits.max_input_bytes as usize);
    let spec_limit = DefaultBodyLimit::max(c.max_spec_bytes);
    Router::new()
        .route(
            "/v1/services",
            post(publish).layer(module_limit).get(list_services),
        )
        .route("/v1/services/{name}", get(get_service))
        .route("/v1/blobs/{digest}", get(get_blob))
        .route(
            "/v1/functions/{service}/invoke",
            post(invoke).layer(input_limit),
        )
        .route("/fn/{service}", any(call_http_root).layer(input_limit))
        .route("/fn/{service}/", any(call_http_root).layer(input_limit))
        .route("/fn/{service}/{*path}", any(call_http).layer(input_limit))
        .route(
            "/v1/jobs",
            post(submit_job).layer(spec_limit).get(list_jobs),
        )
        .route("/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/jobs/{id}/result", get(job_result))
        .route("/v1/ledger/rows", get(ledger_rows))
        .route("/v1/ledger/rows/{work_id}", get(ledger_row))
        .route("/v1/status", get(status))
        .route("/v1/settlement", get(settlement_health))
        .route("/v1/settlement/run", post(settlement_run))
        .route("/v1/providers", get(providers))
        .route("/metrics", get(metrics))
        .route("/v1/provider/connect", get(connect))
        .merge(crate::chain_api::routes())
        .fallback(|| async { Fail::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            Fail::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            verify_signed,
        ))
        .layer(middleware::from_fn_with_state(shared.clone(), track))
        .with_state(shared)
}

async fn track(State(shared): Sh, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let m = &shared.metrics;
    m.requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            status: resp.status().as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    resp
}

// ---- services and blobs ----------------------------------------------------

#[derive(Debug, Deserialize)]
struct PublishQuery {
    name: String,
    kind: Option<ServiceKind>,
}

/// The developer who signed an upload (`0x` address), with
/// [`SIGNATURE_HEADER`].
pub(crate) const DEVELOPER_HEADER: &str = "x-brume-developer";
/// The developer's EIP-191 signature over
/// `brume_api::wire::module_message(digest)`: `0x` + 130 hex digits.
pub(crate) const SIGNATURE_HEADER: &str = "x-brume-module-signature";

/// An upload's claimed developer signature: both headers or neither.
fn claimed_signature(headers: &HeaderMap) -> Res<Option<(String, Vec<u8>)>> {
    let developer = header_str(headers, DEVELOPER_HEADER)?;
    let signature = header_str(headers, SIGNATURE_HEADER)?;
    let (developer, signature) = match (developer, signature) {
        (None, None) => return Ok(None),
        (Some(d), Some(s)) => (d.trim(), s.trim()),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Fail::new(
                ErrorCode::InvalidRequest,
                format!("a signed upload needs both {DEVELOPER_HEADER} and {SIGNATURE_HEADER}"),
            ));
        }
    };
    let bytes = hex::decode(signature.strip_prefix("0x").unwrap_or(signature))
        .ok()
        .filter(|b| b.len() == 65)
        .ok_or_else(|| {
            Fail::new(
                ErrorCode::InvalidRequest,
                format!("{SIGNATURE_HEADER}: expected 0x and 130 hex digits (65 bytes)"),
            )
        })?;
    Ok(Some((developer.to_string(), bytes)))
}

/// Checks a claimed signature over `digest`; the signer's address.
fn check_module_signature(developer: &str, signature: &[u8], digest: &str) -> Res<String> {
    let message = brume_api::wire::module_message(digest);
    brume_identity::verify(message.as_bytes(), signature, developer)
        .map(|a| a.to_string())
        .map_err(|e| {
            Fail::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{SIGNATURE_HEADER}: not a signature by {developer} over module sha256 {digest}: {e}"
                ),
            )
        })
}

async fn publish(
    State(shared): Sh,
    auth: Auth,
    query: Result<Query<PublishQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<(StatusCode, axum::Json<ServiceInfo>)> {
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!(
                "query: {} (expected ?name=NAME&kind=command|http)",
                e.body_text()
            ),
        )
    })?;
    validate_service_name(&q.name).map_err(Fail)?;
    let claimed = claimed_signature(&headers)?;
    let bytes = body_or_fail(body, "module")?;
    if bytes.is_empty() {
        return Err(Fail::new(ErrorCode::InvalidModule, "the module is empty"));
    }
    let kind = q.kind.unwrap_or(ServiceKind::Command);
    let sh = shared.clone();
    let b = bytes.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let program = sh.validator.load(&b, brume_sandbox::Profile::Standard)?;
        sh.validator.evict(&program.digest());
        Ok::<_, brume_sandbox::ExecError>((program.digest(), program.shape()))
    })
    .await
    .map_err(|e| Fail::new(ErrorCode::Internal, format!("validation task: {e}")))?;
    let (digest, shape) = checked.map_err(|e| {
        let code = match e.code() {
            "import_not_allowed" => ErrorCode::InvalidModule,
            "memory_limit" => ErrorCode::InvalidModule,
            "internal" => ErrorCode::Internal,
            _ => ErrorCode::InvalidModule,
        };
        Fail::new(code, e.to_string())
    })?;
    let shape_kind = match shape {
        brume_sandbox::Shape::HttpProxy => ServiceKind::Http,
        _ => ServiceKind::Command,
    };
    if shape_kind != kind {
        return Err(Fail::new(
            ErrorCode::InvalidModule,
            format!(
                "kind is {} but the module is a {} (publish it with kind={})",
                kind.as_str(),
                match shape {
                    brume_sandbox::Shape::HttpProxy => "wasi:http proxy component",
                    _ => "WASI command",
                },
                shape_kind.as_str()
            ),
        ));
    }
    let digest = digest.to_string();
    let signed = match claimed {
        None => None,
        Some((developer, signature)) => {
            let signer = check_module_signature(&developer, &signature, &digest)?;
            Some((signer, signature))
        }
    };
    // Text modules (.wat) are stored as the binary the digest names.
    let stored = if bytes.starts_with(b"\0asm") {
        bytes
    } else {
        Bytes::from(
            wat::parse_bytes(&bytes)
                .map(|c| c.into_owned())
                .map_err(|e| Fail::new(ErrorCode::InvalidModule, e.to_string()))?,
        )
    };
    let info = ServiceInfo {
        name: q.name.clone(),
        kind,
        digest: digest.clone(),
        size_bytes: stored.len() as u64,
        created_at_ms: crate::now_ms(),
        signed: signed.is_some(),
        developer_address: signed.as_ref().map(|(a, _)| a.clone()),
        module_signature: signed
            .as_ref()
            .map(|(_, sig)| format!("0x{}", hex::encode(sig))),
    };
    shared.store.put_blob(digest.clone(), stored).await?;
    let row = info.clone();
    // A signed module's developer (the royalty payee) is its signer.
    let developer = match &signed {
        Some((signer, _)) => signer.clone(),
        None => auth.name,
    };
    let dev = developer.clone();
    let (signed_by, signature) = signed.unzip();
    shared
        .store
        .write(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO services (name, kind, digest, size_bytes, created_at_ms, developer, signed_by, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![row.name, row.kind.as_str(), row.digest, row.size_bytes as i64, row.created_at_ms as i64, dev, signed_by, signature],
            )?;
            Ok(())
        })
        .await?;
    shared
        .developers
        .write()
        .insert(info.name.clone(), developer);
    shared
        .services
        .write()
        .insert(info.name.clone(), info.clone());
    tracing::info!(
        service = %info.name, digest = %info.digest,
        developer = info.developer_address.as_deref().unwrap_or("(unsigned)"),
        "service published"
    );
    Ok((StatusCode::CREATED, axum::Json(info)))
}

async fn list_services(State(shared): Sh, _auth: Auth) -> axum::Json<ServiceList> {
    let mut services: Vec<ServiceInfo> = shared.services.read().values().cloned().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    axum::Json(ServiceList { services })
}

fn service(shared: &Shared, name: &str) -> Res<ServiceInfo> {
    shared.services.read().get(name).cloned().ok_or_else(|| {
        Fail::new(
            ErrorCode::UnknownService,
            format!("no service named {name:?}"),
        )
    })
}

async fn get_service(
    State(shared): Sh,
    _auth: Auth,
    Path(name): Path<String>,
) -> Res<axum::Json<ServiceInfo>> {
    service(&shared, &name).map(axum::Json)
}

/// Module bytes by digest: for requesters (API key) and providers (the
/// session's blob token).
async fn get_blob(
    State(shared): Sh,
    Path(digest): Path<String>,
    signer: Option<axum::Extension<Signer>>,
    headers: HeaderMap,
) -> Res<Response> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        None if signer.is_some() => {}
        None => {
            return Err(Fail::new(
                ErrorCode::Unauthorized,
                "an API key or provider token is required",
            ));
        }
        Some(t) if shared.blob_tokens.read().contains(t) => {}
        Some(t) => {
            check_key(&shared, t).await?;
        }
    }
    let digest = brume_api::parse_digest(&digest)
        .map(hex::encode)
        .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("digest: {e}")))?;
    match shared.store.get_blob(&digest).await? {
        Some(bytes) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/wasm")],
            bytes,
        )
            .into_response()),
        None => Err(Fail::new(
            ErrorCode::NotFound,
            format!("no module with digest {digest}"),
        )),
    }
}

// ---- sync invocation -------------------------------------------------------

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
            self.shared.with_sched(|s, a| {
                s.cancel(work.id, a);
            });
            let attempts = work.attempts();
            work.finish(Completion::Failed {
                error: ApiError::new(ErrorCode::Cancelled, "the caller went away"),
                attempts,
            });
        }
    }
}

fn check_overload(shared: &Shared) -> Res<()> {
    let (depth, age, providers) = {
        let s = shared.sched.lock();
        (s.queue_len(), s.oldest_wait(), s.providers.len())
    };
    if providers == 0 {
        return Err(Fail::new(
            ErrorCode::ProviderUnavailable,
            "no provider is connected to this broker",
        ));
    }
    if depth >= shared.config.overload_queue_depth || age >= shared.config.overload_queue_age {
        return Err(Fail::new(
            ErrorCode::Overloaded,
            format!(
                "{depth} calls are waiting (oldest {} ms); retry shortly",
                age.as_millis()
            ),
        ));
    }
    Ok(())
}

async fn run_sync(shared: &Arc<Shared>, spec: WorkSpec) -> (WorkId, Completion) {
    let id = WorkId::new();
    let deadline = shared.config.invoke_queue_timeout
        + Duration::from_millis(spec.limits.timeout_ms) * spec.max_attempts
        + Duration::from_secs(5);
    let (tx, rx) = oneshot::channel();
    let work = Work::new(
        id,
        spec,
        Sink::Invoke(parking_lot::Mutex::new(Some(tx))),
        shared.config.invoke_queue_timeout,
        0,
    );
    let mut guard = CancelOnDrop {
        shared: shared.clone(),
        work: Some(work.clone()),
    };
    shared.with_sched(|s, a| s.submit(work.clone(), a));
    let completion = match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => Completion::Failed {
            error: ApiError::new(ErrorCode::Internal, "the work was dropped"),
            attempts: work.attempts(),
        },
        Err(_) => {
            // Let the guard cancel it; report a timeout.
            return (
                id,
                Completion::Failed {
                    error: ApiError::new(
                        ErrorCode::Timeout,
                        format!("no result within {deadline:?}"),
                    ),
                    attempts: work.attempts(),
                },
            );
        }
    };
    guard.work = None;
    (id, completion)
}

fn xb_headers(h: &mut HeaderMap, id: WorkId, provider: &str, fuel: Option<u64>, attempts: u32) {
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

fn completion_response(id: WorkId, c: Completion) -> Response {
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

fn query_args(query: Option<&str>) -> Vec<String> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "arg")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the two sync paths share: the service must exist and be `kind`,
/// the body fit the input limit, and the broker not be overloaded.
fn sync_work(
    shared: &Shared,
    auth: Auth,
    headers: &HeaderMap,
    name: &str,
    kind: ServiceKind,
    body: Result<Bytes, BytesRejection>,
) -> Res<(WorkSpec, Bytes)> {
    let svc = service(shared, name)?;
    let tier = header_str(headers, ledger::TIER_HEADER)?;
    let cap = match header_str(headers, ledger::PRICE_CAP_HEADER)? {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            Fail::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{}: {v:?} is not a whole number of fiat micro-units",
                    ledger::PRICE_CAP_HEADER
                ),
            )
        })?),
    };
    let admission = admit(shared, &auth.name, tier, cap, &svc.digest)?;
    let billing = Billing {
        requester: auth.name,
        end_user: end_user(headers)?,
        developer: developer(shared, Some(name), &svc.digest),
        request_line: String::new(),
        request_headers: Vec::new(),
        admission: Some(admission),
        declared: Default::default(),
        hold: None,
    };
    if svc.kind != kind {
        let hint = match svc.kind {
            ServiceKind::Http => format!("{name} is an http service: call it at /fn/{name}/"),
            ServiceKind::Command => {
                format!("{name} is a command service: call it at /v1/functions/{name}/invoke")
            }
        };
        return Err(Fail::new(ErrorCode::WrongKind, hint));
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
    check_overload(shared)?;
    let module_signature = module_signature(shared, Some(name), &svc.digest);
    let tiers = match header_str(headers, TIERS_HEADER)? {
        None => shared.config.trust.default_tiers(&billing.requester),
        Some(v) => parse_tiers(v)
            .map_err(|m| Fail::new(ErrorCode::InvalidRequest, format!("{TIERS_HEADER}: {m}")))?,
    };
    let org = shared.config.trust.org_of_account(&billing.requester);
    let spec = WorkSpec {
        service: Some(name.to_string()),
        digest: svc.digest,
        kind,
        profile: Profile::Standard,
        limits,
        args: Vec::new(),
        env: Vec::new(),
        stdin: Bytes::new(),
        http: None,
        max_price: None,
        max_attempts: shared.config.max_attempts,
        progress_ms: None,
        seed: 0,
        clock_start_ms: 0,
        needs: shared.ledger.needs(Some(&admission)),
        module_signature,
        replica: None,
        avoid: None,
        tiers,
        org,
        billing,
    };
    Ok((spec, body))
}

/// The request header naming the trust tiers a call may run on (`1,2`).
const TIERS_HEADER: &str = "x-brume-tiers";

/// `1,2,…` as a tier set.
fn parse_tiers(v: &str) -> Result<u8, String> {
    let tiers = v
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<u8>()
                .map_err(|_| format!("{t:?} is not a tier"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    crate::trust::tier_set(&tiers)
}

/// A header's value as text, if present.
fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Res<Option<&'h str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Fail::new(
                ErrorCode::InvalidRequest,
                format!("{name}: not visible ASCII"),
            )
        }),
    }
}

/// The tier a request runs at under its account's deal.
fn admit(
    shared: &Shared,
    account: &str,
    tier: Option<&str>,
    cap_fiat_micros: Option<u64>,
    digest: &str,
) -> Res<Admission> {
    shared
        .ledger
        .admit(account, tier, cap_fiat_micros, digest)
        .map_err(|e| match e {
            ledger::AdmitError::Invalid(m) => Fail::new(ErrorCode::InvalidRequest, m),
            ledger::AdmitError::OverCap(e) => Fail::new(ErrorCode::OverPriceCap, e.to_string()),
        })
}

/// Reserves the work's maximum cost against its paying account's escrow
/// (see `escrow.rs`), or refuses it with 402 `insufficient_allowance`
/// before anything runs or is billed.
async fn reserve(
    shared: &Arc<Shared>,
    billing: &Billing,
    digest: &str,
) -> Res<Option<Arc<crate::escrow::Hold>>> {
    use crate::escrow::Reserve;
    let Some(account) = shared.ledger.escrow_account(&billing.requester) else {
        return Ok(None);
    };
    let address = match account.parse::<brume_chain::Address>() {
        Ok(a) if account.len() == 42 => a,
        _ if shared.config.chain.require_allowance => {
            return Err(Fail::new(
                ErrorCode::InsufficientAllowance,
                format!(
                    "account {account:?} is not an address, and this broker requires an escrow \
                     allowance: use an API key bound to an account (`brume broker keys create \
                     --account 0x…`) or sign the request with your key"
                ),
            ));
        }
        _ => return Ok(None),
    };
    let Some(admission) = billing.admission else {
        return Ok(None);
    };
    let cost = shared
        .ledger
        .max_cost(&admission, digest, shared.config.chain.default_reservation);
    let escrow = shared.ledger.escrow();
    if let Reserve::Held(h) = escrow.try_reserve(&account, cost, false) {
        return Ok(Some(h));
    }
    let payout = shared.identity.address();
    let allowance = shared
        .chain
        .chain
        .allowance(address, payout)
        .await
        .map_err(crate::chain_api::chain_fail)?;
    escrow.set_allowance(&account, allowance);
    match escrow.try_reserve(&account, cost, true) {
        Reserve::Held(h) => Ok(Some(h)),
        Reserve::Insufficient {
            allowance,
            committed,
        } => Err(Fail::new(
            ErrorCode::InsufficientAllowance,
            format!(
                "account {address} allows the payout account {payout} {allowance} base units; \
                 {committed} are owed or reserved, and this work may cost up to {cost}: \
                 approve more (`brume wallet approve`)"
            ),
        )),
        Reserve::Stale => Err(Fail::new(
            ErrorCode::Internal,
            "escrow: the allowance just read is missing",
        )),
    }
}

/// The optional `x-brume-end-user` header (at most 256 bytes of UTF-8).
fn end_user(headers: &HeaderMap) -> Res<String> {
    let Some(v) = headers.get(ledger::END_USER_HEADER) else {
        return Ok(String::new());
    };
    match v.to_str() {
        Ok(s) if s.len() <= brume_ledger::row::MAX_ID_BYTES => Ok(s.to_string()),
        _ => Err(Fail::new(
            ErrorCode::InvalidRequest,
            format!(
                "{}: at most {} bytes of visible ASCII",
                ledger::END_USER_HEADER,
                brume_ledger::row::MAX_ID_BYTES
            ),
        )),
    }
}

/// The developer of a service (its signer if the upload was signed, else
/// the account of the key that published it), or, when there is no name,
/// of a service with this digest (a signed one first).
fn developer(shared: &Shared, name: Option<&str>, digest: &str) -> String {
    let devs = shared.developers.read();
    if let Some(name) = name {
        return devs.get(name).cloned().unwrap_or_default();
    }
    let services = shared.services.read();
    let with_digest = || services.values().filter(|s| s.digest == digest);
    with_digest()
        .find_map(|s| s.developer_address.clone())
        .or_else(|| with_digest().find_map(|s| devs.get(&s.name).cloned()))
        .unwrap_or_default()
}

/// The developer signature that goes with every assignment of `digest`:
/// the named service's if it was signed (over this digest), else that of
/// any signed service with this digest (a signature covers the module, not
/// the name). `None` for a module nobody signed.
fn module_signature(
    shared: &Shared,
    name: Option<&str>,
    digest: &str,
) -> Option<brume_api::wire::ModuleSignature> {
    let services = shared.services.read();
    let of = |s: &ServiceInfo| -> Option<brume_api::wire::ModuleSignature> {
        if s.digest != digest {
            return None;
        }
        let developer = s.developer_address.clone()?;
        let sig = s.module_signature.as_deref()?;
        let signature = hex::decode(sig.strip_prefix("0x").unwrap_or(sig)).ok()?;
        Some(brume_api::wire::ModuleSignature {
            developer,
            signature: signature.into(),
        })
    };
    name.and_then(|n| services.get(n))
        .and_then(of)
        .or_else(|| services.values().find_map(of))
}

async fn invoke(
    State(shared): Sh,
    auth: Auth,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    let (mut spec, body) = sync_work(&shared, auth, &headers, &name, ServiceKind::Command, body)?;
    spec.billing.hold = reserve(&shared, &spec.billing, &spec.digest).await?;
    spec.billing.request_line = match &query {
        Some(q) => format!("POST /v1/functions/{name}/invoke?{q} HTTP/1.1"),
        None => format!("POST /v1/functions/{name}/invoke HTTP/1.1"),
    };
    spec.args = vec![name];
    spec.args.extend(query_args(query.as_deref()));
    spec.stdin = body;
    let (id, completion) = run_sync(&shared, spec).await;
    Ok(completion_response(id, completion))
}

async fn call_http_root(
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

async fn call_http(
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
async fn forward(
    State(shared): Sh,
    auth: Auth,
    name: String,
    path: String,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    let (mut spec, body) = sync_work(&shared, auth, &headers, &name, ServiceKind::Http, body)?;
    spec.billing.hold = reserve(&shared, &spec.billing, &spec.digest).await?;
    let mut uri = format!("/{path}");
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(&q);
    }
    spec.billing.request_line = format!("{method} /fn/{name}{uri} HTTP/1.1");
    spec.billing.request_headers =
        Billing::headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    // The broker's API key is consumed here; it never reaches a provider.
    let headers = headers
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "authorization"
                    | "host"
                    | "connection"
                    | "content-length"
                    | "transfer-encoding"
                    | "keep-alive"
            )
        })
        .map(|(n, v)| (n.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    spec.http = Some(wire::HttpRequest {
        method: method.as_str().to_string(),
        uri,
        headers,
        body,
    });
    let (id, completion) = run_sync(&shared, spec).await;
    Ok(completion_response(id, completion))
}

// ---- jobs ------------------------------------------------------------------

/// A job's work; `module_signature` is looked up by digest when the job
/// starts ([`module_signature`]), not stored with the job.
fn work_spec(
    stored: &StoredJob,
    progress: Duration,
    needs: ledger::TierNeeds,
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
        replica: None,
        avoid: None,
        billing: Billing {
            requester: stored.requester.clone(),
            end_user: stored.end_user.clone(),
            developer: stored.developer.clone(),
            request_line: String::new(),
            request_headers: Vec::new(),
            admission: stored.admission,
            declared: stored.declared,
            hold: None,
        },
    }
}

/// Queues a job; `hold` is its escrow reservation (none for a job
/// re-queued at start-up: its account's charges are counted from the
/// ledger).
fn start_job(
    shared: &Arc<Shared>,
    entry: Arc<JobEntry>,
    attempts: u32,
    hold: Option<Arc<crate::escrow::Hold>>,
) {
    let needs = shared.ledger.needs(entry.stored.admission.as_ref());
    let signature = module_signature(
        shared,
        entry.stored.service.as_deref(),
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
        // job's reservation ends when it does.
        drop(hold);
        let (stored, progress, trust) = (
            entry.stored.clone(),
            shared.config.progress_interval,
            shared.config.trust.clone(),
        );
        crate::verify::start(
            shared,
            &entry,
            policy,
            Box::new(move || work_spec(&stored, progress, needs, signature.clone(), &trust)),
            timeout,
        );
        return;
    }
    let mut spec = work_spec(
        &entry.stored,
        shared.config.progress_interval,
        needs,
        signature,
        &shared.config.trust,
    );
    spec.billing.hold = hold;
    let work = Work::new(entry.id, spec, Sink::Job(entry.clone()), timeout, attempts);
    shared.jobs.lock().insert(entry.id, (entry, None));
    shared.works.lock().insert(work.id, work.clone());
    shared.with_sched(|s, a| s.submit(work, a));
}

/// Re-queues the jobs that were open when the broker last stopped.
pub(crate) async fn recover_jobs(shared: &Arc<Shared>) -> Result<(), crate::StoreError> {
    let open = jobs::open_jobs(&shared.store).await?;
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
        start_job(shared, entry, attempts, None);
    }
    Ok(())
}

async fn submit_job(
    State(shared): Sh,
    auth: Auth,
    req_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<(StatusCode, HeaderMap, axum::Json<JobInfo>)> {
    let end_user = end_user(&req_headers)?;
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
    let c = &shared.config;
    let limits = spec
        .limits
        .resolve(&c.default_limits, &c.max_limits)
        .map_err(Fail)?;
    let (service_name, digest, kind) = match (&spec.service, &spec.digest) {
        (Some(name), pin) => {
            let svc = service(&shared, name)?;
            // A digest given with a service pins the module: a concurrent
            // re-publish of the name must not swap what runs.
            if let Some(pin) = pin {
                let pin = brume_api::parse_digest(pin)
                    .map(hex::encode)
                    .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("digest: {e}")))?;
                if pin != svc.digest {
                    return Err(Fail::new(
                        ErrorCode::Conflict,
                        format!("digest: service {name} is now {}, not {pin}", svc.digest),
                    ));
                }
            }
            (Some(name.clone()), svc.digest, svc.kind)
        }
        (None, Some(d)) => {
            let digest = brume_api::parse_digest(d)
                .map(hex::encode)
                .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("digest: {e}")))?;
            let kind = shared
                .services
                .read()
                .values()
                .find(|s| s.digest == digest)
                .map(|s| s.kind)
                .ok_or_else(|| {
                    Fail::new(
                        ErrorCode::NotFound,
                        format!("digest: no uploaded module has digest {digest}"),
                    )
                })?;
            (None, digest, kind)
        }
        (None, None) => return Err(Fail::new(ErrorCode::InvalidRequest, "service: required")),
    };
    if kind != ServiceKind::Command {
        return Err(Fail::new(
            ErrorCode::WrongKind,
            "service: jobs run commands; http services are called at /fn/{name}/",
        ));
    }
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
    let admission = admit(
        &shared,
        &auth.name,
        spec.tier.as_deref(),
        spec.price_cap_micros,
        &digest,
    )?;
    let hold = reserve(
        &shared,
        &Billing {
            requester: auth.name.clone(),
            admission: Some(admission),
            ..Billing::default()
        },
        &digest,
    )
    .await?;
    // The job's own policy, else its account's default.
    let verify = spec
        .verify
        .clone()
        .or_else(|| shared.config.trust.default_verify(&auth.name));
    let mut argv = vec![service_name.clone().unwrap_or_else(|| "main.wasm".into())];
    argv.extend(spec.args.iter().cloned());
    let stored = StoredJob {
        service: service_name.clone(),
        digest: digest.clone(),
        kind,
        argv,
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        stdin,
        limits,
        // Verified work runs deterministically (replicas must agree).
        profile: match verify {
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
        max_price: spec.max_price,
        labels: spec.labels.clone(),
        developer: developer(&shared, service_name.as_deref(), &digest),
        requester: auth.name,
        end_user,
        admission: Some(admission),
        declared: Declared {
            runtime_ms: spec.expect.runtime_ms,
            memory_bytes: spec.expect.memory_bytes,
        },
        verify: verify.clone(),
        tiers: spec.tiers.clone(),
    };
    let now = crate::now_ms();
    let id = WorkId::new();
    let info = JobInfo {
        id,
        state: JobState::Queued,
        service: service_name,
        digest,
        attempts: 0,
        max_attempts: stored.max_attempts,
        provider: None,
        created_at_ms: now,
        updated_at_ms: now,
        error: None,
        labels: spec.labels,
    };
    jobs::insert(&shared.store, &info, &stored).await?;
    let entry = JobEntry::new(id, stored, info, Vec::new(), shared.store.clone());
    entry.event_queued(None);
    start_job(&shared, entry.clone(), 0, hold);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        headers.insert(axum::http::header::LOCATION, v);
    }
    Ok((StatusCode::ACCEPTED, headers, axum::Json(entry.info())))
}

fn job_id(s: &str) -> Res<WorkId> {
    s.parse().map_err(|_| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("job id: {s:?} is not a job id"),
        )
    })
}

fn entry(shared: &Shared, id: WorkId) -> Option<Arc<JobEntry>> {
    shared.jobs.lock().get(&id).map(|(e, _)| e.clone())
}

fn no_job(id: WorkId) -> Fail {
    Fail::new(ErrorCode::NotFound, format!("no job {id}"))
}

async fn get_job(
    State(shared): Sh,
    _auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<JobInfo>> {
    let id = job_id(&id)?;
    if let Some(e) = entry(&shared, id) {
        return Ok(axum::Json(e.info()));
    }
    jobs::load_info(&shared.store, id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| no_job(id))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

async fn list_jobs(
    State(shared): Sh,
    _auth: Auth,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Res<axum::Json<JobList>> {
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("query: {}", e.body_text()),
        )
    })?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("state: {e}")))?,
        ),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    // Pending writes first, so the list reflects every acknowledged change.
    shared.store.flush().await?;
    let jobs = jobs::list(&shared.store, state, limit).await?;
    Ok(axum::Json(JobList { jobs }))
}

async fn job_result(
    State(shared): Sh,
    _auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<brume_api::rest::JobResult>> {
    let id = job_id(&id)?;
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
    match jobs::load_result(&shared.store, id).await? {
        Some(r) if r.state.is_final() => Ok(axum::Json(r)),
        Some(r) => Err(not_final(r.state)),
        None => Err(no_job(id)),
    }
}

async fn cancel_job(
    State(shared): Sh,
    _auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<JobInfo>> {
    let id = job_id(&id)?;
    let Some(e) = entry(&shared, id) else {
        return match jobs::load_info(&shared.store, id).await? {
            Some(info) => Err(Fail::new(
                ErrorCode::Conflict,
                format!("job {id} is already {}", info.state.as_str()),
            )),
            None => Err(no_job(id)),
        };
    };
    if crate::verify::cancel(&shared, id) {
        return Ok(axum::Json(e.info()));
    }
    let work = shared.works.lock().get(&id).cloned();
    let cancelled = match work {
        Some(work) => {
            let found = shared.with_sched(|s, a| s.cancel(id, a));
            let completion = Completion::Failed {
                error: ApiError::new(ErrorCode::Cancelled, "cancelled by the requester"),
                attempts: work.attempts(),
            };
            match found {
                // Running: bill what it used so far (see ledger.rs).
                Cancelled::Running(ran) => {
                    ledger::cancel_running(&shared.ledger, &work, ran, completion).await
                }
                Cancelled::Queued | Cancelled::Unknown => work.finish(completion),
            }
        }
        None => false,
    };
    if !cancelled {
        return Err(Fail::new(
            ErrorCode::Conflict,
            format!("job {id} is already {}", e.info().state.as_str()),
        ));
    }
    Ok(axum::Json(e.info()))
}

async fn job_events(
    State(shared): Sh,
    _auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Res<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    let id = job_id(&id)?;
    let (history, live, job) = match entry(&shared, id) {
        Some(e) => {
            let (h, rx) = e.follow();
            (h, Some(rx), Some(e))
        }
        None => {
            let h = jobs::load_events(&shared.store, id).await?;
            if h.is_empty() && jobs::load_info(&shared.store, id).await?.is_none() {
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

// ---- ledger ------------------------------------------------------------------

impl From<brume_ledger::store::LedgerError> for Fail {
    fn from(e: brume_ledger::store::LedgerError) -> Fail {
        use brume_ledger::store::LedgerError as E;
        match e {
            E::InvalidCursor => Fail::new(ErrorCode::InvalidRequest, "cursor: not a valid cursor"),
            E::NotFound(id) => Fail::new(ErrorCode::NotFound, format!("no ledger row {id}")),
            other => {
                tracing::error!(code = other.code(), "ledger: {other}");
                Fail::new(ErrorCode::Internal, format!("ledger: {other}"))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct RowsQuery {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    account: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/ledger/rows`. The row JSON is brume-ledger's (third parties
/// re-verify it), so this wrapper lives here rather than in brume-api.
#[derive(Debug, serde::Serialize)]
struct RowsPage {
    rows: Vec<brume_ledger::row::LedgerRow>,
    /// Rows the store could not decode (an auditor must see them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    corrupt: Vec<brume_ledger::store::CorruptRow>,
    next_cursor: Option<String>,
}

/// A row as `reader` may see it: private columns only for its requester.
fn visible(
    row: brume_ledger::row::LedgerRow,
    reader: Option<&str>,
) -> brume_ledger::row::LedgerRow {
    if reader.is_some_and(|r| r == row.data.requester) {
        row
    } else {
        brume_ledger::row::LedgerRow {
            private: None,
            ..row
        }
    }
}

async fn ledger_rows(
    State(shared): Sh,
    MaybeAuth(auth): MaybeAuth,
    query: Result<Query<RowsQuery>, QueryRejection>,
) -> Res<axum::Json<RowsPage>> {
    use brume_ledger::store::{LedgerStore as _, ListQuery, RowFilter};
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("query: {}", e.body_text()),
        )
    })?;
    let reader = auth.map(|a| a.name);
    let page = shared
        .ledger
        .store()
        .list(ListQuery {
            filter: RowFilter {
                from_ms: q.from_ms,
                to_ms: q.to_ms,
                account: q.account.filter(|a| !a.is_empty()),
            },
            cursor: q.cursor.filter(|c| !c.is_empty()),
            limit: q.limit,
            private: reader.is_some(),
        })
        .await?;
    Ok(axum::Json(RowsPage {
        rows: page
            .rows
            .into_iter()
            .map(|r| visible(r, reader.as_deref()))
            .collect(),
        corrupt: page.corrupt,
        next_cursor: page.next_cursor,
    }))
}

async fn ledger_row(
    State(shared): Sh,
    MaybeAuth(auth): MaybeAuth,
    Path(work_id): Path<String>,
) -> Res<axum::Json<brume_ledger::row::LedgerRow>> {
    use brume_ledger::store::LedgerStore as _;
    let reader = auth.map(|a| a.name);
    let row = shared
        .ledger
        .store()
        .get(&work_id, reader.is_some())
        .await?
        .ok_or_else(|| Fail::new(ErrorCode::NotFound, format!("no ledger row {work_id}")))?;
    Ok(axum::Json(visible(row, reader.as_deref())))
}

// ---- status, providers, metrics, provider endpoint -------------------------

async fn status(State(shared): Sh) -> axum::Json<brume_api::rest::Status> {
    axum::Json(shared.status())
}

async fn providers(State(shared): Sh, _auth: Auth) -> axum::Json<ProviderList> {
    let s = shared.sched.lock();
    let mut providers: Vec<ProviderInfo> = s
        .providers
        .values()
        .map(|p| ProviderInfo {
            address: p.address.clone(),
            reputation: s.reputation(&p.address),
            tier: p.tier,
            region: p.caps.region.clone(),
            slots: p.caps.slots,
            slots_busy: p.busy,
            memory_bytes: p.caps.memory_bytes,
            fitness_mips: p.caps.fitness_mips,
            price_ask: p.price_ask,
            allowed_services: p.caps.allowed_services.clone(),
            modules_cached: p.cached.len() as u64,
            work_done: p.work_done,
            connected_at_ms: p.connected_at_ms,
            stake: p.stake.to_string(),
            staked: p.staked,
        })
        .collect();
    drop(s);
    providers.sort_by(|a, b| a.address.cmp(&b.address));
    axum::Json(ProviderList { providers })
}

async fn metrics(State(shared): Sh) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

async fn connect(State(shared): Sh, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(256 << 20)
        .on_upgrade(move |socket| crate::session::run(shared, socket))
}
