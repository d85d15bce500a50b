//! Who is calling: API keys (cached, hashed) and signed requests
//! (`Brume-Signature`: timestamp, body hash, EIP-191 signature, replay cache).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use brume_api::ErrorCode;
use brume_api::rest::Scope;
use brume_api::signed::{self, SignatureHeader};

use super::{Fail, Res, Sh};
use crate::Shared;

/// A requester with a valid API key or a valid signature, and its account
/// (the ledger's requester, and a service's developer): the key's bound
/// address, else the key's name; for a signed request, the signer's
/// address.
pub(crate) struct Auth {
    /// The account.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Only a key (a signed request, no API key): held to the trust
    /// levels of `[broker.trust.anonymous]`.
    pub anonymous: bool,
}

impl Auth {
    /// A signer: its account, with every scope but `admin`.
    fn signer(address: &str) -> Auth {
        Auth {
            name: address.to_string(),
            scopes: Scope::DEFAULT.to_vec(),
            anonymous: true,
        }
    }

    /// `Ok` if the caller has `scope`; else 403 naming it.
    pub fn require(&self, scope: Scope) -> Res<()> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        Err(Fail::new(
            ErrorCode::Forbidden,
            format!("this key lacks the {scope} scope"),
        ))
    }

    /// `Ok` if the caller has any of `scopes`; else 403 naming them.
    pub fn require_any(&self, scopes: &[Scope]) -> Res<()> {
        if scopes.iter().any(|s| self.scopes.contains(s)) {
            return Ok(());
        }
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        Err(Fail::new(
            ErrorCode::Forbidden,
            format!("this key lacks the {} scope", names.join(" or ")),
        ))
    }

    /// Whether the caller may see what `account` owns (its own, or any
    /// with `admin`).
    pub fn sees(&self, account: &str) -> bool {
        self.name == account || self.scopes.contains(&Scope::Admin)
    }
}

/// The signer of a request whose `Brume-Signature` verified (a request
/// extension set by [`verify_signed`]).
#[derive(Debug, Clone)]
pub(super) struct Signer(String);

/// Checks a `Brume-Signature` request (see `brume_api::signed`): the
/// timestamp, the body's hash, the EIP-191 signature and replays. On
/// success the signer's address goes into the request for [`Auth`]; other
/// requests pass through untouched.
pub(super) async fn verify_signed(State(shared): Sh, req: Request, next: Next) -> Response {
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

pub(super) async fn check_signed(
    shared: &Shared,
    header: Result<SignatureHeader, signed::HeaderError>,
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
    let oldest = now.saturating_sub(signed::MAX_SKEW_MS);
    let signature_hash = Sha256::digest(h.signature).into();
    if !shared
        .keys
        .first_use(h.timestamp_ms, signature_hash, oldest)
    {
        return Err(Fail::new(
            ErrorCode::ReplayedSignature,
            "this signature was already used: sign each request afresh",
        ));
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
            return Ok(MaybeAuth(Some(Auth::signer(address))));
        }
        match bearer(parts) {
            None => Ok(MaybeAuth(None)),
            Some(token) => check_key(shared, token).await.map(|a| MaybeAuth(Some(a))),
        }
    }
}

pub(super) fn bearer(parts: &Parts) -> Option<&str> {
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
            return Ok(Auth::signer(address));
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

pub(super) async fn check_key(shared: &Arc<Shared>, token: &str) -> Result<Auth, Fail> {
    match shared.keys.caller(token).await? {
        Some(c) => Ok(Auth {
            name: c.account,
            scopes: c.scopes,
            anonymous: false,
        }),
        None => Err(Fail::new(
            ErrorCode::Forbidden,
            "the API key is not valid (unknown, revoked or expired)",
        )),
    }
}
