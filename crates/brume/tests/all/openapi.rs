//! The OpenAPI document against the broker that serves it: schemathesis
//! (from PyPI, in the workspace's `.venv`: `cargo xtask test` installs it)
//! runs every check on every operation of a devnet broker, authenticated
//! by a key with every scope but `admin`, and must find nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use test_programs_artifacts as art;

use crate::net::keys_create;

fn schemathesis_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/schemathesis")
}

fn config_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml")
}

/// The operations the broker's document says no fuzzer can drive, as one
/// regex (a handler serving several methods has one id per method).
fn unfuzzed() -> String {
    let ids: Vec<&str> = brume_broker::openapi::UNFUZZED
        .iter()
        .map(|(id, _)| *id)
        .collect();
    format!("^({})(_[a-z]+)?$", ids.join("|"))
}

/// `schemathesis run` against `url` with every check; its output, after
/// asserting it passed.
fn schemathesis(home: &Path, url: &str, key: &str, select: &[&str]) -> String {
    let out = Command::new(schemathesis_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(config_file())
        .args(["run", &format!("{url}/openapi.json")])
        .args(["--checks", "all", "--max-examples", "40", "--seed", "1"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(select)
        .current_dir(home)
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn schemathesis_finds_nothing_against_a_devnet_broker() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let (mut devnet, ready) = crate::net::devnet(home.path());
    let url = ready["broker"].as_str().expect("broker URL").to_string();

    // Bound to the devnet's funded requester: its escrow pays for the calls.
    let requester = ready["requester"].as_str().expect("requester");
    let key = keys_create(
        home.path(),
        &data.join("broker"),
        &[
            "--name",
            "fuzz",
            "--account",
            requester,
            "--scope",
            "invoke,jobs,publish,read",
        ],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let served = runtime.block_on(async {
        // `echo` is in schemathesis.toml's dictionary: calls and jobs
        // naming it reach a provider.
        let client = brume_client::Client::new(&url, Some(key.clone())).expect("client");
        client
            .publish(
                "echo",
                brume_client::ServiceKind::Command,
                bytes::Bytes::from_static(art::ECHO_P1_BYTES),
            )
            .await
            .expect("publish echo");
        let resp = reqwest::get(format!("{url}/openapi.json"))
            .await
            .expect("GET /openapi.json");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body")
    });
    // A devnet broker has the default config: it serves the checked-in copy.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    assert!(
        served == std::fs::read(&docs).expect("docs/openapi.json"),
        "GET /openapi.json differs from docs/openapi.json"
    );

    // Everything but the key revocation: the stateful phase would follow
    // `GET /v1/keys` to revoke the very key it runs with.
    let regex = unfuzzed();
    let out = schemathesis(
        home.path(),
        &url,
        &key,
        &[
            "--exclude-operation-id-regex",
            &regex,
            "--exclude-operation-id",
            "revoke_key",
        ],
    );
    assert!(out.contains("passed"), "{out}");
    // Then the revocation on its own.
    schemathesis(
        home.path(),
        &url,
        &key,
        &["--include-operation-id", "revoke_key"],
    );
    devnet.terminate();
}
