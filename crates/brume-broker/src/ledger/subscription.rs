//! The subscription's daily fee (the CGN seed's subscription cost
//! structure, [`brume_ledger::deal::settle_subscription_day`]).
//!
//! Work under a subscription is fronted by the operator: its rows name the
//! operator as the payer of kind `subscription` (see `rows.rs`), so the
//! providers are paid at the next settlement like any others. Once a day
//! (at start-up, then at each UTC midnight) every subscribed account is
//! charged its daily fee by a row of its own: the requester pays the fee
//! (kind `subscription_fee`), the operator receives it (role
//! `subscription`). Over a day the operator receives the fee and pays the
//! usage: it keeps the difference when the fee is larger, and pays it in
//! otherwise, as the deal says. Both kinds of rows settle through the
//! ordinary batched settlement.
//!
//! The fee row of a day has the work id `subscription-<day>-<account>`
//! (days since the Unix epoch, UTC), so charging a day twice (a restart)
//! is refused by the store as a duplicate and the fee is charged once.
//!
//! A subscription runs whether the broker does or not: at start-up, the
//! days since an account's last fee row (looked up to [`CATCH_UP_DAYS`]
//! back) are charged too. An account with no fee row in that window is a
//! new subscriber, charged from today.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;

const DAY_MS: u64 = 86_400_000;

/// How far back start-up looks for an account's last fee row.
pub(crate) const CATCH_UP_DAYS: u64 = 366;

/// The work id of `account`'s fee row for `day`.
fn fee_work_id(day: u64, account: &str) -> String {
    let id = format!("subscription-{day}-{account}");
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(account.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("subscription-{day}-{hex}")
}

impl Ledger {
    /// The fee rows of `day` (days since the Unix epoch, UTC), one per
    /// subscription deal with a nonzero fee.
    pub(crate) fn subscription_rows(
        &self,
        day: u64,
        due: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<Unsealed>, BillError> {
        let rate = ExchangeRate {
            fiat_micros_per_token: self.fiat_micros_per_token,
        };
        let mut rows = Vec::new();
        let mut deals: Vec<&Deal> = self.deals.values().collect();
        deals.sort_by(|a, b| a.account.0.cmp(&b.account.0));
        for deal in deals {
            let CostStructure::Subscription {
                tier,
                daily_fee_fiat_micros,
            } = &deal.structure
            else {
                continue;
            };
            if !due(&deal.account.0) {
                continue;
            }
            let day_fee =
                brume_ledger::deal::settle_subscription_day(*daily_fee_fiat_micros, rate, 0)?;
            let amount = day_fee.collected;
            if amount == 0 {
                continue;
            }
            let account = deal.account.0.clone();
            let data = self.transfer_row(super::rows::Transfer {
                work_id: fee_work_id(day, &account),
                requester: &account,
                payer: (&account, "subscription_fee"),
                payee: (&self.operator, "subscription"),
                amount,
                tier: self.tier_name(*tier).to_string(),
                fee_micros: u64::try_from(*daily_fee_fiat_micros)
                    .map_err(|_| BillError::Overflow("daily fee"))?,
            });
            let private = PrivateData {
                metrics: BTreeMap::from([("day".to_string(), day)]),
                ..PrivateData::default()
            };
            rows.push((data, private));
        }
        Ok(rows)
    }

    /// Charges `day`'s fees of the accounts `due` keeps; returns how many
    /// rows were new (a fee already charged is skipped).
    pub(crate) async fn charge_subscriptions(
        &self,
        day: u64,
        due: &(dyn Fn(&str) -> bool + Sync),
    ) -> usize {
        let rows = match self.subscription_rows(day, due) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(day, code = e.code(), "subscription fees not charged: {e}");
                return 0;
            }
        };
        let mut charged = 0;
        for (data, private) in rows {
            let id = data.work_id.clone();
            let payers = data.payers.clone();
            let row = match SealedRow::seal(data, private) {
                Ok(row) => row,
                Err(e) => {
                    tracing::error!(work = %id, code = e.code(), "subscription fee row not sealed: {e}");
                    continue;
                }
            };
            match self.store.append_sealed(vec![row]).await {
                Ok(()) => {
                    self.escrow.charge(charge_parts(&payers));
                    tracing::info!(work = %id, "subscription fee charged");
                    charged += 1;
                }
                Err(LedgerError::DuplicateWorkId(_)) => {} // charged before
                Err(e) => {
                    tracing::error!(work = %id, code = e.code(), "subscription fee row not stored: {e}")
                }
            }
        }
        charged
    }

    /// Charges every subscribed account each day from the day after its
    /// last fee row (within [`CATCH_UP_DAYS`]) to `today`; an account with
    /// none is charged `today` only. Returns the rows charged.
    pub(crate) async fn catch_up_subscriptions(&self, today: u64) -> usize {
        use brume_ledger::store::LedgerStore as _;
        let mut from: HashMap<String, u64> = HashMap::new();
        for deal in self.deals.values() {
            if !matches!(deal.structure, CostStructure::Subscription { .. }) {
                continue;
            }
            let account = &deal.account.0;
            let mut first = today;
            for day in (today.saturating_sub(CATCH_UP_DAYS)..today).rev() {
                match self.store.get(&fee_work_id(day, account), false).await {
                    Ok(Some(_)) => break,
                    Ok(None) => first = day,
                    Err(e) => {
                        tracing::error!(code = e.code(), "subscription catch-up: {e}");
                        break;
                    }
                }
            }
            // No fee row in the window: a new subscriber, from today.
            if first == today.saturating_sub(CATCH_UP_DAYS) {
                first = today;
            }
            from.insert(account.clone(), first);
        }
        let start = from.values().copied().min().unwrap_or(today);
        let mut charged = 0;
        for day in start..=today {
            let due = |account: &str| from.get(account).is_some_and(|f| *f <= day);
            charged += self.charge_subscriptions(day, &due).await;
        }
        charged
    }

    fn has_subscriptions(&self) -> bool {
        self.deals
            .values()
            .any(|d| matches!(d.structure, CostStructure::Subscription { .. }))
    }
}

/// Charges each subscription's fee for the current UTC day, at start-up and
/// then at each midnight, until `stop`.
pub(crate) async fn subscriptions(ledger: Arc<Ledger>, stop: CancellationToken) {
    if !ledger.has_subscriptions() {
        return;
    }
    ledger
        .catch_up_subscriptions(crate::now_ms() / DAY_MS)
        .await;
    loop {
        let now = crate::now_ms();
        ledger.charge_subscriptions(now / DAY_MS, &|_| true).await;
        let to_midnight = DAY_MS - now % DAY_MS;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(to_midnight)) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::config::{DealConfig, DealStructure, LedgerConfig};

    fn subscribed(accounts: &[&str]) -> (Ledger, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LedgerConfig {
            deals: accounts
                .iter()
                .map(|a| DealConfig {
                    account: a.to_string(),
                    default_tier: None,
                    structure: DealStructure::Subscription {
                        tier: "standard".into(),
                        daily_fee_fiat_micros: 5_000_000,
                    },
                })
                .collect(),
            ..LedgerConfig::default()
        };
        let (ledger, _rx) = Ledger::open(
            std::sync::Arc::new(brume_ledger::store::SqliteStore::open(dir.path()).expect("store")),
            &config,
            "0xoperator".into(),
        )
        .expect("ledger");
        (ledger, dir)
    }

    async fn charged(ledger: &Ledger, day: u64, account: &str) -> bool {
        use brume_ledger::store::LedgerStore as _;
        matches!(
            ledger.store.get(&fee_work_id(day, account), false).await,
            Ok(Some(_))
        )
    }

    /// Days the broker did not run are charged when it starts again; a
    /// new subscriber is charged from today; charging again is a no-op.
    #[tokio::test]
    async fn days_the_broker_missed_are_charged_at_start() {
        let (ledger, _dir) = subscribed(&["old", "new"]);
        let today = 20_000;
        assert_eq!(
            ledger
                .charge_subscriptions(today - 3, &|a| a == "old")
                .await,
            1
        );
        assert_eq!(ledger.catch_up_subscriptions(today).await, 4);
        for day in today - 3..=today {
            assert!(charged(&ledger, day, "old").await, "old, day {day}");
        }
        assert!(charged(&ledger, today, "new").await);
        assert!(!charged(&ledger, today - 1, "new").await);
        assert_eq!(ledger.catch_up_subscriptions(today).await, 0);
    }
}
