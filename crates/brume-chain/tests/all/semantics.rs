//! ERC-20 semantics, typed errors, anchors, history, the faucet, and many
//! concurrent callers.

use std::sync::Arc;

use brume_chain::tx::{Call, SignedTx, Tx};
use brume_chain::{Address, Chain, ChainError, TxPos};
use brume_identity::Identity;

use crate::{ALICE_FUNDS, BOB_FUNDS, anchor, devnet, fixed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_moves_tokens_and_returns_a_receipt() {
    let n = fixed();
    let c = &n.chain;
    let carol = Identity::random().address();
    assert_eq!(c.total_supply().await, Ok(ALICE_FUNDS + BOB_FUNDS));
    assert_eq!(c.block_number().await, Ok(0));
    let r = c
        .transfer(&n.alice, carol, 300, anchor(1))
        .await
        .expect("transfer");
    assert_eq!((r.block_number, r.index, r.nonce), (1, 0, 0));
    assert_eq!(r.from, n.alice.address());
    assert_eq!(c.block_number().await, Ok(1));
    assert_eq!(c.balance_of(carol).await, Ok(300));
    assert_eq!(c.balance_of(n.alice.address()).await, Ok(ALICE_FUNDS - 300));
    assert_eq!(c.total_supply().await, Ok(ALICE_FUNDS + BOB_FUNDS));
    assert_eq!(c.nonce(n.alice.address()).await, Ok(1));
    assert_eq!(c.nonce(carol).await, Ok(0));
    assert_eq!(c.receipt(r.tx_hash).await, Ok(Some(r)));
    assert_eq!(c.receipt(anchor(9)).await, Ok(None));
    let stored = c.tx(r.tx_hash).await.expect("tx").expect("stored");
    assert_eq!(stored.tx.tx.call.anchor(), Some(anchor(1)));
    stored.tx.check_signature().expect("signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insufficient_balance_is_a_typed_error_and_uses_no_nonce() {
    let n = fixed();
    let c = &n.chain;
    let bob = n.bob.address();
    let err = c
        .transfer(&n.bob, n.alice.address(), BOB_FUNDS + 1, anchor(1))
        .await
        .expect_err("too much");
    assert_eq!(
        err,
        ChainError::InsufficientBalance {
            account: bob,
            balance: BOB_FUNDS,
            needed: BOB_FUNDS + 1
        }
    );
    assert_eq!(err.code(), "insufficient_balance");
    assert_eq!(c.nonce(bob).await, Ok(0));
    assert_eq!(c.balance_of(bob).await, Ok(BOB_FUNDS));
    assert_eq!(c.block_number().await, Ok(0), "no block for a failed tx");
    // All of it is fine.
    c.transfer(&n.bob, n.alice.address(), BOB_FUNDS, anchor(1))
        .await
        .expect("all");
    assert_eq!(c.balance_of(bob).await, Ok(0));
    // The zero address is no recipient.
    let err = c
        .transfer(&n.alice, Address::ZERO, 1, anchor(1))
        .await
        .expect_err("zero");
    assert_eq!(err.code(), "invalid_tx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_transfer_from_spend_the_allowance() {
    let n = fixed();
    let c = &n.chain;
    let (alice, bob) = (n.alice.address(), n.bob.address());
    let carol = Identity::random().address();
    let err = c
        .transfer_from(&n.bob, alice, carol, 1, anchor(2))
        .await
        .expect_err("no allowance");
    assert_eq!(
        err,
        ChainError::InsufficientAllowance {
            owner: alice,
            spender: bob,
            allowance: 0,
            needed: 1
        }
    );
    c.approve(&n.alice, bob, 100).await.expect("approve");
    assert_eq!(c.allowance(alice, bob).await, Ok(100));
    assert_eq!(c.allowance(bob, alice).await, Ok(0));
    let r = c
        .transfer_from(&n.bob, alice, carol, 60, anchor(2))
        .await
        .expect("transferFrom");
    assert_eq!(r.from, bob, "the spender sends the tx");
    assert_eq!(c.allowance(alice, bob).await, Ok(40));
    assert_eq!(c.balance_of(carol).await, Ok(60));
    assert_eq!(c.balance_of(alice).await, Ok(ALICE_FUNDS - 60));
    assert_eq!(c.balance_of(bob).await, Ok(BOB_FUNDS));
    let err = c
        .transfer_from(&n.bob, alice, carol, 41, anchor(2))
        .await
        .expect_err("over the allowance");
    assert_eq!(err.code(), "insufficient_allowance");
    // approve sets, it does not add.
    c.approve(&n.alice, bob, 5).await.expect("approve");
    assert_eq!(c.allowance(alice, bob).await, Ok(5));
    // An allowance over the owner's balance: the balance is what fails.
    c.approve(&n.bob, alice, u128::MAX).await.expect("approve");
    let err = c
        .transfer_from(&n.alice, bob, carol, BOB_FUNDS + 1, anchor(3))
        .await
        .expect_err("owner too poor");
    assert_eq!(err.code(), "insufficient_balance");
    assert_eq!(c.allowance(bob, alice).await, Ok(u128::MAX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_txs_are_checked_for_signature_nonce_replay_and_chain() {
    let n = fixed();
    let c = &n.chain;
    let alice = n.alice.address();
    let tx = |nonce: u64, amount: u128| Tx {
        chain_id: c.chain_id(),
        from: alice,
        nonce,
        call: Call::Transfer {
            to: n.bob.address(),
            amount,
            anchor: anchor(4),
        },
    };
    // Signed by someone else in alice's name.
    let forged = tx(0, 10).sign(&n.bob).expect("sign");
    let good = tx(0, 10).sign(&n.alice).expect("sign");
    let future = tx(5, 10).sign(&n.alice).expect("sign");
    let mut garbled = tx(0, 11).sign(&n.alice).expect("sign");
    garbled.signature[10] ^= 1;
    let mut other_chain = tx(0, 12);
    other_chain.chain_id += 1;
    let other_chain = other_chain.sign(&n.alice).expect("sign");
    let results = c
        .submit(vec![forged, garbled, future, other_chain, good, good])
        .await
        .expect("submit");
    let codes: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "bad_signature",
            "bad_signature",
            "bad_nonce",
            "wrong_chain",
            "ok",
            "already_known"
        ]
    );
    assert_eq!(
        results[2],
        Err(ChainError::Nonce {
            account: alice,
            expected: 0,
            got: 5
        })
    );
    // A replay in a later block, and a stale nonce with new content.
    let again = c.submit(vec![good]).await.expect("submit");
    assert_eq!(again, [Err(ChainError::AlreadyKnown(good.hash))]);
    let stale = tx(0, 99).sign(&n.alice).expect("sign");
    let again = c.submit(vec![stale]).await.expect("submit");
    assert!(
        matches!(
            again[0],
            Err(ChainError::Nonce {
                expected: 1,
                got: 0,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(c.balance_of(n.bob.address()).await, Ok(BOB_FUNDS + 10));
    // Mints come only from the faucet.
    let mint = SignedTx::mint(c.chain_id(), 0, alice, 1);
    let r = c.submit(vec![mint]).await.expect("submit");
    assert_eq!(r[0].as_ref().map_err(ChainError::code), Err("invalid_tx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_consecutive_nonces_in_one_block_and_skips_failures() {
    let n = fixed();
    let c = &n.chain;
    let to = |i: u8| Address::repeat_byte(i);
    let mut calls: Vec<Call> = (1..=5)
        .map(|i| Call::Transfer {
            to: to(i),
            amount: u128::from(i),
            anchor: anchor(7),
        })
        .collect();
    calls.insert(
        2,
        Call::Transfer {
            to: to(9),
            amount: ALICE_FUNDS * 2,
            anchor: anchor(7),
        },
    );
    let results = c.send(&n.alice, calls).await.expect("send");
    assert_eq!(results.len(), 6);
    assert_eq!(
        results[2].as_ref().map_err(ChainError::code),
        Err("insufficient_balance")
    );
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        ok.iter().map(|r| r.nonce).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert!(ok.iter().all(|r| r.block_number == 1));
    assert_eq!(
        ok.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let head = c.head().await.expect("head");
    assert_eq!((head.number, head.tx_count), (1, 5));
    assert_eq!(ok[0].block_hash, head.hash);
    assert_eq!(c.balance_of(to(9)).await, Ok(0));
    assert_eq!(c.balance_of(to(5)).await, Ok(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchors_round_trip_and_find_their_transfers() {
    let n = fixed();
    let c = &n.chain;
    let (alice, bob) = (n.alice.address(), n.bob.address());
    let carol = Identity::random().address();
    let a = c
        .transfer(&n.alice, carol, 10, anchor(0xa1))
        .await
        .expect("transfer");
    c.transfer(&n.alice, carol, 11, anchor(0xb2))
        .await
        .expect("transfer");
    c.approve(&n.alice, bob, 50).await.expect("approve");
    let b = c
        .transfer_from(&n.bob, alice, carol, 12, anchor(0xa1))
        .await
        .expect("transferFrom");
    let found = c.transfers_by_anchor(anchor(0xa1)).await.expect("find");
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].tx_hash, a.tx_hash);
    assert_eq!(
        (found[0].from, found[0].to, found[0].amount),
        (alice, carol, 10)
    );
    assert_eq!(found[0].spender, None);
    assert_eq!(found[1].tx_hash, b.tx_hash);
    assert_eq!((found[1].from, found[1].spender), (alice, Some(bob)));
    assert!(found.iter().all(|t| t.anchor == anchor(0xa1)));
    assert_eq!(c.transfers_by_anchor(anchor(0xcc)).await, Ok(Vec::new()));

    // Carol's history, a page at a time; the approval is not a transfer.
    let all = c.history(carol, None, 100).await.expect("history");
    assert_eq!(
        all.iter().map(|t| t.amount).collect::<Vec<_>>(),
        [10, 11, 12]
    );
    let first = c.history(carol, None, 2).await.expect("page");
    assert_eq!(first, all[..2]);
    let rest = c
        .history(carol, first.last().map(|t| t.pos()), 2)
        .await
        .expect("page");
    assert_eq!(rest, all[2..]);
    let after_end = c
        .history(
            carol,
            Some(TxPos {
                block: 99,
                index: 0,
            }),
            2,
        )
        .await
        .expect("page");
    assert!(after_end.is_empty());
    // Bob appears as the spender of the transferFrom only.
    let bobs = c.history(bob, None, 100).await.expect("history");
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].tx_hash, b.tx_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faucet_mints_only_on_a_devnet() {
    let n = fixed();
    let carol = Identity::random().address();
    assert_eq!(
        n.chain.faucet(carol, 5).await,
        Err(ChainError::FaucetDisabled)
    );
    assert_eq!(n.chain.balance_of(carol).await, Ok(0));

    let n = devnet();
    let c = &n.chain;
    let r1 = c.faucet(carol, 5).await.expect("mint");
    let r2 = c.faucet(carol, 5).await.expect("mint");
    assert_ne!(r1.tx_hash, r2.tx_hash, "each mint has its own nonce");
    assert_eq!((r1.from, r1.nonce, r2.nonce), (Address::ZERO, 0, 1));
    assert_eq!(c.balance_of(carol).await, Ok(10));
    assert_eq!(c.total_supply().await, Ok(ALICE_FUNDS + BOB_FUNDS + 10));
    let h = c.history(carol, None, 10).await.expect("history");
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].from, Address::ZERO);
    let report = c.verify().await.expect("verify");
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// Many tasks submit at once through `Arc<dyn Chain>`: every transfer lands
/// once, nonces per sender are 0..n, and the replay agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_senders() {
    let n = fixed();
    let chain: Arc<dyn Chain> = Arc::new(n.chain.clone());
    let senders: Vec<Identity> = (0..8).map(|_| Identity::random()).collect();
    let fund: Vec<Call> = senders
        .iter()
        .map(|s| Call::Transfer {
            to: s.address(),
            amount: 1000,
            anchor: anchor(0),
        })
        .collect();
    for r in chain.send(&n.alice, fund).await.expect("fund") {
        r.expect("funded");
    }
    let sink = Identity::random().address();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in senders.iter().enumerate() {
        // Two tasks per sender, racing for its nonces.
        for half in 0..2u8 {
            let chain = chain.clone();
            let s = s.clone();
            tasks.spawn(async move {
                let mut receipts = Vec::new();
                for k in 0..10u8 {
                    let a = anchor(u8::try_from(i).unwrap_or(0) * 20 + half * 10 + k);
                    receipts.push(chain.transfer(&s, sink, 3, a).await.expect("transfer"));
                }
                receipts
            });
        }
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("task"));
    }
    assert_eq!(all.len(), 160);
    assert_eq!(chain.balance_of(sink).await, Ok(480));
    for s in &senders {
        let mut nonces: Vec<u64> = all
            .iter()
            .filter(|r| r.from == s.address())
            .map(|r| r.nonce)
            .collect();
        nonces.sort_unstable();
        assert_eq!(nonces, (0..20).collect::<Vec<_>>());
        assert_eq!(chain.balance_of(s.address()).await, Ok(1000 - 60));
    }
    let hist = chain.history(sink, None, 1000).await.expect("history");
    assert_eq!(hist.len(), 160);
    let report = n.chain.verify().await.expect("verify");
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.txs, 8 + 160);
}
