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
//! [`finish`] is where completions leave the scheduler. For a `Done` it
//! claims the work and builds the row (pricing and split: no I/O, no
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

use std::collections::BTreeMap;
use std::sync::Arc;

use brume_api::wire::Outcome;
use brume_ledger::pricing::{
    ExchangeRate, PriceTable, Pricer, PricingConfig, PricingError, ResourceUsage, TierId,
    TierPrice, TierSpec,
};
use brume_ledger::row::{
    self, LedgerRow, MAX_ENTRIES, MAX_FIELD_BYTES, MAX_ID_BYTES, MAX_NAME_BYTES, PayerPart, Payout,
    PrivateData, RowData, RowUsage,
};
use brume_ledger::split::{self, Account, Beneficiary, Parties, PayoutShares, Role, SplitError};
use brume_ledger::store::{LedgerError, LedgerStore, SqliteStore};
use rand::Rng as _;
use tokio::sync::{mpsc, watch};

use crate::sched::{Completion, Sink, Work};

/// The response header with what a sync call was billed: the fee in token
/// base units (10^-18 token), a decimal integer.
pub const COST_HEADER: &str = "x-brume-cost";

/// The request header naming the requester's own end user (optional).
pub const END_USER_HEADER: &str = "x-brume-end-user";

/// Pricing and payout shares. `Default` is the devnet: one tier priced at
/// €1.00 per coin-equivalent of resources, 1 token = €1.00, and the fee
/// split 70% provider, 20% developer, 10% operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// The provider's share, in parts per million.
    pub contributor_ppm: u32,
    /// The developer's share, in parts per million (the operator gets the
    /// rest; with no known developer, the operator gets this share too).
    pub developer_ppm: u32,
    /// The fee currency (ISO code).
    pub currency: String,
    /// The one service tier's name, as recorded in rows.
    pub tier: String,
    /// Fiat micro-units per coin-equivalent of resources.
    pub fiat_micros_per_coin: u64,
    /// The fixed exchange rate: fiat micro-units per whole token.
    pub fiat_micros_per_token: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            contributor_ppm: 700_000,
            developer_ppm: 200_000,
            currency: "EUR".into(),
            tier: "standard".into(),
            fiat_micros_per_coin: 1_000_000,
            fiat_micros_per_token: 1_000_000,
        }
    }
}

/// Why a ledger row could not be built or the ledger opened.
#[derive(Debug, thiserror::Error)]
pub enum BillError {
    #[error("open: {0}")]
    Open(String),
    #[error("pricing: {0}")]
    Pricing(#[from] PricingError),
    #[error("split: {0}")]
    Split(#[from] SplitError),
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
            BillError::Ledger(e) => e.code(),
            BillError::Overflow(_) => "overflow",
        }
    }
}

/// Who a row names, and what it records privately: fixed when the work is
/// submitted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Billing {
    /// The name of the requester's API key.
    pub requester: String,
    pub end_user: String,
    /// The name of the API key that published the service ("" if unknown).
    pub developer: String,
    pub request_line: String,
    pub request_headers: Vec<(String, String)>,
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

/// What a unit of work was billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Token base units.
    pub token_amount: u128,
}

/// The broker's ledger: the store, the pricer and the shares.
pub struct Ledger {
    store: SqliteStore,
    pricer: Pricer,
    tier: TierId,
    tier_name: String,
    currency: String,
    shares: PayoutShares,
    /// The shares when the developer is unknown: theirs goes to the operator.
    no_developer: PayoutShares,
    operator: String,
    /// Rows started (queued or being appended) and not yet finished.
    pending: watch::Sender<u64>,
    /// Sync calls' rows, to [`batcher`].
    queue: mpsc::UnboundedSender<Unsealed>,
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
        let n = rows.len() as u64;
        let first = rows[0].0.work_id.clone();
        let batch: Vec<LedgerRow> = rows
            .drain(..)
            .filter_map(|(data, private)| {
                let id = data.work_id.clone();
                LedgerRow::seal(data, private)
                    .map_err(|e| tracing::error!(work = %id, code = e.code(), "ledger row not sealed: {e}"))
                    .ok()
            })
            .collect();
        if !batch.is_empty()
            && let Err(e) = ledger.store.append(batch).await
        {
            tracing::error!(rows = n, first = %first, code = e.code(), "ledger rows not stored: {e}");
        }
        ledger.pending.send_modify(|p| *p = p.saturating_sub(n));
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Decrements the pending count when an append task ends, however it ends.
struct Pending(Arc<Ledger>);

impl Pending {
    fn new(ledger: &Arc<Ledger>) -> Pending {
        ledger.pending.send_modify(|n| *n += 1);
        Pending(ledger.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Ledger {
    /// Opens `dir/ledger.db` (blocking: call it off the runtime). Spawn
    /// [`batcher`] with the receiver.
    pub(crate) fn open(
        dir: &std::path::Path,
        config: &LedgerConfig,
        operator: String,
    ) -> Result<(Ledger, mpsc::UnboundedReceiver<Unsealed>), BillError> {
        let shares = PayoutShares::new(config.contributor_ppm, config.developer_ppm)?;
        let no_developer = PayoutShares::new(config.contributor_ppm, 0)?;
        let tier = TierId(0);
        let table = PriceTable::new(vec![TierPrice {
            tier,
            spec: TierSpec {
                min_threads: 1,
                min_mips: 0,
                min_bandwidth_mbps: 0,
            },
            fiat_micros_per_coin: config.fiat_micros_per_coin,
        }])?;
        let pricer = Pricer::new(
            PricingConfig::default(),
            table,
            ExchangeRate {
                fiat_micros_per_token: config.fiat_micros_per_token,
            },
        )?;
        let store = SqliteStore::open(dir)?;
        let (queue, rx) = mpsc::unbounded_channel();
        let ledger = Ledger {
            store,
            pricer,
            tier,
            tier_name: config.tier.clone(),
            currency: config.currency.clone(),
            shares,
            no_developer,
            operator,
            pending: watch::channel(0).0,
            queue,
        };
        Ok((ledger, rx))
    }

    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// Waits until every append started so far has finished.
    pub(crate) async fn settled(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Builds the row of a finished unit of work, not yet sealed (no I/O,
    /// no hashing).
    pub(crate) fn row(
        &self,
        work: &Work,
        provider: &str,
        outcome: &Outcome,
        attempts: u32,
    ) -> Result<Unsealed, BillError> {
        let usage = outcome.usage();
        let now = crate::now_ms();
        let fee = self.pricer.fee_at(
            &ResourceUsage {
                fuel: usage.fuel,
                gpu_flop: 0,
                bytes_in: usage.bytes_in,
                bytes_out: usage.bytes_out,
            },
            self.tier,
            i64::try_from(now).map_err(|_| BillError::Overflow("timestamp"))?,
        )?;
        let billing = &work.spec.billing;
        let known_developer = !billing.developer.is_empty();
        let account = |s: &str| Beneficiary::plain(Account::new(clip(s, MAX_ID_BYTES)));
        let parties = Parties {
            contributor: account(provider),
            developer: account(if known_developer {
                &billing.developer
            } else {
                &self.operator
            }),
            operator: account(&self.operator),
        };
        let shares = if known_developer {
            &self.shares
        } else {
            &self.no_developer
        };
        let split = split::split(fee.token_amount, shares, &parties)?;
        let mut payouts = Vec::with_capacity(3);
        for line in split.lines() {
            if line.role == Role::Developer && !known_developer {
                continue; // always 0: the operator took the share
            }
            let role = match (line.charity, line.role) {
                (true, _) => "charity",
                (false, Role::Contributor) => "provider",
                (false, Role::Developer) => "developer",
                (false, Role::Operator) => "operator",
            };
            payouts.push(Payout {
                beneficiary: line.account.0,
                role: role.into(),
                amount: line.amount,
            });
        }
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let data = RowData {
            work_id: work.id.to_string(),
            timestamp_ms: now,
            requester: clip(&billing.requester, MAX_ID_BYTES).into(),
            end_user: clip(&billing.end_user, MAX_ID_BYTES).into(),
            provider: clip(provider, MAX_ID_BYTES).into(),
            developer: clip(&billing.developer, MAX_ID_BYTES).into(),
            operator: self.operator.clone(),
            charities: Vec::new(),
            service_digest: work.spec.digest.clone(),
            tier: self.tier_name.clone(),
            usage: RowUsage {
                fuel: usage.fuel,
                wall_us: usage.wall_us,
                peak_memory_bytes: usage.peak_memory_bytes,
                bytes_in: usage.bytes_in,
                bytes_out: usage.bytes_out,
            },
            fee_currency: self.currency.clone(),
            fee_micros: u64::try_from(fee.fee_fiat_micros)
                .map_err(|_| BillError::Overflow("fee"))?,
            token_amount: fee.token_amount,
            surcharge: 0,
            rate: row::ExchangeRate::per_whole_token(fee.rate.fiat_micros_per_token),
            payers: vec![PayerPart {
                account: clip(&billing.requester, MAX_ID_BYTES).into(),
                kind: "requester".into(),
                amount: fee.token_amount,
            }],
            payouts,
        };
        let private = PrivateData {
            salt,
            request_line: clip(&billing.request_line, MAX_FIELD_BYTES).into(),
            request_headers: billing.request_headers.clone(),
            metrics: BTreeMap::from([
                ("attempts".to_string(), u64::from(attempts)),
                ("wall_us".to_string(), usage.wall_us),
            ]),
            service_fields: BTreeMap::new(),
            custom_fields: BTreeMap::new(),
        };
        Ok((data, private))
    }

    async fn append(&self, row: LedgerRow) {
        let id = row.data.work_id.clone();
        if let Err(e) = self.store.append(vec![row]).await {
            tracing::error!(work = %id, code = e.code(), "ledger row not stored: {e}");
        }
    }
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

/// Delivers a completion, billing it first if a provider reported `Done`
/// (see the module docs for the order of events).
pub(crate) fn finish(ledger: &Arc<Ledger>, work: Arc<Work>, completion: Completion) {
    let Completion::Done {
        outcome,
        provider,
        attempts,
        ..
    } = completion
    else {
        work.finish(completion);
        return;
    };
    if !work.claim() {
        return; // a late result: the work already ended
    }
    let row = match ledger.row(&work, &provider, &outcome, attempts) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(work = %work.id, code = e.code(), "ledger row not built: {e}");
            None
        }
    };
    let cost = row.as_ref().map(|(data, _)| Cost {
        token_amount: data.token_amount,
    });
    let completion = Completion::Done {
        outcome,
        provider,
        attempts,
        cost,
    };
    let rt = tokio::runtime::Handle::try_current();
    match (&work.sink, rt) {
        (Sink::Job(_), Ok(rt)) => {
            let pending = Pending::new(ledger);
            rt.spawn(async move {
                match row.map(|(data, private)| LedgerRow::seal(data, private)) {
                    Some(Ok(row)) => pending.0.append(row).await,
                    Some(Err(e)) => {
                        tracing::error!(work = %work.id, code = e.code(), "ledger row not sealed: {e}")
                    }
                    None => {}
                }
                work.deliver(completion);
                drop(pending);
            });
        }
        (_, _) => {
            work.deliver(completion);
            let Some(row) = row else { return };
            ledger.pending.send_modify(|n| *n += 1);
            if let Err(e) = ledger.queue.send(row) {
                ledger.pending.send_modify(|n| *n = n.saturating_sub(1));
                tracing::error!(work = %(e.0).0.work_id, "ledger row not stored: the batcher has stopped");
            }
        }
    }
}
