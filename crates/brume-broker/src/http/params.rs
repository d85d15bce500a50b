//! Parameters several routes share, described once for the OpenAPI
//! document (`params(ServicePath, CallHeaders)` in a handler's
//! `#[utoipa::path]`). The handlers read them themselves; these structs
//! only carry their names, types, patterns and descriptions.

#![allow(dead_code)]

/// `{service}` in a path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct ServicePath {
    /// A service reference: `name`, `owner~name`, or either with
    /// `@VERSION` (a number from 1, or a module's sha256).
    #[param(
        pattern = r#"^(?:[!"$&-.0->A-}]{1,64}~)?[a-z0-9][a-z0-9._-]{0,63}(?:@(?:[1-9][0-9]{0,18}|[0-9a-fA-F]{64}))?$"#
    )]
    service: String,
}

/// The headers a call may carry (`/v1/functions/…/invoke`, `/fn/…`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub(super) struct CallHeaders {
    /// The service tier to run at (the deal's default otherwise).
    #[param(rename = "x-brume-tier")]
    tier: Option<String>,
    /// The most to pay, in fiat micro-units.
    #[param(rename = "x-brume-price-cap", pattern = "^[0-9]{1,15}$")]
    price_cap: Option<String>,
    /// A fee bid per compute hour, in micro-tokens: 402 `over_price_cap`
    /// if the price in force is above it; only providers whose ask is
    /// within it run the call.
    #[param(rename = "x-brume-max-fee-per-hour", pattern = "^[1-9][0-9]{0,17}$")]
    max_fee_per_hour: Option<String>,
    /// A session key: calls of one account with one key run on one
    /// provider while it lives, and share a work dir there (`/session`).
    /// 429 `too_many_sessions` past the account's limit.
    #[param(rename = "x-brume-affinity", pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    affinity: Option<String>,
    /// Run only on this provider (`brume offers --probe`): 503
    /// `provider_unavailable` if it is not connected.
    #[param(rename = "x-brume-provider", pattern = "^0x[0-9a-fA-F]{40}$")]
    provider: Option<String>,
    /// The provider trust tiers it may run on, comma-separated.
    #[param(rename = "x-brume-tiers", pattern = "^[1-4](?:,[1-4]){0,3}$")]
    tiers: Option<String>,
    /// `audit`, `none` or `replicate=N`: how to verify this call.
    #[param(rename = "x-brume-verify")]
    verify: Option<String>,
    /// Your own customer, recorded on the ledger row (at most 256 bytes).
    #[param(rename = "x-brume-end-user", pattern = "^[\\t -~]{0,256}$")]
    end_user: Option<String>,
}
