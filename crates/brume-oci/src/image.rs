//! An OCI image layout, as one tar: `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>` (the layout `umoci`, `skopeo copy oci:` and
//! `docker buildx --output type=oci` write).
//!
//! [`Image::parse`] checks everything a provider relies on before a byte of
//! it is unpacked: the layout version, the one manifest `index.json`
//! names, and every blob it reaches (manifest, config, layers) against its
//! digest and size. The manifest's digest names the image: the rootfs
//! cache, blacklists and signatures use it.

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::OciError;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The most layers an image may have.
pub const MAX_LAYERS: usize = 128;
/// The largest JSON document (index, manifest, config) read.
const MAX_JSON: u64 = 1 << 20;

/// A checked image layout.
#[derive(Debug, Clone)]
pub struct Image {
    /// sha256 of the manifest, lowercase hex: the image's name.
    pub manifest_digest: String,
    pub config: RunConfig,
    /// Bottom first.
    pub layers: Vec<Layer>,
}

/// What the image's config says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// One layer: its digest (hex) and its bytes, checked.
#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: String,
    pub gzip: bool,
    pub bytes: bytes::Bytes,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
}

fn bad(msg: impl Into<String>) -> OciError {
    OciError::InvalidImage(msg.into())
}

impl Image {
    /// Reads and checks an image layout tar. `max_bytes` bounds the sum of
    /// the files read from it.
    pub fn parse(tar_bytes: &[u8], max_bytes: u64) -> Result<Image, OciError> {
        let files = read_files(tar_bytes, max_bytes)?;
        let layout = files
            .get("oci-layout")
            .ok_or_else(|| bad("no oci-layout file: not an OCI image layout"))?;
        let version: serde_json::Value = serde_json::from_slice(layout)
            .map_err(|e| bad(format!("oci-layout is not JSON: {e}")))?;
        if version.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(bad("oci-layout: imageLayoutVersion must be \"1.0.0\""));
        }
        let index: Index = json(&files, "index.json")?;
        if index.schema_version != 2 {
            return Err(bad("index.json: schemaVersion must be 2"));
        }
        let [desc] = index.manifests.as_slice() else {
            return Err(bad(format!(
                "index.json names {} manifests; an image for brume has exactly one",
                index.manifests.len()
            )));
        };
        if desc.media_type != MANIFEST && desc.media_type != DOCKER_MANIFEST {
            return Err(bad(format!(
                "index.json: manifest media type {:?} is not an image manifest (a multi-platform index is not supported)",
                desc.media_type
            )));
        }
        let manifest_bytes = blob(&files, desc)?;
        let manifest: Manifest = serde_json::from_slice(manifest_bytes)
            .map_err(|e| bad(format!("manifest {}: {e}", desc.digest)))?;
        if manifest.schema_version != 2 {
            return Err(bad("manifest: schemaVersion must be 2"));
        }
        if manifest.layers.len() > MAX_LAYERS {
            return Err(bad(format!(
                "{} layers; at most {MAX_LAYERS}",
                manifest.layers.len()
            )));
        }
        let config: ConfigFile = serde_json::from_slice(blob(&files, &manifest.config)?)
            .map_err(|e| bad(format!("config {}: {e}", manifest.config.digest)))?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for d in &manifest.layers {
            let gzip = match d.media_type.as_str() {
                LAYER_TAR => false,
                LAYER_GZIP | DOCKER_LAYER_GZIP => true,
                other => {
                    return Err(bad(format!(
                        "layer {}: media type {other:?} is not supported (tar or tar+gzip)",
                        d.digest
                    )));
                }
            };
            layers.push(Layer {
                digest: hex_of(&d.digest)?.to_owned(),
                gzip,
                bytes: bytes::Bytes::copy_from_slice(blob(&files, d)?),
            });
        }
        let c = config.config.unwrap_or_default();
        Ok(Image {
            manifest_digest: hex_of(&desc.digest)?.to_owned(),
            config: RunConfig {
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                working_dir: c.working_dir.filter(|w| !w.is_empty()),
            },
            layers,
        })
    }
}

/// The argv a job runs: the job's args replace the image's `Cmd`, after its
/// `Entrypoint` (Docker's rule). Empty if the image names nothing to run
/// and the job gives nothing.
pub fn argv(config: &RunConfig, args: &[String]) -> Vec<String> {
    let mut argv = config.entrypoint.clone();
    if args.is_empty() {
        argv.extend(config.cmd.iter().cloned());
    } else {
        argv.extend(args.iter().cloned());
    }
    argv
}

fn hex_of(digest: &str) -> Result<&str, OciError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| bad(format!("digest {digest:?}: only sha256 is supported")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad(format!(
            "digest {digest:?} is not sha256: and 64 lowercase hex digits"
        )));
    }
    Ok(hex)
}

/// The blob `d` names, checked against its digest and size.
fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, d: &Descriptor) -> Result<&'a [u8], OciError> {
    let hex = hex_of(&d.digest)?;
    let bytes = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| bad(format!("blob {} is missing from the layout", d.digest)))?;
    if bytes.len() as u64 != d.size {
        return Err(bad(format!(
            "blob {} is {} bytes; its descriptor says {}",
            d.digest,
            bytes.len(),
            d.size
        )));
    }
    let got = hex::encode(Sha256::digest(bytes));
    if got != hex {
        return Err(bad(format!(
            "blob {} has sha256 {got}: its digest does not verify",
            d.digest
        )));
    }
    Ok(bytes)
}

fn json<T: serde::de::DeserializeOwned>(
    files: &HashMap<String, Vec<u8>>,
    name: &str,
) -> Result<T, OciError> {
    let bytes = files.get(name).ok_or_else(|| bad(format!("no {name}")))?;
    serde_json::from_slice(bytes).map_err(|e| bad(format!("{name}: {e}")))
}

/// The regular files of a layout tar, by normalised path (`index.json`,
/// `blobs/sha256/<hex>`…), at most `max_bytes` in all: what a registry
/// would serve of it.
pub fn read_files(tar_bytes: &[u8], max_bytes: u64) -> Result<HashMap<String, Vec<u8>>, OciError> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut files = HashMap::new();
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("a path in the tar: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let size = entry.size();
        let limit = if path.ends_with(".json") || path == "oci-layout" {
            MAX_JSON
        } else {
            max_bytes
        };
        total = total.saturating_add(size);
        if size > limit || total > max_bytes {
            return Err(OciError::TooLarge(format!(
                "{path}: the layout is over the limit of {} bytes",
                limit.min(max_bytes)
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("{path}: {e}")))?;
        files.insert(path, bytes);
    }
    Ok(files)
}
