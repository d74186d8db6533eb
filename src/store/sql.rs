//! The sqlx implementations. SQLite and PostgreSQL both accept `$n`
//! placeholders, `ON CONFLICT` upserts and `RETURNING`, so one body of SQL
//! serves both; the macro below instantiates it per database.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::*;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Each store has two pools on the same database. `pool` commits durably:
/// a commit is on disk before it returns (SQLite `synchronous=FULL`,
/// PostgreSQL's `synchronous_commit` as the server sets it). `flow` commits
/// without waiting for the disk (SQLite `synchronous=NORMAL` in WAL mode,
/// PostgreSQL `synchronous_commit=off`) and carries only the state of a
/// sign-in in progress: pending authorizations, new SSO sessions, the
/// identity and upstream session updated at sign-in, consent, and the
/// authorization code with its grant. Both databases write their log in
/// commit order and make it durable up to a point, so a durable commit also
/// makes every earlier `flow` commit durable, and a sign-in becomes tokens
/// only through one: the code's redemption. A crash of the machine can lose
/// only sign-ins still in progress (a code not yet redeemed is refused, the
/// user signs in again). Whatever must not be undone once answered stays
/// durable: redemptions, refresh rotations, tokens, sign-outs, revocations.
pub struct SqliteStore {
    pool: SqlitePool,
    flow: SqlitePool,
    changes: Arc<Changes>,
    /// SQLite takes one writer at a time (see [`SqliteStore::write_turn`]).
    writer: tokio::sync::Mutex<()>,
}

pub struct PostgresStore {
    pool: PgPool,
    flow: PgPool,
    changes: Arc<Changes>,
}

/// Connections per node: durable and flow pools together.
const PG_DURABLE_CONNECTIONS: u32 = 24;
const PG_FLOW_CONNECTIONS: u32 = 8;
const SQLITE_DURABLE_CONNECTIONS: u32 = 8;
const SQLITE_FLOW_CONNECTIONS: u32 = 4;

/// Opens the database named by `url`: `postgres://…` or `sqlite:…`.
pub async fn connect(url: &str) -> StoreResult<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Invalid(format!(
            "database URL must start with sqlite: or postgres:// (got '{}')",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

impl PostgresStore {
    async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(PG_DURABLE_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let flow = PgPoolOptions::new()
            .max_connections(PG_FLOW_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.options([("synchronous_commit", "off")]))
            .await?;
        Ok(PostgresStore {
            pool,
            flow,
            changes: Arc::default(),
        })
    }
}

impl SqliteStore {
    async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed code or refresh token survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_DURABLE_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let flow = SqlitePoolOptions::new()
            .max_connections(SQLITE_FLOW_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await?;
        Ok(SqliteStore {
            pool,
            flow,
            changes: Arc::default(),
            writer: tokio::sync::Mutex::new(()),
        })
    }
}

fn tenant_from_row<R: Row>(row: &R) -> StoreResult<TenantRecord>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TenantRecord {
        id: row.try_get("id")?,
        settings: row.try_get("settings")?,
        created_at: row.try_get("created_at")?,
    })
}

macro_rules! get {
    ($row:expr, $col:literal) => {
        $row.try_get($col)?
    };
}

const KEY_COLUMNS: &str =
    "kid, tenant_id, alg, public_jwk, private_enc, state, created_at, activated_at, retired_at, publish_until";
const CLIENT_COLUMNS: &str =
    "tenant_id, client_id, secret_hash, metadata, source, created_at, updated_at";
const GRANT_COLUMNS: &str =
    "id, tenant_id, client_id, subject, data, created_at, expires_at, revoked_at, parent_id";
const REFRESH_COLUMNS: &str =
    "token_hash, tenant_id, client_id, grant_id, data, created_at, expires_at";
const DEVICE_COLUMNS: &str = "device_code_hash, user_code_hash, tenant_id, client_id, data, status, subject, grant_id, interval_secs, last_polled_at, created_at, expires_at";
/// Rows per audit INSERT statement.
const AUDIT_ROWS: usize = 1000;
/// Rows per audit purge DELETE.
const AUDIT_PURGE_ROWS: i64 = 5000;
const ACCESS_COLUMNS: &str = "jti, tenant_id, client_id, grant_id, token_hash, claims, expires_at";

macro_rules! sql_store {
    ($store:ident, $db:ty, $backend:literal, $migrator:expr) => {
        impl $store {
            async fn insert_refresh<'e, E>(ex: E, r: &RefreshRecord) -> StoreResult<()>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                sqlx::query(&format!(
                    "INSERT INTO refresh_tokens ({REFRESH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(&r.token_hash)
                .bind(&r.tenant_id)
                .bind(&r.client_id)
                .bind(&r.grant_id)
                .bind(&r.data)
                .bind(r.created_at)
                .bind(r.expires_at)
                .execute(ex)
                .await?;
                Ok(())
            }

            async fn insert_access_token<'e, E>(ex: E, a: &AccessTokenRecord) -> StoreResult<()>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                sqlx::query(&format!(
                    "INSERT INTO access_tokens ({ACCESS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(&a.jti)
                .bind(&a.tenant_id)
                .bind(&a.client_id)
                .bind(&a.grant_id)
                .bind(&a.token_hash)
                .bind(&a.claims)
                .bind(a.expires_at)
                .execute(ex)
                .await?;
                Ok(())
            }

            async fn insert_issued(
                conn: &mut <$db as sqlx::Database>::Connection,
                rows: &IssuedRows,
            ) -> StoreResult<()> {
                if let Some(a) = &rows.access {
                    Self::insert_access_token(&mut *conn, a).await?;
                }
                if let Some(r) = &rows.refresh {
                    Self::insert_refresh(&mut *conn, r).await?;
                }
                Ok(())
            }

            fn key_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<KeyRecord> {
                Ok(KeyRecord {
                    kid: get!(row, "kid"),
                    tenant_id: get!(row, "tenant_id"),
                    alg: get!(row, "alg"),
                    public_jwk: get!(row, "public_jwk"),
                    private_enc: get!(row, "private_enc"),
                    state: get!(row, "state"),
                    created_at: get!(row, "created_at"),
                    activated_at: get!(row, "activated_at"),
                    retired_at: get!(row, "retired_at"),
                    publish_until: get!(row, "publish_until"),
                })
            }

            fn client_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<ClientRecord> {
                Ok(ClientRecord {
                    tenant_id: get!(row, "tenant_id"),
                    client_id: get!(row, "client_id"),
                    secret_hash: get!(row, "secret_hash"),
                    metadata: get!(row, "metadata"),
                    source: get!(row, "source"),
                    created_at: get!(row, "created_at"),
                    updated_at: get!(row, "updated_at"),
                })
            }

            fn grant_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<GrantRecord> {
                Ok(GrantRecord {
                    id: get!(row, "id"),
                    tenant_id: get!(row, "tenant_id"),
                    client_id: get!(row, "client_id"),
                    subject: get!(row, "subject"),
                    data: get!(row, "data"),
                    created_at: get!(row, "created_at"),
                    expires_at: get!(row, "expires_at"),
                    revoked_at: get!(row, "revoked_at"),
                    parent_id: get!(row, "parent_id"),
                })
            }

            fn refresh_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<RefreshRecord> {
                Ok(RefreshRecord {
                    token_hash: get!(row, "token_hash"),
                    tenant_id: get!(row, "tenant_id"),
                    client_id: get!(row, "client_id"),
                    grant_id: get!(row, "grant_id"),
                    data: get!(row, "data"),
                    created_at: get!(row, "created_at"),
                    expires_at: get!(row, "expires_at"),
                })
            }

            fn access_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<AccessTokenRecord> {
                Ok(AccessTokenRecord {
                    jti: get!(row, "jti"),
                    tenant_id: get!(row, "tenant_id"),
                    client_id: get!(row, "client_id"),
                    grant_id: get!(row, "grant_id"),
                    token_hash: get!(row, "token_hash"),
                    claims: get!(row, "claims"),
                    expires_at: get!(row, "expires_at"),
                })
            }

            fn device_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<DeviceRecord> {
                Ok(DeviceRecord {
                    device_code_hash: get!(row, "device_code_hash"),
                    user_code_hash: get!(row, "user_code_hash"),
                    tenant_id: get!(row, "tenant_id"),
                    client_id: get!(row, "client_id"),
                    data: get!(row, "data"),
                    status: get!(row, "status"),
                    subject: get!(row, "subject"),
                    grant_id: get!(row, "grant_id"),
                    interval_secs: get!(row, "interval_secs"),
                    last_polled_at: get!(row, "last_polled_at"),
                    created_at: get!(row, "created_at"),
                    expires_at: get!(row, "expires_at"),
                })
            }

            fn handle_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<HandleRecord> {
                Ok(HandleRecord {
                    hash: get!(row, "id_hash"),
                    tenant_id: get!(row, "tenant_id"),
                    data: get!(row, "data"),
                    expires_at: get!(row, "expires_at"),
                })
            }

            /// Revokes a grant, every token minted from it, and every grant
            /// derived from it (token exchange), transitively.
            async fn revoke_grant_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: &str,
                now: i64,
            ) -> StoreResult<()> {
                let mut pending = vec![id.to_string()];
                // Bounded: a derivation chain is short; a cycle cannot form
                // (children are created after their parent).
                for _ in 0..1000 {
                    let Some(id) = pending.pop() else { break };
                    for sql in [
                        "UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                        "UPDATE access_tokens SET revoked_at = $2 WHERE grant_id = $1 AND revoked_at IS NULL",
                        "UPDATE refresh_tokens SET rotated_at = $2 WHERE grant_id = $1 AND rotated_at IS NULL",
                    ] {
                        sqlx::query(sql).bind(&id).bind(now).execute(&mut *conn).await?;
                    }
                    let children = sqlx::query("SELECT id FROM grants WHERE parent_id = $1 AND revoked_at IS NULL")
                        .bind(&id)
                        .fetch_all(&mut *conn)
                        .await?;
                    for row in children {
                        pending.push(get!(row, "id"));
                    }
                }
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            fn changes(&self) -> &Arc<Changes> {
                &self.changes
            }

            fn watch_changes(&self) {
                self.start_watching();
            }

            fn pool_stats(&self) -> PoolStats {
                let idle = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                PoolStats {
                    size: self.pool.size() + self.flow.size(),
                    idle: idle(self.pool.num_idle()).saturating_add(idle(self.flow.num_idle())),
                    max: self.pool.options().get_max_connections()
                        + self.flow.options().get_max_connections(),
                }
            }

            async fn migrate(&self) -> StoreResult<()> {
                $migrator.run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn upsert_tenant(&self, t: &TenantRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "INSERT INTO tenants (id, settings, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET settings = excluded.settings",
                )
                .bind(&t.id)
                .bind(&t.settings)
                .bind(t.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_tenant(&self, id: &str) -> StoreResult<Option<TenantRecord>> {
                let row = sqlx::query("SELECT id, settings, created_at FROM tenants WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(tenant_from_row).transpose()
            }

            async fn list_tenants(&self) -> StoreResult<Vec<TenantRecord>> {
                let rows = sqlx::query("SELECT id, settings, created_at FROM tenants ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(tenant_from_row).collect()
            }

            async fn list_keys(&self, tenant_id: &str) -> StoreResult<Vec<KeyRecord>> {
                let rows = sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM signing_keys WHERE tenant_id = $1 ORDER BY created_at, kid"
                ))
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::key_from_row).collect()
            }

            async fn insert_keys(&self, keys: &[KeyRecord]) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                for k in keys {
                    sqlx::query(&format!(
                        "INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    ))
                    .bind(&k.kid)
                    .bind(&k.tenant_id)
                    .bind(&k.alg)
                    .bind(&k.public_jwk)
                    .bind(&k.private_enc)
                    .bind(&k.state)
                    .bind(k.created_at)
                    .bind(k.activated_at)
                    .bind(k.retired_at)
                    .bind(k.publish_until)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_keys(
                &self,
                tenant_id: &str,
                promote: Option<&str>,
                retire: Option<&str>,
                new_next: &KeyRecord,
                now: i64,
                publish_until: i64,
            ) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                if let Some(kid) = retire {
                    sqlx::query(
                        "UPDATE signing_keys SET state = 'retired', retired_at = $3, publish_until = $4 \
                         WHERE tenant_id = $1 AND kid = $2 AND state = 'active'",
                    )
                    .bind(tenant_id)
                    .bind(kid)
                    .bind(now)
                    .bind(publish_until)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(kid) = promote {
                    let done = sqlx::query(
                        "UPDATE signing_keys SET state = 'active', activated_at = $3 \
                         WHERE tenant_id = $1 AND kid = $2 AND state = 'next'",
                    )
                    .bind(tenant_id)
                    .bind(kid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        // Someone else rotated concurrently; leave everything as it was.
                        return Err(StoreError::Invalid(
                            "the key set changed during rotation; run the rotation again".into(),
                        ));
                    }
                }
                sqlx::query(&format!(
                    "INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .bind(&new_next.kid)
                .bind(&new_next.tenant_id)
                .bind(&new_next.alg)
                .bind(&new_next.public_jwk)
                .bind(&new_next.private_enc)
                .bind(&new_next.state)
                .bind(new_next.created_at)
                .bind(new_next.activated_at)
                .bind(new_next.retired_at)
                .bind(new_next.publish_until)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn upsert_client(&self, c: &ClientRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(&format!(
                    "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant_id, client_id) DO UPDATE SET secret_hash = excluded.secret_hash, \
                     metadata = excluded.metadata, source = excluded.source, updated_at = excluded.updated_at"
                ))
                .bind(&c.tenant_id)
                .bind(&c.client_id)
                .bind(&c.secret_hash)
                .bind(&c.metadata)
                .bind(&c.source)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_client(&self, tenant_id: &str, client_id: &str) -> StoreResult<Option<ClientRecord>> {
                let row = sqlx::query(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients WHERE tenant_id = $1 AND client_id = $2"
                ))
                .bind(tenant_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::client_from_row).transpose()
            }

            async fn list_clients(&self, tenant_id: &str) -> StoreResult<Vec<ClientRecord>> {
                let rows = sqlx::query(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients WHERE tenant_id = $1 ORDER BY client_id"
                ))
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::client_from_row).collect()
            }

            async fn delete_client(&self, tenant_id: &str, client_id: &str) -> StoreResult<bool> {
                let _turn = self.write_turn().await;
                let done = sqlx::query("DELETE FROM clients WHERE tenant_id = $1 AND client_id = $2")
                    .bind(tenant_id)
                    .bind(client_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn upsert_resource(&self, r: &ResourceRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "INSERT INTO resources (tenant_id, uri, settings, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, uri) DO UPDATE SET settings = excluded.settings",
                )
                .bind(&r.tenant_id)
                .bind(&r.uri)
                .bind(&r.settings)
                .bind(r.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_resources(&self, tenant_id: &str) -> StoreResult<Vec<ResourceRecord>> {
                let rows = sqlx::query(
                    "SELECT tenant_id, uri, settings, created_at FROM resources WHERE tenant_id = $1 ORDER BY uri",
                )
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(ResourceRecord {
                            tenant_id: get!(row, "tenant_id"),
                            uri: get!(row, "uri"),
                            settings: get!(row, "settings"),
                            created_at: get!(row, "created_at"),
                        })
                    })
                    .collect()
            }

            async fn map_identity(&self, rec: &IdentityRecord, now: i64) -> StoreResult<String> {
                let _turn = self.write_turn().await;
                let row = sqlx::query(
                    "INSERT INTO identities (tenant_id, connector_id, upstream_subject, subject, claims, created_at, last_login_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (tenant_id, connector_id, upstream_subject) \
                     DO UPDATE SET claims = excluded.claims, last_login_at = excluded.last_login_at \
                     RETURNING subject",
                )
                .bind(&rec.tenant_id)
                .bind(&rec.connector_id)
                .bind(&rec.upstream_subject)
                .bind(&rec.subject)
                .bind(&rec.claims)
                .bind(now)
                .fetch_one(&self.flow)
                .await?;
                Ok(get!(row, "subject"))
            }

            async fn get_identity_by_subject(&self, tenant_id: &str, subject: &str) -> StoreResult<Option<IdentityRecord>> {
                let row = sqlx::query(
                    "SELECT tenant_id, connector_id, upstream_subject, subject, claims FROM identities \
                     WHERE tenant_id = $1 AND subject = $2",
                )
                .bind(tenant_id)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok(IdentityRecord {
                        tenant_id: get!(row, "tenant_id"),
                        connector_id: get!(row, "connector_id"),
                        upstream_subject: get!(row, "upstream_subject"),
                        subject: get!(row, "subject"),
                        claims: get!(row, "claims"),
                    })
                })
                .transpose()
            }

            async fn get_upstream_session(&self, tenant_id: &str, subject: &str) -> StoreResult<Option<String>> {
                let row = sqlx::query(
                    "SELECT upstream FROM identities WHERE tenant_id = $1 AND subject = $2",
                )
                .bind(tenant_id)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some(row) => get!(row, "upstream"),
                    None => None,
                })
            }

            async fn put_upstream_session(&self, tenant_id: &str, subject: &str, data: Option<&str>) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query("UPDATE identities SET upstream = $3 WHERE tenant_id = $1 AND subject = $2")
                    .bind(tenant_id)
                    .bind(subject)
                    .bind(data)
                    .execute(&self.flow)
                    .await?;
                Ok(())
            }

            async fn put_pending(&self, p: &HandleRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "INSERT INTO pending_authorizations (id_hash, tenant_id, data, expires_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
                )
                .bind(&p.hash)
                .bind(&p.tenant_id)
                .bind(&p.data)
                .bind(p.expires_at)
                .execute(&self.flow)
                .await?;
                Ok(())
            }

            async fn get_pending(&self, tenant_id: &str, hash: &str, now: i64) -> StoreResult<Option<HandleRecord>> {
                let row = sqlx::query(
                    "SELECT id_hash, tenant_id, data, expires_at FROM pending_authorizations \
                     WHERE id_hash = $1 AND tenant_id = $2 AND expires_at > $3",
                )
                .bind(hash)
                .bind(tenant_id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::handle_from_row).transpose()
            }

            async fn take_pending(&self, tenant_id: &str, hash: &str, now: i64) -> StoreResult<Option<HandleRecord>> {
                let _turn = self.write_turn().await;
                let row = sqlx::query(
                    "DELETE FROM pending_authorizations WHERE id_hash = $1 AND tenant_id = $2 \
                     RETURNING id_hash, tenant_id, data, expires_at",
                )
                .bind(hash)
                .bind(tenant_id)
                .fetch_optional(&self.flow)
                .await?;
                let rec = row.as_ref().map(Self::handle_from_row).transpose()?;
                Ok(rec.filter(|r| r.expires_at > now))
            }

            async fn put_session(&self, s: &SessionRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "INSERT INTO sessions (id_hash, tenant_id, subject, data, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&s.id_hash)
                .bind(&s.tenant_id)
                .bind(&s.subject)
                .bind(&s.data)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&self.flow)
                .await?;
                Ok(())
            }

            async fn get_session(&self, tenant_id: &str, hash: &str, now: i64) -> StoreResult<Option<SessionRecord>> {
                let row = sqlx::query(
                    "SELECT id_hash, tenant_id, subject, data, created_at, expires_at FROM sessions \
                     WHERE id_hash = $1 AND tenant_id = $2 AND expires_at > $3",
                )
                .bind(hash)
                .bind(tenant_id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok(SessionRecord {
                        id_hash: get!(row, "id_hash"),
                        tenant_id: get!(row, "tenant_id"),
                        subject: get!(row, "subject"),
                        data: get!(row, "data"),
                        created_at: get!(row, "created_at"),
                        expires_at: get!(row, "expires_at"),
                    })
                })
                .transpose()
            }

            async fn delete_session(&self, tenant_id: &str, hash: &str) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query("DELETE FROM sessions WHERE id_hash = $1 AND tenant_id = $2")
                    .bind(hash)
                    .bind(tenant_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_consent(&self, tenant_id: &str, subject: &str, client_id: &str) -> StoreResult<Option<String>> {
                let row = sqlx::query(
                    "SELECT scopes FROM consents WHERE tenant_id = $1 AND subject = $2 AND client_id = $3",
                )
                .bind(tenant_id)
                .bind(subject)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some(row) => Some(get!(row, "scopes")),
                    None => None,
                })
            }

            async fn put_consent(&self, tenant_id: &str, subject: &str, client_id: &str, scopes: &str, now: i64) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "INSERT INTO consents (tenant_id, subject, client_id, scopes, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, subject, client_id) DO UPDATE SET scopes = excluded.scopes, updated_at = excluded.updated_at",
                )
                .bind(tenant_id)
                .bind(subject)
                .bind(client_id)
                .bind(scopes)
                .bind(now)
                .execute(&self.flow)
                .await?;
                Ok(())
            }

            async fn create_grant_with_code(&self, g: &GrantRecord, code: &CodeRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.flow.begin_with(Self::BEGIN_WRITE).await?;
                sqlx::query(&format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(&g.id)
                .bind(&g.tenant_id)
                .bind(&g.client_id)
                .bind(&g.subject)
                .bind(&g.data)
                .bind(g.created_at)
                .bind(g.expires_at)
                .bind(g.revoked_at)
                .bind(&g.parent_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO auth_codes (code_hash, tenant_id, client_id, grant_id, data, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&code.code_hash)
                .bind(&code.tenant_id)
                .bind(&code.client_id)
                .bind(&code.grant_id)
                .bind(&code.data)
                .bind(code.expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_grant(&self, g: &GrantRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(&format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(&g.id)
                .bind(&g.tenant_id)
                .bind(&g.client_id)
                .bind(&g.subject)
                .bind(&g.data)
                .bind(g.created_at)
                .bind(g.expires_at)
                .bind(g.revoked_at)
                .bind(&g.parent_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_grant(&self, id: &str) -> StoreResult<Option<GrantRecord>> {
                let row = sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::grant_from_row).transpose()
            }

            async fn revoke_grant(&self, id: &str, now: i64) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                Self::revoke_grant_in(&mut tx, id, now).await?;
                tx.commit().await?;
                self.changes.revoked();
                Ok(())
            }

            async fn revoke_subject(&self, tenant_id: &str, subject: &str, now: i64) -> StoreResult<u64> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                sqlx::query("UPDATE identities SET revoked_at = $3 WHERE tenant_id = $1 AND subject = $2")
                    .bind(tenant_id)
                    .bind(subject)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let rows = sqlx::query(
                    "SELECT id FROM grants WHERE tenant_id = $1 AND subject = $2 AND revoked_at IS NULL",
                )
                .bind(tenant_id)
                .bind(subject)
                .fetch_all(&mut *tx)
                .await?;
                let mut count = 0u64;
                for row in rows {
                    let id: String = get!(row, "id");
                    Self::revoke_grant_in(&mut tx, &id, now).await?;
                    count += 1;
                }
                tx.commit().await?;
                self.changes.revoked();
                Ok(count)
            }

            async fn subject_revoked_at(&self, tenant_id: &str, subject: &str) -> StoreResult<Option<i64>> {
                let row = sqlx::query("SELECT revoked_at FROM identities WHERE tenant_id = $1 AND subject = $2")
                    .bind(tenant_id)
                    .bind(subject)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => get!(row, "revoked_at"),
                    None => None,
                })
            }

            async fn redeem_code(&self, tenant_id: &str, code_hash: &str, now: i64, on_redeem: OnRedeem<'_>) -> StoreResult<CodeRedemption> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                // The conditional update is the single-use guarantee: of two
                // concurrent redemptions exactly one sees consumed_at IS NULL.
                let row = sqlx::query(
                    "UPDATE auth_codes SET consumed_at = $3 \
                     WHERE code_hash = $1 AND tenant_id = $2 AND consumed_at IS NULL \
                     RETURNING code_hash, tenant_id, client_id, grant_id, data, expires_at",
                )
                .bind(code_hash)
                .bind(tenant_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let outcome = if let Some(row) = row {
                    let code = CodeRecord {
                        code_hash: get!(row, "code_hash"),
                        tenant_id: get!(row, "tenant_id"),
                        client_id: get!(row, "client_id"),
                        grant_id: get!(row, "grant_id"),
                        data: get!(row, "data"),
                        expires_at: get!(row, "expires_at"),
                    };
                    let grant = sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1"))
                        .bind(&code.grant_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .as_ref()
                        .map(Self::grant_from_row)
                        .transpose()?;
                    Self::insert_issued(&mut tx, &on_redeem(&code, grant.as_ref())).await?;
                    CodeRedemption::Redeemed(code)
                } else {
                    let spent = sqlx::query(
                        "SELECT grant_id FROM auth_codes WHERE code_hash = $1 AND tenant_id = $2",
                    )
                    .bind(code_hash)
                    .bind(tenant_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match spent {
                        Some(row) => {
                            let grant_id: String = get!(row, "grant_id");
                            Self::revoke_grant_in(&mut tx, &grant_id, now).await?;
                            CodeRedemption::Replayed { grant_id }
                        }
                        None => CodeRedemption::Unknown,
                    }
                };
                tx.commit().await?;
                if matches!(outcome, CodeRedemption::Replayed { .. }) {
                    self.changes.revoked();
                }
                Ok(outcome)
            }

            async fn put_refresh(&self, r: &RefreshRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                Self::insert_refresh(&self.pool, r).await
            }

            async fn get_refresh(&self, tenant_id: &str, hash: &str) -> StoreResult<Option<(RefreshRecord, Option<i64>)>> {
                let row = sqlx::query(&format!(
                    "SELECT {REFRESH_COLUMNS}, rotated_at FROM refresh_tokens WHERE token_hash = $1 AND tenant_id = $2"
                ))
                .bind(hash)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| Ok((Self::refresh_from_row(&row)?, get!(row, "rotated_at"))))
                    .transpose()
            }

            async fn rotate_refresh(&self, tenant_id: &str, old_hash: &str, new: &RefreshRecord, access: Option<&AccessTokenRecord>, now: i64) -> StoreResult<RefreshRotation> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                let row = sqlx::query(&format!(
                    "UPDATE refresh_tokens SET rotated_at = $3 \
                     WHERE token_hash = $1 AND tenant_id = $2 AND rotated_at IS NULL \
                     RETURNING {REFRESH_COLUMNS}"
                ))
                .bind(old_hash)
                .bind(tenant_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let outcome = match row {
                    Some(row) => {
                        let old = Self::refresh_from_row(&row)?;
                        Self::insert_refresh(&mut *tx, new).await?;
                        if let Some(access) = access {
                            Self::insert_access_token(&mut *tx, access).await?;
                        }
                        RefreshRotation::Rotated { old }
                    }
                    None => {
                        let seen = sqlx::query(
                            "SELECT grant_id FROM refresh_tokens WHERE token_hash = $1 AND tenant_id = $2",
                        )
                        .bind(old_hash)
                        .bind(tenant_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        match seen {
                            Some(row) => {
                                let grant_id: String = get!(row, "grant_id");
                                Self::revoke_grant_in(&mut tx, &grant_id, now).await?;
                                RefreshRotation::Reused { grant_id }
                            }
                            None => RefreshRotation::Unknown,
                        }
                    }
                };
                tx.commit().await?;
                if matches!(outcome, RefreshRotation::Reused { .. }) {
                    self.changes.revoked();
                }
                Ok(outcome)
            }

            async fn put_access_token(&self, a: &AccessTokenRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                Self::insert_access_token(&self.pool, a).await
            }

            async fn put_issued(&self, rows: &IssuedRows) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                match rows {
                    IssuedRows { access: Some(a), refresh: None } => Self::insert_access_token(&self.pool, a).await,
                    IssuedRows { access: None, refresh: Some(r) } => Self::insert_refresh(&self.pool, r).await,
                    IssuedRows { access: None, refresh: None } => Ok(()),
                    _ => {
                        let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                        Self::insert_issued(&mut tx, rows).await?;
                        tx.commit().await?;
                        Ok(())
                    }
                }
            }

            async fn access_token_state(&self, tenant_id: &str, jti: &str, _now: i64) -> StoreResult<AccessTokenState> {
                let row = sqlx::query(
                    "SELECT a.revoked_at AS revoked_at, g.revoked_at AS grant_revoked_at FROM access_tokens a \
                     LEFT JOIN grants g ON g.id = a.grant_id WHERE a.jti = $1 AND a.tenant_id = $2",
                )
                .bind(jti)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    None => AccessTokenState::NotTracked,
                    Some(row) => {
                        let revoked: Option<i64> = get!(row, "revoked_at");
                        let grant_revoked: Option<i64> = get!(row, "grant_revoked_at");
                        if revoked.is_some() || grant_revoked.is_some() {
                            AccessTokenState::Revoked
                        } else {
                            AccessTokenState::Active
                        }
                    }
                })
            }

            async fn access_token_grant_id(&self, tenant_id: &str, jti: &str) -> StoreResult<Option<String>> {
                let row = sqlx::query("SELECT grant_id FROM access_tokens WHERE jti = $1 AND tenant_id = $2")
                    .bind(jti)
                    .bind(tenant_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => get!(row, "grant_id"),
                    None => None,
                })
            }

            async fn find_opaque_token(&self, tenant_id: &str, hash: &str) -> StoreResult<Option<(AccessTokenRecord, AccessTokenState)>> {
                let row = sqlx::query(
                    "SELECT a.jti, a.tenant_id, a.client_id, a.grant_id, a.token_hash, a.claims, a.expires_at, \
                     a.revoked_at, g.revoked_at AS grant_revoked_at FROM access_tokens a \
                     LEFT JOIN grants g ON g.id = a.grant_id WHERE a.token_hash = $1 AND a.tenant_id = $2",
                )
                .bind(hash)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    let rec = Self::access_from_row(&row)?;
                    let revoked: Option<i64> = get!(row, "revoked_at");
                    let grant_revoked: Option<i64> = get!(row, "grant_revoked_at");
                    let state = if revoked.is_some() || grant_revoked.is_some() {
                        AccessTokenState::Revoked
                    } else {
                        AccessTokenState::Active
                    };
                    Ok((rec, state))
                })
                .transpose()
            }

            async fn revoke_access_token(&self, a: &AccessTokenRecord, now: i64) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(&format!(
                    "INSERT INTO access_tokens ({ACCESS_COLUMNS}, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (jti) DO UPDATE SET revoked_at = excluded.revoked_at"
                ))
                .bind(&a.jti)
                .bind(&a.tenant_id)
                .bind(&a.client_id)
                .bind(&a.grant_id)
                .bind(&a.token_hash)
                .bind(&a.claims)
                .bind(a.expires_at)
                .bind(now)
                .execute(&self.pool)
                .await?;
                self.changes.revoked();
                Ok(())
            }

            async fn remember_jti(&self, tenant_id: &str, scope: &str, jti: &str, expires_at: i64, now: i64) -> StoreResult<bool> {
                let _turn = self.write_turn().await;
                // An expired entry may be reused; a live one is a replay.
                sqlx::query("DELETE FROM used_jtis WHERE tenant_id = $1 AND scope = $2 AND jti = $3 AND expires_at <= $4")
                    .bind(tenant_id)
                    .bind(scope)
                    .bind(jti)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                let done = sqlx::query(
                    "INSERT INTO used_jtis (tenant_id, scope, jti, expires_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(tenant_id)
                .bind(scope)
                .bind(jti)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_audit(&self, events: &[AuditRecord]) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                // One transaction per batch, multi-row INSERTs of AUDIT_ROWS
                // rows (9 binds each: under SQLite's 32766 and PostgreSQL's
                // 65535 bind limits). An id already stored is skipped, so a
                // batch replayed from the spill after a crash is harmless.
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                for chunk in events.chunks(AUDIT_ROWS) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO audit_events (id, tenant_id, at, kind, outcome, client_id, subject, source_ip, detail) ",
                    );
                    q.push_values(chunk, |mut row, e| {
                        row.push_bind(e.id.clone())
                            .push_bind(e.tenant_id.clone())
                            .push_bind(e.at)
                            .push_bind(e.kind.clone())
                            .push_bind(e.outcome.clone())
                            .push_bind(e.client_id.clone())
                            .push_bind(e.subject.clone())
                            .push_bind(e.source_ip.clone())
                            .push_bind(e.detail.clone());
                    });
                    q.push(" ON CONFLICT (id) DO NOTHING");
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn purge_audit_before(&self, before: i64) -> StoreResult<u64> {
                // Small deletes, each its own transaction, so a large table
                // never holds the write lock for long.
                let mut removed = 0;
                loop {
                    let turn = self.write_turn().await;
                    let done = sqlx::query(
                        "DELETE FROM audit_events WHERE id IN \
                         (SELECT id FROM audit_events WHERE at < $1 LIMIT $2)",
                    )
                    .bind(before)
                    .bind(AUDIT_PURGE_ROWS)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    drop(turn);
                    removed += done;
                    if done < AUDIT_PURGE_ROWS as u64 {
                        return Ok(removed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }

            async fn list_audit(&self, tenant_id: &str, limit: i64) -> StoreResult<Vec<AuditRecord>> {
                let rows = sqlx::query(
                    "SELECT id, tenant_id, at, kind, outcome, client_id, subject, source_ip, detail FROM audit_events \
                     WHERE tenant_id = $1 ORDER BY at DESC, id LIMIT $2",
                )
                .bind(tenant_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AuditRecord {
                            id: get!(row, "id"),
                            tenant_id: get!(row, "tenant_id"),
                            at: get!(row, "at"),
                            kind: get!(row, "kind"),
                            outcome: get!(row, "outcome"),
                            client_id: get!(row, "client_id"),
                            subject: get!(row, "subject"),
                            source_ip: get!(row, "source_ip"),
                            detail: get!(row, "detail"),
                        })
                    })
                    .collect()
            }

            async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
                // Spent codes are kept a day past expiry so a late replay is still
                // recognised and still revokes its grant.
                const REPLAY_MEMORY: i64 = 86_400;
                let statements: [(&str, i64); 9] = [
                    ("DELETE FROM pending_authorizations WHERE expires_at <= $1", now),
                    ("DELETE FROM sessions WHERE expires_at <= $1", now),
                    ("DELETE FROM auth_codes WHERE expires_at <= $1", now - REPLAY_MEMORY),
                    ("DELETE FROM refresh_tokens WHERE expires_at <= $1", now),
                    ("DELETE FROM access_tokens WHERE expires_at <= $1", now),
                    ("DELETE FROM used_jtis WHERE expires_at <= $1", now),
                    ("DELETE FROM device_authorizations WHERE expires_at <= $1", now),
                    ("DELETE FROM grants WHERE expires_at <= $1", now - REPLAY_MEMORY),
                    ("DELETE FROM signing_keys WHERE state = 'retired' AND publish_until <= $1", now),
                ];
                let mut removed = 0;
                for (sql, at) in statements {
                    let _turn = self.write_turn().await;
                    removed += sqlx::query(sql).bind(at).execute(&self.pool).await?.rows_affected();
                }
                Ok(removed)
            }

            async fn create_dynamic_client(&self, c: &ClientRecord, reg: &RegistrationRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                let done = sqlx::query(&format!(
                    "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant_id, client_id) DO NOTHING"
                ))
                .bind(&c.tenant_id)
                .bind(&c.client_id)
                .bind(&c.secret_hash)
                .bind(&c.metadata)
                .bind(&c.source)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::Invalid(format!(
                        "client '{}' already exists", c.client_id
                    )));
                }
                sqlx::query(
                    "INSERT INTO client_registrations (tenant_id, client_id, token_hash, metadata, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&reg.tenant_id)
                .bind(&reg.client_id)
                .bind(&reg.token_hash)
                .bind(&reg.metadata)
                .bind(reg.created_at)
                .bind(reg.updated_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_registration(&self, tenant_id: &str, client_id: &str) -> StoreResult<Option<RegistrationRecord>> {
                let row = sqlx::query(
                    "SELECT tenant_id, client_id, token_hash, metadata, created_at, updated_at \
                     FROM client_registrations WHERE tenant_id = $1 AND client_id = $2",
                )
                .bind(tenant_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok(RegistrationRecord {
                        tenant_id: get!(row, "tenant_id"),
                        client_id: get!(row, "client_id"),
                        token_hash: get!(row, "token_hash"),
                        metadata: get!(row, "metadata"),
                        created_at: get!(row, "created_at"),
                        updated_at: get!(row, "updated_at"),
                    })
                })
                .transpose()
            }

            async fn update_dynamic_client(&self, c: &ClientRecord, reg: &RegistrationRecord) -> StoreResult<bool> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                let done = sqlx::query(
                    "UPDATE clients SET secret_hash = $3, metadata = $4, updated_at = $5 \
                     WHERE tenant_id = $1 AND client_id = $2 AND source = 'dcr'",
                )
                .bind(&c.tenant_id)
                .bind(&c.client_id)
                .bind(&c.secret_hash)
                .bind(&c.metadata)
                .bind(c.updated_at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                let done = sqlx::query(
                    "UPDATE client_registrations SET token_hash = $3, metadata = $4, updated_at = $5 \
                     WHERE tenant_id = $1 AND client_id = $2",
                )
                .bind(&reg.tenant_id)
                .bind(&reg.client_id)
                .bind(&reg.token_hash)
                .bind(&reg.metadata)
                .bind(reg.updated_at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_dynamic_client(&self, tenant_id: &str, client_id: &str, now: i64) -> StoreResult<bool> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                let done = sqlx::query(
                    "DELETE FROM clients WHERE tenant_id = $1 AND client_id = $2 AND source = 'dcr'",
                )
                .bind(tenant_id)
                .bind(client_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                // RFC 7592 §2.3: what the client was granted goes with it.
                let statements = [
                    "DELETE FROM client_registrations WHERE tenant_id = $1 AND client_id = $2",
                    "DELETE FROM consents WHERE tenant_id = $1 AND client_id = $2",
                    "UPDATE grants SET revoked_at = $3 WHERE tenant_id = $1 AND client_id = $2 AND revoked_at IS NULL",
                    "UPDATE access_tokens SET revoked_at = $3 WHERE tenant_id = $1 AND client_id = $2 AND revoked_at IS NULL",
                    "UPDATE refresh_tokens SET rotated_at = $3 WHERE tenant_id = $1 AND client_id = $2 AND rotated_at IS NULL",
                ];
                for sql in statements {
                    let q = sqlx::query(sql).bind(tenant_id).bind(client_id);
                    let q = if sql.contains("$3") { q.bind(now) } else { q };
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                self.changes.revoked();
                Ok(true)
            }

            async fn put_initial_access_token(&self, t: &InitialAccessTokenRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "INSERT INTO initial_access_tokens (token_hash, tenant_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&t.token_hash)
                .bind(&t.tenant_id)
                .bind(t.created_at)
                .bind(t.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn initial_access_token_valid(&self, tenant_id: &str, hash: &str, now: i64) -> StoreResult<bool> {
                let row = sqlx::query(
                    "SELECT token_hash FROM initial_access_tokens \
                     WHERE token_hash = $1 AND tenant_id = $2 AND expires_at > $3",
                )
                .bind(hash)
                .bind(tenant_id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.is_some())
            }

            async fn mark_client_used(&self, tenant_id: &str, client_id: &str, now: i64) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "UPDATE clients SET first_used_at = $3 \
                     WHERE tenant_id = $1 AND client_id = $2 AND first_used_at IS NULL",
                )
                .bind(tenant_id)
                .bind(client_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn purge_unused_dynamic_clients(&self, tenant_id: &str, created_before: i64, now: i64) -> StoreResult<u64> {
                let _turn = self.write_turn().await;
                let mut removed = sqlx::query(
                    "DELETE FROM clients WHERE tenant_id = $1 AND source = 'dcr' \
                     AND first_used_at IS NULL AND created_at < $2 \
                     AND NOT EXISTS (SELECT 1 FROM grants g \
                         WHERE g.tenant_id = clients.tenant_id AND g.client_id = clients.client_id)",
                )
                .bind(tenant_id)
                .bind(created_before)
                .execute(&self.pool)
                .await?
                .rows_affected();
                removed += sqlx::query("DELETE FROM initial_access_tokens WHERE tenant_id = $1 AND expires_at <= $2")
                    .bind(tenant_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(removed)
            }

            async fn put_device(&self, d: &DeviceRecord) -> StoreResult<()> {
                let _turn = self.write_turn().await;
                sqlx::query(&format!("INSERT INTO device_authorizations ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"))
                    .bind(&d.device_code_hash)
                    .bind(&d.user_code_hash)
                    .bind(&d.tenant_id)
                    .bind(&d.client_id)
                    .bind(&d.data)
                    .bind(&d.status)
                    .bind(&d.subject)
                    .bind(&d.grant_id)
                    .bind(d.interval_secs)
                    .bind(d.last_polled_at)
                    .bind(d.created_at)
                    .bind(d.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn find_pending_device_by_user_code(&self, tenant_id: &str, user_code_hash: &str, now: i64) -> StoreResult<Option<DeviceRecord>> {
                let row = sqlx::query(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM device_authorizations \
                     WHERE tenant_id = $1 AND user_code_hash = $2 AND status = 'pending' AND expires_at > $3"
                ))
                .bind(tenant_id)
                .bind(user_code_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::device_from_row).transpose()
            }

            async fn decide_device(&self, tenant_id: &str, device_code_hash: &str, status: &str, subject: &str, grant_id: Option<&str>, now: i64) -> StoreResult<bool> {
                let _turn = self.write_turn().await;
                let done = sqlx::query(
                    "UPDATE device_authorizations SET status = $3, subject = $4, grant_id = $5 \
                     WHERE tenant_id = $1 AND device_code_hash = $2 AND status = 'pending' AND expires_at > $6",
                )
                .bind(tenant_id)
                .bind(device_code_hash)
                .bind(status)
                .bind(subject)
                .bind(grant_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn poll_device(&self, tenant_id: &str, device_code_hash: &str, now: i64, slow_down: bool) -> StoreResult<Option<DeviceRecord>> {
                let _turn = self.write_turn().await;
                let mut tx = self.pool.begin_with(Self::BEGIN_WRITE).await?;
                let row = sqlx::query(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM device_authorizations WHERE tenant_id = $1 AND device_code_hash = $2"
                ))
                .bind(tenant_id)
                .bind(device_code_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let before = Self::device_from_row(&row)?;
                // RFC 8628 §3.5: a client polling too fast gets slow_down, and
                // its interval grows by 5 seconds for good.
                let too_fast = before.last_polled_at.is_some_and(|last| now - last < before.interval_secs);
                let interval = if too_fast && slow_down { before.interval_secs + 5 } else { before.interval_secs };
                sqlx::query(
                    "UPDATE device_authorizations SET last_polled_at = $3, interval_secs = $4 \
                     WHERE tenant_id = $1 AND device_code_hash = $2",
                )
                .bind(tenant_id)
                .bind(device_code_hash)
                .bind(now)
                .bind(interval)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(before))
            }

            async fn consume_device(&self, tenant_id: &str, device_code_hash: &str) -> StoreResult<bool> {
                let _turn = self.write_turn().await;
                let done = sqlx::query(
                    "UPDATE device_authorizations SET status = 'consumed' \
                     WHERE tenant_id = $1 AND device_code_hash = $2 AND status = 'approved'",
                )
                .bind(tenant_id)
                .bind(device_code_hash)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

/// Every transaction here writes. SQLite must take the write lock at
/// BEGIN: a deferred transaction that reads, then writes after another
/// connection committed, fails at once with SQLITE_BUSY (snapshot) instead
/// of waiting out the busy timeout, which surfaced as a 503 under load.
impl SqliteStore {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    /// SQLite lets one connection write at a time; a connection that finds
    /// the lock taken waits in SQLite's busy handler, which sleeps 1, 2, 5
    /// … up to 100 ms between attempts, so under concurrent writes the lock
    /// sat idle while writers slept (refresh at 32 connections: p99 0.7 s).
    /// Every write of this process therefore takes its turn here first, in
    /// arrival order (tokio's mutex is fair), and finds the lock free. The
    /// busy timeout stays for other processes (`gatehouse` commands).
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.writer.lock().await)
    }

    /// SQLite has no notifications: cached answers are rechecked every
    /// [`changes::MAX_STALENESS`](super::changes::MAX_STALENESS).
    fn start_watching(&self) {}
}

impl PostgresStore {
    const BEGIN_WRITE: &'static str = "BEGIN";

    /// PostgreSQL writes concurrently: no turn to take.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }

    fn start_watching(&self) {
        super::listen::spawn(self.pool.clone(), self.changes.clone());
    }
}

sql_store!(SqliteStore, sqlx::Sqlite, "sqlite", SQLITE_MIGRATIONS);
sql_store!(
    PostgresStore,
    sqlx::Postgres,
    "postgres",
    POSTGRES_MIGRATIONS
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The durable pool waits for the disk at every commit, the flow pool
    /// does not (see [`SqliteStore`]).
    #[tokio::test]
    async fn sqlite_pools_commit_as_documented() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("d.db").display());
        let store = SqliteStore::connect(&url).await.expect("open");
        let level = |pool: SqlitePool| async move {
            let row = sqlx::query("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .expect("pragma");
            row.get::<i64, _>(0)
        };
        // 2 = FULL, 1 = NORMAL.
        assert_eq!(level(store.pool.clone()).await, 2);
        assert_eq!(level(store.flow.clone()).await, 1);
    }

    #[tokio::test]
    async fn postgres_pools_commit_as_documented() {
        let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/postgres")
            .await
            .expect("connect to the local PostgreSQL");
        let level = |pool: PgPool| async move {
            let row = sqlx::query("SHOW synchronous_commit")
                .fetch_one(&pool)
                .await
                .expect("show");
            row.get::<String, _>(0)
        };
        // The server's setting (on, local, remote_write, remote_apply),
        // which a replicated deployment may raise; never off.
        assert_ne!(level(store.pool.clone()).await, "off");
        assert_eq!(level(store.flow.clone()).await, "off");
    }
}
