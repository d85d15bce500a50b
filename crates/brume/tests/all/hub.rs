//! Bonded brokers: a broker advertises its hub wallet, and a provider that
//! requires one reads it on chain (anvil) before joining, and again while
//! joined. Real broker and provider processes; anvil's clock is moved,
//! never waited for.

use alloy::providers::ext::AnvilApi as _;
use brume_evm::{EvmHub, HubTerms, U256};

use crate::net::*;

const TOKEN: u128 = 1_000_000_000_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_join_only_a_broker_whose_hub_wallet_is_bonded_and_pays_on_time() {
    let anvil = brume_evm::LocalAnvil::start()
        .await
        .expect("anvil with brume");
    let (keys, url, d) = (anvil.keys(), anvil.url(), anvil.deployment);
    let holder = brume_evm::signing_provider(url.clone(), keys[0].clone());
    // The hub is anvil's key 2 (it pays the gas of registering), the DAO
    // key 3.
    let terms = HubTerms::seed(keys[2].address(), keys[3].address());
    let wallet = brume_evm::deploy_hub(&holder, d.token, &terms)
        .await
        .expect("deploy the hub wallet");
    brume_evm::BrumeToken::new(d.token, &holder)
        .transfer(wallet, U256::from(1_000 * TOKEN))
        .send()
        .await
        .expect("send")
        .get_receipt()
        .await
        .expect("fund the wallet");
    let hub = EvmHub::new(url.clone(), keys[2].clone(), wallet);
    hub.register(100 * TOKEN).await.expect("register");

    // The broker advertises the wallet and proves it with the hub key.
    let dir = tempfile::tempdir().expect("tempdir");
    let hub_key = dir.path().join("hub.key");
    let key = brume_identity::Identity::from_bytes(keys[2].to_bytes().as_slice()).expect("key");
    std::fs::write(&hub_key, key.to_hex().as_str()).expect("hub key");
    let config = format!(
        "[broker.chain]\nhub_wallet = \"{wallet}\"\nhub_key = \"{}\"\n",
        hub_key.display()
    );
    let mut net = Net::start_with(0, 1, Some(&config), &[]).await;
    let status = net.client.status().await.expect("status");
    assert_eq!(status.hub_wallet, Some(wallet.to_string()));
    let short = reqwest::get(net.url("/v1/hub/proof?nonce=0x12"))
        .await
        .expect("GET");
    assert_eq!(short.status(), 400, "a nonce must be 32 bytes");
    let rpc = url.to_string();
    let requiring = |min: u128| {
        vec![
            "--hub-rpc".to_string(),
            rpc.clone(),
            "--min-hub-bond".to_string(),
            min.to_string(),
            "--hub-check-every".to_string(),
            "100ms".to_string(),
        ]
    };

    // Enough bond: it joins, and says what it checked.
    let args = requiring(100 * TOKEN);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let joined = net.add_provider_args(1, &args).await;
    let s = net.providers[joined].status();
    let check = s.hub.expect("a hub check");
    assert!(check.ok, "{check:?}");
    assert_eq!(check.phase.as_deref(), Some("registered"));
    assert_eq!(check.bond, Some((100 * TOKEN).to_string()));

    // Too little bond for this one: it refuses, and says why.
    let args = requiring(500 * TOKEN);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let picky = net.spawn_provider_args(1, &args);
    let check = eventually("the picky provider checked the hub wallet", || async {
        picky.status().hub
    })
    .await;
    assert!(!check.ok, "{check:?}");
    assert!(check.detail.contains("less than"), "{check:?}");
    assert_eq!(picky.status().connection, "connecting");
    let listed = net.client.providers().await.expect("providers");
    assert!(listed.providers.iter().all(|p| p.address != picky.address));

    // A missed payday: the payout period and its grace pass. The joined
    // provider's next check fails, and it leaves.
    let node = brume_evm::signing_provider(url.clone(), keys[0].clone());
    node.anvil_increase_time(38 * 86_400).await.expect("time");
    node.evm_mine(None).await.expect("mine");
    eventually("the provider leaves the broker", || async {
        let s = net.client.status().await.ok()?;
        (s.providers_connected == 0).then_some(())
    })
    .await;
    let check = net.providers[joined].status().hub.expect("a hub check");
    assert!(
        !check.ok && check.detail.contains("missed a payday"),
        "{check:?}"
    );
    // `brume hub`, signed by the hub's key from the keyring: the DAO's
    // call is refused, the late payday made; the miss stays on the record
    // and the provider still refuses.
    let (keys_dir, pw) = (dir.path().join("keys"), dir.path().join("pw"));
    std::fs::write(&pw, "hub key password\n").expect("pw");
    import_key(net.home(), &hub_key, "hub", &keys_dir, &pw);
    let hub_cli = |args: &[&str]| {
        command(net.home())
            .arg("hub")
            .args(args)
            .args(["--rpc", url.as_str(), "--wallet", &wallet.to_string()])
            .args(["--key", "hub", "--keys-dir"])
            .arg(&keys_dir)
            .arg("--password-file")
            .arg(&pw)
            .output()
            .expect("brume hub")
    };
    let refused = hub_cli(&["suspect"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("NotDao"), "{err}");
    let paid = hub_cli(&["payday", "--json"]);
    assert!(
        paid.status.success(),
        "{}",
        String::from_utf8_lossy(&paid.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&paid.stdout).expect("JSON");
    assert!(v["gas_used"].as_u64().is_some_and(|g| g > 21_000), "{v}");
    let status = command(net.home())
        .args(["hub", "status", "--json", "--rpc", url.as_str(), "--wallet"])
        .arg(wallet.to_string())
        .output()
        .expect("brume hub status");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(
        (
            v["phase"].as_str(),
            v["paydays"].as_u64(),
            v["missed_paydays"].as_u64()
        ),
        (Some("idle"), Some(1), Some(1)),
        "{v}"
    );
    let check = eventually("the provider checks again", || async {
        let c = net.providers[joined].status().hub?;
        c.phase.as_deref().is_some_and(|p| p == "idle").then_some(c)
    })
    .await;
    assert!(!check.ok && check.detail.contains("1 late"), "{check:?}");
}
