//! HTTPS and WSS through the real binaries: a broker with a self-signed
//! certificate (or the same one given as files), providers and clients
//! that pin its fingerprint or trust it as a CA, and a wrong pin refused
//! with both fingerprints named.

use std::path::Path;

use brume_client::brume_api::rest::JobState;
use brume_client::{Client, ClientError, ServiceKind, Trust};
use brume_tls::Fingerprint;
use brume_tls::rustls::pki_types::CertificateDer;
use brume_tls::rustls::pki_types::pem::PemObject;
use bytes::Bytes;
use test_programs_artifacts as art;

use crate::net::*;

/// The fingerprint of the (first) certificate in a PEM file.
fn fingerprint_of(pem: &Path) -> String {
    let der = CertificateDer::from_pem_file(pem)
        .unwrap_or_else(|e| panic!("read a certificate from {}: {e}", pem.display()));
    Fingerprint::of(&der).to_string()
}

/// A fingerprint that is not `pin`'s.
fn other_than(pin: &str) -> String {
    let flipped = if pin.starts_with('0') { "1" } else { "0" };
    format!("{flipped}{}", &pin[1..])
}

/// `brume ARGS` with `home` as HOME: (exit code, stdout, stderr).
fn run(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = command(home).args(args).output().expect("run brume");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn devnet_demo_runs_over_tls() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let out = command(home.path())
        .args(["devnet", "--tls", "--demo", "--data"])
        .arg(&data)
        .output()
        .expect("run brume devnet --tls --demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet --tls --demo failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    let pin = fingerprint_of(&data.join("broker/tls/self-signed.crt"));
    for expected in [
        "  broker     https://127.0.0.1:",
        &format!("  TLS        self-signed, sha256 {pin}"),
        &format!("  export BRUME_PIN_SHA256={pin}"),
        "hello, brume",
        "200 OK",
        "state succeeded  exit 0",
        "rows clean, aggregate ",
        "demo complete.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_signed_broker_serves_providers_functions_and_jobs_over_tls() {
    let mut net = Net::start_tls(1, 2, &[]).await;
    let pin = net
        .broker
        .tls_sha256
        .clone()
        .expect("a TLS broker prints its fingerprint");
    assert!(net.broker.url.starts_with("https://"), "{}", net.broker.url);
    let data = net.broker.data.clone();
    assert_eq!(pin, fingerprint_of(&data.join("tls/self-signed.crt")));
    let written = std::fs::read_to_string(data.join("broker.sha256")).expect("broker.sha256");
    assert_eq!(written.trim(), pin);

    // The provider is connected over wss://, pinned.
    let status = net.providers[0].status();
    assert_eq!(status.broker_url, net.broker.url);
    assert_eq!(status.connection, "connected");

    // A function, through the pinned client and the pinned CLI.
    net.publish("echo", ServiceKind::Command, art::ECHO_P1_BYTES)
        .await;
    let out = net
        .client
        .invoke("echo", &[], Bytes::from_static(b"over tls"))
        .await
        .expect("invoke echo");
    assert_eq!((out.status, &out.body[..]), (200, &b"over tls"[..]));
    assert_eq!(
        out.provider.as_deref(),
        Some(net.providers[0].address.as_str())
    );
    let out = command(net.home())
        .args(["invoke", "echo", "-d", "from the cli"])
        .env("BRUME_BROKER", &net.broker.url)
        .env("BRUME_API_KEY", &net.key)
        .env("BRUME_PIN_SHA256", &pin)
        .output()
        .expect("run brume invoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the cli");

    // A batch job, its events followed over SSE.
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let job = net.client.submit(&cpu_job(1_000)).await.expect("submit");
    let (events, result) = follow(&net.client, job.id).await;
    assert!(events.len() >= 2, "{events:?}");
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    assert_eq!(
        String::from_utf8_lossy(&result.stdout.0),
        cpu_loop_output(1_000)
    );

    // A restart serves the same certificate; the provider reconnects.
    net.broker.restart();
    assert_eq!(net.broker.tls_sha256.as_deref(), Some(pin.as_str()));
    let client = net.client.clone();
    let out = eventually("the provider reconnects and runs echo", || {
        let client = client.clone();
        async move {
            client
                .invoke("echo", &[], Bytes::from_static(b"again"))
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(&out.body[..], b"again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_is_refused_naming_both_fingerprints() {
    let net = Net::start_tls(0, 1, &["ops"]).await;
    let pin = net.broker.tls_sha256.clone().expect("fingerprint");
    let wrong = other_than(&pin);

    // The CLI: exit 1, and the message says why.
    let (code, stdout, stderr) = run(
        net.home(),
        &[
            "service",
            "list",
            "--broker",
            &net.broker.url,
            "--api-key",
            &net.key,
            "--pin-sha256",
            &wrong,
        ],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("fingerprint did not match")
            && stderr.contains(&format!("expected sha256 {wrong}"))
            && stderr.contains(&format!("the server's is {pin}")),
        "{stderr}"
    );

    // The library: a transport error with both fingerprints.
    let wrong: Fingerprint = wrong.parse().expect("a fingerprint");
    let client = Client::new(&net.broker.url, Some(net.key.clone()))
        .and_then(|c| c.with_tls(&Trust::pinned(wrong)))
        .expect("client");
    let err = client.services().await.expect_err("a wrong pin is refused");
    assert!(err.is_transport(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("did not match") && text.contains(&wrong.to_string()) && text.contains(&pin),
        "{text}"
    );
    // Nor do the built-in roots know a self-signed certificate.
    let unpinned = Client::new(&net.broker.url, Some(net.key.clone())).expect("client");
    let err = unpinned.services().await.expect_err("unknown issuer");
    assert!(
        matches!(&err, ClientError::Transport { reason, .. } if reason.contains("no trusted root")),
        "{err:?}"
    );
    // The right pin works, and so does revoking a key through the running
    // broker (the CLI pins the fingerprint the broker wrote in its data dir).
    assert!(net.client.services().await.is_ok());
    let (code, stdout, stderr) = run(
        net.home(),
        &[
            "broker",
            "keys",
            "list",
            "--json",
            "--data",
            &net.broker.data.to_string_lossy(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let id = list["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["name"] == "ops"))
        .and_then(|k| k["id"].as_str())
        .expect("the ops key")
        .to_string();
    let data = net.broker.data.to_string_lossy().into_owned();
    let (code, _, stderr) = run(
        net.home(),
        &["broker", "keys", "revoke", &id, "--data", &data],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("refuses it now"), "{stderr}");
    let ops = Client::new(&net.broker.url, Some(net.named_keys[0].clone()))
        .and_then(|c| c.with_tls(&Trust::pinned(pin.parse().expect("pin"))))
        .expect("client");
    let err = ops.services().await.expect_err("a revoked key");
    assert_eq!(err.status(), Some(403), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_file_trusts_the_broker_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path();
    let data = home.join("broker");
    let key = create_api_key(home, &data);
    let broker = Broker::start_args(home, &data, &["--tls-self-signed"]);
    let (cert, cert_key) = (
        data.join("tls/self-signed.crt"),
        data.join("tls/self-signed.key"),
    );
    let ca = cert.to_string_lossy().into_owned();
    let list = |url: &str, trust: &[&str]| {
        let mut args = vec!["service", "list", "--json", "--broker", url];
        args.extend(["--api-key", key.as_str()]);
        args.extend(trust);
        run(home, &args)
    };

    // The broker's own certificate as a CA: clients and providers trust it.
    let (code, stdout, stderr) = list(&broker.url, &["--ca", &ca]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let provider =
        Provider::start_args(home, &home.join("provider"), &broker.url, 1, &["--ca", &ca]);
    assert_eq!(provider.status().connection, "connected");
    let client = Client::new(&broker.url, Some(key.clone()))
        .and_then(|c| {
            let trust = Trust::default()
                .with_ca_file(&cert)
                .map_err(ClientError::Tls)?;
            c.with_tls(&trust)
        })
        .expect("client");
    let providers = client.providers().await.expect("list providers");
    assert!(
        providers
            .providers
            .iter()
            .any(|p| p.address == provider.address),
        "{providers:?}"
    );
    // A CA file and a pin at once is a usage error.
    let pin = broker.tls_sha256.clone().expect("fingerprint");
    let (code, _, stderr) = list(&broker.url, &["--ca", &ca, "--pin-sha256", &pin]);
    assert_eq!(code, 2, "{stderr}");

    // The same certificate and key given as files serve the same
    // fingerprint, and the CA file trusts that broker too.
    let other_key = create_api_key(home, &home.join("other"));
    let other = Broker::start_args(
        home,
        &home.join("other"),
        &["--tls-cert", &ca, "--tls-key", &cert_key.to_string_lossy()],
    );
    assert!(other.url.starts_with("https://"), "{}", other.url);
    assert_eq!(other.tls_sha256.as_deref(), Some(pin.as_str()));
    let mut args = vec!["service", "list", "--json", "--broker", &other.url];
    args.extend(["--api-key", &other_key, "--ca", &ca]);
    let (code, stdout, stderr) = run(home, &args);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
