mod common;
use common::*;

async fn full_code_flow_works(db: Db) {
    let server = Server::start(db).await;
    let browser = Browser::new();
    let tokens = login_public(&server, &browser, "mcp:read").await;
    assert_eq!(tokens["token_type"], "Bearer");
    let claims = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(
        introspect(&server, tokens["access_token"].as_str().unwrap()).await["active"],
        true
    );
}

on_both_databases!(full_code_flow_works);
