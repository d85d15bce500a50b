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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LambdaError {
    /// `User` or `Service`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub message: String,
}

/// What an invocation answers when the function failed (`200` with
/// `X-Amz-Function-Error: Unhandled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorMessage")]
    pub error_message: String,
    #[serde(rename = "errorType")]
    pub error_type: String,
}

/// The most of a function's stderr returned with `--log-type Tail`.
pub const MAX_TAIL_BYTES: usize = 4096;
