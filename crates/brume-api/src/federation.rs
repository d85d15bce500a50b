//! What brokers tell each other and their clients about the federation:
//! the signed announcement each broker gossips, the directory built from
//! them, the locator's answer, and the forwarding headers.
//!
//! An announcement is signed (EIP-191) by the broker's address over
//! [`Announcement::message`]; it names the libp2p peer id the broker
//! gossips from, so a peer id can't speak for another broker's address and
//! an address can't be claimed from another peer. Receivers keep the
//! newest announcement per broker (by `seq`) and drop it `ttl_ms` after
//! they received it unless it is refreshed.

use serde::{Deserialize, Serialize};

use crate::ServiceKind;
use crate::rest::Capacity;

/// The gossipsub topic announcements travel on.
pub const ANNOUNCE_TOPIC: &str = "brume/brokers/1";

/// The most services one announcement lists (the rest are left out).
pub const MAX_ANNOUNCED_SERVICES: usize = 512;

/// The largest announcement a broker accepts, in bytes of JSON.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;

/// The most hops a forwarded unit of work may take (and the default).
pub const DEFAULT_FORWARD_TTL: u32 = 3;

/// A service a broker serves, as `owner~name` (the owner an address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnnouncedService {
    /// The service's reference, `owner~name`.
    pub name: String,
    pub kind: ServiceKind,
}

/// The most provider records one announcement carries.
pub const MAX_ANNOUNCED_PROVIDERS: usize = 64;

/// What a broker says of its own conduct.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokerRecord {
    pub uptime_s: u64,
    /// Settlement runs made, and when the last one ended (ms since the
    /// epoch; 0: none yet).
    pub settlement_runs: u64,
    pub last_settlement_ms: u64,
    /// Whether the last settlement run failed (the next resumes it), and
    /// whether its invariants held.
    pub settlement_failing: bool,
    pub settlement_balanced: bool,
    /// Results its providers gave that a re-execution refuted (the
    /// requester was refunded): disputes the broker's side lost.
    pub disputes_lost: u64,
    /// Providers it banned on a proof.
    pub cheats_banned: u64,
}

/// A provider's track record at the broker that announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderRecord {
    pub address: String,
    pub record: crate::rest::Reputation,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub banned: bool,
}

/// The broker's prices, as its ledger charges them (resource-equivalence
/// pricing: see `brume_ledger::pricing`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnnouncedPrices {
    /// The fee currency (ISO code).
    pub currency: String,
    /// Fiat micro-units per whole token.
    pub fiat_micros_per_token: u64,
    /// The service tiers, best first.
    pub tiers: Vec<AnnouncedTier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnnouncedTier {
    pub name: String,
    /// Fiat micro-units per coin-equivalent of resources.
    pub fiat_micros_per_coin: u64,
}

/// What one broker says about itself, refreshed every few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Announcement {
    /// The broker's address (`0x…`): who signed this.
    pub broker: String,
    /// The libp2p peer id it gossips from (base58).
    pub peer_id: String,
    /// Where its REST API is (`http://` or `https://`).
    pub url: String,
    /// With HTTPS: the SHA-256 fingerprint of its certificate (hex), so
    /// peers can pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<String>,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    pub capacity: Capacity,
    /// Calls and jobs waiting for a provider.
    pub queued: u64,
    pub providers: u64,
    pub services: Vec<AnnouncedService>,
    pub prices: AnnouncedPrices,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_wallet: Option<String>,
    /// The broker's own track record (as SONM's miners gossip about hubs).
    #[serde(default)]
    pub record: BrokerRecord,
    /// Track records of the providers this broker has seen, as it observed
    /// them (its signature over the announcement covers them); the most
    /// active first, at most [`MAX_ANNOUNCED_PROVIDERS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers_seen: Vec<ProviderRecord>,
    /// Grows with every announcement the broker makes.
    pub seq: u64,
    /// When it was made (milliseconds since the Unix epoch).
    pub issued_ms: u64,
    /// How long receivers keep it without a refresh.
    pub ttl_ms: u64,
}

impl Announcement {
    /// The text the broker signs (EIP-191): a domain line and the
    /// announcement's JSON.
    pub fn message(&self) -> Vec<u8> {
        let mut m = b"brume announcement v1\n".to_vec();
        m.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        m
    }
}

/// An announcement and its signature (`0x` + 65 bytes hex), as gossiped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedAnnouncement {
    pub announcement: Announcement,
    pub signature: String,
}

/// `GET /v1/directory`: the brokers this broker knows (itself included),
/// best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Directory {
    pub brokers: Vec<DirectoryEntry>,
}

/// One broker in the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirectoryEntry {
    /// The broker's own signed word (re-verifiable by the client).
    pub announcement: SignedAnnouncement,
    /// From the `near` point asked for, in kilometres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    /// How long ago this broker heard the announcement.
    pub age_ms: u64,
    /// Whether this entry is the answering broker itself.
    #[serde(default)]
    pub local: bool,
}

/// `GET /v1/locate/{owner}/{service}`: where a service is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Located {
    /// `owner~name`.
    pub service: String,
    pub brokers: Vec<LocatedBroker>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocatedBroker {
    pub broker: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<String>,
    pub region: String,
    /// How to call it: `command` (`POST {url}/v1/functions/{service}/invoke`)
    /// or `http` (`{url}/fn/{service}/…`).
    pub protocol: ServiceKind,
    /// Where to call it.
    pub endpoint: String,
    pub slots_free: u64,
}

/// The gossipsub topic proofs of cheat are announced on.
pub const CHEATS_TOPIC: &str = "brume/cheats/1";

/// The largest cheat notice a broker accepts, in bytes of JSON.
pub const MAX_NOTICE_BYTES: usize = 4 * 1024;

/// A broker's word that it proved a provider cheated: where to fetch the
/// proof (`GET {url}/v1/proofs/{proof_sha256}`) and the module
/// (`GET {url}/v1/blobs/{module_sha256}`). A receiver bans nobody on this
/// word: it fetches both, checks the proof and re-executes the work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheatNotice {
    /// The broker that proved it (`0x…`): who signs this.
    pub broker: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<String>,
    /// The cheat's address.
    pub provider: String,
    /// sha256 of the proof's JSON (hex).
    pub proof_sha256: String,
    /// sha256 of the module to re-run (hex).
    pub module_sha256: String,
    pub issued_ms: u64,
}

impl CheatNotice {
    /// The text the broker signs (EIP-191).
    pub fn message(&self) -> Vec<u8> {
        let mut m = b"brume cheat notice v1\n".to_vec();
        m.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        m
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedCheatNotice {
    pub notice: CheatNotice,
    pub signature: String,
}

/// The forwarding headers.
pub mod headers {
    /// On a forwarded request: the brokers it has passed, origin first,
    /// comma-separated addresses. A broker never forwards to one of them.
    pub const HOPS: &str = "x-brume-hops";
    /// On a forwarded request: how many more hops it may take.
    pub const TTL: &str = "x-brume-ttl";
    /// On an answer that another broker produced: the brokers it passed
    /// through before the one that ran it (origin first).
    pub const FORWARDED_BY: &str = "x-brume-forwarded-by";
    /// On a forwarded answer: the broker that ran the work.
    pub const BROKER: &str = "x-brume-broker";
}
