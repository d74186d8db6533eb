//! The shared state and the axum router.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use moka::future::Cache;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::audit::Audit;
use crate::clock::Clock;
use crate::endpoints;
use crate::http::{body_deadline, path, source, TrustedProxies};
use crate::keys::Kek;
use crate::limits::Limits;
use crate::store::DynStore;
use crate::tenants::{Tenant, TenantError, TenantRegistry};

/// How long a node may serve a tenant's settings, keys or a client after a
/// change made elsewhere (CLI, another node).
pub const CACHE_TTL: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: DynStore,
    pub clock: Clock,
    pub kek: Kek,
    pub public_url: String,
    pub tenants: TenantRegistry,
    pub clients: crate::oauth::client_auth::ClientCache,
    pub audit: Audit,
    /// https public URL: cookies get `Secure` and the `__Host-` prefix.
    pub secure_cookies: bool,
    /// Peers whose `X-Forwarded-For` is believed (see `http::source`).
    pub trusted_proxies: TrustedProxies,
    /// Rate limits and throttles (per node, or shared through Redis).
    pub limits: Limits,
    /// Time allowed to read a request body (`http::body_deadline`).
    pub body_timeout: Duration,
    /// Access tokens recently found active (introspection, userinfo).
    pub active_tokens: crate::tokens::active_cache::ActiveTokens,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// How the node meets the outside world: which proxies it believes, where
/// audit and security events go, the limits store and how long a body may
/// take.
pub struct EdgeSettings {
    pub trusted_proxies: TrustedProxies,
    pub audit: crate::audit::AuditSettings,
    pub limits: Limits,
    pub body_timeout: Duration,
}

impl AppState {
    pub fn new(
        store: DynStore,
        clock: Clock,
        kek: Kek,
        public_url: String,
        edge: EdgeSettings,
    ) -> Self {
        let secure_cookies = public_url.starts_with("https://");
        let audit = Audit::start(store.clone(), clock.clone(), edge.audit);
        let active_tokens = crate::tokens::active_cache::ActiveTokens::new(store.changes().clone());
        AppState(Arc::new(Inner {
            store,
            clock,
            kek,
            public_url,
            tenants: TenantRegistry::new(CACHE_TTL),
            clients: crate::oauth::client_auth::ClientCache::new(CACHE_TTL),
            audit,
            secure_cookies,
            trusted_proxies: edge.trusted_proxies,
            limits: edge.limits,
            body_timeout: edge.body_timeout,
            active_tokens,
        }))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub async fn tenant(&self, id: &str) -> Result<Arc<Tenant>, TenantError> {
        self.tenants
            .get(&self.store, &self.kek, &self.public_url, id, self.now())
            .await
    }
}

/// Routes every tenant has, mounted at `/` for the default tenant and at
/// `/t/{tenant}` for the others.
fn tenant_routes() -> Router<AppState> {
    // Back-channel endpoints that browser-based MCP clients call with fetch():
    // any origin, no cookies (they authenticate with PKCE or client auth).
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    let api = Router::new()
        .route("/token", post(endpoints::token::token))
        .route(
            "/device_authorization",
            post(endpoints::device::device_authorization),
        )
        .route("/introspect", post(endpoints::introspect::introspect))
        .route("/revoke", post(endpoints::revoke::revoke))
        .route(
            "/userinfo",
            get(endpoints::userinfo::userinfo).post(endpoints::userinfo::userinfo),
        )
        .route("/jwks.json", get(endpoints::jwks::jwks))
        .route(
            "/saml/{connector_id}/metadata",
            get(endpoints::saml::metadata),
        )
        .route(
            "/resource-metadata",
            get(endpoints::resource_metadata::resource_metadata),
        )
        .route("/register", post(endpoints::register::register))
        .route(
            "/register/{client_id}",
            get(endpoints::register::read)
                .put(endpoints::register::update)
                .delete(endpoints::register::delete),
        )
        .route(
            "/.well-known/openid-configuration",
            get(endpoints::discovery::openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(endpoints::discovery::oauth_metadata),
        )
        .layer(cors);
    // Browser pages: same-origin forms only.
    Router::new()
        .route(
            "/authorize",
            get(endpoints::authorize::authorize).post(endpoints::authorize::authorize_post),
        )
        .route(
            "/login",
            get(endpoints::login::show).post(endpoints::login::submit),
        )
        .route("/login/email", post(endpoints::login::email))
        .route(
            "/callback/{connector_id}",
            get(endpoints::callback::callback).post(endpoints::callback::callback_post),
        )
        .route("/consent", post(endpoints::consent::submit))
        .route(
            "/device",
            get(endpoints::device::show).post(endpoints::device::enter),
        )
        .merge(api)
}

pub fn router(app: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET]);
    let well_known = Router::new()
        // RFC 8414 §3.1 path insertion for issuers with a path, and the OIDC
        // variant some MCP clients also try.
        .route(
            "/.well-known/oauth-authorization-server/t/{tenant}",
            get(endpoints::discovery::oauth_metadata),
        )
        .route(
            "/.well-known/openid-configuration/t/{tenant}",
            get(endpoints::discovery::openid_configuration),
        )
        .layer(cors);

    Router::new()
        .merge(tenant_routes())
        .nest("/t/{tenant}", tenant_routes())
        .merge(well_known)
        .route("/healthz", get(endpoints::health::healthz))
        .route("/readyz", get(endpoints::health::readyz))
        .fallback(endpoints::health::not_found)
        .method_not_allowed_fallback(endpoints::health::method_not_allowed)
        // One stack, applied once: each `Router::layer` call would box and
        // clone every route's service again on each request. The first layer
        // listed is the outermost.
        .layer(
            ServiceBuilder::new()
                // Outermost, so it counts what the caller got, panics included.
                .layer(axum::middleware::from_fn(
                    crate::telemetry::http_metrics::record,
                ))
                .layer(CatchPanicLayer::custom(endpoints::health::panic_response))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(axum::middleware::from_fn(
                    crate::telemetry::request::trace_request,
                ))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(axum::middleware::from_fn(path::refuse_malformed_path))
                .layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    source::set_source_addr,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    app.body_timeout,
                    body_deadline::limit_body_time,
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(DefaultBodyLimit::max(endpoints::token::MAX_FORM_BODY)),
        )
        .with_state(app)
}

/// Small helper used by caches keyed per tenant.
pub fn new_cache<V: Clone + Send + Sync + 'static>(ttl: Duration, cap: u64) -> Cache<String, V> {
    Cache::builder().max_capacity(cap).time_to_live(ttl).build()
}
