//! [`Settlement`]: brume's settlement operations, the same on every
//! backend. The dev chain implements them here ([`DevSettlement`]); the
//! EVM backend in `brume-evm`, over the `Settlement` contract.
//!
//! The rules both keep:
//! - the **payout account** holds what was collected until it is paid
//!   out: on the dev chain the payout key's balance, on an EVM chain the
//!   `Settlement` contract's;
//! - **collect** pulls `amount` from a payer who allowed it, into the
//!   payout account, under an anchor;
//! - **payout** pays every `(beneficiary, amount)` of a batch from the
//!   payout account, each transfer under the batch's anchor, all or
//!   nothing (checked against the balance first);
//! - an **anchor is used once**: a second collect or payout under it is
//!   [`ChainError::AnchorUsed`] and moves nothing;
//! - [`Settlement::anchored`] gives every movement under an anchor, and
//!   [`Settlement::movements`] every collection and payout in chain order,
//!   so an audit can trace each token to the rows the anchor names;
//! - **stake** is what a provider put up, and **slash** takes part of it to
//!   the operator, with the proof's digest as evidence.

use std::sync::Arc;

use brume_identity::Identity;

use crate::{Address, Anchor, B256, Call, Chain, ChainError, ChainFuture, TxPos};

/// One token movement under an anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: Address,
    pub to: Address,
    pub amount: u128,
    pub tx_hash: B256,
}

/// One collection of a batch ([`Settlement::collect_many`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collection {
    pub payer: Address,
    pub amount: u128,
    pub anchor: Anchor,
}

/// What a [`Movement`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// Collected from `party` into the payout account.
    Collected,
    /// Paid from the payout account to `party`.
    Paid,
}

/// A collection or payout as the chain records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub kind: MoveKind,
    /// The payer of a collection, the beneficiary of a payout.
    pub party: Address,
    pub amount: u128,
    pub anchor: Anchor,
    pub tx_hash: B256,
    /// Its place in chain order (block, then index within it).
    pub pos: TxPos,
}

/// brume's settlement operations on a token chain.
pub trait Settlement: Send + Sync {
    /// Where collected tokens wait to be paid out.
    fn payout_account(&self) -> Address;

    /// `account`'s token balance.
    fn balance_of(&self, account: Address) -> ChainFuture<'_, u128>;

    /// How much may still be collected from `owner` (its allowance to the
    /// payout account).
    fn collectable(&self, owner: Address) -> ChainFuture<'_, u128>;

    /// Pulls `amount` from `payer` into the payout account; the landed
    /// transaction's hash.
    fn collect(&self, payer: Address, amount: u128, anchor: Anchor) -> ChainFuture<'_, B256>;

    /// Several collections, each landing or failing on its own, in order.
    /// By default one after another; a backend may do better.
    fn collect_many<'a>(
        &'a self,
        batch: &'a [Collection],
    ) -> ChainFuture<'a, Vec<Result<B256, ChainError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(batch.len());
            for c in batch {
                out.push(self.collect(c.payer, c.amount, c.anchor).await);
            }
            Ok(out)
        })
    }

    /// Pays every `(beneficiary, amount)` from the payout account, all or
    /// nothing; the hash of the transaction that paid each, in order (one
    /// hash for all on an EVM chain, one each on the dev chain).
    fn payout<'a>(
        &'a self,
        payments: &'a [(Address, u128)],
        anchor: Anchor,
    ) -> ChainFuture<'a, Vec<B256>>;

    /// Every movement under `anchor`, in chain order.
    fn anchored(&self, anchor: Anchor) -> ChainFuture<'_, Vec<Moved>>;

    /// Collections and payouts after `after`, in chain order, at most
    /// `limit` (1 to [`crate::MAX_HISTORY_PAGE`]): what an audit reads.
    /// Other transfers into the payout account are not movements; every
    /// transfer out of it is a payout.
    fn movements(&self, after: Option<TxPos>, limit: usize) -> ChainFuture<'_, Vec<Movement>>;

    /// What `provider` has put up as stake (what work eligibility reads).
    fn stake_of(&self, provider: Address) -> ChainFuture<'_, u128>;

    /// What a slash of `provider` can take now (by default its stake).
    fn slashable(&self, provider: Address) -> ChainFuture<'_, u128> {
        self.stake_of(provider)
    }

    /// Takes `amount` of `provider`'s stake to the operator, with the
    /// evidence's digest; the landed transaction's hash.
    fn slash(&self, provider: Address, amount: u128, evidence: Anchor) -> ChainFuture<'_, B256>;
}

/// The dev chain's settlement: the payout key signs plain transfers, each
/// carrying the anchor. Stake is a provider's allowance to the payout
/// account, and a slash is a `transferFrom` of it (as far as the
/// provider's balance covers it) to the operator's account.
pub struct DevSettlement {
    chain: Arc<dyn Chain>,
    payout: Arc<Identity>,
    operator: Address,
}

impl std::fmt::Debug for DevSettlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSettlement")
            .field("payout", &self.payout.address())
            .finish_non_exhaustive()
    }
}

impl DevSettlement {
    /// Settlement signed by `payout`, slashing to `operator`.
    pub fn new(chain: Arc<dyn Chain>, payout: Arc<Identity>, operator: Address) -> DevSettlement {
        DevSettlement {
            chain,
            payout,
            operator,
        }
    }

    /// The chain underneath.
    pub fn chain(&self) -> &Arc<dyn Chain> {
        &self.chain
    }

    /// [`ChainError::AnchorUsed`] if anything moved under `anchor`.
    async fn unused(&self, anchor: Anchor) -> Result<(), ChainError> {
        if self.chain.transfers_by_anchor(anchor).await?.is_empty() {
            Ok(())
        } else {
            Err(ChainError::AnchorUsed(anchor))
        }
    }
}

impl Settlement for DevSettlement {
    fn payout_account(&self) -> Address {
        self.payout.address()
    }

    fn balance_of(&self, account: Address) -> ChainFuture<'_, u128> {
        self.chain.balance_of(account)
    }

    fn collectable(&self, owner: Address) -> ChainFuture<'_, u128> {
        self.chain.allowance(owner, self.payout.address())
    }

    fn collect(&self, payer: Address, amount: u128, anchor: Anchor) -> ChainFuture<'_, B256> {
        Box::pin(async move {
            self.unused(anchor).await?;
            let call = Call::TransferFrom {
                owner: payer,
                to: self.payout.address(),
                amount,
                anchor,
            };
            let mut results = self.chain.send(&self.payout, vec![call]).await?;
            let receipt = results
                .pop()
                .ok_or_else(|| ChainError::Other("the chain answered no result".into()))??;
            Ok(receipt.tx_hash)
        })
    }

    /// All in one submission (one block on the dev chain).
    fn collect_many<'a>(
        &'a self,
        batch: &'a [Collection],
    ) -> ChainFuture<'a, Vec<Result<B256, ChainError>>> {
        Box::pin(async move {
            let mut out: Vec<Option<Result<B256, ChainError>>> = Vec::with_capacity(batch.len());
            let mut calls = Vec::new();
            for c in batch {
                if let Err(e) = self.unused(c.anchor).await {
                    out.push(Some(Err(e)));
                    continue;
                }
                out.push(None);
                calls.push(Call::TransferFrom {
                    owner: c.payer,
                    to: self.payout.address(),
                    amount: c.amount,
                    anchor: c.anchor,
                });
            }
            let mut sent = if calls.is_empty() {
                Vec::new()
            } else {
                self.chain.send(&self.payout, calls).await?
            }
            .into_iter();
            Ok(out
                .into_iter()
                .map(|r| match r {
                    Some(r) => r,
                    None => match sent.next() {
                        Some(r) => r.map(|rc| rc.tx_hash),
                        None => Err(ChainError::Other("the chain answered no result".into())),
                    },
                })
                .collect())
        })
    }

    fn payout<'a>(
        &'a self,
        payments: &'a [(Address, u128)],
        anchor: Anchor,
    ) -> ChainFuture<'a, Vec<B256>> {
        Box::pin(async move {
            if payments.is_empty() {
                return Err(ChainError::Invalid("an empty payout".into()));
            }
            self.unused(anchor).await?;
            let needed = payments
                .iter()
                .try_fold(0u128, |sum, (_, a)| sum.checked_add(*a))
                .ok_or_else(|| ChainError::Overflow("the payout's total".into()))?;
            let account = self.payout.address();
            let balance = self.chain.balance_of(account).await?;
            if balance < needed {
                return Err(ChainError::InsufficientBalance {
                    account,
                    balance,
                    needed,
                });
            }
            let calls = payments
                .iter()
                .map(|(to, amount)| Call::Transfer {
                    to: *to,
                    amount: *amount,
                    anchor,
                })
                .collect();
            let mut hashes = Vec::with_capacity(payments.len());
            for result in self.chain.send(&self.payout, calls).await? {
                hashes.push(result?.tx_hash);
            }
            if hashes.len() != payments.len() {
                return Err(ChainError::Other(
                    "the chain answered too few results".into(),
                ));
            }
            Ok(hashes)
        })
    }

    fn anchored(&self, anchor: Anchor) -> ChainFuture<'_, Vec<Moved>> {
        Box::pin(async move {
            Ok(self
                .chain
                .transfers_by_anchor(anchor)
                .await?
                .into_iter()
                .map(|t| Moved {
                    from: t.from,
                    to: t.to,
                    amount: t.amount,
                    tx_hash: t.tx_hash,
                })
                .collect())
        })
    }

    fn movements(&self, after: Option<TxPos>, limit: usize) -> ChainFuture<'_, Vec<Movement>> {
        Box::pin(async move {
            let account = self.payout.address();
            let mut out = Vec::new();
            let mut cursor = after;
            // Skip other transfers in (a gift, a faucet) until `limit`
            // movements are found or the history ends.
            while out.len() < limit {
                let page = self
                    .chain
                    .history(account, cursor, crate::MAX_HISTORY_PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                cursor = Some(last.pos());
                let full = page.len() == crate::MAX_HISTORY_PAGE;
                for t in page {
                    let kind = if t.from == account && t.to != account {
                        MoveKind::Paid
                    } else if t.to == account && t.spender == Some(account) && t.from != account {
                        MoveKind::Collected
                    } else {
                        continue;
                    };
                    out.push(Movement {
                        kind,
                        party: if kind == MoveKind::Paid { t.to } else { t.from },
                        amount: t.amount,
                        anchor: t.anchor,
                        tx_hash: t.tx_hash,
                        pos: t.pos(),
                    });
                    if out.len() == limit {
                        break;
                    }
                }
                if !full {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// The provider's allowance to the payout account.
    fn stake_of(&self, provider: Address) -> ChainFuture<'_, u128> {
        self.chain.allowance(provider, self.payout.address())
    }

    /// The allowance, as far as the provider's balance covers it.
    fn slashable(&self, provider: Address) -> ChainFuture<'_, u128> {
        Box::pin(async move {
            let allowance = self.stake_of(provider).await?;
            let balance = self.chain.balance_of(provider).await?;
            Ok(allowance.min(balance))
        })
    }

    fn slash(&self, provider: Address, amount: u128, evidence: Anchor) -> ChainFuture<'_, B256> {
        Box::pin(async move {
            let receipt = self
                .chain
                .transfer_from(&self.payout, provider, self.operator, amount, evidence)
                .await?;
            Ok(receipt.tx_hash)
        })
    }
}
