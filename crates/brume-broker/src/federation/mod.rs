//! The broker in the federation: what it announces of itself, the
//! directory and locator it answers from, and the clients it forwards
//! calls with (a broker is a signed requester at its peer).
//!
//! The libp2p node and the rules (signatures, expiry, ranking, hops) are
//! `brume_federation`'s; this module feeds it the broker's state and reads
//! its directory.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use brume_api::federation::{
    AnnouncedPrices, AnnouncedService, AnnouncedTier, Announcement, DEFAULT_FORWARD_TTL,
    DirectoryEntry, Located, LocatedBroker, MAX_ANNOUNCED_SERVICES,
};
use brume_api::federation::{BrokerRecord, MAX_ANNOUNCED_PROVIDERS, ProviderRecord};
use brume_api::federation::{CheatNotice, SignedCheatNotice};
use brume_api::receipt::CheatProof;
use brume_api::rest::SettlementHealth;
use brume_api::{ApiError, ErrorCode, ServiceKind};
use brume_federation::{Federation, FederationConfig, Query};
use parking_lot::Mutex;

use crate::{BrokerError, Shared};

pub(crate) mod jobs;

/// `[broker.federation]`: the libp2p node, and how calls are forwarded.
#[derive(Debug, Clone)]
pub struct FederationSettings {
    pub p2p: FederationConfig,
    /// The URL peers and clients reach this broker's API at (default: the
    /// URL it serves, which names 0.0.0.0 when it listens on every
    /// interface).
    pub advertise_url: Option<String>,
    /// Forward a sync call this broker can't place to the best peer
    /// serving it.
    pub forward: bool,
    /// The most hops a forwarded call takes.
    pub forward_ttl: u32,
}

impl Default for FederationSettings {
    fn default() -> Self {
        FederationSettings {
            p2p: FederationConfig::default(),
            advertise_url: None,
            forward: true,
            forward_ttl: DEFAULT_FORWARD_TTL,
        }
    }
}

/// The federation component: the node once started, and one client per
/// peer (signed with the broker's key, pinned to the peer's announced
/// certificate).
#[derive(Default)]
pub(crate) struct Federated {
    node: OnceLock<Federation>,
    url: OnceLock<(String, Option<String>)>,
    peers: Mutex<HashMap<(String, Option<String>), brume_client::Client>>,
    /// Proofs of cheat published, and notices checked.
    pub proofs: Proofs,
    /// Jobs forwarded to peers.
    jobs: OnceLock<jobs::ForwardedJobs>,
}

impl std::fmt::Debug for Federated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federated")
            .field("node", &self.node.get())
            .finish_non_exhaustive()
    }
}

/// Feeds the node the broker's state at each announcement.
struct BrokerSource(Weak<Shared>);

impl brume_federation::Source for BrokerSource {
    fn announcement(&self) -> Announcement {
        let Some(shared) = self.0.upgrade() else {
            return empty();
        };
        announcement(&shared)
    }
}

fn empty() -> Announcement {
    Announcement {
        broker: String::new(),
        peer_id: String::new(),
        url: String::new(),
        tls_sha256: None,
        region: String::new(),
        latitude: 0.0,
        longitude: 0.0,
        capacity: Default::default(),
        queued: 0,
        providers: 0,
        services: Vec::new(),
        prices: Default::default(),
        hub_wallet: None,
        record: Default::default(),
        providers_seen: Vec::new(),
        seq: 0,
        issued_ms: 0,
        ttl_ms: 0,
    }
}

/// The broker as it announces itself now (unsigned).
fn announcement(shared: &Shared) -> Announcement {
    let status = shared.status();
    let (url, tls_sha256) = shared.federation.url.get().cloned().unwrap_or_default();
    let services = shared
        .registry
        .list(None)
        .into_iter()
        .filter(|s| !s.retired)
        .take(MAX_ANNOUNCED_SERVICES)
        .map(|s| AnnouncedService {
            name: format!("{}~{}", s.owner, s.name),
            kind: s.kind,
        })
        .collect();
    let ledger = &shared.config.ledger;
    Announcement {
        broker: shared.broker_id.clone(),
        url,
        tls_sha256,
        region: status.region,
        latitude: status.latitude,
        longitude: status.longitude,
        capacity: status.capacity,
        queued: status.queues.waiting,
        providers: status.providers_connected,
        services,
        prices: AnnouncedPrices {
            currency: ledger.currency.clone(),
            fiat_micros_per_token: ledger.fiat_micros_per_token,
            tiers: ledger
                .tiers
                .iter()
                .map(|t| AnnouncedTier {
                    name: t.name.clone(),
                    fiat_micros_per_coin: t.fiat_micros_per_coin,
                })
                .collect(),
        },
        hub_wallet: status.hub_wallet,
        record: record(shared, status.uptime_s, status.settlement),
        providers_seen: busiest(shared)
            .into_iter()
            .map(|(address, record)| ProviderRecord {
                banned: shared.standings.banned(&address).is_some(),
                address,
                record,
            })
            .collect(),
        ..empty()
    }
}

/// The track records with the most results, most first (at most
/// [`MAX_ANNOUNCED_PROVIDERS`]).
fn busiest(shared: &Shared) -> Vec<(String, brume_api::rest::Reputation)> {
    let mut all: Vec<(String, brume_api::rest::Reputation)> = shared
        .lifecycle
        .read(|s| s.reputations().map(|(a, r)| (a.clone(), *r)).collect());
    all.sort_by(|x, y| y.1.results.cmp(&x.1.results).then(x.0.cmp(&y.0)));
    all.truncate(MAX_ANNOUNCED_PROVIDERS);
    all
}

/// The broker's own track record.
fn record(shared: &Shared, uptime_s: u64, health: Option<SettlementHealth>) -> BrokerRecord {
    let health = health.unwrap_or_else(|| shared.settlement.health());
    let refuted = shared
        .metrics
        .audits
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: "refuted".into(),
        })
        .get();
    BrokerRecord {
        uptime_s,
        settlement_runs: health.last_run,
        last_settlement_ms: health.last_run_ms.unwrap_or(0),
        settlement_failing: health.last_error.is_some(),
        settlement_balanced: health.balanced,
        disputes_lost: refuted,
        cheats_banned: shared.standings.ban_count() as u64,
    }
}

/// Records the URL the broker is reached at (`url` it serves, or the
/// advertised one) and starts the node if `[broker.federation]` is set; its
/// task runs on the broker's tracker.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    url: &str,
    tls: Option<brume_tls::Fingerprint>,
    store: crate::store::Store,
) -> Result<(), BrokerError> {
    let settings = shared.config.federation.as_ref();
    let advertised = settings
        .and_then(|s| s.advertise_url.clone())
        .unwrap_or_else(|| url.into());
    let _ = shared
        .federation
        .url
        .set((advertised, tls.map(|f| f.to_string())));
    let Some(settings) = settings else {
        return Ok(());
    };
    let source = Arc::new(BrokerSource(Arc::downgrade(shared)));
    let (node, run) = Federation::start(
        settings.p2p.clone(),
        shared.identity.clone(),
        source,
        shared.shutdown.clone(),
    )
    .await
    .map_err(BrokerError::Federation)?;
    for addr in node.listen_addrs() {
        tracing::info!(%addr, "federation: listening (peers pass this as --peer)");
    }
    let _ = std::fs::write(
        shared.config.data_dir.join(P2P_ADDR_FILE),
        node.listen_addrs()
            .iter()
            .map(|a| format!("{a}\n"))
            .collect::<String>(),
    );
    let forwarded = jobs::ForwardedJobs::open(Arc::new(store)).await?;
    let unbilled = forwarded.unbilled();
    let _ = shared.federation.jobs.set(forwarded);
    for id in unbilled {
        shared.tasks.spawn(jobs::watch(shared.clone(), id));
    }
    shared.tasks.spawn(run);
    if let Some(rx) = node.take_notices() {
        shared.tasks.spawn(notices(shared.clone(), rx));
    }
    let _ = shared.federation.node.set(node);
    Ok(())
}

/// Where and how `name` is called at the broker `a`.
fn located(a: Announcement, kind: ServiceKind, name: &str) -> LocatedBroker {
    let base = a.url.trim_end_matches('/');
    LocatedBroker {
        endpoint: match kind {
            ServiceKind::Command => format!("{base}/v1/functions/{name}/invoke"),
            ServiceKind::Http => format!("{base}/fn/{name}/"),
            ServiceKind::Oci => format!("{base}/v1/jobs"),
        },
        broker: a.broker,
        url: a.url,
        tls_sha256: a.tls_sha256,
        region: a.region,
        protocol: kind,
        slots_free: a.capacity.slots_free,
    }
}

/// Where the node's listen addresses are written (one per line).
pub const P2P_ADDR_FILE: &str = "p2p.addr";

impl Federated {
    pub fn node(&self) -> Option<&Federation> {
        self.node.get()
    }

    /// The URL this broker is reached at, and its certificate's pin.
    pub fn url(&self) -> (String, Option<String>) {
        self.url.get().cloned().unwrap_or_default()
    }

    /// The jobs forwarded to peers (with federation on).
    pub fn jobs(&self) -> Option<&jobs::ForwardedJobs> {
        self.jobs.get()
    }

    /// Brings the metrics' federation counters up to the node's.
    pub fn update_metrics(&self, metrics: &crate::metrics::Metrics) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(node) = self.node() else { return };
        let s = node.stats();
        let m = &metrics.announcements;
        crate::metrics::Metrics::catch_up(m, "accepted", s.accepted.load(Relaxed));
        crate::metrics::Metrics::catch_up(m, "forged", s.forged.load(Relaxed));
        crate::metrics::Metrics::catch_up(m, "malformed", s.malformed.load(Relaxed));
        crate::metrics::Metrics::catch_up(m, "expired", s.expired.load(Relaxed));
    }

    /// Every broker known (this one first), live.
    fn entries(&self, shared: &Shared) -> Vec<DirectoryEntry> {
        let Some(node) = self.node() else {
            return Vec::new();
        };
        let mut all = node.directory().live(Instant::now());
        if let Some(own) = node.own() {
            // The freshest word on itself, not the last one gossiped.
            let signed = brume_federation::sign(
                &shared.identity,
                Announcement {
                    peer_id: own.announcement.peer_id.clone(),
                    seq: own.announcement.seq,
                    issued_ms: crate::now_ms(),
                    ttl_ms: own.announcement.ttl_ms,
                    ..announcement(shared)
                },
            )
            .unwrap_or(own);
            all.push(DirectoryEntry {
                announcement: signed,
                distance_km: None,
                age_ms: 0,
                local: true,
            });
        }
        all
    }

    /// `GET /v1/directory`.
    pub fn directory(&self, shared: &Shared, query: &Query) -> Vec<DirectoryEntry> {
        brume_federation::rank(self.entries(shared), query)
    }

    /// `GET /v1/locate/{owner}/{service}`: `owner~service` at every
    /// broker announcing it, best first.
    pub fn locate(&self, shared: &Shared, owner: &str, service: &str) -> Located {
        let name = format!("{owner}~{service}");
        let query = Query {
            service: Some(name.clone()),
            ..Query::default()
        };
        let mut brokers: Vec<LocatedBroker> = brume_federation::rank(self.entries(shared), &query)
            .into_iter()
            .filter_map(|e| {
                let a = e.announcement.announcement;
                let kind = a
                    .services
                    .iter()
                    .find(|s| s.name.eq_ignore_ascii_case(&name))?
                    .kind;
                Some(located(a, kind, &name))
            })
            .collect();
        if self.node().is_none()
            && let Ok(r) = shared.registry.resolve(&name, "")
        {
            // Not federated: the answer is this broker alone.
            brokers.push(located(announcement(shared), r.info.kind, &name));
        }
        Located {
            service: name,
            brokers,
        }
    }

    /// The signed client for the peer at `url` (pinned to `tls_sha256`
    /// when it serves HTTPS).
    pub fn client(
        &self,
        shared: &Shared,
        url: &str,
        tls_sha256: Option<&str>,
    ) -> Result<brume_client::Client, ApiError> {
        let key = (url.to_string(), tls_sha256.map(str::to_string));
        if let Some(c) = self.peers.lock().get(&key) {
            return Ok(c.clone());
        }
        let bad = |m: String| ApiError::new(ErrorCode::PeerUnreachable, m);
        let mut client = brume_client::Client::with_identity(url, shared.identity.clone())
            .map_err(|e| bad(format!("peer {url}: {e}")))?;
        if let Some(pin) = tls_sha256 {
            let pin = pin
                .parse()
                .map_err(|e| bad(format!("peer {url}: its announced certificate pin: {e}")))?;
            client = client
                .with_tls(&brume_tls::Trust::pinned(pin))
                .map_err(|e| bad(format!("peer {url}: {e}")))?;
        }
        let mut peers = self.peers.lock();
        if peers.len() > 1024 {
            peers.clear();
        }
        peers.insert(key, client.clone());
        Ok(client)
    }
}

/// How many proofs of cheat this broker keeps to serve to its peers
/// (`GET /v1/proofs/{sha256}`), and how many notices it remembers having
/// checked.
const KEPT_PROOFS: usize = 256;
/// The largest proof a broker fetches from a peer.
pub(crate) const MAX_PROOF_BYTES: usize = 4 << 20;

/// Proofs of cheat this broker published, by sha256 (hex), oldest first.
#[derive(Debug, Default)]
pub(crate) struct Proofs {
    kept: Mutex<std::collections::VecDeque<(String, bytes::Bytes)>>,
    checked: Mutex<std::collections::VecDeque<String>>,
}

impl Proofs {
    pub fn get(&self, sha256: &str) -> Option<bytes::Bytes> {
        self.kept
            .lock()
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(sha256))
            .map(|(_, b)| b.clone())
    }

    fn keep(&self, sha256: String, body: bytes::Bytes) {
        let mut kept = self.kept.lock();
        kept.push_back((sha256, body));
        while kept.len() > KEPT_PROOFS {
            kept.pop_front();
        }
    }

    /// Whether `sha256` was checked already (and remembers it).
    fn first_check(&self, sha256: &str) -> bool {
        let mut checked = self.checked.lock();
        if checked.iter().any(|d| d == sha256) {
            return false;
        }
        checked.push_back(sha256.to_string());
        while checked.len() > KEPT_PROOFS {
            checked.pop_front();
        }
        true
    }
}

/// Tells the federation that this broker proved `provider` cheated: the
/// proof is kept to serve, and a signed notice gossiped. Only a proof that
/// carries its work can be checked by a peer, so only such proofs go out.
pub(crate) fn report_cheat(shared: &Shared, provider: &str, proof: &CheatProof, body: &[u8]) {
    use sha2::Digest as _;
    let Some(node) = shared.federation.node() else {
        return;
    };
    if proof.work.is_none() || proof.reexecution.is_none() {
        return;
    }
    let sha256 = hex::encode(sha2::Sha256::digest(body));
    shared
        .federation
        .proofs
        .keep(sha256.clone(), bytes::Bytes::copy_from_slice(body));
    let (url, tls_sha256) = shared.federation.url.get().cloned().unwrap_or_default();
    let notice = CheatNotice {
        broker: shared.broker_id.clone(),
        url,
        tls_sha256,
        provider: provider.to_string(),
        proof_sha256: sha256,
        module_sha256: proof.cheat.receipt.module_digest.clone(),
        issued_ms: crate::now_ms(),
    };
    match brume_federation::sign_notice(&shared.identity, notice) {
        Ok(signed) => node.publish_notice(&signed),
        Err(e) => tracing::error!("sign a cheat notice: {e}"),
    }
}

/// Checks the peers' cheat notices one at a time until the broker stops.
async fn notices(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<SignedCheatNotice>) {
    loop {
        let signed = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            n = rx.recv() => match n {
                Some(n) => n,
                None => return,
            },
        };
        let n = signed.notice;
        if shared.standings.banned(&n.provider).is_some()
            || !shared.federation.proofs.first_check(&n.proof_sha256)
        {
            continue;
        }
        let outcome = match check_notice(&shared, &n).await {
            Ok(proof) => {
                let why = format!(
                    "proven cheat: a proof published by broker {}, re-executed here",
                    n.broker
                );
                tracing::warn!(provider = %n.provider, broker = %n.broker, "{why}: banning");
                crate::standings::ban(&shared, &n.provider, &why, Some(&proof)).await;
                "applied"
            }
            Err(Verdict::Refuted(why)) => {
                tracing::warn!(broker = %n.broker, provider = %n.provider, "a peer's proof of cheat does not hold: {why}");
                "refuted"
            }
            Err(Verdict::Unchecked(why)) => {
                tracing::warn!(broker = %n.broker, provider = %n.provider, "a peer's proof of cheat could not be checked: {why}");
                "unchecked"
            }
        };
        shared
            .metrics
            .cheat_notices
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }
}

enum Verdict {
    /// The proof is false or doesn't name what the notice says.
    Refuted(String),
    /// It could not be fetched or run: nobody is judged.
    Unchecked(String),
}

/// Fetches the notice's proof and module from its broker, checks the
/// proof offline and re-executes its work here: the proof's bytes if the
/// cheat is confirmed.
async fn check_notice(shared: &Arc<Shared>, n: &CheatNotice) -> Result<Vec<u8>, Verdict> {
    use sha2::Digest as _;
    let unchecked = |m: String| Verdict::Unchecked(m);
    let client = shared
        .federation
        .client(shared, &n.url, n.tls_sha256.as_deref())
        .map_err(|e| unchecked(e.to_string()))?;
    let resp = client
        .relay(
            http::Method::GET,
            &format!("/v1/proofs/{}", n.proof_sha256),
            http::HeaderMap::new(),
            bytes::Bytes::new(),
        )
        .await
        .map_err(|e| unchecked(format!("fetch the proof: {e}")))?;
    let body = resp.into_body();
    if body.len() > MAX_PROOF_BYTES {
        return Err(Verdict::Refuted(format!(
            "the proof is over {MAX_PROOF_BYTES} bytes"
        )));
    }
    if hex::encode(sha2::Sha256::digest(&body)) != n.proof_sha256.to_ascii_lowercase() {
        return Err(Verdict::Refuted(
            "the proof fetched is not the one announced".into(),
        ));
    }
    let proof: CheatProof =
        serde_json::from_slice(&body).map_err(|e| Verdict::Refuted(format!("not a proof: {e}")))?;
    let cheat = &proof.cheat.receipt;
    let verify = |m: &[u8], s: &[u8], a: &str| brume_identity::verify(m, s, a).is_ok();
    proof
        .check(verify)
        .map_err(|p| Verdict::Refuted(p.join("; ")))?;
    if !cheat.provider.eq_ignore_ascii_case(&n.provider) || cheat.module_digest != n.module_sha256 {
        return Err(Verdict::Refuted(
            "the proof accuses another provider or module".into(),
        ));
    }
    let mut work = *proof
        .work
        .clone()
        .ok_or_else(|| unchecked("the proof carries no work".into()))?;
    // The limits the proving broker signed, within what this broker runs.
    if let Some(a) = &proof.cheat.assignment {
        work.limits.fuel = a.assignment.fuel_limit;
        work.limits.memory_bytes = a.assignment.memory_limit_bytes;
        work.limits.timeout_ms = a.assignment.timeout_ms;
    }
    let max = &shared.config.max_limits;
    if work.limits.fuel > max.fuel
        || work.limits.memory_bytes > max.memory_bytes
        || work.limits.timeout_ms > max.timeout_ms
    {
        return Err(unchecked("its work is over this broker's limits".into()));
    }
    let module = client
        .blob(&n.module_sha256)
        .await
        .map_err(|e| unchecked(format!("fetch the module: {e}")))?;
    let here = crate::reexec::rerun_fetched(shared, module, &work)
        .await
        .map_err(unchecked)?;
    if here.refutes(cheat) {
        Ok(body.to_vec())
    } else {
        Err(Verdict::Refuted(format!(
            "re-executed here, the work gives the result {} (fuel {}) that {} signed",
            here.output_digest, here.fuel, cheat.provider
        )))
    }
}
