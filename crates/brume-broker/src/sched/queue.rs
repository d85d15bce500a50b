//! The queue of work no provider could take yet, and the order in which it
//! leaves. One contract, in order of precedence:
//!
//! 1. the latency class: functions ([`Class::Sync`]) before batch;
//! 2. fairness between accounts within a class: accounts with waiting work
//!    take turns (round robin: deficit round robin with one unit per turn);
//! 3. first come, first served within one account and class;
//! 4. the market's preference: a provider whose policy is
//!    [`Policy::Profit`] takes, within the account whose turn it is, the
//!    work with the highest bid first (its `max_price`; none bids 0), and
//!    arrival breaks ties. For any other provider, 3 decides alone.
//!
//! Within an account, work waits in one lane per set of trust tiers it may
//! run on, so that work only tier 1 may take does not block work for tier
//! 4: a provider looks only at the lanes its tier may serve, and takes the
//! oldest work among their heads that it accepts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brume_api::WorkId;
use brume_api::wire::Policy;

use crate::work::{Class, Work};

/// How deep into one lane a provider looks for work it accepts.
const LANE_SCAN_CAP: usize = 64;
/// How many accounts one look at the queue visits at most.
const ACCOUNT_SCAN_CAP: usize = 1024;

/// One account's waiting work in one class, by tier set.
#[derive(Debug, Default)]
struct Account {
    lanes: BTreeMap<u8, VecDeque<Arc<Work>>>,
    len: usize,
}

/// One class's waiting work: each account's, and whose turn it is.
#[derive(Debug, Default)]
struct ClassQueue {
    accounts: HashMap<Arc<str>, Account>,
    /// The accounts with waiting work, next turn first.
    turn: VecDeque<Arc<str>>,
    len: usize,
}

/// Every class's queue.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    sync: ClassQueue,
    batch: ClassQueue,
}

impl Queues {
    fn class(&mut self, c: Class) -> &mut ClassQueue {
        match c {
            Class::Sync => &mut self.sync,
            Class::Batch => &mut self.batch,
        }
    }

    fn class_ref(&self, c: Class) -> &ClassQueue {
        match c {
            Class::Sync => &self.sync,
            Class::Batch => &self.batch,
        }
    }

    pub fn len(&self) -> usize {
        self.sync.len + self.batch.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How much work of `class` waits.
    pub fn len_of(&self, class: Class) -> usize {
        self.class_ref(class).len
    }

    /// How long the oldest waiting work of `class` has waited.
    pub fn oldest_wait(&self, class: Class) -> Duration {
        let q = self.class_ref(class);
        q.accounts
            .values()
            .flat_map(|a| a.lanes.values().filter_map(VecDeque::front))
            .map(|w| w.enqueued_at.lock().elapsed())
            .max()
            .unwrap_or_default()
    }

    /// Queues `work` behind its account's earlier work.
    pub fn push_back(&mut self, work: Arc<Work>) {
        self.push(work, false);
    }

    /// Queues `work` ahead of its account's other work (a retry keeps its
    /// place).
    pub fn push_front(&mut self, work: Arc<Work>) {
        self.push(work, true);
    }

    fn push(&mut self, work: Arc<Work>, front: bool) {
        *work.enqueued_at.lock() = Instant::now();
        let q = self.class(work.spec.class);
        let account = work.spec.account.clone();
        let a = match q.accounts.get_mut(&account) {
            Some(a) => a,
            None => {
                q.turn.push_back(account.clone());
                q.accounts.entry(account).or_default()
            }
        };
        let lane = a.lanes.entry(work.spec.tiers).or_default();
        if front {
            lane.push_front(work);
        } else {
            lane.push_back(work);
        }
        a.len += 1;
        q.len += 1;
    }

    /// The next work of `class` for a provider of trust tier `tier`, taken
    /// off the queue: the next account in turn that has work the provider
    /// `accepts`, and that account's oldest such work. Finished work met on
    /// the way is dropped.
    pub fn take(
        &mut self,
        class: Class,
        tier: u8,
        policy: Policy,
        accepts: impl Fn(&Work) -> bool,
    ) -> Option<Arc<Work>> {
        let q = self.class(class);
        let mut found = None;
        for (pos, account) in q.turn.iter().enumerate().take(ACCOUNT_SCAN_CAP) {
            let Some(a) = q.accounts.get_mut(account) else {
                continue;
            };
            let dropped = a.drop_finished();
            q.len -= dropped;
            if let Some(w) = a.take_first(tier, policy, &accepts) {
                q.len -= 1;
                found = Some((pos, w));
                break;
            }
        }
        let (pos, work) = found?;
        // Its account's turn is over: to the back of the line, or out of it.
        if let Some(account) = q.turn.remove(pos) {
            if q.accounts.get(&account).is_some_and(|a| a.len > 0) {
                q.turn.push_back(account);
            } else {
                q.accounts.remove(&account);
            }
        }
        q.forget_empty();
        Some(work)
    }

    /// Takes `id` off the queue; false if it was not queued.
    pub fn remove(&mut self, id: WorkId) -> bool {
        for q in [&mut self.sync, &mut self.batch] {
            for a in q.accounts.values_mut() {
                for lane in a.lanes.values_mut() {
                    if let Some(i) = lane.iter().position(|w| w.id == id) {
                        lane.remove(i);
                        a.len -= 1;
                        q.len -= 1;
                        q.forget_empty();
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Takes off the queue the finished work and the work past its queue
    /// deadline; returns the latter.
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<Work>> {
        let mut expired = Vec::new();
        for q in [&mut self.sync, &mut self.batch] {
            for a in q.accounts.values_mut() {
                for lane in a.lanes.values_mut() {
                    let before = lane.len();
                    lane.retain(|w| {
                        if w.is_finished() {
                            return false;
                        }
                        if now >= w.queue_deadline {
                            expired.push(w.clone());
                            return false;
                        }
                        true
                    });
                    let gone = before - lane.len();
                    a.len -= gone;
                    q.len -= gone;
                }
            }
            q.forget_empty();
        }
        expired
    }
}

impl ClassQueue {
    /// Drops the accounts (and lanes) left with no work.
    fn forget_empty(&mut self) {
        if self.accounts.values().all(|a| a.len > 0) {
            return;
        }
        self.accounts.retain(|_, a| {
            a.lanes.retain(|_, l| !l.is_empty());
            a.len > 0
        });
        let accounts = &self.accounts;
        self.turn.retain(|a| accounts.contains_key(a));
    }
}

impl Account {
    /// Drops finished work at the heads of the lanes; returns how much.
    fn drop_finished(&mut self) -> usize {
        let mut dropped = 0;
        for lane in self.lanes.values_mut() {
            while lane.front().is_some_and(|w| w.is_finished()) {
                lane.pop_front();
                dropped += 1;
            }
        }
        self.len -= dropped;
        dropped
    }

    /// The first work a provider of `tier` accepts, among the lanes that
    /// tier may serve, taken off its lane: the oldest, or under
    /// [`Policy::Profit`] the best bid (then the oldest).
    fn take_first(
        &mut self,
        tier: u8,
        policy: Policy,
        accepts: &impl Fn(&Work) -> bool,
    ) -> Option<Arc<Work>> {
        // Ordered by (bid, reversed arrival): the greatest key goes first.
        let key = |w: &Work| {
            let bid = match policy {
                Policy::Profit => w.spec.max_price.unwrap_or(0),
                Policy::Fifo => 0,
            };
            (bid, std::cmp::Reverse(w.arrival()))
        };
        let mut best: Option<(_, u8, usize)> = None;
        for (&tiers, lane) in &self.lanes {
            if (tiers >> tier) & 1 == 0 {
                continue;
            }
            let mut hits = lane
                .iter()
                .take(LANE_SCAN_CAP)
                .enumerate()
                .filter(|(_, w)| !w.is_finished() && accepts(w));
            // A lane is in arrival order: its first hit is its oldest.
            let hit = match policy {
                Policy::Fifo => hits.next(),
                Policy::Profit => hits.max_by_key(|(i, w)| (key(w), std::cmp::Reverse(*i))),
            };
            if let Some((i, w)) = hit {
                let k = key(w);
                if best.as_ref().is_none_or(|(b, _, _)| k > *b) {
                    best = Some((k, tiers, i));
                }
            }
        }
        let (_, tiers, i) = best?;
        let w = self.lanes.get_mut(&tiers)?.remove(i)?;
        self.len -= 1;
        Some(w)
    }
}
