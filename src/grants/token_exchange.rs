//! grant_type=urn:ietf:params:oauth:grant-type:token-exchange (RFC 8693).
//!
//! An agent (the authenticated client) exchanges a user's Gatehouse access
//! token for one bound to another MCP server, optionally with its own actor
//! token, which puts it in the `act` chain (§4.1). The tenant's exchange
//! policy says which clients may exchange which token types for which
//! resources. Following §2.2.2, a subject or actor token that is invalid or
//! unacceptable by policy is `invalid_request` (the RFC's MUST, also for a
//! token that belongs to another client); a bad target is `invalid_target`;
//! a widened scope is `invalid_scope`. Every refusal is an
//! `exchange_refused` security event.
//!
//! Whose tokens may be presented:
//! * the actor token must have been issued to the calling client (its own
//!   client_credentials token, or a token issued to it), unless an exchange
//!   rule names the actor's client in `actors`;
//! * a subject token that is another client's own machine token (`sub` =
//!   `client_id`, not the caller) is refused: it represents that client,
//!   not a user who delegated;
//! * a subject token with `may_act` may only be exchanged by the party it
//!   names, acting itself or through its own actor token;
//! * an ID token or upstream access token must have been issued to the
//!   calling client (own ID tokens: `aud`; upstream ones: the connector's
//!   `upstream_clients` mapping), and is refused once the user was revoked
//!   after it was issued.
//!
//! What an ID token or upstream token yields hangs off a grant of the user's
//! broker subject, so revoking the user, the upstream refusing them at a
//! re-check, and refresh-token reuse end it.

use serde_json::{json, Value};

use crate::audit::{SecurityEvent, Severity};
use crate::http::SourceAddr;
use crate::oauth::client_auth::Client;
use crate::oauth::errors::ErrorCode;
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
use crate::tokens::{IssuedFormat, TokenResponse};
use crate::AppState;

pub use crate::tenants::GRANT_TOKEN_EXCHANGE;
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TYPE_REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
pub const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TYPE_ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// Subject and actor token types this server can verify itself.
const VERIFIABLE_TYPES: [&str; 2] = [TYPE_ACCESS_TOKEN, TYPE_JWT];

/// What a refusal is about, noted by the checks for its security event.
#[derive(Default)]
pub struct Refusal {
    /// A presented token belongs to someone else (severity medium): why.
    pub foreign: Option<&'static str>,
    /// The user the subject token names, once known.
    pub subject: Option<String>,
}

impl Refusal {
    /// Notes that a presented token belongs to someone else; returns `e`.
    pub fn foreign(&mut self, why: &'static str, e: OAuthError) -> OAuthError {
        self.foreign = Some(why);
        e
    }
}

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
/// subject token type and this target. Returns every rule that does.
fn check_policy<'t>(
    tenant: &'t Tenant,
    client: &Client,
    ex: &Exchange,
) -> OAuthResult<Vec<&'t ExchangeRule>> {
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
    let for_target: Vec<&ExchangeRule> = for_type
        .into_iter()
        .filter(|r| {
            r.resources
                .iter()
                .any(|res| res == "*" || resource::same_resource(res, &ex.target))
        })
        .collect();
    if for_target.is_empty() {
        return Err(OAuthError::invalid_target(format!(
            "the exchange policy does not allow tokens for '{}' to this client",
            ex.target
        )));
    }
    if ex.requested_type != TYPE_REFRESH_TOKEN {
        return Ok(for_target);
    }
    let refreshable: Vec<&ExchangeRule> = for_target
        .into_iter()
        .filter(|r| r.allow_refresh_token)
        .collect();
    if refreshable.is_empty() {
        return Err(OAuthError::invalid_request(
            "the exchange policy does not allow issuing a refresh token",
        ));
    }
    Ok(refreshable)
}

/// The actor token must represent the calling client: issued to it (its own
/// client_credentials token, or a token it obtained), unless a rule that
/// allows this exchange names the actor's client in `actors`.
fn check_actor(
    client: &Client,
    actor: &AccessClaims,
    rules: &[&ExchangeRule],
    note: &mut Refusal,
) -> OAuthResult<()> {
    if ct_eq(&actor.client_id, &client.client_id)
        || rules
            .iter()
            .any(|r| r.actors.iter().any(|a| ct_eq(a, &actor.client_id)))
    {
        return Ok(());
    }
    Err(note.foreign(
        "actor_of_another_client",
        OAuthError::invalid_request(
            "actor_token was issued to another client: present a token issued to this client, or ask the administrator to name that client in the exchange rule's actors",
        ),
    ))
}

/// A subject token that is another client's own token (a client acting for
/// itself: `sub` is its `client_id`) stands for that client, not for a user
/// who delegated: only that client may exchange it.
fn check_subject_is_not_another_client(
    client: &Client,
    subject: &AccessClaims,
    note: &mut Refusal,
) -> OAuthResult<()> {
    if subject.sub == subject.client_id && !ct_eq(&subject.client_id, &client.client_id) {
        return Err(note.foreign(
            "subject_of_another_client",
            OAuthError::invalid_request(
                "subject_token is another client's own token; only that client may exchange it",
            ),
        ));
    }
    Ok(())
}

async fn verified(
    app: &AppState,
    tenant: &Tenant,
    token: &str,
    what: &str,
) -> OAuthResult<AccessClaims> {
    match inspect_access_token(app, tenant, token).await? {
        Inspected::Active(claims) => Ok(std::sync::Arc::unwrap_or_clone(claims)),
        Inspected::Inactive => Err(OAuthError::invalid_request(format!(
            "{what} is invalid, expired, revoked or not issued by this tenant"
        ))),
    }
}

/// An ID token as the subject (this tenant's own, issued to this client, or
/// one from an upstream provider of a connector, issued to a client the
/// connector maps to this one, verified against its keys).
async fn id_token_subject(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    target: &str,
    note: &mut Refusal,
) -> OAuthResult<(AccessClaims, Option<String>)> {
    let (sub, auth_time) = super::id_jag::check_id_token(app, tenant, client, token, note).await?;
    // The claims the connector reported at the user's latest sign-in, and
    // the connector the user's grants rest on.
    let stored = app.store.get_identity_by_subject(&tenant.id, &sub).await?;
    let connector_id = stored.as_ref().map(|rec| rec.connector_id.clone());
    let copied = if tenant.settings.access_token_claims.is_empty() {
        Default::default()
    } else {
        let user: UserClaims = stored
            .and_then(|rec| serde_json::from_str(&rec.claims).ok())
            .unwrap_or_default();
        copied_claims(tenant, &user)
    };
    let claims = upstream_subject_claims(
        app,
        tenant,
        client,
        UpstreamSubject {
            sub,
            auth_time: auth_time.and_then(|v| v.as_i64()),
            copied,
        },
        target,
    );
    Ok((claims, connector_id))
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
    note: &mut Refusal,
) -> OAuthResult<(AccessClaims, Option<String>)> {
    if let Inspected::Active(claims) = inspect_access_token(app, tenant, token).await? {
        return Ok((std::sync::Arc::unwrap_or_clone(claims), None));
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
        .verify_presented_access_token(token, &client.client_id)
        .await
        .map_err(|e| super::id_jag::refused_by(connector.as_ref(), e, note))?;
    let sub = crate::tenants::identity::broker_subject(app, tenant, &identity).await?;
    super::id_jag::check_not_revoked_since(app, tenant, &sub, token).await?;
    let copied = copied_claims(tenant, &crate::tenants::identity::user_claims(&identity));
    let claims = upstream_subject_claims(
        app,
        tenant,
        client,
        UpstreamSubject {
            sub,
            auth_time: None,
            copied,
        },
        target,
    );
    Ok((claims, Some(identity.connector_id)))
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
/// party becoming the actor must be that one: the actor token's party, or,
/// without an actor token, the calling client itself (which would otherwise
/// act for the subject unnamed). A `may_act` this server cannot read
/// (not an object, no string `sub` or `client_id`) allows nobody.
fn check_may_act(subject: &AccessClaims, actor: &AccessClaims) -> OAuthResult<()> {
    let Some(may_act) = &subject.may_act else {
        return Ok(());
    };
    let refused = || {
        OAuthError::invalid_request("the actor is not allowed to act for this subject (may_act)")
    };
    let Some(named) = may_act.as_object() else {
        return Err(refused());
    };
    let member = |name: &str, actual: &str| match named.get(name) {
        None => Ok(false),
        Some(Value::String(s)) if ct_eq(s, actual) => Ok(true),
        Some(_) => Err(refused()),
    };
    let sub_named = member("sub", &actor.sub)?;
    let client_named = member("client_id", &actor.client_id)?;
    if !named.contains_key("sub") && !named.contains_key("client_id") {
        return Err(refused());
    }
    if (sub_named || !named.contains_key("sub"))
        && (client_named || !named.contains_key("client_id"))
    {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The calling client as the party acting for itself (no actor token).
fn client_as_actor(client: &Client, subject: &AccessClaims) -> AccessClaims {
    AccessClaims {
        sub: client.client_id.clone(),
        client_id: client.client_id.clone(),
        act: None,
        may_act: None,
        copied: Default::default(),
        ..subject.clone()
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
    let mut note = Refusal::default();
    let result = if params.get("requested_token_type") == Some(TYPE_ID_JAG) {
        super::id_jag::issue(app, tenant, client, params, &mut note).await
    } else {
        exchange(app, tenant, client, params, source, &mut note).await
    };
    if let Err(e) = &result {
        report_refusal(app, tenant, client, source, &note, e);
    }
    result
}

/// An `exchange_refused` security event: low, or medium when a presented
/// token belongs to someone else. Server-side failures are not refusals.
fn report_refusal(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    source: SourceAddr,
    note: &Refusal,
    e: &OAuthError,
) {
    if matches!(
        e.code,
        ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable
    ) {
        return;
    }
    app.audit.security(
        tenant,
        SecurityEvent {
            kind: "exchange_refused",
            severity: if note.foreign.is_some() {
                Severity::Medium
            } else {
                Severity::Low
            },
            client_id: Some(&client.client_id),
            subject: note.subject.as_deref(),
            source: Some(source),
            detail: json!({
                "error": e.code.as_str(),
                "reason": note.foreign.unwrap_or(e.code.as_str()),
                "description": e.description,
            }),
        },
    );
}

async fn exchange(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &Params,
    source: SourceAddr,
    note: &mut Refusal,
) -> OAuthResult<TokenResponse> {
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
    let rules = check_policy(tenant, client, &ex)?;

    // `upstream`: the subject is an ID token or an upstream access token,
    // which names the user but belongs to no grant here; the connector the
    // user's grants rest on, if known.
    let (subject, upstream) = if ex.subject_type == TYPE_ID_TOKEN {
        let (claims, connector) =
            id_token_subject(app, tenant, client, subject_token, &ex.target, note).await?;
        (claims, Some(connector))
    } else {
        let (claims, connector) =
            access_token_subject(app, tenant, client, subject_token, &ex.target, note).await?;
        let upstream = claims.jti.is_empty().then_some(connector);
        (claims, upstream)
    };
    note.subject = Some(subject.sub.clone());
    check_subject_is_not_another_client(client, &subject, note)?;
    let act = match params.get("actor_token") {
        Some(actor_token) => {
            let actor = verified(app, tenant, actor_token, "actor_token").await?;
            check_actor(client, &actor, &rules, note)?;
            check_may_act(&subject, &actor).map_err(|e| note.foreign("actor_not_in_may_act", e))?;
            Some(actor_claim(&actor, subject.act.as_ref()))
        }
        None => {
            check_may_act(&subject, &client_as_actor(client, &subject))
                .map_err(|e| note.foreign("client_not_in_may_act", e))?;
            subject.act.clone()
        }
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
    // authorization also revokes what agents obtained from it. A subject
    // from an ID or upstream token gets a grant of its own, of the user's
    // broker subject, resting on the user's connector: revoking the user,
    // the upstream refusing them and refresh reuse end it.
    let (grant_id, connector_id) = match upstream {
        Some(connector_id) => (None, connector_id),
        None if subject.jti.is_empty() => (None, None),
        None => (
            app.store
                .access_token_grant_id(&tenant.id, &subject.jti)
                .await?,
            None,
        ),
    };
    let from_upstream = subject.jti.is_empty();

    if ex.requested_type == TYPE_REFRESH_TOKEN {
        let response = issue_refresh(
            app,
            tenant,
            client,
            &subject,
            &scope,
            &ex.target,
            grant_id.as_deref(),
            connector_id,
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
    let grant_id = if from_upstream {
        let ttl = crate::tokens::access_token_ttl(tenant, client, &ex.target);
        Some(
            create_exchange_grant(
                app,
                tenant,
                client,
                &subject,
                &scope,
                &ex.target,
                ExchangeGrant {
                    parent: None,
                    connector_id,
                    expires_at: app.now() + ttl,
                },
            )
            .await?,
        )
    } else {
        grant_id
    };
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

/// Where an exchange grant hangs and how long it lives.
struct ExchangeGrant {
    parent: Option<String>,
    connector_id: Option<String>,
    expires_at: i64,
}

/// A grant of the subject for this client and target: the unit the
/// exchanged tokens are revoked with.
async fn create_exchange_grant(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &AccessClaims,
    scope: &ScopeSet,
    target: &str,
    how: ExchangeGrant,
) -> OAuthResult<String> {
    let now = app.now();
    let data = GrantData {
        scope: scope.to_string(),
        resources: vec![target.to_string()],
        auth_time: subject.auth_time.unwrap_or(now),
        sid: None,
        user: Default::default(),
        connector_id: how.connector_id,
    };
    let grant = GrantRecord {
        id: random_id(),
        tenant_id: tenant.id.clone(),
        client_id: client.client_id.clone(),
        subject: subject.sub.clone(),
        data: serde_json::to_string(&data).map_err(|e| OAuthError::server_error(e.to_string()))?,
        created_at: now,
        expires_at: how.expires_at,
        revoked_at: None,
        parent_id: how.parent,
    };
    app.store.create_grant(&grant).await?;
    Ok(grant.id)
}

/// requested_token_type=refresh_token: a new grant for this client, whose
/// refresh token is the issued token (RFC 8693 §2.2.1 carries it in
/// `access_token`, with token_type N_A).
#[allow(clippy::too_many_arguments)]
async fn issue_refresh(
    app: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &AccessClaims,
    scope: &ScopeSet,
    target: &str,
    parent_grant: Option<&str>,
    connector_id: Option<String>,
) -> OAuthResult<TokenResponse> {
    let now = app.now();
    // The derived grant is a child of the user's: it is revoked with it and
    // never outlives it.
    let parent = match parent_grant {
        Some(id) => app.store.get_grant(id).await?,
        None => None,
    };
    let parent_expires = parent.as_ref().map(|g| g.expires_at);
    // It rests on the same upstream session as the user's grant (or, from
    // an ID or upstream token, on the user's connector).
    let connector_id = parent
        .and_then(|g| serde_json::from_str::<GrantData>(&g.data).ok())
        .and_then(|d| d.connector_id)
        .or(connector_id);
    let ttl = client
        .meta
        .refresh_token_ttl
        .unwrap_or(tenant.policy().refresh_token_ttl);
    let grant_id = create_exchange_grant(
        app,
        tenant,
        client,
        subject,
        scope,
        target,
        ExchangeGrant {
            parent: parent_grant.map(str::to_string),
            connector_id,
            expires_at: parent_expires.map_or(now + ttl, |p| p.min(now + ttl)),
        },
    )
    .await?;
    let expires_at = parent_expires.map_or(now + ttl, |p| p.min(now + ttl));
    let refresh = super::refresh_token::issue_refresh_token(app, tenant, client, &grant_id).await?;
    Ok(TokenResponse {
        access_token: refresh,
        token_type: "N_A",
        expires_in: expires_at - now,
        scope: scope.to_string(),
        refresh_token: None,
        id_token: None,
        issued_token_type: Some(TYPE_REFRESH_TOKEN),
        format: IssuedFormat::Refresh,
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

    #[test]
    fn may_act_that_cannot_be_read_allows_nobody() {
        for may_act in [
            json!({}),
            json!("agent"),
            json!({"sub": 7}),
            json!({"email": "a@b"}),
        ] {
            let mut subject = claims("user", "app");
            subject.may_act = Some(may_act.clone());
            assert!(
                check_may_act(&subject, &claims("agent", "agent")).is_err(),
                "{may_act}"
            );
        }
    }

    #[test]
    fn may_act_binds_the_client_acting_without_an_actor_token() {
        let mut subject = claims("user", "app");
        subject.may_act = Some(json!({"sub": "agent", "client_id": "agent"}));
        let acting = |id: &str| AccessClaims {
            sub: id.into(),
            client_id: id.into(),
            ..claims("user", "app")
        };
        assert!(check_may_act(&subject, &acting("agent")).is_ok());
        assert!(check_may_act(&subject, &acting("other")).is_err());
    }

    fn rule(actors: &[&str]) -> ExchangeRule {
        ExchangeRule {
            clients: vec!["agent".into()],
            subject_token_types: vec![TYPE_ACCESS_TOKEN.into()],
            resources: vec!["*".into()],
            allow_refresh_token: false,
            audiences: vec![],
            target_client_id: None,
            actors: actors.iter().map(|a| a.to_string()).collect(),
            may_act_for: vec![],
        }
    }

    fn client(id: &str) -> Client {
        Client::from_record(crate::store::ClientRecord {
            tenant_id: "default".into(),
            client_id: id.into(),
            secret_hash: None,
            metadata: r#"{"token_endpoint_auth_method":"client_secret_basic"}"#.into(),
            source: "config".into(),
            created_at: 0,
            updated_at: 0,
        })
        .unwrap()
    }

    #[test]
    fn actor_must_be_the_calling_client_unless_a_rule_names_it() {
        let mut note = Refusal::default();
        let agent = client("agent");
        let none = rule(&[]);
        assert!(check_actor(&agent, &claims("agent", "agent"), &[&none], &mut note).is_ok());
        let err =
            check_actor(&agent, &claims("service", "service"), &[&none], &mut note).unwrap_err();
        assert_eq!(err.code.as_str(), "invalid_request");
        assert_eq!(note.foreign, Some("actor_of_another_client"));
        let named = rule(&["service"]);
        let mut note = Refusal::default();
        assert!(check_actor(&agent, &claims("service", "service"), &[&named], &mut note).is_ok());
        assert!(note.foreign.is_none());
    }

    #[test]
    fn another_clients_own_token_is_not_a_subject() {
        let agent = client("agent");
        let mut note = Refusal::default();
        assert!(
            check_subject_is_not_another_client(&agent, &claims("user", "app"), &mut note).is_ok()
        );
        assert!(
            check_subject_is_not_another_client(&agent, &claims("agent", "agent"), &mut note)
                .is_ok()
        );
        assert!(check_subject_is_not_another_client(
            &agent,
            &claims("service", "service"),
            &mut note
        )
        .is_err());
        assert_eq!(note.foreign, Some("subject_of_another_client"));
    }
}
