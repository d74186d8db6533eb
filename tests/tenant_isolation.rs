//! Tenant isolation: a token, code, client, session or device code of one
//! tenant is never accepted by another. Both tenants are configured alike
//! (same client ids, redirect URIs, resource, user), so the tenant is the
//! only difference; every refusal is paired with the same request succeeding
//! at the tenant that issued the object, so a test fails if isolation breaks
//! and cannot pass because the request was wrong anyway. Each check runs in
//! both directions (a path tenant and the default tenant at the root).

mod common;

use std::sync::Arc;

use common::*;
use reqwest::cookie::{CookieStore, Jar};
use serde_json::{json, Value};

const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const TV: &str = "tv-app";
const AGENT: &str = "agent";

/// One tenant as the tests reach it.
#[derive(Clone, Copy, Debug)]
struct T {
    id: &'static str,
    /// Path prefix of its endpoints.
    prefix: &'static str,
    service_secret: &'static str,
    agent_secret: &'static str,
}

const DEFAULT: T = T {
    id: "default",
    prefix: "",
    service_secret: SERVICE_SECRET,
    agent_secret: "agent-secret-default-0123",
};

const ACME: T = T {
    id: "acme",
    prefix: "/t/acme",
    service_secret: "acme-service-secret-0123",
    agent_secret: "agent-secret-acme-012345",
};

/// (issuing tenant, other tenant) in both directions.
const PAIRS: [(T, T); 2] = [(ACME, DEFAULT), (DEFAULT, ACME)];

impl T {
    fn url(&self, server: &Server, path: &str) -> String {
        server.url(&format!("{}{path}", self.prefix))
    }
    fn service(&self) -> (&'static str, &'static str) {
        (SERVICE_CLIENT, self.service_secret)
    }
    fn agent(&self) -> (&'static str, &'static str) {
        (AGENT, self.agent_secret)
    }
}

/// Clients, rules and the device client one tenant needs besides the
/// public client and the dev user.
fn tenant_extras(t: T) -> String {
    format!(
        r#"
[[tenants.clients]]
client_id = "{AGENT}"
secret = "{agent}"
grant_types = ["client_credentials", "{TE}"]

[[tenants.token_exchange]]
clients = ["{AGENT}"]
resources = ["{MCP}"]

[[tenants.clients]]
client_id = "{TV}"
token_endpoint_auth_method = "none"
grant_types = ["{DEVICE}"]
"#,
        agent = t.agent_secret
    )
}

fn config() -> String {
    let acme_service = format!(
        r#"
[[tenants.clients]]
client_id = "{SERVICE_CLIENT}"
secret = "{}"
grant_types = ["client_credentials"]
introspect_any = true
"#,
        ACME.service_secret
    );
    let acme = tenant_config(
        ACME.id,
        "",
        &format!("{acme_service}{}", tenant_extras(ACME)),
    );
    base_config(&format!("{}{acme}", tenant_extras(DEFAULT)))
}

async fn post(
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
    bearer: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("post");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn token_at(
    server: &Server,
    t: T,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    post(&t.url(server, "/token"), form, basic, None).await
}

async fn introspect_at(server: &Server, t: T, token: &str) -> Value {
    post(
        &t.url(server, "/introspect"),
        &[("token", token)],
        Some(t.service()),
        None,
    )
    .await
    .1
}

fn error_of(json: &Value) -> &str {
    json["error"].as_str().unwrap_or_default()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// A browser whose cookies the test can read.
fn browser_with_jar() -> (Browser, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let http = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    (Browser { http }, jar)
}

/// Signs the user in at `t` in `browser` and returns an authorization code
/// for the public client with its PKCE verifier.
async fn code_at(server: &Server, t: T, browser: &Browser, scope: &str) -> (String, Pkce) {
    let p = pkce();
    let url = authorize_url(
        server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("scope", scope)],
    )
    .replace(&server.url("/authorize"), &t.url(server, "/authorize"));
    let code = browser
        .authorize(server, &url, USER, PASSWORD, true)
        .await
        .code();
    (code, p)
}

fn redeem_form<'a>(code: &'a str, p: &'a Pkce) -> [(&'static str, &'a str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", PUBLIC_CLIENT),
        ("code_verifier", &p.verifier),
    ]
}

/// A full login at `t`: the token response.
async fn tokens_at(server: &Server, t: T, scope: &str) -> Value {
    let (code, p) = code_at(server, t, &Browser::new(), scope).await;
    let (status, json) = token_at(server, t, &redeem_form(&code, &p), None).await;
    assert_eq!(status, 200, "{} token response: {json}", t.id);
    assert_eq!(
        jwt_claims(s(&json, "access_token"))["iss"],
        t.url(server, "")
    );
    json
}

/// (a) An access token: not active at the other tenant's introspection,
/// not revoked by its revocation endpoint, refused by its userinfo, and
/// refused as a token-exchange subject there.
async fn access_token_is_only_accepted_by_its_tenant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for (a, b) in PAIRS {
        let tokens = tokens_at(&server, a, "openid mcp:read").await;
        let at = s(&tokens, "access_token");

        assert_eq!(introspect_at(&server, a, at).await["active"], true);
        assert_eq!(
            introspect_at(&server, b, at).await,
            json!({"active": false})
        );

        let userinfo = |t: T| {
            let url = t.url(&server, "/userinfo");
            async move {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(at)
                    .send()
                    .await
                    .expect("userinfo")
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(userinfo(a).await, 200, "{} userinfo", a.id);
        assert_eq!(
            userinfo(b).await,
            401,
            "{} userinfo took {}'s token",
            b.id,
            a.id
        );

        let exchange = |t: T| {
            let url = t.url(&server, "/token");
            async move {
                post(
                    &url,
                    &[
                        ("grant_type", TE),
                        ("subject_token", at),
                        ("subject_token_type", AT_TYPE),
                        ("resource", MCP),
                    ],
                    Some(t.agent()),
                    None,
                )
                .await
            }
        };
        let (status, json) = exchange(b).await;
        assert_eq!(status, 400, "{} exchanged {}'s token: {json}", b.id, a.id);
        assert_eq!(error_of(&json), "invalid_request", "{json}");
        let (status, json) = exchange(a).await;
        assert_eq!(status, 200, "{} exchange: {json}", a.id);

        // Revocation at the other tenant (by a client with the same id
        // there) answers as RFC 7009 says, and revokes nothing.
        let form = [("token", at), ("client_id", PUBLIC_CLIENT)];
        let (status, _) = post(&b.url(&server, "/revoke"), &form, None, None).await;
        assert_eq!(status, 200);
        assert_eq!(introspect_at(&server, a, at).await["active"], true);
        // The control: revoking at the issuing tenant does revoke.
        let (status, _) = post(&a.url(&server, "/revoke"), &form, None, None).await;
        assert_eq!(status, 200);
        assert_eq!(introspect_at(&server, a, at).await["active"], false);
    }
}

/// (b) An authorization code redeemed at the other tenant's token endpoint,
/// with the same client id, redirect URI and the right verifier, is
/// `invalid_grant`; the other tenant never issued it, so the attempt does
/// not spend it and it still works where it was issued.
async fn authorization_code_is_only_redeemed_by_its_tenant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for (a, b) in PAIRS {
        let (code, p) = code_at(&server, a, &Browser::new(), "mcp:read").await;
        let (status, json) = token_at(&server, b, &redeem_form(&code, &p), None).await;
        assert_eq!(status, 400, "{} redeemed {}'s code: {json}", b.id, a.id);
        assert_eq!(error_of(&json), "invalid_grant", "{json}");
        let (status, json) = token_at(&server, a, &redeem_form(&code, &p), None).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(
            jwt_claims(s(&json, "access_token"))["iss"],
            a.url(&server, "")
        );
    }
}

/// (c) A refresh token presented to the other tenant is `invalid_grant`,
/// and neither that nor revoking it there rotates or revokes its family.
async fn refresh_token_is_only_accepted_by_its_tenant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for (a, b) in PAIRS {
        let tokens = tokens_at(&server, a, "mcp:read").await;
        let rt = s(&tokens, "refresh_token");
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", PUBLIC_CLIENT),
        ];
        let (status, json) = token_at(&server, b, &form, None).await;
        assert_eq!(status, 400, "{} refreshed {}'s token: {json}", b.id, a.id);
        assert_eq!(error_of(&json), "invalid_grant", "{json}");
        let revoke = [("token", rt), ("client_id", PUBLIC_CLIENT)];
        let (status, _) = post(&b.url(&server, "/revoke"), &revoke, None, None).await;
        assert_eq!(status, 200);
        // Still the live token of its family at the issuing tenant.
        let (status, json) = token_at(&server, a, &form, None).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(
            introspect_at(&server, a, s(&tokens, "access_token")).await["active"],
            true
        );
    }
}

/// (d) A client's credentials only authenticate at its own tenant (even
/// where the other tenant has a client with the same id), and a client
/// registered dynamically at one tenant cannot be read, changed or deleted
/// through the other tenant's registration endpoint with its registration
/// access token.
async fn client_is_only_known_to_its_tenant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let cc = [("grant_type", "client_credentials"), ("resource", MCP)];
    for (a, b) in PAIRS {
        let (status, json) = token_at(&server, a, &cc, Some(a.service())).await;
        assert_eq!(status, 200, "{json}");
        let (status, json) = token_at(&server, b, &cc, Some(a.service())).await;
        assert_eq!(
            status, 401,
            "{} took {}'s client secret: {json}",
            b.id, a.id
        );
        assert_eq!(error_of(&json), "invalid_client", "{json}");
        let (status, _) = post(
            &b.url(&server, "/introspect"),
            &[("token", "x")],
            Some(a.service()),
            None,
        )
        .await;
        assert_eq!(status, 401);

        let http = reqwest::Client::new();
        let reg: Value = http
            .post(a.url(&server, "/register"))
            .json(&json!({
                "client_name": "Isolated",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
            }))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("json");
        let client_id = s(&reg, "client_id");
        let rat = s(&reg, "registration_access_token");
        assert_eq!(
            s(&reg, "registration_client_uri"),
            a.url(&server, &format!("/register/{client_id}"))
        );
        let elsewhere = b.url(&server, &format!("/register/{client_id}"));
        let mut body = reg.clone();
        body["client_name"] = json!("Hijacked");
        for req in [
            http.get(&elsewhere),
            http.put(&elsewhere).json(&body),
            http.delete(&elsewhere),
        ] {
            let res = req.bearer_auth(rat).send().await.expect("registration");
            assert_eq!(
                res.status().as_u16(),
                401,
                "{} served {}'s client",
                b.id,
                a.id
            );
        }
        let res = http
            .get(s(&reg, "registration_client_uri"))
            .bearer_auth(rat)
            .send()
            .await
            .expect("read");
        assert_eq!(res.status().as_u16(), 200);
        let now: Value = res.json().await.expect("json");
        assert_eq!(now["client_name"], "Isolated");
    }
}

/// Requests `url` and follows redirects within the server without filling
/// anything in: the client redirect or the first page.
async fn first_stop(server: &Server, browser: &Browser, url: &str) -> Outcome {
    let mut next = url.to_string();
    for _ in 0..4 {
        let res = browser.http.get(&next).send().await.expect("get");
        let status = res.status().as_u16();
        if (300..400).contains(&status) {
            next = location(&res);
            if !next.starts_with(&server.base) {
                return Outcome::Redirect(next);
            }
            continue;
        }
        return Outcome::Page(status, res.text().await.expect("body"));
    }
    panic!("too many redirects from {url}");
}

fn authorize_at(server: &Server, t: T) -> String {
    let p = pkce();
    authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, &[])
        .replace(&server.url("/authorize"), &t.url(server, "/authorize"))
}

fn is_login_page(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Page(200, body) if body.contains("name=\"password\""))
}

/// (e) A browser signed in at one tenant is not signed in at the other:
/// neither with its cookies as they are, nor when the session cookie's value
/// is presented to the other tenant under that tenant's cookie name.
async fn sso_session_is_only_honoured_by_its_tenant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for (a, b) in PAIRS {
        let (browser, jar) = browser_with_jar();
        code_at(&server, a, &browser, "mcp:read").await;
        // The control: the session signs the browser in again at `a`.
        let again = first_stop(&server, &browser, &authorize_at(&server, a)).await;
        assert!(
            matches!(&again, Outcome::Redirect(u) if query_param(u, "code").is_some()),
            "no SSO at {}: {again:?}",
            a.id
        );
        // At `b` the same browser gets b's login page.
        let there = first_stop(&server, &browser, &authorize_at(&server, b)).await;
        assert!(
            is_login_page(&there),
            "{} honoured {}'s session: {there:?}",
            b.id,
            a.id
        );

        // The session cookie's value, presented explicitly under b's name.
        let base: url::Url = server.base.parse().expect("url");
        let cookies = jar.cookies(&base).expect("cookies");
        let cookies = cookies.to_str().expect("ascii");
        let name = format!("gh_session_{}=", a.id);
        let value = cookies
            .split("; ")
            .find_map(|c| c.strip_prefix(&name))
            .unwrap_or_else(|| panic!("no {name} in {cookies}"));
        let with_cookie = |t: T| {
            let (fresh, jar) = browser_with_jar();
            jar.add_cookie_str(&format!("gh_session_{}={value}; Path=/", t.id), &base);
            fresh
        };
        let there = first_stop(&server, &with_cookie(b), &authorize_at(&server, b)).await;
        assert!(
            is_login_page(&there),
            "{} honoured {}'s session: {there:?}",
            b.id,
            a.id
        );
        // The control: the same value under a's name in a fresh browser
        // is a session at `a`.
        let here = first_stop(&server, &with_cookie(a), &authorize_at(&server, a)).await;
        assert!(
            matches!(&here, Outcome::Redirect(u) if query_param(u, "code").is_some()),
            "{here:?}"
        );
    }
}

async fn poll_at(server: &Server, t: T, device_code: &str) -> (u16, Value) {
    let form = [
        ("grant_type", DEVICE),
        ("device_code", device_code),
        ("client_id", TV),
    ];
    token_at(server, t, &form, None).await
}

/// (f) A device code polled at the other tenant is an error and does not
/// touch the device authorization (no poll counted there); its user code is
/// unknown on the other tenant's verification page.
async fn device_code_is_only_accepted_by_its_tenant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    for (a, b) in PAIRS {
        let (status, start) = post(
            &a.url(&server, "/device_authorization"),
            &[("client_id", TV), ("resource", MCP), ("scope", "mcp:read")],
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{start}");
        let device_code = s(&start, "device_code");
        let (_, json) = poll_at(&server, a, device_code).await;
        assert_eq!(error_of(&json), "authorization_pending", "{json}");
        let (status, json) = poll_at(&server, b, device_code).await;
        assert_eq!(status, 400, "{json}");
        assert_eq!(
            error_of(&json),
            "invalid_grant",
            "{} polled {}'s device code: {json}",
            b.id,
            a.id
        );
        // A poll counted against the code would make this one `slow_down`.
        server.advance_clock(6);
        let (_, json) = poll_at(&server, a, device_code).await;
        assert_eq!(error_of(&json), "authorization_pending", "{json}");

        // The user code is not recognised at the other tenant.
        let browser = Browser::new();
        let page = browser
            .http
            .get(b.url(&server, "/device"))
            .send()
            .await
            .expect("device page")
            .text()
            .await
            .expect("body");
        let csrf = hidden_field(&page, "csrf").expect("csrf");
        let res = browser
            .http
            .post(b.url(&server, "/device"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("user_code", s(&start, "user_code")),
            ])
            .send()
            .await
            .expect("enter code");
        let status = res.status().as_u16();
        let body = res.text().await.expect("body");
        assert!(
            (400..500).contains(&status) && body.contains("device-error"),
            "{} accepted {}'s user code: {status} {body}",
            b.id,
            a.id
        );
    }
}

on_both_databases!(
    access_token_is_only_accepted_by_its_tenant,
    authorization_code_is_only_redeemed_by_its_tenant,
    refresh_token_is_only_accepted_by_its_tenant,
    client_is_only_known_to_its_tenant,
    sso_session_is_only_honoured_by_its_tenant,
    device_code_is_only_accepted_by_its_tenant,
);
