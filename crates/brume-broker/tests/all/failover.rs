//! Work that loses its provider goes elsewhere, and ends exactly once
//! however its result and the loss of its provider interleave.

use brume_api::rest::{EventKind, JobState};
use brume_identity::Identity;

use crate::util::{TestBroker, kinds, same, within};
use brume_localnet::scripted::{ScriptedProvider, exited};

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_provider_drops_is_reassigned_and_succeeds_on_another() {
    let b = TestBroker::start().await;
    let mut first = b.provider().await;
    let job = b.submit().await;
    let (_, a1) = first.next_assign().await;
    assert_eq!((a1.work_id, a1.attempt), (job.id, 1));

    let mut second = b.provider().await;
    // The first provider vanishes with the assignment: no close frame.
    drop(first);
    let (ch, a2) = second.next_assign().await;
    assert_eq!((a2.work_id, a2.attempt), (job.id, 2));
    second.accept(ch);
    second.done(ch, exited("from the second provider", 4_200_000));

    let story = b.job_story(job.id).await;
    let retry = story.iter().find(|e| e.kind == EventKind::Retry);
    assert!(
        retry.is_some_and(|e| e.attempt == 1),
        "a retry after attempt 1: {:?}",
        kinds(&story)
    );
    let last = story.last().expect("a final event");
    assert_eq!((last.kind, last.attempt), (EventKind::Succeeded, 2));
    assert!(same(last.provider.as_deref(), &second.address), "{last:?}");

    let result = within("the result", b.client.result(job.id))
        .await
        .expect("the result");
    assert_eq!(result.state, JobState::Succeeded);
    assert_eq!(&result.stdout.0[..], b"from the second provider");
    assert_eq!((result.attempts, result.usage.fuel), (2, 4_200_000));
    assert!(same(result.provider.as_deref(), &second.address));
    let receipt = result.receipt.expect("a signed receipt");
    assert_eq!(receipt.receipt.attempt, 2);
    assert!(receipt.verifies(|m, s, a| brume_identity::verify(m, s, a).is_ok()));

    let rows = b.rows_for(job.id).await;
    assert_eq!(rows.len(), 1, "one ledger row: {rows:#?}");
    assert!(same(Some(&rows[0].data.provider), &second.address));
    assert_eq!(rows[0].data.usage.fuel, 4_200_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_job_goes_to_another_provider_without_using_an_attempt() {
    let b = TestBroker::start().await;
    let mut picky = b.provider().await;
    let job = b.submit().await;
    let (ch, a) = picky.next_assign().await;
    assert_eq!((a.work_id, a.attempt), (job.id, 1));

    let mut willing = b.provider().await;
    picky.refuse(ch, "no_capacity");
    let (ch, a) = willing.next_assign().await;
    assert_eq!(
        (a.work_id, a.attempt),
        (job.id, 1),
        "a refusal costs no attempt"
    );
    willing.accept(ch);
    willing.done(ch, exited("done", 1_000));

    let story = b.job_story(job.id).await;
    let last = story.last().expect("a final event");
    assert_eq!(last.kind, EventKind::Succeeded);
    assert!(same(last.provider.as_deref(), &willing.address));
    assert_eq!(
        picky.assigns_waiting().await,
        0,
        "not offered to the refuser again"
    );
}

/// The provider sends its result and closes the socket at once: the
/// result counts, the loss of the provider doesn't requeue the job.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_sent_as_its_provider_disconnects_completes_the_job_once() {
    let b = TestBroker::start().await;
    let mut p = b.provider().await;
    let job = b.submit().await;
    let (ch, _) = p.next_assign().await;
    p.accept(ch);
    // Would get the job if the broker wrongly retried it.
    let mut spare = b.provider().await;

    let address = p.address.clone();
    p.done(ch, exited("the one result", 3_000_000));
    p.close().await;
    b.wait_provider_gone(&address).await;

    let story = b.job_story(job.id).await;
    let last = story.last().expect("a final event").clone();
    assert_eq!((last.kind, last.attempt), (EventKind::Succeeded, 1));
    assert!(same(last.provider.as_deref(), &address));
    assert!(
        !story.iter().any(|e| e.kind == EventKind::Retry),
        "no retry: {:?}",
        kinds(&story)
    );
    // The provider's teardown is over (it is no longer listed), so any
    // re-assignment would already be on its way to the spare.
    assert_eq!(spare.assigns_waiting().await, 0, "the job was not re-run");
    let result = within("the result", b.client.result(job.id))
        .await
        .expect("the result");
    assert_eq!(&result.stdout.0[..], b"the one result");

    let rows = b.rows_for(job.id).await;
    assert_eq!(rows.len(), 1, "one ledger row: {rows:#?}");
    assert!(same(Some(&rows[0].data.provider), &address));
    assert_eq!(rows[0].data.usage.fuel, 3_000_000);

    // Nothing was recorded after the final event either.
    drop(spare);
    let b = b.restart().await;
    b.assert_nothing_after(job.id, last.seq).await;
    let info = within("the job", b.client.job(job.id))
        .await
        .expect("the job");
    assert_eq!(info.state, JobState::Succeeded);
}

/// The provider closes the socket before answering; a second provider
/// completes the job; the first comes back and sends its result for the
/// lost attempt anyway. Only the second provider's result counts.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_lost_with_its_provider_completes_once_elsewhere_despite_a_late_result() {
    let b = TestBroker::start().await;
    let identity = Identity::random();
    let mut first = ScriptedProvider::connect(b.url(), identity.clone()).await;
    let job = b.submit().await;
    let (ch1, a1) = first.next_assign().await;
    first.accept(ch1);
    first.progress(ch1, 500_000);
    first.sync().await;

    let mut second = b.provider().await;
    first.close().await;
    let (ch2, a2) = second.next_assign().await;
    assert_eq!((a2.work_id, a2.attempt), (job.id, 2));
    second.accept(ch2);
    second.sync().await;

    // Back with a new session, the first provider sends its result for
    // attempt 1 (on the channel it had): it must not count.
    let mut back = ScriptedProvider::connect(b.url(), identity).await;
    back.done_for(ch1, &a1, exited("stale", 9_999));
    back.sync().await;
    let info = within("the job", b.client.job(job.id))
        .await
        .expect("the job");
    assert_eq!(info.state, JobState::Running, "{info:?}");

    second.done(ch2, exited("fresh", 2_000_000));
    let story = b.job_story(job.id).await;
    let last = story.last().expect("a final event").clone();
    assert_eq!((last.kind, last.attempt), (EventKind::Succeeded, 2));
    assert!(same(last.provider.as_deref(), &second.address));
    assert!(
        story.iter().any(|e| e.kind == EventKind::Retry),
        "a retry: {:?}",
        kinds(&story)
    );
    let result = within("the result", b.client.result(job.id))
        .await
        .expect("the result");
    assert_eq!(&result.stdout.0[..], b"fresh");
    assert_eq!(result.usage.fuel, 2_000_000);

    let rows = b.rows_for(job.id).await;
    assert_eq!(rows.len(), 1, "one ledger row: {rows:#?}");
    assert!(same(Some(&rows[0].data.provider), &second.address));
    assert_eq!(rows[0].data.usage.fuel, 2_000_000);

    drop((back, second));
    let b = b.restart().await;
    b.assert_nothing_after(job.id, last.seq).await;
}
