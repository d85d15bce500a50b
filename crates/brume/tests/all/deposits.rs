//! Buyer deposits (the SONM seed's): a job submitted with `confirm: true`
//! is billed like any other, but its row settles only once its requester
//! confirms the result (`brume job confirm`), or once the broker's
//! confirmation window after its end has passed.

use brume_chain::Address;
use brume_client::ServiceKind;
use brume_client::brume_api::rest::{JobSpec, JobState};
use brume_identity::Identity;
use bytes::Bytes;
use test_programs_artifacts as art;

use crate::net::*;

const FUNDS: u128 = 1_000_000_000_000_000_000_000;

/// A broker (settling on request only, with this confirmation window), a
/// provider, the `cpu` service, and a funded requester with its client.
async fn world(window_ms: u64) -> (Net, brume_client::Client, brume_client::Client) {
    let requester = Identity::random();
    let config = format!(
        r#"
[broker.chain]
require_allowance = true
genesis = [{{ address = "{}", amount = "{FUNDS}" }}]

[broker.settlement]
period_s = 0
confirm_window_ms = {window_ms}
"#,
        requester.address()
    );
    let key = format!("req={}", requester.address());
    let net = Net::start_with(1, 2, Some(&config), &[&key, "other"]).await;
    net.client
        .publish(
            "cpu",
            ServiceKind::Command,
            Bytes::from_static(art::CPU_LOOP_P1_BYTES),
        )
        .await
        .expect("publish");
    let info = net.client.chain_info().await.expect("chain");
    let payout: Address = info.payout_account.parse().expect("payout account");
    crate::settlement::approve(&net, &requester, info.chain_id, payout).await;
    let client =
        |k: &String| brume_client::Client::new(&net.broker.url, Some(k.clone())).expect("client");
    let (mine, other) = (client(&net.named_keys[0]), client(&net.named_keys[1]));
    (net, mine, other)
}

/// Runs a `cpu` job to its end; its id.
async fn job(c: &brume_client::Client, n: u64, confirm: bool) -> brume_api::WorkId {
    let job = c
        .submit(&JobSpec {
            confirm,
            ..cpu_job(n)
        })
        .await
        .expect("submit");
    let (_, result) = follow(c, job.id).await;
    assert_eq!(result.state, JobState::Succeeded, "{result:?}");
    job.id
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_job_settles_and_an_unconfirmed_one_waits() {
    let (net, mine, other) = world(86_400_000).await;
    let plain = job(&mine, 1_000, false).await;
    let confirmed = job(&mine, 1_001, true).await;
    let waiting = job(&mine, 1_002, true).await;

    // Only the plain job's row settles; both others wait.
    let report = net.client.settle().await.expect("settle");
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(
        (
            count(&report, "rows_settled"),
            count(&report, "rows_deferred")
        ),
        (1, 2),
        "{report}"
    );

    // Confirming: not another account's job, not a job that doesn't wait.
    let err = other.confirm_job(confirmed).await.expect_err("not theirs");
    assert!(
        err.to_string().contains("404") || err.to_string().contains("not_found"),
        "{err}"
    );
    let err = mine.confirm_job(plain).await.expect_err("does not wait");
    assert!(err.to_string().contains("confirm: true"), "{err}");
    // The requester confirms one (through the CLI); confirming twice is
    // a no-op.
    let out = command(net.home())
        .args([
            "job",
            "confirm",
            &confirmed.to_string(),
            "--broker",
            &net.broker.url,
        ])
        .env("BRUME_API_KEY", &net.named_keys[0])
        .output()
        .expect("brume job confirm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("confirmed"), "{stdout}");
    let again = mine.confirm_job(confirmed).await.expect("again");
    assert!(!again.already_released);

    let report = net.client.settle().await.expect("settle");
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(
        (
            count(&report, "rows_settled"),
            count(&report, "rows_deferred")
        ),
        (1, 1),
        "the confirmed job's row settles, the other still waits: {report}"
    );

    // A broker restart keeps what waits and what was confirmed.
    let mut net = net;
    net.broker.restart();
    let report = net.client.settle().await.expect("settle");
    assert_eq!(
        (
            count(&report, "rows_settled"),
            count(&report, "rows_deferred")
        ),
        (0, 1),
        "{report}"
    );
    mine.confirm_job(waiting)
        .await
        .expect("confirm after restart");
    let report = net.client.settle().await.expect("settle");
    assert_eq!(
        (
            count(&report, "rows_settled"),
            count(&report, "rows_deferred")
        ),
        (1, 0),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_window_releases_an_unconfirmed_job() {
    let (net, mine, _) = world(1).await;
    let id = job(&mine, 1_000, true).await;
    eventually("the window releases the job's row", || async {
        let report = net.client.settle().await.ok()?;
        (count(&report, "rows_deferred") == 0 && count(&report, "rows_settled") == 1).then_some(())
    })
    .await;
    let late = mine.confirm_job(id).await.expect("a late confirmation");
    assert!(late.already_released, "{late:?}");
}

/// Whether the ledger holds a row with this work id.
async fn has_row(net: &Net, work_id: &str) -> bool {
    reqwest::get(net.url(&format!("/v1/ledger/rows/{work_id}")))
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_result_is_reexecuted_and_the_loser_pays() {
    let (mut net, mine, _) = world(86_400_000).await;

    // An honest result, rejected: the re-execution upholds it, and the
    // requester pays for the re-execution.
    let honest = job(&mine, 1_000, true).await;
    let out = command(net.home())
        .args([
            "job",
            "reject",
            &honest.to_string(),
            "--json",
            "--broker",
            &net.broker.url,
        ])
        .env("BRUME_API_KEY", &net.named_keys[0])
        .output()
        .expect("brume job reject");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(d["verdict"], "result_upheld", "{d}");
    assert!(has_row(&net, &format!("dispute-fee-{honest}")).await);
    let err = mine.reject_job(honest).await.expect_err("decided once");
    assert!(err.to_string().contains("already"), "{err}");
    let report = net.client.settle().await.expect("settle");
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(
        (
            count(&report, "rows_settled"),
            count(&report, "rows_deferred")
        ),
        (2, 0),
        "the job's row and the fee settle: {report}"
    );

    // A provider that lies about its output: the re-execution refutes it,
    // it is banned, and the requester is refunded.
    net.providers[0].kill();
    let liar = net.add_provider_args(1, &["--fault", "wrong-output"]).await;
    let liar_address = net.providers[liar].address.clone();
    let cheated = job(&mine, 1_001, true).await;
    let d = mine.reject_job(cheated).await.expect("reject");
    assert_eq!(d.verdict, "provider_cheated", "{d:?}");
    assert!(d.detail.contains(&liar_address), "{d:?}");
    assert!(has_row(&net, &format!("audit-refund-{cheated}")).await);
    eventually("the liar is banned and gone", || async {
        let list = net.client.providers().await.ok()?;
        list.providers
            .iter()
            .all(|p| p.address != liar_address)
            .then_some(())
    })
    .await;
    let report = net.client.settle().await.expect("settle");
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(count(&report, "rows_deferred"), 0, "{report}");
}
