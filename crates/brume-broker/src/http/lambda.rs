//! `POST /2015-03-31/functions/{name}/invocations`: AWS Lambda's Invoke,
//! signed with SigV4 by a Lambda credential (`brume broker lambda-keys`),
//! on the credential's account's services. For a command service the
//! payload is stdin and stdout the response; a `wasi:http` service takes
//! an API Gateway proxy event (1.0 or 2.0), decoded into the request the
//! component sees, and its response is encoded as `{statusCode, headers,
//! body, isBase64Encoded}`.
//!
//! - `RequestResponse` (the default) answers when the call ends; a guest
//!   fault or a non-zero exit is `200` with `X-Amz-Function-Error:
//!   Unhandled` and `{"errorMessage", "errorType"}`; `--log-type Tail`
//!   adds the last 4 KiB of stderr, base64, in `X-Amz-Log-Result`;
//! - `Event` submits a job and answers `202` with no body;
//! - `DryRun` checks the function and the caller and answers `204`.
//!
//! Errors have Lambda's shape: `X-Amzn-ErrorType` and `{"Type", "message"}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use brume_api::lambda::{
    ApiGatewayEvent, ApiGatewayResponse, FunctionError, LambdaError, MAX_TAIL_BYTES, headers as lh,
};
use brume_api::rest::{JobSpec, Output, Scope};
use brume_api::wire::Outcome;
use brume_api::{ApiError, ServiceKind};
use bytes::Bytes;

use super::admission::reserve;
use super::auth::Auth;
use super::{Fail, Sh};
use crate::Shared;
use crate::lambda::sigv4;
use crate::work::Completion;

/// Lambda's routes, under `/2015-03-31`.
pub(super) fn routes(
    max_module_bytes: usize,
    input_limit: axum::extract::DefaultBodyLimit,
) -> utoipa_axum::router::OpenApiRouter<Arc<Shared>> {
    use super::lambda_functions as f;
    use axum::routing::get;
    use utoipa_axum::router::UtoipaMethodRouterExt as _;
    use utoipa_axum::routes;
    // A zip in base64 (in JSON) is a third larger than the module.
    let zip_limit = axum::extract::DefaultBodyLimit::max(max_module_bytes / 3 * 4 + (64 << 10));
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(invoke).layer(input_limit))
        .routes(routes!(f::list_functions, f::create_function).layer(zip_limit))
        // The aws CLI lists with a trailing slash.
        .route(
            "/2015-03-31/functions/",
            get(f::list_functions)
                .post(f::create_function)
                .layer(zip_limit),
        )
        .routes(routes!(f::get_function, f::delete_function))
        .routes(routes!(f::update_code).layer(zip_limit))
}

/// A Lambda-shaped error.
pub(super) struct LambdaFail {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl LambdaFail {
    pub(super) fn new(
        status: StatusCode,
        error_type: &'static str,
        message: impl Into<String>,
    ) -> Self {
        LambdaFail {
            status,
            error_type,
            message: message.into(),
        }
    }
}

impl IntoResponse for LambdaFail {
    fn into_response(self) -> Response {
        let body = LambdaError {
            kind: if self.status.is_server_error() {
                "Service".into()
            } else {
                "User".into()
            },
            message: self.message,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(lh::ERROR_TYPE, HeaderValue::from_static(self.error_type));
        resp
    }
}

impl From<Fail> for LambdaFail {
    fn from(Fail(e): Fail) -> LambdaFail {
        from_api(&e)
    }
}

/// A brume error as Lambda names it, by its status.
fn from_api(e: &ApiError) -> LambdaFail {
    let (status, kind) = match e.status() {
        400 | 422 => (StatusCode::BAD_REQUEST, "InvalidRequestContentException"),
        401 | 403 => (StatusCode::FORBIDDEN, "AccessDeniedException"),
        402 => (StatusCode::PAYMENT_REQUIRED, "PaymentRequiredException"),
        404 | 410 => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
        413 => (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException"),
        429 | 503 => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException"),
    };
    LambdaFail::new(status, kind, format!("{}: {}", e.code, e.message))
}

/// A request signed by a Lambda credential: its account, headers and
/// body (the extractor checks the signature).
pub(super) struct SignedBy {
    pub account: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl axum::extract::FromRequest<Arc<Shared>> for SignedBy {
    type Rejection = LambdaFail;

    async fn from_request(
        req: axum::extract::Request,
        shared: &Arc<Shared>,
    ) -> Result<SignedBy, LambdaFail> {
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        let body = Bytes::from_request(req, shared).await;
        let body = super::body_or_fail(body, "body")?;
        let account = authenticate(shared, &method, &uri, &headers, &body).await?;
        Ok(SignedBy {
            account,
            headers,
            body,
        })
    }
}

#[utoipa::path(post, path = "/2015-03-31/functions/{name}/invocations", tag = "lambda", operation_id = "invoke_lambda",
    params(("name" = String, Path, description = "The function's name"),
        ("Qualifier" = Option<String>, Query, description = "`$LATEST` or a version number"),
        ("X-Amz-Invocation-Type" = Option<String>, Header, description = "`RequestResponse` (the default), `Event` or `DryRun`"),
        ("X-Amz-Log-Type" = Option<String>, Header, description = "`Tail`: the last 4 KB of stderr, base64, in `X-Amz-Log-Result`")),
    request_body(content = brume_api::rest::Binary, content_type = "application/octet-stream", description = "The payload: stdin for a command; an API Gateway proxy event for a `wasi:http` service"),
    responses((status = 200, description = "The function's output (`X-Amz-Function-Error: Unhandled` on a guest fault)", body = brume_api::rest::Binary, content_type = "application/octet-stream"),
        (status = 202, description = "`Event`: queued as a job"),
        (status = 204, description = "`DryRun`: it would run")),
    security(("sigv4" = [])))]
pub(super) async fn invoke(
    State(shared): Sh,
    Path(name): Path<String>,
    uri: Uri,
    signed: SignedBy,
) -> Result<Response, LambdaFail> {
    let SignedBy {
        account,
        headers,
        body,
    } = signed;
    let auth = caller(account);
    let reference = reference(&name, uri.query())?;
    let kind = headers
        .get(lh::INVOCATION_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    match kind {
        "RequestResponse" => {
            let tail = headers
                .get(lh::LOG_TYPE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tail"));
            request_response(&shared, auth, &name, &reference, body, tail).await
        }
        "Event" => {
            let spec = JobSpec {
                service: Some(reference),
                stdin: Some(Output(body)),
                ..JobSpec::default()
            };
            let json = serde_json::to_vec(&spec).map_err(|e| {
                LambdaFail::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    e.to_string(),
                )
            })?;
            super::jobs::submit_job(
                State(shared.clone()),
                auth,
                HeaderMap::new(),
                Ok(json.into()),
            )
            .await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "DryRun" => {
            super::services::resolve(&shared, &reference, &auth.name)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        other => Err(LambdaFail::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            format!("X-Amz-Invocation-Type {other:?}: RequestResponse, Event or DryRun"),
        )),
    }
}

/// The credential's account as a caller (every scope but `admin`).
pub(super) fn caller(account: String) -> Auth {
    Auth {
        name: account,
        scopes: Scope::DEFAULT.to_vec(),
        anonymous: false,
    }
}

/// The account of the credential that signed the request.
async fn authenticate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, LambdaFail> {
    let refused = |kind: &'static str, m: String| LambdaFail::new(StatusCode::FORBIDDEN, kind, m);
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refused(
                "MissingAuthenticationTokenException",
                "a SigV4 Authorization header is required (a Lambda credential: brume broker lambda-keys create)".into(),
            )
        })?;
    let auth =
        sigv4::parse(header).map_err(|e| refused("IncompleteSignatureException", e.to_string()))?;
    let found = shared.lambda.lookup(&auth.key_id).await.map_err(|e| {
        LambdaFail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            e.to_string(),
        )
    })?;
    let Some((account, secret)) = found else {
        return Err(refused(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        ));
    };
    let req = sigv4::Signed {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers,
        body,
    };
    let now = (crate::now_ms() / 1000) as i64;
    sigv4::verify(&req, &auth, &secret, now)
        .map_err(|e| refused("InvalidSignatureException", e.to_string()))?;
    Ok(account)
}

/// The service reference of a function name and its `?Qualifier=`
/// (`$LATEST` or a version number).
fn reference(name: &str, query: Option<&str>) -> Result<String, LambdaFail> {
    let qualifier = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "Qualifier")
        .map(|(_, v)| v.into_owned());
    match qualifier.as_deref() {
        None | Some("$LATEST") => Ok(name.to_string()),
        Some(q) if !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{name}@{q}"))
        }
        Some(q) => Err(LambdaFail::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Qualifier {q:?}: $LATEST or a version number"),
        )),
    }
}

async fn request_response(
    shared: &Arc<Shared>,
    auth: Auth,
    name: &str,
    reference: &str,
    body: Bytes,
    tail: bool,
) -> Result<Response, LambdaFail> {
    let kind = super::services::resolve(shared, reference, &auth.name)?
        .info
        .kind;
    let event = match kind {
        ServiceKind::Http => Some(http_request(&body)?),
        ServiceKind::Command => None,
        ServiceKind::Oci => {
            return Err(Fail::new(
                brume_api::ErrorCode::WrongKind,
                format!("{name} is an oci container image: it runs as a job (POST /v1/jobs), not through Invoke"),
            )
            .into());
        }
    };
    let (mut spec, mut billing, stdin, verify) =
        super::invoke::sync_work(shared, auth, &HeaderMap::new(), reference, kind, Ok(body))?;
    super::invoke::check_overload(shared, &spec, verify)?;
    billing.hold = reserve(shared, &billing, &spec.limits, 0, verify.units().into()).await?;
    billing.request_line = format!("POST /2015-03-31/functions/{name}/invocations HTTP/1.1");
    let version = spec
        .service
        .as_deref()
        .and_then(|r| r.rsplit_once(brume_api::names::VERSION_SEP))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| "$LATEST".into());
    match event {
        Some(request) => spec.http = Some(request),
        None => {
            spec.args = vec![name.to_string()];
            spec.stdin = stdin;
        }
    }
    let (id, completion) = super::invoke::run_sync(shared, spec, billing, verify)
        .await
        .into_completion();
    let outcome = match completion {
        Completion::Done { outcome, .. } => outcome,
        Completion::Failed { error, .. } => return Err(from_api(&error)),
    };
    Ok(answer(*outcome, id, &version, tail))
}

/// The HTTP request an API Gateway event (1.0 or 2.0) describes.
fn http_request(payload: &[u8]) -> Result<brume_api::wire::HttpRequest, LambdaFail> {
    let bad =
        |m: String| LambdaFail::new(StatusCode::BAD_REQUEST, "InvalidRequestContentException", m);
    let e: ApiGatewayEvent = serde_json::from_slice(payload).map_err(|err| {
        bad(format!(
            "an http function takes an API Gateway proxy event: {err}"
        ))
    })?;
    let method = e
        .http_method
        .or_else(|| {
            e.request_context
                .and_then(|c| c.http)
                .and_then(|h| h.method)
        })
        .unwrap_or_else(|| "GET".into());
    let path = e.raw_path.or(e.path).unwrap_or_else(|| "/".into());
    let query = match (e.raw_query_string, e.query_string_parameters) {
        (Some(q), _) if !q.is_empty() => q,
        (_, Some(params)) => form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish(),
        _ => String::new(),
    };
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let body = match (e.body, e.is_base64_encoded) {
        (None, _) => Bytes::new(),
        (Some(b), false) => Bytes::from(b),
        (Some(b), true) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|err| bad(format!("body: not base64: {err}")))?,
    };
    let headers = e
        .headers
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Bytes::from(v)))
        .collect();
    Ok(brume_api::wire::HttpRequest {
        method,
        uri,
        headers,
        body,
    })
}

/// A component's response as API Gateway's `{statusCode, headers, body}`.
fn gateway_response(r: brume_api::wire::HttpResponse) -> Bytes {
    let text = String::from_utf8(r.body.to_vec());
    let (body, is_base64_encoded) = match text {
        Ok(t) => (t, false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&r.body),
            true,
        ),
    };
    let resp = ApiGatewayResponse {
        status_code: r.status,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
        body,
        is_base64_encoded,
    };
    Bytes::from(serde_json::to_vec(&resp).unwrap_or_default())
}

/// Lambda's answer to a call that ran: stdout, or the function's error
/// (`Unhandled`), with the executed version and, with `tail`, the end of
/// stderr.
fn answer(outcome: Outcome, id: brume_api::WorkId, version: &str, tail: bool) -> Response {
    let (stdout, stderr, failure) = match outcome {
        Outcome::Exited {
            exit_code: 0,
            stdout,
            stderr,
            ..
        } => (stdout, stderr, None),
        Outcome::Exited {
            exit_code, stderr, ..
        } => {
            let message = format!(
                "exited with code {exit_code}: {}",
                String::from_utf8_lossy(last(&stderr, 512)).trim()
            );
            (
                Bytes::new(),
                stderr,
                Some(("ExitCode".to_string(), message)),
            )
        }
        Outcome::Failed {
            code,
            message,
            stderr,
            ..
        } => (Bytes::new(), stderr, Some((code, message))),
        Outcome::Responded {
            response, stderr, ..
        } => (gateway_response(response), stderr, None),
    };
    let mut resp = match failure {
        None => Response::new(Body::from(stdout)),
        Some((error_type, error_message)) => {
            let mut r = axum::Json(FunctionError {
                error_message,
                error_type,
            })
            .into_response();
            r.headers_mut()
                .insert(lh::FUNCTION_ERROR, HeaderValue::from_static("Unhandled"));
            r
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(version) {
        h.insert(lh::EXECUTED_VERSION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        h.insert(lh::REQUEST_ID, v.clone());
        h.insert(brume_api::headers::WORK_ID, v);
    }
    if tail {
        let log = base64::engine::general_purpose::STANDARD.encode(last(&stderr, MAX_TAIL_BYTES));
        if let Ok(v) = HeaderValue::from_str(&log) {
            h.insert(lh::LOG_RESULT, v);
        }
    }
    resp
}

/// The last `n` bytes of `b`.
fn last(b: &[u8], n: usize) -> &[u8] {
    &b[b.len().saturating_sub(n)..]
}
