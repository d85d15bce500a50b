//! `/v1/provider/connect`: the provider WebSocket (see `session.rs`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use brume_api::ErrorCode;

use super::Sh;

/// The read buffer, and the write buffer's flush threshold, of each
/// provider's socket (tungstenite's default is 128 KiB each).
const SOCKET_BUFFER: usize = 8 << 10;

#[utoipa::path(get, path = "/v1/provider/connect", tag = "provider",
    responses((status = 101, description = "A WebSocket: the provider protocol (MessagePack frames, `brume_api::wire`)")))]
pub(super) async fn connect(State(shared): Sh, ws: WebSocketUpgrade) -> Response {
    // Small buffers: a broker keeps one socket per provider, thousands of
    // them, and most frames are small (a larger one is read in pieces).
    ws.max_message_size(256 << 20)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| {
            let tasks = shared.tasks.clone();
            tasks.track_future(crate::session::run(shared, socket))
        })
}

/// `GET /v1/provider/probe/{token}`: a bandwidth probe's blob, for the
/// provider it was offered to in a `Measure` (once; see `measure.rs`).
#[utoipa::path(get, path = "/v1/provider/probe/{token}", tag = "provider",
    params(("token" = String, Path, description = "The probe's token, from its `Measure`")),
    responses((status = 200, description = "The blob to hash", body = brume_api::rest::Binary, content_type = "application/octet-stream")))]
pub(super) async fn probe(State(shared): Sh, Path(token): Path<String>) -> super::Res<Response> {
    match shared.probes.take(&token) {
        Some(blob) => Ok(([("content-type", "application/octet-stream")], blob).into_response()),
        None => Err(super::Fail::new(
            ErrorCode::NotFound,
            "no such probe (each is fetched once, within 30 s)",
        )),
    }
}
