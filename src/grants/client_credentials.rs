//! grant_type=client_credentials (RFC 6749 §4.4): a confidential client acting
//! for itself. No refresh token, no ID token; `sub` is the client id.

use crate::http::SourceAddr;
use crate::oauth::authorization_request::{allowed_scopes, default_scopes};
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::machine;
use crate::oauth::params::Params;
use crate::tenants::{Tenant, GRANT_CLIENT_CREDENTIALS};
use crate::tokens::TokenResponse;
use crate::tokens::{mint_access_token, AccessTokenSpec};
use crate::AppState;

use super::{check_machine, resource_for_client, scope_within};

pub async fn grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
    source: SourceAddr,
) -> OAuthResult<TokenResponse> {
    if client.meta.is_public() {
        return Err(OAuthError::unauthorized_client(
            "client_credentials needs a confidential client",
        ));
    }
    let resource = resource_for_client(tenant, client, params)?;
    let resources = [resource.clone()];
    let allowed = allowed_scopes(tenant, client, &resources, false);
    let mut default = default_scopes(tenant, client, &resources);
    // A self-registered client's defaults stay within what the tenant's
    // machine-client policy allows; an explicit wider request is refused
    // below.
    if let Some(ceiling) = machine::scope_ceiling(tenant, client) {
        default = default.intersection(&ceiling);
    }
    let scope = scope_within(
        params,
        &allowed,
        default,
        "scope not allowed for this client and resource",
    )?;
    // No user is involved: the machine-grant rule decides.
    check_machine(
        app,
        tenant,
        client,
        GRANT_CLIENT_CREDENTIALS,
        &resource,
        &scope,
        source,
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
