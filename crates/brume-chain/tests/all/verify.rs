//! `verify` replays from genesis: clean on an honest chain, and it names the
//! block and tx an attacker with the database file edited.

use brume_chain::tx::Call;
use brume_chain::verify::VerifyReport;
use brume_chain::{Address, Chain, DevChain};
use brume_identity::Identity;

use crate::{anchor, devnet};

/// A busy chain: batches of transfers, approvals, transferFroms, mints.
async fn busy(n: &crate::Net) -> u64 {
    let c = &n.chain;
    let mut txs = 0;
    for round in 0..5u8 {
        let calls: Vec<Call> = (0..40u8)
            .map(|i| Call::Transfer {
                to: Address::repeat_byte(i + 1),
                amount: u128::from(i) + 1,
                anchor: anchor(round),
            })
            .collect();
        for r in c.send(&n.alice, calls).await.expect("send") {
            r.expect("transfer");
            txs += 1;
        }
        c.approve(&n.alice, n.bob.address(), 100)
            .await
            .expect("approve");
        c.transfer_from(
            &n.bob,
            n.alice.address(),
            n.bob.address(),
            30,
            anchor(round),
        )
        .await
        .expect("transferFrom");
        c.faucet(n.bob.address(), 1).await.expect("mint");
        txs += 3;
    }
    txs
}

async fn verify(c: &DevChain) -> VerifyReport {
    c.verify().await.expect("verify")
}

fn raw(c: &DevChain, sql: &str) {
    let conn = rusqlite::Connection::open(c.path()).expect("raw connection");
    conn.execute_batch(sql).expect("tamper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_chain_verifies_clean() {
    let n = devnet();
    let txs = busy(&n).await;
    let report = verify(&n.chain).await;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.txs, txs);
    assert_eq!(report.blocks, 1 + 5 * 4);
    assert_eq!(report.head, n.chain.head().await.expect("head").hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_tx_amount_is_named() {
    let n = devnet();
    busy(&n).await;
    // Block 2 is round 0's approval; block 1 holds the 40 transfers.
    let victim = n.chain.block_txs(1).await.expect("txs")[7];
    raw(
        &n.chain,
        "DROP TRIGGER txs_no_update;
         UPDATE txs SET amount = '999' WHERE block_number = 1 AND idx = 7;",
    );
    let report = verify(&n.chain).await;
    assert!(!report.is_clean());
    let first = &report.problems[0];
    assert_eq!(
        (first.block, first.tx_index),
        (Some(1), Some(7)),
        "{report:?}"
    );
    assert_eq!(first.tx_hash, Some(victim.tx.hash));
    assert!(
        first.detail.contains("not the hash of the tx's content"),
        "{first}"
    );
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|p| p.starts_with("block 1: tx_root")),
        "{text:?}"
    );
    // The replayed balances differ from the stored ones too.
    assert!(
        text.iter().any(|p| p.starts_with("state: account")),
        "{text:?}"
    );
    // Reads refuse the altered tx rather than report it.
    assert_eq!(
        n.chain.tx(victim.tx.hash).await.map_err(|e| e.code()),
        Err("corrupt")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_parent_hash_is_named() {
    let n = devnet();
    busy(&n).await;
    raw(
        &n.chain,
        "DROP TRIGGER blocks_no_update;
         UPDATE blocks SET parent_hash = zeroblob(32) WHERE number = 6;",
    );
    let report = verify(&n.chain).await;
    let blocks: Vec<Option<u64>> = report.problems.iter().map(|p| p.block).collect();
    assert!(!blocks.is_empty());
    assert!(blocks.iter().all(|b| *b == Some(6)), "{report:?}");
    assert!(
        report.problems[0].detail.starts_with("parent_hash"),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_tx_is_named() {
    let n = devnet();
    busy(&n).await;
    raw(
        &n.chain,
        "DROP TRIGGER txs_no_delete;
         DELETE FROM txs WHERE block_number = 5 AND idx = 3;",
    );
    let report = verify(&n.chain).await;
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.starts_with("block 5 tx 4") && p.contains("txs are missing")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p == "block 5: 39 txs are stored, the header says 40"),
        "{text:?}"
    );
    assert!(
        text.iter().any(|p| p.starts_with("block 5: tx_root")),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_balance_or_genesis_is_named() {
    let n = devnet();
    busy(&n).await;
    let carol = Identity::random().address();
    raw(
        &n.chain,
        &format!(
            "UPDATE accounts SET balance = '1' WHERE address = x'{}';
             INSERT INTO accounts (address, balance, nonce) VALUES (x'{}', '5', 0);",
            alloy_hex(n.bob.address()),
            alloy_hex(carol)
        ),
    );
    let report = verify(&n.chain).await;
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text.iter().all(|p| p.starts_with("state: account")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|p| p.contains(&carol.to_string())),
        "{text:?}"
    );

    raw(
        &n.chain,
        &format!(
            "DROP TRIGGER genesis_no_update;
             UPDATE genesis SET amount = '1' WHERE address = x'{}';",
            alloy_hex(n.alice.address())
        ),
    );
    let report = verify(&n.chain).await;
    assert!(
        report.problems[0]
            .to_string()
            .starts_with("block 0: the genesis commitment"),
        "{report:?}"
    );
}

fn alloy_hex(a: Address) -> String {
    a.as_slice().iter().map(|b| format!("{b:02x}")).collect()
}

/// Settlement's shape: 2 000 transfers in one call land in one block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_lands_in_one_block() {
    let n = devnet();
    let calls: Vec<Call> = (0..2000u32)
        .map(|i| {
            let mut to = [0u8; 20];
            to[..4].copy_from_slice(&(i + 1).to_be_bytes());
            Call::Transfer {
                to: Address::from(to),
                amount: 1,
                anchor: anchor(0x5e),
            }
        })
        .collect();
    let results = n.chain.send(&n.alice, calls).await.expect("send");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(r) if r.block_number == 1))
    );
    assert_eq!(
        n.chain
            .transfers_by_anchor(anchor(0x5e))
            .await
            .map(|t| t.len()),
        Ok(2000)
    );
    let report = verify(&n.chain).await;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.txs, 2000);
}
