//! Billing: one ledger row per accepted work unit.
//!
//! A unit of work is *accepted* when a provider reports a `Done` outcome for
//! it: an exit of any code, an HTTP response, or a guest fault (trap,
//! `out_of_fuel`, timeout, …). Resources were consumed, so exactly one row
//! is written, whatever the number of attempts it took. Lost attempts
//! (provider gone, refusals) and work that never ran write none; so does a
//! cancelled job, queued or running (a provider reports no usage after a
//! cancel: a known gap, see ARCHITECTURE.md).
//!
//! The lifecycle (`lifecycle.rs`) bills a unit when it ends with a `Done`:
//! it builds the row ([`Ledger::build`]: pricing and split, no I/O, no
//! hashing), then:
//!
//! - **job**: seals the row (its Keccak hashes), appends it and waits until
//!   it is durable, then records and announces the job's final state;
//! - **sync invocation**: hands the response (with its [`Cost`]) to the
//!   waiting handler at once and queues the unsealed row to [`batcher`], one
//!   task that seals and appends whatever queued while its previous append
//!   was committing (one store call, one savepoint, for many rows), so the
//!   hot path neither hashes nor waits for an fsync. A crash in between
//!   loses the queued rows.
//!
//! A row that cannot be built or stored is logged (`ledger row …`); the
//! work's result is delivered all the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use brume_ledger::deal::{
    Admission, CostStructure, Deal, DealError, Payer, Request as DealRequest,
};
use brume_ledger::penalty::{Declared, Measured, PenaltyConfig, PenaltyError, SpeedSample};
use brume_ledger::pricing::{
    ExchangeRate, PriceTable, Pricer, PricingConfig, PricingError, ResourceUsage, TierId,
    TierPrice, TierSpec,
};
use brume_ledger::row::{
    self, MAX_ENTRIES, MAX_FIELD_BYTES, MAX_ID_BYTES, MAX_NAME_BYTES, PayerPart, Payout,
    PrivateData, RowData, RowUsage, SealedRow,
};
use brume_ledger::split::{
    self, Account, Beneficiary, Charity, PPM, Parties, PayoutShares, Role, SplitError,
};
use brume_ledger::store::{LedgerError, LedgerStore};
use rand::Rng as _;
use tokio::sync::{mpsc, watch};

use crate::work::Work;
use brume_api::wire;
mod config;
mod rows;
mod subscription;
#[cfg(test)]
mod tests;

pub(crate) use rows::{LeaseInterval, Ran};
pub(crate) use subscription::subscriptions;

pub(crate) use crate::work::{Cost, TierNeeds};
use config::Tiers;
pub use config::{CharityConfig, DealConfig, DealStructure, LedgerConfig, TierConfig};

/// The response header with what a sync call was billed: the fee in token
/// base units (10^-18 token), a decimal integer.
pub const COST_HEADER: &str = "x-brume-cost";

/// The request header naming the service tier (optional; the response
/// carries the tier the call ran at).
pub const TIER_HEADER: &str = "x-brume-tier";

/// The request header with a sync call's price cap, in micro-units of the
/// fee currency (optional).
pub const PRICE_CAP_HEADER: &str = "x-brume-price-cap";

/// The request header naming the requester's own end user (optional).
pub const END_USER_HEADER: &str = "x-brume-end-user";
/// Request headers `x-brume-column-<name>: <value>`: the requester's own
/// columns for the call's row.
pub const COLUMN_HEADER_PREFIX: &str = "x-brume-column-";

/// Why a ledger row could not be built or the ledger opened.
#[derive(Debug, thiserror::Error)]
pub enum BillError {
    #[error("open: {0}")]
    Open(String),
    #[error("pricing: {0}")]
    Pricing(#[from] PricingError),
    #[error("split: {0}")]
    Split(#[from] SplitError),
    #[error("deal: {0}")]
    Deal(#[from] DealError),
    #[error("penalty: {0}")]
    Penalty(#[from] PenaltyError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    #[error("{0} does not fit in 64 bits")]
    Overflow(&'static str),
}

impl BillError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BillError::Open(_) => "ledger_open",
            BillError::Pricing(_) => "pricing",
            BillError::Split(_) => "split",
            BillError::Deal(_) => "deal",
            BillError::Penalty(_) => "penalty",
            BillError::Ledger(e) => e.code(),
            BillError::Overflow(_) => "overflow",
        }
    }
}

/// Who a row names, what it records privately, and the terms the work was
/// admitted under: fixed when the work is submitted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Billing {
    /// The name of the requester's API key.
    pub requester: String,
    pub end_user: String,
    /// The name of the API key that published the service ("" if unknown).
    pub developer: String,
    pub request_line: String,
    pub request_headers: Vec<(String, String)>,
    /// The tier and price cap ([`Ledger::admit`]); `None` (work admitted
    /// before deals existed) is the default tier, uncapped.
    pub admission: Option<Admission>,
    /// The job's declared shape, for the overrun surcharge.
    pub declared: Declared,
    /// The requester's own columns (the row's `custom_fields`), checked.
    pub columns: BTreeMap<String, String>,
    /// The escrow reservation of the work's maximum cost, released when its
    /// completion is delivered (`Work::deliver`).
    pub hold: Option<Arc<crate::escrow::Hold>>,
    /// The requester is only a key: its reservation counts against its
    /// trust level (`trust::AnonymousLimits`).
    pub anonymous: bool,
}

impl Billing {
    /// Headers as the row records them: without `authorization`, at most
    /// [`MAX_ENTRIES`], oversized ones left out.
    pub fn headers<'a>(
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Vec<(String, String)> {
        headers
            .filter(|(n, v)| {
                !n.eq_ignore_ascii_case("authorization")
                    && n.len() <= MAX_NAME_BYTES
                    && v.len() <= MAX_FIELD_BYTES
            })
            .take(MAX_ENTRIES)
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }
}

/// What [`Ledger::admit`] refuses.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmitError {
    #[error("{0}")]
    Invalid(String),
    /// The account's deal forbids what the request asks (a price cap,
    /// another tier than its subscription's).
    #[error("{0}")]
    NotInDeal(String),
    #[error("{0}")]
    OverCap(DealError),
}

/// Per-service usage seen so far: the estimate a capped request is
/// admitted on.
#[derive(Debug, Default, Clone, Copy)]
struct Observed {
    n: u64,
    fuel: u128,
    bytes_in: u128,
    bytes_out: u128,
    /// Token base units billed.
    tokens: u128,
}

impl Observed {
    fn mean(&self) -> ResourceUsage {
        let n = u128::from(self.n.max(1));
        let m = |v: u128| u64::try_from(v / n).unwrap_or(u64::MAX);
        ResourceUsage {
            fuel: m(self.fuel),
            gpu_flop: 0,
            bytes_in: m(self.bytes_in),
            bytes_out: m(self.bytes_out),
        }
    }
}

/// The broker's ledger: the store, the pricer and the shares.
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    pricer: Pricer,
    /// Tier names, by `TierId` (the index in the config).
    tier_names: Vec<String>,
    tier_needs: Vec<TierNeeds>,
    /// Each tier's dynamic price curve, if it has one.
    curves: Vec<Option<brume_ledger::curve::BezierCurve>>,
    default_tier: TierId,
    deals: HashMap<String, Deal>,
    penalties: PenaltyConfig,
    currency: String,
    shares: PayoutShares,
    /// The shares when the developer is unknown: theirs goes to the operator.
    no_developer: PayoutShares,
    operator: String,
    operator_charity: Option<Charity>,
    /// Usage per service digest, for cost estimates.
    observed: parking_lot::Mutex<HashMap<String, Observed>>,
    /// What each account owes and has reserved (see `escrow.rs`).
    escrow: Arc<crate::escrow::Escrow>,
    fiat_micros_per_token: u64,
    /// Rows started (queued or being appended) and not yet finished.
    pending: watch::Sender<u64>,
    /// Sync calls' rows, to [`batcher`] (`None` once closed at shutdown).
    queue: parking_lot::Mutex<Option<mpsc::UnboundedSender<Unsealed>>>,
}

/// A row's content before its hashes are computed. Sync calls hand these
/// to [`batcher`], so the Keccak work happens off the response path.
pub(crate) type Unsealed = (RowData, PrivateData);

/// The most rows [`batcher`] appends in one call.
const MAX_BATCH: usize = 1024;

/// Appends the sync calls' rows: everything queued, in one call, while the
/// previous call commits. Runs for the life of the broker.
pub(crate) async fn batcher(ledger: Arc<Ledger>, mut rx: mpsc::UnboundedReceiver<Unsealed>) {
    let mut rows = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut rows, MAX_BATCH).await > 0 {
        // Woken by a sync call's completion, this task would run before
        // that call's response is written (tokio polls the task woken last
        // first): let the response go out, then take what else queued.
        tokio::task::yield_now().await;
        while rows.len() < MAX_BATCH
            && let Ok(row) = rx.try_recv()
        {
            rows.push(row);
        }
        let n = rows.len() as u64;
        let first = rows[0].0.work_id.clone();
        let batch: Vec<SealedRow> = rows
            .drain(..)
            .filter_map(|(data, private)| {
                let id = data.work_id.clone();
                SealedRow::seal(data, private)
                    .map_err(|e| tracing::error!(work = %id, code = e.code(), "ledger row not sealed: {e}"))
                    .ok()
            })
            .collect();
        if !batch.is_empty()
            && let Err(e) = ledger.store.append_sealed(batch).await
        {
            tracing::error!(rows = n, first = %first, code = e.code(), "ledger rows not stored: {e}");
        }
        ledger.pending.send_modify(|p| *p = p.saturating_sub(n));
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("currency", &self.currency)
            .finish_non_exhaustive()
    }
}

/// A row being appended: counted as pending until dropped, however the
/// append ends ([`Ledger::settled`] waits for none to be left).
#[derive(Debug)]
pub(crate) struct Pending(watch::Sender<u64>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Ledger {
    /// Opens `dir/ledger.db` (blocking: call it off the runtime). Spawn
    /// [`batcher`] with the receiver.
    pub(crate) fn open(
        store: Arc<dyn LedgerStore>,
        config: &LedgerConfig,
        operator: String,
    ) -> Result<(Ledger, mpsc::UnboundedReceiver<Unsealed>), BillError> {
        let shares = PayoutShares::new(config.contributor_ppm, config.developer_ppm)?;
        let no_developer = PayoutShares::new(config.contributor_ppm, 0)?;
        let Tiers {
            table,
            names: tier_names,
            needs: tier_needs,
            curves,
            default: default_tier,
        } = config.tiers()?;
        let deals = config.deals(&tier_names, default_tier)?;
        config
            .penalties
            .slow_provider
            .validate()
            .map_err(|e| BillError::Open(format!("penalties: {e}")))?;
        let operator_charity = config.operator_charity()?;
        let pricer = Pricer::new(
            PricingConfig::default(),
            table,
            ExchangeRate {
                fiat_micros_per_token: config.fiat_micros_per_token,
            },
        )?;
        let (queue, rx) = mpsc::unbounded_channel();
        let ledger = Ledger {
            store,
            pricer,
            tier_names,
            tier_needs,
            curves,
            default_tier,
            deals,
            penalties: config.penalties,
            currency: config.currency.clone(),
            shares,
            no_developer,
            operator,
            operator_charity,
            observed: parking_lot::Mutex::new(HashMap::new()),
            escrow: Arc::new(crate::escrow::Escrow::default()),
            fiat_micros_per_token: config.fiat_micros_per_token,
            pending: watch::channel(0).0,
            queue: parking_lot::Mutex::new(Some(queue)),
        };
        Ok((ledger, rx))
    }

    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    /// The escrow book (settlement calls `collected` on it).
    pub fn escrow(&self) -> &Arc<crate::escrow::Escrow> {
        &self.escrow
    }

    /// Starts the escrow book from the ledger: each payer account's sum of
    /// charges. TODO(settlement): subtract what settlement has collected
    /// (the settle crate's "uncollected per account" hook) instead of
    /// counting every row as outstanding.
    pub(crate) async fn load_escrow(&mut self) -> Result<(), BillError> {
        use brume_ledger::store::{ListQuery, RowFilter};
        let mut owed: HashMap<String, u128> = HashMap::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list(ListQuery {
                    filter: RowFilter::default(),
                    cursor,
                    limit: Some(brume_ledger::store::MAX_PAGE),
                    private: false,
                })
                .await?;
            for row in &page.rows {
                for p in &row.data.payers {
                    let e = owed.entry(p.account.clone()).or_default();
                    *e = e.saturating_add(p.amount);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        self.escrow = Arc::new(crate::escrow::Escrow::load(owed));
        Ok(())
    }

    /// The most a unit of work admitted as `admission` with `limits` may
    /// cost any one payer, in token base units: the fee, at the admitted
    /// tier and today's price, of everything its limits allow (all its fuel,
    /// its whole input and output), plus the overrun surcharge for its
    /// whole deadline and memory against its declared shape; at most a
    /// capped request's cap. Its row is billed from usage clamped to the
    /// same limits ([`Ledger::row`]), and prices only fall day by day, so
    /// its row never costs more.
    pub(crate) fn max_cost(
        &self,
        admission: &Admission,
        limits: &brume_api::Limits,
        declared: &Declared,
        gpus: u32,
    ) -> Result<u128, BillError> {
        let wall_us = limits.timeout_ms.saturating_mul(1000);
        let worst = brume_api::Usage {
            fuel: limits.fuel,
            peak_memory_bytes: limits.memory_bytes,
            wall_us,
            bytes_in: limits.max_input_bytes,
            bytes_out: limits.max_output_bytes,
            gpu_us: wall_us.saturating_mul(u64::from(gpus)),
        };
        let billing = Billing {
            declared: *declared,
            ..Billing::default()
        };
        let gpu = rows::gpu_flop(worst.gpu_us, wire::MAX_GPU_MILLI_TFLOPS);
        let (fee, _) = self.price(&billing, admission, &worst, gpu, crate::now_ms())?;
        let most = fee.token_amount;
        Ok(match admission.cap_fiat_micros {
            Some(cap) => {
                let per_token = u128::from(self.fiat_micros_per_token.max(1));
                most.min(
                    cap.saturating_mul(1_000_000_000_000_000_000)
                        .div_ceil(per_token),
                )
            }
            None => most,
        })
    }

    /// The account whose allowance backs `requester`'s work: the subsidy of
    /// a full-subsidy deal, none for a subscription (settled apart), else
    /// the requester.
    pub(crate) fn escrow_account(&self, requester: &str) -> Option<String> {
        match &self.deal(requester).structure {
            CostStructure::FullSubsidy { subsidy } => Some(subsidy.0.clone()),
            CostStructure::Subscription { .. } => None,
            _ => Some(requester.to_string()),
        }
    }

    /// Waits until every append started so far has finished.
    pub(crate) async fn settled(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The operator's account.
    pub(crate) fn operator(&self) -> &str {
        &self.operator
    }

    /// The deal of `account`: its configured one, else per-use at the
    /// broker's default tier.
    fn deal(&self, account: &str) -> Deal {
        self.deals.get(account).cloned().unwrap_or_else(|| Deal {
            account: Account::new(clip(account, MAX_ID_BYTES)),
            default_tier: self.default_tier,
            structure: CostStructure::PerUse,
        })
    }

    /// The tier named `name`.
    fn tier_id(&self, name: &str) -> Option<TierId> {
        self.tier_names
            .iter()
            .position(|n| n == name)
            .map(|i| TierId(i as u16))
    }

    fn tier_name(&self, id: TierId) -> &str {
        self.tier_names
            .get(usize::from(id.0))
            .map_or("", String::as_str)
    }

    /// What providers must offer to run work admitted as `admission`.
    pub(crate) fn needs(&self, admission: Option<&Admission>) -> TierNeeds {
        let id = admission.map_or(self.default_tier, |a| a.tier);
        self.tier_needs
            .get(usize::from(id.0))
            .copied()
            .unwrap_or_default()
    }

    /// Chooses the tier a request of `account` runs at, from the tier it
    /// names and its price cap (fiat micro-units), under the account's deal.
    /// A capped request under a downgrade deal is estimated from the mean
    /// usage of the service's earlier runs (none yet: zero, and the operator
    /// absorbs what the cap doesn't cover).
    /// Sets the price in force on `admission`: its tier's curve at the
    /// utilisation `utilisation` reads (called only for a tier with a
    /// curve, so a fixed-price tier costs no sample).
    /// The price in force on `admission` for one compute hour of CPU
    /// ([`brume_api::rest::FUEL_PER_COMPUTE_HOUR`] fuel, nothing else), in
    /// micro-tokens rounded up: what a fee bid per compute hour is held to.
    pub(crate) fn price_per_hour(&self, admission: &Admission) -> Result<u128, PricingError> {
        let fee = self.fee_of_fuel(admission, brume_api::rest::FUEL_PER_COMPUTE_HOUR)?;
        // Base units (10^-18 token) to micro-tokens (10^-6).
        Ok(fee.div_ceil(1_000_000_000_000))
    }

    /// The fee of `fuel` alone on `admission`, today, in base units.
    fn fee_of_fuel(&self, admission: &Admission, fuel: u64) -> Result<u128, PricingError> {
        let usage = ResourceUsage {
            fuel,
            ..ResourceUsage::default()
        };
        let day = self
            .pricer
            .config
            .day_of(i64::try_from(crate::now_ms()).unwrap_or(i64::MAX))?;
        let fee = self
            .pricer
            .fee_scaled(&usage, admission.tier, day, admission.multiplier_ppm)?;
        Ok(fee.token_amount)
    }

    /// A lease's price on `admission`: the fee of one second at the
    /// reference speed (10^9 fuel: a slot at 1 KMIPS), in base units
    /// rounded up (at least 1), with its tier's name.
    pub(crate) fn lease_rate(&self, admission: &Admission) -> Result<(u128, String), PricingError> {
        let fee = self.fee_of_fuel(admission, brume_api::rest::FUEL_PER_COMPUTE_HOUR / 3600)?;
        Ok((fee.max(1), self.tier_name(admission.tier).to_string()))
    }

    pub(crate) fn price_in_force(
        &self,
        admission: &mut Admission,
        utilisation: impl FnOnce() -> u32,
    ) {
        if let Some(Some(curve)) = self.curves.get(usize::from(admission.tier.0)) {
            let u = utilisation().min(1_000_000);
            admission.utilisation_ppm = u;
            admission.multiplier_ppm = curve.multiplier_ppm(u);
        }
    }

    pub(crate) fn admit(
        &self,
        account: &str,
        tier: Option<&str>,
        cap_fiat_micros: Option<u64>,
        digest: &str,
    ) -> Result<Admission, AdmitError> {
        let tier = match tier {
            None => None,
            Some(name) => Some(self.tier_id(name).ok_or_else(|| {
                AdmitError::Invalid(format!(
                    "tier: unknown tier {name:?} (tiers: {})",
                    self.tier_names.join(", ")
                ))
            })?),
        };
        let request = DealRequest {
            tier,
            cap_fiat_micros: cap_fiat_micros.map(u128::from),
        };
        let estimate = self
            .observed
            .lock()
            .get(digest)
            .map_or_else(ResourceUsage::default, Observed::mean);
        let day = self
            .pricer
            .config
            .day_of(i64::try_from(crate::now_ms()).unwrap_or(i64::MAX))
            .map_err(|e| AdmitError::Invalid(e.to_string()))?;
        let deal = self.deal(account);
        deal.admit(&request, &self.pricer, Some(&estimate), day)
            .map_err(|e| match e {
                DealError::OverCap { .. } => AdmitError::OverCap(e),
                DealError::TierFixed { deal, requested } => AdmitError::NotInDeal(format!(
                    "tier: this account's subscription runs at tier {}, not {}",
                    self.tier_name(deal),
                    self.tier_name(requested)
                )),
                e @ DealError::CapNotInDeal => AdmitError::NotInDeal(e.to_string()),
                e => AdmitError::Invalid(e.to_string()),
            })
    }

    async fn append(&self, row: SealedRow) {
        let id = row.row().data.work_id.clone();
        if let Err(e) = self.store.append_sealed(vec![row]).await {
            tracing::error!(work = %id, code = e.code(), "ledger row not stored: {e}");
        }
    }
}

fn charge_parts(payers: &[PayerPart]) -> impl Iterator<Item = (&str, u128)> {
    payers.iter().map(|p| (p.account.as_str(), p.amount))
}

fn check_id(what: &str, s: &str) -> Result<(), BillError> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(BillError::Open(format!(
            "{what} {s:?}: 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Ledger {
    /// Counts a row as pending until the guard is dropped.
    pub(crate) fn pending(&self) -> Pending {
        self.pending.send_modify(|n| *n += 1);
        Pending(self.pending.clone())
    }

    /// Queues an unsealed row to [`batcher`] (sync calls: no hashing and no
    /// fsync on the response path).
    pub(crate) fn queue(&self, row: Unsealed) {
        self.pending.send_modify(|n| *n += 1);
        let sent = match &*self.queue.lock() {
            Some(q) => q.send(row).map_err(|e| e.0),
            None => Err(row),
        };
        if let Err(row) = sent {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
            tracing::error!(work = %row.0.work_id, "ledger row not stored: the batcher has stopped");
        }
    }

    /// Closes the batcher's queue: it appends what is queued, then ends.
    pub(crate) fn close_queue(&self) {
        self.queue.lock().take();
    }

    /// Seals `row` and appends it; returns once it is durable, or why not.
    pub(crate) async fn append_row(&self, (data, private): Unsealed) -> Result<(), LedgerError> {
        let row = SealedRow::seal(data, private)?;
        self.store.append_sealed(vec![row]).await
    }

    /// Seals `row` and appends it; returns once it is durable.
    pub(crate) async fn append_sealed(&self, id: brume_api::WorkId, row: Option<Unsealed>) {
        match row.map(|(data, private)| SealedRow::seal(data, private)) {
            Some(Ok(row)) => self.append(row).await,
            Some(Err(e)) => {
                tracing::error!(work = %id, code = e.code(), "ledger row not sealed: {e}")
            }
            None => {}
        }
    }
}
