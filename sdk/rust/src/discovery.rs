//! Authorization server metadata (RFC 8414, OpenID Connect Discovery).

use serde_json::{Map, Value};
use url::Url;

use crate::error::VerifyError;
use crate::fetch;
use crate::resource::well_known_url;

/// What the verifier takes from the issuer's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMetadata {
    /// The `issuer` member, equal to the configured issuer.
    pub issuer: String,
    /// Where the signing keys are.
    pub jwks_uri: String,
    /// Where opaque tokens are introspected, if the server says so.
    pub introspection_endpoint: Option<String>,
}

/// Checks that `issuer` is usable as an RFC 8414 issuer identifier.
pub(crate) fn check_issuer(issuer: &str) -> Result<Url, VerifyError> {
    let url =
        Url::parse(issuer).map_err(|_| VerifyError::InvalidConfig("issuer is not a URL".into()))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(VerifyError::InvalidConfig(
            "issuer must be an https (or, for development, http) URL".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || issuer.contains(['?', '#']) {
        return Err(VerifyError::InvalidConfig(
            "issuer must not have a query or fragment".into(),
        ));
    }
    Ok(url)
}

/// The metadata URLs to try, in order: RFC 8414 path insertion
/// (`https://h/.well-known/oauth-authorization-server/t/acme`), then the
/// OpenID Connect form (`https://h/t/acme/.well-known/openid-configuration`).
pub(crate) fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = Vec::with_capacity(2);
    if let Some(url) = well_known_url(trimmed, "oauth-authorization-server") {
        urls.push(url);
    }
    urls.push(format!("{trimmed}/.well-known/openid-configuration"));
    urls
}

/// Fetches and checks the issuer's metadata.
pub(crate) async fn discover(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<ServerMetadata, VerifyError> {
    let issuer_url = check_issuer(issuer)?;
    let mut last_error = None;
    for url in metadata_urls(issuer) {
        let doc = match fetch::get_json(http, &url, "discovery").await {
            Ok((doc, _)) => doc,
            Err(e) => {
                tracing::debug!(%url, error = %e, "metadata not available here");
                last_error = Some(e);
                continue;
            }
        };
        // A document for another issuer is never silently skipped: it means
        // a misconfiguration or a mix-up attack (RFC 8414 §3.3).
        return read_metadata(&doc, issuer, &issuer_url);
    }
    Err(last_error.unwrap_or_else(|| VerifyError::upstream("discovery: no metadata URL")))
}

fn read_metadata(
    doc: &Map<String, Value>,
    issuer: &str,
    issuer_url: &Url,
) -> Result<ServerMetadata, VerifyError> {
    let found = doc.get("issuer").and_then(Value::as_str);
    if found != Some(issuer) {
        return Err(VerifyError::InvalidConfig(format!(
            "the discovery document names issuer {}, not the configured {issuer}",
            found.map_or_else(|| "(none)".to_string(), |s| format!("{s:?}"))
        )));
    }
    let endpoint = |name: &str| -> Result<Option<String>, VerifyError> {
        let Some(value) = doc.get(name) else {
            return Ok(None);
        };
        let url = value
            .as_str()
            .and_then(|s| Url::parse(s).ok())
            .ok_or_else(|| VerifyError::upstream(format!("discovery: {name} is not a URL")))?;
        // Keys and introspection over plain HTTP only when the issuer
        // itself is plain HTTP (local development).
        let scheme_ok =
            url.scheme() == "https" || (url.scheme() == "http" && issuer_url.scheme() == "http");
        if !scheme_ok {
            return Err(VerifyError::upstream(format!(
                "discovery: {name} must be an https URL"
            )));
        }
        Ok(Some(url.to_string()))
    };
    let jwks_uri =
        endpoint("jwks_uri")?.ok_or_else(|| VerifyError::upstream("discovery: no jwks_uri"))?;
    Ok(ServerMetadata {
        issuer: issuer.to_string(),
        jwks_uri,
        introspection_endpoint: endpoint("introspection_endpoint")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_for_root_issuer() {
        assert_eq!(
            metadata_urls("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn urls_for_tenant_issuer() {
        assert_eq!(
            metadata_urls("https://auth.example.com/t/acme"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/t/acme",
                "https://auth.example.com/t/acme/.well-known/openid-configuration"
            ]
        );
    }

    fn read(doc: Value, issuer: &str) -> Result<ServerMetadata, VerifyError> {
        let url = check_issuer(issuer)?;
        match doc {
            Value::Object(m) => read_metadata(&m, issuer, &url),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn issuer_must_match_exactly() {
        let doc =
            json!({"issuer": "https://a.example/", "jwks_uri": "https://a.example/jwks.json"});
        assert!(matches!(
            read(doc, "https://a.example"),
            Err(VerifyError::InvalidConfig(_))
        ));
    }

    #[test]
    fn http_jwks_refused_for_https_issuer() {
        let doc = json!({"issuer": "https://a.example", "jwks_uri": "http://a.example/jwks.json"});
        assert!(read(doc, "https://a.example").is_err());
        let dev = json!({"issuer": "http://127.0.0.1:8080", "jwks_uri": "http://127.0.0.1:8080/jwks.json"});
        assert!(read(dev, "http://127.0.0.1:8080").is_ok());
    }

    #[test]
    fn issuer_with_query_refused() {
        assert!(check_issuer("https://a.example?x=1").is_err());
        assert!(check_issuer("ftp://a.example").is_err());
    }
}
