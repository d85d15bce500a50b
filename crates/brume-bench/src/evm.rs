//! `brume bench evm-payout`: paying many beneficiaries on a real anvil
//! through the `Settlement` contract's batched `payout`, against the naive
//! alternative: one ERC-20 `transfer` per payout, from the same operator,
//! to as many fresh beneficiaries (so both pay for creating balances).
//!
//! Both go through `EvmChain`, the operator's backend (gas estimated,
//! EIP-1559, receipts waited for), so the seconds compare the same
//! pipeline and the gas is what the chain charged.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use brume_evm::{DeployConfig, EvmChain, EvmConfig, PrivateKeySigner, U256};
use serde_json::json;

use crate::round;

/// Payouts per `payout` transaction: well under a 30M-gas block (a fresh
/// beneficiary costs about 30k gas).
pub const PER_TX: usize = 200;

/// One token, in base units.
const TOKEN: u128 = 1_000_000_000_000_000_000;

/// A beneficiary no one has paid yet: `tag`, then `i`, as an address.
fn fresh(tag: u8, i: usize) -> brume_evm::Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0xb0 | tag;
    bytes[12..].copy_from_slice(&(i as u64).to_be_bytes());
    brume_evm::Address::from(bytes)
}

pub async fn run(
    duration: Duration,
    payouts: u64,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let _ = duration; // the work is fixed by `payouts`, not by time
    let n = usize::try_from(payouts.clamp(1, 100_000)).context("payouts")?;
    let anvil = alloy::node_bindings::Anvil::new()
        .path(brume_evm::find_anvil().map_err(anyhow::Error::msg)?)
        .arg("--gas-limit")
        .arg("30000000")
        .try_spawn()
        .context("start anvil")?;
    let keys: Vec<PrivateKeySigner> = anvil.keys().iter().cloned().map(Into::into).collect();
    let operator = keys.first().context("anvil has no keys")?.clone();
    let url = anvil.endpoint_url();
    let rpc = brume_evm::signing_provider(url.clone(), operator.clone());
    let deployment = brume_evm::deploy(
        &rpc,
        &DeployConfig {
            name: "Brume".into(),
            symbol: "BRM".into(),
            holder: operator.address(),
            supply: U256::from(1_000_000_000 * TOKEN),
            operator: operator.address(),
            unbonding_delay_s: 86_400,
        },
    )
    .await?;
    let mut config = EvmConfig::new(url, deployment);
    config.confirmations = 1;
    config.poll = Duration::from_millis(2);
    let evm = EvmChain::connect(config, operator).await?;
    out(&format!(
        "anvil up, contracts deployed; {n} payouts, {PER_TX} per payout transaction"
    ));

    // Amounts vary so no two transfers are alike.
    let amount = |i: usize| TOKEN / 1_000 + i as u128;
    let total: u128 = (0..n).map(amount).sum();
    evm.transfer(deployment.settlement, total).await?;

    // Batched: the payout account pays PER_TX beneficiaries a transaction.
    let start = Instant::now();
    let (mut gas, mut txs) = (0u64, 0u64);
    let payments: Vec<_> = (0..n).map(|i| (fresh(1, i), amount(i))).collect();
    for (k, chunk) in payments.chunks(PER_TX).enumerate() {
        let anchor = brume_evm::B256::left_padding_from(&(k as u64).to_be_bytes());
        let landed = evm.payout(chunk, anchor).await?;
        gas += landed.gas_used;
        txs += 1;
    }
    let batched_s = start.elapsed().as_secs_f64();
    out(&format!(
        "batched: {txs} txs, {gas} gas ({:.0} per payout), {batched_s:.2} s",
        gas as f64 / n as f64
    ));

    // Naive: one transfer per payout.
    let start = Instant::now();
    let mut naive_gas = 0u64;
    for i in 0..n {
        naive_gas += evm.transfer(fresh(2, i), amount(i)).await?.gas_used;
    }
    let naive_s = start.elapsed().as_secs_f64();
    out(&format!(
        "naive: {n} txs, {naive_gas} gas ({:.0} per payout), {naive_s:.2} s",
        naive_gas as f64 / n as f64
    ));

    // Every beneficiary got its amount, and the payout account is empty.
    let mut balanced = evm.balance_of(deployment.settlement).await? == 0;
    for probe in [0, n / 2, n - 1] {
        balanced &= evm.balance_of(fresh(1, probe)).await? == amount(probe);
        balanced &= evm.balance_of(fresh(2, probe)).await? == amount(probe);
    }
    let paid: u128 = {
        let mut sum = 0u128;
        for k in 0..payments.chunks(PER_TX).len() {
            let anchor = brume_evm::B256::left_padding_from(&(k as u64).to_be_bytes());
            sum += evm
                .paid(anchor)
                .await?
                .iter()
                .map(|t| t.amount)
                .sum::<u128>();
        }
        sum
    };
    balanced &= paid == total;
    out(&format!(
        "balanced: {balanced} (payout account empty, sampled balances, Paid events sum to what was paid)"
    ));

    let per = |g: u64| round(g as f64 / n as f64, 1);
    Ok(json!({
        "payouts": n,
        "per_tx": PER_TX,
        "chain_txs": txs,
        "gas_used": gas,
        "gas_per_payout": per(gas),
        "settle_seconds": round(batched_s, 3),
        "naive_txs": n,
        "naive_gas": naive_gas,
        "naive_gas_per_payout": per(naive_gas),
        "naive_seconds": round(naive_s, 3),
        "gas_ratio": round(gas as f64 / naive_gas.max(1) as f64, 4),
        "tx_ratio": round(txs as f64 / n as f64, 4),
        "seconds_ratio": round(batched_s / naive_s.max(1e-9), 4),
        "balanced": balanced,
    }))
}
