//! `brume broker`: run a broker; `brume broker keys create|list|revoke`: manage
//! API keys; `brume broker accounts create`: console accounts; `brume broker openapi`: print the HTTP API's document; `brume broker providers approve|suspend|ban|list`: the
//! operator's word on providers. Both work on the data dir, whether or not
//! the broker is running (a running broker applies provider changes within
//! a second).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use brume_broker::tls::TlsConfig;
use brume_broker::{Broker, BrokerConfig};
use serde_json::json;

use crate::config::BrokerSection;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BrokerArgs {
    #[command(subcommand)]
    command: Option<BrokerCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum BrokerCommand {
    /// Manage the API keys requesters authenticate with.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Approve, suspend or ban provider addresses, and list them. A running
    /// broker closes the session of a suspended or banned provider and
    /// refuses its reconnects (close code 4005, with the reason).
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Mint AWS Lambda credentials (for `aws lambda invoke
    /// --endpoint-url`): an access key id and a secret, shown once; the
    /// secret is derived from the broker's master key, never stored.
    #[command(subcommand)]
    LambdaKeys(LambdaKeysCommand),
    /// Console accounts: an email and a password (Argon2id), mapped to an
    /// account address.
    #[command(subcommand)]
    Accounts(crate::accounts::AccountsCommand),
    /// Print the OpenAPI 3.1 document of a broker with the default config
    /// (a broker's `GET /openapi.json` names its own tiers and limits),
    /// e.g. to generate a client.
    Openapi,
    /// Create or upgrade the ledger's and the settlement journal's tables
    /// in a PostgreSQL database, as their owner, and grant a broker's role
    /// what it needs (read and add ledger rows, set their statuses, never
    /// change a row; read and write the journal).
    LedgerSetup(LedgerSetupArgs),
}

#[derive(Debug, clap::Args)]
struct LedgerSetupArgs {
    /// The database, as the role that owns (or will own) the tables.
    #[arg(long, value_parser = brume_pg::url_arg)]
    owner: String,
    /// The role the broker connects as (letters, digits and _).
    #[arg(long)]
    grant: Option<String>,
}

/// `brume broker ledger-setup`: migrations as the owner, then the grants.
async fn ledger_setup(a: LedgerSetupArgs) -> ExitCode {
    use brume_ledger::store::postgres::PgStore;
    let done = async {
        drop(PgStore::open(&a.owner).await.map_err(|e| e.to_string())?);
        if let Some(role) = &a.grant {
            PgStore::grant(&a.owner, role)
                .await
                .map_err(|e| e.to_string())?;
        }
        brume_settle::setup_postgres(&a.owner, a.grant.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        brume_broker::store::postgres::setup(&a.owner, a.grant.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match done.await {
        Ok(()) => {
            match &a.grant {
                Some(role) => println!(
                    "the ledger's, the journal's and the broker's tables are current; \
                     {role} may use them"
                ),
                None => println!("the ledger's, the journal's and the broker's tables are current"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: ledger-setup: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum LambdaKeysCommand {
    /// A credential for ACCOUNT (an address, or an API key's label): its
    /// calls run and are billed as that account's.
    Create {
        #[arg(long)]
        account: String,
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Every credential: key id, account, created, revoked (never secrets).
    List {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential: a running broker refuses its next signature.
    Revoke {
        key_id: String,
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ProvidersCommand {
    /// Record an address as operator-approved (tier 2; lifts a suspension).
    Approve(Standing),
    /// Disconnect an address and refuse it until it is approved.
    Suspend(Standing),
    /// Disconnect an address and refuse it for good.
    Ban(Standing),
    /// The reviewed addresses and every ban (with its reason).
    List {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct Standing {
    /// The provider's address (0x + 40 hex digits).
    address: brume_chain::Address,
    /// Why (shown to the provider when it is refused).
    #[arg(long, default_value = "by the operator")]
    reason: String,
    #[arg(long, env = "BRUME_DATA_DIR")]
    data: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Mint a key. It is printed once; only its hash is stored.
    Create {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        /// A label for the key (who or what uses it).
        #[arg(long, default_value = "default")]
        name: String,
        /// Bind the key to an account address (0x + 40 hex digits): the
        /// ledger then names the address, not the label, as the requester
        /// (and developer), and the address's escrow pays for its work.
        #[arg(long, value_name = "0xADDRESS")]
        account: Option<brume_chain::Address>,
        /// What the key may do: a comma-separated list of invoke, jobs,
        /// publish, read and admin, or `all`.
        #[arg(
            long,
            value_name = "SCOPES",
            default_value = "invoke,jobs,publish,read"
        )]
        scope: String,
        /// How long the key works (e.g. `30d`, `12h`); default: until
        /// revoked.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        expires_in: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (ids, labels, scopes and times; never the keys).
    List {
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (as `list` shows it). A broker running on
    /// the data dir is told, and refuses the key before this returns.
    Revoke {
        /// The key's id.
        id: String,
        #[arg(long, env = "BRUME_DATA_DIR")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "BRUME_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory: database, modules, the broker's key.
    #[arg(long, env = "BRUME_DATA_DIR")]
    data: Option<PathBuf>,
    #[arg(long, env = "BRUME_REGION")]
    region: Option<String>,
    #[arg(long, env = "BRUME_LATITUDE", allow_hyphen_values = true)]
    latitude: Option<f64>,
    #[arg(long, env = "BRUME_LONGITUDE", allow_hyphen_values = true)]
    longitude: Option<f64>,
    /// Heartbeat interval with providers (silent for 3 intervals = gone).
    #[arg(long, env = "BRUME_HEARTBEAT", value_parser = humantime::parse_duration)]
    heartbeat: Option<Duration>,
    /// How long a provider has to acknowledge an assignment.
    #[arg(long, env = "BRUME_ACK_TIMEOUT", value_parser = humantime::parse_duration)]
    ack_timeout: Option<Duration>,
    /// Serve HTTPS and WSS with this certificate chain (PEM, leaf first),
    /// with --tls-key.
    #[arg(
        long,
        env = "BRUME_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "BRUME_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS and WSS with a self-signed certificate (for localhost,
    /// 127.0.0.1, ::1 and the listen address), made once and kept in
    /// DATA/tls. Its SHA-256 fingerprint is printed: clients pin it with
    /// --pin-sha256.
    #[arg(long)]
    tls_self_signed: bool,
    /// Keep the ledger in PostgreSQL at this `postgres://` URL (over
    /// `[broker.ledger] store`; the environment keeps a password out of
    /// the config file).
    #[arg(long, env = "BRUME_LEDGER_STORE", value_parser = brume_pg::url_arg)]
    ledger_store: Option<String>,
    #[command(flatten)]
    federation: FederationArgs,
    /// Print machine-readable JSON lines.
    #[arg(long)]
    json: bool,
}

/// Federation with other brokers: any of these (or `[broker.federation]`)
/// turns it on.
#[derive(Debug, clap::Args)]
struct FederationArgs {
    /// Listen for peer brokers on this libp2p multiaddr
    /// (`/ip4/0.0.0.0/tcp/7701`; port 0: any); repeatable.
    #[arg(long = "p2p-listen", env = "BRUME_P2P_LISTEN", value_delimiter = ',')]
    p2p_listen: Vec<String>,
    /// A bootstrap peer (`/ip4/10.0.0.2/tcp/7701/p2p/12D3KooW…`, as a
    /// broker prints it); repeatable.
    #[arg(long = "peer", env = "BRUME_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// How often this broker announces itself.
    #[arg(long, value_parser = humantime::parse_duration)]
    announce_every: Option<Duration>,
    /// How long peers keep an announcement without a refresh.
    #[arg(long, value_parser = humantime::parse_duration)]
    announce_ttl: Option<Duration>,
    /// The API's URL as peers and clients reach it (default: the URL
    /// served).
    #[arg(long, env = "BRUME_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Don't forward calls this broker can't place to a peer.
    #[arg(long)]
    no_forward: bool,
}

/// The federation settings from flags over `[broker.federation]`; `None`
/// when neither asks for it.
fn federation(
    a: FederationArgs,
    file: Option<&crate::config::FederationSection>,
    data: &std::path::Path,
) -> Result<Option<brume_broker::federation::FederationSettings>, String> {
    if file.is_none() && a.p2p_listen.is_empty() && a.peers.is_empty() {
        return Ok(None);
    }
    let file = file.cloned().unwrap_or_default();
    let addrs = |list: Vec<String>, what: &str| {
        list.iter()
            .map(|t| {
                t.parse::<brume_federation::Multiaddr>()
                    .map_err(|e| format!("{what} {t:?}: not a multiaddr ({e})"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut s = brume_broker::federation::FederationSettings::default();
    let listen = if a.p2p_listen.is_empty() {
        file.listen.unwrap_or_default()
    } else {
        a.p2p_listen
    };
    if !listen.is_empty() {
        s.p2p.listen = addrs(listen, "--p2p-listen")?;
    }
    let peers = if a.peers.is_empty() {
        file.peers
    } else {
        a.peers
    };
    s.p2p.peers = addrs(peers, "--peer")?;
    if let Some(d) = a
        .announce_every
        .or(file.announce_every_ms.map(Duration::from_millis))
    {
        s.p2p.announce_every = d;
    }
    if let Some(d) = a
        .announce_ttl
        .or(file.announce_ttl_ms.map(Duration::from_millis))
    {
        s.p2p.ttl = d;
    }
    s.p2p.key_file = data.join("p2p.key");
    s.advertise_url = a.advertise_url.or(file.advertise_url);
    s.forward = !a.no_forward && file.forward.unwrap_or(true);
    if let Some(t) = file.forward_ttl {
        s.forward_ttl = t;
    }
    Ok(Some(s))
}

pub(crate) fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/brume/broker"),
        None => PathBuf::from("brume-broker"),
    }
}

pub async fn main(args: BrokerArgs, file: &BrokerSection) -> ExitCode {
    match args.command {
        Some(BrokerCommand::Keys(k)) => keys(k, file).await,
        Some(BrokerCommand::Providers(p)) => providers(p, file).await,
        Some(BrokerCommand::Accounts(cmd)) => crate::accounts::main(cmd, file).await,
        Some(BrokerCommand::Openapi) => {
            print!("{}", brume_broker::openapi::default_json());
            ExitCode::SUCCESS
        }
        Some(BrokerCommand::LambdaKeys(cmd)) => lambda_keys(cmd, file).await,
        Some(BrokerCommand::LedgerSetup(a)) => ledger_setup(a).await,
        None => run(args.run, file).await,
    }
}

/// The data dir a subcommand works on: `--data`, else the config's,
/// else the default.
fn data_dir(flag: Option<PathBuf>, file: &BrokerSection) -> PathBuf {
    flag.or_else(|| file.data_dir.clone())
        .unwrap_or_else(default_data_dir)
}

/// The store of the broker on `dir`, for a command run beside it:
/// PostgreSQL when its ledger is there (`BRUME_LEDGER_STORE`, else
/// `[broker.ledger] store`), else `DATA/broker.db`.
pub(crate) async fn open_store(
    dir: &std::path::Path,
    file: &BrokerSection,
) -> Result<brume_broker::store::Store, brume_broker::StoreError> {
    let env = std::env::var("BRUME_LEDGER_STORE").ok();
    let ledger = env
        .filter(|s| !s.is_empty())
        .or_else(|| file.ledger.as_ref().map(|l| l.store.clone()));
    brume_broker::store::Store::open_beside(dir, ledger.as_deref()).await
}

/// `brume broker lambda-keys create|list|revoke`.
async fn lambda_keys(cmd: LambdaKeysCommand, file: &BrokerSection) -> ExitCode {
    use brume_broker::lambda::creds;
    let data = match &cmd {
        LambdaKeysCommand::Create { data, .. }
        | LambdaKeysCommand::List { data, .. }
        | LambdaKeysCommand::Revoke { data, .. } => data_dir(data.clone(), file),
    };
    let store = match open_store(&data, file).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = match cmd {
        LambdaKeysCommand::Create { account, json, .. } => creds::mint(&data, &store, &account)
            .await
            .map(|(key_id, secret)| {
                if json {
                    println!(
                        "{}",
                        json!({"access_key_id": key_id, "secret_access_key": secret, "account": account})
                    );
                } else {
                    println!("AWS_ACCESS_KEY_ID={key_id}");
                    println!("AWS_SECRET_ACCESS_KEY={secret}");
                    println!("(for account {account}; the secret is shown once)");
                }
            })
            .map_err(|e| e.to_string()),
        LambdaKeysCommand::List { json, .. } => creds::list(&store)
            .await
            .map(|keys| {
                for k in &keys {
                    if json {
                        println!("{}", json!(k));
                    } else {
                        let state = if k.revoked_at_ms.is_some() {
                            "revoked"
                        } else {
                            "live"
                        };
                        println!("{}  {}  {state}", k.key_id, k.account);
                    }
                }
            })
            .map_err(|e| e.to_string()),
        LambdaKeysCommand::Revoke { key_id, .. } => {
            match creds::revoke(&store, &key_id).await {
                Ok(true) => {
                    println!("revoked {key_id}");
                    Ok(())
                }
                Ok(false) => Err(format!("no live Lambda credential {key_id}")),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn keys(cmd: KeysCommand, file: &BrokerSection) -> ExitCode {
    let data_of = |d: Option<PathBuf>| data_dir(d, file);
    let result = match cmd {
        KeysCommand::Create {
            data,
            name,
            account,
            scope,
            expires_in,
            json,
        } => {
            create_key(
                &data_of(data),
                file,
                &name,
                account,
                &scope,
                expires_in,
                json,
            )
            .await
        }
        KeysCommand::List { data, json } => list_keys(&data_of(data), file, json).await,
        KeysCommand::Revoke { id, data, json } => revoke_key(&data_of(data), file, &id, json).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::report(&e));
            ExitCode::FAILURE
        }
    }
}

fn key_json(k: &brume_broker::store::keys::KeyInfo) -> serde_json::Value {
    json!({
        "id": k.id,
        "name": k.name,
        "account": k.account,
        "scopes": k.scopes,
        "created_at_ms": k.created_at_ms,
        "expires_at_ms": k.expires_at_ms,
        "revoked_at_ms": k.revoked_at_ms,
    })
}

async fn create_key(
    dir: &std::path::Path,
    file: &BrokerSection,
    name: &str,
    account: Option<brume_chain::Address>,
    scope: &str,
    expires_in: Option<Duration>,
    json: bool,
) -> anyhow::Result<()> {
    use brume_broker::store::keys::{NewKey, Scope};
    let scopes = if scope.trim() == "all" {
        Scope::ALL.to_vec()
    } else {
        Scope::parse_list(scope)?
    };
    anyhow::ensure!(!scopes.is_empty(), "--scope: at least one scope");
    let new = NewKey {
        name: name.to_string(),
        account: account.map(|a| a.to_string()),
        scopes: scopes.clone(),
        expires_at_ms: expires_in.map(|d| now_ms() + d.as_millis() as u64),
    };
    let store = open_store(dir, file).await?;
    let made = new.clone();
    let token = store
        .write(move |c| brume_broker::store::keys::create(c, &made))
        .await?;
    if json {
        let id = brume_broker::store::keys::id_of(&brume_broker::store::keys::hash(&token));
        println!(
            "{}",
            json!({"api_key": token, "id": id, "name": name, "account": new.account,
                   "scopes": scopes, "expires_at_ms": new.expires_at_ms})
        );
    } else {
        println!("{token}");
        eprintln!(
            "API key {name:?} ({}) created in {}; it is shown only once.",
            Scope::join(&scopes),
            dir.display()
        );
    }
    Ok(())
}

async fn list_keys(dir: &std::path::Path, file: &BrokerSection, json: bool) -> anyhow::Result<()> {
    let store = open_store(dir, file).await?;
    let keys = store.read(brume_broker::store::keys::list).await?;
    if json {
        let keys: Vec<_> = keys.iter().map(key_json).collect();
        println!("{}", json!({ "keys": keys }));
        return Ok(());
    }
    for k in keys {
        let state = match (k.revoked_at_ms, k.expires_at_ms) {
            (Some(t), _) => format!("revoked {t}"),
            (None, Some(t)) if t <= now_ms() => format!("expired {t}"),
            (None, Some(t)) => format!("expires {t}"),
            (None, None) => "live".to_string(),
        };
        println!(
            "{}\t{}\t{}\t{}\tcreated {}\t{state}",
            k.id,
            k.name,
            k.account.as_deref().unwrap_or("-"),
            brume_broker::store::keys::Scope::join(&k.scopes),
            k.created_at_ms
        );
    }
    Ok(())
}

/// Revokes in the database, then tells a broker running on `dir` (through
/// its control token), so that it refuses the key from now on.
async fn revoke_key(
    dir: &std::path::Path,
    file: &BrokerSection,
    id: &str,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_store(dir, file).await?;
    let i = id.to_string();
    let key = store
        .write(move |c| brume_broker::store::keys::revoke(c, &i))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no key {id} in {}", dir.display()))?;
    let told = tell_running_broker(dir, id).await;
    if json {
        let mut v = key_json(&key);
        v["running_broker_told"] = json!(told.is_ok());
        println!("{v}");
    } else {
        eprintln!("key {id} ({}) revoked", key.name);
    }
    match told {
        Ok(true) => eprintln!("the running broker refuses it now"),
        Ok(false) => eprintln!(
            "no broker is running on {}; it will refuse the key",
            dir.display()
        ),
        Err(e) => anyhow::bail!(
            "the key is revoked in {}, but the broker running on it could not be told ({}): \
             restart it to be sure it refuses the key",
            dir.display(),
            crate::report(&e)
        ),
    }
    Ok(())
}

/// Where `brume broker` serves TLS from: the flags, else the config file.
fn tls_config(a: &RunArgs, file: &BrokerSection) -> Result<Option<TlsConfig>, String> {
    if a.tls_self_signed {
        return Ok(Some(TlsConfig::SelfSigned));
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        let (cert, key) = (cert.clone(), key.clone());
        return Ok(Some(TlsConfig::Files { cert, key }));
    }
    let self_signed = file.tls_self_signed.unwrap_or(false);
    match (&file.tls_cert, &file.tls_key) {
        (Some(_), _) | (_, Some(_)) if self_signed => {
            Err("config [broker]: tls_self_signed or tls_cert/tls_key, not both".into())
        }
        (Some(cert), Some(key)) => Ok(Some(TlsConfig::Files {
            cert: cert.clone(),
            key: key.clone(),
        })),
        (None, None) => Ok(self_signed.then_some(TlsConfig::SelfSigned)),
        _ => Err("config [broker]: tls_cert and tls_key go together".into()),
    }
}

/// `Ok(true)`: the broker running on `dir` dropped key `id`; `Ok(false)`:
/// none runs there. Over TLS, the broker is pinned by the fingerprint it
/// wrote in `dir`.
async fn tell_running_broker(dir: &std::path::Path, id: &str) -> anyhow::Result<bool> {
    let (Ok(url), Ok(token)) = (
        std::fs::read_to_string(dir.join("broker.url")),
        std::fs::read_to_string(dir.join(brume_broker::keys::CONTROL_TOKEN_FILE)),
    ) else {
        return Ok(false);
    };
    let trust = match std::fs::read_to_string(dir.join(brume_broker::tls::FINGERPRINT_FILE)) {
        Ok(pin) if url.starts_with("https://") => brume_tls::Trust::pinned(pin.parse()?),
        _ => brume_tls::Trust::default(),
    };
    let url = format!("{}/v1/keys/{id}/revoke", url.trim().trim_end_matches('/'));
    let resp = trust
        .reqwest(reqwest::Client::builder())?
        .build()?
        .post(&url)
        .bearer_auth(token.trim())
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match resp {
        // A stale broker.url: nothing listens there any more.
        Err(e) if e.is_connect() && brume_tls::pin_mismatch(&e).is_none() => Ok(false),
        Err(e) => Err(crate::tls::http_error(e, format!("POST {url}"))),
        Ok(r) if r.status().is_success() => Ok(true),
        // The control token of an earlier run: that broker is gone.
        Ok(r) if r.status() == reqwest::StatusCode::FORBIDDEN => Ok(false),
        Ok(r) => Err(anyhow::anyhow!("POST {url}: {}", r.status())),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn providers(cmd: ProvidersCommand, file: &BrokerSection) -> ExitCode {
    use brume_broker::store::{Standing as S, providers as p};
    let data_of = |d: Option<PathBuf>| data_dir(d, file);
    let (args, status) = match cmd {
        ProvidersCommand::Approve(a) => (a, S::Approved),
        ProvidersCommand::Suspend(a) => (a, S::Suspended),
        ProvidersCommand::Ban(a) => (a, S::Banned),
        ProvidersCommand::List { data, json } => {
            let listed = match open_store(&data_of(data), file).await {
                Ok(s) => s.read(|c| Ok((p::list(c)?, p::bans(c)?))).await,
                Err(e) => Err(e),
            };
            return match listed {
                Ok((trust, bans)) => {
                    print_providers(&trust, &bans, json);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let address = args.address.to_string();
    let dir = data_of(args.data);
    let reason = args.reason.clone();
    let set = match open_store(&dir, file).await {
        Ok(s) => s
            .write(move |c| match p::set(c, &address, status, &reason) {
                Err(p::TrustError::Store(e)) => Err(e),
                refused_or_set => Ok(refused_or_set),
            })
            .await
            .map_err(p::TrustError::from)
            .and_then(|r| r),
        Err(e) => Err(e.into()),
    };
    match set {
        Ok(t) => {
            if args.json {
                println!(
                    "{}",
                    json!({"address": t.address, "status": t.status.as_str(), "reason": t.reason, "at_ms": t.at_ms})
                );
            } else {
                println!("{} {}", t.address, t.status.as_str());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_providers(
    trust: &[brume_broker::store::providers::TrustInfo],
    bans: &[brume_broker::store::providers::BanInfo],
    json_out: bool,
) {
    if json_out {
        let providers: Vec<_> = trust
            .iter()
            .map(|t| json!({"address": t.address, "status": t.status.as_str(), "reason": t.reason, "at_ms": t.at_ms}))
            .collect();
        let bans: Vec<_> = bans
            .iter()
            .map(|b| json!({"address": b.address, "reason": b.reason, "proof": b.has_proof, "at_ms": b.at_ms}))
            .collect();
        println!("{}", json!({"providers": providers, "bans": bans}));
        return;
    }
    if trust.is_empty() && bans.is_empty() {
        eprintln!("no reviewed or banned providers");
        return;
    }
    for t in trust {
        println!("{}\t{}\t{}", t.address, t.status.as_str(), t.reason);
    }
    for b in bans {
        let proof = if b.has_proof {
            " (proof of cheat recorded)"
        } else {
            ""
        };
        println!("{}\tban\t{}{proof}", b.address, b.reason);
    }
}

async fn run(a: RunArgs, file: &BrokerSection) -> ExitCode {
    crate::logging::init();
    let tls = match tls_config(&a, file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = BrokerConfig {
        tls,
        ..BrokerConfig::default()
    };
    if let Some(l) = a.listen {
        config.listen = l;
    } else if let Some(l) = &file.listen {
        match l.parse() {
            Ok(l) => config.listen = l,
            Err(e) => {
                eprintln!("error: config broker.listen {l:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    config.data_dir = a
        .data
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    if let Some(r) = a.region.or_else(|| file.region.clone()) {
        config.region = r;
    }
    config.latitude = a.latitude.or(file.latitude).unwrap_or(0.0);
    config.longitude = a.longitude.or(file.longitude).unwrap_or(0.0);
    if let Some(l) = &file.ledger {
        config.ledger = l.clone();
    }
    if let Some(url) = a.ledger_store {
        config.ledger.store = url;
    }
    if let Some(c) = &file.chain {
        config.chain = c.clone();
    }
    if let Some(s) = &file.settlement {
        config.settlement = s.clone();
    }
    if let Some(a) = file.affinity {
        config.affinity = a;
    }
    if let Some(l) = file.leases {
        config.leases = l;
    }
    if let Some(t) = &file.trust {
        config.trust = t.clone();
    }
    if let Some(c) = &file.console {
        config.console_signup = c.signup;
    }
    if let Some(h) = a.heartbeat {
        config.heartbeat = h;
    }
    if let Some(t) = a.ack_timeout {
        config.ack_timeout = t;
    }
    config.federation = match federation(a.federation, file.federation.as_ref(), &config.data_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let data = config.data_dir.clone();
    let broker = match Broker::start(config).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pin = broker.tls_fingerprint().map(|f| f.to_string());
    let p2p: Vec<String> = broker
        .federation()
        .map(|f| f.listen_addrs().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    if a.json {
        println!(
            "{}",
            json!({"event": "ready", "url": broker.url(), "broker_id": broker.broker_id(), "data": data, "tls_sha256": pin, "p2p": p2p})
        );
    } else {
        println!(
            "broker {} listening on {} (data {})",
            broker.broker_id(),
            broker.url(),
            data.display()
        );
        if let Some(pin) = pin {
            println!("TLS certificate sha256 {pin} (clients: --pin-sha256 {pin})");
        }
        for addr in &p2p {
            println!("federation: peers join with --peer {addr}");
        }
    }
    crate::logging::flush_stdout();
    crate::logging::shutdown_signal().await;
    broker.shutdown();
    match broker.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
