//! Accounts, escrow, signed requests, stake and the chain routes, through
//! the real `brume broker`, `brume provide` and `brume wallet` binaries.

use std::path::{Path, PathBuf};

use brume_client::brume_api::signed;
use brume_client::{Client, ClientError, ErrorCode, ServiceKind};
use brume_identity::Identity;
use brume_identity::keyring::Keyring;
use bytes::Bytes;

use crate::net::{Net, command, cpu_job, eventually, follow, import_key};

const PASSWORD: &str = "correct horse";

/// sha256 of the empty body.
const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// A keyring in the test's home with one key named `name`.
fn keyring(home: &Path, name: &str) -> (PathBuf, PathBuf, Identity) {
    let dir = home.join("keys");
    let pw = home.join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write password file");
    let ring = Keyring::new(&dir);
    ring.create(PASSWORD.as_bytes(), Some(name))
        .expect("create key");
    let id = ring.load(name, PASSWORD.as_bytes()).expect("load key");
    (dir, pw, id)
}

/// `brume wallet ARGS --json` against `net`'s broker with the keyring.
fn wallet(net: &Net, keys: &Path, pw: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = command(net.home())
        .arg("wallet")
        .args(args)
        .args(["--json", "--broker", &net.broker.url])
        .arg("--keys-dir")
        .arg(keys)
        .arg("--password-file")
        .arg(pw)
        .output()
        .expect("run brume wallet");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), v, stderr)
}

fn api_code(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, ErrorCode) {
    match r {
        Err(ClientError::Api { status, error, .. }) => (status, error.code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn rows_of(net: &Net, account: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::get(net.url(&format!("/v1/ledger/rows?account={account}")))
        .await
        .expect("GET rows")
        .json()
        .await
        .expect("rows JSON");
    v["rows"].as_array().cloned().unwrap_or_default()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A hand-made `Brume-Signature` header over GET `path` (empty body).
fn signature_header(id: &Identity, claimed: &str, path: &str, ts: u64) -> String {
    let message = signed::message("GET", path, ts, &EMPTY_SHA256);
    signed::SignatureHeader {
        address: claimed.to_string(),
        timestamp_ms: ts,
        signature: id.sign_message(message.as_bytes()).expect("sign"),
    }
    .to_header()
}

#[tokio::test(flavor = "multi_thread")]
async fn work_without_allowance_is_402_then_approve_and_signed_requests_run() {
    let config = "[broker.chain]\nfaucet = true\nrequire_allowance = true\n";
    let net = Net::start_with(1, 2, Some(config), &[]).await;
    net.publish(
        "echo",
        ServiceKind::Command,
        test_programs_artifacts::ECHO_P1_BYTES,
    )
    .await;
    let (keys, pw, alice) = keyring(net.home(), "alice");
    let addr = alice.address().to_string();
    net.client
        .faucet(&addr, 5_000_000_000_000_000_000)
        .await
        .expect("faucet");

    // A plain API key is no account under require_allowance.
    let (status, code) = api_code(net.client.invoke("default~echo", &[], Bytes::new()).await);
    assert_eq!((status, code), (402, ErrorCode::InsufficientAllowance));

    // A signed request from an account with no allowance: 402, nothing
    // run, nothing billed.
    let signed_client = Client::with_identity(&net.broker.url, alice.clone()).expect("client");
    let (status, code) = api_code(
        signed_client
            .invoke("default~echo", &["hi".into()], Bytes::from_static(b"x"))
            .await,
    );
    assert_eq!((status, code), (402, ErrorCode::InsufficientAllowance));
    let job = signed_client
        .submit(&brume_client::JobSpec {
            service: Some("default~echo".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(api_code(job), (402, ErrorCode::InsufficientAllowance));
    let providers = net.client.providers().await.expect("providers");
    assert_eq!(providers.providers[0].work_done, 0, "nothing ran");
    assert!(rows_of(&net, &addr).await.is_empty(), "nothing billed");
    let jobs = net.client.jobs(None, None).await.expect("jobs");
    assert!(jobs.jobs.is_empty(), "no job was stored");

    // Approve 1 token of escrow with the wallet; the same request runs.
    let (ok, v, err) = wallet(&net, &keys, &pw, &["approve", "1.0", "--key", "alice"]);
    assert!(ok, "wallet approve: {err}");
    assert_eq!(v["allowance"], "1000000000000000000");
    let out = signed_client
        .invoke("default~echo", &["hi".into()], Bytes::from_static(b"x"))
        .await
        .expect("signed invoke after approve");
    assert_eq!(out.exit_code, Some(0));
    let rows = eventually("the signed call's row is stored", || {
        let net = &net;
        let addr = addr.clone();
        async move {
            let rows = rows_of(net, &addr).await;
            (!rows.is_empty()).then_some(rows)
        }
    })
    .await;
    assert_eq!(
        rows[0]["requester"],
        addr.as_str(),
        "the address is the account"
    );
    assert_eq!(rows[0]["payers"][0]["account"], addr.as_str());

    // The wallet sees the allowance and what the broker holds against it.
    let (ok, v, err) = wallet(&net, &keys, &pw, &["balance", "--key", "alice"]);
    assert!(ok, "wallet balance: {err}");
    assert_eq!(v["address"], addr.as_str());
    assert_eq!(v["balance"], "5000000000000000000");
    assert_eq!(v["allowance"], "1000000000000000000");
    assert_eq!(v["nonce"], 1);
    assert_ne!(v["outstanding"], "0", "the call's charge is outstanding");
    let (ok, v, err) = wallet(&net, &keys, &pw, &["history", "--key", "alice"]);
    assert!(ok, "wallet history: {err}");
    assert_eq!(
        v["transfers"][0]["amount"], "5000000000000000000",
        "the faucet mint"
    );

    // An API key bound to the account bills the address too.
    let out = command(net.home())
        .args([
            "broker",
            "keys",
            "create",
            "--json",
            "--name",
            "alice-key",
            "--account",
            &addr,
            "--data",
        ])
        .arg(&net.broker.data)
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["account"], addr.as_str());
    let bound =
        Client::new(&net.broker.url, v["api_key"].as_str().map(str::to_string)).expect("client");
    let out = eventually("the broker knows the new key", || {
        let bound = bound.clone();
        async move { bound.invoke("default~echo", &[], Bytes::new()).await.ok() }
    })
    .await;
    let work_id = out.work_id.expect("work id").to_string();
    let row = eventually("the bound key's row is stored", || {
        let net = &net;
        let work_id = work_id.clone();
        async move {
            let r = reqwest::get(net.url(&format!("/v1/ledger/rows/{work_id}")))
                .await
                .ok()?;
            r.status().is_success().then_some(())?;
            r.json::<serde_json::Value>().await.ok()
        }
    })
    .await;
    assert_eq!(row["requester"], addr.as_str());

    // Bad signatures are 401 with their own codes.
    let http = reqwest::Client::new();
    let get = |header: String| {
        let http = http.clone();
        let url = net.url("/v1/services");
        async move {
            let r = http
                .get(url)
                .header("authorization", header)
                .send()
                .await
                .expect("GET");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                body["code"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    let mallory = Identity::random();
    let forged = signature_header(&mallory, &addr, "/v1/services", now_ms());
    assert_eq!(get(forged).await, (401, "bad_signature".to_string()));
    let wrong_path = signature_header(&alice, &addr, "/v1/jobs", now_ms());
    assert_eq!(get(wrong_path).await, (401, "bad_signature".to_string()));
    let stale = signature_header(&alice, &addr, "/v1/services", now_ms() - 10 * 60 * 1000);
    assert_eq!(get(stale).await, (401, "stale_signature".to_string()));
    let good = signature_header(&alice, &addr, "/v1/services", now_ms());
    assert_eq!(get(good.clone()).await.0, 200);
    assert_eq!(get(good).await, (401, "replayed_signature".to_string()));
    assert_eq!(
        get("Brume-Signature address=0x12".into()).await,
        (401, "bad_signature".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chain_routes_answer_and_the_faucet_is_off_outside_devnets() {
    let net = Net::start_with(0, 1, None, &[]).await;
    let http = reqwest::Client::new();
    let info: serde_json::Value = http
        .get(net.url("/v1/chain"))
        .send()
        .await
        .expect("GET /v1/chain")
        .json()
        .await
        .expect("json");
    assert_eq!(info["kind"], "dev");
    assert_eq!(info["faucet"], false);
    assert_eq!(info["payout_account"], net.broker.broker_id.as_str());
    // One block: the operator's approval of the payout account, at start.
    assert_eq!(info["head_block"], 1);

    let status_code = |r: reqwest::Response| async move {
        let s = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        (s, v)
    };
    let faucet = http
        .post(net.url("/v1/chain/faucet"))
        .json(&serde_json::json!({"address": net.broker.broker_id, "amount": "1"}))
        .send()
        .await
        .expect("POST faucet");
    let (s, v) = status_code(faucet).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("faucet_disabled")));

    let (s, v) = status_code(
        http.get(net.url("/v1/chain/blocks/0"))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["number"], 0);
    assert_eq!(v["txs"], serde_json::json!([]));
    let (s, v) = status_code(
        http.get(net.url("/v1/chain/blocks/7"))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    let (s, v) = status_code(
        http.get(net.url(&format!("/v1/chain/tx/0x{}", "ab".repeat(32))))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    let who = Identity::random();
    let (s, v) = status_code(
        http.get(net.url(&format!("/v1/chain/accounts/{}", who.address())))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["balance"].as_str(), v["nonce"].as_u64()),
        (Some("0"), Some(0))
    );
    assert_eq!(v["spender"], net.broker.broker_id.as_str());
    let (s, v) = status_code(
        http.get(net.url(&format!("/v1/chain/accounts/{}/transfers", who.address())))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!((s, v["transfers"].clone()), (200, serde_json::json!([])));
    let (s, v) = status_code(
        http.get(net.url("/v1/chain/accounts/0x1234/transfers"))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_request")));

    // A tx signed by someone else than its sender: 401 bad_signature. A
    // good approval (no balance needed) lands and is readable by hash.
    let chain_id = info["chain_id"].as_u64().expect("chain id");
    let payout: brume_chain::Address = net.broker.broker_id.parse().expect("address");
    let tx = brume_chain::Tx {
        chain_id,
        from: who.address(),
        nonce: 0,
        call: brume_chain::Call::Approve {
            spender: payout,
            amount: 42,
        },
    };
    let forged = tx.sign(&Identity::random()).expect("sign");
    let r = net
        .client
        .submit_tx(&forged.tx.encode(), &forged.signature)
        .await;
    assert_eq!(api_code(r), (401, ErrorCode::BadSignature));
    let signed = tx.sign(&who).expect("sign");
    let receipt = net
        .client
        .submit_tx(&signed.tx.encode(), &signed.signature)
        .await
        .expect("submit");
    assert_eq!(receipt.block_number, 2, "after the operator's approval");
    let again = net
        .client
        .submit_tx(&signed.tx.encode(), &signed.signature)
        .await;
    let (s, _) = api_code(again);
    assert_eq!(s, 409, "a replayed tx is refused");
    let (s, v) = status_code(
        http.get(net.url(&format!("/v1/chain/tx/{}", receipt.tx_hash)))
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["call"], "approve");
    let account = net
        .client
        .chain_account(&who.address().to_string())
        .await
        .expect("account");
    assert_eq!((account.allowance.as_str(), account.nonce), ("42", 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_below_min_stake_gets_no_work_until_it_stakes() {
    let config = "[broker.chain]\nmin_stake = 1000\nstake_refresh_ms = 100\n";
    let net = Net::start_with(1, 1, Some(config), &[]).await;
    net.publish(
        "echo",
        ServiceKind::Command,
        test_programs_artifacts::ECHO_P1_BYTES,
    )
    .await;
    let list = net.client.providers().await.expect("providers");
    assert_eq!(list.providers[0].stake, "0");
    assert!(!list.providers[0].staked);
    let spec = brume_client::JobSpec {
        service: Some("default~echo".into()),
        queue_timeout_ms: Some(1_000),
        ..Default::default()
    };
    let job = net.client.submit(&spec).await.expect("submit");
    let result = net.client.wait(job.id).await.expect("wait");
    assert_eq!(
        result.error.map(|e| e.code),
        Some(ErrorCode::QueueTimeout),
        "no provider has the minimum stake"
    );
    let list = net.client.providers().await.expect("providers");
    assert_eq!(
        list.providers[0].work_done, 0,
        "the unstaked provider got no work"
    );

    // The provider stakes with its own key (imported into a keyring).
    let keys = net.home().join("keys");
    let pw = net.home().join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write password");
    import_key(
        net.home(),
        &net.home().join("provider-0/provider.key"),
        "prov",
        &keys,
        &pw,
    );
    let (ok, v, err) = wallet(&net, &keys, &pw, &["stake", "1000", "--key", "prov"]);
    assert!(ok, "wallet stake: {err}");
    assert_eq!(v["purpose"], "stake");
    eventually("the broker sees the stake", || {
        let client = net.client.clone();
        async move {
            let list = client.providers().await.ok()?;
            (list.providers[0].staked && list.providers[0].stake == "1000").then_some(())
        }
    })
    .await;
    let spec = brume_client::JobSpec {
        service: Some("default~echo".into()),
        ..Default::default()
    };
    let job = net.client.submit(&spec).await.expect("submit");
    let result = net.client.wait(job.id).await.expect("wait");
    assert_eq!(result.exit_code, Some(0), "{:?}", result.error);
}

/// A job's hold covers every run its verification policy may make, each
/// at the most its limits allow: an allowance for two and a half runs
/// admits a plain job but not a replication of three, which gets 402
/// before anything is stored or run.
#[tokio::test(flavor = "multi_thread")]
async fn a_replicated_job_holds_every_run_it_may_make() {
    let config = "[broker.chain]\nfaucet = true\nrequire_allowance = true\n";
    let (net, keys, pw, signed) = funded_signer(2, 1, config).await;
    let one_run = cost_of_one_run(&signed, &cpu_job(1_000)).await;
    let tokens = as_tokens(one_run * 5 / 2);
    let (ok, _, err) = wallet(&net, &keys, &pw, &["approve", &tokens, "--key", "alice"]);
    assert!(ok, "wallet approve: {err}");

    let mut replicated = cpu_job(1_000);
    replicated.verify =
        Some(brume_client::brume_api::rest::VerifyPolicy::Replicate { n: 3, quorum: 2 });
    let refused = signed.submit(&replicated).await;
    assert_eq!(api_code(refused), (402, ErrorCode::InsufficientAllowance));
    let jobs = net.client.jobs(None, None).await.expect("jobs");
    assert!(jobs.jobs.is_empty(), "no job was stored");
    let providers = net.client.providers().await.expect("providers");
    assert!(
        providers.providers.iter().all(|p| p.work_done == 0),
        "nothing ran"
    );

    // The same job unverified fits, runs, and its hold is given back.
    let job = signed.submit(&cpu_job(1_000)).await.expect("a plain job");
    let (_, result) = follow(&signed, job.id).await;
    assert_eq!(
        result.state,
        brume_client::brume_api::rest::JobState::Succeeded,
        "{result:?}"
    );
}

/// A net (`providers` × `slots`, with `config`) publishing `cpu`, and
/// alice's keyring (its dir and password file), funded by the faucet with
/// 5 tokens and no allowance yet, with a client signing as her.
async fn funded_signer(
    providers: usize,
    slots: u32,
    config: &str,
) -> (Net, PathBuf, PathBuf, Client) {
    let net = Net::start_with(providers, slots, Some(config), &[]).await;
    net.publish(
        "cpu",
        ServiceKind::Command,
        test_programs_artifacts::CPU_LOOP_P1_BYTES,
    )
    .await;
    let (keys, pw, alice) = keyring(net.home(), "alice");
    net.client
        .faucet(&alice.address().to_string(), 5_000_000_000_000_000_000)
        .await
        .expect("faucet");
    let signed = Client::with_identity(&net.broker.url, alice).expect("client");
    (net, keys, pw, signed)
}

/// What one run of `spec` may cost, as the 402 of an account with no
/// allowance says.
async fn cost_of_one_run(signed: &Client, spec: &brume_client::JobSpec) -> u128 {
    let message = match signed.submit(spec).await {
        Err(ClientError::Api { error, .. }) => error.message,
        other => panic!("expected 402, got {other:?}"),
    };
    let cost: u128 = message
        .split("may cost up to ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cost in {message:?}"));
    assert!(cost > 0, "{message}");
    cost
}

/// Token base units as a `brume wallet approve` amount.
fn as_tokens(units: u128) -> String {
    let one = 1_000_000_000_000_000_000u128;
    format!("{}.{:018}", units / one, units % one)
}

/// StackMonkey's trust levels: a requester who is only a key may run one
/// unit at once (`base_units = 1`) until its escrow allowance passes a
/// deposit of one token, which lets it run a second; over its limit it gets
/// 429 `trust_limit`, naming the limit. (At most half the network's four
/// slots: the cap by capacity is 2.)
#[tokio::test(flavor = "multi_thread")]
async fn an_anonymous_account_is_held_to_its_trust_level_until_it_deposits() {
    let config = "[broker.chain]\nfaucet = true\nrequire_allowance = true\n\
                  [broker.trust.anonymous]\nbase_units = 1\ndeposit_per_unit = 1000000000000000000\n\
                  max_share_ppm = 500000\n";
    let (net, keys, pw, signed) = funded_signer(1, 4, config).await;
    let long = cpu_job(1_000_000_000_000);
    let one_run = cost_of_one_run(&signed, &long).await;
    assert!(
        one_run * 3 < 1_000_000_000_000_000_000,
        "a run costs {one_run}"
    );
    // Allowance for three runs, but no deposit: one at a time.
    let (ok, _, err) = wallet(
        &net,
        &keys,
        &pw,
        &["approve", &as_tokens(one_run * 3), "--key", "alice"],
    );
    assert!(ok, "wallet approve: {err}");
    let first = signed.submit(&long).await.expect("the first job");
    let second = signed.submit(&long).await;
    let refused = match second {
        Err(ClientError::Api { status, error, .. }) => (status, error),
        other => panic!("expected 429, got {other:?}"),
    };
    assert_eq!((refused.0, refused.1.code), (429, ErrorCode::TrustLimit));
    assert!(refused.1.message.contains("(1)"), "{}", refused.1.message);
    // A deposit of one token more: two at a time.
    let deposit = 1_000_000_000_000_000_000 + one_run * 3;
    let (ok, _, err) = wallet(
        &net,
        &keys,
        &pw,
        &["approve", &as_tokens(deposit), "--key", "alice"],
    );
    assert!(ok, "wallet approve: {err}");
    let second = signed
        .submit(&long)
        .await
        .expect("two at a time after the deposit");
    assert_eq!(
        api_code(signed.submit(&long).await),
        (429, ErrorCode::TrustLimit),
        "but not three"
    );
    for id in [first.id, second.id] {
        signed.cancel(id).await.expect("cancel");
    }
}

/// A lease's deposit is held against its account's allowance like any
/// work's cost: refused without one, and a second lease can't promise the
/// same allowance again, even after a broker restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_deposit_is_held_against_the_allowance_across_a_restart() {
    use brume_api::lease::{LeaseSpec, LeaseState};
    let config = "[broker.chain]\nfaucet = true\nrequire_allowance = true\n";
    let (mut net, keys, pw, signed) = funded_signer(1, 4, config).await;
    net.publish(
        "hello",
        ServiceKind::Http,
        test_programs_artifacts::HTTP_HELLO_BYTES,
    )
    .await;
    let one_token = 1_000_000_000_000_000_000u128;
    let spec = LeaseSpec {
        service: "default~hello".into(),
        deposit: one_token.to_string(),
        private: false,
    };
    assert_eq!(
        api_code(signed.create_lease(&spec).await),
        (402, ErrorCode::InsufficientAllowance),
        "no allowance, no lease"
    );
    let (ok, _, err) = wallet(&net, &keys, &pw, &["approve", "1.5", "--key", "alice"]);
    assert!(ok, "wallet approve: {err}");
    let lease = signed.create_lease(&spec).await.expect("a lease");
    assert_eq!(
        api_code(signed.create_lease(&spec).await),
        (402, ErrorCode::InsufficientAllowance),
        "the first lease holds a token of the 1.5 allowed"
    );
    // Restarted, the broker holds its balance again.
    net.broker.restart();
    crate::net::eventually("the lease runs again", || async {
        signed
            .lease(&lease.id)
            .await
            .ok()
            .filter(|l| l.state == LeaseState::Running)
    })
    .await;
    assert_eq!(
        api_code(signed.create_lease(&spec).await),
        (402, ErrorCode::InsufficientAllowance),
        "still held after the restart"
    );
    let stopped = signed.stop_lease(&lease.id).await.expect("stop");
    assert_eq!(stopped.state, LeaseState::Stopped);
}
