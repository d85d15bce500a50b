//! The hub wallet on anvil through `EvmHub`: every phase and transition
//! the SONM seed gives, who may make each, every revert, and the gas of
//! each operation (printed: `cargo test -- --nocapture`). anvil's clock is
//! moved, never waited for.

use alloy::primitives::Address;
use alloy::providers::ext::AnvilApi as _;
use brume_evm::{EvmError, EvmHub, HubPhase, HubTerms, HubWallet::HubWalletErrors as E};

use super::{Chain, TOKEN};

const DAY: u64 = 86_400;

/// Moves anvil's clock `s` seconds and mines a block.
async fn later(chain: &Chain, s: u64) {
    let rpc = chain.as_key(0);
    rpc.anvil_increase_time(s).await.expect("time");
    rpc.evm_mine(None).await.expect("mine");
}

macro_rules! refused {
    ($result:expr, $variant:ident) => {{
        let r = $result;
        assert!(
            matches!(&r, Err(EvmError::Hub(E::$variant(_)))),
            "expected {}: {r:?}",
            stringify!($variant)
        );
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_wallet_moves_through_every_phase_the_seed_gives() {
    let chain = Chain::start();
    let d = chain.deploy().await;
    // keys: 2 the hub, 3 the DAO, 4 a stranger; providers are fresh.
    let (hub_addr, dao_addr) = (chain.address(2), chain.address(3));
    let terms = HubTerms::seed(hub_addr, dao_addr);
    let wallet = brume_evm::deploy_hub(&chain.as_key(0), d.token, &terms)
        .await
        .expect("deploy");
    let hub = EvmHub::new(chain.url.clone(), chain.keys[2].clone(), wallet);
    let dao = EvmHub::new(chain.url.clone(), chain.keys[3].clone(), wallet);
    let stranger = EvmHub::new(chain.url.clone(), chain.keys[4].clone(), wallet);
    let (p1, p2) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xa2));
    let mut gas: Vec<(&str, u64)> = Vec::new();

    // Created: only registration, by the hub, of a bond the balance holds.
    assert_eq!(hub.view().await.expect("view").phase, HubPhase::Created);
    chain.fund(&d, wallet, 1_000 * TOKEN).await;
    refused!(stranger.register(100 * TOKEN).await, NotHub);
    refused!(hub.register(0).await, ZeroAmount);
    refused!(hub.register(2_000 * TOKEN).await, InsufficientFunds);
    refused!(hub.pay(p1, TOKEN).await, WrongPhase);
    refused!(hub.payday().await, WrongPhase);
    refused!(dao.suspect().await, WrongPhase);
    let t = hub.register(100 * TOKEN).await.expect("register");
    gas.push(("register", t.gas_used));
    let v = hub.view().await.expect("view");
    assert_eq!(
        (v.phase, v.bond, v.locked),
        (HubPhase::Registered, 100 * TOKEN, 0)
    );
    refused!(hub.register(100 * TOKEN).await, WrongPhase);

    // Registered: payouts lock 30 % until payday; the bond and every lock
    // must stay covered.
    let t = hub.pay(p1, 100 * TOKEN).await.expect("pay");
    gas.push(("transfer (first to a provider)", t.gas_used));
    let t = hub.pay(p1, 100 * TOKEN).await.expect("pay again");
    gas.push(("transfer", t.gas_used));
    assert_eq!(chain.balance(&d, p1).await, 200 * TOKEN);
    assert_eq!(hub.view().await.expect("view").locked, 60 * TOKEN);
    refused!(stranger.pay(p2, TOKEN).await, NotHub);
    refused!(hub.pay(p2, 0).await, ZeroAmount);
    // 800 left, 100 bond + 60 locked: at most 640 / 1.3 more.
    refused!(hub.pay(p2, 500 * TOKEN).await, InsufficientFunds);
    hub.pay(p2, 400 * TOKEN)
        .await
        .expect("pay within the limit");
    refused!(hub.withdraw(TOKEN).await, WrongPhase);

    // Payday: not before the period ends; then 0.5 % of bond + locks to
    // the DAO, everything unlocked, Idle.
    refused!(hub.payday().await, TooEarly);
    later(&chain, 30 * DAY).await;
    refused!(stranger.payday().await, NotHub);
    let t = hub.payday().await.expect("payday");
    gas.push(("payday", t.gas_used));
    let fee = (100 + 180) * TOKEN * 5 / 1_000;
    assert_eq!(chain.balance(&d, dao_addr).await, fee);
    let v = hub.view().await.expect("view");
    assert_eq!(
        (v.phase, v.bond, v.locked, v.paydays, v.missed_paydays),
        (HubPhase::Idle, 0, 0, 1, 0)
    );
    assert_eq!(v.balance, 1_000 * TOKEN - 600 * TOKEN - fee);

    // Idle: the hub withdraws or registers again; no payouts.
    refused!(hub.pay(p1, TOKEN).await, WrongPhase);
    refused!(stranger.withdraw(TOKEN).await, NotHub);
    refused!(hub.withdraw(0).await, ZeroAmount);
    refused!(hub.withdraw(10_000 * TOKEN).await, InsufficientFunds);
    let t = hub.withdraw(50 * TOKEN).await.expect("withdraw");
    gas.push(("withdraw", t.gas_used));
    refused!(dao.suspect().await, WrongPhase);

    // A missed payday: registered again, payday made after its grace.
    hub.register(100 * TOKEN).await.expect("register again");
    later(&chain, 30 * DAY + 7 * DAY + 1).await;
    assert!(hub.view().await.expect("view").payday_overdue);
    hub.payday().await.expect("a late payday");
    let v = hub.view().await.expect("view");
    assert_eq!(
        (v.paydays, v.missed_paydays, v.payday_overdue),
        (2, 1, false)
    );

    // Suspected: the DAO only; everything frozen; rehabilitation to Idle.
    hub.register(100 * TOKEN)
        .await
        .expect("register a third time");
    refused!(hub.suspect().await, NotDao);
    let t = dao.suspect().await.expect("suspect");
    gas.push(("suspect", t.gas_used));
    assert_eq!(hub.view().await.expect("view").phase, HubPhase::Suspected);
    refused!(hub.pay(p1, TOKEN).await, WrongPhase);
    refused!(hub.payday().await, WrongPhase);
    refused!(hub.withdraw(TOKEN).await, WrongPhase);
    refused!(hub.rehabilitate().await, NotDao);
    let t = dao.rehabilitate().await.expect("rehabilitate");
    gas.push(("rehabilitate", t.gas_used));
    let v = hub.view().await.expect("view");
    assert_eq!((v.phase, v.bond, v.locked), (HubPhase::Idle, 0, 0));
    refused!(dao.rehabilitate().await, WrongPhase);

    // Ban: only after 120 days of suspicion; Punished for good; the DAO
    // claims the tokens only after its freeze.
    hub.register(100 * TOKEN)
        .await
        .expect("register a fourth time");
    dao.suspect().await.expect("suspect again");
    refused!(dao.ban().await, TooEarly);
    later(&chain, 120 * DAY).await;
    refused!(hub.ban().await, NotDao);
    let t = dao.ban().await.expect("ban");
    gas.push(("ban", t.gas_used));
    let held = hub.view().await.expect("view").balance;
    assert_eq!(hub.view().await.expect("view").phase, HubPhase::Punished);
    for r in [
        hub.register(TOKEN).await,
        hub.pay(p1, TOKEN).await,
        hub.payday().await,
        hub.withdraw(TOKEN).await,
        dao.rehabilitate().await,
        dao.suspect().await,
    ] {
        refused!(r, WrongPhase);
    }
    refused!(dao.claim().await, TooEarly);
    later(&chain, 30 * DAY).await;
    refused!(hub.claim().await, NotDao);
    let before = chain.balance(&d, dao_addr).await;
    let t = dao.claim().await.expect("claim");
    gas.push(("claim", t.gas_used));
    assert_eq!(chain.balance(&d, dao_addr).await, before + held);
    refused!(dao.claim().await, ZeroAmount);

    for (op, g) in &gas {
        eprintln!("hub wallet gas: {op}: {g}");
    }
    assert!(gas.iter().all(|(_, g)| *g > 21_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_wallet_refuses_terms_over_the_whole() {
    let chain = Chain::start();
    let d = chain.deploy().await;
    let mut terms = HubTerms::seed(chain.address(2), chain.address(3));
    terms.lock_fee_ppm = 1_000_001;
    let r = brume_evm::deploy_hub(&chain.as_key(0), d.token, &terms).await;
    assert!(matches!(&r, Err(EvmError::Hub(E::FeeTooLarge(_)))), "{r:?}");
}
