//! Command line: serve, migrate, keys, clients, resources, tenants.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::{
    normalize_public_url, validate_client, FileConfig, SecretSource, ServerSettings,
};
use crate::keys::{initial_keys, plan_rotation, Alg, Kek};
use crate::oauth::resource;
use crate::store::{self, ClientRecord, DynStore, ResourceRecord, TenantRecord};
use crate::tenants::{
    issuer_for, validate_domains, validate_tenant_id, AuthMethod, ClientMetadata, ResourceSettings,
    TenantSettings, TokenFormat, DEFAULT_TENANT,
};
use crate::tokens::secret::{argon2_hash, argon2_verify, Handle};

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "OAuth 2.1 authorization server and identity broker for MCP"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Directory for the SQLite database and the development key-encryption key.
    #[arg(
        long,
        env = "GATEHOUSE_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// sqlite:PATH or postgres://… (default: a SQLite file in the data dir).
    #[arg(long, env = "GATEHOUSE_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Config file with tenants, connectors, clients and resources
    /// (default: config/dev.toml when it exists).
    #[arg(long, env = "GATEHOUSE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the authorization server.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// OAuth clients.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Resources (MCP servers) tokens can be issued for.
    #[command(subcommand)]
    Resources(ResourcesCommand),
    /// Tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Users (broker subjects).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Print the argon2 hash of a password read from standard input (for dev users and client secrets in config).
    HashPassword,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Public base URL; the default tenant's issuer (default: http://<listen address>).
    #[arg(long, env = "GATEHOUSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Addresses or CIDR blocks of reverse proxies whose X-Forwarded-For is
    /// believed (comma-separated). Without it, the TCP peer is the client.
    #[arg(long, env = "GATEHOUSE_TRUSTED_PROXIES", value_parser = parse_trusted_proxies, default_value = "")]
    pub trusted_proxies: crate::http::TrustedProxies,
    /// URL that security events (refresh-token reuse, code replay, ...) are
    /// POSTed to as JSON, signed with GATEHOUSE_SECURITY_WEBHOOK_SECRET
    /// (docs/operations.md).
    #[arg(long, env = "GATEHOUSE_SECURITY_WEBHOOK_URL")]
    pub security_webhook_url: Option<String>,
    /// HMAC-SHA256 key (at least 32 characters) for the security webhook's
    /// `Gatehouse-Signature` header. Prefer the environment to the flag.
    #[arg(
        long,
        env = "GATEHOUSE_SECURITY_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub security_webhook_secret: Option<String>,
    /// Address of the management listener: GET /metrics (Prometheus),
    /// /healthz and /readyz. Off when unset; never expose it to the internet.
    #[arg(long, env = "GATEHOUSE_MANAGEMENT_LISTEN")]
    pub management_listen: Option<SocketAddr>,
    /// Testing only: a file holding a number of seconds to add to the clock.
    #[arg(long, env = "GATEHOUSE_TEST_CLOCK_FILE", hide = true)]
    pub test_clock_file: Option<PathBuf>,
    #[command(flatten)]
    pub protection: ProtectionArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// Where audit events go besides the database, and for how long they are
/// kept (docs/operations.md, "Audit events").
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// `stdout`, `stderr` or a file path: every kept audit event as one
    /// JSON line (a file is appended to).
    #[arg(long, env = "GATEHOUSE_AUDIT_NDJSON", value_parser = parse_ndjson_target)]
    pub audit_ndjson: Option<crate::audit::NdjsonTarget>,
    /// URL that every kept audit event is POSTed to, in JSON arrays,
    /// signed with GATEHOUSE_AUDIT_WEBHOOK_SECRET.
    #[arg(long, env = "GATEHOUSE_AUDIT_WEBHOOK_URL")]
    pub audit_webhook_url: Option<String>,
    /// HMAC-SHA256 key (at least 32 characters) for the audit webhook.
    /// Prefer the environment to the flag.
    #[arg(long, env = "GATEHOUSE_AUDIT_WEBHOOK_SECRET", hide_env_values = true)]
    pub audit_webhook_secret: Option<String>,
    /// Days audit events are kept in the database; 0 keeps them forever.
    #[arg(long, env = "GATEHOUSE_AUDIT_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub audit_retention_days: u32,
    /// Routine events (successful client_credentials tokens): `aggregate`
    /// stores one event per client, source and minute with a count; `all`
    /// stores one per token.
    #[arg(long, env = "GATEHOUSE_AUDIT_ROUTINE", default_value = "aggregate", value_parser = parse_routine)]
    pub audit_routine: crate::audit::Routine,
    /// Audit events the in-memory queue holds before they spill to disk.
    #[arg(long, env = "GATEHOUSE_AUDIT_QUEUE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub audit_queue: u32,
    /// Megabytes the audit spill files in the data directory may take;
    /// 0 disables the spill (a full queue then loses events, counted).
    #[arg(long, env = "GATEHOUSE_AUDIT_SPILL_MAX_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub audit_spill_max_mb: u64,
}

fn parse_ndjson_target(s: &str) -> Result<crate::audit::NdjsonTarget, String> {
    s.parse()
}

fn parse_routine(s: &str) -> Result<crate::audit::Routine, String> {
    s.parse()
}

/// How long the audit pipeline may take to write out at shutdown.
const AUDIT_FLUSH: Duration = Duration::from_secs(5);

/// The audit pipeline's settings, checked (a bad URL, secret or output
/// stops the start with a clear message).
fn audit_settings(global: &GlobalArgs, args: &ServeArgs) -> Result<crate::audit::AuditSettings> {
    use crate::audit::webhook::WebhookConfig;
    let webhook = |var: &str, url: &Option<String>, secret: &Option<String>| match url {
        Some(url) => WebhookConfig::new(var, url, secret.as_deref())
            .map(Some)
            .map_err(|e| anyhow!(e)),
        None => Ok(None),
    };
    let a = &args.audit;
    let ndjson = match &a.audit_ndjson {
        Some(target) => Some(
            crate::audit::NdjsonOutput::open(target.clone())
                .map_err(|e| anyhow!("GATEHOUSE_AUDIT_NDJSON: cannot open {target}: {e}"))?,
        ),
        None => None,
    };
    Ok(crate::audit::AuditSettings {
        security_webhook: webhook(
            "GATEHOUSE_SECURITY_WEBHOOK",
            &args.security_webhook_url,
            &args.security_webhook_secret,
        )?,
        webhook: webhook(
            "GATEHOUSE_AUDIT_WEBHOOK",
            &a.audit_webhook_url,
            &a.audit_webhook_secret,
        )?,
        ndjson,
        routine: a.audit_routine,
        queue: a.audit_queue as usize,
        spill_dir: Some(global.data_dir.join("audit-spill")),
        spill_max_bytes: a.audit_spill_max_mb.saturating_mul(1024 * 1024),
    })
}

/// Limits that protect the node: connections, timeouts, throttles, hashing.
#[derive(Args, Debug, Clone)]
pub struct ProtectionArgs {
    /// redis://… : rate limits and throttles are shared by every node
    /// through it (per node in memory without it).
    #[arg(long, env = "GATEHOUSE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key Gatehouse writes.
    #[arg(long, env = "GATEHOUSE_REDIS_PREFIX", default_value = "gatehouse:")]
    pub redis_prefix: String,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Seconds a connection has to send a complete request head (also the
    /// idle time allowed between HTTP/1 keep-alive requests).
    #[arg(long, env = "GATEHOUSE_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Seconds a client has to send a whole request body.
    #[arg(long, env = "GATEHOUSE_BODY_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,
    /// Seconds between HTTP/2 keep-alive pings on idle connections.
    #[arg(long, env = "GATEHOUSE_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,
    /// Seconds failed sign-ins and client authentications are counted for.
    #[arg(long, env = "GATEHOUSE_THROTTLE_WINDOW", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub throttle_window: u64,
    /// Failures of one account or client from one address per window
    /// before further attempts are refused (429).
    #[arg(long, env = "GATEHOUSE_MAX_FAILURES", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_failures: u64,
    /// Failures from one address (any accounts or clients) per window
    /// before further attempts are refused (429).
    #[arg(long, env = "GATEHOUSE_MAX_FAILURES_PER_SOURCE", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_failures_per_source: u64,
    /// Failures (of one address, or of one account from anywhere) per
    /// window that raise a `*_failure_burst` security event.
    #[arg(long, env = "GATEHOUSE_FAILURE_ALERT_THRESHOLD", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub failure_alert_threshold: u64,
    /// Password and secret hashes computed at once (default: CPUs, at most 8).
    #[arg(long, env = "GATEHOUSE_HASH_THREADS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub hash_threads: Option<u32>,
    /// Hashes that may wait for a thread; beyond, requests are answered
    /// 503 at once.
    #[arg(long, env = "GATEHOUSE_HASH_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub hash_queue: u32,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List signing keys and their states.
    List {
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Promote the published next key to signing, retire the current one, publish a new next key.
    Rotate {
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// Algorithm for the new next key (default: the tenant's setting).
        #[arg(long)]
        alg: Option<Alg>,
    },
}

// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// Register a client. A confidential client's secret is generated and printed once unless given.
    Add(ClientAddArgs),
    List {
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    Show {
        client_id: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    Delete {
        client_id: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Issue an initial access token for dynamic client registration; printed once.
    InitialToken {
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// Lifetime in seconds; the token may register any number of clients until then.
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
}

#[derive(Args, Debug)]
pub struct ClientAddArgs {
    #[arg(long)]
    pub client_id: String,
    #[arg(long, default_value = DEFAULT_TENANT)]
    pub tenant: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    #[arg(long = "grant-type")]
    pub grant_types: Vec<String>,
    /// none, client_secret_basic, client_secret_post or private_key_jwt.
    #[arg(long, default_value = "client_secret_basic")]
    pub auth_method: String,
    /// Secret to use (read from the environment variable named here), instead of a generated one.
    #[arg(long)]
    pub secret_env: Option<String>,
    /// File with the client's public JWKS (private_key_jwt).
    #[arg(long)]
    pub jwks_file: Option<PathBuf>,
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    #[arg(long = "default-scope")]
    pub default_scopes: Vec<String>,
    /// jwt or opaque.
    #[arg(long, default_value = "jwt")]
    pub token_format: String,
}

#[derive(Subcommand, Debug)]
pub enum ResourcesCommand {
    Add {
        #[arg(long)]
        uri: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long = "default-scope")]
        default_scopes: Vec<String>,
    },
    List {
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    Add {
        id: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Serve the tenant at this host name (its issuer becomes the public URL with this host).
        #[arg(long)]
        domain: Option<String>,
    },
    /// Give a tenant its own host name, or take it away with --clear.
    SetDomain {
        id: String,
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        domain: Option<String>,
        /// Serve the tenant at `{public_url}/t/{id}` again.
        #[arg(long)]
        clear: bool,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// End everything a user was granted: every grant of the subject, its
    /// refresh and access tokens, and what agents derived from them (token
    /// exchange included). ID tokens and upstream tokens issued before now
    /// are no longer exchanged. The user may sign in again.
    Revoke {
        /// The user's subject (`sub` of their access tokens).
        subject: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
}

pub fn now() -> i64 {
    Clock::System.now()
}

fn database_url(global: &GlobalArgs) -> String {
    match &global.database_url {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}",
            global.data_dir.join("gatehouse.db").display()
        ),
    }
}

fn config_path(global: &GlobalArgs) -> Option<PathBuf> {
    match &global.config {
        Some(p) => Some(p.clone()),
        None => {
            let default = Path::new("config/dev.toml");
            default.exists().then(|| default.to_path_buf())
        }
    }
}

/// The key-encryption key: from the environment in production; generated
/// into the data directory (with a warning) for development.
fn load_kek(data_dir: &Path) -> Result<Kek> {
    if let Ok(value) = std::env::var("GATEHOUSE_KEY_ENCRYPTION_KEY") {
        return Kek::from_base64(value.trim())
            .map_err(|e| anyhow!("GATEHOUSE_KEY_ENCRYPTION_KEY: {e}"));
    }
    if let Ok(path) = std::env::var("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE") {
        let value = std::fs::read_to_string(&path)
            .with_context(|| format!("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE: cannot read {path}"))?;
        return Kek::from_base64(value.trim())
            .map_err(|e| anyhow!("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE: {e}"));
    }
    let (kek, generated) = Kek::load_or_generate(data_dir)
        .map_err(|e| anyhow!("data dir {}: {e}", data_dir.display()))?;
    if generated {
        tracing::warn!(path = %data_dir.join("kek").display(), "generated a development key-encryption key; set GATEHOUSE_KEY_ENCRYPTION_KEY in production");
    } else {
        tracing::warn!("using the key-encryption key file in the data directory; set GATEHOUSE_KEY_ENCRYPTION_KEY in production");
    }
    Ok(kek)
}

async fn open_store(global: &GlobalArgs) -> Result<DynStore> {
    let url = database_url(global);
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&global.data_dir)
            .with_context(|| format!("--data-dir: cannot create {}", global.data_dir.display()))?;
    }
    let store = store::connect(&url)
        .await
        .map_err(|e| anyhow!("--database-url: cannot open the database: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow!("database migration failed: {e}"))?;
    Ok(crate::telemetry::store::TracedStore::wrap(store))
}

fn tenant_alg(settings: &TenantSettings, file: Option<&FileConfig>) -> Alg {
    settings
        .signing_alg
        .as_deref()
        .or(file.and_then(|f| f.keys.algorithm.as_deref()))
        .and_then(|a| a.parse().ok())
        .unwrap_or_default()
}

async fn tenant_settings(store: &DynStore, id: &str) -> Result<TenantSettings> {
    let rec = store
        .get_tenant(id)
        .await?
        .ok_or_else(|| anyhow!("--tenant: no tenant '{id}'"))?;
    serde_json::from_str(&rec.settings)
        .map_err(|e| anyhow!("tenant '{id}' settings are corrupt: {e}"))
}

/// Refuses to go on with a key-encryption key that cannot open the stored
/// keys: a key sealed under the wrong KEK would break signing later.
fn check_kek(records: &[crate::store::KeyRecord], kek: &Kek, tenant_id: &str) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    crate::keys::KeyRing::load(records, kek, now()).map(|_| ()).map_err(|e| {
        anyhow!(
            "tenant '{tenant_id}': the key-encryption key cannot open the stored signing keys ({e}); \
             set GATEHOUSE_KEY_ENCRYPTION_KEY to the one the server uses"
        )
    })
}

/// First start of a tenant: publish an active and a next key.
async fn ensure_keys(store: &DynStore, kek: &Kek, tenant_id: &str, alg: Alg) -> Result<()> {
    let existing = store.list_keys(tenant_id).await?;
    check_kek(&existing, kek, tenant_id)?;
    if existing.iter().any(|k| k.state == "active") {
        return Ok(());
    }
    let keys = initial_keys(alg, tenant_id, kek, now())
        .map_err(|e| anyhow!("key generation failed: {e}"))?;
    store.insert_keys(&keys).await?;
    tracing::info!(tenant = tenant_id, alg = %alg, "generated signing keys");
    Ok(())
}

/// Applies the config file: tenants, resources and clients it declares are
/// created or updated; nothing else in the database is touched.
async fn apply_config(store: &DynStore, kek: &Kek, cfg: &FileConfig) -> Result<()> {
    let t = now();
    for tc in &cfg.tenants {
        let settings = tc.settings();
        store
            .upsert_tenant(&TenantRecord {
                id: tc.id.clone(),
                settings: serde_json::to_string(&settings)?,
                created_at: t,
            })
            .await?;
        let mut canon = Vec::new();
        for r in &tc.resources {
            let uri =
                resource::canonicalize(&r.uri).map_err(|e| anyhow!("resource {}: {e}", r.uri))?;
            let rs = ResourceSettings {
                name: r.name.clone(),
                scopes: r.scopes.clone(),
                default_scopes: r.default_scopes.clone(),
                access_token_ttl: r.access_token_ttl,
                access_token_format: r.access_token_format,
            };
            store
                .upsert_resource(&ResourceRecord {
                    tenant_id: tc.id.clone(),
                    uri: uri.clone(),
                    settings: serde_json::to_string(&rs)?,
                    created_at: t,
                })
                .await?;
            canon.push(uri);
        }
        for c in &tc.clients {
            let meta = c
                .metadata(&canon)
                .map_err(|e| anyhow!("client {}: {e}", c.client_id))?;
            let existing = store.get_client(&tc.id, &c.client_id).await?;
            let secret_hash = match c
                .secret_source()
                .map_err(|e| anyhow!("client {}: {e}", c.client_id))?
            {
                SecretSource::None => None,
                SecretSource::Hash(h) => Some(h),
                SecretSource::Plain(p) => {
                    match existing.as_ref().and_then(|e| e.secret_hash.clone()) {
                        // Keep a hash that still matches: avoids churn on every start.
                        Some(h) if argon2_verify(&p, &h) => Some(h),
                        _ => Some(argon2_hash(&p).map_err(|e| anyhow!("hashing failed: {e}"))?),
                    }
                }
            };
            store
                .upsert_client(&ClientRecord {
                    tenant_id: tc.id.clone(),
                    client_id: c.client_id.clone(),
                    secret_hash,
                    metadata: serde_json::to_string(&meta)?,
                    source: "config".into(),
                    created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(t),
                    updated_at: t,
                })
                .await?;
        }
        ensure_keys(store, kek, &tc.id, tenant_alg(&settings, Some(cfg))).await?;
    }
    Ok(())
}

/// Opens the database and makes sure every tenant has keys. Only `serve`
/// applies the config file (`apply`); the admin commands read it for
/// defaults but never rewrite what the server was started with.
async fn bootstrap_with(
    global: &GlobalArgs,
    apply: bool,
) -> Result<(DynStore, Kek, Option<FileConfig>)> {
    let cfg = match config_path(global) {
        Some(p) => Some(FileConfig::load(&p)?),
        None => None,
    };
    let kek = load_kek(&global.data_dir)?;
    let store = open_store(global).await?;
    if let (true, Some(cfg)) = (apply, &cfg) {
        apply_config(&store, &kek, cfg).await?;
    }
    if store.get_tenant(DEFAULT_TENANT).await?.is_none() {
        let settings = TenantSettings::default();
        store
            .upsert_tenant(&TenantRecord {
                id: DEFAULT_TENANT.into(),
                settings: serde_json::to_string(&settings)?,
                created_at: now(),
            })
            .await?;
    }
    for t in store.list_tenants().await? {
        let settings: TenantSettings = serde_json::from_str(&t.settings).unwrap_or_default();
        ensure_keys(&store, &kek, &t.id, tenant_alg(&settings, cfg.as_ref())).await?;
    }
    Ok((store, kek, cfg))
}

async fn bootstrap(global: &GlobalArgs) -> Result<(DynStore, Kek, Option<FileConfig>)> {
    bootstrap_with(global, false).await
}

/// The longest a token signed now may live in this tenant, overrides
/// included: retired keys stay published at least this long.
async fn max_signed_lifetime(
    store: &DynStore,
    tenant: &str,
    settings: &TenantSettings,
) -> Result<i64> {
    let mut longest = settings.tokens.max_signed_lifetime();
    for c in store.list_clients(tenant).await? {
        if let Ok(meta) = serde_json::from_str::<ClientMetadata>(&c.metadata) {
            longest = longest.max(meta.access_token_ttl.unwrap_or(0) + 300);
        }
    }
    for r in store.list_resources(tenant).await? {
        if let Ok(rs) = serde_json::from_str::<ResourceSettings>(&r.settings) {
            longest = longest.max(rs.access_token_ttl.unwrap_or(0) + 300);
        }
    }
    Ok(longest)
}

pub async fn run(cli: Cli) -> Result<()> {
    let global = cli.global.clone();
    match cli.command {
        Command::Serve(args) => serve(&global, args).await,
        Command::Migrate => {
            let store = open_store(&global).await?;
            println!("migrations applied ({})", store.backend());
            Ok(())
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.is_empty() {
                bail!("no password on standard input");
            }
            println!("{}", argon2_hash(pw).map_err(|e| anyhow!(e))?);
            Ok(())
        }
        Command::Keys(cmd) => keys(&global, cmd).await,
        Command::Clients(cmd) => clients(&global, cmd).await,
        Command::Resources(cmd) => resources(&global, cmd).await,
        Command::Tenants(cmd) => tenants(&global, cmd).await,
        Command::Users(cmd) => users(&global, cmd).await,
    }
}

async fn users(global: &GlobalArgs, cmd: UsersCommand) -> Result<()> {
    let store = open_store(global).await?;
    match cmd {
        UsersCommand::Revoke { subject, tenant } => {
            tenant_settings(&store, &tenant).await?;
            let known = store
                .get_identity_by_subject(&tenant, &subject)
                .await?
                .is_some();
            let ended = store.revoke_subject(&tenant, &subject, now()).await?;
            if !known && ended == 0 {
                bail!("subject: no user '{subject}' in tenant '{tenant}'");
            }
            println!("user '{subject}' revoked: {ended} grant(s) ended");
        }
    }
    Ok(())
}

fn parse_trusted_proxies(s: &str) -> Result<crate::http::TrustedProxies, String> {
    s.parse()
}

async fn serve(global: &GlobalArgs, args: ServeArgs) -> Result<()> {
    let public_url = normalize_public_url(
        &args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.listen)),
    )?;
    let settings = ServerSettings {
        listen: args.listen,
        public_url: public_url.clone(),
        data_dir: global.data_dir.clone(),
        database_url: database_url(global),
        config_path: config_path(global),
        test_clock_file: args.test_clock_file.clone(),
    };
    let audit_settings = audit_settings(global, &args)?;
    let ndjson_on_stdout = args.audit.audit_ndjson == Some(crate::audit::NdjsonTarget::Stdout);
    // The start is one trace: the store calls of bootstrap and tenant
    // loading are its spans, not traces of their own.
    let startup = tracing::info_span!("startup");
    let (store, kek, _) = bootstrap_with(global, true)
        .instrument(startup.clone())
        .await?;
    let clock = match &settings.test_clock_file {
        Some(p) => {
            tracing::warn!("test clock enabled: time is read from {}", p.display());
            Clock::OffsetFile(p.clone())
        }
        None => Clock::System,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("--listen: cannot bind {}", settings.listen))?;
    let management = match args.management_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--management-listen: cannot bind {addr}"))?,
        ),
        None => None,
    };
    check_domains(&store, Some(&public_url), None)
        .instrument(startup.clone())
        .await?;
    let p = &args.protection;
    let limits = protection_limits(p).await?;
    let app = crate::AppState::new(
        store.clone(),
        clock.clone(),
        kek,
        public_url.clone(),
        crate::app::EdgeSettings {
            trusted_proxies: args.trusted_proxies.clone(),
            audit: audit_settings,
            limits,
            body_timeout: Duration::from_secs(p.body_timeout),
        },
    );
    load_tenants(&app, &store).instrument(startup).await?;
    let audit = app.audit.clone();
    spawn_purger(store.clone(), clock, args.audit.audit_retention_days);
    // Revocations by other nodes and commands reach this node's caches.
    store.watch_changes();
    tracing::info!(listen = %settings.listen, issuer = %public_url, database = store.backend(), "gatehouse is serving");
    let banner = format!(
        "gatehouse listening on http://{} (issuer {})",
        settings.listen,
        issuer_for(&public_url, DEFAULT_TENANT)
    );
    if ndjson_on_stdout {
        // stdout carries audit events only.
        eprintln!("{banner}");
    } else {
        println!("{banner}");
    }
    let connections = crate::http::serve::ConnectionLimits {
        max_connections: connection_budget(p.max_connections as usize),
        header_timeout: Duration::from_secs(p.header_timeout),
        idle_timeout: Duration::from_secs(p.idle_timeout),
    };
    // One signal stops both listeners.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    if let Some(listener) = management {
        let addr = listener.local_addr()?;
        tracing::info!(listen = %addr, "management listener: /metrics, /healthz, /readyz");
        let limits = crate::http::serve::ConnectionLimits {
            max_connections: 64,
            ..connections
        };
        tokio::spawn(crate::http::serve::serve(
            listener,
            crate::telemetry::management::router(app.clone()),
            limits,
            stopped(stopping.clone()),
        ));
    }
    crate::http::serve::serve(
        listener,
        crate::app::router(app),
        connections,
        stopped(stopping),
    )
    .await;
    // No request runs any more: write out what the audit pipeline holds.
    audit.flush(AUDIT_FLUSH).await;
    // The last spans go out before the process ends (the exporter blocks).
    let _ = tokio::task::spawn_blocking(crate::telemetry::trace::shutdown).await;
    Ok(())
}

/// Loads every tenant once (so that one that cannot load fails the start,
/// not the first request) and warns about their relaxed settings.
async fn load_tenants(app: &crate::AppState, store: &DynStore) -> Result<()> {
    for t in store.list_tenants().await? {
        // Fail at start, not on the first request, if a tenant cannot load.
        let tenant = app
            .tenant(&t.id)
            .await
            .map_err(|e| anyhow!("tenant '{}': {e}", t.id))?;
        for relaxation in tenant.relaxations() {
            tracing::warn!(tenant = %tenant.id, "{relaxation}");
        }
        if tenant.settings.registration.trust_forwarded_for {
            tracing::warn!(
                tenant = %t.id,
                "registration.trust_forwarded_for is deprecated and ignored: X-Forwarded-For is believed only from GATEHOUSE_TRUSTED_PROXIES"
            );
        }
    }
    Ok(())
}

/// The hashing pool and the limits store, from the settings.
async fn protection_limits(p: &ProtectionArgs) -> Result<crate::limits::Limits> {
    use crate::limits::{redis::RedisStore, Limits, ThrottleSettings};
    use gatehouse_connectors::password::{self, PoolSettings};
    let mut pool = PoolSettings {
        max_waiting: p.hash_queue as usize,
        ..PoolSettings::default()
    };
    if let Some(t) = p.hash_threads {
        pool.threads = t as usize;
    }
    password::configure(pool);
    let throttle = ThrottleSettings {
        window: Duration::from_secs(p.throttle_window),
        max_failures: p.max_failures,
        max_failures_per_source: p.max_failures_per_source,
        burst_threshold: p.failure_alert_threshold,
        free_failures: ThrottleSettings::default()
            .free_failures
            .min(p.max_failures),
        ..ThrottleSettings::default()
    };
    let Some(url) = p.redis_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(Limits::memory(throttle));
    };
    let store = RedisStore::new(url, &p.redis_prefix).map_err(|e| anyhow!(e))?;
    match store.ping().await {
        Ok(()) => tracing::info!("limits are shared through Redis"),
        Err(e) => {
            tracing::warn!(error = %e, "Redis is unreachable; limits count in this node's memory until it is back")
        }
    }
    Ok(Limits::redis(store, throttle))
}

/// Keeps large, short-lived allocations (argon2's 19 MiB per hash) out of
/// the process's resident memory once freed. glibc's malloc serves blocks
/// above its mmap threshold from their own mappings, returned to the system
/// on free, but raises that threshold to the size of each such block freed
/// (up to 32 MiB): after the first hash, the next ones come from the heap
/// and stay resident (about 20 MB at idle, more per hashing thread). Setting
/// the threshold fixes it at 1 MiB (and the trim threshold with it).
/// Called first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's tuning parameters; it is called
    // before any request is served.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Raises the open-file limit as far as allowed, and keeps the connection
/// limit under it (with room for the database, logs and the listener), so
/// a flood of connections cannot take the descriptors `/healthz` and the
/// database need.
fn connection_budget(wanted: usize) -> usize {
    const RESERVED: u64 = 128;
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct given.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if ok {
            let need = wanted as u64 + RESERVED;
            if lim.rlim_cur < need && lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: need.min(lim.rlim_max),
                    rlim_max: lim.rlim_max,
                };
                // SAFETY: as above.
                if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                    lim.rlim_cur = raised.rlim_cur;
                }
            }
            if lim.rlim_cur < need {
                let fit = lim.rlim_cur.saturating_sub(RESERVED).max(16) as usize;
                tracing::warn!(
                    wanted,
                    serving = fit,
                    open_file_limit = lim.rlim_cur,
                    "GATEHOUSE_MAX_CONNECTIONS is above what the open-file limit allows; serving fewer (raise LimitNOFILE / ulimit -n)"
                );
                return fit.min(wanted);
            }
        }
    }
    wanted
}

fn spawn_purger(store: DynStore, clock: Clock, audit_retention_days: u32) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            let now = clock.now();
            match store.purge_expired(now).await {
                Ok(n) if n > 0 => tracing::debug!(removed = n, "purged expired records"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging expired records failed"),
            }
            if audit_retention_days > 0 {
                let before = now - i64::from(audit_retention_days) * 86_400;
                match store.purge_audit_before(before).await {
                    Ok(n) if n > 0 => tracing::info!(
                        removed = n,
                        retention_days = audit_retention_days,
                        "purged old audit events"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purging old audit events failed"),
                }
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn keys(global: &GlobalArgs, cmd: KeysCommand) -> Result<()> {
    let (store, kek, cfg) = bootstrap(global).await?;
    match cmd {
        KeysCommand::List { tenant } => {
            tenant_settings(&store, &tenant).await?;
            println!(
                "{:<24} {:<6} {:<8} {:>12} {:>14}",
                "KID", "ALG", "STATE", "CREATED", "PUBLISH_UNTIL"
            );
            for k in store.list_keys(&tenant).await? {
                println!(
                    "{:<24} {:<6} {:<8} {:>12} {:>14}",
                    k.kid,
                    k.alg,
                    k.state,
                    k.created_at,
                    k.publish_until
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysCommand::Rotate { tenant, alg } => {
            let settings = tenant_settings(&store, &tenant).await?;
            let alg = alg.unwrap_or_else(|| tenant_alg(&settings, cfg.as_ref()));
            let records = store.list_keys(&tenant).await?;
            check_kek(&records, &kek, &tenant)?;
            let lifetime = max_signed_lifetime(&store, &tenant, &settings).await?;
            let t = now();
            let plan = plan_rotation(&records, alg, &tenant, &kek, t, lifetime)
                .map_err(|e| anyhow!("rotation: {e}"))?;
            store
                .rotate_keys(
                    &tenant,
                    plan.promote.as_deref(),
                    plan.retire.as_deref(),
                    &plan.new_next,
                    t,
                    plan.publish_until,
                )
                .await?;
            println!(
                "rotated: now signing with {}; retired {} (published until {}); next key {} published",
                plan.promote.as_deref().unwrap_or("-"),
                plan.retire.as_deref().unwrap_or("-"),
                plan.publish_until,
                plan.new_next.kid
            );
        }
    }
    Ok(())
}

fn print_client(c: &ClientRecord) -> Result<()> {
    let meta: serde_json::Value = serde_json::from_str(&c.metadata)?;
    let out = serde_json::json!({
        "tenant": c.tenant_id,
        "client_id": c.client_id,
        "has_secret": c.secret_hash.is_some(),
        "source": c.source,
        "created_at": c.created_at,
        "metadata": meta,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn clients(global: &GlobalArgs, cmd: ClientsCommand) -> Result<()> {
    let (store, _, _) = bootstrap(global).await?;
    match cmd {
        ClientsCommand::Add(a) => {
            tenant_settings(&store, &a.tenant).await?;
            let method: AuthMethod = serde_json::from_value(serde_json::Value::String(
                a.auth_method.clone(),
            ))
            .map_err(|_| {
                anyhow!(
                    "--auth-method: '{}' is not one of {}",
                    a.auth_method,
                    AuthMethod::ALL.join(", ")
                )
            })?;
            let format: TokenFormat = serde_json::from_value(serde_json::Value::String(
                a.token_format.clone(),
            ))
            .map_err(|_| anyhow!("--token-format: '{}' must be jwt or opaque", a.token_format))?;
            let jwks = match &a.jwks_file {
                Some(p) => Some(
                    serde_json::from_str(
                        &std::fs::read_to_string(p)
                            .with_context(|| format!("--jwks-file: cannot read {}", p.display()))?,
                    )
                    .map_err(|e| anyhow!("--jwks-file: not JSON: {e}"))?,
                ),
                None => None,
            };
            let opt = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
            let meta = ClientMetadata {
                client_name: a.name.clone(),
                redirect_uris: a.redirect_uris.clone(),
                grant_types: if a.grant_types.is_empty() {
                    if method == AuthMethod::None || !a.redirect_uris.is_empty() {
                        crate::tenants::default_grant_types()
                    } else {
                        vec!["client_credentials".into()]
                    }
                } else {
                    a.grant_types.clone()
                },
                token_endpoint_auth_method: method,
                jwks,
                jwks_uri: None,
                resources: opt(&a.resources),
                scopes: opt(&a.scopes),
                default_scopes: opt(&a.default_scopes),
                access_token_format: format,
                access_token_ttl: None,
                refresh_token_ttl: None,
                skip_consent: false,
                initial_access_token: false,
                introspect_any: false,
                dynamic: false,
            };
            let (secret, secret_hash) = if method.uses_secret() {
                let secret = match &a.secret_env {
                    Some(var) if std::env::var(var).is_ok_and(|s| s.len() < 16) => {
                        bail!("--secret-env: the secret in ${var} must be at least 16 characters")
                    }
                    Some(var) => std::env::var(var)
                        .map_err(|_| anyhow!("--secret-env: ${var} is not set"))?,
                    None => Handle::generate().expose().to_string(),
                };
                let hash = argon2_hash(&secret).map_err(|e| anyhow!(e))?;
                (Some(secret), Some(hash))
            } else {
                (None, None)
            };
            let tenant_resources: Vec<String> = store
                .list_resources(&a.tenant)
                .await?
                .into_iter()
                .map(|r| r.uri)
                .collect();
            validate_client(&a.client_id, &meta, secret.is_some(), &tenant_resources)
                .map_err(|e| anyhow!("--{}", e.replace('_', "-")))?;
            if store.get_client(&a.tenant, &a.client_id).await?.is_some() {
                bail!(
                    "--client-id: client '{}' already exists in tenant '{}'",
                    a.client_id,
                    a.tenant
                );
            }
            let t = now();
            store
                .upsert_client(&ClientRecord {
                    tenant_id: a.tenant.clone(),
                    client_id: a.client_id.clone(),
                    secret_hash,
                    metadata: serde_json::to_string(&meta)?,
                    source: "cli".into(),
                    created_at: t,
                    updated_at: t,
                })
                .await?;
            println!("client '{}' added to tenant '{}'", a.client_id, a.tenant);
            if let (Some(s), None) = (&secret, &a.secret_env) {
                println!("client_secret: {s}");
                println!("(shown once; only its hash is stored)");
            }
        }
        ClientsCommand::List { tenant } => {
            tenant_settings(&store, &tenant).await?;
            for c in store.list_clients(&tenant).await? {
                let meta: ClientMetadata = serde_json::from_str(&c.metadata)?;
                println!(
                    "{:<32} {:<20} {:<7} {}",
                    c.client_id,
                    meta.token_endpoint_auth_method.as_str(),
                    c.source,
                    meta.grant_types.join(",")
                );
            }
        }
        ClientsCommand::Show { client_id, tenant } => {
            let c = store
                .get_client(&tenant, &client_id)
                .await?
                .ok_or_else(|| {
                    anyhow!("client_id: no client '{client_id}' in tenant '{tenant}'")
                })?;
            print_client(&c)?;
        }
        ClientsCommand::Delete { client_id, tenant } => {
            if !store.delete_client(&tenant, &client_id).await? {
                bail!("client_id: no client '{client_id}' in tenant '{tenant}'");
            }
            println!("client '{client_id}' deleted");
        }
        ClientsCommand::InitialToken { tenant, ttl } => {
            let settings = tenant_settings(&store, &tenant).await?;
            if !(60..=365 * 86_400).contains(&ttl) {
                bail!("--ttl: must be between 60 and 31536000 seconds (got {ttl})");
            }
            let token = Handle::generate();
            let t = now();
            store
                .put_initial_access_token(&crate::store::InitialAccessTokenRecord {
                    token_hash: token.hash(),
                    tenant_id: tenant.clone(),
                    created_at: t,
                    expires_at: t + ttl,
                })
                .await?;
            if settings.registration.mode != crate::tenants::RegistrationMode::InitialAccessToken {
                eprintln!(
                    "note: tenant '{tenant}' does not require initial access tokens (registration.mode)"
                );
            }
            println!("initial_access_token: {}", token.expose());
            println!("expires_at: {}", t + ttl);
            println!("(shown once; only its hash is stored)");
        }
    }
    Ok(())
}

async fn resources(global: &GlobalArgs, cmd: ResourcesCommand) -> Result<()> {
    let (store, _, _) = bootstrap(global).await?;
    match cmd {
        ResourcesCommand::Add {
            uri,
            tenant,
            name,
            scopes,
            default_scopes,
        } => {
            tenant_settings(&store, &tenant).await?;
            let rc = crate::config::ResourceConfig {
                uri: uri.clone(),
                name: name.clone(),
                scopes: scopes.clone(),
                default_scopes: (!default_scopes.is_empty()).then(|| default_scopes.clone()),
                access_token_ttl: None,
                access_token_format: None,
            };
            let canon = crate::config::validate_resource(&rc)
                .map_err(|e| anyhow!("--{}", e.replace('_', "-")))?;
            let rs = ResourceSettings {
                name,
                scopes,
                default_scopes: rc.default_scopes,
                access_token_ttl: None,
                access_token_format: None,
            };
            store
                .upsert_resource(&ResourceRecord {
                    tenant_id: tenant.clone(),
                    uri: canon.clone(),
                    settings: serde_json::to_string(&rs)?,
                    created_at: now(),
                })
                .await?;
            println!("resource {canon} saved in tenant '{tenant}'");
        }
        ResourcesCommand::List { tenant } => {
            tenant_settings(&store, &tenant).await?;
            for r in store.list_resources(&tenant).await? {
                let s: ResourceSettings = serde_json::from_str(&r.settings)?;
                println!("{:<48} {}", r.uri, s.scopes.join(" "));
            }
        }
    }
    Ok(())
}

/// Every tenant's domain in the store, with `change` (a tenant id and its
/// new domain) applied, checked together (valid, unique, not the public
/// URL's host).
async fn check_domains(
    store: &DynStore,
    public_url: Option<&str>,
    change: Option<(&str, Option<&str>)>,
) -> Result<()> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for t in store.list_tenants().await? {
        let s: TenantSettings = serde_json::from_str(&t.settings).unwrap_or_default();
        let changed = change.is_some_and(|(id, _)| id == t.id);
        if let Some(d) = s.domain.filter(|_| !changed) {
            pairs.push((t.id, d));
        }
    }
    if let Some((id, Some(d))) = change {
        pairs.push((id.to_string(), d.to_string()));
    }
    let public_host = public_url
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    validate_domains(
        pairs.iter().map(|(i, d)| (i.as_str(), d.as_str())),
        public_host.as_deref(),
    )
    .map_err(|e| anyhow!(e))
}

async fn tenants(global: &GlobalArgs, cmd: TenantsCommand) -> Result<()> {
    let (store, kek, cfg) = bootstrap(global).await?;
    match cmd {
        TenantsCommand::Add {
            id,
            display_name,
            domain,
        } => {
            validate_tenant_id(&id).map_err(|e| anyhow!("id: {e}"))?;
            if store.get_tenant(&id).await?.is_some() {
                bail!("id: tenant '{id}' already exists");
            }
            check_domains(&store, None, Some((&id, domain.as_deref()))).await?;
            let settings = TenantSettings {
                display_name,
                domain,
                ..Default::default()
            };
            store
                .upsert_tenant(&TenantRecord {
                    id: id.clone(),
                    settings: serde_json::to_string(&settings)?,
                    created_at: now(),
                })
                .await?;
            ensure_keys(&store, &kek, &id, tenant_alg(&settings, cfg.as_ref())).await?;
            println!("tenant '{id}' added");
        }
        TenantsCommand::SetDomain { id, domain, clear } => {
            let mut settings = tenant_settings(&store, &id).await?;
            let domain = domain.filter(|_| !clear);
            check_domains(&store, None, Some((&id, domain.as_deref()))).await?;
            settings.domain = domain;
            let created_at = store.get_tenant(&id).await?.map_or(now(), |t| t.created_at);
            store
                .upsert_tenant(&TenantRecord {
                    id: id.clone(),
                    settings: serde_json::to_string(&settings)?,
                    created_at,
                })
                .await?;
            match &settings.domain {
                Some(d) => println!("tenant '{id}' is served at host '{d}'"),
                None => println!("tenant '{id}' is served under /t/{id}"),
            }
        }
        TenantsCommand::List => {
            for t in store.list_tenants().await? {
                let s: TenantSettings = serde_json::from_str(&t.settings).unwrap_or_default();
                println!(
                    "{:<24} {:<32} {}",
                    t.id,
                    s.domain.unwrap_or_default(),
                    s.display_name.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

pub type SharedStore = Arc<dyn crate::store::Store>;
