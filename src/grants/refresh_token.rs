//! grant_type=refresh_token (RFC 6749 §6, OAuth 2.1 §4.3, RFC 9700 §4.14):
//! rotation on every use; reuse of a rotated token revokes the family.

use crate::audit::{SecurityEvent, Severity};
use crate::http::SourceAddr;
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::oauth::scope::ScopeSet;
use crate::store::{RefreshRecord, RefreshRotation};
use crate::tenants::identity::recheck_upstream;
use crate::tenants::Tenant;
use crate::tokens::secret::{ct_eq, Handle};
use crate::tokens::TokenResponse;
use crate::tokens::{mint_id_token, prepare_access_token, AccessTokenSpec, GrantData, IdTokenSpec};
use crate::AppState;

use super::{pick_resource, scope_for_resource, scope_within};

fn new_refresh_record(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    grant_id: &str,
    grant_expires_at: i64,
) -> (Handle, RefreshRecord) {
    let handle = Handle::generate();
    let rec = RefreshRecord {
        token_hash: handle.hash(),
        tenant_id: tenant.id.clone(),
        client_id: client.client_id.clone(),
        grant_id: grant_id.to_string(),
        data: "{}".into(),
        created_at: app.now(),
        // The family lives as long as its grant: refresh tokens do not extend it.
        expires_at: grant_expires_at,
    };
    (handle, rec)
}

/// The first refresh token of a grant (from the code or device grant): the
/// token and the record to store.
pub fn first_refresh_token(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    grant_id: &str,
    grant_expires_at: i64,
) -> (String, RefreshRecord) {
    let (handle, rec) = new_refresh_record(app, tenant, client, grant_id, grant_expires_at);
    (handle.expose().to_string(), rec)
}

/// The first refresh token of a grant, stored on its own (token exchange
/// issuing a refresh token).
pub async fn issue_refresh_token(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    grant_id: &str,
) -> OAuthResult<String> {
    let grant = app
        .store
        .get_grant(grant_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("the grant no longer exists"))?;
    let (token, rec) = first_refresh_token(app, tenant, client, grant_id, grant.expires_at);
    app.store.put_refresh(&rec).await?;
    Ok(token)
}

/// Someone presented a rotated refresh token: a copy is in other hands.
/// The family is revoked; this tells the operator (`refresh_reuse`, high).
fn report_reuse(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: Option<&str>,
    grant_id: &str,
    source: SourceAddr,
) {
    crate::telemetry::metrics::metrics().replay_detected(&tenant.id, "refresh_reuse");
    app.audit.security(
        tenant,
        SecurityEvent {
            kind: "refresh_reuse",
            severity: Severity::High,
            client_id: Some(&client.client_id),
            subject,
            source: Some(source),
            detail: serde_json::json!({"grant_id": grant_id, "action": "family_revoked"}),
        },
    );
}

pub async fn grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
    source: SourceAddr,
) -> OAuthResult<TokenResponse> {
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'refresh_token'"))?;
    let hash = Handle::from_presented(presented).hash();
    let now = app.now();
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let (old, rotated_at) = app
        .store
        .get_refresh(&tenant.id, &hash)
        .await?
        .ok_or_else(invalid)?;
    if !ct_eq(&old.client_id, &client.client_id) {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if rotated_at.is_some() {
        // Reuse of a rotated token: someone holds a copy. Revoke the family.
        app.store.revoke_grant(&old.grant_id, now).await?;
        let subject = app.store.get_grant(&old.grant_id).await?.map(|g| g.subject);
        report_reuse(
            app,
            tenant,
            client,
            subject.as_deref(),
            &old.grant_id,
            source,
        );
        return Err(OAuthError::invalid_grant(
            "the refresh token was already used; its token family is revoked",
        ));
    }
    if old.expires_at <= now {
        return Err(invalid());
    }
    let grant = app
        .store
        .get_grant(&old.grant_id)
        .await?
        .ok_or_else(invalid)?;
    if grant.revoked_at.is_some() {
        return Err(invalid());
    }
    let data: GrantData = serde_json::from_str(&grant.data).map_err(|_| invalid())?;
    let granted = ScopeSet::parse(&data.scope).unwrap_or_default();
    let resource = pick_resource(params, &data.resources)?;
    let scope = scope_for_resource(
        tenant,
        &scope_within(
            params,
            &granted,
            granted.clone(),
            "scope exceeds what was granted",
        )?,
        &resource,
    );

    // A grant whose subject is not a user (an exchanged machine token) is
    // held to the machine-grant rule at every refresh.
    super::check_machine_subject(
        app,
        tenant,
        client,
        crate::tenants::GRANT_REFRESH_TOKEN,
        &grant.subject,
        &resource,
        &scope,
        source,
    )
    .await?;

    // A user disabled at the identity provider loses access within the
    // connector's check interval. Checked before rotating: when the
    // provider cannot answer, the client keeps its refresh token.
    if let Some(connector_id) = &data.connector_id {
        if let Err(e) = recheck_upstream(app, tenant, &grant.subject, connector_id).await {
            if e.code == crate::oauth::errors::ErrorCode::InvalidGrant {
                app.store.revoke_grant(&grant.id, now).await?;
            }
            return Err(e);
        }
    }
    // The new access token is minted first so that its row (if any) is
    // written in the rotation's commit; after a failed rotation it is
    // dropped unsent.
    let (access, access_record) = prepare_access_token(
        app,
        tenant,
        AccessTokenSpec {
            client,
            subject: &grant.subject,
            scope: &scope,
            resource: &resource,
            grant_id: Some(&grant.id),
            auth_time: Some(data.auth_time),
            act: None,
            format: None,
            copied: crate::tokens::copied_claims(tenant, &data.user),
        },
    )?;
    let (handle, new) = new_refresh_record(app, tenant, client, &grant.id, grant.expires_at);
    match app
        .store
        .rotate_refresh(&tenant.id, &hash, &new, access_record.as_ref(), now)
        .await?
    {
        RefreshRotation::Rotated { .. } => {}
        RefreshRotation::Reused { grant_id } => {
            report_reuse(app, tenant, client, Some(&grant.subject), &grant_id, source);
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; its token family is revoked",
            ));
        }
        RefreshRotation::Unknown => return Err(invalid()),
    }
    let id_token = if scope.contains("openid") {
        Some(mint_id_token(
            app,
            tenant,
            IdTokenSpec {
                client_id: &client.client_id,
                subject: &grant.subject,
                grant: &data,
                scope: &scope,
                nonce: None,
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
        refresh_token: Some(handle.expose().to_string()),
        id_token,
        issued_token_type: None,
        format: access.format.into(),
    })
}
