//! `brume keys` through the real binary: a keyring of Web3 Secret Storage
//! (v3) files whose addresses are accounts.

use std::os::unix::fs::PermissionsExt as _;

use crate::net::command;

fn keys(home: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = command(home)
        .arg("keys")
        .arg("--keys-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run brume keys");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A keyring in `home/keys` with one new key `name` (password "correct
/// horse", in `home/pw`): (keys dir, password file, address).
fn new_key(home: &std::path::Path, name: &str) -> (std::path::PathBuf, String, String) {
    let dir = home.join("keys");
    let pw = home.join("pw");
    std::fs::write(&pw, "correct horse\n").expect("pw");
    let pw = pw.to_str().expect("utf-8").to_string();
    let (code, out, err) = keys(
        home,
        &dir,
        &["new", "--name", name, "--password-file", &pw, "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let address = created["address"].as_str().expect("address").to_string();
    (dir, pw, address)
}

#[test]
fn new_list_show_import_and_no_duplicate_keys() {
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path();
    let (dir, pw, address) = new_key(home, "alice");
    let pw = pw.as_str();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1);
    let mode = std::fs::metadata(&files[0])
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "keystore files are private");
    let v3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).expect("read")).expect("v3 json");
    assert_eq!(v3["version"], 3);
    assert!(v3["crypto"]["ciphertext"].is_string(), "{v3}");

    let (code, out, _) = keys(home, &dir, &["list", "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.to_lowercase().contains(&address.to_lowercase()),
        "{out}"
    );
    let (code, out, _) = keys(home, &dir, &["show", "alice", "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.to_lowercase().contains(&address.to_lowercase()),
        "{out}"
    );
    assert!(!out.contains("private"), "never the private key: {out}");

    // A raw hex key imports to its well-known address.
    let hex = home.join("key.hex");
    std::fs::write(
        &hex,
        "0x7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d\n",
    )
    .expect("hex");
    let (code, out, err) = keys(
        home,
        &dir,
        &[
            "import",
            hex.to_str().expect("utf-8"),
            "--name",
            "vector",
            "--password-file",
            pw,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.to_lowercase()
            .contains("008aeeda4d805471df9b2a5b0f38a0c3bcba786b"),
        "{out}"
    );

    // The same key can't be imported twice (whatever the password).
    let bad = home.join("other");
    std::fs::write(&bad, "another password\n").expect("pw");
    let (code, out, err) = keys(
        home,
        &dir,
        &[
            "import",
            hex.to_str().expect("utf-8"),
            "--name",
            "again",
            "--password-file",
            bad.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        code, 1,
        "importing the same key twice is refused: {out}{err}"
    );
    assert!(err.contains("error"), "{err}");
}

/// "No account needed": a keyring key, funded and approved with `brume
/// wallet`, signs `brume invoke --key` requests, and its address pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_key_signs_cli_requests_and_its_address_pays() {
    use crate::net::{Net, eventually};
    let net = Net::start_with(1, 1, Some("[broker.chain]\nfaucet = true\n"), &[]).await;
    net.publish(
        "echo",
        brume_client::ServiceKind::Command,
        test_programs_artifacts::ECHO_P1_BYTES,
    )
    .await;
    let home = net.home();
    let (dir, pw, address) = new_key(home, "me");
    let pw = pw.as_str();
    net.client
        .faucet(&address, 10u128.pow(21))
        .await
        .expect("faucet");
    let out = command(home)
        .args([
            "wallet",
            "--broker",
            &net.broker.url,
            "--key",
            "me",
            "--password-file",
            pw,
        ])
        .arg("--keys-dir")
        .arg(&dir)
        .args(["approve", "1tok"])
        .output()
        .expect("wallet approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = command(home)
        .env("BRUME_KEYS_DIR", &dir)
        .env("BRUME_KEY_PASSWORD", "correct horse")
        .args([
            "invoke",
            "default~echo",
            "--broker",
            &net.broker.url,
            "--key",
            "me",
            "-d",
            "signed",
            "--json",
        ])
        .output()
        .expect("invoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["stdout"], "signed", "{v}");
    let work_id = v["work_id"].as_str().expect("work id").to_string();
    let row: serde_json::Value = eventually("the row is stored", || async {
        let r = reqwest::get(net.url(&format!("/v1/ledger/rows/{work_id}")))
            .await
            .ok()?;
        (r.status() == 200).then_some(())?;
        r.json().await.ok()
    })
    .await;
    assert_eq!(row["requester"], address.as_str(), "{row}");
}
