//! The local control port: `GET /status`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use brume_api::rest::ProviderStatus;

use crate::{ProviderError, Shared};

pub(crate) async fn serve(
    shared: Arc<Shared>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ProviderError> {
    let addr = shared.config.control_listen;
    let control_err = |source| ProviderError::Control { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(control_err)?;
    let bound = listener.local_addr().map_err(control_err)?;
    let app = Router::new()
        .route("/status", get(status))
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "control port stopped");
        }
    });
    Ok((bound, task))
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<ProviderStatus> {
    Json(shared.status())
}
