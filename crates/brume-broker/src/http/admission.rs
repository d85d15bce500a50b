//! What a request is admitted under: its tier and price cap, its escrow
//! reservation and its end user.

use std::sync::Arc;

use axum::http::HeaderMap;
use brume_api::ErrorCode;

use super::{Fail, Res};
use crate::Shared;
use crate::ledger::{self, Billing};
use brume_ledger::deal::Admission;

/// The tier a request runs at under its account's deal, and the price in
/// force: a tier with a curve prices by the broker's utilisation now.
pub(super) fn admit(
    shared: &Shared,
    account: &str,
    tier: Option<&str>,
    cap_fiat_micros: Option<u64>,
    digest: &str,
) -> Res<Admission> {
    let mut admission = shared
        .ledger
        .admit(account, tier, cap_fiat_micros, digest)
        .map_err(|e| match e {
            ledger::AdmitError::Invalid(m) => Fail::new(ErrorCode::InvalidRequest, m),
            ledger::AdmitError::NotInDeal(m) => Fail::new(ErrorCode::Conflict, m),
            ledger::AdmitError::OverCap(e) => Fail::new(ErrorCode::OverPriceCap, e.to_string()),
        })?;
    shared
        .ledger
        .price_in_force(&mut admission, || utilisation(shared));
    Ok(admission)
}

/// Holds a fee bid per compute hour to the price in force on `admission`:
/// 402 `over_price_cap` when the price is above it.
pub(super) fn check_bid(shared: &Shared, admission: &Admission, bid: Option<u64>) -> Res<()> {
    let Some(bid) = bid else { return Ok(()) };
    let price = shared.ledger.price_per_hour(admission).map_err(|e| {
        Fail::new(
            ErrorCode::Internal,
            format!("pricing a compute hour failed: {e}"),
        )
    })?;
    if price > u128::from(bid) {
        return Err(Fail::new(
            ErrorCode::OverPriceCap,
            format!(
                "the price in force at tier {} is {price} micro-tokens per compute hour, \
                 above the bid of {bid}",
                admission.tier
            ),
        ));
    }
    Ok(())
}

/// The affinity session `key` of `account` (a call's `x-brume-affinity`,
/// a job's `affinity`): 400 if the key is malformed, 429
/// `too_many_sessions` if it would be one more than the account may keep.
pub(super) fn session(
    shared: &Shared,
    account: &str,
    key: Option<&str>,
) -> Res<Option<brume_api::wire::Affinity>> {
    let Some(key) = key else { return Ok(None) };
    if !brume_api::affinity_key_is_valid(key) {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            format!(
                "{}: {key:?}; 1 to 128 bytes of letters, digits and . _ : -",
                brume_api::headers::AFFINITY
            ),
        ));
    }
    let config = shared.config.affinity;
    let session = config.session(account, key);
    let max = config.max_per_account;
    if !shared
        .lifecycle
        .read(|s| s.admits_session(account, &session.key, max))
    {
        return Err(Fail::new(
            ErrorCode::TooManySessions,
            format!(
                "this account keeps {max} affinity sessions already, the most a broker allows \
                 one; a session is forgotten {} ms after its last call",
                config.ttl_ms
            ),
        ));
    }
    Ok(Some(session))
}

/// The broker's utilisation: busy slots over all its providers' slots, in
/// ppm (0 with none connected).
pub(crate) fn utilisation(shared: &Shared) -> u32 {
    let t = shared.lifecycle.read(|s| s.totals);
    match t.slots {
        0 => 0,
        n => (t.slots_busy.min(n) * 1_000_000 / n) as u32,
    }
}

/// Holds `units` times the work's maximum cost (from its `limits` and the
/// `gpus` it holds: see `Ledger::max_cost`; units: the most runs its verification policy may
/// make) against its paying account's escrow (see `escrow.rs`), or refuses
/// it with 402 `insufficient_allowance` before anything runs or is billed.
pub(super) async fn reserve(
    shared: &Arc<Shared>,
    billing: &Billing,
    limits: &brume_api::Limits,
    gpus: u32,
    units: u128,
) -> Res<Option<Arc<crate::escrow::Hold>>> {
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
        .max_cost(&admission, limits, &billing.declared, gpus)
        .map_err(|e| Fail::new(ErrorCode::Internal, format!("pricing the hold: {e}")))?
        .saturating_mul(units);
    hold(shared, (&account, address), billing.anonymous, cost).await
}

/// Holds `amount` against the allowance of `account` (`requester`'s
/// escrow account, at `address`), or refuses with 402
/// `insufficient_allowance` (or 429 `trust_limit` for an anonymous one).
pub(super) async fn hold_amount(
    shared: &Arc<Shared>,
    requester: &str,
    amount: u128,
) -> Res<Option<Arc<crate::escrow::Hold>>> {
    let Some(account) = shared.ledger.escrow_account(requester) else {
        return Ok(None);
    };
    match account.parse::<brume_chain::Address>() {
        Ok(address) if account.len() == 42 => {
            hold(shared, (&account, address), false, amount).await
        }
        _ => Ok(None),
    }
}

async fn hold(
    shared: &Arc<Shared>,
    (account, address): (&str, brume_chain::Address),
    anonymous: bool,
    cost: u128,
) -> Res<Option<Arc<crate::escrow::Hold>>> {
    use crate::escrow::Reserve;
    let account = account.to_string();
    let escrow = shared.ledger.escrow();
    // A requester who is only a key is held to its trust level (only then
    // is the network's capacity read).
    let levels = shared.config.trust.anonymous;
    let slots = if anonymous {
        shared.lifecycle.read(|s| s.totals.slots)
    } else {
        0
    };
    let level = move |allowance: u128, clean: u64| levels.limit(allowance, clean, slots);
    let limit: Option<&(dyn Fn(u128, u64) -> u32 + Sync)> = anonymous.then_some(&level);
    match escrow.try_reserve_limited(&account, cost, false, limit) {
        Reserve::Held(h) => return Ok(Some(h)),
        Reserve::TooMany { open, limit } => return Err(too_many(&account, open, limit)),
        Reserve::Stale | Reserve::Insufficient { .. } => {}
    }
    let payout = shared.chain.settlement().payout_account();
    let allowance = shared
        .chain
        .settlement()
        .collectable(address)
        .await
        .map_err(super::chain::chain_fail)?;
    escrow.set_allowance(&account, allowance);
    match escrow.try_reserve_limited(&account, cost, true, limit) {
        Reserve::Held(h) => Ok(Some(h)),
        Reserve::TooMany { open, limit } => Err(too_many(&account, open, limit)),
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

/// 429 `trust_limit`: the requester runs as many units as it may.
fn too_many(account: &str, open: u32, limit: u32) -> Fail {
    Fail::new(
        ErrorCode::TrustLimit,
        format!(
            "account {account} runs {open} units at once, the most its trust level allows \
             ({limit}); a larger escrow allowance (`brume wallet approve`) or a clean history \
             raises it"
        ),
    )
}

/// The optional `x-brume-end-user` header (at most 256 bytes of UTF-8).
pub(super) fn end_user(headers: &HeaderMap) -> Res<String> {
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

/// The `x-brume-column-<name>` headers: the requester's own columns for
/// the call's row (see `JobSpec::columns` for the bounds).
pub(super) fn columns(headers: &HeaderMap) -> Res<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for (name, value) in headers {
        let Some(column) = name.as_str().strip_prefix(ledger::COLUMN_HEADER_PREFIX) else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            Fail::new(
                ErrorCode::InvalidRequest,
                format!("{name}: visible ASCII only"),
            )
        })?;
        brume_api::rest::check_column(column, value)
            .map_err(|m| Fail::new(ErrorCode::InvalidRequest, format!("{name}: {m}")))?;
        out.insert(column.to_string(), value.to_string());
    }
    if out.len() > brume_api::rest::MAX_COLUMNS {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            format!(
                "{}*: at most {} columns",
                ledger::COLUMN_HEADER_PREFIX,
                brume_api::rest::MAX_COLUMNS
            ),
        ));
    }
    Ok(out)
}

/// How an invocation asks to be verified (`x-brume-verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SyncVerify {
    None,
    /// Answered at once; a sampled share re-executed afterwards.
    Audit,
    /// `n` replicas on distinct providers; a majority's result is the answer.
    Replicate(u32),
}

impl SyncVerify {
    /// The runs the call may make, which its escrow hold covers.
    pub fn units(self) -> u32 {
        match self {
            SyncVerify::Replicate(n) => n,
            SyncVerify::None | SyncVerify::Audit => 1,
        }
    }
}

/// How an invocation is verified: its `x-brume-verify` header, else the
/// account's default (`audit` or nothing).
pub(super) fn sync_verify(
    headers: &HeaderMap,
    trust: &crate::trust::TrustConfig,
    account: &str,
) -> Res<SyncVerify> {
    let Some(v) = headers.get(brume_api::headers::VERIFY) else {
        return Ok(if trust.audits_by_default(account) {
            SyncVerify::Audit
        } else {
            SyncVerify::None
        });
    };
    let max = brume_api::rest::MAX_REPLICAS;
    let expected = || {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!(
                "{}: \"audit\", \"none\" or \"replicate=N\" (N from 2 to {max})",
                brume_api::headers::VERIFY
            ),
        )
    };
    match v.to_str() {
        Ok("audit") => Ok(SyncVerify::Audit),
        Ok("none") => Ok(SyncVerify::None),
        Ok(other) => {
            // As written by `format!`: no sign, no leading zero.
            let n = other
                .strip_prefix("replicate=")
                .and_then(|n| n.parse::<u32>().ok().filter(|v| v.to_string() == n))
                .ok_or_else(expected)?;
            if !(2..=max).contains(&n) {
                return Err(expected());
            }
            Ok(SyncVerify::Replicate(n))
        }
        Err(_) => Err(expected()),
    }
}
