//! grant_type=client_credentials (RFC 6749 §4.4): a confidential client acting
//! for itself. No refresh token, no ID token; `sub` is the client id.

use crate::endpoints::token::TokenResponse;
use crate::oauth::authorization_request::{allowed_scopes, default_scopes};
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::tenants::Tenant;
use crate::tokens::{mint_access_token, AccessTokenSpec};
use crate::AppState;

use super::{resource_for_client, scope_within};

pub async fn grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
) -> OAuthResult<TokenResponse> {
    if client.meta.is_public() {
        return Err(OAuthError::unauthorized_client(
            "client_credentials needs a confidential client",
        ));
    }
    let resource = resource_for_client(tenant, client, params)?;
    let resources = [resource.clone()];
    let allowed = allowed_scopes(tenant, client, &resources, false);
    let scope = scope_within(
        params,
        &allowed,
        default_scopes(tenant, client, &resources),
        "scope not allowed for this client and resource",
    )?;
    let access = mint_access_token(
        app,
        tenant,
        AccessTokenSpec {
            client,
            subject: &client.client_id,
            scope: &scope,
            resource: &resource,
            grant_id: None,
            auth_time: None,
            act: None,
            format: None,
            copied: Default::default(),
        },
    )
    .await?;
    Ok(TokenResponse::bearer(access, &scope))
}
