//! Signed receipts through the real binaries: every job result carries its
//! provider's signed receipt, and `brume verify-proof` checks receipts and
//! proofs of cheat offline.

use brume_client::ServiceKind;
use brume_client::brume_api::Profile;
use brume_client::brume_api::receipt::{CheatProof, SignedReceipt};
use brume_client::brume_api::rest::JobState;
use brume_identity::Identity;
use test_programs_artifacts as art;

use crate::net::*;

/// `brume verify-proof FILE --json`: (exit code, verdict).
fn verify_proof(net: &Net, name: &str, body: &impl serde::Serialize) -> (i32, serde_json::Value) {
    let path = net.home().join(name);
    std::fs::write(&path, serde_json::to_vec(body).expect("json")).expect("write");
    let out = command(net.home())
        .arg("verify-proof")
        .arg(&path)
        .arg("--json")
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
    receipt.provider = by.address().to_string();
    receipt.output_digest = output.to_string();
    let sig = by.sign_message(receipt.message().as_bytes()).expect("sign");
    SignedReceipt {
        receipt,
        signature: sig.iter().fold(String::from("0x"), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        }),
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

    // The receipt alone verifies offline.
    let (code, v) = verify_proof(&net, "receipt.json", &honest);
    assert_eq!((code, &v["valid"]), (0, &serde_json::json!(true)), "{v}");
    // It is stored with the result: a restarted broker serves it too.
    let mut net = net;
    net.broker.restart();
    let again = net.client.result(job.id).await.expect("result");
    assert_eq!(again.receipt.as_ref(), Some(&honest));

    // A cheater's conflicting receipt against two honest ones is a proof.
    let cheater = Identity::random();
    let witness = Identity::random();
    let second = forged(&honest, &witness, &honest.receipt.output_digest);
    let proof = CheatProof {
        cheat: forged(&honest, &cheater, &"00".repeat(32)),
        quorum: vec![honest.clone(), second],
    };
    let (code, v) = verify_proof(&net, "proof.json", &proof);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains(&cheater.address().to_string()),
        "{v}"
    );

    // Tampering with any receipt breaks it.
    let mut bad = proof.clone();
    bad.quorum[0].receipt.fuel += 1;
    let (code, v) = verify_proof(&net, "bad.json", &bad);
    assert_eq!(code, 1, "{v}");
    assert!(v["problems"].to_string().contains("not signed"), "{v}");
    // The cheat can't witness against itself.
    let mut selfish = proof.clone();
    selfish.quorum = vec![forged(&honest, &cheater, &honest.receipt.output_digest)];
    let (code, v) = verify_proof(&net, "selfish.json", &selfish);
    assert_eq!(code, 1, "{v}");
    // Results that agree prove nothing.
    let agreeing = CheatProof {
        cheat: forged(&honest, &cheater, &honest.receipt.output_digest),
        quorum: vec![honest.clone()],
    };
    let (code, v) = verify_proof(&net, "agree.json", &agreeing);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problems"].to_string().contains("does not conflict"),
        "{v}"
    );
}
