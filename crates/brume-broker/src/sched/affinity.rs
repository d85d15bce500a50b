//! Affinity (the CGN seed): the units of one session (`x-brume-affinity`
//! on calls, `affinity` on jobs; one account and one key) run on one
//! provider while that provider lives, so that they share a work dir there.
//!
//! A session is bound to the provider its first unit is assigned to. Its
//! later units go only to that provider (they wait in the queue while it is
//! busy). When the provider is lost, the binding is marked lost, and the
//! next unit moves the session to whichever provider takes it; that unit
//! says so (`x-brume-affinity-state: moved`). Its files stay behind with
//! the lost provider: state is not carried over.
//!
//! Bindings live in the scheduler's memory, so a broker restart ends every
//! session. One is forgotten `ttl` after its last unit, and an account
//! keeps at most [`AffinityConfig::max_per_account`] at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest as _;

use super::ProviderId;

/// A broker's affinity settings (`[broker.affinity]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AffinityConfig {
    /// How long a session outlives its last unit, in ms (default 10 min).
    pub ttl_ms: u64,
    /// How large a session's work dir may grow (default 64 MiB).
    pub max_bytes: u64,
    /// Sessions one account may keep at once (default 1024).
    pub max_per_account: usize,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            ttl_ms: 600_000,
            max_bytes: 64 << 20,
            max_per_account: 1024,
        }
    }
}

impl AffinityConfig {
    /// What a unit of `account`'s session `key` carries to its provider.
    pub(crate) fn session(&self, account: &str, key: &str) -> brume_api::wire::Affinity {
        let mut h = sha2::Sha256::new();
        h.update(account.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        brume_api::wire::Affinity {
            key: hex::encode(h.finalize()),
            ttl_ms: self.ttl_ms,
            max_bytes: self.max_bytes,
        }
    }
}

/// Where a session's units go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Anywhere: a new session (or one forgotten).
    New,
    /// Only to this provider.
    On(ProviderId),
    /// Anywhere: its provider was lost, and the session moves.
    Lost,
}

#[derive(Debug)]
struct Binding {
    provider: Option<ProviderId>,
    account: Arc<str>,
    used: Instant,
    ttl: Duration,
}

/// Every live session's binding.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    bound: HashMap<String, Binding>,
    per_account: HashMap<Arc<str>, usize>,
}

impl Sessions {
    pub fn place(&self, key: &str) -> Place {
        match self.bound.get(key) {
            None => Place::New,
            Some(Binding {
                provider: Some(id), ..
            }) => Place::On(*id),
            Some(_) => Place::Lost,
        }
    }

    /// Whether provider `id` may take a unit of session `key`.
    pub fn allows(&self, key: &str, id: ProviderId) -> bool {
        match self.place(key) {
            Place::On(bound) => bound == id,
            Place::New | Place::Lost => true,
        }
    }

    /// Whether `account` may use session `key`: it exists, or the account
    /// keeps fewer than `max` sessions.
    pub fn admits(&self, account: &str, key: &str, max: usize) -> bool {
        self.bound.contains_key(key) || self.per_account.get(account).copied().unwrap_or(0) < max
    }

    /// A unit of session `key` went to provider `id` at `now`; returns
    /// whether that moved the session (its provider had been lost).
    pub fn bind(
        &mut self,
        key: &str,
        account: &Arc<str>,
        id: ProviderId,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        if let Some(b) = self.bound.get_mut(key) {
            let moved = b.provider.is_none();
            b.provider = Some(id);
            b.used = now;
            b.ttl = ttl;
            return moved;
        }
        *self.per_account.entry(account.clone()).or_default() += 1;
        self.bound.insert(
            key.to_string(),
            Binding {
                provider: Some(id),
                account: account.clone(),
                used: now,
                ttl,
            },
        );
        false
    }

    /// Provider `id` is gone: its sessions move with their next unit.
    /// Returns how many it had.
    pub fn lose(&mut self, id: ProviderId) -> usize {
        let mut lost = 0;
        for b in self.bound.values_mut() {
            if b.provider == Some(id) {
                b.provider = None;
                lost += 1;
            }
        }
        lost
    }

    /// Forgets the sessions idle past their TTL at `now`.
    pub fn expire(&mut self, now: Instant) {
        let per_account = &mut self.per_account;
        self.bound.retain(|_, b| {
            let keep = now.saturating_duration_since(b.used) < b.ttl;
            if !keep && let Some(n) = per_account.get_mut(&b.account) {
                *n -= 1;
                if *n == 0 {
                    per_account.remove(&b.account);
                }
            }
            keep
        });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bound.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stays_moves_once_when_lost_and_expires_on_its_clock() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let a: Arc<str> = "alice".into();
        assert_eq!(s.place("k"), Place::New);
        assert!(!s.bind("k", &a, 1, ttl, t0));
        assert_eq!(s.place("k"), Place::On(1));
        assert!(s.allows("k", 1) && !s.allows("k", 2));
        // Its provider is lost: the next unit moves it, once.
        s.lose(1);
        assert_eq!(s.place("k"), Place::Lost);
        assert!(s.allows("k", 2));
        assert!(s.bind("k", &a, 2, ttl, t0));
        assert!(!s.bind("k", &a, 2, ttl, t0 + ttl / 2));
        // Kept for its TTL after its last use, then forgotten.
        s.expire(t0 + ttl);
        assert_eq!(s.place("k"), Place::On(2));
        s.expire(t0 + ttl / 2 + ttl);
        assert_eq!(s.place("k"), Place::New);
        assert_eq!(s.len(), 0);
        assert!(s.per_account.is_empty());
    }

    #[test]
    fn an_account_keeps_a_bounded_number_of_sessions() {
        let mut s = Sessions::default();
        let now = Instant::now();
        let a: Arc<str> = "alice".into();
        for k in ["1", "2"] {
            assert!(s.admits("alice", k, 2));
            s.bind(k, &a, 1, Duration::from_secs(60), now);
        }
        assert!(!s.admits("alice", "3", 2), "a third session is refused");
        assert!(s.admits("alice", "1", 2), "an existing one is not");
        assert!(s.admits("bob", "3", 2), "another account has its own");
    }

    #[test]
    fn the_key_is_the_accounts_and_hides_both() {
        let c = AffinityConfig::default();
        let (a, b) = (c.session("alice", "k"), c.session("bob", "k"));
        assert_ne!(a.key, b.key);
        assert!(brume_api::wire::Affinity::key_is_valid(&a.key));
        assert!(!a.key.contains("alice"));
        assert_eq!(a.ttl_ms, 600_000);
    }
}
