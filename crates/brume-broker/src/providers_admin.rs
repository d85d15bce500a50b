//! The operator's word on providers, as a running broker applies it.
//!
//! `brume broker providers approve|suspend|ban` writes `provider_trust`
//! (and, for a ban, `provider_bans`) straight into the database, whether or
//! not the broker runs (`store::providers`). A running broker picks the
//! changes up two ways:
//! - [`refusal`] reads the database at each handshake, so a banned or
//!   suspended address is refused (close 4005, with the reason) at once;
//! - [`watch`] re-reads the refused addresses every [`RELOAD`]: it adds the
//!   bans to `Shared::banned` and closes the session (4005) of every
//!   connected provider that is banned or suspended.
//!
//! `approve` is only recorded for now: operator-approved providers are tier
//! 2, which the scheduler doesn't use yet.

use std::sync::Arc;
use std::time::Duration;

use crate::Shared;
use crate::store::{self, Standing};

/// How often [`watch`] re-reads the operator's decisions.
pub(crate) const RELOAD: Duration = Duration::from_secs(1);

/// Why a provider's handshake must be refused: its address is banned (a
/// proven cheat or the operator's ban) or suspended by the operator.
/// Reads the database (on a blocking thread), so a change made with
/// `brume broker providers` applies to the next handshake.
pub(crate) async fn refusal(shared: &Shared, address: &str) -> Option<String> {
    if let Some(why) = crate::verify::is_banned(shared, address) {
        return Some(close_reason(&format!("{address} is banned: {why}")));
    }
    let a = address.to_string();
    match shared
        .store
        .read(move |c| store::provider_status(c, &a))
        .await
    {
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
        let refused = match shared.store.read(store::providers::refused).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("read the refused providers: {e}");
                continue;
            }
        };
        apply(&shared, refused);
    }
}

fn apply(shared: &Arc<Shared>, refused: Vec<(String, Standing, String)>) {
    if refused.is_empty() {
        return;
    }
    {
        let mut banned = shared.banned.write();
        for (address, status, reason) in &refused {
            if *status == Standing::Banned && !banned.contains_key(address) {
                tracing::info!(provider = %address, %reason, "provider banned by the operator");
                banned.insert(address.clone(), reason.clone());
            }
        }
    }
    let connected: std::collections::HashSet<String> = shared.with_sched(|s, _| {
        s.providers
            .values()
            .map(|p| p.address.to_ascii_lowercase())
            .collect()
    });
    for (address, status, reason) in refused {
        if connected.contains(&address) {
            tracing::info!(provider = %address, status = status.as_str(), %reason, "closing the session of a refused provider");
            crate::verify::kick(
                shared,
                &address,
                &close_reason(&format!("{address} is {}: {reason}", status.as_str())),
            );
        }
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
