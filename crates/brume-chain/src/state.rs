//! The token's state and the rules that change it. The writer and the
//! replay of [`crate::verify`] apply transactions with the same code.

use std::collections::{HashMap, HashSet};

use alloy_primitives::Address;

use crate::ChainError;
use crate::tx::{Call, Tx};

/// Balances, allowances and nonces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub chain_id: u64,
    pub faucet: bool,
    pub supply: u128,
    pub balances: HashMap<Address, u128>,
    pub nonces: HashMap<Address, u64>,
    pub allowances: HashMap<(Address, Address), u128>,
    /// Touched since the last [`take_dirty`](State::take_dirty).
    dirty_accounts: HashSet<Address>,
    dirty_allowances: HashSet<(Address, Address)>,
}

impl State {
    pub fn new(chain_id: u64, faucet: bool) -> State {
        State {
            chain_id,
            faucet,
            ..State::default()
        }
    }

    pub fn balance(&self, a: &Address) -> u128 {
        self.balances.get(a).copied().unwrap_or(0)
    }

    pub fn nonce(&self, a: &Address) -> u64 {
        self.nonces.get(a).copied().unwrap_or(0)
    }

    pub fn allowance(&self, owner: &Address, spender: &Address) -> u128 {
        self.allowances
            .get(&(*owner, *spender))
            .copied()
            .unwrap_or(0)
    }

    /// A genesis allocation.
    pub fn allocate(&mut self, to: Address, amount: u128) -> Result<(), ChainError> {
        let supply = self
            .supply
            .checked_add(amount)
            .ok_or_else(|| ChainError::Overflow("total supply".into()))?;
        let balance = self
            .balance(&to)
            .checked_add(amount)
            .ok_or_else(|| ChainError::Overflow(format!("balance of {to}")))?;
        self.supply = supply;
        self.balances.insert(to, balance);
        self.dirty_accounts.insert(to);
        Ok(())
    }

    /// Checks `tx` against the state without changing it (the signature is
    /// the caller's business).
    pub fn check(&self, tx: &Tx) -> Result<(), ChainError> {
        if tx.chain_id != self.chain_id {
            return Err(ChainError::WrongChain {
                expected: self.chain_id,
                got: tx.chain_id,
            });
        }
        let expected = self.nonce(&tx.from);
        if tx.nonce != expected {
            return Err(ChainError::Nonce {
                account: tx.from,
                expected,
                got: tx.nonce,
            });
        }
        if tx.from == Address::ZERO && !matches!(tx.call, Call::Mint { .. }) {
            return Err(ChainError::Invalid(
                "the zero address sends only mints".into(),
            ));
        }
        let no_zero = |to: &Address| {
            if to.is_zero() {
                Err(ChainError::Invalid("a transfer to the zero address".into()))
            } else {
                Ok(())
            }
        };
        let debit = |owner: &Address, amount: u128| {
            let balance = self.balance(owner);
            if balance < amount {
                return Err(ChainError::InsufficientBalance {
                    account: *owner,
                    balance,
                    needed: amount,
                });
            }
            Ok(())
        };
        let credit = |to: &Address, amount: u128, minted: bool| {
            // A transfer to oneself nets to nothing.
            if !minted && to == &tx.from {
                return Ok(());
            }
            self.balance(to)
                .checked_add(amount)
                .map(|_| ())
                .ok_or_else(|| ChainError::Overflow(format!("balance of {to}")))
        };
        match tx.call {
            Call::Transfer { to, amount, .. } => {
                no_zero(&to)?;
                debit(&tx.from, amount)?;
                credit(&to, amount, false)
            }
            Call::Approve { spender, .. } => {
                if spender.is_zero() {
                    return Err(ChainError::Invalid(
                        "an approval of the zero address".into(),
                    ));
                }
                Ok(())
            }
            Call::TransferFrom {
                owner, to, amount, ..
            } => {
                no_zero(&to)?;
                let allowance = self.allowance(&owner, &tx.from);
                if allowance < amount {
                    return Err(ChainError::InsufficientAllowance {
                        owner,
                        spender: tx.from,
                        allowance,
                        needed: amount,
                    });
                }
                debit(&owner, amount)?;
                if owner == to {
                    return Ok(());
                }
                self.balance(&to)
                    .checked_add(amount)
                    .map(|_| ())
                    .ok_or_else(|| ChainError::Overflow(format!("balance of {to}")))
            }
            Call::Mint { to, amount } => {
                if !self.faucet {
                    return Err(ChainError::FaucetDisabled);
                }
                if tx.from != Address::ZERO {
                    return Err(ChainError::Invalid(
                        "a mint is from the zero address".into(),
                    ));
                }
                no_zero(&to)?;
                self.supply
                    .checked_add(amount)
                    .ok_or_else(|| ChainError::Overflow("total supply".into()))?;
                credit(&to, amount, true)
            }
        }
    }

    /// Applies `tx` if [`check`](State::check) passes; else changes nothing.
    pub fn apply(&mut self, tx: &Tx) -> Result<(), ChainError> {
        self.check(tx)?;
        self.nonces.insert(tx.from, tx.nonce + 1);
        self.dirty_accounts.insert(tx.from);
        match tx.call {
            Call::Transfer { to, amount, .. } => self.move_tokens(tx.from, to, amount),
            Call::Approve { spender, amount } => {
                self.allowances.insert((tx.from, spender), amount);
                self.dirty_allowances.insert((tx.from, spender));
            }
            Call::TransferFrom {
                owner, to, amount, ..
            } => {
                let left = self.allowance(&owner, &tx.from) - amount;
                self.allowances.insert((owner, tx.from), left);
                self.dirty_allowances.insert((owner, tx.from));
                self.move_tokens(owner, to, amount);
            }
            Call::Mint { to, amount } => {
                self.supply += amount;
                let b = self.balance(&to) + amount;
                self.balances.insert(to, b);
                self.dirty_accounts.insert(to);
            }
        }
        Ok(())
    }

    /// Moves checked amounts.
    fn move_tokens(&mut self, from: Address, to: Address, amount: u128) {
        let b = self.balance(&from) - amount;
        self.balances.insert(from, b);
        let b = self.balance(&to) + amount;
        self.balances.insert(to, b);
        self.dirty_accounts.insert(from);
        self.dirty_accounts.insert(to);
    }

    /// The accounts and allowances touched since the last call.
    pub fn take_dirty(&mut self) -> (Vec<Address>, Vec<(Address, Address)>) {
        (
            self.dirty_accounts.drain().collect(),
            self.dirty_allowances.drain().collect(),
        )
    }

    /// The state without its zero entries (what the tables hold), for
    /// comparing.
    pub fn normalized(&self) -> State {
        State {
            chain_id: self.chain_id,
            faucet: self.faucet,
            supply: self.supply,
            balances: self
                .balances
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (*k, *v))
                .collect(),
            nonces: self
                .nonces
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (*k, *v))
                .collect(),
            allowances: self
                .allowances
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (*k, *v))
                .collect(),
            dirty_accounts: HashSet::new(),
            dirty_allowances: HashSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::B256;

    fn tx(from: Address, nonce: u64, call: Call) -> Tx {
        Tx {
            chain_id: 1,
            from,
            nonce,
            call,
        }
    }

    #[test]
    fn a_failed_tx_changes_nothing() {
        let a = Address::repeat_byte(1);
        let b = Address::repeat_byte(2);
        let mut s = State::new(1, false);
        s.allocate(a, 10).expect("alloc");
        let before = s.normalized();
        let anchor = B256::ZERO;
        let over = tx(
            a,
            0,
            Call::Transfer {
                to: b,
                amount: 11,
                anchor,
            },
        );
        assert!(matches!(
            s.apply(&over),
            Err(ChainError::InsufficientBalance { needed: 11, .. })
        ));
        let from_b = tx(
            b,
            0,
            Call::TransferFrom {
                owner: a,
                to: b,
                amount: 1,
                anchor,
            },
        );
        assert!(matches!(
            s.apply(&from_b),
            Err(ChainError::InsufficientAllowance { allowance: 0, .. })
        ));
        assert!(matches!(
            s.apply(&tx(Address::ZERO, 0, Call::Mint { to: a, amount: 1 })),
            Err(ChainError::FaucetDisabled)
        ));
        assert_eq!(s.normalized(), before);
        // To oneself: only the nonce moves.
        s.apply(&tx(
            a,
            0,
            Call::Transfer {
                to: a,
                amount: 10,
                anchor,
            },
        ))
        .expect("self transfer");
        assert_eq!(s.balance(&a), 10);
        assert_eq!(s.nonce(&a), 1);
    }
}
