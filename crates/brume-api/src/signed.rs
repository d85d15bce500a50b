//! Signed requests: "no account needed". Instead of an API key, a requester
//! signs each request with its secp256k1 key; the address is the account
//! that pays.
//!
//! The header is
//!
//! ```text
//! Authorization: Brume-Signature address=0x<40 hex>,timestamp=<unix ms>,signature=0x<130 hex>
//! ```
//!
//! and the signature is EIP-191 `personal_sign` over exactly the text of
//! [`message`]:
//!
//! ```text
//! brume request
//! method: POST
//! path: /v1/functions/echo/invoke?arg=a
//! timestamp: 1767225600000
//! body-sha256: 0x<64 lowercase hex digits>
//! ```
//!
//! `path` is the request target as sent (path and query, percent-encoding
//! untouched); `body-sha256` is the sha256 of the body bytes (of the empty
//! string for no body). The broker refuses a timestamp more than
//! [`MAX_SKEW_MS`] off its clock (`stale_signature`) and a signature it has
//! already seen within that window (`replayed_signature`); signatures are
//! deterministic (RFC 6979), so a client sends strictly increasing
//! timestamps.

/// The `Authorization` scheme of a signed request.
pub const SCHEME: &str = "Brume-Signature";

/// The most a signed request's timestamp may differ from the broker's clock.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// The text a signed request's signature covers.
pub fn message(
    method: &str,
    path_and_query: &str,
    timestamp_ms: u64,
    body_sha256: &[u8; 32],
) -> String {
    let mut hex = String::with_capacity(64);
    for b in body_sha256 {
        hex.push_str(&format!("{b:02x}"));
    }
    format!(
        "brume request\nmethod: {method}\npath: {path_and_query}\ntimestamp: {timestamp_ms}\nbody-sha256: 0x{hex}"
    )
}

/// The parts of a `Brume-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// As written (`0x` + 40 hex digits).
    pub address: String,
    pub timestamp_ms: u64,
    pub signature: [u8; 65],
}

impl SignatureHeader {
    /// The header's value.
    pub fn to_header(&self) -> String {
        let mut sig = String::with_capacity(130);
        for b in &self.signature {
            sig.push_str(&format!("{b:02x}"));
        }
        format!(
            "{SCHEME} address={},timestamp={},signature=0x{sig}",
            self.address, self.timestamp_ms
        )
    }

    /// Parses a header value; `None` if it is not the `Brume-Signature`
    /// scheme at all, `Some(Err)` if it is but malformed.
    pub fn parse(value: &str) -> Option<Result<SignatureHeader, HeaderError>> {
        let rest = value.strip_prefix(SCHEME)?.strip_prefix(' ')?;
        Some(parse_params(rest))
    }
}

/// Why a `Brume-Signature` header is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("timestamp {0:?} is not unix milliseconds")]
    Timestamp(String),
    #[error("signature: expected 0x + 130 hex digits")]
    Signature,
    #[error("address {0:?}: expected 0x + 40 hex digits")]
    Address(String),
    #[error("unknown parameter {0:?}")]
    Unknown(String),
    #[error("{0}: missing")]
    Missing(&'static str),
}

fn parse_params(rest: &str) -> Result<SignatureHeader, HeaderError> {
    let (mut address, mut timestamp, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| HeaderError::NotKeyValue(part.to_string()))?;
        match k {
            "address" => address = Some(v.to_string()),
            "timestamp" => {
                timestamp = Some(
                    v.parse::<u64>()
                        .map_err(|_| HeaderError::Timestamp(v.to_string()))?,
                )
            }
            "signature" => {
                let hex = v.strip_prefix("0x").unwrap_or(v);
                if hex.len() != 130 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(HeaderError::Signature);
                }
                let mut sig = [0u8; 65];
                for (i, b) in sig.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                        .map_err(|_| HeaderError::Signature)?;
                }
                signature = Some(sig);
            }
            other => return Err(HeaderError::Unknown(other.to_string())),
        }
    }
    let address = address.ok_or(HeaderError::Missing("address"))?;
    if address.len() != 42
        || !address.starts_with("0x")
        || !address[2..].bytes().all(|c| c.is_ascii_hexdigit())
    {
        return Err(HeaderError::Address(address));
    }
    Ok(SignatureHeader {
        address,
        timestamp_ms: timestamp.ok_or(HeaderError::Missing("timestamp"))?,
        signature: signature.ok_or(HeaderError::Missing("signature"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_refuses_garbage() {
        let h = SignatureHeader {
            address: format!("0x{}", "ab".repeat(20)),
            timestamp_ms: 42,
            signature: [7; 65],
        };
        let text = h.to_header();
        assert_eq!(SignatureHeader::parse(&text), Some(Ok(h)));
        assert_eq!(SignatureHeader::parse("Bearer brk_x"), None);
        assert!(matches!(
            SignatureHeader::parse("Brume-Signature address=0x12,timestamp=1,signature=0x00"),
            Some(Err(_))
        ));
        let m = message("GET", "/v1/x?a=1", 5, &[0; 32]);
        assert!(m.starts_with("brume request\nmethod: GET\npath: /v1/x?a=1\ntimestamp: 5\n"));
    }
}
