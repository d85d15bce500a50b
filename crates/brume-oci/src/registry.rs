//! Images named by reference, pulled from a registry (the OCI distribution
//! API: `GET /v2/<name>/manifests/<digest>` and `/v2/<name>/blobs/<digest>`).
//!
//! A reference must be **pinned by digest**
//! (`registry.example:5000/team/tool:1.2@sha256:<64 hex>`): the manifest's
//! digest names the image for receipts, blacklists and the rootfs cache, so
//! a tag, which the registry may move, is not enough. This module does no
//! I/O: it parses references and manifests, and packs what was pulled into
//! the image layout tar that [`crate::Containers::prepare`] checks again,
//! digest by digest, like an uploaded one.

use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::OciError;
use crate::image::MAX_LAYERS;

/// The manifest media types a pull accepts (OCI, and Docker's v2 schema 2).
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The largest manifest read.
pub const MAX_MANIFEST: u64 = 1 << 20;

/// An image reference pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path, e.g. `team/tool`.
    pub repository: String,
    /// The tag, if one was given (informative only).
    pub tag: Option<String>,
    /// The manifest's sha256, lowercase hex.
    pub digest: String,
}

impl Reference {
    /// Parses `host[:port]/path[:tag]@sha256:<64 hex>`.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let (name, digest) = s.rsplit_once('@').ok_or_else(|| {
            format!("{s:?}: pin the image by digest (`…@sha256:<64 hex digits>`): a tag can move")
        })?;
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("{digest:?} is not sha256:<64 hex digits>"))?;
        let (registry, path) = name
            .split_once('/')
            .filter(|(host, _)| host.contains('.') || host.contains(':') || *host == "localhost")
            .ok_or_else(|| {
                format!("{name:?}: name the registry first, e.g. `registry.example/{name}`")
            })?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_owned())),
            _ => (path, None),
        };
        let valid_path = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().any(|b| b != b'.')
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !valid_path {
            return Err(format!(
                "{repository:?} is not a repository path (lowercase letters, digits, `._-`, `/`)"
            ));
        }
        let valid_host = registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !valid_host || registry.len() > 255 {
            return Err(format!("{registry:?} is not a registry host"));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest: hex.to_ascii_lowercase(),
        })
    }

    /// The manifest's path on its registry.
    pub fn manifest_path(&self) -> String {
        format!("/v2/{}/manifests/sha256:{}", self.repository, self.digest)
    }

    /// A blob's path on its registry.
    pub fn blob_path(&self, digest_hex: &str) -> String {
        format!("/v2/{}/blobs/sha256:{digest_hex}", self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        write!(f, "@sha256:{}", self.digest)
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// A blob a manifest names: its sha256 (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// The blobs (config first, then the layers) of a pulled manifest, whose
/// bytes must hash to `reference.digest`.
pub fn manifest_blobs(reference: &Reference, manifest: &[u8]) -> Result<Vec<Blob>, OciError> {
    let bad = |m: String| OciError::InvalidImage(format!("{reference}: {m}"));
    let got = hex::encode(Sha256::digest(manifest));
    if got != reference.digest {
        return Err(bad(format!("the registry's manifest has sha256 {got}")));
    }
    let m: Manifest =
        serde_json::from_slice(manifest).map_err(|e| bad(format!("manifest: {e}")))?;
    if m.layers.len() > MAX_LAYERS {
        return Err(bad(format!(
            "{} layers; at most {MAX_LAYERS}",
            m.layers.len()
        )));
    }
    std::iter::once(&m.config)
        .chain(&m.layers)
        .map(|d| {
            let hex = d
                .digest
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| bad(format!("blob digest {:?} is not sha256", d.digest)))?;
            Ok(Blob {
                digest: hex.to_ascii_lowercase(),
                size: d.size,
            })
        })
        .collect()
}

/// The media type to give the manifest in the layout's `index.json`: its
/// own, else OCI's.
fn manifest_type(manifest: &[u8]) -> String {
    serde_json::from_slice::<Manifest>(manifest)
        .ok()
        .map(|m| m.media_type)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into())
}

/// Packs a pulled image into an image layout tar: the manifest and its
/// blobs (each already checked against its digest by the caller, and
/// checked again by [`crate::image::Image::parse`]).
pub fn layout_tar(manifest: &[u8], blobs: &[(Blob, Bytes)]) -> std::io::Result<Vec<u8>> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": manifest_type(manifest),
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(manifest))),
            "size": manifest.len(),
        }],
    })
    .to_string();
    crate::layout::pack(
        index.as_bytes(),
        std::iter::once(manifest).chain(blobs.iter().map(|(_, b)| &b[..])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_must_be_pinned_and_well_formed() {
        let d = "ab".repeat(32);
        let r =
            Reference::parse(&format!("127.0.0.1:5000/team/tool:1.2@sha256:{d}")).expect("parse");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/tool", Some("1.2"))
        );
        assert_eq!(
            r.manifest_path(),
            format!("/v2/team/tool/manifests/sha256:{d}")
        );
        assert_eq!(
            r.to_string(),
            format!("127.0.0.1:5000/team/tool:1.2@sha256:{d}")
        );
        let r = Reference::parse(&format!("ghcr.io/x@sha256:{d}")).expect("no tag");
        assert_eq!((r.repository.as_str(), r.tag), ("x", None));
        for bad in [
            "ghcr.io/x:latest".to_string(),
            format!("x@sha256:{d}"),
            format!("ghcr.io/X@sha256:{d}"),
            format!("ghcr.io/x@sha256:{}", "ab".repeat(31)),
            format!("ghcr.io/x@md5:{d}"),
            format!("ghcr.io//x@sha256:{d}"),
            format!("ghcr.io/../x@sha256:{d}"),
        ] {
            assert!(Reference::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pulled_manifest_is_checked_against_its_reference() {
        let tar = crate::layout::Builder::new()
            .file("hello", "hi", 0o644)
            .build()
            .expect("build");
        // Take the layout apart as a registry would serve it.
        let files = crate::image::read_files(&tar, 1 << 30).expect("files");
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
        let digest = index["manifests"][0]["digest"].as_str().expect("digest");
        let hex = digest.trim_start_matches("sha256:");
        let manifest = files[&format!("blobs/sha256/{hex}")].clone();
        let r = Reference::parse(&format!("localhost/img@{digest}")).expect("ref");
        let blobs = manifest_blobs(&r, &manifest).expect("blobs");
        assert_eq!(blobs.len(), 2, "config and one layer");
        let pulled: Vec<(Blob, Bytes)> = blobs
            .iter()
            .map(|b| {
                let bytes = files[&format!("blobs/sha256/{}", b.digest)].clone();
                (b.clone(), Bytes::from(bytes))
            })
            .collect();
        let repacked = layout_tar(&manifest, &pulled).expect("layout");
        let image = crate::image::Image::parse(&repacked, 1 << 30).expect("parses");
        assert_eq!(image.manifest_digest, r.digest);
        // A manifest that isn't the one pinned is refused.
        let other =
            Reference::parse(&format!("localhost/img@sha256:{}", "0".repeat(64))).expect("ref");
        assert!(manifest_blobs(&other, &manifest).is_err());
    }
}
