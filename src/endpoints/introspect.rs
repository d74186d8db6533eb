//! POST /introspect (RFC 7662). Callers must authenticate as a confidential
//! client of the same tenant; resource servers are registered as such, and
//! each learns only about the tokens it has a reason to see (`may_see`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::token::parse_form;
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

/// RFC 7662 §4: the server must not become an oracle for token holders. A
/// caller learns about an access token only when the token was issued to
/// it, or its audience is a resource the caller is registered for (an MCP
/// server configured with `resources = [...]`), or an administrator marked
/// the caller `introspect_any` (never a self-registered client). A client
/// with no `resources` list is not thereby allowed every audience.
fn may_see(caller: &Client, token: &AccessClaims) -> bool {
    check_issued_to_caller(caller, token)
        || check_audience_is_callers_resource(caller, token)
        || check_introspects_any(caller)
}

fn check_issued_to_caller(caller: &Client, token: &AccessClaims) -> bool {
    ct_eq(&token.client_id, &caller.client_id)
}

fn check_audience_is_callers_resource(caller: &Client, token: &AccessClaims) -> bool {
    caller
        .meta
        .resources
        .as_ref()
        .is_some_and(|list| list.iter().any(|r| resource::same_resource(r, &token.aud)))
}

fn check_introspects_any(caller: &Client) -> bool {
    caller.meta.introspect_any && !caller.meta.dynamic
}

/// RFC 7662 §2.2 answer for an active access token, or inactive when the
/// caller may not learn about tokens for its audience.
fn access_token_answer(caller: &Client, c: &AccessClaims) -> serde_json::Value {
    if !may_see(caller, c) {
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
    let caller = client_auth::authenticate(app, tenant, headers, source, &params).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::{AuthMethod, ClientMetadata};

    fn caller(id: &str, resources: Option<&[&str]>, dynamic: bool, any: bool) -> Client {
        Client {
            tenant_id: "t".into(),
            client_id: id.into(),
            secret_hash: None,
            meta: ClientMetadata {
                client_name: None,
                redirect_uris: vec![],
                grant_types: vec!["client_credentials".into()],
                token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
                jwks: None,
                jwks_uri: None,
                resources: resources.map(|r| r.iter().map(|s| s.to_string()).collect()),
                scopes: None,
                default_scopes: None,
                access_token_format: Default::default(),
                access_token_ttl: None,
                refresh_token_ttl: None,
                skip_consent: false,
                dynamic,
                initial_access_token: false,
                introspect_any: any,
            },
            source: String::new(),
        }
    }

    fn token(client_id: &str, aud: &str) -> AccessClaims {
        AccessClaims {
            iss: "https://as".into(),
            sub: "user".into(),
            aud: aud.into(),
            client_id: client_id.into(),
            scope: "mcp:read".into(),
            jti: "j".into(),
            iat: 0,
            exp: 10,
            auth_time: None,
            act: None,
            may_act: None,
            copied: Default::default(),
        }
    }

    const RS: &str = "https://mcp.example.com/mcp";

    #[test]
    fn an_unrestricted_client_sees_only_its_own_tokens() {
        let c = caller("svc", None, false, false);
        assert!(may_see(&c, &token("svc", RS)));
        assert!(!may_see(&c, &token("app", RS)));
    }

    #[test]
    fn a_resource_server_sees_tokens_for_its_resources() {
        let c = caller("rs", Some(&[RS]), false, false);
        assert!(may_see(&c, &token("app", RS)));
        assert!(!may_see(&c, &token("app", "https://other.example.com/mcp")));
    }

    #[test]
    fn introspect_any_is_never_honoured_for_self_registered_clients() {
        assert!(may_see(&caller("gw", None, false, true), &token("app", RS)));
        assert!(!may_see(
            &caller("dcr_x", None, true, true),
            &token("app", RS)
        ));
    }
}
