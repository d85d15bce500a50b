//! The providers' track records the scheduler keeps, and which of them
//! changed since they were last saved.

use brume_api::rest::Reputation;

use super::Scheduler;

impl Scheduler {
    /// The track record of `address` (created empty), to change: it is
    /// saved with the next [`take_changed_reputation`](Self::take_changed_reputation).
    pub fn reputation_mut(&mut self, address: &str) -> &mut Reputation {
        let key = address.to_ascii_lowercase();
        if !self.reputation_dirty.contains(&key) {
            self.reputation_dirty.insert(key.clone());
        }
        self.reputation.entry(key).or_default()
    }

    /// Track records as stored (at start-up).
    pub fn load_reputation(&mut self, records: impl IntoIterator<Item = (String, Reputation)>) {
        self.reputation.extend(records);
    }

    /// The records changed since the last call, to save.
    pub fn take_changed_reputation(&mut self) -> Vec<(String, Reputation)> {
        self.reputation_dirty
            .drain()
            .map(|a| {
                let r = self.reputation.get(&a).copied().unwrap_or_default();
                (a, r)
            })
            .collect()
    }

    /// Every track record (address, record).
    pub fn reputations(&self) -> impl Iterator<Item = (&String, &Reputation)> {
        self.reputation.iter()
    }

    pub fn reputation(&self, address: &str) -> Reputation {
        self.reputation
            .get(&address.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }
}
