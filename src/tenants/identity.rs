//! Identity mapping: an upstream (connector, subject) pair maps to one
//! stable broker subject per tenant, created on first sight and kept.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gatehouse_connectors::{ConnectorError, Identity};
use serde::{Deserialize, Serialize};

use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::store::IdentityRecord;
use crate::tokens::UserClaims;
use crate::AppState;

use super::{Tenant, DEFAULT_UPSTREAM_CHECK_INTERVAL};

/// The claims about the user that the broker keeps from a connector's answer.
pub fn user_claims(identity: &Identity) -> UserClaims {
    UserClaims {
        email: identity.email.clone(),
        email_verified: identity.email_verified,
        name: identity.name.clone(),
        groups: identity.groups.clone(),
        extra: identity.claims.clone(),
    }
}

/// The broker subject for `identity`: the stored one, or a new random one
/// stored now. The latest claims are kept with the mapping.
pub async fn broker_subject(
    app: &AppState,
    tenant: &Tenant,
    identity: &Identity,
) -> OAuthResult<String> {
    let mapping = IdentityRecord {
        tenant_id: tenant.id.clone(),
        connector_id: identity.connector_id.clone(),
        upstream_subject: identity.upstream_subject.clone(),
        subject: uuid::Uuid::new_v4().to_string(),
        claims: serde_json::to_string(&user_claims(identity)).unwrap_or_else(|_| "{}".into()),
    };
    Ok(app.store.map_identity(&mapping, app.now()).await?)
}

/// The upstream session kept per broker subject (as Dex keeps one per user
/// and connector): the upstream refresh token, encrypted under the KEK, and
/// when the user was last re-checked with it. Every grant of the subject
/// from that connector shares it, so the upstream is asked at most once per
/// interval per user, and a rotated upstream refresh token reaches them all.
/// When the upstream refuses the user, every grant of the subject is revoked
/// at once (see [`recheck_upstream`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct UpstreamBinding {
    pub connector_id: String,
    /// Base64 of the AES-256-GCM blob (see [`crate::keys::Kek::encrypt`]).
    refresh_token: String,
    pub checked_at: i64,
    /// The upstream refused the user: every grant bound to it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_at: Option<i64>,
}

/// Binds the ciphertext to its tenant and subject: a blob copied to another
/// row does not decrypt.
fn aad(tenant: &Tenant, subject: &str) -> Vec<u8> {
    format!("gatehouse upstream refresh token|{}|{subject}", tenant.id).into_bytes()
}

/// Keeps (or forgets) the upstream session after a login: the refresh token
/// the connector obtained, if any. A fresh login supersedes a refused one.
pub async fn remember_upstream_session(
    app: &AppState,
    tenant: &Tenant,
    subject: &str,
    identity: &Identity,
) -> OAuthResult<()> {
    let data = match &identity.session.refresh_token {
        Some(token) => {
            let blob = app
                .kek
                .encrypt(token.as_bytes(), &aad(tenant, subject))
                .map_err(|e| OAuthError::server_error(format!("could not encrypt: {e}")))?;
            let binding = UpstreamBinding {
                connector_id: identity.connector_id.clone(),
                refresh_token: STANDARD.encode(blob),
                checked_at: app.now(),
                refused_at: None,
            };
            Some(
                serde_json::to_string(&binding)
                    .map_err(|e| OAuthError::server_error(e.to_string()))?,
            )
        }
        None => None,
    };
    app.store
        .put_upstream_session(&tenant.id, subject, data.as_deref())
        .await?;
    Ok(())
}

/// Before a refresh of a grant that came from `connector_id` (`Ok` when
/// there is nothing to ask, or the upstream still accepts the user): if the
/// subject's upstream session is due for a check (older than the
/// connector's `upstream_check_interval`), asks the upstream with the kept
/// refresh token. A refusal is remembered and revokes every grant of the
/// subject (with their tokens and derived grants), and answers `invalid_grant`; an upstream that cannot
/// answer gives `temporarily_unavailable`, and nothing is spent.
pub async fn recheck_upstream(
    app: &AppState,
    tenant: &Tenant,
    subject: &str,
    connector_id: &str,
) -> OAuthResult<()> {
    let Some(raw) = app.store.get_upstream_session(&tenant.id, subject).await? else {
        return Ok(());
    };
    let refused = || {
        OAuthError::invalid_grant(
            "the user's session at the identity provider has ended; sign in again",
        )
    };
    // An unreadable session (altered row, another KEK) cannot vouch for the
    // user: they sign in again, which stores a fresh one.
    let unreadable = || {
        tracing::error!(tenant = %tenant.id, connector = connector_id, "the stored upstream session is unreadable; the user must sign in again");
        refused()
    };
    let Ok(mut binding) = serde_json::from_str::<UpstreamBinding>(&raw) else {
        return Err(unreadable());
    };
    if binding.connector_id != connector_id {
        // Not this connector's session (broker subjects are per connector,
        // so only a renamed connector gets here): nothing to check with.
        return Ok(());
    }
    if binding.refused_at.is_some() {
        return Err(refused());
    }
    let now = app.now();
    let interval = tenant
        .settings
        .connectors
        .iter()
        .find(|c| c.id == connector_id)
        .map_or(DEFAULT_UPSTREAM_CHECK_INTERVAL, |c| {
            c.upstream_check_interval
        });
    if now - binding.checked_at < interval {
        return Ok(());
    }
    let Some(connector) = tenant.connector(connector_id) else {
        // The connector was removed: nobody can vouch for the user any more.
        return Err(refused());
    };
    let token = STANDARD
        .decode(&binding.refresh_token)
        .ok()
        .and_then(|blob| app.kek.decrypt(&blob, &aad(tenant, subject)).ok())
        .and_then(|plain| String::from_utf8(plain).ok())
        .ok_or_else(unreadable)?;
    let outcome = match connector.refresh(&token).await {
        // OIDC Core §12.2: a refreshed identity must be the same user.
        Ok(fresh) if !fresh.upstream_subject.is_empty() => {
            let known = app
                .store
                .get_identity_by_subject(&tenant.id, subject)
                .await?;
            match known {
                Some(rec) if rec.upstream_subject == fresh.upstream_subject => Ok(fresh),
                _ => Err(ConnectorError::InvalidToken(
                    "the refreshed identity names a different user".into(),
                )),
            }
        }
        other => other,
    };
    match outcome {
        Ok(fresh) => {
            if let Some(rotated) = &fresh.session.refresh_token {
                let blob = app
                    .kek
                    .encrypt(rotated.as_bytes(), &aad(tenant, subject))
                    .map_err(|e| OAuthError::server_error(format!("could not encrypt: {e}")))?;
                binding.refresh_token = STANDARD.encode(blob);
            }
            binding.checked_at = now;
            save(app, tenant, subject, &binding).await?;
            Ok(())
        }
        Err(e @ (ConnectorError::Refused(_) | ConnectorError::InvalidToken(_))) => {
            binding.refused_at = Some(now);
            save(app, tenant, subject, &binding).await?;
            // Every grant of the user ends now, with its access tokens and
            // what agents derived from it (exchanged ID and upstream tokens
            // included), not only the one being refreshed.
            let ended = app.store.revoke_subject(&tenant.id, subject, now).await?;
            app.audit.record(
                tenant,
                "upstream_recheck",
                "refused",
                None,
                Some(subject),
                None,
                serde_json::json!({"connector": connector_id, "reason": e.reason(), "detail": e.to_string(), "grants_revoked": ended}),
            );
            Err(refused())
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, connector = connector_id, error = %e, "upstream re-check failed");
            app.audit.record(
                tenant,
                "upstream_recheck",
                "failure",
                None,
                Some(subject),
                None,
                serde_json::json!({"connector": connector_id, "reason": e.reason(), "detail": e.to_string()}),
            );
            Err(OAuthError::unavailable())
        }
    }
}

async fn save(
    app: &AppState,
    tenant: &Tenant,
    subject: &str,
    binding: &UpstreamBinding,
) -> OAuthResult<()> {
    let data =
        serde_json::to_string(binding).map_err(|e| OAuthError::server_error(e.to_string()))?;
    app.store
        .put_upstream_session(&tenant.id, subject, Some(&data))
        .await?;
    Ok(())
}
