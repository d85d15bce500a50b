//! Batched settlement inside the broker (`brume-settle`): the periodic
//! loop, `POST /v1/settlement/run`, `GET /v1/settlement`, and what
//! `/v1/status` reports of it.
//!
//! The broker's key is the payout account (the spender of every escrow
//! allowance); the operator's payouts go to a separate account
//! (`operator.key` in the data dir), so that after a run the payout account
//! holds exactly what is carried over. Each run's collections are passed on
//! to the escrow ([`crate::escrow::Escrow::collected`]), so that what a
//! requester has paid no longer counts against its allowance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brume_api::error::{ApiError, ErrorCode};
use brume_api::rest::SettlementHealth;
use brume_settle::{Report, SettleConfig, SettleError, Settler};

use crate::Shared;

/// `[broker.settlement]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// Seconds between automatic runs; 0 runs only on request
    /// (`POST /v1/settlement/run`, `brume settle`). Default: daily.
    pub period_s: u64,
    /// Payouts below this (token base units) are carried over.
    #[serde(with = "crate::chain::amount")]
    pub min_payout: u128,
    /// How long after its end a `confirm: true` job's payment waits for
    /// its requester's confirmation before it is released anyway, in
    /// milliseconds. Default: a day.
    pub confirm_window_ms: u64,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            period_s: 86_400,
            min_payout: 0,
            confirm_window_ms: 86_400_000,
        }
    }
}

/// The settler and what `/v1/status` shows of it.
#[derive(Debug)]
pub(crate) struct Settlement {
    settler: Settler,
    health: parking_lot::Mutex<SettlementHealth>,
}

impl Settlement {
    /// The settler (its journal, audit and reports).
    pub(crate) fn settler(&self) -> &Settler {
        &self.settler
    }

    /// Opens the journal at `location`: a PostgreSQL URL (the ledger's
    /// database: the journal's tables are in the schema `brume_settle`), or
    /// else a directory (`data/settle`, SQLite).
    pub(crate) async fn open(
        location: String,
        ledger: Arc<dyn brume_ledger::store::LedgerStore>,
        chain: Arc<dyn brume_chain::Settlement>,
        gate: Arc<dyn brume_settle::Gate>,
        config: &SettlementConfig,
    ) -> Result<Settlement, brume_settle::SettleError> {
        let settle_config = SettleConfig {
            min_payout: config.min_payout,
            ..SettleConfig::default()
        };
        let settler = Settler::open_at(
            &location,
            Arc::new(ledger),
            chain,
            brume_settle::addresses_only(),
            settle_config,
        )
        .await?
        .with_gate(gate);
        let health = SettlementHealth {
            payout_account: settler.payout_address().to_string(),
            period_s: config.period_s,
            balanced: true,
            carry_over: "0".into(),
            held: "0".into(),
            ..SettlementHealth::default()
        };
        Ok(Settlement {
            settler,
            health: parking_lot::Mutex::new(health),
        })
    }

    pub(crate) fn health(&self) -> SettlementHealth {
        self.health.lock().clone()
    }

    fn record(&self, at_ms: Option<u64>, report: Option<&Report>, error: Option<ApiError>) {
        let mut h = self.health.lock();
        if at_ms.is_some() {
            h.last_run_ms = at_ms;
        }
        h.last_error = error;
        if let Some(r) = report {
            if r.run != 0 {
                h.last_run = r.run;
            }
            h.carry_over = r.carry_over.to_string();
            h.held = r.held.to_string();
            h.rows_deferred = r.rows_deferred;
            h.flagged.clone_from(&r.flagged);
            h.balanced = r.balanced;
        }
    }
}

/// A failed run as `/v1/status` and `/v1/settlement` report it.
pub(crate) fn fail(e: &SettleError) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("settlement: {e} ({})", e.code()),
    )
}

/// One run now; the escrow learns what was collected.
pub(crate) async fn run_once(shared: &Arc<Shared>) -> Result<Report, SettleError> {
    let s = &shared.settlement;
    let before = s.settler.collected_by_payer().await?;
    let result = s.settler.run().await;
    // Whatever landed (even in a run that then failed) is collected.
    if let Ok(after) = s.settler.collected_by_payer().await {
        credit(shared, &before, &after);
    }
    let at_ms = crate::now_ms();
    match result {
        Ok(report) => {
            if !report.collections.is_empty() || !report.payouts.is_empty() {
                tracing::info!(
                    run = report.run,
                    rows = report.rows_settled,
                    chain_txs = report.chain_txs,
                    balanced = report.balanced,
                    "settled"
                );
            }
            s.record(Some(at_ms), Some(&report), None);
            Ok(report)
        }
        Err(e) => {
            tracing::error!(code = e.code(), "settlement run failed: {e}");
            s.record(Some(at_ms), None, Some(fail(&e)));
            Err(e)
        }
    }
}

fn credit(shared: &Shared, before: &HashMap<String, u128>, after: &HashMap<String, u128>) {
    for (account, total) in after {
        let was = before.get(account).copied().unwrap_or(0);
        if *total > was {
            shared.ledger.escrow().collected(account, total - was);
        }
    }
}

/// At start-up: what settlement already collected no longer counts
/// against the escrow; the last run's figures are shown; an interrupted
/// run is resumed at once.
pub(crate) async fn start(shared: &Arc<Shared>) {
    let s = &shared.settlement;
    match s.settler.collected_by_payer().await {
        Ok(done) => credit(shared, &HashMap::new(), &done),
        Err(e) => tracing::error!(code = e.code(), "read what settlement collected: {e}"),
    }
    if let Ok(Some(last)) = s.settler.last_report().await {
        s.record(None, Some(&last), None);
    }
    if matches!(s.settler.interrupted().await, Ok(true)) {
        let shared = shared.clone();
        shared.tasks.clone().spawn(async move {
            let _ = run_once(&shared).await;
        });
    }
}

/// Runs settlement every `period_s` (first after one period), and once at
/// start-up if a run was interrupted.
pub(crate) async fn settle_loop(shared: Arc<Shared>) {
    let period = shared.config.settlement.period_s;
    let stop = shared.shutdown.clone();
    if period == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the immediate first tick
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let _ = run_once(&shared).await;
    }
}
