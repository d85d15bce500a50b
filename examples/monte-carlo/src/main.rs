//! Monte Carlo option pricing under geometric Brownian motion: the CGN
//! paper's financial use case, as a WASI command.
//!
//! ```text
//! monte-carlo [--spot 100] [--strike 105] [--rate 0.05] [--vol 0.2]
//!             [--years 1] [--paths 200000] [--steps 1] [--kind call|put|asian-call]
//!             [--seed N]
//! ```
//!
//! Prints one JSON object: price, standard error, 95% interval and (for
//! European options) the Black–Scholes closed form for comparison. Without
//! `--seed` the generator is seeded from WASI random, which brume's
//! deterministic mode makes reproducible.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Call,
    Put,
    AsianCall,
}

struct Params {
    spot: f64,
    strike: f64,
    rate: f64,
    vol: f64,
    years: f64,
    paths: u64,
    steps: u32,
    kind: Kind,
    seed: Option<u64>,
}

fn parse() -> Result<Params, String> {
    let mut p = Params {
        spot: 100.0,
        strike: 105.0,
        rate: 0.05,
        vol: 0.2,
        years: 1.0,
        paths: 200_000,
        steps: 1,
        kind: Kind::Call,
        seed: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "--spot" => p.spot = num(v)?,
            "--strike" => p.strike = num(v)?,
            "--rate" => p.rate = num(v)?,
            "--vol" => p.vol = num(v)?,
            "--years" => p.years = num(v)?,
            "--paths" => p.paths = v.parse().map_err(|_| format!("--paths: {v:?}"))?,
            "--steps" => p.steps = v.parse().map_err(|_| format!("--steps: {v:?}"))?,
            "--seed" => p.seed = Some(v.parse().map_err(|_| format!("--seed: {v:?}"))?),
            "--kind" => {
                p.kind = match v.as_str() {
                    "call" => Kind::Call,
                    "put" => Kind::Put,
                    "asian-call" => Kind::AsianCall,
                    other => return Err(format!("--kind: unknown {other:?}")),
                }
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if p.paths == 0 || p.steps == 0 || p.vol < 0.0 || p.years <= 0.0 || p.spot <= 0.0 {
        return Err("paths, steps, years and spot must be positive; vol non-negative".into());
    }
    if p.kind != Kind::AsianCall {
        p.steps = 1;
    }
    Ok(p)
}

/// Standard normal CDF via the Abramowitz–Stegun erf approximation.
fn norm_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn black_scholes(p: &Params) -> Option<f64> {
    if p.vol == 0.0 {
        return None;
    }
    let sqrt_t = p.years.sqrt();
    let d1 =
        ((p.spot / p.strike).ln() + (p.rate + p.vol * p.vol / 2.0) * p.years) / (p.vol * sqrt_t);
    let d2 = d1 - p.vol * sqrt_t;
    let df = (-p.rate * p.years).exp();
    match p.kind {
        Kind::Call => Some(p.spot * norm_cdf(d1) - p.strike * df * norm_cdf(d2)),
        Kind::Put => Some(p.strike * df * norm_cdf(-d2) - p.spot * norm_cdf(-d1)),
        Kind::AsianCall => None,
    }
}

fn main() {
    let p = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("monte-carlo: {e}");
            std::process::exit(2);
        }
    };
    let seed = p.seed.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        getrandom(&mut b);
        u64::from_le_bytes(b)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let dt = p.years / f64::from(p.steps);
    let drift = (p.rate - 0.5 * p.vol * p.vol) * dt;
    let diffusion = p.vol * dt.sqrt();
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    for _ in 0..p.paths {
        let mut s = p.spot;
        let mut acc = 0.0;
        for _ in 0..p.steps {
            let z: f64 = rng.sample(StandardNormal);
            s *= (drift + diffusion * z).exp();
            acc += s;
        }
        let payoff = match p.kind {
            Kind::Call => (s - p.strike).max(0.0),
            Kind::Put => (p.strike - s).max(0.0),
            Kind::AsianCall => (acc / f64::from(p.steps) - p.strike).max(0.0),
        };
        sum += payoff;
        sum_sq += payoff * payoff;
    }
    let n = p.paths as f64;
    let df = (-p.rate * p.years).exp();
    let mean = sum / n;
    let var = (sum_sq / n - mean * mean).max(0.0);
    let price = df * mean;
    let stderr = df * (var / n).sqrt();
    let kind = match p.kind {
        Kind::Call => "call",
        Kind::Put => "put",
        Kind::AsianCall => "asian-call",
    };
    let bs = black_scholes(&p).map_or("null".to_string(), |v| format!("{v:.6}"));
    println!(
        "{{\"kind\":\"{kind}\",\"paths\":{},\"steps\":{},\"seed\":{seed},\"price\":{price:.6},\"stderr\":{stderr:.6},\"ci95\":[{:.6},{:.6}],\"black_scholes\":{bs}}}",
        p.paths,
        p.steps,
        price - 1.96 * stderr,
        price + 1.96 * stderr
    );
}

/// Fills `buf` from the host's randomness (WASI `random_get`).
fn getrandom(buf: &mut [u8]) {
    use rand::TryRng;
    let _ = rand::rngs::SysRng.try_fill_bytes(buf);
}
