//! The one error body of the REST API: `{"code": "...", "message": "..."}`.
//!
//! `code` is stable: clients match on it. `message` is for humans and may
//! change. Each code has exactly one HTTP status. `docs/errors.md` lists
//! them, generated from this file by `cargo xtask docs`.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = ($code:literal, $status:literal), )*) => {
        /// Every error code the API returns.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            /// All codes, for docs and tests.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status this code is always returned with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// What the code means, in one line: its doc comment, lines
            /// joined (for the generated `docs/errors.md`).
            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$variant => concat!($($doc),*).trim_ascii(),)* }
            }

            /// Parses a code as it appears on the wire.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

codes! {
    /// The request is malformed: bad JSON, a bad field (the message names it), a bad header.
    InvalidRequest = ("invalid_request", 400),
    /// The uploaded bytes are not a module the sandbox accepts.
    InvalidModule = ("invalid_module", 400),
    /// No API key (`Authorization: Bearer ...`) was given.
    Unauthorized = ("unauthorized", 401),
    /// The API key given is not valid.
    Forbidden = ("forbidden", 403),
    /// No service by that name.
    UnknownService = ("unknown_service", 404),
    /// The caller does not own the namespace it tried to publish to, retire from or sign in.
    NotOwner = ("not_owner", 403),
    /// The service (or that version of it) was retired by its owner.
    Retired = ("retired", 410),
    /// The alias is taken, or names a namespace that exists, or the account already has one.
    AliasTaken = ("alias_taken", 409),
    /// No such job, blob or route.
    NotFound = ("not_found", 404),
    /// The HTTP method is not allowed here.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The work is in a state that forbids the operation (e.g. the result of a running job), or the account's deal forbids what the request asks (a price cap, another tier than its subscription's).
    Conflict = ("conflict", 409),
    /// A body (module, stdin, spec) is larger than allowed.
    PayloadTooLarge = ("payload_too_large", 413),
    /// The service is the wrong kind for this endpoint (e.g. `/fn/` on a command).
    WrongKind = ("wrong_kind", 422),
    /// The function ran and failed: it trapped.
    Trap = ("trap", 502),
    /// The function ran out of its instruction budget.
    OutOfFuel = ("out_of_fuel", 502),
    /// The function went past its memory cap.
    MemoryLimit = ("memory_limit", 502),
    /// The function wrote more than its output cap.
    OutputTooLarge = ("output_too_large", 502),
    /// The function's input was larger than its input cap.
    InputTooLarge = ("input_too_large", 413),
    /// A job's input file could not be had: not in the blob store or at
    /// its URL, its bytes don't match its sha256, or its key doesn't
    /// decrypt it (the message says which).
    InvalidInput = ("invalid_input", 422),
    /// The module imports something the sandbox doesn't provide.
    ImportNotAllowed = ("import_not_allowed", 422),
    /// The function ran past its wall-clock deadline.
    Timeout = ("timeout", 504),
    /// Too much work is queued; retry after `Retry-After` seconds.
    Overloaded = ("overloaded", 503),
    /// Every attempt failed because providers vanished, or none can take the work.
    ProviderUnavailable = ("provider_unavailable", 503),
    /// The work waited in the queue longer than its queue timeout.
    QueueTimeout = ("queue_timeout", 503),
    /// No broker could place the call: this one couldn't, and no peer
    /// serving it was left within the forwarding hops (the message names
    /// the brokers tried).
    NoBrokerAvailable = ("no_broker_available", 503),
    /// A peer broker this call was forwarded to could not be reached, or
    /// answered with something that is not a response.
    PeerUnreachable = ("peer_unreachable", 502),
    /// The work was cancelled.
    Cancelled = ("cancelled", 409),
    /// Replicated work found no quorum of agreeing results.
    Unverified = ("unverified", 502),
    /// No service tier allowed by the account's deal fits the request's price cap.
    OverPriceCap = ("over_price_cap", 402),
    /// The paying account's allowance to the broker's payout account, minus
    /// its unsettled charges, can't cover the work's maximum cost (escrow).
    InsufficientAllowance = ("insufficient_allowance", 402),
    /// A requester who is only a key (signed requests) already runs as many
    /// units at once as its trust level allows; the message gives the
    /// limit, which grows with its escrow allowance and a clean history.
    TrustLimit = ("trust_limit", 429),
    /// The account already keeps as many affinity sessions as a broker
    /// allows one account; the message gives the limit.
    TooManySessions = ("too_many_sessions", 429),
    /// The lease's escrow ran dry and it was halted: top it up
    /// (`POST /v1/leases/{id}/top-up`) to resume it.
    LeaseHalted = ("lease_halted", 402),
    /// A chain transaction would spend more tokens than the account holds.
    InsufficientBalance = ("insufficient_balance", 402),
    /// A signature (a signed request's, or a chain transaction's) doesn't
    /// verify, or a `Brume-Signature` header is malformed.
    BadSignature = ("bad_signature", 401),
    /// A signed request's timestamp is more than 5 minutes off the broker's clock.
    StaleSignature = ("stale_signature", 401),
    /// A signed request's signature was already used (a replay).
    ReplayedSignature = ("replayed_signature", 401),
    /// A chain transaction's nonce is not the account's next one.
    BadNonce = ("bad_nonce", 409),
    /// This very chain transaction is already on the chain.
    AlreadyKnown = ("already_known", 409),
    /// A chain transaction that can't apply: another chain id, a zero address, an overflow.
    InvalidTx = ("invalid_tx", 400),
    /// The chain's faucet is off (it is only for devnets).
    FaucetDisabled = ("faucet_disabled", 403),
    /// A bug or an environment failure on the broker side.
    Internal = ("internal", 500),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON error body.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema,
)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For `overloaded`: when to try again, in seconds (also the
    /// `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// Sets when to try again.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_s = Some(secs);
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_json_and_strings() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!((400..600).contains(&code.status()), "{code}");
        }
    }

    #[test]
    fn every_code_has_a_one_line_description() {
        for &code in ErrorCode::ALL {
            let d = code.description();
            assert!(!d.is_empty(), "{code} has no doc comment");
            assert!(!d.contains('\n') && !d.contains("  "), "{code}: {d:?}");
        }
        assert_eq!(
            ErrorCode::InsufficientAllowance.description(),
            "The paying account's allowance to the broker's payout account, minus \
             its unsettled charges, can't cover the work's maximum cost (escrow)."
        );
    }
}
