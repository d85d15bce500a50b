//! `brume chain deploy` against a real anvil: the contracts land where it
//! says, with the operator, holder, supply and unbonding delay asked for,
//! and the operator's backend works on them.

use alloy::node_bindings::Anvil;
use alloy::primitives::{B256, U256};
use alloy::providers::ext::AnvilApi as _;
use alloy::signers::local::PrivateKeySigner;
use brume_evm::{BrumeToken, Deployment, EvmChain, EvmConfig, Settlement, Stake};

use crate::net::{command, import_key};

const TOKEN: u128 = 1_000_000_000_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_deploy_puts_brumes_contracts_on_an_evm_network() {
    let anvil = Anvil::new()
        .path(brume_evm::find_anvil().unwrap_or_else(|e| panic!("{e}")))
        .try_spawn()
        .expect("anvil starts");
    let keys: Vec<PrivateKeySigner> = anvil.keys().iter().cloned().map(Into::into).collect();
    let (deployer, operator, payer) = (keys[0].address(), keys[1].address(), keys[2].address());
    let home = tempfile::tempdir().expect("tempdir");
    let (ring, pw, key) = (
        home.path().join("keys"),
        home.path().join("password"),
        home.path().join("deployer.key"),
    );
    std::fs::write(&pw, "correct horse\n").expect("password");
    std::fs::write(&key, hex::encode(keys[0].to_bytes())).expect("key");
    import_key(home.path(), &key, "deployer", &ring, &pw);

    let deploy = |extra: &[&str]| {
        command(home.path())
            .args(["chain", "deploy", "--key", "deployer", "--json"])
            .arg("--keys-dir")
            .arg(&ring)
            .arg("--password-file")
            .arg(&pw)
            .args(extra)
            .output()
            .expect("chain deploy")
    };
    let url = anvil.endpoint_url();
    let operator_text = operator.to_string();
    let out = deploy(&[
        "--rpc",
        url.as_str(),
        "--operator",
        &operator_text,
        "--supply",
        "1000tok",
        "--unbonding-delay",
        "1d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let address = |k: &str| v[k].as_str().expect(k).parse().expect("an address");
    let d = Deployment {
        token: address("token"),
        settlement: address("settlement"),
        stake: address("stake"),
    };
    assert_eq!(v["deployer"], deployer.to_string());

    // What was asked for is what the contracts hold.
    let rpc = brume_evm::signing_provider(url.clone(), keys[0].clone());
    let token = BrumeToken::new(d.token, &rpc);
    assert_eq!(
        token.balanceOf(deployer).call().await.expect("balance"),
        U256::from(1000 * TOKEN)
    );
    let settlement = Settlement::new(d.settlement, &rpc);
    assert_eq!(
        settlement.operator().call().await.expect("operator"),
        operator
    );
    assert_eq!(settlement.token().call().await.expect("token"), d.token);
    let stake = Stake::new(d.stake, &rpc);
    assert_eq!(stake.operator().call().await.expect("operator"), operator);
    assert_eq!(stake.unbondingDelay().call().await.expect("delay"), 86_400);

    // Accounts sign their own side with `brume wallet --rpc`: a payer's
    // allowance to settlement, a provider's stake.
    let deployment = home.path().join("deployment.json");
    std::fs::write(&deployment, &out.stdout).expect("deployment");
    for (i, name) in [(2, "payer"), (3, "prov")] {
        let file = home.path().join(name);
        std::fs::write(&file, hex::encode(keys[i].to_bytes())).expect("key");
        import_key(home.path(), &file, name, &ring, &pw);
        token
            .transfer(keys[i].address(), U256::from(10 * TOKEN))
            .send()
            .await
            .expect("send")
            .get_receipt()
            .await
            .expect("fund");
    }
    let wallet = |key: &str, args: &[&str]| {
        let out = command(home.path())
            .args(["wallet", "--json", "--rpc", url.as_str(), "--key", key])
            .arg("--deployment")
            .arg(&deployment)
            .arg("--keys-dir")
            .arg(&ring)
            .arg("--password-file")
            .arg(&pw)
            .args(args)
            .output()
            .expect("brume wallet");
        let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, v, err) = wallet("payer", &["approve", "5tok"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["settlement_allowance"], (5 * TOKEN).to_string());
    let (code, v, err) = wallet("prov", &["stake", "3tok"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (v["staked"].clone(), v["balance"].clone()),
        (
            (3 * TOKEN).to_string().into(),
            (7 * TOKEN).to_string().into()
        )
    );
    let (code, v, err) = wallet("prov", &["unstake", "1tok"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["unbonding"], TOKEN.to_string());
    let (code, _, err) = wallet("prov", &["withdraw"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("StillBonded"), "{err}");
    rpc.anvil_increase_time(86_400).await.expect("time");
    rpc.evm_mine(None).await.expect("mine");
    let (code, v, err) = wallet("prov", &["withdraw"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (v["balance"].clone(), v["unbonding"].clone()),
        ((8 * TOKEN).to_string().into(), "0".into())
    );
    let prov_text = keys[3].address().to_string();
    let (code, v, err) = wallet("nobody", &["balance", &prov_text]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["staked"], (2 * TOKEN).to_string());
    let (code, _, err) = wallet("prov", &["history"]);
    assert_eq!(code, Some(2), "{err}");

    // The operator's backend collects what the payer allowed, and slashes
    // what the provider staked.
    let mut config = EvmConfig::new(url.clone(), d);
    config.confirmations = 1;
    config.poll = std::time::Duration::from_millis(5);
    let evm = EvmChain::connect(config, keys[1].clone())
        .await
        .expect("connects");
    evm.collect(payer, 4 * TOKEN, B256::repeat_byte(7))
        .await
        .expect("collect");
    assert_eq!(
        evm.balance_of(d.settlement).await.expect("balance"),
        4 * TOKEN
    );
    evm.slash(keys[3].address(), TOKEN, B256::repeat_byte(9))
        .await
        .expect("slash");
    assert_eq!(
        evm.slashable(keys[3].address()).await.expect("stake"),
        TOKEN
    );

    // Bad input: a usage error (2); an unreachable network: a failure (1).
    let out = command(home.path())
        .args(["wallet", "--rpc", url.as_str(), "balance", &prov_text])
        .output()
        .expect("brume wallet");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rpc needs --deployment"), "{err}");
    let out = deploy(&["--rpc", "ftp://127.0.0.1/"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only http and https"), "{err}");
    let out = deploy(&["--rpc", "http://127.0.0.1:9/", "--supply", "1.5.5"]);
    assert_eq!(out.status.code(), Some(2));
    let out = deploy(&["--rpc", "http://127.0.0.1:9/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deploy to http://127.0.0.1:9/"), "{err}");
}

#[test]
fn bench_evm_payout_pays_everyone_in_fewer_transactions_than_transfers() {
    let out = command(tempfile::tempdir().expect("tempdir").path())
        .args(["bench", "evm-payout", "--payouts", "250", "--json"])
        .output()
        .expect("brume bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(v["balanced"], true, "{v}");
    assert_eq!(v["payouts"], 250);
    // 250 payouts at 200 a transaction.
    assert_eq!(v["chain_txs"], 2);
    assert_eq!(v["naive_txs"], 250);
    assert!(v["gas_used"].as_u64() < v["naive_gas"].as_u64(), "{v}");
}

#[test]
fn bench_settle_on_anvil_settles_every_row_for_less_gas_than_a_transfer_each() {
    let out = command(tempfile::tempdir().expect("tempdir").path())
        .args([
            "bench", "settle", "--chain", "anvil", "--rows", "1000", "--json",
        ])
        .output()
        .expect("brume bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(v["balanced"], true, "{v}");
    assert_eq!(
        (v["chain"].as_str(), v["rows"].as_u64()),
        (Some("anvil"), Some(1000))
    );
    // 100 requesters collected once each; 334 providers, 50 developers,
    // the operator and the charity paid in 2 batches of up to 200.
    assert_eq!(v["beneficiaries"], 386, "{v}");
    assert_eq!(v["chain_txs"], 102, "{v}");
    assert_eq!(v["naive_chain_txs"], 5_000, "{v}");
    assert!(v["gas_used"].as_u64() < v["naive_gas"].as_u64(), "{v}");
}
