//! Images named by reference ([`brume_oci::registry`]): pulled from a
//! registry this provider may use (`--registry URL`, repeatable), manifest
//! then blobs, each checked against its digest as it arrives, and packed
//! into an image layout tar that [`brume_oci::Containers::prepare`] checks
//! and unpacks like an uploaded one. Anonymous pulls only.

use brume_oci::registry::{Blob, MANIFEST_TYPES, MAX_MANIFEST, Reference};
use bytes::Bytes;
use sha2::Digest as _;

use crate::Shared;

/// The most an image's blobs (compressed) may weigh in all.
pub const MAX_PULL_BYTES: u64 = 1 << 30;

/// Why an image could not be pulled.
#[derive(Debug)]
pub(crate) enum PullError {
    /// Not a registry this provider may use: another provider may.
    NotAllowed(String),
    /// The registry is unreachable or answered an error: another provider
    /// may do better.
    Unreachable(String),
    /// What the registry served is not the image pinned (or not an image).
    Invalid(String),
}

/// The base URL (`scheme://host[:port]`) this provider uses for
/// `reference`'s registry, if it may use it.
fn base<'a>(registries: &'a [String], reference: &Reference) -> Option<&'a str> {
    registries
        .iter()
        .map(|u| u.trim_end_matches('/'))
        .find(|u| {
            let host = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"))
                .unwrap_or("");
            host.eq_ignore_ascii_case(&reference.registry)
        })
}

/// Pulls `reference` into an image layout tar.
pub(crate) async fn pull(shared: &Shared, reference: &Reference) -> Result<Vec<u8>, PullError> {
    let base = base(&shared.config.registries, reference).ok_or_else(|| {
        PullError::NotAllowed(format!(
            "registry {} is not one this provider pulls from (`--registry`)",
            reference.registry
        ))
    })?;
    let get = |path: String, limit: u64, accept: Option<&'static str>| async move {
        let url = format!("{base}{path}");
        crate::data::from_url(shared, &url, limit, accept)
            .await
            .map_err(|e| match e.status {
                // The registry says it has no such image: so would it to
                // any other provider.
                Some(404) => PullError::Invalid(format!("{reference}: GET {url}: {e}")),
                _ => PullError::Unreachable(format!("GET {url}: {e}")),
            })
    };
    let manifest = get(
        reference.manifest_path(),
        MAX_MANIFEST,
        Some(MANIFEST_TYPES),
    )
    .await?;
    let blobs = brume_oci::registry::manifest_blobs(reference, &manifest)
        .map_err(|e| PullError::Invalid(e.to_string()))?;
    let total = blobs.iter().fold(0u64, |t, b| t.saturating_add(b.size));
    if total > MAX_PULL_BYTES {
        return Err(PullError::Invalid(format!(
            "{reference}: {total} bytes of blobs, over {MAX_PULL_BYTES}"
        )));
    }
    let mut pulled: Vec<(Blob, Bytes)> = Vec::with_capacity(blobs.len());
    for blob in blobs {
        let bytes = get(reference.blob_path(&blob.digest), blob.size, None).await?;
        let got = hex::encode(sha2::Sha256::digest(&bytes));
        if got != blob.digest || bytes.len() as u64 != blob.size {
            return Err(PullError::Invalid(format!(
                "{reference}: blob sha256:{} came as {} bytes with sha256 {got}",
                blob.digest,
                bytes.len()
            )));
        }
        pulled.push((blob, bytes));
    }
    tokio::task::spawn_blocking(move || brume_oci::registry::layout_tar(&manifest, &pulled))
        .await
        .map_err(|e| PullError::Invalid(e.to_string()))?
        .map_err(|e| PullError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_uses_only_a_registry_it_is_allowed() {
        let r =
            Reference::parse(&format!("127.0.0.1:5000/x@sha256:{}", "a".repeat(64))).expect("ref");
        let allowed = [
            "https://ghcr.io".to_string(),
            "http://127.0.0.1:5000/".to_string(),
        ];
        assert_eq!(base(&allowed, &r), Some("http://127.0.0.1:5000"));
        assert_eq!(base(&allowed[..1], &r), None);
    }
}
