//! The management listener (`--management-listen`): `/metrics`,
//! `/healthz` and `/readyz` on an address of their own, apart from the
//! public one, so that a Prometheus scraper and the orchestrator's probes
//! reach it while the internet does not.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::endpoints::health;
use crate::telemetry::metrics;
use crate::AppState;

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(health::not_found)
        .with_state(app)
}

/// Gauges that are read rather than counted (the database pool, the
/// revocation listener, the audit queue) are sampled now, then every family
/// is rendered.
async fn scrape(State(app): State<AppState>) -> Response {
    let m = metrics::metrics();
    m.db_pool(app.store.pool_stats());
    m.revocation_listener(app.store.changes().listening());
    let audit = app.audit.stats();
    m.audit(
        audit.queue_depth(),
        audit.written_total(),
        audit.dropped_total(),
    );
    let mut res = metrics::render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    res
}
