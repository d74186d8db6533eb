//! POST /token: parses and authenticates, then hands over to one grant.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::grants;
use crate::http::SourceAddr;
use crate::oauth::client_auth::{self, Client};
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::{check_form_content_type, Params};
use crate::tenants::{Tenant, TenantCtx};
use crate::tokens::TokenResponse;
use crate::AppState;

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let mut res = axum::Json(self).into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res.headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        res
    }
}

/// Largest form body accepted by back-channel endpoints.
pub const MAX_FORM_BODY: usize = 64 * 1024;

/// Reads a request body up to `MAX_FORM_BODY`; a larger one is an
/// `invalid_request` in RFC 6749 form, not a bare 413.
pub async fn read_body(body: Body) -> OAuthResult<Bytes> {
    axum::body::to_bytes(body, MAX_FORM_BODY)
        .await
        .map_err(|_| {
            OAuthError::invalid_request(format!(
                "the request body is larger than {MAX_FORM_BODY} bytes or unreadable"
            ))
        })
}

/// A form POST body, as the RFCs require of every back-channel endpoint.
pub fn parse_form(headers: &HeaderMap, body: &[u8], repeatable: &[&str]) -> OAuthResult<Params> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    check_form_content_type(content_type)
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    Params::parse(body, repeatable).map_err(|e| OAuthError::invalid_request(e.to_string()))
}

pub async fn token(
    State(app): State<AppState>,
    tenant: TenantCtx,
    source: SourceAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match run(&app, &tenant, source, &headers, &body).await {
        Ok(res) => res.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run(
    app: &AppState,
    tenant: &Tenant,
    source: SourceAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> OAuthResult<TokenResponse> {
    let params = parse_form(headers, body, &["resource"])?;
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'grant_type'"))?
        .to_string();
    let handler: fn(&str) -> bool = grants::is_supported;
    if !handler(&grant_type) {
        return Err(OAuthError::unsupported_grant_type(format!(
            "grant_type '{grant_type}' is not supported"
        )));
    }
    let client: std::sync::Arc<Client> =
        client_auth::authenticate(app, tenant, headers, source, &params).await?;
    if !client.meta.allows_grant(&grant_type) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use the {grant_type} grant"
        )));
    }
    let result = grants::dispatch(app, tenant, &client, &grant_type, &params, source).await;
    if result.is_ok() {
        // Self-registered clients that never get a token expire by policy.
        crate::oauth::unused_clients::note_client_used(app, &tenant.id, &client).await;
    }
    let outcome = if result.is_ok() { "success" } else { "failure" };
    let detail = match &result {
        Ok(_) => serde_json::json!({"grant_type": grant_type}),
        Err(e) => serde_json::json!({"grant_type": grant_type, "error": e.code.as_str()}),
    };
    app.audit.record(
        tenant,
        "token",
        outcome,
        Some(&client.client_id),
        None,
        Some(&source.to_string()),
        detail,
    );
    result
}
