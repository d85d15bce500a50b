//! Helpers for network tests: the real `brume broker` and `brume provide`
//! binaries as child processes, each killed when its guard drops.
//!
//! Nothing here sleeps for a fixed time: every wait is on a condition (a
//! line on stdout, a state over the REST API) with a generous deadline that
//! panics with what was seen, including the tail of the child's stderr.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brume_client::brume_api::rest::{
    JobEvent, JobInfo, JobSpec, JobState, LimitsSpec, ProviderStatus,
};
use brume_client::{Client, ServiceKind, WorkId};
use bytes::Bytes;

/// How long any one condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(25);
const STDERR_TAIL: usize = 40;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_brume")
}

/// `brume ARGS` with a hermetic environment: no user config, no `BRUME_*`
/// from the caller, logs at info.
/// `brume keys import KEY_FILE --name NAME` into the keyring `keys`,
/// sealed with the password in `pw`.
pub fn import_key(home: &Path, key_file: &Path, name: &str, keys: &Path, pw: &Path) {
    let out = command(home)
        .args(["keys", "import", "--name", name, "--json"])
        .arg(key_file)
        .arg("--keys-dir")
        .arg(keys)
        .arg("--password-file")
        .arg(pw)
        .output()
        .expect("keys import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn command(home: &Path) -> Command {
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BRUME_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// A child process whose stdout lines arrive on a channel and whose stderr
/// is drained into a ring buffer (so neither pipe ever fills). Dropping it
/// kills the process.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    exited: bool,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let t = tail.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut t = t.lock().expect("stderr tail");
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Proc {
            name: name.to_string(),
            child,
            lines,
            stderr: tail,
            stderr_reader: Some(stderr_reader),
            exited: false,
        }
    }

    /// The last lines the process wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().expect("stderr tail");
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn fail(&mut self, what: &str) -> ! {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited with {s}"),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("status unknown: {e}"),
        };
        // A process that died has closed its stderr: the reader ends at
        // EOF, so joining it collects the last words.
        if !status.contains("running") {
            let _ = self.child.wait();
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
        }
        panic!(
            "{}: {what} ({status}); stderr tail:\n{}",
            self.name,
            self.stderr_tail()
        );
    }

    /// The next stdout line that parses as a JSON object with `"event":
    /// event`, skipping others.
    pub fn wait_event(&mut self, event: &str) -> serde_json::Value {
        let end = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && v["event"] == event
                    {
                        return v;
                    }
                    seen.push(line);
                }
                Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                    "no {event:?} line within {DEADLINE:?}; stdout so far: {seen:?}"
                )),
                Err(RecvTimeoutError::Disconnected) => self.fail(&format!(
                    "stdout closed before a {event:?} line; stdout so far: {seen:?}"
                )),
            }
        }
    }

    /// SIGTERM (a graceful stop), and reap.
    pub fn terminate(&mut self) {
        if !self.exited {
            let pid = self.child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
            let status = self.child.wait().expect("wait");
            assert!(status.success(), "a graceful stop exits 0: {status}");
            self.exited = true;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `brume devnet --json` in `home` (data in `home/devnet`), once ready:
/// the process and its ready line (`broker`, `requester`, …).
pub fn devnet(home: &Path) -> (Proc, serde_json::Value) {
    let mut cmd = command(home);
    cmd.args(["devnet", "--json", "--data"])
        .arg(home.join("devnet"));
    let mut proc = Proc::spawn("devnet", cmd);
    let ready = proc.wait_event("ready");
    (proc, ready)
}

/// A job of the `cpu` service (the cpu_loop test program) running `n`
/// rounds, with room to spare in fuel and time.
pub fn cpu_job(n: u64) -> JobSpec {
    JobSpec {
        service: Some("default~cpu".into()),
        args: vec![n.to_string()],
        limits: LimitsSpec {
            fuel: Some(10_000_000_000_000),
            timeout_ms: Some(600_000),
            ..LimitsSpec::default()
        },
        ..JobSpec::default()
    }
}

/// `brume broker keys create --data DIR --name default --scope all --json`:
/// the operator's key (every scope, `admin` included).
pub fn create_api_key(home: &Path, data: &Path) -> String {
    keys_create(home, data, &["--name", "default", "--scope", "all"])
}

/// [`create_api_key`] in the PostgreSQL store at `url` (as a broker run
/// with `--ledger-store url` keeps its keys there).
pub fn create_api_key_in(home: &Path, data: &Path, url: &str) -> String {
    keys_create_env(
        home,
        data,
        &["--name", "default", "--scope", "all"],
        &[("BRUME_LEDGER_STORE", url)],
    )
}

/// `brume broker keys create --data DIR --name NAME --account ADDRESS --json`.
pub fn create_bound_key(home: &Path, data: &Path, name: &str, account: &str) -> String {
    keys_create(home, data, &["--name", name, "--account", account])
}

/// `brume broker keys create --data DIR --name NAME --json`.
pub fn create_named_key(home: &Path, data: &Path, name: &str) -> String {
    keys_create(home, data, &["--name", name])
}

/// `brume broker keys create --json --data DIR ARGS`: the new key.
pub fn keys_create(home: &Path, data: &Path, args: &[&str]) -> String {
    keys_create_env(home, data, args, &[])
}

/// [`keys_create`] with extra environment variables.
pub fn keys_create_env(home: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = command(home)
        .envs(env.iter().copied())
        .args(["broker", "keys", "create", "--json"])
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .expect("run brume broker keys create");
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "keys create: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let key = v["api_key"].as_str().expect("api_key").to_string();
    assert!(key.starts_with("brk_"), "{key}");
    key
}

/// A running `brume broker`.
pub struct Broker {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub broker_id: String,
    /// With TLS: the fingerprint of its certificate, as it printed it.
    pub tls_sha256: Option<String>,
    pub data: PathBuf,
    home: PathBuf,
    config: Option<PathBuf>,
    /// Extra `brume broker` arguments (kept for restarts).
    args: Vec<String>,
}

impl Broker {
    /// A broker on `127.0.0.1:0` with extra `brume broker` arguments.
    pub fn start_args(home: &Path, data: &Path, args: &[&str]) -> Broker {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Broker::spawn(home, data, "127.0.0.1:0", None, &[], &args)
    }

    /// A broker on `127.0.0.1:0` with `--config FILE` and extra arguments.
    pub fn start_config(home: &Path, data: &Path, config: &Path, args: &[String]) -> Broker {
        Broker::spawn(home, data, "127.0.0.1:0", Some(config), &[], args)
    }

    /// Starts a broker on `listen` (`127.0.0.1:0` for any port), with
    /// `--config FILE` if given, these environment variables and extra
    /// arguments, and waits for its ready line.
    fn spawn(
        home: &Path,
        data: &Path,
        listen: &str,
        config: Option<&Path>,
        env: &[(&str, &str)],
        args: &[String],
    ) -> Broker {
        let mut cmd = command(home);
        cmd.envs(env.iter().copied());
        cmd.arg("--config").arg(test_config(home, data, config));
        cmd.args([
            "broker",
            "--json",
            "--heartbeat",
            "200ms",
            "--listen",
            listen,
        ])
        .arg("--data")
        .arg(data)
        .args(args);
        let mut proc = Proc::spawn("broker", cmd);
        let ready = proc.wait_event("ready");
        let url = ready["url"].as_str().expect("url").to_string();
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url");
        let written = std::fs::read_to_string(data.join("broker.url")).expect("broker.url");
        assert_eq!(written.trim(), url, "broker.url names the listening URL");
        Broker {
            proc,
            url,
            port,
            broker_id: ready["broker_id"].as_str().expect("broker_id").to_string(),
            tls_sha256: ready["tls_sha256"].as_str().map(str::to_string),
            data: data.to_path_buf(),
            home: home.to_path_buf(),
            config: config.map(Path::to_path_buf),
            args: args.to_vec(),
        }
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// A new broker process on the same port and data dir.
    pub fn restart(&mut self) {
        self.restart_env(&[]);
    }

    /// A graceful stop (SIGTERM), then a new broker process on the same
    /// port and data dir.
    pub fn restart_gracefully(&mut self) {
        self.proc.terminate();
        self.restart_env(&[]);
    }

    /// [`Broker::restart`] with extra environment variables.
    pub fn restart_env(&mut self, env: &[(&str, &str)]) {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port);
        let config = self.config.as_deref();
        let again = Broker::spawn(&self.home, &self.data, &listen, config, env, &self.args);
        assert_eq!(again.url, self.url, "restarted on the same URL");
        assert_eq!(
            again.broker_id, self.broker_id,
            "same identity after restart"
        );
        *self = again;
    }
}

/// The broker's config for a test: `config`'s, with `[broker.chain]
/// require_allowance = false` unless it says otherwise, since most tests
/// pay with the plain API key `default` (which can't escrow; the escrow
/// tests turn it on). Written next to the data dir.
fn test_config(home: &Path, data: &Path, config: Option<&Path>) -> PathBuf {
    let text = config
        .map(|c| std::fs::read_to_string(c).expect("read the broker config"))
        .unwrap_or_default();
    let mut table: toml::Table = text.parse().expect("a TOML broker config");
    let chain = table
        .entry("broker")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[broker] is a table")
        .entry("chain")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[broker.chain] is a table");
    chain
        .entry("require_allowance")
        .or_insert(toml::Value::Boolean(false));
    let name = data
        .file_name()
        .map_or("broker".into(), |n| n.to_string_lossy().into_owned());
    let path = home.join(format!("{name}.test.toml"));
    std::fs::write(&path, table.to_string()).expect("write the broker config");
    path
}

/// A running `brume provide`, connected.
pub struct Provider {
    pub proc: Proc,
    pub address: String,
    pub data: PathBuf,
    home: PathBuf,
}

impl Provider {
    /// Starts a provider (with extra `brume provide` arguments) and waits
    /// until it says it is connected.
    pub fn start_args(
        home: &Path,
        data: &Path,
        broker_url: &str,
        slots: u32,
        extra: &[&str],
    ) -> Provider {
        let mut p = Provider::spawn(home, data, broker_url, slots, extra);
        p.proc.wait_event("connected");
        p
    }

    /// Starts a provider and waits only for its ready line (the broker may
    /// be down, or the provider may refuse it).
    pub fn spawn(
        home: &Path,
        data: &Path,
        broker_url: &str,
        slots: u32,
        extra: &[&str],
    ) -> Provider {
        let mut cmd = command(home);
        cmd.args(["provide", "--json", "--broker", broker_url])
            .args(extra)
            .args(["--slots", &slots.to_string()])
            .arg("--data")
            .arg(data);
        let name = format!(
            "provider {}",
            data.file_name().unwrap_or_default().to_string_lossy()
        );
        let mut proc = Proc::spawn(&name, cmd);
        let ready = proc.wait_event("ready");
        let address = ready["address"].as_str().expect("address").to_string();
        assert!(address.starts_with("0x"), "{address}");
        proc.name = format!("{name} ({address})");
        Provider {
            proc,
            address,
            data: data.to_path_buf(),
            home: home.to_path_buf(),
        }
    }

    /// `brume provide status --data DIR --json`.
    pub fn status(&self) -> ProviderStatus {
        let out = command(&self.home)
            .args(["provide", "status", "--json", "--data"])
            .arg(&self.data)
            .output()
            .expect("run brume provide status");
        assert!(
            out.status.success(),
            "provide status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "provide status: not a ProviderStatus ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

/// One broker, its API key, a client, and some providers, all under one
/// temp dir (which is also `HOME` for every child).
pub struct Net {
    pub providers: Vec<Provider>,
    pub broker: Broker,
    pub key: String,
    pub named_keys: Vec<String>,
    pub client: Client,
    next_provider: usize,
    // Last: children die before their directories go.
    pub tmp: tempfile::TempDir,
}

impl Net {
    /// A broker with `providers` providers of `slots` slots each, all
    /// connected and registered.
    pub async fn start(providers: usize, slots: u32) -> Net {
        Net::start_with(providers, slots, None, &[]).await
    }

    /// [`Net::start`] with a broker config file of this TOML text, and
    /// API keys with these names besides `default` (in `named_keys`, in
    /// order), created before the broker starts.
    pub async fn start_with(
        providers: usize,
        slots: u32,
        config: Option<&str>,
        key_names: &[&str],
    ) -> Net {
        Net::start_full(providers, slots, config, key_names, &[]).await
    }

    /// [`Net::start`] with a broker serving HTTPS and WSS with a
    /// self-signed certificate (`--tls-self-signed`), which the client and
    /// the providers pin; API keys as [`Net::start_with`].
    pub async fn start_tls(providers: usize, slots: u32, key_names: &[&str]) -> Net {
        Net::start_full(providers, slots, None, key_names, &["--tls-self-signed"]).await
    }

    /// [`Net::start`] with a broker config file of this TOML text and
    /// extra `brume broker` arguments.
    pub async fn start_with_args(
        providers: usize,
        slots: u32,
        config: Option<&str>,
        broker_args: &[&str],
    ) -> Net {
        Net::start_full(providers, slots, config, &[], broker_args).await
    }

    async fn start_full(
        providers: usize,
        slots: u32,
        config: Option<&str>,
        key_names: &[&str],
        broker_args: &[&str],
    ) -> Net {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().to_path_buf();
        let data = root.join("broker");
        // The key goes where the broker keeps its store.
        let key = match broker_args.windows(2).find(|w| w[0] == "--ledger-store") {
            Some(w) => create_api_key_in(&root, &data, w[1]),
            None => create_api_key(&root, &data),
        };
        let named_keys = key_names
            .iter()
            .map(|n| match n.split_once('=') {
                Some((name, account)) => create_bound_key(&root, &data, name, account),
                None => create_named_key(&root, &data, n),
            })
            .collect();
        let config_path = config.map(|text| {
            let p = root.join("broker.toml");
            std::fs::write(&p, text).expect("write broker.toml");
            p
        });
        let args: Vec<String> = broker_args.iter().map(|a| a.to_string()).collect();
        let broker = Broker::spawn(
            &root,
            &data,
            "127.0.0.1:0",
            config_path.as_deref(),
            &[],
            &args,
        );
        let client = Client::new(&broker.url, Some(key.clone())).expect("client");
        let client = match &broker.tls_sha256 {
            Some(pin) => {
                let pin = pin.parse().expect("a fingerprint");
                client
                    .with_tls(&brume_client::Trust::pinned(pin))
                    .expect("TLS")
            }
            None => client,
        };
        let mut net = Net {
            providers: Vec::new(),
            broker,
            key,
            named_keys,
            client,
            next_provider: 0,
            tmp,
        };
        for _ in 0..providers {
            net.add_provider(slots).await;
        }
        net
    }

    pub fn home(&self) -> &Path {
        self.tmp.path()
    }

    /// Starts one more provider and waits until the broker lists it.
    pub async fn add_provider(&mut self, slots: u32) -> usize {
        self.add_provider_args(slots, &[]).await
    }

    /// The data dir the next provider will get (to prepare its key).
    pub fn next_provider_dir(&self) -> PathBuf {
        self.tmp
            .path()
            .join(format!("provider-{}", self.next_provider))
    }

    /// [`Net::add_provider`] with extra `brume provide` arguments.
    pub async fn add_provider_args(&mut self, slots: u32, extra: &[&str]) -> usize {
        let data = self.next_provider_dir();
        self.next_provider += 1;
        let mut args: Vec<&str> = extra.to_vec();
        if let Some(pin) = &self.broker.tls_sha256 {
            args.extend(["--pin-sha256", pin]);
        }
        let p = Provider::start_args(self.tmp.path(), &data, &self.broker.url, slots, &args);
        let address = p.address.clone();
        self.providers.push(p);
        let client = self.client.clone();
        eventually(&format!("the broker lists provider {address}"), || {
            let client = client.clone();
            let address = address.clone();
            async move {
                let list = client.providers().await.ok()?;
                list.providers
                    .iter()
                    .any(|p| p.address == address)
                    .then_some(())
            }
        })
        .await;
        self.providers.len() - 1
    }

    /// A provider that may not join (not waited for): started with extra
    /// `brume provide` arguments, ready but perhaps never connected.
    pub fn spawn_provider_args(&mut self, slots: u32, extra: &[&str]) -> Provider {
        let data = self.next_provider_dir();
        self.next_provider += 1;
        Provider::spawn(self.tmp.path(), &data, &self.broker.url, slots, extra)
    }

    /// The index of the provider with this address.
    pub fn provider_index(&self, address: &str) -> usize {
        self.providers
            .iter()
            .position(|p| p.address == address)
            .unwrap_or_else(|| panic!("no provider {address} in this network"))
    }

    pub async fn publish(&self, name: &str, kind: ServiceKind, module: &[u8]) {
        self.client
            .publish(name, kind, Bytes::copy_from_slice(module))
            .await
            .unwrap_or_else(|e| panic!("publish {name}: {e}"));
    }

    /// A plain reqwest client and the base URL, for requests the typed
    /// client would never send.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.broker.url)
    }

    /// Waits until the job is in `state`; returns its info.
    pub async fn wait_state(&self, id: WorkId, state: JobState) -> JobInfo {
        wait_job(&self.client, id, |j| j.state == state, state.as_str()).await
    }

    /// SIGKILLs the provider that `running` (a job's info) names; returns
    /// its address.
    pub fn kill_provider_of(&mut self, running: &JobInfo) -> String {
        let victim = running
            .provider
            .clone()
            .expect("a running job names its provider");
        let i = self.provider_index(&victim);
        self.providers[i].kill();
        victim
    }

    /// Publishes `cpu`, starts a long job, and SIGKILLs the provider running
    /// it once it runs (2-provider nets): (the job, the victim's address,
    /// the survivor's).
    pub async fn long_job_losing_its_provider(&mut self) -> (JobInfo, String, String) {
        self.publish(
            "cpu",
            ServiceKind::Command,
            test_programs_artifacts::CPU_LOOP_P1_BYTES,
        )
        .await;
        let job = self
            .client
            .submit(&cpu_job(1_000_000_000))
            .await
            .expect("submit");
        let running = self.wait_state(job.id, JobState::Running).await;
        let victim = self.kill_provider_of(&running);
        let survivor = self.other_provider(&victim);
        (job, victim, survivor)
    }

    /// The address of the one provider that is not `dead` (2-provider nets).
    pub fn other_provider(&self, dead: &str) -> String {
        self.providers[1 - self.provider_index(dead)]
            .address
            .clone()
    }
}

/// Polls `f` until it yields `Some`, or panics after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls a job until `ok` holds for its info.
pub async fn wait_job(
    client: &Client,
    id: WorkId,
    mut ok: impl FnMut(&JobInfo) -> bool,
    what: &str,
) -> JobInfo {
    let end = Instant::now() + DEADLINE;
    loop {
        let last = match client.job(id).await {
            Ok(info) if ok(&info) => return info,
            Ok(info) => {
                assert!(
                    !info.state.is_final(),
                    "job {id} ended before it was {what}: {info:?}"
                );
                format!("{info:?}")
            }
            Err(e) => format!("error: {e}"),
        };
        assert!(
            Instant::now() < end,
            "job {id} not {what} within {DEADLINE:?}; last seen: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Follows a job's events to the end over SSE (resuming a stream that
/// breaks, e.g. across a broker restart) and returns them with the result.
/// Every event is checked to be numbered in order.
pub async fn follow(
    client: &Client,
    id: WorkId,
) -> (Vec<JobEvent>, brume_client::brume_api::rest::JobResult) {
    use futures_util::StreamExt;
    let end = Instant::now() + DEADLINE;
    let mut events: Vec<JobEvent> = Vec::new();
    let mut trouble: Vec<String> = Vec::new();
    'outer: loop {
        assert!(
            Instant::now() < end,
            "job {id}: no final event within {DEADLINE:?}; events {:?}; trouble {trouble:?}",
            events.iter().map(|e| e.kind).collect::<Vec<_>>()
        );
        let after = events.last().map(|e| e.seq);
        let mut stream = match client.events_after(id, after).await {
            Ok(s) => s,
            Err(e) => {
                trouble.push(format!("open: {e}"));
                tokio::time::sleep(POLL * 4).await;
                continue;
            }
        };
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Err(_) => continue 'outer,
                Ok(None) => {
                    trouble.push("stream ended".into());
                    tokio::time::sleep(POLL * 4).await;
                    continue 'outer;
                }
                Ok(Some(Err(e))) => {
                    trouble.push(format!("stream: {e}"));
                    tokio::time::sleep(POLL * 4).await;
                    continue 'outer;
                }
                Ok(Some(Ok(ev))) => {
                    assert_eq!(
                        ev.seq,
                        events.len() as u64,
                        "job {id}: events out of order: {events:?} then {ev:?}"
                    );
                    let last = ev.kind.is_final();
                    events.push(ev);
                    if last {
                        break 'outer;
                    }
                }
            }
        }
    }
    // The result is stored with the final event; allow a moment anyway.
    let result = eventually(&format!("job {id} has a result"), || async {
        client.result(id).await.ok()
    })
    .await;
    (events, result)
}

/// What `cpu_loop N` prints (the guest's xorshift mix, computed here).
pub fn cpu_loop_output(n: u64) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    format!("{x}\n")
}
