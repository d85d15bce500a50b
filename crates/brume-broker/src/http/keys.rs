//! `/v1/keys`: an account's API keys. A caller lists and revokes its own
//! account's keys (an `admin` key: every account's), and mints keys for its
//! own account with no scope it lacks itself. A signed request (the
//! account's own key signs it) may mint one too: no operator needed.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use brume_api::ErrorCode;
use brume_api::rest::{KeyInfo, KeyList, NewKey, NewKeyRequest, Scope};

use super::auth::Auth;
use super::{Fail, Res, Sh};
use crate::store::keys as stored;

/// The longest key label, in characters.
const MAX_NAME_CHARS: usize = 128;

fn info(k: stored::KeyInfo) -> KeyInfo {
    KeyInfo {
        account: k.speaks_for().to_string(),
        id: k.id,
        name: k.name,
        scopes: k.scopes,
        created_at_ms: k.created_at_ms,
        expires_at_ms: k.expires_at_ms,
        revoked_at_ms: k.revoked_at_ms,
    }
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "The caller's account's keys (every account's for `admin`)", body = KeyList)),
    security(("api_key" = [])))]
pub(super) async fn list_keys(State(shared): Sh, auth: Auth) -> Res<axum::Json<KeyList>> {
    auth.require(Scope::Read)?;
    let keys = shared
        .keys
        .list()
        .await?
        .into_iter()
        .map(info)
        .filter(|k| auth.sees(&k.account))
        .collect();
    Ok(axum::Json(KeyList { keys }))
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = NewKeyRequest,
    responses((status = 201, description = "The new key: its secret is shown this once", body = NewKey)),
    security(("api_key" = [])))]
pub(super) async fn create_key(
    State(shared): Sh,
    auth: Auth,
    body: Result<axum::Json<NewKeyRequest>, JsonRejection>,
) -> Res<(StatusCode, axum::Json<NewKey>)> {
    let axum::Json(req) =
        body.map_err(|e| Fail::new(ErrorCode::InvalidRequest, format!("key: {}", e.body_text())))?;
    if req.name.is_empty() || req.name.chars().count() > MAX_NAME_CHARS {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            format!("name: 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let scopes = req.scopes.unwrap_or_else(|| {
        Scope::DEFAULT
            .into_iter()
            .filter(|s| auth.scopes.contains(s))
            .collect()
    });
    if let Some(s) = scopes.iter().find(|s| !auth.scopes.contains(s)) {
        return Err(Fail::new(
            ErrorCode::Forbidden,
            format!("a key can't grant the {s} scope it lacks"),
        ));
    }
    if scopes.is_empty() {
        return Err(Fail::new(ErrorCode::InvalidRequest, "scopes: at least one"));
    }
    if req
        .expires_at_ms
        .is_some_and(|t| t > super::chain::MAX_SAFE)
    {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            "expires_at_ms: at most 2^53-1",
        ));
    }
    if req.expires_at_ms.is_some_and(|t| t <= crate::now_ms()) {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            "expires_at_ms: already past",
        ));
    }
    // The new key speaks for the caller's account: bound to it if it is
    // an address, else named after it.
    let is_address = auth.name.parse::<brume_chain::Address>().is_ok();
    let new = stored::NewKey {
        name: if is_address {
            req.name
        } else {
            auth.name.clone()
        },
        account: is_address.then(|| auth.name.clone()),
        scopes,
        expires_at_ms: req.expires_at_ms,
    };
    let (api_key, k) = shared.keys.create(new).await?;
    let info = info(k);
    Ok((StatusCode::CREATED, axum::Json(NewKey { api_key, info })))
}

#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "The key, revoked", body = KeyInfo)),
    security(("api_key" = [])))]
pub(super) async fn revoke_key(
    State(shared): Sh,
    auth: Auth,
    Path(id): Path<String>,
) -> Res<axum::Json<KeyInfo>> {
    let not_found = || Fail::new(ErrorCode::NotFound, format!("no key {id}"));
    let owned = shared
        .keys
        .list()
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .filter(|k| auth.sees(k.speaks_for()))
        .ok_or_else(not_found)?;
    let revoked = shared.keys.revoke(&owned.id).await?.ok_or_else(not_found)?;
    Ok(axum::Json(info(revoked)))
}
