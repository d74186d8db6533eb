//! One module per grant type behind the token endpoint.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod id_jag;
pub mod jwt_bearer;
pub mod refresh_token;
pub mod token_exchange;

use crate::audit::{SecurityEvent, Severity};
use crate::http::SourceAddr;
use crate::oauth::authorization_request::allowed_resource;
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::machine;
use crate::oauth::params::Params;
use crate::oauth::resource;
use crate::oauth::scope::{access_token_scope, ScopeSet};
use crate::store::IssuedRows;
use crate::telemetry::metrics::metrics;
use crate::tenants::{
    Tenant, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE,
    GRANT_JWT_BEARER, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE, OIDC_SCOPES, SUPPORTED_GRANTS,
};
use crate::tokens::TokenResponse;
use crate::tokens::{mint_id_token, prepare_access_token, AccessTokenSpec, GrantData, IdTokenSpec};
use crate::AppState;

use tracing::Instrument;

pub fn is_supported(grant_type: &str) -> bool {
    SUPPORTED_GRANTS.contains(&grant_type)
}

/// `source` is where the request came from, for the security events a
/// grant may raise.
pub async fn dispatch(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    grant_type: &str,
    params: &Params,
    source: SourceAddr,
) -> OAuthResult<TokenResponse> {
    let span = tracing::info_span!(
        "grant",
        otel.name = span_name(grant_type),
        tenant = %tenant.id,
        client_id = %client.client_id,
        error = tracing::field::Empty,
    );
    let issued = async {
        match grant_type {
            GRANT_AUTHORIZATION_CODE => {
                authorization_code::grant(app, tenant, client, params, source).await
            }
            GRANT_REFRESH_TOKEN => refresh_token::grant(app, tenant, client, params, source).await,
            GRANT_TOKEN_EXCHANGE => {
                token_exchange::grant(app, tenant, client, params, source).await
            }
            GRANT_DEVICE_CODE => device_code::grant(app, tenant, client, params).await,
            GRANT_JWT_BEARER => jwt_bearer::grant(app, tenant, client, params).await,
            GRANT_CLIENT_CREDENTIALS => {
                client_credentials::grant(app, tenant, client, params, source).await
            }
            other => Err(OAuthError::unsupported_grant_type(format!(
                "grant_type '{other}' is not supported"
            ))),
        }
    }
    .instrument(span.clone())
    .await;
    match &issued {
        Ok(response) => count_issued(tenant, grant_type, response),
        // The protocol error code only (`invalid_grant`, ...): never the
        // request's values.
        Err(e) => {
            span.record("error", e.code.as_str());
        }
    }
    if grant_type == GRANT_TOKEN_EXCHANGE {
        metrics().exchange_decision(&tenant.id, issued.is_ok());
    }
    issued
}

/// Every token a response carries, by grant type and format.
fn count_issued(tenant: &Tenant, grant_type: &str, issued: &TokenResponse) {
    let m = metrics();
    m.token_issued(&tenant.id, grant_type, issued.format.label());
    if issued.refresh_token.is_some() {
        m.token_issued(&tenant.id, grant_type, "refresh");
    }
    if issued.id_token.is_some() {
        m.token_issued(&tenant.id, grant_type, "id_token");
    }
}

/// The span of each grant, by grant type: `grant.authorization_code`, ...
fn span_name(grant_type: &str) -> &'static str {
    match grant_type {
        GRANT_AUTHORIZATION_CODE => "grant.authorization_code",
        GRANT_REFRESH_TOKEN => "grant.refresh_token",
        GRANT_TOKEN_EXCHANGE => "grant.token_exchange",
        GRANT_DEVICE_CODE => "grant.device_code",
        GRANT_JWT_BEARER => "grant.jwt_bearer",
        GRANT_CLIENT_CREDENTIALS => "grant.client_credentials",
        _ => "grant.unsupported",
    }
}

/// The one rule for every token issued without a user
/// (`oauth::machine::check_machine_grant`): a self-registered client gets
/// one only as the tenant's machine-client policy allows. A refusal is a
/// `machine_grant_refused` security event.
pub fn check_machine(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    grant_type: &str,
    resource: &str,
    scope: &ScopeSet,
    source: SourceAddr,
) -> OAuthResult<()> {
    machine::check_machine_grant(&tenant.settings.registration, client, resource, scope).map_err(
        |refusal| {
            app.audit.security(
                tenant,
                SecurityEvent {
                    kind: "machine_grant_refused",
                    severity: Severity::Low,
                    client_id: Some(&client.client_id),
                    subject: None,
                    source: Some(source),
                    detail: serde_json::json!({
                        "grant_type": grant_type,
                        "resource": resource,
                        "reason": refusal.reason(),
                    }),
                },
            );
            refusal.into()
        },
    )
}

/// Like [`check_machine`], for grants whose subject may be a user or a
/// client (token exchange, refresh of an exchanged grant): users are
/// broker subjects with an identity mapping; anything else (a client id,
/// as in a client_credentials token) is not a user. Only self-registered
/// clients are looked at.
#[allow(clippy::too_many_arguments)]
pub async fn check_machine_subject(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    grant_type: &str,
    subject: &str,
    resource: &str,
    scope: &ScopeSet,
    source: SourceAddr,
) -> OAuthResult<()> {
    if !client.meta.dynamic {
        return Ok(());
    }
    let is_user = app
        .store
        .get_identity_by_subject(&tenant.id, subject)
        .await?
        .is_some();
    if is_user {
        return Ok(());
    }
    check_machine(app, tenant, client, grant_type, resource, scope, source)
}

/// RFC 8707 at the token endpoint: the one resource this token is for,
/// chosen among those granted. Tokens carry exactly one audience.
pub fn pick_resource(params: &Params, granted: &[String]) -> OAuthResult<String> {
    let requested = params.get_all("resource");
    match requested.as_slice() {
        [] => match granted {
            [only] => Ok(only.clone()),
            _ => Err(OAuthError::invalid_target(
                "several resources were granted; name one with the resource parameter",
            )),
        },
        [one] => {
            let canon = resource::canonicalize(one)
                .map_err(|e| OAuthError::invalid_target(e.to_string()))?;
            if granted.contains(&canon) {
                Ok(canon)
            } else {
                Err(OAuthError::invalid_target(format!(
                    "'{canon}' was not part of this grant"
                )))
            }
        }
        _ => Err(OAuthError::invalid_target("request one resource per token")),
    }
}

/// Checks a resource named by a client_credentials request.
pub fn resource_for_client(
    tenant: &Tenant,
    client: &Client,
    params: &Params,
) -> OAuthResult<String> {
    let requested = params.get_all("resource");
    let canon = match requested.as_slice() {
        [] => tenant.settings.default_resource.clone().ok_or_else(|| {
            OAuthError::invalid_target("the resource parameter is required (RFC 8707)")
        })?,
        [one] => {
            resource::canonicalize(one).map_err(|e| OAuthError::invalid_target(e.to_string()))?
        }
        _ => return Err(OAuthError::invalid_target("request one resource per token")),
    };
    allowed_resource(tenant, client, &canon)?;
    Ok(canon)
}

/// The part of a granted scope that belongs in a token for `resource`:
/// that resource's scopes plus the OIDC ones about the user, never the
/// grant-only ones (`offline_access`, see [`access_token_scope`]).
pub fn scope_for_resource(tenant: &Tenant, granted: &ScopeSet, resource: &str) -> ScopeSet {
    let mut relevant: ScopeSet = OIDC_SCOPES.iter().copied().collect();
    if let Some(r) = tenant.resource(resource) {
        relevant = relevant.union(&r.settings.scopes.iter().map(String::as_str).collect());
    }
    access_token_scope(&granted.intersection(&relevant))
}

/// The scope a token request ends with: the requested `scope` when every
/// value is within `allowed` (else `invalid_scope`, saying why through
/// `refusal`), or `default` when none was requested. Refresh (RFC 6749 §6),
/// client_credentials and token exchange all follow this rule.
pub fn scope_within(
    params: &Params,
    allowed: &ScopeSet,
    default: ScopeSet,
    refusal: &str,
) -> OAuthResult<ScopeSet> {
    let Some(s) = params.get("scope") else {
        return Ok(default);
    };
    let requested = ScopeSet::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    let extra = requested.difference(allowed);
    if extra.is_empty() {
        Ok(requested)
    } else {
        Err(OAuthError::invalid_scope(format!("{refusal}: {extra}")))
    }
}

/// A user's grant being redeemed (authorization code or device code).
pub struct UserGrant<'a> {
    pub subject: &'a str,
    pub grant_id: &'a str,
    pub grant: &'a GrantData,
    /// The grant's end: its refresh tokens live no longer.
    pub expires_at: i64,
    pub nonce: Option<&'a str>,
}

/// The tokens a user's grant yields, stored (the device grant).
pub async fn issue_user_tokens(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    user: UserGrant<'_>,
    params: &Params,
) -> OAuthResult<TokenResponse> {
    let (response, rows) = prepare_user_tokens(app, tenant, client, user, params)?;
    app.store.put_issued(&rows).await?;
    Ok(response)
}

/// The tokens a user's grant yields: an access token for one of its
/// resources, a refresh token if the client may refresh, an ID token with
/// `openid`; and the rows the store must hold before they are sent.
pub fn prepare_user_tokens(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    user: UserGrant<'_>,
    params: &Params,
) -> OAuthResult<(TokenResponse, IssuedRows)> {
    let resource = pick_resource(params, &user.grant.resources)?;
    let granted = ScopeSet::parse(&user.grant.scope).unwrap_or_default();
    let scope = scope_for_resource(tenant, &granted, &resource);
    let (access, access_record) = prepare_access_token(
        app,
        tenant,
        AccessTokenSpec {
            client,
            subject: user.subject,
            scope: &scope,
            resource: &resource,
            grant_id: Some(user.grant_id),
            auth_time: Some(user.grant.auth_time),
            act: None,
            format: None,
            copied: crate::tokens::copied_claims(tenant, &user.grant.user),
        },
    )?;
    let refresh = client.meta.allows_grant(GRANT_REFRESH_TOKEN).then(|| {
        refresh_token::first_refresh_token(app, tenant, client, user.grant_id, user.expires_at)
    });
    let (refresh_token, refresh_record) = refresh.unzip();
    let id_token = if scope.contains("openid") {
        Some(mint_id_token(
            app,
            tenant,
            IdTokenSpec {
                client_id: &client.client_id,
                subject: user.subject,
                grant: user.grant,
                scope: &scope,
                nonce: user.nonce,
                access_token: &access.token,
            },
        )?)
    } else {
        None
    };
    Ok((
        TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            scope: scope.to_string(),
            refresh_token,
            id_token,
            issued_token_type: None,
            format: access.format.into(),
        },
        IssuedRows {
            access: access_record,
            refresh: refresh_record,
        },
    ))
}
