//! POST /revoke (RFC 7009). A client may revoke only its own tokens; the
//! answer is 200 either way, so it reveals nothing about other tokens.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::token::parse_form;
use crate::http::SourceAddr;
use crate::oauth::client_auth;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::store::AccessTokenRecord;
use crate::tenants::{Tenant, TenantCtx};
use crate::tokens::inspect::decode_own_access_token;
use crate::tokens::secret::{ct_eq, Handle};
use crate::AppState;

pub async fn revoke(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
    source: SourceAddr,
    body: Body,
) -> Response {
    let body = match super::token::read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match run(&app, &tenant, &headers, source, &body).await {
        Ok(()) => {
            let mut res = StatusCode::OK.into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn run(
    app: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    source: SourceAddr,
    body: &[u8],
) -> OAuthResult<()> {
    let params = parse_form(headers, body, &[])?;
    let client = client_auth::authenticate(app, tenant, headers, source, &params).await?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'token'"))?;
    let now = app.now();

    // A refresh token: revoke its whole family (grant), which reaches every
    // access token minted from it.
    if let Some((rt, _)) = app
        .store
        .get_refresh(&tenant.id, &Handle::from_presented(token).hash())
        .await?
    {
        if ct_eq(&rt.client_id, &client.client_id) {
            app.store.revoke_grant(&rt.grant_id, now).await?;
            app.audit.record(
                tenant,
                "revoke",
                "success",
                Some(&client.client_id),
                None,
                None,
                serde_json::json!({"type": "refresh_token"}),
            );
        }
        return Ok(());
    }
    if let Some((claims, record)) = decode_own_access_token(app, tenant, token).await? {
        if ct_eq(&claims.client_id, &client.client_id) {
            let rec = record.unwrap_or(AccessTokenRecord {
                jti: claims.jti.clone(),
                tenant_id: tenant.id.clone(),
                client_id: claims.client_id.clone(),
                grant_id: None,
                token_hash: None,
                claims: None,
                expires_at: claims.exp,
            });
            app.store.revoke_access_token(&rec, now).await?;
            app.audit.record(
                tenant,
                "revoke",
                "success",
                Some(&client.client_id),
                None,
                None,
                serde_json::json!({"type": "access_token"}),
            );
        }
    }
    Ok(())
}
