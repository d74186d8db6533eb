//! Liveness, readiness, 404s and the last-resort panic answer.

use std::any::Any;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::oauth::errors::OAuthError;
use crate::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

pub async fn not_found() -> Response {
    OAuthError::not_found("no such endpoint").into_response()
}

pub async fn method_not_allowed() -> Response {
    OAuthError::invalid_request("this HTTP method is not allowed here")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
        .into_response()
}

/// A panic is a bug; answer in protocol format rather than dropping the connection.
pub fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    OAuthError::server_error("internal error").into_response()
}
