//! The OpenAPI 3.1 document: generated from the handlers' `#[utoipa::path]`
//! and the wire types' `ToSchema`, never written by hand. This file adds
//! what the attributes don't say: the security schemes, every operation's
//! error codes ([`errors`]), and the operations no fuzzer can drive
//! ([`UNFUZZED`]). `GET /openapi.json` serves it; `docs/openapi.json` is a
//! copy that a test keeps equal.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use brume_api::{ApiError, ErrorCode};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, RefOr};

/// Operations described but not fuzzed (operation id, why). Schemathesis
/// runs with `--exclude-operation-id` for each.
pub const UNFUZZED: &[(&str, &str)] = &[
    (
        "call_http_root",
        "any bytes pass through to the component: `/fn/` has no schema to check against",
    ),
    (
        "call_http",
        "any bytes pass through to the component: `/fn/` has no schema to check against",
    ),
    (
        "connect",
        "the provider WebSocket: MessagePack frames after an upgrade",
    ),
    (
        "job_events",
        "a server-sent event stream that stays open while the job runs",
    ),
    ("invoke_lambda", "AWS Lambda API: requests are SigV4-signed"),
    (
        "list_functions",
        "AWS Lambda API: requests are SigV4-signed",
    ),
    (
        "create_function",
        "AWS Lambda API: requests are SigV4-signed",
    ),
    ("get_function", "AWS Lambda API: requests are SigV4-signed"),
    (
        "delete_function",
        "AWS Lambda API: requests are SigV4-signed",
    ),
    ("update_code", "AWS Lambda API: requests are SigV4-signed"),
];

/// Codes any operation may answer with: a signed request's failures
/// (checked before routing) and the broker's own.
const ANY: &[ErrorCode] = &[
    ErrorCode::BadSignature,
    ErrorCode::StaleSignature,
    ErrorCode::ReplayedSignature,
    ErrorCode::PayloadTooLarge,
    ErrorCode::Internal,
];

/// What an API key's check may answer.
const KEYED: &[ErrorCode] = &[ErrorCode::Unauthorized, ErrorCode::Forbidden];

/// What running work may answer (a call, or a job's admission).
const RUN: &[ErrorCode] = &[
    ErrorCode::InvalidRequest,
    ErrorCode::UnknownService,
    ErrorCode::NotOwner,
    ErrorCode::Retired,
    ErrorCode::WrongKind,
    ErrorCode::InputTooLarge,
    ErrorCode::Trap,
    ErrorCode::OutOfFuel,
    ErrorCode::MemoryLimit,
    ErrorCode::OutputTooLarge,
    ErrorCode::ImportNotAllowed,
    ErrorCode::Timeout,
    ErrorCode::Overloaded,
    ErrorCode::ProviderUnavailable,
    ErrorCode::QueueTimeout,
    ErrorCode::NoBrokerAvailable,
    ErrorCode::PeerUnreachable,
    ErrorCode::Unverified,
    ErrorCode::Cancelled,
    ErrorCode::Conflict,
    ErrorCode::OverPriceCap,
    ErrorCode::InsufficientAllowance,
    ErrorCode::TrustLimit,
    ErrorCode::TooManySessions,
];

/// The error codes of one operation, beyond [`ANY`] (and [`KEYED`] for an
/// operation that takes an API key). `None`: not a brume operation.
fn errors(operation_id: &str) -> Option<&'static [ErrorCode]> {
    use ErrorCode as E;
    Some(match operation_id {
        "publish" => &[
            E::InvalidRequest,
            E::InvalidModule,
            E::NotOwner,
            E::UnknownService,
            E::Retired,
        ],
        "list_services" | "list_jobs" | "directory" | "ledger_rows" | "offers" => {
            &[E::InvalidRequest]
        }
        "get_service" | "service_versions" => &[E::InvalidRequest, E::UnknownService, E::NotOwner],
        "retire_service" => &[E::InvalidRequest, E::UnknownService, E::NotOwner],
        "move_service" => &[
            E::InvalidRequest,
            E::UnknownService,
            E::NotOwner,
            E::AliasTaken,
        ],
        "register_alias" => &[E::InvalidRequest, E::AliasTaken],
        "get_alias" | "get_blob" | "receipt" | "get_job" | "job_events" | "hub_proof" | "probe" => {
            &[E::InvalidRequest, E::NotFound]
        }
        "invoke" | "call_http_root" | "call_http" => RUN,
        "submit_job" => &[
            E::InvalidRequest,
            E::UnknownService,
            E::NotFound,
            E::Conflict,
            E::NotOwner,
            E::Retired,
            E::WrongKind,
            E::Overloaded,
            E::NoBrokerAvailable,
            E::PeerUnreachable,
            E::OverPriceCap,
            E::InsufficientAllowance,
            E::TrustLimit,
            E::TooManySessions,
        ],
        "upload_data" => &[E::InvalidRequest],
        "create_lease" => &[
            E::InvalidRequest,
            E::UnknownService,
            E::NotOwner,
            E::Retired,
            E::WrongKind,
            E::Conflict,
            E::InsufficientAllowance,
            E::TrustLimit,
        ],
        "get_lease" | "lease_events" => &[E::NotFound],
        "top_up_lease" => &[
            E::InvalidRequest,
            E::NotFound,
            E::Conflict,
            E::InsufficientAllowance,
            E::TrustLimit,
        ],
        "stop_lease" => &[E::NotFound, E::Conflict],
        "job_output" => &[E::InvalidRequest, E::NotFound, E::Conflict],
        "job_result" | "cancel_job" | "confirm_job" | "reject_job" => {
            &[E::InvalidRequest, E::NotFound, E::Conflict]
        }
        "list_keys" | "providers" | "status" | "settlement_health" | "metrics" | "connect"
        | "chain_info" | "openapi_json" | "list_leases" => &[],
        "create_key" => &[E::InvalidRequest],
        "revoke_key" | "ledger_row" | "ledger_row_status" | "proof" => &[E::NotFound],
        "settlement_run" => &[E::Conflict],
        "block" | "tx" | "account_transfers" | "anchor_transfers" => {
            &[E::InvalidRequest, E::NotFound]
        }
        "account" => &[E::InvalidRequest],
        "locate" => &[E::InvalidRequest, E::UnknownService],
        "submit" | "faucet" => &[
            E::InvalidRequest,
            E::InvalidTx,
            E::BadSignature,
            E::BadNonce,
            E::AlreadyKnown,
            E::InsufficientBalance,
            E::InsufficientAllowance,
            E::FaucetDisabled,
            E::NotFound,
        ],
        _ => return None,
    })
}

/// The Lambda API's errors: `{"Type", "message"}` and `X-Amzn-ErrorType`.
const LAMBDA_STATUSES: &[(u16, &str)] = &[
    (
        400,
        "`InvalidParameterValueException` or `InvalidRequestContentException`",
    ),
    (
        403,
        "`InvalidSignatureException` or `AccessDeniedException`: the SigV4 check failed",
    ),
    (404, "`ResourceNotFoundException`"),
    (409, "`ResourceConflictException`"),
    (413, "`RequestTooLargeException`"),
    (429, "`TooManyRequestsException`"),
    (500, "`ServiceException`"),
    (502, "`ServiceException`: the call could not be placed"),
    (503, "`ServiceException`: no provider could take the call"),
];

/// The document of a broker with `config`: its tier names and its limits'
/// maxima are part of it.
pub fn document(config: &crate::BrokerConfig) -> OpenApi {
    let (_, spec) = super::api(config).split_for_parts();
    let mut spec = finish(spec);
    constrain(&mut spec, config);
    spec
}

/// The document as pretty JSON, for `config` (what `GET /openapi.json`
/// serves).
pub fn json(config: &crate::BrokerConfig) -> String {
    let mut s = document(config)
        .to_pretty_json()
        .expect("an OpenApi document serializes");
    s.push('\n');
    s
}

/// The document of a broker with the default config (`docs/openapi.json`).
pub fn default_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| json(&crate::BrokerConfig::default()))
}

/// The OpenAPI document of this broker's HTTP API.
#[utoipa::path(get, path = "/openapi.json", tag = "status",
    responses((status = 200, description = "This document", body = Object)))]
pub(super) async fn openapi_json(
    axum::extract::State(shared): super::Sh,
) -> impl axum::response::IntoResponse {
    let json = shared.openapi.get_or_init(|| json(&shared.config)).clone();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
}

/// What the broker's config decides: the tiers a request may name, the
/// verification a call may ask, and the most each limit may be.
fn constrain(spec: &mut OpenApi, config: &crate::BrokerConfig) {
    let tiers: Vec<String> = config.ledger.tier_names();
    let verify: Vec<String> = ["audit".to_string(), "none".to_string()]
        .into_iter()
        .chain((2..=brume_api::rest::MAX_REPLICAS).map(|n| format!("replicate={n}")))
        .collect();
    let enum_of = |values: &[String]| {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(values.iter().cloned()))
                .build(),
        ))
    };
    for item in spec.paths.paths.values_mut() {
        for (_, op) in operations(item) {
            for p in op.parameters.iter_mut().flatten() {
                let RefOr::T(p) = p else { continue };
                match p.name.as_str() {
                    "x-brume-tier" => p.schema = Some(enum_of(&tiers)),
                    "x-brume-verify" => p.schema = Some(enum_of(&verify)),
                    _ => {}
                }
            }
        }
    }
    let Some(components) = spec.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(job))) = components.schemas.get_mut("JobSpec")
        && let Some(tier) = job.properties.get_mut("tier")
    {
        *tier = enum_of(&tiers);
    }
    let max = &config.max_limits;
    if let Some(RefOr::T(Schema::Object(limits))) = components.schemas.get_mut("LimitsSpec") {
        for (field, most) in [
            ("fuel", max.fuel),
            ("memory_bytes", max.memory_bytes),
            ("timeout_ms", max.timeout_ms),
            ("max_input_bytes", max.max_input_bytes),
            ("max_output_bytes", max.max_output_bytes),
        ] {
            if let Some(RefOr::T(Schema::Object(o))) = limits.properties.get_mut(field) {
                o.maximum = Some(utoipa::Number::UInt(most as usize));
            }
        }
    }
}

fn finish(mut spec: OpenApi) -> OpenApi {
    spec.info.title = "brume broker".into();
    spec.info.version = env!("CARGO_PKG_VERSION").into();
    spec.info.description = Some(
        "The HTTP API of a brume broker: publish services, call functions, run jobs, \
         read the ledger and the chain, and the AWS Lambda API beside it. Every error \
         is `ApiError` JSON whose `code` is stable (docs/errors.md); the Lambda routes \
         answer in Lambda's own error shape."
            .into(),
    );
    spec.info.license = Some(utoipa::openapi::License::new("Apache-2.0"));
    let components = spec.components.get_or_insert_with(Default::default);
    components.schemas.insert(
        "ApiError".into(),
        <ApiError as utoipa::PartialSchema>::schema(),
    );
    components.schemas.insert(
        "ErrorCode".into(),
        <ErrorCode as utoipa::PartialSchema>::schema(),
    );
    components.schemas.insert(
        "LambdaError".into(),
        <brume_api::lambda::LambdaError as utoipa::PartialSchema>::schema(),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (`Authorization: Bearer KEY`), or a request signed by an \
                     account's key (`Brume-Signature`, docs/rest-api.md)",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "sigv4",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "AWS Signature Version 4, with Lambda credentials \
             (`brume broker lambda-keys create`)",
        ))),
    );
    let mut shared_responses = BTreeMap::new();
    for (path, item) in spec.paths.paths.iter_mut() {
        let lambda = path.starts_with("/2015-03-31/");
        let mut methods = operations(item);
        let shared_id = methods.len() > 1
            && methods
                .windows(2)
                .all(|w| w[0].1.operation_id == w[1].1.operation_id);
        for (method, op) in methods.iter_mut() {
            let id = op.operation_id.clone().unwrap_or_default();
            not_null(op);
            if lambda {
                lambda_errors(op);
            } else {
                let codes = errors(&id)
                    .unwrap_or_else(|| panic!("openapi: no error codes listed for {id}"));
                let keyed = op.security.as_ref().is_some_and(|s| !s.is_empty());
                add_errors(op, codes, keyed, &mut shared_responses);
            }
            if let Some((_, why)) = UNFUZZED.iter().find(|(u, _)| *u == id) {
                let d = op.description.get_or_insert_with(String::new);
                if !d.is_empty() {
                    d.push_str("\n\n");
                }
                d.push_str(&format!("Not fuzzed: {why}."));
            }
            // One handler serving several methods: one id each.
            if shared_id {
                op.operation_id = Some(format!("{id}_{method}"));
            }
        }
    }
    let components = spec.components.get_or_insert_with(Default::default);
    components.responses.extend(shared_responses);
    spec
}

/// An optional parameter is absent, never `null`: its schema is its
/// type's alone (utoipa writes `Option<T>` as `[T, "null"]`).
fn not_null(op: &mut Operation) {
    for p in op.parameters.iter_mut().flatten() {
        if let RefOr::T(p) = p
            && let Some(RefOr::T(Schema::Object(o))) = &mut p.schema
            && let SchemaType::Array(types) = &o.schema_type
        {
            let kept: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            if let [only] = kept.as_slice() {
                o.schema_type = SchemaType::Type(only.clone());
            }
        }
    }
}

/// A path's operations, by method name.
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
    .collect()
}

/// Groups the operation's codes by status: one response each, whose body
/// is `ApiError` with `code` one of them.
/// The responses are components, named by their codes, for operations
/// share them.
fn add_errors(
    op: &mut Operation,
    codes: &[ErrorCode],
    keyed: bool,
    shared: &mut BTreeMap<String, RefOr<Response>>,
) {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    let extra: &[ErrorCode] = if keyed { KEYED } else { &[] };
    for &c in codes.iter().chain(extra).chain(ANY) {
        let list = by_status.entry(c.status()).or_default();
        if !list.contains(&c) {
            list.push(c);
        }
    }
    for (status, codes) in by_status {
        let description = codes
            .iter()
            .map(|c| format!("`{}`: {}", c.as_str(), c.description()))
            .collect::<Vec<_>>()
            .join("\n");
        let code_enum = ObjectBuilder::new()
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes.iter().map(|c| c.as_str()))),
            )
            .required("code");
        let schema = AllOfBuilder::new()
            .item(Ref::from_schema_name("ApiError"))
            .item(code_enum);
        let name = codes
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("-");
        shared.entry(name.clone()).or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", Content::new(Some(schema)))
                    .build(),
            )
        });
        insert(
            op,
            status,
            RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))),
        );
    }
}

fn lambda_errors(op: &mut Operation) {
    for &(status, description) in LAMBDA_STATUSES {
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("LambdaError"))),
            )
            .build();
        insert(op, status, RefOr::T(response));
    }
}

fn insert(op: &mut Operation, status: u16, response: RefOr<Response>) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert(response);
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is what the broker serves. To refresh it:
    /// `BRUME_BLESS=1 cargo test -p brume-broker openapi`.
    #[test]
    fn the_checked_in_copy_matches_the_generated_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = super::default_json();
        if std::env::var_os("BRUME_BLESS").is_some() {
            std::fs::write(path, generated).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json is stale: run `BRUME_BLESS=1 cargo test -p brume-broker openapi`"
        );
    }

    #[test]
    fn every_unfuzzed_operation_exists() {
        let doc = super::document(&crate::BrokerConfig::default());
        let ids: Vec<String> = doc
            .paths
            .paths
            .values()
            .flat_map(|item| [&item.get, &item.post, &item.put, &item.delete, &item.patch])
            .filter_map(|op| op.as_ref()?.operation_id.clone())
            .collect();
        for (id, _) in super::UNFUZZED {
            assert!(
                ids.iter()
                    .any(|i| i == id || i.starts_with(&format!("{id}_"))),
                "UNFUZZED names {id}, which is no operation"
            );
        }
    }
}
