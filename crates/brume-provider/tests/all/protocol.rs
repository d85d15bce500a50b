use std::sync::atomic::Ordering;
use std::time::Duration;

use brume_api::wire::{Assign, FromProvider, Outcome, ToProvider};
use brume_api::{Limits, Profile, ServiceKind, WorkId};
use brume_provider::{Connection, Provider, ProviderConfig};
use bytes::Bytes;
use test_programs_artifacts as art;

use crate::fake_broker::FakeBroker;

pub(crate) fn assign(bytes: &[u8], service: &str, args: &[&str], stdin: &str) -> Box<Assign> {
    Box::new(Assign {
        work_id: WorkId::new(),
        attempt: 1,
        digest: brume_sandbox::Digest::of(bytes).to_string(),
        service: Some(service.into()),
        kind: ServiceKind::Command,
        profile: Profile::Standard,
        limits: Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        },
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        stdin: Bytes::copy_from_slice(stdin.as_bytes()),
        http: None,
        progress_ms: None,
        seed: 0,
        clock_start_ms: 0,
        module_signature: None,
        batched_receipt: false,
        inputs: Vec::new(),
        outputs: Vec::new(),
        gpus: Default::default(),
        vcpus: Default::default(),
        network: Default::default(),
        image: None,
        max_price: None,
        affinity: None,
        lease: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_assign_cancel_heartbeat_and_drain() {
    let mut broker = FakeBroker::start(&[art::ECHO_P1_BYTES, art::CPU_LOOP_P1_BYTES], 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Provider::start(ProviderConfig {
        broker_url: broker.url.clone(),
        data_dir: dir.path().to_path_buf(),
        slots: 2,
        memory_bytes: 256 << 20,
        allowed_services: Some(vec!["echo".into(), "cpu".into()]),
        drain_grace: Duration::from_secs(10),
        // 100 micro-tokens per giga-instruction.
        min_fee_per_hour: 360_000,
        policy: brume_api::wire::Policy::Profit,
        ..ProviderConfig::default()
    })
    .await
    .expect("provider starts");
    assert!(provider.fitness_mips() > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("provider.key"))
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));
    }
    let addr_file = std::fs::read_to_string(dir.path().join("control.addr")).expect("addr file");
    assert_eq!(addr_file.trim(), provider.control_addr().to_string());

    // Handshake: the fake checked the signature; capabilities are ours.
    let mut conn = broker.next_conn().await;
    provider.connected().await;
    assert_eq!(provider.connection(), Connection::Connected);
    assert_eq!(conn.hello.address, provider.address());
    assert_eq!(conn.hello.capabilities.slots, 2);
    assert_eq!(
        conn.hello.capabilities.fitness_mips,
        provider.fitness_mips()
    );
    assert!(conn.hello.capabilities.cached.is_empty());
    // Its floor is its ask, and its policy is announced.
    assert_eq!(conn.hello.price_ask, 100);
    assert_eq!(
        conn.hello.capabilities.policy,
        brume_api::wire::Policy::Profit
    );

    // Assign: the fetch and compile reported as Cached, then Done. An
    // invocation sends Accepted only if it is not done within ACK_AFTER.
    let sent = assign(art::ECHO_P1_BYTES, "echo", &["echo"], "hi");
    conn.send(1, ToProvider::Assign(sent.clone()));
    let echo_digest = brume_sandbox::Digest::of(art::ECHO_P1_BYTES).to_string();
    let mut done = None;
    let mut cached = false;
    while done.is_none() {
        match conn.recv().await {
            (0, FromProvider::Cached(d)) => {
                assert_eq!(d, vec![echo_digest.clone()]);
                cached = true;
            }
            (1, FromProvider::Done(o)) => done = Some(o),
            (1, FromProvider::Accepted) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(cached, "Cached came before Done");
    let done = done.expect("done");
    // The result comes with a receipt signature that verifies under the
    // provider's address, over what was assigned and what came back.
    let receipt = brume_api::receipt::Receipt::new(&sent, &provider.address(), &done.outcome);
    let signer = brume_identity::verify(
        receipt.message().as_bytes(),
        &done.signature,
        &provider.address(),
    );
    assert!(signer.is_ok(), "{signer:?}");
    let mut forged = receipt.clone();
    forged.fuel += 1;
    assert!(
        brume_identity::verify(
            forged.message().as_bytes(),
            &done.signature,
            &provider.address()
        )
        .is_err(),
        "the signature covers the fuel"
    );
    match done.outcome {
        Outcome::Exited {
            exit_code,
            stdout,
            usage,
            ..
        } => {
            assert_eq!(exit_code, 0);
            assert_eq!(&stdout[..], b"hi");
            assert!(usage.fuel > 0);
        }
        other => panic!("{other:?}"),
    }

    // Refusals.
    conn.send(
        2,
        ToProvider::Assign(assign(art::ECHO_P1_BYTES, "nope", &["x"], "")),
    );
    let mut big = assign(art::ECHO_P1_BYTES, "echo", &["x"], "");
    big.limits.memory_bytes = 1 << 30;
    conn.send(3, ToProvider::Assign(big));
    let mut unknown = assign(b"not in the fake", "echo", &["x"], "");
    unknown.digest = "00".repeat(32);
    conn.send(4, ToProvider::Assign(unknown));
    // Work bidding under its floor is declined, whatever the broker does.
    let mut cheap = assign(art::ECHO_P1_BYTES, "echo", &["x"], "");
    cheap.max_price = Some(99);
    conn.send(40, ToProvider::Assign(cheap));
    let mut reasons = std::collections::HashMap::new();
    while reasons.len() < 4 {
        match conn.recv().await {
            (ch, FromProvider::Refused(r)) => {
                reasons.insert(ch, r.reason);
            }
            (4, FromProvider::Accepted) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reasons[&2], "not_allowed");
    assert_eq!(reasons[&3], "no_capacity");
    assert_eq!(reasons[&4], "fetch_failed");
    assert_eq!(reasons[&40], "below_floor");

    // A long job reports progress, then is cancelled: nothing more on its channel.
    let mut long = assign(art::CPU_LOOP_P1_BYTES, "cpu", &["cpu", "100000000000"], "");
    long.progress_ms = Some(20);
    conn.send(5, ToProvider::Assign(long));
    assert!(matches!(conn.recv().await, (5, FromProvider::Accepted)));
    let mut last_fuel = 0;
    let mut progress = 0;
    while progress < 3 {
        match conn.recv().await {
            (5, FromProvider::Progress(p)) => {
                assert!(p.fuel >= last_fuel);
                last_fuel = p.fuel;
                progress += 1;
            }
            (0, FromProvider::Cached(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(last_fuel > 0);
    assert_eq!(provider.status().in_flight, 1);
    conn.send(5, ToProvider::Cancel);
    let after = conn.quiet_for(Duration::from_millis(300)).await;
    // Progress reports already on their way when the Cancel lands may
    // follow it (on a loaded machine, a tick or two); nothing else may:
    // no result, no failure.
    assert!(
        after
            .iter()
            .all(|(ch, f)| *ch != 5 || matches!(f, FromProvider::Progress(_))),
        "frames after Cancel: {after:?}"
    );
    assert_eq!(provider.status().in_flight, 0);
    let st = provider.status();
    assert_eq!((st.work_done, st.connection.as_str()), (1, "connected"));

    // Heartbeat: a silent broker is dropped and the provider reconnects.
    conn.mute.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the provider drops a silent broker");
    let mut conn = broker.next_conn().await;
    provider.connected().await;
    assert!(
        conn.hello.capabilities.cached.contains(&echo_digest),
        "{:?}",
        conn.hello.capabilities.cached
    );

    // Drain: Draining, new work refused, the socket closed, wait() returns.
    // A cached program runs without a fetch on the new session.
    conn.send(
        1,
        ToProvider::Assign(assign(art::ECHO_P1_BYTES, "echo", &["echo"], "again")),
    );
    let mut first = conn.recv().await;
    if matches!(first, (1, FromProvider::Accepted)) {
        first = conn.recv().await;
    }
    assert!(matches!(first, (1, FromProvider::Done(_))), "{first:?}");
    // In-flight work finishes during the drain.
    // A job (progress_ms set) is accepted at once; the interval is long
    // enough that no Progress frame interleaves.
    let mut cpu = assign(art::CPU_LOOP_P1_BYTES, "cpu", &["cpu", "200000000"], "");
    cpu.progress_ms = Some(3_600_000);
    conn.send(3, ToProvider::Assign(cpu));
    assert!(matches!(conn.recv().await, (3, FromProvider::Accepted)));
    provider.drain();
    assert!(matches!(conn.recv().await, (0, FromProvider::Draining)));
    conn.send(
        2,
        ToProvider::Assign(assign(art::ECHO_P1_BYTES, "echo", &["echo"], "")),
    );
    match conn.recv().await {
        (2, FromProvider::Refused(r)) => assert_eq!(r.reason, "draining"),
        other => panic!("unexpected {other:?}"),
    }
    match conn.recv().await {
        (3, FromProvider::Done(o)) => {
            assert!(matches!(o.outcome, Outcome::Exited { exit_code: 0, .. }))
        }
        other => panic!("unexpected {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), provider.wait())
        .await
        .expect("drains promptly")
        .expect("drains cleanly");
    assert!(!dir.path().join("control.addr").exists());
}

/// An invocation's `Done` carries its receipt's leaf, not a signature; the
/// provider signs the batch's Merkle root once, on the control channel,
/// and any one receipt is then proved by its path to that root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_receipts_are_signed_once_per_batch() {
    use brume_api::batch::{self, ReceiptInclusion, RootClaim, SignedRoot};
    let mut broker = FakeBroker::start(&[art::ECHO_P1_BYTES], 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Provider::start(ProviderConfig {
        broker_url: broker.url.clone(),
        data_dir: dir.path().to_path_buf(),
        slots: 2,
        memory_bytes: 256 << 20,
        ..ProviderConfig::default()
    })
    .await
    .expect("provider starts");
    let mut conn = broker.next_conn().await;
    let mut receipts = Vec::new();
    let mut leaves = Vec::new();
    for (ch, input) in [(1u32, "a"), (2, "b"), (3, "c")] {
        let mut sent = assign(art::ECHO_P1_BYTES, "echo", &["echo"], input);
        sent.batched_receipt = true;
        conn.send(ch, ToProvider::Assign(sent.clone()));
        let done = loop {
            match conn.recv().await {
                (c, FromProvider::Done(d)) if c == ch => break d,
                (_, FromProvider::Cached(_) | FromProvider::Accepted) => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(done.signature.is_empty(), "no signature per call");
        let receipt = brume_api::receipt::Receipt::new(&sent, &provider.address(), &done.outcome);
        let leaf = batch::leaf(&receipt);
        assert_eq!(done.leaf.as_deref(), Some(&leaf[..]));
        receipts.push(receipt);
        leaves.push(leaf);
    }
    // The batch is signed within ROOT_EVERY_MS of its first leaf.
    let root = match conn.recv().await {
        (0, FromProvider::Root(r)) => r,
        other => panic!("expected the batch's root, got {other:?}"),
    };
    assert_eq!((root.batch, root.size), (0, 3));
    assert_eq!(&root.root[..], &batch::root(&leaves)[..]);
    let signed = SignedRoot {
        claim: RootClaim {
            provider: provider.address(),
            broker: "0xfake".into(),
            batch: 0,
            size: 3,
            root: hex::encode(&root.root),
        },
        signature: format!("0x{}", hex::encode(&root.signature)),
    };
    let verify = |m: &[u8], s: &[u8], a: &str| brume_identity::verify(m, s, a).is_ok();
    assert!(signed.verifies(verify));
    // Each receipt is proved by its path; a changed one is not.
    for (i, r) in receipts.iter().enumerate() {
        let proof = ReceiptInclusion::new(r.clone(), &leaves, i, signed.clone());
        assert_eq!(proof.check(verify), Ok(provider.address()));
        let mut forged = proof.clone();
        forged.receipt.fuel += 1;
        assert_eq!(
            forged.check(verify),
            Err(batch::InclusionError::NotIncluded)
        );
    }
}
