//! `/v1/services` and `/v1/blobs`: publishing (validated, optionally signed)
//! and reading services and their modules.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use brume_api::names::{AliasInfo, AliasRequest, MoveRequest, ServiceRef, VersionSel};
use brume_api::rest::{Scope, ServiceInfo, ServiceList};
use brume_api::{ErrorCode, ServiceKind};
use bytes::Bytes;
use serde::Deserialize;
use sha2::Digest as _;

use super::auth::Auth;
use super::auth::{Signer, check_key};
use super::{Fail, Res, Sh, body_or_fail, header_str};
use crate::Shared;
use crate::registry::Resolved;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PublishQuery {
    /// The service to publish a new version of: `name` or `owner~name`.
    name: String,
    /// `command` (the default) or `http`.
    kind: Option<ServiceKind>,
}

impl PublishQuery {
    pub(super) fn new(name: String, kind: ServiceKind) -> PublishQuery {
        PublishQuery {
            name,
            kind: Some(kind),
        }
    }
}

/// The developer who signed an upload (`0x` address), with
/// [`SIGNATURE_HEADER`].
pub(crate) const DEVELOPER_HEADER: &str = "x-brume-developer";
/// The developer's EIP-191 signature over
/// `brume_api::wire::module_message(digest)`: `0x` + 130 hex digits.
pub(crate) const SIGNATURE_HEADER: &str = "x-brume-module-signature";

/// An upload's claimed developer signature: both headers or neither.
pub(super) fn claimed_signature(headers: &HeaderMap) -> Res<Option<(String, Vec<u8>)>> {
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
pub(super) fn check_module_signature(
    developer: &str,
    signature: &[u8],
    digest: &str,
) -> Res<String> {
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

#[utoipa::path(post, path = "/v1/services", tag = "services",
    params(PublishQuery,
        ("x-brume-developer" = Option<String>, Header, description = "The developer who signed the module's digest (`0x` address); with `x-brume-module-signature`"),
        ("x-brume-module-signature" = Option<String>, Header, description = "The developer's EIP-191 signature over the module message: `0x` + 130 hex digits")),
    request_body(content = brume_api::rest::Binary, content_type = "application/octet-stream", description = "The module: a WASI command or a `wasi:http` proxy component (binary, or text format); with `kind=oci`, an OCI image layout as a tar"),
    responses((status = 201, description = "Published: the new version", body = ServiceInfo)),
    security(("api_key" = [])))]
pub(super) async fn publish(
    State(shared): Sh,
    auth: Auth,
    query: Result<Query<PublishQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<(StatusCode, axum::Json<ServiceInfo>)> {
    auth.require(Scope::Publish)?;
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!(
                "query: {} (expected ?name=NAME&kind=command|http|oci)",
                e.body_text()
            ),
        )
    })?;
    let target = ServiceRef::parse(&q.name).map_err(Fail)?;
    if target.version != VersionSel::Latest {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            format!(
                "name: {} names a version; versions are numbered by the broker, publish {} instead",
                q.name,
                ServiceRef {
                    version: VersionSel::Latest,
                    ..target.clone()
                }
            ),
        ));
    }
    let claimed = claimed_signature(&headers)?;
    let bytes = body_or_fail(body, "module")?;
    if bytes.is_empty() {
        return Err(Fail::new(ErrorCode::InvalidModule, "the module is empty"));
    }
    let kind = q.kind.unwrap_or(ServiceKind::Command);
    let (digest, stored) = checked(&shared, bytes, kind).await?;
    let signed = match claimed {
        None => None,
        Some((developer, signature)) => {
            let signer = check_module_signature(&developer, &signature, &digest)?;
            Some((signer, signature))
        }
    };
    let info = ServiceInfo {
        name: target.name.clone(),
        owner: String::new(),
        version: 0,
        retired: false,
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
    shared.registry.put_module(digest.clone(), stored).await?;
    // Owner-only, a new version each time; the royalty payee is the
    // signer if any, else the owner (see `registry`).
    let info = shared
        .registry
        .publish(
            &auth.name,
            target.owner.as_deref(),
            info,
            signed.map(|(_, signature)| signature),
        )
        .await?;
    tracing::info!(
        service = %info.reference(), digest = %info.digest,
        developer = info.developer_address.as_deref().unwrap_or("(unsigned)"),
        "service published"
    );
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// Loads `bytes` in the sandbox (on a blocking thread) to check it is a
/// module of `kind`; returns its digest.
/// A module or image checked for its kind: its digest and the bytes to
/// store (text modules, `.wat`, as the binary the digest names).
async fn checked(
    shared: &std::sync::Arc<Shared>,
    bytes: Bytes,
    kind: ServiceKind,
) -> Res<(String, Bytes)> {
    if kind == ServiceKind::Oci {
        return Ok((validate_image(&bytes).await?, bytes));
    }
    let digest = validate(shared, &bytes, kind).await?;
    if bytes.starts_with(b"\0asm") {
        return Ok((digest, bytes));
    }
    let binary = wat::parse_bytes(&bytes)
        .map(|c| c.into_owned())
        .map_err(|e| Fail::new(ErrorCode::InvalidModule, e.to_string()))?;
    Ok((digest, Bytes::from(binary)))
}

/// Checks an OCI image layout tar (every blob against its digest, on a
/// blocking thread); its digest is the tar's sha256.
async fn validate_image(bytes: &Bytes) -> Res<String> {
    let b = bytes.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        brume_oci::Image::parse(&b, b.len() as u64)
            .map(|i| (i.manifest_digest, hex::encode(sha2::Sha256::digest(&b))))
    })
    .await
    .map_err(|e| Fail::new(ErrorCode::Internal, format!("validation task: {e}")))?;
    let (manifest, digest) =
        parsed.map_err(|e| Fail::new(ErrorCode::InvalidModule, e.to_string()))?;
    tracing::debug!(%manifest, %digest, "image layout checked");
    Ok(digest)
}

async fn validate(
    shared: &std::sync::Arc<Shared>,
    bytes: &Bytes,
    kind: ServiceKind,
) -> Res<String> {
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
    Ok(digest.to_string())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only this namespace's services.
    owner: Option<String>,
}

/// The latest version of every service (`?owner=` for one namespace).
#[utoipa::path(get, path = "/v1/services", tag = "services", params(ListQuery),
    responses((status = 200, description = "The latest version of every service", body = ServiceList)),
    security(("api_key" = [])))]
pub(super) async fn list_services(
    State(shared): Sh,
    _auth: Auth,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Res<axum::Json<ServiceList>> {
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("query: {} (expected ?owner=NAMESPACE)", e.body_text()),
        )
    })?;
    Ok(axum::Json(ServiceList {
        services: shared.registry.list(q.owner.as_deref()),
    }))
}

/// Resolves a reference for the caller (see `brume_api::names`).
pub(super) fn resolve(shared: &Shared, reference: &str, caller: &str) -> Res<Resolved> {
    shared.registry.resolve(reference, caller).map_err(Fail)
}

#[utoipa::path(get, path = "/v1/services/{service}", tag = "services", params(super::params::ServicePath),
    responses((status = 200, description = "The version the reference names (the latest by default)", body = ServiceInfo)),
    security(("api_key" = [])))]
pub(super) async fn get_service(
    State(shared): Sh,
    auth: Auth,
    Path(reference): Path<String>,
) -> Res<axum::Json<ServiceInfo>> {
    resolve(&shared, &reference, &auth.name).map(|r| axum::Json(r.info))
}

/// `GET /v1/services/{ref}/versions`: every version, oldest first.
#[utoipa::path(get, path = "/v1/services/{service}/versions", tag = "services", params(super::params::ServicePath),
    responses((status = 200, description = "Every version, oldest first", body = ServiceList)),
    security(("api_key" = [])))]
pub(super) async fn service_versions(
    State(shared): Sh,
    auth: Auth,
    Path(reference): Path<String>,
) -> Res<axum::Json<ServiceList>> {
    let services = shared
        .registry
        .versions(&reference, &auth.name)
        .map_err(Fail)?;
    Ok(axum::Json(ServiceList { services }))
}

/// `DELETE /v1/services/{ref}`: retires the service, or one version
/// (`name@N`). Its owner's `publish` key, or `admin`.
#[utoipa::path(delete, path = "/v1/services/{service}", tag = "services", params(super::params::ServicePath),
    responses((status = 200, description = "The versions retired", body = ServiceList)),
    security(("api_key" = [])))]
pub(super) async fn retire_service(
    State(shared): Sh,
    auth: Auth,
    Path(reference): Path<String>,
) -> Res<axum::Json<ServiceList>> {
    auth.require_any(&[Scope::Publish, Scope::Admin])?;
    let admin = auth.scopes.contains(&Scope::Admin);
    let services = shared
        .registry
        .retire(&reference, &auth.name, admin)
        .await?;
    tracing::info!(service = %reference, by = %auth.name, "service retired");
    Ok(axum::Json(ServiceList { services }))
}

/// `POST /v1/services/{ref}/move` (`admin`): moves a service, every
/// version, to another namespace.
#[utoipa::path(post, path = "/v1/services/{service}/move", tag = "services", params(super::params::ServicePath),
    request_body = MoveRequest,
    responses((status = 200, description = "The versions moved", body = ServiceList)),
    security(("api_key" = [])))]
pub(super) async fn move_service(
    State(shared): Sh,
    auth: Auth,
    Path(reference): Path<String>,
    body: Result<axum::Json<MoveRequest>, JsonRejection>,
) -> Res<axum::Json<ServiceList>> {
    auth.require(Scope::Admin)?;
    let axum::Json(req) = body.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("body: {}", e.body_text()),
        )
    })?;
    let services = shared.registry.move_service(&reference, &req.owner).await?;
    tracing::info!(service = %reference, to = %req.owner, "service moved");
    Ok(axum::Json(ServiceList { services }))
}

/// `POST /v1/aliases`: registers the caller's alias (`publish`).
#[utoipa::path(post, path = "/v1/aliases", tag = "services", request_body = AliasRequest,
    responses((status = 201, description = "The alias, now the caller's namespace name", body = AliasInfo)),
    security(("api_key" = [])))]
pub(super) async fn register_alias(
    State(shared): Sh,
    auth: Auth,
    body: Result<axum::Json<AliasRequest>, JsonRejection>,
) -> Res<(StatusCode, axum::Json<AliasInfo>)> {
    auth.require(Scope::Publish)?;
    let axum::Json(req) = body.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("body: {}", e.body_text()),
        )
    })?;
    let info = shared
        .registry
        .register_alias(&auth.name, &req.alias)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// `GET /v1/aliases/{alias}`.
#[utoipa::path(get, path = "/v1/aliases/{alias}", tag = "services",
    params(("alias" = String, Path, description = "An alias")),
    responses((status = 200, description = "The account the alias names", body = AliasInfo)),
    security(("api_key" = [])))]
pub(super) async fn get_alias(
    State(shared): Sh,
    _auth: Auth,
    Path(alias): Path<String>,
) -> Res<axum::Json<AliasInfo>> {
    shared
        .registry
        .alias(&alias)
        .map(axum::Json)
        .ok_or_else(|| Fail::new(ErrorCode::NotFound, format!("no alias {alias:?}")))
}

/// Module bytes by digest: for requesters (API key) and providers (the
/// session's blob token).
#[utoipa::path(get, path = "/v1/blobs/{digest}", tag = "services",
    params(("digest" = String, Path, pattern = "^(?:sha256:)?[0-9a-fA-F]{64}$", description = "A module's sha256: 64 hex digits")),
    responses((status = 200, description = "The module's bytes", body = brume_api::rest::Binary, content_type = "application/wasm")),
    security(("api_key" = [])))]
pub(super) async fn get_blob(
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
        Some(t) if shared.registry.may_download(t) => {}
        Some(t) => {
            check_key(&shared, t).await?;
        }
    }
    let digest = brume_api::parse_digest(&digest)
        .map(hex::encode)
        .map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("digest: {e}")))?;
    match shared.registry.module(digest.clone()).await? {
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
