//! A tiny axum server that answers the REST contract with canned bodies.
//! It is a test double for the client only, not a broker.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use brume_api::rest::{JobEvent, JobInfo, JobResult, Output, ServiceInfo};
use brume_api::{ApiError, ErrorCode, ServiceKind, Usage, WorkId};

pub const KEY: &str = "brk_test";

#[derive(Default)]
pub struct Shared {
    /// `GET .../result` calls so far (the first answers 409).
    pub result_calls: AtomicU32,
    /// `GET .../events` calls so far.
    pub event_calls: AtomicU32,
}

pub struct Double {
    pub url: String,
    pub shared: Arc<Shared>,
}

pub async fn start() -> Double {
    let shared = Arc::new(Shared::default());
    let app = axum::Router::new()
        .route("/v1/services", post(publish))
        .route("/v1/services/{name}", get(service))
        .route("/v1/functions/{service}/invoke", post(invoke))
        .route("/v1/jobs", post(submit))
        .route("/v1/jobs/{id}", get(job).delete(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/fn/{service}", any(fn_root))
        .route("/fn/{service}/{*path}", any(fn_http))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Double {
        url: format!("http://{addr}"),
        shared,
    }
}

fn error(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ApiError::new(code, message))).into_response()
}

fn authorized(headers: &HeaderMap) -> Result<(), Response> {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => Err(error(ErrorCode::Unauthorized, "an API key is required")),
        Some(v) if v == format!("Bearer {KEY}") => Ok(()),
        Some(_) => Err(error(ErrorCode::Forbidden, "bad API key")),
    }
}

async fn publish(
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    if !body.starts_with(b"\0asm") {
        return error(ErrorCode::InvalidModule, "not a wasm binary");
    }
    let kind = match q.get("kind").map(String::as_str) {
        Some("http") => ServiceKind::Http,
        _ => ServiceKind::Command,
    };
    let info = ServiceInfo {
        name: q.get("name").cloned().unwrap_or_default(),
        owner: "test".into(),
        version: 1,
        retired: false,
        kind,
        digest: "ab".repeat(32),
        size_bytes: body.len() as u64,
        created_at_ms: 1,
        signed: false,
        developer_address: None,
        module_signature: None,
    };
    (StatusCode::CREATED, Json(info)).into_response()
}

async fn service(Path(name): Path<String>) -> Response {
    error(ErrorCode::UnknownService, &format!("no service {name:?}"))
}

async fn invoke(
    headers: HeaderMap,
    Path(service): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    if service == "busy" {
        let mut r = error(ErrorCode::Overloaded, "queue full");
        r.headers_mut()
            .insert("retry-after", "2".parse().expect("hv"));
        return r;
    }
    let mut out = format!("{service} {} ", query.unwrap_or_default()).into_bytes();
    out.extend_from_slice(&body);
    Response::builder()
        .header("x-brume-work-id", WorkId::new().to_string())
        .header("x-brume-provider", "0xprov")
        .header("x-brume-fuel", "777")
        .header("x-brume-attempts", "1")
        .header("x-brume-exit-code", "3")
        .body(Body::from(out))
        .unwrap_or_default()
}

pub fn info(id: WorkId) -> JobInfo {
    JobInfo {
        id,
        state: brume_api::rest::JobState::Queued,
        service: Some("echo".into()),
        digest: "ab".repeat(32),
        attempts: 0,
        max_attempts: 3,
        provider: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        error: None,
        labels: Default::default(),
    }
}

async fn submit(headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorized(&headers) {
        return r;
    }
    let spec: brume_api::rest::JobSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(ErrorCode::InvalidRequest, &e.to_string()),
    };
    let mut info = info(WorkId::new());
    info.labels = spec.labels;
    (StatusCode::ACCEPTED, Json(info)).into_response()
}

/// Jobs are always running here: the event stream says when they end.
async fn job(Path(id): Path<String>) -> Response {
    match id.parse() {
        Ok(id) => {
            let mut info = info(id);
            info.state = brume_api::rest::JobState::Running;
            Json(info).into_response()
        }
        Err(_) => error(ErrorCode::NotFound, "no such job"),
    }
}

async fn cancel(Path(_id): Path<String>) -> Response {
    error(ErrorCode::Conflict, "job is already final")
}

pub fn event(seq: u64, kind: brume_api::rest::EventKind) -> JobEvent {
    JobEvent {
        seq,
        at_ms: seq,
        kind,
        attempt: 1,
        provider: Some("0xprov".into()),
        fuel: None,
        stderr: None,
        error: None,
        message: None,
        exit_code: None,
    }
}

/// The SSE body, cut at awkward places, with comments, and left open after
/// the final event. Job ids ending in `...0001` break off after the second
/// event on the first connection.
async fn events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    use brume_api::rest::EventKind::*;
    let call = shared.event_calls.fetch_add(1, Ordering::SeqCst);
    let after: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut progress = event(2, Progress);
    progress.fuel = Some(1000);
    progress.stderr = Some("line one\nline two\n".into());
    let mut done = event(3, Succeeded);
    done.exit_code = Some(0);
    let all = [event(0, Queued), event(1, Running), progress, done];
    let mut text = String::from(": hello\n\n");
    for ev in &all {
        // Replays everything (a broker may ignore Last-Event-ID); the
        // client filters by seq.
        let _ = after;
        let json = serde_json::to_string(ev).unwrap_or_default();
        text.push_str(&format!(
            "event: {}\r\nid: {}\r\ndata: {json}\r\n\r\n: keep-alive\n\n",
            ev.kind.as_str(),
            ev.seq
        ));
    }
    let breaks = id.ends_with("0001") && call == 0;
    if breaks {
        // Only the first two events, then the connection ends.
        let cut = text.find("event: progress").unwrap_or(text.len());
        text.truncate(cut);
    }
    let chunks: Vec<Result<Bytes, Infallible>> = text
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    let body = if breaks {
        Body::from_stream(stream)
    } else {
        use futures_util::StreamExt;
        Body::from_stream(stream.chain(futures_util::stream::pending()))
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap_or_default()
}

async fn result(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if shared.result_calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return error(ErrorCode::Conflict, "not final yet");
    }
    let id: WorkId = match id.parse() {
        Ok(id) => id,
        Err(_) => return error(ErrorCode::NotFound, "no such job"),
    };
    Json(JobResult {
        id,
        state: brume_api::rest::JobState::Succeeded,
        exit_code: Some(0),
        stdout: Output(Bytes::from_static(b"out")),
        stderr: Output(Bytes::from_static(&[0xff, 0xfe])),
        usage: Usage {
            fuel: 1000,
            ..Usage::default()
        },
        attempts: 1,
        provider: Some("0xprov".into()),
        receipt: None,
        verification: None,
        error: None,
        outputs: Vec::new(),
    })
    .into_response()
}

async fn fn_http(Path((service, path)): Path<(String, String)>, RawQuery(q): RawQuery) -> Response {
    match service.as_str() {
        "missing" => error(ErrorCode::UnknownService, "no service \"missing\""),
        "faulty" => {
            let mut r = error(ErrorCode::Trap, "unreachable executed");
            r.headers_mut().insert(
                "x-brume-work-id",
                WorkId::new().to_string().parse().expect("hv"),
            );
            r
        }
        _ => Response::builder()
            .status(404)
            .header("x-brume-work-id", WorkId::new().to_string())
            .header("x-guest", "yes")
            .body(Body::from(format!(
                "guest 404 for /{path}?{}",
                q.unwrap_or_default()
            )))
            .unwrap_or_default(),
    }
}

/// Like the broker: an empty wildcard matches no route, so the root is
/// `/fn/{service}` without a slash.
async fn fn_root(Path(service): Path<String>, RawQuery(q): RawQuery) -> Response {
    Response::builder()
        .header("x-brume-work-id", WorkId::new().to_string())
        .body(Body::from(format!(
            "{service} root ?{}",
            q.unwrap_or_default()
        )))
        .unwrap_or_default()
}
