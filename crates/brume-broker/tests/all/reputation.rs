//! What the broker has seen of a provider outlives the broker process.

use brume_api::rest::EventKind;
use brume_identity::Identity;

use crate::util::TestBroker;
use brume_localnet::scripted::{ScriptedProvider, exited};

const JOBS: u64 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn a_providers_reputation_survives_a_broker_restart() {
    let b = TestBroker::start().await;
    let identity = Identity::random();
    let mut p = ScriptedProvider::connect(b.url(), identity.clone()).await;
    for k in 0..JOBS {
        let job = b.submit().await;
        let (ch, _) = p.next_assign().await;
        p.accept(ch);
        p.done(ch, exited("ok", 1_000 + k));
        let story = b.job_story(job.id).await;
        assert_eq!(story.last().map(|e| e.kind), Some(EventKind::Succeeded));
    }
    let address = p.address.clone();
    let before = b.reputation_of(&address).await;
    assert_eq!(before.results, JOBS, "{before:?}");

    p.close().await;
    let b = b.restart().await;
    let _p = ScriptedProvider::connect(b.url(), identity).await;
    let after = b.reputation_of(&address).await;
    assert_eq!(
        (after.results, after.failures, after.timeouts, after.valid),
        (
            before.results,
            before.failures,
            before.timeouts,
            before.valid
        ),
        "the reputation after a restart ({after:?}) is the one before ({before:?})"
    );
}
