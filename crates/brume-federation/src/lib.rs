//! Federation: many brokers, one market.
//!
//! Each broker runs a libp2p node (TCP, Noise, Yamux; Kademlia to find
//! peers from a few `--peer` bootstrap addresses, identify to learn their
//! listen addresses, gossipsub to spread announcements). Every few seconds
//! it publishes a [`SignedAnnouncement`] of itself; every announcement
//! heard is checked ([`verify`]: the broker's signature, and the libp2p
//! peer that published it being the one it names) before it enters the
//! [`Directory`], and a forged one is neither kept nor passed on. Entries
//! expire when not refreshed.
//!
//! The broker ranks the directory for clients ([`rank`]) and picks the
//! peer to forward to ([`hops::choose`]) under the loop-safe hop rules of
//! [`hops::Hops`].
//!
//! ```text
//!  broker ──Source::announcement()──▶ node task ──gossipsub──▶ peers
//!                                       │  ▲
//!          Directory ◀──verify()────────┘  └── kad + identify (discovery)
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brume_api::federation::{Announcement, SignedAnnouncement};
use brume_identity::Identity;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod announce;
mod directory;
pub mod hops;
mod node;

pub use announce::{MAX_TTL_MS, Rejected, decode, decode_notice, sign, sign_notice, verify};
pub use directory::{
    Directory, NEAR_BAND_KM, Offered, Query, distance_km, for_provider, parse_point, rank,
};
pub use libp2p::Multiaddr;

/// How a broker joins the federation (`[broker.federation]`).
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Where the libp2p node listens (`/ip4/0.0.0.0/tcp/7701`; port 0:
    /// any free port).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers (`/ip4/…/tcp/…/p2p/…` or without the peer id).
    pub peers: Vec<Multiaddr>,
    /// How often the broker announces itself.
    pub announce_every: Duration,
    /// How long others keep an announcement without a refresh (at most
    /// [`MAX_TTL_MS`]).
    pub ttl: Duration,
    /// The libp2p key (ed25519), created on first start.
    pub key_file: PathBuf,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            listen: vec!["/ip4/0.0.0.0/tcp/7701".parse().expect("a multiaddr")],
            peers: Vec::new(),
            announce_every: Duration::from_secs(2),
            ttl: Duration::from_secs(10),
            key_file: PathBuf::from("p2p.key"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("p2p key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("p2p: {0}")]
    Transport(String),
    #[error("listen on {addr}: {message}")]
    Listen { addr: Multiaddr, message: String },
    #[error("announce_every ({every:?}) must be shorter than the ttl ({ttl:?})")]
    Timing { every: Duration, ttl: Duration },
}

/// What the broker says about itself now; the node fills in `peer_id`,
/// `seq`, `issued_ms` and `ttl_ms`, and signs it.
pub trait Source: Send + Sync + 'static {
    fn announcement(&self) -> Announcement;
}

/// Counters, for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    /// Announcements this broker published, and their bytes.
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    /// Announcements heard and kept (new or newer).
    pub accepted: AtomicU64,
    /// Dropped: a signature that isn't the named broker's, or a peer
    /// speaking for another.
    pub forged: AtomicU64,
    /// Dropped: not an announcement, or out of bounds.
    pub malformed: AtomicU64,
    /// Entries that expired.
    pub expired: AtomicU64,
}

/// A running node: the directory, this broker's own announcement, and a
/// way to publish.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    peer_id: libp2p::PeerId,
    listening: Vec<Multiaddr>,
    directory: Directory,
    own: Mutex<Option<SignedAnnouncement>>,
    stats: Stats,
    publish: mpsc::UnboundedSender<Outgoing>,
    /// Verified cheat notices heard, until the broker takes the receiver.
    notices: Mutex<Option<mpsc::Receiver<brume_api::federation::SignedCheatNotice>>>,
    config: FederationConfig,
}

/// What the node is asked to publish.
pub(crate) enum Outgoing {
    Announcement(Vec<u8>),
    Notice(Vec<u8>),
}

/// How many heard cheat notices wait for the broker before more are
/// dropped.
const NOTICE_QUEUE: usize = 256;

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("peer_id", &self.inner.peer_id)
            .field("listening", &self.inner.listening)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Starts the node: loads (or creates) its key, listens, dials the
    /// bootstrap peers. Returns once it is listening, with the task that
    /// runs it (spawn it; it ends when `shutdown` is cancelled).
    pub async fn start(
        config: FederationConfig,
        identity: Identity,
        source: Arc<dyn Source>,
        shutdown: CancellationToken,
    ) -> Result<(Federation, impl Future<Output = ()> + Send + 'static), FederationError> {
        if config.announce_every >= config.ttl {
            return Err(FederationError::Timing {
                every: config.announce_every,
                ttl: config.ttl,
            });
        }
        let key = node::load_key(&config.key_file)?;
        let (publish, outbox) = mpsc::unbounded_channel();
        let (notices_tx, notices) = mpsc::channel(NOTICE_QUEUE);
        let (swarm, listening) = node::listen(key, &config).await?;
        let inner = Arc::new(Inner {
            peer_id: *swarm.local_peer_id(),
            listening,
            directory: Directory::default(),
            own: Mutex::new(None),
            stats: Stats::default(),
            publish,
            notices: Mutex::new(Some(notices)),
            config,
        });
        let node = node::Node {
            swarm,
            inner: inner.clone(),
            identity,
            source,
            outbox,
            notices: notices_tx,
            seq: 0,
        };
        Ok((Federation { inner }, node.run(shutdown)))
    }

    /// The node's libp2p peer id (base58).
    pub fn peer_id(&self) -> String {
        self.inner.peer_id.to_base58()
    }

    /// Where the node listens, each with `/p2p/<peer id>` (what others pass
    /// as `--peer`).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner
            .listening
            .iter()
            .map(|a| {
                a.clone()
                    .with(libp2p::multiaddr::Protocol::P2p(self.inner.peer_id))
            })
            .collect()
    }

    /// The other brokers heard and not expired.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// This broker's latest signed announcement.
    pub fn own(&self) -> Option<SignedAnnouncement> {
        self.inner.own.lock().clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn config(&self) -> &FederationConfig {
        &self.inner.config
    }

    /// Publishes a signed announcement as is (the node publishes the
    /// broker's own by itself; this relays one, or lets a test speak for
    /// someone it is not).
    pub fn publish(&self, signed: &SignedAnnouncement) {
        if let Ok(bytes) = serde_json::to_vec(signed) {
            let _ = self.inner.publish.send(Outgoing::Announcement(bytes));
        }
    }

    /// Gossips a signed cheat notice.
    pub fn publish_notice(&self, signed: &brume_api::federation::SignedCheatNotice) {
        if let Ok(bytes) = serde_json::to_vec(signed) {
            let _ = self.inner.publish.send(Outgoing::Notice(bytes));
        }
    }

    /// The cheat notices heard from other brokers, signature checked (once:
    /// the broker's task takes it).
    pub fn take_notices(&self) -> Option<mpsc::Receiver<brume_api::federation::SignedCheatNotice>> {
        self.inner.notices.lock().take()
    }
}

fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
