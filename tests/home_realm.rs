//! Home-realm discovery: with several connectors, the sign-in page asks for
//! the user's email address and its domain picks the connector; the list of
//! sign-in methods stays on the page as the fallback.

mod common;
use common::upstream::*;
use common::*;

const ALICE: &str = "alice@a.example";
const BOB: &str = "bob@b.example";

fn dev(id: &str, name: &str, domain: &str, email: &str) -> String {
    format!(
        r#"
[[tenants.connectors]]
id = "{id}"
type = "dev"
display_name = "{name}"
domains = ["{domain}"]
users = [ {{ email = "{email}", password_hash = "{PASSWORD_HASH}" }} ]
"#
    )
}

fn two_dev_connectors() -> String {
    format!(
        "{}{}",
        dev("dev-a", "Alpha login", "a.example", ALICE),
        dev("dev-b", "Beta login", "b.example", BOB)
    )
}

/// The sign-in page an authorization with `extra` parameters comes to.
async fn sign_in_page(
    server: &Server,
    browser: &Browser,
    extra: &[(&str, &str)],
) -> (Pkce, u16, String) {
    let p = pkce();
    let url = authorize_url(server, PUBLIC_CLIENT, REDIRECT, &p.challenge, extra);
    let mut res = browser.http.get(&url).send().await.expect("authorize");
    while res.status().is_redirection() {
        let to = location(&res);
        res = browser.http.get(&to).send().await.expect("follow");
    }
    let status = res.status().as_u16();
    (p, status, res.text().await.expect("body"))
}

/// Answers the email question on `page`.
async fn answer(server: &Server, browser: &Browser, page: &str, email: &str) -> reqwest::Response {
    let action = form_action(page).expect("form");
    assert_eq!(action, server.url("/login/email"));
    browser
        .http
        .post(action)
        .form(&[
            ("pending", hidden_field(page, "pending").expect("pending")),
            ("csrf", hidden_field(page, "csrf").expect("csrf")),
            ("email", email.to_string()),
        ])
        .send()
        .await
        .expect("email")
}

fn asks_for_email(page: &str) -> bool {
    page.contains("name=\"email\"") && page.contains("id=\"continue\"")
}

async fn email_domain_picks_the_connector(db: Db) {
    let server = Server::start_with(db, &config(&two_dev_connectors())).await;
    for (email, connector) in [(ALICE, "dev-a"), ("bob@B.Example", "dev-b")] {
        let browser = Browser::new();
        let (p, status, page) = sign_in_page(&server, &browser, &[]).await;
        assert_eq!(status, 200);
        assert!(asks_for_email(&page), "{page}");
        assert!(!page.contains("name=\"password\""), "{page}");
        let res = answer(&server, &browser, &page, email).await;
        assert_eq!(res.status().as_u16(), 200);
        let login = res.text().await.expect("body");
        assert_eq!(
            hidden_field(&login, "connector").as_deref(),
            Some(connector),
            "{login}"
        );
        assert!(
            login.contains(&format!("value=\"{email}\"")),
            "email not passed on: {login}"
        );
        // Signing in there completes the authorization.
        let user = if connector == "dev-a" { ALICE } else { BOB };
        let form = [
            ("pending", hidden_field(&login, "pending").expect("pending")),
            ("csrf", hidden_field(&login, "csrf").expect("csrf")),
            ("connector", connector.to_string()),
            ("username", user.to_string()),
            ("password", PASSWORD.to_string()),
        ];
        let res = browser
            .http
            .post(server.url("/login"))
            .form(&form)
            .send()
            .await
            .expect("login");
        let code = browser
            .follow(&server, res, user, PASSWORD, true)
            .await
            .code();
        redeem(&server, &code, &p).await;
    }
}

async fn unknown_domain_shows_a_message_and_the_methods(db: Db) {
    let server = Server::start_with(db, &config(&two_dev_connectors())).await;
    let browser = Browser::new();
    let (p, _, page) = sign_in_page(&server, &browser, &[]).await;
    let res = answer(&server, &browser, &page, "carol@c.example").await;
    assert_eq!(res.status().as_u16(), 400);
    let again = res.text().await.expect("body");
    assert!(again.contains("id=\"email-error\""), "{again}");
    assert!(again.contains("no sign-in method for c.example"), "{again}");
    assert!(again.contains("value=\"carol@c.example\""), "{again}");
    assert!(asks_for_email(&again), "{again}");
    // Not an address at all.
    let res = answer(&server, &browser, &again, "carol").await;
    assert_eq!(res.status().as_u16(), 400);
    let again = res.text().await.expect("body");
    assert!(again.contains("Enter your email address"), "{again}");
    // The methods are listed, and one chosen there signs the user in.
    let beta = link_to(&again, "Beta login").expect("Beta login link");
    assert!(link_to(&again, "Alpha login").is_some(), "{again}");
    let res = browser.http.get(&beta).send().await.expect("choose");
    let code = browser
        .follow(&server, res, BOB, PASSWORD, true)
        .await
        .code();
    redeem(&server, &code, &p).await;
}

async fn login_hint_of_a_known_domain_skips_the_question(db: Db) {
    let server = Server::start_with(db, &config(&two_dev_connectors())).await;
    let (_, status, page) = sign_in_page(&server, &Browser::new(), &[("login_hint", BOB)]).await;
    assert_eq!(status, 200);
    assert!(!asks_for_email(&page), "{page}");
    assert_eq!(hidden_field(&page, "connector").as_deref(), Some("dev-b"));
    assert!(page.contains(&format!("value=\"{BOB}\"")), "{page}");
    // A hint in no connector's domain: the question, filled in, no error.
    let (_, status, page) = sign_in_page(
        &server,
        &Browser::new(),
        &[("login_hint", "carol@c.example")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(asks_for_email(&page), "{page}");
    assert!(page.contains("value=\"carol@c.example\""), "{page}");
    assert!(!page.contains("email-error"), "{page}");
}

async fn email_answer_needs_the_csrf_token_and_the_browser(db: Db) {
    let server = Server::start_with(db, &config(&two_dev_connectors())).await;
    let browser = Browser::new();
    let (_, _, page) = sign_in_page(&server, &browser, &[]).await;
    let pending = hidden_field(&page, "pending").expect("pending");
    let post = |form: Vec<(&'static str, String)>, http: reqwest::Client| {
        let url = server.url("/login/email");
        async move {
            let res = http.post(url).form(&form).send().await.expect("post");
            let status = res.status().as_u16();
            (status, res.text().await.expect("body"))
        }
    };
    let email = ("email", ALICE.to_string());
    // No CSRF token.
    let (status, body) = post(
        vec![("pending", pending.clone()), email.clone()],
        browser.http.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("name=\"password\""), "{body}");
    // A wrong one.
    let (status, body) = post(
        vec![
            ("pending", pending.clone()),
            ("csrf", "forged".into()),
            email.clone(),
        ],
        browser.http.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("not submitted from this sign-in page"),
        "{body}"
    );
    // The right token from another browser (a cross-site form post).
    let csrf = hidden_field(&page, "csrf").expect("csrf");
    let (status, body) = post(
        vec![
            ("pending", pending.clone()),
            ("csrf", csrf.clone()),
            email.clone(),
        ],
        Browser::new().http,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("another browser"), "{body}");
    // The control: the genuine form works.
    let (status, body) = post(
        vec![("pending", pending), ("csrf", csrf), email],
        browser.http.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hidden_field(&body, "connector").as_deref(), Some("dev-a"));
}

async fn connectors_without_domains_get_the_plain_chooser(db: Db) {
    let connectors = two_dev_connectors()
        .replace("domains = [\"a.example\"]", "")
        .replace("domains = [\"b.example\"]", "");
    let server = Server::start_with(db, &config(&connectors)).await;
    let (_, status, page) = sign_in_page(&server, &Browser::new(), &[]).await;
    assert_eq!(status, 200);
    assert!(!asks_for_email(&page), "{page}");
    assert!(link_to(&page, "Alpha login").is_some(), "{page}");
    assert!(link_to(&page, "Beta login").is_some(), "{page}");
}

/// An email in an OIDC connector's domain sends the browser to that
/// provider, and the sign-in completes there.
async fn email_domain_picks_an_upstream_provider(db: Db) {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let connectors = format!(
        r#"{}
[[tenants.connectors]]
id = "corp"
type = "oidc"
display_name = "Corp SSO"
issuer = "{issuer}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
scopes = ["openid", "email", "profile"]
domains = ["corp.example"]
"#,
        dev("dev-a", "Alpha login", "a.example", ALICE)
    );
    let server = Server::start_with(db, &config(&connectors)).await;
    let upstream = Upstream::start(port, &server.url("/callback/corp"), &[]);
    let browser = Browser::new();
    let (p, _, page) = sign_in_page(&server, &browser, &[]).await;
    let res = answer(&server, &browser, &page, "alice@corp.example").await;
    assert_eq!(res.status().as_u16(), 303, "{}", upstream.log());
    let start = location(&res);
    assert!(start.starts_with(&issuer), "{start}");
    let callback = at_upstream(
        &browser,
        &server,
        &start,
        "alice",
        AtUpstream::SignInAndConsent,
    )
    .await;
    let code = back_at_gatehouse(&server, &browser, &callback).await.code();
    redeem(&server, &code, &p).await;
}

on_both_databases!(
    email_domain_picks_the_connector,
    unknown_domain_shows_a_message_and_the_methods,
    login_hint_of_a_known_domain_skips_the_question,
    email_answer_needs_the_csrf_token_and_the_browser,
    connectors_without_domains_get_the_plain_chooser,
    email_domain_picks_an_upstream_provider,
);
