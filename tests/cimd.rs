//! Client ID Metadata Documents against the real binary, on SQLite and
//! PostgreSQL. The documents are served by a small HTTP/1.1 server this test
//! runs on 127.0.0.1 (so the test tenant allows loopback fetches); it counts
//! the requests it answers, which shows what Gatehouse cached.

mod common;
use common::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// The document server
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Sent with `Transfer-Encoding: chunked` and no `Content-Length`, so
    /// only counting while reading can catch an oversized body.
    chunked: bool,
}

impl Reply {
    fn json(doc: &Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: doc.to_string().into_bytes(),
            chunked: false,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }
}

#[derive(Clone)]
struct DocServer {
    base: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl DocServer {
    async fn start() -> DocServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = DocServer {
            base: format!("http://127.0.0.1:{port}"),
            routes: Arc::default(),
            hits: Arc::default(),
        };
        let handler = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let _ = handler.answer(stream).await;
                });
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn serve(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_string(), reply);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    async fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() > 16_384 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        *self
            .hits
            .lock()
            .expect("hits")
            .entry(path.clone())
            .or_default() += 1;
        let reply = self
            .routes
            .lock()
            .expect("routes")
            .get(&path)
            .cloned()
            .unwrap_or_else(|| Reply::json(&json!({"error": "not found"})).status(404));
        let mut out = format!(
            "HTTP/1.1 {} Test\r\nConnection: close\r\nContent-Type: application/json\r\n",
            reply.status
        );
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if reply.chunked {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            stream.write_all(out.as_bytes()).await?;
            for piece in reply.body.chunks(1000) {
                stream
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                stream.write_all(piece).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        } else {
            out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&reply.body).await?;
        }
        stream.shutdown().await
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const CLIENT_NAME: &str = "CIMD Test Client";

/// The test tenant fetches from loopback addresses (where the documents are).
fn loopback_config() -> String {
    base_config("\n[tenants.client_id_metadata]\nallow_loopback = true\n")
}

/// A good document for `url`: a public native client.
fn document(url: &str) -> Value {
    json!({
        "client_id": url,
        "client_name": CLIENT_NAME,
        "client_uri": "https://app.example.com",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    })
}

fn with(mut doc: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        doc.as_object_mut().expect("object").remove(key);
    } else {
        doc[key] = value;
    }
    doc
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

fn form_action(html: &str) -> String {
    let marker = "action=\"";
    let start = html.find(marker).expect("form action") + marker.len();
    let end = html[start..].find('"').expect("action end") + start;
    html[start..end]
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

/// Drives the browser through login and consent (allowing), returning the
/// consent page it answered and where it was finally sent.
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
        let mut fields = vec![
            ("pending", hidden_field(&body, "pending").expect("pending")),
            ("csrf", hidden_field(&body, "csrf").expect("csrf")),
        ];
        if body.contains("name=\"password\"") {
            fields.push(("username", USER.to_string()));
            fields.push(("password", PASSWORD.to_string()));
        } else if body.contains("name=\"decision\"") {
            fields.push(("decision", "allow".to_string()));
            consent_page = Some(body.clone());
        } else {
            panic!("unexpected page {status}: {body}");
        }
        res = browser
            .http
            .post(form_action(&body))
            .form(&fields)
            .send()
            .await
            .expect("form");
    }
    panic!("too many steps in the authorization flow");
}

/// GET /authorize for `client_id` without following anything: the status
/// and the body (an error page) or the Location (a redirect).
async fn authorize_once(server: &Server, client_id: &str, redirect_uri: &str) -> (u16, String) {
    let p = pkce();
    let url = authorize_url(server, client_id, redirect_uri, &p.challenge, &[]);
    let res = http().get(&url).send().await.expect("authorize");
    let status = res.status().as_u16();
    if res.status().is_redirection() {
        return (status, location(&res));
    }
    (status, res.text().await.expect("body"))
}

/// The authorization request was accepted: the browser is sent to sign in.
async fn assert_accepted(server: &Server, client_id: &str, what: &str) {
    let (status, to) = authorize_once(server, client_id, REDIRECT).await;
    assert!(
        (300..400).contains(&status) && to.starts_with(&server.url("/login")),
        "{what}: expected the login redirect, got {status}: {to}"
    );
}

/// /authorize refused with an error page (never a redirect to the client)
/// that names the problem.
async fn assert_refused_page(
    server: &Server,
    client_id: &str,
    redirect_uri: &str,
    names: &str,
    what: &str,
) {
    let (status, body) = authorize_once(server, client_id, redirect_uri).await;
    assert_eq!(
        status, 400,
        "{what}: expected an error page, got {status}: {body}"
    );
    assert!(
        body.contains("<html") || body.contains("<!DOCTYPE") || body.contains("<!doctype"),
        "{what}: not an HTML page: {body}"
    );
    assert!(
        body.contains(names),
        "{what}: page should name '{names}': {body}"
    );
}

async fn token(server: &Server, form: &[(&str, &str)]) -> (u16, Value) {
    token_request(server, form, None).await
}

/// The token endpoint refuses `client_id` as a client.
async fn assert_invalid_client(server: &Server, client_id: &str, what: &str) {
    let (status, json) = token(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", "not-a-real-code"),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", &pkce().verifier),
            ("resource", MCP),
        ],
    )
    .await;
    assert_eq!(status, 401, "{what}: {json}");
    assert_eq!(json["error"], "invalid_client", "{what}: {json}");
}

fn s<'a>(json: &'a Value, key: &str) -> &'a str {
    json[key]
        .as_str()
        .unwrap_or_else(|| panic!("'{key}' is not a string in {json}"))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A client whose client_id is its document URL signs a user in (consent
/// shown, with the localhost warning), redeems the code as a public client
/// with PKCE, and refreshes; both discovery documents advertise support.
async fn metadata_document_client_completes_a_login(db: Db) {
    let docs = DocServer::start().await;
    let client_id = docs.url("/oauth/client.json");
    docs.serve("/oauth/client.json", Reply::json(&document(&client_id)));
    let server = Server::start_with(db, &loopback_config()).await;

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let meta: Value = http()
            .get(server.url(path))
            .send()
            .await
            .expect("discovery")
            .json()
            .await
            .expect("json");
        assert_eq!(
            meta["client_id_metadata_document_supported"], true,
            "{path}"
        );
    }

    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, &client_id, REDIRECT, &p.challenge, &[]);
    let (consent, to) = authorize_recording_consent(&server, &browser, &url).await;
    let consent = consent.expect("a metadata-document client always needs consent first");
    assert!(consent.contains(CLIENT_NAME), "{consent}");
    assert!(consent.contains("(127.0.0.1)"), "client_id host: {consent}");
    assert!(
        consent.contains("id=\"redirect-host\">127.0.0.1<"),
        "{consent}"
    );
    assert!(consent.contains("id=\"localhost-warning\""), "{consent}");
    assert!(consent.contains("id=\"unverified-warning\""), "{consent}");
    assert!(to.starts_with(REDIRECT), "{to}");
    let code = query_param(&to, "code").unwrap_or_else(|| panic!("no code in {to}"));

    let (status, json) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let claims = jwt_claims(s(&json, "access_token"));
    assert_eq!(claims["client_id"], client_id.as_str(), "{claims}");
    assert_eq!(claims["aud"], MCP, "{claims}");

    let (status, refreshed) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", s(&json, "refresh_token")),
            ("client_id", &client_id),
            ("resource", MCP),
        ],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");

    // A shared secret means nothing for such a client.
    let (status, json) = token_request(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", s(&refreshed, "refresh_token")),
            ("resource", MCP),
        ],
        Some((&client_id, "guessed-secret-0123456789")),
    )
    .await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "invalid_client", "{json}");

    // Fetched once (no cache headers: kept for the default lifetime), and
    // never stored as a regular client.
    assert_eq!(docs.hits("/oauth/client.json"), 1);
    let out = server.cli(&["clients", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(PUBLIC_CLIENT), "clients list: {listed}");
    assert!(!listed.contains(&client_id), "clients list: {listed}");
}

/// A document declaring private_key_jwt with inline keys: the token
/// endpoint wants an assertion signed by one of them.
async fn private_key_jwt_document_client_authenticates_with_its_keys(db: Db) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let point = key.public_key().to_encoded_point(false);
    let docs = DocServer::start().await;
    let client_id = docs.url("/jwt-client.json");
    let doc = with(
        document(&client_id),
        "token_endpoint_auth_method",
        json!("private_key_jwt"),
    );
    let doc = with(
        doc,
        "jwks",
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
            "y": URL_SAFE_NO_PAD.encode(point.y().expect("y")),
        }]}),
    );
    docs.serve("/jwt-client.json", Reply::json(&doc));
    let server = Server::start_with(db, &loopback_config()).await;

    let browser = Browser::new();
    let p = pkce();
    let url = authorize_url(&server, &client_id, REDIRECT, &p.challenge, &[]);
    let code = browser
        .authorize(&server, &url, USER, PASSWORD, true)
        .await
        .code();
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id.as_str()),
        ("code_verifier", p.verifier.as_str()),
        ("resource", MCP),
    ];

    let (status, json) = token(&server, &base).await;
    assert_eq!(status, 401, "no assertion: {json}");
    assert_eq!(json["error"], "invalid_client", "{json}");

    let assertion = {
        use p256::pkcs8::EncodePrivateKey;
        let der = key.to_pkcs8_der().expect("pkcs8");
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64;
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": server.base,
            "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 60,
        });
        jsonwebtoken::encode(&header, &claims, &encoding).expect("sign")
    };
    let mut form = base.to_vec();
    form.push((
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    ));
    form.push(("client_assertion", assertion.as_str()));
    let (status, json) = token(&server, &form).await;
    assert_eq!(status, 200, "with assertion: {json}");
}

/// Documents that cannot be trusted: /authorize shows an error page naming
/// the problem (never a redirect), the token endpoint says invalid_client.
async fn unusable_documents_are_refused(db: Db) {
    let docs = DocServer::start().await;
    let server = Server::start_with(db, &loopback_config()).await;

    let mut big = document(&docs.url("/big.json"));
    big["padding"] = json!("x".repeat(6000));
    let mut big_chunked = document(&docs.url("/big-chunked.json"));
    big_chunked["padding"] = json!("x".repeat(6000));
    let cases: Vec<(&str, Reply, &str)> = vec![
        (
            "/mismatch.json",
            Reply::json(&document(&docs.url("/other.json"))),
            "is not exactly the URL it was fetched from",
        ),
        (
            "/redirect.json",
            Reply::json(&json!({}))
                .status(302)
                .header("Location", &docs.url("/good.json")),
            "redirects are not followed",
        ),
        ("/big.json", Reply::json(&big), "larger than 5120 bytes"),
        (
            "/big-chunked.json",
            Reply::json(&big_chunked).chunked(),
            "larger than 5120 bytes",
        ),
        (
            "/secret.json",
            Reply::json(&with(
                document(&docs.url("/secret.json")),
                "token_endpoint_auth_method",
                json!("client_secret_basic"),
            )),
            "client_secret_basic",
        ),
        (
            "/no-name.json",
            Reply::json(&with(
                document(&docs.url("/no-name.json")),
                "client_name",
                Value::Null,
            )),
            "has no client_name",
        ),
        (
            "/no-redirects.json",
            Reply::json(&with(
                document(&docs.url("/no-redirects.json")),
                "redirect_uris",
                Value::Null,
            )),
            "has no redirect_uris",
        ),
        (
            "/missing.json",
            Reply::json(&json!({})).status(404),
            "answered HTTP 404",
        ),
        (
            "/not-json.json",
            Reply {
                status: 200,
                headers: vec![],
                body: b"<html>hello</html>".to_vec(),
                chunked: false,
            },
            "not valid JSON",
        ),
    ];
    docs.serve(
        "/good.json",
        Reply::json(&document(&docs.url("/good.json"))),
    );
    for (path, reply, names) in cases {
        docs.serve(path, reply);
        let client_id = docs.url(path);
        assert_refused_page(&server, &client_id, REDIRECT, names, path).await;
        assert_invalid_client(&server, &client_id, path).await;
    }
    // Followed redirects would have fetched this.
    assert_eq!(docs.hits("/good.json"), 0);

    // A good document, but a redirect URI it does not list.
    assert_refused_page(
        &server,
        &docs.url("/good.json"),
        "http://127.0.0.1:53682/elsewhere",
        "redirect_uri does not match",
        "unlisted redirect_uri",
    )
    .await;
    assert_accepted(&server, &docs.url("/good.json"), "good document").await;
}

/// Without `allow_loopback` (the default), loopback URLs are refused before
/// anything is fetched: by literal address, by a name resolving to
/// loopback, and plain http is refused outright.
async fn loopback_documents_are_refused_by_default(db: Db) {
    let docs = DocServer::start().await;
    let port = docs.base.rsplit(':').next().expect("port").to_string();
    docs.serve(
        "/client.json",
        Reply::json(&document(&docs.url("/client.json"))),
    );
    let server = Server::start_with(db, &base_config("")).await;

    let literal = format!("https://127.0.0.1:{port}/client.json");
    assert_refused_page(&server, &literal, REDIRECT, "loopback", "127.0.0.1").await;
    assert_invalid_client(&server, &literal, "127.0.0.1").await;
    let named = format!("https://localhost:{port}/client.json");
    assert_refused_page(&server, &named, REDIRECT, "loopback", "localhost").await;
    let mapped = format!("https://[::ffff:7f00:1]:{port}/client.json");
    assert_refused_page(&server, &mapped, REDIRECT, "loopback", "mapped").await;
    assert_refused_page(
        &server,
        &docs.url("/client.json"),
        REDIRECT,
        "must use https",
        "plain http",
    )
    .await;
    assert_refused_page(
        &server,
        "https://169.254.169.254/latest/meta-data",
        REDIRECT,
        "link-local",
        "metadata service",
    )
    .await;
    assert_eq!(docs.hits("/client.json"), 0, "nothing may be fetched");
}

/// `max-age` documents are fetched once, `no-store` ones every time, and a
/// failure is not remembered.
async fn documents_are_cached_by_their_headers(db: Db) {
    let docs = DocServer::start().await;
    let server = Server::start_with(db, &loopback_config()).await;

    let cached = docs.url("/cached.json");
    docs.serve(
        "/cached.json",
        Reply::json(&document(&cached)).header("Cache-Control", "public, max-age=60"),
    );
    assert_accepted(&server, &cached, "max-age, first").await;
    assert_accepted(&server, &cached, "max-age, second").await;
    assert_eq!(docs.hits("/cached.json"), 1, "max-age=60: fetched once");

    let uncached = docs.url("/no-store.json");
    docs.serve(
        "/no-store.json",
        Reply::json(&document(&uncached)).header("Cache-Control", "no-store"),
    );
    assert_accepted(&server, &uncached, "no-store, first").await;
    assert_accepted(&server, &uncached, "no-store, second").await;
    assert_eq!(
        docs.hits("/no-store.json"),
        2,
        "no-store: fetched each time"
    );

    let flaky = docs.url("/flaky.json");
    docs.serve(
        "/flaky.json",
        Reply::json(&json!({"error": "oops"}))
            .status(500)
            .header("Cache-Control", "max-age=3600"),
    );
    assert_refused_page(&server, &flaky, REDIRECT, "answered HTTP 500", "500").await;
    docs.serve(
        "/flaky.json",
        Reply::json(&document(&flaky)).header("Cache-Control", "max-age=60"),
    );
    assert_accepted(&server, &flaky, "after the 500").await;
    assert_accepted(&server, &flaky, "cached after the 500").await;
    assert_eq!(docs.hits("/flaky.json"), 2, "the 500 was not cached");

    // An invalid document is not cached either.
    let fixed = docs.url("/fixed.json");
    docs.serve(
        "/fixed.json",
        Reply::json(&with(document(&fixed), "client_name", Value::Null))
            .header("Cache-Control", "max-age=3600"),
    );
    assert_refused_page(&server, &fixed, REDIRECT, "client_name", "invalid").await;
    docs.serve("/fixed.json", Reply::json(&document(&fixed)));
    assert_accepted(&server, &fixed, "after the fix").await;
}

/// With `enabled = false` a URL client_id is just an unknown client, and
/// discovery says so.
async fn disabled_tenant_does_not_fetch(db: Db) {
    let docs = DocServer::start().await;
    let client_id = docs.url("/client.json");
    docs.serve("/client.json", Reply::json(&document(&client_id)));
    let server = Server::start_with(
        db,
        &base_config("\n[tenants.client_id_metadata]\nenabled = false\nallow_loopback = true\n"),
    )
    .await;
    let meta: Value = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(meta["client_id_metadata_document_supported"], false);
    assert_refused_page(
        &server,
        &client_id,
        REDIRECT,
        "unknown client_id",
        "disabled",
    )
    .await;
    assert_eq!(docs.hits("/client.json"), 0);
}

/// The delegation story with a metadata-document client: it logs the user
/// in, and an agent exchanges the user's token, with its own actor token,
/// for a narrower token to a second MCP server.
async fn metadata_document_client_login_then_agent_delegation(db: Db) {
    const SECOND: &str = "https://second.example.com/mcp";
    const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
    let docs = DocServer::start().await;
    let client_id = docs.url("/oauth/client.json");
    docs.serve("/oauth/client.json", Reply::json(&document(&client_id)));
    let config = base_config(&format!(
        r#"
[tenants.client_id_metadata]
allow_loopback = true

[[tenants.resources]]
uri = "{SECOND}"
scopes = ["mcp:read", "mcp:write"]

[[tenants.clients]]
client_id = "agent"
secret = "agent-secret-0123456789"
grant_types = ["client_credentials", "{TE}"]

[[tenants.token_exchange]]
clients = ["agent"]
resources = ["{SECOND}"]
"#
    ));
    let server = Server::start_with(db, &config).await;
    let p = pkce();
    let url = authorize_url(
        &server,
        &client_id,
        REDIRECT,
        &p.challenge,
        &[("scope", "mcp:read mcp:write")],
    );
    let (_, to) = authorize_recording_consent(&server, &Browser::new(), &url).await;
    let code = query_param(&to, "code").unwrap_or_else(|| panic!("no code in {to}"));
    let (status, user) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", &p.verifier),
            ("resource", MCP),
        ],
    )
    .await;
    assert_eq!(status, 200, "{user}");
    let agent = ("agent", "agent-secret-0123456789");
    let (status, actor) = token_request(
        &server,
        &[("grant_type", "client_credentials"), ("resource", SECOND)],
        Some(agent),
    )
    .await;
    assert_eq!(status, 200, "{actor}");
    let (status, delegated) = token_request(
        &server,
        &[
            ("grant_type", TE),
            ("subject_token", s(&user, "access_token")),
            ("subject_token_type", AT),
            ("actor_token", s(&actor, "access_token")),
            ("actor_token_type", AT),
            ("resource", SECOND),
            ("scope", "mcp:read"),
        ],
        Some(agent),
    )
    .await;
    assert_eq!(status, 200, "{delegated}");
    let claims = jwt_claims(s(&delegated, "access_token"));
    assert_eq!(claims["aud"], SECOND);
    assert_eq!(claims["scope"], "mcp:read");
    assert_eq!(claims["act"]["sub"], "agent");
    assert_eq!(claims["sub"], jwt_claims(s(&user, "access_token"))["sub"]);
}

on_both_databases!(
    metadata_document_client_login_then_agent_delegation,
    metadata_document_client_completes_a_login,
    private_key_jwt_document_client_authenticates_with_its_keys,
    unusable_documents_are_refused,
    loopback_documents_are_refused_by_default,
    documents_are_cached_by_their_headers,
    disabled_tenant_does_not_fetch,
);
