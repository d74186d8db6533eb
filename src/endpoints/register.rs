//! Dynamic client registration: `POST {issuer}/register` (RFC 7591) and the
//! client configuration endpoint `GET/PUT/DELETE {issuer}/register/{client_id}`
//! (RFC 7592). The metadata rules live in `oauth::registration`; this module
//! does HTTP, the tenant's policy (open, initial access token, disabled),
//! abuse limits and storage.

use axum::body::{Body, Bytes};
use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::validate_client;
use crate::http::SourceAddr;
use crate::limits;
use crate::limits::throttle::{self, Kind};
use crate::oauth::client_auth::Client;
use crate::oauth::machine::check_machine_registration;
use crate::oauth::params::has_control;
use crate::oauth::registration::{self, MetadataError, Policy, RegisteredMetadata};
use crate::oauth::unused_clients::{self, SOURCE_DCR};
use crate::store::{ClientRecord, RegistrationRecord, StoreError};
use crate::telemetry::metrics::metrics;
use crate::tenants::{RegistrationMode, Tenant, TenantCtx};
use crate::tokens::secret::{ct_eq, hash_str, random_id, Handle};
use crate::AppState;

/// Largest registration or update request body.
pub const MAX_REGISTRATION_BODY: usize = 16 * 1024;

/// Prefix of generated client ids: recognisable, and never mistaken for a
/// command-line flag (a bare base64url id may start with `-`).
const CLIENT_ID_PREFIX: &str = "dcr_";

// ---------------------------------------------------------------------------
// Errors (RFC 7591 §3.2.2 shape: `error`, `error_description`)
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct RegistrationError {
    status: StatusCode,
    error: &'static str,
    description: String,
    bearer_challenge: bool,
    retry_after: Option<u64>,
}

impl RegistrationError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: sanitize(&description.into()),
            bearer_challenge: false,
            retry_after: None,
        }
    }

    fn invalid_metadata(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_client_metadata", d)
    }

    fn invalid_token(d: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_token", d);
        e.bearer_challenge = true;
        e
    }

    fn forbidden(d: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "access_denied", d)
    }

    fn rate_limited(d: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable", d);
        e.retry_after = Some(retry_after);
        e
    }

    fn server_error(d: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", d)
    }
}

impl From<MetadataError> for RegistrationError {
    fn from(e: MetadataError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.code.as_str(), e.description)
    }
}

impl From<StoreError> for RegistrationError {
    fn from(e: StoreError) -> Self {
        if let StoreError::UnstorableInput(_) = e {
            tracing::warn!(error = %e, "input refused by the database");
            return Self::invalid_metadata("the request holds a value that cannot be stored");
        }
        tracing::error!(error = %e, "storage failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service is temporarily unavailable; try again",
        )
    }
}

/// Descriptions may quote client input: printable ASCII without `"` and
/// `\`, bounded (RFC 6749 §5.2 character set).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .take(400)
        .collect()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl IntoResponse for RegistrationError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            error_description: &self.description,
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        no_store(res.headers_mut());
        if self.bearer_challenge {
            let challenge = format!("Bearer realm=\"gatehouse\", error=\"{}\"", self.error);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

type RegResult<T> = Result<T, RegistrationError>;

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    no_store(res.headers_mut());
    res
}

// ---------------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------------

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON object body of at most `MAX_REGISTRATION_BODY` bytes.
async fn read_json(headers: &HeaderMap, body: Body) -> RegResult<Value> {
    if !is_json(headers) {
        return Err(RegistrationError::invalid_metadata(
            "the request must be a JSON document (Content-Type: application/json)",
        ));
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_REGISTRATION_BODY)
        .await
        .map_err(|_| {
            RegistrationError::invalid_metadata(format!(
                "the request body is larger than {MAX_REGISTRATION_BODY} bytes or unreadable"
            ))
        })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| RegistrationError::invalid_metadata("the request body is not valid JSON"))?;
    if !value.is_object() {
        return Err(RegistrationError::invalid_metadata(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn path_client_id(params: &RawPathParams) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| *k == "client_id")
        .map(|(_, v)| v.to_string())
        .filter(|id| !id.is_empty() && id.len() <= 255 && !has_control(id))
}

/// argon2 on the process's bounded hashing pool.
async fn hash_secret(secret: String) -> RegResult<String> {
    gatehouse_connectors::password::hash(&secret)
        .await
        .map_err(|_| busy())?
        .map_err(|_| RegistrationError::server_error("hashing failed"))
}

fn busy() -> RegistrationError {
    let mut e = RegistrationError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the server is busy; try again shortly",
    );
    e.retry_after = Some(1);
    e
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3): the
/// registered metadata plus the server-issued values. A secret appears only
/// when it was just issued.
fn client_information(
    tenant: &Tenant,
    client_id: &str,
    issued_at: i64,
    meta: &RegisteredMetadata,
    new_secret: Option<&str>,
    registration_access_token: &str,
) -> Value {
    let mut out = match serde_json::to_value(meta) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    out.insert("client_id".into(), json!(client_id));
    out.insert("client_id_issued_at".into(), json!(issued_at));
    if let Some(secret) = new_secret {
        out.insert("client_secret".into(), json!(secret));
        out.insert("client_secret_expires_at".into(), json!(0));
    }
    out.insert(
        "registration_access_token".into(),
        json!(registration_access_token),
    );
    out.insert(
        "registration_client_uri".into(),
        json!(tenant.endpoint(&format!("/register/{client_id}"))),
    );
    Value::Object(out)
}

fn validate_metadata(tenant: &Tenant, body: &Value) -> RegResult<RegisteredMetadata> {
    let scopes = tenant.all_scopes();
    Ok(registration::validate(
        body,
        &Policy {
            tenant_scopes: &scopes,
        },
    )?)
}

/// Records an RFC 7592 management operation and its outcome.
fn audit_management(
    app: &AppState,
    tenant: &Tenant,
    operation: &str,
    params: &RawPathParams,
    error: Option<&str>,
) {
    let (outcome, detail) = match error {
        None => ("success", json!({ "operation": operation })),
        Some(e) => ("failure", json!({ "operation": operation, "error": e })),
    };
    app.audit.record(
        tenant,
        "client_registration",
        outcome,
        path_client_id(params).as_deref(),
        None,
        None,
        detail,
    );
}

// ---------------------------------------------------------------------------
// POST /register
// ---------------------------------------------------------------------------

pub async fn register(
    State(app): State<AppState>,
    tenant: TenantCtx,
    source: SourceAddr,
    req: Request,
) -> Response {
    let result = run_register(&app, &tenant, source, req).await;
    let (outcome, detail, client_id) = match &result {
        Ok((id, _)) => ("success", json!({}), Some(id.clone())),
        Err(e) => ("failure", json!({"error": e.error}), None),
    };
    let counted = if result.is_ok() { "created" } else { "refused" };
    metrics().registration(&tenant.id, "dcr", counted);
    app.audit.record(
        &tenant,
        "client_registration",
        outcome,
        client_id.as_deref(),
        None,
        Some(&source.to_string()),
        detail,
    );
    match result {
        Ok((_, body)) => {
            unused_clients::maybe_purge_unused(&app, &tenant);
            json_response(StatusCode::CREATED, body)
        }
        Err(e) => e.into_response(),
    }
}

async fn run_register(
    app: &AppState,
    tenant: &Tenant,
    source: SourceAddr,
    req: Request,
) -> RegResult<(String, Value)> {
    let policy = &tenant.settings.registration;
    if policy.mode == RegistrationMode::Disabled {
        return Err(RegistrationError::forbidden(
            "dynamic client registration is disabled; ask the administrator for a client",
        ));
    }
    limits::rate::registration(app, tenant, source)
        .await
        .map_err(|l| {
            RegistrationError::rate_limited(
                format!("{}; retry in {} seconds", l.message, l.retry_after),
                l.retry_after,
            )
        })?;
    let (parts, body) = req.into_parts();
    // An initial access token is required in that mode; in open mode one
    // may still be presented (it is checked, and recorded: the tenant's
    // machine-client policy may require it).
    let with_initial_access_token = match bearer(&parts.headers) {
        Some(token) => {
            if !app
                .store
                .initial_access_token_valid(&tenant.id, &hash_str(token), app.now())
                .await?
            {
                return Err(RegistrationError::invalid_token(
                    "the initial access token is invalid or expired",
                ));
            }
            true
        }
        None if policy.mode == RegistrationMode::InitialAccessToken => {
            return Err(RegistrationError::invalid_token(
                "registration needs an initial access token (Authorization: Bearer ...)",
            ))
        }
        None => false,
    };
    let body = read_json(&parts.headers, body).await?;
    let meta = validate_metadata(tenant, &body)?;
    check_machine_registration(policy, &meta.grant_types, with_initial_access_token)
        .map_err(RegistrationError::invalid_metadata)?;
    let mut client_meta = meta.client_metadata();
    client_meta.initial_access_token = with_initial_access_token;
    let client_id = format!("{CLIENT_ID_PREFIX}{}", random_id());
    let method = meta.token_endpoint_auth_method;
    let (secret, secret_hash) = if method.uses_secret() {
        let secret = Handle::generate();
        let hash = hash_secret(secret.expose().to_string()).await?;
        (Some(secret), Some(hash))
    } else {
        (None, None)
    };
    validate_client(&client_id, &client_meta, secret.is_some(), &[])
        .map_err(RegistrationError::invalid_metadata)?;
    let access_token = Handle::generate();
    let now = app.now();
    let client = ClientRecord {
        tenant_id: tenant.id.clone(),
        client_id: client_id.clone(),
        secret_hash,
        metadata: serde_json::to_string(&client_meta)
            .map_err(|_| RegistrationError::server_error("cannot store the client"))?,
        source: SOURCE_DCR.into(),
        created_at: now,
        updated_at: now,
    };
    let reg = RegistrationRecord {
        tenant_id: tenant.id.clone(),
        client_id: client_id.clone(),
        token_hash: access_token.hash(),
        metadata: serde_json::to_string(&meta)
            .map_err(|_| RegistrationError::server_error("cannot store the client"))?,
        created_at: now,
        updated_at: now,
    };
    app.store.create_dynamic_client(&client, &reg).await?;
    let body = client_information(
        tenant,
        &client_id,
        now,
        &meta,
        secret.as_ref().map(Handle::expose),
        access_token.expose(),
    );
    Ok((client_id, body))
}

// ---------------------------------------------------------------------------
// GET / PUT / DELETE /register/{client_id} (RFC 7592)
// ---------------------------------------------------------------------------

/// A caller that proved it holds the client's registration access token.
struct Managed {
    client_id: String,
    registration: RegistrationRecord,
    client: ClientRecord,
    token: String,
}

/// RFC 7592 §2: a missing or wrong token, an unknown client and a client
/// without registration all answer 401, so nothing is learnt about which
/// client ids exist. Wrong tokens are throttled like failed client
/// authentication (per client id and source, and per source).
async fn authorize_management(
    app: &AppState,
    tenant: &Tenant,
    params: &RawPathParams,
    headers: &HeaderMap,
    source: SourceAddr,
) -> RegResult<Managed> {
    let claimed = path_client_id(params).unwrap_or_default();
    let attempt = throttle::begin(app, tenant, Kind::ClientAuth, &claimed, source)
        .await
        .map_err(|t| {
            RegistrationError::rate_limited(
                format!("{} Retry in {} seconds.", t.message, t.retry_after),
                t.retry_after,
            )
        })?;
    let result = check_management_token(app, tenant, params, headers).await;
    match &result {
        Ok(_) => attempt.succeeded(app).await,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => attempt.failed(app, tenant).await,
        Err(_) => {}
    }
    result
}

async fn check_management_token(
    app: &AppState,
    tenant: &Tenant,
    params: &RawPathParams,
    headers: &HeaderMap,
) -> RegResult<Managed> {
    let token = bearer(headers).ok_or_else(|| {
        RegistrationError::invalid_token(
            "the registration access token is required (Authorization: Bearer ...)",
        )
    })?;
    let refused = || RegistrationError::invalid_token("the registration access token is invalid");
    let client_id = path_client_id(params).ok_or_else(refused)?;
    let registration = app
        .store
        .get_registration(&tenant.id, &client_id)
        .await?
        .ok_or_else(refused)?;
    if !ct_eq(&hash_str(token), &registration.token_hash) {
        return Err(refused());
    }
    let client = app
        .store
        .get_client(&tenant.id, &client_id)
        .await?
        .ok_or_else(refused)?;
    if client.source != SOURCE_DCR {
        return Err(RegistrationError::forbidden(
            "this client is managed by the administrator, not through registration",
        ));
    }
    Ok(Managed {
        client_id,
        registration,
        client,
        token: token.to_string(),
    })
}

fn stored_metadata(reg: &RegistrationRecord) -> RegResult<RegisteredMetadata> {
    serde_json::from_str(&reg.metadata).map_err(|e| {
        tracing::error!(error = %e, client_id = %reg.client_id, "stored registration is corrupt");
        RegistrationError::server_error("the stored registration cannot be read")
    })
}

pub async fn read(
    State(app): State<AppState>,
    tenant: TenantCtx,
    params: RawPathParams,
    source: SourceAddr,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let m = authorize_management(&app, &tenant, &params, &headers, source).await?;
        let meta = stored_metadata(&m.registration)?;
        Ok::<_, RegistrationError>(client_information(
            &tenant,
            &m.client_id,
            m.client.created_at,
            &meta,
            None,
            &m.token,
        ))
    }
    .await;
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

pub async fn update(
    State(app): State<AppState>,
    tenant: TenantCtx,
    params: RawPathParams,
    source: SourceAddr,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let result = run_update(&app, &tenant, &params, (&parts.headers, source), body).await;
    audit_management(
        &app,
        &tenant,
        "update",
        &params,
        result.as_ref().err().map(|e| e.error),
    );
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

async fn run_update(
    app: &AppState,
    tenant: &Tenant,
    params: &RawPathParams,
    (headers, source): (&HeaderMap, SourceAddr),
    body: Body,
) -> RegResult<Value> {
    let m = authorize_management(app, tenant, params, headers, source).await?;
    let body = read_json(headers, body).await?;
    // RFC 7592 §2.2: the body names the client; a client_secret in it must
    // be the current one (the client cannot choose its secret). The
    // server-issued fields (registration_access_token, registration_client_uri,
    // client_id_issued_at, client_secret_expires_at) are ignored.
    if body.get("client_id").and_then(Value::as_str) != Some(m.client_id.as_str()) {
        return Err(RegistrationError::invalid_metadata(
            "client_id in the body must be this client's client_id",
        ));
    }
    if let Some(presented) = body.get("client_secret").filter(|v| !v.is_null()) {
        let current = Client::from_record(m.client.clone())?;
        let matches = match presented.as_str() {
            Some(s) => app
                .clients
                .verify_secret(&current, s)
                .await
                .map_err(|_| busy())?,
            None => false,
        };
        if !matches {
            return Err(RegistrationError::invalid_metadata(
                "client_secret does not match the issued secret; a client cannot choose its secret",
            ));
        }
    }
    let meta = validate_metadata(tenant, &body)?;
    let mut client_meta = meta.client_metadata();
    // What was learnt at registration stays.
    client_meta.initial_access_token = Client::from_record(m.client.clone())?
        .meta
        .initial_access_token;
    check_machine_registration(
        &tenant.settings.registration,
        &meta.grant_types,
        client_meta.initial_access_token,
    )
    .map_err(RegistrationError::invalid_metadata)?;
    // Keep the secret while the client still authenticates with one; issue
    // one when it starts to; drop it when it stops.
    let (new_secret, secret_hash) = match (
        meta.token_endpoint_auth_method.uses_secret(),
        m.client.secret_hash.clone(),
    ) {
        (true, Some(hash)) => (None, Some(hash)),
        (true, None) => {
            let secret = Handle::generate();
            let hash = hash_secret(secret.expose().to_string()).await?;
            (Some(secret), Some(hash))
        }
        (false, _) => (None, None),
    };
    validate_client(&m.client_id, &client_meta, secret_hash.is_some(), &[])
        .map_err(RegistrationError::invalid_metadata)?;
    let now = app.now();
    let client = ClientRecord {
        secret_hash,
        metadata: serde_json::to_string(&client_meta)
            .map_err(|_| RegistrationError::server_error("cannot store the client"))?,
        updated_at: now,
        ..m.client.clone()
    };
    let reg = RegistrationRecord {
        metadata: serde_json::to_string(&meta)
            .map_err(|_| RegistrationError::server_error("cannot store the client"))?,
        updated_at: now,
        ..m.registration.clone()
    };
    if !app.store.update_dynamic_client(&client, &reg).await? {
        return Err(RegistrationError::invalid_token(
            "the registration access token is invalid",
        ));
    }
    app.clients.invalidate(&tenant.id, &m.client_id).await;
    Ok(client_information(
        tenant,
        &m.client_id,
        m.client.created_at,
        &meta,
        new_secret.as_ref().map(Handle::expose),
        &m.token,
    ))
}

pub async fn delete(
    State(app): State<AppState>,
    tenant: TenantCtx,
    params: RawPathParams,
    source: SourceAddr,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let m = authorize_management(&app, &tenant, &params, &headers, source).await?;
        if !app
            .store
            .delete_dynamic_client(&tenant.id, &m.client_id, app.now())
            .await?
        {
            return Err(RegistrationError::invalid_token(
                "the registration access token is invalid",
            ));
        }
        app.clients.invalidate(&tenant.id, &m.client_id).await;
        Ok::<_, RegistrationError>(m.client_id)
    }
    .await;
    audit_management(
        &app,
        &tenant,
        "delete",
        &params,
        result.as_ref().err().map(|e| e.error),
    );
    match result {
        Ok(_) => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            no_store(res.headers_mut());
            res
        }
        Err(e) => e.into_response(),
    }
}
