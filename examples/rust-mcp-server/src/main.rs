//! A small MCP server written with the official Rust SDK (rmcp), serving
//! streamable HTTP at `/mcp`, that accepts only Gatehouse access tokens for
//! itself.
//!
//! Environment: `GATEHOUSE_ISSUER` (the issuer, exactly), `MCP_RESOURCE`
//! (this server's resource URI as registered at Gatehouse), `PORT` (listens
//! on `127.0.0.1:PORT`). `RUST_LOG` sets the log filter (default `warn`).

mod step_up;
mod tools;

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use gatehouse_verify::{
    protected_resource_metadata, protected_resource_router_for, RequireBearer, Verifier,
    VerifierConfig, VerifyError,
};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::tools::{NotesServer, READ_SCOPE, WRITE_SCOPE};

/// How long to keep trying to discover the issuer at start (Gatehouse may
/// still be starting).
const DISCOVERY_PATIENCE: Duration = Duration::from_secs(10);

/// Where the MCP endpoint is served, and the RFC 9728 metadata path for it.
const MCP_PATH: &str = "/mcp";
const MCP_METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

struct Settings {
    issuer: String,
    resource: String,
    port: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gatehouse-example-rmcp: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let settings = settings()?;
    let verifier = Arc::new(discover(&settings).await?);

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, settings.port)))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", settings.port))?;

    let shutdown = CancellationToken::new();
    let app = app(&verifier, &settings.resource, shutdown.clone());

    println!("listening on http://127.0.0.1:{}{MCP_PATH}", settings.port);
    let _ = std::io::stdout().flush();

    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Ends open SSE streams so the graceful shutdown can finish.
            shutdown.cancel();
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}

fn settings() -> Result<Settings, String> {
    fn var(name: &str) -> Result<String, String> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Ok(_) => Err(format!("{name} is empty")),
            Err(std::env::VarError::NotPresent) => Err(format!("{name} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
        }
    }
    let issuer = var("GATEHOUSE_ISSUER")?;
    let resource = var("MCP_RESOURCE")?;
    let port = var("PORT")?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("PORT must be a port number (1-65535), got {port:?}"))?;
    if gatehouse_verify::resource::canonicalize(&resource).is_none() {
        return Err(format!(
            "MCP_RESOURCE must be an absolute http(s) URI without fragment, got {resource:?}"
        ));
    }
    Ok(Settings {
        issuer,
        resource,
        port,
    })
}

/// Discovers the issuer, retrying while it is unreachable for up to
/// [`DISCOVERY_PATIENCE`]; configuration errors fail at once.
async fn discover(settings: &Settings) -> Result<Verifier, String> {
    let config = VerifierConfig::new(&settings.issuer, &settings.resource);
    let deadline = Instant::now() + DISCOVERY_PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, Verifier::discover(config.clone())).await {
            Ok(Ok(verifier)) => return Ok(verifier),
            Ok(Err(e @ VerifyError::Upstream(_))) => e.to_string(),
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot use issuer {} for resource {}: {e}",
                    settings.issuer, settings.resource
                ))
            }
            Err(_) => "timed out".to_string(),
        };
        if Instant::now() + Duration::from_millis(250) >= deadline {
            return Err(format!(
                "cannot discover issuer {} (tried for {}s): {error}",
                settings.issuer,
                DISCOVERY_PATIENCE.as_secs()
            ));
        }
        tracing::debug!(%error, "issuer not reachable yet; retrying");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The whole HTTP app: `/mcp` behind the bearer check, the metadata public.
fn app(verifier: &Arc<Verifier>, resource: &str, shutdown: CancellationToken) -> Router {
    let mut allowed_hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    // rmcp checks `Host` against an allow-list (DNS rebinding protection);
    // the resource's own host must pass when deployed behind a proxy.
    if let Some(host) = url::Url::parse(resource)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    {
        allowed_hosts.push(host);
    }
    let mcp = StreamableHttpService::new(
        || Ok(NotesServer::default()),
        Arc::new(NeverSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_allowed_hosts(allowed_hosts)
            .with_max_request_body_bytes(step_up::MAX_BODY_BYTES)
            .with_cancellation_token(shutdown),
    );

    let scopes = [READ_SCOPE, WRITE_SCOPE];
    let mut metadata = protected_resource_router_for(verifier, scopes);
    // The router above serves the root URL and the path-inserted URL of the
    // resource. MCP is answered at `/mcp` here, so clients may also look for
    // `/.well-known/oauth-protected-resource/mcp` when the public resource
    // URI has another path (behind a proxy): serve the document there too.
    let derived = url::Url::parse(verifier.resource_metadata_url())
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    if derived != MCP_METADATA_PATH {
        let doc = protected_resource_metadata(resource, [verifier.issuer()], scopes);
        metadata = metadata.route(
            MCP_METADATA_PATH,
            get(move || std::future::ready(Json(doc.clone()))),
        );
    }

    Router::new()
        .route_service(MCP_PATH, mcp)
        // Layers run outside-in: RequireBearer first (token valid, for this
        // resource, with mcp:read), then the per-tool scope check.
        .layer(axum::middleware::from_fn(step_up::require_tool_scopes))
        .layer(RequireBearer::new(Arc::clone(verifier)).with_scopes([READ_SCOPE]))
        .merge(metadata)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
