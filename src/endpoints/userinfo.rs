//! GET/POST /userinfo (OIDC Core §5.3): claims about the user, released by
//! the scopes of the presented access token.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::oauth::errors::{ErrorCode, OAuthError, OAuthResult};
use crate::oauth::scope::ScopeSet;
use crate::tenants::{Tenant, TenantCtx};
use crate::tokens::inspect::{inspect_access_token, Inspected};
use crate::tokens::{released_claims, UserClaims};
use crate::AppState;

pub async fn userinfo(
    State(app): State<AppState>,
    tenant: TenantCtx,
    headers: HeaderMap,
) -> Response {
    match run(&app, &tenant, &headers).await {
        Ok(v) => {
            let mut res = axum::Json(v).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => e.into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn run(
    app: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
) -> OAuthResult<serde_json::Value> {
    let token = bearer(headers).ok_or_else(|| {
        let mut e = OAuthError::invalid_token("a Bearer access token is required");
        e.challenge = Some("Bearer realm=\"gatehouse\"".into());
        e
    })?;
    let claims = match inspect_access_token(app, tenant, token).await? {
        Inspected::Active(c) => c,
        Inspected::Inactive => {
            return Err(OAuthError::invalid_token(
                "the access token is invalid, expired or revoked",
            ))
        }
    };
    let scope = ScopeSet::parse(&claims.scope).unwrap_or_default();
    if !scope.contains("openid") {
        let mut e = OAuthError::new(
            ErrorCode::InsufficientScope,
            "the access token lacks the openid scope",
        )
        .with_status(StatusCode::FORBIDDEN);
        e.challenge = Some("Bearer error=\"insufficient_scope\", scope=\"openid\"".into());
        return Err(e);
    }
    let user: UserClaims = match app
        .store
        .get_identity_by_subject(&tenant.id, &claims.sub)
        .await?
    {
        Some(identity) => serde_json::from_str(&identity.claims).unwrap_or_default(),
        None => {
            return Err(OAuthError::invalid_token(
                "the token's subject is not a user",
            ))
        }
    };
    let mut out = released_claims(&scope, &user);
    out.insert("sub".into(), claims.sub.clone().into());
    Ok(serde_json::Value::Object(out))
}
