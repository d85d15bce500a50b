//! Trust tiers (the CGN seed's tiered miner strategy).
//!
//! | tier | who | how the broker knows |
//! |---|---|---|
//! | 1 | an organisation's own providers: a private pool that runs only that organisation's work | the address is listed under the organisation in `[broker.trust]` |
//! | 2 | operator-approved providers | `brume broker providers approve` |
//! | 3 | attested providers | the handshake's attestation verifies ([`AttestationVerifier`]) |
//! | 4 | anyone | — |
//!
//! A provider's tier is fixed at its handshake (the lowest that applies;
//! a change applies when it reconnects). Work carries the set of tiers it
//! may run on (per request `x-brume-tiers`, per job `tiers`, else per
//! account from the config, else all) and its requester's organisation; the
//! scheduler's `accepts` checks both. There is one queue: work a tier can't
//! take waits for one that can.
//!
//! # Attestation
//!
//! [`AttestationVerifier`] is the seam: given a provider's address and its
//! evidence, accept or refuse. The only verifier built is [`TestAuthority`]
//! (evidence kind `test`): an EIP-191 signature, by an authority address set
//! in `[broker.trust] attestation_authority`, over
//! `brume_api::wire::attestation_message(address)`. A real TPM verifier
//! would take a TPM 2.0 quote (signed PCR values and a nonce the broker
//! sent in its challenge) with the attestation key's certificate chain, check
//! the chain against the manufacturer's roots, the quote's signature and
//! nonce, and the PCRs against a list of known-good measurements (the
//! provider binary and its sandbox); a TEE verifier (SGX/SEV-SNP/TDX) would
//! check the platform's attestation report the same way. Both plug in as
//! another `AttestationVerifier` keyed by the evidence's `kind`.

use std::collections::BTreeMap;

use brume_api::wire::{Attestation, Capabilities, attestation_message};

use crate::Shared;

/// Every tier, as a bit set (bit `t` for tier `t`).
pub const ALL_TIERS: u8 = 0b1_1110;

/// `[broker.trust]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// The address whose signatures the `test` attestation verifier accepts.
    pub attestation_authority: Option<String>,
    /// Organisations: their requester accounts and their own providers.
    pub orgs: Vec<OrgConfig>,
    /// The tiers an account's work may run on when its request names none.
    pub account_tiers: BTreeMap<String, Vec<u8>>,
    /// How an account's jobs are verified when their spec says nothing.
    pub account_verify: BTreeMap<String, brume_api::rest::VerifyPolicy>,
    /// Accounts whose invocations are audited when they don't say
    /// (`x-brume-verify`).
    pub audit_accounts: Vec<String>,
    /// The share of audited invocations re-executed, in parts per million
    /// (default 100000: one in ten).
    pub audit_share_ppm: Option<u32>,
    /// How often an idle provider is challenged again (`measure.rs`), in
    /// milliseconds (default 900000: every 15 minutes; 0: never).
    pub remeasure_ms: Option<u64>,
    /// How many units anonymous requesters may run at once.
    pub anonymous: AnonymousLimits,
}

/// `[broker.trust.anonymous]`: StackMonkey's trust levels for requesters
/// who are only a key (signed requests, "no account needed"). One may run
/// at most
///
/// ```text
/// min(base_units + allowance / deposit_per_unit + clean / history_per_unit,
///     max(base_units, slots × max_share_ppm / 10^6))
/// ```
///
/// units at once, where `allowance` is its escrow allowance to the payout
/// account (the trust deposit: an allowance like any other, drawn only for
/// what its work costs, never a transfer), `clean` the rows it was charged
/// since the broker started while owing no more than its allowance, and
/// `slots` every connected provider's slots (the network's capacity).
/// Going over answers 429 `trust_limit`, naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnonymousLimits {
    pub base_units: u32,
    /// Token base units of allowance per unit more (default 10^18: 1 token).
    pub deposit_per_unit: u64,
    /// Clean rows per unit more (default 100).
    pub history_per_unit: u64,
    /// The most of the network's slots one anonymous requester may hold,
    /// in ppm (default 100000: a tenth).
    pub max_share_ppm: u32,
}

impl Default for AnonymousLimits {
    fn default() -> Self {
        AnonymousLimits {
            base_units: 2,
            deposit_per_unit: 1_000_000_000_000_000_000,
            history_per_unit: 100,
            max_share_ppm: 100_000,
        }
    }
}

impl AnonymousLimits {
    /// The units an anonymous requester may run at once (see the type).
    pub fn limit(&self, allowance: u128, clean: u64, slots: u64) -> u32 {
        let by_deposit = allowance / u128::from(self.deposit_per_unit.max(1));
        let by_history = clean / self.history_per_unit.max(1);
        let grown = u128::from(self.base_units)
            .saturating_add(by_deposit)
            .saturating_add(u128::from(by_history));
        let share = u128::from(slots) * u128::from(self.max_share_ppm) / 1_000_000;
        let cap = share.max(u128::from(self.base_units));
        u32::try_from(grown.min(cap)).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    pub name: String,
    /// Requester accounts (API key names or addresses).
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Provider addresses of its private pool (tier 1).
    #[serde(default)]
    pub providers: Vec<String>,
}

/// Why attestation evidence was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    /// The evidence is not a valid attestation of this provider's machine.
    #[error("the evidence does not attest provider {provider}: {source}")]
    Invalid {
        provider: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Checks a provider's attestation evidence.
pub trait AttestationVerifier: Send + Sync {
    /// The evidence kind it understands.
    fn kind(&self) -> &str;
    /// Ok if `evidence` attests the machine of `provider`.
    fn verify(&self, provider: &str, evidence: &[u8]) -> Result<(), AttestationError>;
}

/// The `test` verifier: a signature by a configured authority.
#[derive(Debug, Clone)]
pub struct TestAuthority(pub String);

impl AttestationVerifier for TestAuthority {
    fn kind(&self) -> &str {
        "test"
    }

    fn verify(&self, provider: &str, evidence: &[u8]) -> Result<(), AttestationError> {
        brume_identity::verify(attestation_message(provider).as_bytes(), evidence, &self.0)
            .map(|_| ())
            .map_err(|e| AttestationError::Invalid {
                provider: provider.to_string(),
                source: Box::new(e),
            })
    }
}

/// Why a list of tiers is not a tier set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    #[error("tier {0} does not exist (1 to 4)")]
    Unknown(u8),
    #[error("{0:?} is not a tier")]
    NotATier(String),
    #[error("no tier allowed")]
    Empty,
}

/// A tier set from a list of tiers (1–4); `Err` names a bad one.
pub fn tier_set(tiers: &[u8]) -> Result<u8, TierError> {
    let mut set = 0u8;
    for &t in tiers {
        if !(1..=4).contains(&t) {
            return Err(TierError::Unknown(t));
        }
        set |= 1 << t;
    }
    if set == 0 {
        return Err(TierError::Empty);
    }
    Ok(set)
}

impl TrustConfig {
    /// The organisation of a requester account.
    pub fn org_of_account(&self, account: &str) -> Option<String> {
        self.orgs
            .iter()
            .find(|o| o.accounts.iter().any(|a| a.eq_ignore_ascii_case(account)))
            .map(|o| o.name.clone())
    }

    /// How an account's jobs are verified by default.
    pub fn default_verify(&self, account: &str) -> Option<brume_api::rest::VerifyPolicy> {
        self.account_verify
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(account))
            .map(|(_, v)| v.clone())
    }

    /// The tiers an account's work may use by default.
    /// How often an idle provider's speed is measured again (`None`: never).
    pub fn remeasure(&self) -> Option<std::time::Duration> {
        match self.remeasure_ms.unwrap_or(900_000) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        }
    }

    /// Whether `account`'s invocations are audited by default.
    pub fn audits_by_default(&self, account: &str) -> bool {
        self.audit_accounts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(account))
    }

    /// The share of audited invocations re-executed, in parts per million.
    pub fn audit_share_ppm(&self) -> u32 {
        self.audit_share_ppm.unwrap_or(100_000).min(1_000_000)
    }

    pub fn default_tiers(&self, account: &str) -> u8 {
        self.account_tiers
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(account))
            .and_then(|(_, t)| tier_set(t).ok())
            .unwrap_or(ALL_TIERS)
    }
}

/// A provider's tier and organisation, at its handshake.
pub(crate) async fn tier_of(
    shared: &Shared,
    address: &str,
    caps: &Capabilities,
) -> (u8, Option<String>) {
    let trust = &shared.config.trust;
    if let Some(org) = trust
        .orgs
        .iter()
        .find(|o| o.providers.iter().any(|p| p.eq_ignore_ascii_case(address)))
        && caps.org.as_ref().is_none_or(|claimed| *claimed == org.name)
    {
        return (1, Some(org.name.clone()));
    }
    if shared.standings.approved(address).await {
        return (2, None);
    }
    if let (Some(a), Some(authority)) = (&caps.attestation, &trust.attestation_authority)
        && attested(&TestAuthority(authority.clone()), address, a)
    {
        return (3, None);
    }
    (4, None)
}

fn attested(v: &dyn AttestationVerifier, address: &str, a: &Attestation) -> bool {
    a.kind == v.kind() && v.verify(address, &a.evidence).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_limits_grow_with_deposit_and_history_up_to_a_share_of_capacity() {
        let l = AnonymousLimits::default();
        let token = 1_000_000_000_000_000_000u128;
        // 100 slots: at most a tenth, 10 units.
        assert_eq!(l.limit(0, 0, 100), 2);
        assert_eq!(l.limit(3 * token + 1, 0, 100), 5);
        assert_eq!(l.limit(0, 250, 100), 4);
        assert_eq!(l.limit(100 * token, 10_000, 100), 10);
        // A small network still lets anyone run its base units.
        assert_eq!(l.limit(100 * token, 0, 3), 2);
        assert_eq!(l.limit(u128::MAX, u64::MAX, u64::MAX), u32::MAX);
    }

    #[test]
    fn tier_sets_and_the_test_authority() {
        assert_eq!(tier_set(&[1, 2]), Ok(0b110));
        assert!(tier_set(&[0]).is_err());
        assert!(tier_set(&[5]).is_err());
        assert!(tier_set(&[]).is_err());
        let authority = brume_identity::Identity::random();
        let provider = brume_identity::Identity::random().address().to_string();
        let sig = authority
            .sign_message(attestation_message(&provider).as_bytes())
            .expect("sign");
        let v = TestAuthority(authority.address().to_string());
        assert!(v.verify(&provider, &sig).is_ok());
        let other = brume_identity::Identity::random().address().to_string();
        assert!(v.verify(&other, &sig).is_err(), "bound to the address");
    }
}
