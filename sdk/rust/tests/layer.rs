//! The axum layer, extractor and metadata router, over real HTTP.
#![cfg(feature = "axum")]

mod common;

use std::sync::Arc;

use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use gatehouse_verify::{
    protected_resource_router_for, require_scope, Authenticated, RequireBearer, Verifier,
};
use serde_json::{json, Value};

const METADATA_URL: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

/// An MCP-ish app: `/mcp` needs `mcp:read`; the `write` tool also checks
/// `mcp:write` inside the handler; `/admin` needs `mcp:admin` at the layer.
async fn serve_app(verifier: Arc<Verifier>) -> String {
    let protected = Router::new()
        .route(
            "/mcp",
            post(|Authenticated(token): Authenticated| async move {
                Json(json!({"sub": token.subject, "scopes": token.scopes}))
            }),
        )
        .route(
            "/mcp/write",
            post(|token: Authenticated| async move {
                require_scope(&token, "mcp:write")?;
                Ok::<_, Response>(Json(json!({"written": true})))
            }),
        )
        .layer(RequireBearer::new(Arc::clone(&verifier)).with_scopes(["mcp:read"]));
    let admin = Router::new()
        .route("/admin", get(|| async { "admin" }))
        .layer(RequireBearer::new(Arc::clone(&verifier)).with_scopes(["mcp:admin"]));
    let app = Router::new()
        .merge(protected)
        .merge(admin)
        .merge(protected_resource_router_for(
            &verifier,
            ["mcp:read", "mcp:write"],
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    base
}

fn www_authenticate(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn setup() -> (TestIssuer, String) {
    let issuer = TestIssuer::start().await;
    let verifier = Arc::new(issuer.verifier().await);
    let base = serve_app(verifier).await;
    (issuer, base)
}

#[tokio::test]
async fn missing_token_gets_401_with_resource_metadata() {
    let (_issuer, base) = setup().await;
    let http = reqwest::Client::new();
    for req in [
        http.post(format!("{base}/mcp")),
        http.post(format!("{base}/mcp"))
            .basic_auth("user", Some("pw")),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(
            www_authenticate(&res),
            format!("Bearer resource_metadata=\"{METADATA_URL}\", scope=\"mcp:read\"")
        );
        assert!(!www_authenticate(&res).contains("error="));
    }
}

#[tokio::test]
async fn invalid_token_gets_401_invalid_token() {
    let (issuer, base) = setup().await;
    let mut claims = issuer.claims();
    claims["exp"] = json!(now() - 3600);
    let expired = issuer.key.sign(&claims);
    let res = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let challenge = www_authenticate(&res);
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{METADATA_URL}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains("error_description=\"token expired\""),
        "{challenge}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn good_token_reaches_the_handler() {
    let (issuer, base) = setup().await;
    let res = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(issuer.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sub"], issuer.claims()["sub"]);
    assert_eq!(body["scopes"], json!(["mcp:read", "openid"]));
}

#[tokio::test]
async fn missing_layer_scope_gets_403_insufficient_scope() {
    let (issuer, base) = setup().await;
    let res = reqwest::Client::new()
        .get(format!("{base}/admin"))
        .bearer_auth(issuer.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let challenge = www_authenticate(&res);
    assert!(
        challenge.starts_with(&format!(
            "Bearer error=\"insufficient_scope\", scope=\"mcp:admin\", resource_metadata=\"{METADATA_URL}\""
        )),
        "{challenge}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
}

#[tokio::test]
async fn require_scope_in_handler_gets_403() {
    let (issuer, base) = setup().await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/mcp/write"))
        .bearer_auth(issuer.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let challenge = www_authenticate(&res);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp:write\""), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{METADATA_URL}\"")),
        "{challenge}"
    );

    let mut claims = issuer.claims();
    claims["scope"] = json!("mcp:read mcp:write");
    let res = http
        .post(format!("{base}/mcp/write"))
        .bearer_auth(issuer.key.sign(&claims))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn authorization_server_down_gets_503() {
    let issuer = TestIssuer::start().await;
    let verifier = Arc::new(
        Verifier::discover(issuer.config_with_introspection())
            .await
            .unwrap(),
    );
    let base = serve_app(verifier).await;
    let res = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth("explode")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("www-authenticate").is_none());
}

#[tokio::test]
async fn metadata_served_at_both_well_known_urls() {
    let (issuer, base) = setup().await;
    let http = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let res = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let doc: Value = res.json().await.unwrap();
        assert_eq!(
            doc,
            json!({
                "resource": RESOURCE,
                "authorization_servers": [issuer.issuer],
                "scopes_supported": ["mcp:read", "mcp:write"],
                "bearer_methods_supported": ["header"],
            }),
            "{path}"
        );
    }
}

#[tokio::test]
async fn extractor_without_layer_is_a_server_error() {
    let app: Router = Router::new().route(
        "/",
        get(|Authenticated(t): Authenticated| async move { t.subject }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let res = reqwest::get(&base).await.unwrap();
    assert_eq!(res.status(), 500);
}
