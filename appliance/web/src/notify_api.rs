//! The page's "send a test notification": `POST /api/notify/test` (session and CSRF token required) sends
//! a test message through every channel of the `[notify]` in force and answers `{"ok": true}`, or
//! `{"error": "…"}` naming each channel that failed and its host (never the password or the webhook's
//! token). Each channel gives up after [`notify::TIMEOUT`].

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use std::sync::Arc;

use crate::api::{App, session_and_csrf};

type Shared = Arc<App>;

/// The routes of this file, merged into [`crate::api::router`].
pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/api/notify/test", post(post_test))
}

async fn post_test(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = session_and_csrf(&app, &headers) {
        return r.into_response();
    }
    let config = app.config();
    let message = notify::Message::test(&notify::box_name());
    match notify::send(&config.notify, &message).await {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => {
            tracing::warn!("test notification: {e}");
            // Nothing configured is the caller's to fix; a channel that failed is the far side's.
            let code = if e.failures.is_empty() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::BAD_GATEWAY
            };
            (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
