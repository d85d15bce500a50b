//! The web console at `/console`: server-rendered pages ([`pages`]), a
//! small script and a stylesheet shipped in the binary, and live data over
//! server-sent events. A visitor signs in with a password account
//! ([`crate::accounts`]) or an API key; the session cookie is HttpOnly and
//! SameSite=Strict, and every form carries the session's CSRF token. The
//! console acts through the same handlers as the API, as the session's
//! account with its scopes. Its pages are HTML, not API: they are not in
//! the OpenAPI document.

mod pages;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use brume_api::ServiceKind;
use brume_api::rest::{JobSpec, Output, Scope};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::auth::Auth;
use super::{Fail, Sh};
use crate::Shared;
use crate::accounts::{Session, SignIn};

const COOKIE: &str = "brume_session";
/// The pre-session CSRF token of the sign-in and sign-up forms (a
/// double-submit cookie).
const FORM_COOKIE: &str = "brume_form";

pub(super) fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/console", get(overview))
        .route("/console/", get(overview))
        .route("/console/live", get(live))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/signup", get(signup_page).post(signup))
        .route("/console/jobs", get(jobs).post(submit))
        .route("/console/jobs/{id}", get(job))
        .route("/console/jobs/{id}/events", get(job_events))
        .route("/console/jobs/{id}/result", get(job_result))
        .route("/console/services", get(services).post(publish))
        .route("/console/ledger", get(ledger))
        .route("/console/earnings", get(earnings))
        .route("/console/providers", get(providers))
        .route("/console/operator", get(operator))
        .route("/console/operator/standing", post(standing))
        .route("/console/operator/settle", post(settle))
}

/// Who is looking: the session of the cookie, if any.
pub(super) struct Visitor {
    token: Option<String>,
    session: Option<Session>,
    form_token: Option<String>,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Arc<Shared>> for Visitor {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Visitor, Infallible> {
        let token = cookie(&parts.headers, COOKIE);
        let session = match &token {
            Some(t) => shared.accounts.session(t).await.ok().flatten(),
            None => None,
        };
        Ok(Visitor {
            token,
            session,
            form_token: cookie(&parts.headers, FORM_COOKIE),
        })
    }
}

impl Visitor {
    /// The session, or a redirect to the sign-in page.
    fn signed_in(&self) -> Result<&Session, Response> {
        self.session
            .as_ref()
            .ok_or_else(|| Redirect::to("/console/login").into_response())
    }

    /// The session, if `csrf` is its token; else 403.
    fn checked(&self, csrf: &str) -> Result<&Session, Response> {
        let s = self.signed_in()?;
        if csrf.is_empty() || csrf != s.csrf {
            return Err((
                StatusCode::FORBIDDEN,
                Html(pages::layout(
                    "",
                    "Refused",
                    Some(s),
                    "",
                    "<p class=\"error\">This form is stale or forged (its CSRF token doesn't match your session). Reload the page and try again.</p>",
                )),
            )
                .into_response());
        }
        Ok(s)
    }
}

fn auth(s: &Session) -> Auth {
    Auth {
        name: s.account.clone(),
        scopes: s.scopes.clone(),
        anonymous: false,
    }
}

fn page(page: &str, title: &str, who: Option<&Session>, data: &str, body: &str) -> Response {
    let mut resp = Html(pages::layout(page, title, who, data, body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A console cookie: HttpOnly, SameSite=Strict, and Secure when the
/// broker serves TLS.
fn set_cookie(shared: &Shared, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if shared.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("hex is a valid header value")
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console.js"),
    )
}

async fn overview(State(shared): Sh, v: Visitor) -> Response {
    let body = pages::overview(&shared.status());
    page("overview", "Overview", v.session.as_ref(), "", &body)
}

/// The broker's status every second, until the broker stops.
async fn live(State(shared): Sh) -> impl IntoResponse {
    let sh = shared.clone();
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
    let stream = ticks
        .map(move |_| {
            Event::default()
                .event("status")
                .json_data(sh.status())
                .map_err(|e| {
                    tracing::error!("console status: {e}");
                    e
                })
        })
        .filter_map(|e| async move { e.ok().map(Ok::<_, Infallible>) })
        .take_until(shared.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    csrf: String,
}

/// A page with a fresh double-submit token for its form.
fn form_page(
    shared: &Shared,
    name: &str,
    title: &str,
    status: StatusCode,
    body: impl FnOnce(&str) -> String,
) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let mut resp = page(name, title, None, "", &body(&token));
    *resp.status_mut() = status;
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(shared, FORM_COOKIE, &token, 3600),
    );
    resp
}

async fn login_page(State(shared): Sh) -> Response {
    let signup = shared.config.console_signup;
    form_page(&shared, "login", "Sign in", StatusCode::OK, |t| {
        pages::login(None, t, signup)
    })
}

fn login_error(shared: &Shared, status: StatusCode, message: &str) -> Response {
    let signup = shared.config.console_signup;
    form_page(shared, "login", "Sign in", status, |t| {
        pages::login(Some(message), t, signup)
    })
}

fn signed_in_as(shared: &Shared, token: &str) -> Response {
    let mut resp = Redirect::to("/console").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            shared,
            COOKIE,
            token,
            crate::accounts::SESSION_TTL.as_secs(),
        ),
    );
    resp
}

async fn login(
    State(shared): Sh,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    v: Visitor,
    Form(f): Form<LoginForm>,
) -> Response {
    if v.form_token.as_deref().is_none_or(|t| t != f.csrf) {
        return login_error(
            &shared,
            StatusCode::FORBIDDEN,
            "The form expired: sign in again.",
        );
    }
    if !f.api_key.is_empty() {
        return match super::auth::check_key(&shared, f.api_key.trim()).await {
            Ok(a) => {
                let label = format!("API key of {}", a.name);
                match shared.accounts.open_session(a.name, label, a.scopes).await {
                    Ok((token, _)) => signed_in_as(&shared, &token),
                    Err(e) => Fail::from(e).into_response(),
                }
            }
            Err(_) => login_error(
                &shared,
                StatusCode::UNAUTHORIZED,
                "That API key is not valid.",
            ),
        };
    }
    match shared
        .accounts
        .sign_in(&f.email, &f.password, &peer.ip().to_string())
        .await
    {
        Ok(SignIn::Ok(token, _)) => signed_in_as(&shared, &token),
        Ok(SignIn::Refused) => login_error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "Wrong email or password.",
        ),
        Ok(SignIn::Limited) => login_error(
            &shared,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts: wait a quarter of an hour.",
        ),
        Err(e) => Fail::from(e).into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(shared): Sh, v: Visitor, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = v.checked(&f.csrf) {
        return r;
    }
    if let Some(t) = &v.token
        && let Err(e) = shared.accounts.end(t).await
    {
        return Fail::from(e).into_response();
    }
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&shared, COOKIE, "", 0));
    resp
}

#[derive(Deserialize)]
struct SignupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn signup_closed() -> Response {
    page(
        "signup",
        "Sign up",
        None,
        "",
        "<p>This broker's operator makes the accounts (<code>brume broker accounts create</code>).</p>",
    )
}

async fn signup_page(State(shared): Sh) -> Response {
    if !shared.config.console_signup {
        return signup_closed();
    }
    form_page(&shared, "signup", "Sign up", StatusCode::OK, |t| {
        pages::signup(None, t)
    })
}

async fn signup(State(shared): Sh, v: Visitor, Form(f): Form<SignupForm>) -> Response {
    if !shared.config.console_signup {
        return signup_closed();
    }
    if v.form_token.as_deref().is_none_or(|t| t != f.csrf) {
        return form_page(&shared, "signup", "Sign up", StatusCode::FORBIDDEN, |t| {
            pages::signup(Some("The form expired: try again."), t)
        });
    }
    match shared
        .accounts
        .sign_up(&f.email, &f.address, &f.password)
        .await
    {
        Ok(()) => Redirect::to("/console/login").into_response(),
        Err(e) => form_page(&shared, "signup", "Sign up", StatusCode::BAD_REQUEST, |t| {
            pages::signup(Some(&e.to_string()), t)
        }),
    }
}

mod work;
use work::{
    earnings, job, job_events, job_result, jobs, ledger, operator, providers, publish, services,
    settle, standing, submit,
};

/// The text of an API error, for a page.
async fn message_of(resp: Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    serde_json::from_slice::<brume_api::ApiError>(&bytes)
        .map(|e| format!("{} ({})", e.message, e.code))
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
}

/// A job spec from the console's form.
fn spec_of(service: &str, args: &str, stdin: &str) -> JobSpec {
    JobSpec {
        service: Some(service.trim().to_string()),
        args: args.split_whitespace().map(str::to_string).collect(),
        stdin: (!stdin.is_empty()).then(|| Output(Bytes::copy_from_slice(stdin.as_bytes()))),
        ..JobSpec::default()
    }
}

/// `command` or `http`, as the publish form sends it.
fn kind_of(s: &str) -> ServiceKind {
    match s {
        "http" => ServiceKind::Http,
        _ => ServiceKind::Command,
    }
}

/// Whether the session may use the operator's pages.
fn is_admin(s: &Session) -> bool {
    s.scopes.contains(&Scope::Admin)
}
