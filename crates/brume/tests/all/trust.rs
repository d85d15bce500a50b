//! Signed receipts through the real binaries: every job result carries its
//! provider's signed receipt, and `brume verify-proof` checks receipts and
//! proofs of cheat offline.

use brume_client::ServiceKind;
use brume_client::brume_api::Profile;
use brume_client::brume_api::receipt::{Assignment, CheatProof, SignedAssignment, SignedReceipt};
use brume_client::brume_api::rest::{JobState, VerifyPolicy};
use brume_identity::Identity;
use test_programs_artifacts as art;

use crate::net::*;

/// `brume verify-proof FILE --json`: (exit code, verdict).
fn verify_proof(net: &Net, name: &str, body: &impl serde::Serialize) -> (i32, serde_json::Value) {
    verify_proof_with(net, name, body, &[])
}

/// [`verify_proof`] with more flags.
fn verify_proof_with(
    net: &Net,
    name: &str,
    body: &impl serde::Serialize,
    flags: &[&str],
) -> (i32, serde_json::Value) {
    let path = net.home().join(name);
    std::fs::write(&path, serde_json::to_vec(body).expect("json")).expect("write");
    let out = command(net.home())
        .arg("verify-proof")
        .arg(&path)
        .arg("--json")
        .args(flags)
        .output()
        .expect("run verify-proof");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify-proof: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// A receipt for the same work with another result, signed by `by`.
fn forged(honest: &SignedReceipt, by: &Identity, output: &str) -> SignedReceipt {
    let mut receipt = honest.receipt.clone();
    // Another replica: its own work id.
    receipt.work_id = brume_client::brume_api::WorkId::new();
    receipt.provider = by.address().to_string();
    receipt.output_digest = output.to_string();
    let sig = by.sign_message(receipt.message().as_bytes()).expect("sign");
    SignedReceipt {
        receipt,
        signature: hex0x(&sig),
        assignment: None,
    }
}

fn hex0x(bytes: &[u8]) -> String {
    bytes.iter().fold(String::from("0x"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

/// `r` with an assignment naming `broker`, signed by `signer`.
fn stamped(r: &SignedReceipt, broker: &str, signer: &Identity) -> SignedReceipt {
    let assignment = Assignment::of(
        broker,
        &r.receipt,
        &brume_client::brume_api::Limits::default(),
    );
    let sig = signer
        .sign_message(assignment.message().as_bytes())
        .expect("sign");
    SignedReceipt {
        assignment: Some(SignedAssignment {
            assignment,
            signature: hex0x(&sig),
        }),
        ..r.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_results_carry_signed_receipts_and_proofs_verify_offline() {
    let net = Net::start(2, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let mut spec = cpu_job(20_000);
    spec.profile = Profile::Deterministic;
    let job = net.client.submit(&spec).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    let honest = result.receipt.clone().expect("a receipt");
    assert_eq!(Some(&honest.receipt.provider), result.provider.as_ref());
    assert_eq!(honest.receipt.work_id, job.id);
    assert_eq!(honest.receipt.fuel, result.usage.fuel);
    assert_eq!(honest.receipt.status, "exit:0");
    assert_eq!(honest.receipt.profile, Profile::Deterministic);

    // The receipt alone verifies offline, bound to the broker's signed
    // assignment.
    let assignment = honest.assignment.as_ref().expect("a signed assignment");
    assert_eq!(assignment.assignment.work_id, job.id);
    let (code, v) = verify_proof(&net, "receipt.json", &honest);
    assert_eq!((code, &v["valid"]), (0, &serde_json::json!(true)), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("broker {}", assignment.assignment.broker)),
        "{v}"
    );
    let mut tampered = honest.clone();
    if let Some(a) = tampered.assignment.as_mut() {
        a.assignment.fuel_limit += 1;
    }
    let (code, v) = verify_proof(&net, "tampered.json", &tampered);
    assert_eq!(code, 1, "{v}");
    // It is stored with the result: a restarted broker serves it too.
    let mut net = net;
    net.broker.restart();
    let again = net.client.result(job.id).await.expect("result");
    assert_eq!(again.receipt.as_ref(), Some(&honest));

    // A "proof" from throwaway keys (a cheat and a witness that sign
    // another output than the honest receipt's): rejected, because no
    // broker gave them the work.
    let cheater = Identity::random();
    let witness = Identity::random();
    let throwaway = CheatProof {
        cheat: honest.clone(),
        quorum: vec![
            forged(&honest, &cheater, &"00".repeat(32)),
            forged(&honest, &witness, &"00".repeat(32)),
        ],
        reexecution: None,
        work: None,
    };
    let (code, v) = verify_proof(&net, "throwaway.json", &throwaway);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problems"]
            .to_string()
            .contains("no broker-signed assignment"),
        "{v}"
    );
    // Assignments that name a broker but aren't signed by it: rejected.
    let broker = Identity::random();
    let impostor = Identity::random();
    let unsigned = CheatProof {
        cheat: stamped(&throwaway.cheat, &broker.address().to_string(), &impostor),
        quorum: throwaway
            .quorum
            .iter()
            .map(|r| stamped(r, &broker.address().to_string(), &impostor))
            .collect(),
        reexecution: None,
        work: None,
    };
    let (code, v) = verify_proof(&net, "unsigned.json", &unsigned);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problems"].to_string().contains("not signed by broker"),
        "{v}"
    );
    // Signed by the broker it names, the proof holds, and says whose word
    // it rests on: a stranger trusts it only as far as that broker.
    let stamp = |r: &SignedReceipt| stamped(r, &broker.address().to_string(), &broker);
    let proof = CheatProof {
        cheat: stamp(&forged(&honest, &cheater, &"00".repeat(32))),
        quorum: vec![
            stamp(&honest),
            stamp(&forged(&honest, &witness, &honest.receipt.output_digest)),
        ],
        reexecution: None,
        work: None,
    };
    let (code, v) = verify_proof(&net, "proof.json", &proof);
    assert_eq!(code, 0, "{v}");
    let message = v["message"].as_str().unwrap_or("");
    assert!(message.contains(&cheater.address().to_string()), "{v}");
    assert!(message.contains(&broker.address().to_string()), "{v}");

    // Tampering with any receipt breaks it.
    let mut bad = proof.clone();
    bad.quorum[0].receipt.fuel += 1;
    let (code, v) = verify_proof(&net, "bad.json", &bad);
    assert_eq!(code, 1, "{v}");
    assert!(v["problems"].to_string().contains("not signed"), "{v}");
    // One witness is not enough, and the cheat can't witness against itself.
    let mut lone = proof.clone();
    lone.quorum.truncate(1);
    let (code, v) = verify_proof(&net, "lone.json", &lone);
    assert_eq!(code, 1, "{v}");
    assert!(v["problems"].to_string().contains("at least 2"), "{v}");
    let mut selfish = proof.clone();
    selfish.quorum[1] = stamp(&forged(&honest, &cheater, &honest.receipt.output_digest));
    let (code, v) = verify_proof(&net, "selfish.json", &selfish);
    assert_eq!(code, 1, "{v}");
    // Results that agree prove nothing.
    let agreeing = CheatProof {
        cheat: stamp(&forged(&honest, &cheater, &honest.receipt.output_digest)),
        quorum: proof.quorum.clone(),
        reexecution: None,
        work: None,
    };
    let (code, v) = verify_proof(&net, "agree.json", &agreeing);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problems"].to_string().contains("does not conflict"),
        "{v}"
    );
}

const TOKEN: u128 = 1_000_000_000_000_000_000;

/// Funds `address` from the faucet and stakes `stake` of it (an approval
/// of the payout account, signed with the provider's own key file).
async fn fund_and_stake(net: &Net, data: &std::path::Path, stake: u128) -> Identity {
    use brume_chain::{Call, Tx};
    let id = Identity::load_or_create(&data.join("provider.key")).expect("provider key");
    let address = id.address().to_string();
    net.client
        .faucet(&address, 1_000 * TOKEN)
        .await
        .expect("faucet");
    let info = net.client.chain_info().await.expect("chain");
    let account = net.client.chain_account(&address).await.expect("account");
    let tx = Tx {
        chain_id: info.chain_id,
        from: id.address(),
        nonce: account.nonce,
        call: Call::Approve {
            spender: info.payout_account.parse().expect("payout"),
            amount: stake,
        },
    }
    .sign(&id)
    .expect("sign");
    net.client
        .submit_tx(&tx.tx.encode(), &tx.signature)
        .await
        .expect("stake");
    id
}

/// Waits until the broker no longer lists `address` (banned or gone).
async fn dropped(net: &Net, address: &str, what: &str) {
    let client = net.client.clone();
    eventually(what, || {
        let client = client.clone();
        async move {
            let list = client.providers().await.ok()?;
            (!list.providers.iter().any(|p| p.address == address)).then_some(())
        }
    })
    .await;
}

/// 5 providers, 1 of them byzantine (20 %): it signs wrong outputs.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_replication_no_wrong_result_gets_through_and_the_cheat_is_banned_slashed_and_unpaid()
{
    let config = "[broker.chain]\nfaucet = true\n";
    let mut net = Net::start_with(0, 1, Some(config), &[]).await;
    let mut honest = Vec::new();
    for _ in 0..4 {
        let i = net.add_provider_args(1, &[]).await;
        honest.push(net.providers[i].address.clone());
    }
    let i = net.add_provider_args(1, &["--fault", "wrong-output"]).await;
    let cheater = net.providers[i].address.clone();
    for p in &net.providers {
        fund_and_stake(&net, &p.data, 100 * TOKEN).await;
    }
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;

    // Ten jobs at once, each on 3 of the 5 providers; 2 must agree.
    let mut jobs = Vec::new();
    for k in 0..10u64 {
        let mut spec = cpu_job(10_000 + k);
        spec.verify = Some(VerifyPolicy::Replicate { n: 3, quorum: 2 });
        jobs.push((k, net.client.submit(&spec).await.expect("submit")));
    }
    let mut proofs = Vec::new();
    for (k, job) in &jobs {
        let (_, result) = follow(&net.client, job.id).await;
        assert_eq!(result.state, JobState::Succeeded, "{result:?}");
        // No wrong result reaches the requester.
        assert_eq!(
            result.stdout.0,
            cpu_loop_output(10_000 + k).as_bytes(),
            "job {k}"
        );
        let v = result.verification.expect("verification");
        assert_eq!(v.replicas.len(), 3, "{v:?}");
        let providers: std::collections::HashSet<_> =
            v.replicas.iter().map(|r| r.provider.clone()).collect();
        assert_eq!(providers.len(), 3, "distinct providers: {v:?}");
        assert!(
            v.cheaters.iter().all(|c| *c == cheater),
            "only the byzantine provider is a cheat: {v:?}"
        );
        proofs.extend(v.proofs);
        let receipt = result.receipt.expect("the winning receipt");
        assert_ne!(receipt.receipt.provider, cheater);
    }
    // The cheat took part (it was idle when the replicas were queued), was
    // caught, and its proof verifies offline.
    assert!(
        !proofs.is_empty(),
        "the byzantine provider was never caught"
    );
    let (code, v) = verify_proof(&net, "cheat.json", &proofs[0]);
    assert_eq!(code, 0, "{v}");

    // Banned: dropped from the broker, and its reconnects refused.
    dropped(&net, &cheater, "the broker drops the cheat").await;
    let idx = net.provider_index(&cheater);
    let proc = &net.providers[idx].proc;
    eventually("the cheat's reconnect is refused as banned", || async {
        let tail = proc.stderr_tail();
        (tail.matches("banned").count() >= 2).then_some(())
    })
    .await;

    // Slashed: its whole stake went to the operator, with the proof's
    // digest as the anchor.
    let account = net.client.chain_account(&cheater).await.expect("account");
    assert_eq!(account.allowance, "0", "{account:?}");
    assert_eq!(account.balance, (900 * TOKEN).to_string(), "{account:?}");

    // Unpaid: no ledger row names it; the honest replicas are billed.
    let rows: serde_json::Value = reqwest::get(net.url("/v1/ledger/rows?limit=1000"))
        .await
        .expect("rows")
        .json()
        .await
        .expect("json");
    let rows = rows["rows"].as_array().expect("rows");
    assert!(rows.len() >= 20, "{} rows", rows.len());
    assert!(
        rows.iter().all(|r| r["provider"] != cheater.as_str()),
        "the cheat is not paid"
    );
    assert!(
        rows.iter()
            .all(|r| honest.iter().any(|h| r["provider"] == h.as_str()))
    );
}

/// Adaptive: while providers have short runs of verified results, every
/// result is checked by a second replica; each agreement lengthens both
/// providers' runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_checks_results_of_providers_with_short_runs() {
    let net = Net::start(3, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    for k in 0..3u64 {
        let mut spec = cpu_job(5_000 + k);
        spec.verify = Some(VerifyPolicy::Adaptive);
        let job = net.client.submit(&spec).await.expect("submit");
        let (_, result) = follow(&net.client, job.id).await;
        assert_eq!(result.state, JobState::Succeeded, "{result:?}");
        assert_eq!(result.stdout.0, cpu_loop_output(5_000 + k).as_bytes());
        let v = result.verification.expect("verification");
        assert_eq!(v.policy, VerifyPolicy::Adaptive);
        assert_eq!(v.replicas.len(), 2, "a short run is always checked: {v:?}");
        assert!(v.replicas.iter().all(|r| r.agreed), "{v:?}");
        assert!(v.cheaters.is_empty());
    }
    // Three checked jobs, two replicas each: six verified results in all.
    let list = net.client.providers().await.expect("providers");
    let valid: u64 = list.providers.iter().map(|p| p.reputation.valid).sum();
    assert_eq!(valid, 6, "{list:?}");
    assert!(list.providers.iter().all(|p| p.reputation.failures == 0));
}

/// The verifier policy: a companion service checks each result; a wrong
/// one is rejected and run again elsewhere, and only the accepted replica
/// is delivered and paid.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_policy_rejects_a_wrong_output_and_reruns_it_elsewhere() {
    let mut net = Net::start(0, 1).await;
    let liar = net.add_provider_args(1, &["--fault", "wrong-output"]).await;
    let liar = net.providers[liar].address.clone();
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    net.publish("cpu-verify", ServiceKind::Command, art::CPU_VERIFY_P1_BYTES)
        .await;
    // Only the liar is connected: it runs the job first. Its result waits
    // for a verifier on another provider.
    let mut spec = cpu_job(12_345);
    spec.verify = Some(VerifyPolicy::Verifier {
        service: "default~cpu-verify".into(),
    });
    let job = net.client.submit(&spec).await.expect("submit");
    net.add_provider(1).await;
    net.add_provider(1).await;
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout.0, cpu_loop_output(12_345).as_bytes());
    let v = result.verification.expect("verification");
    assert_eq!(v.replicas.len(), 2, "{v:?}");
    let lied = v
        .replicas
        .iter()
        .find(|r| r.provider == liar)
        .expect("the liar ran the first replica");
    assert!(!lied.agreed, "{v:?}");
    assert!(v.replicas.iter().any(|r| r.agreed && r.provider != liar));
    assert!(
        v.cheaters.is_empty(),
        "a verifier's no is not a proof: {v:?}"
    );
    let receipt = result.receipt.expect("receipt");
    assert_ne!(receipt.receipt.provider, liar);

    // The rejected replica is not paid: no row for the cpu module names the
    // liar (it may have run a verifier, which is paid).
    let cpu = net.client.service("cpu").await.expect("cpu service").digest;
    let rows: serde_json::Value = reqwest::get(net.url("/v1/ledger/rows?limit=1000"))
        .await
        .expect("rows")
        .json()
        .await
        .expect("json");
    let rows = rows["rows"].as_array().expect("rows");
    assert!(
        rows.iter()
            .filter(|r| r["service_digest"] == cpu.as_str())
            .all(|r| r["provider"] != liar.as_str()),
        "{rows:?}"
    );
}

/// `brume broker providers approve ADDRESS` on the broker's data dir.
fn approve(net: &Net, address: &str) {
    let out = command(net.home())
        .args(["broker", "providers", "approve", address, "--data"])
        .arg(&net.broker.data)
        .output()
        .expect("providers approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The address a provider started in `dir` will have.
fn key_in(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    Identity::load_or_create(&dir.join("provider.key"))
        .expect("key")
        .address()
        .to_string()
}

/// Tiers: an organisation's private pool runs only its work; attested and
/// approved providers are tiers 3 and 2; a job runs only on the tiers it
/// allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_tiers_decide_who_may_run_what() {
    let mut net = Net::start_with(0, 1, Some(""), &["acme"]).await;
    let authority = Identity::random();
    let acme_dir = net.next_provider_dir();
    let acme_provider = key_in(&acme_dir);
    let config = format!(
        "[broker.trust]\nattestation_authority = \"{}\"\n[[broker.trust.orgs]]\nname = \"acme\"\naccounts = [\"acme\"]\nproviders = [\"{acme_provider}\"]\n",
        authority.address()
    );
    std::fs::write(net.home().join("broker.toml"), config).expect("config");
    net.broker.restart();
    let tier1 = net.add_provider_args(1, &["--org", "acme"]).await;
    assert_eq!(net.providers[tier1].address, acme_provider);
    // Tier 3: attested by the authority.
    let attested = key_in(&net.next_provider_dir());
    let sig = authority
        .sign_message(brume_client::brume_api::wire::attestation_message(&attested).as_bytes())
        .expect("attest");
    let file = net.home().join("attestation");
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&file, format!("test\n{hex}\n")).expect("write");
    net.add_provider_args(1, &["--attestation", file.to_str().expect("utf-8")])
        .await;
    // Tier 2: approved before it connects.
    let approved = key_in(&net.next_provider_dir());
    approve(&net, &approved);
    net.add_provider(1).await;
    // Tier 4: anyone.
    let anyone = net.add_provider(1).await;
    let anyone = net.providers[anyone].address.clone();

    let list = net.client.providers().await.expect("providers");
    let tier = |a: &str| {
        list.providers
            .iter()
            .find(|p| p.address == a)
            .map(|p| p.tier)
            .expect("listed")
    };
    assert_eq!(
        (
            tier(&acme_provider),
            tier(&approved),
            tier(&attested),
            tier(&anyone)
        ),
        (1, 2, 3, 4)
    );
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let acme = brume_client::Client::new(&net.broker.url, Some(net.named_keys[0].clone()))
        .expect("client");
    let run = |client: brume_client::Client, tiers: Vec<u8>| async move {
        let mut spec = cpu_job(1_000);
        spec.tiers = Some(tiers);
        spec.queue_timeout_ms = Some(1_500);
        let job = client.submit(&spec).await.expect("submit");
        follow(&client, job.id).await.1
    };
    // The organisation's own work runs in its private pool.
    let r = run(acme.clone(), vec![1]).await;
    assert_eq!(r.provider.as_deref(), Some(acme_provider.as_str()), "{r:?}");
    // Nobody else's does.
    let r = run(net.client.clone(), vec![1]).await;
    assert_eq!(r.state, JobState::Failed, "{r:?}");
    assert_eq!(
        r.error.as_ref().map(|e| e.code.as_str()),
        Some("queue_timeout")
    );
    // Each other tier runs only where it may.
    for (tiers, who) in [
        (vec![2], &approved),
        (vec![3], &attested),
        (vec![4], &anyone),
    ] {
        let r = run(net.client.clone(), tiers.clone()).await;
        assert_eq!(
            r.provider.as_deref(),
            Some(who.as_str()),
            "tiers {tiers:?}: {r:?}"
        );
    }
    // A bad tier is refused.
    let mut bad = cpu_job(1_000);
    bad.tiers = Some(vec![7]);
    assert!(net.client.submit(&bad).await.is_err());
}

/// Replicas that disagree are settled by the broker's own deterministic
/// re-execution, not by a vote: two colluding liars (a quorum of two) lose
/// to one honest provider. Their proofs rest on the re-execution, which
/// anyone can repeat with `verify-proof --reexecute`; a proof that a
/// re-execution refutes is exposed.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_is_settled_by_reexecution_and_a_colluding_majority_loses() {
    let mut net = Net::start(0, 1).await;
    let honest = net.add_provider(1).await;
    let honest = net.providers[honest].address.clone();
    let mut liars = Vec::new();
    for _ in 0..2 {
        let i = net.add_provider_args(1, &["--fault", "wrong-output"]).await;
        liars.push(net.providers[i].address.clone());
    }
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let mut spec = cpu_job(4_321);
    spec.verify = Some(VerifyPolicy::Replicate { n: 3, quorum: 2 });
    let job = net.client.submit(&spec).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    assert_eq!(result.stdout.0, cpu_loop_output(4_321).as_bytes());
    let v = result.verification.expect("verification");
    assert_eq!(v.replicas.len(), 3, "{v:?}");
    assert!(
        v.replicas.iter().any(|r| r.provider == honest && r.agreed),
        "{v:?}"
    );
    let mut cheaters = v.cheaters.clone();
    cheaters.sort();
    liars.sort();
    assert_eq!(cheaters, liars, "{v:?}");
    assert_ne!(
        result.receipt.as_ref().map(|r| &r.receipt.provider),
        Some(&liars[0])
    );

    // Each proof rests on the broker's signed re-execution and carries the
    // work; the honest provider's receipt witnesses.
    let proof = v.proofs[0].clone();
    let x = proof.reexecution.as_ref().expect("a re-execution");
    assert_eq!(x.reexecution.by, net.broker.broker_id);
    assert!(proof.work.is_some());
    assert!(proof.quorum.iter().all(|r| r.receipt.provider == honest));
    let (code, out) = verify_proof(&net, "settled.json", &proof);
    assert_eq!(code, 0, "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap_or("")
            .contains("re-execution by"),
        "{out}"
    );
    // Re-run here, with the module from a file or fetched from the broker.
    let module = net.home().join("cpu.wasm");
    std::fs::write(&module, art::CPU_LOOP_P1_BYTES).expect("write module");
    let module = module.display().to_string();
    let (code, out) = verify_proof_with(
        &net,
        "settled.json",
        &proof,
        &["--reexecute", "--module", &module],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out["message"].as_str().unwrap_or("").contains("confirmed"),
        "{out}"
    );
    let url = net.broker.url.clone();
    let (code, out) = verify_proof_with(
        &net,
        "settled.json",
        &proof,
        &["--reexecute", "--broker", &url, "--api-key", &net.key],
    );
    assert_eq!(code, 0, "{out}");

    // A lying broker (its own key) "re-executes" the honest receipt into
    // another result: the signatures hold, but re-running it refutes it.
    let broker = Identity::load_or_create(&net.broker.data.join("broker.key")).expect("broker key");
    let genuine = proof.quorum[0].clone();
    let mut lie = x.reexecution.clone();
    lie.output_digest = "00".repeat(32);
    lie.input_digest = genuine.receipt.input_digest.clone();
    let framed = CheatProof {
        cheat: genuine.clone(),
        quorum: Vec::new(),
        reexecution: Some(reexecution_signed(lie.clone(), &broker)),
        work: proof.work.clone(),
    };
    let (code, out) = verify_proof(&net, "framed.json", &framed);
    assert_eq!(code, 0, "the broker's word alone: {out}");
    let (code, out) = verify_proof_with(
        &net,
        "framed.json",
        &framed,
        &["--reexecute", "--module", &module],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out["problems"]
            .to_string()
            .contains("refuted by re-execution"),
        "{out}"
    );
    // A re-execution signed by anyone but the assigning broker: rejected.
    let stranger = Identity::random();
    lie.by = stranger.address().to_string();
    let strange = CheatProof {
        reexecution: Some(reexecution_signed(lie, &stranger)),
        ..framed
    };
    let (code, out) = verify_proof(&net, "stranger.json", &strange);
    assert_eq!(code, 1, "{out}");
    assert!(
        out["problems"].to_string().contains("not by broker"),
        "{out}"
    );
}

/// A provider that signs one more unit of fuel than it used is refuted by
/// the re-execution too, and banned: the fuel is part of the result.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_padded_fuel_claim_is_refuted_by_reexecution() {
    let mut net = Net::start(1, 1).await;
    let padder = net.add_provider_args(1, &["--fault", "wrong-fuel"]).await;
    let padder = net.providers[padder].address.clone();
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let mut spec = cpu_job(2_222);
    spec.verify = Some(VerifyPolicy::Replicate { n: 2, quorum: 2 });
    let job = net.client.submit(&spec).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    let v = result.verification.expect("verification");
    assert_eq!(v.cheaters, vec![padder.clone()], "{v:?}");
    let x = v.proofs[0].reexecution.as_ref().expect("a re-execution");
    assert_eq!(x.reexecution.fuel + 1, v.proofs[0].cheat.receipt.fuel);
    assert_eq!(x.reexecution.fuel, result.usage.fuel);
    let (code, out) = verify_proof(&net, "fuel.json", &v.proofs[0]);
    assert_eq!(code, 0, "{out}");
}

/// Measured capabilities: the broker times a fresh fitness challenge at the
/// handshake. A provider claiming ten times its speed is placed (tiers'
/// `min_mips`, the slow-provider refund) by the measure, and told why.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_is_placed_by_its_measured_speed_not_its_claim() {
    let mut net = Net::start(0, 1).await;
    let i = net.add_provider_args(1, &["--fault", "inflate-mips"]).await;
    let liar = net.providers[i].address.clone();
    let list = net.client.providers().await.expect("providers");
    let info = list
        .providers
        .iter()
        .find(|p| p.address == liar)
        .expect("the provider is connected");
    assert!(info.fitness_mips >= 1, "{info:?}");
    assert!(
        info.fitness_mips * 2 < info.claimed_mips,
        "placed by the measure, not the claim: {info:?}"
    );
    let proc = &net.providers[i].proc;
    eventually("the provider is told why", || async {
        proc.stderr_tail()
            .contains("places this provider by its measured speed")
            .then_some(())
    })
    .await;
    // Its work runs as usual.
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let job = net.client.submit(&cpu_job(1_000)).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
}

/// Measured memory: the broker asks the provider's sandbox for the memory
/// it claims. One slot can't hold 64 GiB (a wasm instance holds 4 GiB at
/// most): the claim is cut to what the instance was granted, and the
/// provider is told why. An ordinary claim stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_claim_is_placed_by_what_the_sandbox_was_granted() {
    let mut net = Net::start(0, 1).await;
    let honest = net.add_provider_args(1, &["--memory", "1GiB"]).await;
    let big = net.add_provider_args(1, &["--memory", "64GiB"]).await;
    let list = net.client.providers().await.expect("providers");
    let info = |i: usize| {
        let address = net.providers[i].address.clone();
        list.providers
            .iter()
            .find(|p| p.address == address)
            .cloned()
            .expect("connected")
    };
    let ok = info(honest);
    assert_eq!(
        (ok.memory_bytes, ok.claimed_memory_bytes),
        (1 << 30, 1 << 30)
    );
    // Its bandwidth was timed too, on a blob at the handshake.
    assert!(ok.measured_mbps >= 1, "{ok:?}");
    let cut = info(big);
    assert_eq!(cut.claimed_memory_bytes, 64 << 30, "{cut:?}");
    assert_eq!(cut.memory_bytes, 4 << 30, "one instance's worth: {cut:?}");
    let proc = &net.providers[big].proc;
    eventually("the provider is told why", || async {
        proc.stderr_tail()
            .contains("by the memory its sandbox was granted")
            .then_some(())
    })
    .await;
}

/// An idle provider is challenged again now and then: its measured speed
/// and when it was measured move on, and its work runs as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_provider_is_measured_again_now_and_then() {
    let config = "[broker.trust]\nremeasure_ms = 100\n";
    let mut net = Net::start_with(0, 1, Some(config), &[]).await;
    let i = net.add_provider(1).await;
    let address = net.providers[i].address.clone();
    let first = {
        let list = net.client.providers().await.expect("providers");
        let p = list
            .providers
            .iter()
            .find(|p| p.address == address)
            .expect("connected");
        assert!(p.measured_mips >= 1, "{p:?}");
        p.measured_at_ms
    };
    let client = net.client.clone();
    eventually("a re-challenge answered", || {
        let (client, address) = (client.clone(), address.clone());
        async move {
            let list = client.providers().await.ok()?;
            let p = list.providers.into_iter().find(|p| p.address == address)?;
            (p.measured_at_ms > first && p.measured_mips >= 1).then_some(())
        }
    })
    .await;
    // Memory is asked again with the speed, and bandwidth every other time.
    eventually("a bandwidth re-probe answered", || {
        let client = client.clone();
        async move {
            let m = client.metrics().await.ok()?;
            let answered =
                |kind: &str| m.contains(&format!("brume_remeasures_total{{kind=\"{kind}\"}}"));
            (answered("compute") && answered("bandwidth")).then_some(())
        }
    })
    .await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let job = net.client.submit(&cpu_job(1_000)).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    // Still connected: it answered every challenge right.
    let list = net.client.providers().await.expect("providers");
    assert!(list.providers.iter().any(|p| p.address == address));
}

fn reexecution_signed(
    r: brume_client::brume_api::receipt::Reexecution,
    by: &Identity,
) -> brume_client::brume_api::receipt::SignedReexecution {
    let sig = by.sign_message(r.message().as_bytes()).expect("sign");
    brume_client::brume_api::receipt::SignedReexecution {
        reexecution: r,
        signature: hex0x(&sig),
    }
}

/// An account's default policy verifies its jobs that name none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_default_policy_applies_to_its_jobs() {
    let config =
        "[broker.trust.account_verify]\nacme = { kind = \"replicate\", n = 2, quorum = 2 }\n";
    let net = Net::start_with(2, 1, Some(config), &["acme"]).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let acme = brume_client::Client::new(&net.broker.url, Some(net.named_keys[0].clone()))
        .expect("client");
    let job = acme.submit(&cpu_job(777)).await.expect("submit");
    let (_, result) = follow(&acme, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    let v = result
        .verification
        .expect("verified by the account's policy");
    assert_eq!(v.policy, VerifyPolicy::Replicate { n: 2, quorum: 2 });
    assert_eq!(v.replicas.len(), 2);
    // Another account's job is not replicated.
    let job = net.client.submit(&cpu_job(777)).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert!(result.verification.is_none(), "{result:?}");
}

/// A provider's track record (what adaptive verification and matching rank
/// by) is saved: a restarted broker still knows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reputation_survives_a_broker_restart() {
    let mut net = Net::start(2, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let mut spec = cpu_job(7_000);
    spec.verify = Some(VerifyPolicy::Replicate { n: 2, quorum: 2 });
    let job = net.client.submit(&spec).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    let before = net.client.providers().await.expect("providers").providers;
    assert_eq!(before.len(), 2);
    assert!(
        before
            .iter()
            .all(|p| p.reputation.valid == 1 && p.reputation.results == 1),
        "{before:?}"
    );

    net.broker.restart_gracefully();
    let client = net.client.clone();
    let after = eventually("both providers are back", || {
        let client = client.clone();
        async move {
            let list = client.providers().await.ok()?.providers;
            (list.len() == 2).then_some(list)
        }
    })
    .await;
    for p in &before {
        let again = after
            .iter()
            .find(|a| a.address == p.address)
            .expect("same address");
        assert_eq!(again.reputation, p.reputation, "{}", p.address);
    }
}

/// Audited functions: a provider that lies on one call in ten is caught by
/// the broker's re-execution after the answer, banned and slashed, and the
/// caller is refunded the lying call's fee.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audited_function_catches_a_provider_lying_on_a_tenth_of_calls_and_refunds_the_caller() {
    // Every audited call is re-executed here, so that the test is exact.
    let config = "[broker.chain]\nfaucet = true\n\n[broker.trust]\naudit_share_ppm = 1000000\n";
    let mut net = Net::start_with(0, 1, Some(config), &[]).await;
    let i = net
        .add_provider_args(1, &["--fault", "wrong-output-tenth"])
        .await;
    let liar = net.providers[i].address.clone();
    fund_and_stake(&net, &net.providers[i].data, 100 * TOKEN).await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    let invoke = |verify: &'static str, body: String| {
        reqwest::Client::new()
            .post(net.url("/v1/functions/default~echo/invoke"))
            .bearer_auth(&net.key)
            .header("x-brume-verify", verify)
            .body(body)
            .send()
    };

    // A verification an invocation can't have is refused, naming why.
    for bad in ["replicate=1", "replicate=17", "replicate=", "sometimes"] {
        let resp = invoke(bad, "x".into()).await.expect("invoke");
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{v}"
        );
    }

    // Audited calls are answered at once; the tenth answer is a lie.
    let mut lie = None;
    for k in 0..20 {
        let input = format!("call number {k}");
        let resp = invoke("audit", input.clone()).await.expect("invoke");
        assert_eq!(resp.status(), 200);
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (id, cost) = (header("x-brume-work-id"), header("x-brume-cost"));
        let body = resp.bytes().await.expect("body");
        if body != input.as_bytes() {
            lie = Some((id.expect("work id"), cost.expect("cost")));
            break;
        }
    }
    let (id, cost) = lie.expect("the liar lies on one call in ten");

    // Caught: banned (dropped, reconnects refused) and slashed.
    dropped(&net, &liar, "the broker drops the liar").await;
    // Slashed just after the ban: its whole stake.
    let client = net.client.clone();
    eventually("the liar's stake is slashed", || {
        let (client, liar) = (client.clone(), liar.clone());
        async move {
            let account = client.chain_account(&liar).await.ok()?;
            (account.allowance == "0").then_some(())
        }
    })
    .await;

    // The caller is refunded the lying call's fee, in the next settlement.
    let refund = eventually("the refund row", || async {
        let resp = reqwest::get(net.url(&format!("/v1/ledger/rows/audit-refund-{id}")))
            .await
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        resp.json::<serde_json::Value>().await.ok()
    })
    .await;
    assert_eq!(refund["payouts"][0]["role"], "refund", "{refund}");
    assert_eq!(refund["payouts"][0]["beneficiary"], "default", "{refund}");
    assert_eq!(refund["payouts"][0]["amount"], cost.as_str(), "{refund}");
    assert_eq!(refund["payers"][0]["kind"], "audit_refund", "{refund}");
    assert_eq!(
        refund["payers"][0]["account"], refund["operator"],
        "{refund}"
    );
    // The honest answers before it were audited and confirmed.
    let metrics = reqwest::get(net.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("brume_audits_total{outcome=\"refuted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("brume_audits_total{outcome=\"confirmed\"}"),
        "{metrics}"
    );
}

/// `x-brume-verify: replicate=3` on a function: 3 replicas on distinct
/// providers, one of which lies on every call. The majority's answer comes
/// back, the liar is caught by the broker's re-execution, and only the
/// agreeing replicas are billed.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_function_call_is_answered_by_its_majority_and_the_liar_is_caught() {
    let config = "[broker.chain]\nfaucet = true\n";
    let mut net = Net::start_with(0, 1, Some(config), &[]).await;
    for _ in 0..2 {
        net.add_provider_args(1, &[]).await;
    }
    let i = net.add_provider_args(1, &["--fault", "wrong-output"]).await;
    let liar = net.providers[i].address.clone();
    fund_and_stake(&net, &net.providers[i].data, 100 * TOKEN).await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;

    let resp = reqwest::Client::new()
        .post(net.url("/v1/functions/echo/invoke"))
        .bearer_auth(&net.key)
        .header("x-brume-verify", "replicate=3")
        .body("agree on this")
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("x-brume-verified").as_deref(), Some("2/3"));
    let winner = header("x-brume-provider").expect("provider");
    assert_ne!(winner, liar);
    let id = header("x-brume-work-id").expect("work id");
    let body = resp.bytes().await.expect("body");
    assert_eq!(&body[..], b"agree on this");

    // The liar signed a result the re-execution refutes: banned.
    dropped(&net, &liar, "the broker drops the liar").await;
    // Billed: the two agreeing replicas, not the liar.
    let rows = eventually("the replicas' rows", || async {
        let v: serde_json::Value = reqwest::get(net.url("/v1/ledger/rows?limit=100"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let rows = v["rows"].as_array()?.clone();
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["provider"] != liar.as_str()),
        "{rows:?}"
    );
    assert!(!id.is_empty());
}

/// An ordinary call's receipt is not signed on its own: its provider signs
/// a batch of them at once, the broker checks every batch, and the caller
/// can fetch the proof of its call and check it offline. Nobody else can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_receipt_is_proved_by_its_providers_signed_batch() {
    let net = Net::start_with(1, 2, None, &["other"]).await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    let provider = net.providers[0].address.clone();
    let mut ids = Vec::new();
    for k in 0..5 {
        let input = format!("call {k}");
        let r = net
            .client
            .invoke("echo", &[], input.clone().into())
            .await
            .expect("invoke");
        assert_eq!((r.status, &r.body[..]), (200, input.as_bytes()));
        ids.push(r.work_id.expect("work id"));
    }
    let verify = |m: &[u8], s: &[u8], a: &str| brume_identity::verify(m, s, a).is_ok();
    let mut proof = None;
    for id in &ids {
        let client = net.client.clone();
        let p = eventually("the call's batch is signed and checked", || {
            let client = client.clone();
            async move { client.receipt(*id).await.ok() }
        })
        .await;
        assert_eq!(p.receipt.work_id, *id);
        assert_eq!(p.check(verify).as_deref(), Ok(provider.as_str()));
        proof = Some(p);
    }
    let proof = proof.expect("a proof");

    // Offline, with the CLI; and a receipt changed after the fact fails.
    let (code, v) = verify_proof(&net, "receipt.json", &proof);
    assert_eq!((code, v["kind"].as_str()), (0, Some("inclusion")), "{v}");
    let mut forged = proof.clone();
    forged.receipt.output_digest = "00".repeat(32);
    let (code, v) = verify_proof(&net, "forged.json", &forged);
    assert_eq!(code, 1, "{v}");

    // Another account's key can't fetch it.
    let other = brume_client::Client::new(&net.broker.url, Some(net.named_keys[0].clone()))
        .expect("client");
    match other.receipt(ids[0]).await {
        Err(brume_client::ClientError::Api { status, error, .. }) => {
            assert_eq!(
                (status, error.code),
                (404, brume_client::ErrorCode::NotFound)
            );
        }
        other => panic!("another account read the receipt: {other:?}"),
    }
    let metrics = net.client.metrics().await.expect("metrics");
    assert!(
        metrics.contains("brume_receipt_roots_total{outcome=\"checked\"}"),
        "{metrics}"
    );
}

/// A provider that signs a root its answers' receipts don't make loses its
/// session at its first batch.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_batch_root_does_not_match_its_answers_loses_its_session() {
    let mut net = Net::start(0, 1).await;
    let i = net.add_provider_args(1, &["--fault", "bad-root"]).await;
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    let r = net
        .client
        .invoke("echo", &[], "x".into())
        .await
        .expect("invoke");
    assert_eq!(r.status, 200);
    let client = net.client.clone();
    eventually("the bad root is refused", || {
        let client = client.clone();
        async move {
            let m = client.metrics().await.ok()?;
            m.contains("brume_receipt_roots_total{outcome=\"refused\"} 1")
                .then_some(())
        }
    })
    .await;
    let proc = &net.providers[i].proc;
    eventually("the provider hears why", || async {
        proc.stderr_tail()
            .contains("is not the root of the receipts sent")
            .then_some(())
    })
    .await;
}
