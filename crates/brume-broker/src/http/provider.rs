//! `/v1/provider/connect`: the provider WebSocket (see `session.rs`).

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;

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
