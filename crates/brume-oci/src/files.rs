//! A job's files in its work dir: inputs written before it starts,
//! outputs read after it ends. Both sides are careful: an input path is
//! relative and plain (checked again here), and an output is read only if
//! every component of its path is a real directory or, last, a regular
//! file: the job may have planted a symlink to a host file, which is never
//! followed (it has ended, so nothing changes the tree while it is read).

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::OciError;

fn plain(rel: &str) -> Result<PathBuf, OciError> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(OciError::InvalidRequest(format!(
            "{rel:?} is not a relative path of plain names"
        )))
    }
}

/// Writes `inputs` under `work` (owned by `uid`, if given, so the job may
/// change them).
pub fn place_inputs(
    work: &Path,
    inputs: &[(String, Bytes)],
    uid: Option<u32>,
) -> Result<(), OciError> {
    for (rel, bytes) in inputs {
        let rel = plain(rel)?;
        let mut at = work.to_path_buf();
        let parts: Vec<_> = rel.components().collect();
        for (i, c) in parts.iter().enumerate() {
            at.push(c);
            if i + 1 < parts.len() {
                if !at.is_dir() {
                    fs::create_dir(&at)?;
                }
            } else {
                fs::write(&at, bytes)?;
            }
            if let Some(uid) = uid {
                std::os::unix::fs::lchown(&at, Some(uid), Some(uid))?;
            }
        }
    }
    Ok(())
}

/// Reads the files named in `outputs` that the job left under `work`, at
/// most `limit` bytes in all. A missing file is skipped; a path through a
/// symlink, or to anything but a regular file, is an error.
pub fn collect_outputs(
    work: &Path,
    outputs: &[String],
    limit: u64,
) -> Result<Vec<(String, Bytes)>, OciError> {
    let mut total = 0u64;
    let mut out = Vec::new();
    'files: for rel in outputs {
        let path = plain(rel)?;
        let mut at = work.to_path_buf();
        let parts: Vec<_> = path.components().collect();
        for (i, c) in parts.iter().enumerate() {
            at.push(c);
            let m = match fs::symlink_metadata(&at) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'files,
                Err(e) => return Err(e.into()),
            };
            let last = i + 1 == parts.len();
            if (!last && !m.is_dir()) || (last && !m.file_type().is_file()) {
                return Err(OciError::InvalidRequest(format!(
                    "output {rel}: not a regular file in the work dir (a symlink?)"
                )));
            }
        }
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&at)?;
        let mut bytes = Vec::new();
        file.by_ref()
            .take(limit - total + 1)
            .read_to_end(&mut bytes)?;
        total += bytes.len() as u64;
        if total > limit {
            return Err(OciError::TooLarge(format!(
                "the output files are over {limit} bytes"
            )));
        }
        out.push((rel.clone(), Bytes::from(bytes)));
    }
    Ok(out)
}
