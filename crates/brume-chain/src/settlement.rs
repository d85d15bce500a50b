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
//! - [`Settlement::anchored`] gives every movement under an anchor, so an
//!   audit can trace each token to the rows the anchor names.
//!
//! Not yet used by `brume-settle`, which still speaks [`Chain`].

use std::sync::Arc;

use brume_identity::Identity;

use crate::{Address, Anchor, B256, Call, Chain, ChainError, ChainFuture};

/// One token movement under an anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: Address,
    pub to: Address,
    pub amount: u128,
    pub tx_hash: B256,
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

    /// Pays every `(beneficiary, amount)` from the payout account; the
    /// hash of the (last) transaction that did.
    fn payout<'a>(
        &'a self,
        payments: &'a [(Address, u128)],
        anchor: Anchor,
    ) -> ChainFuture<'a, B256>;

    /// Every movement under `anchor`, in chain order.
    fn anchored(&self, anchor: Anchor) -> ChainFuture<'_, Vec<Moved>>;
}

/// The dev chain's settlement: the payout key signs plain transfers, each
/// carrying the anchor.
pub struct DevSettlement {
    chain: Arc<dyn Chain>,
    payout: Identity,
}

impl std::fmt::Debug for DevSettlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSettlement")
            .field("payout", &self.payout.address())
            .finish_non_exhaustive()
    }
}

impl DevSettlement {
    pub fn new(chain: Arc<dyn Chain>, payout: Identity) -> DevSettlement {
        DevSettlement { chain, payout }
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

    fn payout<'a>(
        &'a self,
        payments: &'a [(Address, u128)],
        anchor: Anchor,
    ) -> ChainFuture<'a, B256> {
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
            let mut last = None;
            for result in self.chain.send(&self.payout, calls).await? {
                last = Some(result?.tx_hash);
            }
            last.ok_or_else(|| ChainError::Other("the chain answered no result".into()))
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
}
