//! Deals: who pays a fee.
//!
//! Each requester account has one [`Deal`], one of the CGN seed's cost
//! structures ("THE DEAL", "COST STRUCTURE"). The deal decides the tier a
//! request runs at ([`Deal::admit`], before the work) and who pays its fee
//! ([`Deal::charge`], after). It never changes the fee itself, nor the
//! payout split ([`crate::split`]): only who pays.
//!
//! Caps are in micro-units of fiat (the enterprise's contract currency) and
//! compared in token base units at the fee's exchange rate, converted with
//! [`crate::pricing::fiat_to_tokens`] (rounded up, like every fee), so a
//! fee whose fiat value equals the cap exactly is within it.
//!
//! | structure | tier | who pays the cost c (token base units) |
//! |---|---|---|
//! | [`CostStructure::PerUse`] | requested (or the account's default) | requester: c |
//! | [`CostStructure::CapWithDowngrade`] | best tier at or below the requested one whose *estimated* cost is within the cap | requester: min(c, cap); operator: the rest (the estimate was low, the network absorbs it) |
//! | [`CostStructure::CapWithSubsidy`] | requested | requester: min(c, cap); subsidy account: the rest |
//! | [`CostStructure::FullSubsidy`] | requested | subsidy account: c |
//! | [`CostStructure::Subscription`] | the deal's, fixed | the subscription: c, reconciled daily ([`settle_subscription_day`]) |
//!
//! Without a cap on the request, the two capped structures behave as
//! per-use. A cap on a request whose deal has no cap structure (per-use,
//! full subsidy, subscription) is refused rather than ignored
//! ([`DealError::CapNotInDeal`]), and so is a tier other than the
//! subscription's ([`DealError::TierFixed`]).
//!
//! **Tier downgrade.** The seed's work-estimation component gives, per
//! service, the resources a request is expected to use (a
//! [`ResourceUsage`]). It is priced at each tier from the requested one
//! down the [`crate::pricing::PriceTable`] (best first); the first tier
//! whose estimated token amount is ≤ the cap is used. If none is,
//! the request is refused with [`DealError::OverCap`]. (The seed's last
//! resort, heavily loaded machines offering a discount, is the
//! scheduler's business, not the ledger's.)
//!
//! **Charges.** [`Charge::parts`] lists the primary payer first, always
//! (even for a cost of 0), then each other payer with a nonzero amount. The
//! parts sum exactly to the cost.
//!
//! **Subscription.** Each row still records its actual cost, paid by
//! [`Payer::Subscription`]. Each day the fixed daily fee is collected from
//! the requester and the payout account is funded with the day's actual
//! cost: when the fee exceeds the cost the operator receives the
//! difference, otherwise the operator pays it in. (The broker does this
//! with a daily fee row and by having the operator front the usage.)

use serde::{Deserialize, Serialize};

use crate::pricing::{Fee, Pricer, PricingError, ResourceUsage, TierId, fiat_to_tokens};
use crate::split::Account;

/// Why a request is refused or can't be charged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DealError {
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("a capped request with tier downgrade needs a cost estimate")]
    EstimateRequired,
    #[error(
        "no tier at or below {requested} fits the cap of {cap_fiat_micros} fiat micro-units \
         (cheapest estimate {cheapest_fiat_micros} at tier {cheapest_tier})"
    )]
    OverCap {
        requested: TierId,
        cap_fiat_micros: u128,
        cheapest_tier: TierId,
        cheapest_fiat_micros: u128,
    },
    #[error("this account's deal takes no price cap")]
    CapNotInDeal,
    #[error("this account's subscription runs at tier {deal}, not {requested}")]
    TierFixed { deal: TierId, requested: TierId },
    #[error("the fee was priced at tier {priced} but the request was admitted at {admitted}")]
    TierMismatch { admitted: TierId, priced: TierId },
}

/// The seed's cost structures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CostStructure {
    /// The requester pays the fee at the tier it asks for.
    PerUse,
    /// A capped request runs at the best tier whose estimate fits the cap.
    CapWithDowngrade,
    /// A capped request keeps its tier; `subsidy` pays above the cap.
    CapWithSubsidy { subsidy: Account },
    /// `subsidy` pays everything.
    FullSubsidy { subsidy: Account },
    /// A flat daily fee at a fixed tier.
    Subscription {
        tier: TierId,
        daily_fee_fiat_micros: u128,
    },
}

/// A requester account's deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deal {
    /// The requester account.
    pub account: Account,
    /// The tier of requests that don't name one.
    pub default_tier: TierId,
    pub structure: CostStructure,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Request {
    /// The service tier; `None` for the account's default.
    pub tier: Option<TierId>,
    /// The most the requester will pay, in fiat micro-units.
    pub cap_fiat_micros: Option<u128>,
}

/// The tier a request runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Admission {
    pub requested: TierId,
    pub tier: TierId,
    pub cap_fiat_micros: Option<u128>,
    /// The price in force at admission: the tier's price times this, in
    /// ppm (10^6 is 1×; see [`crate::curve`]). Fixed at admission, so the
    /// escrow hold taken then bounds the row.
    #[serde(default = "multiplier_one")]
    pub multiplier_ppm: u64,
    /// The broker's utilisation at admission (busy slots / total, ppm),
    /// which set the multiplier.
    #[serde(default)]
    pub utilisation_ppm: u32,
}

fn multiplier_one() -> u64 {
    crate::pricing::MULTIPLIER_ONE
}

impl Admission {
    /// An admission at 1× the tier's price.
    pub fn new(requested: TierId, tier: TierId, cap_fiat_micros: Option<u128>) -> Admission {
        Admission {
            requested,
            tier,
            cap_fiat_micros,
            multiplier_ppm: multiplier_one(),
            utilisation_ppm: 0,
        }
    }

    /// Whether the tier is lower than requested.
    pub fn downgraded(&self) -> bool {
        self.tier != self.requested
    }
}

/// Who pays (part of) a fee.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "account", rename_all = "snake_case")]
pub enum Payer {
    /// Collected from the requester account.
    Requester(Account),
    /// Collected from a subsidy account.
    Subsidy(Account),
    /// Absorbed by the operator.
    Operator,
    /// Covered by the requester's daily subscription.
    Subscription(Account),
}

/// One payer's part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChargePart {
    pub payer: Payer,
    pub amount: u128,
}

/// Who pays a fee, and how much each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Charge {
    /// The tier the work ran at.
    pub tier: TierId,
    /// The fee in token base units; Σ parts.
    pub cost: u128,
    pub parts: Vec<ChargePart>,
}

impl Charge {
    fn new(tier: TierId, cost: u128, primary: (Payer, u128), other: Option<(Payer, u128)>) -> Self {
        let mut parts = vec![ChargePart {
            payer: primary.0,
            amount: primary.1,
        }];
        if let Some((payer, amount)) = other.filter(|o| o.1 > 0) {
            parts.push(ChargePart { payer, amount });
        }
        Self { tier, cost, parts }
    }

    /// What `payer` pays.
    pub fn paid_by(&self, payer: &Payer) -> u128 {
        self.parts
            .iter()
            .filter(|p| &p.payer == payer)
            .map(|p| p.amount)
            .sum()
    }
}

impl Deal {
    /// Chooses the tier a request runs at. `estimate` is the service's
    /// estimate of the request's usage; only a capped request under
    /// [`CostStructure::CapWithDowngrade`] needs it.
    pub fn admit(
        &self,
        request: &Request,
        pricer: &Pricer,
        estimate: Option<&ResourceUsage>,
        day: u32,
    ) -> Result<Admission, DealError> {
        let requested = request.tier.unwrap_or(self.default_tier);
        let cap = request.cap_fiat_micros;
        let admit = |tier| -> Result<Admission, DealError> {
            pricer.table.get(tier)?;
            Ok(Admission::new(requested, tier, cap))
        };
        match (&self.structure, cap) {
            (CostStructure::Subscription { tier, .. }, None) => match request.tier {
                Some(t) if t != *tier => Err(DealError::TierFixed {
                    deal: *tier,
                    requested: t,
                }),
                _ => Ok(Admission {
                    requested: *tier,
                    ..admit(*tier)?
                }),
            },
            (
                CostStructure::PerUse
                | CostStructure::FullSubsidy { .. }
                | CostStructure::Subscription { .. },
                Some(_),
            ) => Err(DealError::CapNotInDeal),
            (CostStructure::CapWithDowngrade, Some(cap)) => {
                let usage = estimate.ok_or(DealError::EstimateRequired)?;
                let cap_tokens = fiat_to_tokens(cap, pricer.rate)?;
                let mut cheapest = None;
                for t in pricer.table.at_or_below(requested)? {
                    let fee = pricer.fee(usage, t.tier, day)?;
                    if fee.token_amount <= cap_tokens {
                        return admit(t.tier);
                    }
                    cheapest = Some(fee);
                }
                // at_or_below is never empty, so `cheapest` is set.
                let (cheapest_tier, cheapest_fiat_micros) =
                    cheapest.map_or((requested, 0), |f| (f.tier, f.fee_fiat_micros));
                Err(DealError::OverCap {
                    requested,
                    cap_fiat_micros: cap,
                    cheapest_tier,
                    cheapest_fiat_micros,
                })
            }
            _ => admit(requested),
        }
    }

    /// Who pays `fee` for work admitted as `admission` (see the module
    /// docs). The parts sum exactly to `fee.token_amount`.
    pub fn charge(&self, fee: &Fee, admission: &Admission) -> Result<Charge, DealError> {
        if fee.tier != admission.tier {
            return Err(DealError::TierMismatch {
                admitted: admission.tier,
                priced: fee.tier,
            });
        }
        let cost = fee.token_amount;
        let requester = Payer::Requester(self.account.clone());
        let capped = |other: Payer| -> Result<Charge, DealError> {
            let Some(cap) = admission.cap_fiat_micros else {
                return Ok(Charge::new(fee.tier, cost, (requester.clone(), cost), None));
            };
            let pays = cost.min(fiat_to_tokens(cap, fee.rate)?);
            Ok(Charge::new(
                fee.tier,
                cost,
                (requester.clone(), pays),
                Some((other, cost - pays)),
            ))
        };
        match &self.structure {
            CostStructure::PerUse => Ok(Charge::new(fee.tier, cost, (requester, cost), None)),
            CostStructure::CapWithDowngrade => capped(Payer::Operator),
            CostStructure::CapWithSubsidy { subsidy } => capped(Payer::Subsidy(subsidy.clone())),
            CostStructure::FullSubsidy { subsidy } => Ok(Charge::new(
                fee.tier,
                cost,
                (Payer::Subsidy(subsidy.clone()), cost),
                None,
            )),
            CostStructure::Subscription { .. } => Ok(Charge::new(
                fee.tier,
                cost,
                (Payer::Subscription(self.account.clone()), cost),
                None,
            )),
        }
    }
}

/// One day of a subscription, settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionDay {
    /// The daily fee, collected from the requester (token base units).
    pub collected: u128,
    /// The day's actual cost: what the payout account is funded with.
    pub usage: u128,
    /// collected − usage, when positive: to the operator.
    pub operator_receives: u128,
    /// usage − collected, when positive: from the operator.
    pub operator_pays: u128,
}

/// Settles a subscription day: the daily fee converted at `rate` (rounded
/// up) against `usage`, the sum of the day's [`Payer::Subscription`] parts.
/// collected + operator_pays = usage + operator_receives.
pub fn settle_subscription_day(
    daily_fee_fiat_micros: u128,
    rate: crate::pricing::ExchangeRate,
    usage: u128,
) -> Result<SubscriptionDay, DealError> {
    let collected = fiat_to_tokens(daily_fee_fiat_micros, rate)?;
    Ok(SubscriptionDay {
        collected,
        usage,
        operator_receives: collected.saturating_sub(usage),
        operator_pays: usage.saturating_sub(collected),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{
        BASE_UNITS_PER_TOKEN, ExchangeRate, PriceTable, PricingConfig, TierPrice, TierSpec,
    };
    use proptest::prelude::*;

    const T1: TierId = TierId(1);
    const T2: TierId = TierId(2);
    const T3: TierId = TierId(3);

    /// Tiers 1, 2, 3 at €2, €1, €0.50 per coin-equivalent; 1 token = €0.05.
    fn pricer() -> Pricer {
        let tier = |id, threads, price| TierPrice {
            tier: TierId(id),
            spec: TierSpec {
                min_threads: threads,
                min_mips: 1000 * u64::from(threads),
                min_bandwidth_mbps: 100,
            },
            fiat_micros_per_coin: price,
        };
        let table = PriceTable::new(vec![
            tier(1, 8, 2_000_000),
            tier(2, 4, 1_000_000),
            tier(3, 1, 500_000),
        ])
        .expect("valid");
        let rate = ExchangeRate {
            fiat_micros_per_token: 50_000,
        };
        Pricer::new(PricingConfig::default(), table, rate).expect("valid")
    }

    /// One coin-equivalent of CPU on day 0 (times `n`/10).
    fn tenths_of_a_coin(n: u64) -> ResourceUsage {
        ResourceUsage {
            fuel: 3_290_400 * 3_600_000_000_000 / 1000 * n / 10,
            ..ResourceUsage::default()
        }
    }

    fn deal(structure: CostStructure) -> Deal {
        Deal {
            account: Account::new("acme"),
            default_tier: T1,
            structure,
        }
    }

    fn capped(cap: u128) -> Request {
        Request {
            tier: None,
            cap_fiat_micros: Some(cap),
        }
    }

    fn tokens(n: u128) -> u128 {
        n * BASE_UNITS_PER_TOKEN
    }

    fn requester() -> Payer {
        Payer::Requester(Account::new("acme"))
    }

    #[test]
    fn per_use() {
        let p = pricer();
        let d = deal(CostStructure::PerUse);
        let a = d.admit(&Request::default(), &p, None, 0).expect("admitted");
        assert_eq!((a.requested, a.tier, a.downgraded()), (T1, T1, false));
        let req = Request {
            tier: Some(T2),
            cap_fiat_micros: None,
        };
        let a = d.admit(&req, &p, None, 0).expect("admitted");
        assert_eq!(a.tier, T2);
        let fee = p.fee(&tenths_of_a_coin(10), T2, 0).expect("fee");
        let c = d.charge(&fee, &a).expect("charged");
        assert_eq!(c.cost, tokens(20));
        assert_eq!(
            c.parts,
            vec![ChargePart {
                payer: requester(),
                amount: tokens(20)
            }]
        );
        assert_eq!(
            d.admit(&capped(1), &p, None, 0),
            Err(DealError::CapNotInDeal)
        );
        let unknown = Request {
            tier: Some(TierId(7)),
            cap_fiat_micros: None,
        };
        assert_eq!(
            d.admit(&unknown, &p, None, 0),
            Err(DealError::Pricing(PricingError::UnknownTier(TierId(7))))
        );
        let fee1 = p.fee(&tenths_of_a_coin(10), T1, 0).expect("fee");
        assert_eq!(
            d.charge(&fee1, &a),
            Err(DealError::TierMismatch {
                admitted: T2,
                priced: T1
            })
        );
    }

    #[test]
    fn cap_with_downgrade() {
        let p = pricer();
        let d = deal(CostStructure::CapWithDowngrade);
        let est = tenths_of_a_coin(10); // €2 / €1 / €0.50 at tiers 1 / 2 / 3
        let tier_for = |cap| d.admit(&capped(cap), &p, Some(&est), 0).map(|a| a.tier);
        assert_eq!(tier_for(2_000_000), Ok(T1)); // exactly the cap
        assert_eq!(tier_for(1_999_999), Ok(T2));
        assert_eq!(tier_for(1_000_000), Ok(T2));
        assert_eq!(tier_for(999_999), Ok(T3));
        assert_eq!(
            tier_for(400_000),
            Err(DealError::OverCap {
                requested: T1,
                cap_fiat_micros: 400_000,
                cheapest_tier: T3,
                cheapest_fiat_micros: 500_000,
            })
        );
        // Never upgraded: asking for tier 3 with a generous cap stays at 3.
        let req = Request {
            tier: Some(T3),
            cap_fiat_micros: Some(10_000_000),
        };
        assert_eq!(d.admit(&req, &p, Some(&est), 0).map(|a| a.tier), Ok(T3));
        assert_eq!(
            d.admit(&capped(1), &p, None, 0),
            Err(DealError::EstimateRequired)
        );
        // No cap: per-use at the requested tier, no estimate needed.
        let a = d.admit(&Request::default(), &p, None, 0).expect("admitted");
        assert_eq!(a.tier, T1);
        // The estimate said €1 at tier 2, the work cost €1.50: the
        // requester pays the €1.20 cap, the operator the rest.
        let a = d
            .admit(&capped(1_200_000), &p, Some(&est), 0)
            .expect("admitted");
        assert!(a.downgraded());
        let fee = p.fee(&tenths_of_a_coin(15), a.tier, 0).expect("fee");
        let c = d.charge(&fee, &a).expect("charged");
        assert_eq!(c.cost, tokens(30));
        assert_eq!(c.paid_by(&requester()), tokens(24));
        assert_eq!(c.paid_by(&Payer::Operator), tokens(6));
        // Within the cap, the requester pays it all and there is one part.
        let fee = p.fee(&tenths_of_a_coin(5), a.tier, 0).expect("fee");
        let c = d.charge(&fee, &a).expect("charged");
        assert_eq!(
            c.parts,
            vec![ChargePart {
                payer: requester(),
                amount: tokens(10)
            }]
        );
    }

    #[test]
    fn cap_with_subsidy_and_full_subsidy() {
        let p = pricer();
        let fund = Account::new("fund");
        let d = deal(CostStructure::CapWithSubsidy {
            subsidy: fund.clone(),
        });
        // The tier is kept whatever the cap, without an estimate.
        let a = d.admit(&capped(1), &p, None, 0).expect("admitted");
        assert_eq!(a.tier, T1);
        let fee = p.fee(&tenths_of_a_coin(10), T1, 0).expect("fee"); // €2 = 40 tokens
        let c = d.charge(&fee, &a).expect("charged");
        // €0.000001 at €0.05 a token is 2·10^13 base units.
        assert_eq!(c.paid_by(&requester()), 20_000_000_000_000);
        assert_eq!(
            c.paid_by(&Payer::Subsidy(fund.clone())),
            tokens(40) - 20_000_000_000_000
        );
        let full = deal(CostStructure::FullSubsidy {
            subsidy: fund.clone(),
        });
        let a = full
            .admit(&Request::default(), &p, None, 0)
            .expect("admitted");
        let c = full.charge(&fee, &a).expect("charged");
        assert_eq!(
            c.parts,
            vec![ChargePart {
                payer: Payer::Subsidy(fund.clone()),
                amount: tokens(40)
            }]
        );
        assert_eq!(
            full.admit(&capped(1), &p, None, 0),
            Err(DealError::CapNotInDeal)
        );
        // A free request still names its payer.
        let zero = p.fee(&ResourceUsage::default(), T1, 0).expect("fee");
        let c = full.charge(&zero, &a).expect("charged");
        assert_eq!(
            c.parts,
            vec![ChargePart {
                payer: Payer::Subsidy(fund),
                amount: 0
            }]
        );
    }

    #[test]
    fn subscription() {
        let p = pricer();
        let d = deal(CostStructure::Subscription {
            tier: T2,
            daily_fee_fiat_micros: 3_000_000, // €3 a day = 60 tokens
        });
        let a = d.admit(&Request::default(), &p, None, 0).expect("admitted");
        assert_eq!((a.requested, a.tier), (T2, T2));
        let same = Request {
            tier: Some(T2),
            cap_fiat_micros: None,
        };
        assert!(d.admit(&same, &p, None, 0).is_ok());
        let other = Request {
            tier: Some(T1),
            cap_fiat_micros: None,
        };
        assert_eq!(
            d.admit(&other, &p, None, 0),
            Err(DealError::TierFixed {
                deal: T2,
                requested: T1
            })
        );
        assert_eq!(
            d.admit(&capped(5), &p, None, 0),
            Err(DealError::CapNotInDeal)
        );
        let fee = p.fee(&tenths_of_a_coin(10), T2, 0).expect("fee");
        let c = d.charge(&fee, &a).expect("charged");
        let sub = Payer::Subscription(Account::new("acme"));
        assert_eq!(c.paid_by(&sub), tokens(20));
        // Two such rows in a day: 40 tokens of work for 60 collected.
        let day = settle_subscription_day(3_000_000, p.rate, 2 * c.cost).expect("settled");
        assert_eq!(
            day,
            SubscriptionDay {
                collected: tokens(60),
                usage: tokens(40),
                operator_receives: tokens(20),
                operator_pays: 0,
            }
        );
        // Four: 80 tokens of work, the operator pays in 20.
        let day = settle_subscription_day(3_000_000, p.rate, 4 * c.cost).expect("settled");
        assert_eq!((day.operator_receives, day.operator_pays), (0, tokens(20)));
    }

    fn any_structure() -> impl Strategy<Value = CostStructure> {
        prop_oneof![
            Just(CostStructure::PerUse),
            Just(CostStructure::CapWithDowngrade),
            Just(CostStructure::CapWithSubsidy {
                subsidy: Account::new("fund")
            }),
            Just(CostStructure::FullSubsidy {
                subsidy: Account::new("fund")
            }),
            Just(CostStructure::Subscription {
                tier: T1,
                daily_fee_fiat_micros: 1
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every charge's parts sum exactly to the cost, the primary payer
        /// comes first, and a requester under a cap pays at most the cap.
        #[test]
        fn charges_sum_to_the_cost(
            structure in any_structure(),
            cost in prop_oneof![0u128..1_000_000, any::<u128>()],
            cap in proptest::option::of(prop_oneof![0u128..1_000, any::<u64>().prop_map(u128::from)]),
            rate in 1u64..u64::MAX,
        ) {
            let d = deal(structure);
            let rate = ExchangeRate { fiat_micros_per_token: rate };
            let fee = Fee { tier: T1, day: 0, resource_units: 0, fee_fiat_micros: 0, token_amount: cost, rate };
            let a = Admission {
                requested: T1,
                tier: T1,
                cap_fiat_micros: cap,
                multiplier_ppm: multiplier_one(),
                utilisation_ppm: 0,
            };
            let c = d.charge(&fee, &a).expect("charged");
            prop_assert_eq!(c.cost, cost);
            prop_assert_eq!(c.parts.iter().map(|p| p.amount).sum::<u128>(), cost);
            prop_assert!(!c.parts.is_empty() && c.parts.len() <= 2);
            prop_assert!(c.parts[1..].iter().all(|p| p.amount > 0));
            let requester_pays = c.paid_by(&requester());
            match (&d.structure, cap) {
                (CostStructure::CapWithDowngrade | CostStructure::CapWithSubsidy { .. }, Some(cap)) => {
                    let cap_tokens = fiat_to_tokens(cap, rate).expect("fits");
                    prop_assert_eq!(requester_pays, cost.min(cap_tokens));
                }
                (CostStructure::FullSubsidy { .. } | CostStructure::Subscription { .. }, _) => {
                    prop_assert_eq!(requester_pays, 0);
                }
                _ => prop_assert_eq!(requester_pays, cost),
            }
        }

        /// The downgrade picks the best tier at or below the requested one
        /// whose estimate fits the cap, and refuses only when none does.
        #[test]
        fn downgrade_picks_the_best_fitting_tier(
            tenths in 0u64..100, cap in 0u128..20_000_000, requested in 1u16..=3,
        ) {
            let p = pricer();
            let d = deal(CostStructure::CapWithDowngrade);
            let est = tenths_of_a_coin(tenths);
            let req = Request { tier: Some(TierId(requested)), cap_fiat_micros: Some(cap) };
            let cap_tokens = fiat_to_tokens(cap, p.rate).expect("fits");
            let fits = |t: u16| p.fee(&est, TierId(t), 0).expect("fee").token_amount <= cap_tokens;
            match d.admit(&req, &p, Some(&est), 0) {
                Ok(a) => {
                    prop_assert!(a.tier.0 >= requested);
                    prop_assert!(fits(a.tier.0));
                    prop_assert!((requested..a.tier.0).all(|t| !fits(t)));
                }
                Err(DealError::OverCap { .. }) => prop_assert!((requested..=3).all(|t| !fits(t))),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn subscription_day_conserves(fee in any::<u64>(), usage in any::<u64>(), rate in 1u64..u64::MAX) {
            let rate = ExchangeRate { fiat_micros_per_token: rate };
            let day = settle_subscription_day(u128::from(fee), rate, u128::from(usage)).expect("fits");
            prop_assert_eq!(day.collected + day.operator_pays, day.usage + day.operator_receives);
            prop_assert!(day.operator_pays == 0 || day.operator_receives == 0);
        }
    }
}
