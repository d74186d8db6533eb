//! grant_type=urn:ietf:params:oauth:grant-type:device_code (RFC 8628 §3.4):
//! the device polls until the user has decided.

use crate::oauth::client_auth::Client;
use crate::oauth::errors::{ErrorCode, OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::tenants::Tenant;
use crate::tokens::secret::{ct_eq, Handle};
use crate::tokens::GrantData;
use crate::tokens::TokenResponse;
use crate::AppState;

use super::{issue_user_tokens, UserGrant};

pub async fn grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
) -> OAuthResult<TokenResponse> {
    let device_code = params
        .get("device_code")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'device_code'"))?;
    let hash = Handle::from_presented(device_code).hash();
    let now = app.now();
    let invalid = || OAuthError::invalid_grant("the device_code is invalid");
    let before = app
        .store
        .poll_device(&tenant.id, &hash, now, true)
        .await?
        .ok_or_else(invalid)?;
    if !ct_eq(&before.client_id, &client.client_id) {
        return Err(OAuthError::invalid_grant(
            "the device_code was issued to another client",
        ));
    }
    if before.expires_at <= now {
        return Err(OAuthError::new(
            ErrorCode::ExpiredToken,
            "the device_code has expired; start again",
        ));
    }
    match before.status.as_str() {
        "pending" => {
            let too_fast = before
                .last_polled_at
                .is_some_and(|last| now - last < before.interval_secs);
            if too_fast {
                Err(OAuthError::new(
                    ErrorCode::SlowDown,
                    format!("poll at most every {} seconds", before.interval_secs + 5),
                ))
            } else {
                Err(OAuthError::new(
                    ErrorCode::AuthorizationPending,
                    "the user has not yet approved this device",
                ))
            }
        }
        "denied" => Err(OAuthError::access_denied("the user denied the request")),
        "approved" => {
            // Exactly one poll redeems the approval.
            if !app.store.consume_device(&tenant.id, &hash).await? {
                return Err(invalid());
            }
            let grant_id = before.grant_id.ok_or_else(invalid)?;
            let subject = before.subject.ok_or_else(invalid)?;
            // A grant revoked since the approval (the user revoked, signed
            // out upstream) yields nothing.
            let grant = app
                .store
                .get_grant(&grant_id)
                .await?
                .filter(|g| g.revoked_at.is_none())
                .ok_or_else(invalid)?;
            let data: GrantData = serde_json::from_str(&grant.data).map_err(|_| invalid())?;
            issue_user_tokens(
                app,
                tenant,
                client,
                UserGrant {
                    subject: &subject,
                    grant_id: &grant_id,
                    grant: &data,
                    expires_at: grant.expires_at,
                    nonce: None,
                },
                params,
            )
            .await
        }
        _ => Err(OAuthError::invalid_grant(
            "the device_code was already used",
        )),
    }
}
