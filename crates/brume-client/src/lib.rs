//! The requester's side of brume's REST API, from Rust.
//!
//! A [`Client`] talks to one broker. It holds one `reqwest` connection pool,
//! so clone it (cheaply) rather than making a new one per call. Every route
//! of the API has a method; bodies are the types of [`brume_api::rest`].
//!
//! - Services: [`Client::publish`], [`Client::services`], [`Client::service`],
//!   [`Client::blob`].
//! - Functions: [`Client::invoke`] (commands) and [`Client::call_http`]
//!   (`wasi:http` components).
//! - Jobs: [`Client::submit`], [`Client::job`], [`Client::jobs`],
//!   [`Client::events`] (the live event stream), [`Client::result`],
//!   [`Client::cancel`], and [`Client::wait`] / [`Client::wait_with`],
//!   which follow the events to the end and fetch the result.
//! - The broker: [`Client::status`], [`Client::providers`].
//!
//! Every failure is a [`ClientError`]: the broker's own `{code, message}`
//! ([`ClientError::Api`]), a broker that can't be reached
//! ([`ClientError::Transport`]), or a response that isn't what the API
//! promises ([`ClientError::Decode`]).
//!
//! An `https://` broker is trusted through the built-in roots unless
//! [`Client::with_tls`] says otherwise: a CA file, or the broker's
//! certificate pinned by its fingerprint (see [`brume_tls`]). A pinned
//! broker presenting another certificate fails every call with a
//! [`ClientError::Transport`] whose reason names both fingerprints.
//!
//! ```no_run
//! use brume_client::{Client, brume_api::rest::JobSpec};
//!
//! # async fn demo() -> Result<(), brume_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:7700", Some("brk_...".into()))?;
//!
//! // Publish a module as a service, then call it synchronously.
//! let module = std::fs::read("echo.wasm").unwrap_or_default();
//! client.publish("echo", brume_client::ServiceKind::Command, module.into()).await?;
//! let out = client.invoke("echo", &["hi".into()], bytes::Bytes::new()).await?;
//! println!("{} (exit {:?}, {:?} fuel)", String::from_utf8_lossy(&out.body), out.exit_code, out.fuel);
//!
//! // Or run it as a batch job and wait for the result, watching progress.
//! let job = client
//!     .submit(&JobSpec { service: Some("echo".into()), ..JobSpec::default() })
//!     .await?;
//! let result = client
//!     .wait_with(job.id, |event| eprintln!("{:?}", event.kind))
//!     .await?;
//! println!("exit {:?}", result.exit_code);
//! # Ok(())
//! # }
//! ```

mod error;
mod sse;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use brume_api;
pub use brume_api::rest::{
    JobEvent, JobInfo, JobList, JobResult, JobSpec, JobState, ProviderList, ServiceInfo,
    ServiceList, Status,
};
pub use brume_api::{ApiError, ErrorCode, ServiceKind, WorkId};
pub use brume_tls::{self, Fingerprint, Trust};
pub use error::{ClientError, parse_api_error};
pub use sse::{SseEvent, SseParser};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;

/// How long to wait for a TCP connection to the broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`Client::wait`] reconnects an event stream that keeps
/// breaking (or keeps ending before the job is final) before giving up.
const MAX_RECONNECTS: u32 = 5;

/// The HTTP client of a [`Client`], trusting `trust` over TLS.
fn http_client(trust: &Trust) -> Result<reqwest::Client, ClientError> {
    trust
        .reqwest(reqwest::Client::builder())
        .map_err(ClientError::Tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("brume-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Invalid(format!("HTTP client: {e}")))
}

/// A connection to one broker. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// `base` as given, without a trailing slash, for messages.
    base_text: String,
    api_key: Option<String>,
    /// Signs every request instead of sending an API key.
    signer: Option<std::sync::Arc<RequestSigner>>,
    /// Told how much of a module upload is sent.
    upload_progress: Option<UploadProgress>,
}

/// Called with (bytes sent, total) as a module upload goes out.
pub type UploadProgress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Module uploads go out in chunks of this size when progress is watched.
const UPLOAD_CHUNK: usize = 64 << 10;

/// A key that signs requests (`Authorization: Brume-Signature`), with the
/// last timestamp used: signatures are deterministic, so timestamps are
/// kept strictly increasing to keep identical requests distinct.
struct RequestSigner {
    identity: brume_identity::Identity,
    last_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base_text)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What the `x-brume-*` headers of a response say about the work behind it.
/// A header that is missing or malformed is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkMeta {
    pub work_id: Option<WorkId>,
    pub provider: Option<String>,
    pub fuel: Option<u64>,
    pub attempts: Option<u32>,
    pub exit_code: Option<i32>,
}

impl WorkMeta {
    pub fn from_headers(headers: &http::HeaderMap) -> WorkMeta {
        use brume_api::headers as h;
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        WorkMeta {
            work_id: text(h::WORK_ID).and_then(|v| v.parse().ok()),
            provider: text(h::PROVIDER).map(str::to_string),
            fuel: text(h::FUEL).and_then(|v| v.parse().ok()),
            attempts: text(h::ATTEMPTS).and_then(|v| v.parse().ok()),
            exit_code: text(h::EXIT_CODE).and_then(|v| v.parse().ok()),
        }
    }
}

/// The answer to [`Client::invoke`]: the function's stdout and what the
/// `x-brume-*` headers said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeResponse {
    pub status: u16,
    /// The function's stdout.
    pub body: Bytes,
    pub work_id: Option<WorkId>,
    pub provider: Option<String>,
    pub fuel: Option<u64>,
    pub attempts: Option<u32>,
    /// The guest's exit code (`x-brume-exit-code`).
    pub exit_code: Option<i32>,
}

/// The answer to [`Client::call_http`]: the component's response, as is,
/// and what the `x-brume-*` headers said.
#[derive(Debug)]
pub struct HttpResponse {
    pub response: http::Response<Bytes>,
    pub meta: WorkMeta,
}

impl Client {
    /// A client for the broker at `base_url` (`http://host:port` or
    /// `https://host:port`, maybe with a path prefix; `host:port` alone
    /// means `http://`). `api_key` is sent as `Authorization: Bearer` on
    /// every call that needs it. `https://` trusts the built-in roots; see
    /// [`Client::with_tls`].
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Client, ClientError> {
        let text = base_url.trim();
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let base = Url::parse(&with_scheme)
            .map_err(|e| ClientError::Invalid(format!("broker URL {text:?}: {e}")))?;
        match base.scheme() {
            "http" | "https" => {}
            other => {
                return Err(ClientError::Invalid(format!(
                    "broker URL {text:?}: unsupported scheme {other:?} (expected http:// or https://)"
                )));
            }
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(ClientError::Invalid(format!(
                "broker URL {text:?}: not an http(s)://host:port URL"
            )));
        }
        if let Some(key) = &api_key
            && http::HeaderValue::from_str(&format!("Bearer {key}")).is_err()
        {
            return Err(ClientError::Invalid(
                "API key: contains characters not allowed in a header".into(),
            ));
        }
        let http = http_client(&Trust::default())?;
        let base_text = base.as_str().trim_end_matches('/').to_string();
        Ok(Client {
            http,
            base,
            base_text,
            api_key: api_key.filter(|k| !k.is_empty()),
            signer: None,
            upload_progress: None,
        })
    }

    /// This client, trusting `trust` for an `https://` broker (instead of
    /// the built-in roots alone): a CA file, or one pinned certificate.
    pub fn with_tls(mut self, trust: &Trust) -> Result<Client, ClientError> {
        self.http = http_client(trust)?;
        Ok(self)
    }

    /// A client that signs every request with `identity` instead of sending
    /// an API key ("no account needed": the identity's address is the
    /// account that pays; see `brume_api::signed` for the format).
    pub fn with_identity(
        base_url: &str,
        identity: brume_identity::Identity,
    ) -> Result<Client, ClientError> {
        let mut client = Client::new(base_url, None)?;
        client.signer = Some(std::sync::Arc::new(RequestSigner {
            identity,
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }));
        Ok(client)
    }

    /// The address requests are signed by, in [`Client::with_identity`] mode.
    pub fn signer_address(&self) -> Option<String> {
        self.signer
            .as_ref()
            .map(|s| s.identity.address().to_string())
    }

    /// Builds the request, signing it in [`Client::with_identity`] mode.
    fn build(&self, req: RequestBuilder) -> Result<reqwest::Request, ClientError> {
        use sha2::{Digest as _, Sha256};
        let mut request = req
            .build()
            .map_err(|e| ClientError::transport(&self.base_text, e))?;
        let Some(signer) = &self.signer else {
            return Ok(request);
        };
        let body: &[u8] = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(body).into();
        let url = request.url();
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let prev = signer
            .last_ms
            .fetch_max(now, std::sync::atomic::Ordering::AcqRel);
        let ts = if prev >= now {
            signer
                .last_ms
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                + 1
        } else {
            now
        };
        let message = brume_api::signed::message(request.method().as_str(), &target, ts, &digest);
        let signature = signer
            .identity
            .sign_message(message.as_bytes())
            .map_err(|e| ClientError::Invalid(format!("sign the request: {e}")))?;
        let header = brume_api::signed::SignatureHeader {
            address: signer.identity.address().to_string(),
            timestamp_ms: ts,
            signature,
        }
        .to_header();
        let value = http::HeaderValue::from_str(&header)
            .map_err(|e| ClientError::Invalid(format!("signature header: {e}")))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
        Ok(request)
    }

    /// Sends a request as is to `path_and_query` under the base URL
    /// (signed in [`Client::with_identity`] mode) and returns the response
    /// whatever its status: what a broker forwarding work to a peer uses.
    pub async fn relay(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<Bytes>, ClientError> {
        let url = self
            .base
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|e| ClientError::Invalid(format!("path {path_and_query:?}: {e}")))?;
        let req = self.request(method, url).headers(headers).body(body);
        let resp = self
            .http
            .execute(self.build(req)?)
            .await
            .map_err(|e| ClientError::transport(&self.base_text, e))?;
        let mut out = http::Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            *h = resp.headers().clone();
        }
        let bytes = self.body(resp).await?;
        out.body(bytes)
            .map_err(|e| ClientError::Invalid(format!("response: {e}")))
    }

    /// [`Client::relay`] whose response body streams (an SSE stream
    /// relayed by a broker): the status, the headers and the body chunks.
    pub async fn relay_stream(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: http::HeaderMap,
    ) -> Result<
        (
            http::StatusCode,
            http::HeaderMap,
            impl Stream<Item = Result<Bytes, ClientError>> + Send + use<>,
        ),
        ClientError,
    > {
        let url = self
            .base
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|e| ClientError::Invalid(format!("path {path_and_query:?}: {e}")))?;
        let req = self.request(method, url).headers(headers);
        let resp = self
            .http
            .execute(self.build(req)?)
            .await
            .map_err(|e| ClientError::transport(&self.base_text, e))?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        let base = self.base_text.clone();
        let body = resp
            .bytes_stream()
            .map(move |c| c.map_err(|e| ClientError::transport(&base, e)));
        Ok((status, headers, body))
    }

    /// `GET /v1/directory`: the brokers this one knows, ranked.
    pub async fn directory(
        &self,
        service: Option<&str>,
        near: Option<(f64, f64)>,
        min_free: Option<u64>,
        region: Option<&str>,
    ) -> Result<brume_api::federation::Directory, ClientError> {
        let mut url = self.url(&["v1", "directory"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some((lat, lon)) = near {
                q.append_pair("near", &format!("{lat},{lon}"));
            }
            if let Some(m) = min_free {
                q.append_pair("min_free", &m.to_string());
            }
            if let Some(r) = region {
                q.append_pair("region", r);
            }
        }
        self.json(self.request(Method::GET, url)).await
    }

    /// `GET /v1/locate/{owner}/{service}`: the brokers serving a service.
    pub async fn locate(
        &self,
        owner: &str,
        service: &str,
    ) -> Result<brume_api::federation::Located, ClientError> {
        let url = self.url(&["v1", "locate", owner, service]);
        self.json(self.request(Method::GET, url)).await
    }

    /// The broker's base URL, as used in messages.
    pub fn base_url(&self) -> &str {
        &self.base_text
    }

    // ---- services ----

    /// This client, reporting module uploads' progress to `f` (the body is
    /// then streamed in 64 KiB chunks).
    pub fn with_upload_progress(mut self, f: UploadProgress) -> Client {
        self.upload_progress = Some(f);
        self
    }

    /// A module as a request body: whole, or chunked when progress is
    /// watched.
    fn module_body(&self, module: Bytes) -> reqwest::Body {
        let Some(report) = self.upload_progress.clone() else {
            return module.into();
        };
        let total = module.len() as u64;
        let chunks: Vec<Bytes> = (0..module.len())
            .step_by(UPLOAD_CHUNK)
            .map(|at| module.slice(at..(at + UPLOAD_CHUNK).min(module.len())))
            .collect();
        let mut sent = 0u64;
        let stream = futures_util::stream::iter(chunks.into_iter().map(move |c| {
            sent += c.len() as u64;
            report(sent, total);
            Ok::<_, std::io::Error>(c)
        }));
        reqwest::Body::wrap_stream(stream)
    }

    /// `POST /v1/services?name=&kind=`: uploads a module (binary `.wasm`)
    /// as the next version of `name` in the caller's namespace (`name` may
    /// be written `owner~name` with the caller's own address or alias).
    pub async fn publish(
        &self,
        name: &str,
        kind: ServiceKind,
        module: Bytes,
    ) -> Result<ServiceInfo, ClientError> {
        let mut url = self.url(&["v1", "services"]);
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("kind", kind.as_str());
        let req = self
            .request(Method::POST, url)
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(self.module_body(module));
        self.json(req).await
    }

    /// [`Client::publish`] signed by a developer: `developer` signs
    /// [`module_message`](brume_api::wire::module_message) of the module's
    /// sha256 (`module` must be a binary `.wasm`, whose digest that is).
    /// The broker records the developer as the service's royalty payee and
    /// hands the signature to providers with every assignment.
    pub async fn publish_signed(
        &self,
        name: &str,
        kind: ServiceKind,
        module: Bytes,
        developer: &brume_identity::Identity,
    ) -> Result<ServiceInfo, ClientError> {
        let signature = sign_module(&module, developer)?;
        self.publish_with_signature(name, kind, module, &signature)
            .await
    }

    /// [`Client::publish`] with a developer signature made elsewhere (see
    /// [`sign_module`]); the broker refuses one that does not verify with
    /// 400 `invalid_request`.
    pub async fn publish_with_signature(
        &self,
        name: &str,
        kind: ServiceKind,
        module: Bytes,
        signature: &brume_api::wire::ModuleSignature,
    ) -> Result<ServiceInfo, ClientError> {
        let mut url = self.url(&["v1", "services"]);
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("kind", kind.as_str());
        let req = self
            .request(Method::POST, url)
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .header(DEVELOPER_HEADER, &signature.developer)
            .header(
                MODULE_SIGNATURE_HEADER,
                format!("0x{}", hex_lower(&signature.signature)),
            )
            .body(self.module_body(module));
        self.json(req).await
    }

    /// `GET /v1/services`: the latest version of every service.
    pub async fn services(&self) -> Result<ServiceList, ClientError> {
        self.get_json(&["v1", "services"]).await
    }

    /// `GET /v1/services?owner=`: those of one namespace (an address, an
    /// alias or a key label).
    pub async fn services_of(&self, owner: &str) -> Result<ServiceList, ClientError> {
        let mut url = self.url(&["v1", "services"]);
        url.query_pairs_mut().append_pair("owner", owner);
        self.json(self.request(Method::GET, url)).await
    }

    /// `GET /v1/services/{ref}`: the version `[owner~]name[@version]`
    /// names (see `brume_api::names`).
    pub async fn service(&self, reference: &str) -> Result<ServiceInfo, ClientError> {
        self.get_json(&["v1", "services", reference]).await
    }

    /// `GET /v1/services/{ref}/versions`: every version, oldest first.
    pub async fn service_versions(&self, reference: &str) -> Result<ServiceList, ClientError> {
        self.get_json(&["v1", "services", reference, "versions"])
            .await
    }

    /// `DELETE /v1/services/{ref}`: retires a service (every version, or
    /// the one `name@N` names). Owner or `admin` only.
    pub async fn retire(&self, reference: &str) -> Result<ServiceList, ClientError> {
        let url = self.url(&["v1", "services", reference]);
        self.json(self.request(Method::DELETE, url)).await
    }

    /// `POST /v1/services/{ref}/move` (`admin`): gives a service, every
    /// version, to another namespace.
    pub async fn move_service(
        &self,
        reference: &str,
        owner: &str,
    ) -> Result<ServiceList, ClientError> {
        let url = self.url(&["v1", "services", reference, "move"]);
        let body = brume_api::names::MoveRequest {
            owner: owner.to_string(),
        };
        self.json(self.request(Method::POST, url).json(&body)).await
    }

    /// `POST /v1/aliases`: registers the caller's alias (once, for good).
    pub async fn register_alias(
        &self,
        alias: &str,
    ) -> Result<brume_api::names::AliasInfo, ClientError> {
        let url = self.url(&["v1", "aliases"]);
        let body = brume_api::names::AliasRequest {
            alias: alias.to_string(),
        };
        self.json(self.request(Method::POST, url).json(&body)).await
    }

    /// `GET /v1/aliases/{alias}`.
    pub async fn alias(&self, alias: &str) -> Result<brume_api::names::AliasInfo, ClientError> {
        self.get_json(&["v1", "aliases", alias]).await
    }

    /// `GET /v1/blobs/{sha256}`: a module's bytes.
    pub async fn blob(&self, digest: &str) -> Result<Bytes, ClientError> {
        let url = self.url(&["v1", "blobs", digest]);
        let resp = self.send(self.request(Method::GET, url)).await?;
        self.body(resp).await
    }

    /// `POST /v1/data`: stores an input file for jobs; name it in a job's
    /// `inputs` by the sha256 returned.
    pub async fn upload_data(
        &self,
        bytes: Bytes,
    ) -> Result<brume_api::data::DataInfo, ClientError> {
        let url = self.url(&["v1", "data"]);
        let req = self
            .request(Method::POST, url)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(self.module_body(bytes));
        self.json(req).await
    }

    /// `GET /v1/jobs/{id}/outputs/{path}`: an output file of a finished job.
    pub async fn job_output(&self, id: WorkId, path: &str) -> Result<Bytes, ClientError> {
        let url = self.url(&["v1", "jobs", &id.to_string(), "outputs", path]);
        let resp = self.send(self.request(Method::GET, url)).await?;
        self.body(resp).await
    }

    // ---- functions ----

    /// `POST /v1/functions/{service}/invoke`: runs a command service once,
    /// synchronously. `args` follow argv\[0\]; `stdin` is the guest's stdin.
    /// A non-zero exit is not an error: see [`InvokeResponse::exit_code`].
    pub async fn invoke(
        &self,
        service: &str,
        args: &[String],
        stdin: Bytes,
    ) -> Result<InvokeResponse, ClientError> {
        self.invoke_with(service, args, stdin, http::HeaderMap::new())
            .await
    }

    /// [`invoke`](Self::invoke) with request headers of the caller's own
    /// (`x-brume-verify`, `x-brume-tier`, `x-brume-column-…`).
    pub async fn invoke_with(
        &self,
        service: &str,
        args: &[String],
        stdin: Bytes,
        headers: http::HeaderMap,
    ) -> Result<InvokeResponse, ClientError> {
        let mut url = self.url(&["v1", "functions", service, "invoke"]);
        if !args.is_empty() {
            let mut q = url.query_pairs_mut();
            for a in args {
                q.append_pair("arg", a);
            }
        }
        let req = self
            .request(Method::POST, url)
            .headers(headers)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(stdin);
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let meta = WorkMeta::from_headers(resp.headers());
        let body = self.body(resp).await?;
        Ok(InvokeResponse {
            status,
            body,
            work_id: meta.work_id,
            provider: meta.provider,
            fuel: meta.fuel,
            attempts: meta.attempts,
            exit_code: meta.exit_code,
        })
    }

    /// `GET /metrics`: the broker's metrics, in Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self
            .send(self.request(Method::GET, self.url(&["metrics"])))
            .await?;
        let body = self.body(resp).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `ANY /fn/{service}/{path}`: one request to a `wasi:http` component.
    /// `path_and_query` is the path the component sees (`/`, `/a?b=c`).
    ///
    /// The component's response is returned whatever its status. A 4xx/5xx
    /// is a [`ClientError::Api`] only when it came from the broker itself:
    /// it carries no `x-brume-work-id` (nothing ran: unknown service, wrong
    /// kind, auth...), or it is the broker's JSON report of a guest fault.
    pub async fn call_http(
        &self,
        method: http::Method,
        service: &str,
        path_and_query: &str,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<HttpResponse, ClientError> {
        let mut url = self.url(&["fn", service]);
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        // The root is `/fn/{service}` (no trailing slash: an empty
        // wildcard matches no route).
        let rest = path.trim_start_matches('/');
        if !rest.is_empty() {
            let full = format!("{}/{rest}", url.path());
            url.set_path(&full);
        }
        url.set_query(query);
        let mut req = self.http.request(method, url).headers(headers).body(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = self
            .http
            .execute(self.build(req)?)
            .await
            .map_err(|e| ClientError::transport(&self.base_text, e))?;
        let status = resp.status();
        let meta = WorkMeta::from_headers(resp.headers());
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(error::parse_retry_after);
        let version = resp.version();
        let resp_headers = resp.headers().clone();
        let bytes = self.body(resp).await?;
        if status.as_u16() >= 400 {
            let broker_error = if meta.work_id.is_none() {
                Some(parse_api_error(status.as_u16(), &bytes))
            } else {
                serde_json::from_slice::<ApiError>(&bytes)
                    .ok()
                    .filter(|e| is_guest_fault(e.code) && e.status() == status.as_u16())
            };
            if let Some(error) = broker_error {
                return Err(ClientError::Api {
                    status: status.as_u16(),
                    error,
                    retry_after,
                });
            }
        }
        let mut response = http::Response::new(bytes);
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = resp_headers;
        Ok(HttpResponse { response, meta })
    }

    // ---- leases ----

    /// `POST /v1/leases`: starts a lease of an http service.
    pub async fn create_lease(
        &self,
        spec: &brume_api::lease::LeaseSpec,
    ) -> Result<brume_api::lease::LeaseInfo, ClientError> {
        let url = self.url(&["v1", "leases"]);
        self.json(self.request(Method::POST, url).json(spec)).await
    }

    /// `GET /v1/leases`: the account's leases, newest first.
    pub async fn leases(&self) -> Result<brume_api::lease::LeaseList, ClientError> {
        self.get_json(&["v1", "leases"]).await
    }

    /// `GET /v1/leases/{id}`.
    pub async fn lease(&self, id: &str) -> Result<brume_api::lease::LeaseInfo, ClientError> {
        self.get_json(&["v1", "leases", id]).await
    }

    /// `GET /v1/leases/{id}/events`.
    pub async fn lease_events(
        &self,
        id: &str,
    ) -> Result<brume_api::lease::LeaseEvents, ClientError> {
        self.get_json(&["v1", "leases", id, "events"]).await
    }

    /// `POST /v1/leases/{id}/top-up`: adds `amount` base units to its
    /// escrow (a halted lease resumes).
    pub async fn top_up_lease(
        &self,
        id: &str,
        amount: u128,
    ) -> Result<brume_api::lease::LeaseInfo, ClientError> {
        let url = self.url(&["v1", "leases", id, "top-up"]);
        let body = brume_api::lease::TopUp {
            amount: amount.to_string(),
        };
        self.json(self.request(Method::POST, url).json(&body)).await
    }

    /// `DELETE /v1/leases/{id}`: stops it for good (what ran is billed).
    pub async fn stop_lease(&self, id: &str) -> Result<brume_api::lease::LeaseInfo, ClientError> {
        let url = self.url(&["v1", "leases", id]);
        self.json(self.request(Method::DELETE, url)).await
    }

    /// `GET /v1/ledger/rows/{work_id}`: one ledger row's public columns
    /// (with the private ones for its owner), as JSON.
    pub async fn ledger_row(&self, work_id: &str) -> Result<serde_json::Value, ClientError> {
        self.get_json(&["v1", "ledger", "rows", work_id]).await
    }

    // ---- jobs ----

    /// `POST /v1/jobs`: submits a batch job; it starts queued.
    pub async fn submit(&self, spec: &JobSpec) -> Result<JobInfo, ClientError> {
        let url = self.url(&["v1", "jobs"]);
        self.json(self.request(Method::POST, url).json(spec)).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: WorkId) -> Result<JobInfo, ClientError> {
        self.get_json(&["v1", "jobs", &id.to_string()]).await
    }

    /// `GET /v1/receipts/{id}`: the proof of a recent call's receipt, by
    /// its provider's signed batch root (check it with
    /// [`brume_api::batch::ReceiptInclusion::check`]).
    pub async fn receipt(
        &self,
        id: WorkId,
    ) -> Result<brume_api::batch::ReceiptInclusion, ClientError> {
        self.get_json(&["v1", "receipts", &id.to_string()]).await
    }

    /// `GET /v1/jobs?state=&limit=`.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        limit: Option<u32>,
    ) -> Result<JobList, ClientError> {
        let mut url = self.url(&["v1", "jobs"]);
        if state.is_some() || limit.is_some() {
            let mut q = url.query_pairs_mut();
            if let Some(s) = state {
                q.append_pair("state", s.as_str());
            }
            if let Some(n) = limit {
                q.append_pair("limit", &n.to_string());
            }
        }
        self.json(self.request(Method::GET, url)).await
    }

    /// `GET /v1/jobs/{id}/result`: only once the job is final (`conflict`
    /// before).
    pub async fn result(&self, id: WorkId) -> Result<JobResult, ClientError> {
        self.get_json(&["v1", "jobs", &id.to_string(), "result"])
            .await
    }

    /// `DELETE /v1/jobs/{id}`: cancels a job (`conflict` if already final).
    pub async fn cancel(&self, id: WorkId) -> Result<JobInfo, ClientError> {
        let url = self.url(&["v1", "jobs", &id.to_string()]);
        self.json(self.request(Method::DELETE, url)).await
    }

    /// `POST /v1/jobs/{id}/reject`: dispute a `confirm: true` job's
    /// result; the broker re-executes it and the loser pays.
    pub async fn reject_job(&self, id: WorkId) -> Result<brume_api::rest::JobDispute, ClientError> {
        let url = self.url(&["v1", "jobs", &id.to_string(), "reject"]);
        self.json(self.request(Method::POST, url)).await
    }

    /// `POST /v1/jobs/{id}/confirm`: accept a `confirm: true` job's
    /// result, so its payment settles.
    pub async fn confirm_job(
        &self,
        id: WorkId,
    ) -> Result<brume_api::rest::JobConfirmation, ClientError> {
        let url = self.url(&["v1", "jobs", &id.to_string(), "confirm"]);
        self.json(self.request(Method::POST, url)).await
    }

    /// `GET /v1/jobs/{id}/events`: the job's events, history first, then
    /// live. The stream ends after the final event (`succeeded`, `failed`,
    /// `cancelled`), or earlier if the connection ends.
    pub async fn events(&self, id: WorkId) -> Result<JobEvents, ClientError> {
        self.events_after(id, None).await
    }

    /// Like [`Client::events`], skipping events up to sequence number
    /// `after` (sent as `Last-Event-ID`, and filtered here too), for
    /// resuming a stream that broke.
    pub async fn events_after(
        &self,
        id: WorkId,
        after: Option<u64>,
    ) -> Result<JobEvents, ClientError> {
        let url = self.url(&["v1", "jobs", &id.to_string(), "events"]);
        let mut req = self
            .request(Method::GET, url)
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(seq) = after {
            req = req.header("last-event-id", seq.to_string());
        }
        let resp = self.send(req).await?;
        let state = EventState {
            body: Box::pin(resp.bytes_stream()),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            after,
            done: false,
            url: self.base_text.clone(),
        };
        Ok(JobEvents {
            inner: Box::pin(futures_util::stream::unfold(state, next_event)),
        })
    }

    /// Follows the job's events until it is final, then returns its result.
    pub async fn wait(&self, id: WorkId) -> Result<JobResult, ClientError> {
        self.wait_with(id, |_| {}).await
    }

    /// [`Client::wait`], calling `on_event` for each event as it arrives.
    /// A stream that breaks is resumed where it stopped (a few times).
    pub async fn wait_with(
        &self,
        id: WorkId,
        mut on_event: impl FnMut(&JobEvent),
    ) -> Result<JobResult, ClientError> {
        let mut last_seq = None;
        let mut failures = 0u32;
        loop {
            let mut final_seen = false;
            let mut broke: Option<ClientError> = None;
            match self.events_after(id, last_seq).await {
                Ok(mut events) => {
                    while let Some(item) = events.next().await {
                        match item {
                            Ok(ev) => {
                                last_seq = Some(ev.seq);
                                failures = 0;
                                on_event(&ev);
                                if ev.kind.is_final() {
                                    final_seen = true;
                                }
                            }
                            // An event this client can't read (a newer
                            // broker's kind, say) doesn't stop the wait.
                            Err(ClientError::Decode { .. }) => {}
                            Err(e) => {
                                broke = Some(e);
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.is_transport() => broke = Some(e),
                Err(e) => return Err(e),
            }
            if !final_seen {
                // The stream ended early: ask the job itself.
                match self.job(id).await {
                    Ok(info) if info.state.is_final() => {}
                    Ok(_) | Err(ClientError::Transport { .. }) => {
                        failures += 1;
                        if failures > MAX_RECONNECTS {
                            return Err(broke.unwrap_or_else(|| ClientError::Decode {
                                url: self.base_text.clone(),
                                reason: format!(
                                    "the event stream of job {id} keeps ending before the job is final"
                                ),
                            }));
                        }
                        tokio::time::sleep(Duration::from_millis(200 << failures.min(5))).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            return self.result_when_ready(id).await;
        }
    }

    /// The result of a job known to be final. The broker may store the
    /// result a moment after it sends the final event, so a `conflict` is
    /// retried briefly.
    async fn result_when_ready(&self, id: WorkId) -> Result<JobResult, ClientError> {
        let mut tries = 0;
        loop {
            match self.result(id).await {
                Err(e) if e.code() == Some(ErrorCode::Conflict) && tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                other => return other,
            }
        }
    }

    // ---- the broker ----

    /// `GET /v1/status` (no API key needed).
    /// `POST /v1/settlement/run`: settles now; the run's report (see
    /// `brume_settle::Report`) as JSON.
    pub async fn settle(&self) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&["v1", "settlement", "run"]);
        self.json(self.request(Method::POST, url)).await
    }

    /// `GET /v1/settlement`: settlement health.
    pub async fn settlement(&self) -> Result<brume_api::rest::SettlementHealth, ClientError> {
        self.get_json(&["v1", "settlement"]).await
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get_json(&["v1", "status"]).await
    }

    /// `GET /v1/providers`.
    pub async fn providers(&self) -> Result<ProviderList, ClientError> {
        self.get_json(&["v1", "providers"]).await
    }

    /// `GET /v1/offers`: what the connected providers offer, filtered by
    /// `query`'s `(name, value)` pairs (`runtime`, `min_slots`, `near`,
    /// `sort`, … as the route documents them).
    pub async fn offers(
        &self,
        query: &[(&str, String)],
    ) -> Result<brume_api::rest::OfferList, ClientError> {
        let mut url = self.url(&["v1", "offers"]);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.json(self.request(Method::GET, url)).await
    }

    // ---- chain ----

    /// `GET /v1/chain`: chain id, head block, the payout account, faucet.
    pub async fn chain_info(&self) -> Result<brume_api::chain::ChainInfo, ClientError> {
        self.get_json(&["v1", "chain"]).await
    }

    /// `GET /v1/chain/accounts/{address}`: balance, nonce, allowance to the
    /// payout account and the broker's escrow view.
    pub async fn chain_account(
        &self,
        address: &str,
    ) -> Result<brume_api::chain::AccountInfo, ClientError> {
        self.get_json(&["v1", "chain", "accounts", address]).await
    }

    /// `POST /v1/chain/tx`: a transaction signed elsewhere (its canonical
    /// encoding and its 65-byte signature).
    pub async fn submit_tx(
        &self,
        encoding: &[u8],
        signature: &[u8; 65],
    ) -> Result<brume_api::chain::TxReceipt, ClientError> {
        let hex = |b: &[u8]| {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("0x");
            for x in b {
                s.push_str(&format!("{x:02x}"));
            }
            s
        };
        let body = brume_api::chain::RawTx {
            raw: hex(encoding),
            signature: hex(signature),
        };
        let req = self
            .request(Method::POST, self.url(&["v1", "chain", "tx"]))
            .json(&body);
        self.json(req).await
    }

    /// `POST /v1/chain/faucet` (devnets only).
    pub async fn faucet(
        &self,
        address: &str,
        amount: u128,
    ) -> Result<brume_api::chain::TxReceipt, ClientError> {
        let body = brume_api::chain::FaucetRequest {
            address: address.to_string(),
            amount: amount.to_string(),
        };
        let req = self
            .request(Method::POST, self.url(&["v1", "chain", "faucet"]))
            .json(&body);
        self.json(req).await
    }

    /// `GET /v1/chain/accounts/{account}/transfers?after=&limit=`: an
    /// account's token movements, oldest first.
    pub async fn transfers(
        &self,
        account: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<brume_api::chain::TransferList, ClientError> {
        let mut url = self.url(&["v1", "chain", "accounts", account, "transfers"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(a) = after {
                q.append_pair("after", a);
            }
            if let Some(l) = limit {
                q.append_pair("limit", &l.to_string());
            }
        }
        self.json(self.request(Method::GET, url)).await
    }

    // ---- plumbing ----

    /// The base URL with `segments` appended, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends; a non-2xx answer becomes [`ClientError::Api`].
    async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .execute(self.build(req)?)
            .await
            .map_err(|e| ClientError::transport(&self.base_text, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(error::parse_retry_after);
        // A body cut short still leaves the status to go on.
        let body = resp.bytes().await.unwrap_or_default();
        Err(ClientError::Api {
            status,
            error: parse_api_error(status, &body),
            retry_after,
        })
    }

    async fn body(&self, resp: reqwest::Response) -> Result<Bytes, ClientError> {
        resp.bytes()
            .await
            .map_err(|e| ClientError::transport(&self.base_text, e))
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let path = resp.url().path().to_string();
        let bytes = self.body(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: self.base_text.clone(),
            reason: format!("{path}: {e}"),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        let url = self.url(segments);
        self.json(self.request(Method::GET, url)).await
    }
}

fn is_guest_fault(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Trap
            | ErrorCode::OutOfFuel
            | ErrorCode::MemoryLimit
            | ErrorCode::OutputTooLarge
            | ErrorCode::Timeout
    )
}

/// The stream of [`Client::events`]: each item is one [`JobEvent`], or an
/// error. A [`ClientError::Decode`] item (an event this client can't read)
/// can be skipped; a [`ClientError::Transport`] one ends the stream.
pub struct JobEvents {
    inner: Pin<Box<dyn Stream<Item = Result<JobEvent, ClientError>> + Send>>,
}

impl std::fmt::Debug for JobEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEvents").finish_non_exhaustive()
    }
}

impl Stream for JobEvents {
    type Item = Result<JobEvent, ClientError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct EventState {
    body: ByteStream,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    after: Option<u64>,
    done: bool,
    url: String,
}

async fn next_event(mut st: EventState) -> Option<(Result<JobEvent, ClientError>, EventState)> {
    loop {
        if st.done {
            return None;
        }
        if let Some(sse) = st.pending.pop_front() {
            let event = match serde_json::from_str::<JobEvent>(&sse.data) {
                Ok(ev) => ev,
                Err(e) => {
                    let reason = format!(
                        "event {:?} (id {:?}): {e}",
                        sse.event.as_deref().unwrap_or("message"),
                        sse.id.as_deref().unwrap_or("")
                    );
                    let url = st.url.clone();
                    return Some((Err(ClientError::Decode { url, reason }), st));
                }
            };
            if st.after.is_some_and(|after| event.seq <= after) {
                continue;
            }
            // Stop at the final event, even if the server keeps the
            // connection open.
            st.done = event.kind.is_final();
            return Some((Ok(event), st));
        }
        match st.body.next().await {
            Some(Ok(chunk)) => {
                let events = st.parser.feed(&chunk);
                st.pending.extend(events);
            }
            Some(Err(e)) => {
                st.done = true;
                let err = ClientError::transport(&st.url, e);
                return Some((Err(err), st));
            }
            None => return None,
        }
    }
}

/// The header naming the developer of a signed upload (`0x` address).
pub const DEVELOPER_HEADER: &str = "x-brume-developer";
/// The header carrying the developer's signature over the module digest
/// (`0x` + 130 hex digits).
pub const MODULE_SIGNATURE_HEADER: &str = "x-brume-module-signature";

/// A developer's signature over a binary module: EIP-191 over
/// [`module_message`](brume_api::wire::module_message) of its sha256.
pub fn sign_module(
    module: &[u8],
    developer: &brume_identity::Identity,
) -> Result<brume_api::wire::ModuleSignature, ClientError> {
    use sha2::{Digest as _, Sha256};
    if !module.starts_with(b"\0asm") {
        return Err(ClientError::Invalid(
            "a signed module must be a binary .wasm (its sha256 is what is signed)".into(),
        ));
    }
    let digest = hex_lower(&Sha256::digest(module));
    let message = brume_api::wire::module_message(&digest);
    let signature = developer
        .sign_message(message.as_bytes())
        .map_err(|e| ClientError::Invalid(format!("sign the module: {e}")))?;
    Ok(brume_api::wire::ModuleSignature {
        developer: developer.address().to_string(),
        signature: Bytes::copy_from_slice(&signature),
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_headers_parse_leniently() {
        let mut h = http::HeaderMap::new();
        let id = WorkId::new();
        let put = |h: &mut http::HeaderMap, k: &'static str, v: &str| {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        put(&mut h, "x-brume-work-id", &id.to_string());
        put(&mut h, "x-brume-provider", "0xabc");
        put(&mut h, "x-brume-fuel", " 12345 ");
        put(&mut h, "x-brume-attempts", "2");
        put(&mut h, "x-brume-exit-code", "-3");
        let m = WorkMeta::from_headers(&h);
        assert_eq!(
            m,
            WorkMeta {
                work_id: Some(id),
                provider: Some("0xabc".into()),
                fuel: Some(12345),
                attempts: Some(2),
                exit_code: Some(-3),
            }
        );
        put(&mut h, "x-brume-fuel", "lots");
        put(&mut h, "x-brume-work-id", "not-a-uuid");
        put(&mut h, "x-brume-provider", "");
        let m = WorkMeta::from_headers(&h);
        assert_eq!((m.fuel, m.work_id, m.provider), (None, None, None));
        assert_eq!(
            WorkMeta::from_headers(&http::HeaderMap::new()),
            WorkMeta::default()
        );
    }

    #[test]
    fn base_urls_are_checked_and_joined() {
        let c = Client::new("127.0.0.1:7700", None).map(|c| c.url(&["v1", "jobs"]).to_string());
        assert_eq!(c.ok().as_deref(), Some("http://127.0.0.1:7700/v1/jobs"));
        let c = Client::new("http://h:1/prefix/", None)
            .map(|c| c.url(&["v1", "services", "a b/c"]).to_string());
        assert_eq!(
            c.ok().as_deref(),
            Some("http://h:1/prefix/v1/services/a%20b%2Fc")
        );
        let c = Client::new("https://h:7700", None).map(|c| c.url(&["v1"]).to_string());
        assert_eq!(c.ok().as_deref(), Some("https://h:7700/v1"));
        assert!(Client::new("ftp://h", None).is_err());
        assert!(Client::new("http://", None).is_err());
        assert!(Client::new("http://h", Some("bad\nkey".into())).is_err());
    }
}
