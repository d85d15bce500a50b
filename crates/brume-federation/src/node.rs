//! The libp2p node: one task owning the swarm.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brume_api::federation::{
    ANNOUNCE_TOPIC, CHEATS_TOPIC, MAX_ANNOUNCEMENT_BYTES, SignedCheatNotice,
};
use brume_identity::Identity;
use futures_util::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, identity, kad, noise, tcp, yamux};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{FederationConfig, FederationError, Inner, Offered, Outgoing, Source, count};

/// The identify protocol's version string.
const PROTOCOL: &str = "/brume/federation/1";
/// How often Kademlia looks for more peers.
const BOOTSTRAP_EVERY: Duration = Duration::from_secs(5);
/// How often expired entries are dropped.
const EXPIRE_EVERY: Duration = Duration::from_millis(200);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
}

pub(crate) struct Node {
    pub swarm: Swarm<Behaviour>,
    pub inner: Arc<Inner>,
    pub identity: Identity,
    pub source: Arc<dyn Source>,
    pub outbox: mpsc::UnboundedReceiver<Outgoing>,
    pub notices: mpsc::Sender<SignedCheatNotice>,
    pub seq: u64,
}

/// Loads the node's ed25519 key (hex), or creates it (mode 0600).
pub(crate) fn load_key(path: &Path) -> Result<identity::Keypair, FederationError> {
    let err = |message: String| FederationError::Key {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut bytes = hex::decode(text.trim()).map_err(|e| err(e.to_string()))?;
            identity::Keypair::ed25519_from_bytes(&mut bytes).map_err(|e| err(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = identity::Keypair::generate_ed25519();
            let secret = key
                .clone()
                .try_into_ed25519()
                .map_err(|e| err(e.to_string()))?
                .secret();
            write_private(path, &hex::encode(secret.as_ref())).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn behaviour(key: &identity::Keypair) -> Result<Behaviour, FederationError> {
    let transport = |e: String| FederationError::Transport(e);
    let gossip = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .validation_mode(gossipsub::ValidationMode::Strict)
        // Held until checked: a forged announcement is not passed on.
        .validate_messages()
        .max_transmit_size(MAX_ANNOUNCEMENT_BYTES + 4096)
        .message_id_fn(|m: &gossipsub::Message| {
            use sha2::Digest as _;
            gossipsub::MessageId::from(sha2::Sha256::digest(&m.data).to_vec())
        })
        .build()
        .map_err(|e| transport(e.to_string()))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip)
            .map_err(|e| transport(e.to_string()))?;
    for topic in [ANNOUNCE_TOPIC, CHEATS_TOPIC] {
        gossipsub
            .subscribe(&gossipsub::IdentTopic::new(topic))
            .map_err(|e| transport(e.to_string()))?;
    }
    let peer_id = key.public().to_peer_id();
    let mut kad = kad::Behaviour::new(peer_id, kad::store::MemoryStore::new(peer_id));
    // Brokers are servers: answer queries even before an external address
    // is confirmed (loopback devnets never confirm one).
    kad.set_mode(Some(kad::Mode::Server));
    let identify = identify::Behaviour::new(identify::Config::new(PROTOCOL.into(), key.public()));
    Ok(Behaviour {
        gossipsub,
        kad,
        identify,
    })
}

/// Builds the swarm and waits until it listens on every configured
/// address; returns the addresses it listens on.
pub(crate) async fn listen(
    key: identity::Keypair,
    config: &FederationConfig,
) -> Result<(Swarm<Behaviour>, Vec<Multiaddr>), FederationError> {
    let transport = |e: String| FederationError::Transport(e);
    let behaviour = behaviour(&key)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| FederationError::Listen {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
    }
    let mut listening = Vec::new();
    while listening.len() < config.listen.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => listening.push(address),
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(FederationError::Transport(error.to_string()));
            }
            _ => {}
        }
    }
    for peer in &config.peers {
        if let Err(e) = swarm.dial(peer.clone()) {
            tracing::warn!(%peer, "dial a bootstrap peer: {e}");
        }
    }
    Ok((swarm, listening))
}

/// Cuts the lists of an announcement (providers seen first, then
/// services) until it fits what peers accept, leaving room for the
/// signature.
fn fit(a: &mut brume_api::federation::Announcement) {
    let budget = MAX_ANNOUNCEMENT_BYTES - 512;
    let size =
        |a: &brume_api::federation::Announcement| serde_json::to_vec(a).map_or(0, |v| v.len());
    while size(a) > budget && !a.providers_seen.is_empty() {
        let keep = a.providers_seen.len() / 2;
        a.providers_seen.truncate(keep);
    }
    while size(a) > budget && !a.services.is_empty() {
        let keep = a.services.len() / 2;
        tracing::warn!(
            kept = keep,
            "the announcement is too large: announcing fewer services"
        );
        a.services.truncate(keep);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let config = self.inner.config.clone();
        let mut announce = tokio::time::interval(config.announce_every);
        let mut expire = tokio::time::interval(EXPIRE_EVERY.min(config.ttl / 4));
        let mut bootstrap = tokio::time::interval(BOOTSTRAP_EVERY);
        for t in [&mut announce, &mut expire, &mut bootstrap] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = announce.tick() => self.announce(),
                _ = expire.tick() => {
                    let gone = self.inner.directory.expire(Instant::now());
                    for b in &gone {
                        tracing::info!(broker = %b, "a broker's announcement expired");
                    }
                    count(&self.inner.stats.expired, gone.len() as u64);
                }
                _ = bootstrap.tick() => self.bootstrap(&config.peers),
                Some(out) = self.outbox.recv() => match out {
                    Outgoing::Announcement(bytes) => self.publish(bytes),
                    Outgoing::Notice(bytes) => self.publish_notice(bytes),
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    fn announce(&mut self) {
        let mut a = self.source.announcement();
        self.seq += 1;
        a.peer_id = self.inner.peer_id.to_base58();
        a.seq = self.seq;
        a.issued_ms = now_ms();
        a.ttl_ms = self.inner.config.ttl.as_millis() as u64;
        fit(&mut a);
        match crate::sign(&self.identity, a) {
            Ok(signed) => {
                if let Ok(bytes) = serde_json::to_vec(&signed) {
                    self.publish(bytes);
                }
                *self.inner.own.lock() = Some(signed);
            }
            Err(e) => tracing::error!("sign the announcement: {e}"),
        }
    }

    fn publish(&mut self, bytes: Vec<u8>) {
        let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
        let len = bytes.len() as u64;
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {
                count(&self.inner.stats.published, 1);
                count(&self.inner.stats.published_bytes, len);
            }
            // No peer yet, or the same bytes again: nothing to send.
            Err(e) => tracing::debug!("publish the announcement: {e}"),
        }
    }

    fn publish_notice(&mut self, bytes: Vec<u8>) {
        let topic = gossipsub::IdentTopic::new(CHEATS_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            tracing::warn!("publish a cheat notice: {e}");
        }
    }

    /// Looks for more peers; with none connected, dials the bootstrap
    /// peers again (they may have restarted).
    fn bootstrap(&mut self, peers: &[Multiaddr]) {
        if self.swarm.connected_peers().next().is_none() {
            for peer in peers {
                let _ = self.swarm.dial(peer.clone());
            }
        }
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if info.protocol_version != PROTOCOL {
                    return;
                }
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) if !self.swarm.is_connected(&peer) => {
                let opts = DialOpts::peer_id(peer)
                    .addresses(addresses.into_vec())
                    .build();
                let _ = self.swarm.dial(opts);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_message(propagation_source, &message_id, &message),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                tracing::debug!(%peer_id, "p2p peer connected");
            }
            _ => {}
        }
    }

    fn on_message(&mut self, via: PeerId, id: &gossipsub::MessageId, message: &gossipsub::Message) {
        if message.topic == gossipsub::IdentTopic::new(CHEATS_TOPIC).hash() {
            return self.on_notice(via, id, message);
        }
        let from = message.source.map(|p| p.to_base58());
        let stats = &self.inner.stats;
        let verdict = match crate::decode(&message.data, from.as_deref()) {
            Ok(signed) if signed.announcement.peer_id == self.inner.peer_id.to_base58() => {
                gossipsub::MessageAcceptance::Ignore
            }
            Ok(signed) => {
                let broker = signed.announcement.broker.clone();
                let max = Duration::from_millis(crate::MAX_TTL_MS);
                match self.inner.directory.offer(signed, Instant::now(), max) {
                    Offered::New => {
                        tracing::info!(%broker, "a broker joined the directory");
                        count(&stats.accepted, 1);
                        gossipsub::MessageAcceptance::Accept
                    }
                    Offered::Refreshed => {
                        count(&stats.accepted, 1);
                        gossipsub::MessageAcceptance::Accept
                    }
                    Offered::Stale => gossipsub::MessageAcceptance::Ignore,
                }
            }
            Err(rejected) => {
                tracing::warn!(peer = ?from, "dropped an announcement: {rejected}");
                if rejected.is_forgery() {
                    count(&stats.forged, 1);
                } else {
                    count(&stats.malformed, 1);
                }
                gossipsub::MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &via, verdict);
    }

    /// A cheat notice: passed to the broker (and on to peers) if its
    /// broker signed it; the proof is the broker's to check.
    fn on_notice(&mut self, via: PeerId, id: &gossipsub::MessageId, message: &gossipsub::Message) {
        let verdict = match crate::decode_notice(&message.data) {
            Ok(signed)
                if signed
                    .notice
                    .broker
                    .eq_ignore_ascii_case(&self.identity.address().to_string()) =>
            {
                gossipsub::MessageAcceptance::Ignore
            }
            Ok(signed) => {
                if self.notices.try_send(signed).is_err() {
                    tracing::warn!("cheat notices queue full: one dropped");
                }
                gossipsub::MessageAcceptance::Accept
            }
            Err(rejected) => {
                tracing::warn!("dropped a cheat notice: {rejected}");
                count(&self.inner.stats.malformed, 1);
                gossipsub::MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &via, verdict);
    }
}

#[cfg(test)]
mod tests {
    use brume_api::federation::{AnnouncedService, Announcement, MAX_ANNOUNCEMENT_BYTES};

    #[test]
    fn an_announcement_too_large_is_cut_to_fit_keeping_what_it_can() {
        let service = |i: usize| AnnouncedService {
            name: format!("0x{:040x}~{}", i, "n".repeat(60)),
            kind: brume_api::ServiceKind::Command,
        };
        let mut a = Announcement {
            broker: "0x0000000000000000000000000000000000000001".into(),
            peer_id: String::new(),
            url: "http://127.0.0.1:7700".into(),
            tls_sha256: None,
            region: "eu".into(),
            latitude: 0.0,
            longitude: 0.0,
            capacity: Default::default(),
            queued: 0,
            providers: 0,
            services: (0..2_000).map(service).collect(),
            prices: Default::default(),
            hub_wallet: None,
            record: Default::default(),
            providers_seen: Vec::new(),
            seq: 1,
            issued_ms: 0,
            ttl_ms: 1000,
        };
        super::fit(&mut a);
        let size = serde_json::to_vec(&a).map_or(usize::MAX, |v| v.len());
        assert!(size <= MAX_ANNOUNCEMENT_BYTES - 512, "{size}");
        assert!(a.services.len() >= 100, "kept {}", a.services.len());
    }
}
