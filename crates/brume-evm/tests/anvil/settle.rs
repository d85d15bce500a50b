//! brume-settle on anvil through `EvmChain`: the same ledger settles to
//! the same balances as on the dev chain, a run cut short anywhere resumes
//! without paying twice, and the audit reads the contract's logs and the
//! ledger alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use alloy::primitives::{Address, B256, U256};
use brume_chain::{
    ChainError, ChainFuture, Collection, DevChain, DevConfig, DevSettlement, Moved, Movement, TxPos,
};
use brume_identity::Identity;
use brume_ledger::row::{ExchangeRate, PayerPart, Payout, PrivateData, RowData, SealedRow};
use brume_ledger::store::{LedgerStore as _, SqliteStore};
use brume_settle::{SettleConfig, Settler, addresses_only};

use super::{BrumeToken, Chain, EvmError, TOKEN};

/// Who takes part: 3 requesters (anvil keys 2, 3, 4), 4 providers, 2
/// developers (one service each), the operator and its charity.
struct Parties {
    requesters: [Address; 3],
    providers: [Address; 4],
    developers: [Address; 2],
    operator: Address,
    charity: Address,
}

impl Parties {
    fn new(chain: &Chain) -> Parties {
        let fresh = || Identity::random().address();
        Parties {
            requesters: [chain.address(2), chain.address(3), chain.address(4)],
            providers: [fresh(), fresh(), fresh(), fresh()],
            developers: [fresh(), fresh()],
            operator: fresh(),
            charity: fresh(),
        }
    }

    fn all(&self) -> Vec<Address> {
        let mut v: Vec<Address> = self.requesters.to_vec();
        v.extend(self.providers);
        v.extend(self.developers);
        v.extend([self.operator, self.charity]);
        v
    }
}

const FUNDS: u128 = 1_000 * TOKEN;

/// `n` rows: requester `i % 3` pays for a unit of service `i % 2` run by
/// provider `i % 4`; the provider gets 70 %, the service's developer 20 %,
/// the charity 1 % and the operator the rest; every 5th row refunds the
/// requester a tenth (so it pays and is paid in one row).
fn rows(p: &Parties, from: u64, n: u64) -> Vec<SealedRow> {
    (from..from + n)
        .map(|i| {
            let k = i as usize;
            let fee: u128 = TOKEN / 1_000 + u128::from(i % 97) * 1_000_003;
            let requester = p.requesters[k % 3].to_string();
            let refund = if i % 5 == 0 { fee / 10 } else { 0 };
            let net = fee - refund;
            let (prov, dev, charity) = (net * 70 / 100, net * 20 / 100, net / 100);
            let op = net - prov - dev - charity;
            let mut payouts = vec![
                Payout {
                    beneficiary: p.providers[k % 4].to_string(),
                    role: "provider".into(),
                    amount: prov,
                },
                Payout {
                    beneficiary: p.developers[k % 2].to_string(),
                    role: "developer".into(),
                    amount: dev,
                },
                Payout {
                    beneficiary: p.operator.to_string(),
                    role: "operator".into(),
                    amount: op,
                },
                Payout {
                    beneficiary: p.charity.to_string(),
                    role: "charity".into(),
                    amount: charity,
                },
            ];
            if refund > 0 {
                payouts.push(Payout {
                    beneficiary: requester.clone(),
                    role: "refund".into(),
                    amount: refund,
                });
            }
            let data = RowData {
                schema_version: brume_ledger::row::SCHEMA_VERSION,
                work_id: format!("unit-{i:06}"),
                timestamp_ms: 1_700_000_000_000 + i,
                requester: requester.clone(),
                end_user: String::new(),
                provider: p.providers[k % 4].to_string(),
                developer: p.developers[k % 2].to_string(),
                operator: p.operator.to_string(),
                charities: vec![p.charity.to_string()],
                service_digest: format!("{:02x}", k % 2).repeat(32),
                tier: "standard".into(),
                usage: Default::default(),
                fee_currency: "EUR".into(),
                fee_micros: 1,
                token_amount: fee,
                surcharge: 0,
                rate: ExchangeRate::per_whole_token(1_000_000),
                payers: vec![PayerPart {
                    account: requester,
                    kind: "requester".into(),
                    amount: fee,
                }],
                payouts,
                price_multiplier_ppm: brume_ledger::pricing::MULTIPLIER_ONE,
                utilisation_ppm: 0,
            };
            let mut private = PrivateData::default();
            private.salt[..8].copy_from_slice(&i.to_be_bytes());
            SealedRow::seal(data, private).expect("seal")
        })
        .collect()
}

/// A ledger in `dir/ledger` holding `rows`.
async fn ledger(dir: &std::path::Path, rows: Vec<SealedRow>) -> Arc<SqliteStore> {
    let store = Arc::new(SqliteStore::open(&dir.join("ledger")).expect("ledger"));
    store.append_sealed(rows).await.expect("append");
    store
}

fn settler(
    dir: &std::path::Path,
    store: &Arc<SqliteStore>,
    chain: Arc<dyn brume_chain::Settlement>,
) -> Settler {
    Settler::open(
        &dir.join("settle"),
        store.clone(),
        chain,
        addresses_only(),
        SettleConfig::default(),
    )
    .expect("settler")
}

/// anvil with brume deployed, the requesters funded and allowing the
/// settlement contract; the operator's backend (1 confirmation).
async fn evm_world(
    chain: &Chain,
    p: &Parties,
) -> (brume_evm::Deployment, Arc<brume_evm::EvmChain>) {
    let d = chain.deploy().await;
    for (i, r) in p.requesters.iter().enumerate() {
        chain.fund(&d, *r, FUNDS).await;
        let token = BrumeToken::new(d.token, chain.as_key(2 + i));
        send!(token.approve(d.settlement, U256::from(FUNDS)))
            .await
            .expect("approve");
    }
    (d, Arc::new(chain.evm(&d, 1, 1).await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ledger_settles_to_the_same_balances_on_the_dev_chain_and_on_anvil() {
    let chain = Chain::start();
    let p = Parties::new(&chain);
    let dir = tempfile::tempdir().expect("tempdir");

    // The dev chain: the same requesters, the same funds and allowances.
    let dev_dir = dir.path().join("dev");
    let dev: Arc<dyn brume_chain::Chain> = Arc::new(
        DevChain::open(
            &dev_dir.join("chain"),
            &DevConfig::devnet(p.requesters.iter().map(|r| (*r, FUNDS)).collect()),
        )
        .expect("dev chain"),
    );
    let payout = Arc::new(Identity::random());
    for i in 0..3 {
        let key = Identity::from_bytes(chain.keys[2 + i].to_bytes().as_slice()).expect("key");
        dev.approve(&key, payout.address(), FUNDS)
            .await
            .expect("approve");
    }
    let on_dev = Arc::new(DevSettlement::new(dev, payout, p.operator));
    let (d, evm) = evm_world(&chain, &p).await;

    // Two runs of the same 3,000 units on each.
    let evm_dir = dir.path().join("evm");
    let mut balances = Vec::new();
    for (dir, s) in [
        (&dev_dir, on_dev.clone() as Arc<dyn brume_chain::Settlement>),
        (&evm_dir, evm.clone() as Arc<dyn brume_chain::Settlement>),
    ] {
        let store = ledger(dir, rows(&p, 0, 2_000)).await;
        let settler = settler(dir, &store, s.clone());
        let first = settler.run().await.expect("run");
        assert!(first.balanced, "{first:?}");
        assert_eq!(
            (first.rows, first.collections.len(), first.payouts.len()),
            (2_000, 3, 11)
        );
        store
            .append_sealed(rows(&p, 2_000, 1_000))
            .await
            .expect("append");
        let second = settler.run().await.expect("run");
        assert!(second.balanced && second.rows == 1_000, "{second:?}");
        assert_eq!(second.chain_txs, 4, "3 collections and one payout batch");
        let audit = settler.audit().await.expect("audit");
        assert!(audit.is_clean(), "{audit:?}");
        assert_eq!((audit.rows, audit.transfers), (3_000, 28));
        let mut b = Vec::new();
        for a in p.all().into_iter().chain([s.payout_account()]) {
            b.push(s.balance_of(a).await.expect("balance"));
        }
        balances.push(b);
    }
    assert_eq!(balances[0], balances[1], "identical balances, to the unit");
    // What the rows say, to the unit: requesters paid, the rest received.
    let (mut owed, mut paid) = (vec![0u128; 11], 0u128);
    for r in rows(&p, 0, 3_000) {
        let r = r.row();
        paid += r.data.token_amount;
        for o in &r.data.payouts {
            let i = p
                .all()
                .iter()
                .position(|a| a.to_string() == o.beneficiary)
                .expect("party");
            owed[i] += o.amount;
        }
    }
    let evm_balances = &balances[1];
    let spent: u128 = (0..3).map(|i| FUNDS + owed[i] - evm_balances[i]).sum();
    assert_eq!(spent, paid, "the requesters paid every unit");
    assert_eq!(evm_balances[3..11], owed[3..11]);
    assert_eq!(evm_balances[11], 0, "the payout account is empty");
    assert_eq!(chain.balance(&d, d.settlement).await, 0);
}

/// The contract's operations, with the next `ok` writes let through and
/// every later one landing and then reported lost (as if the broker died
/// right after sending it).
struct LosesAfter {
    inner: Arc<brume_evm::EvmChain>,
    ok: AtomicU32,
}

impl LosesAfter {
    fn lost(&self) -> bool {
        self.ok
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
    }
}

impl brume_chain::Settlement for LosesAfter {
    fn payout_account(&self) -> Address {
        self.inner.payout_account()
    }
    fn balance_of(&self, a: Address) -> ChainFuture<'_, u128> {
        brume_chain::Settlement::balance_of(self.inner.as_ref(), a)
    }
    fn collectable(&self, owner: Address) -> ChainFuture<'_, u128> {
        self.inner.collectable(owner)
    }
    fn collect(&self, payer: Address, amount: u128, anchor: B256) -> ChainFuture<'_, B256> {
        Box::pin(async move {
            let r =
                brume_chain::Settlement::collect(self.inner.as_ref(), payer, amount, anchor).await;
            if self.lost() {
                Err(ChainError::Closed)
            } else {
                r
            }
        })
    }
    fn collect_many<'a>(
        &'a self,
        batch: &'a [Collection],
    ) -> ChainFuture<'a, Vec<Result<B256, ChainError>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for c in batch {
                out.push(self.collect(c.payer, c.amount, c.anchor).await);
            }
            Ok(out)
        })
    }
    fn payout<'a>(
        &'a self,
        payments: &'a [(Address, u128)],
        anchor: B256,
    ) -> ChainFuture<'a, Vec<B256>> {
        Box::pin(async move {
            let r = brume_chain::Settlement::payout(self.inner.as_ref(), payments, anchor).await;
            if self.lost() {
                Err(ChainError::Closed)
            } else {
                r
            }
        })
    }
    fn anchored(&self, anchor: B256) -> ChainFuture<'_, Vec<Moved>> {
        brume_chain::Settlement::anchored(self.inner.as_ref(), anchor)
    }
    fn movements(&self, after: Option<TxPos>, limit: usize) -> ChainFuture<'_, Vec<Movement>> {
        self.inner.movements(after, limit)
    }
    fn stake_of(&self, provider: Address) -> ChainFuture<'_, u128> {
        self.inner.stake_of(provider)
    }
    fn slash(&self, provider: Address, amount: u128, evidence: B256) -> ChainFuture<'_, B256> {
        brume_chain::Settlement::slash(self.inner.as_ref(), provider, amount, evidence)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_on_anvil_resumes_after_any_lost_write_and_the_audit_needs_no_journal() {
    let chain = Chain::start();
    let p = Parties::new(&chain);
    let (d, evm) = evm_world(&chain, &p).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 3 collections and 1 payout batch a run: lose the 1st, 2nd … 4th write.
    let mut done = 0u64;
    for ok in 0..4u32 {
        let run_dir = dir.path().join(format!("run-{ok}"));
        let store = ledger(&run_dir, rows(&p, done, 300)).await;
        done += 300;
        let lossy = Arc::new(LosesAfter {
            inner: evm.clone(),
            ok: AtomicU32::new(ok),
        });
        let err = settler(&run_dir, &store, lossy)
            .run()
            .await
            .expect_err("lost");
        assert_eq!(err.code(), "closed", "{err}");
        // The next broker resumes from the journal and the contract's logs.
        let s = settler(&run_dir, &store, evm.clone());
        assert!(s.interrupted().await.expect("journal"));
        let report = s.run().await.expect("resume");
        assert!(report.resumed && report.balanced, "write {ok}: {report:?}");
        let audit = s.audit().await.expect("audit");
        assert!(audit.mismatched.is_empty(), "write {ok}: {audit:?}");
    }
    // Every beneficiary was paid once per run: exactly what the rows owe.
    let mut owed = std::collections::HashMap::<String, u128>::new();
    for r in rows(&p, 0, done) {
        for o in &r.row().data.payouts {
            *owed.entry(o.beneficiary.clone()).or_default() += o.amount;
        }
    }
    for b in p
        .providers
        .iter()
        .chain(&p.developers)
        .chain([&p.operator, &p.charity])
    {
        assert_eq!(chain.balance(&d, *b).await, owed[&b.to_string()], "{b}");
    }
    assert_eq!(chain.balance(&d, d.settlement).await, 0);

    // One ledger, the journal deleted: the audit reads the logs alone.
    // (Each run above had a ledger of its own; audit the last one against
    // a chain holding all four: the other runs' movements are untraced.)
    let last = dir.path().join("run-3");
    std::fs::remove_dir_all(last.join("settle")).expect("delete the journal");
    let store = Arc::new(SqliteStore::open(&last.join("ledger")).expect("ledger"));
    let audit = brume_settle::audit::audit(store.as_ref(), evm.as_ref(), &addresses_only(), 100)
        .await
        .expect("audit");
    assert!(audit.mismatched.is_empty(), "{audit:?}");
    assert_eq!(
        audit.untraced.len(),
        3 * 14,
        "the other three runs' movements: {audit:?}"
    );

    // A payout with no rows behind it is untraced.
    chain.fund(&d, d.settlement, 5).await;
    let stray = evm
        .payout(&[(p.charity, 5)], B256::repeat_byte(0x5a))
        .await
        .expect("payout");
    let audit = brume_settle::audit::audit(store.as_ref(), evm.as_ref(), &addresses_only(), 100)
        .await
        .expect("audit");
    assert!(
        audit
            .untraced
            .iter()
            .any(|u| u.contains(&stray.tx_hash.to_string())),
        "{audit:?}"
    );
    // A row pointed at it: the anchor is not what its rows make.
    let row = store.scan(0, 1).await.expect("scan").remove(0).1;
    store
        .set_status(brume_ledger::store::StatusUpdate {
            work_ids: vec![row.data.work_id.clone()],
            entity: p.charity.to_string(),
            status: brume_ledger::store::PaymentStatus::Paid,
            settling_tx: Some(stray.tx_hash.to_string()),
        })
        .await
        .expect("status");
    let audit = brume_settle::audit::audit(store.as_ref(), evm.as_ref(), &addresses_only(), 100)
        .await
        .expect("audit");
    assert!(
        audit.mismatched.iter().any(|m| m.contains("anchor 0x5a5a")),
        "{audit:?}"
    );
    // A tampered row fails its own hash and every group it is in.
    drop(store);
    let db = rusqlite::Connection::open(last.join("ledger/ledger.db")).expect("open");
    db.execute_batch(
        "DROP TRIGGER ledger_rows_no_update;
         UPDATE ledger_rows SET fuel = fuel + 1 WHERE rowid = 2;",
    )
    .expect("tamper");
    drop(db);
    let store = Arc::new(SqliteStore::open(&last.join("ledger")).expect("ledger"));
    let audit = brume_settle::audit::audit(store.as_ref(), evm.as_ref(), &addresses_only(), 100)
        .await
        .expect("audit");
    assert!(
        audit
            .mismatched
            .iter()
            .any(|m| m.contains("does not match its columns")),
        "{audit:?}"
    );
    assert!(
        audit
            .mismatched
            .iter()
            .filter(|m| m.contains("aggregate to"))
            .count()
            >= 1,
        "its collection's anchor: {audit:?}"
    );
}
