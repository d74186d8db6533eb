//! grant_type=authorization_code (RFC 6749 §4.1.3, RFC 7636, RFC 8707).

use std::sync::OnceLock;

use crate::audit::{SecurityEvent, Severity};
use crate::http::SourceAddr;
use crate::oauth::client_auth::Client;
use crate::oauth::errors::{OAuthError, OAuthResult};
use crate::oauth::params::Params;
use crate::oauth::pkce;
use crate::store::{CodeRecord, CodeRedemption, GrantRecord, IssuedRows};
use crate::tenants::Tenant;
use crate::tokens::secret::{ct_eq, Handle};
use crate::tokens::CodeData;
use crate::tokens::TokenResponse;
use crate::AppState;

use super::{prepare_user_tokens, UserGrant};

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
    source: SourceAddr,
) -> OAuthResult<TokenResponse> {
    let code = params
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("missing required parameter 'code'"))?;
    let now = app.now();
    // The tokens are decided inside the redemption and their rows written
    // in its commit; the answer waits here.
    let answer = OnceLock::new();
    let on_redeem = |code: &CodeRecord, grant: Option<&GrantRecord>| {
        let (answer_now, rows) = match redeemed(app, tenant, client, params, code, grant, now) {
            Ok((response, rows)) => (Ok(response), rows),
            Err(e) => (Err(e), IssuedRows::default()),
        };
        let _ = answer.set(answer_now);
        rows
    };
    match app
        .store
        .redeem_code(
            &tenant.id,
            &Handle::from_presented(code).hash(),
            now,
            &on_redeem,
        )
        .await?
    {
        CodeRedemption::Redeemed(_) => answer.into_inner().unwrap_or_else(|| {
            Err(OAuthError::server_error(
                "the code was redeemed without an answer",
            ))
        }),
        CodeRedemption::Replayed { grant_id } => {
            // Someone else holds the code (RFC 9700 §4.5): what it issued
            // is revoked; the operator hears of it (`code_replay`, high).
            crate::telemetry::metrics::metrics().replay_detected(&tenant.id, "code_replay");
            let subject = app.store.get_grant(&grant_id).await?.map(|g| g.subject);
            app.audit.security(
                tenant,
                SecurityEvent {
                    kind: "code_replay",
                    severity: Severity::High,
                    client_id: Some(&client.client_id),
                    subject: subject.as_deref(),
                    source: Some(source),
                    detail: serde_json::json!({"grant_id": grant_id, "action": "grant_revoked"}),
                },
            );
            Err(OAuthError::invalid_grant(
                "the authorization code was already used; tokens issued from it are revoked",
            ))
        }
        CodeRedemption::Unknown => Err(OAuthError::invalid_grant(
            "the authorization code is invalid",
        )),
    }
}

/// A code just spent: the checks, then the tokens and their rows. Runs
/// inside the redeeming transaction (no I/O); a failed check writes
/// nothing, and the code stays spent.
fn redeemed(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
    record: &CodeRecord,
    grant: Option<&GrantRecord>,
    now: i64,
) -> OAuthResult<(TokenResponse, IssuedRows)> {
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
    // A grant revoked since the code was issued (the user signed out
    // everywhere, an admin revoked the user) yields nothing.
    let grant = grant
        .filter(|g| g.revoked_at.is_none())
        .ok_or_else(|| OAuthError::invalid_grant("the authorization was revoked"))?;
    let data: CodeData = serde_json::from_str(&record.data)
        .map_err(|_| OAuthError::invalid_grant("the authorization code is invalid"))?;
    for check in CHECKS {
        check(&data, client, params)?;
    }
    prepare_user_tokens(
        app,
        tenant,
        client,
        UserGrant {
            subject: &data.subject,
            grant_id: &record.grant_id,
            grant: &data.grant,
            expires_at: grant.expires_at,
            nonce: data.nonce.as_deref(),
        },
        params,
    )
}
