//! Batched settlement: the ledger's promises paid in tokens.
//!
//! A settlement **run** takes every ledger row appended since the previous
//! run (rows are numbered in append order: [`RowSource::scan`]) plus the
//! rows earlier runs had to defer, and settles them in O(M + N/k) chain
//! transactions for M payers and N beneficiaries, k to a payout batch,
//! through any [`Settlement`] backend (the dev chain, an EVM chain's
//! contracts):
//!
//! 1. **Collect.** Rows are grouped by payer (the row's `payers`: the
//!    requester, a subsidy account, the operator…). Each payer's total is
//!    collected once ([`Settlement::collect`], from its escrow allowance
//!    into the payout account), anchored with the XOR aggregate of the
//!    hashes of the group's rows (those where it pays more than 0).
//!    - Before anything is sent, each payer's allowance and balance are
//!      checked. A payer that can't cover its total (or whose account is not
//!      an address) is **flagged** and every row it pays for is **deferred**
//!      whole: none of that row's parts is collected, and it is retried by
//!      every later run.
//!    - A collection refused anyway (a race with the payer) flags the
//!      payer and defers its rows; the other parts of those rows that were
//!      collected are **held** in the payout account until the row is
//!      complete. A row is never paid out before all of its parts are in.
//! 2. **Pay.** The fully collected rows are grouped by beneficiary (the
//!    row's `payouts`: provider, developer, operator, charity, refund). Each
//!    beneficiary's total plus what was carried over for it is one payment;
//!    payments go out in batches of [`SettleConfig::payout_batch`] (in
//!    account order), one [`Settlement::payout`] each, all or nothing,
//!    under the batch's [`payout_anchor`]: a hash of each payment's
//!    beneficiary, amount and XOR aggregate of the rows it pays for. A
//!    total below the minimum payout (or to an account that is not an
//!    address) is **carried over** instead.
//! 3. **Record.** Rows are marked per entity through their run: a row with
//!    sequence number `s` belongs to the run whose range holds `s` (or, if it
//!    was deferred, the run that completed it), and its status for an entity
//!    is that run's transfer for the entity ([`Settler::row_status`]).
//!    Once a run is finished, what it settled is also written to the
//!    ledger's mutable status column ([`RowSource::set_status`]): the
//!    payers of each row it completed `collected` (and those of parts it
//!    held), its beneficiaries `paid` (each with its transaction), and the
//!    beneficiaries of earlier rows whose carried-over amounts it paid. A
//!    row never completed (its payer is flagged) or a beneficiary carried
//!    over stays `pending`. That column and the chain are all the
//!    [`audit`] reads.
//!
//! # Crash safety
//!
//! Intent is journaled before anything is sent: a run's collections are
//! written `pending` (one SQLite commit, fsynced) before the batch is sent,
//! and its payouts (with their batches' anchors) likewise once every
//! collection is resolved. A write whose outcome is not known (the node
//! unreachable, the process killed) leaves the run unfinished; the next
//! run resumes it: each `pending` collection, and each pending payout
//! batch, is looked up on the chain by its anchor ([`Settlement::anchored`])
//! and marked done if it landed, sent otherwise; a backend also refuses an
//! anchor used twice. So `kill -9` at any point, then another run, neither
//! loses a row nor transfers twice. Only a refusal ([`ChainError::is_refusal`])
//! is final: a refused collection flags its payer, a refused payout batch
//! carries its payments over.
//!
//! # Test faults
//!
//! A crash point ([`Fault`]: abort the process mid-run, as `kill -9` would)
//! is set through the library API, [`Settler::with_fault`]. Only a build
//! with `debug_assertions` (the test binaries) also reads it from
//! `BRUME_FAULT_SETTLE` (`abort_after_collect` or `abort_after_payout`) when
//! a [`Settler`] is opened; in a release build that variable has no effect.
//!
//! # Invariants (checked after every run: [`Report::balanced`])
//!
//! - Σ collected = Σ paid + carry-over + held, to the unit;
//! - the payout account's balance = its balance before the first run +
//!   carry-over + held (it holds exactly what is owed to beneficiaries).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use brume_chain::{Address, Anchor, B256, ChainError, Collection, Settlement};
use brume_ledger::row::{Aggregate, LedgerRow};
use brume_ledger::store::{LedgerError, LedgerFuture};
use serde::{Deserialize, Serialize};

pub mod audit;
mod db;
mod journal;

pub use audit::SettleAudit;
pub use db::RowStatus;

/// Why a run failed. A failed run is resumed by the next one.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    #[error("settlement store {path}: {message}")]
    Store { path: String, message: String },
    #[error("settlement store: {0}")]
    Db(String),
}

impl SettleError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SettleError::Ledger(e) => e.code(),
            SettleError::Chain(e) => e.code(),
            SettleError::Store { .. } | SettleError::Db(_) => "settlement_store",
        }
    }
}

impl From<rusqlite::Error> for SettleError {
    fn from(e: rusqlite::Error) -> Self {
        SettleError::Db(e.to_string())
    }
}

impl From<brume_sql::Error> for SettleError {
    fn from(e: brume_sql::Error) -> Self {
        SettleError::Db(e.to_string())
    }
}

impl From<brume_pg::tokio_postgres::Error> for SettleError {
    fn from(e: brume_pg::tokio_postgres::Error) -> Self {
        SettleError::Db(match e.as_db_error() {
            Some(d) => d.message().to_string(),
            None => e.to_string(),
        })
    }
}

impl From<brume_sqlite::Error> for SettleError {
    fn from(e: brume_sqlite::Error) -> Self {
        match e {
            brume_sqlite::Error::Open(e) => SettleError::Store {
                path: e.path.display().to_string(),
                message: e.source.to_string(),
            },
            e => SettleError::Db(e.to_string()),
        }
    }
}

/// A ledger row with its append-order sequence number.
#[derive(Debug, Clone)]
pub struct ScannedRow {
    pub seq: u64,
    pub row: LedgerRow,
}

/// Where settlement reads rows: in append order, after a sequence number.
pub trait RowSource: Send + Sync {
    /// At most `limit` rows appended after `after` (0: from the start), in
    /// append order, with their public columns.
    fn scan(&self, after: u64, limit: usize) -> LedgerFuture<'_, Vec<ScannedRow>>;

    /// Records how one entity of some rows was settled (the ledger's
    /// mutable status column).
    fn set_status(&self, update: brume_ledger::store::StatusUpdate) -> LedgerFuture<'_, ()>;

    /// At most `limit` recorded statuses after `(work id, entity)`, in
    /// that order (the audit reads them all).
    fn status_page(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> LedgerFuture<'_, Vec<(String, brume_ledger::store::EntityStatus)>>;
}

/// Rows that must not settle yet (a job whose requester has not
/// confirmed its result): deferred whole, like a flagged payer's, and
/// asked about again at every later run. The broker's is its buyer
/// deposits (`confirm: true` jobs).
pub trait Gate: Send + Sync {
    /// Whether the row of `work_id` waits.
    fn held(&self, work_id: &str) -> bool;
}

/// Maps a ledger account (as rows name it) to a chain address.
pub type Resolver = Arc<dyn Fn(&str) -> Option<Address> + Send + Sync>;

/// The default resolver: accounts that are `0x` addresses.
pub fn addresses_only() -> Resolver {
    Arc::new(|s: &str| s.parse::<Address>().ok())
}

/// Settlement settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleConfig {
    /// Beneficiary totals below this (token base units) are carried over.
    pub min_payout: u128,
    /// Rows read per ledger page.
    pub page: usize,
    /// Beneficiaries paid per payout transaction (its batch).
    pub payout_batch: usize,
}

/// The default payout batch: 200 transfers stay far under a block's gas
/// limit (about 6 M gas on the EVM contracts).
pub const PAYOUT_BATCH: usize = 200;

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            min_payout: 0,
            page: 10_000,
            payout_batch: PAYOUT_BATCH,
        }
    }
}

/// The anchor of a payout batch, which the chain holds with each of its
/// payments: the XOR, over the batch's payments, of
/// `sha256("brume.payout" ‖ beneficiary (20 bytes) ‖ amount (16 bytes,
/// big-endian) ‖ the XOR aggregate of the row hashes it pays for)`. An
/// auditor recomputes it from the ledger's rows and the chain's `Paid`
/// events alone.
pub fn payout_anchor(payments: impl IntoIterator<Item = (Address, u128, [u8; 32])>) -> Anchor {
    use sha2::Digest as _;
    let mut out = Aggregate::new();
    for (to, amount, aggregate) in payments {
        let mut h = sha2::Sha256::new();
        h.update(b"brume.payout");
        h.update(to.as_slice());
        h.update(amount.to_be_bytes());
        h.update(aggregate);
        out.add(&h.finalize().into());
    }
    anchor_of(&out)
}

/// One transfer of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferLine {
    /// The ledger account (payer or beneficiary).
    pub account: String,
    pub address: String,
    #[serde(with = "dec")]
    #[schema(value_type = String)]
    pub amount: u128,
    /// Rows it covers.
    pub rows: u64,
    pub anchor: String,
    /// `done` (with `tx_hash`) or `failed` (with `error`).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Milliseconds per stage of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    pub scan_ms: f64,
    pub plan_ms: f64,
    pub collect_ms: f64,
    pub payout_ms: f64,
    pub total_ms: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// The run's id (0: nothing to settle, no run recorded).
    pub run: u64,
    /// Whether this run resumed one a crash interrupted.
    pub resumed: bool,
    /// New rows this run took from the ledger.
    pub rows: u64,
    /// Rows completed this run (new and earlier deferred ones).
    pub rows_settled: u64,
    /// Rows deferred (a payer could not pay), in total after this run.
    pub rows_deferred: u64,
    pub collections: Vec<TransferLine>,
    pub payouts: Vec<TransferLine>,
    /// Accounts flagged by this run and why.
    pub flagged: Vec<(String, String)>,
    #[serde(with = "dec")]
    #[schema(value_type = String)]
    pub collected: u128,
    #[serde(with = "dec")]
    #[schema(value_type = String)]
    pub paid: u128,
    /// Owed to beneficiaries, below the threshold, after this run.
    #[serde(with = "dec")]
    #[schema(value_type = String)]
    pub carry_over: u128,
    /// Collected for rows still waiting for another payer, after this run.
    #[serde(with = "dec")]
    #[schema(value_type = String)]
    pub held: u128,
    /// Chain transactions sent by this run.
    pub chain_txs: u64,
    /// The invariants (see the crate docs) hold after this run.
    pub balanced: bool,
    pub timings: Timings,
}

/// Decimal strings for u128 amounts in JSON.
mod dec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A row as settlement needs it: its hash, who pays, who is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Slim {
    pub seq: u64,
    pub work_id: String,
    pub hash: [u8; 32],
    /// (payer account, amount, collected by intent id)
    pub parts: Vec<Part>,
    /// (beneficiary account, amount)
    pub payouts: Vec<(String, u128)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Part {
    pub account: String,
    #[serde(with = "dec")]
    #[schema(value_type = String)]
    pub amount: u128,
    /// The collect intent that collected it (held), if any.
    pub collected: Option<i64>,
}

impl Slim {
    fn from_row(seq: u64, row: LedgerRow) -> Slim {
        let d = row.data;
        // A payer listed twice pays once per part; merge for grouping.
        let mut parts: Vec<Part> = Vec::with_capacity(d.payers.len());
        for p in d.payers {
            match parts.iter_mut().find(|q| q.account == p.account) {
                Some(q) => q.amount += p.amount,
                None => parts.push(Part {
                    account: p.account,
                    amount: p.amount,
                    collected: None,
                }),
            }
        }
        // Likewise a beneficiary listed twice is paid its sum.
        let mut payouts: Vec<(String, u128)> = Vec::with_capacity(d.payouts.len());
        for p in d.payouts {
            match payouts.iter_mut().find(|(b, _)| *b == p.beneficiary) {
                Some((_, a)) => *a += p.amount,
                None => payouts.push((p.beneficiary, p.amount)),
            }
        }
        Slim {
            seq,
            work_id: d.work_id,
            hash: row.row_hash.0,
            parts,
            payouts,
        }
    }
}

/// A group of rows for one account: its total and aggregate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    amount: u128,
    aggregate: Aggregate,
    rows: u64,
}

impl Group {
    pub(crate) fn add(&mut self, amount: u128, hash: &[u8; 32]) {
        self.amount += amount;
        self.aggregate.add(hash);
        self.rows += 1;
    }
}

fn anchor_of(a: &Aggregate) -> Anchor {
    B256::from(a.0.0)
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// A transfer's outcome: its transaction, or the error's code.
type Outcome = (i64, Result<B256, String>);

/// Runs settlement against a ledger and a chain. One run at a time.
pub struct Settler {
    db: Box<dyn journal::Journal>,
    rows: Arc<dyn RowSource>,
    chain: Arc<dyn Settlement>,
    resolve: Resolver,
    config: SettleConfig,
    running: tokio::sync::Mutex<()>,
    fault: Option<Fault>,
    gate: Option<Arc<dyn Gate>>,
}

/// Test-only fault injection: abort the process at a point of a run, as a
/// `kill -9` would. Not for production use (see the crate docs, "Test
/// faults").
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// After the collections landed, before they are recorded.
    AbortAfterCollect,
    /// After the payouts landed, before they are recorded.
    AbortAfterPayout,
}

impl Fault {
    /// `BRUME_FAULT_SETTLE=abort_after_collect|abort_after_payout`. Debug
    /// builds only.
    #[cfg(debug_assertions)]
    #[doc(hidden)]
    pub fn from_env() -> Option<Fault> {
        match std::env::var("BRUME_FAULT_SETTLE").ok()?.as_str() {
            "abort_after_collect" => Some(Fault::AbortAfterCollect),
            "abort_after_payout" => Some(Fault::AbortAfterPayout),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("journal", &self.db.location())
            .field("payout", &self.chain.payout_account())
            .finish_non_exhaustive()
    }
}

/// Creates or upgrades the journal's tables in the PostgreSQL database at
/// `owner_url` (as the role that owns, or will own, them), then grants
/// `role`, if given, what a broker needs: read and write the journal's
/// tables, nothing else.
pub async fn setup_postgres(owner_url: &str, role: Option<&str>) -> Result<(), SettleError> {
    drop(journal::postgres::PgJournal::open(owner_url).await?);
    match role {
        Some(role) => journal::postgres::PgJournal::grant(owner_url, role).await,
        None => Ok(()),
    }
}

impl Settler {
    /// Opens (or creates) the settlement store `dir/settle.db`. Blocking:
    /// call it off the async runtime.
    pub fn open(
        dir: &Path,
        rows: Arc<dyn RowSource>,
        chain: Arc<dyn Settlement>,
        resolve: Resolver,
        config: SettleConfig,
    ) -> Result<Settler, SettleError> {
        let db = db::Db::open(dir)?;
        Ok(Settler::with_journal(
            Box::new(db),
            rows,
            chain,
            resolve,
            config,
        ))
    }

    /// Opens (or creates) the journal at `location`: a `postgres://` URL
    /// (its tables in the schema `brume_settle` of that database), or else
    /// a directory (`settle.db` in it, SQLite, opened off the runtime).
    pub async fn open_at(
        location: &str,
        rows: Arc<dyn RowSource>,
        chain: Arc<dyn Settlement>,
        resolve: Resolver,
        config: SettleConfig,
    ) -> Result<Settler, SettleError> {
        let journal: Box<dyn journal::Journal> = if brume_pg::is_url(location) {
            Box::new(journal::postgres::PgJournal::open(location).await?)
        } else {
            let dir = std::path::PathBuf::from(location);
            let db = tokio::task::spawn_blocking(move || db::Db::open(&dir))
                .await
                .map_err(|e| SettleError::Db(format!("opening the journal: {e}")))??;
            Box::new(db)
        };
        Ok(Settler::with_journal(journal, rows, chain, resolve, config))
    }

    fn with_journal(
        db: Box<dyn journal::Journal>,
        rows: Arc<dyn RowSource>,
        chain: Arc<dyn Settlement>,
        resolve: Resolver,
        config: SettleConfig,
    ) -> Settler {
        Settler {
            db,
            rows,
            chain,
            resolve,
            config,
            running: tokio::sync::Mutex::new(()),
            #[cfg(debug_assertions)]
            fault: Fault::from_env(),
            #[cfg(not(debug_assertions))]
            fault: None,
            gate: None,
        }
    }

    /// Rows `gate` holds wait (see [`Gate`]).
    #[must_use]
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Settler {
        self.gate = Some(gate);
        self
    }

    /// Sets (or, with `None`, clears) the crash point of every later run,
    /// replacing whatever `BRUME_FAULT_SETTLE` set in a debug build. For
    /// tests only: the process aborts there.
    #[doc(hidden)]
    #[must_use]
    pub fn with_fault(mut self, fault: Option<Fault>) -> Settler {
        self.fault = fault;
        self
    }

    /// The payout account.
    pub fn payout_address(&self) -> Address {
        self.chain.payout_account()
    }

    /// The chain it settles on.
    pub fn settlement(&self) -> &Arc<dyn Settlement> {
        &self.chain
    }

    /// Where its journal is.
    pub fn location(&self) -> String {
        self.db.location()
    }

    /// The last finished run's report, if any.
    pub async fn last_report(&self) -> Result<Option<Report>, SettleError> {
        self.db.last_report().await
    }

    /// The settlement status of each payer and beneficiary of the row
    /// with sequence number `seq`.
    pub async fn row_status(
        &self,
        seq: u64,
        row: &LedgerRow,
    ) -> Result<Vec<RowStatus>, SettleError> {
        let payers: Vec<String> = row.data.payers.iter().map(|p| p.account.clone()).collect();
        let beneficiaries: Vec<String> = row
            .data
            .payouts
            .iter()
            .map(|p| p.beneficiary.clone())
            .collect();
        self.db.row_status(seq, payers, beneficiaries).await
    }

    /// Outstanding (not yet collected) amounts per payer account: rows not
    /// yet settled by any run (after the last run's range) are not counted;
    /// the caller adds what it billed since. Deferred rows' parts are.
    pub async fn deferred_by_payer(&self) -> Result<HashMap<String, u128>, SettleError> {
        self.db.deferred_by_payer().await
    }

    /// Whether a run was interrupted (the next run resumes it).
    pub async fn interrupted(&self) -> Result<bool, SettleError> {
        Ok(self.db.unfinished().await?.is_some())
    }

    /// What has been collected so far from each payer account (token base
    /// units).
    pub async fn collected_by_payer(&self) -> Result<HashMap<String, u128>, SettleError> {
        self.db.collected_by_payer().await
    }

    /// Every collect and payout transfer ever sent (done), for audits:
    /// (kind, account, address, amount, anchor, tx hash).
    pub async fn transfers(&self) -> Result<Vec<db::Sent>, SettleError> {
        self.db.sent().await
    }

    /// Settles what is unsettled (resuming an interrupted run first).
    pub async fn run(&self) -> Result<Report, SettleError> {
        let _one = self.running.lock().await;
        // A run that finished before a crash may not have marked its rows.
        self.mark_finished().await?;
        let start = Instant::now();
        let mut timings = Timings::default();
        if self.db.baseline().await?.is_none() {
            let b = self.chain.balance_of(self.chain.payout_account()).await?;
            self.db.set_baseline(b).await?;
        }
        let (run, resumed, rows, fresh_rows) = match self.db.unfinished().await? {
            Some(run) => {
                tracing::warn!(run = run.id, "resuming an interrupted settlement run");
                (run, true, Vec::new(), None)
            }
            None => {
                let t = Instant::now();
                let from = self.db.last_seq().await?;
                let new = self.scan(from, None).await?;
                timings.scan_ms = ms(t);
                let t = Instant::now();
                let deferred = self.db.deferred_rows().await?;
                if new.is_empty() && deferred.is_empty() {
                    return Ok(Report {
                        balanced: self.balanced().await?,
                        carry_over: self.db.carry_total().await?,
                        timings: Timings {
                            total_ms: ms(start),
                            ..timings
                        },
                        ..Report::default()
                    });
                }
                let to = new.last().map_or(from, |r| r.seq);
                let run = self.plan_collections(from, to, &new, &deferred).await?;
                timings.plan_ms = ms(t);
                let n = new.len() as u64;
                let mut all = new;
                all.extend(deferred);
                (run, false, all, Some(n))
            }
        };
        // Collect.
        let t = Instant::now();
        let mut chain_txs = self
            .send_pending(run.id, db::Kind::Collect, resumed)
            .await?;
        timings.collect_ms = ms(t);
        // Plan and pay.
        let t = Instant::now();
        if !self.db.payouts_planned(run.id).await? {
            let rows = if rows.is_empty() {
                let mut all = self.scan(run.from_seq, Some(run.to_seq)).await?;
                all.extend(self.db.deferred_rows_of_run(run.id).await?);
                all
            } else {
                rows
            };
            self.plan_payouts(run, rows).await?;
        }
        timings.plan_ms += ms(t);
        let t = Instant::now();
        chain_txs += self.send_pending(run.id, db::Kind::Payout, resumed).await?;
        timings.payout_ms = ms(t);
        timings.total_ms = ms(start);
        let timings_json = serde_json::to_string(&timings).unwrap_or_default();
        self.db.finish_run(run.id, timings_json).await?;
        self.mark_finished().await?;
        let mut report = self.db.report(run.id).await?.unwrap_or_default();
        report.resumed = resumed;
        report.rows = fresh_rows.unwrap_or(report.rows);
        report.chain_txs = chain_txs;
        report.timings = timings;
        report.balanced = self.balanced().await?;
        if !report.balanced {
            tracing::error!(run = run.id, "settlement invariants do not hold");
        }
        Ok(report)
    }

    /// Writes what finished runs settled to the ledger's status column
    /// ([`db::status_updates`]). Idempotent: a crash before a run is
    /// recorded as marked only repeats the same updates.
    async fn mark_finished(&self) -> Result<(), SettleError> {
        for run in self.db.unmarked_runs().await? {
            let updates = self.db.status_updates(run).await?;
            for update in updates {
                self.rows.set_status(update).await?;
            }
            self.db.marked(run).await?;
        }
        Ok(())
    }

    /// Rows after `from` (up to `to` inclusive, if given), in append order.
    async fn scan(&self, from: u64, to: Option<u64>) -> Result<Vec<Slim>, SettleError> {
        // A reader task fetches (and decodes, on a blocking thread) the
        // next page while this one is turned into `Slim`s.
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let (rows, page_size) = (self.rows.clone(), self.config.page);
        let reader = tokio::spawn(async move {
            let mut after = from;
            loop {
                let page = rows.scan(after, page_size).await;
                let stop = match &page {
                    Ok(p) => {
                        after = p.last().map_or(after, |r| r.seq);
                        p.len() < page_size || to.is_some_and(|to| after >= to)
                    }
                    Err(_) => true,
                };
                if tx.send(page).await.is_err() || stop {
                    return;
                }
            }
        });
        let mut out = Vec::new();
        while let Some(page) = rx.recv().await {
            for r in page? {
                if to.is_some_and(|to| r.seq > to) {
                    break;
                }
                out.push(Slim::from_row(r.seq, r.row));
            }
        }
        let _ = reader.await;
        Ok(out)
    }

    /// Step 1's plan: groups by payer, pre-checked; the journal written
    /// before anything is sent.
    async fn plan_collections(
        &self,
        from: u64,
        to: u64,
        new: &[Slim],
        deferred: &[Slim],
    ) -> Result<db::Run, SettleError> {
        // Totals per payer over every uncollected part.
        let mut totals: HashMap<&str, u128> = HashMap::new();
        for r in new.iter().chain(deferred) {
            for p in r.parts.iter().filter(|p| p.collected.is_none()) {
                *totals.entry(&p.account).or_default() += p.amount;
            }
        }
        // Pre-check each payer; flag those that can't pay.
        let mut flagged: HashMap<String, String> = HashMap::new();
        for (account, total) in &totals {
            if *total == 0 {
                continue;
            }
            let Some(addr) = (self.resolve)(account) else {
                flagged.insert(account.to_string(), "not_an_address".into());
                continue;
            };
            let allowance = self.chain.collectable(addr).await?;
            if allowance < *total {
                flagged.insert(
                    account.to_string(),
                    format!("insufficient_allowance: {allowance} < {total}"),
                );
                continue;
            }
            let balance = self.chain.balance_of(addr).await?;
            if balance < *total {
                flagged.insert(
                    account.to_string(),
                    format!("insufficient_balance: {balance} < {total}"),
                );
            }
        }
        // Rows with a flagged payer, or that the gate holds, are deferred
        // whole; the rest is grouped.
        let gate = self.gate.as_deref();
        let blocked = |r: &Slim| {
            gate.is_some_and(|g| g.held(&r.work_id))
                || r.parts.iter().any(|p| {
                    p.collected.is_none() && p.amount > 0 && flagged.contains_key(&p.account)
                })
        };
        let mut groups: HashMap<&str, Group> = HashMap::new();
        let mut newly_deferred = Vec::new();
        for r in new {
            if blocked(r) {
                newly_deferred.push(r.clone());
                continue;
            }
            for p in r.parts.iter().filter(|p| p.amount > 0) {
                groups
                    .entry(p.account.as_str())
                    .or_default()
                    .add(p.amount, &r.hash);
            }
        }
        for r in deferred {
            if blocked(r) {
                continue;
            }
            for p in r
                .parts
                .iter()
                .filter(|p| p.collected.is_none() && p.amount > 0)
            {
                groups
                    .entry(p.account.as_str())
                    .or_default()
                    .add(p.amount, &r.hash);
            }
        }
        let mut intents = Vec::with_capacity(groups.len());
        for (account, g) in groups {
            let Some(addr) = (self.resolve)(account) else {
                continue; // flagged above
            };
            intents.push(db::NewIntent {
                kind: db::Kind::Collect,
                account: account.to_string(),
                address: addr,
                amount: g.amount,
                anchor: anchor_of(&g.aggregate),
                rows: g.rows,
                carried: Vec::new(),
                chain_anchor: None,
            });
        }
        intents.sort_by(|a, b| a.account.cmp(&b.account));
        let included: Vec<u64> = deferred
            .iter()
            .filter(|r| !blocked(r))
            .map(|r| r.seq)
            .collect();
        let flagged: Vec<(String, String)> = flagged.into_iter().collect();
        let rows = new.len() as u64;
        self.db
            .start_run(journal::NewRun {
                from,
                to,
                rows,
                intents,
                newly_deferred,
                included,
                flagged,
            })
            .await
    }

    /// Step 2's plan: which rows are complete, groups by beneficiary with
    /// carry-overs, the journal written before anything is sent.
    async fn plan_payouts(&self, run: db::Run, rows: Vec<Slim>) -> Result<(), SettleError> {
        let range = run.from_seq..=run.to_seq;
        let run = run.id;
        let collects = self.db.intents(run, db::Kind::Collect).await?;
        let state: HashMap<&str, &db::Intent> =
            collects.iter().map(|i| (i.account.as_str(), i)).collect();
        let (in_run, blocked) = self.db.deferred_seqs_of_run(run).await?;
        let mut complete: Vec<&Slim> = Vec::new();
        let mut deferred: Vec<Slim> = Vec::new();
        let mut done_deferred: Vec<u64> = Vec::new();
        for r in &rows {
            let was_deferred = in_run.contains(&r.seq);
            let new = r.seq != *range.start() && range.contains(&r.seq);
            if blocked.contains(&r.seq) || !(new || was_deferred) {
                // Deferred at planning (nothing was collected for it), or an
                // earlier deferred row this run did not take.
                continue;
            }
            let collected_by = |p: &Part| match state.get(p.account.as_str()) {
                Some(i) if i.state == db::State::Done => Some(i.id),
                _ => None,
            };
            let ok = r
                .parts
                .iter()
                .filter(|p| p.collected.is_none() && p.amount > 0)
                .all(|p| collected_by(p).is_some());
            if ok {
                if was_deferred {
                    done_deferred.push(r.seq);
                }
                complete.push(r);
            } else {
                // A collection failed: keep what was collected (held) and
                // retry the rest later.
                let mut parts = r.parts.clone();
                for p in parts
                    .iter_mut()
                    .filter(|p| p.collected.is_none() && p.amount > 0)
                {
                    p.collected = collected_by(p);
                }
                deferred.push(Slim { parts, ..r.clone() });
            }
        }
        let mut groups: HashMap<&str, Group> = HashMap::new();
        for r in &complete {
            for (account, amount) in r.payouts.iter().filter(|(_, a)| *a > 0) {
                groups
                    .entry(account.as_str())
                    .or_default()
                    .add(*amount, &r.hash);
            }
        }
        let carried = self.db.unpaid_carry().await?;
        let mut carried_by: HashMap<String, Vec<db::Carry>> = HashMap::new();
        for c in carried {
            carried_by.entry(c.account.clone()).or_default().push(c);
        }
        let mut intents = Vec::new();
        let mut carry = Vec::new();
        // Beneficiaries that can't be paid at all: flagged at every run
        // while they are owed (`/v1/status`), never silently carried.
        let mut unpayable: Vec<(String, String)> = Vec::new();
        let mut accounts: Vec<String> = groups
            .keys()
            .map(|k| k.to_string())
            .chain(carried_by.keys().cloned())
            .collect();
        accounts.sort();
        accounts.dedup();
        for account in accounts {
            let g = groups.remove(account.as_str()).unwrap_or_default();
            let earlier = carried_by.remove(&account).unwrap_or_default();
            let total = g.amount + earlier.iter().map(|c| c.amount).sum::<u128>();
            let mut aggregate = g.aggregate;
            for c in &earlier {
                aggregate.add(&c.aggregate);
            }
            let addr = (self.resolve)(&account);
            if addr.is_none() && total > 0 {
                unpayable.push((
                    account.clone(),
                    "not_an_address: its payouts are carried over until it resolves to one".into(),
                ));
            }
            match addr {
                _ if total == 0 => {}
                Some(addr) if total >= self.config.min_payout => {
                    intents.push(db::NewIntent {
                        kind: db::Kind::Payout,
                        account,
                        address: addr,
                        amount: total,
                        anchor: anchor_of(&aggregate),
                        rows: g.rows + earlier.iter().map(|c| c.rows).sum::<u64>(),
                        carried: earlier.iter().map(|c| c.id).collect(),
                        chain_anchor: None,
                    });
                }
                _ if g.rows == 0 => {} // only earlier carry: it stays
                _ => carry.push(db::Carry {
                    id: 0,
                    account,
                    amount: g.amount,
                    aggregate: g.aggregate.0.0,
                    rows: g.rows,
                    reason: if addr.is_none() {
                        "not_an_address".into()
                    } else {
                        "below_minimum".into()
                    },
                }),
            }
        }
        // Batches of payments in account order, each under its anchor.
        for batch in intents.chunks_mut(self.config.payout_batch.max(1)) {
            let anchor = payout_anchor(batch.iter().map(|i| (i.address, i.amount, i.anchor.0)));
            for i in batch {
                i.chain_anchor = Some(anchor);
            }
        }
        let complete: Vec<Slim> = complete.into_iter().cloned().collect();
        self.db
            .plan_payouts(
                run,
                journal::PlannedPayouts {
                    intents,
                    carry,
                    deferred,
                    done_deferred,
                    complete,
                    unpayable,
                },
            )
            .await
    }

    /// Sends a run's pending transfers of one kind (after reconciling them
    /// with the chain by anchor when `reconcile`); returns the chain
    /// transactions sent. Collections go out as one batch; payouts as one
    /// transaction per payout batch.
    async fn send_pending(
        &self,
        run: i64,
        kind: db::Kind,
        reconcile: bool,
    ) -> Result<u64, SettleError> {
        let pending: Vec<db::Intent> = self
            .db
            .intents(run, kind)
            .await?
            .into_iter()
            .filter(|i| i.state == db::State::Pending)
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let (outcomes, sent) = match kind {
            db::Kind::Collect => self.collect(pending, reconcile).await?,
            db::Kind::Payout => self.pay(pending, reconcile).await?,
        };
        self.db.resolve_intents(run, kind, outcomes).await?;
        Ok(sent)
    }

    /// The collections of `pending` that had not landed, sent as one batch.
    async fn collect(
        &self,
        pending: Vec<db::Intent>,
        reconcile: bool,
    ) -> Result<(Vec<Outcome>, u64), SettleError> {
        let payout = self.chain.payout_account();
        let mut outcomes = Vec::new();
        let mut ids = Vec::new();
        let mut batch = Vec::new();
        for i in pending {
            if reconcile {
                let landed = self.chain.anchored(i.chain_anchor).await?;
                if let Some(t) = landed
                    .iter()
                    .find(|t| t.from == i.address && t.to == payout && t.amount == i.amount)
                {
                    tracing::info!(intent = i.id, tx = %t.tx_hash, "settlement collection had landed");
                    outcomes.push((i.id, Ok(t.tx_hash)));
                    continue;
                }
            }
            ids.push(i.id);
            batch.push(Collection {
                payer: i.address,
                amount: i.amount,
                anchor: i.chain_anchor,
            });
        }
        if batch.is_empty() {
            return Ok((outcomes, 0));
        }
        let results = self.chain.collect_many(&batch).await?;
        self.fault_point(Fault::AbortAfterCollect);
        // A collection whose fate is unknown fails the run: it stays
        // pending, and the next run looks it up by its anchor.
        if let Some(Err(e)) = results
            .iter()
            .find(|r| r.as_ref().is_err_and(|e| !e.is_refusal()))
        {
            return Err(e.clone().into());
        }
        let sent = results.iter().filter(|r| r.is_ok()).count() as u64;
        for (id, r) in ids.into_iter().zip(results) {
            outcomes.push((id, r.map_err(|e| e.code().to_string())));
        }
        Ok((outcomes, sent))
    }

    /// The payout batches of `pending` that had not landed, one chain
    /// transaction each (all or nothing).
    async fn pay(
        &self,
        pending: Vec<db::Intent>,
        reconcile: bool,
    ) -> Result<(Vec<Outcome>, u64), SettleError> {
        let payout = self.chain.payout_account();
        let mut batches: Vec<(Anchor, Vec<db::Intent>)> = Vec::new();
        for i in pending {
            match batches.iter_mut().find(|(a, _)| *a == i.chain_anchor) {
                Some((_, b)) => b.push(i),
                None => batches.push((i.chain_anchor, vec![i])),
            }
        }
        let mut outcomes = Vec::new();
        let mut sent = 0;
        for (anchor, batch) in batches {
            if reconcile {
                let landed = self.chain.anchored(anchor).await?;
                if !landed.is_empty() {
                    // All or nothing: the batch landed; find each payment.
                    for i in &batch {
                        let t = landed.iter().find(|t| {
                            t.from == payout && t.to == i.address && t.amount == i.amount
                        });
                        outcomes.push((
                            i.id,
                            t.map(|t| t.tx_hash).ok_or_else(|| {
                                "payout batch landed without this payment".to_string()
                            }),
                        ));
                    }
                    tracing::info!(anchor = %anchor, "settlement payout batch had landed");
                    continue;
                }
            }
            let payments: Vec<(Address, u128)> =
                batch.iter().map(|i| (i.address, i.amount)).collect();
            let result = self.chain.payout(&payments, anchor).await;
            self.fault_point(Fault::AbortAfterPayout);
            match result {
                Ok(hashes) => {
                    sent += 1;
                    for (i, h) in batch.iter().zip(hashes) {
                        outcomes.push((i.id, Ok(h)));
                    }
                }
                // Its fate unknown: the run fails, the batch stays pending.
                Err(e) if !e.is_refusal() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(code = e.code(), "a payout batch was refused: {e}");
                    for i in &batch {
                        outcomes.push((i.id, Err(e.code().to_string())));
                    }
                }
            }
        }
        Ok((outcomes, sent))
    }

    /// Aborts the process here if the test fault says so.
    fn fault_point(&self, at: Fault) {
        if self.fault == Some(at) {
            tracing::error!("fault injection: aborting at {at:?}");
            std::process::abort();
        }
    }

    /// The invariants of the crate docs.
    async fn balanced(&self) -> Result<bool, SettleError> {
        let sums = self.db.sums().await?;
        let Some(baseline) = self.db.baseline().await? else {
            return Ok(true); // never ran
        };
        let balance = self.chain.balance_of(self.chain.payout_account()).await?;
        let owed = sums.carry + sums.held;
        Ok(sums.collected == sums.paid + owed && balance == baseline + owed)
    }
}

impl Settler {
    /// [`audit::audit`] of this settler's ledger and chain: it reads
    /// neither the journal nor anything else of this settler.
    pub async fn audit(&self) -> Result<SettleAudit, SettleError> {
        audit::audit(
            self.rows.as_ref(),
            self.chain.as_ref(),
            &self.resolve,
            self.config.page,
        )
        .await
    }
}

/// Any ledger store is a row source.
impl<S: brume_ledger::store::LedgerStore + ?Sized> RowSource for S {
    fn scan(&self, after: u64, limit: usize) -> LedgerFuture<'_, Vec<ScannedRow>> {
        let fut = brume_ledger::store::LedgerStore::scan(self, after, limit);
        Box::pin(async move {
            Ok(fut
                .await?
                .into_iter()
                .map(|(seq, row)| ScannedRow { seq, row })
                .collect())
        })
    }

    fn set_status(&self, update: brume_ledger::store::StatusUpdate) -> LedgerFuture<'_, ()> {
        brume_ledger::store::LedgerStore::set_status(self, update)
    }

    fn status_page(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> LedgerFuture<'_, Vec<(String, brume_ledger::store::EntityStatus)>> {
        brume_ledger::store::LedgerStore::status_page(self, after, limit)
    }
}
