//! How services are named: namespaces, aliases and versions.
//!
//! A service lives in its owner's namespace. The owner is an account: an
//! address (`0x` and 40 hex digits, written checksummed), or, for an API
//! key bound to no address, the key's label. An account may register one
//! short alias, which names the same namespace.
//!
//! A reference is one path segment, so it fits `/fn/{service}/…`:
//!
//! ```text
//! [owner~]name[@version]
//! ```
//!
//! - `owner` is an address, an alias or a label; without it the name
//!   resolves in the caller's own namespace;
//! - `version` is a number (`echo@3`) or a module digest (64 hex digits);
//!   without it, the latest version.
//!
//! Service names and aliases use `[a-z0-9._-]`, so `~` and `@` can't occur
//! in them and a reference parses one way only.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::rest::validate_service_name;

/// Separates an owner from a service name.
pub const OWNER_SEP: char = '~';
/// Separates a service name from its version.
pub const VERSION_SEP: char = '@';

/// Which version a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSel {
    /// The latest version.
    Latest,
    /// `name@N` (versions count from 1).
    Number(u64),
    /// `name@<sha256 hex>`: the version with this module digest (lowercase).
    Digest(String),
}

/// A parsed `[owner~]name[@version]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// The namespace as written (address, alias or label), if any.
    pub owner: Option<String>,
    pub name: String,
    pub version: VersionSel,
}

impl ServiceRef {
    /// Parses a reference; the error names what is wrong.
    pub fn parse(s: &str) -> Result<ServiceRef, ApiError> {
        let bad = |m: String| ApiError::new(ErrorCode::InvalidRequest, m);
        let (owner, rest) = match s.split_once(OWNER_SEP) {
            Some((o, r)) => (Some(o), r),
            None => (None, s),
        };
        if let Some(o) = owner {
            validate_owner(o).map_err(|m| bad(format!("service {s:?}: owner {m}")))?;
        }
        let (name, version) = match rest.split_once(VERSION_SEP) {
            None => (rest, VersionSel::Latest),
            Some((n, v)) => (
                n,
                parse_version(v).map_err(|m| bad(format!("service {s:?}: {m}")))?,
            ),
        };
        validate_service_name(name)?;
        Ok(ServiceRef {
            owner: owner.map(str::to_string),
            name: name.to_string(),
            version,
        })
    }
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(o) = &self.owner {
            write!(f, "{o}{OWNER_SEP}")?;
        }
        f.write_str(&self.name)?;
        match &self.version {
            VersionSel::Latest => Ok(()),
            VersionSel::Number(n) => write!(f, "{VERSION_SEP}{n}"),
            VersionSel::Digest(d) => write!(f, "{VERSION_SEP}{d}"),
        }
    }
}

fn parse_version(v: &str) -> Result<VersionSel, String> {
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(VersionSel::Digest(v.to_ascii_lowercase()));
    }
    match v.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(VersionSel::Number(n)),
        _ => Err(format!(
            "version {v:?} is neither a number from 1 nor a module digest (64 hex digits)"
        )),
    }
}

/// An owner as written in a reference: an address, an alias or a label.
/// Labels of old keys may be any text, so this is looser than
/// [`validate_alias`]: 1–64 printable ASCII characters, none of `~@/`.
fn validate_owner(o: &str) -> Result<(), String> {
    let ok = !o.is_empty()
        && o.len() <= 64
        && o.bytes()
            .all(|b| b.is_ascii_graphic() && !b"~@/?#%".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{o:?} is not a namespace (an address, an alias, or a key label of 1-64 printable characters without ~ @ / ? # %)"
        ))
    }
}

/// Whether `s` is written like an address (`0x` and 40 hex digits).
pub fn looks_like_address(s: &str) -> bool {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    hex.is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Aliases: 3–32 of `[a-z0-9._-]`, starting with a letter, and not
/// written like an address.
pub fn validate_alias(alias: &str) -> Result<(), ApiError> {
    let ok = (3..=32).contains(&alias.len())
        && alias.as_bytes()[0].is_ascii_lowercase()
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !looks_like_address(alias);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "alias: {alias:?} is not an alias (3-32 of a-z 0-9 . _ -, starting with a letter)"
            ),
        ))
    }
}

/// `POST /v1/aliases`: registers the caller's alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasRequest {
    /// 3–32 of `[a-z0-9._-]`, starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9._-]{2,31}$")]
    pub alias: String,
}

/// `POST /v1/aliases` (201), `GET /v1/aliases/{alias}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AliasInfo {
    pub alias: String,
    /// The account the alias names.
    pub account: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// `POST /v1/services/{service}/move` (operator, `admin`): gives a service,
/// every version of it, to another namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The new owner: an address, an alias or a label.
    pub owner: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_one_way() {
        let r = ServiceRef::parse("echo").expect("ok");
        assert_eq!(
            (r.owner, r.name, r.version),
            (None, "echo".into(), VersionSel::Latest)
        );
        let r = ServiceRef::parse("alice~echo@3").expect("ok");
        assert_eq!(r.owner.as_deref(), Some("alice"));
        assert_eq!(r.version, VersionSel::Number(3));
        assert_eq!(r.to_string(), "alice~echo@3");
        let d = "AB".repeat(32);
        let r = ServiceRef::parse(&format!("0x{}~echo@{d}", "1".repeat(40))).expect("ok");
        assert_eq!(r.version, VersionSel::Digest(d.to_lowercase()));
        for bad in [
            "", "~echo", "a~", "echo@", "echo@0", "echo@x", "a/b~echo", "Echo", "a~b~c",
        ] {
            assert!(ServiceRef::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn aliases_cannot_look_like_addresses() {
        validate_alias("alice").expect("ok");
        validate_alias("acme-labs.eu").expect("ok");
        let addr = format!("0x{}", "a".repeat(40));
        assert!(looks_like_address(&addr));
        for bad in ["ab", "0xabc", "9lives", "Alice", "a~b", "a@b", &addr] {
            assert!(validate_alias(bad).is_err(), "{bad:?} accepted");
        }
    }
}
