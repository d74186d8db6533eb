//! Storage: one trait, two sqlx implementations (SQLite and PostgreSQL) that
//! share their SQL text. Endpoints never see SQL; domain code sees this trait.

pub mod changes;
mod listen;
mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use changes::Changes;
pub use sql::{connect, PostgresStore, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The database refused a value it cannot hold as text (PostgreSQL:
    /// NUL, or bytes invalid in its encoding). Such input is refused before
    /// it gets here (`oauth::params::has_control`); this is the last line,
    /// so a missed case is a bad request, not a storage failure.
    #[error("the database refused a value: {0}")]
    UnstorableInput(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
}

/// PostgreSQL SQLSTATEs for text it cannot hold: `character_not_in_repertoire`
/// (invalid byte sequence, e.g. NUL) and `untranslatable_character`
/// (`\u0000` in JSON).
const UNSTORABLE_TEXT: [&str; 2] = ["22021", "22P05"];

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unstorable = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| UNSTORABLE_TEXT.contains(&code.as_ref()));
        if unstorable {
            StoreError::UnstorableInput(e)
        } else {
            StoreError::Database(e)
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
pub type DynStore = Arc<dyn Store>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    /// JSON of `tenants::TenantSettings`.
    pub settings: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    pub tenant_id: String,
    pub alg: String,
    pub public_jwk: String,
    pub private_enc: Vec<u8>,
    pub state: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
    pub publish_until: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct ClientRecord {
    pub tenant_id: String,
    pub client_id: String,
    /// argon2 PHC string; `None` for public clients and private_key_jwt.
    pub secret_hash: Option<String>,
    /// JSON of `clients::ClientMetadata`.
    pub metadata: String,
    /// Where it came from: "config", "cli", "dcr".
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug)]
pub struct ResourceRecord {
    pub tenant_id: String,
    pub uri: String,
    /// JSON of `tenants::ResourceSettings`.
    pub settings: String,
    pub created_at: i64,
}

/// A row keyed by the hash of a random handle, carrying a JSON document.
#[derive(Clone, Debug)]
pub struct HandleRecord {
    pub hash: String,
    pub tenant_id: String,
    pub data: String,
    pub expires_at: i64,
}

#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub id_hash: String,
    pub tenant_id: String,
    pub subject: String,
    pub data: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Clone, Debug)]
pub struct GrantRecord {
    pub id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub subject: String,
    pub data: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// The grant this one was derived from (token exchange), if any.
    pub parent_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CodeRecord {
    pub code_hash: String,
    pub tenant_id: String,
    pub client_id: String,
    pub grant_id: String,
    pub data: String,
    pub expires_at: i64,
}

/// The rows of tokens issued from a grant, written in one commit.
#[derive(Debug, Default)]
pub struct IssuedRows {
    pub access: Option<AccessTokenRecord>,
    pub refresh: Option<RefreshRecord>,
}

/// What the token endpoint writes with a code's redemption, decided from
/// the spent code and its grant (if it still exists). It runs inside the
/// redeeming transaction, so it does no I/O; the rows it returns are
/// written in the same commit that spends the code.
pub type OnRedeem<'a> = &'a (dyn Fn(&CodeRecord, Option<&GrantRecord>) -> IssuedRows + Send + Sync);

#[derive(Clone, Debug)]
pub enum CodeRedemption {
    /// First use: the code is now spent.
    Redeemed(CodeRecord),
    /// The code was already used: its grant has just been revoked.
    Replayed {
        grant_id: String,
    },
    Unknown,
}

#[derive(Clone, Debug)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub tenant_id: String,
    pub client_id: String,
    pub grant_id: String,
    pub data: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Clone, Debug)]
pub enum RefreshRotation {
    /// The old token is spent and the new one stored, atomically.
    Rotated {
        old: RefreshRecord,
    },
    /// The old token had already been rotated: the whole family is revoked.
    Reused {
        grant_id: String,
    },
    Unknown,
}

#[derive(Clone, Debug)]
pub struct AccessTokenRecord {
    pub jti: String,
    pub tenant_id: String,
    pub client_id: String,
    pub grant_id: Option<String>,
    pub token_hash: Option<String>,
    pub claims: Option<String>,
    pub expires_at: i64,
}

/// What the store knows about an access token beyond its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessTokenState {
    /// No row: a JWT minted outside a grant and never revoked.
    NotTracked,
    Active,
    Revoked,
}

#[derive(Clone, Debug)]
pub struct IdentityRecord {
    pub tenant_id: String,
    pub connector_id: String,
    pub upstream_subject: String,
    pub subject: String,
    pub claims: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub tenant_id: String,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub source_ip: Option<String>,
    pub detail: String,
}

/// An RFC 8628 device authorization.
#[derive(Clone, Debug)]
pub struct DeviceRecord {
    pub device_code_hash: String,
    pub user_code_hash: String,
    pub tenant_id: String,
    pub client_id: String,
    /// JSON: the validated request (scope, resources).
    pub data: String,
    /// "pending", "approved", "denied" or "consumed".
    pub status: String,
    pub subject: Option<String>,
    pub grant_id: Option<String>,
    pub interval_secs: i64,
    pub last_polled_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A snapshot of the connection pool, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    /// The connection pool's size now, its idle part and its limit.
    fn pool_stats(&self) -> PoolStats;
    /// What this node has seen of revocations (see [`changes`]).
    fn changes(&self) -> &Arc<Changes>;
    /// Follows changes committed by other nodes and commands (PostgreSQL:
    /// LISTEN in a background task; SQLite: nothing). The server calls it
    /// once at start; commands do not.
    fn watch_changes(&self);
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;

    // Tenants
    async fn upsert_tenant(&self, t: &TenantRecord) -> StoreResult<()>;
    async fn get_tenant(&self, id: &str) -> StoreResult<Option<TenantRecord>>;
    async fn list_tenants(&self) -> StoreResult<Vec<TenantRecord>>;

    // Signing keys
    async fn list_keys(&self, tenant_id: &str) -> StoreResult<Vec<KeyRecord>>;
    async fn insert_keys(&self, keys: &[KeyRecord]) -> StoreResult<()>;
    /// Applies a rotation atomically: `promote` becomes active, `retire`
    /// becomes retired and published until `publish_until`, `new_next` is added.
    async fn rotate_keys(
        &self,
        tenant_id: &str,
        promote: Option<&str>,
        retire: Option<&str>,
        new_next: &KeyRecord,
        now: i64,
        publish_until: i64,
    ) -> StoreResult<()>;

    // Clients
    async fn upsert_client(&self, c: &ClientRecord) -> StoreResult<()>;
    async fn get_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> StoreResult<Option<ClientRecord>>;
    async fn list_clients(&self, tenant_id: &str) -> StoreResult<Vec<ClientRecord>>;
    async fn delete_client(&self, tenant_id: &str, client_id: &str) -> StoreResult<bool>;

    // Resources (MCP servers)
    async fn upsert_resource(&self, r: &ResourceRecord) -> StoreResult<()>;
    async fn list_resources(&self, tenant_id: &str) -> StoreResult<Vec<ResourceRecord>>;

    // Identities: upstream (connector, subject) -> stable broker subject
    async fn map_identity(&self, rec: &IdentityRecord, now: i64) -> StoreResult<String>;
    async fn get_identity_by_subject(
        &self,
        tenant_id: &str,
        subject: &str,
    ) -> StoreResult<Option<IdentityRecord>>;
    /// The upstream session of a broker subject (JSON), if one is kept.
    async fn get_upstream_session(
        &self,
        tenant_id: &str,
        subject: &str,
    ) -> StoreResult<Option<String>>;
    /// Replaces (or, with `None`, forgets) the upstream session of a subject.
    async fn put_upstream_session(
        &self,
        tenant_id: &str,
        subject: &str,
        data: Option<&str>,
    ) -> StoreResult<()>;

    // Pending authorizations (between /authorize and the code)
    async fn put_pending(&self, p: &HandleRecord) -> StoreResult<()>;
    async fn get_pending(
        &self,
        tenant_id: &str,
        hash: &str,
        now: i64,
    ) -> StoreResult<Option<HandleRecord>>;
    /// Deletes and returns it: a pending authorization completes once.
    async fn take_pending(
        &self,
        tenant_id: &str,
        hash: &str,
        now: i64,
    ) -> StoreResult<Option<HandleRecord>>;

    // Browser sessions
    async fn put_session(&self, s: &SessionRecord) -> StoreResult<()>;
    async fn get_session(
        &self,
        tenant_id: &str,
        hash: &str,
        now: i64,
    ) -> StoreResult<Option<SessionRecord>>;
    async fn delete_session(&self, tenant_id: &str, hash: &str) -> StoreResult<()>;

    // Consent: the union of scopes a subject granted a client
    async fn get_consent(
        &self,
        tenant_id: &str,
        subject: &str,
        client_id: &str,
    ) -> StoreResult<Option<String>>;
    async fn put_consent(
        &self,
        tenant_id: &str,
        subject: &str,
        client_id: &str,
        scopes: &str,
        now: i64,
    ) -> StoreResult<()>;

    // Grants, codes, refresh and access tokens
    async fn create_grant_with_code(&self, g: &GrantRecord, code: &CodeRecord) -> StoreResult<()>;
    async fn create_grant(&self, g: &GrantRecord) -> StoreResult<()>;
    async fn get_grant(&self, id: &str) -> StoreResult<Option<GrantRecord>>;
    async fn revoke_grant(&self, id: &str, now: i64) -> StoreResult<()>;
    /// Revokes every grant of a broker subject (with their tokens and
    /// derived grants) and records when, so that tokens about the user
    /// issued before then are refused as exchange subjects. Returns the
    /// number of the subject's own grants that were still active.
    async fn revoke_subject(&self, tenant_id: &str, subject: &str, now: i64) -> StoreResult<u64>;
    /// When the subject was last revoked, if ever.
    async fn subject_revoked_at(&self, tenant_id: &str, subject: &str) -> StoreResult<Option<i64>>;
    /// Spends a code, once: the first redemption writes what `on_redeem`
    /// returns in the same commit; a later one revokes the code's grant.
    async fn redeem_code(
        &self,
        tenant_id: &str,
        code_hash: &str,
        now: i64,
        on_redeem: OnRedeem<'_>,
    ) -> StoreResult<CodeRedemption>;
    async fn put_refresh(&self, r: &RefreshRecord) -> StoreResult<()>;
    async fn get_refresh(
        &self,
        tenant_id: &str,
        hash: &str,
    ) -> StoreResult<Option<(RefreshRecord, Option<i64>)>>;
    /// Marks the presented refresh token used and stores its successor
    /// and the access-token row issued with it (if any), in one commit.
    async fn rotate_refresh(
        &self,
        tenant_id: &str,
        old_hash: &str,
        new: &RefreshRecord,
        access: Option<&AccessTokenRecord>,
        now: i64,
    ) -> StoreResult<RefreshRotation>;
    async fn put_access_token(&self, a: &AccessTokenRecord) -> StoreResult<()>;
    /// The rows of tokens issued together, in one commit.
    async fn put_issued(&self, rows: &IssuedRows) -> StoreResult<()>;
    async fn access_token_state(
        &self,
        tenant_id: &str,
        jti: &str,
        now: i64,
    ) -> StoreResult<AccessTokenState>;
    /// The grant an access token was minted from, if it was tracked.
    async fn access_token_grant_id(
        &self,
        tenant_id: &str,
        jti: &str,
    ) -> StoreResult<Option<String>>;
    async fn find_opaque_token(
        &self,
        tenant_id: &str,
        hash: &str,
    ) -> StoreResult<Option<(AccessTokenRecord, AccessTokenState)>>;
    async fn revoke_access_token(&self, a: &AccessTokenRecord, now: i64) -> StoreResult<()>;

    /// Remembers a one-time value; false when it was seen before (replay).
    async fn remember_jti(
        &self,
        tenant_id: &str,
        scope: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool>;

    /// Writes a batch in one transaction; ids already stored are skipped.
    async fn insert_audit(&self, events: &[AuditRecord]) -> StoreResult<()>;
    /// Deletes audit events older than `before` (Unix seconds), a few
    /// thousand rows per statement; returns rows removed.
    async fn purge_audit_before(&self, before: i64) -> StoreResult<u64>;
    async fn list_audit(&self, tenant_id: &str, limit: i64) -> StoreResult<Vec<AuditRecord>>;

    /// Deletes what has expired; returns rows removed.
    async fn purge_expired(&self, now: i64) -> StoreResult<u64>;

    // Dynamic client registration (RFC 7591 / RFC 7592)
    /// Inserts a self-registered client and its registration in one
    /// transaction; fails if the client id is taken.
    async fn create_dynamic_client(
        &self,
        c: &ClientRecord,
        reg: &RegistrationRecord,
    ) -> StoreResult<()>;
    async fn get_registration(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> StoreResult<Option<RegistrationRecord>>;
    /// Replaces a self-registered client's secret hash and metadata and its
    /// registered metadata; false when there is no such `dcr` client.
    async fn update_dynamic_client(
        &self,
        c: &ClientRecord,
        reg: &RegistrationRecord,
    ) -> StoreResult<bool>;
    /// Deletes a `dcr` client with its registration and consents, and revokes
    /// its grants and tracked tokens; false when there is no such client.
    async fn delete_dynamic_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        now: i64,
    ) -> StoreResult<bool>;
    async fn put_initial_access_token(&self, t: &InitialAccessTokenRecord) -> StoreResult<()>;
    /// Whether an unexpired initial access token with this hash exists.
    async fn initial_access_token_valid(
        &self,
        tenant_id: &str,
        hash: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// Records the first time a client obtained a token (later calls change nothing).
    async fn mark_client_used(&self, tenant_id: &str, client_id: &str, now: i64)
        -> StoreResult<()>;
    /// Deletes `dcr` clients of the tenant registered before `created_before`
    /// that never obtained a token (no `first_used_at`, no grant), and expired
    /// initial access tokens; returns rows removed.
    async fn purge_unused_dynamic_clients(
        &self,
        tenant_id: &str,
        created_before: i64,
        now: i64,
    ) -> StoreResult<u64>;

    // Device authorizations (RFC 8628)
    async fn put_device(&self, d: &DeviceRecord) -> StoreResult<()>;
    async fn find_pending_device_by_user_code(
        &self,
        tenant_id: &str,
        user_code_hash: &str,
        now: i64,
    ) -> StoreResult<Option<DeviceRecord>>;
    /// Approves or denies a pending, unexpired device authorization; false if it was not pending.
    async fn decide_device(
        &self,
        tenant_id: &str,
        device_code_hash: &str,
        status: &str,
        subject: &str,
        grant_id: Option<&str>,
        now: i64,
    ) -> StoreResult<bool>;
    /// Records a poll and returns the authorization as it was before it.
    async fn poll_device(
        &self,
        tenant_id: &str,
        device_code_hash: &str,
        now: i64,
        slow_down: bool,
    ) -> StoreResult<Option<DeviceRecord>>;
    /// Marks an approved authorization as redeemed; false if it was not approved.
    async fn consume_device(&self, tenant_id: &str, device_code_hash: &str) -> StoreResult<bool>;
}

/// A self-registered client's registration (RFC 7591 / RFC 7592).
#[derive(Clone, Debug)]
pub struct RegistrationRecord {
    pub tenant_id: String,
    pub client_id: String,
    /// SHA-256 of the registration access token.
    pub token_hash: String,
    /// JSON of the registered metadata (`oauth::registration::RegisteredMetadata`).
    pub metadata: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An initial access token for registration, by hash.
#[derive(Clone, Debug)]
pub struct InitialAccessTokenRecord {
    pub token_hash: String,
    pub tenant_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}
