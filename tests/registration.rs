//! Dynamic client registration (RFC 7591) and client management (RFC 7592)
//! against the real binary, on SQLite and PostgreSQL: a program registers
//! itself and logs a user in, a confidential registration gets a working
//! secret, bad metadata gets the RFC 7591 errors, the registration access
//! token guards read/update/delete, the initial-access-token policy and the
//! abuse limits hold.

mod common;
use common::*;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn s(&self, key: &str) -> &str {
        self.json[key]
            .as_str()
            .unwrap_or_else(|| panic!("'{key}' is not a string in {}", self.json))
    }

    /// An RFC 7591 error: status, `error`, a description, not cacheable.
    fn assert_error(&self, status: u16, error: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.json);
        assert_eq!(self.json["error"], error, "{what}: {}", self.json);
        assert!(
            self.json["error_description"].is_string(),
            "{what}: {}",
            self.json
        );
        assert_eq!(self.header("cache-control"), Some("no-store"), "{what}");
    }
}

async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    Reply {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// POSTs a raw body to /register with a content type and optional bearer token.
async fn post_raw(
    server: &Server,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    bearer: Option<&str>,
    forwarded_for: Option<&str>,
) -> Reply {
    let mut req = http()
        .post(server.url("/register"))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    reply(req.send().await.expect("POST /register")).await
}

async fn register(server: &Server, metadata: &Value) -> Reply {
    post_raw(server, "application/json", metadata.to_string(), None, None).await
}

async fn register_ok(server: &Server, metadata: &Value) -> Reply {
    let r = register(server, metadata).await;
    assert_eq!(r.status, 201, "registration refused: {}", r.json);
    r
}

/// A request to the client configuration endpoint.
async fn manage(
    method: reqwest::Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut req = http().request(method, uri);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    reply(req.send().await.expect("client configuration request")).await
}

fn public_client_metadata() -> Value {
    json!({
        "client_name": "Self-registered MCP client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "software_id": "4d1c2b6e-0000-4000-8000-000000000001",
        "software_version": "1.2.3",
        "x-vendor-extension": {"ignored": true}
    })
}

fn form_action(html: &str) -> String {
    let marker = "action=\"";
    let start = html.find(marker).expect("form action") + marker.len();
    let end = html[start..].find('"').expect("action end") + start;
    html[start..end]
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// Drives the browser through login and consent like `Browser::authorize`,
/// but also returns the consent page it answered (if any).
async fn authorize_recording_consent(
    server: &Server,
    browser: &Browser,
    url: &str,
) -> (Option<String>, String) {
    let mut res = browser.http.get(url).send().await.expect("authorize");
    let mut consent_page = None;
    for _ in 0..8 {
        let status = res.status().as_u16();
        if (300..400).contains(&status) {
            let to = location(&res);
            if to.starts_with(&server.base) {
                res = browser.http.get(&to).send().await.expect("follow");
                continue;
            }
            return (consent_page, to);
        }
        let body = res.text().await.expect("body");
        let form = |extra: (&'static str, String)| {
            vec![
                ("pending", hidden_field(&body, "pending").expect("pending")),
                ("csrf", hidden_field(&body, "csrf").expect("csrf")),
                extra,
            ]
        };
        if body.contains("name=\"password\"") {
            let mut fields = form(("username", USER.to_string()));
            fields.push(("password", PASSWORD.to_string()));
            res = browser
                .http
                .post(form_action(&body))
                .form(&fields)
                .send()
                .await
                .expect("login");
            continue;
        }
        if body.contains("name=\"decision\"") {
            let fields = form(("decision", "allow".to_string()));
            consent_page = Some(body.clone());
            res = browser
                .http
                .post(form_action(&body))
                .form(&fields)
                .send()
                .await
                .expect("consent");
            continue;
        }
        panic!("unexpected page {status}: {body}");
    }
    panic!("too many steps in the authorization flow");
}

fn registration_config(settings: &str) -> String {
    base_config(&format!("\n[tenants.registration]\n{settings}\n"))
}

/// Self-registered clients may use client_credentials for the demo MCP
/// server (by default they may not: tests/attack_rules.rs).
fn machine_clients_config(extra: &str) -> String {
    base_config(&format!(
        "{extra}\n[tenants.registration.machine_clients]\nresources = [\"{MCP}\"]\n"
    ))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A program with no prior registration registers itself as a public native
/// client and completes a user login; it gets the consent page (with the
/// "registered itself" warning) and a token for the MCP server.
async fn self_registered_public_client_logs_in(db: Db) {
    let server = Server::start(db).await;
    let r = register_ok(&server, &public_client_metadata()).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let client_id = r.s("client_id").to_string();
    assert!(client_id.starts_with("dcr_"), "{client_id}");
    assert!(
        r.json["client_id_issued_at"].as_i64().is_some(),
        "{}",
        r.json
    );
    assert!(r.json.get("client_secret").is_none(), "{}", r.json);
    assert_eq!(r.json["token_endpoint_auth_method"], "none");
    assert_eq!(r.json["application_type"], "native");
    assert_eq!(
        r.json["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(r.json["response_types"], json!(["code"]));
    assert_eq!(r.json["client_name"], "Self-registered MCP client");
    assert_eq!(r.json["software_version"], "1.2.3");
    assert!(r.json.get("x-vendor-extension").is_none(), "{}", r.json);
    assert!(r.s("registration_access_token").len() >= 43);
    assert_eq!(
        r.s("registration_client_uri"),
        server.url(&format!("/register/{client_id}"))
    );

    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, &client_id, REDIRECT, &p.challenge, &[]);
    let (consent, callback) = authorize_recording_consent(&server, &browser, &url).await;
    let consent = consent.expect("a self-registered client must get the consent page");
    assert!(consent.contains("unverified-warning"), "{consent}");
    assert!(consent.contains("Self-registered MCP client"), "{consent}");
    assert!(callback.starts_with(REDIRECT), "{callback}");
    let code = query_param(&callback, "code").expect("code");

    let (status, tokens) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = jwt_claims(tokens["access_token"].as_str().expect("access token"));
    assert_eq!(claims["aud"], MCP, "{claims}");
    assert_eq!(claims["client_id"], client_id.as_str(), "{claims}");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
}

/// Both discovery documents advertise the registration endpoint.
async fn discovery_advertises_registration_endpoint(db: Db) {
    let server = Server::start(db).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let doc: Value = http()
            .get(server.url(path))
            .send()
            .await
            .expect("discovery")
            .json()
            .await
            .expect("json");
        assert_eq!(
            doc["registration_endpoint"],
            server.url("/register"),
            "{path}: {doc}"
        );
    }
}

/// A confidential registration gets a secret (shown once) that works for
/// client_credentials with a resource.
async fn confidential_registration_gets_a_working_secret(db: Db) {
    let server = Server::start_with(db, &machine_clients_config("")).await;
    let r = register_ok(
        &server,
        &json!({
            "client_name": "Nightly report",
            "grant_types": ["client_credentials"],
            "scope": "mcp:read"
        }),
    )
    .await;
    let client_id = r.s("client_id").to_string();
    let secret = r.s("client_secret").to_string();
    assert!(secret.len() >= 43, "secret too short");
    assert_eq!(r.json["client_secret_expires_at"], 0);
    assert_eq!(r.json["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(r.json["response_types"], json!([]));

    let (status, tokens) = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some((&client_id, &secret)),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "mcp:read", "{tokens}");
    let claims = jwt_claims(tokens["access_token"].as_str().expect("access token"));
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["sub"], client_id.as_str());

    let (status, json) = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some((&client_id, "not-the-secret")),
    )
    .await;
    assert_eq!(status, 401, "{json}");
}

/// Each kind of bad request gets the right RFC 7591 error.
async fn invalid_metadata_is_refused_with_the_right_error(db: Db) {
    let server = Server::start(db).await;
    let cases: [(&str, Value, &str); 10] = [
        (
            "http on a non-loopback host",
            json!({"redirect_uris": ["http://app.example.com/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            "fragment",
            json!({"redirect_uris": ["http://127.0.0.1/cb#frag"], "token_endpoint_auth_method": "none"}),
            "invalid_redirect_uri",
        ),
        (
            "no redirect URI for the code grant",
            json!({"token_endpoint_auth_method": "none"}),
            "invalid_redirect_uri",
        ),
        (
            "unsupported grant type",
            json!({"redirect_uris": ["https://app.example.com/cb"], "grant_types": ["authorization_code", "password"]}),
            "invalid_client_metadata",
        ),
        (
            "response type token",
            json!({"redirect_uris": ["https://app.example.com/cb"], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
        (
            "public client with client_credentials",
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
            "invalid_client_metadata",
        ),
        (
            "jwks_uri over plain http",
            json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://app.example.com/jwks.json"}),
            "invalid_client_metadata",
        ),
        (
            "unknown scope",
            json!({"redirect_uris": ["https://app.example.com/cb"], "scope": "mcp:read admin:all"}),
            "invalid_client_metadata",
        ),
        (
            "web client on loopback",
            json!({"application_type": "web", "redirect_uris": ["http://127.0.0.1/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            "not an object",
            json!(["redirect_uris"]),
            "invalid_client_metadata",
        ),
    ];
    for (what, body, error) in cases {
        register(&server, &body)
            .await
            .assert_error(400, error, what);
    }
    post_raw(
        &server,
        "application/json",
        "{\"redirect_uris\": [",
        None,
        None,
    )
    .await
    .assert_error(400, "invalid_client_metadata", "bad JSON");
    post_raw(
        &server,
        "application/x-www-form-urlencoded",
        "redirect_uris=https%3A%2F%2Fapp.example.com%2Fcb",
        None,
        None,
    )
    .await
    .assert_error(400, "invalid_client_metadata", "wrong content type");
    let huge = json!({
        "redirect_uris": ["https://app.example.com/cb"],
        "client_name": "x".repeat(20 * 1024)
    });
    register(&server, &huge)
        .await
        .assert_error(400, "invalid_client_metadata", "body over 16 KiB");
}

/// RFC 7592: the registration access token reads, updates and deletes the
/// registration; anything else is 401 invalid_token.
async fn registration_is_read_updated_and_deleted_with_its_token(db: Db) {
    let server = Server::start(db).await;
    let r = register_ok(&server, &public_client_metadata()).await;
    let client_id = r.s("client_id").to_string();
    let token = r.s("registration_access_token").to_string();
    let uri = r.s("registration_client_uri").to_string();
    let other = register_ok(&server, &public_client_metadata()).await;
    let other_token = other.s("registration_access_token").to_string();

    // Read.
    let got = manage(reqwest::Method::GET, &uri, Some(&token), None).await;
    assert_eq!(got.status, 200, "{}", got.json);
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert_eq!(got.json["client_id"], client_id.as_str());
    assert_eq!(got.json["redirect_uris"], r.json["redirect_uris"]);
    assert_eq!(
        got.json["client_id_issued_at"],
        r.json["client_id_issued_at"]
    );
    assert_eq!(got.json["registration_access_token"], token.as_str());
    assert_eq!(got.json["registration_client_uri"], uri.as_str());
    assert!(got.json.get("client_secret").is_none(), "{}", got.json);

    // Wrong, missing and another client's token; a client configured by the
    // administrator.
    for (what, t, target) in [
        ("wrong token", Some("not-the-token"), uri.clone()),
        ("no token", None, uri.clone()),
        (
            "another client's token",
            Some(other_token.as_str()),
            uri.clone(),
        ),
        (
            "administrator's client",
            Some(token.as_str()),
            server.url(&format!("/register/{PUBLIC_CLIENT}")),
        ),
    ] {
        let res = manage(reqwest::Method::GET, &target, t, None).await;
        res.assert_error(401, "invalid_token", what);
        assert!(
            res.header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer")),
            "{what}"
        );
    }

    // Update: replaces the metadata; the body must name the client.
    let mut update = got.json.clone();
    update["client_name"] = json!("Renamed client");
    update["redirect_uris"] = json!(["http://127.0.0.1/callback", "http://[::1]/callback"]);
    let put = manage(reqwest::Method::PUT, &uri, Some(&token), Some(&update)).await;
    assert_eq!(put.status, 200, "{}", put.json);
    assert_eq!(put.json["client_name"], "Renamed client");
    assert_eq!(put.json["client_id"], client_id.as_str());
    let got = manage(reqwest::Method::GET, &uri, Some(&token), None).await;
    assert_eq!(got.json["client_name"], "Renamed client", "{}", got.json);
    assert_eq!(got.json["redirect_uris"], update["redirect_uris"]);

    let mut wrong_id = update.clone();
    wrong_id["client_id"] = json!("someone-else");
    manage(reqwest::Method::PUT, &uri, Some(&token), Some(&wrong_id))
        .await
        .assert_error(400, "invalid_client_metadata", "client_id mismatch");
    let mut bad = update.clone();
    bad["redirect_uris"] = json!(["http://evil.example/cb"]);
    manage(reqwest::Method::PUT, &uri, Some(&token), Some(&bad))
        .await
        .assert_error(
            400,
            "invalid_redirect_uri",
            "update with a bad redirect URI",
        );
    manage(
        reqwest::Method::PUT,
        &uri,
        Some(&other_token),
        Some(&update),
    )
    .await
    .assert_error(401, "invalid_token", "update with another client's token");

    // Delete: 204, then the registration and the client are gone.
    let del = manage(reqwest::Method::DELETE, &uri, Some(&other_token), None).await;
    del.assert_error(401, "invalid_token", "delete with another client's token");
    let del = http()
        .delete(&uri)
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(del.status().as_u16(), 204);
    manage(reqwest::Method::GET, &uri, Some(&token), None)
        .await
        .assert_error(401, "invalid_token", "read after delete");
    let p = pkce();
    let url = authorize_url(&server, &client_id, REDIRECT, &p.challenge, &[]);
    match Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
    {
        Outcome::Page(status, _) => assert_eq!(status, 400),
        Outcome::Redirect(to) => panic!("deleted client was redirected to {to}"),
    }
}

/// Updating a confidential client keeps its secret unless the client stops
/// using one; a wrong client_secret in the update is refused; deleting it
/// stops its secret from working at once on this node.
async fn confidential_client_update_and_delete(db: Db) {
    let server = Server::start_with(db, &machine_clients_config("")).await;
    let r = register_ok(
        &server,
        &json!({"grant_types": ["client_credentials"], "client_name": "svc"}),
    )
    .await;
    let client_id = r.s("client_id").to_string();
    let secret = r.s("client_secret").to_string();
    let token = r.s("registration_access_token").to_string();
    let uri = r.s("registration_client_uri").to_string();
    let cc = [("grant_type", "client_credentials"), ("resource", MCP)];
    let (status, json) = token_request(&server, &cc, Some((&client_id, &secret))).await;
    assert_eq!(status, 200, "{json}");

    let mut update = r.json.clone();
    update["client_secret"] = json!("a-secret-the-client-made-up");
    manage(reqwest::Method::PUT, &uri, Some(&token), Some(&update))
        .await
        .assert_error(400, "invalid_client_metadata", "wrong client_secret");

    update["client_secret"] = json!(secret);
    update["token_endpoint_auth_method"] = json!("client_secret_post");
    update["client_name"] = json!("svc renamed");
    let put = manage(reqwest::Method::PUT, &uri, Some(&token), Some(&update)).await;
    assert_eq!(put.status, 200, "{}", put.json);
    assert!(put.json.get("client_secret").is_none(), "{}", put.json);
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("resource", MCP),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "secret kept across the update: {json}");

    let del = http()
        .delete(&uri)
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(del.status().as_u16(), 204);
    let (status, json) = token_request(&server, &cc, Some((&client_id, &secret))).await;
    assert_eq!(status, 401, "deleted client still authenticates: {json}");
}

/// In `initial_access_token` mode, registration needs a token an
/// administrator issued with the CLI; the token may be used more than once
/// until it expires. The discovery document still advertises the endpoint.
async fn initial_access_token_mode(db: Db) {
    let server =
        Server::start_with(db, &registration_config("mode = \"initial_access_token\"")).await;
    let meta = public_client_metadata();
    let body = meta.to_string();
    post_raw(&server, "application/json", body.clone(), None, None)
        .await
        .assert_error(401, "invalid_token", "no initial access token");
    post_raw(
        &server,
        "application/json",
        body.clone(),
        Some("made-up"),
        None,
    )
    .await
    .assert_error(401, "invalid_token", "unknown initial access token");

    let out = server.cli(&["clients", "initial-token", "--ttl", "3600"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let iat = stdout
        .lines()
        .find_map(|l| l.strip_prefix("initial_access_token: "))
        .expect("token printed")
        .trim()
        .to_string();
    for _ in 0..2 {
        let r = post_raw(&server, "application/json", body.clone(), Some(&iat), None).await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    server.advance_clock(3601);
    post_raw(&server, "application/json", body, Some(&iat), None)
        .await
        .assert_error(401, "invalid_token", "expired initial access token");
}

/// With registration disabled the endpoint refuses and is not advertised.
async fn disabled_registration_is_refused(db: Db) {
    let server = Server::start_with(db, &registration_config("mode = \"disabled\"")).await;
    register(&server, &public_client_metadata())
        .await
        .assert_error(403, "access_denied", "disabled");
    let doc: Value = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert!(doc.get("registration_endpoint").is_none(), "{doc}");
}

/// Past the per-address limit the answer is 429 with Retry-After; an
/// X-Forwarded-For header is ignored unless the tenant trusts it.
async fn registrations_per_address_are_limited(db: Db) {
    let server = Server::start_with(db, &registration_config("per_ip_per_minute = 3")).await;
    let body = public_client_metadata().to_string();
    for i in 0..3 {
        let r = post_raw(&server, "application/json", body.clone(), None, None).await;
        assert_eq!(r.status, 201, "registration {i}: {}", r.json);
    }
    let r = post_raw(&server, "application/json", body.clone(), None, None).await;
    r.assert_error(429, "temporarily_unavailable", "over the limit");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    post_raw(&server, "application/json", body, None, Some("203.0.113.9"))
        .await
        .assert_error(429, "temporarily_unavailable", "untrusted X-Forwarded-For");
}

/// Behind a trusted proxy (GATEHOUSE_TRUSTED_PROXIES), each forwarded
/// address has its own allowance. (The deprecated per-tenant
/// `trust_forwarded_for`, which believed the header from anyone, is ignored.)
async fn trusted_forwarded_for_limits_each_address(db: Db) {
    let server = Server::start_with_env(
        db,
        &registration_config("per_ip_per_minute = 2\ntrust_forwarded_for = true"),
        &[("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    let body = public_client_metadata().to_string();
    let send = |ip: &'static str| {
        let body = body.clone();
        let server = &server;
        async move { post_raw(server, "application/json", body, None, Some(ip)).await }
    };
    for _ in 0..2 {
        assert_eq!(send("203.0.113.1").await.status, 201);
    }
    send("203.0.113.1").await.assert_error(
        429,
        "temporarily_unavailable",
        "first address over the limit",
    );
    assert_eq!(send("203.0.113.2, 10.0.0.1").await.status, 201);
}

/// Registrations never used for a token are deleted after the tenant's
/// `unused_client_ttl` (checked when later registrations arrive); a client
/// that completed a login is kept.
async fn never_used_registrations_expire(db: Db) {
    let server = Server::start_with(db, &registration_config("unused_client_ttl = 86400")).await;
    let unused = register_ok(&server, &public_client_metadata()).await;
    let used = register_ok(&server, &public_client_metadata()).await;
    let used_id = used.s("client_id").to_string();
    let p = pkce();
    let url = authorize_url(&server, &used_id, REDIRECT, &p.challenge, &[]);
    let code = Browser::new()
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &used_id),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{json}");

    server.advance_clock(2 * 86_400);
    register_ok(&server, &public_client_metadata()).await;
    let read = |r: &Reply| {
        let uri = r.s("registration_client_uri").to_string();
        let token = r.s("registration_access_token").to_string();
        async move { manage(reqwest::Method::GET, &uri, Some(&token), None).await }
    };
    let mut gone = false;
    for _ in 0..100 {
        if read(&unused).await.status == 401 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the never-used registration was not purged");
    assert_eq!(read(&used).await.status, 200, "a used client was purged");
}

on_both_databases!(
    never_used_registrations_expire,
    self_registered_public_client_logs_in,
    discovery_advertises_registration_endpoint,
    confidential_registration_gets_a_working_secret,
    invalid_metadata_is_refused_with_the_right_error,
    registration_is_read_updated_and_deleted_with_its_token,
    confidential_client_update_and_delete,
    initial_access_token_mode,
    disabled_registration_is_refused,
    registrations_per_address_are_limited,
    trusted_forwarded_for_limits_each_address,
);

mod jwks_uri {
    use super::common::*;
    use super::machine_clients_config;
    use serde_json::{json, Value};

    /// Serves `body` at /jwks.json on a loopback port; returns its URL.
    async fn serve_jwks(body: Value) -> String {
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || async move { axum::Json(body) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        url
    }

    fn public_jwk(key: &p256::SecretKey) -> Value {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = key.public_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        })
    }

    fn assertion(key: &p256::SecretKey, client_id: &str, audience: &str) -> String {
        use p256::pkcs8::EncodePrivateKey;
        let der = key.to_pkcs8_der().unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": audience,
            "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 60,
        });
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
        )
        .unwrap()
    }

    async fn register_with_jwks_uri(server: &Server, jwks_uri: &str) -> String {
        let res = reqwest::Client::new()
            .post(server.url("/register"))
            .json(&json!({
                "client_name": "Key-at-a-URL service",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": jwks_uri,
            }))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        assert!(body.get("client_secret").is_none());
        body["client_id"].as_str().unwrap().to_string()
    }

    async fn token_with(server: &Server, client_id: &str, assertion: &str) -> (u16, Value) {
        token_request(
            server,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("resource", MCP),
            ],
            None,
        )
        .await
    }

    async fn private_key_jwt_with_keys_at_jwks_uri_authenticates(db: Db) {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let jwks_uri = serve_jwks(json!({ "keys": [public_jwk(&key)] })).await;
        let config =
            machine_clients_config("\n[tenants.client_id_metadata]\nallow_loopback = true\n");
        let server = Server::start_with(db, &config).await;
        let client_id = register_with_jwks_uri(&server, &jwks_uri).await;
        let (status, json) = token_with(
            &server,
            &client_id,
            &assertion(&key, &client_id, &server.base),
        )
        .await;
        assert_eq!(status, 200, "{json}");
        // Signed by another key with the same kid: refused.
        let other = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let (status, json) = token_with(
            &server,
            &client_id,
            &assertion(&other, &client_id, &server.base),
        )
        .await;
        assert_eq!(
            (status, json["error"].as_str()),
            (401, Some("invalid_client")),
            "{json}"
        );
    }

    async fn jwks_uri_on_a_loopback_address_is_not_fetched_by_default(db: Db) {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let jwks_uri = serve_jwks(json!({ "keys": [public_jwk(&key)] })).await;
        let server = Server::start_with(db, &machine_clients_config("")).await;
        let client_id = register_with_jwks_uri(&server, &jwks_uri).await;
        let (status, json) = token_with(
            &server,
            &client_id,
            &assertion(&key, &client_id, &server.base),
        )
        .await;
        assert_eq!(
            (status, json["error"].as_str()),
            (401, Some("invalid_client")),
            "{json}"
        );
        assert!(
            json["error_description"]
                .as_str()
                .unwrap()
                .contains("jwks_uri"),
            "{json}"
        );
    }

    crate::on_both_databases!(
        private_key_jwt_with_keys_at_jwks_uri_authenticates,
        jwks_uri_on_a_loopback_address_is_not_fetched_by_default
    );
}
