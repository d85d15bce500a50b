//! `/v1/status`, `/v1/providers`, `/metrics` and `/v1/settlement`.

use axum::extract::State;
use axum::response::IntoResponse;
use brume_api::rest::{ProviderInfo, ProviderList};

use super::auth::Auth;
use super::{Fail, Res, Sh};

#[utoipa::path(get, path = "/v1/settlement", tag = "status",
    responses((status = 200, description = "How settlement is going", body = brume_api::rest::SettlementHealth)))]
pub(super) async fn settlement_health(
    State(shared): Sh,
) -> axum::Json<brume_api::rest::SettlementHealth> {
    axum::Json(shared.settlement.health())
}

/// Runs settlement now. Any key may ask: a run only settles what is owed,
/// and runs never overlap.
#[utoipa::path(post, path = "/v1/settlement/run", tag = "status",
    responses((status = 200, description = "Settles every unsettled row now (`admin`)", body = brume_settle::Report)),
    security(("api_key" = [])))]
pub(super) async fn settlement_run(
    State(shared): Sh,
    auth: Auth,
) -> Res<axum::Json<brume_settle::Report>> {
    auth.require(brume_api::rest::Scope::Admin)?;
    crate::settlement::run_once(&shared)
        .await
        .map(axum::Json)
        .map_err(|e| Fail(crate::settlement::fail(&e)))
}

#[utoipa::path(get, path = "/v1/status", tag = "status",
    responses((status = 200, description = "The broker's status", body = brume_api::rest::Status)))]
pub(super) async fn status(State(shared): Sh) -> axum::Json<brume_api::rest::Status> {
    axum::Json(shared.status())
}

#[utoipa::path(get, path = "/v1/providers", tag = "status",
    responses((status = 200, description = "The providers connected now", body = ProviderList)),
    security(("api_key" = [])))]
pub(super) async fn providers(State(shared): Sh, _auth: Auth) -> axum::Json<ProviderList> {
    axum::Json(ProviderList {
        providers: connected(&shared),
    })
}

/// The providers connected now, by address (`/v1/providers`, the console).
pub(super) fn connected(shared: &crate::Shared) -> Vec<ProviderInfo> {
    let mut providers: Vec<ProviderInfo> = shared.lifecycle.read(|s| {
        s.providers
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
                claimed_mips: p.claimed_mips,
                claimed_memory_bytes: p.claimed_memory_bytes,
                measured_mips: p.measured_mips,
                measured_at_ms: p.measured_at_ms,
                measured_mbps: p.measured_mbps,
                price_ask: p.price_ask,
                allowed_services: p.caps.allowed_services.clone(),
                modules_cached: p.cached.len() as u64,
                work_done: p.work_done,
                connected_at_ms: p.connected_at_ms,
                stake: p.stake.to_string(),
                staked: p.staked,
            })
            .collect()
    });
    providers.sort_by(|a, b| a.address.cmp(&b.address));
    providers
}

#[utoipa::path(get, path = "/metrics", tag = "status",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", body = String, content_type = "application/openmetrics-text")))]
pub(super) async fn metrics(State(shared): Sh) -> impl IntoResponse {
    shared.federation.update_metrics(&shared.metrics);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}
