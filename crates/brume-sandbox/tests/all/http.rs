use brume_sandbox::{ExecError, HttpRequest, Shape};
use test_programs_artifacts as art;

use crate::util::*;

fn request(method: http::Method, uri: &'static str, body: &'static str) -> HttpRequest {
    HttpRequest {
        method,
        uri: http::Uri::from_static(uri),
        body: body.into(),
        ..HttpRequest::default()
    }
}

#[tokio::test]
async fn hello_component_answers_with_method_path_and_body() {
    let sb = sandbox();
    let p = load(&sb, art::HTTP_HELLO);
    assert_eq!(p.shape(), Shape::HttpProxy);
    let opts = brume_sandbox::ExecOptions::default();
    let out = sb
        .handle_http(
            &p,
            request(http::Method::POST, "/greet?name=x", "ping"),
            &opts,
        )
        .await
        .expect("handle");
    assert_eq!(out.response.status, 200);
    assert_eq!(out.response.headers["content-type"], "text/plain");
    assert_eq!(
        text(&out.response.body),
        "hello from brume: Method::Post /greet?name=x body=ping\n"
    );
    assert_eq!(
        text(&out.stderr),
        "http_hello: Method::Post /greet?name=x\n"
    );
    assert_eq!(out.usage.bytes_in, 4);
    assert_eq!(
        out.usage.bytes_out,
        (out.response.body.len() + out.stderr.len()) as u64
    );
    assert!(out.usage.fuel > 0);
}

#[tokio::test]
async fn http_guest_faults_are_typed() {
    let sb = sandbox();
    let p = load(&sb, art::HTTP_HELLO);
    let f = sb
        .handle_http(&p, request(http::Method::GET, "/trap", ""), &tight())
        .await
        .expect_err("panics");
    assert_eq!(f.error.code(), "trap", "{}", f.error);
    let f = sb
        .handle_http(&p, request(http::Method::GET, "/flood", ""), &tight())
        .await
        .expect_err("floods");
    assert_eq!(f.error, ExecError::OutputTooLarge { limit: 1 << 20 });
    let o = with_limits(|l| l.max_input_bytes = 3);
    let f = sb
        .handle_http(&p, request(http::Method::POST, "/", "four"), &o)
        .await
        .expect_err("too big");
    assert_eq!(f.error.code(), "input_too_large");
    // And the component still serves the next request.
    let out = sb
        .handle_http(&p, request(http::Method::GET, "/", ""), &tight())
        .await
        .expect("healthy");
    assert_eq!(out.response.status, 200);
}

#[tokio::test]
async fn shapes_must_match_the_call() {
    let sb = sandbox();
    let hello = load(&sb, art::HTTP_HELLO);
    let f = run_err(&sb, &hello, &args(&["x"]), &tight()).await;
    assert_eq!(f.error.code(), "invalid_request");
    let echo = load(&sb, art::ECHO_P2);
    let f = sb
        .handle_http(&echo, request(http::Method::GET, "/", ""), &tight())
        .await
        .expect_err("not a proxy");
    assert_eq!(f.error.code(), "invalid_request");
}
