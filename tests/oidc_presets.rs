//! The Entra ID, Cognito and Auth0 presets end to end: the same real
//! OpenID Connect provider as tests/oidc.rs (tests/upstream/provider.mjs)
//! plays each provider's shape through its environment switches (extra ID
//! token claims, an issuer with a path, Entra's multi-tenant discovery
//! document whose issuer is the `{tenantid}` template). Each login ends with
//! a Gatehouse access token whose claims and /userinfo are checked.
//! The preset-specific refusals that need a misbehaving provider are unit
//! tests in connectors/src/entra.rs.

mod common;
use common::upstream::*;
use common::*;

/// A Gatehouse whose connector table `connector(port)` is built for a
/// provider on `port`, and that provider, started with `env`.
async fn start_preset(
    db: Db,
    connector_id: &str,
    connector: impl Fn(u16) -> String,
    upstream_env: &[(&str, &str)],
) -> (Server, Upstream) {
    let port = free_port();
    let server = Server::start_with(db, &config(&connector(port))).await;
    let upstream = Upstream::start(
        port,
        &server.url(&format!("/callback/{connector_id}")),
        upstream_env,
    );
    (server, upstream)
}

/// The upstream subject Gatehouse stored for its subject `sub`.
async fn upstream_subject(server: &Server, sub: &str) -> (String, String) {
    let store = gatehouse::store::connect(&server.database_url)
        .await
        .expect("store");
    let rec = store
        .get_identity_by_subject("default", sub)
        .await
        .expect("identity lookup")
        .expect("identity stored");
    (rec.connector_id, rec.upstream_subject)
}

/// A login that must end on Gatehouse's error page; returns its body.
async fn refused_login(server: &Server, browser: &Browser, login: &str) -> String {
    let (start, _) = to_upstream(
        server,
        browser,
        &[("scope", "openid email profile mcp:read")],
    )
    .await;
    let callback = at_upstream(browser, server, &start, login, AtUpstream::SignInAndConsent).await;
    let (status, body) = error_page(back_at_gatehouse(server, browser, &callback).await);
    // A rejected ID token is the provider's side of the sign-in: 502.
    assert_eq!(status, 502, "{body}");
    body
}

const TID: &str = "9f8e7d6c-1111-4222-8333-00000000abcd";
const OTHER_TID: &str = "0a0a0a0a-2222-4333-8444-555555555555";

fn entra_accounts() -> String {
    serde_json::json!({
        "alice": {
            "email": "alice@contoso.example",
            "name": "Alice Entra",
            "groups": ["g-engineering", "g-admins"],
            "oid": "00000000-0000-0000-aaaa-000000000001",
        },
        "bob": {
            "email": "bob@contoso.example",
            "name": "Bob Entra",
            "oid": "00000000-0000-0000-aaaa-000000000002",
            "_claim_names": { "groups": "src1" },
        },
    })
    .to_string()
}

fn entra_connector(port: u16, tenant: &str, extra: &str) -> String {
    format!(
        r#"
[[tenants.connectors]]
id = "entra"
type = "entra"
display_name = "Contoso"
tenant = "{tenant}"
authority = "http://127.0.0.1:{port}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
scopes = ["openid", "email", "profile", "groups"]
{extra}
"#
    )
}

async fn entra_single_tenant_login_maps_oid_tid_and_groups(db: Db) {
    let accounts = entra_accounts();
    let extra = serde_json::json!({ "tid": TID }).to_string();
    let path = format!("/{TID}/v2.0");
    let (server, upstream) = start_preset(
        db,
        "entra",
        |port| entra_connector(port, TID, ""),
        &[
            ("UPSTREAM_ACCOUNTS", &accounts),
            ("UPSTREAM_EXTRA_CLAIMS", &extra),
            ("UPSTREAM_ISSUER_PATH", &path),
        ],
    )
    .await;

    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let access = tokens["access_token"].as_str().expect("access token");
    let claims = jwt_claims(access);
    assert_eq!(claims["iss"], server.base.as_str());
    assert_eq!(claims["aud"], MCP);
    let sub = claims["sub"].as_str().expect("sub").to_string();
    let info = userinfo(&server, access).await;
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], "alice@contoso.example", "{info}");
    assert_eq!(info["name"], "Alice Entra", "{info}");
    assert_eq!(
        info["groups"],
        serde_json::json!(["g-engineering", "g-admins"]),
        "{info}"
    );
    assert_eq!(
        upstream_subject(&server, &sub).await,
        (
            "entra".to_string(),
            format!("{TID}:00000000-0000-0000-aaaa-000000000001")
        )
    );

    // Groups overage: the sign-in works, the user simply has no groups here
    // (the connector logs why).
    let bob = login_upstream(&server, &upstream, &Browser::new(), "bob").await;
    let bob_access = bob["access_token"].as_str().expect("token");
    let bob_info = userinfo(&server, bob_access).await;
    assert!(bob_info.get("groups").is_none(), "{bob_info}");
    assert!(
        server.log().contains("groups overage"),
        "overage not reported: {}",
        server.log()
    );
}

async fn entra_multi_tenant_accepts_listed_tenants_through_the_template_issuer(db: Db) {
    let accounts = entra_accounts();
    let extra = serde_json::json!({ "tid": TID }).to_string();
    let path = format!("/{TID}/v2.0");
    let env = [
        ("UPSTREAM_ACCOUNTS", accounts.as_str()),
        ("UPSTREAM_EXTRA_CLAIMS", extra.as_str()),
        ("UPSTREAM_ISSUER_PATH", path.as_str()),
        ("UPSTREAM_TEMPLATE_DISCOVERY", "/organizations/v2.0"),
        ("UPSTREAM_TEMPLATE_FROM", TID),
    ];
    let allowed = format!("allowed_tenants = [\"{OTHER_TID}\", \"{TID}\"]");
    let (server, upstream) = start_preset(
        db,
        "entra",
        |port| entra_connector(port, "organizations", &allowed),
        &env,
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let access = tokens["access_token"].as_str().expect("access token");
    let sub = jwt_claims(access)["sub"].as_str().expect("sub").to_string();
    let info = userinfo(&server, access).await;
    assert_eq!(
        info["groups"],
        serde_json::json!(["g-engineering", "g-admins"]),
        "{info}"
    );
    assert_eq!(
        upstream_subject(&server, &sub).await.1,
        format!("{TID}:00000000-0000-0000-aaaa-000000000001")
    );
    drop(upstream);
    drop(server);

    // The same provider, but its tenant is not among the allowed ones.
    let allowed = format!("allowed_tenants = [\"{OTHER_TID}\"]");
    let (server, _upstream) = start_preset(
        db,
        "entra",
        |port| entra_connector(port, "organizations", &allowed),
        &env,
    )
    .await;
    let body = refused_login(&server, &Browser::new(), "alice").await;
    assert!(body.contains("allowed_tenants"), "{body}");
    assert!(body.contains(TID), "{body}");
}

async fn cognito_login_maps_cognito_groups(db: Db) {
    let accounts = serde_json::json!({
        "alice": {
            "email": "alice@pool.example",
            "email_verified": true,
            "name": "Alice Cognito",
            "cognito:groups": ["readers", "writers"],
            "token_use": "id",
        },
    })
    .to_string();
    let (server, upstream) = start_preset(
        db,
        "cognito",
        |port| {
            format!(
                r#"
[[tenants.connectors]]
id = "cognito"
type = "cognito"
region = "eu-west-1"
user_pool_id = "eu-west-1_TestPool1"
domain = "auth.pool.example"
issuer = "http://127.0.0.1:{port}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
"#
            )
        },
        &[("UPSTREAM_ACCOUNTS", &accounts)],
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let access = tokens["access_token"].as_str().expect("access token");
    let claims = jwt_claims(access);
    assert_eq!(claims["aud"], MCP);
    let sub = claims["sub"].as_str().expect("sub").to_string();
    let info = userinfo(&server, access).await;
    assert_eq!(info["email"], "alice@pool.example", "{info}");
    assert_eq!(info["email_verified"], true, "{info}");
    assert_eq!(
        info["groups"],
        serde_json::json!(["readers", "writers"]),
        "{info}"
    );
    assert_eq!(
        upstream_subject(&server, &sub).await,
        ("cognito".to_string(), "alice".to_string())
    );
}

async fn auth0_maps_namespaced_claims_and_checks_the_organization(db: Db) {
    let ns = "https://gatehouse.test/";
    let accounts = serde_json::json!({
        "alice": {
            "email": "alice@acme.example",
            "email_verified": true,
            "name": "Alice Auth0",
            format!("{ns}groups"): ["acme-staff"],
            format!("{ns}roles"): ["editor"],
            "org_id": "org_acme",
        },
        "bob": {
            "email": "bob@other.example",
            "name": "Bob Auth0",
            format!("{ns}groups"): ["other-staff"],
            "org_id": "org_other",
        },
    })
    .to_string();
    let (server, upstream) = start_preset(
        db,
        "auth0",
        |port| {
            format!(
                r#"
[[tenants.connectors]]
id = "auth0"
type = "auth0"
domain = "acme.eu.auth0.com"
issuer = "http://127.0.0.1:{port}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
claims_namespace = "{ns}"
allowed_organizations = ["org_acme"]
"#
            )
        },
        &[("UPSTREAM_ACCOUNTS", &accounts)],
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let access = tokens["access_token"].as_str().expect("access token");
    let sub = jwt_claims(access)["sub"].as_str().expect("sub").to_string();
    let info = userinfo(&server, access).await;
    assert_eq!(info["email"], "alice@acme.example", "{info}");
    assert_eq!(info["groups"], serde_json::json!(["acme-staff"]), "{info}");
    assert_eq!(
        upstream_subject(&server, &sub).await,
        ("auth0".to_string(), "alice".to_string())
    );

    // Bob signs in through another organization: refused, in plain words.
    let body = refused_login(&server, &Browser::new(), "bob").await;
    assert!(body.contains("allowed_organizations"), "{body}");
    assert!(body.contains("org_other"), "{body}");
    assert!(body.contains("Auth0 organization"), "{body}");
}

async fn configured_claims_are_copied_into_access_tokens_and_introspection(db: Db) {
    let accounts = entra_accounts();
    let extra = serde_json::json!({ "tid": TID }).to_string();
    let path = format!("/{TID}/v2.0");
    let (server, upstream) = start_preset(
        db,
        "entra",
        |port| {
            // The tenant releases the Entra tenant id, email and groups into
            // access tokens under its own names; the name stays out.
            format!(
                "{}\n[tenants.access_token_claims]\ntid = \"entra_tid\"\nemail = \"email\"\ngroups = \"groups\"\n",
                entra_connector(port, TID, "")
            )
        },
        &[
            ("UPSTREAM_ACCOUNTS", &accounts),
            ("UPSTREAM_EXTRA_CLAIMS", &extra),
            ("UPSTREAM_ISSUER_PATH", &path),
        ],
    )
    .await;
    let tokens = login_upstream(&server, &upstream, &Browser::new(), "alice").await;
    let access = tokens["access_token"].as_str().expect("access token");
    let claims = jwt_claims(access);
    assert_eq!(claims["entra_tid"], TID, "{claims}");
    assert_eq!(claims["email"], "alice@contoso.example", "{claims}");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["g-engineering", "g-admins"]),
        "{claims}"
    );
    assert!(claims.get("name").is_none(), "not configured: {claims}");
    assert!(
        claims.get("tid").is_none(),
        "only under its configured name"
    );

    // Refreshed tokens carry them too, and introspection shows them.
    let (status, refreshed) = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let again = refreshed["access_token"].as_str().unwrap();
    assert_eq!(jwt_claims(again)["entra_tid"], TID);
    let res = reqwest::Client::new()
        .post(server.url("/introspect"))
        .basic_auth(SERVICE_CLIENT, Some(SERVICE_SECRET))
        .form(&[("token", again)])
        .send()
        .await
        .expect("introspect");
    let info: serde_json::Value = res.json().await.expect("json");
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["entra_tid"], TID, "{info}");
    assert_eq!(info["email"], "alice@contoso.example", "{info}");
}

async fn entra_multi_tenant_id_tokens_are_exchange_subjects_for_allowed_tenants(db: Db) {
    let accounts = entra_accounts();
    let extra = serde_json::json!({ "tid": TID }).to_string();
    let path = format!("/{TID}/v2.0");
    let env = [
        ("UPSTREAM_ACCOUNTS", accounts.as_str()),
        ("UPSTREAM_EXTRA_CLAIMS", extra.as_str()),
        ("UPSTREAM_ISSUER_PATH", path.as_str()),
        ("UPSTREAM_TEMPLATE_DISCOVERY", "/organizations/v2.0"),
        ("UPSTREAM_TEMPLATE_FROM", TID),
    ];
    let agent_may_exchange_id_tokens = format!(
        r#"
[[tenants.clients]]
client_id = "agent"
secret = "agent-secret-0123456789"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]

[[tenants.token_exchange]]
clients = ["agent"]
subject_token_types = ["urn:ietf:params:oauth:token-type:id_token"]
resources = ["{MCP}"]
"#
    );
    async fn exchange(server: &Server, id_token: String) -> (u16, serde_json::Value) {
        token_request(
            server,
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", &id_token),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
                ("resource", MCP),
            ],
            Some(("agent", "agent-secret-0123456789")),
        )
        .await
    }
    for (allowed, accepted) in [(TID, true), (OTHER_TID, false)] {
        // The agent may present the provider's ID tokens issued to the
        // provider client the test plays.
        let allowed_line = format!(
            "allowed_tenants = [\"{allowed}\"]\nupstream_clients = {{ \"{UPSTREAM_CLIENT}\" = \"agent\" }}"
        );
        let (server, _upstream) = start_preset(
            db,
            "entra",
            |port| {
                format!(
                    "{}{agent_may_exchange_id_tokens}",
                    entra_connector(port, "organizations", &allowed_line)
                )
            },
            &env,
        )
        .await;
        let cfg = std::fs::read_to_string(&server.config_path).unwrap();
        let at = cfg.find("authority = \"").unwrap() + "authority = \"".len();
        let authority = &cfg[at..at + cfg[at..].find('"').unwrap()];
        let issuer = format!("{authority}/{TID}/v2.0");
        let tokens = upstream_tokens(
            &server,
            &issuer,
            "/callback/entra",
            "alice",
            "openid email profile",
            &[],
        )
        .await;
        let id_token = tokens["id_token"].as_str().unwrap().to_string();
        assert_eq!(
            jwt_claims(&id_token)["iss"],
            issuer,
            "a tenant's own issuer"
        );
        let (status, json) = exchange(&server, id_token).await;
        if accepted {
            assert_eq!(status, 200, "{json}");
            let access = jwt_claims(json["access_token"].as_str().unwrap());
            assert_eq!(access["aud"], MCP);
            let sub = access["sub"].as_str().unwrap().to_string();
            assert_eq!(
                upstream_subject(&server, &sub).await,
                (
                    "entra".to_string(),
                    format!("{TID}:00000000-0000-0000-aaaa-000000000001")
                ),
                "the same mapping as a login"
            );
        } else {
            assert_eq!(
                (status, json["error"].as_str()),
                (400, Some("invalid_request")),
                "a tenant that is not allowed: {json}"
            );
        }
    }
}

on_both_databases!(
    entra_multi_tenant_id_tokens_are_exchange_subjects_for_allowed_tenants,
    configured_claims_are_copied_into_access_tokens_and_introspection,
    entra_single_tenant_login_maps_oid_tid_and_groups,
    entra_multi_tenant_accepts_listed_tenants_through_the_template_issuer,
    cognito_login_maps_cognito_groups,
    auth0_maps_namespaced_claims_and_checks_the_organization,
);
