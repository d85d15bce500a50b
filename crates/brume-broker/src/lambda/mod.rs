//! The AWS Lambda API, for the tools people already have (`aws lambda`,
//! the Lambda SDKs): credentials that sign requests (SigV4), and Lambda's
//! routes mapped onto the account's services.

pub mod creds;
pub(crate) mod sigv4;
