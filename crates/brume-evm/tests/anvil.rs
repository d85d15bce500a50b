//! brume's contracts on a real anvil, through the Rust bindings: every
//! function, every event and every revert. anvil's clock is moved with
//! `evm_increaseTime`, never waited for.

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::ext::AnvilApi as _;
use alloy::providers::{DynProvider, Provider as _};
use alloy::signers::local::PrivateKeySigner;
use brume_evm::{
    AnchoredTransfer, BrumeToken, DeployConfig, Deployment, EvmChain, EvmConfig, EvmError,
    Settlement, Stake, deploy, stake_error,
};

const TOKEN: u128 = 1_000_000_000_000_000_000;
const DELAY_S: u64 = 7 * 86_400;

/// An anvil, its funded keys, and a provider signing as each.
struct Chain {
    _anvil: AnvilInstance,
    /// 0: the deployer and token holder, 1: the operator, 2..: others.
    keys: Vec<PrivateKeySigner>,
    url: alloy::transports::http::reqwest::Url,
}

impl Chain {
    fn start() -> Chain {
        let path = brume_evm::find_anvil().unwrap_or_else(|e| panic!("{e}"));
        let anvil = Anvil::new().path(path).try_spawn().expect("anvil starts");
        let keys = anvil
            .keys()
            .iter()
            .map(|k| PrivateKeySigner::from(k.clone()))
            .collect();
        let url = anvil.endpoint_url();
        Chain {
            _anvil: anvil,
            keys,
            url,
        }
    }

    fn address(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    /// A provider whose transactions `keys[i]` signs.
    fn as_key(&self, i: usize) -> DynProvider {
        brume_evm::signing_provider(self.url.clone(), self.keys[i].clone())
    }

    /// The operator's backend as `keys[i]`, looking every few ms.
    async fn evm(&self, d: &Deployment, i: usize, confirmations: u64) -> EvmChain {
        let mut config = EvmConfig::new(self.url.clone(), *d);
        config.confirmations = confirmations;
        config.poll = std::time::Duration::from_millis(5);
        config.resend_after = 2;
        EvmChain::connect(config, self.keys[i].clone())
            .await
            .expect("connects")
    }

    async fn deploy(&self) -> Deployment {
        let config = DeployConfig {
            name: "Brume".into(),
            symbol: "BRM".into(),
            holder: self.address(0),
            supply: U256::from(1_000_000 * TOKEN),
            operator: self.address(1),
            unbonding_delay_s: DELAY_S,
        };
        deploy(&self.as_key(0), &config).await.expect("deploys")
    }

    /// Gives `to` `amount` tokens from the holder.
    async fn fund(&self, d: &Deployment, to: Address, amount: u128) {
        let token = BrumeToken::new(d.token, self.as_key(0));
        token
            .transfer(to, U256::from(amount))
            .send()
            .await
            .expect("send")
            .get_receipt()
            .await
            .expect("receipt");
    }

    async fn balance(&self, d: &Deployment, of: Address) -> u128 {
        let token = BrumeToken::new(d.token, self.as_key(0));
        token
            .balanceOf(of)
            .call()
            .await
            .expect("balance")
            .to::<u128>()
    }
}

/// Sends a contract call and waits for its receipt, its revert read with
/// the called contract's errors (settlement's by default).
macro_rules! send {
    ($call:expr) => {
        send!($call, brume_evm::settlement_error)
    };
    ($call:expr, $decode:expr) => {
        async {
            let pending = $call.send().await.map_err($decode)?;
            Ok::<_, EvmError>(pending.get_receipt().await?)
        }
    };
}

/// Asserts that `result` is the refusal `pattern`, showing it if not.
macro_rules! assert_refused {
    ($result:expr, $pattern:pat) => {{
        let result = &$result;
        assert!(matches!(result, $pattern), "{result:?}");
    }};
}

fn anchor(n: u8) -> B256 {
    B256::repeat_byte(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_collects_and_pays_out_in_batches_each_anchor_once() {
    let chain = Chain::start();
    let d = chain.deploy().await;
    let (payer, b1, b2, b3) = (
        chain.address(2),
        chain.address(3),
        chain.address(4),
        chain.address(5),
    );
    chain.fund(&d, payer, 100 * TOKEN).await;
    let token = BrumeToken::new(d.token, chain.as_key(2));
    send!(token.approve(d.settlement, U256::from(60 * TOKEN)))
        .await
        .expect("approve");

    let operator = Settlement::new(d.settlement, chain.as_key(1));
    let receipt = send!(operator.collect(payer, U256::from(50 * TOKEN), anchor(1)))
        .await
        .expect("collect");
    let collected = receipt
        .decoded_log::<Settlement::Collected>()
        .expect("a Collected event");
    assert_eq!(
        (collected.payer, collected.amount, collected.anchor),
        (payer, U256::from(50 * TOKEN), anchor(1))
    );
    assert_eq!(chain.balance(&d, d.settlement).await, 50 * TOKEN);

    // One transaction pays three beneficiaries, each transfer under the
    // anchor.
    let (to, amounts) = (
        vec![b1, b2, b3],
        vec![
            U256::from(10 * TOKEN),
            U256::from(15 * TOKEN),
            U256::from(25 * TOKEN),
        ],
    );
    let receipt = send!(operator.payout(to.clone(), amounts.clone(), anchor(2)))
        .await
        .expect("payout");
    let paid: Vec<_> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| l.log_decode::<Settlement::Paid>().ok())
        .map(|l| (l.inner.beneficiary, l.inner.amount, l.inner.anchor))
        .collect();
    assert_eq!(
        paid,
        vec![
            (b1, amounts[0], anchor(2)),
            (b2, amounts[1], anchor(2)),
            (b3, amounts[2], anchor(2)),
        ]
    );
    assert_eq!(chain.balance(&d, b3).await, 25 * TOKEN);
    assert_eq!(chain.balance(&d, d.settlement).await, 0);

    // Every revert, typed.
    let reused = send!(operator.collect(payer, U256::from(TOKEN), anchor(1))).await;
    assert_refused!(
        reused,
        Err(EvmError::Settlement(
            Settlement::SettlementErrors::AnchorUsed(_)
        ))
    );
    let stranger = Settlement::new(d.settlement, chain.as_key(3));
    let refused = send!(stranger.collect(payer, U256::from(TOKEN), anchor(3))).await;
    assert_refused!(
        refused,
        Err(EvmError::Settlement(
            Settlement::SettlementErrors::NotOperator(_)
        ))
    );
    let refused = send!(stranger.payout(vec![b1], vec![U256::from(1)], anchor(3))).await;
    assert_refused!(
        refused,
        Err(EvmError::Settlement(
            Settlement::SettlementErrors::NotOperator(_)
        ))
    );
    let mismatch = send!(operator.payout(vec![b1, b2], vec![U256::from(1)], anchor(4))).await;
    assert_refused!(
        mismatch,
        Err(EvmError::Settlement(
            Settlement::SettlementErrors::LengthMismatch(_)
        ))
    );
    let empty = send!(operator.payout(vec![], vec![], anchor(4))).await;
    assert_refused!(
        empty,
        Err(EvmError::Settlement(
            Settlement::SettlementErrors::EmptyPayout(_)
        ))
    );
    // More than the allowance left (10 tokens): the token's own error.
    let over = send!(operator.collect(payer, U256::from(11 * TOKEN), anchor(5))).await;
    assert_refused!(
        over,
        Err(EvmError::Token(
            BrumeToken::BrumeTokenErrors::ERC20InsufficientAllowance(_)
        ))
    );
    // More than the payout account holds.
    let over = send!(operator.payout(vec![b1], vec![U256::from(TOKEN)], anchor(6))).await;
    assert_refused!(
        over,
        Err(EvmError::Token(
            BrumeToken::BrumeTokenErrors::ERC20InsufficientBalance(_)
        ))
    );
    // A refused call used no anchor.
    assert!(!operator.used(anchor(5)).call().await.expect("used"));
    assert!(operator.used(anchor(2)).call().await.expect("used"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_is_slashed_with_evidence_and_withdrawn_after_unbonding() {
    let chain = Chain::start();
    let d = chain.deploy().await;
    let (provider, operator_addr) = (chain.address(2), chain.address(1));
    chain.fund(&d, provider, 100 * TOKEN).await;
    let token = BrumeToken::new(d.token, chain.as_key(2));
    send!(token.approve(d.stake, U256::from(100 * TOKEN)))
        .await
        .expect("approve");
    let mine = Stake::new(d.stake, chain.as_key(2));
    let operator = chain.evm(&d, 1, 1).await;

    let zero = send!(mine.deposit(U256::ZERO), stake_error).await;
    assert_refused!(
        zero,
        Err(EvmError::Stake(Stake::StakeErrors::ZeroAmount(_)))
    );
    send!(mine.deposit(U256::from(60 * TOKEN)), stake_error)
        .await
        .expect("deposit");
    assert_eq!(
        mine.staked(provider).call().await.expect("staked"),
        U256::from(60 * TOKEN)
    );

    // Slashed by the operator only, with the evidence in the event.
    let evidence = B256::repeat_byte(0xee);
    let stranger = chain.evm(&d, 3, 1).await;
    let refused = stranger.slash(provider, TOKEN, evidence).await;
    assert_refused!(
        refused,
        Err(EvmError::Stake(Stake::StakeErrors::NotOperator(_)))
    );
    let landed = operator
        .slash(provider, 10 * TOKEN, evidence)
        .await
        .expect("slash");
    let receipt = chain
        .as_key(0)
        .get_transaction_receipt(landed.tx_hash)
        .await
        .expect("rpc")
        .expect("a receipt");
    let slashed = receipt
        .decoded_log::<Stake::Slashed>()
        .expect("a Slashed event");
    assert_eq!(
        (slashed.provider, slashed.amount, slashed.evidence),
        (provider, U256::from(10 * TOKEN), evidence)
    );
    assert_eq!(chain.balance(&d, operator_addr).await, 10 * TOKEN);
    let too_much = operator.slash(provider, 51 * TOKEN, evidence).await;
    assert_refused!(
        too_much,
        Err(EvmError::Stake(Stake::StakeErrors::InsufficientStake(_)))
    );

    // Unbonding: nothing before the delay, still slashable meanwhile.
    let nothing = send!(mine.withdraw(), stake_error).await;
    assert_refused!(
        nothing,
        Err(EvmError::Stake(Stake::StakeErrors::NothingUnbonding(_)))
    );
    let over = send!(mine.requestWithdrawal(U256::from(51 * TOKEN)), stake_error).await;
    assert_refused!(
        over,
        Err(EvmError::Stake(Stake::StakeErrors::InsufficientStake(_)))
    );
    send!(mine.requestWithdrawal(U256::from(50 * TOKEN)), stake_error)
        .await
        .expect("request");
    let early = send!(mine.withdraw(), stake_error).await;
    assert_refused!(
        early,
        Err(EvmError::Stake(Stake::StakeErrors::StillBonded(_)))
    );
    operator
        .slash(provider, 5 * TOKEN, evidence)
        .await
        .expect("slash while unbonding");
    assert_eq!(
        operator.slashable(provider).await.expect("slashable"),
        45 * TOKEN
    );
    let rpc = chain.as_key(0);
    rpc.anvil_increase_time(DELAY_S).await.expect("time");
    rpc.evm_mine(None).await.expect("mine");
    send!(mine.withdraw(), stake_error).await.expect("withdraw");
    assert_eq!(chain.balance(&d, provider).await, 85 * TOKEN);
    assert_eq!(
        mine.slashable(provider).call().await.expect("slashable"),
        U256::ZERO
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_backend_survives_reverts_restarts_and_dropped_transactions() {
    let chain = Chain::start();
    let d = chain.deploy().await;
    let (operator, payer, b1, b2) = (
        chain.address(1),
        chain.address(2),
        chain.address(3),
        chain.address(4),
    );
    chain.fund(&d, operator, 10 * TOKEN).await;
    chain.fund(&d, payer, 100 * TOKEN).await;
    let evm = chain.evm(&d, 1, 1).await;

    // A revert is typed, and spends no nonce: the next write lands.
    let refused = evm.collect(payer, TOKEN, anchor(1)).await;
    assert_refused!(
        refused,
        Err(EvmError::Token(
            BrumeToken::BrumeTokenErrors::ERC20InsufficientAllowance(_)
        ))
    );
    let token = BrumeToken::new(d.token, chain.as_key(2));
    send!(token.approve(d.settlement, U256::from(100 * TOKEN)))
        .await
        .expect("approve");
    evm.collect(payer, 30 * TOKEN, anchor(1))
        .await
        .expect("collect after a revert");
    assert_eq!(evm.allowance(payer).await.expect("allowance"), 70 * TOKEN);

    // A restarted broker reads its nonce from the chain; the old handle,
    // now behind, re-reads it when the node refuses its nonce.
    let restarted = chain.evm(&d, 1, 1).await;
    restarted
        .collect(payer, 20 * TOKEN, anchor(2))
        .await
        .expect("collect after a restart");
    evm.payout(&[(b1, 5 * TOKEN)], anchor(3))
        .await
        .expect("a stale nonce is re-read");

    // Confirmation depth: with mining by hand, a payout returns only
    // once it is 3 blocks deep.
    let rpc = chain.as_key(0);
    rpc.anvil_set_auto_mine(false).await.expect("automine off");
    let deep = std::sync::Arc::new(chain.evm(&d, 1, 3).await);
    let payout = tokio::spawn({
        let deep = deep.clone();
        async move {
            deep.payout(&[(b1, 10 * TOKEN), (b2, 15 * TOKEN)], anchor(4))
                .await
        }
    });
    let landed = mine_until_done(&rpc, payout).await;
    let head = rpc.get_block_number().await.expect("head");
    assert!(head >= landed.block + 2, "{landed:?} at head {head}");

    // A transaction the node drops is sent again, once it is missed.
    let collect = tokio::spawn({
        let deep = deep.clone();
        async move { deep.collect(payer, 40 * TOKEN, anchor(5)).await }
    });
    wait_pending(&rpc, operator).await;
    rpc.anvil_drop_all_transactions().await.expect("drop");
    let landed = mine_until_done(&rpc, collect).await;
    assert!(landed.resends >= 1, "{landed:?}");
    rpc.anvil_set_auto_mine(true).await.expect("automine on");

    // Every token under each anchor, from the contract's events, once.
    let collected = evm.collected(anchor(5)).await.expect("logs");
    assert_eq!(
        collected
            .iter()
            .map(|t| (t.party, t.amount, t.anchor))
            .collect::<Vec<_>>(),
        vec![(payer, 40 * TOKEN, anchor(5))]
    );
    let paid: Vec<AnchoredTransfer> = evm.paid(anchor(4)).await.expect("logs");
    assert_eq!(
        paid.iter().map(|t| (t.party, t.amount)).collect::<Vec<_>>(),
        vec![(b1, 10 * TOKEN), (b2, 15 * TOKEN)]
    );
    assert!(evm.anchor_used(anchor(5)).await.expect("used"));
    assert!(!evm.anchor_used(anchor(6)).await.expect("used"));
    // 30 + 20 + 40 collected, 5 + 25 paid.
    assert_eq!(
        evm.balance_of(d.settlement).await.expect("balance"),
        60 * TOKEN
    );
    assert_eq!(evm.balance_of(b1).await.expect("balance"), 15 * TOKEN);
}

/// Waits until `account` has a transaction in the node's pool.
async fn wait_pending(rpc: &DynProvider, account: Address) {
    loop {
        let latest = rpc.get_transaction_count(account).await.expect("count");
        let pending = rpc
            .get_transaction_count(account)
            .pending()
            .await
            .expect("count");
        if pending > latest {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Mines a block at a time until `write` is done: it waits on
/// confirmations (and a lost transaction's resend) that only mining
/// brings.
async fn mine_until_done(
    rpc: &DynProvider,
    write: tokio::task::JoinHandle<Result<brume_evm::Landed, EvmError>>,
) -> brume_evm::Landed {
    for _ in 0..100_000 {
        if write.is_finished() {
            return write.await.expect("joins").expect("lands");
        }
        rpc.evm_mine(None).await.expect("mine");
        tokio::task::yield_now().await;
    }
    panic!("the write never finished");
}

/// One settlement scenario through `&dyn Settlement`: three payers, four
/// beneficiaries, two payout batches, and every refusal. Returns each
/// step's outcome code, every party's final balance, and the movements
/// under the first payout's anchor (the payout account written as ZERO).
async fn scenario(
    s: &dyn brume_chain::Settlement,
    payers: [Address; 3],
    to: [Address; 4],
) -> (Vec<String>, Vec<u128>, Vec<(Address, Address, u128)>) {
    fn code<T>(r: Result<T, brume_chain::ChainError>) -> String {
        match r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code().to_string(),
        }
    }
    let steps = vec![
        code(s.collect(payers[0], 30 * TOKEN, anchor(1)).await),
        code(s.collect(payers[1], 45 * TOKEN, anchor(2)).await),
        code(s.collect(payers[2], 25 * TOKEN, anchor(3)).await),
        code(s.collect(payers[0], TOKEN, anchor(1)).await),
        code(s.collect(payers[2], 1_000 * TOKEN, anchor(4)).await),
        code(
            s.payout(&[(to[0], 40 * TOKEN), (to[1], 35 * TOKEN)], anchor(5))
                .await,
        ),
        code(
            s.payout(&[(to[2], 20 * TOKEN), (to[3], 4 * TOKEN)], anchor(6))
                .await,
        ),
        code(s.payout(&[(to[0], 1_000 * TOKEN)], anchor(7)).await),
        code(s.payout(&[(to[0], TOKEN)], anchor(5)).await),
        code(s.payout(&[], anchor(8)).await),
    ];
    let mut balances = Vec::new();
    for a in payers
        .iter()
        .chain(&to)
        .copied()
        .chain([s.payout_account()])
    {
        balances.push(s.balance_of(a).await.expect("balance"));
    }
    let payout = s.payout_account();
    let plain = |a: Address| if a == payout { Address::ZERO } else { a };
    let moved = s
        .anchored(anchor(5))
        .await
        .expect("anchored")
        .into_iter()
        .map(|m| (plain(m.from), plain(m.to), m.amount))
        .collect();
    // Every collection and payout, as an audit reads them.
    let all = s.movements(None, 100).await.expect("movements");
    let anchors = [1, 2, 3, 5, 5, 6, 6].map(anchor);
    assert_eq!(
        all.iter().map(|m| m.anchor).collect::<Vec<_>>(),
        anchors,
        "{all:?}"
    );
    assert!(
        all.windows(2)
            .all(|w| (w[0].pos.block, w[0].pos.index) < (w[1].pos.block, w[1].pos.index))
    );
    let after = s
        .movements(Some(all[3].pos), 2)
        .await
        .expect("a page after");
    assert_eq!(after, all[4..6]);
    (steps, balances, moved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_chain_and_an_evm_chain_settle_one_scenario_alike() {
    use brume_chain::{Call, DevChain, DevConfig, DevSettlement};
    let chain = Chain::start();
    let d = chain.deploy().await;
    let payers = [chain.address(2), chain.address(3), chain.address(4)];
    let to = [
        chain.address(5),
        chain.address(6),
        chain.address(7),
        chain.address(8),
    ];

    // The EVM: payers funded and allowing the settlement contract.
    for (i, p) in payers.iter().enumerate() {
        chain.fund(&d, *p, 100 * TOKEN).await;
        let token = BrumeToken::new(d.token, chain.as_key(2 + i));
        send!(token.approve(d.settlement, U256::from(100 * TOKEN)))
            .await
            .expect("approve");
    }
    let evm = chain.evm(&d, 1, 1).await;

    // The dev chain: the same payers (the same keys), the same funds.
    let dir = tempfile::tempdir().expect("tempdir");
    let dev: std::sync::Arc<dyn brume_chain::Chain> = std::sync::Arc::new(
        DevChain::open(
            dir.path(),
            &DevConfig {
                chain_id: 7,
                faucet: false,
                genesis: payers.iter().map(|p| (*p, 100 * TOKEN)).collect(),
            },
        )
        .expect("dev chain"),
    );
    let payout = brume_identity::Identity::random();
    for i in 0..3 {
        let key = brume_identity::Identity::from_bytes(chain.keys[2 + i].to_bytes().as_slice())
            .expect("the same key");
        let approve = Call::Approve {
            spender: payout.address(),
            amount: 100 * TOKEN,
        };
        for r in dev.send(&key, vec![approve]).await.expect("send") {
            r.expect("approve");
        }
    }
    let dev = DevSettlement::new(dev, std::sync::Arc::new(payout), Address::ZERO);

    let on_dev = scenario(&dev, payers, to).await;
    let on_evm = scenario(&evm, payers, to).await;
    assert_eq!(on_dev, on_evm);
    let (steps, balances, moved) = on_evm;
    assert_eq!(
        steps,
        [
            "ok",
            "ok",
            "ok",
            "anchor_used",
            "insufficient_allowance",
            "ok",
            "ok",
            "insufficient_balance",
            "anchor_used",
            "invalid_tx"
        ]
    );
    assert_eq!(
        balances,
        [70, 55, 75, 40, 35, 20, 4, 1].map(|t: u128| t * TOKEN)
    );
    assert_eq!(
        moved,
        [
            (Address::ZERO, to[0], 40 * TOKEN),
            (Address::ZERO, to[1], 35 * TOKEN)
        ]
    );
}

#[path = "anvil/hub.rs"]
mod hub;
#[path = "anvil/settle.rs"]
mod settle;
