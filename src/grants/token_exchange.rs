//! grant_type=urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693).
//!
//! An agent (the authenticated client) exchanges a user's Gatehouse access
//! token for one bound to another MCP server, optionally with its own actor
//! token, which puts it in the `act` chain (§4.1). The tenant's exchange
//! policy says which clients may exchange which token types for which
//! resources. Following §2.2.2, a subject or actor token that is invalid or
//! unacceptable by policy is `invalid_request`; a bad target is
//! `invalid_target`; a widened scope is `invalid_scope`.

use serde_json::{json, Value};

use crate::endpoints::token::TokenResponse;
use crate::http::SourceAddr;
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::oauth::resource;
use crate::oauth::scope::ScopeSet;
use crate::store::GrantRecord;
use crate::tenants::{ExchangeRule, Tenant, TokenFormat};
use crate::tokens::inspect::{inspect_access_token, Inspected};
use crate::tokens::secret::{ct_eq, random_id};
use crate::tokens::{
    copied_claims, mint_access_token, AccessClaims, AccessTokenSpec, GrantData, UserClaims,
};
use crate::AppState;

pub use crate::tenants::GRANT_TOKEN_EXCHANGE;
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TYPE_REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
pub const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TYPE_ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// Subject and actor token types this server can verify itself.
const VERIFIABLE_TYPES: [&str; 2] = [TYPE_ACCESS_TOKEN, TYPE_JWT];

/// A validated exchange request, filled in by the checks below in order.
struct Exchange {
    subject_type: String,
    requested_type: String,
    target: String,
}

fn check_client_is_confidential(client: &Client) -> OAuthResult<()> {
    if client.meta.is_public() {
        return Err(OAuthError::unauthorized_client(
            "token exchange needs an authenticated (confidential) client",
        ));
    }
    Ok(())
}

fn check_token_types(params: &Params) -> OAuthResult<(String, String)> {
    let subject_type = params.get("subject_token_type").ok_or_else(|| {
        OAuthError::invalid_request("missing required parameter 'subject_token_type'")
    })?;
    if !VERIFIABLE_TYPES.contains(&subject_type) && subject_type != TYPE_ID_TOKEN {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type '{subject_type}' is not supported; use {TYPE_ACCESS_TOKEN}, {TYPE_JWT} or {TYPE_ID_TOKEN}"
        )));
    }
    if params.contains("actor_token") {
        match params.get("actor_token_type") {
            Some(t) if VERIFIABLE_TYPES.contains(&t) => {}
            Some(t) => {
                return Err(OAuthError::invalid_request(format!(
                    "actor_token_type '{t}' is not supported"
                )))
            }
            None => {
                return Err(OAuthError::invalid_request(
                    "actor_token_type is required with actor_token",
                ))
            }
        }
    } else if params.contains("actor_token_type") {
        return Err(OAuthError::invalid_request(
            "actor_token_type was sent without actor_token",
        ));
    }
    let requested = params
        .get("requested_token_type")
        .unwrap_or(TYPE_ACCESS_TOKEN);
    if ![TYPE_ACCESS_TOKEN, TYPE_JWT, TYPE_REFRESH_TOKEN].contains(&requested) {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type '{requested}' is not supported"
        )));
    }
    Ok((subject_type.to_string(), requested.to_string()))
}

/// `resource` (a URI) and `audience` (here: a resource URI too) name the one
/// MCP server the new token is for.
fn check_target(params: &Params, tenant: &Tenant) -> OAuthResult<String> {
    let mut named: Vec<String> = Vec::new();
    for value in params
        .get_all("resource")
        .into_iter()
        .chain(params.get_all("audience"))
    {
        let canon = resource::canonicalize(value).map_err(|_| {
            OAuthError::invalid_target(format!(
                "'{value}' is not a resource of this authorization server"
            ))
        })?;
        if !named.contains(&canon) {
            named.push(canon);
        }
    }
    let target = match named.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(OAuthError::invalid_target(
                "name the target MCP server with resource or audience",
            ))
        }
        _ => {
            return Err(OAuthError::invalid_target(
                "exchange for one resource per request",
            ))
        }
    };
    if tenant.resource(&target).is_none() {
        return Err(OAuthError::invalid_target(format!(
            "'{target}' is not a resource of this authorization server"
        )));
    }
    Ok(target)
}

/// The tenant's exchange policy: some rule must allow this client, this
/// subject token type and this target.
fn check_policy<'t>(
    tenant: &'t Tenant,
    client: &Client,
    ex: &Exchange,
) -> OAuthResult<&'t ExchangeRule> {
    let for_client: Vec<&ExchangeRule> = tenant
        .settings
        .token_exchange
        .iter()
        // "*" means any admin-registered client; a self-registered one must be named.
        .filter(|r| {
            r.clients
                .iter()
                .any(|c| (c == "*" && !client.meta.dynamic) || c == &client.client_id)
        })
        .collect();
    if for_client.is_empty() {
        return Err(OAuthError::invalid_request(
            "the tenant's exchange policy does not allow this client to exchange tokens",
        ));
    }
    let for_type: Vec<&ExchangeRule> = for_client
        .into_iter()
        .filter(|r| r.subject_token_types.iter().any(|t| t == &ex.subject_type))
        .collect();
    if for_type.is_empty() {
        return Err(OAuthError::invalid_request(
            "the exchange policy does not allow this subject_token_type for this client",
        ));
    }
    let rule = for_type
        .into_iter()
        .find(|r| {
            r.resources
                .iter()
                .any(|res| res == "*" || resource::same_resource(res, &ex.target))
        })
        .ok_or_else(|| {
            OAuthError::invalid_target(format!(
                "the exchange policy does not allow tokens for '{}' to this client",
                ex.target
            ))
        })?;
    if ex.requested_type == TYPE_REFRESH_TOKEN && !rule.allow_refresh_token {
        return Err(OAuthError::invalid_request(
            "the exchange policy does not allow issuing a refresh token",
        ));
    }
    Ok(rule)
}

async fn verified(
    app: &AppState,
    tenant: &Tenant,
    token: &str,
    what: &str,
) -> OAuthResult<AccessClaims> {
    match inspect_access_token(app, tenant, token).await? {
        Inspected::Active(claims) => Ok(*claims),
        Inspected::Inactive => Err(OAuthError::invalid_request(format!(
            "{what} is invalid, expired, revoked or not issued by this tenant"
        ))),
    }
}

/// An ID token as the subject (this tenant's own, issued to this client, or
/// one from an upstream provider of a connector, verified against its keys).
async fn id_token_subject(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    target: &str,
) -> OAuthResult<AccessClaims> {
    let (sub, auth_time) = super::id_jag::check_id_token(app, tenant, client, token).await?;
    let copied = if tenant.settings.access_token_claims.is_empty() {
        Default::default()
    } else {
        // The claims the connector reported at the user's latest sign-in.
        let stored = app.store.get_identity_by_subject(&tenant.id, &sub).await?;
        let user: UserClaims = stored
            .and_then(|rec| serde_json::from_str(&rec.claims).ok())
            .unwrap_or_default();
        copied_claims(tenant, &user)
    };
    Ok(upstream_subject_claims(
        app,
        tenant,
        client,
        UpstreamSubject {
            sub,
            auth_time: auth_time.and_then(|v| v.as_i64()),
            copied,
        },
        target,
    ))
}

/// An access token as the subject: one this tenant issued, or a JWT access
/// token of a connector's upstream provider, verified against its keys and
/// the connector's `access_token_audiences`.
async fn access_token_subject(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    target: &str,
) -> OAuthResult<AccessClaims> {
    if let Inspected::Active(claims) = inspect_access_token(app, tenant, token).await? {
        return Ok(*claims);
    }
    let issuer = super::id_jag::unverified_claim(token, "iss");
    let connector = issuer.as_deref().and_then(|iss| {
        tenant
            .connectors
            .iter()
            .find(|c| !ct_eq(iss, &tenant.issuer) && c.issues(iss))
    });
    let Some(connector) = connector else {
        return Err(OAuthError::invalid_request(
            "subject_token is invalid, expired, revoked, or from an issuer that is neither this tenant nor one of its identity providers",
        ));
    };
    let identity = connector
        .verify_presented_access_token(token)
        .await
        .map_err(|e| super::id_jag::refused_by(connector.as_ref(), e))?;
    let sub = crate::tenants::identity::broker_subject(app, tenant, &identity).await?;
    let copied = copied_claims(tenant, &crate::tenants::identity::user_claims(&identity));
    Ok(upstream_subject_claims(
        app,
        tenant,
        client,
        UpstreamSubject {
            sub,
            auth_time: None,
            copied,
        },
        target,
    ))
}

/// Who an ID token or upstream access token names.
struct UpstreamSubject {
    sub: String,
    auth_time: Option<i64>,
    copied: serde_json::Map<String, Value>,
}

/// The user an upstream (or ID) token names, holding what the policy lets
/// this client have at the target. It carries no token id, so what is
/// minted hangs off no grant.
fn upstream_subject_claims(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    who: UpstreamSubject,
    target: &str,
) -> AccessClaims {
    let scope = crate::oauth::authorization_request::allowed_scopes(
        tenant,
        client,
        &[target.to_string()],
        false,
    );
    AccessClaims {
        iss: tenant.issuer.clone(),
        sub: who.sub,
        aud: target.to_string(),
        client_id: client.client_id.clone(),
        scope: scope.to_string(),
        jti: String::new(),
        iat: app.now(),
        exp: app.now(),
        auth_time: who.auth_time,
        act: None,
        may_act: None,
        copied: who.copied,
    }
}

/// RFC 8693 §4.4: when the subject token names who may act for it, the
/// actor must be that party.
fn check_may_act(subject: &AccessClaims, actor: &AccessClaims) -> OAuthResult<()> {
    let Some(may_act) = &subject.may_act else {
        return Ok(());
    };
    let sub_ok = may_act
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(|s| s == actor.sub);
    let client_ok = may_act
        .get("client_id")
        .and_then(Value::as_str)
        .is_none_or(|c| c == actor.client_id);
    if sub_ok && client_ok {
        Ok(())
    } else {
        Err(OAuthError::invalid_request(
            "the actor is not allowed to act for this subject (may_act)",
        ))
    }
}

/// The new `act`: the actor, wrapping whatever chain the subject token had.
fn actor_claim(actor: &AccessClaims, prior: Option<&Value>) -> Value {
    let mut act = json!({ "sub": actor.sub, "client_id": actor.client_id });
    if let (Some(prior), Some(obj)) = (prior, act.as_object_mut()) {
        obj.insert("act".into(), prior.clone());
    }
    act
}

fn check_scope(
    params: &Params,
    tenant: &Tenant,
    subject: &AccessClaims,
    target: &str,
) -> OAuthResult<ScopeSet> {
    let held = ScopeSet::parse(&subject.scope).unwrap_or_default();
    let target_scopes: ScopeSet = tenant
        .resource(target)
        .map(|r| r.settings.scopes.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let available = held.intersection(&target_scopes);
    let refusal = format!("scope may only narrow what the subject token holds for '{target}'");
    let scope = super::scope_within(params, &available, available.clone(), &refusal)?;
    if scope.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "the subject token holds no scope that applies to '{target}'"
        )));
    }
    Ok(scope)
}

pub async fn grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
    source: SourceAddr,
) -> OAuthResult<TokenResponse> {
    if params.get("requested_token_type") == Some(TYPE_ID_JAG) {
        return super::id_jag::issue(app, tenant, client, params).await;
    }
    check_client_is_confidential(client)?;
    let subject_token = params
        .get("subject_token")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'subject_token'"))?;
    let (subject_type, requested_type) = check_token_types(params)?;
    let target = check_target(params, tenant)?;
    let ex = Exchange {
        subject_type,
        requested_type,
        target,
    };
    check_policy(tenant, client, &ex)?;

    let subject = if ex.subject_type == TYPE_ID_TOKEN {
        id_token_subject(app, tenant, client, subject_token, &ex.target).await?
    } else {
        access_token_subject(app, tenant, client, subject_token, &ex.target).await?
    };
    let act = match params.get("actor_token") {
        Some(actor_token) => {
            let actor = verified(app, tenant, actor_token, "actor_token").await?;
            check_may_act(&subject, &actor)?;
            Some(actor_claim(&actor, subject.act.as_ref()))
        }
        None => subject.act.clone(),
    };
    let scope = check_scope(params, tenant, &subject, &ex.target)?;
    // A subject that is a client, not a person (e.g. a client_credentials
    // token): no user is involved, so the machine-grant rule decides.
    super::check_machine_subject(
        app,
        tenant,
        client,
        GRANT_TOKEN_EXCHANGE,
        &subject.sub,
        &ex.target,
        &scope,
        source,
    )
    .await?;
    // Derived tokens hang off the subject's grant: revoking the user's
    // authorization also revokes what agents obtained from it.
    let grant_id = if subject.jti.is_empty() {
        None
    } else {
        app.store
            .access_token_grant_id(&tenant.id, &subject.jti)
            .await?
    };

    if ex.requested_type == TYPE_REFRESH_TOKEN {
        let response = issue_refresh(
            app,
            tenant,
            client,
            &subject,
            &scope,
            &ex.target,
            grant_id.as_deref(),
        )
        .await?;
        app.audit.record(
            tenant,
            "token_exchange",
            "success",
            Some(&client.client_id),
            Some(&subject.sub),
            None,
            json!({"target": ex.target, "scope": scope.to_string(), "issued": "refresh_token"}),
        );
        return Ok(response);
    }
    let access = mint_access_token(
        app,
        tenant,
        AccessTokenSpec {
            client,
            subject: &subject.sub,
            scope: &scope,
            resource: &ex.target,
            grant_id: grant_id.as_deref(),
            auth_time: subject.auth_time,
            act,
            format: (ex.requested_type == TYPE_JWT).then_some(TokenFormat::Jwt),
            copied: subject.copied.clone(),
        },
    )
    .await?;
    app.audit.record(
        tenant,
        "token_exchange",
        "success",
        Some(&client.client_id),
        Some(&subject.sub),
        None,
        json!({"target": ex.target, "scope": scope.to_string(), "actor": params.contains("actor_token")}),
    );
    Ok(TokenResponse {
        issued_token_type: Some(if ex.requested_type == TYPE_JWT {
            TYPE_JWT
        } else {
            TYPE_ACCESS_TOKEN
        }),
        ..TokenResponse::bearer(access, &scope)
    })
}

/// requested_token_type=refresh_token: a new grant for this client, whose
/// refresh token is the issued token (RFC 8693 §2.2.1 carries it in
/// `access_token`, with token_type N_A).
async fn issue_refresh(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &AccessClaims,
    scope: &ScopeSet,
    target: &str,
    parent_grant: Option<&str>,
) -> OAuthResult<TokenResponse> {
    let now = app.now();
    // The derived grant is a child of the user's: it is revoked with it and
    // never outlives it.
    let parent = match parent_grant {
        Some(id) => app.store.get_grant(id).await?,
        None => None,
    };
    let parent_expires = parent.as_ref().map(|g| g.expires_at);
    // It rests on the same upstream session as the user's grant.
    let connector_id = parent
        .and_then(|g| serde_json::from_str::<GrantData>(&g.data).ok())
        .and_then(|d| d.connector_id);
    let ttl = client
        .meta
        .refresh_token_ttl
        .unwrap_or(tenant.policy().refresh_token_ttl);
    let data = GrantData {
        scope: scope.to_string(),
        resources: vec![target.to_string()],
        auth_time: subject.auth_time.unwrap_or(now),
        sid: None,
        user: Default::default(),
        connector_id,
    };
    let grant = GrantRecord {
        id: random_id(),
        tenant_id: tenant.id.clone(),
        client_id: client.client_id.clone(),
        subject: subject.sub.clone(),
        data: serde_json::to_string(&data).map_err(|e| OAuthError::server_error(e.to_string()))?,
        created_at: now,
        expires_at: parent_expires.map_or(now + ttl, |p| p.min(now + ttl)),
        revoked_at: None,
        parent_id: parent_grant.map(str::to_string),
    };
    app.store.create_grant(&grant).await?;
    let refresh = super::refresh_token::issue_refresh_token(app, tenant, client, &grant.id).await?;
    Ok(TokenResponse {
        access_token: refresh,
        token_type: "N_A",
        expires_in: grant.expires_at - now,
        scope: scope.to_string(),
        refresh_token: None,
        id_token: None,
        issued_token_type: Some(TYPE_REFRESH_TOKEN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, client_id: &str) -> AccessClaims {
        AccessClaims {
            iss: "https://as".into(),
            sub: sub.into(),
            aud: "https://rs".into(),
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

    #[test]
    fn may_act_allows_the_named_actor() {
        let mut subject = claims("user", "app");
        subject.may_act = Some(json!({"sub": "agent"}));
        assert!(check_may_act(&subject, &claims("agent", "agent")).is_ok());
    }

    #[test]
    fn may_act_refuses_another_actor() {
        let mut subject = claims("user", "app");
        subject.may_act = Some(json!({"sub": "agent", "client_id": "agent"}));
        let err = check_may_act(&subject, &claims("intruder", "intruder")).unwrap_err();
        assert_eq!(err.code.as_str(), "invalid_request");
    }

    #[test]
    fn no_may_act_allows_any_actor() {
        assert!(check_may_act(&claims("user", "app"), &claims("x", "y")).is_ok());
    }

    #[test]
    fn act_chain_nests_the_prior_actor() {
        let prior = json!({"sub": "first"});
        let act = actor_claim(&claims("second", "second"), Some(&prior));
        assert_eq!(act["sub"], "second");
        assert_eq!(act["act"]["sub"], "first");
    }
}
