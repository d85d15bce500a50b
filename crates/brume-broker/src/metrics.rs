//! Prometheus metrics (`GET /metrics`), through `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub kind: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub queue_depth: Gauge,
    pub providers: Gauge,
    pub retries: Counter,
    pub work: Family<OutcomeLabels, Counter>,
    /// Audited invocations re-executed, by outcome (confirmed, refuted).
    pub audits: Family<OutcomeLabels, Counter>,
    /// Providers' signed batches of invocation receipts, by outcome
    /// (checked, refused, overdue).
    pub receipt_roots: Family<OutcomeLabels, Counter>,
    /// Re-challenges of connected providers answered, by kind (compute,
    /// which includes memory; bandwidth).
    pub remeasures: Family<KindLabels, Counter>,
    /// Federation announcements heard, by outcome (accepted, forged,
    /// malformed), brought up to the node's counts at each scrape.
    pub announcements: Family<OutcomeLabels, Counter>,
    /// Sync calls forwarded to a peer broker, by outcome (answered,
    /// refused: no peer, or the hops were spent).
    pub forwards: Family<OutcomeLabels, Counter>,
    /// Peers' proofs of cheat checked, by outcome (applied: re-executed
    /// here and the cheat banned; refuted; unchecked).
    pub cheat_notices: Family<OutcomeLabels, Counter>,
    /// The scheduler's time to match new work to a provider (or to find
    /// none and queue it).
    pub matching: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The scheduler's matching time: 0.1 µs .. ~150 ms, in steps of a quarter.
fn matching(registry: &mut Registry) -> Histogram {
    let matching = Histogram::new(exponential_buckets(1e-7, 1.25, 64));
    registry.register(
        "match_duration_seconds",
        "Time for the scheduler to match new work to a provider, or find none",
        matching.clone(),
    );
    matching
}

/// Counters by outcome, registered under these names and help texts.
fn outcome_counters<const N: usize>(
    registry: &mut Registry,
    names: [(&str, &str); N],
) -> [Family<OutcomeLabels, Counter>; N] {
    names.map(|(name, help)| {
        let family = Family::<OutcomeLabels, Counter>::default();
        registry.register(name, help, family.clone());
        family
    })
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("brume");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 20 µs .. ~40 s
            Histogram::new(exponential_buckets(0.000_02, 2.0, 22))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Work units waiting for a provider",
            queue_depth.clone(),
        );
        let providers = Gauge::default();
        registry.register(
            "providers_connected",
            "Providers with a live session",
            providers.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Work units re-queued after a provider failure",
            retries.clone(),
        );
        let [work, audits, receipt_roots] = outcome_counters(
            &mut registry,
            [
                ("work_completed", "Work units finished, by outcome"),
                ("audits", "Audited invocations re-executed, by outcome"),
                (
                    "receipt_roots",
                    "Signed batches of invocation receipts, by outcome",
                ),
            ],
        );
        let remeasures = Family::<KindLabels, Counter>::default();
        registry.register(
            "remeasures",
            "Re-challenges of connected providers answered, by kind",
            remeasures.clone(),
        );
        let [announcements, forwards, cheat_notices] = outcome_counters(
            &mut registry,
            [
                (
                    "federation_announcements",
                    "Federation announcements heard, by outcome",
                ),
                (
                    "federation_forwards",
                    "Sync calls forwarded to a peer broker, by outcome",
                ),
                (
                    "federation_cheat_notices",
                    "Peers' proofs of cheat checked, by outcome",
                ),
            ],
        );
        let matching = matching(&mut registry);
        Metrics {
            registry,
            matching,
            cheat_notices,
            announcements,
            forwards,
            audits,
            receipt_roots,
            remeasures,
            requests,
            latency,
            queue_depth,
            providers,
            retries,
            work,
        }
    }

    /// Brings the `outcome` counter of `family` up to `total`.
    pub fn catch_up(family: &Family<OutcomeLabels, Counter>, outcome: &str, total: u64) {
        let c = family.get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        });
        c.inc_by(total.saturating_sub(c.get()));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
