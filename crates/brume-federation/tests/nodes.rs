//! Real libp2p nodes over loopback, in one process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use brume_api::federation::{AnnouncedService, Announcement};
use brume_api::rest::Capacity;
use brume_federation::{Federation, FederationConfig, Multiaddr, Source};
use brume_identity::Identity;
use tokio_util::sync::CancellationToken;

struct Fixed(Announcement);

impl Source for Fixed {
    fn announcement(&self) -> Announcement {
        self.0.clone()
    }
}

fn body(identity: &Identity, region: &str) -> Announcement {
    Announcement {
        broker: identity.address().to_string(),
        peer_id: String::new(),
        url: format!("http://{region}.invalid"),
        tls_sha256: None,
        region: region.into(),
        latitude: 0.0,
        longitude: 0.0,
        capacity: Capacity {
            slots_free: 1,
            slots_total: 1,
            memory_free_bytes: 0,
            memory_total_bytes: 0,
        },
        queued: 0,
        providers: 1,
        services: vec![AnnouncedService {
            name: format!("{}~echo", identity.address()),
            kind: brume_api::ServiceKind::Command,
        }],
        prices: Default::default(),
        hub_wallet: None,
        record: Default::default(),
        providers_seen: Vec::new(),
        seq: 0,
        issued_ms: 0,
        ttl_ms: 0,
    }
}

struct Node {
    fed: Federation,
    identity: Identity,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn node(region: &str, peers: Vec<Multiaddr>, ttl: Duration) -> Node {
    let dir = tempfile::tempdir().expect("a temp dir");
    let identity = Identity::random();
    let config = FederationConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")],
        peers,
        announce_every: ttl / 5,
        ttl,
        key_file: dir.path().join("p2p.key"),
    };
    let stop = CancellationToken::new();
    let source = Arc::new(Fixed(body(&identity, region)));
    let (fed, run) = Federation::start(config, identity.clone(), source, stop.clone())
        .await
        .expect("the node starts");
    Node {
        fed,
        identity,
        stop,
        task: tokio::spawn(run),
        _dir: dir,
    }
}

/// Waits until `f` holds, re-checking on every directory change.
async fn until(fed: &Federation, f: impl Fn(&Federation) -> bool) {
    let mut changed = fed.directory().subscribe();
    while !f(fed) {
        changed.changed().await.expect("the node runs");
    }
}

fn knows(fed: &Federation, who: &Identity) -> bool {
    fed.directory()
        .live(std::time::Instant::now())
        .iter()
        .any(|e| e.announcement.announcement.broker == who.address().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_find_each_other_from_one_bootstrap_peer_and_drop_a_leaver() {
    let ttl = Duration::from_millis(1500);
    let a = node("eu", vec![], ttl).await;
    let boot = a.fed.listen_addrs();
    let b = node("us", boot.clone(), ttl).await;
    let c = node("ap", boot, ttl).await;
    for (n, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        until(&n.fed, |f| others.iter().all(|o| knows(f, &o.identity))).await;
    }
    // B and C never dialled each other: Kademlia (or gossip through A)
    // brought them together.
    assert_eq!(b.fed.directory().len(), 2);

    // C stops: once its announcement expires it leaves A's directory.
    c.stop.cancel();
    c.task.await.expect("C stops");
    // `live` hides an entry once its time is up; the sweep that drops and
    // counts it comes after (and B's next announcement wakes us again).
    until(&a.fed, |f| {
        !knows(f, &c.identity) && f.stats().expired.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(knows(&a.fed, &b.identity), "B keeps announcing");
    assert!(a.fed.stats().expired.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_announcement_is_dropped_counted_and_not_passed_on() {
    let ttl = Duration::from_secs(5);
    let a = node("eu", vec![], ttl).await;
    let b = node("us", a.fed.listen_addrs(), ttl).await;
    until(&a.fed, |f| knows(f, &b.identity)).await;
    until(&b.fed, |f| knows(f, &a.identity)).await;

    // B claims to be a broker whose key it doesn't hold: it signs with its
    // own key an announcement naming the victim's address.
    let victim = Identity::random();
    let mut forged = body(&victim, "forged");
    forged.peer_id = b.fed.peer_id();
    forged.seq = 1;
    forged.ttl_ms = 5000;
    let signed = brume_federation::sign(&b.identity, forged).expect("signed");
    assert!(brume_federation::verify(&signed, None).is_err());
    b.fed.publish(&signed);

    // B relays A's own genuine announcement as if it were its own peer's:
    // the signature is A's, but the peer id named is A's, not B's.
    let mut stolen = a.fed.own().expect("A has announced");
    stolen.announcement.seq += 1_000;
    b.fed.publish(&stolen);

    let forged_seen = || a.fed.stats().forged.load(Ordering::Relaxed);
    let mut changed = a.fed.directory().subscribe();
    while forged_seen() < 1 {
        // Announcements keep coming; each wakes this loop.
        changed.changed().await.expect("the node runs");
    }
    assert!(
        !knows(&a.fed, &victim),
        "the forged broker is not in A's directory"
    );
}
