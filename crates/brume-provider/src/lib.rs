//! brume's provider daemon, as a library (`brume provide` is a thin CLI
//! over it; devnet and benchmarks start providers in-process).
//!
//! A provider keeps one WebSocket to a broker (`{broker}/v1/provider/connect`,
//! protocol in [`brume_api::wire`]), proves its identity, takes work units
//! and runs them in the [`brume_sandbox::Sandbox`], and returns the output
//! with the exact usage.
//!
//! An `https://` broker means `wss://` for the WebSocket and HTTPS for
//! module fetches, both trusting [`ProviderConfig::tls`] (the built-in
//! roots, a CA file, or the broker's certificate pinned by fingerprint;
//! see [`brume_tls`]). Subscribed blacklists over `https://` trust the
//! same roots and CA file, never the pin (they are other hosts).
//!
//! ```no_run
//! # async fn demo() -> Result<(), brume_provider::ProviderError> {
//! use brume_provider::{Provider, ProviderConfig};
//! let running = Provider::start(ProviderConfig {
//!     broker_url: "http://127.0.0.1:7700".into(),
//!     data_dir: "/tmp/provider".into(),
//!     ..ProviderConfig::default()
//! })
//! .await?;
//! running.connected().await; // the broker sent Welcome
//! println!("{} at {} MIPS", running.address(), running.fitness_mips());
//! running.drain(); // what SIGTERM does
//! running.wait().await?;
//! # Ok(()) }
//! ```
//!
//! # Lifecycle
//!
//! [`Provider::start`] loads or creates the key (`data_dir/provider.key`,
//! mode 0600), creates the sandbox (artifact cache `data_dir/modules`) unless
//! one is given, runs the fitness test, binds the control port (address
//! written to `data_dir/control.addr`) and spawns the connection loop. It
//! returns a [`RunningProvider`] before the broker answers; await
//! [`RunningProvider::connected`] for the `Welcome`.
//!
//! The connection loop reconnects forever with exponential backoff and
//! jitter (100 ms to 10 s) until [`RunningProvider::shutdown`] or a drain.
//! A close with `BAD_VERSION` or `BAD_SIGNATURE` is fatal:
//! [`RunningProvider::wait`] returns [`ProviderError::Rejected`]. Losing the
//! connection aborts every execution in flight (the broker reassigns them).
//! Nothing received for three heartbeat intervals counts as a lost
//! connection.
//!
//! # Work
//!
//! An `Assign` is refused (`Refused{reason}`) when its service is not in
//! `allowed_services` (`not_allowed`; an assignment by digest alone is
//! refused too when there is a list), when slots or memory are used up
//! (`no_capacity`), while draining (`draining`) or when its digest does not
//! parse (`invalid_module`). Module policy comes next, before anything is
//! fetched (see [`policy`]): a digest on the local or a subscribed
//! blacklist is refused with `blacklisted`; with
//! [`ProviderConfig::require_signed_by`] set, a module without a valid
//! developer signature is refused with `unsigned`, one signed by another
//! developer with `untrusted_developer`. Otherwise, for a job (`progress_ms` set)
//! `Accepted` goes out at once; an invocation sends it only if it is still
//! running after `ACK_AFTER` (20 ms), else its `Done` is the acknowledgement.
//! Then the program is found: in memory, else in the artifact cache, else fetched
//! from `GET {broker}/v1/blobs/{digest}` (bearer: the session's
//! `blob_token`), checked against the digest (`fetch_failed` if it is not
//! what was asked for, or the fetch fails) and compiled on a blocking thread
//! once per digest and profile however many assignments wait for it; then
//! `Cached([digest])` goes out on channel 0. A module the sandbox refuses
//! ends in `Done(Failed{code})` with the sandbox's code. `Cancel` aborts the
//! execution; nothing more is sent on that channel.
//!
//! With `progress_ms`, `Progress{fuel, stderr}` goes out at that interval.
//! Its fuel is sampled inside the guest and may be low by up to 10^6 (see
//! [`brume_sandbox::Progress`]); `Done` carries the exact figure.
//!
//! # Fitness
//!
//! At start-up a fixed integer loop ([`fitness::BENCHMARK_WAT`], about
//! 4·10^7 fuel) runs once in the sandbox. Fitness in MIPS is its fuel
//! divided by the wall seconds, over 10^6. Fuel counts executed wasm
//! operators, so this is millions of wasm instructions per second on one
//! core.
//!
//! # Drain
//!
//! [`RunningProvider::drain`] (SIGTERM, SIGINT in the CLI) sends `Draining`,
//! refuses new work with `draining`, lets in-flight work finish for up to
//! [`ProviderConfig::drain_grace`] (then aborts it), closes the WebSocket
//! normally, and [`RunningProvider::wait`] returns `Ok`.
//!
//! # Control port
//!
//! `GET /status` on [`RunningProvider::control_addr`] answers a
//! [`brume_api::rest::ProviderStatus`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use batch::BatchPriority;
use brume_api::rest::{Price, ProviderStatus};
use brume_identity::Identity;
use brume_sandbox::{Digest, Program, Sandbox, SandboxConfig};
pub use hub::HubRequirement;
pub use policy::{BlacklistSource, BlacklistSourceError, Fault};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub mod fitness;
pub mod policy;

mod affinity;
mod batch;
mod container;
mod control;
pub mod data;
pub mod gpu;
mod hub;
pub mod idle;
mod registry;
mod roots;
mod session;
mod work;
mod workdir;

/// Everything a provider needs. `Default` gives a provider for a local
/// broker on 127.0.0.1:7700.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// `http://host:port` of the broker; the WebSocket is
    /// `ws://host:port/v1/provider/connect` (`https://` and `wss://`
    /// with TLS).
    pub broker_url: String,
    /// Whom to trust as the broker over TLS (default: the built-in roots).
    pub tls: brume_tls::Trust,
    /// Holds `provider.key`, the module cache `modules/` and `control.addr`.
    pub data_dir: PathBuf,
    /// Concurrent executions (default: the number of cores).
    pub slots: u32,
    /// Memory offered across all slots, in bytes (default 2 GiB).
    pub memory_bytes: u64,
    /// Default `local`.
    pub region: String,
    /// Service names accepted; `None` accepts any.
    pub allowed_services: Option<Vec<String>>,
    pub price_ask: Price,
    /// Where the control port listens (default 127.0.0.1:0).
    pub control_listen: SocketAddr,
    /// How long a drain waits for in-flight work (default 30 s).
    pub drain_grace: Duration,
    /// A sandbox to share between in-process providers; `None` creates one
    /// with its artifact cache in `data_dir/modules`.
    pub sandbox: Option<Arc<Sandbox>>,
    /// Module digests refused with `blacklisted` (see [`policy`]).
    pub blacklist: Vec<Digest>,
    /// Signed blacklists to subscribe to (see [`policy`]).
    pub blacklist_sources: Vec<BlacklistSource>,
    /// How often subscribed blacklists are fetched again (default 10 min).
    pub blacklist_refresh: Duration,
    /// When not empty, only modules signed by one of these developers run;
    /// anything else is refused with `unsigned` or `untrusted_developer`.
    pub require_signed_by: Vec<brume_identity::EthAddress>,
    /// The organisation whose private pool this provider belongs to (trust
    /// tier 1: it then runs only that organisation's work).
    pub org: Option<String>,
    /// Attestation evidence sent in the handshake (trust tier 3).
    pub attestation: Option<brume_api::wire::Attestation>,
    /// Join only a broker whose hub wallet passes these (see [`hub`]).
    pub hub: Option<HubRequirement>,
    /// Take OCI container jobs (bubblewrap; see [`brume_oci`]).
    pub containers: bool,
    /// The host uid containers run as when the provider runs as root.
    pub container_uid: u32,
    /// URL prefixes input files may be fetched from (`https://data.example/`);
    /// empty: only the broker's blob store.
    pub data_urls: Vec<String>,
    /// The input file cache's size cap (default 1 GiB) and default TTL
    /// (default 1 h), in `data_dir/data`.
    pub data_cache_bytes: u64,
    pub data_ttl: Duration,
    /// Take work only while this says the host is idle (see [`idle`]),
    /// checked every `idle_every` (default 5 s).
    pub idle: Option<Arc<dyn idle::IdleProbe>>,
    pub idle_every: Duration,
    /// The GPUs it advertises; `None` finds them ([`gpu::detect`]) and
    /// times them with `gpu_bench`. Tests set them here: the binary has no
    /// flag for it.
    pub gpus: Option<brume_api::wire::Gpus>,
    /// The GPU benchmark command (see [`gpu`]); empty: [`gpu::default_bench`].
    pub gpu_bench: Vec<String>,
    /// Container jobs that ask for the network get this host's network
    /// (default false: such jobs are not taken, and go elsewhere).
    pub allow_network: bool,
    /// Registries container images may be pulled from, as base URLs
    /// (`https://ghcr.io`, `http://127.0.0.1:5000`); empty: none.
    pub registries: Vec<String>,
    /// Where it is, `(latitude, longitude)` in degrees, for requesters
    /// looking for offers near them (a claim, shown as such).
    pub location: Option<(f64, f64)>,
    /// The least fee per compute hour it works for, in micro-tokens (0:
    /// none): work whose bid is lower is refused with `below_floor`, and
    /// its ask is at least this ([`brume_api::rest::floor_to_price`]).
    pub min_fee_per_hour: u64,
    /// Which queued work the broker offers it first.
    pub policy: brume_api::wire::Policy,
    /// How batch work yields the CPU to functions (default `SCHED_IDLE`).
    pub batch_priority: batch::BatchPriority,
    /// Misbehave on purpose, to test the broker's verification.
    #[doc(hidden)]
    pub fault: Option<Fault>,
}

impl ProviderConfig {
    /// Its ask: `price_ask`, raised to its fee floor.
    pub fn ask(&self) -> Price {
        self.price_ask
            .max(brume_api::rest::floor_to_price(self.min_fee_per_hour))
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            broker_url: "http://127.0.0.1:7700".into(),
            tls: brume_tls::Trust::default(),
            data_dir: PathBuf::from("brume-provider"),
            slots: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_bytes: 2 << 30,
            region: "local".into(),
            allowed_services: None,
            price_ask: 0,
            control_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            drain_grace: Duration::from_secs(30),
            sandbox: None,
            blacklist: Vec::new(),
            blacklist_sources: Vec::new(),
            blacklist_refresh: Duration::from_secs(600),
            require_signed_by: Vec::new(),
            org: None,
            attestation: None,
            hub: None,
            containers: false,
            container_uid: brume_oci::DEFAULT_UID,
            data_urls: Vec::new(),
            data_cache_bytes: 1 << 30,
            data_ttl: Duration::from_secs(3600),
            idle: None,
            idle_every: Duration::from_secs(5),
            gpus: None,
            gpu_bench: Vec::new(),
            allow_network: false,
            registries: Vec::new(),
            location: None,
            min_fee_per_hour: 0,
            policy: brume_api::wire::Policy::Fifo,
            batch_priority: batch::BatchPriority::Idle,
            fault: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("provider key: {0}")]
    Identity(#[from] brume_identity::IdentityError),
    #[error("sandbox: {0}")]
    Sandbox(#[from] brume_sandbox::ExecError),
    #[error("fitness test: {0}")]
    Fitness(#[from] fitness::FitnessError),
    #[error("control port {addr}: {source}")]
    Control {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("broker URL {0:?}: expected http(s)://host:port or ws(s)://host:port")]
    BadBrokerUrl(String),
    #[error("TLS: {0}")]
    Tls(#[from] brume_tls::TlsError),
    /// The broker closed with a code that retrying cannot fix.
    #[error("broker refused this provider (close code {code}): {reason}")]
    Rejected { code: u16, reason: String },
    #[error("internal: {0}")]
    Internal(String),
}

/// Where the connection is, for status and [`RunningProvider::connected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected,
    Draining,
    Stopped,
}

impl Connection {
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Connecting => "connecting",
            Connection::Connected => "connected",
            Connection::Draining => "draining",
            Connection::Stopped => "stopped",
        }
    }
}

type Key = (Digest, brume_sandbox::Profile);

/// Slot and memory reservations. Held only for a few instructions, never
/// across an await.
#[derive(Debug, Default)]
struct Capacity {
    slots_used: u32,
    memory_used: u64,
    /// The GPUs held by running jobs, one bit per device index.
    gpus_used: u64,
}

/// State shared by the connection loop, the executions and the control port.
pub(crate) struct Shared {
    pub(crate) config: ProviderConfig,
    pub(crate) identity: Identity,
    pub(crate) address: String,
    pub(crate) sandbox: Arc<Sandbox>,
    /// Fetches from the broker (module blobs).
    pub(crate) http: reqwest::Client,
    /// Fetches from elsewhere (subscribed blacklists): the pin aside.
    pub(crate) lists_http: reqwest::Client,
    pub(crate) ws_url: String,
    /// TLS for a `wss://` broker.
    pub(crate) ws_tls: tokio_tungstenite::Connector,
    pub(crate) fitness_mips: u64,
    fitness_digest: Digest,
    /// The broker's fitness challenges, compiled before connecting.
    pub(crate) challenge: brume_exec::fitness::Challenges,
    pub(crate) started: Instant,
    /// Programs ready to run: a sync map get on the hot path.
    pub(crate) programs: parking_lot::Mutex<HashMap<Key, Program>>,
    pub(crate) blacklists: policy::Blacklists,
    /// Loads in progress, one per key, shared by every assignment waiting.
    pub(crate) loading: parking_lot::Mutex<HashMap<Key, work::LoadCell>>,
    capacity: parking_lot::Mutex<Capacity>,
    pub(crate) work_done: AtomicU64,
    pub(crate) work_failed: AtomicU64,
    pub(crate) instructions: AtomicU64,
    pub(crate) draining: AtomicBool,
    pub(crate) connected_since_ms: AtomicU64,
    pub(crate) conn: watch::Sender<Connection>,
    /// Set by [`RunningProvider::drain`].
    pub(crate) drain: CancellationToken,
    /// Set by [`RunningProvider::shutdown`].
    pub(crate) stop: CancellationToken,
    /// Where jobs run: threads at a lower priority than functions.
    pub(crate) batch: batch::BatchRuntime,
    /// The last hub wallet check, and whether it passed (a failed one
    /// ends the session).
    pub(crate) hub_last: parking_lot::Mutex<Option<brume_api::rest::HubCheck>>,
    pub(crate) hub_ok: watch::Sender<bool>,
    /// Container jobs: the runtime, or why there is none.
    pub(crate) containers: Option<Result<Arc<brume_oci::Containers>, String>>,
    /// Jobs' input files, as fetched.
    pub(crate) data: Arc<data::DataCache>,
    /// Why it is paused by its idle conditions, if it is.
    pub(crate) paused: watch::Sender<Option<String>>,
    /// Its GPUs, as advertised.
    pub(crate) gpus: Option<brume_api::wire::Gpus>,
    /// Affinity sessions' work dirs.
    pub(crate) sessions: affinity::SessionDirs,
}

/// One reserved slot (and its memory), released on drop, so an aborted
/// execution gives its capacity back too.
pub(crate) struct Reservation {
    shared: Arc<Shared>,
    memory: u64,
    /// The GPUs it holds, one bit per device index.
    gpus: u64,
}

impl Reservation {
    /// The device indices of the GPUs it holds, in order.
    pub(crate) fn gpu_indices(&self) -> Vec<u32> {
        (0..64).filter(|i| self.gpus >> i & 1 == 1).collect()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut c = self.shared.capacity.lock();
        c.slots_used = c.slots_used.saturating_sub(1);
        c.memory_used = c.memory_used.saturating_sub(self.memory);
        c.gpus_used &= !self.gpus;
    }
}

impl Shared {
    /// A slot, `memory` bytes and `gpus` GPUs of their own (the lowest
    /// free device indices), or `None` if any is short.
    pub(crate) fn reserve(self: &Arc<Self>, memory: u64, gpus: u32) -> Option<Reservation> {
        let mut c = self.capacity.lock();
        let devices = self.gpus.as_ref().map_or(0, |g| g.count.min(64));
        let mut held = 0u64;
        for i in (0..devices).filter(|i| c.gpus_used >> i & 1 == 0) {
            if held.count_ones() == gpus {
                break;
            }
            held |= 1 << i;
        }
        if c.slots_used >= self.config.slots
            || c.memory_used.saturating_add(memory) > self.config.memory_bytes
            || held.count_ones() < gpus
        {
            return None;
        }
        c.slots_used += 1;
        c.memory_used += memory;
        c.gpus_used |= held;
        Some(Reservation {
            shared: self.clone(),
            memory,
            gpus: held,
        })
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.capacity.lock().slots_used
    }

    pub(crate) fn set_connection(&self, c: Connection) {
        self.conn.send_replace(c);
    }

    /// Digests compiled in the cache or loaded in memory, without the
    /// fitness benchmark's and the broker's challenge.
    pub(crate) fn cached_digests(&self) -> Vec<String> {
        let mut all = self.sandbox.cached_digests();
        all.extend(self.programs.lock().keys().map(|(d, _)| *d));
        all.sort();
        all.dedup();
        let challenges = [
            self.challenge.compute.digest(),
            self.challenge.memory.digest(),
        ];
        all.retain(|d| *d != self.fitness_digest && !challenges.contains(d));
        all.iter().map(|d| d.to_string()).collect()
    }

    pub(crate) fn status(&self) -> ProviderStatus {
        let since = self.connected_since_ms.load(Ordering::Relaxed);
        let conn = *self.conn.borrow();
        ProviderStatus {
            address: self.address.clone(),
            broker_url: self.config.broker_url.clone(),
            connection: conn.as_str().to_owned(),
            connected_since_ms: (since != 0 && conn != Connection::Connecting).then_some(since),
            fitness_mips: self.fitness_mips,
            slots: self.config.slots,
            in_flight: self.in_flight(),
            work_done: self.work_done.load(Ordering::Relaxed),
            work_failed: self.work_failed.load(Ordering::Relaxed),
            instructions_executed: self.instructions.load(Ordering::Relaxed),
            modules_cached: self.cached_digests().len() as u64,
            uptime_s: self.started.elapsed().as_secs(),
            hub: self.hub_last.lock().clone(),
            containers: self.containers.as_ref().map(container::status),
            paused: self.paused.borrow().clone(),
        }
    }

    /// Stores a hub check (logging a failure, or a recovery) and tells the
    /// session whether it may stay.
    pub(crate) fn record_hub(&self, check: brume_api::rest::HubCheck) {
        let was = *self.hub_ok.borrow();
        if !check.ok {
            tracing::warn!(broker = %self.config.broker_url, why = %check.detail, "refusing broker: its hub wallet fails this provider's check");
        } else if !was || self.hub_last.lock().is_none() {
            tracing::info!(broker = %self.config.broker_url, found = %check.detail, "the broker's hub wallet passes");
        }
        self.hub_ok.send_replace(check.ok);
        *self.hub_last.lock() = Some(check);
    }
}

/// Starts providers.
#[derive(Debug)]
pub struct Provider;

impl Provider {
    /// Sets up identity, sandbox, fitness and control port, then spawns the
    /// connection loop (it needs a tokio runtime). Returns once the provider
    /// is ready, before the broker has answered.
    pub async fn start(mut config: ProviderConfig) -> Result<RunningProvider, ProviderError> {
        let dir = config.data_dir.clone();
        let data_err = |source| ProviderError::DataDir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(data_err)?;
        let identity = Identity::load_or_create(&dir.join("provider.key"))?;
        let address = identity.address().to_string();
        let ws_url = ws_url(&config.broker_url)?;
        config.broker_url = config.broker_url.trim_end_matches('/').to_owned();
        config.slots = config.slots.max(1);

        let sandbox = match config.sandbox.clone() {
            Some(s) => s,
            None => {
                let modules = dir.join("modules");
                std::fs::create_dir_all(&modules).map_err(data_err)?;
                Arc::new(Sandbox::new(SandboxConfig {
                    cache_dir: Some(modules),
                    max_concurrent_instances: SandboxConfig::default()
                        .max_concurrent_instances
                        .max(config.slots.saturating_add(1)),
                    ..SandboxConfig::default()
                })?)
            }
        };
        let fitness_mips = fitness::measure(&sandbox).await?;
        // Claims ten times its speed (a test fault, as the broker sees it).
        let fitness_mips = match config.fault {
            Some(Fault::InflateMips) => fitness_mips.saturating_mul(10),
            _ => fitness_mips,
        };
        let challenge =
            brume_exec::fitness::Challenges::load(&sandbox).map_err(ProviderError::Internal)?;

        let http_client = |trust: &brume_tls::Trust| -> Result<reqwest::Client, ProviderError> {
            trust
                .reqwest(reqwest::Client::builder())?
                .tcp_nodelay(true)
                .build()
                .map_err(|e| ProviderError::Internal(format!("HTTP client: {e}")))
        };
        let http = http_client(&config.tls)?;
        let lists_http = http_client(&config.tls.without_pin())?;
        let ws_tls = config.tls.ws_connector()?;
        let (conn, _) = watch::channel(Connection::Connecting);
        let containers = config
            .containers
            .then(|| container::start(&config, &address));
        let data = data::DataCache::open(
            config.data_dir.join("data"),
            config.data_cache_bytes,
            config.data_ttl,
        )
        .map_err(|e| ProviderError::Internal(format!("data cache: {e}")))?;
        let (paused, _) = watch::channel(None);
        let gpus = match config.gpus.clone() {
            Some(g) => Some(g),
            None => gpu::detect_and_time(&config.gpu_bench).await,
        };
        let sessions = affinity::SessionDirs::new(config.data_dir.join("sessions"));
        let shared = Arc::new(Shared {
            sessions,
            gpus,
            paused,
            containers,
            data: Arc::new(data),
            identity,
            address,
            sandbox,
            http,
            lists_http,
            ws_url,
            ws_tls,
            fitness_mips,
            fitness_digest: fitness::digest(),
            challenge,
            started: Instant::now(),
            programs: parking_lot::Mutex::new(HashMap::new()),
            blacklists: policy::Blacklists::new(&config.blacklist, config.blacklist_sources.len()),
            loading: parking_lot::Mutex::new(HashMap::new()),
            capacity: parking_lot::Mutex::new(Capacity::default()),
            work_done: AtomicU64::new(0),
            work_failed: AtomicU64::new(0),
            instructions: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            connected_since_ms: AtomicU64::new(0),
            conn,
            drain: CancellationToken::new(),
            stop: CancellationToken::new(),
            batch: batch::BatchRuntime::new(config.slots as usize, config.batch_priority)
                .map_err(|e| ProviderError::Internal(format!("batch runtime: {e}")))?,
            hub_last: parking_lot::Mutex::new(None),
            hub_ok: watch::channel(true).0,
            config,
        });

        if let Some(fault) = shared.config.fault {
            tracing::warn!(
                ?fault,
                "FAULT INJECTION: this provider misbehaves on purpose (a test mode)"
            );
        }
        // The lists are in force before any work can arrive.
        let lists = if shared.config.blacklist_sources.is_empty() {
            None
        } else {
            policy::load_cached(&shared);
            policy::refresh(&shared).await;
            Some(tokio::spawn(policy::refresh_loop(shared.clone())))
        };
        let (local, subscribed) = shared.blacklists.sizes();
        if local > 0 || !subscribed.is_empty() || !shared.config.require_signed_by.is_empty() {
            tracing::info!(
                blacklist = local,
                ?subscribed,
                signed_by = shared.config.require_signed_by.len(),
                "module policy"
            );
        }
        let (control_addr, control) = match control::serve(shared.clone()).await {
            Ok(c) => c,
            Err(e) => {
                if let Some(l) = lists {
                    l.abort();
                }
                return Err(e);
            }
        };
        let addr_file = dir.join("control.addr");
        if let Err(e) = write_addr_file(&addr_file, control_addr) {
            control.abort();
            if let Some(l) = lists {
                l.abort();
            }
            return Err(data_err(e));
        }
        tracing::info!(
            address = %shared.address,
            fitness_mips,
            control = %control_addr,
            broker = %shared.config.broker_url,
            "provider ready"
        );
        if let Some(req) = shared.config.hub.clone() {
            tokio::spawn(hub::watch(shared.clone(), req));
        }
        if let Some(probe) = shared.config.idle.clone() {
            tokio::spawn(idle::watch(shared.clone(), probe, shared.config.idle_every));
        }
        tokio::spawn(affinity::sweep_loop(shared.clone()));
        let main = tokio::spawn(session::run(shared.clone()));
        Ok(RunningProvider {
            shared,
            control_addr,
            addr_file,
            main,
            control,
            lists,
        })
    }
}

fn write_addr_file(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    std::fs::write(path, format!("{addr}\n"))
}

/// `http://h:p[/]` to `ws://h:p/v1/provider/connect`, `https://` to
/// `wss://`. Anything else is refused up front rather than retried
/// forever.
fn ws_url(broker: &str) -> Result<String, ProviderError> {
    let b = broker.trim_end_matches('/');
    let rest = if let Some(r) = b.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = b.strip_prefix("https://") {
        format!("wss://{r}")
    } else if b.starts_with("ws://") || b.starts_with("wss://") {
        b.to_owned()
    } else {
        return Err(ProviderError::BadBrokerUrl(broker.to_owned()));
    };
    Ok(format!("{rest}/v1/provider/connect"))
}

/// A started provider. Dropping it does not stop it: call
/// [`shutdown`](RunningProvider::shutdown) or [`drain`](RunningProvider::drain)
/// and [`wait`](RunningProvider::wait).
#[derive(Debug)]
pub struct RunningProvider {
    shared: Arc<Shared>,
    control_addr: SocketAddr,
    addr_file: PathBuf,
    main: tokio::task::JoinHandle<Result<(), ProviderError>>,
    control: tokio::task::JoinHandle<()>,
    /// The blacklist refresh, when there are subscribed lists.
    lists: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("address", &self.address)
            .field("broker", &self.config.broker_url)
            .finish_non_exhaustive()
    }
}

impl RunningProvider {
    /// The provider's `0x…` Ethereum address (EIP-55 checksummed).
    pub fn address(&self) -> String {
        self.shared.address.clone()
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    pub fn fitness_mips(&self) -> u64 {
        self.shared.fitness_mips
    }

    pub fn status(&self) -> ProviderStatus {
        self.shared.status()
    }

    /// The current connection state.
    pub fn connection(&self) -> Connection {
        *self.shared.conn.borrow()
    }

    /// Resolves when the provider is connected (the broker sent `Welcome`),
    /// at once if it is now. Also resolves if the provider stops, so a
    /// waiter never hangs on a fatal error: check [`connection`](Self::connection).
    pub async fn connected(&self) {
        let mut rx = self.shared.conn.subscribe();
        let _ = rx
            .wait_for(|c| matches!(c, Connection::Connected | Connection::Stopped))
            .await;
    }

    /// A cloneable handle for drain, shutdown and status from other tasks
    /// (e.g. a signal handler) while [`wait`](Self::wait) owns this value.
    pub fn handle(&self) -> ProviderHandle {
        ProviderHandle {
            shared: self.shared.clone(),
        }
    }

    /// Begins a graceful drain (what SIGTERM does).
    pub fn drain(&self) {
        self.shared.drain.cancel();
    }

    /// Stops now: aborts in-flight work and closes the connection.
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    /// Resolves when the provider has drained or stopped, with the fatal
    /// error if there was one.
    pub async fn wait(self) -> Result<(), ProviderError> {
        let result = match self.main.await {
            Ok(r) => r,
            Err(e) => Err(ProviderError::Internal(format!("connection task: {e}"))),
        };
        self.shared.set_connection(Connection::Stopped);
        self.control.abort();
        if let Some(l) = &self.lists {
            l.abort();
        }
        let _ = std::fs::remove_file(&self.addr_file);
        result
    }
}

/// See [`RunningProvider::handle`].
#[derive(Debug, Clone)]
pub struct ProviderHandle {
    shared: Arc<Shared>,
}

impl ProviderHandle {
    pub fn drain(&self) {
        self.shared.drain.cancel();
    }

    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    pub fn status(&self) -> ProviderStatus {
        self.shared.status()
    }

    pub fn connection(&self) -> Connection {
        *self.shared.conn.borrow()
    }

    /// Resolves at every change of the connection state, with the new one.
    pub fn watch(&self) -> watch::Receiver<Connection> {
        self.shared.conn.subscribe()
    }
}

/// Why [`read_control_addr`] or [`fetch_status`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// `data_dir/control.addr` could not be read.
    #[error("{}: {source} (no provider running with this data dir?)", path.display())]
    ReadAddr {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `data_dir/control.addr` does not hold an address.
    #[error("{}: {source}", path.display())]
    BadAddr {
        path: PathBuf,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("GET {url}: {source} (is the provider running?)")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("GET {url}: bad status body: {source}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// `GET /status` on a running provider's control port (what
/// `brume provide status` prints).
pub async fn fetch_status(control: SocketAddr) -> Result<ProviderStatus, StatusError> {
    let url = format!("http://{control}/status");
    let resp = match reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(resp) => resp,
        Err(source) => return Err(StatusError::Request { url, source }),
    };
    if !resp.status().is_success() {
        return Err(StatusError::Status {
            url,
            status: resp.status(),
        });
    }
    resp.json()
        .await
        .map_err(|source| StatusError::Body { url, source })
}

/// The control address a provider with this data dir wrote at start-up.
pub fn read_control_addr(data_dir: &Path) -> Result<SocketAddr, StatusError> {
    let path = data_dir.join("control.addr");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(StatusError::ReadAddr { path, source }),
    };
    text.trim()
        .parse()
        .map_err(|source| StatusError::BadAddr { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_become_the_connect_endpoint() {
        assert_eq!(
            ws_url("http://127.0.0.1:7700/").ok().as_deref(),
            Some("ws://127.0.0.1:7700/v1/provider/connect")
        );
        assert_eq!(
            ws_url("ws://h:1").ok().as_deref(),
            Some("ws://h:1/v1/provider/connect")
        );
        assert_eq!(
            ws_url("https://broker.example").ok().as_deref(),
            Some("wss://broker.example/v1/provider/connect")
        );
        assert_eq!(
            ws_url("wss://h:1/").ok().as_deref(),
            Some("wss://h:1/v1/provider/connect")
        );
        assert!(ws_url("127.0.0.1:7700").is_err());
        assert!(ws_url("ftp://broker.example").is_err());
    }

    #[test]
    fn control_addr_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.addr");
        let err = read_control_addr(dir.path()).err();
        assert!(
            matches!(&err, Some(StatusError::ReadAddr { path: p, .. }) if *p == path),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with(&format!("{}: ", path.display()))
                && text.ends_with(" (no provider running with this data dir?)"),
            "{text}"
        );
        std::fs::write(&path, "nonsense\n").expect("write");
        let err = read_control_addr(dir.path()).err();
        assert!(matches!(err, Some(StatusError::BadAddr { .. })), "{err:?}");
        std::fs::write(&path, "127.0.0.1:7701\n").expect("write");
        assert_eq!(
            read_control_addr(dir.path()).ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 7701)))
        );
    }
}
