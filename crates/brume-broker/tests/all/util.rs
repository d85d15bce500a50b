//! A real broker in this process, a requester client for it, and waiting
//! on conditions.
//!
//! Nothing here sleeps for a fixed time: every wait is on a condition with
//! a generous deadline, and panics naming what it waited for.

use std::future::Future;
use std::time::Duration;

use brume_api::rest::{EventKind, JobEvent, JobInfo, JobSpec, Reputation};
use brume_broker::RunningBroker;
use brume_client::{Client, ServiceKind, WorkId};
use brume_ledger::row::LedgerRow;
use brume_ledger::store::{LedgerStore as _, MAX_SCAN};
use brume_localnet::LocalNet;
use brume_localnet::scripted::ScriptedProvider;
use bytes::Bytes;
use futures_util::StreamExt;

/// How long any one condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How often [`eventually`] checks.
const POLL: Duration = Duration::from_millis(10);

/// The service every test runs (the provider never runs it).
pub const SERVICE: &str = "echo";

/// `fut`'s output, or a panic naming `what` after [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {DEADLINE:?}"))
}

/// Polls `check` until it returns `Some`; panics naming `what` after
/// [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// A broker on a free port over a temporary data dir (a [`LocalNet`]
/// without real providers), with the `echo` service published and a
/// requester client holding an API key.
pub struct TestBroker {
    net: LocalNet,
    pub client: Client,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        let net = LocalNet::builder()
            .name("tests")
            // Tests script when a provider accepts; never time it out.
            .broker(|c| c.ack_timeout = DEADLINE * 2)
            .publish(
                SERVICE,
                ServiceKind::Command,
                Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
            )
            .deadline(DEADLINE)
            .start();
        let net = within("the broker starts and publishes the service", net)
            .await
            .expect("start the broker");
        let client = net.client().clone();
        TestBroker { net, client }
    }

    /// Stops the broker gracefully and starts a new one on the same data
    /// dir (its providers are disconnected; the API key still works).
    pub async fn restart(self) -> TestBroker {
        let net = within("the broker restarts", self.net.restart_broker())
            .await
            .expect("a clean stop and a new start");
        let client = net.client().clone();
        TestBroker { net, client }
    }

    pub fn broker(&self) -> &RunningBroker {
        self.net.broker()
    }

    pub fn url(&self) -> &str {
        self.net.url()
    }

    /// A scripted provider with a fresh identity.
    pub async fn provider(&self) -> ScriptedProvider {
        self.net.scripted_provider().await
    }

    /// Submits a job running [`SERVICE`].
    pub async fn submit(&self) -> JobInfo {
        let spec = JobSpec {
            service: Some(SERVICE.into()),
            ..JobSpec::default()
        };
        within("submit a job", self.client.submit(&spec))
            .await
            .expect("submit a job")
    }

    /// A job's events up to its end. Checks that they are numbered 0, 1, 2...
    /// and that exactly one is final: the last.
    pub async fn job_story(&self, id: WorkId) -> Vec<JobEvent> {
        let story: Vec<JobEvent> = within(&format!("job {id} ends"), async {
            let events = self.client.events(id).await.expect("the job's events");
            events.map(|e| e.expect("a readable event")).collect().await
        })
        .await;
        let seqs: Vec<u64> = story.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (0..story.len() as u64).collect();
        assert_eq!(seqs, expected, "events numbered in order: {story:#?}");
        let finals = story.iter().filter(|e| e.kind.is_final()).count();
        assert_eq!(finals, 1, "exactly one final event: {story:#?}");
        assert!(
            story.last().is_some_and(|e| e.kind.is_final()),
            "the final event is the last: {story:#?}"
        );
        story
    }

    /// Checks that nothing was recorded after event `seq` of job `id`.
    /// Meant for a broker restarted since the job ended: the job is read
    /// from disk, so the stream ends after its stored events (a job still in
    /// memory would wait for more).
    pub async fn assert_nothing_after(&self, id: WorkId, seq: u64) {
        let later: Vec<JobEvent> = within(&format!("the stored events of job {id}"), async {
            let events = self
                .client
                .events_after(id, Some(seq))
                .await
                .expect("the job's events");
            events.map(|e| e.expect("a readable event")).collect().await
        })
        .await;
        assert!(
            later.is_empty(),
            "job {id}: events after its final event {seq}: {later:#?}"
        );
    }

    /// Every ledger row, once every row queued so far is durable.
    pub async fn ledger_rows(&self) -> Vec<LedgerRow> {
        within("the ledger settles", self.broker().ledger_settled()).await;
        self.broker()
            .ledger()
            .scan(0, MAX_SCAN)
            .await
            .expect("scan the ledger")
            .into_iter()
            .map(|(_, row)| row)
            .collect()
    }

    /// The ledger rows of one unit of work.
    pub async fn rows_for(&self, id: WorkId) -> Vec<LedgerRow> {
        let id = id.to_string();
        self.ledger_rows()
            .await
            .into_iter()
            .filter(|r| r.data.work_id == id)
            .collect()
    }

    /// A connected provider's reputation, as `GET /v1/providers` shows it.
    pub async fn reputation_of(&self, address: &str) -> Reputation {
        let list = within("list providers", self.client.providers())
            .await
            .expect("list providers");
        list.providers
            .iter()
            .find(|p| p.address.eq_ignore_ascii_case(address))
            .unwrap_or_else(|| panic!("provider {address} is not listed: {list:#?}"))
            .reputation
    }

    /// Waits until `GET /v1/providers` no longer lists `address`.
    pub async fn wait_provider_gone(&self, address: &str) {
        eventually(&format!("provider {address} is gone"), || async {
            let list = self.client.providers().await.expect("list providers");
            let listed = list
                .providers
                .iter()
                .any(|p| p.address.eq_ignore_ascii_case(address));
            (!listed).then_some(())
        })
        .await;
    }
}

/// The kinds of a job's events, for messages and checks.
pub fn kinds(story: &[JobEvent]) -> Vec<EventKind> {
    story.iter().map(|e| e.kind).collect()
}

/// Whether two addresses are the same (case aside).
pub fn same(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.eq_ignore_ascii_case(b))
}
