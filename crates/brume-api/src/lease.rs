//! Leases (the StackMonkey seed): a `wasi:http` service kept running on a
//! provider and paid from an escrow of its own that drips per second of
//! running time. `POST /v1/leases`, `GET /v1/leases`, `GET /v1/leases/{id}`,
//! `POST /v1/leases/{id}/top-up`, `GET /v1/leases/{id}/events`,
//! `DELETE /v1/leases/{id}`; its traffic goes to `/lease/{id}/…`.
//!
//! Amounts are token base units (10^-18 token) as decimal strings.

use serde::{Deserialize, Serialize};

/// `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseSpec {
    /// An http service (`name`, `owner~name`, with `@VERSION` if wanted).
    #[schema(
        pattern = r#"^(?:[!"$&-.0->A-}]{1,64}~)?[a-z0-9][a-z0-9._-]{0,63}(?:@(?:[1-9][0-9]{0,18}|[0-9a-fA-F]{64}))?$"#
    )]
    pub service: String,
    /// The escrow to start with, in base units (a decimal string).
    #[schema(pattern = "^[1-9][0-9]{0,37}$")]
    pub deposit: String,
    /// Traffic needs an API key of the lease's account (default: public).
    #[serde(default)]
    pub private: bool,
}

/// `POST /v1/leases/{id}/top-up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// Base units added to the lease's escrow (a decimal string).
    #[schema(pattern = "^[1-9][0-9]{0,37}$")]
    pub amount: String,
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Waiting for a provider (new, resumed, or moving after a loss).
    Starting,
    /// Running on `provider`, and dripping.
    Running,
    /// Its escrow ran dry: stopped on its provider; traffic gets 402 until
    /// a top-up resumes it.
    Halted,
    /// Stopped by its owner, for good.
    Stopped,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Starting => "starting",
            LeaseState::Running => "running",
            LeaseState::Halted => "halted",
            LeaseState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<LeaseState> {
        Some(match s {
            "starting" => LeaseState::Starting,
            "running" => LeaseState::Running,
            "halted" => LeaseState::Halted,
            "stopped" => LeaseState::Stopped,
            _ => return None,
        })
    }
}

/// A lease (`GET /v1/leases/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseInfo {
    /// `lease-` and a UUIDv7.
    pub id: String,
    pub account: String,
    /// The service as resolved, with its version (`owner~name@N`).
    pub service: String,
    pub digest: String,
    pub state: LeaseState,
    /// The provider it runs on (running), or ran on last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Its price: base units per second of running time, fixed when it
    /// was created (a slot at the pricing table's reference speed, 1 KMIPS,
    /// at its tier's price in force then).
    pub rate_per_s: String,
    /// Base units put in its escrow so far (deposit and top-ups).
    pub deposit: String,
    /// Base units its rows have charged: `⌊rate_per_s · running_ms / 1000⌋`
    /// while there was escrow left.
    pub billed: String,
    /// `deposit − billed`.
    pub balance: String,
    /// Running time billed so far, in ms.
    pub running_ms: u64,
    /// Ledger rows written (`lease-<id>-<n>`, n from 1).
    pub rows: u64,
    /// Traffic needs the account's API key.
    pub private: bool,
    pub created_at_ms: u64,
    /// Where its traffic goes: `/lease/{id}/`.
    pub url: String,
}

/// `GET /v1/leases`: the account's leases, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseList {
    pub leases: Vec<LeaseInfo>,
}

/// One thing that happened to a lease (`GET /v1/leases/{id}/events`,
/// `brume lease logs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseEvent {
    pub at_ms: u64,
    /// `created`, `started`, `lost` (its provider), `moved`, `halted`,
    /// `topped_up`, `resumed`, `stopped`.
    pub kind: String,
    pub message: String,
}

/// `GET /v1/leases/{id}/events`: its most recent events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseEvents {
    pub events: Vec<LeaseEvent>,
}
