//! Is this access token one of ours, for this tenant, and still active?
//! Used by introspection, revocation and userinfo.

use super::{AccessClaims, ACCESS_TOKEN_TYP};
use crate::oauth::errors::OAuthResult;
use crate::store::AccessTokenState;
use crate::tenants::Tenant;
use crate::tokens::secret::{ct_eq, Handle};
use crate::AppState;

pub enum Inspected {
    Active(Box<AccessClaims>),
    Inactive,
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Verifies signature (this tenant's keys only), issuer, expiry and
/// revocation.
pub async fn inspect_access_token(
    app: &AppState,
    tenant: &Tenant,
    token: &str,
) -> OAuthResult<Inspected> {
    let now = app.now();
    let claims = if looks_like_jwt(token) {
        let Ok(claims) = tenant
            .keys
            .verify::<AccessClaims>(token, Some(ACCESS_TOKEN_TYP), now)
        else {
            return Ok(Inspected::Inactive);
        };
        if !ct_eq(&claims.iss, &tenant.issuer) {
            return Ok(Inspected::Inactive);
        }
        if app
            .store
            .access_token_state(&tenant.id, &claims.jti, now)
            .await?
            == AccessTokenState::Revoked
        {
            return Ok(Inspected::Inactive);
        }
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
                None => return Ok(Inspected::Inactive),
            },
            _ => return Ok(Inspected::Inactive),
        }
    };
    if claims.exp <= now {
        return Ok(Inspected::Inactive);
    }
    Ok(Inspected::Active(Box::new(claims)))
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
