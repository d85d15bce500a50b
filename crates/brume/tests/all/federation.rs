//! Federation through the real binaries: brokers that find each other
//! over libp2p from one bootstrap peer, leave the directory when killed,
//! forward a call they can't place (billed once at each broker, and paid
//! through), and a ring of full brokers that answers 503 within its hops.

use std::path::{Path, PathBuf};

use brume_client::brume_api::federation::{Directory, headers as fh};
use brume_client::{Client, ServiceKind};
use brume_identity::Identity;
use brume_identity::keyring::Keyring;
use bytes::Bytes;

use crate::net::{Broker, Provider, command, create_api_key, eventually, follow, import_key};

const PASSWORD: &str = "correct horse";

/// Free work: no escrow needed between brokers that only test routing.
const FREE: &str = "[[broker.ledger.tiers]]\nname = \"free\"\nfiat_micros_per_coin = 0\n";
/// Priced work on a dev chain with a faucet.
const PAID: &str = "[broker.chain]\nfaucet = true\n";

struct Fed {
    broker: Broker,
    client: Client,
    key: String,
}

/// A federated broker in `home/name`, announcing every 200 ms and kept
/// 1.5 s by its peers, bootstrapping from `peers`, with `config`.
fn start(home: &Path, name: &str, peers: &[String], config: &str, lat: &str) -> Fed {
    let data = home.join(name);
    let key = create_api_key(home, &data);
    let config_file = home.join(format!("{name}.toml"));
    std::fs::write(&config_file, config).expect("write the config");
    let mut args = vec![
        "--p2p-listen".to_string(),
        "/ip4/127.0.0.1/tcp/0".into(),
        "--announce-every".into(),
        "200ms".into(),
        "--announce-ttl".into(),
        "1500ms".into(),
        "--region".into(),
        name.into(),
        "--latitude".into(),
        lat.into(),
        "--longitude".into(),
        "0".into(),
    ];
    for p in peers {
        args.push("--peer".into());
        args.push(p.clone());
    }
    let broker = Broker::start_config(home, &data, &config_file, &args);
    let client = Client::new(&broker.url, Some(key.clone())).expect("client");
    Fed {
        broker,
        client,
        key,
    }
}

/// The multiaddr a broker's peers bootstrap from.
fn p2p_addr(data: &Path) -> String {
    std::fs::read_to_string(data.join("p2p.addr"))
        .expect("p2p.addr")
        .lines()
        .next()
        .expect("an address")
        .to_string()
}

async fn directory(f: &Fed) -> Directory {
    f.client
        .directory(None, None, None, None)
        .await
        .expect("directory")
}

async fn knows(f: &Fed, ids: &[&str]) -> bool {
    let d = directory(f).await;
    d.brokers.len() == ids.len()
        && ids.iter().all(|id| {
            d.brokers
                .iter()
                .any(|e| e.announcement.announcement.broker.eq_ignore_ascii_case(id))
        })
}

async fn publish_echo(f: &Fed) {
    f.client
        .publish(
            "echo",
            ServiceKind::Command,
            Bytes::from_static(test_programs_artifacts::ECHO_P1_BYTES),
        )
        .await
        .expect("publish echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_brokers_find_each_other_from_one_bootstrap_peer_and_a_killed_one_leaves() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path();
    let a = start(home, "eu", &[], FREE, "48.8");
    let boot = vec![p2p_addr(&a.broker.data)];
    let b = start(home, "us", &boot, FREE, "40.7");
    let mut c = start(home, "ap", &boot, FREE, "35.6");
    let (ida, idb, idc) = (
        a.broker.broker_id.clone(),
        b.broker.broker_id.clone(),
        c.broker.broker_id.clone(),
    );
    let all = [ida.as_str(), idb.as_str(), idc.as_str()];
    for f in [&a, &b, &c] {
        eventually("every broker lists all three", || async {
            knows(f, &all).await.then_some(())
        })
        .await;
    }
    // Ranked by distance from Paris: eu first, then us, then ap.
    let near = a
        .client
        .directory(None, Some((48.85, 2.35)), None, None)
        .await
        .expect("directory near Paris");
    let regions: Vec<&str> = near
        .brokers
        .iter()
        .map(|e| e.announcement.announcement.region.as_str())
        .collect();
    assert_eq!(regions, ["eu", "us", "ap"]);
    assert!(near.brokers[0].local, "the answering broker marks itself");

    c.broker.kill();
    let two = [all[0], all[1]];
    eventually(
        "the killed broker's announcement expires at A and B",
        || async { (knows(&a, &two).await && knows(&b, &two).await).then_some(()) },
    )
    .await;
    // The sweep that drops it counts it (the directory hides it already).
    eventually("A counts the expiry in its metrics", || async {
        let metrics = reqwest::get(format!("{}/metrics", a.broker.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let expired: u64 = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("brume_federation_announcements_total{outcome=\"expired\"} ")
            })
            .and_then(|n| n.trim().parse().ok())?;
        (expired >= 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ring_of_full_brokers_answers_503_within_its_hops_without_a_loop() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path();
    let a = start(home, "a", &[], FREE, "0");
    let boot = vec![p2p_addr(&a.broker.data)];
    let b = start(home, "b", &boot, FREE, "10");
    let c = start(home, "c", &boot, FREE, "20");
    for f in [&a, &b, &c] {
        publish_echo(f).await;
    }
    let ids = [
        a.broker.broker_id.as_str(),
        b.broker.broker_id.as_str(),
        c.broker.broker_id.as_str(),
    ];
    for f in [&a, &b, &c] {
        eventually(
            "every broker sees the others serve default~echo",
            || async {
                let d = f
                    .client
                    .directory(Some("default~echo"), None, None, None)
                    .await
                    .ok()?;
                (d.brokers.len() == 3).then_some(())
            },
        )
        .await;
    }
    // No broker has a provider: each forwards to one not yet on the list.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/functions/default~echo/invoke", a.broker.url))
        .bearer_auth(&a.key)
        .body("hi")
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status().as_u16(), 503);
    let by = resp
        .headers()
        .get(fh::FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body: serde_json::Value = resp.json().await.expect("error JSON");
    assert_eq!(body["code"], "no_broker_available", "{body}");
    let hops: Vec<&str> = by.split(',').collect();
    assert_eq!(
        hops.len(),
        2,
        "A, then one more, then the last refused: {by}"
    );
    assert_eq!(hops[0], ids[0].to_ascii_lowercase());
    let mut seen = hops.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), hops.len(), "no broker twice: {by}");
    let message = body["message"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    for id in ids {
        assert!(message.contains(&id.to_ascii_lowercase()), "{message}");
    }
}

/// A keyring in `home` holding a new key `name` and broker `data`'s key.
fn keyring(home: &Path, name: &str, broker: &Path) -> (PathBuf, PathBuf, Identity) {
    let dir = home.join("keys");
    let pw = home.join("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write password file");
    let ring = Keyring::new(&dir);
    ring.create(PASSWORD.as_bytes(), Some(name))
        .expect("create key");
    let id = ring.load(name, PASSWORD.as_bytes()).expect("load key");
    import_key(home, &broker.join("broker.key"), "origin", &dir, &pw);
    (dir, pw, id)
}

/// Funds `address` at `f`'s dev chain and approves 1 token of escrow with
/// keyring key `key`.
async fn fund(f: &Fed, home: &Path, keys: &Path, pw: &Path, key: &str, address: &str) {
    f.client
        .faucet(address, 5_000_000_000_000_000_000)
        .await
        .expect("faucet");
    let out = command(home)
        .args([
            "wallet", "approve", "1.0", "--key", key, "--json", "--broker",
        ])
        .arg(&f.broker.url)
        .arg("--keys-dir")
        .arg(keys)
        .arg("--password-file")
        .arg(pw)
        .output()
        .expect("brume wallet approve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two paying brokers, the origin without a provider and the executing
/// one with one, both serving `default~echo`; Alice funded at the origin,
/// the origin's address funded at the executing broker.
struct Paid {
    origin: Fed,
    exec: Fed,
    provider: Provider,
    alice: Identity,
    alice_addr: String,
}

async fn paid_pair(home: &Path) -> Paid {
    let origin = start(home, "origin", &[], PAID, "0");
    let exec = start(home, "exec", &[p2p_addr(&origin.broker.data)], PAID, "1");
    let provider = Provider::start_args(home, &home.join("p1"), &exec.broker.url, 1, &[]);
    publish_echo(&origin).await;
    publish_echo(&exec).await;
    eventually("the origin sees the executing broker with room", || async {
        let d = origin
            .client
            .directory(Some("default~echo"), None, Some(1), None)
            .await
            .ok()?;
        d.brokers.iter().any(|e| !e.local).then_some(())
    })
    .await;
    let (keys, pw, alice) = keyring(home, "alice", &origin.broker.data);
    let alice_addr = alice.address().to_string();
    fund(&origin, home, &keys, &pw, "alice", &alice_addr).await;
    fund(&exec, home, &keys, &pw, "origin", &origin.broker.broker_id).await;
    Paid {
        origin,
        exec,
        provider,
        alice,
        alice_addr,
    }
}

async fn rows(f: &Fed, account: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        reqwest::get(format!("{}/v1/ledger/rows?account={account}", f.broker.url))
            .await
            .expect("rows")
            .json()
            .await
            .expect("rows JSON");
    v["rows"].as_array().cloned().unwrap_or_default()
}

async fn balance(f: &Fed, address: &str) -> u128 {
    let a = f.client.chain_account(address).await.expect("account");
    a.balance.parse().expect("a balance")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_without_room_forwards_a_call_billed_once_at_each_broker_and_paid_through() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path();
    let Paid {
        origin,
        exec,
        provider,
        alice,
        alice_addr,
    } = paid_pair(home).await;
    let signed = Client::with_identity(&origin.broker.url, alice.clone()).expect("client");
    let resp = signed
        .relay(
            http::Method::POST,
            "/v1/functions/default~echo/invoke?arg=hello",
            http::HeaderMap::new(),
            Bytes::new(),
        )
        .await
        .expect("invoke");
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.body());
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        h(fh::BROKER).to_lowercase(),
        exec.broker.broker_id.to_lowercase()
    );
    assert_eq!(
        h(fh::FORWARDED_BY).to_lowercase(),
        origin.broker.broker_id.to_lowercase()
    );
    assert_eq!(h("x-brume-provider"), provider.address);
    let work = h("x-brume-work-id");
    let cost: u128 = h("x-brume-cost").parse().expect("a cost");
    assert!(cost > 0);

    // One row at each broker: the executing broker bills the origin, the
    // origin bills Alice the same amount under the executing broker's work id.
    // (A call's row is appended after its response: wait for it.)
    let at_exec = eventually("the executing broker's row", || async {
        let r = rows(&exec, &origin.broker.broker_id).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(at_exec.len(), 1, "{at_exec:?}");
    assert_eq!(at_exec[0]["work_id"], work.as_str());
    let exec_amount: u128 = at_exec[0]["token_amount"]
        .as_str()
        .map(|s| s.parse().expect("amount"))
        .or_else(|| at_exec[0]["token_amount"].as_u64().map(u128::from))
        .expect("token_amount");
    assert_eq!(exec_amount, cost);
    // The origin bills Alice once it has checked the executing broker's
    // row against the provider's signed receipt.
    let at_origin = eventually("the origin bills Alice the checked cost", || async {
        let r = rows(&origin, &alice_addr).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(
        at_origin.len(),
        1,
        "{at_origin:?}\n{}",
        origin.broker.proc.stderr_tail()
    );
    assert_eq!(at_origin[0]["work_id"], format!("forwarded-{work}"));
    let metrics = reqwest::get(format!("{}/metrics", origin.broker.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("brume_federation_forwards_total{outcome=\"billed\"} 1"),
        "the bill was checked: {metrics}"
    );

    // Both settle: Alice paid the origin what the origin paid the
    // executing broker, whose provider got its share of it.
    let (alice_before, origin_before, provider_before) = (
        balance(&origin, &alice_addr).await,
        balance(&exec, &origin.broker.broker_id).await,
        balance(&exec, &provider.address).await,
    );
    origin.client.settle().await.expect("settle the origin");
    exec.client
        .settle()
        .await
        .expect("settle the executing broker");
    assert_eq!(alice_before - balance(&origin, &alice_addr).await, cost);
    assert_eq!(
        origin_before - balance(&exec, &origin.broker.broker_id).await,
        cost
    );
    let paid = balance(&exec, &provider.address).await - provider_before;
    assert!(
        paid > 0 && paid <= cost,
        "the provider got {paid} of {cost}"
    );

    // Settling again moves nothing more.
    origin.client.settle().await.expect("settle again");
    exec.client.settle().await.expect("settle again");
    assert_eq!(alice_before - balance(&origin, &alice_addr).await, cost);
}

/// A provider caught lying at one broker (an audited call, re-executed
/// there) is banned at its peer too, which checks the gossiped proof by
/// re-executing it with the module fetched by digest.
#[cfg_attr(
    not(debug_assertions),
    ignore = "test faults exist in debug builds only"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_cheat_proven_at_one_broker_is_banned_at_its_peer_after_a_re_execution_there() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path();
    let audited = format!("{FREE}\n[broker.trust]\naudit_share_ppm = 1000000\n");
    let a = start(home, "a", &[], &audited, "0");
    let b = start(home, "b", &[p2p_addr(&a.broker.data)], FREE, "1");
    eventually("A and B know each other", || async {
        let ids = [a.broker.broker_id.as_str(), b.broker.broker_id.as_str()];
        (knows(&a, &ids).await && knows(&b, &ids).await).then_some(())
    })
    .await;

    // One liar, one key, connected to both brokers.
    let liar_a = Provider::start_args(
        home,
        &home.join("liar-a"),
        &a.broker.url,
        1,
        &["--fault", "wrong-output"],
    );
    let data_b = home.join("liar-b");
    std::fs::create_dir_all(&data_b).expect("mkdir");
    std::fs::copy(
        home.join("liar-a/provider.key"),
        data_b.join("provider.key"),
    )
    .expect("copy the key");
    let liar_b = Provider::start_args(
        home,
        &data_b,
        &b.broker.url,
        1,
        &["--fault", "wrong-output"],
    );
    assert_eq!(liar_a.address, liar_b.address);
    let liar = liar_a.address.clone();

    publish_echo(&a).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/functions/default~echo/invoke", a.broker.url))
        .bearer_auth(&a.key)
        .header("x-brume-verify", "audit")
        .body("the truth")
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status(), 200);
    assert_ne!(
        resp.bytes().await.expect("body").as_ref(),
        b"the truth",
        "it lied"
    );

    let gone = |f: &Fed| {
        let (client, liar) = (f.client.clone(), liar.clone());
        async move {
            let list = client.providers().await.ok()?;
            list.providers
                .iter()
                .all(|p| p.address != liar)
                .then_some(())
        }
    };
    eventually("A bans the liar", || gone(&a)).await;
    // A's record travels, signed by A: at B, A's announcement counts the
    // ban and names the liar banned among the providers A has seen.
    eventually("B hears A's record of the ban", || async {
        let d = directory(&b).await;
        let at_a = d.brokers.iter().find(|e| {
            e.announcement
                .announcement
                .broker
                .eq_ignore_ascii_case(&a.broker.broker_id)
        })?;
        let ann = &at_a.announcement.announcement;
        (ann.record.cheats_banned >= 1
            && ann
                .providers_seen
                .iter()
                .any(|p| p.banned && p.address.eq_ignore_ascii_case(&liar)))
        .then_some(())
    })
    .await;
    eventually("B bans the liar on A's proof, re-executed", || gone(&b)).await;
    let metrics = reqwest::get(format!("{}/metrics", b.broker.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("brume_federation_cheat_notices_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    // B's ban is durable: its standings name the liar as banned.
    let out = command(home)
        .args(["broker", "providers", "list", "--json", "--data"])
        .arg(&b.broker.data)
        .output()
        .expect("brume broker providers list");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ban = list["bans"]
        .as_array()
        .and_then(|bans| {
            bans.iter().find(|b| {
                b["address"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(&liar))
            })
        })
        .unwrap_or_else(|| panic!("no ban of {liar} at B: {list}"));
    assert!(
        ban["reason"]
            .as_str()
            .is_some_and(|r| r.contains("re-executed here")),
        "{ban}"
    );
    assert_eq!(ban["proof"], true, "B keeps the proof it checked");
    drop((liar_a, liar_b));
}

/// `brume provide --discover`: a provider joins the broker of its region
/// from another broker's directory, and moves to the next best when that
/// broker dies.
#[tokio::test(flavor = "multi_thread")]
async fn a_discovering_provider_joins_its_regions_broker_and_moves_when_it_dies() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path();
    let eu = start(home, "eu", &[], FREE, "48.8");
    let mut us = start(home, "us", &[p2p_addr(&eu.broker.data)], FREE, "40.7");
    let ids = [eu.broker.broker_id.clone(), us.broker.broker_id.clone()];
    eventually("the brokers know each other", || async {
        let ids = [ids[0].as_str(), ids[1].as_str()];
        (knows(&eu, &ids).await && knows(&us, &ids).await).then_some(())
    })
    .await;

    // Asked through the eu broker, a provider in region us joins us.
    let mut p = Provider::spawn(
        home,
        &home.join("p"),
        &eu.broker.url,
        1,
        &[
            "--discover",
            "--region",
            "us",
            "--rediscover-after",
            "300ms",
        ],
    );
    let joined = p.proc.wait_event("connected");
    assert_eq!(joined["broker"], us.broker.url.as_str(), "{joined}");

    // us dies: the provider moves to eu.
    us.broker.kill();
    let lost = p.proc.wait_event("lost");
    assert!(
        lost["broker"]
            .as_str()
            .is_some_and(|b| b.eq_ignore_ascii_case(&ids[1])),
        "{lost}"
    );
    let moved = p.proc.wait_event("connected");
    assert_eq!(moved["broker"], eu.broker.url.as_str(), "{moved}");
    let list = eu.client.providers().await.expect("providers");
    assert!(
        list.providers.iter().any(|x| x.address == p.address),
        "{list:?}"
    );
}

/// A job the origin has no room for runs at its peer under the peer's id;
/// the origin relays its info, events and result, and bills its caller
/// what the peer billed it once it ends: one row at each broker, paid
/// through after both settle.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_without_room_forwards_a_job_relays_it_and_bills_it_once_at_each_broker() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path();
    let Paid {
        origin,
        exec,
        provider,
        alice,
        alice_addr,
    } = paid_pair(home).await;
    let mine = Client::with_identity(&origin.broker.url, alice.clone()).expect("client");
    let job = mine
        .submit(&brume_client::JobSpec {
            service: Some("default~echo".into()),
            stdin: Some(brume_client::brume_api::rest::Output(Bytes::from_static(
                b"far away",
            ))),
            ..Default::default()
        })
        .await
        .expect("submit");
    // Followed at the origin: the events and the result come from exec.
    let (events, result) = follow(&mine, job.id).await;
    assert_eq!(
        result.state,
        brume_client::brume_api::rest::JobState::Succeeded,
        "{result:?}"
    );
    assert_eq!(result.stdout.0.as_ref(), b"far away");
    assert_eq!(result.provider.as_deref(), Some(provider.address.as_str()));
    assert!(!events.is_empty());
    let info = mine.job(job.id).await.expect("job info through the origin");
    assert!(info.state.is_final());
    // Nobody else sees it at the origin.
    let other = Client::with_identity(&origin.broker.url, Identity::random()).expect("client");
    assert!(other.job(job.id).await.is_err());

    // (A call's row is appended after its response: wait for it.)
    let at_exec = eventually("the executing broker's row", || async {
        let r = rows(&exec, &origin.broker.broker_id).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(at_exec.len(), 1, "{at_exec:?}");
    assert_eq!(at_exec[0]["work_id"], job.id.to_string());
    let cost: u128 = at_exec[0]["token_amount"]
        .as_str()
        .map(|s| s.parse().expect("amount"))
        .or_else(|| at_exec[0]["token_amount"].as_u64().map(u128::from))
        .expect("token_amount");
    let forwarded = format!("forwarded-{}", job.id);
    let at_origin = eventually("the origin bills Alice once the job is over", || async {
        let r = rows(&origin, &alice_addr).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(at_origin.len(), 1, "{at_origin:?}");
    assert_eq!(at_origin[0]["work_id"], forwarded.as_str());

    let (alice_before, origin_before) = (
        balance(&origin, &alice_addr).await,
        balance(&exec, &origin.broker.broker_id).await,
    );
    origin.client.settle().await.expect("settle the origin");
    exec.client
        .settle()
        .await
        .expect("settle the executing broker");
    assert_eq!(alice_before - balance(&origin, &alice_addr).await, cost);
    assert_eq!(
        origin_before - balance(&exec, &origin.broker.broker_id).await,
        cost
    );
}
