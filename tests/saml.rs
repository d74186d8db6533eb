//! The SAML 2.0 connector end to end. The happy path and replay run against
//! a real identity provider, SimpleSAMLphp (tests/saml-idp): Gatehouse sends
//! the browser there with an AuthnRequest, the test signs in on its login
//! page and posts the response its page would auto-submit to Gatehouse's
//! ACS (the connector's callback URL), then finishes the authorization code
//! flow with PKCE. The precise negative cases use responses the test signs
//! itself with a key the connector trusts (gatehouse_connectors'
//! `saml_test_idp`), each changing one thing of a valid response.
//! Every test runs on SQLite and PostgreSQL.

mod common;
use common::saml_idp::*;
use common::upstream::{config, error_page, login_failures, redeem, to_upstream, userinfo};
use common::*;

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gatehouse_connectors::saml_test_idp::{ResponseSpec, TestIdp};

/// A Gatehouse whose SAML connector trusts `idp`'s key (no IdP process:
/// the test posts responses it signs itself).
async fn start_with_test_idp(db: Db, idp: &TestIdp) -> Server {
    start_with_test_idp_and(db, idp, "").await
}

/// As [`start_with_test_idp`], with `extra` lines in the connector table.
async fn start_with_test_idp_and(db: Db, idp: &TestIdp, extra: &str) -> Server {
    let table = saml_connector(&format!(
        "idp_entity_id = \"{}\"\nidp_sso_url = \"http://127.0.0.1:9/sso\"\nidp_certificate = '''\n{}'''\n{extra}",
        idp.entity_id,
        idp.certificate_pem()
    ));
    Server::start_with(db, &config(&table)).await
}

/// /authorize up to the IdP: the SSO URL, the AuthnRequest's ID and the
/// PKCE pair.
async fn to_idp(server: &Server, browser: &Browser) -> (String, String, Pkce) {
    let (sso, p) = to_upstream(
        server,
        browser,
        &[("scope", "openid email profile mcp:read")],
    )
    .await;
    let request = query_param(&sso, "SAMLRequest").expect("SAMLRequest");
    let deflated = STANDARD.decode(request).expect("base64");
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .expect("inflate");
    let id = between(&xml, " ID=\"", "\"").expect("request ID");
    (sso, id, p)
}

/// Posts a response to the ACS and follows Gatehouse through consent,
/// submitting the same-origin re-post page as a browser's script would.
async fn post_to_acs(
    server: &Server,
    browser: &Browser,
    action: &str,
    fields: &[(String, String)],
) -> Outcome {
    let res = browser
        .http
        .post(action)
        .form(fields)
        .send()
        .await
        .expect("ACS");
    match browser.follow(server, res, "", "", true).await {
        Outcome::Page(200, page) if page.contains("gh_resubmitted") => {
            let res = browser
                .http
                .post(action)
                .form(&repost_fields(&page))
                .send()
                .await
                .expect("ACS re-post");
            browser.follow(server, res, "", "", true).await
        }
        other => other,
    }
}

/// The fields of Gatehouse's re-post page.
fn repost_fields(page: &str) -> Vec<(String, String)> {
    ["SAMLResponse", "RelayState", "gh_resubmitted"]
        .iter()
        .filter_map(|n| {
            between(page, &format!("name=\"{n}\" value=\""), "\"")
                .map(|v| (n.to_string(), upstream_unescape(&v)))
        })
        .collect()
}

fn fields(xml: &str, sso: &str) -> Vec<(String, String)> {
    vec![
        ("SAMLResponse".into(), STANDARD.encode(xml)),
        (
            "RelayState".into(),
            query_param(sso, "RelayState").expect("RelayState"),
        ),
    ]
}

fn code_of(out: Outcome, server: &Server) -> String {
    match out {
        Outcome::Redirect(u) => query_param(&u, "code").unwrap_or_else(|| panic!("no code in {u}")),
        Outcome::Page(s, b) => panic!("page {s} instead of the client: {b}\n{}", server.log()),
    }
}

/// The failure page and audit event of a refused response.
async fn assert_refused(server: &Server, out: Outcome, status: u16, words: &str, reason: &str) {
    let (got, body) = error_page(out);
    assert_eq!(got, status, "{body}");
    assert!(
        body.contains(&format!("Sign-in with {CONNECTOR_NAME} failed")),
        "{body}"
    );
    assert!(body.contains(words), "page lacks '{words}': {body}");
    let failures = login_failures(server).await;
    assert!(
        failures.iter().any(|f| f["reason"] == reason
            && f["connector"] == CONNECTOR
            && f["detail"].as_str().is_some_and(|d| d.contains(words))),
        "no audit event with reason {reason} and '{words}': {failures:?}"
    );
}

// ---------------------------------------------------------------------------
// With SimpleSAMLphp.
// ---------------------------------------------------------------------------

async fn simplesamlphp_login_issues_tokens_with_the_mapped_user(db: Db) {
    let (server, idp) = start_with_simplesamlphp(db, "127.0.0.1").await;
    let browser = Browser::new();
    let (sso, _, p) = to_idp(&server, &browser).await;
    assert!(sso.starts_with(&idp.base), "sent to {sso}");
    let (action, posted) = idp.sign_in(&browser, &sso, "alice").await;
    assert_eq!(action, acs(&server), "the IdP posts to the ACS URL");
    let code = code_of(
        post_to_acs(&server, &browser, &action, &posted).await,
        &server,
    );
    let tokens = redeem(&server, &code, &p).await;
    let access = tokens["access_token"].as_str().expect("access token");
    let claims = jwt_claims(access);
    assert_eq!(claims["iss"], server.base.as_str());
    assert_eq!(claims["aud"], MCP);
    let sub = claims["sub"].as_str().expect("sub").to_string();
    assert_ne!(sub, "alice", "the broker subject is its own");
    let info = userinfo(&server, access).await;
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], "alice@saml.example", "{info}");
    assert_eq!(info["name"], "Alice SAML", "{info}");

    // Another browser, another sign-in at the IdP: the same subject.
    let other = Browser::new();
    let (sso, _, p) = to_idp(&server, &other).await;
    let (action, posted) = idp.sign_in(&other, &sso, "alice").await;
    let code = code_of(
        post_to_acs(&server, &other, &action, &posted).await,
        &server,
    );
    let again = redeem(&server, &code, &p).await;
    assert_eq!(
        jwt_claims(again["access_token"].as_str().expect("token"))["sub"],
        sub.as_str()
    );
    // Bob is somebody else.
    let bob = Browser::new();
    let (sso, _, p) = to_idp(&server, &bob).await;
    let (action, posted) = idp.sign_in(&bob, &sso, "bob").await;
    let code = code_of(post_to_acs(&server, &bob, &action, &posted).await, &server);
    let bob_tokens = redeem(&server, &code, &p).await;
    assert_ne!(
        jwt_claims(bob_tokens["access_token"].as_str().expect("token"))["sub"],
        sub.as_str()
    );
}

async fn replayed_simplesamlphp_response_is_refused(db: Db) {
    let (server, idp) = start_with_simplesamlphp(db, "127.0.0.1").await;
    let browser = Browser::new();
    let (sso, _, _) = to_idp(&server, &browser).await;
    let (action, posted) = idp.sign_in(&browser, &sso, "alice").await;
    let first = post_to_acs(&server, &browser, &action, &posted).await;
    assert!(matches!(first, Outcome::Redirect(_)), "{first:?}");
    // The same captured response again, in the same browser: refused.
    let again = post_to_acs(&server, &browser, &action, &posted).await;
    let (status, body) = error_page(again);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("this browser holds no sign-in"), "{body}");
    // And in a new sign-in (another AuthnRequest) in an attacker's browser.
    let attacker = Browser::new();
    let (_, _, _) = to_idp(&server, &attacker).await;
    let replay = post_to_acs(&server, &attacker, &action, &posted).await;
    let (status, body) = error_page(replay);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not belong to this sign-in"), "{body}");
}

async fn sp_metadata_names_the_acs_url_and_entity_id(db: Db) {
    let idp = TestIdp::generate("https://idp.example.com");
    let server = start_with_test_idp(db, &idp).await;
    let res = reqwest::get(server.url(&format!("/saml/{CONNECTOR}/metadata")))
        .await
        .expect("metadata");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().expect("type"),
        "application/samlmetadata+xml"
    );
    let xml = res.text().await.expect("body");
    assert!(
        xml.contains(&format!("entityID=\"{}\"", sp_entity_id(&server))),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("Location=\"{}\"", acs(&server))),
        "{xml}"
    );
    assert!(
        xml.contains("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"),
        "{xml}"
    );
    assert!(xml.contains("nameid-format:persistent"), "{xml}");
    let none = reqwest::get(server.url("/saml/nope/metadata"))
        .await
        .expect("metadata");
    assert_eq!(none.status().as_u16(), 404);
}

// ---------------------------------------------------------------------------
// With responses the test signs.
// ---------------------------------------------------------------------------

const TEST_IDP: &str = "https://idp.example.com/saml";

/// A sign-in started at Gatehouse, answered with `tweak`ed valid response
/// signed by `signer`.
async fn answer(
    server: &Server,
    browser: &Browser,
    signer: &TestIdp,
    tweak: impl FnOnce(&mut ResponseSpec),
) -> (Outcome, ResponseSpec) {
    let (sso, request_id, _) = to_idp(server, browser).await;
    let mut spec = ResponseSpec::new(signer, &acs(server), &sp_entity_id(server), &request_id);
    spec.attributes = vec![
        ("mail".into(), vec!["carol@saml.example".into()]),
        ("displayName".into(), vec!["Carol".into()]),
    ];
    spec.name_id = "carol".into();
    tweak(&mut spec);
    let xml = signer.response(&spec);
    let out = post_to_acs(server, browser, &acs(server), &fields(&xml, &sso)).await;
    (out, spec)
}

async fn refused(
    db: Db,
    tweak: impl FnOnce(&mut ResponseSpec),
    status: u16,
    words: &str,
    reason: &str,
) {
    let idp = TestIdp::generate(TEST_IDP);
    let server = start_with_test_idp(db, &idp).await;
    let (out, _) = answer(&server, &Browser::new(), &idp, tweak).await;
    assert_refused(&server, out, status, words, reason).await;
}

async fn crafted_valid_response_signs_the_user_in(db: Db) {
    let idp = TestIdp::generate(TEST_IDP);
    let server = start_with_test_idp(db, &idp).await;
    let browser = Browser::new();
    let (sso, request_id, p) = to_idp(&server, &browser).await;
    let mut spec = ResponseSpec::new(&idp, &acs(&server), &sp_entity_id(&server), &request_id);
    spec.attributes = vec![("mail".into(), vec!["carol@saml.example".into()])];
    let out = post_to_acs(
        &server,
        &browser,
        &acs(&server),
        &fields(&idp.response(&spec), &sso),
    )
    .await;
    let tokens = redeem(&server, &code_of(out, &server), &p).await;
    let info = userinfo(&server, tokens["access_token"].as_str().expect("token")).await;
    assert_eq!(info["email"], "carol@saml.example", "{info}");
}

/// SAML has no refresh to re-check the user with: the connector's
/// `max_session_lifetime` bounds the Gatehouse session and every grant.
async fn saml_session_lifetime_bounds_the_grant(db: Db) {
    let idp = TestIdp::generate(TEST_IDP);
    let server = start_with_test_idp_and(db, &idp, "max_session_lifetime = 600").await;
    let browser = Browser::new();
    let (sso, request_id, p) = to_idp(&server, &browser).await;
    let mut spec = ResponseSpec::new(&idp, &acs(&server), &sp_entity_id(&server), &request_id);
    spec.attributes = vec![("mail".into(), vec!["carol@saml.example".into()])];
    let out = post_to_acs(
        &server,
        &browser,
        &acs(&server),
        &fields(&idp.response(&spec), &sso),
    )
    .await;
    let tokens = redeem(&server, &code_of(out, &server), &p).await;
    let refresh = |rt: String| {
        let server = &server;
        async move {
            token_request(
                server,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.as_str()),
                    ("client_id", PUBLIC_CLIENT),
                ],
                None,
            )
            .await
        }
    };
    server.advance_clock(300);
    let (status, json) = refresh(tokens["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(status, 200, "within the SAML session: {json}");
    let rt = json["refresh_token"].as_str().unwrap().to_string();

    // The SSO session ends with the SAML session too: a new authorization
    // goes back to the IdP.
    server.advance_clock(301);
    let (status, json) = refresh(rt).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_grant")),
        "past the SAML session's end: {json}"
    );
    let (sso_again, _, _) = to_idp(&server, &browser).await;
    assert!(
        sso_again.starts_with("http://127.0.0.1:9/sso"),
        "{sso_again}"
    );
}

async fn unsigned_response_is_refused(db: Db) {
    refused(
        db,
        |s| s.sign_assertion = false,
        502,
        "is signed",
        "invalid_id_token",
    )
    .await;
}

async fn response_signed_by_another_key_is_refused(db: Db) {
    let trusted = TestIdp::generate(TEST_IDP);
    let impostor = TestIdp::generate(TEST_IDP);
    let server = start_with_test_idp(db, &trusted).await;
    let (out, _) = answer(&server, &Browser::new(), &impostor, |_| {}).await;
    assert_refused(
        &server,
        out,
        502,
        "does not verify with the identity provider",
        "invalid_id_token",
    )
    .await;
}

async fn wrapped_signature_is_refused(db: Db) {
    let idp = TestIdp::generate(TEST_IDP);
    let server = start_with_test_idp(db, &idp).await;
    let browser = Browser::new();
    let (sso, request_id, _) = to_idp(&server, &browser).await;
    // A genuine signed assertion for carol, and an unsigned one for mallory
    // placed first, where a careless SP would read it.
    let genuine = ResponseSpec::new(&idp, &acs(&server), &sp_entity_id(&server), &request_id);
    let signed = idp.sign(&genuine.assertion_xml());
    let mut evil = genuine.clone();
    evil.assertion_id = "_evil".into();
    evil.name_id = "mallory".into();
    evil.sign_assertion = false;
    let xml = genuine.response_around(&format!("{}{signed}", evil.assertion_xml()));
    let out = post_to_acs(&server, &browser, &acs(&server), &fields(&xml, &sso)).await;
    assert_refused(&server, out, 502, "holds 2 assertions", "invalid_id_token").await;
}

async fn wrong_audience_is_refused(db: Db) {
    refused(
        db,
        |s| s.audience = Some("https://other-sp.example.com".into()),
        502,
        "meant for another service provider",
        "invalid_id_token",
    )
    .await;
}

async fn wrong_recipient_is_refused(db: Db) {
    refused(
        db,
        |s| s.recipient = Some("https://other-sp.example.com/acs".into()),
        502,
        "the Recipient is not this connector",
        "invalid_id_token",
    )
    .await;
}

async fn wrong_destination_is_refused(db: Db) {
    refused(
        db,
        |s| s.destination = Some("https://other-sp.example.com/acs".into()),
        502,
        "its Destination is not this connector",
        "invalid_id_token",
    )
    .await;
}

async fn wrong_in_response_to_is_refused(db: Db) {
    refused(
        db,
        |s| {
            s.in_response_to = Some("_another-request".into());
            s.response_in_response_to = Some("_another-request".into());
        },
        400,
        "InResponseTo does not name our request",
        "invalid_callback",
    )
    .await;
}

async fn expired_assertion_is_refused(db: Db) {
    refused(
        db,
        // Issued 20 minutes ago, valid for 5.
        |s| s.shift_times(-20 * 60),
        502,
        "has expired",
        "invalid_id_token",
    )
    .await;
}

async fn non_success_status_is_a_refusal(db: Db) {
    refused(
        db,
        |s| {
            s.status = "urn:oasis:names:tc:SAML:2.0:status:Responder".into();
            s.status_message = Some("User cancelled".into());
            s.sign_assertion = false;
        },
        400,
        "the sign-in was cancelled or not allowed",
        "upstream_refused",
    )
    .await;
}

async fn an_assertion_id_is_accepted_once(db: Db) {
    let idp = TestIdp::generate(TEST_IDP);
    let server = start_with_test_idp(db, &idp).await;
    let (first, spec) = answer(&server, &Browser::new(), &idp, |_| {}).await;
    assert!(matches!(first, Outcome::Redirect(_)), "{first:?}");
    // The same assertion ID in a later, otherwise valid, sign-in: the
    // broker remembers it and refuses the second use.
    let reused = spec.assertion_id.clone();
    let (second, _) = answer(&server, &Browser::new(), &idp, |s| s.assertion_id = reused).await;
    assert_refused(&server, second, 502, "already used", "invalid_id_token").await;
}

async fn cross_site_post_is_reposted_from_this_origin(db: Db) {
    let idp = TestIdp::generate(TEST_IDP);
    let server = start_with_test_idp(db, &idp).await;
    let browser = Browser::new();
    let (sso, request_id, p) = to_idp(&server, &browser).await;
    let spec = ResponseSpec::new(&idp, &acs(&server), &sp_entity_id(&server), &request_id);
    let posted = fields(&idp.response(&spec), &sso);
    // The IdP's page posts cross-site: the browser withholds its SameSite=Lax
    // cookies. Gatehouse answers with a page that posts the same fields
    // again from its own origin.
    let cookieless = reqwest::Client::new();
    let res = cookieless
        .post(acs(&server))
        .form(&posted)
        .send()
        .await
        .expect("ACS");
    assert_eq!(res.status().as_u16(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    let page = res.text().await.expect("page");
    let nonce = between(&csp, "script-src 'nonce-", "'").expect("script nonce in the CSP");
    assert!(
        page.contains(&format!("<script nonce=\"{nonce}\">")),
        "{page}"
    );
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(
        page.contains(">Continue</button>"),
        "a button for browsers without script: {page}"
    );
    let action = upstream_unescape(&between(&page, "action=\"", "\"").expect("action"));
    assert_eq!(action, acs(&server));
    let again = repost_fields(&page);
    assert_eq!(again.len(), 3, "{page}");
    assert_eq!(again[0], posted[0], "the response is posted unchanged");
    assert_eq!(again[1], posted[1], "with its RelayState");
    // The re-post is same-site: now the browser's cookies come along.
    let out = post_to_acs(&server, &browser, &action, &again).await;
    redeem(&server, &code_of(out, &server), &p).await;
    // A re-posted response that still comes without cookies is refused,
    // not re-posted again.
    let res = cookieless
        .post(acs(&server))
        .form(&again)
        .send()
        .await
        .expect("ACS");
    let out = browser.follow(&server, res, "", "", true).await;
    let (status, body) = error_page(out);
    assert_eq!(status, 400);
    assert!(body.contains("this browser holds no sign-in"), "{body}");
}

fn upstream_unescape(s: &str) -> String {
    common::upstream::html_attr_unescape(
        &s.replace("&#x2f;", "/")
            .replace("&#43;", "+")
            .replace("&#x3d;", "="),
    )
}

on_both_databases!(
    saml_session_lifetime_bounds_the_grant,
    simplesamlphp_login_issues_tokens_with_the_mapped_user,
    replayed_simplesamlphp_response_is_refused,
    sp_metadata_names_the_acs_url_and_entity_id,
    crafted_valid_response_signs_the_user_in,
    unsigned_response_is_refused,
    response_signed_by_another_key_is_refused,
    wrapped_signature_is_refused,
    wrong_audience_is_refused,
    wrong_recipient_is_refused,
    wrong_destination_is_refused,
    wrong_in_response_to_is_refused,
    expired_assertion_is_refused,
    non_success_status_is_a_refusal,
    an_assertion_id_is_accepted_once,
    cross_site_post_is_reposted_from_this_origin,
);
