//! The regional broker: it accepts work over a REST API, keeps providers
//! connected over WebSockets, matches work to providers, fails over when a
//! provider vanishes, bills every accepted unit once and keeps jobs durable
//! in SQLite.
//!
//! ```text
//!  requester ──HTTP──▶ http/ ──▶ Lifecycle::submit ──▶ sched/ (queue, index)
//!                                                        │ Assign frame
//!  provider ◀──────────── session.rs (one WebSocket) ◀───┘
//!           ───Accepted/Progress/Done──▶ session.rs ──▶ sched/ ──▶ Lifecycle::finish
//!                                                   (claim, bill once, notify the Waiter:
//!                                                    an invocation, a job, a replica group)
//! ```
//!
//! Start one with [`Broker::start`]; the `brume broker` command is a thin
//! wrapper over it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brume_api::Limits;
use brume_api::rest::{Capacity, Queues, Status};
use brume_identity::Identity;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod accounts;
mod audit;
pub mod chain;
mod deposits;
mod dispute;
pub mod escrow;
pub mod federation;
mod http;
pub use http::openapi;
mod jobs;
pub mod keys;
pub mod lambda;
pub(crate) mod leases;
pub mod ledger;
mod lifecycle;
mod measure;
mod metrics;
mod receipts;
mod reexec;
mod registry;
mod sched;
pub use leases::LeaseConfig;
pub use sched::AffinityConfig;
mod session;
pub mod settlement;
mod standings;
pub mod store;
#[cfg(test)]
mod store_suite;
pub mod tls;
pub mod trust;
mod verify;
mod work;

pub use store::StoreError;

/// What a component's storage trait returns: boxed, so that `dyn` works.
pub(crate) type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything a broker is configured with. `Default` is a sane local broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Serve HTTPS and WSS with this certificate; `None`: plain HTTP.
    pub tls: Option<tls::TlsConfig>,
    /// Database, module files and the broker's key.
    pub data_dir: PathBuf,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    /// Heartbeat interval both ways; a peer silent for 3 intervals is gone.
    pub heartbeat: Duration,
    /// How long a provider has to accept an assignment.
    pub ack_timeout: Duration,
    /// Limits for work that doesn't set them.
    pub default_limits: Limits,
    /// The most any work may ask for.
    pub max_limits: Limits,
    /// Largest module upload.
    pub max_module_bytes: usize,
    /// Largest job spec (JSON, stdin included).
    pub max_spec_bytes: usize,
    /// Sync calls get 503 `overloaded` past this many queued units...
    pub overload_queue_depth: usize,
    /// ...or when the oldest queued unit has waited this long.
    pub overload_queue_age: Duration,
    /// The share of every provider's slots kept for functions, in parts per
    /// million: batch work never holds them (at least one slot, never all;
    /// 0: none kept).
    pub function_reserve_ppm: u32,
    /// How long a sync call may wait for a provider.
    pub invoke_queue_timeout: Duration,
    /// Default queue timeout of a job.
    pub job_queue_timeout: Duration,
    /// Default attempts per unit of work.
    pub max_attempts: u32,
    /// Affinity sessions: how long one is kept after its last unit, and
    /// how large its work dir on the provider may grow.
    pub affinity: AffinityConfig,
    /// Leases: the longest time between two of their ticks, and how many
    /// one account keeps.
    pub leases: leases::LeaseConfig,
    /// How often providers report job progress.
    pub progress_interval: Duration,
    /// Finished jobs stay in memory this long (then they are read from disk).
    pub finished_job_retention: Duration,
    /// Pricing and payout shares of the ledger rows.
    pub ledger: ledger::LedgerConfig,
    /// The chain (`[broker.chain]`): backend, genesis, faucet, escrow and
    /// stake rules.
    pub chain: chain::ChainConfig,
    /// Batched settlement (`[broker.settlement]`).
    pub settlement: settlement::SettlementConfig,
    /// Trust tiers (`[broker.trust]`).
    pub trust: trust::TrustConfig,
    /// Federation with other brokers (`[broker.federation]`); `None`:
    /// this broker stands alone.
    pub federation: Option<federation::FederationSettings>,
    /// Whether anyone may make a console account (`[broker.console]
    /// signup`); otherwise only the operator does
    /// (`brume broker accounts create`).
    pub console_signup: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let default_limits = Limits {
            fuel: 10_000_000_000,
            memory_bytes: 256 << 20,
            timeout_ms: 30_000,
            max_input_bytes: 16 << 20,
            max_output_bytes: 16 << 20,
        };
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            tls: None,
            data_dir: PathBuf::from("brume-broker"),
            region: "local".into(),
            latitude: 0.0,
            longitude: 0.0,
            heartbeat: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(5),
            default_limits,
            max_limits: Limits {
                fuel: 10_000_000_000_000,
                memory_bytes: 4 << 30,
                timeout_ms: 24 * 3600 * 1000,
                max_input_bytes: 64 << 20,
                max_output_bytes: 64 << 20,
            },
            max_module_bytes: 64 << 20,
            max_spec_bytes: 96 << 20,
            overload_queue_depth: 10_000,
            overload_queue_age: Duration::from_secs(2),
            function_reserve_ppm: sched::DEFAULT_FUNCTION_RESERVE_PPM,
            invoke_queue_timeout: Duration::from_secs(10),
            job_queue_timeout: Duration::from_secs(600),
            max_attempts: 3,
            affinity: AffinityConfig::default(),
            leases: leases::LeaseConfig::default(),
            progress_interval: Duration::from_millis(500),
            finished_job_retention: Duration::from_secs(300),
            ledger: ledger::LedgerConfig::default(),
            chain: chain::ChainConfig::default(),
            settlement: settlement::SettlementConfig::default(),
            trust: trust::TrustConfig::default(),
            federation: None,
            console_signup: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("settlement: {0}")]
    Settlement(#[from] brume_settle::SettleError),
    #[error("identity: {0}")]
    Identity(#[from] brume_identity::IdentityError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox: {0}")]
    Sandbox(#[source] brume_sandbox::ExecError),
    #[error("a start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::BillError),
    #[error("chain: {0}")]
    Chain(#[from] brume_chain::ChainError),
    #[error("federation: {0}")]
    Federation(#[source] brume_federation::FederationError),
}

/// State shared by every handler and session.
pub(crate) struct Shared {
    pub config: BrokerConfig,
    pub broker_id: String,
    /// The broker's key: the payout account and the allowances' spender.
    pub identity: Identity,
    pub chain: chain::ChainHandle,
    /// The hub wallet providers may check, and its proving key.
    pub hub: Option<chain::Hub>,
    pub settlement: settlement::Settlement,
    /// Replicated jobs in progress, by job id.
    pub replicas: verify::Replicas,
    /// Recent invocations' receipts, proved by their providers' signed roots.
    pub receipts: receipts::Receipts,
    /// Bans, the operator's word on providers, saved track records.
    pub standings: standings::Standings,
    /// The scheduler and every unit of work in flight, with its waiter.
    pub lifecycle: Arc<lifecycle::Lifecycle>,
    /// Jobs: open ones, finished ones until `finished_job_retention`
    /// passes, and their store.
    pub jobs: jobs::Jobs,
    /// Leases: their drip, halts and units.
    pub leases: leases::Leases,
    pub registry: registry::Registry,
    /// API keys and signed requests.
    pub keys: keys::Keys,
    pub ledger: Arc<ledger::Ledger>,
    /// Checks published modules, and re-executes disputed work.
    pub validator: brume_sandbox::Sandbox,
    /// One validator run at a time, and the modules it keeps compiled
    /// ([`reexec`]).
    pub reexecutions: reexec::Reexecutions,
    /// Bandwidth probes' blobs waiting for their fetch ([`measure`]).
    pub probes: measure::Probes,
    /// The fuel of a fitness challenge ([`measure`]), once learned.
    pub challenge_fuel: tokio::sync::OnceCell<u64>,
    pub metrics: Arc<metrics::Metrics>,
    /// The libp2p node, the directory and the forwarding clients.
    pub federation: federation::Federated,
    /// Lambda credentials (key ids and their accounts; secrets derived).
    pub lambda: lambda::creds::Credentials,
    /// Console accounts (email and password) and sessions.
    pub accounts: accounts::Accounts,
    /// The OpenAPI document for this broker's config (tier names, limits),
    /// made at its first request.
    pub openapi: std::sync::OnceLock<String>,
    pub started: Instant,
    pub next_session: AtomicU64,
    /// Cancelled when the broker stops: every task it started watches it.
    pub shutdown: CancellationToken,
    /// Every task the broker starts (shutdown waits for them all).
    pub tasks: TaskTracker,
}

impl Shared {
    /// Runs `f` on the scheduler and then whatever it deferred.
    pub fn with_sched<T>(
        &self,
        f: impl FnOnce(&mut sched::Scheduler, &mut sched::After) -> T,
    ) -> T {
        self.lifecycle.with_sched(f)
    }

    pub fn status(&self) -> Status {
        let (providers, totals, waiting, in_flight) = self.lifecycle.read(|s| {
            (
                s.providers.len() as u64,
                s.totals,
                s.queue_len() as u64,
                s.inflight_len() as u64,
            )
        });
        let jobs_open = self.jobs.open_count() as u64;
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            broker_id: self.broker_id.clone(),
            region: self.config.region.clone(),
            latitude: self.config.latitude,
            longitude: self.config.longitude,
            providers_connected: providers,
            capacity: Capacity {
                slots_free: totals.slots - totals.slots_busy,
                slots_total: totals.slots,
                memory_free_bytes: totals.memory - totals.memory_busy,
                memory_total_bytes: totals.memory,
            },
            queues: Queues {
                waiting,
                in_flight,
                jobs_open,
            },
            uptime_s: self.started.elapsed().as_secs(),
            settlement: Some(self.settlement.health()),
            hub_wallet: self.hub.as_ref().map(|h| h.wallet.to_string()),
        }
    }
}

/// Entry point: `Broker::start(config)`.
#[derive(Debug)]
pub struct Broker;

/// A broker that is serving.
pub struct RunningBroker {
    url: String,
    tls_fingerprint: Option<brume_tls::Fingerprint>,
    broker_id: String,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), BrokerError>>,
    /// Appends the sync calls' rows; ends once its queue is closed.
    batcher: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RunningBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningBroker")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the data dir, re-queues open jobs, binds and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
        let data_dir = config.data_dir.clone();
        let store = store::Store::open_beside(&data_dir, Some(&config.ledger.store)).await?;
        let identity = Identity::load_or_create(&data_dir.join("broker.key"))?;
        let broker_id = identity.address().to_string();
        let validator = validator()?;
        let registry = registry::Registry::open(Box::new(store.clone())).await?;
        let standings = standings::Standings::open(Arc::new(store.clone())).await?;
        let jobs = jobs::Jobs::new(Arc::new(store.clone()), &config);
        let leases = leases::Leases::new(config.leases, Arc::new(store.clone()), leases::system());
        let reputation = standings.reputations().await?;
        let keys = keys::Keys::open(Box::new(store.clone())).await?;
        let lambda = lambda::creds::Credentials::open(&data_dir, store.clone()).await?;
        let accounts = accounts::Accounts::open(store.clone()).await?;
        let (ledger, ledger_rows) = open_ledger(&config).await?;
        let (chain, hub, settlement) = open_chain(&config, &ledger, &identity, jobs.gate()).await?;
        let tls = match &config.tls {
            Some(t) => Some(tls::load(t, &data_dir, config.listen)?),
            None => None,
        };
        let listener = bind(config.listen).await?;
        let addr = listener.local_addr().map_err(BrokerError::Serve)?;
        let ledger = Arc::new(ledger);
        let metrics = Arc::new(metrics::Metrics::new());
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let mut scheduler = sched::Scheduler::with_min_stake(config.chain.min_stake);
        scheduler.load_reputation(reputation);
        scheduler.match_time = Some(metrics.matching.clone());
        let lifecycle = Arc::new(lifecycle::Lifecycle::new(
            scheduler,
            ledger.clone(),
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        let shared = Arc::new(Shared {
            leases,
            lifecycle,
            config,
            broker_id: broker_id.clone(),
            identity,
            chain,
            hub,
            settlement,
            replicas: Default::default(),
            receipts: Default::default(),
            standings,
            jobs,
            registry,
            ledger,
            keys,
            validator,
            reexecutions: reexec::Reexecutions::new(),
            challenge_fuel: tokio::sync::OnceCell::new(),
            probes: Default::default(),
            metrics,
            federation: Default::default(),
            openapi: Default::default(),
            lambda,
            accounts,
            started: Instant::now(),
            next_session: AtomicU64::new(1),
            shutdown,
            tasks: tasks.clone(),
        });
        let batcher = tokio::spawn(ledger::batcher(shared.ledger.clone(), ledger_rows));
        jobs::recover(&shared).await?;
        Box::pin(leases::recover(&shared)).await?;
        let url = announce(&data_dir, addr, tls.as_ref().map(|t| t.fingerprint));
        if let Err(e) = shared.keys.write_control_token(&data_dir) {
            tracing::warn!("write {}: {e}", keys::CONTROL_TOKEN_FILE);
        }
        tasks.spawn(sweeper(shared.clone()));
        chain::ready_operator(&shared).await?;
        settlement::start(&shared).await;
        spawn_background(&shared);
        let tls_fingerprint = tls.as_ref().map(|t| t.fingerprint);
        federation::start(&shared, &url, tls_fingerprint, store).await?;
        let task = serve(listener, addr, tls, &shared);
        Ok(RunningBroker {
            url,
            tls_fingerprint,
            broker_id,
            addr,
            task,
            batcher,
            shared,
        })
    }
}

/// The sandbox that checks published modules: one instance at a time.
fn validator() -> Result<brume_sandbox::Sandbox, BrokerError> {
    brume_sandbox::Sandbox::new(brume_sandbox::SandboxConfig {
        max_concurrent_instances: 1,
        ..brume_sandbox::SandboxConfig::default()
    })
    .map_err(BrokerError::Sandbox)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, BrokerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Listen { addr, source })
}

/// The broker's periodic tasks: stake and standings watchers, settlement
/// and the subscriptions' daily fees.
fn spawn_background(shared: &Arc<Shared>) {
    let tasks = &shared.tasks;
    tasks.spawn(chain::stake_watcher(shared.clone()));
    tasks.spawn(standings::watch(shared.clone()));
    tasks.spawn(settlement::settle_loop(shared.clone()));
    tasks.spawn(leases::ticker(shared.clone()));
    tasks.spawn(ledger::subscriptions(
        shared.ledger.clone(),
        shared.shutdown.clone(),
    ));
}

/// Opens the ledger under `data_dir/ledger` (off the runtime) and loads
/// what each account owes.
async fn open_ledger(
    config: &BrokerConfig,
) -> Result<
    (
        ledger::Ledger,
        tokio::sync::mpsc::UnboundedReceiver<ledger::Unsealed>,
    ),
    BrokerError,
> {
    let location = match config.ledger.store.as_str() {
        "" => config.data_dir.join("ledger").display().to_string(),
        url => url.to_string(),
    };
    let store = brume_ledger::store::open(&location)
        .await
        .map_err(ledger::BillError::from)?;
    // The operator is paid apart from the payout account, so that the
    // payout account holds only what settlement owes.
    let operator = Identity::load_or_create(&config.data_dir.join("operator.key"))?
        .address()
        .to_string();
    let ledger_config = config.ledger.clone();
    let (mut ledger, rows) = ledger::Ledger::open(store, &ledger_config, operator)?;
    ledger.load_escrow().await?;
    Ok((ledger, rows))
}

/// Opens the chain, the hub wallet's key and the settlement journal (off
/// the runtime).
async fn open_chain(
    config: &BrokerConfig,
    ledger: &ledger::Ledger,
    identity: &Identity,
    gate: Arc<deposits::Deposits>,
) -> Result<
    (
        chain::ChainHandle,
        Option<chain::Hub>,
        settlement::Settlement,
    ),
    BrokerError,
> {
    let (dir, chain_config) = (config.data_dir.clone(), config.chain.clone());
    let payout = Arc::new(identity.clone());
    // Slashes go to the operator's account (the broker's own if the
    // operator is not an address).
    let operator = ledger
        .operator()
        .parse()
        .unwrap_or_else(|_| identity.address());
    let chain = chain::ChainHandle::open(&dir, &chain_config, payout, operator).await?;
    let hub = tokio::task::spawn_blocking(move || chain::Hub::load(&dir, &chain_config)).await??;
    // The journal goes where the ledger is: its PostgreSQL database, or
    // beside it in the data directory.
    let journal = match config.ledger.store.as_str() {
        url if brume_pg::is_url(url) => url.to_string(),
        _ => config.data_dir.join("settle").display().to_string(),
    };
    let (store, on_chain) = (ledger.store().clone(), chain.settlement().clone());
    let settlement =
        settlement::Settlement::open(journal, store, on_chain, gate, &config.settlement).await?;
    Ok((chain, hub, settlement))
}

/// The broker's URL (`https://` with TLS), written to
/// `data_dir/broker.url`; with TLS, the certificate's fingerprint is
/// logged and written to `data_dir/broker.sha256` (and that file removed
/// without). Plain HTTP beyond loopback is warned about.
fn announce(
    data_dir: &std::path::Path,
    addr: SocketAddr,
    fingerprint: Option<brume_tls::Fingerprint>,
) -> String {
    let pin_file = data_dir.join(tls::FINGERPRINT_FILE);
    let url = match fingerprint {
        Some(f) => {
            tracing::info!(sha256 = %f, "serving HTTPS and WSS; clients may pin this certificate");
            let _ = std::fs::write(&pin_file, format!("{f}\n"));
            format!("https://{addr}")
        }
        None => {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "serving plain HTTP beyond loopback: API keys and data cross the network \
                     in clear (use --tls-cert/--tls-key or --tls-self-signed, or terminate \
                     TLS in front)"
                );
            }
            let _ = std::fs::remove_file(&pin_file);
            format!("http://{addr}")
        }
    };
    let _ = std::fs::write(data_dir.join("broker.url"), format!("{url}\n"));
    url
}

/// Serves the HTTP API on `listener` (over TLS with `tls`) until the
/// broker's shutdown.
fn serve(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tls: Option<tls::ServerTls>,
    shared: &Arc<Shared>,
) -> tokio::task::JoinHandle<Result<(), BrokerError>> {
    let app = http::router(shared.clone());
    let stopped = shared.shutdown.clone();
    if let Some(tls) = tls {
        let (listener, accept) =
            tls::TlsListener::new(listener, addr, tls.acceptor, stopped.clone());
        shared.tasks.spawn(accept);
        // (Tapped, for axum gives a tapped listener's peers to handlers.)
        let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
        return tokio::spawn(serve_on(listener, app, stopped));
    }
    // Small frames and responses must leave at once: without
    // TCP_NODELAY, Nagle + delayed ACKs add ~40 ms to back-to-back writes.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("set TCP_NODELAY: {e}");
        }
    });
    tokio::spawn(serve_on(listener, app, stopped))
}

async fn serve_on<L>(
    listener: L,
    app: axum::Router,
    stopped: CancellationToken,
) -> Result<(), BrokerError>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    // The peer's address reaches handlers (the console's sign-in limit).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stopped.cancelled().await })
    .await
    .map_err(BrokerError::Serve)
}

impl RunningBroker {
    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// With TLS, the SHA-256 fingerprint of the certificate served (what
    /// clients pin).
    pub fn tls_fingerprint(&self) -> Option<brume_tls::Fingerprint> {
        self.tls_fingerprint
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's address (its identity in the provider handshake).
    pub fn broker_id(&self) -> &str {
        &self.broker_id
    }

    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Mints an operator's API key (every scope; stored hashed) and
    /// returns it.
    pub async fn create_api_key(&self, name: &str) -> Result<String, BrokerError> {
        self.create_api_key_for(name, None).await
    }

    /// Mints an operator's API key (every scope) bound to an account
    /// address: the ledger names the address (not the key's name) as its
    /// requester and developer.
    pub async fn create_api_key_for(
        &self,
        name: &str,
        account: Option<brume_chain::Address>,
    ) -> Result<String, BrokerError> {
        self.create_api_key_with(store::keys::NewKey {
            name: name.to_string(),
            account: account.map(|a| a.to_string()),
            scopes: brume_api::rest::Scope::ALL.to_vec(),
            expires_at_ms: None,
        })
        .await
    }

    /// Mints an API key with these scopes and expiry.
    pub async fn create_api_key_with(
        &self,
        new: store::keys::NewKey,
    ) -> Result<String, BrokerError> {
        Ok(self.shared.keys.create(new).await?.0)
    }

    /// Begins a graceful stop: providers are told, the listener closes,
    /// pending writes are committed.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Waits until the server has stopped (after [`RunningBroker::shutdown`]).
    pub async fn wait(self) -> Result<(), BrokerError> {
        let r = self.task.await.unwrap_or(Ok(()));
        // Sessions, background loops, billing appends, verification.
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        // Then the sync calls' rows still queued.
        self.shared.ledger.close_queue();
        let _ = self.batcher.await;
        self.shared.standings.save_reputations(&self.shared).await;
        self.shared.jobs.flush().await?;
        self.shared.ledger.settled().await;
        r
    }

    /// The federation node, when `[broker.federation]` is set.
    pub fn federation(&self) -> Option<&brume_federation::Federation> {
        self.shared.federation.node()
    }

    /// The ledger's store (for in-process readers such as the devnet demo).
    pub fn ledger(&self) -> &Arc<dyn brume_ledger::store::LedgerStore> {
        self.shared.ledger.store()
    }

    /// The dev chain's token (`None` on an EVM chain).
    pub fn chain(&self) -> Option<Arc<dyn brume_chain::Chain>> {
        self.shared.chain.chain().cloned()
    }

    /// The chain as settlement, escrow and stake see it.
    pub fn settlement(&self) -> Arc<dyn brume_chain::Settlement> {
        self.shared.chain.settlement().clone()
    }

    /// On a devnet: funds `account` and approves the payout account to
    /// collect `funds` (see [`chain::ChainHandle::fund_devnet_account`]).
    pub async fn fund_devnet_account(
        &self,
        account: &Identity,
        funds: u128,
    ) -> Result<(), brume_chain::ChainError> {
        self.shared.chain.fund_devnet_account(account, funds).await
    }

    /// The payout account (on the dev chain, the broker's address).
    pub fn payout_account(&self) -> brume_chain::Address {
        self.shared.chain.settlement().payout_account()
    }

    /// The broker's identity (it signs the payout account's transactions).
    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    /// The escrow book; settlement calls `collected` after each collection.
    /// Checks every settlement transfer against the ledger and the chain
    /// alone (see `brume_settle::audit`).
    pub async fn settlement_audit(
        &self,
    ) -> Result<brume_settle::SettleAudit, brume_settle::SettleError> {
        self.shared.settlement.settler().audit().await
    }

    /// Runs settlement now (resuming an interrupted run first).
    pub async fn settle_now(&self) -> Result<brume_settle::Report, brume_settle::SettleError> {
        settlement::run_once(&self.shared).await
    }

    pub fn escrow(&self) -> &Arc<escrow::Escrow> {
        self.shared.ledger.escrow()
    }

    /// Slashes `amount` of a provider's stake to the operator's account
    /// (not the payout account, which holds only what settlement owes),
    /// with the evidence's digest; the landed transaction.
    pub async fn slash(
        &self,
        provider: brume_chain::Address,
        amount: u128,
        evidence_digest: brume_chain::Anchor,
    ) -> Result<brume_chain::B256, brume_chain::ChainError> {
        verify::slash(&self.shared, provider, amount, evidence_digest).await
    }

    /// Waits until every row queued so far is durable (sync invocations
    /// append in the background).
    pub async fn ledger_settled(&self) {
        self.shared.ledger.settled().await;
    }
}

/// How often changed track records are saved.
const REPUTATION_SAVE_PERIOD: Duration = Duration::from_secs(1);

/// Ack timeouts, queue timeouts, eviction of finished jobs from memory, and
/// saving changed track records.
async fn sweeper(shared: Arc<Shared>) {
    let period = (shared.config.ack_timeout / 10)
        .clamp(Duration::from_millis(10), Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shared.shutdown.clone();
    let mut saved = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if saved.elapsed() >= REPUTATION_SAVE_PERIOD {
            saved = Instant::now();
            shared.standings.save_reputations(&shared).await;
        }
        let ack = shared.config.ack_timeout;
        shared.with_sched(|s, after| s.sweep(ack, after));
        shared.jobs.sweep();
    }
}
