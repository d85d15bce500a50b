//! `http_hello`: a `wasi:http` proxy that answers every request with a
//! greeting, echoing the method, path and body so tests can check all of it.
#![allow(unsafe_op_in_unsafe_fn)]

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = format!("{:?}", request.method());
        let path = request.path_with_query().unwrap_or_default();
        let mut body = Vec::new();
        if let Ok(incoming) = request.consume()
            && let Ok(stream) = incoming.stream()
        {
            while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                if chunk.is_empty() {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        }
        if path.starts_with("/flood") {
            return flood(out);
        }
        if path.starts_with("/trap") {
            panic!("asked to trap");
        }
        eprintln!("http_hello: {method} {path}");
        let text = format!(
            "hello from brume: {method} {path} body={}\n",
            String::from_utf8_lossy(&body)
        );
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("static header is valid");
        let resp = OutgoingResponse::new(headers);
        let _ = resp.set_status_code(200);
        let out_body = resp.body().expect("first call to body");
        ResponseOutparam::set(out, Ok(resp));
        let stream = out_body.write().expect("first call to write");
        let _ = stream.blocking_write_and_flush(text.as_bytes());
        drop(stream);
        let _ = OutgoingBody::finish(out_body, None);
    }
}

/// Writes an endless response body.
fn flood(out: ResponseOutparam) {
    let resp = OutgoingResponse::new(Fields::new());
    let out_body = resp.body().expect("first call to body");
    ResponseOutparam::set(out, Ok(resp));
    let stream = out_body.write().expect("first call to write");
    let chunk = vec![b'x'; 4096];
    while stream.blocking_write_and_flush(&chunk).is_ok() {}
}
