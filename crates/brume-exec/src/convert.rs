//! Conversions between the wire types of `brume-api` and the sandbox's
//! types. Pure functions, unit-tested below.

use std::time::Duration;

use brume_api::wire::{self, Outcome};
use bytes::Bytes;

/// `brume_api::Limits` (timeout in ms) to the sandbox's (a `Duration`).
pub fn limits(l: &brume_api::Limits) -> brume_sandbox::Limits {
    brume_sandbox::Limits {
        fuel: l.fuel,
        memory_bytes: l.memory_bytes,
        timeout: Duration::from_millis(l.timeout_ms),
        max_input_bytes: l.max_input_bytes,
        max_output_bytes: l.max_output_bytes,
    }
}

pub fn usage(u: &brume_sandbox::Usage) -> brume_api::Usage {
    brume_api::Usage {
        fuel: u.fuel,
        peak_memory_bytes: u.peak_memory_bytes,
        wall_us: u.wall_us,
        bytes_in: u.bytes_in,
        bytes_out: u.bytes_out,
        gpu_us: 0,
    }
}

pub fn profile(p: brume_api::Profile) -> brume_sandbox::Profile {
    match p {
        brume_api::Profile::Standard => brume_sandbox::Profile::Standard,
        brume_api::Profile::Deterministic => brume_sandbox::Profile::Deterministic,
    }
}

/// The sandbox options for one assignment.
pub fn exec_options(a: &wire::Assign) -> brume_sandbox::ExecOptions {
    brume_sandbox::ExecOptions {
        limits: limits(&a.limits),
        seed: a.seed,
        clock_start: Duration::from_millis(a.clock_start_ms),
    }
}

/// Why a wire HTTP request cannot be given to the sandbox. The
/// requester's fault: `invalid_request`.
#[derive(Debug, thiserror::Error)]
pub enum HttpRequestError {
    #[error("bad HTTP method {method:?}")]
    Method {
        method: String,
        #[source]
        source: http::method::InvalidMethod,
    },
    #[error("bad request URI {uri:?}: {source}")]
    Uri {
        uri: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("bad header name {name:?}")]
    HeaderName {
        name: String,
        #[source]
        source: http::header::InvalidHeaderName,
    },
    #[error("bad value for header {name:?}")]
    HeaderValue {
        name: String,
        #[source]
        source: http::header::InvalidHeaderValue,
    },
}

/// The wire's HTTP request as the sandbox's. Bad methods, URIs or headers
/// are the requester's fault: `invalid_request`.
pub fn http_request(r: &wire::HttpRequest) -> Result<brume_sandbox::HttpRequest, HttpRequestError> {
    let method = http::Method::from_bytes(r.method.as_bytes()).map_err(|source| {
        HttpRequestError::Method {
            method: r.method.clone(),
            source,
        }
    })?;
    let uri: http::Uri = r.uri.parse().map_err(|source| HttpRequestError::Uri {
        uri: r.uri.clone(),
        source,
    })?;
    let mut headers = http::HeaderMap::with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        let n = http::HeaderName::from_bytes(name.as_bytes()).map_err(|source| {
            HttpRequestError::HeaderName {
                name: name.clone(),
                source,
            }
        })?;
        let v = http::HeaderValue::from_maybe_shared(value.clone()).map_err(|source| {
            HttpRequestError::HeaderValue {
                name: name.clone(),
                source,
            }
        })?;
        headers.append(n, v);
    }
    Ok(brume_sandbox::HttpRequest {
        method,
        uri,
        headers,
        body: r.body.clone(),
    })
}

pub fn http_response(r: brume_sandbox::HttpResponse) -> wire::HttpResponse {
    let headers = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    wire::HttpResponse {
        status: r.status.as_u16(),
        headers,
        body: r.body,
    }
}

pub fn command_outcome(
    r: Result<brume_sandbox::CommandOutcome, brume_sandbox::ExecFailure>,
) -> Outcome {
    match r {
        Ok(o) => Outcome::Exited {
            exit_code: o.exit_code,
            stdout: o.stdout,
            stderr: o.stderr,
            usage: usage(&o.usage),
            outputs: Vec::new(),
        },
        Err(f) => failure(f),
    }
}

pub fn http_outcome(r: Result<brume_sandbox::HttpOutcome, brume_sandbox::ExecFailure>) -> Outcome {
    match r {
        Ok(o) => Outcome::Responded {
            response: http_response(o.response),
            stderr: o.stderr,
            usage: usage(&o.usage),
        },
        Err(f) => failure(f),
    }
}

pub fn failure(f: brume_sandbox::ExecFailure) -> Outcome {
    Outcome::Failed {
        code: f.error.code().to_owned(),
        message: f.error.to_string(),
        usage: usage(&f.usage),
        stdout: f.stdout,
        stderr: f.stderr,
    }
}

/// A failure before anything ran (no usage, no output).
pub fn failed(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        code: code.to_owned(),
        message: message.into(),
        usage: brume_api::Usage::default(),
        stdout: Bytes::new(),
        stderr: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brume_sandbox::{ExecError, ExecFailure};

    #[test]
    fn limits_and_usage_convert_field_by_field() {
        let api = brume_api::Limits {
            fuel: 1,
            memory_bytes: 2,
            timeout_ms: 1500,
            max_input_bytes: 4,
            max_output_bytes: 5,
        };
        let sb = limits(&api);
        assert_eq!(sb.timeout, Duration::from_millis(1500));
        assert_eq!(
            (
                sb.fuel,
                sb.memory_bytes,
                sb.max_input_bytes,
                sb.max_output_bytes
            ),
            (1, 2, 4, 5)
        );
        // The defaults agree on both sides.
        assert_eq!(
            limits(&brume_api::Limits::default()),
            brume_sandbox::Limits::default()
        );
        let u = brume_sandbox::Usage {
            fuel: 10,
            peak_memory_bytes: 20,
            wall_us: 30,
            bytes_in: 40,
            bytes_out: 50,
        };
        let w = usage(&u);
        assert_eq!(
            (
                w.fuel,
                w.peak_memory_bytes,
                w.wall_us,
                w.bytes_in,
                w.bytes_out
            ),
            (10, 20, 30, 40, 50)
        );
        assert_eq!(
            profile(brume_api::Profile::Deterministic),
            brume_sandbox::Profile::Deterministic
        );
        assert_eq!(
            profile(brume_api::Profile::Standard),
            brume_sandbox::Profile::Standard
        );
    }

    #[test]
    fn failures_keep_code_usage_and_partial_output() {
        let f = ExecFailure {
            error: ExecError::OutOfFuel { budget: 7 },
            usage: brume_sandbox::Usage {
                fuel: 7,
                ..Default::default()
            },
            stdout: Bytes::from_static(b"partial"),
            stderr: Bytes::from_static(b"err"),
        };
        match command_outcome(Err(f)) {
            Outcome::Failed {
                code,
                usage,
                stdout,
                stderr,
                message,
            } => {
                assert_eq!(code, "out_of_fuel");
                assert_eq!(usage.fuel, 7);
                assert_eq!(&stdout[..], b"partial");
                assert_eq!(&stderr[..], b"err");
                assert!(message.contains('7'), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let ok = brume_sandbox::CommandOutcome {
            exit_code: 3,
            stdout: Bytes::from_static(b"o"),
            stderr: Bytes::new(),
            usage: brume_sandbox::Usage::default(),
        };
        assert!(matches!(
            command_outcome(Ok(ok)),
            Outcome::Exited { exit_code: 3, .. }
        ));
    }

    #[test]
    fn http_requests_and_responses_convert() {
        let req = wire::HttpRequest {
            method: "POST".into(),
            uri: "/a?b=1".into(),
            headers: vec![("x-k".into(), Bytes::from_static(b"v"))],
            body: Bytes::from_static(b"body"),
        };
        let r = http_request(&req).expect("converts");
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.uri.path(), "/a");
        assert_eq!(r.headers.get("x-k").map(|v| v.as_bytes()), Some(&b"v"[..]));
        let bad = wire::HttpRequest {
            headers: vec![("bad header".into(), Bytes::new())],
            ..req.clone()
        };
        assert!(http_request(&bad).is_err());
        assert_eq!(
            http_request(&bad).err().map(|e| e.to_string()),
            Some(r#"bad header name "bad header""#.to_string())
        );
        let bad = wire::HttpRequest {
            headers: vec![("x-k".into(), Bytes::from_static(b"a\nb"))],
            ..req.clone()
        };
        assert!(matches!(
            http_request(&bad),
            Err(HttpRequestError::HeaderValue { .. })
        ));
        let bad = wire::HttpRequest {
            uri: "http://[".into(),
            ..req.clone()
        };
        assert!(matches!(
            http_request(&bad),
            Err(HttpRequestError::Uri { .. })
        ));
        let bad = wire::HttpRequest {
            method: "G E T".into(),
            ..req
        };
        assert!(http_request(&bad).is_err());
        assert_eq!(
            http_request(&bad).err().map(|e| e.to_string()),
            Some(r#"bad HTTP method "G E T""#.to_string())
        );

        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
        let resp = http_response(brume_sandbox::HttpResponse {
            status: http::StatusCode::IM_A_TEAPOT,
            headers,
            body: Bytes::from_static(b"hi"),
        });
        assert_eq!(resp.status, 418);
        assert_eq!(
            resp.headers,
            vec![("content-type".into(), Bytes::from_static(b"text/plain"))]
        );
    }
}
