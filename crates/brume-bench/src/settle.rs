//! `brume bench settle`: batched settlement of pre-generated ledger rows on
//! the embedded dev chain, against the naive alternative (one transfer per
//! payer part and per payout line of every row), whose cost is measured on
//! a sample of the same chain and extrapolated.

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
    };
    let mut private = PrivateData::default();
    private.salt[..8].copy_from_slice(&i.to_be_bytes());
    Ok(SealedRow::seal(data, private)?)
}

pub async fn run(
    duration: Duration,
    rows: u64,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<serde_json::Value> {
    let _ = duration; // the work is fixed by `rows`, not by time
    let dir = tempfile::tempdir()?;
    let requesters: Vec<Identity> = (0..REQUESTERS).map(|_| Identity::random()).collect();
    let providers: Vec<String> = (0..PROVIDERS).map(|_| addr(&Identity::random())).collect();
    let developers: Vec<String> = (0..DEVELOPERS).map(|_| addr(&Identity::random())).collect();
    let operator = addr(&Identity::random());
    let charity = addr(&Identity::random());
    let payout = Arc::new(Identity::random());
    let naive_payer = Identity::random();
    let req_accounts: Vec<String> = requesters.iter().map(addr).collect();

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

    // The ledger: `rows` sealed rows, appended in chunks.
    out(&format!(
        "generating {rows} ledger rows ({REQUESTERS} requesters, {} beneficiaries)…",
        PROVIDERS + DEVELOPERS + 2
    ));
    let t = Instant::now();
    let store = Arc::new(SqliteStore::open(&dir.path().join("ledger"))?);
    let req_accounts = Arc::new(req_accounts);
    let (providers, developers) = (Arc::new(providers), Arc::new(developers));
    let mut i = 0u64;
    while i < rows {
        let n = (rows - i).min(CHUNK as u64);
        let (ra, pa, da, op, ch) = (
            req_accounts.clone(),
            providers.clone(),
            developers.clone(),
            operator.clone(),
            charity.clone(),
        );
        let chunk = tokio::task::spawn_blocking(move || {
            (i..i + n)
                .map(|k| row(k, &ra, &pa, &da, &op, &ch))
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

    // Settle.
    let settler = {
        let (d, rs, ch, po) = (
            dir.path().join("settle"),
            store.clone(),
            chain.clone(),
            payout.clone(),
        );
        tokio::task::spawn_blocking(move || {
            Settler::open(
                &d,
                rs,
                ch,
                po,
                brume_settle::addresses_only(),
                SettleConfig::default(),
            )
        })
        .await??
    };
    let t = Instant::now();
    let report = settler.run().await?;
    let settle_s = t.elapsed().as_secs_f64();
    let beneficiaries = report.payouts.len();
    out(&format!(
        "settle: {} rows in {settle_s:.2} s: {} collections + {} payouts = {} chain txs; balanced: {}",
        report.rows,
        report.collections.len(),
        beneficiaries,
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
    Ok(json!({
        "bench": "settle",
        "rows": report.rows,
        "settle_seconds": round(settle_s, 3),
        "chain_txs": report.chain_txs,
        "requesters": report.collections.len(),
        "beneficiaries": beneficiaries,
        "balanced": report.balanced,
        "scan_ms": round(report.timings.scan_ms, 1),
        "plan_ms": round(report.timings.plan_ms, 1),
        "collect_ms": round(report.timings.collect_ms, 1),
        "payout_ms": round(report.timings.payout_ms, 1),
        "baseline_naive_chain_txs": naive_txs,
        "baseline_naive_seconds_estimate": round(naive_s, 1),
        "ratio_txs": round(report.chain_txs as f64 / naive_txs.max(1) as f64, 6),
    }))
}
