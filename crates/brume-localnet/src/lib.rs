//! An in-process brume network: a real broker and real providers, started
//! as libraries in this process over one data directory, with an API key
//! (optionally bound to a funded requester account), a [`Client`] holding
//! it, and services published. `brume devnet`, the `brume bench` network
//! benchmarks and the broker's in-process tests all start theirs here.
//!
//! ```no_run
//! # async fn demo() -> Result<(), brume_localnet::LocalNetError> {
//! use brume_localnet::LocalNet;
//! let net = LocalNet::builder()
//!     .providers(2)
//!     .slots(2)
//!     .broker(|c| c.region = "devnet".into())
//!     .publish("echo", brume_api::ServiceKind::Command, bytes::Bytes::new())
//!     .start()
//!     .await?;
//! let status = net.broker().status();
//! println!("{} providers", status.providers_connected);
//! net.stop().await?;
//! # Ok(()) }
//! ```
//!
//! # Data directory
//!
//! One directory, given ([`LocalNetBuilder::data_dir`]) or a temporary one
//! the network owns and removes when it is dropped:
//! - `broker/`: the broker's data dir,
//! - `provider-{i}/`: provider `i`'s data dir,
//! - `modules/`: the artifact cache of the shared sandbox
//!   ([`LocalNetBuilder::shared_sandbox`]),
//! - `requester.key`: the requester account's key
//!   ([`LocalNetBuilder::requester_account`]).
//!
//! # Starting
//!
//! [`LocalNetBuilder::start`] starts the broker (on `127.0.0.1:0` unless a
//! [`LocalNetBuilder::broker`] tweak says otherwise), funds the requester
//! and mints the API key, starts the providers one after the other, each
//! connected (the broker sent `Welcome`) before the next starts, so each
//! runs its fitness test alone; then waits until the broker lists every
//! provider in `GET /v1/providers` and publishes the services. Every wait is on a
//! condition with a deadline ([`LocalNetBuilder::deadline`]); none sleeps
//! for a fixed time. If a step fails, whatever was started is stopped
//! before the error returns.
//!
//! # TLS
//!
//! With [`LocalNetBuilder::tls_self_signed`] the broker serves HTTPS and
//! WSS with a self-signed certificate kept in `broker/tls/`, and the
//! providers, the [`Client`] and scripted providers pin its fingerprint
//! ([`LocalNet::trust`]).
//!
//! # Runtimes
//!
//! By default every daemon runs on the caller's tokio runtime. With
//! [`LocalNetBuilder::runtime_per_daemon`] the broker and each provider get
//! a multi-threaded runtime of their own, standing in for a process of
//! their own (the benchmarks measure that way); [`LocalNet::stop`] shuts
//! them down after the daemons stop, and dropping a [`LocalNet`] shuts them
//! down in the background.
//!
//! # Scripted providers
//!
//! [`scripted::ScriptedProvider`] speaks the provider protocol itself and
//! answers each assignment as a test says: a protocol-level fake provider
//! for the broker's tests.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brume_api::ServiceKind;
use brume_broker::{Broker, BrokerConfig, BrokerError, RunningBroker};
use brume_client::{Client, ClientError};
use brume_identity::Identity;
use brume_provider::{Connection, Provider, ProviderConfig, ProviderError, RunningProvider};
use brume_sandbox::Sandbox;
use brume_tls::Trust;
use bytes::Bytes;

mod runtime;
pub mod scripted;

use runtime::DaemonRuntime;

pub use brume_provider::Fault;

/// How long [`LocalNetBuilder::start`] waits for any one condition unless
/// told otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// How often a condition without a notification (the broker's provider
/// list) is checked.
const POLL: Duration = Duration::from_millis(10);

/// Why a local network did not start, restart or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LocalNetError {
    /// The builder was given something that cannot work.
    #[error("local network: {0}")]
    Invalid(String),
    #[error("create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start the {daemon} runtime")]
    Runtime {
        daemon: String,
        #[source]
        source: std::io::Error,
    },
    /// A daemon's task panicked or its runtime went away.
    #[error("the {daemon} task")]
    Join {
        daemon: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("start the sandbox")]
    Sandbox(#[source] brume_sandbox::ExecError),
    #[error("start the broker")]
    Broker(#[source] BrokerError),
    #[error("stop the broker")]
    BrokerStop(#[source] BrokerError),
    #[error("load the requester's key")]
    RequesterKey(#[source] brume_identity::IdentityError),
    #[error("{what}")]
    Chain {
        what: &'static str,
        #[source]
        source: brume_chain::ChainError,
    },
    #[error("create an API key")]
    ApiKey(#[source] BrokerError),
    #[error("a client for the broker")]
    Client(#[source] ClientError),
    #[error("start provider {index}")]
    Provider {
        index: usize,
        #[source]
        source: ProviderError,
    },
    /// The provider stopped instead of connecting (with its fatal error,
    /// if it had one).
    #[error("provider {index} stopped before it connected")]
    ProviderStopped {
        index: usize,
        #[source]
        source: Option<ProviderError>,
    },
    #[error("stop provider {index}")]
    ProviderStop {
        index: usize,
        #[source]
        source: ProviderError,
    },
    #[error("list the broker's providers")]
    ListProviders(#[source] ClientError),
    #[error("publish {name}")]
    Publish {
        name: String,
        #[source]
        source: ClientError,
    },
    /// A condition did not hold within the deadline.
    #[error("{what}: not within {deadline:?}")]
    Timeout { what: String, deadline: Duration },
}

type BrokerTweak = Box<dyn FnOnce(&mut BrokerConfig) + Send>;
type ProviderTweak = Box<dyn Fn(usize, &mut ProviderConfig) + Send + Sync>;

/// Which sandbox the providers run in.
#[derive(Debug, Default)]
enum SandboxChoice {
    /// Each provider creates its own (in its data dir).
    #[default]
    PerProvider,
    /// One for all, created at start with its cache in `data/modules`.
    Shared,
    /// One for all, given.
    Given(Arc<Sandbox>),
}

/// Configures a [`LocalNet`]; see [`LocalNet::builder`]. Every setting is
/// optional: the default is a broker alone, on a free port over a
/// temporary directory, with an API key.
pub struct LocalNetBuilder {
    name: String,
    data_dir: Option<PathBuf>,
    broker: Vec<BrokerTweak>,
    providers: usize,
    slots: Option<u32>,
    faults: BTreeMap<usize, Fault>,
    sandbox: SandboxChoice,
    provider: Vec<ProviderTweak>,
    daemon_workers: Option<usize>,
    requester_funds: Option<u128>,
    services: Vec<(String, ServiceKind, Bytes)>,
    deadline: Duration,
    tls: bool,
    containers: bool,
}

impl fmt::Debug for LocalNetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalNetBuilder")
            .field("name", &self.name)
            .field("data_dir", &self.data_dir)
            .field("broker_tweaks", &self.broker.len())
            .field("providers", &self.providers)
            .field("slots", &self.slots)
            .field("faults", &self.faults)
            .field("sandbox", &self.sandbox)
            .field("provider_tweaks", &self.provider.len())
            .field("daemon_workers", &self.daemon_workers)
            .field("requester_funds", &self.requester_funds)
            .field(
                "services",
                &self.services.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .field("deadline", &self.deadline)
            .field("tls", &self.tls)
            .field("containers", &self.containers)
            .finish()
    }
}

impl Default for LocalNetBuilder {
    fn default() -> Self {
        LocalNetBuilder {
            name: "localnet".into(),
            data_dir: None,
            broker: Vec::new(),
            providers: 0,
            slots: None,
            faults: BTreeMap::new(),
            sandbox: SandboxChoice::default(),
            provider: Vec::new(),
            daemon_workers: None,
            requester_funds: None,
            services: Vec::new(),
            deadline: DEFAULT_DEADLINE,
            tls: false,
            containers: false,
        }
    }
}

impl LocalNetBuilder {
    /// Names the network: the API key's name, the daemon runtimes' thread
    /// names (`{name}-broker`, `{name}-provider-{i}`) and the temporary
    /// directory's prefix (`brume-{name}-`). Default `localnet`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The data directory (created if missing, kept afterwards). Default: a
    /// fresh temporary directory, removed when the [`LocalNet`] is dropped.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Changes the broker's config after the network has set `listen`
    /// (`127.0.0.1:0`) and `data_dir` (`data/broker`). Tweaks apply in the
    /// order given.
    pub fn broker(mut self, tweak: impl FnOnce(&mut BrokerConfig) + Send + 'static) -> Self {
        self.broker.push(Box::new(tweak));
        self
    }

    /// The broker serves HTTPS and WSS with a self-signed certificate
    /// (before the [`broker`](Self::broker) tweaks); everyone else pins it.
    /// Default: plain HTTP.
    pub fn tls_self_signed(mut self) -> Self {
        self.tls = true;
        self
    }

    /// How many real providers to start. Default 0.
    pub fn providers(mut self, n: usize) -> Self {
        self.providers = n;
        self
    }

    /// Slots per provider. Default: [`ProviderConfig`]'s (the core count).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Provider `index` misbehaves on purpose (the library-only fault seam
    /// of [`ProviderConfig::fault`], to test and measure verification).
    /// [`LocalNet::faulty`] lists the addresses of these providers.
    pub fn fault(mut self, index: usize, fault: Fault) -> Self {
        self.faults.insert(index, fault);
        self
    }

    /// The providers take OCI container jobs ([`ProviderConfig::containers`]:
    /// bubblewrap must be installed); [`start`](Self::start) fails if one
    /// can't. The temporary data directory is then made searchable by
    /// everyone (mode 0711), as a root provider's sandbox uid must reach
    /// its rootfs cache; a given data directory is left as it is.
    pub fn containers(mut self, on: bool) -> Self {
        self.containers = on;
        self
    }

    /// One sandbox for every provider, with its artifact cache in
    /// `data/modules` (as `brume devnet`), instead of one each.
    pub fn shared_sandbox(mut self) -> Self {
        self.sandbox = SandboxChoice::Shared;
        self
    }

    /// This sandbox for every provider.
    pub fn sandbox(mut self, sandbox: Arc<Sandbox>) -> Self {
        self.sandbox = SandboxChoice::Given(sandbox);
        self
    }

    /// Changes provider `i`'s config after the network has set its broker
    /// URL, data dir, slots, sandbox and fault. Tweaks apply in the order
    /// given.
    pub fn provider_config(
        mut self,
        tweak: impl Fn(usize, &mut ProviderConfig) + Send + Sync + 'static,
    ) -> Self {
        self.provider.push(Box::new(tweak));
        self
    }

    /// Runs the broker and each provider on a multi-threaded tokio runtime
    /// of its own with `worker_threads` workers, as if each were its own
    /// process. Default: every daemon on the caller's runtime.
    pub fn runtime_per_daemon(mut self, worker_threads: usize) -> Self {
        self.daemon_workers = Some(worker_threads.max(1));
        self
    }

    /// A requester account (`data/requester.key`, created if missing)
    /// holding at least `funds` base units from the faucet, with an escrow
    /// allowance of `funds` to the broker's payout account; the API key is
    /// bound to it. Turns the chain's faucet on (before the
    /// [`broker`](Self::broker) tweaks). Default: an API key bound to no
    /// account.
    pub fn requester_account(mut self, funds: u128) -> Self {
        self.requester_funds = Some(funds);
        self
    }

    /// Publishes `module` as service `name` once the providers are up.
    pub fn publish(mut self, name: impl Into<String>, kind: ServiceKind, module: Bytes) -> Self {
        self.services.push((name.into(), kind, module));
        self
    }

    /// How long each wait of [`start`](Self::start) may take. Default
    /// [`DEFAULT_DEADLINE`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Starts the network; see the [crate docs](crate#starting).
    pub async fn start(self) -> Result<LocalNet, LocalNetError> {
        if let Some(&index) = self.faults.keys().find(|&&i| i >= self.providers) {
            return Err(LocalNetError::Invalid(format!(
                "a fault for provider {index}, but only {} providers",
                self.providers
            )));
        }
        let (data_dir, temp) = self.open_data_dir()?;
        let broker_rt = self.daemon_runtime("broker")?;
        let mut config = BrokerConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: data_dir.join("broker"),
            ..BrokerConfig::default()
        };
        if self.requester_funds.is_some() {
            config.chain.faucet = true;
        }
        // Without funds the requester is a plain API key, which can't
        // escrow: its work runs unescrowed.
        config.chain.require_allowance = self.requester_funds.is_some();
        if self.tls {
            config.tls = Some(brume_broker::tls::TlsConfig::SelfSigned);
        }
        for tweak in self.broker {
            tweak(&mut config);
        }
        let broker = broker_rt
            .run(Broker::start(config.clone()), "broker")
            .await?
            .map_err(LocalNetError::Broker)?;
        let trust = broker
            .tls_fingerprint()
            .map(Trust::pinned)
            .unwrap_or_default();
        let funds = self.requester_funds;
        let (api_key, requester, client) =
            match account_and_key(&broker, &trust, &data_dir, &self.name, funds).await {
                Ok(k) => k,
                Err(e) => {
                    let _ = stop_broker(broker, broker_rt).await;
                    return Err(e);
                }
            };
        let mut net = LocalNet {
            name: self.name,
            data_dir,
            broker,
            broker_config: config,
            broker_rt,
            providers: Vec::new(),
            provider_rts: Vec::new(),
            faulty: Vec::new(),
            published: Vec::new(),
            api_key,
            client,
            trust,
            requester,
            sandbox: None,
            deadline: self.deadline,
            _temp: temp,
        };
        let providers = Providers {
            count: self.providers,
            slots: self.slots,
            faults: &self.faults,
            tweaks: &self.provider,
            workers: self.daemon_workers,
            containers: self.containers,
        };
        match net.complete(self.sandbox, providers, &self.services).await {
            Ok(()) => Ok(net),
            Err(e) => {
                let _ = net.stop_now().await;
                Err(e)
            }
        }
    }

    fn open_data_dir(&self) -> Result<(PathBuf, Option<tempfile::TempDir>), LocalNetError> {
        match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| LocalNetError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
                Ok((dir.clone(), None))
            }
            None => {
                let prefix = format!("brume-{}-", self.name);
                let temp =
                    tempfile::Builder::new()
                        .prefix(&prefix)
                        .tempdir()
                        .map_err(|source| LocalNetError::DataDir {
                            path: std::env::temp_dir(),
                            source,
                        })?;
                if self.containers {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = std::fs::Permissions::from_mode(0o711);
                    std::fs::set_permissions(temp.path(), mode).map_err(|source| {
                        LocalNetError::DataDir {
                            path: temp.path().to_path_buf(),
                            source,
                        }
                    })?;
                }
                Ok((temp.path().to_path_buf(), Some(temp)))
            }
        }
    }

    fn daemon_runtime(&self, daemon: &str) -> Result<DaemonRuntime, LocalNetError> {
        DaemonRuntime::new(self.daemon_workers, &format!("{}-{daemon}", self.name))
    }
}

/// The providers to start, as the builder gave them.
struct Providers<'b> {
    count: usize,
    slots: Option<u32>,
    faults: &'b BTreeMap<usize, Fault>,
    tweaks: &'b [ProviderTweak],
    workers: Option<usize>,
    containers: bool,
}

/// A running in-process network; see the [crate docs](crate).
///
/// Stop it with [`stop`](LocalNet::stop) (providers drain) or
/// [`stop_now`](LocalNet::stop_now). Dropping it without stopping leaves
/// daemons on the caller's runtime running, shuts per-daemon runtimes down
/// in the background and removes a temporary data directory.
pub struct LocalNet {
    name: String,
    data_dir: PathBuf,
    broker: RunningBroker,
    /// What the broker was started with (a restart reuses it).
    broker_config: BrokerConfig,
    broker_rt: DaemonRuntime,
    providers: Vec<RunningProvider>,
    /// One per provider with `runtime_per_daemon`, else empty.
    provider_rts: Vec<DaemonRuntime>,
    faulty: Vec<String>,
    /// The services the builder published, as the broker recorded them.
    published: Vec<brume_api::rest::ServiceInfo>,
    api_key: String,
    client: Client,
    /// What the providers and the client trust the broker by.
    trust: Trust,
    requester: Option<Identity>,
    sandbox: Option<Arc<Sandbox>>,
    deadline: Duration,
    /// Last: removed after everything else is dropped.
    _temp: Option<tempfile::TempDir>,
}

impl fmt::Debug for LocalNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalNet")
            .field("name", &self.name)
            .field("broker", &self.broker.url())
            .field("data_dir", &self.data_dir)
            .field("providers", &self.providers.len())
            .field("faulty", &self.faulty)
            .finish_non_exhaustive()
    }
}

impl LocalNet {
    pub fn builder() -> LocalNetBuilder {
        LocalNetBuilder::default()
    }

    /// The rest of `start`, once the broker is up and the API key minted.
    async fn complete(
        &mut self,
        sandbox: SandboxChoice,
        providers: Providers<'_>,
        services: &[(String, ServiceKind, Bytes)],
    ) -> Result<(), LocalNetError> {
        self.sandbox = match sandbox {
            SandboxChoice::PerProvider => None,
            SandboxChoice::Given(s) => Some(s),
            SandboxChoice::Shared => Some(Arc::new(
                Sandbox::new(brume_sandbox::SandboxConfig {
                    cache_dir: Some(self.data_dir.join("modules")),
                    ..brume_sandbox::SandboxConfig::default()
                })
                .map_err(LocalNetError::Sandbox)?,
            )),
        };
        self.start_providers(&providers).await?;
        self.wait_listed().await?;
        for (name, kind, module) in services {
            let info = self
                .client
                .publish(name, *kind, module.clone())
                .await
                .map_err(|source| LocalNetError::Publish {
                    name: name.clone(),
                    source,
                })?;
            self.published.push(info);
        }
        Ok(())
    }

    /// Starts the providers one after the other, each (with
    /// `runtime_per_daemon`) on its own runtime, and each connected before
    /// the next starts (so each runs its fitness test on a quiet machine).
    async fn start_providers(&mut self, spec: &Providers<'_>) -> Result<(), LocalNetError> {
        for index in 0..spec.count {
            let fault = spec.faults.get(&index).copied();
            let mut config = ProviderConfig {
                broker_url: self.broker.url().to_string(),
                tls: self.trust.clone(),
                data_dir: self.data_dir.join(format!("provider-{index}")),
                sandbox: self.sandbox.clone(),
                fault,
                containers: spec.containers,
                ..ProviderConfig::default()
            };
            if let Some(slots) = spec.slots {
                config.slots = slots;
            }
            for tweak in spec.tweaks {
                tweak(index, &mut config);
            }
            let wants_containers = config.containers;
            let daemon = format!("provider-{index}");
            let rt = DaemonRuntime::new(spec.workers, &format!("{}-{daemon}", self.name))?;
            let provider = rt
                .run(Provider::start(config), &daemon)
                .await?
                .map_err(|source| LocalNetError::Provider { index, source })?;
            let connected = tokio::time::timeout(self.deadline, provider.connected()).await;
            if connected.is_ok() && provider.connection() == Connection::Stopped {
                // Not part of the network: its fatal error is the answer.
                let source = rt.run(provider.wait(), &daemon).await?.err();
                return Err(LocalNetError::ProviderStopped { index, source });
            }
            let address = provider.address();
            let containers = wants_containers.then(|| provider.status().containers);
            if fault.is_some() {
                self.faulty.push(address.clone());
            }
            self.providers.push(provider);
            if rt.is_own() {
                self.provider_rts.push(rt);
            }
            connected.map_err(|_| LocalNetError::Timeout {
                what: format!("provider {index} ({address}) connects"),
                deadline: self.deadline,
            })?;
            if let Some(status) = containers {
                containers_on(index, status)?;
            }
        }
        Ok(())
    }

    /// Waits until `GET /v1/providers` lists every provider (the broker
    /// has it in its scheduler: work may go to it).
    async fn wait_listed(&self) -> Result<(), LocalNetError> {
        let wanted: Vec<String> = self
            .providers
            .iter()
            .map(|p| p.address().to_ascii_lowercase())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let listed = async {
            loop {
                let list = self
                    .client
                    .providers()
                    .await
                    .map_err(LocalNetError::ListProviders)?;
                let all = wanted.iter().all(|w| {
                    list.providers
                        .iter()
                        .any(|p| p.address.eq_ignore_ascii_case(w))
                });
                if all {
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(self.deadline, listed)
            .await
            .map_err(|_| LocalNetError::Timeout {
                what: format!("the broker lists all {} providers", wanted.len()),
                deadline: self.deadline,
            })?
    }

    /// The broker.
    pub fn broker(&self) -> &RunningBroker {
        &self.broker
    }

    /// The broker's base URL, `http://127.0.0.1:PORT` (`https://` with
    /// TLS).
    pub fn url(&self) -> &str {
        self.broker.url()
    }

    /// What the providers and the client trust the broker by: its
    /// certificate's pin with TLS, else the default.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The real providers, in start order (provider `i` has data dir
    /// `data/provider-{i}`).
    pub fn providers(&self) -> &[RunningProvider] {
        &self.providers
    }

    /// The addresses of the providers started with a [`Fault`].
    pub fn faulty(&self) -> &[String] {
        &self.faulty
    }

    /// The API key (bound to the requester account if there is one).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// How other accounts name a service the builder published:
    /// `owner~name` (its latest version). `name` itself if it wasn't.
    pub fn service_ref(&self, name: &str) -> String {
        self.published
            .iter()
            .find(|s| s.name == name)
            .map_or_else(|| name.to_string(), |s| format!("{}~{}", s.owner, s.name))
    }

    /// A client of the broker holding the API key.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The requester account, with
    /// [`requester_account`](LocalNetBuilder::requester_account).
    pub fn requester(&self) -> Option<&Identity> {
        self.requester.as_ref()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The providers' shared sandbox, if they share one.
    pub fn sandbox(&self) -> Option<&Arc<Sandbox>> {
        self.sandbox.as_ref()
    }

    /// A [`scripted::ScriptedProvider`] with a fresh identity, connected
    /// and registered with the broker.
    pub async fn scripted_provider(&self) -> scripted::ScriptedProvider {
        let slots = scripted::SLOTS;
        scripted::ScriptedProvider::connect_with_tls(
            self.url(),
            Identity::random(),
            slots,
            &self.trust,
        )
        .await
    }

    /// Stops the broker gracefully and starts a new one with the same
    /// config on the same data dir and address, so the API key, the
    /// client and the real providers (which reconnect by themselves) keep
    /// working. If the new broker does not start, the providers are
    /// stopped and the error returned.
    pub async fn restart_broker(mut self) -> Result<LocalNet, LocalNetError> {
        let addr = self.broker.addr();
        let stopped = {
            let broker = self.broker;
            broker.shutdown();
            self.broker_rt.run(broker.wait(), "broker").await
        };
        let mut config = self.broker_config.clone();
        config.listen = addr;
        let started = match stopped {
            Ok(Ok(())) => match self.broker_rt.run(Broker::start(config), "broker").await {
                Ok(started) => started.map_err(LocalNetError::Broker),
                Err(e) => Err(e),
            },
            Ok(Err(e)) => Err(LocalNetError::BrokerStop(e)),
            Err(e) => Err(e),
        };
        match started {
            Ok(broker) => {
                self.broker = broker;
                Ok(self)
            }
            Err(e) => {
                let shutdown = RunningProvider::shutdown;
                let _ = stop_providers(self.providers, self.provider_rts, shutdown).await;
                Err(e)
            }
        }
    }

    /// Drains the providers (in-flight work finishes, see
    /// [`RunningProvider::drain`]), waits for them, then stops the broker
    /// and waits for it, then shuts the per-daemon runtimes down. Every
    /// daemon is stopped even if one fails; the first failure is returned.
    pub async fn stop(self) -> Result<(), LocalNetError> {
        self.stop_with(RunningProvider::drain).await
    }

    /// As [`stop`](Self::stop), but the providers stop at once
    /// ([`RunningProvider::shutdown`]: in-flight work is aborted).
    pub async fn stop_now(self) -> Result<(), LocalNetError> {
        self.stop_with(RunningProvider::shutdown).await
    }

    async fn stop_with(self, signal: fn(&RunningProvider)) -> Result<(), LocalNetError> {
        let providers = stop_providers(self.providers, self.provider_rts, signal).await;
        let broker = stop_broker(self.broker, self.broker_rt).await;
        providers.and(broker)
    }
}

/// Fails unless a provider asked to take container jobs does.
fn containers_on(
    index: usize,
    status: Option<brume_api::rest::ContainersStatus>,
) -> Result<(), LocalNetError> {
    match status {
        Some(c) if c.enabled => Ok(()),
        other => Err(LocalNetError::Invalid(format!(
            "provider {index} can't take container jobs: {}",
            other
                .and_then(|c| c.error)
                .unwrap_or_else(|| "it reports no container runtime".into())
        ))),
    }
}

/// Mints the API key, bound to a requester account funded with `funds`
/// if there are any, and a client holding it.
async fn account_and_key(
    broker: &RunningBroker,
    trust: &Trust,
    data_dir: &Path,
    name: &str,
    funds: Option<u128>,
) -> Result<(String, Option<Identity>, Client), LocalNetError> {
    let requester = match funds {
        Some(funds) => Some(fund_requester(broker, data_dir, funds).await?),
        None => None,
    };
    let api_key = broker
        .create_api_key_for(name, requester.as_ref().map(Identity::address))
        .await
        .map_err(LocalNetError::ApiKey)?;
    let client = Client::new(broker.url(), Some(api_key.clone()))
        .and_then(|c| c.with_tls(trust))
        .map_err(LocalNetError::Client)?;
    Ok((api_key, requester, client))
}

/// Loads or creates the requester's key (`data/requester.key`), tops its
/// balance up to `funds` (from the dev chain's faucet, or from the
/// operator on an EVM devnet) and approves `funds` to the payout account.
async fn fund_requester(
    broker: &RunningBroker,
    data_dir: &Path,
    funds: u128,
) -> Result<Identity, LocalNetError> {
    let requester = Identity::load_or_create(&data_dir.join("requester.key"))
        .map_err(LocalNetError::RequesterKey)?;
    broker
        .fund_devnet_account(&requester, funds)
        .await
        .map_err(|source| LocalNetError::Chain {
            what: "fund the requester and approve its escrow",
            source,
        })?;
    Ok(requester)
}

/// Signals every provider, then waits for each (on its runtime, which is
/// then shut down). The first failure, after all have stopped.
async fn stop_providers(
    providers: Vec<RunningProvider>,
    rts: Vec<DaemonRuntime>,
    signal: fn(&RunningProvider),
) -> Result<(), LocalNetError> {
    for p in &providers {
        signal(p);
    }
    let mut first = Ok(());
    let mut rts = rts.into_iter();
    for (index, p) in providers.into_iter().enumerate() {
        let rt = rts.next().unwrap_or_default();
        let stopped = match rt.run(p.wait(), "provider").await {
            Ok(r) => r.map_err(|source| LocalNetError::ProviderStop { index, source }),
            Err(e) => Err(e),
        };
        drop(rt);
        first = first.and(stopped);
    }
    first
}

/// Stops the broker and waits for it (on its runtime, which is then shut
/// down).
async fn stop_broker(broker: RunningBroker, rt: DaemonRuntime) -> Result<(), LocalNetError> {
    broker.shutdown();
    let stopped = rt.run(broker.wait(), "broker").await;
    drop(rt);
    stopped?.map_err(LocalNetError::BrokerStop)
}
