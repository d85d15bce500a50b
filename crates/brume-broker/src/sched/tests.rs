//! The scheduler on its own: matching, the index, FCFS and failover.

use super::*;
use crate::work::WorkSpec;
use brume_api::rest::Price;
use brume_api::wire::Capabilities;
use brume_api::{Limits, Profile, ServiceKind};
use bytes::Bytes;
use tokio::sync::mpsc;

pub(super) fn caps(
    slots: u32,
    memory: u64,
    allowed: Option<Vec<&str>>,
    cached: &[&str],
) -> Capabilities {
    Capabilities {
        slots,
        memory_bytes: memory,
        fitness_mips: 1000,
        region: "test".into(),
        allowed_services: allowed.map(|a| a.into_iter().map(String::from).collect()),
        cached: cached.iter().map(|s| s.to_string()).collect(),
        org: None,
        attestation: None,
        containers: false,
        gpus: Default::default(),
        network: false,
        hours: None,
        location: None,
        policy: Default::default(),
    }
}

pub(super) fn provider(
    s: &mut Scheduler,
    id: ProviderId,
    caps: Capabilities,
    ask: Price,
) -> mpsc::UnboundedReceiver<Message> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut after = After::default();
    s.add_provider(
        id,
        ProviderEntry::new(format!("0x{id:040x}"), caps, ask, tx),
        &mut after,
    );
    drop(after);
    rx
}

pub(super) fn work(
    service: &str,
    digest: &str,
    memory: u64,
    max_price: Option<Price>,
) -> Arc<Work> {
    work_with(service, digest, memory, max_price, |_| {})
}

/// [`work`], with `edit` applied to its spec.
pub(super) fn work_with(
    service: &str,
    digest: &str,
    memory: u64,
    max_price: Option<Price>,
    edit: impl FnOnce(&mut WorkSpec),
) -> Arc<Work> {
    let mut spec = WorkSpec {
        service: Some(service.into()),
        digest: digest.into(),
        kind: ServiceKind::Command,
        profile: Profile::Standard,
        limits: Limits {
            memory_bytes: memory,
            ..Limits::default()
        },
        args: vec![],
        env: vec![],
        stdin: Bytes::new(),
        http: None,
        max_price,
        max_attempts: 2,
        progress_ms: None,
        seed: 0,
        clock_start_ms: 0,
        needs: Default::default(),
        module_signature: None,
        distinct: None,
        avoid: None,
        only: None,
        tiers: crate::trust::ALL_TIERS,
        org: None,
        wants_receipt: false,
        class: crate::work::Class::Batch,
        account: "acct".into(),
        oci: Default::default(),
        affinity: None,
        lease: false,
    };
    edit(&mut spec);
    Work::new(WorkId::new(), spec, Duration::from_secs(60), 0)
}

/// Submits `w` and returns the provider it went to (None: queued).
pub(super) fn place(s: &mut Scheduler, w: &Arc<Work>) -> Option<ProviderId> {
    let mut after = After::default();
    s.submit(w.clone(), &mut after);
    drop(after);
    s.by_work.get(&w.id).map(|(p, _)| *p)
}

#[test]
fn prefers_a_provider_with_the_module_then_the_least_loaded() {
    let mut s = Scheduler::default();
    let _a = provider(&mut s, 1, caps(4, 1 << 30, None, &[]), 0);
    let _b = provider(&mut s, 2, caps(4, 1 << 30, None, &["d1"]), 0);
    let _c = provider(&mut s, 3, caps(4, 1 << 30, None, &[]), 0);
    // Warm wins even over equally idle providers.
    assert_eq!(place(&mut s, &work("f", "d1", 1, None)), Some(2));
    assert_eq!(place(&mut s, &work("f", "d1", 1, None)), Some(2));
    // Cold work goes to the least loaded (1 or 3, not 2 which is busy).
    let p = place(&mut s, &work("g", "d2", 1, None));
    assert!(matches!(p, Some(1) | Some(3)), "{p:?}");
    let q = place(&mut s, &work("g", "d2", 1, None));
    assert!(
        matches!(q, Some(1) | Some(3)) && q != p,
        "{q:?} after {p:?}"
    );
}

#[test]
fn matching_checks_memory_service_and_price() {
    let mut s = Scheduler::default();
    let _small = provider(&mut s, 1, caps(4, 100, None, &[]), 0);
    let _picky = provider(&mut s, 2, caps(4, 1 << 30, Some(vec!["only"]), &[]), 0);
    let _dear = provider(&mut s, 3, caps(4, 1 << 30, None, &[]), 50);
    assert_eq!(
        place(&mut s, &work("x", "d", 1 << 20, Some(10))),
        None,
        "no provider fits"
    );
    assert_eq!(place(&mut s, &work("x", "d", 1 << 20, Some(50))), Some(3));
    assert_eq!(place(&mut s, &work("only", "d", 1 << 20, Some(0))), Some(2));
    assert_eq!(place(&mut s, &work("x", "d", 10, Some(0))), Some(1));
}

#[test]
fn freed_slots_take_queued_work_first_come_first_served() {
    let mut s = Scheduler::default();
    let _p = provider(&mut s, 1, caps(1, 1 << 30, None, &[]), 0);
    let first = work("f", "d", 1, None);
    let second = work("f", "d", 1, None);
    let third = work("f", "d", 1, None);
    assert_eq!(place(&mut s, &first), Some(1));
    assert_eq!(place(&mut s, &second), None);
    assert_eq!(place(&mut s, &third), None);
    let (_, ch) = s.by_work[&first.id];
    let mut after = After::default();
    let outcome = Box::new(wire::Outcome::Exited {
        exit_code: 0,
        stdout: Bytes::new(),
        stderr: Bytes::new(),
        usage: Default::default(),
        outputs: Vec::new(),
    });
    s.done(1, ch, outcome.clone(), &mut after);
    let ended: Vec<WorkId> = after.finish.iter().map(|(w, _)| w.id).collect();
    assert_eq!(
        ended,
        vec![first.id],
        "the first work's completion is reported"
    );
    assert_eq!(
        s.by_work.get(&second.id).map(|x| x.0),
        Some(1),
        "the oldest queued work runs next"
    );
    assert!(!s.by_work.contains_key(&third.id));
    // A late result for an attempt no longer in flight is ignored.
    let mut after = After::default();
    s.done(1, ch, outcome, &mut after);
    assert!(after.finish.is_empty());
}

#[test]
fn a_lost_provider_requeues_its_work_until_attempts_run_out() {
    let mut s = Scheduler::default();
    let _a = provider(&mut s, 1, caps(1, 1 << 30, None, &[]), 0);
    let w = work("f", "d", 1, None);
    assert_eq!(place(&mut s, &w), Some(1));
    let _b = provider(&mut s, 2, caps(1, 1 << 30, None, &[]), 0);
    let mut after = After::default();
    s.remove_provider(1, "disconnected", &mut after);
    assert_eq!(after.retries, 1);
    drop(after);
    assert_eq!(
        s.by_work.get(&w.id).map(|x| x.0),
        Some(2),
        "attempt 2 on the other provider"
    );
    let mut after = After::default();
    s.remove_provider(2, "disconnected", &mut after);
    assert_eq!(after.finish.len(), 1, "max_attempts = 2 reached");
    match &after.finish[0].1 {
        Completion::Failed { error, attempts } => {
            assert_eq!(error.code, ErrorCode::ProviderUnavailable);
            assert_eq!(*attempts, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ten_thousand_providers_all_get_work_through_the_index() {
    let mut s = Scheduler::default();
    let mut rxs = Vec::new();
    for id in 1..=10_000u64 {
        rxs.push(provider(&mut s, id, caps(1, 1 << 30, None, &[]), 0));
    }
    let works: Vec<_> = (0..10_000).map(|_| work("f", "d", 1, None)).collect();
    let mut used = HashSet::new();
    for w in &works {
        let p = place(&mut s, w).expect("a free provider exists");
        assert!(
            used.insert(p),
            "provider {p} got two units while others were idle"
        );
    }
    assert_eq!(s.totals.slots_busy, 10_000);
    assert_eq!(
        place(&mut s, &work("f", "d", 1, None)),
        None,
        "all busy: queued"
    );
    assert_eq!(s.queue_len(), 1);
}

/// Replicas are drawn by stake, not ranked by reputation: a provider with
/// no stake never gets a replica while one with stake is free, whatever
/// its run of verified results; without any stake, the draw is uniform.
#[test]
fn replicas_are_drawn_by_stake_not_reputation() {
    let mut s = Scheduler::default();
    let _veteran = provider(&mut s, 1, caps(64, 1 << 40, None, &[]), 0);
    let _staked = provider(&mut s, 2, caps(64, 1 << 40, None, &[]), 0);
    s.reputation_mut(&format!("0x{:040x}", 1)).consecutive_valid = 1_000;
    let mut after = After::default();
    s.set_stake(2, 5, &mut after);
    drop(after);
    let replica = || {
        work_with("f", "d", 1, None, |spec| {
            spec.distinct = Some(Default::default());
        })
    };
    for _ in 0..20 {
        assert_eq!(place(&mut s, &replica()), Some(2));
    }
    // Plain work still goes by rank: the veteran.
    assert_eq!(place(&mut s, &work("f", "d", 1, None)), Some(1));
    // Nobody staked: both get replicas.
    let mut after = After::default();
    s.set_stake(2, 0, &mut after);
    drop(after);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        if let Some(p) = place(&mut s, &replica()) {
            seen.insert(p);
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn a_tier_that_needs_bandwidth_goes_to_providers_measured_fast_enough() {
    let mut s = Scheduler::default();
    let (tx, _slow_rx) = mpsc::unbounded_channel();
    let mut slow = ProviderEntry::new("0xslow".into(), caps(4, 1 << 30, None, &[]), 0, tx);
    slow.measured_mbps = 50;
    let (tx, _fast_rx) = mpsc::unbounded_channel();
    let mut fast = ProviderEntry::new("0xfast".into(), caps(4, 1 << 30, None, &[]), 0, tx);
    fast.measured_mbps = 5_000;
    let mut after = After::default();
    s.add_provider(1, slow, &mut after);
    s.add_provider(2, fast, &mut after);
    drop(after);
    let needs = |spec: &mut WorkSpec| spec.needs.min_mbps = 1_000;
    for _ in 0..4 {
        assert_eq!(place(&mut s, &work_with("f", "d", 1, None, needs)), Some(2));
    }
    // Without the need, either will do.
    assert!(place(&mut s, &work("f", "d", 1, None)).is_some());
}
