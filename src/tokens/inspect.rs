//! Is this access token one of ours, for this tenant, and still active?
//! Used by introspection, revocation and userinfo.

use std::sync::Arc;

use super::{AccessClaims, ACCESS_TOKEN_TYP};
use crate::oauth::errors::OAuthResult;
use crate::store::AccessTokenState;
use crate::tenants::Tenant;
use crate::tokens::secret::{ct_eq, Handle};
use crate::AppState;

pub enum Inspected {
    Active(Arc<AccessClaims>),
    Inactive,
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Verifies signature (this tenant's keys only), issuer, expiry and
/// revocation; an answer checked moments ago comes from
/// [`ActiveTokens`](super::active_cache::ActiveTokens).
pub async fn inspect_access_token(
    app: &AppState,
    tenant: &Tenant,
    token: &str,
) -> OAuthResult<Inspected> {
    let now = app.now();
    match app.active_tokens.lookup(tenant, token, now) {
        Ok(claims) => Ok(Inspected::Active(claims)),
        Err(miss) => {
            let (inspected, kid) = inspect_in_store(app, tenant, token, now).await?;
            if let Inspected::Active(claims) = &inspected {
                app.active_tokens
                    .remember(tenant, miss, claims.clone(), kid);
            }
            Ok(inspected)
        }
    }
}

/// The full check, and the `kid` of a JWT found active.
async fn inspect_in_store(
    app: &AppState,
    tenant: &Tenant,
    token: &str,
    now: i64,
) -> OAuthResult<(Inspected, Option<String>)> {
    let inactive = Ok((Inspected::Inactive, None));
    let mut kid = None;
    let claims = if looks_like_jwt(token) {
        let Ok(claims) = tenant
            .keys
            .verify::<AccessClaims>(token, Some(ACCESS_TOKEN_TYP), now)
        else {
            return inactive;
        };
        if !ct_eq(&claims.iss, &tenant.issuer) {
            return inactive;
        }
        if app
            .store
            .access_token_state(&tenant.id, &claims.jti, now)
            .await?
            == AccessTokenState::Revoked
        {
            return inactive;
        }
        kid = crate::keys::ring::token_kid(token);
        claims
    } else {
        let handle = Handle::from_presented(token);
        match app
            .store
            .find_opaque_token(&tenant.id, &handle.hash())
            .await?
        {
            Some((rec, AccessTokenState::Active)) => match rec
                .claims
                .and_then(|c| serde_json::from_str::<AccessClaims>(&c).ok())
            {
                Some(claims) => claims,
                None => return inactive,
            },
            _ => return inactive,
        }
    };
    if claims.exp <= now {
        return inactive;
    }
    Ok((Inspected::Active(Arc::new(claims)), kid))
}

/// Like `inspect_access_token` but ignores expiry and revocation: for
/// revocation, which must find the token's owner either way.
pub async fn decode_own_access_token(
    app: &AppState,
    tenant: &Tenant,
    token: &str,
) -> OAuthResult<Option<(AccessClaims, Option<crate::store::AccessTokenRecord>)>> {
    if looks_like_jwt(token) {
        // Verify with `now` = issued-at tolerance: an expired token needs no revocation.
        let now = app.now();
        return Ok(tenant
            .keys
            .verify::<AccessClaims>(token, Some(ACCESS_TOKEN_TYP), now)
            .ok()
            .filter(|c| ct_eq(&c.iss, &tenant.issuer))
            .map(|c| (c, None)));
    }
    let handle = Handle::from_presented(token);
    Ok(app
        .store
        .find_opaque_token(&tenant.id, &handle.hash())
        .await?
        .and_then(|(rec, _)| {
            let claims = rec
                .claims
                .as_deref()
                .and_then(|c| serde_json::from_str::<AccessClaims>(c).ok())?;
            Some((claims, Some(rec)))
        }))
}
