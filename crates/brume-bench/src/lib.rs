//! Benchmarks behind `brume bench <name>`.
//!
//! Each one measures the product path and a baseline in the same run, prints
//! human-readable lines as it goes, and returns every figure as one JSON
//! object (printed last with `--json`). None asserts a threshold.

pub mod container;
pub mod evm;
pub mod federation;
pub mod lease;
pub mod ledger;
mod ledger_pg;
pub mod mixed;
pub mod net;
pub mod sandbox;
pub mod scale;
pub mod settle;
mod single_hop;
pub mod verify;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latency samples in nanoseconds.
pub(crate) struct Samples(Histogram<u64>);

impl Samples {
    pub(crate) fn new() -> Samples {
        // 1 ns .. 1 h at 3 significant digits; construction cannot fail.
        Samples(Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds"))
    }
    pub(crate) fn record(&mut self, d: Duration) {
        let _ = self.0.record((d.as_nanos() as u64).max(1));
    }
    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }
    pub(crate) fn us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1e3
    }
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1e6
    }
}

/// Runs `f` repeatedly until `budget` is spent (at least `min` times).
pub(crate) async fn sample<F, Fut>(
    budget: Duration,
    min: u64,
    max: u64,
    mut f: F,
) -> anyhow::Result<Samples>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut s = Samples::new();
    let start = Instant::now();
    while s.len() < max && (s.len() < min || start.elapsed() < budget) {
        let t = Instant::now();
        f().await?;
        s.record(t.elapsed());
    }
    Ok(s)
}

pub(crate) fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}
