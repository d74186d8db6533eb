//! Minting what the token endpoint hands out: access tokens (JWT per RFC 9068
//! or opaque), ID tokens, and the records behind codes and refresh tokens.

pub mod active_cache;
mod code;
pub mod inspect;
mod response;
pub mod secret;

pub use code::CodeData;
pub use response::{IssuedFormat, TokenResponse};

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::scope::ScopeSet;
use crate::store::AccessTokenRecord;
use crate::tenants::{Tenant, TokenFormat};
use crate::AppState;
use secret::{random_id, Handle};

/// Claims about the user, as the connector reported them; copied into ID
/// tokens and userinfo according to the granted scopes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UserClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Further claims the connector mapped (`tid`, `roles`, `org_id`, ...):
    /// released only into access tokens, as the tenant's
    /// `access_token_claims` names them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// What a user (or client) was granted: the part of an authorization that
/// codes and refresh tokens carry forward.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantData {
    pub scope: String,
    pub resources: Vec<String>,
    pub auth_time: i64,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    pub user: UserClaims,
    /// The connector the user signed in with (user grants): its upstream
    /// session is re-checked on refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
}

/// RFC 9068 access token claims.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// RFC 8693 §4.1: the acting party, nested for a delegation chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
    /// RFC 8693 §4.4: who may act for the subject, when the issuer said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<serde_json::Value>,
    /// User claims the tenant copies into access tokens
    /// (`access_token_claims`), under their configured names.
    #[serde(flatten)]
    pub copied: serde_json::Map<String, serde_json::Value>,
}

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

pub struct AccessTokenSpec<'a> {
    pub client: &'a Client,
    pub subject: &'a str,
    pub scope: &'a ScopeSet,
    pub resource: &'a str,
    pub grant_id: Option<&'a str>,
    pub auth_time: Option<i64>,
    pub act: Option<serde_json::Value>,
    /// Overrides the client's configured format (token exchange asking for a JWT).
    pub format: Option<TokenFormat>,
    /// User claims to carry (see [`copied_claims`]).
    pub copied: serde_json::Map<String, serde_json::Value>,
}

/// The user claims the tenant's `access_token_claims` copies into access
/// tokens, under their configured names. Absent claims are left out.
pub fn copied_claims(
    tenant: &Tenant,
    user: &UserClaims,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut out = serde_json::Map::new();
    for (source, target) in &tenant.settings.access_token_claims {
        let value = match source.as_str() {
            "email" => user.email.clone().map(Value::from),
            "email_verified" => user
                .email
                .as_ref()
                .map(|_| Value::from(user.email_verified)),
            "name" => user.name.clone().map(Value::from),
            "groups" => (!user.groups.is_empty()).then(|| Value::from(user.groups.clone())),
            other => user.extra.get(other).cloned(),
        };
        if let Some(value) = value {
            out.insert(target.clone(), value);
        }
    }
    out
}

pub struct MintedAccessToken {
    pub token: String,
    pub format: TokenFormat,
    pub expires_in: i64,
    pub claims: AccessClaims,
}

/// Lifetime: client override, else resource override, else tenant policy.
pub fn access_token_ttl(tenant: &Tenant, client: &Client, resource: &str) -> i64 {
    client
        .meta
        .access_token_ttl
        .or_else(|| {
            tenant
                .resource(resource)
                .and_then(|r| r.settings.access_token_ttl)
        })
        .unwrap_or(tenant.policy().access_token_ttl)
}

/// Mints an access token and stores the row it needs, if any.
pub async fn mint_access_token(
    app: &AppState,
    tenant: &Tenant,
    spec: AccessTokenSpec<'_>,
) -> OAuthResult<MintedAccessToken> {
    let (minted, record) = prepare_access_token(app, tenant, spec)?;
    if let Some(record) = record {
        app.store.put_access_token(&record).await?;
    }
    Ok(minted)
}

/// Mints an access token and returns the row the store must hold before
/// it is handed out: opaque tokens live only in the store; JWTs from a
/// grant get a row so revoking the grant reaches them; a bare
/// client_credentials JWT needs none. Grants that write other rows too
/// (a refresh token) store this one in the same commit.
pub fn prepare_access_token(
    app: &AppState,
    tenant: &Tenant,
    spec: AccessTokenSpec<'_>,
) -> OAuthResult<(MintedAccessToken, Option<AccessTokenRecord>)> {
    let now = app.now();
    let ttl = access_token_ttl(tenant, spec.client, spec.resource);
    let claims = AccessClaims {
        iss: tenant.issuer.clone(),
        sub: spec.subject.to_string(),
        aud: spec.resource.to_string(),
        client_id: spec.client.client_id.clone(),
        // Whatever a grant computed, grant-only scopes stay out of the token.
        scope: crate::oauth::scope::access_token_scope(spec.scope).to_string(),
        jti: random_id(),
        iat: now,
        exp: now + ttl,
        auth_time: spec.auth_time,
        act: spec.act.clone(),
        may_act: crate::tenants::may_act_claim(
            &tenant.settings.token_exchange,
            &spec.client.client_id,
        ),
        copied: spec.copied,
    };
    let mut record = AccessTokenRecord {
        jti: claims.jti.clone(),
        tenant_id: tenant.id.clone(),
        client_id: spec.client.client_id.clone(),
        grant_id: spec.grant_id.map(str::to_string),
        token_hash: None,
        claims: None,
        expires_at: claims.exp,
    };
    // An explicit request (token exchange asking for a JWT) wins, then what
    // the resource accepts, then the client's setting.
    let resource_format = tenant
        .resource(spec.resource)
        .and_then(|r| r.settings.access_token_format);
    let format = spec
        .format
        .or(resource_format)
        .unwrap_or(spec.client.meta.access_token_format);
    let token = match format {
        TokenFormat::Jwt => tenant.keys.sign(ACCESS_TOKEN_TYP, &claims).map_err(|e| {
            OAuthError::server_error(format!("could not sign the access token: {e}"))
        })?,
        TokenFormat::Opaque => {
            let handle = Handle::generate();
            record.token_hash = Some(handle.hash());
            record.claims = Some(
                serde_json::to_string(&claims)
                    .map_err(|e| OAuthError::server_error(e.to_string()))?,
            );
            handle.expose().to_string()
        }
    };
    let record = (record.token_hash.is_some() || record.grant_id.is_some()).then_some(record);
    Ok((
        MintedAccessToken {
            token,
            format,
            expires_in: ttl,
            claims,
        },
        record,
    ))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub iat: i64,
    pub exp: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(flatten)]
    pub user: serde_json::Map<String, serde_json::Value>,
}

/// OIDC Core §3.1.3.6: the left half of the hash of the access token, with
/// the hash of the signing algorithm (SHA-512 for Ed25519).
pub fn at_hash(alg: &str, access_token: &str) -> String {
    let digest: Vec<u8> = if alg == "EdDSA" {
        Sha512::digest(access_token.as_bytes()).to_vec()
    } else {
        Sha256::digest(access_token.as_bytes()).to_vec()
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// The user claims the granted scopes release (OIDC Core §5.4).
pub fn released_claims(
    scope: &ScopeSet,
    user: &UserClaims,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    if scope.contains("email") {
        if let Some(email) = &user.email {
            out.insert("email".into(), email.clone().into());
            out.insert("email_verified".into(), user.email_verified.into());
        }
    }
    if scope.contains("profile") {
        if let Some(name) = &user.name {
            out.insert("name".into(), name.clone().into());
        }
        if !user.groups.is_empty() {
            out.insert("groups".into(), user.groups.clone().into());
        }
    }
    out
}

pub struct IdTokenSpec<'a> {
    pub client_id: &'a str,
    pub subject: &'a str,
    pub grant: &'a GrantData,
    pub scope: &'a ScopeSet,
    pub nonce: Option<&'a str>,
    pub access_token: &'a str,
}

pub fn mint_id_token(
    app: &AppState,
    tenant: &Tenant,
    spec: IdTokenSpec<'_>,
) -> OAuthResult<String> {
    let now = app.now();
    let alg = tenant.keys.active().alg.as_str().to_string();
    let claims = IdTokenClaims {
        iss: tenant.issuer.clone(),
        sub: spec.subject.to_string(),
        aud: spec.client_id.to_string(),
        azp: spec.client_id.to_string(),
        iat: now,
        exp: now + tenant.policy().id_token_ttl,
        auth_time: spec.grant.auth_time,
        nonce: spec.nonce.map(str::to_string),
        at_hash: Some(at_hash(&alg, spec.access_token)),
        sid: spec.grant.sid.clone(),
        user: released_claims(spec.scope, &spec.grant.user),
    };
    tenant
        .keys
        .sign("JWT", &claims)
        .map_err(|e| OAuthError::server_error(format!("could not sign the ID token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_oidc_example() {
        // OIDC Core A.3 example: access token and its at_hash (RS256).
        assert_eq!(
            at_hash("RS256", "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn email_released_only_with_email_scope() {
        let user = UserClaims {
            email: Some("a@b".into()),
            email_verified: true,
            name: Some("A".into()),
            groups: vec![],
            extra: Default::default(),
        };
        let none = released_claims(&ScopeSet::parse("openid").unwrap(), &user);
        assert!(none.is_empty());
        let some = released_claims(&ScopeSet::parse("openid email").unwrap(), &user);
        assert_eq!(some.get("email").unwrap(), "a@b");
        assert!(some.get("name").is_none());
    }
}
