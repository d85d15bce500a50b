//! The HTTP edge (axum): one file per resource. Handlers parse and check
//! the request, call the broker's components and shape the response; they
//! hold no SQL and no scheduling. Every error is `brume_api::ApiError` as
//! JSON with the status its code implies ([`Fail`]).

mod admission;
mod auth;
mod chain;
mod console;
mod data;
mod federation;
mod invoke;
mod jobs;
mod keys;
mod lambda;
mod lambda_functions;
mod leases;
mod ledger;
mod offers;
pub mod openapi;
mod params;
mod provider;
mod services;
mod status;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use brume_api::{ApiError, ErrorCode};
use bytes::Bytes;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use crate::Shared;
use crate::metrics::{RequestLabels, RouteLabels};

pub(crate) type Sh = State<Arc<Shared>>;

/// An error response.
#[derive(Debug)]
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

impl From<crate::registry::ChangeError> for Fail {
    fn from(e: crate::registry::ChangeError) -> Fail {
        match e {
            crate::registry::ChangeError::Refused(e) => Fail(e),
            crate::registry::ChangeError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self.0)).into_response();
        if self.0.code == ErrorCode::Overloaded {
            resp.headers_mut().insert(
                "retry-after",
                HeaderValue::from(self.0.retry_after_s.unwrap_or(1)),
            );
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

/// Every route, each described by its handler's `#[utoipa::path]`; the
/// document they make is [`openapi::document`].
fn api(c: &crate::BrokerConfig) -> OpenApiRouter<Arc<Shared>> {
    let module_limit = DefaultBodyLimit::max(c.max_module_bytes);
    let input_limit = DefaultBodyLimit::max(c.max_limits.max_input_bytes as usize);
    let spec_limit = DefaultBodyLimit::max(c.max_spec_bytes);
    // `/fn/` takes any method and any path below the service: axum's
    // wildcard is not OpenAPI's, so these three are routed by hand and
    // described by `FnRoutes`.
    let fn_routes = OpenApiRouter::with_openapi(FnRoutes::openapi())
        .route(
            "/fn/{service}",
            any(invoke::call_http_root).layer(input_limit),
        )
        .route(
            "/fn/{service}/",
            any(invoke::call_http_root).layer(input_limit),
        )
        .route(
            "/fn/{service}/{*path}",
            any(invoke::call_http).layer(input_limit),
        );
    OpenApiRouter::new()
        .routes(routes!(services::publish, services::list_services).layer(module_limit))
        .routes(routes!(services::get_service, services::retire_service))
        .routes(routes!(services::service_versions))
        .routes(routes!(services::move_service))
        .routes(routes!(services::register_alias))
        .routes(routes!(services::get_alias))
        .routes(routes!(services::get_blob))
        .routes(routes!(invoke::invoke).layer(input_limit))
        .merge(fn_routes)
        .routes(routes!(jobs::submit_job, jobs::list_jobs).layer(spec_limit))
        .routes(routes!(jobs::get_job, jobs::cancel_job))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::job_result))
        .routes(routes!(leases::create_lease, leases::list_leases).layer(spec_limit))
        .routes(routes!(leases::get_lease, leases::stop_lease))
        .routes(routes!(leases::lease_events))
        .routes(routes!(leases::top_up_lease))
        .routes(routes!(data::upload_data).layer(module_limit))
        .routes(routes!(data::job_output))
        .routes(routes!(jobs::confirm_job))
        .routes(routes!(jobs::reject_job))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(invoke::receipt))
        .routes(routes!(ledger::ledger_rows))
        .routes(routes!(ledger::ledger_row))
        .routes(routes!(ledger::ledger_row_status))
        .routes(routes!(status::status))
        .routes(routes!(status::settlement_health))
        .routes(routes!(status::settlement_run))
        .routes(routes!(status::providers))
        .routes(routes!(offers::offers))
        .routes(routes!(status::metrics))
        .routes(routes!(provider::connect))
        .routes(routes!(provider::probe))
        .routes(routes!(openapi::openapi_json))
        .merge(chain::routes())
        .merge(federation::routes())
        .merge(lambda::routes(c.max_module_bytes, input_limit))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(invoke::call_http_root, invoke::call_http))]
struct FnRoutes;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let (routes, _) = api(&shared.config).split_for_parts();
    // A lease's traffic, like `/fn/`, takes any method and path; it is
    // described in docs/rest-api.md, not fuzzed.
    let input_limit = DefaultBodyLimit::max(shared.config.max_limits.max_input_bytes as usize);
    let lease_routes = Router::new()
        .route("/lease/{id}", any(leases::lease_call_root))
        .route("/lease/{id}/", any(leases::lease_call_root))
        .route("/lease/{id}/{*path}", any(leases::lease_call))
        .layer(input_limit);
    routes
        .merge(lease_routes)
        .merge(console::routes())
        .fallback(|| async { Fail::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            Fail::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            federation::relay_jobs,
        ))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::verify_signed,
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

/// The request header naming the trust tiers a call may run on (`1,2`).
const TIERS_HEADER: &str = "x-brume-tiers";

/// `1,2,…` as a tier set.
fn parse_tiers(v: &str) -> Result<u8, crate::trust::TierError> {
    let tiers = v
        .split(',')
        .map(|t| {
            Some(t)
                .filter(|t| t.len() == 1)
                .and_then(|t| t.parse::<u8>().ok())
                .ok_or(())
                .map_err(|_| crate::trust::TierError::NotATier(t.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if tiers.len() > 4 {
        return Err(crate::trust::TierError::NotATier(v.to_string()));
    }
    crate::trust::tier_set(&tiers)
}

/// The caller's headers that may go on to whoever runs the call (a
/// provider, a peer broker): never its credentials, the host, hop-by-hop
/// headers or forwarding hops (a forwarder sets its own).
fn passed_on(headers: &HeaderMap) -> impl Iterator<Item = (&axum::http::HeaderName, &HeaderValue)> {
    use brume_api::federation::headers as fh;
    headers.iter().filter(|(n, _)| {
        !matches!(
            n.as_str(),
            "authorization"
                | "host"
                | "connection"
                | "content-length"
                | "transfer-encoding"
                | "keep-alive"
                | "upgrade"
                | fh::HOPS
                | fh::TTL
        )
    })
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
