//! RFC 8693 token exchange: an agent exchanges a user's token, with its own
//! actor token, for a narrower token to a second MCP server.

mod common;

use common::*;
use serde_json::Value;

const SECOND: &str = "https://second.example.com/mcp";
const AGENT: &str = "agent";
const AGENT_SECRET: &str = "agent-secret-0123456789";
const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const RT: &str = "urn:ietf:params:oauth:token-type:refresh_token";

fn config() -> String {
    base_config(&format!(
        r#"
[[tenants.resources]]
uri = "{SECOND}"
name = "Second MCP server"
scopes = ["mcp:read", "mcp:write"]

[[tenants.clients]]
client_id = "{AGENT}"
client_name = "Delegating agent"
secret = "{AGENT_SECRET}"
grant_types = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]

[[tenants.clients]]
client_id = "outsider"
secret = "outsider-secret-0123456789"
grant_types = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
subject_token_types = ["{AT}"]
resources = ["{SECOND}"]

[[tenants.clients]]
client_id = "offline-agent"
secret = "offline-agent-secret-0123"
grant_types = ["refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"]

[[tenants.token_exchange]]
clients = ["offline-agent"]
resources = ["{SECOND}"]
allow_refresh_token = true
"#
    ))
}

async fn agent_token(server: &Server) -> String {
    let (status, json) = token_request(
        server,
        &[("grant_type", "client_credentials"), ("resource", SECOND)],
        Some((AGENT, AGENT_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json["access_token"].as_str().unwrap().to_string()
}

async fn exchange(server: &Server, client: (&str, &str), form: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("grant_type", TE)];
    all.extend_from_slice(form);
    token_request(server, &all, Some(client)).await
}

async fn user_token(server: &Server) -> String {
    let tokens = login_public(server, &Browser::new(), "mcp:read mcp:write").await;
    tokens["access_token"].as_str().unwrap().to_string()
}

async fn delegated_token_names_the_agent_and_narrows(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    let actor = agent_token(&server).await;
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("actor_token", &actor),
            ("actor_token_type", AT),
            ("resource", SECOND),
            ("scope", "mcp:read"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["issued_token_type"], AT);
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["scope"], "mcp:read");
    let claims = jwt_claims(json["access_token"].as_str().unwrap());
    let user_claims = jwt_claims(&user);
    assert_eq!(claims["aud"], SECOND);
    assert_eq!(
        claims["sub"], user_claims["sub"],
        "the user stays the subject"
    );
    assert_eq!(claims["client_id"], AGENT);
    assert_eq!(claims["scope"], "mcp:read");
    assert_eq!(claims["act"]["sub"], AGENT, "act names the agent");
    assert_eq!(claims["act"]["client_id"], AGENT);
    let intro = introspect(&server, json["access_token"].as_str().unwrap()).await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["act"]["sub"], AGENT);
}

async fn second_exchange_nests_the_act_chain(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    let actor = agent_token(&server).await;
    let form = |subject: &str| {
        vec![
            ("subject_token".to_string(), subject.to_string()),
            ("subject_token_type".into(), AT.into()),
            ("actor_token".into(), actor.clone()),
            ("actor_token_type".into(), AT.into()),
            ("resource".into(), SECOND.into()),
        ]
    };
    let first = form(&user);
    let first: Vec<(&str, &str)> = first
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (_, one) = exchange(&server, (AGENT, AGENT_SECRET), &first).await;
    let delegated = one["access_token"].as_str().unwrap().to_string();
    let second = form(&delegated);
    let second: Vec<(&str, &str)> = second
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, two) = exchange(&server, (AGENT, AGENT_SECRET), &second).await;
    assert_eq!(status, 200, "{two}");
    let claims = jwt_claims(two["access_token"].as_str().unwrap());
    assert_eq!(claims["act"]["sub"], AGENT);
    assert_eq!(
        claims["act"]["act"]["sub"], AGENT,
        "the prior actor is nested"
    );
}

async fn widened_scope_is_invalid_scope(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let user = tokens["access_token"].as_str().unwrap();
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", user),
            ("subject_token_type", AT),
            ("resource", SECOND),
            ("scope", "mcp:read mcp:write"),
        ],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_scope")),
        "{json}"
    );
}

async fn foreign_audience_is_invalid_target(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    for target in ["https://evil.example.com/mcp", OTHER] {
        let (status, json) = exchange(
            &server,
            (AGENT, AGENT_SECRET),
            &[
                ("subject_token", &user),
                ("subject_token_type", AT),
                ("audience", target),
            ],
        )
        .await;
        assert_eq!(
            (status, json["error"].as_str()),
            (400, Some("invalid_target")),
            "{target}: {json}"
        );
    }
}

async fn missing_target_is_invalid_target(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[("subject_token", &user), ("subject_token_type", AT)],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_target")),
        "{json}"
    );
}

async fn subject_token_of_another_tenant_is_refused(db: Db) {
    let server = Server::start_with(db, &config()).await;
    assert!(server.cli(&["tenants", "add", "acme"]).status.success());
    assert!(server
        .cli(&[
            "resources",
            "add",
            "--tenant",
            "acme",
            "--uri",
            SECOND,
            "--scope",
            "mcp:read"
        ])
        .status
        .success());
    let out = server.cli(&[
        "clients",
        "add",
        "--tenant",
        "acme",
        "--client-id",
        "acme-svc",
        "--grant-type",
        "client_credentials",
        "--resource",
        SECOND,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap()
        .trim()
        .to_string();
    let res = reqwest::Client::new()
        .post(server.url("/t/acme/token"))
        .basic_auth("acme-svc", Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("resource", SECOND)])
        .send()
        .await
        .unwrap();
    let acme: Value = res.json().await.unwrap();
    let foreign = acme["access_token"].as_str().unwrap();
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", foreign),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
}

async fn expired_subject_token_is_refused(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    server.advance_clock(601);
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
}

async fn revoked_subject_token_is_refused(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let user = tokens["access_token"].as_str().unwrap();
    let res = reqwest::Client::new()
        .post(server.url("/revoke"))
        .form(&[
            ("token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", user),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
}

async fn revoking_the_users_grant_revokes_delegated_tokens(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let user = tokens["access_token"].as_str().unwrap();
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", user),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let delegated = json["access_token"].as_str().unwrap();
    assert_eq!(introspect(&server, delegated).await["active"], true);
    reqwest::Client::new()
        .post(server.url("/revoke"))
        .form(&[
            ("token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(introspect(&server, delegated).await["active"], false);
}

async fn client_not_in_policy_is_refused(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    let (status, json) = exchange(
        &server,
        ("outsider", "outsider-secret-0123456789"),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
    assert!(json["error_description"]
        .as_str()
        .unwrap()
        .contains("policy"));
}

async fn client_without_the_grant_type_is_unauthorized(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    let (status, json) = exchange(
        &server,
        (SERVICE_CLIENT, SERVICE_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{json}"
    );
}

async fn unsupported_token_types_are_invalid_request(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    for form in [
        vec![
            ("subject_token", user.as_str()),
            ("subject_token_type", "urn:x:unknown"),
            ("resource", SECOND),
        ],
        vec![
            ("subject_token", user.as_str()),
            ("subject_token_type", AT),
            ("resource", SECOND),
            ("requested_token_type", "urn:x:y"),
        ],
        vec![
            ("subject_token", user.as_str()),
            ("subject_token_type", AT),
            ("resource", SECOND),
            ("actor_token", "x"),
        ],
        vec![("subject_token_type", AT), ("resource", SECOND)],
    ] {
        let (status, json) = exchange(&server, (AGENT, AGENT_SECRET), &form).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (400, Some("invalid_request")),
            "{form:?}: {json}"
        );
    }
}

async fn refresh_token_needs_policy_and_jwt_can_be_requested(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("resource", SECOND),
            ("requested_token_type", RT),
        ],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("resource", SECOND),
            ("requested_token_type", JWT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["issued_token_type"], JWT);
    assert_eq!(
        jwt_header(json["access_token"].as_str().unwrap())["typ"],
        "at+jwt"
    );
}

async fn exchanged_refresh_token_dies_with_the_users_grant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let tokens = login_public(&server, &Browser::new(), "mcp:read").await;
    let user = tokens["access_token"].as_str().unwrap();
    let offline = ("offline-agent", "offline-agent-secret-0123");
    let (status, json) = exchange(
        &server,
        offline,
        &[
            ("subject_token", user),
            ("subject_token_type", AT),
            ("resource", SECOND),
            ("requested_token_type", RT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["issued_token_type"], RT);
    assert_eq!(json["token_type"], "N_A");
    let derived_refresh = json["access_token"].as_str().unwrap().to_string();
    // The agent can use it while the user's grant stands...
    let (status, refreshed) = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &derived_refresh),
        ],
        Some(offline),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(
        jwt_claims(refreshed["access_token"].as_str().unwrap())["aud"],
        SECOND
    );
    let next = refreshed["refresh_token"].as_str().unwrap().to_string();
    // ...and not after the user revokes it.
    reqwest::Client::new()
        .post(server.url("/revoke"))
        .form(&[
            ("token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    let (status, json) = token_request(
        &server,
        &[("grant_type", "refresh_token"), ("refresh_token", &next)],
        Some(offline),
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "{json}"
    );
    assert_eq!(
        introspect(&server, refreshed["access_token"].as_str().unwrap()).await["active"],
        false
    );
}

/// The whole story: a program with no prior registration registers itself
/// (DCR), logs the user in, and an agent exchanges the user's token, with
/// its own actor token, for a narrower token to a second MCP server.
async fn self_registered_client_login_then_agent_delegation(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let res = reqwest::Client::new()
        .post(server.url("/register"))
        .json(&serde_json::json!({
            "client_name": "Fresh MCP client",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let registered: Value = res.json().await.unwrap();
    let client_id = registered["client_id"].as_str().unwrap();

    let p = pkce();
    let url = authorize_url(
        &server,
        client_id,
        REDIRECT,
        &p.challenge,
        &[("scope", "mcp:read mcp:write")],
    );
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, tokens) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let user = tokens["access_token"].as_str().unwrap();
    assert_eq!(jwt_claims(user)["client_id"], client_id);

    let actor = agent_token(&server).await;
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", user),
            ("subject_token_type", AT),
            ("actor_token", &actor),
            ("actor_token_type", AT),
            ("resource", SECOND),
            ("scope", "mcp:read"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let claims = jwt_claims(json["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], SECOND);
    assert_eq!(claims["scope"], "mcp:read");
    assert_eq!(claims["sub"], jwt_claims(user)["sub"]);
    assert_eq!(claims["act"]["sub"], AGENT);
}

on_both_databases!(
    self_registered_client_login_then_agent_delegation,
    exchanged_refresh_token_dies_with_the_users_grant,
    delegated_token_names_the_agent_and_narrows,
    second_exchange_nests_the_act_chain,
    widened_scope_is_invalid_scope,
    foreign_audience_is_invalid_target,
    missing_target_is_invalid_target,
    subject_token_of_another_tenant_is_refused,
    expired_subject_token_is_refused,
    revoked_subject_token_is_refused,
    revoking_the_users_grant_revokes_delegated_tokens,
    client_not_in_policy_is_refused,
    client_without_the_grant_type_is_unauthorized,
    unsupported_token_types_are_invalid_request,
    refresh_token_needs_policy_and_jwt_can_be_requested,
);
