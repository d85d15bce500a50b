//! The README's main command: `brume devnet --demo` runs a broker and two
//! providers in one process, publishes the examples, calls them, runs a
//! batch job and exits 0 only if every step worked.

use crate::net;

#[test]
fn devnet_demo_runs_end_to_end() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("devnet");
    let out = net::command(home.path())
        .args(["devnet", "--demo", "--data"])
        .arg(&data)
        .output()
        .expect("run brume devnet --demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "devnet --demo failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "hello, brume",
        "200 OK",
        "state succeeded  exit 0",
        "\"kind\":\"asian-call\"",
        "== ledger: ",
        "    provider  0x",
        "rows clean, aggregate ",
        "demo complete.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The data dir holds the broker's database and an API key file.
    assert!(data.join("broker/broker.db").exists());
    assert!(data.join("broker/ledger/ledger.db").exists());
    let key = std::fs::read_to_string(data.join("api-key")).expect("api-key file");
    assert!(key.trim().starts_with("brk_"), "{key}");
}
