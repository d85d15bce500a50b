//! Lambda's function management on the credential's account's services
//! (created as command services): `create-function` (a zip holding one `.wasm`),
//! `update-function-code` (a new version), `get-function`,
//! `list-functions` and `delete-function` (every version retired).

use std::io::Read as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use brume_api::ServiceKind;
use brume_api::lambda::{
    CodeLocation, CreateFunction, FunctionConfiguration, GetFunction, ListFunctions,
    UpdateFunctionCode,
};
use brume_api::rest::ServiceInfo;
use bytes::Bytes;

use super::Sh;
use super::lambda::{LambdaFail, SignedBy, caller};
use super::services::PublishQuery;
use crate::Shared;

fn invalid(message: impl Into<String>) -> LambdaFail {
    LambdaFail::new(
        StatusCode::BAD_REQUEST,
        "InvalidParameterValueException",
        message,
    )
}

/// The one `.wasm` in a base64 zip.
fn module_of(zip_b64: Option<&str>) -> Result<Bytes, LambdaFail> {
    let zip_b64 =
        zip_b64.ok_or_else(|| invalid("Code.ZipFile is required (S3 code is not supported)"))?;
    let zip = base64::engine::general_purpose::STANDARD
        .decode(zip_b64)
        .map_err(|e| invalid(format!("Code.ZipFile is not base64: {e}")))?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))
        .map_err(|e| invalid(format!("Code.ZipFile is not a zip: {e}")))?;
    let names: Vec<String> = archive
        .file_names()
        .filter(|n| n.ends_with(".wasm"))
        .map(str::to_string)
        .collect();
    let [name] = names.as_slice() else {
        return Err(invalid(format!(
            "the zip must hold exactly one .wasm module (it holds {})",
            names.len()
        )));
    };
    let mut file = archive
        .by_name(name)
        .map_err(|e| invalid(format!("{name}: {e}")))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("{name}: {e}")))?;
    Ok(bytes.into())
}

fn configuration(info: &ServiceInfo, version: String) -> FunctionConfiguration {
    let sha = hex::decode(&info.digest).unwrap_or_default();
    FunctionConfiguration {
        function_name: info.name.clone(),
        function_arn: format!("arn:aws:lambda:brume:{}:function:{}", info.owner, info.name),
        runtime: "provided".into(),
        role: String::new(),
        handler: String::new(),
        code_size: info.size_bytes,
        code_sha256: base64::engine::general_purpose::STANDARD.encode(sha),
        version,
        last_modified: iso8601(info.created_at_ms),
        state: "Active".into(),
        package_type: "Zip".into(),
    }
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmm+0000`.
fn iso8601(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Publishes `module` as the next version of `name` in `account`'s
/// namespace.
async fn publish(
    shared: &Arc<Shared>,
    account: String,
    name: &str,
    module: Bytes,
) -> Result<ServiceInfo, LambdaFail> {
    let query = Query(PublishQuery::new(name.to_string(), ServiceKind::Command));
    let (_, axum::Json(info)) = super::services::publish(
        State(shared.clone()),
        caller(account),
        Ok(query),
        HeaderMap::new(),
        Ok(module),
    )
    .await?;
    Ok(info)
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, LambdaFail> {
    serde_json::from_slice(body).map_err(|e| {
        LambdaFail::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            e.to_string(),
        )
    })
}

fn not_found(name: &str) -> LambdaFail {
    LambdaFail::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        format!("Function not found: {name}"),
    )
}

/// `ListFunctions`: the caller's functions (one page).
#[utoipa::path(get, path = "/2015-03-31/functions", tag = "lambda",
    responses((status = 200, description = "The caller's functions", body = ListFunctions)),
    security(("sigv4" = [])))]
pub(super) async fn list_functions(
    State(shared): Sh,
    SignedBy { account, .. }: SignedBy,
) -> Result<Response, LambdaFail> {
    let functions = shared
        .registry
        .list(Some(&account))
        .iter()
        .filter(|s| !s.retired)
        .map(|s| configuration(s, "$LATEST".into()))
        .collect();
    Ok(axum::Json(ListFunctions { functions }).into_response())
}

/// `CreateFunction`: a zip holding a `.wasm`, runtime `provided`.
#[utoipa::path(post, path = "/2015-03-31/functions", tag = "lambda",
    request_body = CreateFunction,
    responses((status = 201, description = "Created: the function's configuration", body = FunctionConfiguration)),
    security(("sigv4" = [])))]
pub(super) async fn create_function(
    State(shared): Sh,
    SignedBy { account, body, .. }: SignedBy,
) -> Result<Response, LambdaFail> {
    let create: CreateFunction = json_body(&body)?;
    let name = create.function_name.clone();
    if shared.registry.resolve(&name, &account).is_ok() {
        return Err(LambdaFail::new(
            StatusCode::CONFLICT,
            "ResourceConflictException",
            format!("Function already exist: {name}"),
        ));
    }
    let module = module_of(create.code.zip_file.as_deref())?;
    let info = publish(&shared, account, &name, module).await?;
    let mut config = configuration(&info, "$LATEST".into());
    config.role = create.role.unwrap_or_default();
    config.handler = create.handler.unwrap_or_default();
    Ok((StatusCode::CREATED, axum::Json(config)).into_response())
}

/// `GetFunction`: the configuration, and where the code is.
#[utoipa::path(get, path = "/2015-03-31/functions/{name}", tag = "lambda",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, description = "The function", body = GetFunction)),
    security(("sigv4" = [])))]
pub(super) async fn get_function(
    State(shared): Sh,
    Path(name): Path<String>,
    SignedBy { account, .. }: SignedBy,
) -> Result<Response, LambdaFail> {
    let found = shared
        .registry
        .resolve(&name, &account)
        .map_err(|_| not_found(&name))?;
    let (url, _) = shared.federation.url();
    Ok(axum::Json(GetFunction {
        configuration: configuration(&found.info, "$LATEST".into()),
        code: CodeLocation {
            repository_type: "brume".into(),
            location: format!("{url}/v1/blobs/{}", found.info.digest),
        },
    })
    .into_response())
}

/// `DeleteFunction`: retires every version of the service.
#[utoipa::path(delete, path = "/2015-03-31/functions/{name}", tag = "lambda",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 204, description = "Deleted")),
    security(("sigv4" = [])))]
pub(super) async fn delete_function(
    State(shared): Sh,
    Path(name): Path<String>,
    SignedBy { account, .. }: SignedBy,
) -> Result<Response, LambdaFail> {
    shared
        .registry
        .resolve(&name, &account)
        .map_err(|_| not_found(&name))?;
    shared
        .registry
        .retire(&name, &account, false)
        .await
        .map_err(|e| LambdaFail::from(super::Fail::from(e)))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `UpdateFunctionCode`: the next version.
#[utoipa::path(put, path = "/2015-03-31/functions/{name}/code", tag = "lambda",
    params(("name" = String, Path, description = "The function's name")),
    request_body = UpdateFunctionCode,
    responses((status = 200, description = "The new version's configuration", body = FunctionConfiguration)),
    security(("sigv4" = [])))]
pub(super) async fn update_code(
    State(shared): Sh,
    Path(name): Path<String>,
    SignedBy { account, body, .. }: SignedBy,
) -> Result<Response, LambdaFail> {
    shared
        .registry
        .resolve(&name, &account)
        .map_err(|_| not_found(&name))?;
    let update: UpdateFunctionCode = json_body(&body)?;
    let module = module_of(update.zip_file.as_deref())?;
    let info = publish(&shared, account, &name, module).await?;
    Ok(axum::Json(configuration(&info, info.version.to_string())).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_lambda_prints_them() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            super::iso8601(1_440_938_160_123),
            "2015-08-30T12:36:00.123+0000"
        );
    }
}
