//! Cost of `Verifier::verify` with cached keys, next to the bare ES256
//! signature check it wraps. Run: `cargo bench -p gatehouse-verify`.

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
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    group.bench_function("raw_es256_signature_check", |b| {
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
