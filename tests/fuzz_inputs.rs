//! A property test over every form and query parser, against the real
//! binary on SQLite and PostgreSQL: whatever arrives (random bytes, NUL and
//! other control characters, invalid UTF-8 percent escapes, huge values,
//! repeated parameters, unicode, missing fields, wrong content types), no
//! answer is a 5xx; an error is in the protocol's own format (JSON `error`
//! for back-channel endpoints, an HTML page for browser endpoints); a
//! browser is only ever redirected to Gatehouse itself, to a registered
//! redirect URI of an administrator-configured client, or to the SAML
//! identity provider; and the log shows no storage failure or panic.
//!
//! The generator is seeded (`FUZZ_SEED` overrides the seed, `FUZZ_CASES`
//! the number of requests per endpoint and database; 120 by default), so a
//! failure names the seed and the request that caused it and can be
//! replayed. `proptest` is not in the dependency tree; a seeded generator
//! from `rand` (already a dependency) keeps the run time fixed and bounded.

mod common;
use common::*;

use gatehouse_connectors::saml_test_idp::TestIdp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const SAML: &str = "corp";
const SAML_SSO: &str = "http://127.0.0.1:9/sso";

fn cases() -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9a7e_4011_5eed)
}

fn config(idp: &TestIdp) -> String {
    let open =
        "\n[tenants.registration]\nper_ip_per_minute = 100000\nper_tenant_per_minute = 100000\n";
    base_config(&format!(
        r#"
[[tenants.connectors]]
id = "{SAML}"
type = "saml"
display_name = "Corp SAML"
idp_entity_id = "{entity}"
idp_sso_url = "{SAML_SSO}"
idp_certificate = '''
{cert}'''
{open}
{acme}
"#,
        entity = idp.entity_id,
        cert = idp.certificate_pem(),
        acme = tenant_config("acme", "", open),
    ))
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

struct Gen {
    rng: StdRng,
    /// Values that get further into the code than noise does.
    plausible: Vec<String>,
}

const NAMES: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "code",
    "code_verifier",
    "code_challenge",
    "code_challenge_method",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "resource",
    "prompt",
    "max_age",
    "login_hint",
    "refresh_token",
    "token",
    "token_type_hint",
    "client_assertion",
    "client_assertion_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "audience",
    "assertion",
    "device_code",
    "user_code",
    "request",
    "request_uri",
    "pending",
    "csrf",
    "username",
    "password",
    "connector",
    "email",
    "decision",
    "SAMLResponse",
    "RelayState",
    "gh_resubmitted",
    "error",
    "error_description",
    "iss",
    "access_token",
];

impl Gen {
    fn new(seed: u64) -> Gen {
        let p = pkce();
        let plausible = [
            PUBLIC_CLIENT,
            SERVICE_CLIENT,
            WEB_CLIENT,
            "dcr_unknown",
            "https://127.0.0.1:1/client.json",
            MCP,
            OTHER,
            REDIRECT,
            WEB_REDIRECT,
            "http://127.0.0.1/callback",
            "https://evil.example/cb",
            "code",
            "token",
            "S256",
            "plain",
            &p.challenge,
            &p.verifier,
            "mcp:read",
            "mcp:read mcp:write openid offline_access",
            "none",
            "login",
            "consent",
            "authorization_code",
            "client_credentials",
            "refresh_token",
            "password",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:token-type:access_token",
            "urn:ietf:params:oauth:token-type:id_token",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJcdTAwMDAifQ.c2ln",
            "allow",
            "deny",
            "dev",
            SAML,
            USER,
            PASSWORD,
            "BCDF-GHJK",
            "0",
            "-1",
            "99999999999999999999",
            "PHNhbWxwOlJlc3BvbnNlLz4=",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Gen {
            rng: StdRng::seed_from_u64(seed),
            plausible,
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.gen_range(0..items.len())]
    }

    /// A decoded value, as bytes (not necessarily UTF-8).
    fn value(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..12) {
            0..=3 => {
                let plausible = self.plausible.clone();
                let mut v = self.pick(&plausible).clone().into_bytes();
                // Sometimes spoil a good value a little.
                if self.rng.gen_bool(0.3) && !v.is_empty() {
                    let at = self.rng.gen_range(0..=v.len());
                    let junk = self.odd_bytes();
                    v.splice(at..at, junk);
                }
                v
            }
            4 => (0..self.rng.gen_range(0..40))
                .map(|_| self.rng.gen_range(0x20..0x7f))
                .collect(),
            5 => (0..self.rng.gen_range(0..40))
                .map(|_| self.rng.gen())
                .collect(),
            6 => self.odd_bytes(),
            7 => {
                let unit = self.odd_bytes();
                let n = self.rng.gen_range(1000..20_000);
                unit.iter().chain(b"a").copied().cycle().take(n).collect()
            }
            8 => {
                let odd = [
                    "\u{e9}",
                    "\u{1d11e}",
                    "\u{202e}",
                    "\u{200b}",
                    "\u{feff}",
                    "\u{fffd}",
                    "\u{0}",
                ];
                (0..self.rng.gen_range(1..6))
                    .flat_map(|_| self.pick(&odd).as_bytes().to_vec())
                    .collect()
            }
            9 => Vec::new(),
            10 => b"%".to_vec(),
            _ => {
                let n = self.rng.gen_range(4097..70_000);
                vec![b'x'; n]
            }
        }
    }

    /// Bytes that parsers trip on: NUL, control characters, lone UTF-8
    /// prefixes, invalid sequences, overlong encodings, separators.
    fn odd_bytes(&mut self) -> Vec<u8> {
        let odd: [&[u8]; 16] = [
            b"\0",
            b"\x01",
            b"\n",
            b"\r\n",
            b"\t",
            b"\x7f",
            b"\xc2\x85",
            b"\xff",
            b"\xc3\x28",
            b"\xe2\x82",
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"&",
            b"=",
            b"+",
            b"%",
        ];
        (0..self.rng.gen_range(1..4))
            .flat_map(|_| self.pick(&odd).to_vec())
            .collect()
    }

    fn name(&mut self, known: &[&str]) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0..=6 => self.pick(known).as_bytes().to_vec(),
            7 => self.pick(NAMES).as_bytes().to_vec(),
            8 => self.value(),
            _ => {
                let mut n = self.pick(known).as_bytes().to_vec();
                n.extend(self.odd_bytes());
                n
            }
        }
    }

    /// Percent-encodes some or all of `bytes`, leaving the rest raw.
    fn encode(&mut self, bytes: &[u8], raw_ok: bool) -> Vec<u8> {
        let mode = self.rng.gen_range(0..4);
        let mut out = Vec::new();
        for &b in bytes {
            let plain = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            let raw = match mode {
                0 => plain,
                1 if raw_ok => true,
                _ => plain || (b.is_ascii_graphic() && self.rng.gen_bool(0.5)),
            };
            if raw && (raw_ok || b.is_ascii_graphic()) {
                out.push(b);
            } else if b == b' ' && self.rng.gen_bool(0.5) {
                out.push(b'+');
            } else {
                out.extend(format!("%{b:02X}").as_bytes());
            }
        }
        // Stray and half escapes.
        if self.rng.gen_bool(0.05) {
            out.extend(
                self.pick(&[&b"%"[..], b"%4", b"%zz", b"%%", b"%u0000"])
                    .to_vec(),
            );
        }
        out
    }

    /// A query string or form body: the endpoint's names mostly, repeats,
    /// empty pairs, separators.
    fn form(&mut self, known: &[&str], raw_ok: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let pairs = match self.rng.gen_range(0..20) {
            0 => 0,
            1 => self.rng.gen_range(60..80),
            _ => self.rng.gen_range(1..known.len().max(2) + 3),
        };
        for i in 0..pairs {
            if i > 0 {
                out.push(b'&');
            }
            let name = self.name(known);
            out.extend(self.encode(&name, raw_ok));
            match self.rng.gen_range(0..12) {
                0 => {}
                1 => out.push(b'='),
                _ => {
                    out.push(b'=');
                    let value = self.value();
                    out.extend(self.encode(&value, raw_ok));
                }
            }
            if self.rng.gen_bool(0.1) {
                // The same pair again.
                let again = out.clone();
                let last = again.rsplit(|&b| b == b'&').next().unwrap_or_default();
                out.push(b'&');
                out.extend_from_slice(last);
            }
        }
        if self.rng.gen_bool(0.05) {
            out.extend(b"&&=&");
        }
        out
    }

    /// A well-formed request: each of the endpoint's names at most once
    /// (most of them present), with generated values. Gets past the
    /// parsers into the code behind them.
    fn complete_form(&mut self, known: &[&str], raw_ok: bool, skip: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for name in known.iter().filter(|n| !skip.contains(n)) {
            if self.rng.gen_bool(0.15) {
                continue;
            }
            if !out.is_empty() {
                out.push(b'&');
            }
            out.extend(name.as_bytes());
            out.push(b'=');
            let value = self.value();
            out.extend(self.encode(&value, raw_ok));
        }
        out
    }

    fn content_type(&mut self) -> Option<&'static str> {
        *self.pick(&[
            Some("application/x-www-form-urlencoded"),
            Some("application/x-www-form-urlencoded"),
            Some("application/x-www-form-urlencoded"),
            Some("application/x-www-form-urlencoded; charset=ISO-8859-1"),
            Some("APPLICATION/X-WWW-FORM-URLENCODED"),
            Some("application/json"),
            Some("multipart/form-data; boundary=x"),
            Some("text/plain"),
            Some(""),
            None,
        ])
    }

    /// A JSON-ish registration document, or noise.
    fn json_body(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0 => self.value(),
            1 => b"[]".to_vec(),
            2 => b"{".to_vec(),
            _ => {
                let names = [
                    "redirect_uris",
                    "grant_types",
                    "response_types",
                    "token_endpoint_auth_method",
                    "client_name",
                    "client_uri",
                    "logo_uri",
                    "scope",
                    "contacts",
                    "jwks",
                    "jwks_uri",
                    "software_id",
                    "software_version",
                    "application_type",
                    "client_id",
                    "client_secret",
                ];
                let mut doc = serde_json::Map::new();
                for _ in 0..self.rng.gen_range(0..8) {
                    let name = if self.rng.gen_bool(0.9) {
                        self.pick(&names).to_string()
                    } else {
                        String::from_utf8_lossy(&self.value()).into_owned()
                    };
                    let value = self.json_value(0);
                    doc.insert(name, value);
                }
                Value::Object(doc).to_string().into_bytes()
            }
        }
    }

    fn json_value(&mut self, depth: u32) -> Value {
        let string = |g: &mut Gen| Value::String(String::from_utf8_lossy(&g.value()).into_owned());
        match self.rng.gen_range(0..if depth > 2 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.rng.gen::<bool>()),
            2 => json!(self.rng.gen::<i64>()),
            3 | 4 => string(self),
            5 | 6 => Value::Array(
                (0..self.rng.gen_range(0..5))
                    .map(|_| self.json_value(depth + 1))
                    .collect(),
            ),
            _ => {
                let mut m = serde_json::Map::new();
                for _ in 0..self.rng.gen_range(0..4) {
                    let k = String::from_utf8_lossy(&self.value()).into_owned();
                    m.insert(k, self.json_value(depth + 1));
                }
                Value::Object(m)
            }
        }
    }

    /// An Authorization header value (only ones HTTP can carry).
    fn authorization(&mut self) -> Option<reqwest::header::HeaderValue> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        let value: Vec<u8> = match self.rng.gen_range(0..8) {
            0 => return None,
            1 | 2 => {
                let id = self.value();
                let secret = self.value();
                let mut creds = self.encode(&id, true);
                creds.push(b':');
                creds.extend(self.encode(&secret, true));
                format!("Basic {}", STANDARD.encode(creds)).into_bytes()
            }
            3 => {
                let claims = self.json_value(0);
                format!(
                    "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.{}.c2ln",
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                )
                .into_bytes()
            }
            4 => {
                let mut v = b"Bearer ".to_vec();
                v.extend(self.value());
                v
            }
            5 => format!("Basic {}", SERVICE_CLIENT).into_bytes(),
            6 => b"Basic ZGVtby1zZXJ2aWNlOmRlbW8tc2VydmljZS1zZWNyZXQ=".to_vec(),
            _ => self.value(),
        };
        reqwest::header::HeaderValue::from_bytes(&value).ok()
    }
}

// ---------------------------------------------------------------------------
// Endpoints and what their errors look like
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// RFC 6749 / 7591 JSON: `error` (and `error_description`).
    Json,
    /// An HTML page for the person in the browser.
    Page,
}

#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    Query,
    Form,
    Json,
}

struct Endpoint {
    method: reqwest::Method,
    path: &'static str,
    body: Body,
    names: &'static [&'static str],
    format: Format,
}

fn endpoints() -> Vec<Endpoint> {
    use reqwest::Method as M;
    let e = |method: M, path, body, names, format| Endpoint {
        method,
        path,
        body,
        names,
        format,
    };
    let authorize: &[&str] = &[
        "client_id",
        "redirect_uri",
        "response_type",
        "code_challenge",
        "code_challenge_method",
        "scope",
        "state",
        "resource",
        "prompt",
        "max_age",
        "nonce",
        "login_hint",
        "request",
        "response_mode",
    ];
    let token: &[&str] = &[
        "grant_type",
        "client_id",
        "client_secret",
        "code",
        "code_verifier",
        "redirect_uri",
        "resource",
        "scope",
        "refresh_token",
        "client_assertion",
        "client_assertion_type",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
        "assertion",
        "device_code",
        "audience",
    ];
    let token_info: &[&str] = &["token", "token_type_hint", "client_id", "client_secret"];
    let device: &[&str] = &["client_id", "client_secret", "scope", "resource"];
    let login: &[&str] = &["pending", "csrf", "username", "password", "connector"];
    vec![
        e(M::GET, "/authorize", Body::Query, authorize, Format::Page),
        e(M::POST, "/authorize", Body::Form, authorize, Format::Page),
        e(
            M::GET,
            "/login",
            Body::Query,
            &["pending", "connector"],
            Format::Page,
        ),
        e(M::POST, "/login", Body::Form, login, Format::Page),
        e(
            M::POST,
            "/login/email",
            Body::Form,
            &["pending", "csrf", "email"],
            Format::Page,
        ),
        e(
            M::POST,
            "/consent",
            Body::Form,
            &["pending", "csrf", "decision"],
            Format::Page,
        ),
        e(
            M::GET,
            "/callback/corp",
            Body::Query,
            &["SAMLResponse", "RelayState", "code", "state"],
            Format::Page,
        ),
        e(
            M::POST,
            "/callback/corp",
            Body::Form,
            &["SAMLResponse", "RelayState", "gh_resubmitted"],
            Format::Page,
        ),
        e(
            M::GET,
            "/callback/dev",
            Body::Query,
            &["code", "state", "error"],
            Format::Page,
        ),
        e(M::GET, "/device", Body::Query, &["user_code"], Format::Page),
        e(
            M::POST,
            "/device",
            Body::Form,
            &["csrf", "user_code"],
            Format::Page,
        ),
        e(
            M::POST,
            "/device_authorization",
            Body::Form,
            device,
            Format::Json,
        ),
        e(M::POST, "/token", Body::Form, token, Format::Json),
        e(M::POST, "/introspect", Body::Form, token_info, Format::Json),
        e(M::POST, "/revoke", Body::Form, token_info, Format::Json),
        e(M::POST, "/register", Body::Json, &[], Format::Json),
        e(M::PUT, "/register/{client}", Body::Json, &[], Format::Json),
        e(M::GET, "/register/{client}", Body::None, &[], Format::Json),
        e(
            M::GET,
            "/resource-metadata",
            Body::Query,
            &["resource"],
            Format::Json,
        ),
        e(
            M::GET,
            "/userinfo",
            Body::Query,
            &["access_token", "scope"],
            Format::Json,
        ),
        e(
            M::POST,
            "/userinfo",
            Body::Form,
            &["access_token"],
            Format::Json,
        ),
        e(
            M::GET,
            "/.well-known/oauth-authorization-server",
            Body::Query,
            &["x"],
            Format::Json,
        ),
        e(
            M::GET,
            "/.well-known/openid-configuration",
            Body::Query,
            &["x"],
            Format::Json,
        ),
        e(M::GET, "/jwks.json", Body::Query, &["kid"], Format::Json),
        e(
            M::GET,
            "/saml/corp/metadata",
            Body::Query,
            &["x"],
            Format::Json,
        ),
    ]
}

/// A self-registered client and its registration access token, so that
/// the configuration endpoint is reached past authentication sometimes.
async fn registered(server: &Server) -> (String, String) {
    let res = reqwest::Client::new()
        .post(server.url("/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .expect("register");
    let json: Value = res.json().await.expect("json");
    (
        json["client_id"].as_str().expect("client_id").to_string(),
        json["registration_access_token"]
            .as_str()
            .expect("token")
            .to_string(),
    )
}

/// A browser half-way through a sign-in (its cookies, and the login
/// form's pending id and CSRF token), so form posts get past the first
/// checks sometimes.
async fn half_signed_in(server: &Server, tenant: &str) -> (Browser, String, String) {
    let browser = Browser { http: client(true) };
    let p = pkce();
    let url = authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[])
        .replace("/authorize", &format!("{tenant}/authorize"));
    let res = browser.http.get(&url).send().await.expect("authorize");
    let mut to = location(&res);
    if tenant.is_empty() {
        // Two connectors: pick the password one.
        to.push_str("&connector=dev");
    }
    let page = browser
        .http
        .get(&to)
        .send()
        .await
        .expect("login")
        .text()
        .await
        .expect("page");
    let pending = hidden_field(&page, "pending").unwrap_or_default();
    let csrf = hidden_field(&page, "csrf").unwrap_or_default();
    (browser, pending, csrf)
}

/// A client that follows no redirects and opens a connection per request:
/// a server may close a connection after refusing a request early, and a
/// pooled connection would carry that into the next case.
fn client(cookies: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(cookies)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.chars().count() > 300 {
        let head: String = s.chars().take(300).collect();
        format!("{head}… ({} bytes)", bytes.len())
    } else {
        s.into_owned()
    }
}

async fn every_parser_answers_in_its_format_and_never_5xx(db: Db) {
    let idp = TestIdp::generate("https://idp.example.com/saml");
    let server = Server::start_with(db, &config(&idp)).await;
    let seed = seed() ^ if db == Db::Postgres { 1 } else { 0 };
    let mut gen = Gen::new(seed);
    let (client_id, reg_token) = registered(&server).await;
    let sessions = [
        half_signed_in(&server, "").await,
        half_signed_in(&server, "/t/acme").await,
    ];
    let plain = client(false);
    for endpoint in endpoints() {
        for case in 0..cases() {
            let acme = gen.rng.gen_bool(0.3);
            let prefix = if acme { "/t/acme" } else { "" };
            let (browser, pending, csrf) = &sessions[usize::from(acme)];
            let jar = gen.rng.gen_bool(0.5);
            let http = if jar { &browser.http } else { &plain };
            let path = endpoint.path.replace(
                "{client}",
                if gen.rng.gen_bool(0.5) {
                    &client_id
                } else {
                    "dcr_nope"
                },
            );
            let mut url = format!("{}{prefix}{path}", server.base);
            let mut payload = Vec::new();
            let mut req;
            match endpoint.body {
                Body::Query => {
                    payload = if gen.rng.gen_bool(0.3) {
                        gen.complete_form(endpoint.names, false, &[])
                    } else {
                        gen.form(endpoint.names, false)
                    };
                    // The longest URI a client can send (http::Uri).
                    payload.truncate(60_000);
                    if !payload.is_empty() || gen.rng.gen_bool(0.5) {
                        url.push('?');
                        url.push_str(&String::from_utf8_lossy(&payload));
                    }
                    req = http.request(endpoint.method.clone(), &url);
                }
                Body::Form => {
                    let well_formed = gen.rng.gen_bool(0.4);
                    payload = if well_formed {
                        // The real pending id and CSRF token, with this
                        // browser's cookies, and the other fields once.
                        let mut good = format!("pending={pending}&csrf={csrf}&").into_bytes();
                        good.extend(gen.complete_form(endpoint.names, true, &["pending", "csrf"]));
                        good
                    } else {
                        gen.form(endpoint.names, true)
                    };
                    let http = if well_formed { &browser.http } else { http };
                    req = http.request(endpoint.method.clone(), &url);
                    let ct = if well_formed && gen.rng.gen_bool(0.8) {
                        Some("application/x-www-form-urlencoded")
                    } else {
                        gen.content_type()
                    };
                    if let Some(ct) = ct {
                        req = req.header("content-type", ct);
                    }
                    req = req.body(payload.clone());
                }
                Body::Json => {
                    payload = gen.json_body();
                    req = http.request(endpoint.method.clone(), &url);
                    let ct = if gen.rng.gen_bool(0.8) {
                        Some("application/json")
                    } else {
                        gen.content_type()
                    };
                    if let Some(ct) = ct {
                        req = req.header("content-type", ct);
                    }
                    req = req.body(payload.clone());
                }
                Body::None => {
                    req = http.request(endpoint.method.clone(), &url);
                }
            }
            if path.starts_with("/register/") && gen.rng.gen_bool(0.5) {
                req = req.bearer_auth(&reg_token);
            } else if let Some(auth) = gen.authorization() {
                req = req.header("authorization", auth);
            }
            let what = format!(
                "seed {seed} {:?}, {} {} case {case}: {}",
                db,
                endpoint.method,
                show(url.as_bytes()),
                show(&payload)
            );
            let res = match req.send().await {
                Ok(res) => res,
                // A server may answer before reading a large body it
                // refuses (wrong content type) and close the connection;
                // the client then fails to write the rest. Not a crash:
                // the server must still be answering.
                Err(e) if payload.len() > 8 * 1024 && e.is_request() => {
                    let health = plain.get(server.url("/healthz")).send().await;
                    assert!(
                        health.is_ok_and(|r| r.status().is_success()),
                        "{what}: {e}, and the server no longer answers"
                    );
                    continue;
                }
                Err(e) => panic!("{what}: {e}"),
            };
            let status = res.status().as_u16();
            let ct = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let to = location(&res);
            let body = res.bytes().await.unwrap_or_default();
            assert!(status < 500, "{what}\n-> {status}: {}", show(&body));
            if (300..400).contains(&status) {
                let allowed = to.starts_with(&server.base)
                    || to.starts_with("http://127.0.0.1/callback")
                    || to.starts_with("http://127.0.0.1:")
                        && to.contains("/callback?")
                        && !to.starts_with(&server.base)
                    || to.starts_with(WEB_REDIRECT)
                    || to.starts_with(SAML_SSO);
                assert!(allowed, "{what}\n-> redirected to {to}");
            }
            if status >= 400 {
                match endpoint.format {
                    Format::Json => {
                        let json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                            panic!("{what}\n-> {status} not JSON: {}", show(&body))
                        });
                        assert!(json["error"].is_string(), "{what}\n-> {status} {json}");
                    }
                    Format::Page => {
                        assert!(
                            ct.starts_with("text/html") && body.starts_with(b"<!doctype html>"),
                            "{what}\n-> {status} not a page ({ct}): {}",
                            show(&body)
                        );
                    }
                }
            }
        }
    }
    let log = server.log();
    for bad in ["storage failure", "panicked", "refused by the database"] {
        assert!(
            !log.contains(bad),
            "seed {seed}: the log shows '{bad}': {log}"
        );
    }
    let health = reqwest::get(server.url("/healthz")).await.expect("healthz");
    assert!(health.status().is_success());
}

on_both_databases!(every_parser_answers_in_its_format_and_never_5xx);
