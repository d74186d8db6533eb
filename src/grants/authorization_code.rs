//! grant_type=authorization_code (RFC 6749 §4.1.3, RFC 7636, RFC 8707).

use crate::endpoints::flow::CodeData;
use crate::endpoints::token::TokenResponse;
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::oauth::pkce;
use crate::oauth::scope::ScopeSet;
use crate::store::CodeRedemption;
use crate::tenants::{Tenant, GRANT_REFRESH_TOKEN};
use crate::tokens::secret::{ct_eq, Handle};
use crate::tokens::{mint_access_token, mint_id_token, AccessTokenSpec, IdTokenSpec};
use crate::AppState;

use super::refresh_token::issue_refresh_token;
use super::{pick_resource, scope_for_resource};

type CodeCheck = fn(&CodeData, &Client, &Params) -> OAuthResult<()>;

/// Checks on a redeemed code, in order. The code is spent before they run,
/// so a failed attempt (e.g. a wrong verifier) also burns it.
const CHECKS: [CodeCheck; 2] = [check_redirect_uri, check_code_verifier];

fn check_redirect_uri(code: &CodeData, _: &Client, params: &Params) -> OAuthResult<()> {
    match (params.get("redirect_uri"), code.redirect_uri_sent) {
        (Some(sent), _) if sent == code.redirect_uri => Ok(()),
        (Some(_), _) => Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        )),
        (None, true) => Err(OAuthError::invalid_request(
            "redirect_uri is required: it was sent in the authorization request",
        )),
        (None, false) => Ok(()),
    }
}

fn check_code_verifier(code: &CodeData, _: &Client, params: &Params) -> OAuthResult<()> {
    let verifier = params
        .get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_grant("code_verifier is required (PKCE)"))?;
    pkce::verify(verifier, &code.code_challenge)
        .map_err(|e| OAuthError::invalid_grant(e.to_string()))
}

pub async fn grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
) -> OAuthResult<TokenResponse> {
    let code = params
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'code'"))?;
    let now = app.now();
    let record = match app
        .store
        .redeem_code(&tenant.id, &Handle::from_presented(code).hash(), now)
        .await?
    {
        CodeRedemption::Redeemed(r) => r,
        CodeRedemption::Replayed { grant_id } => {
            tracing::warn!(tenant = %tenant.id, client_id = %client.client_id, grant_id, "authorization code replayed; its tokens are revoked");
            app.audit.record(
                tenant,
                "code_replay",
                "revoked",
                Some(&client.client_id),
                None,
                None,
                serde_json::json!({"grant_id": grant_id}),
            );
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used; tokens issued from it are revoked",
            ));
        }
        CodeRedemption::Unknown => {
            return Err(OAuthError::invalid_grant(
                "the authorization code is invalid",
            ))
        }
    };
    if !ct_eq(&record.client_id, &client.client_id) {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if record.expires_at <= now {
        return Err(OAuthError::invalid_grant(
            "the authorization code has expired",
        ));
    }
    let data: CodeData = serde_json::from_str(&record.data)
        .map_err(|_| OAuthError::invalid_grant("the authorization code is invalid"))?;
    for check in CHECKS {
        check(&data, client, params)?;
    }
    let resource = pick_resource(params, &data.grant.resources)?;
    let granted = ScopeSet::parse(&data.grant.scope).unwrap_or_default();
    let scope = scope_for_resource(tenant, &granted, &resource);

    let access = mint_access_token(
        app,
        tenant,
        AccessTokenSpec {
            client,
            subject: &data.subject,
            scope: &scope,
            resource: &resource,
            grant_id: Some(&record.grant_id),
            auth_time: Some(data.grant.auth_time),
            act: None,
            format: None,
        },
    )
    .await?;
    let refresh_token = if client.meta.allows_grant(GRANT_REFRESH_TOKEN) {
        Some(issue_refresh_token(app, tenant, client, &record.grant_id).await?)
    } else {
        None
    };
    let id_token = if scope.contains("openid") {
        Some(mint_id_token(
            app,
            tenant,
            IdTokenSpec {
                client_id: &client.client_id,
                subject: &data.subject,
                grant: &data.grant,
                scope: &scope,
                nonce: data.nonce.as_deref(),
                access_token: &access.token,
            },
        )?)
    } else {
        None
    };
    Ok(TokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
        scope: scope.to_string(),
        refresh_token,
        id_token,
        issued_token_type: None,
    })
}
