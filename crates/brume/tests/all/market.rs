//! The market through real processes: fee bids per compute hour against
//! providers' floors and the price in force, and providers that prefer
//! profit.

use brume_client::brume_api::rest::{JobSpec, JobState};
use brume_client::{ClientError, ServiceKind};

use crate::net::{Net, cpu_job};

/// Above the price in force of the default tier (a few tens of
/// micro-tokens per compute hour), under the floor below.
const CHEAP: u64 = 100_000;
const FLOOR: &str = "150000";
const RICH: u64 = 200_000;

fn bidding(rounds: u64, bid: u64) -> JobSpec {
    JobSpec {
        max_fee_per_hour: Some(bid),
        ..cpu_job(rounds)
    }
}

async fn publish_cpu(net: &Net) {
    net.publish(
        "cpu",
        ServiceKind::Command,
        test_programs_artifacts::CPU_LOOP_P1_BYTES,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_with_a_fee_floor_declines_cheap_work_and_another_takes_it() {
    let mut net = Net::start(0, 1).await;
    publish_cpu(&net).await;
    // Two slots: one takes batch work, one is kept for functions.
    let floor = net
        .add_provider_args(2, &["--min-fee-per-hour", FLOOR])
        .await;
    let floor = net.providers[floor].address.clone();

    // A bid under the price in force is refused before anything runs.
    match net.client.submit(&bidding(1_000, 1)).await {
        Err(ClientError::Api { status, error, .. }) => {
            assert_eq!((status, error.code.as_str()), (402, "over_price_cap"));
            assert!(error.message.contains("per compute hour"), "{error:?}");
        }
        other => panic!("a bid of 1 was not refused: {other:?}"),
    }

    // The cheap job comes first, but only the rich one runs on the floor.
    let cheap = net
        .client
        .submit(&bidding(1_000, CHEAP))
        .await
        .expect("cheap");
    let rich = net
        .client
        .submit(&bidding(1_000, RICH))
        .await
        .expect("rich");
    let done = net.wait_state(rich.id, JobState::Succeeded).await;
    assert_eq!(done.provider.as_deref(), Some(floor.as_str()));
    let waiting = net.client.job(cheap.id).await.expect("cheap job");
    assert_eq!(waiting.state, JobState::Queued, "{waiting:?}");

    // A provider with no floor takes it.
    let plain = net.add_provider(2).await;
    let plain = net.providers[plain].address.clone();
    let done = net.wait_state(cheap.id, JobState::Succeeded).await;
    assert_eq!(done.provider.as_deref(), Some(plain.as_str()));
    assert_eq!(done.attempts, 1, "declining cost the work no attempt");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profit_preferring_provider_takes_the_higher_bid_first() {
    let mut net = Net::start(0, 1).await;
    publish_cpu(&net).await;
    // Both wait: no provider yet. The lower bid arrives first.
    let low = net
        .client
        .submit(&bidding(1_000_000_000, CHEAP))
        .await
        .expect("low");
    let high = net
        .client
        .submit(&bidding(1_000_000_000, RICH))
        .await
        .expect("high");
    // One batch slot: whichever it takes first runs alone.
    net.add_provider_args(2, &["--policy", "profit"]).await;
    net.wait_state(high.id, JobState::Running).await;
    let low_now = net.client.job(low.id).await.expect("low job");
    assert_eq!(low_now.state, JobState::Queued, "{low_now:?}");
    net.client.cancel(high.id).await.expect("cancel high");
    net.wait_state(low.id, JobState::Running).await;
    net.client.cancel(low.id).await.expect("cancel low");
}

/// One call of command `service` with `args` in session `key`: (exit code,
/// provider, `x-brume-affinity-state`, stdout).
async fn session_call(
    net: &Net,
    service: &str,
    args: &[&str],
    key: &str,
) -> (i32, String, Option<String>, String) {
    let mut url = reqwest::Url::parse(&net.url(&format!("/v1/functions/default~{service}/invoke")))
        .expect("url");
    for a in args {
        url.query_pairs_mut().append_pair("arg", a);
    }
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(&net.key)
        .header(brume_api::headers::AFFINITY, key)
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 200, "{service} in {key}");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let exit = header(brume_api::headers::EXIT_CODE)
        .and_then(|c| c.parse().ok())
        .expect("an exit code");
    let provider = header(brume_api::headers::PROVIDER).expect("a provider");
    let state = header(brume_api::headers::AFFINITY_STATE);
    let body = resp.text().await.expect("body");
    (exit, provider, state, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn affinity_keeps_a_session_and_its_files_on_one_provider_and_moves_it_once() {
    let mut net = Net::start(3, 2).await;
    for (name, bytes) in [
        ("write_file", test_programs_artifacts::WRITE_FILE_P1_BYTES),
        ("read_file", test_programs_artifacts::READ_FILE_P1_BYTES),
    ] {
        net.publish(name, ServiceKind::Command, bytes).await;
    }
    let file = "/session/state";
    let (exit, home, state, _) = session_call(&net, "write_file", &[file, "hello"], "cart-1").await;
    assert_eq!((exit, state), (0, None));
    // Call 2 reads what call 1 wrote, and so do the 98 after it, all on
    // the same provider.
    for i in 2..=100 {
        let (exit, provider, state, body) =
            session_call(&net, "read_file", &[file], "cart-1").await;
        assert_eq!((exit, body.as_str(), state), (0, "hello", None), "call {i}");
        assert_eq!(provider, home, "call {i} left its session's provider");
    }
    // Another session has a dir of its own.
    let (exit, _, _, body) = session_call(&net, "read_file", &[file], "cart-2").await;
    assert_eq!(exit, 1, "{body}");
    // A malformed key is refused.
    let resp = reqwest::Client::new()
        .post(net.url("/v1/functions/default~read_file/invoke"))
        .bearer_auth(&net.key)
        .header(brume_api::headers::AFFINITY, "no spaces")
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 400);

    // Its provider is lost: the session moves once, visibly, without its
    // files, and stays where it moved.
    let i = net.provider_index(&home);
    net.providers[i].kill();
    let (exit, moved_to, state, _) = session_call(&net, "read_file", &[file], "cart-1").await;
    assert_eq!(state.as_deref(), Some("moved"));
    assert_ne!(moved_to, home);
    assert_eq!(exit, 1, "the files stayed with the lost provider");
    session_call(&net, "write_file", &[file, "again"], "cart-1").await;
    let (exit, provider, state, body) = session_call(&net, "read_file", &[file], "cart-1").await;
    assert_eq!((exit, body.as_str(), state), (0, "again", None));
    assert_eq!(provider, moved_to);
    // A job of the session joins it.
    let job = JobSpec {
        service: Some("default~read_file".into()),
        args: vec![file.into()],
        affinity: Some("cart-1".into()),
        ..JobSpec::default()
    };
    let job = net.client.submit(&job).await.expect("submit");
    let done = net.wait_state(job.id, JobState::Succeeded).await;
    assert_eq!(done.provider.as_deref(), Some(moved_to.as_str()));
    let result = net.client.result(job.id).await.expect("result");
    assert_eq!(&result.stdout.0[..], b"again");
}
