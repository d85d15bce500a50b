//! `/v1/leases`: create, list, read, top up and stop leases (see
//! `leases/`), and `/lease/{id}/…`: their traffic.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use brume_api::lease::{LeaseEvents, LeaseInfo, LeaseList, LeaseSpec, LeaseState, TopUp};
use brume_api::rest::Scope;
use brume_api::{ErrorCode, ServiceKind};
use bytes::Bytes;

use super::auth::{Auth, MaybeAuth};
use super::{Fail, Res, Sh, body_or_fail};
use crate::leases::{Lease, NewLease};

/// A decimal amount of base units, at least 1.
fn amount(what: &str, s: &str) -> Res<u128> {
    s.parse::<u128>().ok().filter(|&n| n > 0).ok_or_else(|| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("{what}: {s:?} is not a positive whole number of base units"),
        )
    })
}

fn json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Res<T> {
    let body = body_or_fail(body, "body")?;
    serde_json::from_slice(&body)
        .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("body: {e}")))
}

/// Lease `id` if `auth` may see it (its account, or `admin`); another
/// account's answers 404, like a job's.
fn visible(shared: &crate::Shared, auth: &Auth, id: &str) -> Res<Lease> {
    shared
        .leases
        .get(id)
        .filter(|l| l.account == auth.name || auth.scopes.contains(&Scope::Admin))
        .ok_or_else(|| Fail(crate::leases::not_found(id)))
}

#[utoipa::path(post, path = "/v1/leases", tag = "leases", request_body = LeaseSpec,
    responses((status = 201, description = "The lease, starting", body = LeaseInfo)),
    security(("api_key" = [])))]
pub(super) async fn create_lease(
    State(shared): Sh,
    auth: Auth,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    auth.require(Scope::Jobs)?;
    let spec: LeaseSpec = json(body)?;
    let deposit = amount("deposit", &spec.deposit)?;
    let resolved = super::services::resolve(&shared, &spec.service, &auth.name)?;
    if resolved.info.kind != ServiceKind::Http {
        return Err(Fail::new(
            ErrorCode::WrongKind,
            format!("{}: a lease runs an http service", spec.service),
        ));
    }
    let max = shared.config.leases.max_per_account;
    if shared.leases.live_of(&auth.name) >= max {
        return Err(Fail::new(
            ErrorCode::Conflict,
            format!("this account keeps {max} leases already: stop one first"),
        ));
    }
    let admission =
        super::admission::admit(&shared, &auth.name, None, None, &resolved.info.digest)?;
    let (rate_per_s, tier) = shared
        .ledger
        .lease_rate(&admission)
        .map_err(|e| Fail::new(ErrorCode::Internal, format!("pricing the lease: {e}")))?;
    let hold = super::admission::hold_amount(&shared, &auth.name, deposit).await?;
    let now = shared.leases.clock.now_ms();
    let lease = Lease::new(
        NewLease {
            account: auth.name.clone(),
            service: resolved.reference,
            digest: resolved.info.digest,
            developer: resolved.developer,
            tier,
            rate_per_s,
            deposit,
            private: spec.private,
        },
        now,
    );
    let id = lease.id.clone();
    let info = lease.info();
    shared.leases.insert(lease).await.map_err(Fail)?;
    shared.leases.hold(&id, hold);
    crate::leases::start_unit(&shared, &id);
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

#[utoipa::path(get, path = "/v1/leases", tag = "leases",
    responses((status = 200, description = "The account's leases, newest first", body = LeaseList)),
    security(("api_key" = [])))]
pub(super) async fn list_leases(State(shared): Sh, auth: Auth) -> Res<axum::Json<LeaseList>> {
    auth.require_any(&[Scope::Jobs, Scope::Read])?;
    let leases = shared
        .leases
        .of(&auth.name)
        .iter()
        .map(Lease::info)
        .collect();
    Ok(axum::Json(LeaseList { leases }))
}

#[utoipa::path(get, path = "/v1/leases/{id}", tag = "leases", params(("id" = String, Path, description = "The lease id")),
    responses((status = 200, description = "The lease", body = LeaseInfo)),
    security(("api_key" = [])))]
pub(super) async fn get_lease(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<LeaseInfo>> {
    auth.require_any(&[Scope::Jobs, Scope::Read])?;
    Ok(axum::Json(visible(&shared, &auth, &id)?.info()))
}

#[utoipa::path(get, path = "/v1/leases/{id}/events", tag = "leases", params(("id" = String, Path, description = "The lease id")),
    responses((status = 200, description = "Its most recent events, oldest first", body = LeaseEvents)),
    security(("api_key" = [])))]
pub(super) async fn lease_events(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<LeaseEvents>> {
    auth.require_any(&[Scope::Jobs, Scope::Read])?;
    let events = visible(&shared, &auth, &id)?.events.into_iter().collect();
    Ok(axum::Json(LeaseEvents { events }))
}

#[utoipa::path(post, path = "/v1/leases/{id}/top-up", tag = "leases", params(("id" = String, Path, description = "The lease id")),
    request_body = TopUp,
    responses((status = 200, description = "The lease, resumed if it was halted", body = LeaseInfo)),
    security(("api_key" = [])))]
pub(super) async fn top_up_lease(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Res<axum::Json<LeaseInfo>> {
    auth.require(Scope::Jobs)?;
    visible(&shared, &auth, &id)?;
    let top: TopUp = json(body)?;
    let added = amount("amount", &top.amount)?;
    let hold = super::admission::hold_amount(&shared, &auth.name, added).await?;
    let resumed = shared
        .leases
        .update(&id, |l, now| l.top_up(added, now))
        .await
        .map_err(Fail)?;
    shared.leases.hold(&id, hold);
    if resumed {
        crate::leases::start_unit(&shared, &id);
    }
    Ok(axum::Json(visible(&shared, &auth, &id)?.info()))
}

#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "leases", params(("id" = String, Path, description = "The lease id")),
    responses((status = 200, description = "The lease, stopped (what ran is billed)", body = LeaseInfo)),
    security(("api_key" = [])))]
pub(super) async fn stop_lease(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<LeaseInfo>> {
    auth.require(Scope::Jobs)?;
    visible(&shared, &auth, &id)?;
    crate::leases::stop(&shared, &id).await.map_err(Fail)?;
    Ok(axum::Json(visible(&shared, &auth, &id)?.info()))
}

/// `ANY /lease/{id}/{*path}`: a call of the lease's service on its
/// provider, billed per call to the lease's account. 402 `lease_halted`
/// while its escrow is dry, 503 while it starts or moves.
pub(super) async fn lease_call(
    State(shared): Sh,
    MaybeAuth(auth): MaybeAuth,
    Path((id, path)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    let missing = || Fail(crate::leases::not_found(&id));
    let l = shared.leases.get(&id).ok_or_else(missing)?;
    if l.private
        && !auth
            .as_ref()
            .is_some_and(|a| a.name == l.account || a.scopes.contains(&Scope::Admin))
    {
        return Err(Fail::new(
            ErrorCode::Unauthorized,
            "this lease is private: call it with its account's API key",
        ));
    }
    let provider = match (l.state, &l.provider) {
        (LeaseState::Running, Some(p)) => p.clone(),
        (LeaseState::Halted, _) => {
            return Err(Fail::new(
                ErrorCode::LeaseHalted,
                format!("lease {id} ran out of escrow: top it up to resume it"),
            ));
        }
        (LeaseState::Stopped, _) => return Err(missing()),
        _ => {
            return Err(Fail::new(
                ErrorCode::ProviderUnavailable,
                format!("lease {id} is starting on a provider; try again shortly"),
            ));
        }
    };
    // Billed to the lease's account, as its call.
    let payer = Auth {
        name: l.account.clone(),
        scopes: vec![Scope::Invoke],
        anonymous: false,
    };
    let (mut spec, mut billing, body, verify) = super::invoke::sync_work(
        &shared,
        payer,
        &HeaderMap::new(),
        &l.service,
        ServiceKind::Http,
        body,
    )?;
    spec.only = Some(provider);
    billing.hold =
        super::admission::reserve(&shared, &billing, &spec.limits, 0, verify.units().into())
            .await?;
    let (request, line) = super::invoke::http_request(&method, &path, query, &headers, body);
    billing.request_line = format!("{method} /lease/{id}{line} HTTP/1.1");
    spec.http = Some(request);
    Ok(super::invoke::run_sync(&shared, spec, billing, verify)
        .await
        .response())
}

/// `ANY /lease/{id}` and `/lease/{id}/`.
pub(super) async fn lease_call_root(
    state: Sh,
    auth: MaybeAuth,
    Path(id): Path<String>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<Response> {
    lease_call(
        state,
        auth,
        Path((id, String::new())),
        method,
        query,
        headers,
        body,
    )
    .await
}
