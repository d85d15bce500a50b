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
    /// Where the ledger's rows are kept: empty for SQLite under
    /// `data_dir/ledger` (the default), or a `postgres://` URL.
    pub store: String,
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
    /// Providers whose bandwidth (timed by the broker at the handshake) is
    /// lower don't get this tier's work.
    #[serde(default)]
    pub min_bandwidth_mbps: u64,
    /// A dynamic price: the tier's price times this curve of the broker's
    /// utilisation at admission (four `[utilisation_ppm, multiplier_ppm]`
    /// control points; see `brume_ledger::curve`). None: a fixed price.
    #[serde(default)]
    pub curve: Option<brume_ledger::curve::BezierCurve>,
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
            store: String::new(),
            contributor_ppm: 700_000,
            developer_ppm: 200_000,
            currency: "EUR".into(),
            tiers: vec![TierConfig {
                name: "standard".into(),
                fiat_micros_per_coin: 1_000_000,
                min_threads: 1,
                min_mips: 0,
                min_bandwidth_mbps: 0,
                curve: None,
            }],
            default_tier: String::new(),
            fiat_micros_per_token: 1_000_000,
            deals: Vec::new(),
            penalties: PenaltyConfig::default(),
            operator_charity: None,
        }
    }
}

/// The configured tiers, checked: the price table, names and scheduling
/// needs by `TierId`, and the default tier.
pub(super) struct Tiers {
    pub table: PriceTable,
    pub names: Vec<String>,
    pub needs: Vec<TierNeeds>,
    /// Each tier's dynamic price curve, if it has one.
    pub curves: Vec<Option<brume_ledger::curve::BezierCurve>>,
    pub default: TierId,
}

fn open(m: String) -> BillError {
    BillError::Open(m)
}

/// The id of the tier called `name`.
fn tier_id(names: &[String], name: &str) -> Result<TierId, BillError> {
    names
        .iter()
        .position(|n| n == name)
        .map(|i| TierId(i as u16))
        .ok_or_else(|| {
            open(format!(
                "unknown tier {name:?} (tiers: {})",
                names.join(", ")
            ))
        })
}

impl LedgerConfig {
    /// The tiers, with unique valid names; the default is the configured
    /// one, else the last (cheapest).
    /// The tiers' names, in the order they are configured.
    pub(crate) fn tier_names(&self) -> Vec<String> {
        self.tiers.iter().map(|t| t.name.clone()).collect()
    }

    pub(super) fn tiers(&self) -> Result<Tiers, BillError> {
        let mut prices = Vec::with_capacity(self.tiers.len());
        let mut names: Vec<String> = Vec::with_capacity(self.tiers.len());
        for (i, t) in self.tiers.iter().enumerate() {
            if names.contains(&t.name) {
                return Err(open(format!("tier {:?} is listed twice", t.name)));
            }
            check_id("tier name", &t.name)?;
            let id = TierId(u16::try_from(i).map_err(|_| open("too many tiers".into()))?);
            prices.push(TierPrice {
                tier: id,
                spec: TierSpec {
                    min_threads: t.min_threads,
                    min_mips: t.min_mips,
                    min_bandwidth_mbps: t.min_bandwidth_mbps,
                },
                fiat_micros_per_coin: t.fiat_micros_per_coin,
            });
            names.push(t.name.clone());
        }
        let needs = self
            .tiers
            .iter()
            .map(|t| TierNeeds {
                min_threads: t.min_threads,
                min_mips: t.min_mips,
                min_mbps: t.min_bandwidth_mbps,
                runtime_ms: None,
            })
            .collect();
        let table = PriceTable::new(prices)?;
        let default = if self.default_tier.is_empty() {
            TierId((names.len() - 1) as u16)
        } else {
            tier_id(&names, &self.default_tier)?
        };
        Ok(Tiers {
            table,
            names,
            needs,
            curves: self.tiers.iter().map(|t| t.curve).collect(),
            default,
        })
    }

    /// The deals by account, at most one each, naming known tiers.
    pub(super) fn deals(
        &self,
        tier_names: &[String],
        default_tier: TierId,
    ) -> Result<HashMap<String, Deal>, BillError> {
        let mut deals = HashMap::new();
        for d in &self.deals {
            check_id("deal account", &d.account)?;
            let structure = match &d.structure {
                DealStructure::PerUse => CostStructure::PerUse,
                DealStructure::CapWithDowngrade => CostStructure::CapWithDowngrade,
                DealStructure::CapWithSubsidy { subsidy } => {
                    check_id("subsidy account", subsidy)?;
                    CostStructure::CapWithSubsidy {
                        subsidy: Account::new(subsidy),
                    }
                }
                DealStructure::FullSubsidy { subsidy } => {
                    check_id("subsidy account", subsidy)?;
                    CostStructure::FullSubsidy {
                        subsidy: Account::new(subsidy),
                    }
                }
                DealStructure::Subscription {
                    tier,
                    daily_fee_fiat_micros,
                } => CostStructure::Subscription {
                    tier: tier_id(tier_names, tier)?,
                    daily_fee_fiat_micros: u128::from(*daily_fee_fiat_micros),
                },
            };
            let deal = Deal {
                account: Account::new(&d.account),
                default_tier: match &d.default_tier {
                    Some(t) => tier_id(tier_names, t)?,
                    None => default_tier,
                },
                structure,
            };
            if deals.insert(d.account.clone(), deal).is_some() {
                return Err(open(format!("account {:?} has two deals", d.account)));
            }
        }
        Ok(deals)
    }

    /// The operator's charity and its share, checked.
    pub(super) fn operator_charity(&self) -> Result<Option<Charity>, BillError> {
        let Some(c) = &self.operator_charity else {
            return Ok(None);
        };
        check_id("operator charity", &c.account)?;
        if c.share_ppm > PPM {
            return Err(SplitError::CharityShareTooLarge(c.share_ppm).into());
        }
        Ok(Some(Charity {
            account: Account::new(&c.account),
            share_ppm: c.share_ppm,
        }))
    }
}
