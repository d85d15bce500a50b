//! Job data at the edge: `POST /v1/data` stores an input file in the blob
//! store by its sha256; `GET /v1/jobs/{id}/outputs/{path}` serves an output
//! file a finished job left (see `brume_api::data`).

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use brume_api::ErrorCode;
use brume_api::data::DataInfo;
use brume_api::rest::{JobState, Scope};
use bytes::Bytes;
use sha2::Digest as _;

use super::auth::Auth;
use super::jobs::{entry, job_id, readable};
use super::{Fail, Res, Sh, body_or_fail};

#[utoipa::path(post, path = "/v1/data", tag = "jobs",
    request_body(content = brume_api::rest::Binary, content_type = "application/octet-stream", description = "An input file for jobs (encrypted by you, if it should be private: the blob store serves it to any key that names its sha256)"),
    responses((status = 201, description = "Stored: name it in a job's `inputs` by this sha256", body = DataInfo)),
    security(("api_key" = [])))]
pub(super) async fn upload_data(
    State(shared): Sh,
    auth: Auth,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res<(StatusCode, axum::Json<DataInfo>)> {
    auth.require(Scope::Jobs)?;
    // A body is a file only if it says so: a request with none is refused,
    // not stored as an empty file.
    if headers.get(axum::http::header::CONTENT_TYPE).is_none() {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            "Content-Type: application/octet-stream (the file's bytes) is required",
        ));
    }
    // An empty file is a file too.
    let bytes = body_or_fail(body, "data")?;
    let size = bytes.len() as u64;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    shared.registry.put_module(sha256.clone(), bytes).await?;
    Ok((StatusCode::CREATED, axum::Json(DataInfo { sha256, size })))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/outputs/{path}", tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "The job id (a UUIDv7)"),
        ("path" = String, Path, description = "The output's path, as the job spec named it")),
    responses((status = 200, description = "The file's bytes", body = brume_api::rest::Binary, content_type = "application/octet-stream")),
    security(("api_key" = [])))]
pub(super) async fn job_output(
    State(shared): Sh,
    auth: Auth,
    Path((id, path)): Path<(String, String)>,
) -> Res<Response> {
    let id = job_id(&id)?;
    readable(&shared, &auth, id).await?;
    let result = match entry(&shared, id) {
        Some(e) => e.result(),
        None => shared.jobs.stored_result(id).await?,
    };
    let Some(result) = result.filter(|r| r.state.is_final()) else {
        return Err(Fail::new(
            ErrorCode::Conflict,
            format!("job {id} has not finished: its outputs are kept once it does"),
        ));
    };
    let Some(out) = result.outputs.iter().find(|o| o.path == path) else {
        let why = match result.state {
            JobState::Succeeded => format!("job {id} left no output {path:?}"),
            s => format!("job {id} {}: it has no outputs", s.as_str()),
        };
        return Err(Fail::new(ErrorCode::NotFound, why));
    };
    match shared.registry.module(out.sha256.clone()).await? {
        Some(bytes) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response()),
        None => Err(Fail::new(
            ErrorCode::NotFound,
            format!(
                "job {id}'s output {path:?} ({}) is no longer stored",
                out.sha256
            ),
        )),
    }
}
