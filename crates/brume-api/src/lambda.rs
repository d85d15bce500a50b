//! The AWS Lambda API's bodies, as the `aws` CLI and the SDKs read them.

use serde::{Deserialize, Serialize};

/// The path prefix of Lambda's API.
pub const PREFIX: &str = "/2015-03-31";

/// Lambda's request and response headers.
pub mod headers {
    pub const INVOCATION_TYPE: &str = "x-amz-invocation-type";
    pub const LOG_TYPE: &str = "x-amz-log-type";
    pub const LOG_RESULT: &str = "x-amz-log-result";
    pub const FUNCTION_ERROR: &str = "x-amz-function-error";
    pub const EXECUTED_VERSION: &str = "x-amz-executed-version";
    pub const ERROR_TYPE: &str = "x-amzn-errortype";
    pub const REQUEST_ID: &str = "x-amzn-requestid";
}

/// An error of the API itself (with `X-Amzn-ErrorType: {type}` and the
/// status that goes with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LambdaError {
    /// `User` or `Service`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub message: String,
}

/// What an invocation answers when the function failed (`200` with
/// `X-Amz-Function-Error: Unhandled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionError {
    #[serde(rename = "errorMessage")]
    pub error_message: String,
    #[serde(rename = "errorType")]
    pub error_type: String,
}

/// The most of a function's stderr returned with `--log-type Tail`.
pub const MAX_TAIL_BYTES: usize = 4096;

/// `CreateFunction`'s body (fields brume doesn't use are accepted and
/// ignored: `Role` is required by the CLI, `Runtime` is `provided`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunction {
    pub function_name: String,
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub code: FunctionCode,
}

/// The code of a function: a zip holding one `.wasm` (base64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCode {
    #[serde(default)]
    pub zip_file: Option<String>,
    #[serde(default, rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
}

/// `UpdateFunctionCode`'s body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCode {
    #[serde(default)]
    pub zip_file: Option<String>,
}

/// A function as Lambda describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub code_size: u64,
    /// base64 of the module's sha256.
    pub code_sha256: String,
    /// The version described (`$LATEST` for the function itself).
    pub version: String,
    /// ISO 8601.
    pub last_modified: String,
    pub state: String,
    pub package_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListFunctions {
    pub functions: Vec<FunctionConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct GetFunction {
    pub configuration: FunctionConfiguration,
    pub code: CodeLocation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CodeLocation {
    pub repository_type: String,
    /// Where the module can be fetched (`GET /v1/blobs/{sha256}` with a key).
    pub location: String,
}

/// An API Gateway proxy event (payload format 1.0, or the fields of 2.0
/// that say the same): how a `wasi:http` function is invoked through
/// Lambda. Decoded into the HTTP request the component sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiGatewayEvent {
    #[serde(default)]
    pub http_method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub query_string_parameters: Option<std::collections::BTreeMap<String, String>>,
    /// 2.0: the path and the query as sent.
    #[serde(default)]
    pub raw_path: Option<String>,
    #[serde(default)]
    pub raw_query_string: Option<String>,
    #[serde(default)]
    pub request_context: Option<RequestContext>,
    #[serde(default)]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub is_base64_encoded: bool,
}

/// 2.0's `requestContext.http.method`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestContext {
    #[serde(default)]
    pub http: Option<RequestContextHttp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestContextHttp {
    #[serde(default)]
    pub method: Option<String>,
}

/// What a `wasi:http` function's response becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiGatewayResponse {
    pub status_code: u16,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
    pub is_base64_encoded: bool,
}
