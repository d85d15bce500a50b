//! The operator's word on provider addresses (`brume broker providers`):
//! standings (`provider_trust`) and bans (`provider_bans`); and providers'
//! track records (`provider_reputation`).

use brume_sql::{Sql, V};

use super::StoreError;

/// The operator's standing of a provider address (`brume broker providers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Operator-approved (tier 2).
    Approved,
    /// Refused at the handshake and disconnected until approved.
    Suspended,
    /// Refused for good (also recorded in `provider_bans`).
    Banned,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Approved => "approved",
            Standing::Suspended => "suspended",
            Standing::Banned => "banned",
        }
    }

    fn parse(s: &str) -> Option<Standing> {
        match s {
            "approved" => Some(Standing::Approved),
            "suspended" => Some(Standing::Suspended),
            "banned" => Some(Standing::Banned),
            _ => None,
        }
    }

    /// Whether a provider with this standing may connect.
    pub fn may_connect(self) -> bool {
        self == Standing::Approved
    }
}

/// A provider's standing and its reason: banned if `provider_bans` has the
/// address (a proven cheat, or the operator's ban), else what
/// `provider_trust` says, else `None` (never reviewed: tier 4).
pub fn provider_status(
    c: &mut dyn Sql,
    address: &str,
) -> Result<Option<(Standing, String)>, StoreError> {
    let address = address.to_ascii_lowercase();
    if let Some(r) = c.one(
        "SELECT reason FROM provider_bans WHERE address = ?1",
        &[V::T(&address)],
    )? {
        return Ok(Some((Standing::Banned, r.t(0)?)));
    }
    let row = c.one(
        "SELECT status, reason FROM provider_trust WHERE address = ?1",
        &[V::T(&address)],
    )?;
    let Some(r) = row else { return Ok(None) };
    let Some(standing) = Standing::parse(&r.t(0)?) else {
        return Ok(None);
    };
    Ok(Some((standing, r.t(1)?)))
}

/// Providers' track records (`brume_api::rest::Reputation`, as JSON), by
/// lowercase address: what adaptive verification and matching rank by,
/// kept across restarts.
pub(crate) mod reputation {
    use brume_api::rest::Reputation;

    use super::*;

    pub fn load(c: &mut dyn Sql) -> Result<Vec<(String, Reputation)>, StoreError> {
        let rows = c.query("SELECT address, body FROM provider_reputation", &[])?;
        let mut out = Vec::new();
        for r in &rows {
            let address = r.t(0)?;
            match serde_json::from_str(&r.t(1)?) {
                Ok(rep) => out.push((address, rep)),
                Err(e) => tracing::warn!(%address, "a stored reputation does not parse: {e}"),
            }
        }
        Ok(out)
    }

    pub fn save(c: &mut dyn Sql, records: &[(String, Reputation)]) -> Result<(), StoreError> {
        for (address, rep) in records {
            let body = serde_json::to_string(rep).unwrap_or_default();
            c.exec(
                "INSERT INTO provider_reputation (address, body) VALUES (?1, ?2)
                 ON CONFLICT (address) DO UPDATE SET body = excluded.body",
                &[V::T(address), V::T(&body)],
            )?;
        }
        Ok(())
    }
}

/// Bans `address` (lowercase) for `reason`, with the proof of cheat if
/// there is one. A ban is final: a later one only replaces the record.
pub fn record_ban(
    c: &mut dyn Sql,
    address: &str,
    reason: &str,
    proof: Option<&[u8]>,
    at_ms: u64,
) -> Result<(), StoreError> {
    c.exec(
        "INSERT INTO provider_bans (address, reason, proof, at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (address) DO UPDATE
         SET reason = excluded.reason, proof = excluded.proof, at_ms = excluded.at_ms",
        &[
            V::T(address),
            V::T(reason),
            proof.into(),
            V::I(at_ms as i64),
        ],
    )?;
    Ok(())
}

/// Every banned address (lowercase) and why.
pub fn bans_by_address(c: &mut dyn Sql) -> Result<Vec<(String, String)>, StoreError> {
    let rows = c.query("SELECT address, reason FROM provider_bans", &[])?;
    rows.iter().map(|r| Ok((r.t(0)?, r.t(1)?))).collect()
}

/// One reviewed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustInfo {
    /// Lowercase `0x` address.
    pub address: String,
    pub status: Standing,
    pub reason: String,
    pub at_ms: u64,
}

/// One banned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanInfo {
    pub address: String,
    pub reason: String,
    /// Whether a proof of cheat is recorded with the ban.
    pub has_proof: bool,
    pub at_ms: u64,
}

/// Why a standing couldn't be changed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{address} is banned ({reason}); a ban is final")]
    Banned { address: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<brume_sql::Error> for TrustError {
    fn from(e: brume_sql::Error) -> TrustError {
        TrustError::Store(e.into())
    }
}

/// Sets `address`'s standing, in the caller's transaction. A ban also
/// goes to `provider_bans` (an existing ban row, perhaps with a proof, is
/// kept); a banned address can't be approved or suspended.
pub fn set(
    c: &mut dyn Sql,
    address: &str,
    status: Standing,
    reason: &str,
) -> Result<TrustInfo, TrustError> {
    let address = address.to_ascii_lowercase();
    if status != Standing::Banned
        && let Some((Standing::Banned, reason)) = provider_status(c, &address)?
    {
        return Err(TrustError::Banned { address, reason });
    }
    let at_ms = crate::now_ms();
    c.exec(
        "INSERT INTO provider_trust (address, status, reason, at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (address) DO UPDATE
         SET status = excluded.status, reason = excluded.reason, at_ms = excluded.at_ms",
        &[
            V::T(&address),
            V::T(status.as_str()),
            V::T(reason),
            V::I(at_ms as i64),
        ],
    )?;
    if status == Standing::Banned {
        c.exec(
            "INSERT INTO provider_bans (address, reason, proof, at_ms) VALUES (?1, ?2, NULL, ?3)
             ON CONFLICT (address) DO NOTHING",
            &[V::T(&address), V::T(reason), V::I(at_ms as i64)],
        )?;
    }
    Ok(TrustInfo {
        address,
        status,
        reason: reason.to_string(),
        at_ms,
    })
}

/// Every reviewed address, by address.
pub fn list(c: &mut dyn Sql) -> Result<Vec<TrustInfo>, StoreError> {
    let rows = c.query(
        "SELECT address, status, reason, at_ms FROM provider_trust ORDER BY address",
        &[],
    )?;
    let mut out = Vec::new();
    for r in &rows {
        if let Some(status) = Standing::parse(&r.t(1)?) {
            out.push(TrustInfo {
                address: r.t(0)?,
                status,
                reason: r.t(2)?,
                at_ms: r.i(3)? as u64,
            });
        }
    }
    Ok(out)
}

/// Every ban, by address.
pub fn bans(c: &mut dyn Sql) -> Result<Vec<BanInfo>, StoreError> {
    let rows = c.query(
        "SELECT address, reason, proof IS NOT NULL, at_ms FROM provider_bans ORDER BY address",
        &[],
    )?;
    rows.iter()
        .map(|r| {
            Ok(BanInfo {
                address: r.t(0)?,
                reason: r.t(1)?,
                has_proof: r.i(2)? != 0,
                at_ms: r.i(3)? as u64,
            })
        })
        .collect()
}

/// The addresses that may not connect, with why: the bans and the
/// suspensions.
pub fn refused(c: &mut dyn Sql) -> Result<Vec<(String, Standing, String)>, StoreError> {
    let rows = c.query(
        "SELECT address, 'banned', reason FROM provider_bans
         UNION ALL
         SELECT address, status, reason FROM provider_trust
         WHERE status = 'suspended' AND address NOT IN (SELECT address FROM provider_bans)",
        &[],
    )?;
    let mut out = Vec::new();
    for r in &rows {
        if let Some(s) = Standing::parse(&r.t(1)?) {
            out.push((r.t(0)?, s, r.t(2)?));
        }
    }
    Ok(out)
}
