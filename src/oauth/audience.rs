//! Whom an assertion is addressed to: client assertions (private_key_jwt,
//! RFC 7523 §3) and authorization grant assertions (the ID-JAG of the
//! jwt-bearer grant). draft-ietf-oauth-rfc7523bis closes "audience
//! injection": an assertion a client signed for another server, whose `aud`
//! also names us (an array), or names an endpoint URL a malicious server
//! advertised as its own, must not authenticate here. So `aud` must be this
//! server's issuer identifier alone: a string, or an array of exactly that
//! one string. The token endpoint URL is accepted only where the tenant
//! allows it (`[tenants.client_assertion] accept_token_endpoint_audience`).

use serde_json::Value;

use crate::tenants::Tenant;

/// The `aud` values that name this tenant: its issuer identifier, and, for
/// an issuer without a path, the same URL with a trailing `/` (RFC 3986
/// §6.2.3: the same resource; URL libraries such as pydantic's, used by the
/// MCP Python SDK, write a bare origin that way).
pub fn issuer_audiences(tenant: &Tenant) -> Vec<String> {
    let mut out = vec![tenant.issuer.clone()];
    if let Ok(url) = url::Url::parse(&tenant.issuer) {
        if url.path() == "/" && !tenant.issuer.ends_with('/') {
            out.push(format!("{}/", tenant.issuer));
        }
    }
    out
}

/// The `aud` values a client assertion may carry at any endpoint of this
/// tenant that authenticates clients.
pub fn client_assertion_audiences(tenant: &Tenant) -> Vec<String> {
    let mut out = issuer_audiences(tenant);
    if tenant
        .settings
        .client_assertion
        .accept_token_endpoint_audience
    {
        out.push(tenant.endpoint("/token"));
    }
    out
}

/// `aud` names exactly one audience, and it is one of `accepted` (simple
/// string comparison, RFC 7523 §3). An array with several values (ours and
/// another's) is refused, whatever it contains.
pub fn check_sole_audience(aud: Option<&Value>, accepted: &[String]) -> Result<(), &'static str> {
    let single = match aud {
        Some(Value::String(s)) => s,
        Some(Value::Array(list)) => match list.as_slice() {
            [Value::String(s)] => s,
            [] => return Err("aud is empty"),
            [_] => return Err("aud must be a string"),
            _ => {
                return Err("aud must name this authorization server alone, not several audiences")
            }
        },
        Some(_) => return Err("aud must be a string"),
        None => return Err("aud is required"),
    };
    if accepted.iter().any(|a| a == single) {
        Ok(())
    } else {
        Err("aud must be this authorization server's issuer identifier")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://as.example.com/t/acme";

    fn ok(aud: Value) -> bool {
        check_sole_audience(Some(&aud), &[ISS.to_string()]).is_ok()
    }

    #[test]
    fn the_issuer_as_a_string_is_accepted() {
        assert!(ok(json!(ISS)));
    }

    #[test]
    fn a_one_element_array_of_the_issuer_is_accepted() {
        assert!(ok(json!([ISS])));
    }

    #[test]
    fn an_array_naming_another_server_too_is_refused() {
        assert!(!ok(json!(["https://evil.example.com", ISS])));
        assert!(!ok(json!([ISS, ISS])));
    }

    #[test]
    fn other_values_are_refused() {
        assert!(!ok(json!("https://as.example.com/t/acme/token")));
        assert!(!ok(json!("https://as.example.com/t/acme/")));
        assert!(!ok(json!([])));
        assert!(!ok(json!([42])));
        assert!(!ok(json!(42)));
        assert!(check_sole_audience(None, &[ISS.to_string()]).is_err());
    }
}
