//! grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523) for the
//! ID-JAG profile: the MCP side of enterprise-managed authorization. An
//! assertion from a trusted issuer becomes an access token for one of our
//! resources. Any mismatch is `invalid_grant`; no refresh token is issued.

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use serde::Deserialize;
use serde_json::Value;

use crate::oauth::authorization_request::{allowed_resource, allowed_scopes};
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::oauth::resource;
use crate::oauth::scope::ScopeSet;
use crate::store::IdentityRecord;
use crate::tenants::{Tenant, TrustedIssuer};
use crate::tokens::secret::ct_eq;
use crate::tokens::TokenResponse;
use crate::tokens::{mint_access_token, AccessTokenSpec};
use crate::AppState;

use super::id_jag::ID_JAG_TYP;

const SKEW: i64 = 60;
/// An ID-JAG is short-lived; refuse ones that claim to live long.
const MAX_LIFETIME: i64 = 3600;
const DEFAULT_ALGS: [&str; 3] = ["ES256", "RS256", "EdDSA"];

#[derive(Deserialize)]
struct IdJagClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Option<Value>,
    client_id: Option<String>,
    jti: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(default)]
    scope: Option<String>,
}

fn invalid(why: &str) -> OAuthError {
    OAuthError::invalid_grant(format!("the assertion was refused: {why}"))
}

/// Trusted issuers' key sets, by jwks_uri, cached for five minutes.
fn jwks_cache() -> &'static Cache<String, JwkSet> {
    static CACHE: OnceLock<Cache<String, JwkSet>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Cache::builder()
            .max_capacity(1000)
            .time_to_live(Duration::from_secs(300))
            .build()
    })
}

async fn fetch_jwks(uri: &str) -> OAuthResult<JwkSet> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|_| OAuthError::unavailable())?;
    let res = http
        .get(uri)
        .send()
        .await
        .map_err(|_| invalid("the issuer's keys could not be fetched"))?;
    if !res.status().is_success() {
        return Err(invalid("the issuer's keys could not be fetched"));
    }
    res.json::<JwkSet>()
        .await
        .map_err(|_| invalid("the issuer's key set is malformed"))
}

/// The issuer's keys; an unknown `kid` fetches the set once more.
async fn issuer_keys(issuer: &TrustedIssuer, kid: Option<&str>) -> OAuthResult<JwkSet> {
    if let Some(jwks) = &issuer.jwks {
        return serde_json::from_value(jwks.clone())
            .map_err(|_| invalid("the configured keys are malformed"));
    }
    let uri = issuer
        .jwks_uri
        .as_deref()
        .ok_or_else(|| invalid("no keys are configured for this issuer"))?;
    let cached = jwks_cache().get(uri).await;
    crate::telemetry::metrics::metrics().cache("issuer_jwks", cached.is_some());
    if let Some(cached) = cached {
        if kid.is_none_or(|k| cached.find(k).is_some()) {
            return Ok(cached);
        }
    }
    let fresh = fetch_jwks(uri).await?;
    jwks_cache().insert(uri.to_string(), fresh.clone()).await;
    Ok(fresh)
}

fn unverified_issuer(assertion: &str) -> OAuthResult<String> {
    use base64::Engine;
    let payload = assertion
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(|| invalid("not a JWT"))?;
    payload
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| invalid("no iss"))
}

async fn verify(app: &AppState, tenant: &Tenant, assertion: &str) -> OAuthResult<IdJagClaims> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| invalid("malformed JWT"))?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == ID_JAG_TYP || t == format!("application/{ID_JAG_TYP}")
    });
    if !typ_ok {
        return Err(invalid(&format!("typ must be {ID_JAG_TYP}")));
    }
    let iss = unverified_issuer(assertion)?;
    let issuer = tenant
        .settings
        .trusted_issuers
        .iter()
        .find(|t| ct_eq(&t.issuer, &iss))
        .ok_or_else(|| invalid("the issuer is not trusted by this authorization server"))?;
    let allowed: Vec<&str> = match &issuer.algorithms {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => DEFAULT_ALGS.to_vec(),
    };
    let alg_name = format!("{:?}", header.alg);
    if !allowed.contains(&alg_name.as_str())
        || matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        )
    {
        return Err(invalid("the signature algorithm is not allowed"));
    }
    let keys = issuer_keys(issuer, header.kid.as_deref()).await?;
    let candidates: Vec<_> = match &header.kid {
        Some(kid) => keys.find(kid).into_iter().collect(),
        None => keys.keys.iter().collect(),
    };
    let mut v = Validation::new(header.alg);
    v.validate_exp = false; // checked below against the server clock
    v.validate_nbf = false;
    // Checked below: this server's issuer alone, never "any of" an array.
    v.validate_aud = false;
    v.set_issuer(&[issuer.issuer.as_str()]);
    v.required_spec_claims = ["aud", "iss", "sub"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let claims = candidates
        .into_iter()
        .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
        .find_map(|key| jsonwebtoken::decode::<IdJagClaims>(assertion, &key, &v).ok())
        .map(|d| d.claims)
        .ok_or_else(|| invalid("signature or issuer did not verify"))?;
    crate::oauth::audience::check_sole_audience(
        claims.aud.as_ref(),
        &crate::oauth::audience::issuer_audiences(tenant),
    )
    .map_err(invalid)?;
    let now = app.now();
    let exp = claims.exp.ok_or_else(|| invalid("exp is required"))?;
    if exp + SKEW <= now {
        return Err(invalid("expired"));
    }
    let iat = claims.iat.ok_or_else(|| invalid("iat is required"))?;
    if iat - SKEW > now || exp - iat > MAX_LIFETIME {
        return Err(invalid("iat is in the future or the lifetime is too long"));
    }
    Ok(claims)
}

/// The resource the new token is for: the request's `resource` (or the
/// tenant default), which must be ours and, if the ID-JAG names resources,
/// one of them.
fn target_resource(
    tenant: &Tenant,
    client: &Client,
    params: &Params,
    claims: &IdJagClaims,
) -> OAuthResult<String> {
    let named: Vec<String> = match &claims.resource {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => return Err(invalid("resource is malformed")),
    };
    let requested = match params.get_all("resource").as_slice() {
        [one] => Some(
            resource::canonicalize(one).map_err(|e| OAuthError::invalid_target(e.to_string()))?,
        ),
        [] => None,
        _ => return Err(OAuthError::invalid_target("request one resource per token")),
    };
    let target = match (requested, named.as_slice()) {
        (Some(r), _) => r,
        (None, [one]) => {
            resource::canonicalize(one).map_err(|_| invalid("resource is not a valid URI"))?
        }
        (None, []) => tenant.settings.default_resource.clone().ok_or_else(|| {
            OAuthError::invalid_target("the resource parameter is required (RFC 8707)")
        })?,
        (None, _) => {
            return Err(OAuthError::invalid_target(
                "the assertion names several resources; pick one",
            ))
        }
    };
    if !named.is_empty() && !named.iter().any(|n| resource::same_resource(n, &target)) {
        return Err(invalid("the assertion is not for this resource"));
    }
    if tenant.resource(&target).is_none() {
        return Err(invalid(
            "the assertion's resource is not one of this authorization server's",
        ));
    }
    allowed_resource(tenant, client, &target)?;
    Ok(target)
}

pub async fn grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
) -> OAuthResult<TokenResponse> {
    let assertion = params
        .get("assertion")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'assertion'"))?;
    let claims = verify(app, tenant, assertion).await?;
    match &claims.client_id {
        Some(id) if ct_eq(id, &client.client_id) => {}
        _ => return Err(invalid("client_id does not match the authenticated client")),
    }
    let target = target_resource(tenant, client, params, &claims)?;
    // Granted = what the ID-JAG carries, within what this client may hold
    // for this resource; a request may narrow it further.
    let allowed = allowed_scopes(tenant, client, std::slice::from_ref(&target), false);
    let granted = match &claims.scope {
        Some(s) => ScopeSet::parse(s)
            .map_err(|_| invalid("scope is malformed"))?
            .intersection(&allowed),
        None => allowed.clone(),
    };
    let scope = match params.get("scope") {
        Some(s) => ScopeSet::parse(s)
            .map_err(|e| OAuthError::invalid_scope(e.to_string()))?
            .intersection(&granted),
        None => granted,
    };
    if scope.is_empty() {
        return Err(OAuthError::invalid_scope(
            "no requested scope is granted by the assertion for this resource",
        ));
    }
    // Single use: a jti is remembered until the assertion expires.
    let jti = claims
        .jti
        .as_deref()
        .ok_or_else(|| invalid("jti is required"))?;
    let exp = claims.exp.unwrap_or_default();
    if !app
        .store
        .remember_jti(
            &tenant.id,
            &format!("id-jag:{}", claims.iss),
            jti,
            exp + SKEW,
            app.now(),
        )
        .await?
    {
        crate::telemetry::metrics::metrics().replay_detected(&tenant.id, "assertion_replay");
        return Err(invalid("this assertion was already used"));
    }
    // The enterprise user becomes a stable subject here, per issuer.
    let subject = app
        .store
        .map_identity(
            &IdentityRecord {
                tenant_id: tenant.id.clone(),
                connector_id: format!("id-jag:{}", claims.iss),
                upstream_subject: claims.sub.clone(),
                subject: uuid::Uuid::new_v4().to_string(),
                claims: "{}".into(),
            },
            app.now(),
        )
        .await?;
    // An assertion issued before the user was revoked here is refused.
    if let Some(revoked_at) = app.store.subject_revoked_at(&tenant.id, &subject).await? {
        if claims.iat.unwrap_or(i64::MIN) <= revoked_at {
            return Err(invalid(
                "it was issued before the user's access was revoked here",
            ));
        }
    }
    // The token hangs off a grant of the user's subject, so revoking the
    // user ends it.
    let grant_id = user_grant(app, tenant, client, &subject, &scope, &target).await?;
    let access = mint_access_token(
        app,
        tenant,
        AccessTokenSpec {
            client,
            subject: &subject,
            scope: &scope,
            resource: &target,
            grant_id: Some(&grant_id),
            auth_time: None,
            act: None,
            format: None,
            copied: Default::default(),
        },
    )
    .await?;
    app.audit.record(
        tenant,
        "id_jag",
        "redeemed",
        Some(&client.client_id),
        Some(&subject),
        None,
        serde_json::json!({"issuer": claims.iss, "resource": target}),
    );
    Ok(TokenResponse::bearer(access, &scope))
}

/// A grant of the enterprise user for the redeemed assertion, living as
/// long as the access token it yields.
async fn user_grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &str,
    scope: &ScopeSet,
    target: &str,
) -> OAuthResult<String> {
    let now = app.now();
    let data = crate::tokens::GrantData {
        scope: scope.to_string(),
        resources: vec![target.to_string()],
        auth_time: now,
        sid: None,
        user: Default::default(),
        connector_id: None,
    };
    let grant = crate::store::GrantRecord {
        id: crate::tokens::secret::random_id(),
        tenant_id: tenant.id.clone(),
        client_id: client.client_id.clone(),
        subject: subject.to_string(),
        data: serde_json::to_string(&data).map_err(|e| OAuthError::server_error(e.to_string()))?,
        created_at: now,
        expires_at: now + crate::tokens::access_token_ttl(tenant, client, target),
        revoked_at: None,
        parent_id: None,
    };
    app.store.create_grant(&grant).await?;
    Ok(grant.id)
}
