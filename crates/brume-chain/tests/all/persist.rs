//! The chain survives a reopen, and refuses another genesis.

use brume_chain::{Chain, DevChain, DevConfig};
use brume_identity::Identity;

use crate::{ALICE_FUNDS, anchor, config, fixed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_blocks_persist_across_a_reopen() {
    let n = fixed();
    let carol = Identity::random().address();
    let r = n
        .chain
        .transfer(&n.alice, carol, 42, anchor(1))
        .await
        .expect("transfer");
    n.chain
        .approve(&n.alice, n.bob.address(), 7)
        .await
        .expect("approve");
    let head = n.chain.head().await.expect("head");
    n.chain.close();
    drop(n.chain);

    let cfg = config(&n.alice, &n.bob, false);
    let dir = n.dir.path();
    let c = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || DevChain::open(&dir, &cfg)
    })
    .await
    .expect("task")
    .expect("reopen");
    assert_eq!(c.head().await, Ok(head));
    assert_eq!(c.balance_of(carol).await, Ok(42));
    assert_eq!(c.nonce(n.alice.address()).await, Ok(2));
    assert_eq!(c.allowance(n.alice.address(), n.bob.address()).await, Ok(7));
    assert_eq!(c.receipt(r.tx_hash).await, Ok(Some(r)));
    assert_eq!(
        c.transfers_by_anchor(anchor(1)).await.map(|t| t.len()),
        Ok(1)
    );
    // It goes on from where it was.
    let r2 = c
        .transfer(&n.alice, carol, 1, anchor(2))
        .await
        .expect("transfer");
    assert_eq!((r2.block_number, r2.nonce), (head.number + 1, 2));
    c.close();
    drop(c);

    let existing = DevChain::open_existing(dir).expect("open existing");
    assert_eq!(existing.balance_of(carol).await, Ok(43));
    let report = existing.verify().await.expect("verify");
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.blocks, report.txs), (4, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_genesis_or_a_missing_chain_is_refused() {
    let n = fixed();
    n.chain.close();
    let mut other = config(&n.alice, &n.bob, false);
    other.genesis[0].1 = ALICE_FUNDS + 1;
    let err = DevChain::open(n.dir.path(), &other).expect_err("another genesis");
    assert_eq!(err.code(), "corrupt");
    let faucet_on = config(&n.alice, &n.bob, true);
    assert!(DevChain::open(n.dir.path(), &faucet_on).is_err());

    let empty = tempfile::tempdir().expect("tempdir");
    let err = DevChain::open_existing(empty.path()).expect_err("no chain");
    assert_eq!(err.code(), "storage");

    let a = Identity::random().address();
    let twice = DevConfig::devnet(vec![(a, 1), (a, 2)]);
    let err = DevChain::open(empty.path(), &twice).expect_err("duplicate");
    assert_eq!(err.code(), "invalid_tx");
}
