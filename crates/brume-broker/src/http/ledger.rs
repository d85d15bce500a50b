//! `/v1/ledger/rows`: the ledger, public columns for all, private ones for
//! the row's owner.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use brume_api::ErrorCode;
use serde::Deserialize;

use super::auth::MaybeAuth;
use super::{Fail, Res, Sh};

impl From<brume_ledger::store::LedgerError> for Fail {
    fn from(e: brume_ledger::store::LedgerError) -> Fail {
        use brume_ledger::store::LedgerError as E;
        match e {
            E::InvalidCursor => Fail::new(ErrorCode::InvalidRequest, "cursor: not a valid cursor"),
            E::NotFound(id) => Fail::new(ErrorCode::NotFound, format!("no ledger row {id}")),
            other => {
                tracing::error!(code = other.code(), "ledger: {other}");
                Fail::new(ErrorCode::Internal, format!("ledger: {other}"))
            }
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RowsQuery {
    /// Rows created at or after this time (ms since the Unix epoch).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 9007199254740991_i64)]
    from_ms: Option<u64>,
    /// Rows created before this time (ms since the Unix epoch).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 9007199254740991_i64)]
    to_ms: Option<u64>,
    /// Only rows this account is a party to.
    account: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,15}:[!-~]{1,128}$")]
    cursor: Option<String>,
    /// At most this many rows (default 100, at most 1000).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
}

/// `GET /v1/ledger/rows`. The row JSON is brume-ledger's (third parties
/// re-verify it), so this wrapper lives here rather than in brume-api.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct RowsPage {
    rows: Vec<brume_ledger::row::LedgerRow>,
    /// Rows the store could not decode (an auditor must see them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    corrupt: Vec<brume_ledger::store::CorruptRow>,
    next_cursor: Option<String>,
}

/// `MS:WORK_ID`, as `next_cursor` writes it (and `RowsQuery`'s pattern).
fn cursor_ok(c: &str) -> bool {
    c.split_once(':').is_some_and(|(ms, id)| {
        (1..=15).contains(&ms.len())
            && ms.bytes().all(|b| b.is_ascii_digit())
            && (1..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_graphic())
    })
}

/// A row as `reader` may see it: private columns only for its requester.
pub(super) fn visible(
    row: brume_ledger::row::LedgerRow,
    reader: Option<&str>,
) -> brume_ledger::row::LedgerRow {
    if reader.is_some_and(|r| r == row.data.requester) {
        row
    } else {
        brume_ledger::row::LedgerRow {
            private: None,
            ..row
        }
    }
}

#[utoipa::path(get, path = "/v1/ledger/rows", tag = "ledger", params(RowsQuery),
    responses((status = 200, description = "A page of rows, oldest first: private columns only on the caller's own", body = RowsPage)),
    security((), ("api_key" = [])))]
pub(super) async fn ledger_rows(
    State(shared): Sh,
    MaybeAuth(auth): MaybeAuth,
    query: Result<Query<RowsQuery>, QueryRejection>,
) -> Res<axum::Json<RowsPage>> {
    use brume_ledger::store::{LedgerStore as _, ListQuery, RowFilter};
    let Query(q) = query.map_err(|e| {
        Fail::new(
            ErrorCode::InvalidRequest,
            format!("query: {}", e.body_text()),
        )
    })?;
    for (name, ms) in [("from_ms", q.from_ms), ("to_ms", q.to_ms)] {
        if ms.is_some_and(|ms| ms > super::chain::MAX_SAFE) {
            return Err(Fail::new(
                ErrorCode::InvalidRequest,
                format!("{name}: at most 2^53-1"),
            ));
        }
    }
    if let Some(c) = &q.cursor
        && !cursor_ok(c)
    {
        return Err(Fail::new(
            ErrorCode::InvalidRequest,
            "cursor: not a cursor (the previous page's next_cursor)",
        ));
    }
    let reader = auth.map(|a| a.name);
    let page = shared
        .ledger
        .store()
        .list(ListQuery {
            filter: RowFilter {
                from_ms: q.from_ms,
                to_ms: q.to_ms,
                account: q.account.filter(|a| !a.is_empty()),
            },
            cursor: q.cursor,
            limit: q.limit.map(|l| l as usize),
            private: reader.is_some(),
        })
        .await?;
    Ok(axum::Json(RowsPage {
        rows: page
            .rows
            .into_iter()
            .map(|r| visible(r, reader.as_deref()))
            .collect(),
        corrupt: page.corrupt,
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/ledger/rows/{work_id}", tag = "ledger", params(("work_id" = String, Path, description = "The row's work id")),
    responses((status = 200, description = "The row: private columns only for its requester", body = brume_ledger::row::LedgerRow)),
    security((), ("api_key" = [])))]
pub(super) async fn ledger_row(
    State(shared): Sh,
    MaybeAuth(auth): MaybeAuth,
    Path(work_id): Path<String>,
) -> Res<axum::Json<brume_ledger::row::LedgerRow>> {
    use brume_ledger::store::LedgerStore as _;
    let reader = auth.map(|a| a.name);
    let row = shared
        .ledger
        .store()
        .get(&work_id, reader.is_some())
        .await?
        .ok_or_else(|| Fail::new(ErrorCode::NotFound, format!("no ledger row {work_id}")))?;
    Ok(axum::Json(visible(row, reader.as_deref())))
}

/// `GET /v1/ledger/rows/{work_id}/status`: how each payer and beneficiary
/// of the row was settled (the ledger's mutable status column, written by
/// settlement). An entity with no entry is `pending`.
#[utoipa::path(get, path = "/v1/ledger/rows/{work_id}/status", tag = "ledger", params(("work_id" = String, Path, description = "The row's work id")),
    responses((status = 200, description = "Each party's settlement status for the row", body = Vec<brume_ledger::store::EntityStatus>)))]
pub(super) async fn ledger_row_status(
    State(shared): Sh,
    Path(work_id): Path<String>,
) -> Res<axum::Json<Vec<brume_ledger::store::EntityStatus>>> {
    use brume_ledger::store::LedgerStore as _;
    let store = shared.ledger.store();
    if store.get(&work_id, false).await?.is_none() {
        return Err(Fail::new(
            ErrorCode::NotFound,
            format!("no ledger row {work_id}"),
        ));
    }
    Ok(axum::Json(store.statuses(&work_id).await?))
}
