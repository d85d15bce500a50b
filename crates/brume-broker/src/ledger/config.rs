//! `[broker.ledger]`: pricing, tiers, deals, penalties and payout shares.

use super::*;

/// Pricing, tiers, deals, penalties and payout shares, as configured for
/// a broker (`[broker.ledger]` in the TOML file). `Default` is the devnet:
/// one `standard` tier priced at €1.00 per coin-equivalent of resources,
/// 1 token = €1.00, the fee split 70 % provider, 20 % developer, 10 %
/// operator, every account on a per-use deal, and the default penalties.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The provider's share, in parts per million.
    pub contributor_ppm: u32,
    /// The developer's share, in parts per million (the operator gets the
    /// rest; with no known developer, the operator gets this share too).
    pub developer_ppm: u32,
    /// The fee currency (ISO code).
    pub currency: String,
    /// The service tiers, best first: each asks for no more than the one
    /// before it (see `brume_ledger::pricing::PriceTable`).
    pub tiers: Vec<TierConfig>,
    /// The tier of requests that name none, for accounts without a deal.
    /// Empty: the last (cheapest) tier.
    pub default_tier: String,
    /// The fixed exchange rate: fiat micro-units per whole token.
    pub fiat_micros_per_token: u64,
    /// Per-account deals; accounts not listed are per-use.
    pub deals: Vec<DealConfig>,
    /// Kumo's overrun surcharge and slow-provider refund.
    pub penalties: PenaltyConfig,
    /// The operator's charity and its share of the operator's payout.
    pub operator_charity: Option<CharityConfig>,
}

/// One service tier and its price.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub name: String,
    /// Fiat micro-units per coin-equivalent of resources.
    pub fiat_micros_per_coin: u64,
    /// Providers with fewer slots don't get this tier's work.
    #[serde(default = "one")]
    pub min_threads: u32,
    /// Providers whose fitness (MIPS) is lower don't get this tier's work.
    #[serde(default)]
    pub min_mips: u64,
    /// Recorded and compared between tiers; providers don't report their
    /// bandwidth yet, so the scheduler can't check it.
    #[serde(default)]
    pub min_bandwidth_mbps: u64,
}

fn one() -> u32 {
    1
}

/// A requester account's deal (the CGN seed's cost structures).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DealConfig {
    /// The account: an API key's name.
    pub account: String,
    /// The tier of its requests that name none (default: the broker's).
    #[serde(default)]
    pub default_tier: Option<String>,
    pub structure: DealStructure,
}

/// [`brume_ledger::deal::CostStructure`], with tiers by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DealStructure {
    PerUse,
    CapWithDowngrade,
    CapWithSubsidy {
        subsidy: String,
    },
    FullSubsidy {
        subsidy: String,
    },
    Subscription {
        tier: String,
        daily_fee_fiat_micros: u64,
    },
}

/// A charity and its share of a beneficiary's payout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharityConfig {
    pub account: String,
    /// Parts per million of the beneficiary's payout, 0..=1000000.
    pub share_ppm: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            contributor_ppm: 700_000,
            developer_ppm: 200_000,
            currency: "EUR".into(),
            tiers: vec![TierConfig {
                name: "standard".into(),
                fiat_micros_per_coin: 1_000_000,
                min_threads: 1,
                min_mips: 0,
                min_bandwidth_mbps: 0,
            }],
            default_tier: String::new(),
            fiat_micros_per_token: 1_000_000,
            deals: Vec::new(),
            penalties: PenaltyConfig::default(),
            operator_charity: None,
        }
    }
}
