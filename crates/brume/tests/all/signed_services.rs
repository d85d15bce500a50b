//! Signed services and the operator's word on providers, through the real
//! binaries:
//! - `brume service publish --sign-with KEY` records the signer as the
//!   service's developer (the ledger's royalty payee), and the broker sends
//!   the signature with every assignment;
//! - a provider with `--require-signed-by DEV` runs DEV's modules and
//!   refuses unsigned ones and those of other developers (refusals, so the
//!   jobs wait for a provider that runs them);
//! - a signature that doesn't verify is refused at publish with 400;
//! - `brume broker providers approve|suspend|ban|list` on a data dir, and a
//!   running broker applying them.

use std::path::{Path, PathBuf};

use brume_client::brume_api::rest::{JobSpec, JobState};
use brume_client::brume_api::wire::ModuleSignature;
use brume_client::{ErrorCode, ServiceKind};
use brume_identity::Identity;
use bytes::Bytes;
use test_programs_artifacts as art;

use crate::net::*;

/// A keyring key made with `brume keys new`.
struct Dev {
    name: String,
    address: String,
    keys_dir: PathBuf,
    password_file: PathBuf,
}

fn new_key(home: &Path, name: &str) -> Dev {
    let keys_dir = home.join("keys");
    let password_file = home.join("key-password");
    std::fs::write(&password_file, "developer pw\n").expect("write the password file");
    let out = command(home)
        .arg("keys")
        .arg("--keys-dir")
        .arg(&keys_dir)
        .args(["new", "--name", name, "--json", "--password-file"])
        .arg(&password_file)
        .output()
        .expect("run brume keys new");
    assert!(
        out.status.success(),
        "keys new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("keys new --json");
    Dev {
        name: name.to_string(),
        address: v["address"].as_str().expect("address").to_string(),
        keys_dir,
        password_file,
    }
}

/// `brume service publish FILE --name NAME --json [--sign-with DEV]`: exit
/// code and stdout as JSON (or null).
fn publish_cli(
    net: &Net,
    module: &[u8],
    name: &str,
    dev: Option<&Dev>,
) -> (i32, serde_json::Value) {
    let file = net.home().join(format!("{name}.wasm"));
    std::fs::write(&file, module).expect("write the module");
    let mut cmd = command(net.home());
    cmd.args([
        "service",
        "--broker",
        &net.broker.url,
        "--api-key",
        &net.key,
    ])
    .args(["--json", "publish", "--name", name])
    .arg(&file);
    if let Some(dev) = dev {
        cmd.args(["--sign-with", &dev.name, "--keys-dir"])
            .arg(&dev.keys_dir)
            .arg("--password-file")
            .arg(&dev.password_file);
    }
    let out = cmd.output().expect("run brume service publish");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "publish {name}: not JSON; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn job(service: &str) -> JobSpec {
    JobSpec {
        service: Some(service.into()),
        ..cpu_job(1_000)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_requiring_signatures_runs_only_its_developers_modules() {
    let mut net = Net::start(0, 1).await;
    let dev = new_key(net.home(), "dev");

    // Signed with the CLI: the signer is the developer.
    let (code, cpu) = publish_cli(&net, art::CPU_LOOP_P1_BYTES, "cpu", Some(&dev));
    assert_eq!(code, 0, "{cpu}");
    assert_eq!(cpu["signed"], true, "{cpu}");
    assert!(
        cpu["developer_address"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(&dev.address)),
        "{cpu}"
    );
    let shown = net.client.service("cpu").await.expect("service");
    assert!(
        shown.signed && shown.module_signature.is_some(),
        "{shown:?}"
    );

    // Signed by someone else (through the client), and not signed at all.
    let other = Identity::random();
    let rogue = net
        .client
        .publish_signed(
            "rogue",
            ServiceKind::Command,
            Bytes::from_static(art::SHA256_P1_BYTES),
            &other,
        )
        .await
        .expect("publish rogue");
    assert_eq!(
        rogue.developer_address.as_deref(),
        Some(other.address().to_string().as_str())
    );
    let (code, plain) = publish_cli(&net, art::ECHO_P1_BYTES, "plain", None);
    assert_eq!(code, 0, "{plain}");
    assert_eq!(plain["signed"], false, "{plain}");
    assert!(plain.get("developer_address").is_none(), "{plain}");

    let strict = net
        .add_provider_args(1, &["--require-signed-by", &dev.address])
        .await;
    let strict_address = net.providers[strict].address.clone();

    // The developer's module runs on the strict provider.
    let signed_job = net.client.submit(&job("cpu")).await.expect("submit cpu");
    let done = net.wait_state(signed_job.id, JobState::Succeeded).await;
    assert_eq!(done.provider.as_deref(), Some(strict_address.as_str()));

    // The ledger names the signer as the developer.
    let row: serde_json::Value = reqwest::Client::new()
        .get(net.url(&format!("/v1/ledger/rows/{}", signed_job.id)))
        .bearer_auth(&net.key)
        .send()
        .await
        .expect("get the row")
        .json()
        .await
        .expect("row json");
    assert!(
        row["developer"]
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case(&dev.address)),
        "{row}"
    );

    // Another developer's module and an unsigned one are refused, with
    // their reasons; refusals are not failures, so both jobs wait.
    let rogue_job = net.client.submit(&job("rogue")).await.expect("submit");
    let proc = &net.providers[strict].proc;
    eventually(
        "the strict provider refuses the other developer",
        || async {
            proc.stderr_tail()
                .contains("untrusted_developer")
                .then_some(())
        },
    )
    .await;
    let plain_job = net.client.submit(&job("plain")).await.expect("submit");
    eventually(
        "the strict provider refuses the unsigned module",
        || async { proc.stderr_tail().contains("unsigned").then_some(()) },
    )
    .await;
    for id in [rogue_job.id, plain_job.id] {
        let waiting = net.client.job(id).await.expect("job");
        assert!(!waiting.state.is_final(), "{waiting:?}");
    }

    // A provider without the requirement runs them.
    let lax = net.add_provider(1).await;
    let lax_address = net.providers[lax].address.clone();
    for id in [rogue_job.id, plain_job.id] {
        let done = net.wait_state(id, JobState::Succeeded).await;
        assert_eq!(done.provider.as_deref(), Some(lax_address.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_that_does_not_verify_is_refused_at_publish() {
    let net = Net::start(0, 1).await;
    let (dev, impostor) = (Identity::random(), Identity::random());
    let module = Bytes::from_static(art::ECHO_P1_BYTES);

    // Signed by the impostor, claimed as the developer's.
    let mut forged = brume_client::sign_module(&module, &impostor).expect("sign");
    forged.developer = dev.address().to_string();
    let err = net
        .client
        .publish_with_signature("forged", ServiceKind::Command, module.clone(), &forged)
        .await
        .expect_err("a forged signature is refused");
    assert_invalid(&err, "not a signature by");

    // The developer's signature over another module.
    let wrong_module = brume_client::sign_module(art::CPU_LOOP_P1_BYTES, &dev).expect("sign");
    let err = net
        .client
        .publish_with_signature("wrong", ServiceKind::Command, module.clone(), &wrong_module)
        .await
        .expect_err("a signature over another digest is refused");
    assert_invalid(&err, "not a signature by");

    // Malformed: not 65 bytes, or half the pair.
    let short = ModuleSignature {
        developer: dev.address().to_string(),
        signature: Bytes::from_static(&[7; 64]),
    };
    let err = net
        .client
        .publish_with_signature("short", ServiceKind::Command, module.clone(), &short)
        .await
        .expect_err("a short signature is refused");
    assert_invalid(&err, "130 hex digits");
    let resp = reqwest::Client::new()
        .post(net.url("/v1/services?name=half&kind=command"))
        .bearer_auth(&net.key)
        .header("x-brume-developer", dev.address().to_string())
        .body(module.clone())
        .send()
        .await
        .expect("publish");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("error body");
    assert_eq!(body["code"], "invalid_request", "{body}");

    // None of them was published.
    let list = net.client.services().await.expect("services");
    assert!(list.services.is_empty(), "{list:?}");

    // The real thing is.
    let ok = net
        .client
        .publish_signed("real", ServiceKind::Command, module, &dev)
        .await
        .expect("publish signed");
    assert!(ok.signed, "{ok:?}");
}

fn assert_invalid(err: &brume_client::ClientError, needle: &str) {
    match err {
        brume_client::ClientError::Api { status, error, .. } => {
            assert_eq!(*status, 400, "{err}");
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{err}");
            assert!(error.message.contains(needle), "{err}");
        }
        other => panic!("expected a 400, got {other}"),
    }
}

/// `brume broker providers ARGS --data DIR`: exit code, stdout, stderr.
fn providers(home: &Path, data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = command(home)
        .args(["broker", "providers"])
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .expect("run brume broker providers");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn list(home: &Path, data: &Path) -> serde_json::Value {
    let (code, out, err) = providers(home, data, &["list", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).expect("list --json")
}

#[test]
fn providers_approve_suspend_ban_and_list_on_a_data_dir() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (home, data) = (tmp.path(), tmp.path().join("broker"));
    let [a, b, c] = [1u8, 2, 3].map(|i| format!("0x{}", format!("{i:02X}").repeat(20)));

    let empty = list(home, &data);
    assert_eq!(empty["providers"], serde_json::json!([]));
    assert_eq!(empty["bans"], serde_json::json!([]));

    for (cmd, addr, reason) in [
        ("approve", &a, "known operator"),
        ("suspend", &b, "late results"),
        ("ban", &c, "sold fake results"),
    ] {
        let (code, out, err) = providers(home, &data, &[cmd, addr, "--reason", reason]);
        assert_eq!(code, 0, "{cmd}: {out}{err}");
    }
    let v = list(home, &data);
    let status = |addr: &str| {
        v["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .find(|p| p["address"] == addr.to_ascii_lowercase())
            .map(|p| (p["status"].clone(), p["reason"].clone()))
    };
    assert_eq!(
        status(&a),
        Some(("approved".into(), "known operator".into()))
    );
    assert_eq!(
        status(&b),
        Some(("suspended".into(), "late results".into()))
    );
    assert_eq!(
        status(&c),
        Some(("banned".into(), "sold fake results".into()))
    );
    assert_eq!(
        v["bans"],
        serde_json::json!([{
            "address": c.to_ascii_lowercase(),
            "reason": "sold fake results",
            "proof": false,
            "at_ms": v["bans"][0]["at_ms"],
        }])
    );

    // A suspension is lifted by approval; a ban is final.
    let (code, _, err) = providers(home, &data, &["approve", &b]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = providers(home, &data, &["approve", &c]);
    assert_eq!(code, 1);
    assert!(err.contains("is banned (sold fake results)"), "{err}");
    let v = list(home, &data);
    let b_now = v["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["address"] == b.to_ascii_lowercase())
        .map(|p| p["status"].clone());
    assert_eq!(b_now, Some("approved".into()));

    // The text listing names the ban's reason; a bad address is a usage
    // error.
    let (code, out, _) = providers(home, &data, &["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("ban\tsold fake results"), "{out}");
    let (code, _, err) = providers(home, &data, &["ban", "0x1234"]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_broker_drops_suspended_and_banned_providers() {
    let net = Net::start(1, 1).await;
    let (home, data) = (net.home().to_path_buf(), net.broker.data.clone());
    let address = net.providers[0].address.clone();
    let listed = |want: bool| {
        let (client, address) = (net.client.clone(), address.clone());
        async move {
            let list = client.providers().await.ok()?;
            (list.providers.iter().any(|p| p.address == address) == want).then_some(())
        }
    };

    let (code, _, err) = providers(&home, &data, &["suspend", &address, "--reason", "audit"]);
    assert_eq!(code, 0, "{err}");
    let proc = &net.providers[0].proc;
    eventually("the suspended provider is told why", || async {
        proc.stderr_tail()
            .contains("is suspended: audit")
            .then_some(())
    })
    .await;
    eventually("the broker drops the suspended provider", || listed(false)).await;

    // Approval lifts the suspension: the provider is back.
    let (code, _, err) = providers(&home, &data, &["approve", &address]);
    assert_eq!(code, 0, "{err}");
    eventually("the approved provider is back", || listed(true)).await;

    // A ban drops it, and its reconnects are refused.
    let (code, _, err) = providers(&home, &data, &["ban", &address, "--reason", "fraud"]);
    assert_eq!(code, 0, "{err}");
    eventually("the banned provider is dropped and refused", || async {
        let tail = proc.stderr_tail();
        (tail.matches("is banned: fraud").count() >= 2).then_some(())
    })
    .await;
    eventually("the broker no longer lists it", || listed(false)).await;
}
