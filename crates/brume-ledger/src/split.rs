//! The payout split: who receives a fee.
//!
//! # Shares
//!
//! The CGN seed ("THE DEAL", "PAYOUT STRUCTURE") splits every payout P
//! between three beneficiaries at fixed ratios set by the operator:
//!
//! | role        | share       | receives          |
//! |-------------|-------------|-------------------|
//! | contributor | C           | P · C             |
//! | developer   | D           | P · D             |
//! | operator    | 1 − (C + D) | P · (1 − (C + D)) |
//!
//! Shares are integers in parts per million ([`PPM`]). [`PayoutShares`]
//! requires C + D < 10^6, so the operator's share is at least 1 ppm. The
//! split does not depend on how the fee was paid (the deal).
//!
//! Each beneficiary may name a charity and the share of its own payout, in
//! ppm from 0 to 10^6 inclusive, that goes to it ([`Charity`]).
//!
//! # Rounding: largest remainder, in two levels
//!
//! Amounts are integer base units, and the payouts sum exactly to the fee.
//! [`largest_remainder`] divides an amount A by integer weights w_i that
//! sum to W: each part first gets ⌊A · w_i / W⌋; the k base units left over
//! (k < number of parts) go one each to the k parts with the largest
//! remainders (A · w_i mod W), ties to the part listed first. So every part
//! is within **less than 1 base unit** of its exact share A · w_i / W, a
//! zero weight gets exactly 0, and the parts sum to A.
//!
//! 1. The fee is divided among contributor, developer and operator, in that
//!    order, with weights C, D, 10^6 − C − D. Each payout is within < 1
//!    base unit of fee · share / 10^6.
//! 2. A refund to the requester for a slow provider
//!    ([`crate::penalty`]) comes out of the contributor's payout
//!    ([`Split::with_contributor_refund`]); it never exceeds that payout.
//! 3. Each beneficiary's payout (the contributor's after the refund) is
//!    divided between the beneficiary and its charity, in that order, with
//!    weights 10^6 − c and c. The charity's part is within < 1 base unit of
//!    payout · c / 10^6.
//!
//! Hence Σ own + Σ charity + refund = fee, always.

use serde::{Deserialize, Serialize};

/// Parts per million: the unit of every share.
pub const PPM: u32 = 1_000_000;

/// An account that pays or is paid (an address, an API key's account, a
/// wallet): opaque to the ledger's arithmetic.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Account(pub String);

impl Account {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

/// Why a split is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("contributor {contributor} ppm + developer {developer} ppm must be below 1000000")]
    SharesTooLarge { contributor: u32, developer: u32 },
    #[error("a charity share of {0} ppm is above 1000000")]
    CharityShareTooLarge(u32),
    #[error("a refund of {refund} exceeds the contributor's payout of {payout}")]
    RefundExceedsContributor { refund: u128, payout: u128 },
}

/// The contributor's and developer's shares in ppm; the operator gets the
/// rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayoutShares {
    contributor_ppm: u32,
    developer_ppm: u32,
}

impl PayoutShares {
    /// Refuses C + D ≥ 10^6.
    pub fn new(contributor_ppm: u32, developer_ppm: u32) -> Result<Self, SplitError> {
        if u64::from(contributor_ppm) + u64::from(developer_ppm) >= u64::from(PPM) {
            return Err(SplitError::SharesTooLarge {
                contributor: contributor_ppm,
                developer: developer_ppm,
            });
        }
        Ok(Self {
            contributor_ppm,
            developer_ppm,
        })
    }

    pub fn contributor_ppm(&self) -> u32 {
        self.contributor_ppm
    }

    pub fn developer_ppm(&self) -> u32 {
        self.developer_ppm
    }

    /// 10^6 − C − D (at least 1).
    pub fn operator_ppm(&self) -> u32 {
        PPM - self.contributor_ppm - self.developer_ppm
    }
}

/// A charity named by a beneficiary, with its share of the beneficiary's
/// payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Charity {
    pub account: Account,
    pub share_ppm: u32,
}

/// A beneficiary's account and optional charity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Beneficiary {
    pub account: Account,
    pub charity: Option<Charity>,
}

impl Beneficiary {
    /// A beneficiary without a charity.
    pub fn plain(account: Account) -> Self {
        Self {
            account,
            charity: None,
        }
    }
}

/// The three beneficiaries of one fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Parties {
    /// The provider that did the work.
    pub contributor: Beneficiary,
    /// The service's developer.
    pub developer: Beneficiary,
    /// The network operator.
    pub operator: Beneficiary,
}

/// A beneficiary's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Contributor,
    Developer,
    Operator,
}

/// What a beneficiary's charity receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CharityPayout {
    pub account: Account,
    /// The charity's share of the beneficiary's payout, in ppm.
    pub share_ppm: u32,
    pub amount: u128,
}

/// One beneficiary's payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payout {
    pub role: Role,
    pub account: Account,
    /// The beneficiary's payout from step 1 (before any refund).
    pub share: u128,
    /// What the beneficiary itself receives.
    pub own: u128,
    /// Its charity's part (absent without a charity).
    pub charity: Option<CharityPayout>,
}

impl Payout {
    /// own + charity: what leaves the payout account for this beneficiary.
    pub fn net(&self) -> u128 {
        self.own + self.charity.as_ref().map_or(0, |c| c.amount)
    }
}

/// One line of the payout breakdown: an account and what it receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayoutLine {
    pub role: Role,
    /// Whether this is the charity named by `role`.
    pub charity: bool,
    pub account: Account,
    pub amount: u128,
}

/// A fee divided among its beneficiaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Split {
    pub fee: u128,
    /// Contributor, developer, operator.
    pub payouts: [Payout; 3],
    /// Refunded to the requester out of the contributor's payout.
    pub refund: u128,
}

/// Divides `amount` in proportion to `weights`, largest remainder first,
/// ties to the lower index (see the module docs). `None` when every weight
/// is zero.
pub fn largest_remainder<const N: usize>(amount: u128, weights: [u32; N]) -> Option<[u128; N]> {
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let (q, r) = (amount / total, amount % total);
    let mut parts = [0u128; N];
    let mut rems = [0u128; N];
    for i in 0..N {
        let w = u128::from(weights[i]);
        // q·w ≤ amount because w ≤ total; r·w < total·w < 2^96.
        parts[i] = q * w + r * w / total;
        rems[i] = r * w % total;
    }
    // Σ parts ≤ amount (each is a floor), and the shortfall is below N.
    let mut left = amount - parts.iter().sum::<u128>();
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_by(|&a, &b| rems[b].cmp(&rems[a]).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    Some(parts)
}

/// Largest remainder over weights that sum to [`PPM`] (never all zero).
fn by_ppm<const N: usize>(amount: u128, weights: [u32; N]) -> [u128; N] {
    largest_remainder(amount, weights).unwrap_or([0; N])
}

/// Divides `amount` between `b` and its charity (step 3).
fn payout(role: Role, b: &Beneficiary, share: u128, amount: u128) -> Result<Payout, SplitError> {
    let (own, charity) = match &b.charity {
        None => (amount, None),
        Some(c) => {
            if c.share_ppm > PPM {
                return Err(SplitError::CharityShareTooLarge(c.share_ppm));
            }
            let [own, give] = by_ppm(amount, [PPM - c.share_ppm, c.share_ppm]);
            let charity = CharityPayout {
                account: c.account.clone(),
                share_ppm: c.share_ppm,
                amount: give,
            };
            (own, Some(charity))
        }
    };
    Ok(Payout {
        role,
        account: b.account.clone(),
        share,
        own,
        charity,
    })
}

/// Splits `fee` among `parties` at `shares`.
pub fn split(fee: u128, shares: &PayoutShares, parties: &Parties) -> Result<Split, SplitError> {
    let [c, d, o] = by_ppm(
        fee,
        [
            shares.contributor_ppm,
            shares.developer_ppm,
            shares.operator_ppm(),
        ],
    );
    Ok(Split {
        fee,
        payouts: [
            payout(Role::Contributor, &parties.contributor, c, c)?,
            payout(Role::Developer, &parties.developer, d, d)?,
            payout(Role::Operator, &parties.operator, o, o)?,
        ],
        refund: 0,
    })
}

impl Split {
    /// The contributor's payout.
    pub fn contributor(&self) -> &Payout {
        &self.payouts[0]
    }

    /// Moves `refund` (in addition to any earlier refund) from the
    /// contributor's payout to the requester, and divides what is left
    /// between the contributor and its charity again.
    pub fn with_contributor_refund(mut self, refund: u128) -> Result<Split, SplitError> {
        let total = self.refund.saturating_add(refund);
        let share = self.payouts[0].share;
        if total > share {
            return Err(SplitError::RefundExceedsContributor {
                refund: total,
                payout: share,
            });
        }
        let c = &self.payouts[0];
        let beneficiary = Beneficiary {
            account: c.account.clone(),
            charity: c.charity.as_ref().map(|ch| Charity {
                account: ch.account.clone(),
                share_ppm: ch.share_ppm,
            }),
        };
        self.payouts[0] = payout(Role::Contributor, &beneficiary, share, share - total)?;
        self.refund = total;
        Ok(self)
    }

    /// Every account paid, in order: each beneficiary then its charity;
    /// zero amounts included, so the breakdown always has the same shape.
    pub fn lines(&self) -> Vec<PayoutLine> {
        let mut out = Vec::with_capacity(6);
        for p in &self.payouts {
            out.push(PayoutLine {
                role: p.role,
                charity: false,
                account: p.account.clone(),
                amount: p.own,
            });
            if let Some(c) = &p.charity {
                out.push(PayoutLine {
                    role: p.role,
                    charity: true,
                    account: c.account.clone(),
                    amount: c.amount,
                });
            }
        }
        out
    }

    /// Σ of every line plus the refund: always equal to the fee.
    pub fn total(&self) -> u128 {
        self.payouts.iter().map(Payout::net).sum::<u128>() + self.refund
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parties(charities: [Option<u32>; 3]) -> Parties {
        let b = |name: &str, c: Option<u32>| Beneficiary {
            account: Account::new(name),
            charity: c.map(|share_ppm| Charity {
                account: Account::new(format!("{name}-charity")),
                share_ppm,
            }),
        };
        Parties {
            contributor: b("provider", charities[0]),
            developer: b("developer", charities[1]),
            operator: b("operator", charities[2]),
        }
    }

    #[test]
    fn shares_must_leave_the_operator_something() {
        assert!(PayoutShares::new(700_000, 299_999).is_ok());
        assert_eq!(
            PayoutShares::new(700_000, 300_000),
            Err(SplitError::SharesTooLarge {
                contributor: 700_000,
                developer: 300_000
            })
        );
        assert!(PayoutShares::new(u32::MAX, u32::MAX).is_err());
        let s = PayoutShares::new(700_000, 200_000).expect("valid");
        assert_eq!(s.operator_ppm(), 100_000);
        let bad = parties([Some(PPM + 1), None, None]);
        assert_eq!(
            split(10, &s, &bad),
            Err(SplitError::CharityShareTooLarge(PPM + 1))
        );
    }

    #[test]
    fn largest_remainder_examples() {
        // 10 by thirds: 3.33 each, the leftover unit to the first.
        assert_eq!(
            largest_remainder(10, [1, 1, 1]).expect("weights"),
            [4, 3, 3]
        );
        // 10 at 70/20/10 %: exact.
        assert_eq!(
            largest_remainder(10, [700_000, 200_000, 100_000]).expect("weights"),
            [7, 2, 1]
        );
        // 1 unit at 45/45/10: a tie between the first two, to the first.
        assert_eq!(
            largest_remainder(1, [450_000, 450_000, 100_000]).expect("weights"),
            [1, 0, 0]
        );
        // 2 units at 10/45/45: remainders .2, .9, .9 -> second and third.
        assert_eq!(
            largest_remainder(2, [100_000, 450_000, 450_000]).expect("weights"),
            [0, 1, 1]
        );
        // Zero weight, zero part.
        assert_eq!(largest_remainder(7, [0, 1, 1]).expect("weights"), [0, 4, 3]);
        assert_eq!(largest_remainder(7, [0, 0]), None);
        assert_eq!(
            largest_remainder(u128::MAX, [1, 1]).expect("weights")[0],
            u128::MAX / 2 + 1
        );
    }

    #[test]
    fn split_example_with_charity_and_refund() {
        let s = PayoutShares::new(700_000, 200_000).expect("valid");
        // The developer gives 10 % to its charity.
        let p = parties([Some(50_000), Some(100_000), None]);
        let sp = split(1_001, &s, &p).expect("split");
        // 700.7 / 200.2 / 100.1 -> 701 / 200 / 100.
        let shares: Vec<u128> = sp.payouts.iter().map(|p| p.share).collect();
        assert_eq!(shares, [701, 200, 100]);
        assert_eq!(sp.payouts[1].own, 180);
        assert_eq!(sp.payouts[1].charity.as_ref().map(|c| c.amount), Some(20));
        // 701 · 5 % = 35.05 -> 35.
        assert_eq!(sp.payouts[0].own, 666);
        assert_eq!(sp.total(), 1_001);
        let lines: Vec<u128> = sp.lines().iter().map(|l| l.amount).collect();
        assert_eq!(lines, [666, 35, 180, 20, 100]);
        // A refund of 101 out of the contributor's 701 leaves 600: 570 + 30.
        let r = sp.with_contributor_refund(101).expect("fits");
        assert_eq!(r.refund, 101);
        assert_eq!(r.contributor().own, 570);
        assert_eq!(r.contributor().net(), 600);
        assert_eq!(r.total(), 1_001);
        let err = r.clone().with_contributor_refund(601);
        assert_eq!(
            err,
            Err(SplitError::RefundExceedsContributor {
                refund: 702,
                payout: 701
            })
        );
        let all = r.with_contributor_refund(600).expect("fits");
        assert_eq!(all.contributor().net(), 0);
        assert_eq!(all.total(), 1_001);
    }

    /// |part·W − A·w| < W: the part is within 1 base unit of its exact share.
    fn within_one(part: u128, amount: u128, w: impl Into<u128>, total: impl Into<u128>) -> bool {
        let (w, total) = (w.into(), total.into());
        let lhs = alloy_primitives::U256::from(part) * alloy_primitives::U256::from(total);
        let rhs = alloy_primitives::U256::from(amount) * alloy_primitives::U256::from(w);
        let diff = if lhs > rhs { lhs - rhs } else { rhs - lhs };
        diff < alloy_primitives::U256::from(total)
    }

    fn charity() -> impl Strategy<Value = Option<u32>> {
        prop_oneof![Just(None), (0..=PPM).prop_map(Some)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn split_sums_to_the_fee(
            fee in prop_oneof![0u128..10_000, any::<u128>()],
            c in 0..PPM, d in 0..PPM,
            ch in [charity(), charity(), charity()],
            refund_ppm in 0..=PPM,
        ) {
            prop_assume!(c + d < PPM);
            let s = PayoutShares::new(c, d).expect("valid");
            let sp = split(fee, &s, &parties(ch)).expect("split");
            prop_assert_eq!(sp.total(), fee);
            let lines: u128 = sp.lines().iter().map(|l| l.amount).sum();
            prop_assert_eq!(lines, fee);
            // Every payout within 1 base unit of its exact share.
            let ppm = [c, d, s.operator_ppm()];
            for (p, w) in sp.payouts.iter().zip(ppm) {
                prop_assert!(within_one(p.share, fee, w, PPM), "{:?}", p);
                prop_assert_eq!(p.net(), p.share);
                if let Some(ch) = &p.charity {
                    prop_assert!(within_one(ch.amount, p.share, ch.share_ppm, PPM));
                }
                if w == 0 {
                    prop_assert_eq!(p.share, 0);
                }
            }
            // Any refund up to the contributor's payout keeps the sum.
            let share = sp.contributor().share;
            let refund = by_ppm(share, [refund_ppm, PPM - refund_ppm])[0];
            let r = sp.with_contributor_refund(refund).expect("fits");
            prop_assert_eq!(r.total(), fee);
            prop_assert_eq!(r.contributor().net(), share - refund);
            if let Some(ch) = &r.contributor().charity {
                prop_assert!(within_one(ch.amount, share - refund, ch.share_ppm, PPM));
            }
        }

        #[test]
        fn largest_remainder_bounds(
            amount in any::<u128>(),
            weights in prop_oneof![
                [0u32..1000, 0u32..1000, 0u32..1000, 0u32..1000],
                [any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()],
            ],
        ) {
            let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
            prop_assume!(total > 0);
            let parts = largest_remainder(amount, weights).expect("nonzero weights");
            let sum = parts.iter().try_fold(0u128, |a, p| a.checked_add(*p));
            prop_assert_eq!(sum, Some(amount));
            for (p, w) in parts.iter().zip(weights) {
                prop_assert!(within_one(*p, amount, w, total));
            }
        }
    }
}
