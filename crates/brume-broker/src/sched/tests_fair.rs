//! The queue's contract: functions before batch, accounts in turn, FCFS
//! within one account, tier lanes, refusals for lack of room, and the
//! slots kept for functions.

use super::tests::{caps, place, provider, work};
use super::*;
use crate::trust;
use brume_api::rest::Price;
use bytes::Bytes;
use tokio::sync::mpsc;

/// A unit of `class` for `account`, runnable on the tiers of `tiers`.
fn unit(class: Class, account: &str, tiers: u8) -> Arc<Work> {
    let w = work("f", "d", 1, None);
    let mut spec = Arc::try_unwrap(w).expect("fresh").spec;
    spec.class = class;
    spec.account = account.into();
    spec.tiers = tiers;
    Work::new(WorkId::new(), spec, Duration::from_secs(60), 0)
}

fn ok() -> Box<wire::Outcome> {
    Box::new(wire::Outcome::Exited {
        exit_code: 0,
        stdout: Bytes::new(),
        stderr: Bytes::new(),
        usage: Default::default(),
        outputs: Vec::new(),
    })
}

/// Ends `w`'s attempt with a result; returns what its provider took next.
fn finish(s: &mut Scheduler, w: &Arc<Work>) -> Vec<WorkId> {
    let (p, ch) = s.by_work[&w.id];
    let before: HashSet<WorkId> = s.by_work.keys().copied().collect();
    let mut after = After::default();
    s.done(p, ch, ok(), &mut after);
    drop(after);
    s.by_work
        .keys()
        .filter(|id| !before.contains(id))
        .copied()
        .collect()
}

fn running(s: &Scheduler, w: &Arc<Work>) -> bool {
    s.by_work.contains_key(&w.id)
}

#[test]
fn functions_go_before_batch() {
    let mut s = Scheduler::default();
    let _p = provider(&mut s, 1, caps(1, 1 << 30, None, &[]), 0);
    let first = unit(Class::Batch, "a", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &first), Some(1));
    let batch = unit(Class::Batch, "a", trust::ALL_TIERS);
    let call = unit(Class::Sync, "b", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &batch), None);
    assert_eq!(place(&mut s, &call), None);
    assert_eq!(
        finish(&mut s, &first),
        [call.id],
        "the call, queued later, goes first"
    );
    assert_eq!(finish(&mut s, &call), [batch.id]);
}

#[test]
fn accounts_take_turns_and_each_is_served_in_order() {
    let mut s = Scheduler::default();
    let _p = provider(&mut s, 1, caps(1, 1 << 30, None, &[]), 0);
    let busy = unit(Class::Batch, "a", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &busy), Some(1));
    let a: Vec<_> = (0..100)
        .map(|_| unit(Class::Batch, "a", trust::ALL_TIERS))
        .collect();
    for w in &a {
        assert_eq!(place(&mut s, w), None);
    }
    let b = unit(Class::Batch, "b", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &b), None);
    // A's backlog holds B's one job back by one slot time at most.
    let next = finish(&mut s, &busy);
    assert_eq!(next, [a[0].id], "A's turn came first: it queued first");
    assert_eq!(finish(&mut s, &a[0]), [b.id], "then B's");
    // Then A's, in the order they came.
    let mut prev = b.clone();
    for w in &a[1..] {
        assert_eq!(finish(&mut s, &prev), [w.id]);
        prev = w.clone();
    }
    assert_eq!(s.queue_len(), 0);
}

#[test]
fn work_for_one_tier_does_not_block_work_for_another() {
    let mut s = Scheduler::default();
    let _p = provider(&mut s, 1, caps(1, 1 << 30, None, &[]), 0);
    assert_eq!(s.providers[&1].tier, 4);
    let busy = unit(Class::Batch, "a", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &busy), Some(1));
    // More tier-1-only work than any scan cap, then work any tier may run.
    let tier1: Vec<_> = (0..(SCAN_CAP * 2))
        .map(|_| unit(Class::Batch, "a", 1 << 1))
        .collect();
    for w in &tier1 {
        assert_eq!(place(&mut s, w), None);
    }
    let any = unit(Class::Batch, "a", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &any), None);
    assert_eq!(
        finish(&mut s, &busy),
        [any.id],
        "the tier-4 provider skips tier-1 work"
    );
}

#[test]
fn a_refusal_for_lack_of_room_keeps_the_provider_a_policy_refusal_does_not() {
    let mut s = Scheduler::default();
    let _p = provider(&mut s, 1, caps(2, 1 << 30, None, &[]), 0);
    let w = unit(Class::Sync, "a", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &w), Some(1));
    let (_, ch) = s.by_work[&w.id];
    let mut after = After::default();
    s.refused(1, ch, "no_capacity", &mut after);
    drop(after);
    assert!(
        !running(&s, &w),
        "not offered again at once to a full provider"
    );
    assert_eq!(w.attempts(), 0, "the bounce costs no attempt");
    assert_eq!(s.queue_len(), 1);
    // Another unit of the provider ends: a slot is free, the work goes back.
    let other = unit(Class::Sync, "b", trust::ALL_TIERS);
    assert_eq!(
        place(&mut s, &other),
        None,
        "a full provider takes nothing new"
    );
    s.providers.get_mut(&1).expect("provider").full = false;
    s.fill(1, &mut After::default());
    assert!(running(&s, &w), "the refused work went first");
    assert!(running(&s, &other));
    // A provider that refused for lack of room and frees nothing the
    // broker sees (its slot was freed by a cancel) gets the work back at
    // the next sweep.
    let mut after = After::default();
    s.cancel(other.id, &mut after);
    let (_, ch2) = s.by_work[&w.id];
    s.refused(1, ch2, "no_capacity", &mut after);
    drop(after);
    assert!(!running(&s, &w));
    s.sweep(Duration::from_secs(5), &mut After::default());
    assert!(running(&s, &w), "offered again at the sweep");
    // A policy refusal excludes the provider for that work.
    let (_, ch) = s.by_work[&w.id];
    let mut after = After::default();
    s.refused(1, ch, "blacklisted", &mut after);
    drop(after);
    assert!(!running(&s, &w));
    assert!(w.was_refused_by(1));
    s.fill(1, &mut After::default());
    assert!(!running(&s, &w), "never offered to that provider again");
}

#[test]
fn a_quarter_of_the_slots_wait_for_functions() {
    let mut s = Scheduler::default();
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut entry = ProviderEntry::new("0x01".into(), caps(4, 1 << 30, None, &[]), 0, tx);
    entry.reserve_for_functions(DEFAULT_FUNCTION_RESERVE_PPM);
    assert_eq!(entry.reserved, 1);
    s.add_provider(1, entry, &mut After::default());
    let batch: Vec<_> = (0..4)
        .map(|_| unit(Class::Batch, "a", trust::ALL_TIERS))
        .collect();
    let placed: Vec<_> = batch.iter().map(|w| place(&mut s, w)).collect();
    assert_eq!(
        placed,
        [Some(1), Some(1), Some(1), None],
        "batch leaves one slot"
    );
    let call = unit(Class::Sync, "b", trust::ALL_TIERS);
    assert_eq!(place(&mut s, &call), Some(1), "the kept slot runs the call");
    // When a batch unit ends, the waiting batch unit takes its slot.
    assert_eq!(finish(&mut s, &batch[0]), [batch[3].id]);
}

#[test]
fn the_reserve_is_never_every_slot() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut e = ProviderEntry::new("0x01".into(), caps(1, 1 << 30, None, &[]), 0, tx.clone());
    e.reserve_for_functions(DEFAULT_FUNCTION_RESERVE_PPM);
    assert_eq!(e.reserved, 0, "a one-slot provider still runs batch");
    let mut e = ProviderEntry::new("0x01".into(), caps(2, 1 << 30, None, &[]), 0, tx.clone());
    e.reserve_for_functions(DEFAULT_FUNCTION_RESERVE_PPM);
    assert_eq!(e.reserved, 1, "at least one");
    let mut e = ProviderEntry::new("0x01".into(), caps(16, 1 << 30, None, &[]), 0, tx);
    e.reserve_for_functions(DEFAULT_FUNCTION_RESERVE_PPM);
    assert_eq!(e.reserved, 4);
    e.reserve_for_functions(0);
    assert_eq!(e.reserved, 0, "0 keeps none");
}

/// A batch unit of account `a` bidding `bid` (its `max_price`).
fn bidding(bid: Option<Price>) -> Arc<Work> {
    let w = unit(Class::Batch, "a", trust::ALL_TIERS);
    let mut spec = Arc::try_unwrap(w).expect("fresh").spec;
    spec.max_price = bid;
    Work::new(WorkId::new(), spec, Duration::from_secs(60), 0)
}

#[test]
fn a_profit_provider_takes_the_best_bid_first_and_a_fifo_one_the_oldest() {
    for policy in [wire::Policy::Fifo, wire::Policy::Profit] {
        let mut s = Scheduler::default();
        let mut c = caps(1, 1 << 30, None, &[]);
        c.policy = policy;
        let _p = provider(&mut s, 1, c, 5);
        let busy = bidding(None);
        assert_eq!(place(&mut s, &busy), Some(1));
        let [none, low, high, too_low, high_later] =
            [None, Some(10), Some(30), Some(4), Some(30)].map(bidding);
        for w in [&none, &low, &high, &too_low, &high_later] {
            assert_eq!(place(&mut s, w), None);
        }
        let mut order = Vec::new();
        let mut last = busy;
        for _ in 0..4 {
            let next = finish(&mut s, &last);
            assert_eq!(next.len(), 1, "{policy:?}: one unit follows another");
            last = [&none, &low, &high, &high_later]
                .into_iter()
                .find(|w| w.id == next[0])
                .expect("a unit within the ask")
                .clone();
            order.push(last.id);
        }
        let expected = match policy {
            wire::Policy::Fifo => [none.id, low.id, high.id, high_later.id],
            // Ties by arrival; no bid bids 0.
            wire::Policy::Profit => [high.id, high_later.id, low.id, none.id],
        };
        assert_eq!(order, expected, "{policy:?}");
        assert!(
            finish(&mut s, &last).is_empty(),
            "a bid under the ask waits"
        );
        assert!(!running(&s, &too_low));
    }
}
