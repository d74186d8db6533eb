//! Error responses: RFC 6749 JSON (`error`, `error_description`,
//! `Cache-Control: no-store`) with the right status, never a 500, whatever
//! the request looks like.

mod common;
use common::*;

use rand::{Rng, SeedableRng};
use serde_json::Value;

const FORM: &str = "application/x-www-form-urlencoded";

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an RFC 6749 §5.2 error: status, JSON with `error` and
    /// `error_description`, `Cache-Control: no-store`. Returns the JSON.
    fn oauth_error(&self, status: u16, error: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let ct = self.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/json"), "content-type {ct}");
        let json: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", self.text()));
        assert_eq!(json["error"], error, "{json}");
        let description = json["error_description"]
            .as_str()
            .unwrap_or_else(|| panic!("no error_description: {json}"));
        assert!(!description.is_empty(), "{json}");
        // RFC 6749 §5.2: %x20-21 / %x23-5B / %x5D-7E.
        assert!(
            description
                .bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
            "{json}"
        );
        assert_eq!(
            self.header("cache-control").as_deref(),
            Some("no-store"),
            "{json}"
        );
        json
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(
    server: &Server,
    path: &str,
    content_type: &str,
    body: impl Into<Vec<u8>>,
    basic: Option<(&str, &str)>,
) -> Reply {
    let mut req = http()
        .post(server.url(path))
        .header("content-type", content_type)
        .body(body.into());
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    send(req).await
}

async fn get(server: &Server, path_and_query: &str) -> Reply {
    send(http().get(server.url(path_and_query))).await
}

// ---------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------

async fn token_wrong_content_type_is_invalid_request(db: Db) {
    let server = Server::start(db).await;
    let json_body = serde_json::json!({"grant_type": "client_credentials", "resource": MCP});
    let r = post(
        &server,
        "/token",
        "application/json",
        json_body.to_string(),
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    r.oauth_error(400, "invalid_request");
    // A form body labelled as something else is refused too.
    for ct in ["text/plain", "multipart/form-data; boundary=x", ""] {
        let r = post(
            &server,
            "/token",
            ct,
            format!("grant_type=client_credentials&resource={MCP}"),
            Some((SERVICE_CLIENT, SERVICE_SECRET)),
        )
        .await;
        r.oauth_error(400, "invalid_request");
    }
}

async fn token_malformed_urlencoding_is_invalid_request(db: Db) {
    let server = Server::start(db).await;
    // Invalid UTF-8 once decoded, in a value, in a name, next to a stray `%`.
    for body in [
        "grant_type=authorization_code&code=%ff&client_id=demo-public",
        "grant_type=%ff",
        "%ff=1&grant_type=client_credentials",
        "grant_type=authorization_code&code=abc%zz%ff&client_id=demo-public",
        "grant_type=authorization_code&code=%c3%28&client_id=demo-public",
    ] {
        let r = post(&server, "/token", FORM, body, None).await;
        let json = r.oauth_error(400, "invalid_request");
        assert!(
            json["error_description"]
                .as_str()
                .unwrap()
                .contains("UTF-8"),
            "{body}: {json}"
        );
    }
    // A `%` that is not an escape is kept literally (WHATWG form decoding):
    // the request is still answered with a protocol error, not a crash.
    for body in [
        "grant_type=%zz",
        "grant_type=authorization_code&code=%zz&client_id=demo-public",
        "%zz",
        "grant_type=authorization_code&code=%4&client_id=demo-public",
    ] {
        let r = post(&server, "/token", FORM, body, None).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let json: Value = serde_json::from_slice(&r.body).expect("json");
        assert!(json["error"].is_string(), "{body}: {json}");
        assert!(json["error_description"].is_string(), "{body}: {json}");
    }
}

async fn token_duplicate_parameter_is_invalid_request(db: Db) {
    let server = Server::start(db).await;
    for (body, name) in [
        (
            format!("grant_type=client_credentials&grant_type=client_credentials&resource={MCP}"),
            "grant_type",
        ),
        (
            "grant_type=authorization_code&code=a&code=b&client_id=demo-public".to_string(),
            "code",
        ),
        (
            "grant_type=authorization_code&code=a&client_id=demo-public&client_id=demo-public"
                .to_string(),
            "client_id",
        ),
    ] {
        let r = post(&server, "/token", FORM, body.clone(), None).await;
        let json = r.oauth_error(400, "invalid_request");
        assert!(
            json["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("'{name}'")),
            "{body}: {json}"
        );
    }
}

async fn token_oversized_value_is_invalid_request(db: Db) {
    let server = Server::start(db).await;
    let code = "a".repeat(5000);
    let r = post(
        &server,
        "/token",
        FORM,
        format!("grant_type=authorization_code&client_id=demo-public&code={code}"),
        None,
    )
    .await;
    let json = r.oauth_error(400, "invalid_request");
    assert!(
        json["error_description"].as_str().unwrap().contains("code"),
        "{json}"
    );
    // Many parameters and an overlong name.
    let many: Vec<String> = (0..100).map(|i| format!("p{i}=x")).collect();
    let r = post(&server, "/token", FORM, many.join("&"), None).await;
    r.oauth_error(400, "invalid_request");
    let r = post(
        &server,
        "/token",
        FORM,
        format!("{}=1&grant_type=client_credentials", "n".repeat(100)),
        None,
    )
    .await;
    r.oauth_error(400, "invalid_request");
}

async fn token_body_over_limit_is_refused(db: Db) {
    let server = Server::start(db).await;
    let body = format!(
        "grant_type=client_credentials&{}",
        "x=1&".repeat(70 * 1024 / 4)
    );
    assert!(body.len() > 64 * 1024);
    let r = post(&server, "/token", FORM, body, None).await;
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    // The server is fine afterwards.
    assert_eq!(get(&server, "/healthz").await.status, 200);
}

async fn token_missing_grant_type_is_invalid_request(db: Db) {
    let server = Server::start(db).await;
    for body in [
        "",
        "client_id=demo-public&code=x",
        "grant_type=&client_id=demo-public",
    ] {
        let r = post(&server, "/token", FORM, body, None).await;
        let json = r.oauth_error(400, "invalid_request");
        assert!(
            json["error_description"]
                .as_str()
                .unwrap()
                .contains("grant_type"),
            "{body}: {json}"
        );
    }
}

async fn token_unknown_grant_type_is_unsupported(db: Db) {
    let server = Server::start(db).await;
    for grant in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:saml2-bearer",
        "bogus",
    ] {
        let r = post(
            &server,
            "/token",
            FORM,
            format!("grant_type={grant}&username={USER}&password={PASSWORD}&client_id=demo-public"),
            None,
        )
        .await;
        r.oauth_error(400, "unsupported_grant_type");
        // Also when the client authenticates properly.
        let r = post(
            &server,
            "/token",
            FORM,
            format!("grant_type={grant}&username={USER}&password={PASSWORD}"),
            Some((WEB_CLIENT, WEB_SECRET)),
        )
        .await;
        r.oauth_error(400, "unsupported_grant_type");
    }
}

async fn token_grant_not_allowed_is_unauthorized_client(db: Db) {
    let server = Server::start(db).await;
    // web-app may use authorization_code and refresh_token only.
    let r = post(
        &server,
        "/token",
        FORM,
        format!("grant_type=client_credentials&resource={MCP}"),
        Some((WEB_CLIENT, WEB_SECRET)),
    )
    .await;
    r.oauth_error(400, "unauthorized_client");
    // demo-service may use client_credentials only.
    let r = post(
        &server,
        "/token",
        FORM,
        "grant_type=refresh_token&refresh_token=abc",
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    r.oauth_error(400, "unauthorized_client");
}

async fn token_invalid_client_is_401_with_challenge(db: Db) {
    let server = Server::start(db).await;
    let body = format!("grant_type=client_credentials&resource={MCP}");
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            "unknown client",
            Some(("nobody", "whatever-secret")),
            body.clone(),
        ),
        (
            "wrong secret",
            Some((SERVICE_CLIENT, "wrong")),
            body.clone(),
        ),
        ("no authentication", None, body.clone()),
        (
            "unknown client, post",
            None,
            format!("{body}&client_id=nobody&client_secret=whatever-secret"),
        ),
        (
            "unknown public client",
            None,
            format!("{body}&client_id=nobody"),
        ),
    ];
    for (what, basic, body) in cases {
        let r = post(&server, "/token", FORM, body, basic).await;
        let json = r.oauth_error(401, "invalid_client");
        let challenge = r
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate: {json}"));
        assert!(
            challenge.to_ascii_lowercase().starts_with("basic"),
            "{what}: {challenge}"
        );
    }
    // A malformed Authorization header.
    let mut req = http()
        .post(server.url("/token"))
        .header("content-type", FORM)
        .body(body.clone());
    req = req.header("authorization", "Basic !!!not-base64!!!");
    let r = send(req).await;
    r.oauth_error(401, "invalid_client");
    assert!(r.header("www-authenticate").is_some());
}

async fn token_success_is_not_cached(db: Db) {
    let server = Server::start(db).await;
    let r = post(
        &server,
        "/token",
        FORM,
        format!("grant_type=client_credentials&resource={MCP}"),
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
}

// ---------------------------------------------------------------------------
// Authorization endpoint
// ---------------------------------------------------------------------------

async fn authorize_unsupported_response_type_is_redirected(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    for rt in ["token", "id_token", "code token"] {
        let url = authorize_url(
            &server,
            PUBLIC_CLIENT,
            REDIRECT,
            &p.challenge,
            &[("response_type", rt)],
        );
        let r = send(http().get(&url)).await;
        assert!(
            (300..400).contains(&r.status),
            "{rt}: {} {}",
            r.status,
            r.text()
        );
        let to = r.header("location").unwrap_or_default();
        assert!(to.starts_with(REDIRECT), "{rt}: {to}");
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("unsupported_response_type"),
            "{rt}: {to}"
        );
        assert_eq!(query_param(&to, "state").as_deref(), Some("xyz-state"));
        assert_eq!(
            query_param(&to, "iss").as_deref(),
            Some(server.base.as_str())
        );
    }
    // ... but only once client and redirect URI are known good.
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        "https://evil.example.com/cb",
        &p.challenge,
        &[("response_type", "token")],
    );
    let r = send(http().get(&url)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("location").is_none());
    let url = authorize_url(
        &server,
        "nobody",
        REDIRECT,
        &p.challenge,
        &[("response_type", "token")],
    );
    let r = send(http().get(&url)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("location").is_none());
}

/// An /authorize query built by hand (so parameters can repeat).
fn raw_authorize(server: &Server, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect();
    format!("{}?{}", server.url("/authorize"), query.join("&"))
}

fn good_pairs(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", PUBLIC_CLIENT.into()),
        ("redirect_uri", REDIRECT.into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
        ("state", "xyz-state".into()),
        ("resource", MCP.into()),
        ("scope", "mcp:read".into()),
    ]
}

async fn authorize_duplicate_parameters_are_refused(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    let base = good_pairs(&p.challenge);

    // Control: the hand-built request goes on to the login page.
    let pairs: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = send(http().get(raw_authorize(&server, &pairs))).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r
        .header("location")
        .unwrap_or_default()
        .starts_with(&server.url("/login")));

    // client_id twice: a page, never a redirect (which client would it be?).
    let mut dup = pairs.clone();
    dup.push(("client_id", "web-app"));
    let r = send(http().get(raw_authorize(&server, &dup))).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("location").is_none());
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(r.text().contains("invalid_request"), "{}", r.text());

    // Same value twice is still a repeat.
    let mut dup = pairs.clone();
    dup.push(("client_id", PUBLIC_CLIENT));
    let r = send(http().get(raw_authorize(&server, &dup))).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("location").is_none());

    // scope twice: an error, never a code or the login page.
    let mut dup = pairs.clone();
    dup.push(("scope", "mcp:write"));
    let r = send(http().get(raw_authorize(&server, &dup))).await;
    let location = r.header("location").unwrap_or_default();
    if r.status == 400 {
        assert!(location.is_empty());
        assert!(r.text().contains("invalid_request"), "{}", r.text());
    } else {
        assert!((300..400).contains(&r.status), "{} {}", r.status, r.text());
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(
            query_param(&location, "error").as_deref(),
            Some("invalid_request")
        );
    }

    // resource may repeat (RFC 8707): not an error for that reason.
    let mut two = pairs.clone();
    two.push(("resource", OTHER));
    let r = send(http().get(raw_authorize(&server, &two))).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r
        .header("location")
        .unwrap_or_default()
        .starts_with(&server.url("/login")));
}

async fn authorize_request_object_is_not_supported(db: Db) {
    let server = Server::start(db).await;
    let p = pkce();
    for (param, error) in [
        ("request", "request_not_supported"),
        ("request_uri", "request_uri_not_supported"),
    ] {
        let url = authorize_url(
            &server,
            PUBLIC_CLIENT,
            REDIRECT,
            &p.challenge,
            &[(param, "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im1jcDpyZWFkIn0.")],
        );
        let r = send(http().get(&url)).await;
        assert!((300..400).contains(&r.status), "{} {}", r.status, r.text());
        let to = r.header("location").unwrap_or_default();
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(query_param(&to, "error").as_deref(), Some(error), "{to}");
        assert_eq!(
            query_param(&to, "iss").as_deref(),
            Some(server.base.as_str())
        );
    }
}

async fn authorize_post_with_wrong_content_type_is_refused(db: Db) {
    let server = Server::start(db).await;
    let r = post(
        &server,
        "/authorize",
        "application/json",
        "{\"client_id\":\"demo-public\"}",
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("location").is_none());
}

// ---------------------------------------------------------------------------
// Introspection and revocation
// ---------------------------------------------------------------------------

async fn introspect_and_revoke_need_token(db: Db) {
    let server = Server::start(db).await;
    for path in ["/introspect", "/revoke"] {
        for body in ["", "token=", "token_type_hint=access_token"] {
            let r = post(
                &server,
                path,
                FORM,
                body,
                Some((SERVICE_CLIENT, SERVICE_SECRET)),
            )
            .await;
            let json = r.oauth_error(400, "invalid_request");
            assert!(
                json["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("token"),
                "{path} {body}: {json}"
            );
        }
        // Duplicate token, JSON body, bad UTF-8.
        let r = post(
            &server,
            path,
            FORM,
            "token=a&token=b",
            Some((SERVICE_CLIENT, SERVICE_SECRET)),
        )
        .await;
        r.oauth_error(400, "invalid_request");
        let r = post(
            &server,
            path,
            "application/json",
            "{\"token\":\"a\"}",
            Some((SERVICE_CLIENT, SERVICE_SECRET)),
        )
        .await;
        r.oauth_error(400, "invalid_request");
        let r = post(
            &server,
            path,
            FORM,
            "token=%ff",
            Some((SERVICE_CLIENT, SERVICE_SECRET)),
        )
        .await;
        r.oauth_error(400, "invalid_request");
        // Unauthenticated callers.
        let r = post(&server, path, FORM, "token=abc", None).await;
        r.oauth_error(401, "invalid_client");
        assert!(r.header("www-authenticate").is_some());
        let r = post(
            &server,
            path,
            FORM,
            "token=abc",
            Some((SERVICE_CLIENT, "nope")),
        )
        .await;
        r.oauth_error(401, "invalid_client");
    }
}

async fn wrong_method_is_405(db: Db) {
    let server = Server::start(db).await;
    for path in ["/token", "/introspect", "/revoke", "/consent"] {
        let r = get(&server, path).await;
        assert_eq!(r.status, 405, "GET {path}: {}", r.text());
    }
    for path in ["/token", "/introspect", "/revoke"] {
        let r = send(http().put(server.url(path)).body("x")).await;
        assert_eq!(r.status, 405, "PUT {path}: {}", r.text());
        let r = send(http().delete(server.url(path))).await;
        assert_eq!(r.status, 405, "DELETE {path}: {}", r.text());
    }
    let r = send(http().post(server.url("/jwks.json"))).await;
    assert_eq!(r.status, 405, "POST /jwks.json: {}", r.text());
}

// ---------------------------------------------------------------------------
// Unknown paths and tenants
// ---------------------------------------------------------------------------

async fn unknown_path_is_404_json(db: Db) {
    let server = Server::start(db).await;
    for path in ["/nope", "/token/x", "/.well-known/nope", "/t/default/nope"] {
        let r = get(&server, path).await;
        r.oauth_error(404, "not_found");
    }
    let r = post(&server, "/nope", FORM, "a=b", None).await;
    r.oauth_error(404, "not_found");
}

async fn unknown_tenant_is_404(db: Db) {
    let server = Server::start(db).await;
    let r = post(
        &server,
        "/t/nope/token",
        FORM,
        format!("grant_type=client_credentials&resource={MCP}"),
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    r.oauth_error(404, "not_found");
    for path in [
        "/t/nope/jwks.json",
        "/t/nope/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/t/nope",
        "/t/nope/authorize?client_id=demo-public",
        "/t/NOPE/jwks.json",
        "/t/..%2Fdefault/jwks.json",
    ] {
        let r = get(&server, path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    // Control: an existing tenant under the same prefix answers.
    let r = get(&server, "/t/default/jwks.json").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------------------
// Fuzz-ish
// ---------------------------------------------------------------------------

const NAMES: [&str; 16] = [
    "grant_type",
    "code",
    "client_id",
    "client_secret",
    "redirect_uri",
    "code_verifier",
    "resource",
    "scope",
    "refresh_token",
    "token",
    "token_type_hint",
    "client_assertion",
    "client_assertion_type",
    "response_type",
    "code_challenge",
    "state",
];

const VALUES: [&str; 14] = [
    "authorization_code",
    "client_credentials",
    "refresh_token",
    "demo-public",
    "demo-service",
    "web-app",
    "http://127.0.0.1:8765/mcp",
    "http://127.0.0.1/callback",
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "eyJhbGciOiJub25lIn0.e30.",
    "a.b.c",
    "mcp:read mcp:write",
    "S256",
    "code",
];

fn random_fragment(rng: &mut impl Rng) -> String {
    match rng.gen_range(0..8) {
        0 => format!("%{:02x}", rng.gen::<u8>()),
        1 => "%".to_string(),
        2 => "%zz".to_string(),
        3 => "+".to_string(),
        4 => VALUES[rng.gen_range(0..VALUES.len())].replace(' ', "+"),
        5 => "=".to_string(),
        _ => {
            let n = rng.gen_range(0..12);
            (0..n)
                .map(|_| {
                    let c = rng.gen_range(0x21u8..0x7f);
                    // Keep the URL parseable: no '#', no spaces.
                    if c == b'#' {
                        'x'
                    } else {
                        c as char
                    }
                })
                .collect()
        }
    }
}

fn random_form(rng: &mut impl Rng) -> Vec<u8> {
    match rng.gen_range(0..4) {
        // Raw random bytes.
        0 => {
            let n = rng.gen_range(0..600);
            (0..n).map(|_| rng.gen::<u8>()).collect()
        }
        // Structured: known names, random or known values, oddities.
        _ => {
            let n = rng.gen_range(0..10);
            let mut parts = Vec::new();
            for _ in 0..n {
                let name = if rng.gen_bool(0.85) {
                    NAMES[rng.gen_range(0..NAMES.len())].to_string()
                } else {
                    random_fragment(rng)
                };
                let value: String = (0..rng.gen_range(0..4))
                    .map(|_| random_fragment(rng))
                    .collect();
                parts.push(format!("{name}={value}"));
            }
            parts.join("&").into_bytes()
        }
    }
}

async fn random_requests_never_cause_5xx(db: Db) {
    let server = Server::start(db).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a7e_4015);
    let content_types = [FORM, FORM, FORM, "application/json", "text/plain", ""];
    for path in ["/token", "/introspect", "/revoke"] {
        for i in 0..200 {
            let body = random_form(&mut rng);
            let ct = content_types[rng.gen_range(0..content_types.len())];
            let basic = match rng.gen_range(0..4) {
                0 => Some((SERVICE_CLIENT, SERVICE_SECRET)),
                1 => Some((WEB_CLIENT, "wrong-secret")),
                _ => None,
            };
            let r = post(&server, path, ct, body.clone(), basic).await;
            assert!(
                r.status < 500,
                "{path} #{i} body {:?} -> {} {}",
                String::from_utf8_lossy(&body),
                r.status,
                r.text()
            );
            if r.status >= 400 {
                let json: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                    panic!(
                        "{path} #{i} body {:?}: error not JSON: {}",
                        String::from_utf8_lossy(&body),
                        r.text()
                    )
                });
                assert!(json["error"].is_string(), "{path} #{i}: {json}");
                assert!(json["error_description"].is_string(), "{path} #{i}: {json}");
            }
        }
    }
    let browser = http();
    for i in 0..200 {
        let mut pairs: Vec<String> = Vec::new();
        if rng.gen_bool(0.5) {
            // Start from a valid request and break it a little.
            let p = pkce();
            for (k, v) in good_pairs(&p.challenge) {
                if rng.gen_bool(0.8) {
                    pairs.push(format!(
                        "{k}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    ));
                }
            }
        }
        for _ in 0..rng.gen_range(0..6) {
            let name = if rng.gen_bool(0.7) {
                NAMES[rng.gen_range(0..NAMES.len())].to_string()
            } else {
                random_fragment(&mut rng)
            };
            pairs.push(format!("{name}={}", random_fragment(&mut rng)));
        }
        let url = format!("{}?{}", server.url("/authorize"), pairs.join("&"));
        let r = send(browser.get(&url)).await;
        assert!(
            r.status < 500,
            "/authorize #{i} {url} -> {} {}",
            r.status,
            r.text()
        );
    }
    let r = get(&server, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    // And still does real work.
    let r = post(
        &server,
        "/token",
        FORM,
        format!("grant_type=client_credentials&resource={MCP}"),
        Some((SERVICE_CLIENT, SERVICE_SECRET)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

on_both_databases!(
    token_wrong_content_type_is_invalid_request,
    token_malformed_urlencoding_is_invalid_request,
    token_duplicate_parameter_is_invalid_request,
    token_oversized_value_is_invalid_request,
    token_body_over_limit_is_refused,
    token_missing_grant_type_is_invalid_request,
    token_unknown_grant_type_is_unsupported,
    token_grant_not_allowed_is_unauthorized_client,
    token_invalid_client_is_401_with_challenge,
    token_success_is_not_cached,
    authorize_unsupported_response_type_is_redirected,
    authorize_duplicate_parameters_are_refused,
    authorize_request_object_is_not_supported,
    authorize_post_with_wrong_content_type_is_refused,
    introspect_and_revoke_need_token,
    wrong_method_is_405,
    unknown_path_is_404_json,
    unknown_tenant_is_404,
    random_requests_never_cause_5xx,
);
