//! [`ClientError`]: everything a call can fail with.

use std::time::Duration;

use brume_api::{ApiError, ErrorCode};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error status. `error` is its JSON body
    /// (or, when the body wasn't one, a stand-in with the code that the
    /// status implies and the body's text as message).
    #[error("{error}")]
    Api {
        status: u16,
        error: ApiError,
        /// From `Retry-After` (on `overloaded` and friends).
        retry_after: Option<Duration>,
    },
    /// The broker could not be reached, or the connection broke.
    #[error("cannot reach broker at {url}: {reason}")]
    Transport {
        /// The broker's base URL.
        url: String,
        reason: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The broker answered 2xx with a body that isn't what the API promises.
    #[error("unexpected response from {url}: {reason}")]
    Decode { url: String, reason: String },
    /// The client was given something it can't use (a bad broker URL).
    #[error("{0}")]
    Invalid(String),
    /// The TLS trust it was given can't be used.
    #[error("TLS: {0}")]
    Tls(#[source] brume_tls::TlsError),
}

impl ClientError {
    /// The API error code, for [`ClientError::Api`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// The HTTP status, for [`ClientError::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the broker asked us to wait before retrying, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the broker was never reached or the connection broke.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    pub(crate) fn transport(url: &str, e: reqwest::Error) -> ClientError {
        ClientError::Transport {
            url: url.to_string(),
            reason: describe(&e),
            source: Some(e),
        }
    }
}

/// A short, human reason for a reqwest failure: the innermost cause
/// ("connection refused"), not reqwest's "error sending request for url".
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    // A pinned certificate that did not match: say which.
    if let Some(text) = brume_tls::explain(e) {
        return text;
    }
    let mut cause: &dyn std::error::Error = e;
    let mut io_kind = None;
    while let Some(next) = cause.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        cause = next;
    }
    use std::io::ErrorKind::*;
    match io_kind {
        Some(ConnectionRefused) => "connection refused".into(),
        Some(ConnectionReset) => "connection reset".into(),
        Some(ConnectionAborted) => "connection aborted".into(),
        Some(TimedOut) => "timed out".into(),
        Some(UnexpectedEof) => "connection closed early".into(),
        _ => {
            let text = cause.to_string();
            if e.is_body() || e.is_decode() {
                format!("connection lost while reading the response ({text})")
            } else {
                text
            }
        }
    }
}

/// The error body of a non-2xx response. A body that isn't an [`ApiError`]
/// (a proxy's HTML page, a code this client doesn't know) still gives one:
/// the code is the one the status implies, the message keeps what was said.
pub fn parse_api_error(status: u16, body: &[u8]) -> ApiError {
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        return e;
    }
    let code = code_for_status(status);
    #[derive(serde::Deserialize)]
    struct Loose {
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(l) = serde_json::from_slice::<Loose>(body) {
        return ApiError::new(code, format!("{}: {}", l.code, l.message));
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let message = if text.is_empty() {
        format!("HTTP {status} {reason}").trim_end().to_string()
    } else {
        let mut t: String = text.chars().take(200).collect();
        if t.len() < text.len() {
            t.push('…');
        }
        format!("HTTP {status}: {t}")
    };
    ApiError::new(code, message)
}

/// The code a bare status most likely stands for.
fn code_for_status(status: u16) -> ErrorCode {
    match status {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        422 => ErrorCode::WrongKind,
        503 => ErrorCode::Overloaded,
        504 => ErrorCode::Timeout,
        400..=499 => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    }
}

/// `Retry-After`: delay-seconds (the HTTP-date form is not used by brume).
pub(crate) fn parse_retry_after(value: &http::HeaderValue) -> Option<Duration> {
    value
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_bodies_parse_or_degrade_gracefully() {
        let e = parse_api_error(404, br#"{"code":"unknown_service","message":"no such"}"#);
        assert_eq!(e.code, ErrorCode::UnknownService);
        assert_eq!(e.message, "no such");

        let e = parse_api_error(418, br#"{"code":"teapot","message":"short and stout"}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(e.message, "teapot: short and stout");

        let e = parse_api_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.message, "HTTP 502: <html>Bad Gateway</html>");

        let e = parse_api_error(405, b"");
        assert_eq!(e.code, ErrorCode::MethodNotAllowed);
        assert_eq!(e.message, "HTTP 405 Method Not Allowed");
    }

    #[test]
    fn retry_after_is_seconds() {
        let v = http::HeaderValue::from_static(" 3 ");
        assert_eq!(parse_retry_after(&v), Some(Duration::from_secs(3)));
        let v = http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&v), None);
    }
}
