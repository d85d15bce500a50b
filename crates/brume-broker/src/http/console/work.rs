//! The console's pages for work and money: jobs, services, the ledger,
//! earnings, providers and the operator's page. Each acts through the
//! API's own handler, as the session's account.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::{Visitor, auth, is_admin, kind_of, message_of, page, pages, spec_of};
use crate::http::Sh;

#[derive(Deserialize)]
pub(super) struct JobForm {
    #[serde(default)]
    service: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    stdin: String,
    #[serde(default)]
    csrf: String,
}

async fn jobs_page(shared: &crate::Shared, v: &Visitor, error: Option<&str>) -> Response {
    let s = match v.signed_in() {
        Ok(s) => s,
        Err(r) => return r,
    };
    let account = (!is_admin(s)).then(|| s.account.clone());
    match shared.jobs.list(None, account, 100).await {
        Ok(list) => page("jobs", "Jobs", Some(s), "", &pages::jobs(&list, s, error)),
        Err(e) => crate::http::Fail::from(e).into_response(),
    }
}

pub(super) async fn jobs(State(shared): Sh, v: Visitor) -> Response {
    jobs_page(&shared, &v, None).await
}

/// Submits the form's job through `POST /v1/jobs`'s handler; on to the
/// job's page.
pub(super) async fn submit(State(shared): Sh, v: Visitor, Form(f): Form<JobForm>) -> Response {
    let s = match v.checked(&f.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let spec = spec_of(&f.service, &f.args, &f.stdin);
    // A spec always serializes; an empty body would be refused as 400.
    let body = Ok(Bytes::from(serde_json::to_vec(&spec).unwrap_or_default()));
    let resp =
        match crate::http::jobs::submit_job(State(shared.clone()), auth(s), HeaderMap::new(), body)
            .await
        {
            Ok(r) => r,
            Err(fail) => fail.into_response(),
        };
    if resp.status() != StatusCode::ACCEPTED {
        let message = message_of(resp).await;
        return jobs_page(&shared, &v, Some(&message)).await;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    match serde_json::from_slice::<brume_api::rest::JobInfo>(&bytes) {
        Ok(info) => Redirect::to(&format!("/console/jobs/{}", info.id)).into_response(),
        Err(_) => {
            jobs_page(
                &shared,
                &v,
                Some("the job was accepted, but its id was not returned"),
            )
            .await
        }
    }
}

pub(super) async fn job(State(shared): Sh, v: Visitor, Path(id): Path<String>) -> Response {
    let s = match v.signed_in() {
        Ok(s) => s,
        Err(r) => return r,
    };
    match crate::http::jobs::get_job(State(shared.clone()), auth(s), Path(id)).await {
        Ok(axum::Json(info)) => {
            let fuel = shared
                .jobs
                .entry(info.id)
                .map_or(0, |e| e.stored.limits.fuel);
            let data = format!(" data-job=\"{}\"", info.id);
            let title = format!("Job {}", info.id);
            page("job", &title, Some(s), &data, &pages::job(&info, fuel))
        }
        Err(fail) => fail.into_response(),
    }
}

/// The job's events (SSE), as `GET /v1/jobs/{id}/events` streams them.
pub(super) async fn job_events(
    State(shared): Sh,
    v: Visitor,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(s) = &v.session else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match crate::http::jobs::job_events(State(shared), auth(s), Path(id), headers).await {
        Ok(sse) => sse.into_response(),
        Err(fail) => fail.into_response(),
    }
}

pub(super) async fn job_result(State(shared): Sh, v: Visitor, Path(id): Path<String>) -> Response {
    let Some(s) = &v.session else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    crate::http::jobs::job_result(State(shared), auth(s), Path(id))
        .await
        .into_response()
}

pub(super) async fn services(State(shared): Sh, v: Visitor) -> Response {
    let s = match v.signed_in() {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut list: Vec<_> = shared
        .registry
        .list(Some(&s.account))
        .into_iter()
        .flat_map(|latest| {
            let reference = format!("{}~{}", latest.owner, latest.name);
            shared
                .registry
                .versions(&reference, &s.account)
                .unwrap_or_else(|_| vec![latest])
        })
        .collect();
    list.sort_by(|a, b| (&a.name, b.version).cmp(&(&b.name, a.version)));
    page("services", "Services", Some(s), "", &pages::services(&list))
}

#[derive(Deserialize)]
pub(super) struct PublishForm {
    name: String,
    #[serde(default)]
    kind: String,
}

/// `POST /console/services?name=&kind=` with the module as the body and
/// the CSRF token in `x-csrf-token`: `POST /v1/services`'s handler.
pub(super) async fn publish(
    State(shared): Sh,
    v: Visitor,
    Query(q): Query<PublishForm>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let csrf = headers
        .get("x-csrf-token")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let s = match v.checked(csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let query = crate::http::services::PublishQuery::new(q.name, kind_of(&q.kind));
    crate::http::services::publish(
        State(shared),
        auth(s),
        Ok(Query(query)),
        HeaderMap::new(),
        body,
    )
    .await
    .into_response()
}

/// The ledger's first rows (every column for the signed-in account's own
/// rows; public columns for the rest).
pub(super) async fn ledger(State(shared): Sh, v: Visitor) -> Response {
    use brume_ledger::store::{LedgerStore as _, ListQuery, RowFilter};
    let reader = v.session.as_ref().map(|s| s.account.clone());
    let page_of = shared
        .ledger
        .store()
        .list(ListQuery {
            filter: RowFilter::default(),
            cursor: None,
            limit: Some(200),
            private: reader.is_some(),
        })
        .await;
    match page_of {
        Ok(p) => {
            // Audited as stored (private columns and all), then shown as
            // the reader may see them.
            let audit = brume_ledger::audit::audit(&p.rows);
            let rows: Vec<_> = p
                .rows
                .into_iter()
                .rev()
                .map(|r| crate::http::ledger::visible(r, reader.as_deref()))
                .collect();
            let body = pages::ledger(&rows, &audit, p.corrupt.len(), reader.is_some());
            page("ledger", "Ledger", v.session.as_ref(), "", &body)
        }
        Err(e) => crate::http::Fail::from(e).into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct EarningsQuery {
    account: Option<String>,
}

/// What an account earned (per day, per service) and spent (per
/// provider) over the last 30 days, from the rows it is paid or pays in:
/// the signed-in account's, or `?account=` (the ledger's public columns
/// say as much). A view reads at most 20,000 rows.
pub(super) async fn earnings(
    State(shared): Sh,
    v: Visitor,
    Query(q): Query<EarningsQuery>,
) -> Response {
    use brume_ledger::store::{LedgerStore as _, ListQuery, RowFilter};
    let account = match (q.account.filter(|a| !a.is_empty()), &v.session) {
        (Some(a), _) => a,
        (None, Some(s)) => s.account.clone(),
        (None, None) => return Redirect::to("/console/login").into_response(),
    };
    let mut rows = Vec::new();
    let mut cursor = None;
    // At most 20 pages (20,000 rows) per view.
    for _ in 0..20 {
        let page_of = shared
            .ledger
            .store()
            .list(ListQuery {
                filter: RowFilter {
                    from_ms: Some(crate::now_ms().saturating_sub(30 * 86_400_000)),
                    ..RowFilter::default()
                },
                cursor: cursor.take(),
                limit: Some(brume_ledger::store::MAX_PAGE),
                private: false,
            })
            .await;
        match page_of {
            Ok(p) => {
                rows.extend(p.rows);
                match p.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            Err(e) => return crate::http::Fail::from(e).into_response(),
        }
    }
    let mut e = pages::Earnings::of(&account, &rows);
    if let Err(fail) = settlements(&shared, &account, &rows, &mut e).await {
        return fail.into_response();
    }
    let title = format!("Earnings and spending of {account}, last 30 days");
    page(
        "earnings",
        &title,
        v.session.as_ref(),
        "",
        &pages::earnings(&e),
    )
}

/// How the account's part of its latest rows (at most 200) settled: paid
/// out or collected, or still pending, and the transactions that did it.
async fn settlements(
    shared: &crate::Shared,
    account: &str,
    rows: &[brume_ledger::row::LedgerRow],
    e: &mut pages::Earnings,
) -> Result<(), crate::http::Fail> {
    use brume_ledger::store::{LedgerStore as _, PaymentStatus};
    let mine = |r: &&brume_ledger::row::LedgerRow| {
        let d = &r.data;
        d.payouts
            .iter()
            .any(|p| p.beneficiary.eq_ignore_ascii_case(account))
            || d.payers
                .iter()
                .any(|p| p.account.eq_ignore_ascii_case(account))
    };
    let latest: Vec<_> = rows.iter().rev().filter(mine).take(200).collect();
    for r in latest {
        let d = &r.data;
        let statuses = shared.ledger.store().statuses(&d.work_id).await?;
        let status = statuses
            .iter()
            .find(|s| s.entity.eq_ignore_ascii_case(account));
        if let Some(tx) = status.and_then(|s| s.settling_tx.clone())
            && !e.settling_txs.contains(&tx)
        {
            e.settling_txs.push(tx);
        }
        let status = status.map_or(PaymentStatus::Pending, |s| s.status);
        for p in d
            .payouts
            .iter()
            .filter(|p| p.beneficiary.eq_ignore_ascii_case(account))
        {
            match status {
                PaymentStatus::Paid => e.paid_out += p.amount,
                _ => e.awaiting_payout += p.amount,
            }
        }
        for p in d
            .payers
            .iter()
            .filter(|p| p.account.eq_ignore_ascii_case(account))
        {
            match status {
                PaymentStatus::Collected => e.collected += p.amount,
                _ => e.awaiting_collection += p.amount,
            }
        }
        e.settlement_rows += 1;
    }
    Ok(())
}

pub(super) async fn providers(State(shared): Sh, v: Visitor) -> Response {
    let list = crate::http::status::connected(&shared);
    page(
        "providers",
        "Providers",
        v.session.as_ref(),
        "",
        &pages::providers(&list),
    )
}

async fn operator_page(
    shared: &std::sync::Arc<crate::Shared>,
    v: &Visitor,
    message: Option<&str>,
) -> Response {
    let s = match v.signed_in() {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !is_admin(s) {
        let mut resp = page("operator", "Operator", Some(s), "", &pages::forbidden());
        *resp.status_mut() = StatusCode::FORBIDDEN;
        return resp;
    }
    let list = crate::http::status::connected(shared);
    let health = serde_json::to_string_pretty(&shared.settlement.health()).unwrap_or_default();
    // The operator's word and the bans (a lost dispute or a proof of
    // cheat), read as `brume broker providers list` reads them.
    let records = shared.standings.reviewed().await;
    let (standings, bans) = match records {
        Ok(r) => r,
        Err(e) => {
            return crate::http::Fail::from(e).into_response();
        }
    };
    let operator = pages::Operator {
        providers: &list,
        standings: &standings,
        bans: &bans,
        health: &health,
        message,
    };
    page(
        "operator",
        "Operator",
        Some(s),
        "",
        &pages::operator(&operator, s),
    )
}

pub(super) async fn operator(State(shared): Sh, v: Visitor) -> Response {
    operator_page(&shared, &v, None).await
}

#[derive(Deserialize)]
pub(super) struct StandingForm {
    address: String,
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
}

/// Why an operator's form is refused (a stale token, or no `admin`), if
/// it is.
async fn operator_refusal(
    shared: &std::sync::Arc<crate::Shared>,
    v: &Visitor,
    csrf: &str,
) -> Option<Response> {
    match v.checked(csrf) {
        Err(r) => Some(r),
        Ok(s) if !is_admin(s) => Some(operator_page(shared, v, None).await),
        Ok(_) => None,
    }
}

/// Approve, suspend or ban a provider, as `brume broker providers` does
/// (the broker applies it within a second).
pub(super) async fn standing(
    State(shared): Sh,
    v: Visitor,
    Form(f): Form<StandingForm>,
) -> Response {
    use crate::store::{Standing, providers as p};
    if let Some(refused) = operator_refusal(&shared, &v, &f.csrf).await {
        return refused;
    }
    let status = match f.action.as_str() {
        "approve" => Standing::Approved,
        "suspend" => Standing::Suspended,
        "ban" => Standing::Banned,
        _ => return (StatusCode::BAD_REQUEST, "action: approve, suspend or ban").into_response(),
    };
    let set = shared.standings.set(&f.address, status, &f.reason).await;
    let message = match set {
        Ok(t) => format!("{} is now {}", t.address, t.status.as_str()),
        Err(e @ p::TrustError::Banned { .. }) => format!("refused: {e}"),
        Err(e) => format!("failed: {e}"),
    };
    operator_page(&shared, &v, Some(&message)).await
}

pub(super) async fn settle(
    State(shared): Sh,
    v: Visitor,
    Form(f): Form<super::CsrfForm>,
) -> Response {
    if let Some(refused) = operator_refusal(&shared, &v, &f.csrf).await {
        return refused;
    }
    let message = match crate::settlement::run_once(&shared).await {
        Ok(r) => format!(
            "settlement run {}: {} rows, {} settled",
            r.run, r.rows, r.rows_settled
        ),
        Err(e) => format!("settlement failed: {e}"),
    };
    operator_page(&shared, &v, Some(&message)).await
}
