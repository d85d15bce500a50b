//! Escrow bounds the bill: a unit's row never costs more than its hold,
//! and an account never owes more than its allowance.

use proptest::prelude::*;

use super::*;
use crate::escrow::{Escrow, Reserve};

fn ledger() -> (Ledger, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ledger, _rx) = Ledger::open(
        std::sync::Arc::new(brume_ledger::store::SqliteStore::open(dir.path()).expect("store")),
        &LedgerConfig::default(),
        "0xoperator".into(),
    )
    .expect("ledger");
    (ledger, dir)
}

/// 1× up to half busy, then rising to 5× when full.
fn surge() -> brume_ledger::curve::BezierCurve {
    brume_ledger::curve::BezierCurve::new([
        (0, 1_000_000),
        (500_000, 1_000_000),
        (800_000, 3_000_000),
        (1_000_000, 5_000_000),
    ])
    .expect("curve")
}

/// A ledger whose one tier prices by [`surge`].
fn surging_ledger() -> (Ledger, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = LedgerConfig::default();
    config.tiers[0].curve = Some(surge());
    let (ledger, _rx) = Ledger::open(
        std::sync::Arc::new(brume_ledger::store::SqliteStore::open(dir.path()).expect("store")),
        &config,
        "0xoperator".into(),
    )
    .expect("ledger");
    (ledger, dir)
}

fn admission(ledger: &Ledger, tier: u16, cap: Option<u128>) -> Admission {
    let tier = TierId(tier % ledger.tier_names.len() as u16);
    Admission::new(tier, tier, cap)
}

/// One unit's limits, what its provider may claim it used (up to ten times
/// past its limits: a liar), its declared shape, its tier, and its GPUs:
/// how many it holds, and the speed its provider claims for each (up to
/// ten times the most the broker counts).
type Unit = (
    brume_api::Limits,
    brume_api::Usage,
    Declared,
    u16,
    (u32, u64),
);

fn unit() -> impl Strategy<Value = Unit> {
    let limits = (
        1u64..=1_000_000_000_000,
        1u64..=(4 << 30),
        1u64..=86_400_000,
        0u64..=(64 << 20),
        0u64..=(64 << 20),
    )
        .prop_map(|(fuel, memory_bytes, timeout_ms, i, o)| brume_api::Limits {
            fuel,
            memory_bytes,
            timeout_ms,
            max_input_bytes: i,
            max_output_bytes: o,
        });
    (
        limits,
        any::<[u32; 5]>(),
        any::<(Option<u32>, Option<u32>)>(),
        any::<u16>(),
        (
            0u32..=8,
            any::<u32>(),
            0u64..=10 * wire::MAX_GPU_MILLI_TFLOPS,
        ),
    )
        .prop_map(|(l, r, (rt, mem), tier, (gpus, g, tflops))| {
            let past = |limit: u64, x: u32| {
                (u128::from(limit) * 10 * u128::from(x) / u128::from(u32::MAX)) as u64
            };
            let usage = brume_api::Usage {
                fuel: past(l.fuel, r[0]),
                peak_memory_bytes: past(l.memory_bytes, r[1]),
                wall_us: past(l.timeout_ms.saturating_mul(1000), r[2]),
                bytes_in: past(l.max_input_bytes, r[3]),
                bytes_out: past(l.max_output_bytes, r[4]),
                gpu_us: past(
                    l.timeout_ms
                        .saturating_mul(1000)
                        .saturating_mul(u64::from(gpus.max(1))),
                    g,
                ),
            };
            let declared = Declared {
                runtime_ms: rt.map(u64::from),
                memory_bytes: mem.map(u64::from),
            };
            (l, usage, declared, tier, (gpus, tflops))
        })
}

/// What the unit's row would charge its one payer (uncapped).
fn charge(
    ledger: &Ledger,
    adm: &Admission,
    l: &brume_api::Limits,
    u: &brume_api::Usage,
    d: &Declared,
    (gpus, tflops): (u32, u64),
) -> u128 {
    let billing = Billing {
        declared: *d,
        ..Billing::default()
    };
    let clamped = rows::clamp(u, l, gpus);
    let gpu = rows::gpu_flop(clamped.gpu_us, tflops);
    let (fee, _) = ledger
        .price(&billing, adm, &clamped, gpu, crate::now_ms())
        .expect("price");
    fee.token_amount
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a provider claims, the row is at most the hold.
    #[test]
    fn a_row_never_costs_more_than_its_hold((l, u, d, tier, g) in unit()) {
        let (ledger, _dir) = ledger();
        let adm = admission(&ledger, tier, None);
        let hold = ledger.max_cost(&adm, &l, &d, g.0).expect("max cost");
        prop_assert!(charge(&ledger, &adm, &l, &u, &d, g) <= hold);
    }

    /// Under a dynamic price, the price in force is the tier's curve at the
    /// utilisation sampled at admission; the row never costs more than the
    /// hold taken then; its price is recomputed from the utilisation it
    /// records; and a busier broker never charges less.
    #[test]
    fn a_rows_price_is_recomputed_from_its_recorded_utilisation(
        (l, u, d, _, g) in unit(),
        util in 0u32..=1_000_000,
    ) {
        let (ledger, _dir) = surging_ledger();
        let mut adm = admission(&ledger, 0, None);
        ledger.price_in_force(&mut adm, || util);
        prop_assert_eq!(adm.utilisation_ppm, util);
        prop_assert_eq!(adm.multiplier_ppm, surge().multiplier_ppm(util));
        let hold = ledger.max_cost(&adm, &l, &d, g.0).expect("max cost");
        let charged = charge(&ledger, &adm, &l, &u, &d, g);
        prop_assert!(charged <= hold);
        let mut again = admission(&ledger, 0, None);
        ledger.price_in_force(&mut again, || adm.utilisation_ppm);
        prop_assert_eq!(charge(&ledger, &again, &l, &u, &d, g), charged);
        let mut full = admission(&ledger, 0, None);
        ledger.price_in_force(&mut full, || 1_000_000);
        prop_assert!(charge(&ledger, &full, &l, &u, &d, g) >= charged);
    }

    /// Random work mixes against one allowance: units are admitted only
    /// while their holds fit, each is charged its row (at most its hold)
    /// before its hold is released, and settlement collects now and then.
    /// The account never owes more than its allowance.
    #[test]
    fn an_account_never_owes_more_than_its_allowance(
        units in proptest::collection::vec((unit(), 1u128..=6, any::<bool>()), 1..40),
        allowance in 0u128..=10_000_000_000_000_000,
    ) {
        let (ledger, _dir) = ledger();
        let escrow = Arc::new(Escrow::default());
        escrow.set_allowance("acct", allowance);
        let mut open = Vec::new();
        for ((l, u, d, tier, g), runs, collect) in units {
            let adm = admission(&ledger, tier, None);
            let hold = ledger.max_cost(&adm, &l, &d, g.0).expect("max cost").saturating_mul(runs);
            if let Reserve::Held(h) = escrow.try_reserve("acct", hold, true) {
                open.push((h, l, u, d, adm, runs, g));
            }
            // Every other step, the oldest unit in flight ends.
            if open.len() > 1 {
                let (h, l, u, d, adm, runs, g) = open.remove(0);
                let cost = charge(&ledger, &adm, &l, &u, &d, g) * runs;
                escrow.charge([("acct", cost)]);
                h.release();
            }
            let v = escrow.view("acct");
            prop_assert!(v.outstanding + v.reserved <= allowance, "{v:?} over {allowance}");
            if collect {
                escrow.collected("acct", v.outstanding);
                escrow.set_allowance("acct", allowance);
            }
        }
    }
}

#[test]
fn the_default_invocation_hold_is_a_small_fraction_of_a_token() {
    let (ledger, _dir) = ledger();
    let adm = admission(&ledger, ledger.default_tier.0, None);
    let limits = crate::BrokerConfig::default().default_limits;
    let hold = ledger
        .max_cost(&adm, &limits, &Declared::default(), 0)
        .expect("max cost");
    let token = 1_000_000_000_000_000_000u128;
    assert!(hold > 0 && hold < token / 1_000, "{hold}");
}
