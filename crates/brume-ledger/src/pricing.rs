//! Resource-equivalent pricing, in integer arithmetic only.
//!
//! # The coin and its resources
//!
//! One coin is, on day 0, the amount of resources that €1.00 bought on AWS
//! on 2019-01-31 (the CGN seed, "THE RELATIONSHIP OF CPUcoin TO RESOURCES"):
//!
//! | resource  | amount per coin on day 0 | unit        | brume's measure                         |
//! |-----------|--------------------------|-------------|-----------------------------------------|
//! | CPU       | 3290.4                   | KMIPS-hours | `fuel`; 1 KMIPS-h = 3.6·10^12 fuel      |
//! | GPU       | 3.08                     | TFLOP-hours | FLOP; 1 TFLOP-h = 3.6·10^15 FLOP        |
//! | bandwidth | 11.4                     | GB          | bytes in + out; 1 GB = 10^9 bytes (SI)  |
//!
//! The seed's equivalence table prints the CPU amount as 3290, but its
//! deflation table starts at 3290.4 and every later column (2 years: 6580.8
//! = 2 × 3290.4) follows from 3290.4, not from 3290. [`ResourceBasis::SEED`]
//! therefore uses 3290.4; the amounts are configuration, in thousandths of a
//! unit.
//!
//! **Fuel is instructions, 1:1.** `Usage::fuel` counts executed wasm
//! operators (ARCHITECTURE.md, "Fuel: the billed CPU unit"), and a
//! provider's `fitness_mips` is fuel per second over 10^6. One KMIPS-hour
//! is 10^9 instructions/s × 3600 s = 3.6·10^12 fuel.
//!
//! # Deflation compensation
//!
//! Computing power halves in price every 730 days, so the resources one coin
//! buys grow by K = 2^(1/730) a day: R(N) = R(0) · K^N = R(0) · 2^(N/730).
//! N is the number of whole UTC days since the epoch date
//! ([`PricingConfig::epoch`], 2019-01-31 in the seed); the factor changes
//! at 00:00 UTC and holds for the whole day. Timestamps before the epoch
//! are refused ([`PricingError::BeforeEpoch`]).
//!
//! [`growth_factor`] computes 2^(N/730) as an integer F̂ with scale 10^36:
//! N = 730·q + r, and 2^(r/730) is the product of the constants
//! C_i = ⌊2^(2^i/730) · 10^36⌋ for the set bits i of r (r < 1024, so at most
//! 10 factors), each product truncated to 10^36; then shifted left by q.
//! Every step truncates, so F̂ never exceeds the exact value, and each
//! factor and each product loses less than 10^-36 relatively (all values
//! are ≥ 1). **Error bound:** F · (1 − 2·10^-35) < F̂ ≤ F, exact when
//! N is a multiple of 730. Days beyond about 98 000 (270 years) overflow
//! 256 bits and are an error.
//!
//! # Rounding
//!
//! - **Displayed amounts** ([`resource_per_coin`]) round half to even at the
//!   requested number of decimals. The exact value is irrational except on
//!   multiples of 730 days, where F̂ is exact and a tie is a true tie.
//! - **Amounts owed** ([`Pricer::fee`]: the resource units and the token
//!   amount) round **up**, in the network's favour: work with any usage
//!   never costs 0, so it can't be split into pieces too small to bill, and
//!   the bias is below one base unit (10^-18 coin) per row. Because F̂ ≤ F,
//!   the result is ⌈exact⌉ except when the exact value lies within a
//!   relative 2·10^-35 below an integer; then it can be 1 base unit higher.
//! - **The fiat fee** in micro-units rounds half to even. It records what
//!   the work was worth; half-even keeps the sum of many rows unbiased. It
//!   can be 0 for tiny work while the token amount is not.
//!
//! # Fees
//!
//! The token has 18 decimals ([`BASE_UNITS_PER_TOKEN`]), like an ERC-20.
//! The work's *resource units* U (in base units of a coin-equivalent) are
//!
//! ```text
//! U = 10^18 · ( fuel/(3.6·10^12 · R_cpu) + flop/(3.6·10^15 · R_gpu) + bytes/(10^9 · R_bw) ) / 2^(N/730)
//! ```
//!
//! with R the day-0 amounts, summed exactly before the one rounding. A
//! service tier has a fiat price P per coin-equivalent of resources
//! (micro-units of fiat, [`TierPrice::fiat_micros_per_coin`]); the
//! exchange rate X is micro-units of fiat per whole token
//! ([`ExchangeRate`], fixed on devnet). Then
//!
//! ```text
//! fee_fiat_micros = round_half_even(U_exact · P / 10^18)
//! token_amount    = ⌈U_exact · P / X⌉           (base units)
//! resource_units  = ⌈U_exact⌉
//! ```
//!
//! all from the exact rational U_exact, so no rounding compounds. [`Fee`]
//! carries them with the tier, the day and the rate in effect.

use alloy_primitives::{U256, U512};
use serde::{Deserialize, Serialize};

/// Decimals of the token.
pub const TOKEN_DECIMALS: u32 = 18;
/// Base units in one whole token (10^18).
pub const BASE_UNITS_PER_TOKEN: u128 = 1_000_000_000_000_000_000;
/// Instructions (fuel) in one KMIPS-hour: 10^9/s × 3600 s.
pub const INSTRUCTIONS_PER_KMIPS_H: u128 = 3_600_000_000_000;
/// Floating-point operations in one TFLOP-hour: 10^12/s × 3600 s.
pub const FLOP_PER_TFLOP_H: u128 = 3_600_000_000_000_000;
/// Bytes in one GB (SI, 10^9).
pub const BYTES_PER_GB: u128 = 1_000_000_000;
/// [`ResourceBasis`] amounts are in thousandths of their unit.
pub const BASIS_SCALE: u128 = 1_000;
/// The scale of [`growth_factor`]: 10^36.
pub const FACTOR_SCALE: u128 = 1_000_000_000_000_000_000_000_000_000_000_000_000;
/// Days in which the resources per coin double.
pub const DAYS_PER_DOUBLING: u32 = 730;
/// ⌊K · 10^36⌋, K = 2^(1/730), the compensating daily inflationary factor.
pub const K_FIXED: u128 = POW2_FRACTIONS[0];
/// ⌊D · 10^36⌋, D = 1/K = 2^(-1/730), the daily deflationary factor.
pub const D_FIXED: u128 = 999_050_933_962_625_668_392_271_590_125_991_438;

/// ⌊2^(2^i/730) · 10^36⌋ for i = 0..10 (computed with 100-digit decimals).
const POW2_FRACTIONS: [u128; 10] = [
    1_000_949_967_619_378_489_077_666_650_627_278_073,
    1_001_900_837_677_234_845_789_230_301_496_882_261,
    1_003_805_288_538_344_887_142_238_565_662_139_928,
    1_007_625_057_297_549_833_252_099_778_250_572_141,
    1_015_308_256_093_890_584_470_510_972_127_192_611,
    1_030_850_854_892_417_307_155_965_798_930_863_237,
    1_062_653_485_032_427_603_208_623_960_156_850_715,
    1_129_232_429_251_563_836_120_734_416_080_213_078,
    1_275_165_879_273_388_124_485_634_087_512_091_067,
    1_626_048_019_663_073_057_210_511_094_759_209_619,
];

/// Why a price could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("arithmetic overflow computing {0}")]
    Overflow(&'static str),
    #[error("the timestamp is before the pricing epoch")]
    BeforeEpoch,
    #[error("invalid date {0}-{1:02}-{2:02}")]
    InvalidDate(i32, u32, u32),
    #[error("the {0} amount per coin must be positive")]
    ZeroBasis(&'static str),
    #[error("the exchange rate must be positive")]
    ZeroRate,
    #[error("unknown service tier {0}")]
    UnknownTier(TierId),
    #[error("invalid price table: {0}")]
    InvalidTable(&'static str),
}

/// A resource the coin stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// KMIPS-hours.
    Cpu,
    /// TFLOP-hours.
    Gpu,
    /// Gigabytes.
    Bandwidth,
}

/// The amount of each resource one coin buys on day 0, in thousandths of
/// the resource's unit (KMIPS-h, TFLOP-h, GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceBasis {
    pub cpu_milli_kmips_h: u64,
    pub gpu_milli_tflop_h: u64,
    pub bandwidth_milli_gb: u64,
}

impl ResourceBasis {
    /// The seed's: 3290.4 KMIPS-h, 3.08 TFLOP-h, 11.4 GB.
    pub const SEED: Self = Self {
        cpu_milli_kmips_h: 3_290_400,
        gpu_milli_tflop_h: 3_080,
        bandwidth_milli_gb: 11_400,
    };

    /// The day-0 amount of `resource`, in thousandths.
    pub fn milli(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Cpu => self.cpu_milli_kmips_h,
            Resource::Gpu => self.gpu_milli_tflop_h,
            Resource::Bandwidth => self.bandwidth_milli_gb,
        }
    }

    /// Refuses a zero amount (it would make the resource free of charge
    /// and divide by zero).
    pub fn validate(&self) -> Result<(), PricingError> {
        for (r, name) in [
            (Resource::Cpu, "CPU"),
            (Resource::Gpu, "GPU"),
            (Resource::Bandwidth, "bandwidth"),
        ] {
            if self.milli(r) == 0 {
                return Err(PricingError::ZeroBasis(name));
            }
        }
        Ok(())
    }
}

impl Default for ResourceBasis {
    fn default() -> Self {
        Self::SEED
    }
}

/// A proleptic Gregorian calendar date (UTC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// The seed's day 0: 2019-01-31.
    pub const SEED_EPOCH: Self = Self {
        year: 2019,
        month: 1,
        day: 31,
    };

    /// Days from 1970-01-01 to this date (negative before it).
    pub fn days_since_unix_epoch(&self) -> Result<i64, PricingError> {
        let invalid = PricingError::InvalidDate(self.year, self.month, self.day);
        if !(1..=12).contains(&self.month) || self.day == 0 {
            return Err(invalid);
        }
        let leap = (self.year % 4 == 0 && self.year % 100 != 0) || self.year % 400 == 0;
        let days_in_month = match self.month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if self.day > days_in_month {
            return Err(invalid);
        }
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Ok(era * 146_097 + doe - 719_468)
    }
}

/// The configuration of the resource equivalence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PricingConfig {
    /// Day 0 of the deflation compensation.
    pub epoch: Date,
    /// Resources per coin on day 0.
    pub basis: ResourceBasis,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self {
            epoch: Date::SEED_EPOCH,
            basis: ResourceBasis::SEED,
        }
    }
}

impl PricingConfig {
    /// The day index N of a UTC timestamp: whole days since the epoch.
    pub fn day_of(&self, unix_ms: i64) -> Result<u32, PricingError> {
        let epoch_day = self.epoch.days_since_unix_epoch()?;
        let day = unix_ms.div_euclid(86_400_000) - epoch_day;
        if day < 0 {
            return Err(PricingError::BeforeEpoch);
        }
        u32::try_from(day).map_err(|_| PricingError::Overflow("day index"))
    }
}

/// 2^(day/730) · 10^36, truncated (see the module docs for the bound).
pub fn growth_factor(day: u32) -> Result<U256, PricingError> {
    let scale = U256::from(FACTOR_SCALE);
    let q = day / DAYS_PER_DOUBLING;
    let r = day % DAYS_PER_DOUBLING;
    let mut f = scale;
    for (i, c) in POW2_FRACTIONS.iter().enumerate() {
        if r & (1 << i) != 0 {
            // Both factors are < 2·10^36, so the product is < 4·10^72 < 2^256.
            f = f
                .checked_mul(U256::from(*c))
                .ok_or(PricingError::Overflow("growth factor"))?
                / scale;
        }
    }
    // f < 2^121; the shift must not lose bits.
    let bits = f.bit_len() + q as usize;
    if bits > 256 {
        return Err(PricingError::Overflow("growth factor"));
    }
    Ok(f << q as usize)
}

/// `n / d` rounded half to even. `d` must be nonzero.
fn div_half_even(n: U512, d: U512) -> U512 {
    let q = n / d;
    let r = n % d;
    // Compare 2r with d without overflowing: r < d, so 2r = r + r and
    // r ≥ d - r is the same as 2r ≥ d.
    let half = d - r;
    if r > half || (r == half && q.bit(0)) {
        q + U512::from(1u8)
    } else {
        q
    }
}

/// `n / d` rounded up. `d` must be nonzero.
fn div_ceil(n: U512, d: U512) -> U512 {
    let q = n / d;
    if (n % d).is_zero() {
        q
    } else {
        q + U512::from(1u8)
    }
}

fn to_u128(x: U512, what: &'static str) -> Result<u128, PricingError> {
    u128::try_from(x).map_err(|_| PricingError::Overflow(what))
}

fn mul(a: U512, b: U512, what: &'static str) -> Result<U512, PricingError> {
    a.checked_mul(b).ok_or(PricingError::Overflow(what))
}

/// The amount of `resource` one coin buys on `day`, times 10^decimals,
/// rounded half to even: `resource_per_coin(&SEED, Cpu, 1, 1)` is 32935
/// (3293.5 KMIPS-h).
pub fn resource_per_coin(
    basis: &ResourceBasis,
    resource: Resource,
    day: u32,
    decimals: u32,
) -> Result<u128, PricingError> {
    let what = "resource per coin";
    let f = U512::from(growth_factor(day)?);
    let pow10 = U512::from(10u8)
        .checked_pow(U512::from(decimals))
        .ok_or(PricingError::Overflow(what))?;
    let n = mul(
        mul(U512::from(basis.milli(resource)), f, what)?,
        pow10,
        what,
    )?;
    let d = U512::from(BASIS_SCALE) * U512::from(FACTOR_SCALE);
    to_u128(div_half_even(n, d), what)
}

/// What a unit of work consumed, in the units brume measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceUsage {
    /// Executed wasm operators; 1 fuel = 1 instruction.
    pub fuel: u64,
    /// GPU floating-point operations (0 until brume runs GPU work).
    pub gpu_flop: u128,
    /// Bytes received (request, inputs).
    pub bytes_in: u64,
    /// Bytes sent (response, outputs).
    pub bytes_out: u64,
}

/// The exact resource units of `usage` on `day` as a fraction num/den, in
/// base units of a coin-equivalent.
fn resource_units_exact(
    basis: &ResourceBasis,
    usage: &ResourceUsage,
    day: u32,
) -> Result<(U512, U512), PricingError> {
    basis.validate()?;
    let what = "resource units";
    // Denominators per resource, in thousandths: unit × R × (1/1000).
    let d_cpu = U512::from(INSTRUCTIONS_PER_KMIPS_H) * U512::from(basis.cpu_milli_kmips_h);
    let d_gpu = U512::from(FLOP_PER_TFLOP_H) * U512::from(basis.gpu_milli_tflop_h);
    let d_bw = U512::from(BYTES_PER_GB) * U512::from(basis.bandwidth_milli_gb);
    let bytes = U512::from(usage.bytes_in) + U512::from(usage.bytes_out);
    let sum = mul(U512::from(usage.fuel), mul(d_gpu, d_bw, what)?, what)?
        .checked_add(mul(
            U512::from(usage.gpu_flop),
            mul(d_cpu, d_bw, what)?,
            what,
        )?)
        .and_then(|s| s.checked_add(bytes.checked_mul(d_cpu)?.checked_mul(d_gpu)?))
        .ok_or(PricingError::Overflow(what))?;
    let num = mul(
        sum,
        U512::from(BASE_UNITS_PER_TOKEN) * U512::from(BASIS_SCALE) * U512::from(FACTOR_SCALE),
        what,
    )?;
    let den = mul(
        mul(mul(d_cpu, d_gpu, what)?, d_bw, what)?,
        U512::from(growth_factor(day)?),
        what,
    )?;
    Ok((num, den))
}

/// The resource units of `usage` on `day`: base units (10^-18) of the
/// coin-equivalent of the resources consumed, rounded up.
pub fn resource_units(
    basis: &ResourceBasis,
    usage: &ResourceUsage,
    day: u32,
) -> Result<u128, PricingError> {
    let (num, den) = resource_units_exact(basis, usage, day)?;
    to_u128(div_ceil(num, den), "resource units")
}

/// A service tier's identifier.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct TierId(pub u16);

impl std::fmt::Display for TierId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A service level (the seed's three components).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TierSpec {
    /// Minimum number of threads.
    pub min_threads: u32,
    /// Minimum CPU power per thread, in MIPS (a provider's `fitness_mips`).
    pub min_mips: u64,
    /// Minimum bandwidth, in Mbit/s.
    pub min_bandwidth_mbps: u64,
}

impl TierSpec {
    /// Whether every component of `self` is at most that of `other`.
    pub fn at_most(&self, other: &TierSpec) -> bool {
        self.min_threads <= other.min_threads
            && self.min_mips <= other.min_mips
            && self.min_bandwidth_mbps <= other.min_bandwidth_mbps
    }
}

/// A tier and its fiat price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TierPrice {
    pub tier: TierId,
    pub spec: TierSpec,
    /// Micro-units of fiat per coin-equivalent of resources (10^18
    /// resource units).
    pub fiat_micros_per_coin: u64,
}

/// The service tiers, best first. Each tier asks for no more than the one
/// before it in every component, so moving down the table is a downgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceTable {
    tiers: Vec<TierPrice>,
}

impl PriceTable {
    /// Validates the order (best first, no component rising) and that ids
    /// are unique.
    pub fn new(tiers: Vec<TierPrice>) -> Result<Self, PricingError> {
        if tiers.is_empty() {
            return Err(PricingError::InvalidTable("no tiers"));
        }
        for (i, t) in tiers.iter().enumerate() {
            if tiers[..i].iter().any(|u| u.tier == t.tier) {
                return Err(PricingError::InvalidTable("duplicate tier id"));
            }
            if i > 0 && !t.spec.at_most(&tiers[i - 1].spec) {
                return Err(PricingError::InvalidTable(
                    "tiers must be ordered best first",
                ));
            }
        }
        Ok(Self { tiers })
    }

    /// The tiers, best first.
    pub fn tiers(&self) -> &[TierPrice] {
        &self.tiers
    }

    /// The tier `id` and the ones below it, best first.
    pub fn at_or_below(&self, id: TierId) -> Result<&[TierPrice], PricingError> {
        let i = self
            .tiers
            .iter()
            .position(|t| t.tier == id)
            .ok_or(PricingError::UnknownTier(id))?;
        Ok(&self.tiers[i..])
    }

    /// The tier `id`.
    pub fn get(&self, id: TierId) -> Result<&TierPrice, PricingError> {
        self.tiers
            .iter()
            .find(|t| t.tier == id)
            .ok_or(PricingError::UnknownTier(id))
    }
}

/// The token's price: micro-units of fiat per whole token (10^18 base
/// units). Configured; fixed on devnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExchangeRate {
    pub fiat_micros_per_token: u64,
}

/// A priced unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fee {
    pub tier: TierId,
    /// The day index N the price was computed for.
    pub day: u32,
    /// ⌈coin-equivalent of the resources⌉, in base units.
    pub resource_units: u128,
    /// The fee in micro-units of fiat, rounded half to even.
    pub fee_fiat_micros: u128,
    /// The fee in token base units, rounded up.
    pub token_amount: u128,
    /// The exchange rate in effect.
    pub rate: ExchangeRate,
}

/// Prices usage: the resource equivalence, the tier prices and the rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricer {
    pub config: PricingConfig,
    pub table: PriceTable,
    pub rate: ExchangeRate,
}

impl Pricer {
    /// Validates the basis and the rate.
    pub fn new(
        config: PricingConfig,
        table: PriceTable,
        rate: ExchangeRate,
    ) -> Result<Self, PricingError> {
        config.basis.validate()?;
        config.epoch.days_since_unix_epoch()?;
        if rate.fiat_micros_per_token == 0 {
            return Err(PricingError::ZeroRate);
        }
        Ok(Self {
            config,
            table,
            rate,
        })
    }

    /// The fee for `usage` at `tier` on day `day` (see the module docs).
    pub fn fee(&self, usage: &ResourceUsage, tier: TierId, day: u32) -> Result<Fee, PricingError> {
        self.fee_scaled(usage, tier, day, MULTIPLIER_ONE)
    }

    /// [`fee`](Self::fee) with the tier's price times `multiplier_ppm` /
    /// 10^6 (a dynamic price in force, see [`crate::curve`]), exactly: the
    /// multiplier scales the fiat numerator before any rounding.
    pub fn fee_scaled(
        &self,
        usage: &ResourceUsage,
        tier: TierId,
        day: u32,
        multiplier_ppm: u64,
    ) -> Result<Fee, PricingError> {
        if self.rate.fiat_micros_per_token == 0 {
            return Err(PricingError::ZeroRate);
        }
        let price = self.table.get(tier)?.fiat_micros_per_coin;
        let (num, den) = resource_units_exact(&self.config.basis, usage, day)?;
        let fiat_num = mul(
            mul(num, U512::from(price), "fee")?,
            U512::from(multiplier_ppm),
            "fee",
        )?;
        let den = mul(den, U512::from(MULTIPLIER_ONE), "fee")?;
        let resource_den = den;
        let fiat_den = mul(den, U512::from(BASE_UNITS_PER_TOKEN), "fee")?;
        let token_den = mul(den, U512::from(self.rate.fiat_micros_per_token), "fee")?;
        let num = mul(num, U512::from(MULTIPLIER_ONE), "fee")?;
        Ok(Fee {
            tier,
            day,
            resource_units: to_u128(div_ceil(num, resource_den), "resource units")?,
            fee_fiat_micros: to_u128(div_half_even(fiat_num, fiat_den), "fiat fee")?,
            token_amount: to_u128(div_ceil(fiat_num, token_den), "token amount")?,
            rate: self.rate,
        })
    }

    /// The fee for `usage` at `tier` for work done at `unix_ms` (UTC).
    pub fn fee_at(
        &self,
        usage: &ResourceUsage,
        tier: TierId,
        unix_ms: i64,
    ) -> Result<Fee, PricingError> {
        self.fee(usage, tier, self.config.day_of(unix_ms)?)
    }
}

/// A price multiplier of 1×, in parts per million.
pub const MULTIPLIER_ONE: u64 = 1_000_000;

/// Micro-units of fiat converted to token base units at `rate`, rounded
/// up (the same rule as [`Fee::token_amount`]).
pub fn fiat_to_tokens(fiat_micros: u128, rate: ExchangeRate) -> Result<u128, PricingError> {
    if rate.fiat_micros_per_token == 0 {
        return Err(PricingError::ZeroRate);
    }
    let n = mul(
        U512::from(fiat_micros),
        U512::from(BASE_UNITS_PER_TOKEN),
        "fiat to tokens",
    )?;
    to_u128(
        div_ceil(n, U512::from(rate.fiat_micros_per_token)),
        "fiat to tokens",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seed's "CPUcoin resources equivalency, adjusted over time",
    /// as printed: (resource, decimals, [day 0, 1 day, 1 week, 1 month,
    /// 3 months, 1 year, 2 years]).
    const SEED_TABLE: [(Resource, u32, [u128; 7]); 3] = [
        (
            Resource::Cpu,
            1,
            [32904, 32935, 33123, 33855, 35840, 46533, 65808],
        ),
        (Resource::Gpu, 2, [308, 308, 310, 317, 335, 436, 616]),
        (Resource::Bandwidth, 1, [114, 114, 115, 117, 124, 161, 228]),
    ];
    /// Day 0, 1 day, 1 week, 1 month (30 days), 3 months (90 days),
    /// 1 year (365 days), 2 years (730 days).
    const SEED_DAYS: [u32; 7] = [0, 1, 7, 30, 90, 365, 730];

    #[test]
    fn reproduces_the_seed_table() {
        for (resource, decimals, row) in SEED_TABLE {
            for (day, want) in SEED_DAYS.iter().zip(row) {
                let got = resource_per_coin(&ResourceBasis::SEED, resource, *day, decimals);
                assert_eq!(got, Ok(want), "{resource:?} on day {day}");
            }
        }
    }

    #[test]
    fn seed_cpu_amount_is_3290_4_not_3290() {
        let basis = ResourceBasis {
            cpu_milli_kmips_h: 3_290_000,
            ..ResourceBasis::SEED
        };
        // With 3290 the 1-day column would read 3293.1, not 3293.5.
        assert_eq!(resource_per_coin(&basis, Resource::Cpu, 1, 1), Ok(32931));
    }

    #[test]
    fn seed_daily_factors() {
        // The seed prints K = 1.000949967619 and D = 0.999050933963.
        let twelve = |x: u128| div_half_even(U512::from(x), U512::from(10u128.pow(24)));
        assert_eq!(twelve(K_FIXED), U512::from(1_000_949_967_619u128));
        assert_eq!(twelve(D_FIXED), U512::from(999_050_933_963u128));
        // K · D ≤ 1 and within the truncation of both.
        let prod = U256::from(K_FIXED) * U256::from(D_FIXED) / U256::from(FACTOR_SCALE);
        assert!(prod <= U256::from(FACTOR_SCALE));
        assert!(U256::from(FACTOR_SCALE) - prod <= U256::from(2u8));
    }

    /// ⌊2^(d/730) · 10^36⌋ from 100-digit decimal arithmetic.
    const EXACT: [(u32, &str); 9] = [
        (1, "1000949967619378489077666650627278073"),
        (7, "1006668754577261363794359574144821474"),
        (30, "1028895092334984942192623799150998233"),
        (90, "1089214181362392118123402305876614926"),
        (365, "1414213562373095048801688724209698078"),
        (729, "1998101867925251336784543180251982877"),
        (730, "2000000000000000000000000000000000000"),
        (1000, "2584460250810935381784259037048935288"),
        (5000, "115305304062403774567557979807254142903"),
    ];

    #[test]
    fn growth_factor_error_bound() {
        for (day, exact) in EXACT {
            let exact: U256 = exact.parse().expect("constant");
            let got = growth_factor(day).expect("in range");
            assert!(got <= exact, "day {day}: {got} > {exact}");
            // F(1 - 2·10^-35) < F̂: the gap is below 2·10^-35 · F.
            let gap = exact - got;
            assert!(
                gap * U256::from(10u128.pow(35)) < U256::from(2u8) * exact,
                "day {day}"
            );
        }
        assert_eq!(growth_factor(0), Ok(U256::from(FACTOR_SCALE)));
        assert_eq!(growth_factor(730 * 3), Ok(U256::from(FACTOR_SCALE) << 3));
        assert!(growth_factor(97_000).is_ok());
        assert_eq!(
            growth_factor(u32::MAX),
            Err(PricingError::Overflow("growth factor"))
        );
    }

    #[test]
    fn half_even_rounding() {
        let r = |n: u32, d: u32| div_half_even(U512::from(n), U512::from(d));
        assert_eq!(r(5, 2), U512::from(2u8)); // 2.5 -> 2
        assert_eq!(r(7, 2), U512::from(4u8)); // 3.5 -> 4
        assert_eq!(r(26, 10), U512::from(3u8));
        assert_eq!(r(24, 10), U512::from(2u8));
        assert_eq!(r(0, 3), U512::from(0u8));
        // A true tie on a doubling day: 3.08 · 2 = 6.16 at 1 decimal is
        // 61.6 -> 62; 11.4 · 2^0 at 0 decimals is 11.4 -> 11.
        assert_eq!(
            resource_per_coin(&ResourceBasis::SEED, Resource::Gpu, 730, 1),
            Ok(62)
        );
        let tie = ResourceBasis {
            bandwidth_milli_gb: 2_500,
            ..ResourceBasis::SEED
        };
        assert_eq!(resource_per_coin(&tie, Resource::Bandwidth, 0, 0), Ok(2));
        assert_eq!(resource_per_coin(&tie, Resource::Bandwidth, 730, 0), Ok(5));
    }

    #[test]
    fn dates_and_day_index() {
        assert_eq!(Date::SEED_EPOCH.days_since_unix_epoch(), Ok(17_927));
        let unix = |d: Date| d.days_since_unix_epoch().expect("valid") * 86_400_000;
        let cfg = PricingConfig::default();
        assert_eq!(cfg.day_of(unix(Date::SEED_EPOCH)), Ok(0));
        assert_eq!(cfg.day_of(unix(Date::SEED_EPOCH) + 86_399_999), Ok(0));
        assert_eq!(
            cfg.day_of(unix(Date::SEED_EPOCH) - 1),
            Err(PricingError::BeforeEpoch)
        );
        let y2021 = Date {
            year: 2021,
            month: 1,
            day: 30,
        };
        assert_eq!(cfg.day_of(unix(y2021)), Ok(730));
        assert!(
            Date {
                year: 2023,
                month: 2,
                day: 29
            }
            .days_since_unix_epoch()
            .is_err()
        );
        assert!(
            Date {
                year: 2024,
                month: 2,
                day: 29
            }
            .days_since_unix_epoch()
            .is_ok()
        );
    }

    fn table() -> PriceTable {
        let spec = |t, m, b| TierSpec {
            min_threads: t,
            min_mips: m,
            min_bandwidth_mbps: b,
        };
        PriceTable::new(vec![
            TierPrice {
                tier: TierId(1),
                spec: spec(4, 3000, 1000),
                fiat_micros_per_coin: 2_000_000,
            },
            TierPrice {
                tier: TierId(2),
                spec: spec(2, 2000, 100),
                fiat_micros_per_coin: 1_000_000,
            },
        ])
        .expect("valid table")
    }

    fn pricer() -> Pricer {
        // 1 token = €0.05.
        Pricer::new(
            PricingConfig::default(),
            table(),
            ExchangeRate {
                fiat_micros_per_token: 50_000,
            },
        )
        .expect("valid")
    }

    #[test]
    fn one_coin_of_each_resource() {
        // 3290.4 KMIPS-h of fuel on day 0 is exactly one coin-equivalent.
        let fuel = 3_290_400 * 3_600_000_000_000 / 1000;
        let u = |fuel, gpu_flop, bytes_in, bytes_out| ResourceUsage {
            fuel,
            gpu_flop,
            bytes_in,
            bytes_out,
        };
        let b = ResourceBasis::SEED;
        assert_eq!(
            resource_units(&b, &u(fuel, 0, 0, 0), 0),
            Ok(BASE_UNITS_PER_TOKEN)
        );
        let flop = 3_080 * 3_600_000_000_000_000 / 1000;
        assert_eq!(
            resource_units(&b, &u(0, flop, 0, 0), 0),
            Ok(BASE_UNITS_PER_TOKEN)
        );
        // 11.4 GB split between in and out.
        let bytes = 11_400_000_000u64;
        assert_eq!(
            resource_units(&b, &u(0, 0, bytes - 1, 1), 0),
            Ok(BASE_UNITS_PER_TOKEN)
        );
        // Two years later the same coin buys twice as much.
        assert_eq!(
            resource_units(&b, &u(fuel, 0, 0, 0), 730),
            Ok(BASE_UNITS_PER_TOKEN / 2)
        );
        // All three together: exactly three coins.
        assert_eq!(
            resource_units(&b, &u(fuel, flop, bytes, 0), 0),
            Ok(3 * BASE_UNITS_PER_TOKEN)
        );
        // One instruction is 84.42... base units, rounded up; one byte
        // 87_719_298.2... -> 87_719_299.
        assert_eq!(resource_units(&b, &u(1, 0, 0, 0), 0), Ok(85));
        assert_eq!(resource_units(&b, &u(0, 0, 1, 0), 0), Ok(87_719_299));
        assert_eq!(resource_units(&b, &u(0, 0, 0, 0), 0), Ok(0));
    }

    #[test]
    fn fee_in_fiat_and_tokens() {
        let p = pricer();
        let fuel = 3_290_400 * 3_600_000_000_000 / 1000;
        let usage = ResourceUsage {
            fuel,
            ..ResourceUsage::default()
        };
        let fee = p.fee(&usage, TierId(2), 0).expect("priced");
        assert_eq!(fee.resource_units, BASE_UNITS_PER_TOKEN);
        assert_eq!(fee.fee_fiat_micros, 1_000_000); // €1
        assert_eq!(fee.token_amount, 20 * BASE_UNITS_PER_TOKEN); // at €0.05
        assert_eq!(fee.rate.fiat_micros_per_token, 50_000);
        let fee1 = p.fee(&usage, TierId(1), 0).expect("priced");
        assert_eq!(fee1.fee_fiat_micros, 2_000_000);
        assert_eq!(fee1.token_amount, 40 * BASE_UNITS_PER_TOKEN);
        assert_eq!(
            p.fee(&usage, TierId(9), 0),
            Err(PricingError::UnknownTier(TierId(9)))
        );
        // A million instructions: 1e6 / (3.6e12 · 3290.4) coin
        // = 84_420_671.58... base units; at €1/coin that is 8.44e-5 µ€ -> 0,
        // and 20 tokens per coin -> 1_688_413_431.67 -> 1_688_413_432.
        let small = ResourceUsage {
            fuel: 1_000_000,
            ..ResourceUsage::default()
        };
        let fee = p.fee(&small, TierId(2), 0).expect("priced");
        assert_eq!(fee.resource_units, 84_420_672);
        assert_eq!(fee.fee_fiat_micros, 0);
        assert_eq!(fee.token_amount, 1_688_413_432);
        assert_eq!(
            fiat_to_tokens(1_000_000, p.rate),
            Ok(20 * BASE_UNITS_PER_TOKEN)
        );
        assert_eq!(fiat_to_tokens(1, p.rate), Ok(20_000_000_000_000));
    }

    #[test]
    fn invalid_configuration() {
        let zero_rate = ExchangeRate {
            fiat_micros_per_token: 0,
        };
        assert_eq!(
            Pricer::new(PricingConfig::default(), table(), zero_rate).err(),
            Some(PricingError::ZeroRate)
        );
        let mut cfg = PricingConfig::default();
        cfg.basis.gpu_milli_tflop_h = 0;
        assert_eq!(
            Pricer::new(cfg, table(), pricer().rate).err(),
            Some(PricingError::ZeroBasis("GPU"))
        );
        let mut tiers = table().tiers().to_vec();
        tiers.reverse();
        assert!(PriceTable::new(tiers).is_err());
        assert!(PriceTable::new(vec![]).is_err());
        assert_eq!(table().at_or_below(TierId(2)).map(|t| t.len()), Ok(1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Fees never panic; they grow with usage and shrink with the day.
        #[test]
        fn fees_are_monotone(
            fuel in any::<u64>(), extra in 0u64..1_000_000_000, bytes in any::<u32>(),
            day in 0u32..20_000, later in 0u32..1000,
        ) {
            let p = pricer();
            let u = ResourceUsage { fuel: fuel / 2, bytes_in: u64::from(bytes), ..Default::default() };
            let more = ResourceUsage { fuel: fuel / 2 + extra, ..u };
            let a = p.fee(&u, TierId(2), day).expect("in range");
            let b = p.fee(&more, TierId(2), day).expect("in range");
            let c = p.fee(&u, TierId(2), day + later).expect("in range");
            prop_assert!(a.token_amount <= b.token_amount);
            prop_assert!(a.fee_fiat_micros <= b.fee_fiat_micros);
            prop_assert!(c.token_amount <= a.token_amount);
            prop_assert!(c.resource_units <= a.resource_units);
            // Higher tier, higher price.
            let hi = p.fee(&u, TierId(1), day).expect("in range");
            prop_assert!(hi.token_amount >= a.token_amount);
        }

        /// Extreme configuration is an error, never a panic.
        #[test]
        fn extremes_do_not_panic(
            fuel in any::<u64>(), flop in any::<u128>(), b_in in any::<u64>(), b_out in any::<u64>(),
            cpu in any::<u64>(), gpu in any::<u64>(), bw in any::<u64>(), day in any::<u32>(),
        ) {
            let basis = ResourceBasis { cpu_milli_kmips_h: cpu, gpu_milli_tflop_h: gpu, bandwidth_milli_gb: bw };
            let u = ResourceUsage { fuel, gpu_flop: flop, bytes_in: b_in, bytes_out: b_out };
            let _ = resource_units(&basis, &u, day);
            let _ = resource_per_coin(&basis, Resource::Cpu, day, 30);
        }
    }
}
