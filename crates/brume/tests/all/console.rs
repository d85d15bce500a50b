//! The web console in real headless Chromium (Debian's `chromium`, driven
//! by Playwright from `.venv`; `cargo xtask test` installs both): the
//! script `tests/console.py` signs in with a password, publishes through
//! the form, runs a job and watches it end over SSE without a reload,
//! finds its ledger row and its provider's earnings, and is refused the
//! operator's page. Its screenshots stay in `target/tmp/console-shots`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use test_programs_artifacts as art;

use crate::net::command;

#[test]
fn a_person_uses_the_console_in_chromium() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let (mut devnet, ready) = crate::net::devnet(home.path());
    let url = ready["broker"].as_str().expect("broker URL").to_string();
    let requester = ready["requester"].as_str().expect("requester").to_string();

    // The operator makes a password account for the devnet's requester.
    let password = "correct horse battery staple";
    let mut create = command(home.path())
        .args(["broker", "accounts", "create", "--json", "--email"])
        .arg("Dev@Example.com")
        .args(["--address", &requester, "--data"])
        .arg(data.join("broker"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("brume broker accounts create");
    create
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = create.wait_with_output().expect("accounts create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(made["email"], "dev@example.com");
    assert_eq!(made["admin"], false);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-shots");
    std::fs::create_dir_all(&shots).expect("shots dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("../../.venv/bin/python"))
        .arg(root.join("tests/console.py"))
        .args([&url, "dev@example.com", password, art::ECHO_P1])
        .arg(&shots)
        .env("HOME", home.path())
        .output()
        .expect("run tests/console.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the console script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let job = seen["job"].as_str().expect("job id");
    assert!(
        seen["row"].as_str().is_some_and(|r| r.contains(job)),
        "{seen}"
    );
    assert_eq!(seen["reloads"], 0, "{seen}");
    assert_eq!(seen["operator_status"], 403, "{seen}");
    assert!(
        seen["provider_earned"]
            .as_str()
            .and_then(|e| e.parse::<u128>().ok())
            .is_some_and(|e| e > 0),
        "{seen}"
    );
    for name in [
        "overview",
        "services",
        "job",
        "ledger",
        "earnings",
        "operator-refused",
    ] {
        let png = std::fs::metadata(shots.join(format!("{name}.png"))).expect("screenshot");
        assert!(png.len() > 1000, "{name}.png is empty");
    }
    devnet.terminate();
}
