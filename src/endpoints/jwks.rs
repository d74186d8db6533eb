//! GET /jwks.json: the tenant's public signing keys (active, next, and
//! retired ones whose tokens may still be alive).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::tenants::TenantCtx;
use crate::AppState;

pub async fn jwks(State(_app): State<AppState>, tenant: TenantCtx) -> Response {
    let mut res = axum::Json(tenant.keys.jwks()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}
