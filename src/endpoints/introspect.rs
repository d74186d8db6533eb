//! POST /introspect (RFC 7662). Callers must authenticate as a confidential
//! client of the same tenant; resource servers are registered as such.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::token::{assertion_audiences, parse_form};
use crate::http::SourceAddr;
use crate::oauth::client_auth::{self, Client};
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::resource;
use crate::tenants::{Tenant, TenantCtx};
use crate::tokens::inspect::{inspect_access_token, Inspected};
use crate::tokens::secret::{ct_eq, Handle};
use crate::tokens::AccessClaims;
use crate::AppState;

pub async fn introspect(
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
        Ok(v) => {
            let mut res = axum::Json(v).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => e.into_response(),
    }
}

/// A caller restricted to some resources (a resource server registered with
/// `resources = [...]`) learns only about tokens meant for those resources;
/// an unrestricted confidential client may introspect any token of the tenant.
fn may_see(caller: &Client, aud: &str) -> bool {
    match &caller.meta.resources {
        None => true,
        Some(list) => list.iter().any(|r| resource::same_resource(r, aud)),
    }
}

/// RFC 7662 §2.2 answer for an active access token, or inactive when the
/// caller may not learn about tokens for its audience.
fn access_token_answer(caller: &Client, c: &AccessClaims) -> serde_json::Value {
    if !may_see(caller, &c.aud) {
        return json!({ "active": false });
    }
    let mut answer = json!({
        "active": true,
        "iss": c.iss,
        "sub": c.sub,
        "aud": c.aud,
        "client_id": c.client_id,
        "scope": c.scope,
        "exp": c.exp,
        "iat": c.iat,
        "jti": c.jti,
        "token_type": "Bearer",
    });
    if let Some(obj) = answer.as_object_mut() {
        if let Some(act) = &c.act {
            obj.insert("act".into(), act.clone());
        }
        // The user claims the tenant copies into its tokens (their names
        // never collide with the ones above: the configuration refuses it).
        for (name, value) in &c.copied {
            obj.entry(name.clone()).or_insert_with(|| value.clone());
        }
    }
    answer
}

async fn run(
    app: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    source: SourceAddr,
    body: &[u8],
) -> OAuthResult<serde_json::Value> {
    let params = parse_form(headers, body, &[])?;
    let caller = client_auth::authenticate(
        app,
        tenant,
        headers,
        source,
        &params,
        &assertion_audiences(tenant, "/introspect"),
    )
    .await?;
    if caller.meta.is_public() {
        return Err(OAuthError::invalid_client(
            "introspection requires an authenticated confidential client",
        ));
    }
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'token'"))?;
    let hint = params.get("token_type_hint");
    if hint != Some("refresh_token") {
        if let Inspected::Active(c) = inspect_access_token(app, tenant, token).await? {
            return Ok(access_token_answer(&caller, &c));
        }
    }
    // Refresh tokens are shown only to the client that holds them.
    if let Some((rt, rotated_at)) = app
        .store
        .get_refresh(&tenant.id, &Handle::from_presented(token).hash())
        .await?
    {
        let now = app.now();
        if rotated_at.is_none() && rt.expires_at > now && ct_eq(&rt.client_id, &caller.client_id) {
            if let Some(grant) = app.store.get_grant(&rt.grant_id).await? {
                if grant.revoked_at.is_none() {
                    let scope = serde_json::from_str::<crate::tokens::GrantData>(&grant.data)
                        .map(|g| g.scope)
                        .unwrap_or_default();
                    return Ok(json!({
                        "active": true,
                        "iss": tenant.issuer,
                        "sub": grant.subject,
                        "client_id": rt.client_id,
                        "scope": scope,
                        "exp": rt.expires_at,
                        "iat": rt.created_at,
                        "token_type": "refresh_token",
                    }));
                }
            }
        }
    }
    if hint == Some("refresh_token") {
        if let Inspected::Active(c) = inspect_access_token(app, tenant, token).await? {
            return Ok(access_token_answer(&caller, &c));
        }
    }
    Ok(json!({ "active": false }))
}
