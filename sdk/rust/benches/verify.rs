//! Cost of `Verifier::verify` with cached keys, next to the bare ES256
//! signature check it wraps, with the same crypto library (jsonwebtoken,
//! which verifies with ring). Run: `cargo bench -p gatehouse-verify`.
//!
//! - `verify_cached_keys`: every check (typ, alg, kid, signature, iss, aud,
//!   exp/nbf/iat, required claims, scope) on a Gatehouse-shaped token.
//! - `bare_signature_check`: `jsonwebtoken::crypto::verify` of the same
//!   signature over the same signing input with the same key: the signature
//!   alone (what `verify` calls), no header or claims read.
//! - `jsonwebtoken_decode_signature_only`: `jsonwebtoken::decode` with every
//!   claim check off, for reference (it also parses header and claims).
//!
//! The target (issue 11) is verify ≤ 1.25 × bare.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (issuer, verifier) = rt.block_on(async {
        let issuer = common::TestIssuer::start().await;
        let verifier = issuer.verifier().await;
        (issuer, verifier)
    });
    let token = issuer.token();
    // Warm: the key is cached, no request goes out during the run.
    rt.block_on(verifier.verify(&token))
        .expect("token verifies");
    let hits_before = issuer.jwks_hits();

    let mut group = c.benchmark_group("es256");
    group.bench_function("verify_cached_keys", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(verifier.verify(black_box(&token)).await) })
    });

    let jwk = &issuer.key.jwk;
    let key = DecodingKey::from_ec_components(
        jwk["x"].as_str().expect("x"),
        jwk["y"].as_str().expect("y"),
    )
    .expect("key");
    let (signing_input, signature) = token.rsplit_once('.').expect("a JWS");
    group.bench_function("bare_signature_check", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::crypto::verify(
                black_box(signature),
                black_box(signing_input.as_bytes()),
                &key,
                Algorithm::ES256,
            ))
        })
    });
    assert_eq!(
        jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key, Algorithm::ES256)
            .ok(),
        Some(true)
    );

    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    group.bench_function("jsonwebtoken_decode_signature_only", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<Value>(
                black_box(&token),
                &key,
                &validation,
            ))
        })
    });
    group.finish();

    assert_eq!(
        issuer.jwks_hits(),
        hits_before,
        "no JWKS fetch while measuring"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
