//! Data in and out of a job: input files fetched by the provider (from the
//! broker's blob store by sha256, or from an http(s) URL its policy
//! allows), checked against their sha256 and placed in the job's work dir;
//! output files the job leaves, returned with its result and stored at the
//! broker by content (`GET /v1/jobs/{id}/outputs/{path}`).
//!
//! An input may carry an AES-256-GCM key: the bytes named by `sha256` are
//! then `nonce (12 bytes) ‖ ciphertext ‖ tag`, cached that way, and
//! decrypted only into the work dir. The key travels in the assignment,
//! never in a receipt.

use serde::{Deserialize, Serialize};

use crate::{ApiError, ErrorCode};

/// The most input files a job may have, and output files it may name.
pub const MAX_FILES: usize = 32;
/// The longest file path.
pub const MAX_PATH: usize = 255;

/// `inputs[]` of a job spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Where the file goes, relative to the work dir (`data/in.csv`).
    #[schema(max_length = 255)]
    pub path: String,
    /// The sha256 of the bytes fetched (of the ciphertext, with `key`).
    #[schema(pattern = "^(?:sha256:)?[0-9a-fA-F]{64}$")]
    pub sha256: String,
    /// Where to fetch it (http or https; the provider's policy must allow
    /// it). Default: the broker's blob store (`POST /v1/data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An AES-256-GCM key, 64 hex digits: the fetched bytes are decrypted
    /// into the work dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub key: Option<String>,
    /// How long the provider may keep the file in its cache, in seconds;
    /// 0: don't keep it. Default: the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// An output file of a finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputRef {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// `POST /v1/data`: what was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataInfo {
    pub sha256: String,
    pub size: u64,
}

/// An input as assigned to a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub path: String,
    /// Lowercase hex.
    pub sha256: String,
    pub url: Option<String>,
    /// 32 bytes.
    pub key: Option<bytes::Bytes>,
    pub ttl_s: Option<u64>,
}

/// An output file as a provider returns it: the broker checks `sha256`
/// against `bytes`, stores them and keeps only the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
    pub bytes: bytes::Bytes,
}

impl OutputFile {
    pub fn reference(&self) -> OutputRef {
        OutputRef {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

fn bad(m: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, m)
}

/// Whether `path` is a relative path of plain components: no `..`, `.`,
/// empty component, leading `/`, backslash or control character.
pub fn check_path(field: &str, path: &str) -> Result<(), ApiError> {
    let ok = !path.is_empty()
        && path.len() <= MAX_PATH
        && !path.starts_with('/')
        && !path.bytes().any(|b| b < 0x20 || b == b'\\' || b == 0x7f)
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{field}: {path:?} is not a relative path of plain names (no `..`, no leading `/`, at most {MAX_PATH} bytes)"
        )))
    }
}

/// Checks a job's inputs and outputs, and turns the inputs into what the
/// provider is assigned.
pub fn check(inputs: &[InputSpec], outputs: &[String]) -> Result<Vec<Input>, ApiError> {
    if inputs.len() > MAX_FILES || outputs.len() > MAX_FILES {
        return Err(bad(format!(
            "inputs, outputs: at most {MAX_FILES} files each"
        )));
    }
    for (i, o) in outputs.iter().enumerate() {
        check_path(&format!("outputs[{i}]"), o)?;
    }
    let mut seen = std::collections::HashSet::new();
    inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            check_path(&format!("inputs[{i}].path"), &s.path)?;
            if !seen.insert(s.path.as_str()) {
                return Err(bad(format!("inputs[{i}].path: {} is named twice", s.path)));
            }
            let sha = crate::parse_digest(&s.sha256)
                .map_err(|e| bad(format!("inputs[{i}].sha256: {e}")))?;
            if let Some(url) = &s.url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(bad(format!(
                    "inputs[{i}].url: {url:?} is not an http(s) URL"
                )));
            }
            let key = match &s.key {
                None => None,
                Some(k) => Some(
                    crate::parse_digest(k)
                        .map(|k| bytes::Bytes::copy_from_slice(&k))
                        .map_err(|_| {
                            bad(format!("inputs[{i}].key: an AES-256 key is 64 hex digits"))
                        })?,
                ),
            };
            Ok(Input {
                path: s.path.clone(),
                sha256: hex::encode(sha),
                url: s.url.clone(),
                key,
                ttl_s: s.ttl_s,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_relative_and_plain() {
        for ok in ["a", "data/in.csv", "a.b/c-d_e"] {
            assert!(check_path("p", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\\b",
            "a\nb",
        ] {
            assert!(check_path("p", bad).is_err(), "{bad:?}");
        }
    }
}
