//! A requester's cancel and a provider's result for the same running job.

use brume_api::rest::{EventKind, JobState};
use brume_client::{ClientError, ErrorCode, JobInfo};

use crate::util::{TestBroker, kinds, same, within};
use brume_localnet::scripted::exited;

const ROUNDS: usize = 20;
/// Fuel in the progress report before the race.
const PROGRESS_FUEL: u64 = 1_000_000;
/// Fuel in the result.
const DONE_FUEL: u64 = 5_000_000;

/// Whichever of a cancel and a result lands first, the job ends once, in
/// the state the cancel's answer implies, with at most one ledger row
/// (exactly one, of the result's fuel, if it succeeded). Rounds alternate
/// cancel-then-result, result-then-cancel, and both at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_racing_a_result_ends_the_job_once() {
    let b = TestBroker::start().await;
    let mut p = b.provider().await;
    let (mut cancelled, mut succeeded) = (0, 0);
    let mut ends = Vec::new();
    for round in 0..ROUNDS {
        let job = b.submit().await;
        let (ch, a) = p.next_assign().await;
        assert_eq!(a.work_id, job.id);
        p.accept(ch);
        p.progress(ch, PROGRESS_FUEL);
        p.sync().await;

        let outcome = exited(&format!("round {round}"), DONE_FUEL);
        let answer: Result<JobInfo, ClientError> = match round % 3 {
            0 => {
                let answer = within("cancel", b.client.cancel(job.id)).await;
                p.done(ch, outcome);
                answer
            }
            1 => {
                p.done(ch, outcome);
                p.sync().await;
                within("cancel", b.client.cancel(job.id)).await
            }
            _ => {
                let (answer, ()) = tokio::join!(within("cancel", b.client.cancel(job.id)), async {
                    tokio::task::yield_now().await;
                    p.done(ch, outcome);
                });
                answer
            }
        };
        // The result, late or not, has been handled.
        p.sync().await;

        let story = b.job_story(job.id).await;
        let last = story.last().expect("a final event").clone();
        match &answer {
            Ok(_) => {
                assert_eq!(
                    last.kind,
                    EventKind::Cancelled,
                    "round {round}: the cancel was accepted: {:?}",
                    kinds(&story)
                );
                // (In a race the result may have left the scheduler just
                // before the cancel claimed the job: nothing to stop then.)
                if round % 3 == 0 {
                    assert!(
                        p.told_to_cancel(ch),
                        "round {round}: the provider was told to stop"
                    );
                }
                cancelled += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::Conflict), "round {round}: {e}");
                assert_eq!(
                    last.kind,
                    EventKind::Succeeded,
                    "round {round}: the cancel came too late: {:?}",
                    kinds(&story)
                );
                assert!(same(last.provider.as_deref(), &p.address));
                assert!(
                    !p.told_to_cancel(ch),
                    "round {round}: a cancel after the result"
                );
                succeeded += 1;
            }
        }
        let state = match last.kind {
            EventKind::Succeeded => JobState::Succeeded,
            _ => JobState::Cancelled,
        };
        let info = within("the job", b.client.job(job.id))
            .await
            .expect("the job");
        assert_eq!(info.state, state, "round {round}: {info:?}");
        let result = within("the result", b.client.result(job.id))
            .await
            .expect("the result");
        assert_eq!(result.state, state, "round {round}: {result:?}");

        let rows = b.rows_for(job.id).await;
        if state == JobState::Succeeded {
            assert_eq!(rows.len(), 1, "round {round}: one ledger row: {rows:#?}");
            assert_eq!(rows[0].data.usage.fuel, DONE_FUEL);
            assert_eq!(&result.stdout.0[..], format!("round {round}").as_bytes());
        } else {
            // A cancelled job is billed at most what it reported before
            // the cancel, never the late result.
            assert!(
                rows.len() <= 1,
                "round {round}: at most one ledger row: {rows:#?}"
            );
            for row in &rows {
                assert_eq!(
                    row.data.usage.fuel, PROGRESS_FUEL,
                    "round {round}: {row:#?}"
                );
            }
        }
        ends.push((job.id, last.seq));
    }
    eprintln!("{ROUNDS} rounds: {cancelled} cancelled, {succeeded} succeeded");
    assert!(cancelled > 0 && succeeded > 0, "both orders ran");

    // Nothing was recorded after any job's final event.
    drop(p);
    let b = b.restart().await;
    for (id, seq) in ends {
        b.assert_nothing_after(id, seq).await;
    }
}
