//! Micro-benchmarks of the per-request crypto and parsing on the hot paths:
//! access token signing and verification per algorithm, PKCE, form parsing,
//! and client-secret verification with and without the verified-secret cache.
//!
//! cargo bench --bench tokens

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::keys::{initial_keys, Alg, Kek, KeyRing};
use gatehouse::oauth::client_auth::{Client, ClientCache};
use gatehouse::oauth::params::Params;
use gatehouse::oauth::pkce;
use gatehouse::tenants::{AuthMethod, ClientMetadata, TokenFormat};
use gatehouse::tokens::secret::argon2_hash;
use gatehouse::tokens::AccessClaims;

fn claims(now: i64) -> AccessClaims {
    AccessClaims {
        iss: "https://auth.example.com".into(),
        sub: "b8c4a4d6-2a4e-4a5e-9d1c-5c1a7b9e1f00".into(),
        aud: "https://mcp.example.com/mcp".into(),
        client_id: "demo-public".into(),
        scope: "mcp:read mcp:write".into(),
        jti: "oejLFrax6htGtcTmi7PW0g".into(),
        iat: now,
        exp: now + 3600,
        auth_time: Some(now),
        act: None,
        may_act: None,
        copied: Default::default(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn signing(c: &mut Criterion) {
    let kek = Kek::generate();
    for alg in [Alg::ES256, Alg::EdDSA, Alg::RS256] {
        let ring = KeyRing::load(
            &initial_keys(alg, "default", &kek, now()).unwrap(),
            &kek,
            now(),
        )
        .unwrap();
        let token = ring.sign("at+jwt", &claims(now())).unwrap();
        c.bench_function(&format!("access_token/sign/{alg}"), |b| {
            b.iter(|| ring.sign("at+jwt", &claims(now())).unwrap())
        });
        c.bench_function(&format!("access_token/verify/{alg}"), |b| {
            b.iter(|| {
                ring.verify::<AccessClaims>(&token, Some("at+jwt"), now())
                    .unwrap()
            })
        });
    }
}

fn protocol(c: &mut Criterion) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    c.bench_function("pkce/verify", |b| {
        b.iter(|| pkce::verify(verifier, challenge).unwrap())
    });
    let body = b"grant_type=authorization_code&code=SplxlOBeZQQYbYS6WxSbIA&redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fcallback&client_id=demo-public&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&resource=https%3A%2F%2Fmcp.example.com%2Fmcp";
    c.bench_function("params/parse_token_request", |b| {
        b.iter(|| Params::parse(body, &["resource"]).unwrap())
    });
}

fn client_secrets(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = "demo-service-secret";
    let client = Client {
        tenant_id: "default".into(),
        client_id: "demo-service".into(),
        secret_hash: Some(argon2_hash(secret).unwrap()),
        meta: ClientMetadata {
            client_name: None,
            redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
            jwks_uri: None,
            resources: None,
            scopes: None,
            default_scopes: None,
            access_token_format: TokenFormat::Jwt,
            access_token_ttl: None,
            refresh_token_ttl: None,
            skip_consent: false,
            dynamic: false,
            initial_access_token: false,
            introspect_any: false,
        },
        source: "bench".into(),
    };
    let mut group = c.benchmark_group("client_secret");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    group.bench_function("argon2_verify_uncached", |b| {
        b.iter(|| {
            gatehouse::tokens::secret::argon2_verify(secret, client.secret_hash.as_deref().unwrap())
        })
    });
    let cache = ClientCache::new(Duration::from_secs(60));
    let _ = rt.block_on(cache.verify_secret(&client, secret));
    group.bench_function("verify_cached", |b| {
        b.iter(|| rt.block_on(cache.verify_secret(&client, secret)))
    });
    group.finish();
}

criterion_group!(benches, signing, protocol, client_secrets);
criterion_main!(benches);
