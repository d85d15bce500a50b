//! A wasm command job's files, as for containers: its inputs are placed in
//! a work dir of its own (`DATA/work/<work id>-<attempt>`), which the
//! sandbox preopens as [`GUEST_DIR`], and the outputs it names are read
//! back from there when it exits ([`brume_oci::files`] does both, refusing
//! `..`, absolute paths and symlinks). The dir is removed when the job
//! ends, whatever the outcome.

use std::path::PathBuf;
use std::sync::Arc;

use brume_api::data::OutputFile;
use brume_api::wire::{Assign, Outcome};
use brume_sandbox::DirMapping;
use bytes::Bytes;
use sha2::Digest as _;

use crate::Shared;
use crate::data::InputError;
use crate::work::SessionCtx;

/// Where a wasm job sees its files: the inputs at `/work/<path>`.
pub(crate) const GUEST_DIR: &str = "/work";

/// A job's work dir, removed on drop.
pub(crate) struct WorkDir {
    path: PathBuf,
    /// Input bytes placed (metered as bytes in).
    bytes_in: u64,
}

impl WorkDir {
    /// Fetches `a`'s inputs (see [`crate::data::inputs`]) and places them
    /// in a fresh work dir. `None` for a job that names no files.
    pub(crate) async fn for_job(
        shared: &Arc<Shared>,
        ctx: &SessionCtx,
        a: &Assign,
    ) -> Result<Option<WorkDir>, InputError> {
        if a.inputs.is_empty() && a.outputs.is_empty() {
            return Ok(None);
        }
        let inputs = crate::data::inputs(shared, ctx, a).await?;
        let bytes_in = inputs.iter().map(|(_, b)| b.len() as u64).sum();
        let path = shared
            .config
            .data_dir
            .join("work")
            .join(format!("{}-{}", a.work_id, a.attempt));
        let dir = WorkDir { path, bytes_in };
        let at = dir.path.clone();
        let placed = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&at);
            std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
            brume_oci::files::place_inputs(&at, &inputs, None).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match placed {
            Ok(()) => Ok(Some(dir)),
            Err(e) => Err(InputError::Failed(
                "invalid_input",
                format!("placing the inputs: {e}"),
            )),
        }
    }

    /// The preopen the sandbox gives the job.
    pub(crate) fn mapping(&self) -> DirMapping {
        DirMapping {
            host: self.path.clone(),
            guest: GUEST_DIR.into(),
        }
    }

    /// `outcome` with the `outputs` it names, read back if it exited (at
    /// most `limit` bytes in all), and its files metered: inputs as bytes
    /// in, outputs as bytes out. An output it can't return fails the job.
    pub(crate) async fn finish(
        &self,
        outputs: Vec<String>,
        limit: u64,
        outcome: Outcome,
    ) -> Outcome {
        let Outcome::Exited {
            exit_code,
            stdout,
            stderr,
            mut usage,
            ..
        } = outcome
        else {
            return outcome;
        };
        usage.bytes_in = usage.bytes_in.saturating_add(self.bytes_in);
        let at = self.path.clone();
        let read = tokio::task::spawn_blocking(move || {
            brume_oci::files::collect_outputs(&at, &outputs, limit)
        })
        .await;
        let files = match read {
            Ok(Ok(files)) => output_files(files),
            Ok(Err(e)) => return failed(e.code(), e.to_string(), usage, stdout, stderr),
            Err(e) => return failed("internal", e.to_string(), usage, stdout, stderr),
        };
        usage.bytes_out = usage
            .bytes_out
            .saturating_add(files.iter().map(|f| f.size).sum());
        Outcome::Exited {
            exit_code,
            stdout,
            stderr,
            usage,
            outputs: files,
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || std::fs::remove_dir_all(path));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

fn failed(
    code: &str,
    message: String,
    usage: brume_api::Usage,
    stdout: Bytes,
    stderr: Bytes,
) -> Outcome {
    Outcome::Failed {
        code: code.to_owned(),
        message,
        usage,
        stdout,
        stderr,
    }
}

/// Output files as the result carries them: each with its sha256 and size.
pub(crate) fn output_files(files: Vec<(String, Bytes)>) -> Vec<OutputFile> {
    files
        .into_iter()
        .map(|(path, bytes)| OutputFile {
            path,
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            bytes,
        })
        .collect()
}
