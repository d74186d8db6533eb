//! Token checks against a loopback authorization server (tests/common).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gatehouse_verify::{Algorithm, IntrospectionConfig, Verifier, VerifierConfig, VerifyError};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

#[tokio::test]
async fn valid_token_accepted() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let claims = issuer.claims();
    let token = issuer.key.sign(&claims);
    let verified = verifier.verify(&token).await.unwrap();
    assert_eq!(verified.issuer, issuer.issuer);
    assert_eq!(verified.subject, claims["sub"]);
    assert_eq!(verified.client_id, "demo-public");
    assert_eq!(verified.scopes, ["mcp:read", "openid"]);
    assert!(verified.has_scope("mcp:read"));
    assert!(!verified.has_scope("mcp:write"));
    assert_eq!(verified.audience, RESOURCE);
    assert_eq!(verified.expires_at, claims["exp"].as_i64().unwrap());
    assert_eq!(verified.issued_at, claims["iat"].as_i64());
    assert_eq!(verified.jti.as_deref(), claims["jti"].as_str());
    assert!(verified.is_user());
    assert!(verified.act.is_none());
    assert_eq!(verified.claims, claims);
    assert_eq!(
        verified.resource_metadata_url(),
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
}

#[tokio::test]
async fn wrong_issuer_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    for iss in [
        format!("{}/", issuer.issuer),
        "https://evil.example.com".to_string(),
    ] {
        let mut claims = issuer.claims();
        claims["iss"] = json!(iss);
        let err = verifier
            .verify(&issuer.key.sign(&claims))
            .await
            .unwrap_err();
        assert_eq!(err, VerifyError::WrongIssuer, "{iss}");
    }
    let mut claims = issuer.claims();
    claims.as_object_mut().unwrap().remove("iss");
    assert!(matches!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::Malformed(_))
    ));
}

#[tokio::test]
async fn wrong_audience_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    for aud in [
        json!("https://other.example.com/mcp"),
        json!("https://mcp.example.com/mcp/"),
        json!("http://mcp.example.com/mcp"),
        json!(["https://other.example.com/mcp"]),
        json!([]),
    ] {
        let mut claims = issuer.claims();
        claims["aud"] = aud.clone();
        let err = verifier
            .verify(&issuer.key.sign(&claims))
            .await
            .unwrap_err();
        assert_eq!(err, VerifyError::WrongAudience, "{aud}");
    }
}

#[tokio::test]
async fn audience_array_containing_resource_accepted() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let mut claims = issuer.claims();
    claims["aud"] = json!(["https://other.example.com/mcp", RESOURCE]);
    let verified = verifier.verify(&issuer.key.sign(&claims)).await.unwrap();
    assert_eq!(verified.audience, RESOURCE);
}

#[tokio::test]
async fn canonical_audience_accepted() {
    let issuer = TestIssuer::start().await;
    // Configured with a trailing slash and odd case; Gatehouse writes the
    // canonical form without the root slash.
    let verifier = Verifier::discover(VerifierConfig::new(
        &issuer.issuer,
        "HTTPS://MCP.example.com:443/",
    ))
    .await
    .unwrap();
    assert_eq!(verifier.resource(), "https://mcp.example.com");
    for aud in [
        "https://mcp.example.com",
        "https://mcp.example.com/",
        "https://MCP.EXAMPLE.COM:443",
    ] {
        let mut claims = issuer.claims();
        claims["aud"] = json!(aud);
        let verified = verifier.verify(&issuer.key.sign(&claims)).await;
        assert!(verified.is_ok(), "{aud}: {verified:?}");
    }
    let mut claims = issuer.claims();
    claims["aud"] = json!("https://mcp.example.com/mcp");
    assert_eq!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::WrongAudience)
    );
}

#[tokio::test]
async fn expired_beyond_leeway_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await; // leeway 60 s
    let mut claims = issuer.claims();
    claims["iat"] = json!(now() - 900);
    claims["exp"] = json!(now() - 61);
    assert_eq!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::Expired)
    );
    // Within the leeway it still passes.
    claims["exp"] = json!(now() - 30);
    assert!(verifier.verify(&issuer.key.sign(&claims)).await.is_ok());
    // exp is required.
    claims.as_object_mut().unwrap().remove("exp");
    assert!(matches!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::Malformed(_))
    ));
}

#[tokio::test]
async fn leeway_is_capped_at_five_minutes() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::discover(issuer.config().with_leeway(Duration::from_secs(3600)))
        .await
        .unwrap();
    let mut claims = issuer.claims();
    claims["exp"] = json!(now() - 400);
    assert_eq!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::Expired)
    );
}

#[tokio::test]
async fn nbf_in_future_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let mut claims = issuer.claims();
    claims["nbf"] = json!(now() + 300);
    assert_eq!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::NotYetValid)
    );
    claims["nbf"] = json!(now() + 30); // within the leeway
    assert!(verifier.verify(&issuer.key.sign(&claims)).await.is_ok());
}

#[tokio::test]
async fn iat_in_future_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let mut claims = issuer.claims();
    claims["iat"] = json!(now() + 300);
    assert_eq!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::NotYetValid)
    );
}

#[tokio::test]
async fn typ_jwt_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    for typ in [Some("JWT"), Some("jwt"), Some("application/jwt"), None] {
        let mut header = issuer.key.header();
        header.typ = typ.map(str::to_string);
        let token = issuer.key.sign_with(header, &issuer.claims());
        assert_eq!(
            verifier.verify(&token).await,
            Err(VerifyError::WrongTyp),
            "{typ:?}"
        );
    }
}

#[tokio::test]
async fn typ_variants_accepted() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    for typ in ["AT+JWT", "application/at+jwt", "Application/AT+jwt"] {
        let mut header = issuer.key.header();
        header.typ = Some(typ.into());
        let token = issuer.key.sign_with(header, &issuer.claims());
        assert!(verifier.verify(&token).await.is_ok(), "{typ}");
    }
}

#[tokio::test]
async fn alg_none_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": issuer.key.kid});
        for signature in ["", "AAAA"] {
            let token = raw_jwt(&header, &issuer.claims(), signature);
            assert_eq!(
                verifier.verify(&token).await,
                Err(VerifyError::DisallowedAlg),
                "{alg} {signature:?}"
            );
        }
    }
}

#[tokio::test]
async fn hs256_with_public_key_as_secret_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    // The classic key-confusion forgery: HMAC keyed with the public key the
    // verifier would use, under the real kid.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(issuer.key.kid.clone());
    let secret = EncodingKey::from_secret(&issuer.key.public_bytes);
    let token = jsonwebtoken::encode(&header, &issuer.claims(), &secret).unwrap();
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::DisallowedAlg)
    );

    // Even when the configuration asks for it, HS* is never enabled.
    let config = issuer.config().with_algorithms([Algorithm::HS256]);
    assert!(matches!(
        Verifier::discover(config).await,
        Err(VerifyError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn alg_must_match_the_keys_alg() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    // An EdDSA signature under the kid of the ES256 key.
    let ed = TestKey::ed25519(&issuer.key.kid);
    let token = ed.sign(&issuer.claims());
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::DisallowedAlg)
    );
}

#[tokio::test]
async fn alg_outside_allow_list_refused() {
    let issuer = TestIssuer::start().await;
    let ed = TestKey::ed25519("ed-1");
    issuer.publish(&ed);
    let verifier = Verifier::discover(issuer.config().with_algorithms([Algorithm::ES256]))
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(&ed.sign(&issuer.claims())).await,
        Err(VerifyError::DisallowedAlg)
    );
    assert!(verifier.verify(&issuer.token()).await.is_ok());
}

#[tokio::test]
async fn eddsa_token_accepted() {
    let issuer = TestIssuer::start().await;
    let ed = TestKey::ed25519("ed-1");
    issuer.publish(&ed);
    let verifier = issuer.verifier().await;
    let verified = verifier.verify(&ed.sign(&issuer.claims())).await.unwrap();
    assert_eq!(verified.client_id, "demo-public");
}

#[tokio::test]
async fn rs256_token_accepted() {
    let issuer = TestIssuer::start().await;
    let rsa = TestKey::rs256("rsa-1");
    issuer.publish(&rsa);
    let verifier = issuer.verifier().await;
    let verified = verifier.verify(&rsa.sign(&issuer.claims())).await.unwrap();
    assert_eq!(verified.client_id, "demo-public");
    // PS256 with the same key is not on the default allow-list.
    let mut header = rsa.header();
    header.alg = Algorithm::PS256;
    let token = rsa.sign_with(header, &issuer.claims());
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::DisallowedAlg)
    );
}

#[tokio::test]
async fn bad_signature_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    // Right kid and alg, wrong private key.
    let impostor = TestKey::es256(&issuer.key.kid);
    assert_eq!(
        verifier.verify(&impostor.sign(&issuer.claims())).await,
        Err(VerifyError::BadSignature)
    );
    // A genuine token whose payload was swapped.
    let genuine = issuer.token();
    let mut claims = issuer.claims();
    claims["scope"] = json!("mcp:read mcp:write");
    let forged_payload = issuer.key.sign(&claims);
    let parts: Vec<&str> = genuine.split('.').collect();
    let other: Vec<&str> = forged_payload.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other[1], parts[2]);
    assert_eq!(
        verifier.verify(&spliced).await,
        Err(VerifyError::BadSignature)
    );
}

#[tokio::test]
async fn malformed_tokens_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    for token in ["a.b", "a.b.c.d", ".b.c", "!!!.b.c", "eyJ9.eyJ9.sig"] {
        assert!(
            matches!(verifier.verify(token).await, Err(VerifyError::Malformed(_))),
            "{token}"
        );
    }
    assert_eq!(verifier.verify("").await, Err(VerifyError::MissingToken));
    // Opaque tokens need introspection.
    assert!(matches!(
        verifier.verify("opaque-handle").await,
        Err(VerifyError::Malformed(_))
    ));
    // An unsupported critical header.
    let mut header = json!({"alg": "ES256", "typ": "at+jwt", "kid": issuer.key.kid});
    header["crit"] = json!(["b64"]);
    let token = raw_jwt(&header, &issuer.claims(), "AAAA");
    assert!(matches!(
        verifier.verify(&token).await,
        Err(VerifyError::Malformed(_))
    ));
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_interval() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    assert_eq!(issuer.jwks_hits(), 1, "discovery loads the JWKS once");

    let stranger = TestKey::es256("unknown-1");
    assert_eq!(
        verifier.verify(&stranger.sign(&issuer.claims())).await,
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(issuer.jwks_hits(), 2, "an unknown kid triggers one refetch");

    let another = TestKey::es256("unknown-2");
    assert_eq!(
        verifier.verify(&another.sign(&issuer.claims())).await,
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(
        issuer.jwks_hits(),
        2,
        "a second unknown kid within the interval does not refetch"
    );
    // Known keys keep working without fetching.
    assert!(verifier.verify(&issuer.token()).await.is_ok());
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_refetch() {
    let issuer = TestIssuer::start().await;
    let verifier = Arc::new(issuer.verifier().await);
    let rotated = TestKey::es256("kid-2");
    issuer.publish(&rotated);
    let token = rotated.sign(&issuer.claims());
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (verifier, token) = (Arc::clone(&verifier), token.clone());
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn refetch_allowed_again_after_the_interval() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::discover(
        issuer
            .config()
            .with_jwks_min_refresh_interval(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let late = TestKey::es256("kid-late");
    let token = late.sign(&issuer.claims());
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::UnknownKey));
    assert_eq!(issuer.jwks_hits(), 2);
    issuer.publish(&late);
    // Published, but the interval has not passed: no refetch yet.
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::UnknownKey));
    assert_eq!(issuer.jwks_hits(), 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(verifier.verify(&token).await.is_ok());
    assert_eq!(issuer.jwks_hits(), 3);
}

#[tokio::test]
async fn key_rotation_accepted_after_refresh() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let old_token = issuer.token();
    assert!(verifier.verify(&old_token).await.is_ok());
    assert_eq!(verifier.cached_key_ids(), ["kid-1"]);

    // Gatehouse publishes the next key, then starts signing with it.
    let next = TestKey::es256("kid-2");
    issuer.publish(&next);
    let new_token = next.sign(&issuer.claims());
    let verified = verifier.verify(&new_token).await.unwrap();
    assert_eq!(verified.client_id, "demo-public");
    assert_eq!(issuer.jwks_hits(), 2);
    assert_eq!(verifier.cached_key_ids(), ["kid-1", "kid-2"]);
    // Tokens signed by the retired (still published) key stay valid.
    assert!(verifier.verify(&old_token).await.is_ok());
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn keys_removed_from_the_jwks_stop_verifying() {
    let issuer = TestIssuer::start().await;
    *issuer.state.jwks_cache_control.lock().unwrap() = "max-age=0".into();
    let verifier = Verifier::discover(
        issuer
            .config()
            .with_jwks_min_refresh_interval(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let token = issuer.token();
    assert!(verifier.verify(&token).await.is_ok());
    // The issuer withdraws the key (e.g. after a compromise).
    let replacement = TestKey::es256("kid-2");
    *issuer.state.jwks.lock().unwrap() = vec![replacement.jwk.clone()];
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale keys are still used while a background refresh runs...
    assert!(verifier.verify(&token).await.is_ok());
    for _ in 0..50 {
        if verifier.cached_key_ids() == ["kid-2"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(verifier.cached_key_ids(), ["kid-2"]);
    // ...after which the withdrawn key is gone.
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::UnknownKey));
    assert!(verifier
        .verify(&replacement.sign(&issuer.claims()))
        .await
        .is_ok());
}

#[tokio::test]
async fn act_chain_parsed() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let mut claims = issuer.claims();
    claims["act"] = json!({
        "sub": "agent-b",
        "client_id": "agent-b-client",
        "act": { "sub": "agent-a", "act": { "sub": "orchestrator", "client_id": "orch" } }
    });
    let verified = verifier.verify(&issuer.key.sign(&claims)).await.unwrap();
    let act = verified.act.as_ref().unwrap();
    assert_eq!(act.sub, "agent-b");
    assert_eq!(act.client_id.as_deref(), Some("agent-b-client"));
    let chain: Vec<(&str, Option<&str>)> = act
        .chain()
        .map(|a| (a.sub.as_str(), a.client_id.as_deref()))
        .collect();
    assert_eq!(
        chain,
        [
            ("agent-b", Some("agent-b-client")),
            ("agent-a", None),
            ("orchestrator", Some("orch")),
        ]
    );
    // A malformed act is refused rather than ignored.
    claims["act"] = json!("agent-b");
    assert!(matches!(
        verifier.verify(&issuer.key.sign(&claims)).await,
        Err(VerifyError::Malformed(_))
    ));
}

// ---------------------------------------------------------------------------
// Introspection
// ---------------------------------------------------------------------------

fn active(issuer: &TestIssuer, exp: i64) -> serde_json::Value {
    json!({
        "active": true,
        "iss": issuer.issuer,
        "sub": "service-1",
        "aud": RESOURCE,
        "client_id": "service-1",
        "scope": "mcp:read mcp:write",
        "exp": exp,
        "iat": now(),
        "jti": "opaque-jti",
        "token_type": "Bearer",
    })
}

const OPAQUE: &str = "Qm9vdHN0cmFwcGVkT3BhcXVlSGFuZGxlMDEyMzQ1Njc4OQ";

#[tokio::test]
async fn opaque_token_accepted_via_introspection() {
    let issuer = TestIssuer::start().await;
    issuer.set_introspection(OPAQUE, active(&issuer, now() + 600));
    let verifier = Verifier::discover(issuer.config_with_introspection())
        .await
        .unwrap();
    let verified = verifier.verify(OPAQUE).await.unwrap();
    assert_eq!(verified.subject, "service-1");
    assert!(verified.has_scope("mcp:write"));
    assert!(!verified.is_user());
    assert_eq!(verified.jti.as_deref(), Some("opaque-jti"));
    assert_eq!(issuer.introspection_hits(), 1);
}

#[tokio::test]
async fn inactive_opaque_token_refused() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::discover(issuer.config_with_introspection())
        .await
        .unwrap();
    assert_eq!(verifier.verify(OPAQUE).await, Err(VerifyError::Inactive));
    // Negative answers are not cached.
    assert_eq!(verifier.verify(OPAQUE).await, Err(VerifyError::Inactive));
    assert_eq!(issuer.introspection_hits(), 2);
}

#[tokio::test]
async fn introspection_result_cached() {
    let issuer = TestIssuer::start().await;
    issuer.set_introspection(OPAQUE, active(&issuer, now() + 600));
    let verifier = Verifier::discover(issuer.config_with_introspection())
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(verifier.verify(OPAQUE).await.is_ok());
    }
    assert_eq!(issuer.introspection_hits(), 1);
    // Revocation: the cache keeps answering until its TTL.
    issuer.set_introspection(OPAQUE, json!({"active": false}));
    assert!(verifier.verify(OPAQUE).await.is_ok());
    assert_eq!(issuer.introspection_hits(), 1);
}

#[tokio::test]
async fn introspection_cache_ttl_respected() {
    let issuer = TestIssuer::start().await;
    issuer.set_introspection(OPAQUE, active(&issuer, now() + 600));
    let config = issuer.config().with_introspection(
        IntrospectionConfig::new(RS_CLIENT, RS_SECRET).with_cache_ttl(Duration::from_millis(300)),
    );
    let verifier = Verifier::discover(config).await.unwrap();
    assert!(verifier.verify(OPAQUE).await.is_ok());
    issuer.set_introspection(OPAQUE, json!({"active": false}));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(verifier.verify(OPAQUE).await, Err(VerifyError::Inactive));
    assert_eq!(issuer.introspection_hits(), 2);
}

#[tokio::test]
async fn introspection_cache_never_outlives_exp() {
    let issuer = TestIssuer::start().await;
    issuer.set_introspection(OPAQUE, active(&issuer, now() + 2));
    let config = issuer
        .config_with_introspection()
        .with_leeway(Duration::ZERO);
    let verifier = Verifier::discover(config).await.unwrap();
    assert!(verifier.verify(OPAQUE).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The 30 s cache TTL is cut to the token's remaining life.
    assert_eq!(verifier.verify(OPAQUE).await, Err(VerifyError::Expired));
    assert_eq!(issuer.introspection_hits(), 2);
}

#[tokio::test]
async fn introspected_token_for_another_resource_refused() {
    let issuer = TestIssuer::start().await;
    let mut answer = active(&issuer, now() + 600);
    answer["aud"] = json!("https://other.example.com/mcp");
    issuer.set_introspection(OPAQUE, answer);
    let mut wrong_iss = active(&issuer, now() + 600);
    wrong_iss["iss"] = json!("https://elsewhere.example.com");
    issuer.set_introspection("other-issuer-token", wrong_iss);
    let mut refresh = active(&issuer, now() + 600);
    refresh["token_type"] = json!("refresh_token");
    issuer.set_introspection("a-refresh-token", refresh);

    let verifier = Verifier::discover(issuer.config_with_introspection())
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(OPAQUE).await,
        Err(VerifyError::WrongAudience)
    );
    assert_eq!(
        verifier.verify("other-issuer-token").await,
        Err(VerifyError::WrongIssuer)
    );
    assert_eq!(
        verifier.verify("a-refresh-token").await,
        Err(VerifyError::WrongTyp)
    );
}

#[tokio::test]
async fn introspection_failures_are_upstream_errors() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::discover(issuer.config_with_introspection())
        .await
        .unwrap();
    let err = verifier.verify("explode").await.unwrap_err();
    assert!(err.is_upstream(), "{err:?}");
    assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);

    // Wrong credentials: the authorization server refuses us, not the client.
    let config = issuer
        .config()
        .with_introspection(IntrospectionConfig::new(RS_CLIENT, "wrong"));
    let verifier = Verifier::discover(config).await.unwrap();
    assert!(verifier.verify(OPAQUE).await.unwrap_err().is_upstream());
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn discovery_mismatched_issuer_fails() {
    let issuer = TestIssuer::start().await;
    *issuer.state.advertised_issuer.lock().unwrap() = "https://attacker.example.com".into();
    let err = Verifier::discover(issuer.config()).await.unwrap_err();
    assert!(matches!(err, VerifyError::InvalidConfig(_)), "{err:?}");
    assert_eq!(issuer.jwks_hits(), 0);
}

#[tokio::test]
async fn discovery_issuer_with_trailing_slash_fails() {
    let issuer = TestIssuer::start().await;
    let config = VerifierConfig::new(format!("{}/", issuer.issuer), RESOURCE);
    assert!(Verifier::discover(config).await.is_err());
}

#[tokio::test]
async fn discovery_uses_path_insertion_for_tenant_issuers() {
    let issuer = TestIssuer::start_at("/t/acme").await;
    let verifier = issuer.verifier().await;
    assert_eq!(
        issuer
            .state
            .counters
            .rfc8414
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        issuer
            .state
            .counters
            .openid
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(verifier.verify(&issuer.token()).await.is_ok());
}

#[tokio::test]
async fn discovery_falls_back_to_openid_configuration() {
    let issuer = TestIssuer::start().await;
    *issuer.state.serve_rfc8414.lock().unwrap() = false;
    let verifier = issuer.verifier().await;
    assert_eq!(
        issuer
            .state
            .counters
            .openid
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(verifier.verify(&issuer.token()).await.is_ok());
}

#[tokio::test]
async fn discovery_of_unreachable_issuer_is_upstream() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = VerifierConfig::new(format!("http://127.0.0.1:{port}"), RESOURCE);
    let err = Verifier::discover(config).await.unwrap_err();
    assert!(err.is_upstream(), "{err:?}");
}
