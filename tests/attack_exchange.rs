//! Token exchange trusts only the actors and subjects it should (issue 9,
//! item 4): a client presents only actor tokens issued to itself (or named
//! by a rule), never another client's own token as the subject, respects
//! `may_act`, presents only ID tokens issued to itself, and what an ID or
//! upstream token yields ends with the user (admin revocation, upstream
//! refusal, refresh reuse). Every refusal is an `exchange_refused` event.
//! Every test runs on SQLite and PostgreSQL.

mod common;
use common::upstream::{
    config as upstream_config, login_upstream, upstream_tokens, Upstream, UPSTREAM_CLIENT,
    UPSTREAM_SECRET,
};
use common::*;

use std::time::Duration;

use serde_json::Value;

const SECOND: &str = "https://second.example.com/mcp";
const AGENT: &str = "agent";
const AGENT_SECRET: &str = "agent-secret-0123456789";
const DELEGATE: &str = "delegate";
const DELEGATE_SECRET: &str = "delegate-secret-0123456789";
const TRUSTED: &str = "trusted-agent";
const TRUSTED_SECRET: &str = "trusted-agent-secret-0123";
const AGENT_REDIRECT: &str = "https://agent.example.com/callback";
const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const RT: &str = "urn:ietf:params:oauth:token-type:refresh_token";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// An agent that may exchange access and ID tokens for the second server
/// (refresh tokens included), and present `delegate`'s tokens as actor.
fn agent_clients() -> String {
    format!(
        r#"
[[tenants.resources]]
uri = "{SECOND}"
name = "Second MCP server"
scopes = ["mcp:read", "mcp:write"]

[[tenants.clients]]
client_id = "{AGENT}"
secret = "{AGENT_SECRET}"
redirect_uris = ["{AGENT_REDIRECT}"]
grant_types = ["authorization_code", "client_credentials", "refresh_token", "{TE}"]

[[tenants.clients]]
client_id = "{DELEGATE}"
secret = "{DELEGATE_SECRET}"
grant_types = ["client_credentials"]
"#
    )
}

fn config() -> String {
    base_config(&format!(
        r#"{}
[[tenants.token_exchange]]
clients = ["{AGENT}"]
subject_token_types = ["{AT}", "{ID_TOKEN}"]
resources = ["{SECOND}"]
audiences = ["https://as.example.com"]
allow_refresh_token = true
actors = ["{DELEGATE}"]
"#,
        agent_clients()
    ))
}

/// The same, plus a trusted agent that tokens of the public client name in
/// `may_act`.
fn may_act_config() -> String {
    base_config(&format!(
        r#"{}
[[tenants.clients]]
client_id = "{TRUSTED}"
secret = "{TRUSTED_SECRET}"
grant_types = ["client_credentials", "{TE}"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
resources = ["{SECOND}"]

[[tenants.token_exchange]]
clients = ["{TRUSTED}"]
resources = ["{SECOND}"]
may_act_for = ["{PUBLIC_CLIENT}"]
"#,
        agent_clients()
    ))
}

async fn cc_token(server: &Server, client: (&str, &str)) -> String {
    let (status, json) = token_request(
        server,
        &[("grant_type", "client_credentials"), ("resource", SECOND)],
        Some(client),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json["access_token"].as_str().unwrap().to_string()
}

async fn user_token(server: &Server) -> String {
    let tokens = login_public(server, &Browser::new(), "mcp:read mcp:write").await;
    tokens["access_token"].as_str().unwrap().to_string()
}

async fn exchange(server: &Server, client: (&str, &str), form: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("grant_type", TE)];
    all.extend_from_slice(form);
    token_request(server, &all, Some(client)).await
}

fn refused(status: u16, json: &Value) {
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request")),
        "{json}"
    );
    assert!(json.get("access_token").is_none(), "nothing issued: {json}");
}

/// The `exchange_refused` security events recorded so far (waits for the
/// batched audit writer).
async fn refusals(server: &Server, at_least: usize) -> Vec<gatehouse::store::AuditRecord> {
    let store = gatehouse::store::connect(&server.database_url)
        .await
        .expect("store");
    let mut found = Vec::new();
    for _ in 0..50 {
        found = store
            .list_audit("default", 1000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.kind == "security.exchange_refused")
            .collect();
        if found.len() >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
}

fn detail(e: &gatehouse::store::AuditRecord) -> Value {
    serde_json::from_str(&e.detail).unwrap_or(Value::Null)
}

/// Introspection by the agent itself (the exchanged tokens were issued to it).
async fn active(server: &Server, token: &str) -> bool {
    let json: Value = reqwest::Client::new()
        .post(server.url("/introspect"))
        .basic_auth(AGENT, Some(AGENT_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json");
    json["active"] == true
}

async fn refresh(server: &Server, rt: &str) -> (u16, Value) {
    token_request(
        server,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        Some((AGENT, AGENT_SECRET)),
    )
    .await
}

// ---------------------------------------------------------------------------
// Actors.
// ---------------------------------------------------------------------------

async fn another_clients_actor_token_is_refused_and_reported(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    // The review's request: demo-service's token as the agent's actor.
    let service = cc_token(&server, (SERVICE_CLIENT, SERVICE_SECRET)).await;
    // A variant: the user's own token (issued to the public client).
    for actor in [&service, &user] {
        let (status, json) = exchange(
            &server,
            (AGENT, AGENT_SECRET),
            &[
                ("subject_token", &user),
                ("subject_token_type", AT),
                ("actor_token", actor),
                ("actor_token_type", AT),
                ("resource", SECOND),
            ],
        )
        .await;
        refused(status, &json);
    }
    let events = refusals(&server, 2).await;
    assert!(events.len() >= 2, "{events:?}");
    for e in &events {
        let d = detail(e);
        assert_eq!(d["severity"], "medium", "{d}");
        assert_eq!(d["class"], "security");
        assert_eq!(d["reason"], "actor_of_another_client", "{d}");
        assert_eq!(e.client_id.as_deref(), Some(AGENT));
        assert_eq!(e.subject.as_deref(), jwt_claims(&user)["sub"].as_str());
        assert_eq!(e.source_ip.as_deref(), Some("127.0.0.1"));
    }
}

async fn own_actor_token_and_rule_named_actor_are_accepted(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let user = user_token(&server).await;
    for (actor, who) in [
        (cc_token(&server, (AGENT, AGENT_SECRET)).await, AGENT),
        (
            cc_token(&server, (DELEGATE, DELEGATE_SECRET)).await,
            DELEGATE,
        ),
    ] {
        let (status, json) = exchange(
            &server,
            (AGENT, AGENT_SECRET),
            &[
                ("subject_token", &user),
                ("subject_token_type", AT),
                ("actor_token", &actor),
                ("actor_token_type", AT),
                ("resource", SECOND),
            ],
        )
        .await;
        assert_eq!(status, 200, "{json}");
        let claims = jwt_claims(json["access_token"].as_str().unwrap());
        assert_eq!(claims["act"]["client_id"], who);
        assert_eq!(claims["client_id"], AGENT);
    }
}

async fn another_clients_own_token_is_not_a_subject(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let service = cc_token(&server, (SERVICE_CLIENT, SERVICE_SECRET)).await;
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &service),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    refused(status, &json);
    let events = refusals(&server, 1).await;
    let d = detail(&events[0]);
    assert_eq!(
        (d["severity"].as_str(), d["reason"].as_str()),
        (Some("medium"), Some("subject_of_another_client")),
        "{d}"
    );
}

// ---------------------------------------------------------------------------
// may_act.
// ---------------------------------------------------------------------------

async fn may_act_names_the_only_party_that_may_exchange(db: Db) {
    let server = Server::start_with(db, &may_act_config()).await;
    let user = user_token(&server).await;
    assert_eq!(
        jwt_claims(&user)["may_act"],
        serde_json::json!({"sub": TRUSTED, "client_id": TRUSTED}),
        "tokens issued to the public client name the trusted agent"
    );
    // Another agent the policy allows: not alone, not with its own actor.
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
    refused(status, &json);
    let own = cc_token(&server, (AGENT, AGENT_SECRET)).await;
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("actor_token", &own),
            ("actor_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    refused(status, &json);
    let events = refusals(&server, 2).await;
    assert!(
        events.iter().all(|e| detail(e)["severity"] == "medium"),
        "{events:?}"
    );
    // The named agent may, alone and with its own actor token.
    let (status, json) = exchange(
        &server,
        (TRUSTED, TRUSTED_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let trusted = cc_token(&server, (TRUSTED, TRUSTED_SECRET)).await;
    let (status, json) = exchange(
        &server,
        (TRUSTED, TRUSTED_SECRET),
        &[
            ("subject_token", &user),
            ("subject_token_type", AT),
            ("actor_token", &trusted),
            ("actor_token_type", AT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        jwt_claims(json["access_token"].as_str().unwrap())["act"]["client_id"],
        TRUSTED
    );
}

// ---------------------------------------------------------------------------
// ID tokens as subjects.
// ---------------------------------------------------------------------------

/// The user signs in to the agent itself (code flow with `openid`): its
/// tokens, including an ID token whose audience is the agent.
async fn agent_login(server: &Server) -> Value {
    let p = pkce();
    let url = authorize_url(
        server,
        AGENT,
        AGENT_REDIRECT,
        &p.challenge,
        &[("scope", "openid mcp:read")],
    );
    let code = Browser::new()
        .authorize(server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, json) = token_request(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", AGENT_REDIRECT),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        Some((AGENT, AGENT_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    json
}

async fn id_token_of_another_client_is_refused(db: Db) {
    let server = Server::start_with(db, &config()).await;
    // An ID token issued to the web app, presented by the agent.
    let p = pkce();
    let url = authorize_url(
        &server,
        WEB_CLIENT,
        WEB_REDIRECT,
        &p.challenge,
        &[("scope", "openid mcp:read")],
    );
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, web) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        Some((WEB_CLIENT, WEB_SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{web}");
    let id_token = web["id_token"].as_str().expect("id_token").to_string();
    for (requested, target) in [(AT, "resource"), (ID_JAG, "audience")] {
        let to = if target == "resource" {
            SECOND
        } else {
            "https://as.example.com"
        };
        let (status, json) = exchange(
            &server,
            (AGENT, AGENT_SECRET),
            &[
                ("subject_token", &id_token),
                ("subject_token_type", ID_TOKEN),
                ("requested_token_type", requested),
                (target, to),
            ],
        )
        .await;
        refused(status, &json);
    }
    let events = refusals(&server, 2).await;
    assert!(events.len() >= 2, "{events:?}");
    for e in &events {
        assert_eq!(detail(e)["reason"], "subject_of_another_client");
        assert_eq!(detail(e)["severity"], "medium");
    }
    // Its own ID token is accepted.
    let own = agent_login(&server).await;
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", own["id_token"].as_str().unwrap()),
            ("subject_token_type", ID_TOKEN),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
}

/// The agent exchanges its user's ID token for a refresh token and an
/// access token to the second server.
async fn exchanged_from_id_token(server: &Server) -> (String, String, String) {
    let login = agent_login(server).await;
    let id_token = login["id_token"].as_str().unwrap().to_string();
    let (status, rt) = exchange(
        server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &id_token),
            ("subject_token_type", ID_TOKEN),
            ("requested_token_type", RT),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(status, 200, "{rt}");
    let (status, at) = exchange(
        server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &id_token),
            ("subject_token_type", ID_TOKEN),
            ("resource", SECOND),
        ],
    )
    .await;
    assert_eq!(status, 200, "{at}");
    (
        id_token,
        rt["access_token"].as_str().unwrap().to_string(),
        at["access_token"].as_str().unwrap().to_string(),
    )
}

async fn revoking_the_user_ends_grants_exchanged_from_id_tokens(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (id_token, rt, at) = exchanged_from_id_token(&server).await;
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(status, 200, "{json}");
    let rt = json["refresh_token"].as_str().unwrap().to_string();
    let refreshed = json["access_token"].as_str().unwrap().to_string();
    assert!(active(&server, &at).await && active(&server, &refreshed).await);

    let sub = jwt_claims(&id_token)["sub"].as_str().unwrap().to_string();
    // Give the revocation a later second than the ID token's iat.
    server.advance_clock(2);
    let out = server.cli(&["users", "revoke", &sub]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "{json}"
    );
    assert!(
        !active(&server, &at).await,
        "the exchanged access token ended"
    );
    assert!(!active(&server, &refreshed).await, "and the refreshed one");
    // The ID token (still unexpired) cannot bring it back.
    let (status, json) = exchange(
        &server,
        (AGENT, AGENT_SECRET),
        &[
            ("subject_token", &id_token),
            ("subject_token_type", ID_TOKEN),
            ("resource", SECOND),
        ],
    )
    .await;
    refused(status, &json);
}

async fn refresh_reuse_ends_grants_exchanged_from_id_tokens(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let (_, rt, _) = exchanged_from_id_token(&server).await;
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(status, 200, "{json}");
    let next = json["refresh_token"].as_str().unwrap().to_string();
    let access = json["access_token"].as_str().unwrap().to_string();
    // The rotated token again: someone holds a copy.
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "{json}"
    );
    let (status, _) = refresh(&server, &next).await;
    assert_eq!(status, 400, "the whole family ended");
    assert!(!active(&server, &access).await);
}

// ---------------------------------------------------------------------------
// Upstream ID tokens: bound to the presenting client, and ended by the
// upstream refusing the user.
// ---------------------------------------------------------------------------

async fn start_upstream_pair(db: Db) -> (Server, Upstream, String) {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let connector = format!(
        r#"
[[tenants.connectors]]
id = "corp"
type = "oidc"
issuer = "{issuer}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
upstream_check_interval = 60
upstream_clients = {{ "{UPSTREAM_CLIENT}" = "{AGENT}" }}
{}
[[tenants.clients]]
client_id = "other-agent"
secret = "other-agent-secret-0123456"
grant_types = ["{TE}"]

[[tenants.token_exchange]]
clients = ["{AGENT}", "other-agent"]
subject_token_types = ["{ID_TOKEN}"]
resources = ["{SECOND}"]
allow_refresh_token = true
"#,
        agent_clients()
    );
    let server = Server::start_with(db, &upstream_config(&connector)).await;
    let upstream = Upstream::start(
        port,
        &server.url("/callback/corp"),
        &[("UPSTREAM_REFRESH", "1")],
    );
    (server, upstream, issuer)
}

async fn upstream_id_token_is_bound_to_the_mapped_client(db: Db) {
    let (server, _upstream, issuer) = start_upstream_pair(db).await;
    let upstream =
        upstream_tokens(&server, &issuer, "/callback/corp", "alice", "openid", &[]).await;
    let id_token = upstream["id_token"].as_str().unwrap().to_string();
    let form = [
        ("subject_token", id_token.as_str()),
        ("subject_token_type", ID_TOKEN),
        ("resource", SECOND),
    ];
    let (status, json) = exchange(
        &server,
        ("other-agent", "other-agent-secret-0123456"),
        &form,
    )
    .await;
    refused(status, &json);
    let d = detail(&refusals(&server, 1).await[0]);
    assert_eq!(
        (d["severity"].as_str(), d["reason"].as_str()),
        (Some("medium"), Some("subject_of_another_client")),
        "{d}"
    );
    let (status, json) = exchange(&server, (AGENT, AGENT_SECRET), &form).await;
    assert_eq!(status, 200, "the mapped client: {json}");
}

async fn upstream_refusal_ends_grants_exchanged_from_upstream_id_tokens(db: Db) {
    let (server, upstream, issuer) = start_upstream_pair(db).await;
    // Alice signs in through Gatehouse (her upstream session is kept)...
    let own = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let own_rt = own["refresh_token"].as_str().unwrap().to_string();
    // ...and the agent exchanges her upstream ID token.
    let tokens = upstream_tokens(&server, &issuer, "/callback/corp", "alice", "openid", &[]).await;
    let id_token = tokens["id_token"].as_str().unwrap().to_string();
    let form = |requested: &'static str| {
        [
            ("subject_token", id_token.clone()),
            ("subject_token_type", ID_TOKEN.to_string()),
            ("requested_token_type", requested.to_string()),
            ("resource", SECOND.to_string()),
        ]
    };
    let run = |requested: &'static str| {
        let server = &server;
        let f = form(requested);
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            exchange(server, (AGENT, AGENT_SECRET), &f).await
        }
    };
    let (status, rt) = run(RT).await;
    assert_eq!(status, 200, "{rt}");
    let rt = rt["access_token"].as_str().unwrap().to_string();
    let (status, at) = run(AT).await;
    assert_eq!(status, 200, "{at}");
    let at = at["access_token"].as_str().unwrap().to_string();
    assert!(active(&server, &at).await);

    // The provider disables alice; her own refresh, after the interval,
    // asks it and is refused.
    let port = issuer.rsplit(':').next().unwrap().to_string();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/__test/disable/alice"))
        .send()
        .await
        .expect("disable");
    assert_eq!(res.status().as_u16(), 204);
    server.advance_clock(61);
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &own_rt),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "{json}"
    );
    // What the agent got from her upstream ID token ended with it.
    assert!(!active(&server, &at).await, "exchanged access token ended");
    let (status, json) = refresh(&server, &rt).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "exchanged refresh token ended: {json}"
    );
    let (status, json) = run(AT).await;
    refused(status, &json);
}

on_both_databases!(
    another_clients_actor_token_is_refused_and_reported,
    own_actor_token_and_rule_named_actor_are_accepted,
    another_clients_own_token_is_not_a_subject,
    may_act_names_the_only_party_that_may_exchange,
    id_token_of_another_client_is_refused,
    revoking_the_user_ends_grants_exchanged_from_id_tokens,
    refresh_reuse_ends_grants_exchanged_from_id_tokens,
    upstream_id_token_is_bound_to_the_mapped_client,
    upstream_refusal_ends_grants_exchanged_from_upstream_id_tokens,
);
