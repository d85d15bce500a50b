//! The broker's hub wallet, checked before joining (the SONM seed's
//! miner–hub check) and again every so often while joined.
//!
//! A broker advertises its hub wallet in `/v1/status`. The provider trusts
//! none of what the broker says about it: it asks the broker to sign a
//! fresh nonce with the wallet's hub key (`/v1/hub/proof`), reads the
//! wallet itself through its own RPC, and joins only if
//! - the signer is the wallet's `hub` (a broker can't borrow another's),
//! - the wallet is Registered or Idle (not Created, Suspected or
//!   Punished),
//! - no payday was missed, and none is overdue,
//! - what backs it is at least [`HubRequirement::min_bond`]: the bond
//!   frozen while Registered; the wallet's balance while Idle (between
//!   periods nothing is frozen, and the check is repeated).
//!
//! A failure is logged (`refusing broker …`) and shown by `brume provide
//! status`; while joined, a failed re-check closes the connection, and the
//! provider tries again at the next check.

use std::time::Duration;

use brume_api::rest::{HubCheck, HubProof, Status};

use crate::Shared;

/// What a provider requires of its broker's hub wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRequirement {
    /// The JSON-RPC URL of the chain the wallet is on (the provider's own
    /// view of it).
    pub rpc: String,
    /// The least bond (token base units).
    pub min_bond: u128,
    /// How often the check is made again.
    pub every: Duration,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks the broker's hub wallet against `req`; the result is also what
/// `brume provide status` shows.
pub(crate) async fn check(shared: &Shared, req: &HubRequirement) -> HubCheck {
    let mut out = HubCheck {
        checked_ms: now_ms(),
        ..HubCheck::default()
    };
    match examine(shared, req, &mut out).await {
        Ok(detail) => {
            out.ok = true;
            out.detail = detail;
        }
        Err(why) => {
            out.ok = false;
            out.detail = why;
        }
    }
    out
}

async fn examine(
    shared: &Shared,
    req: &HubRequirement,
    out: &mut HubCheck,
) -> Result<String, String> {
    let base = shared.config.broker_url.trim_end_matches('/');
    let status: Status = get_json(shared, &format!("{base}/v1/status")).await?;
    let wallet = status
        .hub_wallet
        .ok_or("the broker advertises no hub wallet")?;
    out.wallet = Some(wallet.clone());
    let wallet_addr: brume_evm::Address = wallet
        .parse()
        .map_err(|_| format!("the advertised hub wallet {wallet:?} is not an address"))?;
    let nonce = format!("{}", brume_evm::B256::random());
    let proof: HubProof = get_json(shared, &format!("{base}/v1/hub/proof?nonce={nonce}")).await?;
    if !proof.wallet.eq_ignore_ascii_case(&wallet) || !proof.nonce.eq_ignore_ascii_case(&nonce) {
        return Err("the broker's hub proof is for another wallet or nonce".into());
    }
    let signature = hex::decode(proof.signature.trim_start_matches("0x"))
        .map_err(|_| "the broker's hub proof signature is not hex".to_string())?;
    let message = brume_api::rest::hub_proof_message(&wallet, &nonce);
    let signer = brume_identity::recover(message.as_bytes(), &signature)
        .map_err(|e| format!("the broker's hub proof does not verify: {e}"))?;
    let rpc: brume_evm::Url = req
        .rpc
        .parse()
        .map_err(|e| format!("hub RPC {:?}: {e}", req.rpc))?;
    let view = brume_evm::hub_view(&brume_evm::read_provider(rpc), wallet_addr)
        .await
        .map_err(|e| format!("read the hub wallet {wallet} on {}: {e}", req.rpc))?;
    out.phase = Some(view.phase.as_str().to_string());
    out.bond = Some(view.bond.to_string());
    judge(&view, signer, req.min_bond)
}

/// The verdict on a wallet read on chain, whose proof `signer` signed.
fn judge(
    view: &brume_evm::HubView,
    signer: brume_evm::Address,
    min_bond: u128,
) -> Result<String, String> {
    let wallet = view.wallet;
    if view.hub != signer {
        return Err(format!(
            "the hub wallet {wallet} belongs to {}, but the broker proved {signer}",
            view.hub
        ));
    }
    use brume_evm::HubPhase::{Idle, Registered};
    if !matches!(view.phase, Registered | Idle) {
        return Err(format!(
            "the hub wallet {wallet} is {}",
            view.phase.as_str()
        ));
    }
    if view.missed_paydays > 0 || view.payday_overdue {
        return Err(format!(
            "the hub wallet {wallet} missed a payday ({} late of {}{})",
            view.missed_paydays,
            view.paydays,
            if view.payday_overdue {
                ", and one is overdue now"
            } else {
                ""
            }
        ));
    }
    // What backs the hub: its frozen bond while registered; between
    // periods (Idle, nothing frozen) what the wallet holds.
    let backing = if view.phase == Registered {
        view.bond
    } else {
        view.balance
    };
    if backing < min_bond {
        return Err(format!(
            "the hub wallet {wallet} bonds {backing} base units, less than the {} required",
            min_bond
        ));
    }
    Ok(format!(
        "hub wallet {wallet}: {}, backed by {backing} base units, {} paydays, none missed",
        view.phase.as_str(),
        view.paydays
    ))
}

async fn get_json<T: serde::de::DeserializeOwned>(shared: &Shared, url: &str) -> Result<T, String> {
    let resp = shared
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    resp.json().await.map_err(|e| format!("GET {url}: {e}"))
}

/// Re-checks every `every` while the provider runs: the result is stored
/// for status, and a failure tells the session to leave.
pub(crate) async fn watch(shared: std::sync::Arc<Shared>, req: HubRequirement) {
    let mut tick = tokio::time::interval(req.every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the connect loop made the first check
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.stop.cancelled() => return,
        }
        let result = check(&shared, &req).await;
        shared.record_hub(result);
    }
}

#[cfg(test)]
mod tests {
    use super::judge;
    use brume_evm::{Address, HubPhase, HubView};

    fn view(phase: HubPhase) -> HubView {
        HubView {
            wallet: Address::repeat_byte(1),
            hub: Address::repeat_byte(2),
            dao: Address::repeat_byte(3),
            phase,
            balance: 1_000,
            bond: 100,
            locked: 0,
            registered_at: 0,
            payday_due: 0,
            payday_overdue: false,
            paydays: 0,
            missed_paydays: 0,
        }
    }

    #[test]
    fn only_a_bonded_registered_or_idle_hub_that_pays_on_time_passes() {
        let hub = Address::repeat_byte(2);
        assert!(judge(&view(HubPhase::Registered), hub, 100).is_ok());
        assert!(
            judge(&view(HubPhase::Idle), hub, 1_000).is_ok(),
            "idle: its balance backs it"
        );
        for phase in [HubPhase::Created, HubPhase::Suspected, HubPhase::Punished] {
            let e = judge(&view(phase), hub, 0).expect_err("refused");
            assert!(e.contains(phase.as_str()), "{e}");
        }
        let e = judge(&view(HubPhase::Registered), hub, 101).expect_err("too little");
        assert!(e.contains("less than"), "{e}");
        let e =
            judge(&view(HubPhase::Registered), Address::repeat_byte(9), 0).expect_err("borrowed");
        assert!(e.contains("belongs to"), "{e}");
        let late = HubView {
            missed_paydays: 1,
            paydays: 3,
            ..view(HubPhase::Registered)
        };
        assert!(
            judge(&late, hub, 0)
                .expect_err("late")
                .contains("missed a payday")
        );
        let overdue = HubView {
            payday_overdue: true,
            ..view(HubPhase::Registered)
        };
        assert!(
            judge(&overdue, hub, 0)
                .expect_err("overdue")
                .contains("overdue")
        );
    }
}
