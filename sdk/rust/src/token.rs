//! What a successful verification yields.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::VerifyError;

/// How deep an `act` chain may nest before the token is refused.
const MAX_ACTOR_DEPTH: usize = 16;

/// A verified access token: who it is for, who holds it, what it allows.
///
/// Produced only by [`Verifier::verify`](crate::Verifier::verify); the axum
/// layer puts it in the request extensions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifiedToken {
    /// `iss`: the configured issuer.
    pub issuer: String,
    /// `sub`: a user's stable id in the tenant, or the client id for
    /// `client_credentials` tokens.
    pub subject: String,
    /// `client_id`: the client the token was issued to.
    pub client_id: String,
    /// `scope`, split on spaces.
    pub scopes: Vec<String>,
    /// The audience that matched: this resource's canonical URI.
    pub audience: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// `iat`, Unix seconds (always present in Gatehouse tokens).
    pub issued_at: Option<i64>,
    /// `auth_time`, Unix seconds: present for user tokens only.
    pub auth_time: Option<i64>,
    /// `jti`: the token's unique id.
    pub jti: Option<String>,
    /// RFC 8693 §4.1 `act`: the party acting on the subject's behalf, with
    /// the earlier actors nested inside it.
    pub act: Option<Actor>,
    /// Every claim, as received (JWT payload or introspection response).
    pub claims: Value,
    #[serde(skip)]
    pub(crate) resource_metadata_url: Arc<str>,
}

impl VerifiedToken {
    /// Whether the token was granted `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Which of `needed` the token lacks (empty when it has them all).
    pub fn missing_scopes<'a, I>(&self, needed: I) -> Vec<String>
    where
        I: IntoIterator<Item = &'a str>,
    {
        needed
            .into_iter()
            .filter(|s| !self.has_scope(s))
            .map(str::to_string)
            .collect()
    }

    /// Whether a user signed in for this token (`auth_time` present), as
    /// opposed to a service using `client_credentials`.
    pub fn is_user(&self) -> bool {
        self.auth_time.is_some()
    }

    /// The RFC 9728 metadata URL of the resource that verified the token,
    /// for challenges built from it (see
    /// [`require_scope`](crate::require_scope)).
    pub fn resource_metadata_url(&self) -> &str {
        &self.resource_metadata_url
    }
}

/// One link of an RFC 8693 `act` chain: the current actor, and in `act` the
/// one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub sub: String,
    pub client_id: Option<String>,
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The actors from this one back to the first, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &Actor> {
        std::iter::successors(Some(self), |a| a.act.as_deref())
    }

    fn parse(value: &Value, depth: usize) -> Result<Actor, VerifyError> {
        if depth >= MAX_ACTOR_DEPTH {
            return Err(VerifyError::malformed("act chain is too deep"));
        }
        let obj = value
            .as_object()
            .ok_or_else(|| VerifyError::malformed("act must be an object"))?;
        let sub = obj
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::malformed("act has no sub"))?
            .to_string();
        let client_id = optional_string(obj, "act.client_id", "client_id")?;
        let act = match obj.get("act") {
            None | Some(Value::Null) => None,
            Some(inner) => Some(Box::new(Actor::parse(inner, depth + 1)?)),
        };
        Ok(Actor {
            sub,
            client_id,
            act,
        })
    }
}

/// Claims that both JWTs and introspection responses are read into, before
/// the issuer/audience/time checks.
pub(crate) struct RawClaims {
    pub iss: String,
    pub sub: String,
    pub client_id: String,
    pub aud: Vec<String>,
    pub scope: Vec<String>,
    pub exp: i64,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub auth_time: Option<i64>,
    pub jti: Option<String>,
    pub act: Option<Actor>,
}

/// Whether iat and jti must be present (RFC 9068 §2.2 for JWTs; optional
/// in RFC 7662 responses).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    Jwt,
    Introspection,
}

impl RawClaims {
    pub fn read(claims: &Map<String, Value>, strictness: Strictness) -> Result<Self, VerifyError> {
        let required = |name: &str| -> Result<String, VerifyError> {
            match claims.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(VerifyError::malformed(format!("{name} must be a string"))),
                None => Err(VerifyError::malformed(format!("missing claim {name}"))),
            }
        };
        let aud = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| VerifyError::malformed("aud must hold strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(VerifyError::malformed("aud must be a string or array")),
            None => return Err(VerifyError::malformed("missing claim aud")),
        };
        let scope = match claims.get("scope") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            Some(_) => return Err(VerifyError::malformed("scope must be a string")),
        };
        let exp = numeric_date(claims, "exp")?
            .ok_or_else(|| VerifyError::malformed("missing claim exp"))?;
        let iat = numeric_date(claims, "iat")?;
        let jti = optional_string(claims, "jti", "jti")?;
        if strictness == Strictness::Jwt {
            if iat.is_none() {
                return Err(VerifyError::malformed("missing claim iat"));
            }
            if jti.is_none() {
                return Err(VerifyError::malformed("missing claim jti"));
            }
        }
        let act = match claims.get("act") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Actor::parse(v, 0)?),
        };
        Ok(RawClaims {
            iss: required("iss")?,
            sub: required("sub")?,
            client_id: required("client_id")?,
            aud,
            scope,
            exp,
            iat,
            nbf: numeric_date(claims, "nbf")?,
            auth_time: numeric_date(claims, "auth_time")?,
            jti,
            act,
        })
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    label: &str,
    name: &str,
) -> Result<Option<String>, VerifyError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(VerifyError::malformed(format!("{label} must be a string"))),
    }
}

/// An RFC 7519 NumericDate: a JSON number of seconds, possibly fractional
/// (truncated here).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, VerifyError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| VerifyError::malformed(format!("{name} is not a valid date"))),
        Some(_) => Err(VerifyError::malformed(format!("{name} must be a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn base() -> Value {
        json!({"iss": "i", "sub": "s", "client_id": "c", "aud": "a", "exp": 10, "iat": 1, "jti": "j"})
    }

    #[test]
    fn act_chain_nests() {
        let mut v = base();
        v["act"] = json!({"sub": "agent", "client_id": "a1", "act": {"sub": "first"}});
        let c = RawClaims::read(&obj(v), Strictness::Jwt).unwrap();
        let act = c.act.unwrap();
        let subs: Vec<&str> = act.chain().map(|a| a.sub.as_str()).collect();
        assert_eq!(subs, ["agent", "first"]);
        assert_eq!(act.client_id.as_deref(), Some("a1"));
    }

    #[test]
    fn deep_act_chain_refused() {
        let mut act = json!({"sub": "x"});
        for _ in 0..40 {
            act = json!({"sub": "x", "act": act});
        }
        let mut v = base();
        v["act"] = act;
        assert!(RawClaims::read(&obj(v), Strictness::Jwt).is_err());
    }

    #[test]
    fn jwt_needs_jti_and_iat_introspection_does_not() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("jti");
        assert!(RawClaims::read(&obj(v.clone()), Strictness::Jwt).is_err());
        assert!(RawClaims::read(&obj(v), Strictness::Introspection).is_ok());
    }

    #[test]
    fn fractional_exp_accepted() {
        let mut v = base();
        v["exp"] = json!(10.7);
        assert_eq!(RawClaims::read(&obj(v), Strictness::Jwt).unwrap().exp, 10);
    }

    #[test]
    fn wrong_types_refused() {
        for (k, bad) in [
            ("exp", json!("10")),
            ("aud", json!(5)),
            ("scope", json!(["a"])),
            ("sub", json!(1)),
        ] {
            let mut v = base();
            v[k] = bad;
            assert!(RawClaims::read(&obj(v), Strictness::Jwt).is_err(), "{k}");
        }
    }
}
