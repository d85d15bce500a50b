//! `brume bench settle [--chain dev|anvil]`: batched settlement of
//! pre-generated ledger rows, against the naive alternative (one transfer
//! per payer part and per payout line of every row), whose cost is
//! measured on a sample of the same chain and extrapolated.
//!
//! - `dev` (the default): the embedded dev chain; 1,000 requesters.
//! - `anvil`: a real anvil with brume's contracts, settled by `EvmChain`
//!   (the operator's backend: gas estimated, EIP-1559, receipts waited
//!   for); 100 requesters (anvil's funded keys). The gas of every
//!   transaction settlement sent is read from its receipt; the naive gas
//!   is measured on a sample of rows settled one transfer at a time
//!   (`collect` for the payer, an ERC-20 `transfer` per payout line).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use brume_chain::{Address, Call, Chain, DevChain, DevConfig};
use brume_identity::Identity;
use brume_ledger::row::{
    ExchangeRate, PayerPart, Payout, PrivateData, RowData, RowUsage, SealedRow,
};
use brume_ledger::store::{LedgerStore, SqliteStore};
use brume_settle::{SettleConfig, Settler};
use serde_json::json;

use crate::round;

/// Payers (requesters) and the beneficiaries they pay.
const REQUESTERS: usize = 1_000;
/// Requesters on anvil: its funded keys (`--accounts`), less the operator.
const ANVIL_REQUESTERS: usize = 100;
/// Rows settled one transfer at a time to measure the naive gas on anvil.
const NAIVE_ROWS: usize = 100;
const PROVIDERS: usize = 1_000;
const DEVELOPERS: usize = 50;
/// Rows appended per store call while generating.
const CHUNK: usize = 5_000;
/// Transfers sent one by one to time the naive alternative.
const NAIVE_SAMPLE: usize = 2_000;

fn addr(id: &Identity) -> String {
    id.address().to_string()
}

/// One row: requester `i % M` pays, provider/developer/operator/charity
/// are paid 70/20/9/1 %.
fn row(
    i: u64,
    requesters: &[String],
    providers: &[String],
    developers: &[String],
    operator: &str,
    charity: &str,
) -> anyhow::Result<SealedRow> {
    let fee: u128 = 1_000_000_000_000 + u128::from(i % 977) * 1_000_000;
    let p = fee * 70 / 100;
    let d = fee * 20 / 100;
    let c = fee / 100;
    let o = fee - p - d - c;
    let requester = &requesters[(i as usize) % requesters.len()];
    let provider = &providers[(i as usize / 3) % providers.len()];
    let developer = &developers[(i as usize) % developers.len()];
    let data = RowData {
        schema_version: brume_ledger::row::SCHEMA_VERSION,
        work_id: format!("settle-{i:09}"),
        timestamp_ms: 1_700_000_000_000 + i,
        requester: requester.clone(),
        end_user: String::new(),
        provider: provider.clone(),
        developer: developer.clone(),
        operator: operator.to_string(),
        charities: vec![charity.to_string()],
        service_digest: "ab".repeat(32),
        tier: "standard".into(),
        usage: RowUsage {
            fuel: 1_000_000,
            wall_us: 1_000,
            peak_memory_bytes: 1 << 20,
            bytes_in: 10,
            bytes_out: 10,
            gpu_flop: 0,
        },
        fee_currency: "EUR".into(),
        fee_micros: 1,
        token_amount: fee,
        surcharge: 0,
        rate: ExchangeRate::per_whole_token(1_000_000),
        payers: vec![PayerPart {
            account: requester.clone(),
            kind: "requester".into(),
            amount: fee,
        }],
        payouts: vec![
            Payout {
                beneficiary: provider.clone(),
                role: "provider".into(),
                amount: p,
            },
            Payout {
                beneficiary: developer.clone(),
                role: "developer".into(),
                amount: d,
            },
            Payout {
                beneficiary: operator.to_string(),
                role: "operator".into(),
                amount: o,
            },
            Payout {
                beneficiary: charity.to_string(),
                role: "charity".into(),
                amount: c,
            },
        ],
        price_multiplier_ppm: brume_ledger::pricing::MULTIPLIER_ONE,
        utilisation_ppm: 0,
    };
    let mut private = PrivateData::default();
    private.salt[..8].copy_from_slice(&i.to_be_bytes());
    Ok(SealedRow::seal(data, private)?)
}

/// The chain a settlement benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Dev,
    Anvil,
}

/// Who pays and who is paid in the generated rows.
struct Population {
    requesters: Arc<Vec<String>>,
    providers: Arc<Vec<String>>,
    developers: Arc<Vec<String>>,
    operator: String,
    charity: String,
}

impl Population {
    fn new(requesters: Vec<String>) -> Population {
        let fresh = |n: usize| (0..n).map(|_| addr(&Identity::random())).collect();
        Population {
            requesters: Arc::new(requesters),
            providers: Arc::new(fresh(PROVIDERS)),
            developers: Arc::new(fresh(DEVELOPERS)),
            operator: addr(&Identity::random()),
            charity: addr(&Identity::random()),
        }
    }

    fn row(&self, i: u64) -> anyhow::Result<SealedRow> {
        row(
            i,
            &self.requesters,
            &self.providers,
            &self.developers,
            &self.operator,
            &self.charity,
        )
    }
}

/// A ledger of `rows` rows in `dir/ledger`, appended in chunks.
async fn generate(
    dir: &std::path::Path,
    pop: &Arc<Population>,
    rows: u64,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<Arc<SqliteStore>> {
    out(&format!(
        "generating {rows} ledger rows ({} requesters, {} beneficiaries)…",
        pop.requesters.len(),
        PROVIDERS + DEVELOPERS + 2
    ));
    let t = Instant::now();
    let store = Arc::new(SqliteStore::open(&dir.join("ledger"))?);
    let mut i = 0u64;
    while i < rows {
        let n = (rows - i).min(CHUNK as u64);
        let pop = pop.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            (i..i + n)
                .map(|k| pop.row(k))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??;
        store.append_sealed(chunk).await?;
        i += n;
    }
    out(&format!(
        "  generated in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(store)
}

/// Opens a settler over `chain` (off the runtime) and runs it once,
/// timed.
async fn settle(
    dir: &std::path::Path,
    store: &Arc<SqliteStore>,
    chain: Arc<dyn brume_chain::Settlement>,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<(brume_settle::Report, f64)> {
    let settler = {
        let (d, rs) = (dir.join("settle"), store.clone());
        tokio::task::spawn_blocking(move || {
            Settler::open(
                &d,
                rs,
                chain,
                brume_settle::addresses_only(),
                SettleConfig::default(),
            )
        })
        .await??
    };
    let t = Instant::now();
    let report = settler.run().await?;
    let settle_s = t.elapsed().as_secs_f64();
    out(&format!(
        "settle: {} rows in {settle_s:.2} s: {} collections + {} payouts = {} chain txs; balanced: {}",
        report.rows,
        report.collections.len(),
        report.payouts.len(),
        report.chain_txs,
        report.balanced
    ));
    out(&format!(
        "  stages: scan {:.0} ms, plan {:.0} ms, collect {:.0} ms, payout {:.0} ms",
        report.timings.scan_ms,
        report.timings.plan_ms,
        report.timings.collect_ms,
        report.timings.payout_ms
    ));
    Ok((report, settle_s))
}

/// The figures both backends report.
fn figures(report: &brume_settle::Report, settle_s: f64) -> serde_json::Value {
    json!({
        "bench": "settle",
        "rows": report.rows,
        "settle_seconds": round(settle_s, 3),
        "chain_txs": report.chain_txs,
        "requesters": report.collections.len(),
        "beneficiaries": report.payouts.len(),
        "balanced": report.balanced,
        "scan_ms": round(report.timings.scan_ms, 1),
        "plan_ms": round(report.timings.plan_ms, 1),
        "collect_ms": round(report.timings.collect_ms, 1),
        "payout_ms": round(report.timings.payout_ms, 1),
    })
}

pub async fn run(
    duration: Duration,
    rows: u64,
    backend: Backend,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let _ = duration; // the work is fixed by `rows`, not by time
    match backend {
        Backend::Dev => run_dev(rows, out).await,
        Backend::Anvil => run_anvil(rows, out).await,
    }
}

async fn run_dev(rows: u64, out: &mut dyn FnMut(&str)) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let requesters: Vec<Identity> = (0..REQUESTERS).map(|_| Identity::random()).collect();
    let payout = Arc::new(Identity::random());
    let naive_payer = Identity::random();

    // The chain: every requester funded, and its escrow approved.
    let funds = u128::MAX / 4 / (REQUESTERS as u128 + 1);
    let mut genesis: Vec<(Address, u128)> =
        requesters.iter().map(|r| (r.address(), funds)).collect();
    genesis.push((naive_payer.address(), funds));
    let chain_dir = dir.path().join("chain");
    let chain: Arc<dyn Chain> = {
        let config = DevConfig::devnet(genesis);
        let d = chain_dir.clone();
        Arc::new(tokio::task::spawn_blocking(move || DevChain::open(&d, &config)).await??)
    };
    for r in &requesters {
        chain
            .approve(r, payout.address(), funds)
            .await
            .context("approve the escrow")?;
    }
    let pop = Arc::new(Population::new(requesters.iter().map(addr).collect()));
    let store = generate(dir.path(), &pop, rows, out).await?;
    let settlement = Arc::new(brume_chain::DevSettlement::new(
        chain.clone(),
        payout.clone(),
        payout.address(),
    ));
    let (report, settle_s) = settle(dir.path(), &store, settlement, out).await?;

    // Naive baseline: one transfer per payer part and payout line of every
    // row, timed on a sample of one-by-one transfers on the same chain.
    let t = Instant::now();
    for k in 0..NAIVE_SAMPLE {
        let to = requesters[k % REQUESTERS].address();
        chain
            .send(
                &naive_payer,
                vec![Call::Transfer {
                    to,
                    amount: 1,
                    anchor: [0u8; 32].into(),
                }],
            )
            .await?
            .pop()
            .context("a result")??;
    }
    let per_tx = t.elapsed().as_secs_f64() / NAIVE_SAMPLE as f64;
    let naive_txs = report.rows * 5; // 1 payer + 4 payouts per row
    let naive_s = per_tx * naive_txs as f64;
    out(&format!(
        "naive (one transfer per payer part and payout line): {naive_txs} chain txs ≈ {naive_s:.0} s \
         (at {:.3} ms/tx, measured on {NAIVE_SAMPLE})",
        per_tx * 1e3
    ));
    let mut v = figures(&report, settle_s);
    v["chain"] = json!("dev");
    v["baseline_naive_chain_txs"] = json!(naive_txs);
    v["baseline_naive_seconds_estimate"] = json!(round(naive_s, 1));
    v["ratio_txs"] = json!(round(report.chain_txs as f64 / naive_txs.max(1) as f64, 6));
    Ok(v)
}

async fn run_anvil(rows: u64, out: &mut dyn FnMut(&str)) -> anyhow::Result<serde_json::Value> {
    use alloy::providers::Provider as _;
    use brume_evm::{DeployConfig, EvmChain, EvmConfig, EvmWallet, PrivateKeySigner, U256};
    let dir = tempfile::tempdir()?;
    let anvil = alloy::node_bindings::Anvil::new()
        .path(brume_evm::find_anvil().map_err(anyhow::Error::msg)?)
        .arg("--accounts")
        .arg((ANVIL_REQUESTERS + 1).to_string())
        .arg("--gas-limit")
        .arg("30000000")
        .try_spawn()
        .context("start anvil")?;
    let keys: Vec<PrivateKeySigner> = anvil.keys().iter().cloned().map(Into::into).collect();
    anyhow::ensure!(
        keys.len() > ANVIL_REQUESTERS,
        "anvil funded {} keys",
        keys.len()
    );
    let operator = keys[0].clone();
    let url = anvil.endpoint_url();
    let token = 1_000_000_000_000_000_000u128;
    let deployment = brume_evm::deploy(
        &brume_evm::signing_provider(url.clone(), operator.clone()),
        &DeployConfig {
            name: "Brume".into(),
            symbol: "BRM".into(),
            holder: operator.address(),
            supply: U256::from(1_000_000_000 * token),
            operator: operator.address(),
            unbonding_delay_s: 86_400,
        },
    )
    .await?;
    let mut config = EvmConfig::new(url.clone(), deployment);
    config.confirmations = 1;
    config.poll = Duration::from_millis(2);
    let evm = Arc::new(EvmChain::connect(config, operator).await?);

    // Requesters: anvil's funded keys, each given tokens and allowing the
    // settlement contract.
    let funds = 1_000_000 * token;
    let requesters = &keys[1..=ANVIL_REQUESTERS];
    for k in requesters {
        evm.transfer(k.address(), funds).await?;
        EvmWallet::new(url.clone(), k.clone(), deployment)
            .approve(funds)
            .await?;
    }
    out(&format!(
        "anvil up, contracts deployed, {ANVIL_REQUESTERS} requesters funded and approved"
    ));
    let pop = Arc::new(Population::new(
        requesters.iter().map(|k| k.address().to_string()).collect(),
    ));
    let store = generate(dir.path(), &pop, rows, out).await?;
    let (report, settle_s) = settle(dir.path(), &store, evm.clone(), out).await?;

    // The gas of every transaction settlement sent, from its receipt.
    let rpc = evm.rpc();
    let mut hashes: Vec<String> = report
        .collections
        .iter()
        .chain(&report.payouts)
        .filter_map(|l| l.tx_hash.clone())
        .collect();
    hashes.sort();
    hashes.dedup();
    let mut gas_used = 0u64;
    for h in &hashes {
        let receipt = rpc
            .get_transaction_receipt(h.parse()?)
            .await?
            .with_context(|| format!("no receipt for {h}"))?;
        gas_used += receipt.gas_used;
    }
    let payouts = report.payouts.len() as u64;
    // Balanced: the settler's own check, the contract emptied (no
    // minimum payout), and a beneficiary's balance is what its rows say.
    let empty = evm.balance_of(deployment.settlement).await? == 0;
    let mut owed_charity = 0u128;
    for i in 0..rows {
        let r = pop.row(i)?;
        owed_charity += r
            .row()
            .data
            .payouts
            .iter()
            .filter(|p| p.beneficiary == pop.charity)
            .map(|p| p.amount)
            .sum::<u128>();
    }
    let charity_ok = evm.balance_of(pop.charity.parse()?).await? == owed_charity;
    let balanced = report.balanced && empty && charity_ok;
    out(&format!(
        "gas: {gas_used} over {} txs ({:.0} per payout line settled)",
        hashes.len(),
        gas_used as f64 / (rows * 5).max(1) as f64
    ));

    // Naive: the first NAIVE_ROWS rows again, one ERC-20 transfer per payer
    // part (signed by the payer) and per payout line (by the operator).
    let sample = NAIVE_ROWS.min(rows as usize).max(1);
    let mut sample_gas = 0u64;
    let mut sample_txs = 0u64;
    // Seconds are timed on the operator's transfers only (the same
    // pipeline as settlement's); the payers' go through a plain provider.
    let mut operator_s = 0.0;
    let mut operator_txs = 0u64;
    for i in 0..sample as u64 {
        let r = pop.row(i)?;
        let d = &r.row().data;
        for p in &d.payers {
            // The payer's own ERC-20 transfer to the operator.
            let payer: Address = p.account.parse()?;
            let key = requesters
                .iter()
                .find(|k| k.address() == payer)
                .context("a requester's key")?;
            let token = brume_evm::BrumeToken::new(
                deployment.token,
                brume_evm::signing_provider(url.clone(), key.clone()),
            );
            sample_gas += token
                .transfer(evm.operator(), U256::from(p.amount))
                .send()
                .await?
                .get_receipt()
                .await?
                .gas_used;
            sample_txs += 1;
        }
        let t = Instant::now();
        for p in &d.payouts {
            sample_gas += evm
                .transfer(p.beneficiary.parse()?, p.amount)
                .await?
                .gas_used;
            sample_txs += 1;
            operator_txs += 1;
        }
        operator_s += t.elapsed().as_secs_f64();
    }
    let scale = rows as f64 / sample as f64;
    let naive_gas = (sample_gas as f64 * scale).round() as u64;
    let naive_txs = (sample_txs as f64 * scale).round() as u64;
    let naive_s = operator_s / operator_txs.max(1) as f64 * naive_txs as f64;
    out(&format!(
        "naive (one transfer per payer part and payout line): {naive_txs} txs, ≈{naive_gas} gas, ≈{naive_s:.0} s \
         (measured on {sample} rows: {sample_txs} txs, {sample_gas} gas)"
    ));
    let mut v = figures(&report, settle_s);
    v["chain"] = json!("anvil");
    v["balanced"] = json!(balanced);
    v["gas_used"] = json!(gas_used);
    v["gas_per_payout"] = json!(round(gas_used as f64 / payouts.max(1) as f64, 1));
    v["gas_per_row"] = json!(round(gas_used as f64 / rows.max(1) as f64, 1));
    v["naive_gas"] = json!(naive_gas);
    v["naive_chain_txs"] = json!(naive_txs);
    v["naive_seconds_estimate"] = json!(round(naive_s, 1));
    v["gas_ratio"] = json!(round(gas_used as f64 / naive_gas.max(1) as f64, 6));
    v["ratio_txs"] = json!(round(report.chain_txs as f64 / naive_txs.max(1) as f64, 6));
    Ok(v)
}
