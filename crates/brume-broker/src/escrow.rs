//! Requester escrow: what each paying account owes the broker's payout
//! account, in memory.
//!
//! An account that is an address must have approved an allowance to the
//! payout account (ERC-20 `approve`). Work is admitted only while
//!
//! ```text
//! allowance - (outstanding + reserved) >= the work's maximum cost
//! ```
//!
//! - `outstanding`: charges billed (ledger rows' `payers`) and not yet
//!   collected by settlement. Rows add to it as they are built
//!   ([`Escrow::charge`], from `ledger::row`); settlement subtracts what it
//!   collected ([`Escrow::collected`]). At start-up it is the ledger's sum
//!   of payer amounts per account ([`Escrow::load`]).
//! - `reserved`: the maximum cost of the account's work in flight. A
//!   [`Hold`] is taken at admission ([`Escrow::try_reserve`]) and released
//!   when the work's completion is delivered, after its row (if any) was
//!   charged, so the account is never under-counted in between.
//!
//! The allowance is read from the chain and cached for [`ALLOWANCE_TTL`];
//! a request that the cached figure would refuse reads it again first, so a
//! fresh `approve` takes effect on the next request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The book's key of an account: an address in EIP-55 form (whatever case
/// it was written in), else the account as given.
pub fn account_key(account: &str) -> String {
    match account.parse::<brume_chain::Address>() {
        Ok(a) if account.len() == 42 => a.to_string(),
        _ => account.to_string(),
    }
}

/// How long a read allowance is trusted for admissions that it covers.
pub const ALLOWANCE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Clone, Copy)]
struct AccountEscrow {
    outstanding: u128,
    reserved: u128,
    allowance: Option<(u128, Instant)>,
    /// Holds not yet released: the units of work it has running now.
    open: u32,
    /// Rows charged to it since the broker started (its history).
    billed_units: u64,
}

/// One account's escrow figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EscrowView {
    pub outstanding: u128,
    pub reserved: u128,
}

/// The escrow book of every account, by account (an address as the broker
/// writes it, EIP-55, or an API key's name).
#[derive(Debug, Default)]
pub struct Escrow {
    accounts: parking_lot::Mutex<HashMap<String, AccountEscrow>>,
}

/// The outcome of [`Escrow::try_reserve`].
#[derive(Debug)]
pub(crate) enum Reserve {
    Held(Arc<Hold>),
    /// The cached allowance is missing or stale: read it and call again.
    Stale,
    Insufficient {
        allowance: u128,
        committed: u128,
    },
    /// It already has `open` units running, its limit (see
    /// [`Escrow::try_reserve_limited`]).
    TooMany {
        open: u32,
        limit: u32,
    },
}

/// A reservation of one unit of work's maximum cost; released once.
#[derive(Debug)]
pub struct Hold {
    escrow: Arc<Escrow>,
    account: String,
    /// What it still reserves (a lease's consumes it as it is billed).
    amount: parking_lot::Mutex<u128>,
    released: AtomicBool,
}

impl Hold {
    /// Gives the reservation back (idempotent).
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let amount = std::mem::take(&mut *self.amount.lock());
        let mut accounts = self.escrow.accounts.lock();
        if let Some(a) = accounts.get_mut(&self.account) {
            a.reserved = a.reserved.saturating_sub(amount);
            a.open = a.open.saturating_sub(1);
        }
    }

    pub fn amount(&self) -> u128 {
        *self.amount.lock()
    }

    /// Gives back `by` of the reservation, now charged (a lease's row:
    /// what it reserved is owed instead).
    pub fn consume(&self, by: u128) {
        if self.released.load(Ordering::Acquire) {
            return;
        }
        let by = {
            let mut amount = self.amount.lock();
            let by = by.min(*amount);
            *amount -= by;
            by
        };
        if let Some(a) = self.escrow.accounts.lock().get_mut(&self.account) {
            a.reserved = a.reserved.saturating_sub(by);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

impl Escrow {
    /// Starts the book with each account's uncollected charges.
    pub fn load(outstanding: HashMap<String, u128>) -> Escrow {
        Escrow {
            accounts: parking_lot::Mutex::new(
                outstanding
                    .into_iter()
                    .map(|(k, outstanding)| {
                        (
                            account_key(&k),
                            AccountEscrow {
                                outstanding,
                                ..AccountEscrow::default()
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// [`try_reserve_limited`](Self::try_reserve_limited) with no limit.
    #[cfg(test)]
    pub(crate) fn try_reserve(
        self: &Arc<Self>,
        account: &str,
        amount: u128,
        fresh: bool,
    ) -> Reserve {
        self.try_reserve_limited(account, amount, fresh, None)
    }

    /// Reserves `amount` for `account` if its cached allowance (younger
    /// than [`ALLOWANCE_TTL`] unless `fresh`) covers it, and it has fewer
    /// than `limit(allowance, clean history)` units running: with that
    /// many, it refuses ([`Reserve::TooMany`]; [`Reserve::Stale`] unless
    /// `fresh`, since a new deposit may raise the limit). The history is the rows charged to
    /// the account since the broker started, counted only while it owes
    /// no more than its allowance.
    pub(crate) fn try_reserve_limited(
        self: &Arc<Self>,
        account: &str,
        amount: u128,
        fresh: bool,
        limit: Option<&(dyn Fn(u128, u64) -> u32 + Sync)>,
    ) -> Reserve {
        let account = account_key(account);
        let mut accounts = self.accounts.lock();
        let a = accounts.entry(account.clone()).or_default();
        let Some((allowance, at)) = a.allowance else {
            return Reserve::Stale;
        };
        if let Some(limit) = limit {
            let clean = if a.outstanding <= allowance {
                a.billed_units
            } else {
                0
            };
            let limit = limit(allowance, clean);
            if a.open >= limit {
                // A cached allowance may be older than a new deposit.
                if !fresh {
                    return Reserve::Stale;
                }
                return Reserve::TooMany {
                    open: a.open,
                    limit,
                };
            }
        }
        let committed = a.outstanding.saturating_add(a.reserved);
        let available = allowance.saturating_sub(committed);
        if available < amount || allowance < committed {
            if !fresh {
                return Reserve::Stale;
            }
            return Reserve::Insufficient {
                allowance,
                committed,
            };
        }
        if !fresh && at.elapsed() > ALLOWANCE_TTL {
            return Reserve::Stale;
        }
        a.reserved = a.reserved.saturating_add(amount);
        a.open += 1;
        Reserve::Held(Arc::new(Hold {
            escrow: self.clone(),
            account,
            amount: parking_lot::Mutex::new(amount),
            released: AtomicBool::new(false),
        }))
    }

    /// Records an allowance just read from the chain.
    pub(crate) fn set_allowance(&self, account: &str, allowance: u128) {
        self.accounts
            .lock()
            .entry(account_key(account))
            .or_default()
            .allowance = Some((allowance, Instant::now()));
    }

    /// Adds billed charges (a row's payers) to their accounts' outstanding.
    pub(crate) fn charge<'a>(&self, parts: impl IntoIterator<Item = (&'a str, u128)>) {
        let parts: Vec<(String, u128)> = parts
            .into_iter()
            .map(|(a, n)| (account_key(a), n))
            .collect();
        let mut accounts = self.accounts.lock();
        for (account, amount) in parts {
            let a = accounts.entry(account).or_default();
            a.outstanding = a.outstanding.saturating_add(amount);
            a.billed_units += 1;
        }
    }

    /// Settlement collected `amount` from `account` (a transferFrom into
    /// the payout account): it is no longer outstanding, and the allowance
    /// it spent must be read again.
    pub fn collected(&self, account: &str, amount: u128) {
        let mut accounts = self.accounts.lock();
        if let Some(a) = accounts.get_mut(&account_key(account)) {
            a.outstanding = a.outstanding.saturating_sub(amount);
            a.allowance = None;
        }
    }

    /// An account's figures.
    pub fn view(&self, account: &str) -> EscrowView {
        self.accounts
            .lock()
            .get(&account_key(account))
            .map(|a| EscrowView {
                outstanding: a.outstanding,
                reserved: a.reserved,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_charges_and_collections_add_up() {
        let e = Arc::new(Escrow::load(HashMap::from([("a".to_string(), 30)])));
        assert!(matches!(e.try_reserve("a", 10, false), Reserve::Stale));
        e.set_allowance("a", 100);
        let Reserve::Held(h1) = e.try_reserve("a", 50, false) else {
            panic!("50 of 70 available must be held");
        };
        // 100 - 30 - 50 = 20 left: 21 is refused once the figure is fresh.
        assert!(matches!(e.try_reserve("a", 21, false), Reserve::Stale));
        assert!(matches!(
            e.try_reserve("a", 21, true),
            Reserve::Insufficient {
                allowance: 100,
                committed: 80
            }
        ));
        // The work cost 5: charged, then its hold released.
        e.charge([("a", 5)]);
        h1.release();
        h1.release();
        assert_eq!(
            e.view("a"),
            EscrowView {
                outstanding: 35,
                reserved: 0
            }
        );
        e.collected("a", 35);
        assert_eq!(e.view("a").outstanding, 0);
        assert!(
            matches!(e.try_reserve("a", 1, false), Reserve::Stale),
            "collected() drops the cached allowance"
        );
        drop(h1);
        assert_eq!(e.view("a").reserved, 0);
    }
}
