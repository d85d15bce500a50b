//! `/v1/provider/connect`: the provider WebSocket (see `session.rs`).

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;

use super::Sh;

#[utoipa::path(get, path = "/v1/provider/connect", tag = "provider",
    responses((status = 101, description = "A WebSocket: the provider protocol (MessagePack frames, `brume_api::wire`)")))]
pub(super) async fn connect(State(shared): Sh, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(256 << 20).on_upgrade(move |socket| {
        let tasks = shared.tasks.clone();
        tasks.track_future(crate::session::run(shared, socket))
    })
}
