//! The enterprise side of MCP's enterprise-managed authorization: a token
//! exchange (RFC 8693) of the user's ID token for an Identity Assertion JWT
//! Authorization Grant (ID-JAG, draft-ietf-oauth-identity-assertion-authz-grant)
//! that another authorization server redeems with the JWT bearer grant.

use serde_json::{json, Value};

use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::oauth::resource;
use crate::oauth::scope::ScopeSet;
use crate::tenants::{ExchangeRule, Tenant};
use crate::tokens::secret::{ct_eq, random_id};
use crate::tokens::{IssuedFormat, TokenResponse};
use crate::AppState;

use super::token_exchange::{Refusal, TYPE_ID_JAG, TYPE_ID_TOKEN};

pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// Short-lived by design: it is redeemed at once.
pub const ID_JAG_TTL: i64 = 300;

fn check_subject_type(params: &Params) -> OAuthResult<()> {
    match params.get("subject_token_type") {
        Some(TYPE_ID_TOKEN) => Ok(()),
        Some(other) => Err(OAuthError::invalid_request(format!(
            "an ID-JAG is issued for an ID token ({TYPE_ID_TOKEN}), not '{other}'"
        ))),
        None => Err(OAuthError::invalid_request(
            "missing required parameter 'subject_token_type'",
        )),
    }
}

/// `audience`: the issuer of the authorization server that will redeem it.
fn check_audience(params: &Params) -> OAuthResult<String> {
    match params.get_all("audience").as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(OAuthError::invalid_target(
            "audience (the target authorization server's issuer) is required for an ID-JAG",
        )),
        _ => Err(OAuthError::invalid_target("name one audience")),
    }
}

fn check_policy<'t>(
    tenant: &'t Tenant,
    client: &Client,
    audience: &str,
) -> OAuthResult<&'t ExchangeRule> {
    tenant
        .settings
        .token_exchange
        .iter()
        .filter(|r| {
            r.clients
                .iter()
                .any(|c| (c == "*" && !client.meta.dynamic) || c == &client.client_id)
        })
        .filter(|r| r.subject_token_types.iter().any(|t| t == TYPE_ID_TOKEN))
        .find(|r| r.audiences.iter().any(|a| a == audience))
        .ok_or_else(|| {
            OAuthError::invalid_target(format!(
                "the exchange policy does not allow this client an ID-JAG for '{audience}'"
            ))
        })
}

/// The subject ID token: one this tenant issued to the very client now
/// presenting it, or one an upstream identity provider of this tenant (a
/// connector) issued, verified against that provider's keys. Returns the
/// broker subject and the token's `auth_time`, if any.
pub(crate) async fn check_id_token(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    note: &mut Refusal,
) -> OAuthResult<(String, Option<Value>)> {
    let iss = unverified_claim(token, "iss")
        .ok_or_else(|| OAuthError::invalid_request("subject_token is not an ID token"))?;
    let subject = if ct_eq(&iss, &tenant.issuer) {
        let claims = check_own_id_token(app, tenant, client, token, note)?;
        claims["sub"].as_str().unwrap_or_default().to_string()
    } else {
        let connector = tenant
            .connectors
            .iter()
            .find(|c| c.issues(&iss))
            .ok_or_else(|| OAuthError::invalid_request("subject_token comes from an issuer that is neither this one nor one of its identity providers"))?;
        let identity = connector
            .verify_presented_id_token(token, &client.client_id)
            .await
            .map_err(|e| refused_by(connector.as_ref(), e, note))?;
        crate::tenants::identity::broker_subject(app, tenant, &identity).await?
    };
    note.subject = Some(subject.clone());
    check_not_revoked_since(app, tenant, &subject, token).await?;
    Ok((subject, unverified_claim_value(token, "auth_time")))
}

/// A token about the user issued before the user was revoked (by an
/// administrator, or the upstream refusing them) is not exchanged: what it
/// would yield was just ended. A token without `iat` counts as older.
pub(crate) async fn check_not_revoked_since(
    app: &AppState,
    tenant: &Tenant,
    subject: &str,
    token: &str,
) -> OAuthResult<()> {
    let Some(revoked_at) = app.store.subject_revoked_at(&tenant.id, subject).await? else {
        return Ok(());
    };
    let issued_at = unverified_claim_value(token, "iat")
        .and_then(|v| v.as_i64())
        .unwrap_or(i64::MIN);
    if issued_at <= revoked_at {
        return Err(OAuthError::invalid_request(
            "subject_token was issued before the user's access was revoked; the user must sign in again",
        ));
    }
    Ok(())
}

/// A connector refused a presented subject token: say which and why.
pub(crate) fn refused_by(
    connector: &dyn gatehouse_connectors::Connector,
    e: gatehouse_connectors::ConnectorError,
    note: &mut Refusal,
) -> OAuthError {
    let error = OAuthError::invalid_request(format!(
        "subject_token was refused by the '{}' identity provider check: {e}",
        connector.id()
    ));
    match e {
        gatehouse_connectors::ConnectorError::OtherClient(_) => {
            note.foreign("subject_of_another_client", error)
        }
        _ => error,
    }
}

fn unverified_claim_value(token: &str, name: &str) -> Option<Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get(name)
        .cloned()
}

/// Only to route the token to the right verifier; never trusted as such.
pub(crate) fn unverified_claim(token: &str, name: &str) -> Option<String> {
    unverified_claim_value(token, name).and_then(|v| v.as_str().map(str::to_string))
}

/// One of this tenant's ID tokens, issued to the client presenting it: its
/// only audience (and `azp`, when present) is that client.
fn check_own_id_token(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    note: &mut Refusal,
) -> OAuthResult<Value> {
    let claims: Value = tenant
        .keys
        .verify(token, Some("JWT"), app.now())
        .map_err(|_| {
            OAuthError::invalid_request(
                "subject_token is not a valid, unexpired ID token of this issuer",
            )
        })?;
    let is_client = |v: &Value| v.as_str().is_some_and(|a| ct_eq(a, &client.client_id));
    let aud_ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.len() == 1 && is_client(&list[0]),
        Some(one) => is_client(one),
        None => false,
    };
    let azp_ok = claims.get("azp").is_none_or(is_client);
    if !aud_ok || !azp_ok {
        return Err(note.foreign(
            "subject_of_another_client",
            OAuthError::invalid_request("subject_token was issued to another client"),
        ));
    }
    if claims.get("sub").and_then(Value::as_str).is_none() {
        return Err(OAuthError::invalid_request("subject_token has no sub"));
    }
    Ok(claims)
}

pub async fn issue(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
    note: &mut Refusal,
) -> OAuthResult<TokenResponse> {
    if client.meta.is_public() {
        return Err(OAuthError::unauthorized_client(
            "an ID-JAG needs an authenticated (confidential) client",
        ));
    }
    let subject_token = params
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'subject_token'"))?;
    check_subject_type(params)?;
    let audience = check_audience(params)?;
    let rule = check_policy(tenant, client, &audience)?;
    if params.contains("actor_token") {
        // The draft does not use actor tokens; none may ride along unchecked.
        return Err(OAuthError::invalid_request(
            "actor_token is not used when requesting an ID-JAG",
        ));
    }
    let (subject, auth_time) = check_id_token(app, tenant, client, subject_token, note).await?;
    let resource = match params.get_all("resource").as_slice() {
        [] => None,
        [one] => Some(
            resource::canonicalize(one).map_err(|e| OAuthError::invalid_target(e.to_string()))?,
        ),
        _ => return Err(OAuthError::invalid_target("name one resource")),
    };
    let scope = match params.get("scope") {
        Some(s) => Some(ScopeSet::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?),
        None => None,
    };
    let now = app.now();
    let mut claims = json!({
        "iss": tenant.issuer,
        "sub": subject,
        "aud": audience,
        "client_id": rule.target_client_id.clone().unwrap_or_else(|| client.client_id.clone()),
        "jti": random_id(),
        "iat": now,
        "exp": now + ID_JAG_TTL,
    });
    if let Some(obj) = claims.as_object_mut() {
        if let Some(r) = &resource {
            obj.insert("resource".into(), r.clone().into());
        }
        if let Some(s) = &scope {
            obj.insert("scope".into(), s.to_string().into());
        }
        if let Some(t) = auth_time {
            obj.insert("auth_time".into(), t);
        }
    }
    let jwt = tenant
        .keys
        .sign(ID_JAG_TYP, &claims)
        .map_err(|e| OAuthError::server_error(format!("could not sign the ID-JAG: {e}")))?;
    app.audit.record(
        tenant,
        "id_jag",
        "issued",
        Some(&client.client_id),
        Some(&subject),
        None,
        json!({"audience": audience, "resource": resource}),
    );
    Ok(TokenResponse {
        access_token: jwt,
        token_type: "N_A",
        expires_in: ID_JAG_TTL,
        scope: scope.map(|s| s.to_string()).unwrap_or_default(),
        refresh_token: None,
        id_token: None,
        issued_token_type: Some(TYPE_ID_JAG),
        format: IssuedFormat::IdJag,
    })
}
