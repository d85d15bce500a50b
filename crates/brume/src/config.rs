//! The optional TOML config file. Precedence, highest first: command-line
//! flags, `BRUME_*` environment variables (both through clap), this file,
//! built-in defaults.
//!
//! The file is `--config FILE`, else `$BRUME_CONFIG`, else
//! `~/.config/brume/config.toml` if it exists. Unknown keys are errors, so a
//! typo doesn't silently fall back to a default.
//!
//! ```toml
//! [client]
//! broker = "https://broker.example:7700"
//! api_key = "brk_..."
//! ca = "/etc/brume/ca.pem"     # trust this CA besides the built-in roots, or
//! # pin_sha256 = "5d0a1f…"     # trust only the certificate with this fingerprint
//!
//! [broker]
//! listen = "127.0.0.1:7700"
//! data_dir = "/var/lib/brume/broker"
//! region = "eu-west"
//! latitude = 48.85
//! longitude = 2.35
//! tls_cert = "/etc/brume/broker.crt"   # serve HTTPS/WSS: a PEM chain and key, or
//! tls_key = "/etc/brume/broker.key"
//! # tls_self_signed = true              # a self-signed certificate kept in data_dir/tls
//!
//! [broker.ledger]              # every key optional; these are the defaults
//! contributor_ppm = 700000     # the provider's share of each fee
//! developer_ppm = 200000       # the developer's; the operator gets the rest
//! currency = "EUR"
//! fiat_micros_per_token = 1000000
//! default_tier = "standard"    # "" = the last (cheapest) tier
//! operator_charity = { account = "0xc4a21…", share_ppm = 50000 }
//!
//! [[broker.ledger.tiers]]      # best first; each asks no more than the last
//! name = "standard"
//! fiat_micros_per_coin = 1000000
//! min_threads = 1
//! min_mips = 0
//!
//! [[broker.ledger.deals]]      # accounts (API key names) not listed: per use
//! account = "acme"
//! structure = { kind = "cap_with_subsidy", subsidy = "acme-sponsor" }
//! # kinds: per_use, cap_with_downgrade, cap_with_subsidy { subsidy },
//! #        full_subsidy { subsidy }, subscription { tier, daily_fee_fiat_micros }
//!
//! [broker.ledger.penalties.surcharge.runtime]   # and .memory
//! tolerance_ppm = 100000
//! slope_ppm = 1000000
//! cap_ppm = 500000
//!
//! [broker.ledger.penalties.slow_provider]
//! rule = { tolerance_ppm = 200000, slope_ppm = 1000000, cap_ppm = 500000 }
//! min_run_ms = 100
//!
//! [broker.chain]               # every key optional; these are the defaults
//! kind = "dev"                 # the embedded dev chain, at DATA/chain/chain.db
//! chain_id = 1651668333        # the dev chain's id ("brum"; fixed at its genesis)
//! faucet = false               # POST /v1/chain/faucet mints (brume devnet: true)
//! require_allowance = true     # refuse paid work to accounts that are not addresses
//!                              # before its service has an observed cost
//! min_stake = 0                # base units a provider must stake to get work
//! stake_refresh_ms = 5000      # how often providers' stakes are read
//! genesis = [{ address = "0x…", amount = "1000000000000000000000" }]
//!
//! [broker.affinity]            # sessions (`x-brume-affinity`); these are the defaults
//! ttl_ms = 600000              # kept this long after a session's last call
//! max_bytes = 67108864         # its work dir on the provider (emptied when over)
//! max_per_account = 1024
//!
//! [broker.leases]              # these are the defaults
//! interval_ms = 10000          # the longest time between two of a lease's rows
//! max_per_account = 64
//!
//! [broker.trust]               # trust tiers (see crates/brume-broker/src/trust.rs)
//! attestation_authority = "0x…"   # accepts `test` attestations it signed
//! account_tiers = { acme = [1, 2] } # tiers an account's work may use by default
//! account_verify = { acme = { kind = "adaptive" } }  # an account's default job verification
//! [[broker.trust.orgs]]         # an organisation's accounts and private pool (tier 1)
//! name = "acme"
//! accounts = ["acme"]
//! providers = ["0x…"]
//!
//! [broker.settlement]
//! period_s = 86400             # seconds between runs; 0 = only `brume settle`
//! min_payout = 0               # base units; smaller payouts are carried over
//!
//! [broker.federation]         # present: join other brokers over libp2p
//! listen = ["/ip4/0.0.0.0/tcp/7701"]
//! peers = ["/ip4/10.0.0.2/tcp/7701/p2p/12D3KooW…"]   # bootstrap peers
//! announce_every_ms = 2000     # how often this broker announces itself
//! announce_ttl_ms = 10000      # how long peers keep it without a refresh
//! advertise_url = "https://broker.example:7700"      # default: the URL served
//! forward = true               # forward calls this broker can't place
//! forward_ttl = 3              # the most hops a forwarded call takes
//!
//! [broker.console]
//! signup = false               # true: anyone may make a console account
//!
//! [provider]
//! broker = "http://127.0.0.1:7700"
//! # ca = "…" or pin_sha256 = "…", as in [client]
//! data_dir = "/var/lib/brume/provider"
//! slots = 4
//! memory = "2GiB"
//! region = "eu-west"
//! price_ask = 0
//! min_fee_per_hour = 0        # micro-tokens per compute hour; lower bids are declined
//! policy = "fifo"             # or "profit": the highest bid first
//! batch_priority = "idle"      # or "nice", "nice=N": how batch yields the CPU to functions
//! allowed_services = ["echo", "thumbnails"]
//! control = "127.0.0.1:0"      # the local control port (`brume provide status`)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub client: ClientSection,
    #[serde(default)]
    pub broker: BrokerSection,
    #[serde(default)]
    pub provider: ProviderSection,
}

/// What requester commands (`service`, `invoke`, `run`, `job`) use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    pub broker: Option<String>,
    pub api_key: Option<String>,
    /// A CA certificate (PEM) trusted besides the built-in roots.
    pub ca: Option<PathBuf>,
    /// The broker certificate's SHA-256 fingerprint, pinned.
    pub pin_sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Serve HTTPS and WSS with this PEM certificate chain...
    pub tls_cert: Option<PathBuf>,
    /// ...and this PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS and WSS with a self-signed certificate.
    pub tls_self_signed: Option<bool>,
    /// Pricing, tiers, deals, penalties and shares (`[broker.ledger]`).
    pub ledger: Option<brume_broker::ledger::LedgerConfig>,
    /// The chain, escrow and stake (`[broker.chain]`).
    pub chain: Option<brume_broker::chain::ChainConfig>,
    /// Batched settlement (`[broker.settlement]`).
    pub settlement: Option<brume_broker::settlement::SettlementConfig>,
    /// Trust tiers (`[broker.trust]`).
    pub trust: Option<brume_broker::trust::TrustConfig>,
    /// Affinity sessions (`[broker.affinity]`).
    pub affinity: Option<brume_broker::AffinityConfig>,
    /// Leases (`[broker.leases]`).
    pub leases: Option<brume_broker::LeaseConfig>,
    /// Federation with other brokers (`[broker.federation]`).
    pub federation: Option<FederationSection>,
    /// The web console (`[broker.console]`).
    pub console: Option<ConsoleSection>,
}

/// `[broker.console]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Whether anyone may make a console account at `/console/signup`
    /// (default: only the operator, with `brume broker accounts create`).
    #[serde(default)]
    pub signup: bool,
}

/// `[broker.federation]`: the presence of the section turns it on.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// libp2p multiaddrs to listen on (default `/ip4/0.0.0.0/tcp/7701`).
    pub listen: Option<Vec<String>>,
    /// Bootstrap peers' multiaddrs.
    #[serde(default)]
    pub peers: Vec<String>,
    pub announce_every_ms: Option<u64>,
    pub announce_ttl_ms: Option<u64>,
    /// The API's URL as peers and clients reach it.
    pub advertise_url: Option<String>,
    /// Forward calls this broker can't place (default true).
    pub forward: Option<bool>,
    /// The most hops a forwarded call takes (default 3).
    pub forward_ttl: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub broker: Option<String>,
    pub ca: Option<PathBuf>,
    pub pin_sha256: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub slots: Option<u32>,
    pub memory: Option<bytesize::ByteSize>,
    pub region: Option<String>,
    pub price_ask: Option<u64>,
    /// Work bidding less per compute hour is declined.
    pub min_fee_per_hour: Option<u64>,
    /// `fifo` or `profit`.
    pub policy: Option<crate::provide::PolicyArg>,
    /// `idle`, `nice` or `nice=N`.
    pub batch_priority: Option<String>,
    pub allowed_services: Option<Vec<String>>,
    pub control: Option<String>,
    /// Take OCI container jobs (bubblewrap).
    pub containers: Option<bool>,
    /// The host uid containers run as when the provider is root.
    pub container_uid: Option<u32>,
    /// URL prefixes jobs' input files may be fetched from.
    pub data_urls: Option<Vec<String>>,
    /// The input file cache's size cap.
    pub data_cache: Option<bytesize::ByteSize>,
    /// Take work only while the 1-minute load average is at most this.
    pub max_load: Option<f64>,
    /// Take work only within these UTC hours (`START-END`).
    pub hours: Option<String>,
    /// The GPU benchmark command and its arguments.
    pub gpu_bench: Option<Vec<String>>,
    /// Container jobs that ask for the network get this host's.
    pub allow_network: Option<bool>,
    /// Registries container images may be pulled from (base URLs).
    pub registries: Option<Vec<String>>,
    /// Where it is, `"LAT,LON"` in degrees.
    pub location: Option<String>,
}

/// Reads the config file: `explicit` (from `--config`/`BRUME_CONFIG`) must
/// exist; the default location is used only if present.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<ConfigFile> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match default_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(ConfigFile::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
}

fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/brume/config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<ConfigFile>("[client]\nbrokr = 'x'").is_err());
        let ok: ConfigFile =
            toml::from_str("[provider]\nslots = 3\nmemory = '1GiB'").unwrap_or_default();
        assert_eq!(ok.provider.slots, Some(3));
        assert_eq!(ok.provider.memory.map(|m| m.as_u64()), Some(1 << 30));
        let tls: ConfigFile = toml::from_str(
            "[client]\npin_sha256 = 'ab'\n[broker]\ntls_self_signed = true\n[provider]\nca = '/c.pem'",
        )
        .unwrap_or_default();
        assert_eq!(tls.client.pin_sha256.as_deref(), Some("ab"));
        assert_eq!(tls.broker.tls_self_signed, Some(true));
        assert_eq!(tls.provider.ca, Some(PathBuf::from("/c.pem")));
    }

    #[test]
    fn chain_section_parses_amounts_as_integers_or_strings() {
        let text = r#"
[broker.chain]
faucet = true
require_allowance = true
min_stake = 5
genesis = [{ address = "0x00000000000000000000000000000000000000aa", amount = 7 }]
"#;
        let c: ConfigFile = toml::from_str(text).expect("parses");
        let chain = c.broker.chain.expect("chain");
        assert!(chain.faucet && chain.require_allowance);
        assert_eq!(chain.min_stake, 5);
        assert_eq!(chain.genesis[0].amount, 7);
        assert!(
            toml::from_str::<ConfigFile>(
                "[broker.chain]
kind = 'solana'"
            )
            .is_err()
        );
        let evm: ConfigFile = toml::from_str(
            "[broker.chain]
kind = 'evm'
rpc = 'http://127.0.0.1:8545'
deployment = 'deployment.json'
operator_key = 'operator.json'
confirmations = 3",
        )
        .expect("an EVM chain parses");
        let evm = evm.broker.chain.expect("chain");
        assert_eq!(evm.kind, brume_broker::chain::ChainKind::Evm);
        assert_eq!(
            (evm.rpc.as_deref(), evm.confirmations),
            (Some("http://127.0.0.1:8545"), 3)
        );
        assert!(
            toml::from_str::<ConfigFile>(
                "[broker.chain]
faucett = true"
            )
            .is_err()
        );
    }

    #[test]
    fn ledger_section_parses_and_refuses_typos() {
        let text = r#"
[broker.ledger]
currency = "USD"
operator_charity = { account = "charity", share_ppm = 50000 }

[[broker.ledger.tiers]]
name = "fast"
fiat_micros_per_coin = 2000000
min_mips = 500

[[broker.ledger.tiers]]
name = "standard"
fiat_micros_per_coin = 1000000

[[broker.ledger.deals]]
account = "acme"
structure = { kind = "cap_with_subsidy", subsidy = "sponsor" }

[broker.ledger.penalties.slow_provider]
rule = { tolerance_ppm = 1, slope_ppm = 2, cap_ppm = 3 }
min_run_ms = 7
"#;
        let c: ConfigFile = toml::from_str(text).expect("parses");
        let l = c.broker.ledger.expect("ledger");
        assert_eq!(l.currency, "USD");
        assert_eq!(l.tiers.len(), 2);
        assert_eq!(l.tiers[1].min_threads, 1, "defaults apply per tier");
        assert_eq!(l.deals[0].account, "acme");
        assert_eq!(l.penalties.slow_provider.min_run_ms, 7);
        assert_eq!(l.contributor_ppm, 700_000, "unset keys keep the defaults");
        assert!(toml::from_str::<ConfigFile>("[broker.ledger]\ncurency = 'USD'").is_err());
        assert!(
            toml::from_str::<ConfigFile>(
                "[[broker.ledger.deals]]\naccount = 'a'\nstructure = { kind = 'free' }"
            )
            .is_err()
        );
    }
}
