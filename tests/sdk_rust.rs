//! End to end: the Rust verifier SDK (sdk/rust, `gatehouse-verify`) against
//! the real Gatehouse binary.

mod common;

use common::*;
use gatehouse_verify::{IntrospectionConfig, Verifier, VerifierConfig, VerifyError};

async fn service_token(server: &Server, resource: &str) -> String {
    let (status, json) = token_request(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", "mcp:read mcp:write"),
        ],
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn kid(token: &str) -> String {
    jwt_header(token)["kid"].as_str().expect("kid").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_verifies_real_tokens_across_key_rotation() {
    let mut server = Server::start(Db::Sqlite).await;
    let verifier = Verifier::discover(VerifierConfig::new(&server.base, MCP))
        .await
        .expect("discovery of the real server");
    assert_eq!(
        verifier.server_metadata().jwks_uri,
        server.url("/jwks.json")
    );

    let token = service_token(&server, MCP).await;
    let verified = verifier.verify(&token).await.expect("real token verifies");
    assert_eq!(verified.issuer, server.base);
    assert_eq!(verified.subject, SERVICE_CLIENT);
    assert_eq!(verified.client_id, SERVICE_CLIENT);
    assert_eq!(verified.audience, MCP);
    assert!(verified.has_scope("mcp:read") && verified.has_scope("mcp:write"));
    assert!(
        !verified.is_user(),
        "client_credentials tokens have no auth_time"
    );
    assert!(verified.jti.is_some() && verified.issued_at.is_some());

    // The same token is refused by a verifier for another resource.
    let other = Verifier::discover(VerifierConfig::new(&server.base, OTHER))
        .await
        .expect("discovery");
    assert_eq!(other.verify(&token).await, Err(VerifyError::WrongAudience));
    // And a token for the other resource is refused here.
    let other_token = {
        let (status, json) = token_request(
            &server,
            &[("grant_type", "client_credentials"), ("resource", OTHER)],
            Some((SERVICE_CLIENT, SERVICE_SECRET)),
        )
        .await;
        assert_eq!(status, 200, "{json}");
        json["access_token"].as_str().expect("token").to_string()
    };
    assert_eq!(
        verifier.verify(&other_token).await,
        Err(VerifyError::WrongAudience)
    );

    // Rotate the signing key and restart: new tokens carry a new kid.
    let old_kid = kid(&token);
    let out = server.cli(&["keys", "rotate"]);
    assert!(
        out.status.success(),
        "keys rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.restart().await;
    let new_token = service_token(&server, MCP).await;
    assert_ne!(kid(&new_token), old_kid, "rotation changes the signing key");

    // The long-lived verifier accepts both the new and the old token.
    let verified = verifier.verify(&new_token).await.expect("new kid verifies");
    assert_eq!(verified.client_id, SERVICE_CLIENT);
    verifier
        .verify(&token)
        .await
        .expect("old kid still verifies");

    // So does a verifier discovered after the rotation.
    let fresh = Verifier::discover(VerifierConfig::new(&server.base, MCP))
        .await
        .expect("discovery after rotation");
    fresh
        .verify(&new_token)
        .await
        .expect("new token, fresh verifier");
    fresh
        .verify(&token)
        .await
        .expect("old token, fresh verifier");
}

const OPAQUE_CLIENT: &str = "opaque-svc";
const OPAQUE_SECRET: &str = "opaque-service-secret";
const RS_CLIENT: &str = "demo-mcp-server";
const RS_SECRET: &str = "demo-mcp-server-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_introspects_real_opaque_tokens() {
    let config = base_config(&format!(
        r#"
[[tenants.clients]]
client_id = "{OPAQUE_CLIENT}"
secret = "{OPAQUE_SECRET}"
grant_types = ["client_credentials"]
access_token_format = "opaque"

[[tenants.clients]]
client_id = "{RS_CLIENT}"
secret = "{RS_SECRET}"
grant_types = ["client_credentials"]
resources = ["{MCP}"]
"#
    ));
    let server = Server::start_with(Db::Sqlite, &config).await;
    let verifier = Verifier::discover(
        VerifierConfig::new(&server.base, MCP)
            .with_introspection(IntrospectionConfig::new(RS_CLIENT, RS_SECRET)),
    )
    .await
    .expect("discovery");

    let (status, json) = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some((OPAQUE_CLIENT, OPAQUE_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let opaque = json["access_token"].as_str().expect("token").to_string();
    assert!(!opaque.contains('.'));

    let verified = verifier.verify(&opaque).await.expect("opaque verifies");
    assert_eq!(verified.client_id, OPAQUE_CLIENT);
    assert_eq!(verified.audience, MCP);
    assert!(verified.has_scope("mcp:read"));

    assert_eq!(
        verifier.verify("not-a-real-token-0123456789").await,
        Err(VerifyError::Inactive)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_discovers_a_tenant_issuer_by_path_insertion() {
    let config = base_config(&format!(
        r#"
[[tenants]]
id = "acme"
display_name = "Acme"

[[tenants.resources]]
uri = "{MCP}"
name = "Acme MCP server"
scopes = ["mcp:read"]

[[tenants.clients]]
client_id = "acme-svc"
secret = "acme-service-secret"
grant_types = ["client_credentials"]
"#
    ));
    let server = Server::start_with(Db::Sqlite, &config).await;
    let acme_issuer = format!("{}/t/acme", server.base);
    let acme = Verifier::discover(VerifierConfig::new(&acme_issuer, MCP))
        .await
        .expect("tenant discovery");
    assert_eq!(
        acme.server_metadata().jwks_uri,
        server.url("/t/acme/jwks.json")
    );

    let http = reqwest::Client::new();
    let json: serde_json::Value = http
        .post(server.url("/t/acme/token"))
        .basic_auth("acme-svc", Some("acme-service-secret"))
        .form(&[("grant_type", "client_credentials"), ("resource", MCP)])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("json");
    let acme_token = json["access_token"].as_str().expect("token");
    let verified = acme
        .verify(acme_token)
        .await
        .expect("tenant token verifies");
    assert_eq!(verified.issuer, acme_issuer);

    // Another tenant's token for the same resource URI is refused.
    let default_token = service_token(&server, MCP).await;
    let err = acme.verify(&default_token).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::UnknownKey | VerifyError::WrongIssuer),
        "{err:?}"
    );
}
