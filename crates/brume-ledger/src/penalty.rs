//! Kumo's penalties: a surcharge for work that overruns its declared shape,
//! and a refund for work run slower than the provider advertised.
//!
//! The Kumo seed penalises "users that specify their jobs by large
//! incorrect margins" with additional fees, and "miners that are running
//! slow nodes" with refunded fees. Both follow one [`PenaltyRule`], in
//! parts per million (ppm, 10^6 = 100 %):
//!
//! ```text
//! deviation x  (a ratio, see below)
//! rate(x)  = 0                                      if x ≤ tolerance
//!          = min(cap, slope · (x − tolerance))      otherwise
//! amount   = ⌊fee · rate(x)⌋
//! ```
//!
//! with `tolerance` and `cap` in ppm and `slope` in ppm of fee per unit of
//! excess deviation (10^6 = 1:1: 10 % past the tolerance costs 10 % of the
//! fee). Everything is computed exactly on integers and rounded down once,
//! in the favour of whoever pays the penalty. So the amount is 0 within the
//! tolerance, never decreases as the deviation grows, and never exceeds
//! ⌊fee · cap / 10^6⌋.
//!
//! # Surcharge: the requester mis-declared the job
//!
//! A job may declare its expected runtime (ms) and peak memory (bytes)
//! ([`Declared`]). For each declared dimension the deviation is the
//! overrun x = (measured − declared) / declared, 0 if the job used less.
//! A declaration of 0 with a nonzero measurement is an unbounded overrun
//! (the cap). An undeclared dimension is not checked. The surcharge is the
//! larger of the two dimensions' amounts (one penalty for one
//! mis-declaration, not two). It is added to the fee before the split, so
//! the provider that reserved the capacity is paid for it through its share.
//!
//! # Refund: the provider was slower than it advertised
//!
//! A provider advertises its fitness in MIPS (fuel per µs of one core). The
//! measured speed of a unit of work is fuel / (run_ms · 1000) MIPS, and the
//! deviation is the shortfall x = (advertised − measured) / advertised, 0
//! if the work ran at or above the advertised speed. Runs shorter than
//! [`SlowProviderRule::min_run_ms`] are not judged (timer noise), nor are
//! providers that advertise nothing. The refund is rate(x) of the **fee**,
//! further limited to the contributor's payout, out of which it is paid
//! back to the requester ([`crate::split::Split::with_contributor_refund`]):
//! the developer and the operator are not charged for a slow provider.

use alloy_primitives::U512;
use serde::{Deserialize, Serialize};

use crate::split::PPM;

/// Why a penalty could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PenaltyError {
    #[error("arithmetic overflow computing {0}")]
    Overflow(&'static str),
    #[error("a refund cap of {0} ppm is above 1000000")]
    RefundCapTooLarge(u32),
}

/// Tolerance, slope and cap of a penalty, in ppm (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PenaltyRule {
    /// Deviation allowed without penalty.
    pub tolerance_ppm: u32,
    /// ppm of the fee per unit (10^6 ppm) of deviation past the tolerance.
    pub slope_ppm: u32,
    /// The most the penalty can be, as ppm of the fee.
    pub cap_ppm: u32,
}

impl PenaltyRule {
    /// ⌊fee · rate(x)⌋ for the deviation x = `num` / `den` (`den` > 0,
    /// `num` may exceed `den`).
    fn amount(&self, fee: u128, num: U512, den: U512) -> Result<u128, PenaltyError> {
        let ppm = U512::from(PPM);
        // x > tol  ⇔  num · 10^6 > tol · den.
        let scaled = num * ppm;
        let tol = U512::from(self.tolerance_ppm) * den;
        if scaled <= tol {
            return Ok(0);
        }
        let fee = U512::from(fee);
        // fee · slope · (x − tol) = fee · slope · (num·10^6 − tol·den) / (10^12 · den).
        let raw = fee
            .checked_mul(U512::from(self.slope_ppm))
            .and_then(|v| v.checked_mul(scaled - tol))
            .ok_or(PenaltyError::Overflow("penalty"))?
            / (ppm * ppm * den);
        let cap = fee * U512::from(self.cap_ppm) / ppm;
        u128::try_from(raw.min(cap)).map_err(|_| PenaltyError::Overflow("penalty"))
    }

    /// The largest amount this rule can take from `fee`.
    pub fn cap_amount(&self, fee: u128) -> Result<u128, PenaltyError> {
        let v = U512::from(fee) * U512::from(self.cap_ppm) / U512::from(PPM);
        u128::try_from(v).map_err(|_| PenaltyError::Overflow("penalty cap"))
    }
}

/// What a job declared about its shape (Kumo's expected run time and RAM).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Declared {
    pub runtime_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// What the job used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Measured {
    pub runtime_ms: u64,
    pub peak_memory_bytes: u64,
}

/// The surcharge for overrunning the declared shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurchargeRule {
    pub runtime: PenaltyRule,
    pub memory: PenaltyRule,
}

fn overrun(
    rule: &PenaltyRule,
    fee: u128,
    declared: u64,
    measured: u64,
) -> Result<u128, PenaltyError> {
    if measured <= declared {
        return Ok(0);
    }
    if declared == 0 {
        return rule.cap_amount(fee);
    }
    let num = U512::from(measured - declared);
    rule.amount(fee, num, U512::from(declared))
}

impl SurchargeRule {
    /// The surcharge on `fee`: the larger of the runtime and the memory
    /// overrun penalties.
    pub fn surcharge(
        &self,
        fee: u128,
        declared: &Declared,
        measured: &Measured,
    ) -> Result<u128, PenaltyError> {
        let runtime = match declared.runtime_ms {
            Some(d) => overrun(&self.runtime, fee, d, measured.runtime_ms)?,
            None => 0,
        };
        let memory = match declared.memory_bytes {
            Some(d) => overrun(&self.memory, fee, d, measured.peak_memory_bytes)?,
            None => 0,
        };
        Ok(runtime.max(memory))
    }
}

/// How fast a provider ran one unit of work, against what it advertised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpeedSample {
    /// The provider's advertised `fitness_mips`.
    pub advertised_mips: u64,
    /// Fuel the work consumed.
    pub fuel: u64,
    /// Time the work ran on the provider, in ms.
    pub run_ms: u64,
}

/// The refund for a provider slower than it advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowProviderRule {
    pub rule: PenaltyRule,
    /// Runs shorter than this are not judged.
    pub min_run_ms: u64,
}

impl SlowProviderRule {
    /// Refuses a cap above 100 % of the fee.
    pub fn validate(&self) -> Result<(), PenaltyError> {
        if self.rule.cap_ppm > PPM {
            return Err(PenaltyError::RefundCapTooLarge(self.rule.cap_ppm));
        }
        Ok(())
    }

    /// The refund to the requester: rate(shortfall) of `fee`, at most
    /// `contributor_share`.
    pub fn refund(
        &self,
        fee: u128,
        contributor_share: u128,
        sample: &SpeedSample,
    ) -> Result<u128, PenaltyError> {
        self.validate()?;
        if sample.advertised_mips == 0 || sample.run_ms == 0 || sample.run_ms < self.min_run_ms {
            return Ok(0);
        }
        // The fuel the advertised speed would have run in run_ms.
        let expected =
            U512::from(sample.advertised_mips) * U512::from(sample.run_ms) * U512::from(1000u16);
        let fuel = U512::from(sample.fuel);
        if fuel >= expected {
            return Ok(0);
        }
        // x = (adv − fuel/(run_ms·1000)) / adv = (expected − fuel) / expected.
        let amount = self.rule.amount(fee, expected - fuel, expected)?;
        Ok(amount.min(contributor_share))
    }
}

/// Both penalties, as configured for a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltyConfig {
    pub surcharge: SurchargeRule,
    pub slow_provider: SlowProviderRule,
}

impl Default for PenaltyConfig {
    /// Runtime and memory: 10 % tolerance, 1:1 slope, capped at 50 % of
    /// the fee. Slow providers: 20 % tolerance, 1:1 slope, capped at 50 %
    /// of the fee, runs under 100 ms not judged.
    fn default() -> Self {
        let overrun = PenaltyRule {
            tolerance_ppm: 100_000,
            slope_ppm: 1_000_000,
            cap_ppm: 500_000,
        };
        Self {
            surcharge: SurchargeRule {
                runtime: overrun,
                memory: overrun,
            },
            slow_provider: SlowProviderRule {
                rule: PenaltyRule {
                    tolerance_ppm: 200_000,
                    slope_ppm: 1_000_000,
                    cap_ppm: 500_000,
                },
                min_run_ms: 100,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(tolerance_ppm: u32, slope_ppm: u32, cap_ppm: u32) -> PenaltyRule {
        PenaltyRule {
            tolerance_ppm,
            slope_ppm,
            cap_ppm,
        }
    }

    #[test]
    fn surcharge_examples() {
        let s = PenaltyConfig::default().surcharge;
        let declared = Declared {
            runtime_ms: Some(1_000),
            memory_bytes: Some(1_000_000),
        };
        let m = |runtime_ms, peak_memory_bytes| Measured {
            runtime_ms,
            peak_memory_bytes,
        };
        // Within 10 %: nothing.
        assert_eq!(s.surcharge(10_000, &declared, &m(1_100, 1_000_000)), Ok(0));
        assert_eq!(s.surcharge(10_000, &declared, &m(10, 10)), Ok(0));
        // 30 % over: 20 % past the tolerance -> 20 % of the fee.
        assert_eq!(s.surcharge(10_000, &declared, &m(1_300, 0)), Ok(2_000));
        // 1101 ms: 0.1 % past the tolerance -> 10; 10.001 rounds down to 10.
        assert_eq!(s.surcharge(10_000, &declared, &m(1_101, 0)), Ok(10));
        assert_eq!(s.surcharge(10_001, &declared, &m(1_101, 0)), Ok(10));
        // Way over: capped at 50 %.
        assert_eq!(s.surcharge(10_000, &declared, &m(100_000, 0)), Ok(5_000));
        // The larger of the two dimensions, not the sum.
        let mem = 1_400_000; // 40 % over -> 30 %
        assert_eq!(s.surcharge(10_000, &declared, &m(1_300, mem)), Ok(3_000));
        // Undeclared: not checked. Declared 0: capped.
        assert_eq!(
            s.surcharge(10_000, &Declared::default(), &m(u64::MAX, u64::MAX)),
            Ok(0)
        );
        let zero = Declared {
            runtime_ms: Some(0),
            memory_bytes: None,
        };
        assert_eq!(s.surcharge(10_000, &zero, &m(1, 0)), Ok(5_000));
        assert_eq!(s.surcharge(10_000, &zero, &m(0, 0)), Ok(0));
    }

    #[test]
    fn refund_examples() {
        let r = PenaltyConfig::default().slow_provider;
        let s = |fuel, run_ms| SpeedSample {
            advertised_mips: 1_000,
            fuel,
            run_ms,
        };
        // 1000 MIPS for 1 s is 10^9 fuel.
        assert_eq!(r.refund(10_000, 7_000, &s(1_000_000_000, 1_000)), Ok(0));
        // 80 % of the speed: exactly the tolerance.
        assert_eq!(r.refund(10_000, 7_000, &s(800_000_000, 1_000)), Ok(0));
        // 60 %: shortfall 40 %, 20 % past the tolerance.
        assert_eq!(r.refund(10_000, 7_000, &s(600_000_000, 1_000)), Ok(2_000));
        // Nothing done at all: capped at 50 % of the fee...
        assert_eq!(r.refund(10_000, 7_000, &s(0, 1_000)), Ok(5_000));
        // ...and never more than the contributor's payout.
        assert_eq!(r.refund(10_000, 1_234, &s(0, 1_000)), Ok(1_234));
        // Too short to judge, or nothing advertised.
        assert_eq!(r.refund(10_000, 7_000, &s(0, 99)), Ok(0));
        let none = SpeedSample {
            advertised_mips: 0,
            ..s(0, 1_000)
        };
        assert_eq!(r.refund(10_000, 7_000, &none), Ok(0));
        let bad = SlowProviderRule {
            rule: rule(0, 1, PPM + 1),
            min_run_ms: 0,
        };
        assert_eq!(
            bad.refund(1, 1, &s(0, 1)),
            Err(PenaltyError::RefundCapTooLarge(PPM + 1))
        );
    }

    #[test]
    fn refund_flows_through_the_split() {
        use crate::split::{Account, Beneficiary, Parties, PayoutShares, split};
        let parties = Parties {
            contributor: Beneficiary::plain(Account::new("p")),
            developer: Beneficiary::plain(Account::new("d")),
            operator: Beneficiary::plain(Account::new("o")),
        };
        let shares = PayoutShares::new(700_000, 200_000).expect("valid");
        let sp = split(10_000, &shares, &parties).expect("split");
        let slow = SpeedSample {
            advertised_mips: 1_000,
            fuel: 600_000_000,
            run_ms: 1_000,
        };
        let refund = PenaltyConfig::default()
            .slow_provider
            .refund(sp.fee, sp.contributor().share, &slow)
            .expect("refund");
        let sp = sp.with_contributor_refund(refund).expect("fits");
        assert_eq!(sp.refund, 2_000);
        assert_eq!(sp.contributor().own, 5_000);
        assert_eq!(sp.payouts[1].own, 2_000);
        assert_eq!(sp.total(), 10_000);
    }

    fn any_rule() -> impl Strategy<Value = PenaltyRule> {
        (0..2 * PPM, 0..4 * PPM, 0..=PPM).prop_map(|(t, s, c)| rule(t, s, c))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn surcharge_follows_its_rule(
            rt in any_rule(), mem in any_rule(),
            fee in prop_oneof![0u128..1_000_000, any::<u128>()],
            declared in 0u64..1_000_000, a in 0u64..10_000_000, b in 0u64..10_000_000,
        ) {
            let s = SurchargeRule { runtime: rt, memory: mem };
            let d = Declared { runtime_ms: Some(declared), memory_bytes: None };
            let at = |runtime_ms| s.surcharge(fee, &d, &Measured { runtime_ms, peak_memory_bytes: 0 }).expect("no overflow");
            let (lo, hi) = (a.min(b), a.max(b));
            // Monotone, capped.
            prop_assert!(at(lo) <= at(hi));
            prop_assert!(at(hi) <= rt.cap_amount(fee).expect("cap"));
            // Zero within tolerance: measured ≤ declared · (1 + tol).
            let limit = u128::from(declared) * u128::from(PPM + rt.tolerance_ppm) / u128::from(PPM);
            if u128::from(lo) <= limit {
                prop_assert_eq!(at(lo), 0);
            }
            // Beyond it, exactly ⌊fee · min(cap, slope·(x − tol))⌋.
            if declared > 0 && u128::from(hi) > limit {
                let x_minus_tol = U512::from(hi - declared) * U512::from(PPM)
                    - U512::from(rt.tolerance_ppm) * U512::from(declared);
                let raw = U512::from(fee) * U512::from(rt.slope_ppm) * x_minus_tol
                    / (U512::from(PPM) * U512::from(PPM) * U512::from(declared));
                let want = raw.min(U512::from(rt.cap_amount(fee).expect("cap")));
                prop_assert_eq!(U512::from(at(hi)), want);
            }
        }

        #[test]
        fn refund_follows_its_rule(
            r in any_rule(), fee in prop_oneof![0u128..1_000_000, any::<u128>()],
            share_ppm in 0..=PPM, adv in 1u64..100_000, run_ms in 1u64..100_000,
            f1 in any::<u64>(), f2 in any::<u64>(),
        ) {
            let rule = SlowProviderRule { rule: r, min_run_ms: 0 };
            let share = crate::split::largest_remainder(fee, [share_ppm, PPM - share_ppm]).expect("weights")[0];
            let at = |fuel| rule.refund(fee, share, &SpeedSample { advertised_mips: adv, fuel, run_ms }).expect("no overflow");
            let (slow, fast) = (f1.min(f2), f1.max(f2));
            // Slower work (less fuel in the same time) is refunded at least as much.
            prop_assert!(at(slow) >= at(fast));
            prop_assert!(at(slow) <= share);
            prop_assert!(at(slow) <= r.cap_amount(fee).expect("cap"));
            // Zero within tolerance: measured ≥ advertised · (1 − tol).
            let expected = u128::from(adv) * u128::from(run_ms) * 1000;
            let tol = u128::from(r.tolerance_ppm.min(PPM));
            if u128::from(fast) * u128::from(PPM) >= expected * (u128::from(PPM) - tol) {
                prop_assert_eq!(at(fast), 0);
            }
        }
    }
}
