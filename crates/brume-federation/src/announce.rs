//! Signing and checking announcements.

use brume_api::federation::{Announcement, MAX_ANNOUNCEMENT_BYTES, SignedAnnouncement};
use brume_identity::Identity;

/// Why an announcement was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("too large")]
    TooLarge,
    #[error("not an announcement: {0}")]
    Malformed(String),
    #[error("the signature is not the broker's: {0}")]
    Signature(String),
    #[error("sent from peer {sent_from}, but it names peer {named}")]
    WrongPeer { sent_from: String, named: String },
    #[error("its ttl_ms {0} is not between 1 ms and 10 minutes")]
    Ttl(u64),
    #[error("it lists more than {0} services")]
    TooManyServices(usize),
}

impl Rejected {
    /// Whether this is a bad signature or a peer speaking for another
    /// (counted apart from malformed messages).
    pub fn is_forgery(&self) -> bool {
        matches!(self, Rejected::Signature(_) | Rejected::WrongPeer { .. })
    }
}

/// The longest an announcement may ask to be kept without a refresh.
pub const MAX_TTL_MS: u64 = 10 * 60 * 1000;

/// Signs `announcement` with the broker's key.
pub fn sign(
    identity: &Identity,
    announcement: Announcement,
) -> Result<SignedAnnouncement, brume_identity::IdentityError> {
    let signature = identity.sign_message(&announcement.message())?;
    Ok(SignedAnnouncement {
        announcement,
        signature: format!("0x{}", hex::encode(signature)),
    })
}

/// Checks a signed announcement: its signature recovers to the broker it
/// names, and its bounds hold. `sent_from` is the libp2p peer that
/// published it (gossipsub's signed author), which must be the peer the
/// announcement names.
pub fn verify(signed: &SignedAnnouncement, sent_from: Option<&str>) -> Result<(), Rejected> {
    let a = &signed.announcement;
    if let Some(from) = sent_from
        && from != a.peer_id
    {
        return Err(Rejected::WrongPeer {
            sent_from: from.to_string(),
            named: a.peer_id.clone(),
        });
    }
    if a.ttl_ms == 0 || a.ttl_ms > MAX_TTL_MS {
        return Err(Rejected::Ttl(a.ttl_ms));
    }
    if a.services.len() > brume_api::federation::MAX_ANNOUNCED_SERVICES {
        return Err(Rejected::TooManyServices(
            brume_api::federation::MAX_ANNOUNCED_SERVICES,
        ));
    }
    let sig = signed
        .signature
        .strip_prefix("0x")
        .unwrap_or(&signed.signature);
    let sig = hex::decode(sig).map_err(|e| Rejected::Signature(e.to_string()))?;
    brume_identity::verify(&a.message(), &sig, &a.broker)
        .map_err(|e| Rejected::Signature(e.to_string()))?;
    Ok(())
}

/// Parses and checks a gossiped message.
pub fn decode(data: &[u8], sent_from: Option<&str>) -> Result<SignedAnnouncement, Rejected> {
    if data.len() > MAX_ANNOUNCEMENT_BYTES {
        return Err(Rejected::TooLarge);
    }
    let signed: SignedAnnouncement =
        serde_json::from_slice(data).map_err(|e| Rejected::Malformed(e.to_string()))?;
    verify(&signed, sent_from)?;
    Ok(signed)
}

/// Signs a cheat notice with the broker's key.
pub fn sign_notice(
    identity: &Identity,
    notice: brume_api::federation::CheatNotice,
) -> Result<brume_api::federation::SignedCheatNotice, brume_identity::IdentityError> {
    let signature = identity.sign_message(&notice.message())?;
    Ok(brume_api::federation::SignedCheatNotice {
        notice,
        signature: format!("0x{}", hex::encode(signature)),
    })
}

/// Parses a gossiped cheat notice and checks its broker's signature (the
/// proof itself is the receiver's to check).
pub fn decode_notice(data: &[u8]) -> Result<brume_api::federation::SignedCheatNotice, Rejected> {
    if data.len() > brume_api::federation::MAX_NOTICE_BYTES {
        return Err(Rejected::TooLarge);
    }
    let signed: brume_api::federation::SignedCheatNotice =
        serde_json::from_slice(data).map_err(|e| Rejected::Malformed(e.to_string()))?;
    let sig = signed
        .signature
        .strip_prefix("0x")
        .unwrap_or(&signed.signature);
    let sig = hex::decode(sig).map_err(|e| Rejected::Signature(e.to_string()))?;
    brume_identity::verify(&signed.notice.message(), &sig, &signed.notice.broker)
        .map_err(|e| Rejected::Signature(e.to_string()))?;
    Ok(signed)
}
