//! Every unit of work a provider completes is billed exactly once, with
//! the fuel the provider reported.

use std::collections::{HashMap, HashSet};

use brume_api::rest::EventKind;
use brume_client::WorkId;
use brume_identity::Identity;
use bytes::Bytes;

use crate::util::{SERVICE, TestBroker, same, within};
use brume_localnet::scripted::{ScriptedProvider, exited};

/// Sync invocations.
const N: usize = 8;
/// Jobs.
const M: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn every_invocation_and_job_is_billed_once_with_the_reported_fuel() {
    let b = TestBroker::start().await;
    let mut p =
        ScriptedProvider::connect_with_slots(b.url(), Identity::random(), (N + M) as u32).await;

    let calls: Vec<_> = (0..N)
        .map(|i| {
            let client = b.client.clone();
            tokio::spawn(async move {
                client
                    .invoke(SERVICE, &[format!("call-{i}")], Bytes::new())
                    .await
            })
        })
        .collect();
    let mut jobs = Vec::new();
    for _ in 0..M {
        jobs.push(b.submit().await.id);
    }

    // Each unit gets its own fuel, so a row billed with another's shows.
    let mut fuel_of: HashMap<WorkId, u64> = HashMap::new();
    for k in 0..(N + M) as u64 {
        let (ch, a) = p.next_assign().await;
        let fuel = 1_000_000 + k * 1_000;
        p.accept(ch);
        p.done(ch, exited(&format!("output {k}"), fuel));
        assert!(
            fuel_of.insert(a.work_id, fuel).is_none(),
            "{} assigned twice",
            a.work_id
        );
    }

    let mut invoked = HashSet::new();
    for call in calls {
        let r = within("an invocation", call)
            .await
            .expect("the invocation task")
            .expect("the invocation");
        assert_eq!(r.status, 200, "{r:?}");
        let id = r.work_id.expect("x-brume-work-id");
        assert_eq!(r.fuel, fuel_of.get(&id).copied(), "{r:?}");
        assert!(same(r.provider.as_deref(), &p.address), "{r:?}");
        invoked.insert(id);
    }
    assert_eq!(invoked.len(), N);
    for &id in &jobs {
        let story = b.job_story(id).await;
        assert_eq!(story.last().map(|e| e.kind), Some(EventKind::Succeeded));
    }
    let expected: HashSet<WorkId> = invoked.into_iter().chain(jobs).collect();
    let assigned: HashSet<WorkId> = fuel_of.keys().copied().collect();
    assert_eq!(expected, assigned, "every unit was assigned once");

    let rows = b.ledger_rows().await;
    assert_eq!(rows.len(), N + M, "one row per unit: {rows:#?}");
    let billed: HashSet<String> = rows.iter().map(|r| r.data.work_id.clone()).collect();
    let expected: HashSet<String> = expected.iter().map(ToString::to_string).collect();
    assert_eq!(billed, expected, "the rows are those of the units");
    for row in &rows {
        let id: WorkId = row.data.work_id.parse().expect("a work id");
        assert_eq!(
            Some(row.data.usage.fuel),
            fuel_of.get(&id).copied(),
            "{row:#?}"
        );
        assert!(same(Some(&row.data.provider), &p.address), "{row:#?}");
    }
}
