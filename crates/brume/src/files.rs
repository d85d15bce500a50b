//! `brume run`'s files: `--input DEST=FILE` uploads FILE (`POST /v1/data`)
//! and names it in the job's inputs; `-o DIR` downloads the job's output
//! files into DIR.

use std::path::{Path, PathBuf};

use brume_api::data::InputSpec;
use brume_api::rest::JobResult;
use brume_client::Client;
use bytes::Bytes;

use crate::requester::Failure;

/// `DEST=FILE`.
pub(crate) fn parse_input(s: &str) -> Result<(String, PathBuf), String> {
    let (dest, file) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected DEST=FILE, e.g. data/in.csv=./in.csv"))?;
    brume_api::data::check_path("--input", dest).map_err(|e| e.message)?;
    Ok((dest.to_owned(), PathBuf::from(file)))
}

/// Uploads each file and returns the job's inputs.
pub(crate) async fn upload(
    client: &Client,
    inputs: &[(String, PathBuf)],
) -> Result<Vec<InputSpec>, Failure> {
    let mut out = Vec::with_capacity(inputs.len());
    for (dest, file) in inputs {
        let bytes = std::fs::read(file)
            .map_err(|e| Failure::Local(format!("read --input {}: {e}", file.display())))?;
        let info = client.upload_data(Bytes::from(bytes)).await?;
        out.push(InputSpec {
            path: dest.clone(),
            sha256: info.sha256,
            url: None,
            key: None,
            ttl_s: None,
        });
    }
    Ok(out)
}

/// Writes the job's output files under `dir` (their paths are relative and
/// plain: the broker checked them against the spec).
pub(crate) async fn download(
    client: &Client,
    result: &JobResult,
    dir: &Path,
) -> Result<(), Failure> {
    for o in &result.outputs {
        brume_api::data::check_path("output", &o.path).map_err(|e| Failure::Local(e.message))?;
        let bytes = client.job_output(result.id, &o.path).await?;
        let dest = dir.join(&o.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Failure::Local(format!("-o {}: {e}", parent.display())))?;
        }
        std::fs::write(&dest, &bytes)
            .map_err(|e| Failure::Local(format!("write {}: {e}", dest.display())))?;
    }
    Ok(())
}
