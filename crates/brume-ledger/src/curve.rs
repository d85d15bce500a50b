//! A dynamic price multiplier: a cubic Bézier curve of the broker's
//! utilisation, evaluated on integers only, with a bounded error.
//!
//! # Control points
//!
//! The shadw seed prices work along a bonding curve given by the control
//! points of a cubic Bézier curve. Here an operator gives four control
//! points P0..P3, each a pair (x, y) **in parts per million** ([`PPM`]):
//!
//! - x is the broker's utilisation, busy slots / total slots · 10^6, in
//!   `0..=1_000_000`;
//! - y is a price multiplier: 10^6 is 1×, 2 500 000 is 2.5×. It is at most
//!   [`MAX_MULTIPLIER_PPM`] (10^12, a million times the base price), which
//!   keeps every intermediate product within `u128` (see below).
//!
//! [`BezierCurve::new`] requires x0 = 0, x3 = 10^6 and x0 ≤ x1 ≤ x2 ≤ x3,
//! and refuses any y above the maximum.
//!
//! # The formula
//!
//! ```text
//! B(t) = (1 − t)^3·P0 + 3(1 − t)^2·t·P1 + 3(1 − t)·t^2·P2 + t^3·P3,   t ∈ [0, 1]
//! ```
//!
//! The seed's formula omits the binomial coefficients 1, 3, 3, 1; without
//! them the weights do not sum to 1 and the "curve" does not pass through
//! P3 nor stay within the control points. This one has them.
//!
//! t is a fixed-point fraction k / 2^20 with k in `0..=2^20`, and with
//! s = 2^20 − k both coordinates are computed exactly as rationals:
//! `B(k) = (s^3·P0 + 3·s^2·k·P1 + 3·s·k^2·P2 + k^3·P3) / 2^60`.
//!
//! # Inverting x(t)
//!
//! The price is asked for at a utilisation u, not at a t. The derivative
//! x'(t) is 3 times the quadratic Bézier curve of x1 − x0, x2 − x1, x3 − x2,
//! all ≥ 0 when x0 ≤ x1 ≤ x2 ≤ x3, so x(t) is non-decreasing in t (and
//! strictly increasing, since x3 > x0). [`BezierCurve::multiplier_ppm`]
//! finds by integer bisection on k the **largest k with x(k) ≤ u**,
//! comparing numerators (x_num(k) ≤ u · 2^60) so that nothing is divided,
//! and returns ⌊y(k)⌋, i.e. ⌊y_num(k) / 2^60⌋.
//!
//! The end points are exact by definition: utilisation 0 gives y0 and
//! utilisation 10^6 (or more, which is clamped to 10^6) gives y3. (Bisection
//! alone would give y3 at 10^6, but at 0 it would give y at the largest k
//! with x(k) = 0, which is not k = 0 when x1 = 0 and the curve starts flat
//! in x; so 0 is special-cased.)
//!
//! # Error bound
//!
//! Let t* be the exact parameter with x(t*) = u. The bisection finds
//! t = k / 2^20 with t ≤ t* < t + 2^-20. y'(t) is 3 times a quadratic Bézier
//! curve of the differences y_{i+1} − y_i, so |y'| ≤ 3 · max |yi − yj| and
//! the exact y(t) is within 3 · max |yi − yj| · 2^-20 of y(t*); flooring
//! costs less than 1 more ppm. So
//!
//! ```text
//! |multiplier_ppm(u) − y(t*)| < ⌈3 · max_ij |yi − yj| / 2^20⌉ + 1   ppm
//! ```
//!
//! ([`BezierCurve::error_bound_ppm`]). For a curve from 1× to 5× that is
//! 13 ppm (0.0013 %); for the flat curve it is 1 ppm (in fact 0).
//!
//! # Monotonicity
//!
//! A Bézier curve lies in the convex hull of its control points, and with
//! y0 ≤ y1 ≤ y2 ≤ y3 its y'(t) ≥ 0 for the same reason as x'(t): so the
//! price never decreases as the utilisation grows. The integer evaluation
//! keeps this: the chosen k is non-decreasing in u, y_num(k) is
//! non-decreasing in k, flooring is monotone, and the special-cased end
//! points are the curve's minimum and maximum.
//!
//! # Recomputation
//!
//! Evaluation is a pure function of the four points and the utilisation,
//! so a row's price can be recomputed from its recorded utilisation and the
//! curve (which serialises as the array of its four `[x, y]` pairs, and is
//! checked again when deserialised).

use serde::{Deserialize, Serialize};

use crate::split::PPM;

/// The largest accepted multiplier, in ppm: 10^12, i.e. 10^6×.
pub const MAX_MULTIPLIER_PPM: u64 = 1_000_000_000_000;

/// Bits of the fixed-point parameter t = k / 2^T_BITS.
pub const T_BITS: u32 = 20;

/// t = 1 in fixed point.
const T_ONE: u64 = 1 << T_BITS;

/// The denominator of B(k): (2^20)^3.
const DENOM_SHIFT: u32 = 3 * T_BITS;

/// Why a curve's control points were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurveError {
    #[error("control point P0 is at utilisation {0} ppm; the curve must start at utilisation 0")]
    FirstNotAtZero(u32),
    #[error(
        "control point P3 is at utilisation {0} ppm; the curve must end at utilisation 1000000 (100 %)"
    )]
    LastNotAtFull(u32),
    #[error(
        "control point P{index} is at utilisation {x} ppm, below P{prev_index}'s {prev} ppm; \
         the utilisations must be non-decreasing (x0 <= x1 <= x2 <= x3)"
    )]
    NotSorted {
        index: usize,
        x: u32,
        prev_index: usize,
        prev: u32,
    },
    #[error(
        "control point P{index} has a multiplier of {y} ppm, above the maximum of \
         1000000000000 ppm (10^6 x)"
    )]
    MultiplierTooLarge { index: usize, y: u64 },
}

/// A price multiplier as a cubic Bézier curve of utilisation (see the
/// module docs). Serialised as `[[x0, y0], [x1, y1], [x2, y2], [x3, y3]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "[(u32, u64); 4]", into = "[(u32, u64); 4]")]
pub struct BezierCurve {
    points: [(u32, u64); 4],
}

impl BezierCurve {
    /// Checks the control points: x0 = 0, x3 = 10^6, x non-decreasing,
    /// every y ≤ [`MAX_MULTIPLIER_PPM`].
    pub fn new(points: [(u32, u64); 4]) -> Result<Self, CurveError> {
        if points[0].0 != 0 {
            return Err(CurveError::FirstNotAtZero(points[0].0));
        }
        if points[3].0 != PPM {
            return Err(CurveError::LastNotAtFull(points[3].0));
        }
        for index in 1..4 {
            let (x, prev) = (points[index].0, points[index - 1].0);
            if x < prev {
                return Err(CurveError::NotSorted {
                    index,
                    x,
                    prev_index: index - 1,
                    prev,
                });
            }
        }
        for (index, &(_, y)) in points.iter().enumerate() {
            if y > MAX_MULTIPLIER_PPM {
                return Err(CurveError::MultiplierTooLarge { index, y });
            }
        }
        Ok(Self { points })
    }

    /// The curve that multiplies by 1× at every utilisation.
    pub fn flat() -> Self {
        let one = u64::from(PPM);
        Self {
            points: [(0, one), (0, one), (PPM, one), (PPM, one)],
        }
    }

    /// The four control points, as given to [`BezierCurve::new`].
    pub fn points(&self) -> [(u32, u64); 4] {
        self.points
    }

    /// The price multiplier in ppm at `utilisation_ppm` (clamped to 10^6).
    /// Exactly y0 at 0 and y3 at 10^6; elsewhere ⌊y(k)⌋ at the largest
    /// fixed-point k with x(k) ≤ u, within [`BezierCurve::error_bound_ppm`]
    /// of the exact curve.
    pub fn multiplier_ppm(&self, utilisation_ppm: u32) -> u64 {
        let u = utilisation_ppm.min(PPM);
        if u == 0 {
            return self.points[0].1;
        }
        if u == PPM {
            return self.points[3].1;
        }
        let k = self.parameter_at(u);
        let y = bernstein(k, self.ys()) >> DENOM_SHIFT;
        // y is a convex combination of the yi, so y ≤ max yi ≤ 10^12.
        u64::try_from(y).unwrap_or(MAX_MULTIPLIER_PPM)
    }

    /// `base · multiplier_ppm(utilisation_ppm) / 10^6`, rounded down; `None`
    /// if the product overflows `u128`.
    pub fn apply(&self, base: u128, utilisation_ppm: u32) -> Option<u128> {
        let m = u128::from(self.multiplier_ppm(utilisation_ppm));
        base.checked_mul(m).map(|p| p / u128::from(PPM))
    }

    /// The documented bound on |multiplier_ppm(u) − y(t*)|, in ppm:
    /// ⌈3 · max |yi − yj| / 2^20⌉ + 1 (the result is strictly below it).
    pub fn error_bound_ppm(&self) -> u64 {
        let ys = self.ys();
        let (lo, hi) = ys
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &y| (lo.min(y), hi.max(y)));
        // 3 · 10^12 + 2^20 fits u64 easily.
        (3 * (hi - lo)).div_ceil(T_ONE) + 1
    }

    /// The largest k in 0..=2^20 with x(k) ≤ u, by bisection: x_num(k) is
    /// non-decreasing in k and x_num(0) = 0 ≤ u · 2^60.
    fn parameter_at(&self, u: u32) -> u64 {
        let xs = self.points.map(|(x, _)| u64::from(x));
        // u ≤ 10^6 < 2^20, so the target is below 2^80.
        let target = u128::from(u) << DENOM_SHIFT;
        // Invariant: x(lo) ≤ u, and hi = 2^20 + 1 or x(hi) > u.
        let (mut lo, mut hi) = (0u64, T_ONE + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if bernstein(mid, xs) <= target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn ys(&self) -> [u64; 4] {
        self.points.map(|(_, y)| y)
    }
}

/// The numerator of B(k / 2^20) for coordinates `p`:
/// s^3·p0 + 3·s^2·k·p1 + 3·s·k^2·p2 + k^3·p3 with s = 2^20 − k, k ≤ 2^20.
///
/// No overflow: s, k ≤ 2^20, so each weight s^3, 3s^2k, 3sk^2, k^3 is at
/// most 3 · 2^60 < 2^62 (in fact the four sum to (s + k)^3 = 2^60), and each
/// p ≤ 10^12 < 2^40. Crudely, each of the four terms is < 2^62 · 2^40 and
/// their sum < 2^104, i.e. 2^60 · 10^12 · 8 ≈ 9.2 · 10^30 bounds it, far
/// below u128::MAX ≈ 3.4 · 10^38 (exactly, the sum is ≤ 2^60 · max p).
fn bernstein(k: u64, p: [u64; 4]) -> u128 {
    debug_assert!(k <= T_ONE);
    let t = u128::from(k);
    let s = u128::from(T_ONE - k);
    let [p0, p1, p2, p3] = p.map(u128::from);
    s * s * s * p0 + 3 * s * s * t * p1 + 3 * s * t * t * p2 + t * t * t * p3
}

impl TryFrom<[(u32, u64); 4]> for BezierCurve {
    type Error = CurveError;

    fn try_from(points: [(u32, u64); 4]) -> Result<Self, CurveError> {
        Self::new(points)
    }
}

impl From<BezierCurve> for [(u32, u64); 4] {
    fn from(curve: BezierCurve) -> Self {
        curve.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL: u64 = PPM as u64;

    fn curve(points: [(u32, u64); 4]) -> BezierCurve {
        BezierCurve::new(points).expect("valid curve")
    }

    /// The exact curve in f64: solve x(t) = u by bisection, return y(t).
    fn reference(c: &BezierCurve, u: u32) -> f64 {
        let p = c.points();
        let bez = |t: f64, v: [f64; 4]| {
            let s = 1.0 - t;
            s * s * s * v[0] + 3.0 * s * s * t * v[1] + 3.0 * s * t * t * v[2] + t * t * t * v[3]
        };
        let xs = p.map(|(x, _)| f64::from(x));
        let ys = p.map(|(_, y)| y as f64);
        if u == 0 {
            return ys[0];
        }
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if bez(mid, xs) <= f64::from(u) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        bez(lo, ys)
    }

    fn sweep() -> impl Iterator<Item = u32> {
        (0..=PPM).step_by(997).chain(std::iter::once(PPM))
    }

    fn any_x() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0), Just(PPM), 0..=PPM]
    }

    fn any_y() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(MAX_MULTIPLIER_PPM),
            0..=10 * FULL,
            0..=MAX_MULTIPLIER_PPM,
        ]
    }

    /// Valid curves, with arbitrary (not necessarily monotone) y.
    fn any_curve() -> impl Strategy<Value = BezierCurve> {
        (any_x(), any_x(), [any_y(), any_y(), any_y(), any_y()]).prop_map(|(a, b, y)| {
            curve([(0, y[0]), (a.min(b), y[1]), (a.max(b), y[2]), (PPM, y[3])])
        })
    }

    /// Valid curves with y0 ≤ y1 ≤ y2 ≤ y3.
    fn monotone_curve() -> impl Strategy<Value = BezierCurve> {
        any_curve().prop_map(|c| {
            let mut p = c.points();
            let mut ys = p.map(|(_, y)| y);
            ys.sort_unstable();
            for (point, y) in p.iter_mut().zip(ys) {
                point.1 = y;
            }
            curve(p)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn monotone_points_give_a_monotone_price(
            c in monotone_curve(), a in 0..=PPM + 10, b in 0..=PPM + 10,
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(c.multiplier_ppm(lo) <= c.multiplier_ppm(hi));
        }

        #[test]
        fn monotone_points_give_a_monotone_sweep(c in monotone_curve()) {
            let mut prev = c.multiplier_ppm(0);
            for u in sweep() {
                let m = c.multiplier_ppm(u);
                prop_assert!(prev <= m, "at u = {u}: {prev} > {m}");
                prev = m;
            }
        }

        #[test]
        fn end_points_are_exact(c in any_curve(), over in PPM..=u32::MAX) {
            let p = c.points();
            prop_assert_eq!(c.multiplier_ppm(0), p[0].1);
            prop_assert_eq!(c.multiplier_ppm(PPM), p[3].1);
            prop_assert_eq!(c.multiplier_ppm(over), p[3].1);
        }

        #[test]
        fn price_is_recomputable(c in any_curve(), u in 0..=PPM, base in any::<u64>()) {
            let json = serde_json::to_string(&c).expect("serialise");
            let back: BezierCurve = serde_json::from_str(&json).expect("deserialise");
            prop_assert_eq!(back, c);
            let m = c.multiplier_ppm(u);
            prop_assert_eq!(c.multiplier_ppm(u), m);
            prop_assert_eq!(back.multiplier_ppm(u), m);
            let base = u128::from(base);
            prop_assert_eq!(c.apply(base, u), Some(base * u128::from(m) / u128::from(PPM)));
            prop_assert_eq!(back.apply(base, u), c.apply(base, u));
        }

        #[test]
        fn within_the_error_bound_of_f64(c in any_curve(), us in prop::collection::vec(0..=PPM, 16)) {
            let max_y = c.points().iter().map(|&(_, y)| y).max().unwrap_or(0);
            // f64 noise: relative 1e-9 of the largest y, plus a ppm.
            let slack = 1.0 + max_y as f64 * 1e-9;
            let bound = c.error_bound_ppm() as f64 + slack;
            for u in us.into_iter().chain([0, 1, PPM - 1, PPM]) {
                let got = c.multiplier_ppm(u) as f64;
                let want = reference(&c, u);
                prop_assert!((got - want).abs() <= bound, "u = {u}: {got} vs {want}, bound {bound}");
            }
        }
    }

    #[test]
    fn f64_reference_on_fixed_curves() {
        let curves = [
            // Cheap until half load, then steep up to 5×.
            curve([
                (0, FULL),
                (500_000, FULL),
                (800_000, 2 * FULL),
                (PPM, 5 * FULL),
            ]),
            // Flat start in x (x1 = x2 = 0), and a discount curve.
            curve([(0, 3 * FULL), (0, 2 * FULL), (0, FULL), (PPM, FULL / 2)]),
            // Flat end in x (x1 = x2 = 10^6), extreme multipliers.
            curve([
                (0, 0),
                (PPM, MAX_MULTIPLIER_PPM),
                (PPM, 0),
                (PPM, MAX_MULTIPLIER_PPM),
            ]),
        ];
        for c in curves {
            let max_y = c.points().iter().map(|&(_, y)| y).max().unwrap_or(0);
            let bound = c.error_bound_ppm() as f64 + 1.0 + max_y as f64 * 1e-9;
            for u in sweep() {
                let (got, want) = (c.multiplier_ppm(u) as f64, reference(&c, u));
                assert!(
                    (got - want).abs() <= bound,
                    "{c:?} u = {u}: {got} vs {want}"
                );
            }
        }
        let c = curve([
            (0, FULL),
            (500_000, FULL),
            (800_000, 2 * FULL),
            (PPM, 5 * FULL),
        ]);
        assert_eq!(c.error_bound_ppm(), 13);
    }

    #[test]
    fn constructor_refuses_each_rule() {
        let ok = [(0, FULL), (300_000, FULL), (600_000, FULL), (PPM, FULL)];
        assert!(BezierCurve::new(ok).is_ok());

        let mut p = ok;
        p[0].0 = 5;
        let e = BezierCurve::new(p).expect_err("P0 not at 0");
        assert_eq!(e, CurveError::FirstNotAtZero(5));
        assert!(e.to_string().contains("P0"), "{e}");

        let mut p = ok;
        p[3].0 = 999_999;
        let e = BezierCurve::new(p).expect_err("P3 not at 10^6");
        assert_eq!(e, CurveError::LastNotAtFull(999_999));
        assert!(e.to_string().contains("P3"), "{e}");

        let mut p = ok;
        p[1].0 = 700_000;
        let e = BezierCurve::new(p).expect_err("x1 > x2");
        assert_eq!(
            e,
            CurveError::NotSorted {
                index: 2,
                x: 600_000,
                prev_index: 1,
                prev: 700_000
            }
        );
        assert!(
            e.to_string().contains("P2") && e.to_string().contains("P1"),
            "{e}"
        );

        let mut p = ok;
        p[2].0 = PPM + 1;
        let e = BezierCurve::new(p).expect_err("x2 > x3");
        assert!(matches!(e, CurveError::NotSorted { index: 3, .. }), "{e}");

        let mut p = ok;
        p[2].1 = MAX_MULTIPLIER_PPM + 1;
        let e = BezierCurve::new(p).expect_err("y2 too large");
        assert_eq!(
            e,
            CurveError::MultiplierTooLarge {
                index: 2,
                y: MAX_MULTIPLIER_PPM + 1
            }
        );
        assert!(e.to_string().contains("P2"), "{e}");

        p[2].1 = MAX_MULTIPLIER_PPM;
        assert!(BezierCurve::new(p).is_ok());
    }

    #[test]
    fn deserialisation_goes_through_the_checks() {
        let c = curve([
            (0, FULL),
            (250_000, FULL),
            (750_000, 2 * FULL),
            (PPM, 3 * FULL),
        ]);
        let json = serde_json::to_string(&c).expect("serialise");
        assert_eq!(
            json,
            "[[0,1000000],[250000,1000000],[750000,2000000],[1000000,3000000]]"
        );
        let bad = "[[1,1000000],[250000,1000000],[750000,2000000],[1000000,3000000]]";
        let e = serde_json::from_str::<BezierCurve>(bad).expect_err("P0 not at 0");
        assert!(e.to_string().contains("P0"), "{e}");
    }

    #[test]
    fn flat_is_one_everywhere() {
        let c = BezierCurve::flat();
        assert_eq!(BezierCurve::new(c.points()), Ok(c));
        for u in sweep().chain([1, PPM - 1, u32::MAX]) {
            assert_eq!(c.multiplier_ppm(u), FULL, "u = {u}");
            assert_eq!(c.apply(12_345, u), Some(12_345));
        }
        let base = u128::MAX / u128::from(PPM);
        assert_eq!(c.apply(base, 500_000), Some(base));
        // base · 10^6 must fit, even at 1×.
        assert_eq!(c.apply(base + 1, 500_000), None);
    }

    #[test]
    fn straight_line_is_followed_within_the_bound() {
        // y = 10^6 + 2·x: every control point lies on it, so the curve is it.
        let c = curve([
            (0, FULL),
            (333_333, FULL + 2 * 333_333),
            (666_667, FULL + 2 * 666_667),
            (PPM, 3 * FULL),
        ]);
        let bound = c.error_bound_ppm();
        assert_eq!(bound, 7);
        for u in sweep().chain([1, 2, PPM - 1]) {
            let want = FULL + 2 * u64::from(u);
            let got = c.multiplier_ppm(u);
            assert!(got.abs_diff(want) < bound, "u = {u}: {got} vs {want}");
        }
        assert_eq!(c.apply(1_000, 500_000), Some(2_000));
    }

    #[test]
    fn apply_reports_overflow() {
        let c = curve([
            (0, 2 * FULL),
            (0, 2 * FULL),
            (PPM, 2 * FULL),
            (PPM, 2 * FULL),
        ]);
        assert_eq!(c.apply(u128::MAX, 0), None);
        let base = u128::MAX / u128::from(2 * FULL);
        assert_eq!(c.apply(base, 0), Some(base * 2));
        assert_eq!(c.apply(base + 1, 0), None);
    }
}
