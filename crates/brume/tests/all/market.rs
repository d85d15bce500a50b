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
