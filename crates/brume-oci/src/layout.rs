//! Writing OCI image layouts: [`Builder`] makes a one-layer image from
//! files (the tests' and the benchmark's images, with no registry), and
//! [`tar_dir`] packs a layout directory for upload.

use std::path::Path;

use sha2::{Digest as _, Sha256};

/// A one-layer image, built in memory.
#[derive(Debug, Default)]
pub struct Builder {
    layer: Vec<(String, Entry)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: Option<String>,
}

#[derive(Debug)]
enum Entry {
    File { bytes: Vec<u8>, mode: u32 },
    Dir,
    Symlink(String),
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// A regular file at `path` (relative to the root).
    pub fn file(mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Builder {
        let entry = Entry::File {
            bytes: bytes.into(),
            mode,
        };
        self.layer.push((path.to_owned(), entry));
        self
    }

    pub fn dir(mut self, path: &str) -> Builder {
        self.layer.push((path.to_owned(), Entry::Dir));
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Builder {
        self.layer
            .push((path.to_owned(), Entry::Symlink(target.to_owned())));
        self
    }

    pub fn entrypoint(mut self, argv: &[&str]) -> Builder {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn cmd(mut self, argv: &[&str]) -> Builder {
        self.cmd = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, var: &str) -> Builder {
        self.env.push(var.to_owned());
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Builder {
        self.working_dir = Some(dir.to_owned());
        self
    }

    /// The layer as an uncompressed tar.
    fn layer_tar(&self) -> std::io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &self.layer {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match entry {
                Entry::File { bytes, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(bytes.len() as u64);
                    tar.append_data(&mut h, path, bytes.as_slice())?;
                }
                Entry::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    tar.append_data(&mut h, path, std::io::empty())?;
                }
                Entry::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)?;
                }
            }
        }
        tar.into_inner()
    }

    /// The image layout, as one tar.
    pub fn build(&self) -> std::io::Result<Vec<u8>> {
        let layer = self.layer_tar()?;
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd,
                "Env": self.env,
                "WorkingDir": self.working_dir.clone().unwrap_or_default(),
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))]},
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        })
        .to_string()
        .into_bytes();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [descriptor("application/vnd.oci.image.manifest.v1+json", &manifest)],
        })
        .to_string()
        .into_bytes();
        pack(&index, [&config[..], &manifest, &layer])
    }
}

/// An image layout tar: `oci-layout`, `index.json`, and each blob under
/// `blobs/sha256/<its sha256>` (once, however often it is given).
pub(crate) fn pack<'a>(
    index: &[u8],
    blobs: impl IntoIterator<Item = &'a [u8]>,
) -> std::io::Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    let mut put = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        out.append_data(&mut h, path, bytes)
    };
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    put("index.json", index)?;
    let mut seen = std::collections::HashSet::new();
    for blob in blobs {
        let digest = sha(blob);
        if seen.insert(digest.clone()) {
            put(&format!("blobs/sha256/{digest}"), blob)?;
        }
    }
    out.into_inner()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha(bytes)),
        "size": bytes.len(),
    })
}

/// Packs an image layout directory (`oci-layout`, `index.json`, `blobs/`)
/// into the tar the broker takes. Symlinks are not followed.
pub fn tar_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    if !dir.join("oci-layout").is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} has no oci-layout file: not an OCI image layout",
                dir.display()
            ),
        ));
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()
}
