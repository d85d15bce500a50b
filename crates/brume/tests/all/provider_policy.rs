//! `brume provide` module policy through the real binaries: a provider
//! that blacklists a module refuses it, the broker keeps the work queued
//! and gives it to another provider; the hidden `--fault` flag reaches the
//! provider (in debug builds: a release binary has no such flag); the
//! policy flags are on the help page and the fault flag is not.

use brume_client::ServiceKind;
use brume_client::brume_api::rest::JobState;
use test_programs_artifacts as art;

use crate::net::*;

/// `brume provide --json --broker URL --slots 1 --data DIR ARGS`, once
/// connected (net.rs's `Provider::start` with extra flags).
fn provider_with(net: &Net, name: &str, args: &[&str]) -> Proc {
    let data = net.home().join(name);
    let mut cmd = command(net.home());
    cmd.args([
        "provide",
        "--json",
        "--slots",
        "1",
        "--broker",
        &net.broker.url,
    ])
    .arg("--data")
    .arg(&data)
    .args(args);
    let mut proc = Proc::spawn(name, cmd);
    proc.wait_event("ready");
    proc.wait_event("connected");
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blacklisted_module_waits_for_a_provider_that_runs_it() {
    let mut net = Net::start(0, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let digest = brume_sandbox::Digest::of(art::CPU_LOOP_P1_BYTES).to_string();
    let picky = provider_with(&net, "picky", &["--blacklist", &digest]);

    let job = net.client.submit(&cpu_job(1_000)).await.expect("submit");
    eventually("the picky provider refuses the job", || async {
        picky.stderr_tail().contains("blacklisted").then_some(())
    })
    .await;
    // Not a failure: the job waits (the broker may still name the picky
    // provider as its last assignee).
    let waiting = net.client.job(job.id).await.expect("job");
    assert!(!waiting.state.is_final(), "{waiting:?}");

    let other = net.add_provider(1).await;
    let done = net.wait_state(job.id, JobState::Succeeded).await;
    assert_eq!(done.provider.as_ref(), Some(&net.providers[other].address));
}

#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hidden_fault_flag_makes_a_provider_lie() {
    let net = Net::start(0, 1).await;
    net.publish("cpu", ServiceKind::Command, art::CPU_LOOP_P1_BYTES)
        .await;
    let _liar = provider_with(&net, "liar", &["--fault", "wrong-output"]);
    let job = net.client.submit(&cpu_job(1_000)).await.expect("submit");
    let (_, result) = follow(&net.client, job.id).await;
    // No verification asked for: the lie reaches the requester, signed.
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    assert_ne!(&result.stdout.0[..], cpu_loop_output(1_000).as_bytes());
    assert_eq!(result.stdout.0.len(), cpu_loop_output(1_000).len());
    assert!(result.receipt.is_some());
}

#[test]
fn the_policy_flags_are_documented_and_the_fault_flag_is_hidden() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = command(home.path())
        .args(["provide", "--help"])
        .output()
        .expect("run brume provide --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--blacklist ",
        "--blacklist-file",
        "--blacklist-url",
        "--blacklist-refresh",
        "--require-signed-by",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(!help.contains("--fault"), "{help}");
    let bad = command(home.path())
        .args(["provide", "--fault", "sometimes"])
        .output()
        .expect("run brume provide --fault");
    assert_eq!(bad.status.code(), Some(2));
    // A debug build knows the flag and lists its modes; a release build
    // has no such flag at all.
    let expected = if cfg!(debug_assertions) {
        "wrong-output"
    } else {
        "unexpected argument '--fault'"
    };
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(expected),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
