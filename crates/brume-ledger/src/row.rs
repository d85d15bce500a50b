//! The column model, the canonical encoding and the row hash.
//!
//! # Columns
//!
//! Every column of a ledger row is immutable or mutable, internal (it comes
//! from the network) or custom (it comes from the requester), and public or
//! private. [`COLUMNS`] is the table; five of the eight combinations are
//! used, as in the CGN seed:
//!
//! | mutability | origin   | visibility | columns |
//! |------------|----------|------------|---------|
//! | immutable  | internal | public     | who, what, usage, fee, rate, payers, payouts, `private_hash`, `row_hash` |
//! | immutable  | internal | private    | `request_line`, `request_headers`, `metrics`, `service_fields`, `salt` |
//! | immutable  | custom   | public     | `custom_hash` |
//! | immutable  | custom   | private    | `custom_fields` (the requester's own fields) |
//! | mutable    | internal | private    | `status`, `settling_tx` (per entity, in a table of their own) |
//!
//! The private columns are hashed in two groups and both hashes are public
//! columns, so the row hash covers private data too: `private_hash` covers
//! the internal private columns, `custom_hash` the custom ones. Both include
//! a private random `salt`, so that nobody can guess a short private value
//! from its public hash.
//!
//! # Canonical encoding
//!
//! A *value* is one of:
//!
//! | tag    | type  | payload |
//! |--------|-------|---------|
//! | `0x01` | uint  | the number in decimal ASCII, no sign, no leading zeros (`0` is `"0"`) |
//! | `0x02` | text  | the UTF-8 bytes, as they are (no normalisation) |
//! | `0x03` | bytes | the raw bytes (hashes: 32 bytes) |
//! | `0x04` | list  | the concatenation of the encoded items, each `tag ‖ u32be(len) ‖ payload` |
//!
//! and is encoded as `tag ‖ u32be(len(payload)) ‖ payload`. A *pair* (a column
//! name and its value) is encoded as `u32be(len(name)) ‖ name ‖ value`. Names
//! are ASCII. A record (a payout, a header, a field) is a list whose items are
//! in a fixed order.
//!
//! Three hashes are Keccak-256 over concatenated pairs, the pairs sorted by
//! name, byte-wise:
//!
//! - `custom_hash`: the pair `salt` (bytes, 16) and one text pair per custom
//!   field (the field's name and value). Custom field names must not be
//!   `salt`.
//! - `private_hash`: the pairs `metrics` (list of `[text name, uint value]`,
//!   sorted by name), `request_headers` (list of `[text name, text value]`, in
//!   the recorded order), `request_line` (text), `salt` (bytes, 16) and
//!   `service_fields` (list of `[text name, text value]`, sorted by name).
//! - `row_hash`: every public column but `row_hash` itself:
//!
//! | column | type |
//! |--------|------|
//! | `bytes_in`, `bytes_out` | uint |
//! | `charities` | list of text, in the recorded order |
//! | `custom_hash` | bytes (32) |
//! | `developer`, `end_user` | text |
//! | `fee_currency` | text (e.g. `USD`) |
//! | `fee_micros` | uint: the fee in millionths of `fee_currency` |
//! | `fuel` | uint: wasm operators executed (one fuel unit = one instruction) |
//! | `gpu_flop` | uint: GPU work in floating-point operations (one TFLOP-hour is 3.6·10^15); only in rows of schema version 2 and later |
//! | `operator` | text |
//! | `payers` | list of `[text account, text kind, uint amount]`: who pays the fee (the deal's charge), `amount` in token base units, in the recorded order; the amounts sum to `token_amount` |
//! | `payouts` | list of `[text beneficiary, text role, uint amount]`: who receives it, `amount` in token base units, in the recorded order; the amounts sum to `token_amount` |
//! | `peak_memory_bytes` | uint |
//! | `price_multiplier_ppm` | uint: the price in force at admission, as the tier's price times this / 10^6 (a tier's dynamic price curve; 10^6 for a fixed price); only in rows of schema version 3 and later |
//! | `private_hash` | bytes (32) |
//! | `provider` | text |
//! | `rate_fiat_micros`, `rate_token_units` | uint: `rate_token_units` base units of the token were worth `rate_fiat_micros` micro-units of `fee_currency` |
//! | `requester` | text |
//! | `schema_version` | uint: `1` or `2`, the row's own (see [`SCHEMA_VERSION`]) |
//! | `service_digest` | text |
//! | `surcharge` | uint: the overrun surcharge included in `token_amount`, token base units |
//! | `tier` | text |
//! | `timestamp_ms` | uint: milliseconds since the Unix epoch, UTC |
//! | `token_amount` | uint: the fee in token base units |
//! | `utilisation_ppm` | uint: the broker's utilisation (busy slots / slots, ppm) when the work was admitted, which set `price_multiplier_ppm`; only in rows of schema version 3 and later |
//! | `wall_us` | uint: wall time in microseconds |
//! | `work_id` | text |
//!
//! The order above is the byte-wise order of the names, which is the order
//! of the pairs in the hashed bytes.
//!
//! # Worked example
//!
//! The pair `tier = "standard"` is encoded as
//!
//! ```text
//! 00000004 74696572 02 00000008 7374616e64617264
//! └ len    └ "tier" └ └ len     └ "standard"
//!                   text
//! ```
//!
//! the pair `fee_micros = 1500` as `0000000a 6665655f6d6963726f73 01 00000004 31353030`,
//! and `charities = ["c1"]` as `00000009 …"charities"… 04 00000007 02 00000002 6331`.
//!
//! The row of [`example_row`] (work id `0190f1e2-0000-7000-8000-000000000001`,
//! timestamp `1700000000000`, fee 1500 micro-USD = 0.03 token paid by the
//! requester and split 70/20/10 %, custom field `order = "A-17"`, salt
//! `00 01 … 0f`) has:
//!
//! ```text
//! custom_hash  = 134ecf8aeccae0527acbf76b6881cdc31aa8cc9377424741297e9e9401bb3602
//! private_hash = 0c6e559cddd27a28b8954791266732d3532471d31e7421ccb857c3be175b12b0
//! row_hash     = 50557a1a2d52042fd5861aaf7629c6a06d71f32fb1c75af5151b1cdbc7c5bd85
//! ```
//!
//! (a unit test checks these figures, and re-derives them with an encoder
//! written straight from this text).
//!
//! # Aggregate
//!
//! The aggregate hash of a set of rows is the XOR of their row hashes
//! ([`Aggregate`]): it does not depend on the order of the rows, and a row
//! counted twice cancels out.

use std::collections::BTreeMap;
use std::fmt;

use alloy_primitives::keccak256;
use serde::{Deserialize, Serialize};

use crate::store::LedgerError;

/// The row format version new rows are written in, hashed as the
/// `schema_version` column. Older rows still verify: a row carries its
/// version, and the hash follows it (version 1: no `gpu_flop`; version 2:
/// no `price_multiplier_ppm` nor `utilisation_ppm`).
pub const SCHEMA_VERSION: u32 = 3;

/// The oldest row format version this brume reads.
pub const MIN_SCHEMA_VERSION: u32 = 1;

/// The version of a row that does not say (JSON written before version 2).
fn version_one() -> u32 {
    1
}

/// The price multiplier of a row that does not say: 1×.
fn multiplier_one() -> u64 {
    crate::pricing::MULTIPLIER_ONE
}

/// At most this many bytes in an id, a digest, a tier, a currency, a role.
pub const MAX_ID_BYTES: usize = 256;
/// At most this many bytes in a private field's value (a custom field, a
/// service field, a header value, the request line).
pub const MAX_FIELD_BYTES: usize = 4096;
/// At most this many bytes in a field or metric name.
pub const MAX_NAME_BYTES: usize = 128;
/// At most this many entries in each list or map of a row.
pub const MAX_ENTRIES: usize = 64;

/// Whether a column may change after the row is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mutability {
    Immutable,
    Mutable,
}

/// Where a column's data comes from: the network, or the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Internal,
    Custom,
}

/// Who may read a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Private,
}

/// One column of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Column {
    pub name: &'static str,
    pub mutability: Mutability,
    pub origin: Origin,
    pub visibility: Visibility,
    pub doc: &'static str,
}

const fn col(
    name: &'static str,
    mutability: Mutability,
    origin: Origin,
    visibility: Visibility,
    doc: &'static str,
) -> Column {
    Column {
        name,
        mutability,
        origin,
        visibility,
        doc,
    }
}

use Mutability::{Immutable, Mutable};
use Origin::{Custom, Internal};
use Visibility::{Private, Public};

/// Every column of a ledger row. The public immutable ones (but `row_hash`)
/// are exactly the pairs of the row hash, in this order.
#[rustfmt::skip]
pub static COLUMNS: &[Column] = &[
    col("bytes_in", Immutable, Internal, Public, "request bytes received"),
    col("bytes_out", Immutable, Internal, Public, "response bytes sent"),
    col("charities", Immutable, Internal, Public, "charity account ids"),
    col("custom_hash", Immutable, Custom, Public, "Keccak-256 of the custom private fields"),
    col("developer", Immutable, Internal, Public, "the service developer's account id"),
    col("end_user", Immutable, Internal, Public, "the end user's id (not traceable to a person)"),
    col("fee_currency", Immutable, Internal, Public, "the fiat currency of the fee"),
    col("fee_micros", Immutable, Internal, Public, "the fee, in fiat micro-units"),
    col("fuel", Immutable, Internal, Public, "instructions executed (wasm fuel)"),
    col("gpu_flop", Immutable, Internal, Public, "GPU work in FLOP (schema 2 on)"),
    col("operator", Immutable, Internal, Public, "the network operator's account id"),
    col("payers", Immutable, Internal, Public, "(account, kind, amount in token base units): who pays"),
    col("payouts", Immutable, Internal, Public, "(beneficiary, role, amount in token base units): who receives"),
    col("peak_memory_bytes", Immutable, Internal, Public, "peak linear memory"),
    col("price_multiplier_ppm", Immutable, Internal, Public, "the price in force: the tier's price times this, ppm (schema 3 on)"),
    col("private_hash", Immutable, Internal, Public, "Keccak-256 of the internal private columns"),
    col("provider", Immutable, Internal, Public, "the provider's account id"),
    col("rate_fiat_micros", Immutable, Internal, Public, "exchange rate: fiat micro-units …"),
    col("rate_token_units", Immutable, Internal, Public, "… per this many token base units"),
    col("requester", Immutable, Internal, Public, "the requester (enterprise) account id"),
    col("row_hash", Immutable, Internal, Public, "Keccak-256 of the public pairs"),
    col("schema_version", Immutable, Internal, Public, "the row format version"),
    col("service_digest", Immutable, Internal, Public, "sha256 of the service's module"),
    col("surcharge", Immutable, Internal, Public, "overrun surcharge in token_amount, token base units"),
    col("tier", Immutable, Internal, Public, "the service tier"),
    col("timestamp_ms", Immutable, Internal, Public, "completion time, ms since the epoch, UTC"),
    col("token_amount", Immutable, Internal, Public, "the fee in token base units, surcharge included"),
    col("utilisation_ppm", Immutable, Internal, Public, "the broker's utilisation at admission, ppm (schema 3 on)"),
    col("wall_us", Immutable, Internal, Public, "wall time, microseconds"),
    col("work_id", Immutable, Internal, Public, "the work unit's id (unique)"),
    col("metrics", Immutable, Internal, Private, "performance metrics"),
    col("request_headers", Immutable, Internal, Private, "the request's headers"),
    col("request_line", Immutable, Internal, Private, "the request's method and URL"),
    col("salt", Immutable, Internal, Private, "16 random bytes hashed with the private data"),
    col("service_fields", Immutable, Internal, Private, "fields recorded by the service"),
    col("custom_fields", Immutable, Custom, Private, "fields recorded by the requester"),
    col("status", Mutable, Internal, Private, "per entity: pending, collected or paid"),
    col("settling_tx", Mutable, Internal, Private, "per entity: the settling transaction"),
];

/// A 32-byte hash; hex (64 digits, lowercase) in JSON and in text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// Parses 64 hex digits (an optional `0x` is accepted).
    pub fn parse(s: &str) -> Option<Hash32> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash32(out))
    }

    /// From a 32-byte slice.
    pub fn from_slice(b: &[u8]) -> Option<Hash32> {
        <[u8; 32]>::try_from(b).ok().map(Hash32)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({self})")
    }
}

impl utoipa::PartialSchema for Hash32 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("sha256, 64 lowercase hex digits"))
            .into()
    }
}

impl utoipa::ToSchema for Hash32 {}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hash32::parse(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// `u128` as a decimal string in JSON (JavaScript numbers stop at 2^53).
pub mod dec_u128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[u8; 16]` as 32 hex digits in JSON.
mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 16];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// Resources consumed by the work unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowUsage {
    /// Instructions executed: one unit of wasm fuel is one instruction.
    pub fuel: u64,
    pub wall_us: u64,
    pub peak_memory_bytes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// GPU work in FLOP: device time held × the provider's benchmarked
    /// TFLOPS (a decimal string in JSON; 0 in version 1 rows).
    #[serde(default, with = "dec_u128")]
    #[schema(value_type = String)]
    pub gpu_flop: u128,
}

/// The exchange rate in effect: `token_units` base units of the token were
/// worth `fiat_micros` micro-units of the fee currency. Both are positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExchangeRate {
    #[serde(with = "dec_u128")]
    #[schema(value_type = String)]
    pub fiat_micros: u128,
    #[serde(with = "dec_u128")]
    #[schema(value_type = String)]
    pub token_units: u128,
}

impl ExchangeRate {
    /// Token base units in one whole token (18 decimals).
    pub const BASE_UNITS_PER_TOKEN: u128 = 1_000_000_000_000_000_000;

    /// A rate given as fiat micro-units per whole token (the pricing
    /// engine's form).
    pub fn per_whole_token(fiat_micros: u64) -> ExchangeRate {
        ExchangeRate {
            fiat_micros: u128::from(fiat_micros),
            token_units: Self::BASE_UNITS_PER_TOKEN,
        }
    }
}

/// One beneficiary's share of the fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payout {
    pub beneficiary: String,
    /// `provider`, `developer`, `operator`, `charity`, `refund` (to the
    /// requester, for a slow provider), … (free text, at most
    /// [`MAX_ID_BYTES`]).
    pub role: String,
    /// Token base units (a decimal string in JSON).
    #[serde(with = "dec_u128")]
    #[schema(value_type = String)]
    pub amount: u128,
}

/// One payer's part of the fee (the deal's charge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayerPart {
    pub account: String,
    /// `requester`, `subsidy`, `operator` or `subscription` (free text, at
    /// most [`MAX_ID_BYTES`]).
    pub kind: String,
    /// Token base units (a decimal string in JSON).
    #[serde(with = "dec_u128")]
    #[schema(value_type = String)]
    pub amount: u128,
}

/// The public, immutable, internal content of a row (what the row hash
/// covers, but the two private-data hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowData {
    /// The row format version (see [`SCHEMA_VERSION`]); 1 when absent.
    #[serde(default = "version_one")]
    pub schema_version: u32,
    pub work_id: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: u64,
    pub requester: String,
    pub end_user: String,
    pub provider: String,
    pub developer: String,
    pub operator: String,
    pub charities: Vec<String>,
    pub service_digest: String,
    pub tier: String,
    pub usage: RowUsage,
    pub fee_currency: String,
    pub fee_micros: u64,
    /// The fee in token base units, surcharge included.
    #[serde(with = "dec_u128")]
    #[schema(value_type = String)]
    pub token_amount: u128,
    /// The overrun surcharge included in `token_amount`.
    #[serde(with = "dec_u128")]
    #[schema(value_type = String)]
    pub surcharge: u128,
    pub rate: ExchangeRate,
    /// Who pays `token_amount`.
    pub payers: Vec<PayerPart>,
    /// Who receives `token_amount`.
    pub payouts: Vec<Payout>,
    /// The price in force: the tier's price times this, in ppm (1× in rows
    /// before version 3).
    #[serde(default = "multiplier_one")]
    pub price_multiplier_ppm: u64,
    /// The broker's utilisation at admission, in ppm (0 in rows before
    /// version 3).
    #[serde(default)]
    pub utilisation_ppm: u32,
}

/// The private, immutable columns: visible only to the row's owner,
/// protected through `private_hash` and `custom_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PrivateData {
    /// Random bytes, hashed with the private data so that its public hashes
    /// reveal nothing (hex in JSON).
    #[serde(with = "hex16")]
    #[schema(value_type = String)]
    pub salt: [u8; 16],
    /// `METHOD path?query HTTP/x`.
    pub request_line: String,
    /// In the order received; names may repeat.
    pub request_headers: Vec<(String, String)>,
    pub metrics: BTreeMap<String, u64>,
    /// Fields recorded by the service (internal).
    pub service_fields: BTreeMap<String, String>,
    /// Fields recorded by the requester (custom).
    pub custom_fields: BTreeMap<String, String>,
}

/// A sealed ledger row: its data, its three public hashes and, for a reader
/// allowed to see them, its private columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerRow {
    #[serde(flatten)]
    pub data: RowData,
    pub private_hash: Hash32,
    pub custom_hash: Hash32,
    pub row_hash: Hash32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<PrivateData>,
}

impl LedgerRow {
    /// Validates a row and computes its hashes.
    pub fn seal(data: RowData, private: PrivateData) -> Result<LedgerRow, LedgerError> {
        validate(&data, &private)?;
        let private_hash = private_hash(&private);
        let custom_hash = custom_hash(&private);
        let row_hash = row_hash(&data, &private_hash, &custom_hash);
        Ok(LedgerRow {
            data,
            private_hash,
            custom_hash,
            row_hash,
            private: Some(private),
        })
    }

    /// Checks that a row carries its private columns, respects the bounds
    /// and that its three hashes are those of its content (what
    /// [`seal`](LedgerRow::seal) would compute), without copying it.
    pub fn check_sealed(&self) -> Result<(), LedgerError> {
        let Some(private) = &self.private else {
            return Err(invalid(
                "row",
                &format!("{}: append needs the private columns", self.data.work_id),
            ));
        };
        validate(&self.data, private)?;
        let ph = private_hash(private);
        let ch = custom_hash(private);
        if ph != self.private_hash
            || ch != self.custom_hash
            || row_hash(&self.data, &ph, &ch) != self.row_hash
        {
            return Err(invalid(
                "row_hash",
                &format!("{}: the hashes do not match the content", self.data.work_id),
            ));
        }
        Ok(())
    }

    /// The row hash recomputed from the public columns.
    pub fn compute_row_hash(&self) -> Hash32 {
        row_hash(&self.data, &self.private_hash, &self.custom_hash)
    }

    /// The row without its private columns.
    pub fn public(&self) -> LedgerRow {
        LedgerRow {
            private: None,
            ..self.clone()
        }
    }

    /// The hashed (name, value) pairs of the public columns, in hash order.
    pub fn public_pairs(&self) -> Vec<(&'static str, Value<'_>)> {
        public_pairs(&self.data, &self.private_hash, &self.custom_hash)
    }
}

/// A row sealed by [`SealedRow::seal`] (or checked by
/// [`SealedRow::check`]) and immutable since: its hashes are those of its
/// content by construction, so a store can take it without hashing it again
/// ([`LedgerStore::append_sealed`](crate::store::LedgerStore::append_sealed)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow(LedgerRow);

impl SealedRow {
    /// [`LedgerRow::seal`], keeping the proof that it was sealed.
    pub fn seal(data: RowData, private: PrivateData) -> Result<SealedRow, LedgerError> {
        LedgerRow::seal(data, private).map(SealedRow)
    }

    /// A row from elsewhere, checked with [`LedgerRow::check_sealed`].
    pub fn check(row: LedgerRow) -> Result<SealedRow, LedgerError> {
        row.check_sealed()?;
        Ok(SealedRow(row))
    }

    pub fn row(&self) -> &LedgerRow {
        &self.0
    }

    pub fn into_row(self) -> LedgerRow {
        self.0
    }
}

/// A value of the canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Uint(u128),
    Text(&'a str),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
}

impl Value<'_> {
    /// Appends `tag ‖ u32be(len) ‖ payload`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Uint(n) => put(out, 0x01, n.to_string().as_bytes()),
            Value::Text(s) => put(out, 0x02, s.as_bytes()),
            Value::Bytes(b) => put(out, 0x03, b),
            Value::List(items) => {
                out.push(0x04);
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                for item in items {
                    item.encode(out);
                }
                let len = len32(out.len() - at - 4);
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
    }
}

/// Lengths are bounded by validation far below 4 GiB; saturate rather than
/// panic on absurd input (the hash then simply won't match).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&len32(payload.len()).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends `u32be(len(name)) ‖ name ‖ value`.
pub fn encode_pair(name: &str, value: &Value<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&len32(name.len()).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    value.encode(out);
}

/// Keccak-256 over the pairs, sorted by name (byte-wise) first.
pub fn hash_pairs(pairs: &mut [(&str, Value<'_>)]) -> Hash32 {
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut buf = Vec::with_capacity(1024);
    for (name, value) in pairs.iter() {
        encode_pair(name, value, &mut buf);
    }
    Hash32(keccak256(&buf).0)
}

/// Keccak-256 of the internal private columns (see the module docs).
pub fn private_hash(p: &PrivateData) -> Hash32 {
    let mut e = Enc::with_capacity(256 + p.request_line.len());
    let metrics = e.name("metrics").begin();
    for (k, v) in &p.metrics {
        let rec = e.begin();
        e.text(k).uint(u128::from(*v)).end(rec);
    }
    e.end(metrics);
    e.name("request_headers").text_records(
        p.request_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    e.name("request_line").text(&p.request_line);
    e.name("salt").bytes(&p.salt);
    e.name("service_fields").text_records(
        p.service_fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    e.hash()
}

/// Keccak-256 of the custom private fields and the salt (see the module
/// docs).
pub fn custom_hash(p: &PrivateData) -> Hash32 {
    let mut e = Enc::with_capacity(128);
    // The map iterates in byte-wise order of the names; the salt goes before
    // the first name that sorts at or after it (as a stable sort puts it).
    let mut salt = Some(&p.salt);
    for (k, v) in &p.custom_fields {
        if k.as_str() >= "salt"
            && let Some(s) = salt.take()
        {
            e.name("salt").bytes(s);
        }
        e.name(k).text(v);
    }
    if let Some(s) = salt {
        e.name("salt").bytes(s);
    }
    e.hash()
}

fn public_pairs<'a>(
    d: &'a RowData,
    private_hash: &'a Hash32,
    custom_hash: &'a Hash32,
) -> Vec<(&'static str, Value<'a>)> {
    let u = |n: u64| Value::Uint(u128::from(n));
    let mut pairs = vec![
        ("bytes_in", u(d.usage.bytes_in)),
        ("bytes_out", u(d.usage.bytes_out)),
        (
            "charities",
            Value::List(d.charities.iter().map(|c| Value::Text(c)).collect()),
        ),
        ("custom_hash", Value::Bytes(&custom_hash.0)),
        ("developer", Value::Text(&d.developer)),
        ("end_user", Value::Text(&d.end_user)),
        ("fee_currency", Value::Text(&d.fee_currency)),
        ("fee_micros", u(d.fee_micros)),
        ("fuel", u(d.usage.fuel)),
        ("operator", Value::Text(&d.operator)),
        (
            "payers",
            Value::List(
                d.payers
                    .iter()
                    .map(|p| {
                        Value::List(vec![
                            Value::Text(&p.account),
                            Value::Text(&p.kind),
                            Value::Uint(p.amount),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "payouts",
            Value::List(
                d.payouts
                    .iter()
                    .map(|p| {
                        Value::List(vec![
                            Value::Text(&p.beneficiary),
                            Value::Text(&p.role),
                            Value::Uint(p.amount),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("peak_memory_bytes", u(d.usage.peak_memory_bytes)),
        ("private_hash", Value::Bytes(&private_hash.0)),
        ("provider", Value::Text(&d.provider)),
        ("rate_fiat_micros", Value::Uint(d.rate.fiat_micros)),
        ("rate_token_units", Value::Uint(d.rate.token_units)),
        ("requester", Value::Text(&d.requester)),
        ("schema_version", Value::Uint(u128::from(d.schema_version))),
        ("service_digest", Value::Text(&d.service_digest)),
        ("surcharge", Value::Uint(d.surcharge)),
        ("tier", Value::Text(&d.tier)),
        ("timestamp_ms", u(d.timestamp_ms)),
        ("token_amount", Value::Uint(d.token_amount)),
        ("wall_us", u(d.usage.wall_us)),
        ("work_id", Value::Text(&d.work_id)),
    ];
    if d.schema_version >= 2 {
        pairs.push(("gpu_flop", Value::Uint(d.usage.gpu_flop)));
    }
    if d.schema_version >= 3 {
        pairs.push(("price_multiplier_ppm", u(d.price_multiplier_ppm)));
        pairs.push(("utilisation_ppm", u(u64::from(d.utilisation_ppm))));
    }
    // Sorting puts `gpu_flop` in its place, and keeps the function right if
    // a column is added out of place.
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs
}

/// The row hash: Keccak-256 over the public pairs (see the module docs).
/// Written straight in name order: the same bytes as [`hash_pairs`] over
/// [`LedgerRow::public_pairs`].
pub fn row_hash(d: &RowData, private_hash: &Hash32, custom_hash: &Hash32) -> Hash32 {
    let u = u128::from;
    let mut e = Enc::with_capacity(1024);
    e.name("bytes_in").uint(u(d.usage.bytes_in));
    e.name("bytes_out").uint(u(d.usage.bytes_out));
    let list = e.name("charities").begin();
    for c in &d.charities {
        e.text(c);
    }
    e.end(list);
    e.name("custom_hash").bytes(&custom_hash.0);
    e.name("developer").text(&d.developer);
    e.name("end_user").text(&d.end_user);
    e.name("fee_currency").text(&d.fee_currency);
    e.name("fee_micros").uint(u(d.fee_micros));
    e.name("fuel").uint(u(d.usage.fuel));
    if d.schema_version >= 2 {
        e.name("gpu_flop").uint(d.usage.gpu_flop);
    }
    e.name("operator").text(&d.operator);
    let list = e.name("payers").begin();
    for p in &d.payers {
        let rec = e.begin();
        e.text(&p.account).text(&p.kind).uint(p.amount).end(rec);
    }
    e.end(list);
    let list = e.name("payouts").begin();
    for p in &d.payouts {
        let rec = e.begin();
        e.text(&p.beneficiary).text(&p.role).uint(p.amount).end(rec);
    }
    e.end(list);
    e.name("peak_memory_bytes")
        .uint(u(d.usage.peak_memory_bytes));
    if d.schema_version >= 3 {
        e.name("price_multiplier_ppm")
            .uint(u(d.price_multiplier_ppm));
    }
    e.name("private_hash").bytes(&private_hash.0);
    e.name("provider").text(&d.provider);
    e.name("rate_fiat_micros").uint(d.rate.fiat_micros);
    e.name("rate_token_units").uint(d.rate.token_units);
    e.name("requester").text(&d.requester);
    e.name("schema_version").uint(u128::from(d.schema_version));
    e.name("service_digest").text(&d.service_digest);
    e.name("surcharge").uint(d.surcharge);
    e.name("tier").text(&d.tier);
    e.name("timestamp_ms").uint(u(d.timestamp_ms));
    e.name("token_amount").uint(d.token_amount);
    if d.schema_version >= 3 {
        e.name("utilisation_ppm")
            .uint(u128::from(d.utilisation_ppm));
    }
    e.name("wall_us").uint(u(d.usage.wall_us));
    e.name("work_id").text(&d.work_id);
    e.hash()
}

/// The canonical encoding written straight into a buffer, without building
/// [`Value`]s: the same bytes as [`encode_pair`] (the tests compare the two).
/// The hashes use it; the caller writes the pairs in byte-wise name order.
struct Enc(Vec<u8>);

impl Enc {
    fn with_capacity(n: usize) -> Enc {
        Enc(Vec::with_capacity(n))
    }

    fn name(&mut self, name: &str) -> &mut Enc {
        self.0.extend_from_slice(&len32(name.len()).to_be_bytes());
        self.0.extend_from_slice(name.as_bytes());
        self
    }

    fn uint(&mut self, n: u128) -> &mut Enc {
        // Decimal digits, written backwards into a stack buffer.
        // u128 division is slow: peel 19 digits at a time, then use u64.
        let mut digits = [0u8; 39];
        let mut at = digits.len();
        let mut n = n;
        const E19: u128 = 10_000_000_000_000_000_000;
        while n > u128::from(u64::MAX) {
            let mut low = (n % E19) as u64;
            n /= E19;
            for _ in 0..19 {
                at -= 1;
                digits[at] = b'0' + (low % 10) as u8;
                low /= 10;
            }
        }
        let mut m = n as u64;
        loop {
            at -= 1;
            digits[at] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
        put(&mut self.0, 0x01, &digits[at..]);
        self
    }

    fn text(&mut self, s: &str) -> &mut Enc {
        put(&mut self.0, 0x02, s.as_bytes());
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Enc {
        put(&mut self.0, 0x03, b);
        self
    }

    /// Opens a list; `end` closes it.
    fn begin(&mut self) -> usize {
        self.0.push(0x04);
        self.0.extend_from_slice(&[0; 4]);
        self.0.len()
    }

    fn end(&mut self, start: usize) -> &mut Enc {
        let len = len32(self.0.len() - start);
        self.0[start - 4..start].copy_from_slice(&len.to_be_bytes());
        self
    }

    /// A list of `[text, text]` records.
    fn text_records<'a>(&mut self, items: impl Iterator<Item = (&'a str, &'a str)>) -> &mut Enc {
        let list = self.begin();
        for (k, v) in items {
            let rec = self.begin();
            self.text(k).text(v).end(rec);
        }
        self.end(list)
    }

    fn hash(&self) -> Hash32 {
        Hash32(keccak256(&self.0).0)
    }
}

fn too_large(column: &str, len: usize, max: usize) -> LedgerError {
    LedgerError::TooLarge {
        column: column.to_string(),
        len,
        max,
    }
}

fn invalid(column: &str, reason: &str) -> LedgerError {
    LedgerError::InvalidRow {
        column: column.to_string(),
        reason: reason.to_string(),
    }
}

fn check_len(column: &str, s: &str, max: usize) -> Result<(), LedgerError> {
    if s.len() > max {
        return Err(too_large(column, s.len(), max));
    }
    Ok(())
}

fn check_count(column: &str, n: usize) -> Result<(), LedgerError> {
    if n > MAX_ENTRIES {
        return Err(too_large(column, n, MAX_ENTRIES));
    }
    Ok(())
}

fn check_fields<'a>(
    column: &str,
    fields: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<(), LedgerError> {
    check_count(column, fields.len())?;
    for (k, v) in fields {
        check_len(column, k, MAX_NAME_BYTES)?;
        check_len(column, v, MAX_FIELD_BYTES)?;
    }
    Ok(())
}

/// The bounds a row must respect before it is sealed.
fn validate(d: &RowData, p: &PrivateData) -> Result<(), LedgerError> {
    if !(MIN_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&d.schema_version) {
        return Err(invalid(
            "schema_version",
            &format!(
                "{} is not a row format this brume reads ({MIN_SCHEMA_VERSION} to {SCHEMA_VERSION})",
                d.schema_version
            ),
        ));
    }
    if d.schema_version < 2 && d.usage.gpu_flop != 0 {
        return Err(invalid("gpu_flop", "a version 1 row has no GPU work"));
    }
    if d.schema_version < 3
        && (d.price_multiplier_ppm != multiplier_one() || d.utilisation_ppm != 0)
    {
        return Err(invalid(
            "price_multiplier_ppm",
            "a row before version 3 has a fixed price",
        ));
    }
    if d.utilisation_ppm > 1_000_000 {
        return Err(invalid("utilisation_ppm", "more than 1,000,000 ppm"));
    }
    if d.work_id.is_empty() {
        return Err(invalid("work_id", "empty"));
    }
    for (column, s) in [
        ("work_id", &d.work_id),
        ("requester", &d.requester),
        ("end_user", &d.end_user),
        ("provider", &d.provider),
        ("developer", &d.developer),
        ("operator", &d.operator),
        ("service_digest", &d.service_digest),
        ("tier", &d.tier),
        ("fee_currency", &d.fee_currency),
    ] {
        check_len(column, s, MAX_ID_BYTES)?;
    }
    if i64::try_from(d.timestamp_ms).is_err() {
        return Err(invalid("timestamp_ms", "beyond year 292 million"));
    }
    check_count("charities", d.charities.len())?;
    for c in &d.charities {
        check_len("charities", c, MAX_ID_BYTES)?;
    }
    check_count("payouts", d.payouts.len())?;
    let mut sum: u128 = 0;
    for p in &d.payouts {
        check_len("payouts", &p.beneficiary, MAX_ID_BYTES)?;
        check_len("payouts", &p.role, MAX_ID_BYTES)?;
        sum = sum.saturating_add(p.amount);
    }
    if !d.payouts.is_empty() && sum != d.token_amount {
        return Err(LedgerError::PayoutMismatch {
            column: "payouts",
            sum,
            fee: d.token_amount,
        });
    }
    check_count("payers", d.payers.len())?;
    let mut sum: u128 = 0;
    for p in &d.payers {
        check_len("payers", &p.account, MAX_ID_BYTES)?;
        check_len("payers", &p.kind, MAX_ID_BYTES)?;
        sum = sum.saturating_add(p.amount);
    }
    if !d.payers.is_empty() && sum != d.token_amount {
        return Err(LedgerError::PayoutMismatch {
            column: "payers",
            sum,
            fee: d.token_amount,
        });
    }
    if d.surcharge > d.token_amount {
        return Err(invalid("surcharge", "larger than the fee"));
    }
    if d.rate.fiat_micros == 0 || d.rate.token_units == 0 {
        return Err(invalid("rate", "both sides of the rate must be positive"));
    }
    check_len("request_line", &p.request_line, MAX_FIELD_BYTES)?;
    check_fields(
        "request_headers",
        p.request_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    check_count("metrics", p.metrics.len())?;
    for k in p.metrics.keys() {
        check_len("metrics", k, MAX_NAME_BYTES)?;
    }
    check_fields(
        "service_fields",
        p.service_fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    check_fields(
        "custom_fields",
        p.custom_fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    if p.custom_fields.contains_key("salt") {
        return Err(invalid(
            "custom_fields",
            "a custom field may not be named salt",
        ));
    }
    Ok(())
}

/// The XOR of row hashes: the same whatever the order of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Aggregate(pub Hash32);

impl Aggregate {
    pub fn new() -> Aggregate {
        Aggregate::default()
    }

    /// XORs one row hash in (adding the same hash twice cancels it).
    pub fn add(&mut self, row_hash: &[u8; 32]) {
        for (a, b) in self.0.0.iter_mut().zip(row_hash) {
            *a ^= b;
        }
    }

    pub fn hash(&self) -> Hash32 {
        self.0
    }
}

impl<'a> FromIterator<&'a Hash32> for Aggregate {
    fn from_iter<I: IntoIterator<Item = &'a Hash32>>(iter: I) -> Aggregate {
        let mut agg = Aggregate::new();
        for h in iter {
            agg.add(&h.0);
        }
        agg
    }
}

/// The row of the worked example in the module docs.
///
/// It is a version 1 row, so that its figures stay those of the docs; a
/// version 2 row hashes one more pair, `gpu_flop`.
pub fn example_row() -> Result<LedgerRow, LedgerError> {
    let data = RowData {
        schema_version: 1,
        work_id: "0190f1e2-0000-7000-8000-000000000001".into(),
        timestamp_ms: 1_700_000_000_000,
        requester: "acct-requester".into(),
        end_user: "user-42".into(),
        provider: "0x1111111111111111111111111111111111111111".into(),
        developer: "0x2222222222222222222222222222222222222222".into(),
        operator: "0x3333333333333333333333333333333333333333".into(),
        charities: vec!["c1".into()],
        service_digest: "sha256:".to_string() + &"ab".repeat(32),
        tier: "standard".into(),
        usage: RowUsage {
            fuel: 1_000_000,
            wall_us: 2_500,
            peak_memory_bytes: 1 << 20,
            bytes_in: 100,
            bytes_out: 200,
            gpu_flop: 0,
        },
        fee_currency: "USD".into(),
        fee_micros: 1500,
        token_amount: 30_000_000_000_000_000,
        surcharge: 0,
        rate: ExchangeRate::per_whole_token(50_000),
        payers: vec![PayerPart {
            account: "acct-requester".into(),
            kind: "requester".into(),
            amount: 30_000_000_000_000_000,
        }],
        payouts: vec![
            Payout {
                beneficiary: "0x1111111111111111111111111111111111111111".into(),
                role: "provider".into(),
                amount: 21_000_000_000_000_000,
            },
            Payout {
                beneficiary: "0x2222222222222222222222222222222222222222".into(),
                role: "developer".into(),
                amount: 6_000_000_000_000_000,
            },
            Payout {
                beneficiary: "0x3333333333333333333333333333333333333333".into(),
                role: "operator".into(),
                amount: 3_000_000_000_000_000,
            },
        ],
        price_multiplier_ppm: multiplier_one(),
        utilisation_ppm: 0,
    };
    let private = PrivateData {
        salt: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        request_line: "POST /v1/functions/resize/invoke HTTP/1.1".into(),
        request_headers: vec![("content-type".into(), "image/png".into())],
        metrics: BTreeMap::from([("queue_us".into(), 120)]),
        service_fields: BTreeMap::new(),
        custom_fields: BTreeMap::from([("order".into(), "A-17".into())]),
    };
    LedgerRow::seal(data, private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CUSTOM: &str = "134ecf8aeccae0527acbf76b6881cdc31aa8cc9377424741297e9e9401bb3602";
    const PRIVATE: &str = "0c6e559cddd27a28b8954791266732d3532471d31e7421ccb857c3be175b12b0";
    const ROW: &str = "50557a1a2d52042fd5861aaf7629c6a06d71f32fb1c75af5151b1cdbc7c5bd85";

    fn text_pairs(m: &BTreeMap<String, String>) -> Value<'_> {
        Value::List(
            m.iter()
                .map(|(k, v)| Value::List(vec![Value::Text(k), Value::Text(v)]))
                .collect(),
        )
    }

    /// The hashes through `Value` and `hash_pairs` (sorting the pairs), as
    /// they were first written; the direct encoders must agree.
    fn reference_hashes(r: &LedgerRow) -> (Hash32, Hash32, Hash32) {
        let p = r.private.as_ref().expect("private");
        let headers = Value::List(
            p.request_headers
                .iter()
                .map(|(k, v)| Value::List(vec![Value::Text(k), Value::Text(v)]))
                .collect(),
        );
        let metrics = Value::List(
            p.metrics
                .iter()
                .map(|(k, v)| Value::List(vec![Value::Text(k), Value::Uint(u128::from(*v))]))
                .collect(),
        );
        let private = hash_pairs(&mut [
            ("metrics", metrics),
            ("request_headers", headers),
            ("request_line", Value::Text(&p.request_line)),
            ("salt", Value::Bytes(&p.salt)),
            ("service_fields", text_pairs(&p.service_fields)),
        ]);
        let mut pairs: Vec<(&str, Value<'_>)> = vec![("salt", Value::Bytes(&p.salt))];
        for (k, v) in &p.custom_fields {
            pairs.push((k, Value::Text(v)));
        }
        let custom = hash_pairs(&mut pairs);
        let row = hash_pairs(&mut public_pairs(&r.data, &private, &custom));
        (private, custom, row)
    }

    #[test]
    fn direct_uint_matches_the_reference() {
        let e19 = 10_000_000_000_000_000_000u128;
        for n in [
            0,
            9,
            10,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            e19 - 1,
            e19,
            e19 * e19,
            e19 * e19 + 7,
            u128::MAX,
        ] {
            let mut want = Vec::new();
            Value::Uint(n).encode(&mut want);
            let mut e = Enc::with_capacity(0);
            e.uint(n);
            assert_eq!(e.0, want, "{n}");
        }
    }

    #[test]
    fn direct_encoders_match_the_reference() {
        let base = example_row().expect("row");
        let mut p = base.private.clone().expect("private");
        let mut rows = vec![base.clone()];
        for (i, name) in ["a", "s", "sal", "salt_", "salu", "z", "", "Salt"]
            .into_iter()
            .enumerate()
        {
            p.custom_fields.insert(name.into(), format!("v{i}"));
            p.metrics.insert(format!("m{i}"), u64::MAX - i as u64);
            p.service_fields.insert(format!("f{i}"), "é".repeat(i));
            p.request_headers.push((name.into(), String::new()));
            let mut d = base.data.clone();
            d.charities = (0..i).map(|c| format!("c{c}")).collect();
            d.usage.fuel = u64::MAX >> i;
            if i % 2 == 0 {
                d.schema_version = 2;
                d.usage.gpu_flop = u128::MAX >> i;
            }
            d.rate.token_units = u128::MAX >> i;
            d.payers.clear();
            d.payouts.clear();
            d.token_amount = 0;
            rows.push(LedgerRow::seal(d, p.clone()).expect("seal"));
        }
        for r in &rows {
            let (private, custom, row) = reference_hashes(r);
            assert_eq!(r.private_hash, private);
            assert_eq!(r.custom_hash, custom);
            assert_eq!(r.row_hash, row);
            r.check_sealed().expect("sealed");
        }
        let mut bad = base.clone();
        bad.data.tier.push('x');
        assert_eq!(
            bad.check_sealed().expect_err("edited").code(),
            "invalid_row"
        );
        assert_eq!(
            base.public().check_sealed().expect_err("public").code(),
            "invalid_row"
        );
    }

    #[test]
    fn a_version_2_row_hashes_its_gpu_work_and_version_1_rows_still_check() {
        let v1 = example_row().expect("row");
        let private = v1.private.clone().expect("private");
        let mut d = v1.data.clone();
        d.schema_version = 2;
        let v2 = LedgerRow::seal(d.clone(), private.clone()).expect("v2");
        assert_ne!(v2.row_hash, v1.row_hash, "the version is hashed");
        d.usage.gpu_flop = 3_600_000_000_000_000;
        let gpu = LedgerRow::seal(d.clone(), private.clone()).expect("v2 with gpu");
        assert_ne!(gpu.row_hash, v2.row_hash, "gpu_flop is hashed");
        let mut edited = gpu.clone();
        edited.data.usage.gpu_flop += 1;
        assert_eq!(
            edited.check_sealed().expect_err("edited").code(),
            "invalid_row"
        );
        // Old JSON (no version, no gpu_flop) reads as version 1 and checks.
        let mut json = serde_json::to_value(&v1).expect("json");
        let obj = json.as_object_mut().expect("object");
        obj.remove("schema_version");
        obj.get_mut("usage")
            .and_then(|u| u.as_object_mut())
            .expect("usage")
            .remove("gpu_flop");
        let old: LedgerRow = serde_json::from_value(json).expect("old json");
        old.check_sealed().expect("a version 1 row still checks");
        // Version 3 hashes the price in force and the utilisation; before
        // it, the price was fixed.
        d.usage.gpu_flop = 0;
        d.schema_version = 3;
        let v3 = LedgerRow::seal(d.clone(), private.clone()).expect("v3");
        assert_ne!(v3.row_hash, v2.row_hash, "the version is hashed");
        d.price_multiplier_ppm = 2_500_000;
        d.utilisation_ppm = 900_000;
        let surged = LedgerRow::seal(d.clone(), private.clone()).expect("v3 surged");
        let mut edited = surged.clone();
        edited.data.utilisation_ppm -= 1;
        assert_eq!(
            edited.check_sealed().expect_err("edited").code(),
            "invalid_row"
        );
        d.schema_version = 2;
        assert!(
            LedgerRow::seal(d.clone(), private.clone()).is_err(),
            "a v2 row at 2.5x"
        );
        d.price_multiplier_ppm = crate::pricing::MULTIPLIER_ONE;
        d.utilisation_ppm = 0;
        for (version, flop) in [(1, 1), (0, 0), (SCHEMA_VERSION + 1, 0)] {
            d.schema_version = version;
            d.usage.gpu_flop = flop;
            let e = LedgerRow::seal(d.clone(), private.clone()).expect_err("refused");
            assert_eq!(e.code(), "invalid_row", "version {version}, gpu {flop}");
        }
    }

    #[test]
    fn worked_example_hashes() {
        let r = example_row().expect("row");
        assert_eq!(r.custom_hash.to_string(), CUSTOM);
        assert_eq!(r.private_hash.to_string(), PRIVATE);
        assert_eq!(r.row_hash.to_string(), ROW);
        assert_eq!(r.compute_row_hash(), r.row_hash);
    }

    // An encoder written from the module docs alone, without `Value`.
    fn item(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }
    fn uint(n: u128) -> Vec<u8> {
        item(1, n.to_string().as_bytes())
    }
    fn text(s: &str) -> Vec<u8> {
        item(2, s.as_bytes())
    }
    fn list(items: &[Vec<u8>]) -> Vec<u8> {
        item(4, &items.concat())
    }
    fn pair(name: &str, value: Vec<u8>) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend(value);
        v
    }
    fn keccak(parts: &[Vec<u8>]) -> String {
        hex::encode(keccak256(parts.concat()))
    }

    #[test]
    fn worked_example_from_the_spec() {
        let salt: Vec<u8> = (0u8..16).collect();
        let custom = keccak(&[pair("order", text("A-17")), pair("salt", item(3, &salt))]);
        assert_eq!(custom, CUSTOM);
        let private = keccak(&[
            pair("metrics", list(&[list(&[text("queue_us"), uint(120)])])),
            pair(
                "request_headers",
                list(&[list(&[text("content-type"), text("image/png")])]),
            ),
            pair(
                "request_line",
                text("POST /v1/functions/resize/invoke HTTP/1.1"),
            ),
            pair("salt", item(3, &salt)),
            pair("service_fields", list(&[])),
        ]);
        assert_eq!(private, PRIVATE);
        let (p, d, o) = (
            "0x1111111111111111111111111111111111111111",
            "0x2222222222222222222222222222222222222222",
            "0x3333333333333333333333333333333333333333",
        );
        let h = |s: &str| item(3, &hex::decode(s).expect("hex"));
        let row = keccak(&[
            pair("bytes_in", uint(100)),
            pair("bytes_out", uint(200)),
            pair("charities", list(&[text("c1")])),
            pair("custom_hash", h(CUSTOM)),
            pair("developer", text(d)),
            pair("end_user", text("user-42")),
            pair("fee_currency", text("USD")),
            pair("fee_micros", uint(1500)),
            pair("fuel", uint(1_000_000)),
            pair("operator", text(o)),
            pair(
                "payers",
                list(&[list(&[
                    text("acct-requester"),
                    text("requester"),
                    uint(30_000_000_000_000_000),
                ])]),
            ),
            pair(
                "payouts",
                list(&[
                    list(&[text(p), text("provider"), uint(21_000_000_000_000_000)]),
                    list(&[text(d), text("developer"), uint(6_000_000_000_000_000)]),
                    list(&[text(o), text("operator"), uint(3_000_000_000_000_000)]),
                ]),
            ),
            pair("peak_memory_bytes", uint(1 << 20)),
            pair("private_hash", h(PRIVATE)),
            pair("provider", text(p)),
            pair("rate_fiat_micros", uint(50_000)),
            pair("rate_token_units", uint(1_000_000_000_000_000_000)),
            pair("requester", text("acct-requester")),
            pair("schema_version", uint(1)),
            pair(
                "service_digest",
                text(&format!("sha256:{}", "ab".repeat(32))),
            ),
            pair("surcharge", uint(0)),
            pair("tier", text("standard")),
            pair("timestamp_ms", uint(1_700_000_000_000)),
            pair("token_amount", uint(30_000_000_000_000_000)),
            pair("wall_us", uint(2500)),
            pair("work_id", text("0190f1e2-0000-7000-8000-000000000001")),
        ]);
        assert_eq!(row, ROW);
    }

    #[test]
    fn pair_bytes_as_documented() {
        let mut out = Vec::new();
        encode_pair("tier", &Value::Text("standard"), &mut out);
        assert_eq!(
            hex::encode(&out),
            "0000000474696572020000000873746".to_string() + "16e64617264"
        );
        out.clear();
        encode_pair("fee_micros", &Value::Uint(1500), &mut out);
        assert_eq!(
            hex::encode(&out),
            "0000000a6665655f6d6963726f73010000000431353030"
        );
        out.clear();
        encode_pair("charities", &Value::List(vec![Value::Text("c1")]), &mut out);
        assert_eq!(
            hex::encode(&out),
            "00000009636861726974696573040000000702000000026331"
        );
        out.clear();
        Value::Uint(0).encode(&mut out);
        assert_eq!(out, [1, 0, 0, 0, 1, b'0']);
    }

    /// The public pairs of a current row are exactly the public immutable
    /// columns of the table but `row_hash`, in byte-wise order; five
    /// combinations used.
    #[test]
    fn column_table_matches_the_hash() {
        let mut r = example_row().expect("row");
        r.data.schema_version = SCHEMA_VERSION;
        let names: Vec<&str> = r.public_pairs().iter().map(|p| p.0).collect();
        let mut table: Vec<&str> = COLUMNS
            .iter()
            .filter(|c| c.visibility == Public && c.mutability == Immutable && c.name != "row_hash")
            .map(|c| c.name)
            .collect();
        table.sort_unstable();
        assert_eq!(names, table);
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(names, sorted);
        let combos: std::collections::BTreeSet<_> = COLUMNS
            .iter()
            .map(|c| (c.mutability, c.origin, c.visibility))
            .collect();
        assert_eq!(combos.len(), 5);
        assert!(!combos.contains(&(Mutable, Internal, Public)));
        assert!(!combos.contains(&(Mutable, Custom, Public)));
        assert!(!combos.contains(&(Mutable, Custom, Private)));
        let unique: std::collections::BTreeSet<_> = COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(unique.len(), COLUMNS.len());
    }

    #[test]
    fn every_public_value_is_hashed() {
        let base = example_row().expect("row");
        let p = base.private.clone().expect("private");
        let mut edits: Vec<fn(&mut RowData)> = vec![
            |d| d.work_id.push('x'),
            |d| d.timestamp_ms += 1,
            |d| d.requester.push('x'),
            |d| d.end_user.push('x'),
            |d| d.provider.push('x'),
            |d| d.developer.push('x'),
            |d| d.operator.push('x'),
            |d| d.charities.push("c2".into()),
            |d| d.service_digest.push('x'),
            |d| d.tier.push('x'),
            |d| d.usage.fuel += 1,
            |d| d.usage.wall_us += 1,
            |d| d.usage.peak_memory_bytes += 1,
            |d| d.usage.bytes_in += 1,
            |d| d.usage.bytes_out += 1,
            |d| d.fee_currency.push('x'),
            |d| d.rate.fiat_micros += 1,
            |d| d.rate.token_units += 1,
            |d| d.payouts.swap(0, 1),
        ];
        edits.push(|d| d.fee_micros += 1);
        edits.push(|d| d.payers[0].kind.push('x'));
        edits.push(|d| {
            d.token_amount += 1;
            d.surcharge += 1;
            d.payers[0].amount += 1;
            d.payouts[0].amount += 1;
        });
        for (i, edit) in edits.iter().enumerate() {
            let mut d = base.data.clone();
            edit(&mut d);
            let r = LedgerRow::seal(d, p.clone()).expect("seal");
            assert_ne!(r.row_hash, base.row_hash, "edit {i}");
        }
    }

    #[test]
    fn private_values_change_the_private_hashes() {
        let base = example_row().expect("row");
        let p = base.private.clone().expect("private");
        let mut q = p.clone();
        q.custom_fields.insert("order".into(), "A-18".into());
        assert_ne!(custom_hash(&q), base.custom_hash);
        assert_eq!(private_hash(&q), base.private_hash);
        let mut q = p.clone();
        q.metrics.insert("queue_us".into(), 121);
        assert_ne!(private_hash(&q), base.private_hash);
        let mut q = p;
        q.salt[0] ^= 1;
        assert_ne!(private_hash(&q), base.private_hash);
        assert_ne!(custom_hash(&q), base.custom_hash);
    }

    #[test]
    fn bounds_are_typed_errors() {
        let base = example_row().expect("row");
        let p = base.private.clone().expect("private");
        let mut q = p.clone();
        q.custom_fields
            .insert("big".into(), "x".repeat(MAX_FIELD_BYTES + 1));
        let e = LedgerRow::seal(base.data.clone(), q).expect_err("too large");
        assert_eq!(e.code(), "field_too_large");
        let mut q = p.clone();
        q.custom_fields
            .insert("ok".into(), "x".repeat(MAX_FIELD_BYTES));
        assert!(LedgerRow::seal(base.data.clone(), q).is_ok());
        let mut q = p.clone();
        q.custom_fields.insert("salt".into(), "x".into());
        let e = LedgerRow::seal(base.data.clone(), q).expect_err("salt");
        assert_eq!(e.code(), "invalid_row");
        let mut d = base.data.clone();
        d.payouts[0].amount += 1;
        let e = LedgerRow::seal(d, p.clone()).expect_err("payouts");
        assert_eq!(e.code(), "payout_mismatch");
        let mut d = base.data.clone();
        d.payers[0].amount -= 1;
        let e = LedgerRow::seal(d, p.clone()).expect_err("payers");
        assert_eq!(e.code(), "payout_mismatch");
        let mut d = base.data.clone();
        d.surcharge = d.token_amount + 1;
        assert_eq!(
            LedgerRow::seal(d, p.clone()).expect_err("surcharge").code(),
            "invalid_row"
        );
        let mut d = base.data.clone();
        d.work_id.clear();
        assert_eq!(
            LedgerRow::seal(d, p.clone()).expect_err("id").code(),
            "invalid_row"
        );
        let mut d = base.data.clone();
        d.rate.token_units = 0;
        assert_eq!(
            LedgerRow::seal(d, p.clone()).expect_err("rate").code(),
            "invalid_row"
        );
        let mut d = base.data;
        d.charities = vec!["c".into(); MAX_ENTRIES + 1];
        assert_eq!(
            LedgerRow::seal(d, p).expect_err("n").code(),
            "field_too_large"
        );
    }

    #[test]
    fn json_round_trip() {
        let r = example_row().expect("row");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["token_amount"], "30000000000000000");
        assert_eq!(v["rate"]["token_units"], "1000000000000000000");
        assert_eq!(v["row_hash"], ROW);
        assert_eq!(v["work_id"], "0190f1e2-0000-7000-8000-000000000001");
        let back: LedgerRow = serde_json::from_value(v).expect("back");
        assert_eq!(back, r);
        let public = serde_json::to_value(r.public()).expect("json");
        assert!(public.get("private").is_none());
    }

    fn hashes() -> impl Strategy<Value = Vec<[u8; 32]>> {
        proptest::collection::vec(any::<[u8; 32]>(), 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn aggregate_is_order_independent(hs in hashes(), seed in any::<u64>()) {
            let mut a = Aggregate::new();
            for h in &hs {
                a.add(h);
            }
            // A permutation drawn from the seed (Fisher-Yates, xorshift).
            let mut shuffled = hs.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let b: Aggregate = shuffled.iter().map(|h| Hash32(*h)).collect::<Vec<_>>().iter().collect();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn adding_twice_cancels(hs in hashes(), extra in any::<[u8; 32]>()) {
            let mut a = Aggregate::new();
            for h in &hs {
                a.add(h);
            }
            let before = a;
            a.add(&extra);
            a.add(&extra);
            prop_assert_eq!(a, before);
        }
    }
}
