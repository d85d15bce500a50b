//! The ledger: one tamper-evident row per accepted work unit, the pricing
//! engine that turns usage into a fee, the deals that decide who pays it,
//! and the payout split that decides who receives it.
//!
//! - [`row`]: the column model, the canonical encoding and the row hash.
//! - [`store`]: the store trait and its SQLite implementation.
//! - [`audit`]: re-verifies rows from their public data.
//! - [`pricing`]: resource-equivalent pricing, integer arithmetic only.
//! - [`deal`]: who pays what (per-use, capped, subsidised, subscription).
//! - [`split`]: who receives what, summing exactly to the fee.
//! - [`penalty`]: Kumo's surcharges and discounts.

pub mod audit;
pub mod curve;
pub mod deal;
pub mod penalty;
pub mod pricing;
pub mod row;
pub mod split;
pub mod store;
