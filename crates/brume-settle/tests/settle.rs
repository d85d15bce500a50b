//! Settlement against the real ledger store and the real dev chain, with
//! the journal on each backend: SQLite in a temp dir, and PostgreSQL in a
//! fresh database of a throwaway cluster, connected as a role that owns
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use brume_chain::{
    Address, Anchor, B256, Call, Chain, ChainError, ChainFuture, DevChain, DevConfig,
    DevSettlement, Receipt, Settlement, SignedTx, Transfer, TxPos,
};
use brume_identity::Identity;
use brume_ledger::row::{
    Aggregate, ExchangeRate, PayerPart, Payout, PrivateData, RowData, RowUsage, SealedRow,
};
use brume_ledger::store::{LedgerStore, SqliteStore};
use brume_settle::{SettleConfig, Settler, addresses_only};

const FUNDS: u128 = 1_000_000_000_000_000_000_000;

/// Which backend a test's journal is on.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Where a world's journal is.
enum Journal {
    Sqlite,
    /// As the role that owns nothing, and as the owner.
    Postgres {
        app_url: String,
        owner_url: String,
    },
}

impl Journal {
    /// A fresh journal: for PostgreSQL, a new database whose owner creates
    /// the tables and grants the broker's role.
    async fn fresh(backend: Backend) -> Journal {
        if let Backend::Sqlite = backend {
            return Journal::Sqlite;
        }
        let cluster = tokio::task::spawn_blocking(brume_pg::Cluster::shared)
            .await
            .expect("join")
            .expect("a PostgreSQL cluster (Debian's postgresql)");
        Journal::fresh_on(cluster).await
    }

    /// A fresh database of `cluster`, set up as [`Journal::fresh`] does.
    async fn fresh_on(cluster: &brume_pg::Cluster) -> Journal {
        let db = cluster.database("settle").await.expect("database");
        brume_settle::setup_postgres(&db.owner_url, Some(brume_pg::cluster::APP_ROLE))
            .await
            .expect("create the tables as their owner, and grant");
        Journal::Postgres {
            app_url: db.app_url,
            owner_url: db.owner_url,
        }
    }
}

/// `async fn name(backend: Backend)` tests, once on each backend:
/// `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    one_collection_per_payer_one_payout_per_beneficiary_and_exact_balances,
    a_payer_without_allowance_is_flagged_and_its_rows_wait_whole,
    small_payouts_are_carried_over_until_they_reach_the_minimum,
    a_run_interrupted_anywhere_resumes_without_loss_or_double_transfer,
    every_row_is_settled_in_the_ledger_or_its_payer_is_flagged,
    rows_the_gate_holds_wait_whole_until_it_lets_them_go,
);

struct World {
    _dir: tempfile::TempDir,
    journal: Journal,
    dir: std::path::PathBuf,
    store: Arc<SqliteStore>,
    chain: Arc<DevChain>,
    payout: Arc<Identity>,
    requesters: Vec<Identity>,
    beneficiaries: Vec<Address>,
    next: u64,
    /// Expected balances, computed from the rows alone.
    owed: HashMap<Address, i128>,
}

impl World {
    async fn new(backend: Backend, requesters: usize, approve: &[bool]) -> World {
        World::with_journal(Journal::fresh(backend).await, requesters, approve).await
    }

    async fn with_journal(journal: Journal, requesters: usize, approve: &[bool]) -> World {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().to_path_buf();
        let requesters: Vec<Identity> = (0..requesters).map(|_| Identity::random()).collect();
        let genesis = requesters.iter().map(|r| (r.address(), FUNDS)).collect();
        let chain = Arc::new(
            DevChain::open(&path.join("chain"), &DevConfig::devnet(genesis)).expect("chain"),
        );
        let payout = Arc::new(Identity::random());
        for (r, ok) in requesters.iter().zip(approve) {
            if *ok {
                chain
                    .approve(r, payout.address(), FUNDS)
                    .await
                    .expect("approve");
            }
        }
        let store = Arc::new(SqliteStore::open(&path.join("ledger")).expect("ledger"));
        World {
            _dir: dir,
            journal,
            dir: path,
            store,
            chain,
            payout,
            requesters,
            beneficiaries: (0..5).map(|_| Identity::random().address()).collect(),
            next: 0,
            owed: HashMap::new(),
        }
    }

    /// Deletes the journal: its files, or its tables.
    async fn delete_journal(&self) {
        match &self.journal {
            Journal::Sqlite => {
                std::fs::remove_dir_all(self.dir.join("settle")).expect("delete the journal")
            }
            Journal::Postgres { owner_url, .. } => brume_pg::connect(owner_url)
                .await
                .expect("connect")
                .batch_execute("DROP SCHEMA brume_settle CASCADE")
                .await
                .expect("drop the journal's tables"),
        }
    }

    async fn settler(&self, chain: Arc<dyn Chain>, config: SettleConfig) -> Settler {
        let settlement = Arc::new(DevSettlement::new(
            chain,
            self.payout.clone(),
            Address::ZERO,
        ));
        let location = match &self.journal {
            Journal::Sqlite => self.dir.join("settle").display().to_string(),
            Journal::Postgres { app_url, .. } => app_url.clone(),
        };
        Settler::open_at(
            &location,
            self.store.clone(),
            settlement,
            addresses_only(),
            config,
        )
        .await
        .expect("settler")
    }

    /// Appends `n` rows paid by requester `r` (and, if `sponsor`, half by
    /// requester `sponsor`), paid out to the beneficiaries.
    async fn rows(&mut self, n: u64, r: usize, sponsor: Option<usize>) -> Vec<String> {
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            let fee: u128 = 1_000_000 + u128::from(i % 7) * 13;
            let requester = self.requesters[r].address();
            let payers = match sponsor {
                None => vec![PayerPart {
                    account: requester.to_string(),
                    kind: "requester".into(),
                    amount: fee,
                }],
                Some(s) => vec![
                    PayerPart {
                        account: requester.to_string(),
                        kind: "requester".into(),
                        amount: fee / 2,
                    },
                    PayerPart {
                        account: self.requesters[s].address().to_string(),
                        kind: "subsidy".into(),
                        amount: fee - fee / 2,
                    },
                ],
            };
            let shares = [60u128, 25, 10, 4];
            let mut payouts: Vec<Payout> = shares
                .iter()
                .enumerate()
                .map(|(k, s)| Payout {
                    beneficiary: self.beneficiaries[(i as usize + k) % 5].to_string(),
                    role: "provider".into(),
                    amount: fee * s / 100,
                })
                .collect();
            let rest = fee - payouts.iter().map(|p| p.amount).sum::<u128>();
            payouts.push(Payout {
                beneficiary: requester.to_string(),
                role: "refund".into(),
                amount: rest,
            });
            for p in &payers {
                *self
                    .owed
                    .entry(p.account.parse().expect("addr"))
                    .or_default() -= p.amount as i128;
            }
            for p in &payouts {
                *self
                    .owed
                    .entry(p.beneficiary.parse().expect("addr"))
                    .or_default() += p.amount as i128;
            }
            let data = RowData {
                schema_version: brume_ledger::row::SCHEMA_VERSION,
                work_id: format!("w-{i:06}"),
                timestamp_ms: 1_700_000_000_000 + i,
                requester: requester.to_string(),
                end_user: String::new(),
                provider: self.beneficiaries[0].to_string(),
                developer: String::new(),
                operator: String::new(),
                charities: Vec::new(),
                service_digest: "ab".repeat(32),
                tier: "standard".into(),
                usage: RowUsage::default(),
                fee_currency: "EUR".into(),
                fee_micros: 0,
                token_amount: fee,
                surcharge: 0,
                rate: ExchangeRate::per_whole_token(1_000_000),
                payers,
                payouts,
                price_multiplier_ppm: brume_ledger::pricing::MULTIPLIER_ONE,
                utilisation_ppm: 0,
            };
            ids.push(data.work_id.clone());
            rows.push(SealedRow::seal(data, PrivateData::default()).expect("seal"));
        }
        self.store.append_sealed(rows).await.expect("append");
        ids
    }

    /// Every account's balance moved exactly as the settled rows say.
    async fn check_balances(&self, settled_only_for: &[Address]) {
        for (addr, delta) in &self.owed {
            if settled_only_for.contains(addr) {
                continue;
            }
            let start: i128 = if self.requesters.iter().any(|r| r.address() == *addr) {
                FUNDS as i128
            } else {
                0
            };
            let balance = self.chain.balance_of(*addr).await.expect("balance") as i128;
            assert_eq!(balance, start + delta, "balance of {addr}");
        }
    }
}

async fn one_collection_per_payer_one_payout_per_beneficiary_and_exact_balances(backend: Backend) {
    let mut w = World::new(backend, 3, &[true, true, true]).await;
    w.rows(200, 0, None).await;
    w.rows(150, 1, Some(2)).await;
    w.rows(50, 2, None).await;
    let settler = w.settler(w.chain.clone(), SettleConfig::default()).await;
    let report = settler.run().await.expect("run");
    assert!(report.balanced, "{report:?}");
    assert_eq!(report.rows, 400);
    assert_eq!(report.rows_settled, 400);
    assert_eq!(report.collections.len(), 3, "one per payer");
    // 5 beneficiaries + the 3 requesters' refunds.
    assert_eq!(report.payouts.len(), 8, "one per beneficiary");
    // 3 collections and one payout batch.
    assert_eq!(report.chain_txs, 4);
    assert_eq!(report.collected, report.paid);
    assert_eq!(report.carry_over, 0);
    w.check_balances(&[]).await;
    assert_eq!(
        w.chain.balance_of(w.payout.address()).await.expect("bal"),
        0
    );

    // Each collection carries its group's XOR aggregate, each payment its
    // batch's anchor.
    let payout = w.payout.address();
    assert!(
        report
            .payouts
            .iter()
            .all(|l| l.anchor == report.payouts[0].anchor)
    );
    for (line, collect) in report
        .collections
        .iter()
        .map(|l| (l, true))
        .chain(report.payouts.iter().map(|l| (l, false)))
    {
        let anchor: Anchor = line.anchor.parse().expect("anchor");
        let landed = w
            .chain
            .transfers_by_anchor(anchor)
            .await
            .expect("by anchor");
        let mine: Vec<_> = landed
            .iter()
            .filter(|t| {
                if collect {
                    t.to == payout
                } else {
                    t.from == payout && t.to.to_string() == line.address
                }
            })
            .collect();
        assert_eq!(mine.len(), 1, "{line:?}");
        assert_eq!(mine[0].amount, line.amount);
        assert_eq!(Some(mine[0].tx_hash.to_string()), line.tx_hash);
    }
    let one = &report
        .collections
        .iter()
        .find(|l| l.account == w.requesters[0].address().to_string())
        .expect("r0");
    let mut agg = Aggregate::new();
    let mut after = 0;
    loop {
        let page = w.store.scan(after, 1000).await.expect("scan");
        let Some(last) = page.last() else { break };
        after = last.0;
        for (_, r) in &page {
            if r.data.payers.iter().any(|p| p.account == one.account) {
                agg.add(&r.row_hash.0);
            }
        }
    }
    assert_eq!(B256::from(agg.0.0).to_string(), one.anchor);

    // Per entity status of a row.
    let (seq, row) = w.store.scan(0, 1).await.expect("scan").remove(0);
    let status = settler.row_status(seq, &row).await.expect("status");
    assert!(
        status
            .iter()
            .all(|s| s.status == "collected" || s.status == "paid"),
        "{status:?}"
    );
    assert!(status.iter().all(|s| s.tx_hash.is_some()));

    // Nothing new: nothing sent.
    let again = settler.run().await.expect("run");
    assert_eq!(again.chain_txs, 0);
    assert!(again.balanced);

    // The audit recomputes every anchor from the ledger and finds it on
    // the chain: 3 collections and 8 payments.
    let audit = settler.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    assert_eq!(audit.transfers, 11);
    assert_eq!(audit.rows, 400);

    // A transfer out of the payout account that settlement didn't make is
    // named.
    w.chain.faucet(w.payout.address(), 5).await.expect("faucet");
    let stray = w
        .chain
        .transfer(&w.payout, w.beneficiaries[0], 5, [9u8; 32].into())
        .await
        .expect("stray transfer");
    let audit = settler.audit().await.expect("audit");
    assert_eq!(audit.untraced.len(), 1, "{audit:?}");
    assert!(audit.untraced[0].contains(&stray.tx_hash.to_string()));
    assert!(audit.mismatched.is_empty(), "{audit:?}");
    drop(settler);

    // The audit needs no journal: with it deleted, it reads the same.
    w.delete_journal().await;
    let chain: Arc<dyn Chain> = w.chain.clone();
    let settlement = DevSettlement::new(chain, w.payout.clone(), Address::ZERO);
    let audit = brume_settle::audit::audit(w.store.as_ref(), &settlement, &addresses_only(), 64)
        .await
        .expect("audit");
    assert_eq!(
        (audit.transfers, audit.untraced.len()),
        (12, 1),
        "{audit:?}"
    );
    assert!(audit.mismatched.is_empty(), "{audit:?}");

    // A payment under an anchor its rows don't make: the operator pays a
    // beneficiary its due again, and points a row's status at it.
    let (row_id, beneficiary, amount) = {
        let (_, row) = w.store.scan(0, 1).await.expect("scan").remove(0);
        let p = row.data.payouts[0].clone();
        (row.data.work_id, p.beneficiary, p.amount)
    };
    w.chain.faucet(payout, amount).await.expect("faucet");
    let forged = settlement
        .payout(
            &[(beneficiary.parse().expect("addr"), amount)],
            Anchor::repeat_byte(3),
        )
        .await
        .expect("payout");
    w.store
        .set_status(brume_ledger::store::StatusUpdate {
            work_ids: vec![row_id],
            entity: beneficiary,
            status: brume_ledger::store::PaymentStatus::Paid,
            settling_tx: Some(forged[0].to_string()),
        })
        .await
        .expect("status");
    let audit = brume_settle::audit::audit(w.store.as_ref(), &settlement, &addresses_only(), 64)
        .await
        .expect("audit");
    assert!(
        audit.mismatched.iter().any(|m| m.contains("anchor 0x0303")),
        "{audit:?}"
    );
    assert!(
        audit.mismatched.iter().any(|m| m.contains("rows sum to")),
        "the row's old group is short: {audit:?}"
    );
}

async fn a_payer_without_allowance_is_flagged_and_its_rows_wait_whole(backend: Backend) {
    // Requester 2 has approved nothing; it sponsors half of requester 1's rows.
    let mut w = World::new(backend, 3, &[true, true, false]).await;
    w.rows(20, 0, None).await;
    let blocked = w.rows(10, 1, Some(2)).await;
    let settler = w.settler(w.chain.clone(), SettleConfig::default()).await;
    let report = settler.run().await.expect("run");
    assert!(report.balanced, "{report:?}");
    assert_eq!(report.rows_settled, 20);
    assert_eq!(report.rows_deferred, 10);
    let r2 = w.requesters[2].address().to_string();
    assert!(
        report
            .flagged
            .iter()
            .any(|(a, why)| *a == r2 && why.starts_with("insufficient_allowance")),
        "{report:?}"
    );
    // Requester 1 paid nothing for the blocked rows: no half state.
    assert_eq!(report.collections.len(), 1, "{report:?}");
    assert_eq!(
        w.chain
            .balance_of(w.requesters[1].address())
            .await
            .expect("bal"),
        FUNDS
    );
    let row = w
        .store
        .get(&blocked[0], false)
        .await
        .expect("get")
        .expect("row");
    let seq = w.store.scan(20, 1).await.expect("scan")[0].0;
    let status = settler.row_status(seq, &row).await.expect("status");
    assert!(
        status
            .iter()
            .all(|s| s.status == "deferred" || s.status == "unsettled"),
        "{status:?}"
    );

    // Once it approves, the next run settles the deferred rows.
    w.chain
        .approve(&w.requesters[2], w.payout.address(), FUNDS)
        .await
        .expect("approve");
    let report = settler.run().await.expect("run");
    assert!(report.balanced, "{report:?}");
    assert_eq!(report.rows, 0);
    assert_eq!(report.rows_settled, 10);
    assert_eq!(report.rows_deferred, 0);
    w.check_balances(&[]).await;
    let audit = settler.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    let status = settler.row_status(seq, &row).await.expect("status");
    assert!(
        status
            .iter()
            .all(|s| s.status == "collected" || s.status == "paid"),
        "{status:?}"
    );
}

async fn small_payouts_are_carried_over_until_they_reach_the_minimum(backend: Backend) {
    let mut w = World::new(backend, 1, &[true]).await;
    let first_ids = w.rows(3, 0, None).await;
    let config = SettleConfig {
        min_payout: 2_000_000,
        ..SettleConfig::default()
    };
    let settler = w.settler(w.chain.clone(), config).await;
    let first = settler.run().await.expect("run");
    assert!(first.balanced, "{first:?}");
    assert!(first.carry_over > 0);
    let held = w.chain.balance_of(w.payout.address()).await.expect("bal");
    assert_eq!(
        held, first.carry_over,
        "the payout account holds exactly the carry-over"
    );
    w.rows(40, 0, None).await;
    let second = settler.run().await.expect("run");
    assert!(second.balanced, "{second:?}");
    let total_collected = first.collected + second.collected;
    let total_paid = first.paid + second.paid;
    assert_eq!(total_collected, total_paid + second.carry_over);
    assert!(second.carry_over < first.carry_over + second.collected);
    let audit = settler.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    // The first rows' beneficiaries were carried over, then paid: the
    // ledger's status column says so once they are.
    let statuses = w.store.statuses(&first_ids[0]).await.expect("statuses");
    let paid_in_second = |s: &&brume_ledger::store::EntityStatus| {
        s.status == brume_ledger::store::PaymentStatus::Paid
            && second
                .payouts
                .iter()
                .any(|l| l.account == s.entity && l.tx_hash == s.settling_tx)
    };
    assert!(statuses.iter().any(|s| paid_in_second(&s)), "{statuses:?}");
}

/// A chain that lets `send` through, then reports a crash (as if the
/// process died after the transfers landed), or fails before sending.
struct Crashing {
    inner: Arc<DevChain>,
    /// Sends to let through before misbehaving.
    ok_sends: AtomicU32,
    land_then_fail: bool,
    /// Instead: let the send land, then crash this PostgreSQL server (the
    /// journal's) before answering.
    crash_db: Option<Arc<brume_pg::Cluster>>,
}

impl Chain for Crashing {
    fn chain_id(&self) -> u64 {
        self.inner.chain_id()
    }
    fn block_number(&self) -> ChainFuture<'_, u64> {
        self.inner.block_number()
    }
    fn total_supply(&self) -> ChainFuture<'_, u128> {
        self.inner.total_supply()
    }
    fn balance_of(&self, a: Address) -> ChainFuture<'_, u128> {
        self.inner.balance_of(a)
    }
    fn allowance(&self, o: Address, s: Address) -> ChainFuture<'_, u128> {
        self.inner.allowance(o, s)
    }
    fn nonce(&self, a: Address) -> ChainFuture<'_, u64> {
        self.inner.nonce(a)
    }
    fn send<'a>(
        &'a self,
        signer: &'a Identity,
        calls: Vec<Call>,
    ) -> ChainFuture<'a, Vec<Result<Receipt, ChainError>>> {
        Box::pin(async move {
            let left = self.ok_sends.load(Ordering::SeqCst);
            if left > 0 {
                self.ok_sends.store(left - 1, Ordering::SeqCst);
                return self.inner.send(signer, calls).await;
            }
            if let Some(cluster) = &self.crash_db {
                let landed = self.inner.send(signer, calls).await;
                let cluster = cluster.clone();
                tokio::task::spawn_blocking(move || cluster.crash())
                    .await
                    .expect("join")
                    .expect("crash the journal's server");
                return landed;
            }
            if self.land_then_fail {
                self.inner.send(signer, calls).await?;
            }
            Err(ChainError::Closed)
        })
    }
    fn submit(&self, txs: Vec<SignedTx>) -> ChainFuture<'_, Vec<Result<Receipt, ChainError>>> {
        self.inner.submit(txs)
    }
    fn receipt(&self, h: B256) -> ChainFuture<'_, Option<Receipt>> {
        self.inner.receipt(h)
    }
    fn transfers_by_anchor(&self, a: Anchor) -> ChainFuture<'_, Vec<Transfer>> {
        self.inner.transfers_by_anchor(a)
    }
    fn history(
        &self,
        a: Address,
        after: Option<TxPos>,
        limit: usize,
    ) -> ChainFuture<'_, Vec<Transfer>> {
        self.inner.history(a, after, limit)
    }
    fn faucet(&self, to: Address, amount: u128) -> ChainFuture<'_, Receipt> {
        self.inner.faucet(to, amount)
    }
}

/// The journal's PostgreSQL server crashes just after a batch of transfers
/// landed, before the run could record them (after the collections, then
/// after the payouts): the run fails with `settlement_store`, and once the
/// server is back the next run resumes, finds the landed transfers by
/// their anchors, and sends nothing twice: every balance is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_server_crash_after_transfers_land_loses_nothing() {
    let cluster = tokio::task::spawn_blocking(brume_pg::Cluster::start)
        .await
        .expect("join")
        .expect("a PostgreSQL cluster of this test's own");
    let cluster = Arc::new(cluster);
    for ok_sends in [0, 1] {
        let journal = Journal::fresh_on(&cluster).await;
        let mut w = World::with_journal(journal, 2, &[true, true]).await;
        w.rows(30, 0, None).await;
        w.rows(30, 1, Some(0)).await;
        let crashing: Arc<dyn Chain> = Arc::new(Crashing {
            inner: w.chain.clone(),
            ok_sends: AtomicU32::new(ok_sends),
            land_then_fail: false,
            crash_db: Some(cluster.clone()),
        });
        let broken = w.settler(crashing, SettleConfig::default()).await;
        let err = broken
            .run()
            .await
            .expect_err("the journal's server went away");
        assert_eq!(err.code(), "settlement_store", "{err}");
        drop(broken);
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.restart())
            .await
            .expect("join")
            .expect("restart the server");
        let settler = w.settler(w.chain.clone(), SettleConfig::default()).await;
        let resumed = settler.run().await.expect("resume");
        assert!(resumed.resumed, "case {ok_sends}: {resumed:?}");
        assert!(resumed.balanced, "{resumed:?}");
        w.check_balances(&[]).await;
        assert_eq!(
            w.chain.balance_of(w.payout.address()).await.expect("bal"),
            0,
            "case {ok_sends}: the payout account holds nothing"
        );
    }
}

/// Crashes at each of the four points of a run (before or after each of
/// the two batches lands), then runs again with a healthy chain: every
/// balance is exact, so nothing was lost or sent twice.
async fn a_run_interrupted_anywhere_resumes_without_loss_or_double_transfer(backend: Backend) {
    for (ok_sends, land_then_fail) in [(0, false), (0, true), (1, false), (1, true)] {
        let mut w = World::new(backend, 2, &[true, true]).await;
        w.rows(30, 0, None).await;
        w.rows(30, 1, Some(0)).await;
        let crashing: Arc<dyn Chain> = Arc::new(Crashing {
            inner: w.chain.clone(),
            ok_sends: AtomicU32::new(ok_sends),
            land_then_fail,
            crash_db: None,
        });
        let broken = w.settler(crashing, SettleConfig::default()).await;
        let err = broken.run().await.expect_err("the chain went away");
        assert_eq!(err.code(), "closed", "{err}");
        drop(broken);
        // Rows appended meanwhile wait for the next run.
        w.rows(5, 1, None).await;
        let settler = w.settler(w.chain.clone(), SettleConfig::default()).await;
        let resumed = settler.run().await.expect("resume");
        assert!(resumed.resumed, "case {ok_sends}/{land_then_fail}");
        assert!(resumed.balanced, "{resumed:?}");
        let last = settler.run().await.expect("the rows appended meanwhile");
        assert_eq!(last.rows, 5);
        assert!(last.balanced);
        w.check_balances(&[]).await;
        assert_eq!(
            w.chain.balance_of(w.payout.address()).await.expect("bal"),
            0
        );
        // Every collection anchor landed exactly once.
        for s in settler.transfers().await.expect("sent") {
            let landed = w
                .chain
                .transfers_by_anchor(s.anchor.parse().expect("anchor"))
                .await
                .expect("by anchor");
            let payout = w.payout.address();
            let same = landed
                .iter()
                .filter(|t| {
                    t.amount.to_string() == s.amount
                        && if s.kind == "collect" {
                            t.to == payout
                        } else {
                            t.from == payout && t.to.to_string() == s.address
                        }
                })
                .count();
            assert_eq!(same, 1, "case {ok_sends}/{land_then_fail}: {s:?}");
        }
        let audit = settler.audit().await.expect("audit");
        assert!(
            audit.is_clean(),
            "case {ok_sends}/{land_then_fail}: {audit:?}"
        );
    }
}

/// Whether the ledger's status column says `work_id` was settled: every
/// payer `collected` and every beneficiary `paid`, each with the
/// transaction that did it.
async fn settled_in_ledger(store: &SqliteStore, work_id: &str) -> bool {
    use brume_ledger::store::PaymentStatus;
    let row = store.get(work_id, false).await.expect("get").expect("row");
    let statuses = store.statuses(work_id).await.expect("statuses");
    let has = |entity: &str, status: PaymentStatus| {
        statuses
            .iter()
            .any(|s| s.entity == entity && s.status == status && s.settling_tx.is_some())
    };
    // An entity that pays and receives in one row (a requester's refund)
    // ends `paid`.
    let receives = |a: &str| row.data.payouts.iter().any(|p| p.beneficiary == a);
    row.data.payers.iter().all(|p| {
        has(&p.account, PaymentStatus::Collected)
            || (receives(&p.account) && has(&p.account, PaymentStatus::Paid))
    }) && row
        .data
        .payouts
        .iter()
        .all(|p| has(&p.beneficiary, PaymentStatus::Paid))
}

/// A property over random mixes of payers (some without allowance, some
/// approving later) and runs: after every run, each row is settled in the
/// ledger's status column, or one of its payers is flagged by that run with
/// a reason (what `/v1/status` shows). Once every payer has approved, every
/// row is settled: none is deferred forever.
async fn every_row_is_settled_in_the_ledger_or_its_payer_is_flagged(backend: Backend) {
    for seed in 1..=6u64 {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let approve: Vec<bool> = (0..4).map(|_| next(3) != 0).collect();
        let mut w = World::new(backend, 4, &approve).await;
        let settler = w.settler(w.chain.clone(), SettleConfig::default()).await;
        let mut ids: Vec<(String, Vec<String>)> = Vec::new();
        let mut approved = approve.clone();
        for _round in 0..3 {
            for _batch in 0..1 + next(3) {
                let r = next(4) as usize;
                let sponsor = (next(2) == 0).then(|| next(4) as usize).filter(|s| *s != r);
                let payers: Vec<String> = std::iter::once(r)
                    .chain(sponsor)
                    .map(|i| w.requesters[i].address().to_string())
                    .collect();
                for id in w.rows(1 + next(12), r, sponsor).await {
                    ids.push((id, payers.clone()));
                }
            }
            let report = settler.run().await.expect("run");
            assert!(report.balanced, "seed {seed}: {report:?}");
            for (id, payers) in &ids {
                if settled_in_ledger(&w.store, id).await {
                    continue;
                }
                assert!(
                    payers.iter().any(|p| report
                        .flagged
                        .iter()
                        .any(|(a, why)| a == p && !why.is_empty())),
                    "seed {seed}: row {id} (payers {payers:?}) neither settled nor flagged: {:?} {report:?}",
                    w.store.statuses(id).await
                );
            }
            // A payer approves now and then.
            let late = next(4) as usize;
            if !approved[late] {
                w.chain
                    .approve(&w.requesters[late], w.payout.address(), FUNDS)
                    .await
                    .expect("approve");
                approved[late] = true;
            }
        }
        for (i, ok) in approved.iter().enumerate() {
            if !ok {
                w.chain
                    .approve(&w.requesters[i], w.payout.address(), FUNDS)
                    .await
                    .expect("approve");
            }
        }
        let report = settler.run().await.expect("run");
        assert_eq!(report.rows_deferred, 0, "seed {seed}: {report:?}");
        for (id, _) in &ids {
            assert!(
                settled_in_ledger(&w.store, id).await,
                "seed {seed}: row {id} not settled"
            );
        }
        w.check_balances(&[]).await;
        // Deferred rows, held parts and refunds: the audit from the ledger
        // and the chain alone still traces every token.
        let audit = settler.audit().await.expect("audit");
        assert!(audit.is_clean(), "seed {seed}: {audit:?}");
    }
}

/// Holds the rows whose work ids it lists.
struct Holding(std::sync::Mutex<std::collections::HashSet<String>>);

impl brume_settle::Gate for Holding {
    fn held(&self, work_id: &str) -> bool {
        self.0.lock().map(|h| h.contains(work_id)).unwrap_or(true)
    }
}

async fn rows_the_gate_holds_wait_whole_until_it_lets_them_go(backend: Backend) {
    let mut w = World::new(backend, 2, &[true, true]).await;
    let held_ids = w.rows(5, 0, Some(1)).await;
    w.rows(20, 1, None).await;
    let gate = Arc::new(Holding(std::sync::Mutex::new(
        held_ids.iter().cloned().collect(),
    )));
    let settler = w
        .settler(w.chain.clone(), SettleConfig::default())
        .await
        .with_gate(gate.clone());
    let first = settler.run().await.expect("run");
    assert!(first.balanced, "{first:?}");
    assert_eq!((first.rows_settled, first.rows_deferred), (20, 5));
    assert!(first.flagged.is_empty(), "held, not flagged: {first:?}");
    let (seq, row) = w.store.scan(0, 1).await.expect("scan").remove(0);
    let status = settler.row_status(seq, &row).await.expect("status");
    assert!(
        status
            .iter()
            .all(|s| s.status == "deferred" || s.status == "unsettled"),
        "{status:?}"
    );

    // Still held: nothing moves for them.
    let again = settler.run().await.expect("run");
    assert_eq!((again.rows_settled, again.rows_deferred), (0, 5));
    assert_eq!(again.chain_txs, 0);

    // Let go: they settle whole, and every balance is what the rows say.
    gate.0.lock().expect("lock").clear();
    let last = settler.run().await.expect("run");
    assert!(last.balanced, "{last:?}");
    assert_eq!((last.rows_settled, last.rows_deferred), (5, 0));
    w.check_balances(&[]).await;
    let audit = settler.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}
