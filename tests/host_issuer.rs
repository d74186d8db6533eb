//! Host-based tenant issuers: a tenant with a `domain` is served at the root
//! paths of that host, with the public URL's scheme and port, and only there.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::Value;

const ACME_HOST: &str = "acme.localhost";
const OTHER_HOST: &str = "other.localhost";
const ACME_SVC: &str = "acme-svc";
const ACME_SVC_SECRET: &str = "acme-svc-secret-0123456789";

fn config() -> String {
    let extra = format!(
        r#"
[[tenants.clients]]
client_id = "{ACME_SVC}"
secret = "{ACME_SVC_SECRET}"
grant_types = ["client_credentials"]
# The tenant's MCP server: it introspects tokens for its resource.
resources = ["{MCP}"]
"#
    );
    base_config(&tenant_config(
        "acme",
        &format!("domain = \"{ACME_HOST}\""),
        &extra,
    ))
}

/// The tenant's issuer: the public URL (`http://127.0.0.1:PORT`) with the
/// host replaced by the tenant's domain.
fn host_issuer(server: &Server) -> String {
    format!("http://{ACME_HOST}:{}", server.port)
}

/// An HTTP client that resolves the test host names to the server's
/// loopback address, so requests carry them in `Host`.
fn http_for(server: &Server, cookies: bool) -> reqwest::Client {
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    reqwest::Client::builder()
        .resolve(ACME_HOST, addr)
        .resolve(OTHER_HOST, addr)
        .cookie_store(cookies)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn get_json(http: &reqwest::Client, url: &str, host: Option<&str>) -> (u16, Value) {
    let mut req = http.get(url);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let res = req.send().await.expect("get");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

async fn discovery_at_the_tenant_host_advertises_the_host_issuer(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let http = http_for(&server, false);
    let issuer = host_issuer(&server);
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let (status, m) = get_json(&http, &format!("{issuer}{path}"), None).await;
        assert_eq!(status, 200, "{path}: {m}");
        assert_eq!(m["issuer"], issuer.as_str(), "{path}: {m}");
        for (key, value) in m.as_object().expect("object") {
            if key.ends_with("_endpoint") || key == "jwks_uri" {
                let url = value.as_str().unwrap_or_default();
                assert!(
                    url.starts_with(&format!("{issuer}/")),
                    "{path}: {key} = {url}"
                );
            }
        }
        let (status, jwks) = get_json(&http, s(&m, "jwks_uri"), None).await;
        assert_eq!(status, 200);
        assert!(
            jwks["keys"].as_array().is_some_and(|k| !k.is_empty()),
            "{jwks}"
        );
    }
    // The JWKS is the tenant's own, not the default tenant's.
    let (_, acme_keys) = get_json(&http, &format!("{issuer}/jwks.json"), None).await;
    let (_, default_keys) = get_json(&http, &server.url("/jwks.json"), None).await;
    assert_ne!(acme_keys["keys"][0]["kid"], default_keys["keys"][0]["kid"]);
    // Protected resource metadata names the host issuer.
    let url = format!("{issuer}/resource-metadata?resource={MCP}");
    let (status, prm) = get_json(&http, &url, None).await;
    assert_eq!(status, 200, "{prm}");
    assert_eq!(prm["authorization_servers"], serde_json::json!([issuer]));
    // Host matching ignores case (RFC 9110 §4.2.3).
    let (_, m) = get_json(
        &http,
        &server.url("/.well-known/oauth-authorization-server"),
        Some("ACME.Localhost"),
    )
    .await;
    assert_eq!(m["issuer"], issuer.as_str(), "{m}");
}

async fn a_host_tenant_has_no_path_issuer(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let http = http_for(&server, false);
    let issuer = host_issuer(&server);
    for url in [
        server.url("/t/acme/.well-known/oauth-authorization-server"),
        server.url("/.well-known/oauth-authorization-server/t/acme"),
        server.url("/t/acme/jwks.json"),
        format!("{issuer}/t/acme/.well-known/oauth-authorization-server"),
        // Nor does the tenant host serve path tenants.
        format!("{issuer}/t/default/jwks.json"),
    ] {
        let (status, body) = get_json(&http, &url, None).await;
        assert_eq!(status, 404, "{url}: {body}");
    }
    let res = http
        .post(server.url("/t/acme/token"))
        .basic_auth(ACME_SVC, Some(ACME_SVC_SECRET))
        .form(&[("grant_type", "client_credentials"), ("resource", MCP)])
        .send()
        .await
        .expect("token");
    assert_eq!(res.status().as_u16(), 404);
}

async fn code_flow_at_the_host_issuer_issues_its_tokens(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let issuer = host_issuer(&server);
    let browser = Browser {
        http: http_for(&server, true),
    };
    let p = pkce();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        REDIRECT,
        &p.challenge,
        &[("scope", "openid mcp:read")],
    )
    .replace(&server.base, &issuer);
    let res = browser.http.get(&url).send().await.expect("authorize");
    let back = browser
        .follow_at(&issuer, res, USER, PASSWORD, true)
        .await
        .redirect();
    assert_eq!(query_param(&back, "iss").as_deref(), Some(issuer.as_str()));
    let code = query_param(&back, "code").expect("code");
    let res = browser
        .http
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", PUBLIC_CLIENT),
            ("code_verifier", &p.verifier),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(res.status().as_u16(), 200);
    let tokens: Value = res.json().await.expect("json");
    let access = s(&tokens, "access_token");
    assert_eq!(jwt_claims(access)["iss"], issuer.as_str());
    assert_eq!(jwt_claims(s(&tokens, "id_token"))["iss"], issuer.as_str());

    let introspect_at = |url: String, client: (&'static str, &'static str)| {
        let http = browser.http.clone();
        let token = access.to_string();
        async move {
            http.post(url)
                .basic_auth(client.0, Some(client.1))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .expect("introspect")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let at_acme = introspect_at(format!("{issuer}/introspect"), (ACME_SVC, ACME_SVC_SECRET)).await;
    assert_eq!(at_acme["active"], true, "{at_acme}");
    assert_eq!(at_acme["iss"], issuer.as_str());
    // The default tenant (same listener, its own host) does not know it.
    let at_default =
        introspect_at(server.url("/introspect"), (SERVICE_CLIENT, SERVICE_SECRET)).await;
    assert_eq!(at_default, serde_json::json!({"active": false}));
}

async fn an_unconfigured_host_gets_the_default_tenant(db: Db) {
    let server = Server::start_with(db, &config()).await;
    let http = http_for(&server, false);
    let discovery = "/.well-known/oauth-authorization-server";
    let url = format!("http://{OTHER_HOST}:{}{discovery}", server.port);
    let (status, m) = get_json(&http, &url, None).await;
    assert_eq!(status, 200);
    assert_eq!(m["issuer"], server.base.as_str(), "{m}");
    // Exact matching: no suffix, prefix or trailing-dot variants.
    for host in [
        "xacme.localhost",
        "acme.localhost.",
        "www.acme.localhost",
        "acme",
    ] {
        let (_, m) = get_json(&http, &server.url(discovery), Some(host)).await;
        assert_eq!(m["issuer"], server.base.as_str(), "Host {host}: {m}");
    }
    // X-Forwarded-Host never picks a tenant.
    let res = http
        .get(server.url(discovery))
        .header("x-forwarded-host", ACME_HOST)
        .send()
        .await
        .expect("get");
    let m: Value = res.json().await.expect("json");
    assert_eq!(m["issuer"], server.base.as_str(), "{m}");
    // The port is not part of the match (documented): a proxy may forward
    // the host with or without one.
    let (_, m) = get_json(
        &http,
        &server.url(discovery),
        Some(&format!("{ACME_HOST}:1")),
    )
    .await;
    assert_eq!(m["issuer"], host_issuer(&server).as_str(), "{m}");
}

on_both_databases!(
    discovery_at_the_tenant_host_advertises_the_host_issuer,
    a_host_tenant_has_no_path_issuer,
    code_flow_at_the_host_issuer_issues_its_tokens,
    an_unconfigured_host_gets_the_default_tenant,
);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_validates_and_sets_tenant_domains() {
    let server = Server::start_with(Db::Sqlite, &config()).await;
    let out = server.cli(&["tenants", "add", "beta", "--domain", ACME_HOST]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already belongs to tenant 'acme'"),
        "{}",
        stderr(&out)
    );
    for bad in [
        "Beta.Localhost",
        "beta.localhost:8080",
        "http://beta.localhost",
        "beta",
        "10.0.0.1",
    ] {
        let out = server.cli(&["tenants", "add", "beta", "--domain", bad]);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(
            stderr(&out).contains("host name"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    let out = server.cli(&["tenants", "set-domain", "default", "beta.localhost"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("default tenant"), "{}", stderr(&out));

    let out = server.cli(&["tenants", "add", "beta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["tenants", "set-domain", "beta", ACME_HOST]);
    assert!(!out.status.success());
    let out = server.cli(&["tenants", "set-domain", "beta", "beta.localhost"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = String::from_utf8_lossy(&server.cli(&["tenants", "list"]).stdout).into_owned();
    assert!(
        list.lines()
            .any(|l| l.starts_with("beta") && l.contains("beta.localhost")),
        "{list}"
    );
    let out = server.cli(&["tenants", "set-domain", "beta", "--clear"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = String::from_utf8_lossy(&server.cli(&["tenants", "list"]).stdout).into_owned();
    assert!(!list.contains("beta.localhost"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_set_by_the_cli_is_served_after_restart() {
    let mut server = Server::start_with(Db::Sqlite, &config()).await;
    let out = server.cli(&["tenants", "add", "beta", "--domain", "beta.localhost"]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.restart().await;
    let http = http_for(&server, false);
    let (_, m) = get_json(
        &http,
        &server.url("/.well-known/oauth-authorization-server"),
        Some("beta.localhost"),
    )
    .await;
    assert_eq!(
        m["issuer"],
        format!("http://beta.localhost:{}", server.port),
        "{m}"
    );
}
