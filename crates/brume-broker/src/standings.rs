//! Standings: what the broker knows of each provider address beyond one
//! session. It owns the bans (proven cheats and the operator's), reads the
//! operator's word (`brume broker providers approve|suspend|ban`) and
//! persists the track records the scheduler ranks by.
//!
//! It reaches storage only through [`StandingStore`]; the SQLite
//! implementation is the broker's [`Store`](crate::store::Store).
//!
//! `brume broker providers …` writes `provider_trust` (and, for a ban,
//! `provider_bans`) straight into the database, whether or not the broker
//! runs. A running broker picks the changes up two ways:
//! - [`Standings::refusal`] reads the database at each handshake, so a
//!   banned or suspended address is refused (close 4005, with the reason)
//!   at once;
//! - [`watch`] re-reads the refused addresses every [`RELOAD`]: it adds the
//!   bans to memory and closes the session (4005) of every connected
//!   provider that is banned or suspended.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brume_api::rest::Reputation;
use brume_chain::Address;

use crate::store::providers::{BanInfo, TrustError, TrustInfo};
use crate::store::{self, Standing, Store, StoreError};
use crate::{Shared, StoreFuture};

/// How often [`watch`] re-reads the operator's decisions.
pub(crate) const RELOAD: Duration = Duration::from_secs(1);

/// Why an address may not connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub address: Address,
    pub standing: Standing,
    pub reason: String,
}

/// A ban to record: a proven cheat (with its proof) or the operator's.
#[derive(Debug, Clone)]
pub(crate) struct Ban {
    pub address: Address,
    pub reason: String,
    /// The serialized proof of cheat, if there is one.
    pub proof: Option<Vec<u8>>,
    pub at_ms: u64,
}

/// The storage the standings need. No SQLite type in it.
pub(crate) trait StandingStore: Send + Sync {
    /// Every banned address and why.
    fn bans(&self) -> StoreFuture<'_, Vec<(Address, String)>>;
    /// Records a ban durably (a later ban of the same address replaces it).
    fn record_ban(&self, ban: Ban) -> StoreFuture<'_, ()>;
    /// The operator's standing of one address (a ban first), if any.
    fn standing(&self, address: Address) -> StoreFuture<'_, Option<(Standing, String)>>;
    /// The banned and the suspended addresses.
    fn refused(&self) -> StoreFuture<'_, Vec<Refused>>;
    /// Every saved track record.
    fn reputations(&self) -> StoreFuture<'_, Vec<(Address, Reputation)>>;
    /// Saves track records (replacing older ones).
    fn save_reputations(&self, records: Vec<(Address, Reputation)>) -> StoreFuture<'_, ()>;
    /// Every reviewed address, and every ban, by address.
    fn reviewed(&self) -> StoreFuture<'_, (Vec<TrustInfo>, Vec<BanInfo>)>;
    /// Sets an address's standing durably; `Err` inside: it is banned (a
    /// ban is final), and nothing changed.
    fn set(
        &self,
        address: String,
        status: Standing,
        reason: String,
    ) -> StoreFuture<'_, Result<TrustInfo, TrustError>>;
}

/// The bans in memory, over a [`StandingStore`].
pub(crate) struct Standings {
    store: Arc<dyn StandingStore>,
    bans: parking_lot::RwLock<HashMap<Address, String>>,
}

impl std::fmt::Debug for Standings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standings")
            .field("bans", &self.bans.read().len())
            .finish_non_exhaustive()
    }
}

impl Standings {
    /// Loads the bans.
    pub async fn open(store: Arc<dyn StandingStore>) -> Result<Standings, StoreError> {
        let bans = store.bans().await?.into_iter().collect();
        Ok(Standings {
            store,
            bans: parking_lot::RwLock::new(bans),
        })
    }

    /// Why `address` is banned, if it is.
    pub fn banned(&self, address: &str) -> Option<String> {
        let a = address.parse::<Address>().ok()?;
        self.bans.read().get(&a).cloned()
    }

    /// How many addresses are banned.
    pub fn ban_count(&self) -> usize {
        self.bans.read().len()
    }

    /// Every reviewed address, and every ban, by address.
    pub async fn reviewed(&self) -> Result<(Vec<TrustInfo>, Vec<BanInfo>), StoreError> {
        self.store.reviewed().await
    }

    /// Sets `address`'s standing (the operator's word): it applies to the
    /// next handshake, and [`watch`] closes sessions it refuses.
    pub async fn set(
        &self,
        address: &str,
        status: Standing,
        reason: &str,
    ) -> Result<TrustInfo, TrustError> {
        self.store
            .set(address.to_string(), status, reason.to_string())
            .await?
    }

    /// Bans `address` at once in memory, then durably.
    pub async fn ban(&self, ban: Ban) -> Result<(), StoreError> {
        self.bans.write().insert(ban.address, ban.reason.clone());
        self.store.record_ban(ban).await
    }

    /// Why a provider's handshake must be refused: its address is banned (a
    /// proven cheat or the operator's ban) or suspended by the operator.
    /// Reads the store, so a change made with `brume broker providers`
    /// applies to the next handshake.
    pub async fn refusal(&self, address: &str) -> Option<String> {
        if let Some(why) = self.banned(address) {
            return Some(close_reason(&format!("{address} is banned: {why}")));
        }
        let Ok(a) = address.parse::<Address>() else {
            return Some(close_reason(&format!("{address} is not an address")));
        };
        match self.store.standing(a).await {
            Ok(Some((status, why))) if !status.may_connect() => Some(close_reason(&format!(
                "{address} is {}: {why}",
                status.as_str()
            ))),
            Ok(_) => None,
            Err(e) => {
                // The in-memory bans still hold; the next reload retries.
                tracing::error!(provider = %address, "read the provider's standing: {e}");
                None
            }
        }
    }

    /// Whether the operator approved `address` (tier 2).
    pub async fn approved(&self, address: &str) -> bool {
        let Ok(a) = address.parse::<Address>() else {
            return false;
        };
        matches!(
            self.store.standing(a).await,
            Ok(Some((Standing::Approved, _)))
        )
    }

    /// Re-reads the refused addresses and adds the operator's bans to
    /// memory.
    async fn reload(&self) -> Result<Vec<Refused>, StoreError> {
        let refused = self.store.refused().await?;
        let mut bans = self.bans.write();
        for r in &refused {
            if r.standing == Standing::Banned && !bans.contains_key(&r.address) {
                tracing::info!(provider = %r.address, reason = %r.reason, "provider banned by the operator");
                bans.insert(r.address, r.reason.clone());
            }
        }
        Ok(refused)
    }

    /// The saved track records.
    pub async fn reputations(&self) -> Result<Vec<(String, Reputation)>, StoreError> {
        let loaded = self.store.reputations().await?;
        Ok(loaded
            .into_iter()
            .map(|(a, r)| (a.to_string().to_ascii_lowercase(), r))
            .collect())
    }

    /// Saves the scheduler's track records changed since the last save.
    pub async fn save_reputations(&self, shared: &Shared) {
        let changed = shared.with_sched(|s, _| s.take_changed_reputation());
        let records: Vec<(Address, Reputation)> = changed
            .into_iter()
            .filter_map(|(a, r)| Some((a.parse().ok()?, r)))
            .collect();
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.store.save_reputations(records).await {
            tracing::error!("save provider reputation: {e}");
        }
    }
}

/// Applies the operator's bans and suspensions to a running broker every
/// [`RELOAD`], until shutdown.
pub(crate) async fn watch(shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(RELOAD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match shared.standings.reload().await {
            Ok(refused) => close_refused(&shared, refused),
            Err(e) => tracing::error!("read the refused providers: {e}"),
        }
    }
}

/// Closes the session of every connected provider in `refused`.
fn close_refused(shared: &Arc<Shared>, refused: Vec<Refused>) {
    if refused.is_empty() {
        return;
    }
    let connected: std::collections::HashSet<Address> = shared.with_sched(|s, _| {
        s.providers
            .values()
            .filter_map(|p| p.address.parse().ok())
            .collect()
    });
    for r in refused {
        if connected.contains(&r.address) {
            let status = r.standing.as_str();
            tracing::info!(provider = %r.address, status, reason = %r.reason, "closing the session of a refused provider");
            let address = r.address.to_string();
            kick(
                shared,
                &address,
                &close_reason(&format!("{address} is {status}: {}", r.reason)),
            );
        }
    }
}

/// Bans `address`: recorded durably, its session (if any) closed, and its
/// reconnects refused.
pub(crate) async fn ban(shared: &Arc<Shared>, address: &str, reason: &str, proof: Option<&[u8]>) {
    match address.parse::<brume_chain::Address>() {
        Ok(a) => {
            let ban = Ban {
                address: a,
                reason: reason.to_string(),
                proof: proof.map(<[u8]>::to_vec),
                at_ms: crate::now_ms(),
            };
            if let Err(e) = shared.standings.ban(ban).await {
                tracing::error!("record a ban: {e}");
            }
        }
        Err(e) => tracing::error!(provider = %address, "ban: not an address: {e}"),
    }
    kick(shared, address, reason);
}

/// Closes the session of `address`, if it has one.
pub(crate) fn kick(shared: &Arc<Shared>, address: &str, reason: &str) {
    shared.lifecycle.with_sched(|s, after| {
        let ids: Vec<u64> = s
            .providers
            .iter()
            .filter(|(_, p)| p.address.eq_ignore_ascii_case(address))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = s.providers.get(&id) {
                let _ = p.tx.send(axum::extract::ws::Message::Close(Some(
                    axum::extract::ws::CloseFrame {
                        code: brume_api::wire::close::BANNED,
                        reason: reason.to_string().into(),
                    },
                )));
            }
            s.remove_provider(id, reason, after);
        }
    });
}

/// Parses a stored (lowercase) address; a row that does not parse is
/// skipped with a warning.
fn parse_stored(address: &str) -> Option<Address> {
    match address.parse() {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(%address, "a stored provider address does not parse: {e}");
            None
        }
    }
}

impl StandingStore for Store {
    fn bans(&self) -> StoreFuture<'_, Vec<(Address, String)>> {
        Box::pin(async move {
            let rows = self.read(store::providers::bans_by_address).await?;
            Ok(rows
                .into_iter()
                .filter_map(|(a, why)| Some((parse_stored(&a)?, why)))
                .collect())
        })
    }

    fn record_ban(&self, ban: Ban) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let address = ban.address.to_string().to_ascii_lowercase();
            self.write(move |tx| {
                store::providers::record_ban(
                    tx,
                    &address,
                    &ban.reason,
                    ban.proof.as_deref(),
                    ban.at_ms,
                )
            })
            .await
        })
    }

    fn standing(&self, address: Address) -> StoreFuture<'_, Option<(Standing, String)>> {
        Box::pin(async move {
            let a = address.to_string();
            self.read(move |c| store::provider_status(c, &a)).await
        })
    }

    fn refused(&self) -> StoreFuture<'_, Vec<Refused>> {
        Box::pin(async move {
            let rows = self.read(store::providers::refused).await?;
            Ok(rows
                .into_iter()
                .filter_map(|(a, standing, reason)| {
                    Some(Refused {
                        address: parse_stored(&a)?,
                        standing,
                        reason,
                    })
                })
                .collect())
        })
    }

    fn reputations(&self) -> StoreFuture<'_, Vec<(Address, Reputation)>> {
        Box::pin(async move {
            let rows = self.read(store::providers::reputation::load).await?;
            Ok(rows
                .into_iter()
                .filter_map(|(a, r)| Some((parse_stored(&a)?, r)))
                .collect())
        })
    }

    fn save_reputations(&self, records: Vec<(Address, Reputation)>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let records: Vec<(String, Reputation)> = records
                .into_iter()
                .map(|(a, r)| (a.to_string().to_ascii_lowercase(), r))
                .collect();
            self.write(move |tx| store::providers::reputation::save(tx, &records))
                .await
        })
    }

    fn reviewed(&self) -> StoreFuture<'_, (Vec<TrustInfo>, Vec<BanInfo>)> {
        store::reading(self, |c| {
            Ok((store::providers::list(c)?, store::providers::bans(c)?))
        })
    }

    fn set(
        &self,
        address: String,
        status: Standing,
        reason: String,
    ) -> StoreFuture<'_, Result<TrustInfo, TrustError>> {
        store::writing(self, move |c| {
            match store::providers::set(c, &address, status, &reason) {
                Err(TrustError::Store(e)) => Err(e),
                refused_or_set => Ok(refused_or_set),
            }
        })
    }
}

/// A WebSocket close frame's reason holds at most 123 bytes: `text` cut on
/// a character boundary to fit.
pub(crate) fn close_reason(text: &str) -> String {
    const MAX: usize = 123;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::close_reason;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= 123, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}
