//! `GET /v1/directory`, `GET /v1/locate/{owner}/{service}`, and sync calls
//! forwarded to a peer broker when this one can't place them.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use brume_api::federation::{Announcement, Directory, Located, headers as fh};
use brume_api::{ErrorCode, ServiceKind, WorkId};
use brume_federation::Query;
use brume_federation::hops::Hops;
use bytes::Bytes;

use super::auth::Auth;
use super::{Fail, Res, Sh, header_str};
use crate::Shared;
use crate::ledger::Billing;

/// The directory, the locator and the proofs of cheat.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<Shared>> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(directory))
        .routes(routes!(locate))
        .routes(routes!(proof))
}

fn bad(message: String) -> Fail {
    Fail::new(ErrorCode::InvalidRequest, message)
}

/// `?service=&near=LAT,LON&min_free=&region=`.
fn parse_query(raw: Option<&str>) -> Res<Query> {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "service" => q.service = Some(v.into_owned()),
            "region" => q.region = Some(v.into_owned()),
            "near" => {
                q.near =
                    Some(brume_federation::parse_point(&v).map_err(|m| bad(format!("near: {m}")))?)
            }
            "min_free" => {
                q.min_free = v
                    .parse::<u32>()
                    .map_err(|_| {
                        bad(format!(
                            "min_free: {v:?} is not a whole number from 0 to 2^32-1"
                        ))
                    })?
                    .into()
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?} (service, near, min_free, region)"
                )));
            }
        }
    }
    Ok(q)
}

#[utoipa::path(get, path = "/v1/directory", tag = "federation",
    params(("service" = Option<String>, Query, description = "Only brokers serving this `owner~name`"),
        ("near" = Option<String>, Query, pattern = r"^-?(?:90(?:\.0+)?|[1-8]?[0-9](?:\.[0-9]+)?),-?(?:180(?:\.0+)?|(?:1[0-7][0-9]|[1-9]?[0-9])(?:\.[0-9]+)?)$", description = "`LAT,LON` in decimal degrees: rank by distance from here"),
        ("min_free" = Option<i64>, Query, minimum = 0, maximum = 4294967295_i64, description = "Only brokers with at least this many free slots"),
        ("region" = Option<String>, Query, description = "Only brokers in this region")),
    responses((status = 200, description = "The brokers this one knows, best first", body = Directory)))]
pub(super) async fn directory(State(shared): Sh, RawQuery(raw): RawQuery) -> Res<Json<Directory>> {
    let query = parse_query(raw.as_deref())?;
    Ok(Json(Directory {
        brokers: shared.federation.directory(&shared, &query),
    }))
}

#[utoipa::path(get, path = "/v1/locate/{owner}/{service}", tag = "federation",
    params(("owner" = String, Path, description = "The service's owner"), ("service" = String, Path, pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", description = "The service's name")),
    responses((status = 200, description = "The brokers serving the service, and its protocol", body = Located)))]
pub(super) async fn locate(
    State(shared): Sh,
    Path((owner, service)): Path<(String, String)>,
) -> Res<Json<Located>> {
    brume_api::rest::validate_service_name(&service).map_err(Fail)?;
    let located = shared.federation.locate(&shared, &owner, &service);
    if located.brokers.is_empty() {
        return Err(Fail::new(
            ErrorCode::UnknownService,
            format!("no known broker serves {owner}~{service}"),
        ));
    }
    Ok(Json(located))
}

/// `GET /v1/proofs/{sha256}`: a proof of cheat this broker published (its
/// JSON, as its digest names it), for peers to check before they ban.
#[utoipa::path(get, path = "/v1/proofs/{sha256}", tag = "federation",
    params(("sha256" = String, Path, description = "The proof's sha256, as its cheat notice names it")),
    responses((status = 200, description = "A proof of cheat this broker published", body = brume_api::receipt::CheatProof)))]
pub(super) async fn proof(State(shared): Sh, Path(sha256): Path<String>) -> Res<Response> {
    match shared.federation.proofs.get(&sha256) {
        Some(body) => {
            let mut resp = Response::new(Body::from(body));
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        None => Err(Fail::new(
            ErrorCode::NotFound,
            format!("no proof {sha256} here (a broker keeps its recent ones)"),
        )),
    }
}

/// The hop headers of an incoming request. A broker forwarding to us
/// names itself last; anyone else may not send them.
pub(super) fn incoming_hops(auth: &Auth, headers: &HeaderMap) -> Res<Option<Hops>> {
    let hops = Hops::parse(
        header_str(headers, fh::HOPS)?,
        header_str(headers, fh::TTL)?,
    )
    .map_err(bad)?;
    if let Some(h) = &hops
        && !h
            .sender()
            .is_some_and(|s| s.eq_ignore_ascii_case(&auth.name))
    {
        return Err(Fail::new(
            ErrorCode::Forbidden,
            format!(
                "{}: the last broker named must be the caller, who signs the request ({})",
                fh::HOPS,
                auth.name
            ),
        ));
    }
    Ok(hops)
}

/// A sync call to forward: where it goes at the peer, and what it carries.
pub(super) struct Call {
    /// `owner~name`.
    pub service: String,
    pub kind: ServiceKind,
    pub method: Method,
    /// After `/v1/functions/{service}/invoke` or `/fn/{service}`: the
    /// query, or the path and query.
    pub rest: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Forwards `call`, which this broker refused with `local`, to the best
/// peer serving it that is not on its hop list; `local` if there is none
/// to try. The answer is the peer's, with `x-brume-forwarded-by` and
/// `x-brume-broker`; what the peer billed this broker is billed to the
/// caller (`billing`, whose hold caps it) by a row of its own.
pub(super) async fn forward(
    shared: &Arc<Shared>,
    hops: Option<Hops>,
    call: Call,
    local: Fail,
    billing: Billing,
    cap: u128,
) -> Res<Response> {
    let Some(settings) = &shared.config.federation else {
        return Err(local);
    };
    let Some(node) = shared.federation.node().filter(|_| settings.forward) else {
        return Err(local);
    };
    let (next, peer) = match pick_peer(shared, settings, node, hops, &call.service) {
        Ok(p) => p,
        Err(why) => {
            count(shared, "refused");
            return Err(Fail::new(
                ErrorCode::NoBrokerAvailable,
                format!("{}; {why}", local.0.message),
            ));
        }
    };
    let client = shared
        .federation
        .client(shared, &peer.url, peer.tls_sha256.as_deref())
        .map_err(Fail)?;
    let target = match call.kind {
        // An oci service is refused as a call by the peer too.
        ServiceKind::Command | ServiceKind::Oci => {
            format!("/v1/functions/{}/invoke{}", call.service, call.rest)
        }
        ServiceKind::Http => format!("/fn/{}{}", call.service, call.rest),
    };
    let mut headers: HeaderMap = super::passed_on(&call.headers)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    put(&mut headers, fh::HOPS, &next.header());
    put(&mut headers, fh::TTL, &next.ttl.to_string());
    tracing::debug!(peer = %peer.broker, service = %call.service, "forwarding a call");
    let answer = client
        .relay(call.method, &target, headers, call.body)
        .await
        .map_err(|e| {
            count(shared, "unreachable");
            Fail::new(
                ErrorCode::PeerUnreachable,
                format!("forwarded to {} at {}: {e}", peer.broker, peer.url),
            )
        })?;
    count(shared, "answered");
    let charged = claimed(&answer, cap).map(|(work, cost, amount)| {
        let task = check_and_bill(shared.clone(), peer.clone(), work, cost, amount, billing);
        shared.tasks.spawn(task);
        amount
    });
    let (parts, body) = answer.into_parts();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = parts.headers;
    let h = resp.headers_mut();
    h.remove(axum::http::header::CONTENT_LENGTH);
    h.remove(axum::http::header::TRANSFER_ENCODING);
    h.remove(axum::http::header::CONNECTION);
    // Set by a peer that forwarded it on: who ran it is already there.
    if !h.contains_key(fh::BROKER) {
        put(h, fh::BROKER, &peer.broker);
    }
    let by = match h.get(fh::FORWARDED_BY).and_then(|v| v.to_str().ok()) {
        Some(further) => format!("{},{further}", shared.broker_id),
        None => shared.broker_id.clone(),
    };
    put(h, fh::FORWARDED_BY, &by);
    h.remove(crate::ledger::COST_HEADER);
    if let Some(amount) = charged {
        put(h, crate::ledger::COST_HEADER, &amount.to_string());
    }
    Ok(resp)
}

/// What the peer says it billed this broker for `answer`
/// (`x-brume-cost`), capped at `cap`, and the work id it ran it under;
/// the caller is billed that once [`check_and_bill`] has checked it
/// against the peer's row and its provider's signed receipt.
fn claimed(answer: &axum::http::Response<Bytes>, cap: u128) -> Option<(WorkId, u128, u128)> {
    let text = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok());
    let cost: u128 = text(crate::ledger::COST_HEADER)?.parse().ok()?;
    let work: WorkId = text(brume_api::headers::WORK_ID)?.parse().ok()?;
    Some((work, cost, cost.min(cap)))
}

/// Checks a forwarded call's bill, then bills the caller: the peer's row
/// for it must be sealed (its hashes recompute), name this broker as
/// requester and bill what the answer said, and its usage must be what the
/// provider signed in its receipt (an inclusion proof under the
/// provider's signed batch root). A bill that fails is not passed on: this
/// broker carries it, and it is logged and counted.
pub(crate) async fn check_and_bill(
    shared: Arc<Shared>,
    peer: Announcement,
    work: WorkId,
    cost: u128,
    amount: u128,
    billing: Billing,
) {
    let outcome = match check_bill(&shared, &peer, work, cost).await {
        Ok(()) => {
            let own = shared.identity.address().to_string();
            let row = shared.ledger.forwarded(
                &work.to_string(),
                &billing.requester,
                &peer.broker,
                &own,
                amount,
            );
            shared.ledger.append_sealed(work, row).await;
            "billed"
        }
        Err(why) => {
            tracing::warn!(peer = %peer.broker, %work, "a forwarded call's bill does not check: not billed to the caller: {why}");
            "unchecked_bill"
        }
    };
    count(&shared, outcome);
    drop(billing);
}

/// How long a provider may take to sign the batch holding a call's receipt
/// (it signs every 500 ms or 256 calls), with room to spare.
const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn check_bill(
    shared: &Arc<Shared>,
    peer: &Announcement,
    work: WorkId,
    cost: u128,
) -> Result<(), String> {
    let client = shared
        .federation
        .client(shared, &peer.url, peer.tls_sha256.as_deref())
        .map_err(|e| e.to_string())?;
    let verify = |m: &[u8], s: &[u8], a: &str| brume_identity::verify(m, s, a).is_ok();
    let end = std::time::Instant::now() + RECEIPT_WAIT;
    let mut wait = std::time::Duration::from_millis(100);
    let proof = loop {
        match client.receipt(work).await {
            Ok(p) => break p,
            Err(e) if std::time::Instant::now() >= end => return Err(format!("its receipt: {e}")),
            Err(_) => {}
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return Err("the broker is stopping".into()),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(2));
    };
    let provider = proof
        .check(verify)
        .map_err(|e| format!("its receipt: {e}"))?;
    let receipt = &proof.receipt;
    if receipt.work_id != work {
        return Err(format!("the receipt is for {}", receipt.work_id));
    }
    let path = format!("/v1/ledger/rows/{work}");
    let row = client
        .relay(Method::GET, &path, HeaderMap::new(), Bytes::new())
        .await
        .map_err(|e| format!("its row: {e}"))?;
    let row: brume_ledger::row::LedgerRow =
        serde_json::from_slice(row.body()).map_err(|e| format!("its row: {e}"))?;
    let row = brume_ledger::row::SealedRow::check(row).map_err(|e| format!("its row: {e}"))?;
    let d = &row.row().data;
    let problems: Vec<String> = [
        (!d.requester.eq_ignore_ascii_case(&shared.broker_id))
            .then(|| format!("the row bills {}, not this broker", d.requester)),
        (d.token_amount != cost)
            .then(|| format!("the row bills {}, the answer said {cost}", d.token_amount)),
        (d.usage.fuel != receipt.fuel).then(|| {
            format!(
                "the row bills {} fuel, the provider signed {}",
                d.usage.fuel, receipt.fuel
            )
        }),
        (!d.provider.eq_ignore_ascii_case(&provider))
            .then(|| format!("the row pays {}, the receipt is {provider}'s", d.provider)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The peer to send work for `service` to, and the hops to send with it;
/// why there is none otherwise.
fn pick_peer(
    shared: &Shared,
    settings: &crate::federation::FederationSettings,
    node: &brume_federation::Federation,
    hops: Option<Hops>,
    service: &str,
) -> Result<(Hops, Announcement), String> {
    let arrived = hops.unwrap_or_else(|| Hops::origin(settings.forward_ttl));
    let Some(next) = arrived.next(&shared.broker_id) else {
        return Err(format!(
            "not forwarded: the work has passed {} and its hops are spent",
            path(&arrived, &shared.broker_id)
        ));
    };
    let entries = node.directory().live(std::time::Instant::now());
    let here = (shared.config.latitude, shared.config.longitude);
    match brume_federation::hops::choose(&entries, service, &shared.broker_id, &next, here) {
        Some(peer) => Ok((next, peer.announcement.clone())),
        None => Err(format!(
            "no other known broker serves {service} (tried {})",
            path(&arrived, &shared.broker_id)
        )),
    }
}

/// Whether this broker can take a job now: a provider connected and the
/// batch queue under the overload depth.
fn job_room(shared: &Shared) -> bool {
    let (providers, queued) = shared
        .lifecycle
        .read(|s| (s.providers.len(), s.queued(crate::work::Class::Batch)));
    providers > 0 && queued < shared.config.overload_queue_depth
}

/// A job this broker may offer a peer.
pub(super) struct JobOffer<'a> {
    pub spec: &'a brume_api::rest::JobSpec,
    /// The service as resolved here (`owner~name@N`), if it names one.
    pub service: Option<&'a str>,
    pub requester: &'a str,
    pub hold: Option<Arc<crate::escrow::Hold>>,
    /// The most it may cost here.
    pub cap: u128,
}

/// Offers a job naming a service to a peer when this broker has no room
/// for it ([`forward_job`]); `None`: queue it here.
pub(super) async fn offer_job(
    shared: &Arc<Shared>,
    hops: Option<Hops>,
    offer: JobOffer<'_>,
) -> Option<Response> {
    let service = offer.service?;
    if job_room(shared) {
        return None;
    }
    let name = service
        .split_once(brume_api::names::VERSION_SEP)
        .map_or(service, |(n, _)| n)
        .to_string();
    forward_job(
        shared,
        hops,
        offer.spec.clone(),
        name,
        offer.requester,
        offer.hold,
        offer.cap,
    )
    .await
}

/// A job this broker has no room for, offered to the best peer serving
/// `service` (`owner~name`): the peer's 202 answer once it took it (the
/// job keeps the peer's id; this broker relays it and bills the caller
/// when it ends), or `None` to queue it here (no peer, or the peer did not
/// take it).
async fn forward_job(
    shared: &Arc<Shared>,
    hops: Option<Hops>,
    mut spec: brume_api::rest::JobSpec,
    service: String,
    requester: &str,
    hold: Option<Arc<crate::escrow::Hold>>,
    cap: u128,
) -> Option<Response> {
    let settings = shared.config.federation.as_ref()?;
    let node = shared.federation.node().filter(|_| settings.forward)?;
    let jobs = shared.federation.jobs()?;
    let (next, peer) = pick_peer(shared, settings, node, hops, &service).ok()?;
    let client = shared
        .federation
        .client(shared, &peer.url, peer.tls_sha256.as_deref())
        .ok()?;
    spec.service = Some(service);
    let body = Bytes::from(serde_json::to_vec(&spec).ok()?);
    let mut headers = HeaderMap::new();
    put(&mut headers, "content-type", "application/json");
    put(&mut headers, fh::HOPS, &next.header());
    put(&mut headers, fh::TTL, &next.ttl.to_string());
    let answer = match client.relay(Method::POST, "/v1/jobs", headers, body).await {
        Ok(a) if a.status() == axum::http::StatusCode::ACCEPTED => a,
        Ok(a) => {
            tracing::warn!(peer = %peer.broker, status = %a.status(), "a peer did not take a forwarded job: queued here");
            return None;
        }
        Err(e) => {
            tracing::warn!(peer = %peer.broker, "a peer did not take a forwarded job: {e}: queued here");
            return None;
        }
    };
    let info: brume_api::rest::JobInfo = serde_json::from_slice(answer.body()).ok()?;
    let job = crate::federation::jobs::ForwardedJob {
        id: info.id,
        requester: requester.to_string(),
        peer: peer.broker.clone(),
        url: peer.url.clone(),
        tls_sha256: peer.tls_sha256.clone(),
        cap,
        billed: false,
    };
    if let Err(e) = jobs.record(job, hold).await {
        // The peer runs it but this broker could not note it: cancel it there.
        tracing::error!(job = %info.id, "record a forwarded job: {e}: cancelling it at the peer");
        let path = format!("/v1/jobs/{}", info.id);
        let _ = client
            .relay(Method::DELETE, &path, HeaderMap::new(), Bytes::new())
            .await;
        return None;
    }
    count(shared, "job");
    shared
        .tasks
        .spawn(crate::federation::jobs::watch(shared.clone(), info.id));
    let mut resp = (axum::http::StatusCode::ACCEPTED, Json(info.clone())).into_response();
    let h = resp.headers_mut();
    put(h, "location", &format!("/v1/jobs/{}", info.id));
    put(h, fh::BROKER, &peer.broker);
    put(h, fh::FORWARDED_BY, &shared.broker_id);
    Some(resp)
}

/// Relays requests for a job this broker forwarded (`GET /v1/jobs/{id}`,
/// `/events`, `/result`, `DELETE`) to the broker that runs it, for the
/// caller that submitted it; everything else goes on.
pub(super) async fn relay_jobs(State(shared): Sh, req: Request, next: Next) -> Response {
    let Some(job) = forwarded_job(&shared, req.uri().path()) else {
        return next.run(req).await;
    };
    let (mut parts, _) = req.into_parts();
    match relay_job(&shared, &mut parts, job).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

/// The forwarded job a path names, if it names one with a relayed route.
fn forwarded_job(shared: &Shared, path: &str) -> Option<crate::federation::jobs::ForwardedJob> {
    let rest = path.strip_prefix("/v1/jobs/")?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(tail, "" | "events" | "result") {
        return None;
    }
    shared.federation.jobs()?.get(id.parse().ok()?)
}

async fn relay_job(
    shared: &Arc<Shared>,
    parts: &mut axum::http::request::Parts,
    job: crate::federation::jobs::ForwardedJob,
) -> Res<Response> {
    use axum::extract::FromRequestParts as _;
    let auth = Auth::from_request_parts(parts, shared).await?;
    match parts.method {
        Method::GET => {
            auth.require_any(&[brume_api::rest::Scope::Jobs, brume_api::rest::Scope::Read])?
        }
        Method::DELETE => auth.require(brume_api::rest::Scope::Jobs)?,
        _ => {
            return Err(Fail::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            ));
        }
    }
    if !auth.sees(&job.requester) {
        return Err(Fail::new(ErrorCode::NotFound, format!("no job {}", job.id)));
    }
    let client = shared
        .federation
        .client(shared, &job.url, job.tls_sha256.as_deref())
        .map_err(Fail)?;
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let mut headers = HeaderMap::new();
    for name in ["accept", "last-event-id"] {
        if let Some(v) = parts.headers.get(name) {
            headers.insert(HeaderName::from_static(name), v.clone());
        }
    }
    let (status, peer_headers, body) = client
        .relay_stream(parts.method.clone(), &target, headers)
        .await
        .map_err(|e| {
            Fail::new(
                ErrorCode::PeerUnreachable,
                format!(
                    "job {} runs at broker {} ({}): {e}",
                    job.id, job.peer, job.url
                ),
            )
        })?;
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = status;
    for name in ["content-type", "cache-control", "retry-after"] {
        if let Some(v) = peer_headers.get(name) {
            resp.headers_mut()
                .insert(HeaderName::from_static(name), v.clone());
        }
    }
    put(resp.headers_mut(), fh::BROKER, &job.peer);
    put(resp.headers_mut(), fh::FORWARDED_BY, &shared.broker_id);
    Ok(resp)
}

/// The brokers passed and this one, for messages.
fn path(hops: &Hops, me: &str) -> String {
    let mut all = hops.brokers.clone();
    all.push(me.to_ascii_lowercase());
    all.join(" → ")
}

fn count(shared: &Shared, outcome: &str) {
    shared
        .metrics
        .forwards
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}
