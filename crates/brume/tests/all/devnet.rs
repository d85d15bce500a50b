//! The README's main command: `brume devnet --demo` runs a broker and two
//! providers in one process, publishes the examples, calls them, runs a
//! batch job and exits 0 only if every step worked.

use crate::net;

#[test]
fn devnet_demo_runs_end_to_end() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let out = net::command(home.path())
        .args(["devnet", "--demo", "--data"])
        .arg(&data)
        .output()
        .expect("run brume devnet --demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet --demo failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "hello, brume",
        "200 OK",
        "state succeeded  exit 0",
        "\"kind\":\"asian-call\"",
        "== ledger: ",
        "    provider  0x",
        "rows clean, aggregate ",
        "demo complete.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The data dir holds the broker's database and an API key file.
    assert!(data.join("broker/broker.db").exists());
    assert!(data.join("broker/ledger/ledger.db").exists());
    let key = std::fs::read_to_string(data.join("api-key")).expect("api-key file");
    assert!(key.trim().starts_with("brk_"), "{key}");
}

/// `brume devnet --chain anvil --demo`: the same demo on a fresh anvil
/// with brume's contracts; the requester's escrow is an allowance to the
/// settlement contract, settlement collects and pays through it, and the
/// audit reads its logs. A data dir that settled on an anvil now gone is
/// refused.
#[test]
fn devnet_demo_settles_through_the_contracts_on_anvil() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let run = || {
        net::command(home.path())
            .args(["devnet", "--chain", "anvil", "--demo", "--data"])
            .arg(&data)
            .output()
            .expect("run brume devnet --chain anvil --demo")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet --chain anvil --demo failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "chain      anvil http://",
        "state succeeded  exit 0",
        "rows clean, aggregate ",
        "2 chain txs",
        "balanced: true",
        "settlement transfers match their rows' aggregates on the chain",
        "demo complete.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let deployment: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("evm/deployment.json")).expect("deployment file"),
    )
    .expect("JSON");
    assert!(
        deployment["settlement"]
            .as_str()
            .is_some_and(|a| a.starts_with("0x"))
    );

    let again = run();
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("use a fresh --data with --chain anvil"),
        "{err}"
    );
}

/// `brume devnet --brokers 3 --demo --json`: three federated brokers find
/// each other, and the first, its providers gone, forwards a call that
/// another runs.
#[test]
fn a_federated_devnet_forwards_a_call() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let out = net::command(home.path())
        .args([
            "devnet",
            "--brokers",
            "3",
            "--providers",
            "1",
            "--demo",
            "--json",
            "--data",
        ])
        .arg(&data)
        .output()
        .expect("run brume devnet --brokers 3 --demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet --brokers 3 --demo failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ready = lines
        .iter()
        .find(|v| v["event"] == "ready")
        .unwrap_or_else(|| panic!("no ready line in {stdout}"));
    let brokers = ready["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 3);
    let first = brokers[0]["broker_id"].as_str().expect("broker_id");
    let forwarded = lines
        .iter()
        .find(|v| v["event"] == "forwarded")
        .unwrap_or_else(|| panic!("no forwarded line in {stdout}"));
    assert!(
        forwarded["forwarded_by"]
            .as_str()
            .is_some_and(|b| b.eq_ignore_ascii_case(first))
    );
    let ran_at = forwarded["broker"].as_str().expect("broker");
    assert!(!ran_at.eq_ignore_ascii_case(first), "{forwarded}");
    assert!(
        brokers[1..].iter().any(|b| b["broker_id"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(ran_at))),
        "{forwarded}"
    );
    for region in ["eu-west", "us-east", "ap-northeast"] {
        assert!(
            data.join(region).join("broker/p2p.key").exists(),
            "{region}"
        );
    }
}
