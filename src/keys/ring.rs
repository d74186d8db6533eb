//! One tenant's loaded keys: the active signing key, the verification keys
//! it publishes, token signing and verification.
//!
//! Verification trusts only what the ring holds: the token's `kid` picks the
//! key and the key alone decides the algorithm, so `none`, HMAC with a public
//! key as secret, or a cross-family `alg` are refused before any crypto runs.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::crypto::{wipe, Alg, Kek, PublicKey, STATE_ACTIVE, STATE_NEXT, STATE_RETIRED};
use super::error::KeyError;
use super::jws::{PrivateKey, Signer};
use crate::store::KeyRecord;

/// Signed once at load to prove the decrypted private key matches the
/// published public key (jsonwebtoken checks nothing until first use).
const PROBE: &[u8] = b"gatehouse key probe";
/// Longest attacker-supplied kid echoed back in an error.
const MAX_KID_IN_ERROR: usize = 64;

/// The key that signs new tokens.
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    signer: Signer,
    /// Public JWK (no private members), as published in the JWKS.
    pub public_jwk: Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("signer", &self.signer)
            .finish()
    }
}

/// A key tokens are accepted from: active, next, or retired but still published.
pub struct VerifyingKey {
    pub kid: String,
    pub alg: Alg,
    pub decoding: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys of one tenant, ready to sign and verify. Rebuild it with
/// [`KeyRing::load`] whenever the stored records change (rotation) or a
/// retired key's publish window ends.
pub struct KeyRing {
    tenant_id: String,
    active: SigningKey,
    /// Active first, then next keys, then still-published retired keys.
    verifying: Vec<VerifyingKey>,
    /// Rendered once at load: the JWKS is served far more often than keys change.
    jwks: Value,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("tenant_id", &self.tenant_id)
            .field("active", &self.active)
            .field("verifying", &self.verifying)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Builds the ring from one tenant's key records.
    ///
    /// Exactly one record must be `active`; its private key is decrypted
    /// with `kek` and checked against its public key. Verification keys come
    /// from the public JWKs of the active key, every `next` key, and every
    /// `retired` key whose `publish_until` is after `now`. Records with an
    /// unknown state are skipped with a warning.
    pub fn load(records: &[KeyRecord], kek: &Kek, now: i64) -> Result<KeyRing, KeyError> {
        let tenant_id = single_tenant(records)?;

        let mut actives = Vec::new();
        let mut nexts = Vec::new();
        let mut retired = Vec::new();
        for rec in records {
            match rec.state.as_str() {
                STATE_ACTIVE => actives.push(rec),
                STATE_NEXT => nexts.push(rec),
                STATE_RETIRED => {
                    // Published while tokens it signed may still be unexpired.
                    if rec.publish_until.is_some_and(|until| until > now) {
                        retired.push(rec);
                    }
                }
                other => tracing::warn!(
                    kid = %rec.kid,
                    state = other,
                    "ignoring signing key record with unknown state"
                ),
            }
        }
        let active_rec = match actives.as_slice() {
            [] => return Err(KeyError::NoActiveKey),
            [one] => *one,
            many => return Err(KeyError::MultipleActiveKeys(many.len())),
        };
        // Stable, meaningful JWKS order: oldest next first, newest retired first.
        nexts.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        retired.sort_by(|a, b| (b.retired_at, &b.kid).cmp(&(a.retired_at, &a.kid)));

        let mut verifying: Vec<VerifyingKey> = Vec::new();
        let mut jwks = Vec::new();
        for rec in std::iter::once(active_rec).chain(nexts).chain(retired) {
            if verifying.iter().any(|v| v.kid == rec.kid) {
                return Err(invalid(rec, "kid appears in more than one record"));
            }
            let (alg, public) = parse_public(rec)?;
            let decoding = public
                .decoding_key()
                .map_err(|reason| invalid(rec, &reason))?;
            jwks.push(public.to_jwk(&rec.kid));
            verifying.push(VerifyingKey {
                kid: rec.kid.clone(),
                alg,
                decoding,
            });
        }
        // The active record went first through the loop above.
        let (Some(active_verifying), Some(public_jwk)) = (verifying.first(), jwks.first().cloned())
        else {
            return Err(KeyError::NoActiveKey);
        };
        let alg = active_verifying.alg;
        let key = unseal(active_rec, alg, kek, &active_verifying.decoding)?;

        Ok(KeyRing {
            tenant_id,
            active: SigningKey {
                kid: active_rec.kid.clone(),
                alg,
                signer: Signer::new(alg, &active_rec.kid, key),
                public_jwk,
            },
            verifying,
            jwks: serde_json::json!({ "keys": jwks }),
        })
    }

    /// The tenant these keys belong to.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// A key tokens are accepted from, by kid.
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.iter().find(|k| k.kid == kid)
    }

    /// The JWK Set to publish: `{"keys": [...]}` with the public JWKs of the
    /// active key, the next key(s) and still-published retired keys.
    pub fn jwks(&self) -> Value {
        self.jwks.clone()
    }

    /// Signs `claims` with the active key. The header carries the key's
    /// `alg`, its `kid` and `typ` (e.g. `"at+jwt"` for RFC 9068 access tokens).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        self.active.signer.sign(typ, claims)
    }

    /// Verifies a compact JWS signed by one of this ring's keys and returns its claims.
    ///
    /// Checks, in order: header shape (no `crit`), `kid` known, `alg` equal to
    /// that key's algorithm, `typ` when `expected_typ` is given (case-insensitive,
    /// `application/` prefix optional), the signature, then `exp` (required,
    /// `now < exp`) and `nbf` (if present, `nbf <= now`) against `now` with no
    /// leeway. Does not check `iss`, `aud` or anything else: callers do.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        expected_typ: Option<&str>,
        now: i64,
    ) -> Result<T, KeyError> {
        let header = parse_header(token)?;
        // We implement no JWS extensions, so any `crit` must be refused (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(KeyError::MalformedToken(
                "critical header extensions are not supported".into(),
            ));
        }
        let key = match header.get("kid") {
            Some(Value::String(kid)) => self
                .verifying_key(kid)
                .ok_or_else(|| KeyError::UnknownKid(Some(truncated(kid))))?,
            _ => return Err(KeyError::UnknownKid(None)),
        };
        let alg = header.get("alg").and_then(Value::as_str);
        if alg != Some(key.alg.as_str()) {
            return Err(KeyError::AlgorithmMismatch {
                expected: key.alg.as_str(),
                got: alg.map_or_else(|| "(missing)".to_owned(), truncated),
            });
        }
        if let Some(expected) = expected_typ {
            let typ = header.get("typ").and_then(Value::as_str);
            if !typ.is_some_and(|typ| typ_matches(typ, expected)) {
                return Err(KeyError::TypMismatch {
                    expected: expected.to_owned(),
                    got: typ.map(truncated),
                });
            }
        }

        // Signature only: time is checked below against the caller's clock,
        // and iss/aud belong to the caller.
        let mut validation = Validation::new(key.alg.to_jsonwebtoken());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => KeyError::InvalidSignature,
                _ => KeyError::MalformedToken(e.to_string()),
            })?
            .claims;

        let exp = numeric_date(&claims, "exp")?
            .ok_or_else(|| KeyError::InvalidClaims("missing exp".into()))?;
        if now >= exp {
            return Err(KeyError::Expired);
        }
        if let Some(nbf) = numeric_date(&claims, "nbf")? {
            if now < nbf {
                return Err(KeyError::NotYetValid);
            }
        }
        serde_json::from_value(Value::Object(claims))
            .map_err(|e| KeyError::InvalidClaims(e.to_string()))
    }
}

/// All records must belong to one tenant: a ring spanning tenants would let
/// one tenant's tokens be accepted by another.
fn single_tenant(records: &[KeyRecord]) -> Result<String, KeyError> {
    let Some(first) = records.first() else {
        return Err(KeyError::NoActiveKey);
    };
    if let Some(other) = records.iter().find(|r| r.tenant_id != first.tenant_id) {
        return Err(KeyError::TenantMismatch {
            kid: other.kid.clone(),
            expected: first.tenant_id.clone(),
            found: other.tenant_id.clone(),
        });
    }
    Ok(first.tenant_id.clone())
}

fn invalid(rec: &KeyRecord, reason: &str) -> KeyError {
    KeyError::InvalidRecord {
        kid: rec.kid.clone(),
        reason: reason.to_owned(),
    }
}

/// Parses and cross-checks a record's public side: alg, JWK, and that the
/// kid is the thumbprint of the key (so a JWK cannot be swapped under a kid).
fn parse_public(rec: &KeyRecord) -> Result<(Alg, PublicKey), KeyError> {
    let alg: Alg = rec
        .alg
        .parse()
        .map_err(|e: KeyError| invalid(rec, &e.to_string()))?;
    let jwk: Value = serde_json::from_str(&rec.public_jwk)
        .map_err(|_| invalid(rec, "public_jwk is not valid JSON"))?;
    let public = PublicKey::from_jwk(alg, &jwk).map_err(|reason| invalid(rec, &reason))?;
    if public.kid() != rec.kid {
        return Err(invalid(rec, "kid is not the thumbprint of its public key"));
    }
    if jwk
        .get("kid")
        .is_some_and(|kid| kid.as_str() != Some(&rec.kid))
    {
        return Err(invalid(rec, "public JWK kid differs from the record's kid"));
    }
    Ok((alg, public))
}

/// Decrypts the record's private key (AAD = kid) and proves it matches the
/// published public key by signing a probe and verifying it with that key.
fn unseal(
    rec: &KeyRecord,
    alg: Alg,
    kek: &Kek,
    decoding: &DecodingKey,
) -> Result<PrivateKey, KeyError> {
    let mut der = kek
        .decrypt(&rec.private_enc, rec.kid.as_bytes())
        .map_err(|_| {
            invalid(
                rec,
                "cannot decrypt private key (wrong key-encryption key, or the record was altered)",
            )
        })?;
    let key = PrivateKey::from_pkcs8(alg, &der);
    wipe(&mut der);
    let key = key.map_err(|reason| invalid(rec, &reason))?;
    let signature = key
        .sign(PROBE)
        .map_err(|_| invalid(rec, "private key is not usable for its algorithm"))?;
    let matches = jsonwebtoken::crypto::verify(
        &URL_SAFE_NO_PAD.encode(signature),
        PROBE,
        decoding,
        alg.to_jsonwebtoken(),
    )
    .unwrap_or(false);
    if !matches {
        return Err(invalid(rec, "private key does not match its public key"));
    }
    Ok(key)
}

/// The `kid` in a compact JWS's protected header, unverified: for callers
/// that verified the token already and need to know which key signed it.
pub fn token_kid(token: &str) -> Option<String> {
    match parse_header(token).ok()?.remove("kid")? {
        Value::String(kid) => Some(kid),
        _ => None,
    }
}

/// Decodes the protected header of a compact JWS (exactly three parts).
fn parse_header(token: &str) -> Result<Map<String, Value>, KeyError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::MalformedToken(
            "not a compact JWS (three dot-separated parts)".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| KeyError::MalformedToken("header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| KeyError::MalformedToken("header is not a JSON object".into()))
}

/// RFC 7515 §4.1.9: media types are case-insensitive and the `application/`
/// prefix may be left out.
fn typ_matches(got: &str, expected: &str) -> bool {
    fn normalize(t: &str) -> String {
        let t = t.trim().to_ascii_lowercase();
        match t.strip_prefix("application/") {
            Some(rest) => rest.to_owned(),
            None => t,
        }
    }
    normalize(got) == normalize(expected)
}

/// A NumericDate claim (RFC 7519 §2): integer or fractional seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, KeyError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    value
        .as_i64()
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.floor() as i64) // saturating cast
        })
        .map(Some)
        .ok_or_else(|| KeyError::InvalidClaims(format!("{name} is not a number")))
}

/// Attacker-controlled header values, shortened before they reach error text and logs.
fn truncated(s: &str) -> String {
    s.chars().take(MAX_KID_IN_ERROR).collect()
}

#[cfg(test)]
mod tests {
    use super::super::crypto::{encoding_key_from_pkcs8, generate_key};
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    /// The record's private key as jsonwebtoken's signing key, to forge
    /// tokens `sign` would never make.
    fn encoding_key(kek: &Kek, rec: &KeyRecord, alg: Alg) -> EncodingKey {
        let mut der = kek.decrypt(&rec.private_enc, rec.kid.as_bytes()).unwrap();
        let key = encoding_key_from_pkcs8(alg, &der).unwrap();
        wipe(&mut der);
        key
    }

    const TENANT: &str = "t1";
    const NOW: i64 = 1_700_000_000;

    fn record(alg: Alg, kek: &Kek, state: &str) -> KeyRecord {
        generate_key(alg, TENANT, kek, NOW - 1000, state).unwrap()
    }

    fn retired(alg: Alg, kek: &Kek, publish_until: Option<i64>) -> KeyRecord {
        let mut rec = record(alg, kek, STATE_ACTIVE);
        rec.state = STATE_RETIRED.into();
        rec.retired_at = Some(NOW - 10);
        rec.publish_until = publish_until;
        rec
    }

    fn ring(alg: Alg) -> (Kek, Vec<KeyRecord>, KeyRing) {
        let kek = Kek::generate();
        let records = vec![
            record(alg, &kek, STATE_ACTIVE),
            record(alg, &kek, STATE_NEXT),
        ];
        let ring = KeyRing::load(&records, &kek, NOW).unwrap();
        (kek, records, ring)
    }

    fn claims(exp: i64) -> Value {
        json!({"iss": "https://issuer", "sub": "alice", "aud": "https://mcp", "exp": exp})
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// Signs an arbitrary header and payload, for tokens `sign` would never make.
    fn sign_raw(header: &Value, payload: &Value, key: &EncodingKey, alg: Alg) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg.to_jsonwebtoken());
        format!("{message}.{}", sig.unwrap())
    }

    fn verify(ring: &KeyRing, token: &str) -> Result<Value, KeyError> {
        ring.verify::<Value>(token, Some("at+jwt"), NOW)
    }

    #[test]
    fn sign_verify_round_trip_each_alg() {
        for alg in Alg::ALL {
            let (_, records, ring) = ring(alg);
            assert_eq!(ring.active().kid, records[0].kid);
            assert_eq!(ring.tenant_id(), TENANT);
            let token = ring.sign("at+jwt", &claims(NOW + 60)).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, alg.to_jsonwebtoken());
            assert_eq!(header.kid.as_deref(), Some(records[0].kid.as_str()));
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let got = verify(&ring, &token).unwrap();
            assert_eq!(got, claims(NOW + 60), "{alg}");
        }
    }

    #[test]
    fn jwks_publishes_active_next_and_unexpired_retired_only() {
        let kek = Kek::generate();
        let records = vec![
            record(Alg::ES256, &kek, STATE_ACTIVE),
            record(Alg::EdDSA, &kek, STATE_NEXT),
            retired(Alg::RS256, &kek, Some(NOW + 100)),
            retired(Alg::ES256, &kek, Some(NOW)), // window ends now: dropped
            retired(Alg::ES256, &kek, None),
        ];
        let ring = KeyRing::load(&records, &kek, NOW).unwrap();
        let jwks = ring.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, [&records[0].kid, &records[1].kid, &records[2].kid]);
        let allowed = ["kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"];
        for key in keys {
            for member in key.as_object().unwrap().keys() {
                assert!(allowed.contains(&member.as_str()), "unexpected {member}");
            }
            assert_eq!(key["use"], "sig");
        }
        for private in [
            "\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\"", "\"k\"",
        ] {
            assert!(!jwks.to_string().contains(private));
        }
        // Dropped keys no longer verify anything.
        assert!(ring.verifying_key(&records[3].kid).is_none());
        assert!(ring.verifying_key(&records[4].kid).is_none());
    }

    #[test]
    fn tokens_from_next_and_published_retired_keys_verify() {
        let kek = Kek::generate();
        let old = retired(Alg::ES256, &kek, Some(NOW + 100));
        let next = record(Alg::ES256, &kek, STATE_NEXT);
        let records = vec![record(Alg::ES256, &kek, STATE_ACTIVE), next.clone(), old];
        let ring = KeyRing::load(&records, &kek, NOW).unwrap();
        for rec in &records[1..] {
            let mut as_active = rec.clone();
            as_active.state = STATE_ACTIVE.into();
            let signer = KeyRing::load(&[as_active], &kek, NOW).unwrap();
            let token = signer.sign("at+jwt", &claims(NOW + 60)).unwrap();
            assert!(verify(&ring, &token).is_ok());
        }
    }

    #[test]
    fn tampered_token_fails() {
        let (_, _, ring) = ring(Alg::ES256);
        let token = ring.sign("at+jwt", &claims(NOW + 60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(NOW + 60);
        forged["sub"] = json!("mallory");
        let swapped = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
        assert!(matches!(
            verify(&ring, &swapped),
            Err(KeyError::InvalidSignature)
        ));

        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert!(matches!(
            verify(&ring, &flipped),
            Err(KeyError::InvalidSignature)
        ));

        for garbage in ["", "a.b", "a.b.c.d", "!!.e30.", &format!("{token}.x")] {
            assert!(matches!(
                verify(&ring, garbage),
                Err(KeyError::MalformedToken(_))
            ));
        }
    }

    #[test]
    fn token_from_another_key_with_same_kid_fails() {
        for alg in Alg::ALL {
            let (kek, records, ring) = ring(alg);
            let imposter = record(alg, &kek, STATE_ACTIVE);
            let key = encoding_key(&kek, &imposter, alg);
            let mut header = Header::new(alg.to_jsonwebtoken());
            header.kid = Some(records[0].kid.clone());
            header.typ = Some("at+jwt".into());
            let token = jsonwebtoken::encode(&header, &claims(NOW + 60), &key).unwrap();
            assert!(
                matches!(verify(&ring, &token), Err(KeyError::InvalidSignature)),
                "{alg}"
            );
        }
    }

    #[test]
    fn hmac_with_public_key_as_secret_fails() {
        for alg in Alg::ALL {
            let (_, records, ring) = ring(alg);
            let kid = &records[0].kid;
            // Classic confusion: the public key material, in the forms a
            // careless verifier might feed to HMAC.
            let jwk = ring.active().public_jwk.to_string();
            let x = ring.active().public_jwk["x"].as_str().map(str::to_owned);
            let n = ring.active().public_jwk["n"].as_str().map(str::to_owned);
            let mut secrets = vec![jwk.into_bytes(), records[0].public_jwk.clone().into_bytes()];
            secrets.extend(
                x.into_iter()
                    .chain(n)
                    .map(|s| URL_SAFE_NO_PAD.decode(s).unwrap()),
            );
            for secret in secrets {
                for hs in [
                    jsonwebtoken::Algorithm::HS256,
                    jsonwebtoken::Algorithm::HS384,
                    jsonwebtoken::Algorithm::HS512,
                ] {
                    let mut header = Header::new(hs);
                    header.kid = Some(kid.clone());
                    header.typ = Some("at+jwt".into());
                    let token = jsonwebtoken::encode(
                        &header,
                        &claims(NOW + 60),
                        &EncodingKey::from_secret(&secret),
                    )
                    .unwrap();
                    assert!(matches!(
                        verify(&ring, &token),
                        Err(KeyError::AlgorithmMismatch { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn alg_none_and_other_families_fail() {
        let (_, records, ring) = ring(Alg::ES256);
        let kid = &records[0].kid;
        let payload = b64(&claims(NOW + 60));
        for alg in [
            "none", "None", "NONE", "", "ES384", "EdDSA", "RS256", "PS256",
        ] {
            let header = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
            for sig in ["", "AAAA"] {
                let token = format!("{}.{payload}.{sig}", b64(&header));
                assert!(
                    matches!(
                        verify(&ring, &token),
                        Err(KeyError::AlgorithmMismatch { .. })
                    ),
                    "{alg}"
                );
            }
        }
        let no_alg = format!("{}.{payload}.", b64(&json!({"kid": kid})));
        assert!(matches!(
            verify(&ring, &no_alg),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn unknown_or_missing_kid_fails() {
        let (_, _, ring) = ring(Alg::ES256);
        let other = ring_token_from_fresh_ring();
        assert!(matches!(
            verify(&ring, &other),
            Err(KeyError::UnknownKid(Some(_)))
        ));
        let payload = b64(&claims(NOW + 60));
        let no_kid = format!("{}.{payload}.", b64(&json!({"alg": "ES256"})));
        assert!(matches!(
            verify(&ring, &no_kid),
            Err(KeyError::UnknownKid(None))
        ));
    }

    fn ring_token_from_fresh_ring() -> String {
        let (_, _, other) = ring(Alg::ES256);
        other.sign("at+jwt", &claims(NOW + 60)).unwrap()
    }

    #[test]
    fn typ_is_checked_when_expected() {
        let (kek, records, ring) = ring(Alg::ES256);
        let at = ring.sign("at+jwt", &claims(NOW + 60)).unwrap();
        let id = ring.sign("JWT", &claims(NOW + 60)).unwrap();
        assert!(matches!(
            verify(&ring, &id),
            Err(KeyError::TypMismatch { .. })
        ));
        assert!(ring.verify::<Value>(&at, Some("JWT"), NOW).is_err());
        assert!(ring.verify::<Value>(&id, Some("jwt"), NOW).is_ok());
        assert!(ring
            .verify::<Value>(&at, Some("application/at+jwt"), NOW)
            .is_ok());
        assert!(ring.verify::<Value>(&at, Some("AT+JWT"), NOW).is_ok());
        assert!(ring.verify::<Value>(&id, None, NOW).is_ok());

        let prefixed = ring.sign("application/AT+JWT", &claims(NOW + 60)).unwrap();
        assert!(verify(&ring, &prefixed).is_ok());

        let key = &encoding_key(&kek, &records[0], Alg::ES256);
        let kid = &ring.active().kid;
        let untyped = sign_raw(
            &json!({"alg": "ES256", "kid": kid}),
            &claims(NOW + 60),
            key,
            Alg::ES256,
        );
        assert!(matches!(
            verify(&ring, &untyped),
            Err(KeyError::TypMismatch { got: None, .. })
        ));
        assert!(ring.verify::<Value>(&untyped, None, NOW).is_ok());
    }

    #[test]
    fn expiry_uses_the_given_clock() {
        let (_, _, ring) = ring(Alg::EdDSA);
        let token = ring.sign("at+jwt", &claims(NOW + 60)).unwrap();
        assert!(ring.verify::<Value>(&token, None, NOW + 59).is_ok());
        // No leeway: at exp the token is already expired (RFC 7519 §4.1.4).
        assert!(matches!(
            ring.verify::<Value>(&token, None, NOW + 60),
            Err(KeyError::Expired)
        ));
        // Long expired by the system clock, still valid by the given one.
        let old = ring.sign("at+jwt", &claims(1_000)).unwrap();
        assert!(ring.verify::<Value>(&old, None, 999).is_ok());
        assert!(matches!(
            ring.verify::<Value>(&old, None, NOW),
            Err(KeyError::Expired)
        ));
    }

    #[test]
    fn nbf_and_missing_exp_are_enforced() {
        let (_, _, ring) = ring(Alg::ES256);
        let mut early = claims(NOW + 60);
        early["nbf"] = json!(NOW + 10);
        let token = ring.sign("at+jwt", &early).unwrap();
        assert!(matches!(verify(&ring, &token), Err(KeyError::NotYetValid)));
        assert!(ring.verify::<Value>(&token, None, NOW + 10).is_ok());

        let mut no_exp = claims(0);
        no_exp.as_object_mut().unwrap().remove("exp");
        let token = ring.sign("at+jwt", &no_exp).unwrap();
        assert!(matches!(
            verify(&ring, &token),
            Err(KeyError::InvalidClaims(_))
        ));

        let mut bad_exp = claims(0);
        bad_exp["exp"] = json!("tomorrow");
        let token = ring.sign("at+jwt", &bad_exp).unwrap();
        assert!(matches!(
            verify(&ring, &token),
            Err(KeyError::InvalidClaims(_))
        ));

        let mut fractional = claims(0);
        fractional["exp"] = json!(NOW as f64 + 0.5);
        let token = ring.sign("at+jwt", &fractional).unwrap();
        assert!(matches!(verify(&ring, &token), Err(KeyError::Expired)));
    }

    #[test]
    fn crit_header_is_refused() {
        let (kek, records, ring) = ring(Alg::ES256);
        let header = json!({"alg": "ES256", "kid": ring.active().kid, "typ": "at+jwt", "crit": ["b64"], "b64": false});
        let token = sign_raw(
            &header,
            &claims(NOW + 60),
            &encoding_key(&kek, &records[0], Alg::ES256),
            Alg::ES256,
        );
        assert!(matches!(
            verify(&ring, &token),
            Err(KeyError::MalformedToken(_))
        ));
    }

    #[test]
    fn claims_deserialize_into_callers_type() {
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
            exp: i64,
        }
        let (_, _, ring) = ring(Alg::ES256);
        let token = ring.sign("JWT", &claims(NOW + 60)).unwrap();
        let c: Claims = ring.verify(&token, Some("JWT"), NOW).unwrap();
        assert_eq!((c.sub.as_str(), c.exp), ("alice", NOW + 60));
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Needs {
            missing: String,
        }
        assert!(matches!(
            ring.verify::<Needs>(&token, None, NOW),
            Err(KeyError::InvalidClaims(_))
        ));
    }

    #[test]
    fn load_requires_exactly_one_active_key() {
        let kek = Kek::generate();
        let next = record(Alg::ES256, &kek, STATE_NEXT);
        assert!(matches!(
            KeyRing::load(std::slice::from_ref(&next), &kek, NOW),
            Err(KeyError::NoActiveKey)
        ));
        assert!(matches!(
            KeyRing::load(&[], &kek, NOW),
            Err(KeyError::NoActiveKey)
        ));
        let two = [
            record(Alg::ES256, &kek, STATE_ACTIVE),
            record(Alg::ES256, &kek, STATE_ACTIVE),
            next,
        ];
        assert!(matches!(
            KeyRing::load(&two, &kek, NOW),
            Err(KeyError::MultipleActiveKeys(2))
        ));
    }

    #[test]
    fn load_refuses_wrong_kek_and_moved_blobs() {
        let (kek, records, _) = ring(Alg::ES256);
        assert!(matches!(
            KeyRing::load(&records, &Kek::generate(), NOW),
            Err(KeyError::InvalidRecord { .. })
        ));
        // The next key's sealed private key moved onto the active record:
        // the kid is the AAD, so it does not open.
        let mut swapped = records.clone();
        swapped[0].private_enc = records[1].private_enc.clone();
        match KeyRing::load(&swapped, &kek, NOW) {
            Err(KeyError::InvalidRecord { kid, reason }) => {
                assert_eq!(kid, records[0].kid);
                assert!(reason.contains("decrypt"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn load_refuses_inconsistent_records() {
        let (kek, records, _) = ring(Alg::ES256);

        let mut other_tenant = records.clone();
        other_tenant[1].tenant_id = "t2".into();
        assert!(matches!(
            KeyRing::load(&other_tenant, &kek, NOW),
            Err(KeyError::TenantMismatch { .. })
        ));

        // Public JWK of another key under this kid.
        let mut jwk_swap = records.clone();
        jwk_swap[0].public_jwk = records[1].public_jwk.clone();
        assert!(KeyRing::load(&jwk_swap, &kek, NOW).is_err());

        let mut renamed = records.clone();
        renamed[1].kid = "chosen-kid".into();
        assert!(matches!(
            KeyRing::load(&renamed, &kek, NOW),
            Err(KeyError::InvalidRecord { .. })
        ));

        let mut dup = records.clone();
        dup[1] = records[0].clone();
        dup[1].state = STATE_NEXT.into();
        assert!(matches!(
            KeyRing::load(&dup, &kek, NOW),
            Err(KeyError::InvalidRecord { .. })
        ));

        let mut alg_lie = records.clone();
        alg_lie[0].alg = "HS256".into();
        assert!(matches!(
            KeyRing::load(&alg_lie, &kek, NOW),
            Err(KeyError::InvalidRecord { .. })
        ));

        let mut unknown_state = records;
        unknown_state[1].state = "paused".into();
        let ring = KeyRing::load(&unknown_state, &kek, NOW).unwrap();
        assert_eq!(ring.jwks()["keys"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn debug_output_hides_key_material() {
        let (kek, records, ring) = ring(Alg::RS256);
        let text = format!("{ring:?} {:?} {kek:?}", ring.active());
        assert!(text.contains(&records[0].kid));
        assert!(!text.contains("EncodingKey"));
        assert!(!text.contains(&ring.active().public_jwk["n"].as_str().unwrap()[..16]));
    }
}
