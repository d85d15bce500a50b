//! Unpacking layers into a rootfs: hostile input.
//!
//! A layer is a tar that a stranger wrote. The unpacker never follows a
//! symlink on the host: every parent of every entry is checked to be a
//! real directory inside the root, and an existing file is removed, not
//! written through. It refuses paths with `..` or a leading `/`, symlinks
//! and hard links whose target leaves the root, device nodes and FIFOs,
//! and setuid or setgid bits. OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`)
//! delete what lower layers put there. Sizes and entry counts are bounded.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::OciError;
use crate::image::Image;

/// Bounds on what an image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
        }
    }
}

/// Directories every rootfs gets, empty, as mount points: the sandbox
/// mounts `/proc`, `/dev`, a tmpfs on `/tmp` and the job's work dir on
/// `/work` over a read-only root.
pub const MOUNT_POINTS: [&str; 4] = ["proc", "dev", "tmp", "work"];

fn refuse(path: &str, why: impl std::fmt::Display) -> OciError {
    OciError::UnsafeLayer(format!("{path}: {why}"))
}

/// Unpacks every layer of `image`, bottom first, into `root` (an empty
/// directory). Returns the bytes written.
pub fn unpack(image: &Image, root: &Path, limits: UnpackLimits) -> Result<u64, OciError> {
    let mut budget = Budget {
        limits,
        bytes: 0,
        entries: 0,
    };
    for layer in &image.layers {
        let reader: Box<dyn Read> = if layer.gzip {
            Box::new(flate2::read::GzDecoder::new(&layer.bytes[..]))
        } else {
            Box::new(&layer.bytes[..])
        };
        unpack_layer(reader, root, &mut budget).map_err(|e| e.in_layer(&layer.digest))?;
    }
    for dir in MOUNT_POINTS {
        let path = root.join(dir);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => fs::remove_file(&path).and_then(|()| fs::create_dir(&path))?,
            Err(_) => fs::create_dir(&path)?,
        }
    }
    Ok(budget.bytes)
}

struct Budget {
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
}

/// One entry's path, relative and without `.` or `..`.
fn clean(raw: &Path) -> Result<Option<PathBuf>, OciError> {
    let shown = raw.to_string_lossy();
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(&shown, "a path with `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(&shown, "an absolute path"));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Where a link target lands, relative to the root, or `None` if it
/// leaves the root. Absolute targets are resolved from the root (as they
/// are inside the container); relative ones from the link's directory.
fn link_target(link: &Path, target: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    if !target.is_absolute() {
        parts.extend(link.parent()?.components().map(|c| c.as_os_str()));
    }
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.iter().collect())
}

/// Creates the parents of `rel` under `root`, refusing any that is not a
/// real directory (a symlink planted by an earlier entry).
fn parents(root: &Path, rel: &Path) -> Result<(), OciError> {
    let mut at = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(refuse(
                    &rel.to_string_lossy(),
                    "a parent is not a directory (a symlink?): refusing to write through it",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (not following a symlink).
fn clear(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn unpack_layer(reader: impl Read, root: &Path, budget: &mut Budget) -> Result<(), OciError> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        budget.entries += 1;
        if budget.entries > budget.limits.max_entries {
            return Err(OciError::TooLarge(format!(
                "more than {} entries",
                budget.limits.max_entries
            )));
        }
        let raw = entry.path()?.into_owned();
        let Some(rel) = clean(&raw)? else { continue };
        let shown = rel.to_string_lossy().into_owned();
        parents(root, &rel)?;
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(hidden) = name.as_deref().and_then(|n| n.strip_prefix(".wh.")) {
            whiteout(root, &rel, hidden)?;
            continue;
        }
        let dest = root.join(&rel);
        let mode = entry.header().mode()?;
        let kind = entry.header().entry_type();
        if mode & 0o6000 != 0 && !kind.is_dir() {
            return Err(refuse(&shown, "a setuid or setgid bit"));
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&dest)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode & 0o777)
                    .open(&dest)?;
                let left = budget.limits.max_bytes - budget.bytes;
                let n = copy_bounded(&mut entry, &mut file, left).map_err(|_| {
                    OciError::TooLarge(format!(
                        "{shown}: the rootfs is over {} bytes",
                        budget.limits.max_bytes
                    ))
                })?;
                budget.bytes += n;
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o777))?;
            }
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&dest)?;
                        fs::create_dir(&dest)?;
                    }
                    Err(_) => fs::create_dir(&dest)?,
                }
                // Sticky (/tmp) is kept; setuid/setgid on a directory are not.
                fs::set_permissions(&dest, fs::Permissions::from_mode((mode & 0o1777) | 0o700))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&shown, "a symlink without a target"))?
                    .into_owned();
                if link_target(&rel, &target).is_none() {
                    return Err(refuse(
                        &shown,
                        format!("symlink to {} escapes the rootfs", target.display()),
                    ));
                }
                clear(&dest)?;
                std::os::unix::fs::symlink(&target, &dest)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&shown, "a hard link without a target"))?;
                let target =
                    clean(&target)?.ok_or_else(|| refuse(&shown, "a hard link to the root"))?;
                let source = root.join(&target);
                parents(root, &target)?;
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_file() => {}
                    _ => {
                        return Err(refuse(
                            &shown,
                            format!(
                                "hard link to {}: not a regular file in this rootfs",
                                target.display()
                            ),
                        ));
                    }
                }
                clear(&dest)?;
                fs::hard_link(&source, &dest)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(refuse(&shown, "a device node or FIFO"));
            }
            // Metadata entries (pax, GNU long names) are read by `tar`.
            _ => {}
        }
    }
    Ok(())
}

/// An OCI whiteout: `.wh..wh..opq` empties its directory (of lower
/// layers' files); `.wh.NAME` deletes `NAME`.
fn whiteout(root: &Path, rel: &Path, hidden: &str) -> Result<(), OciError> {
    let dir = root.join(rel.parent().unwrap_or(Path::new("")));
    if hidden == ".wh..opq" {
        for e in fs::read_dir(&dir)? {
            clear(&e?.path())?;
        }
        return Ok(());
    }
    if hidden.is_empty() || hidden.contains('/') || hidden == "." || hidden == ".." {
        return Err(refuse(&rel.to_string_lossy(), "a malformed whiteout"));
    }
    clear(&dir.join(hidden))?;
    Ok(())
}

/// Copies at most `limit` bytes; more is an error.
fn copy_bounded(from: &mut impl Read, to: &mut impl Write, limit: u64) -> io::Result<u64> {
    let n = io::copy(&mut from.take(limit.saturating_add(1)), to)?;
    if n > limit {
        return Err(io::Error::other("over the limit"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_stay_inside() {
        let t = |l: &str, t: &str| link_target(Path::new(l), Path::new(t));
        assert_eq!(t("bin/sh", "busybox"), Some(PathBuf::from("bin/busybox")));
        assert_eq!(
            t("bin/sh", "/bin/busybox"),
            Some(PathBuf::from("bin/busybox"))
        );
        assert_eq!(t("a/b/c", "../../d"), Some(PathBuf::from("d")));
        assert_eq!(t("a/b/c", "../../../etc/passwd"), None);
        assert_eq!(t("etc", "/../../etc/shadow"), None);
    }
}
