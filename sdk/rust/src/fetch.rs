//! Talking to the authorization server: bounded JSON reads.

use std::time::Duration;

use reqwest::header::{HeaderMap, CACHE_CONTROL};
use serde_json::Value;

use crate::error::VerifyError;

/// Largest discovery, JWKS or introspection body read.
const MAX_BODY: usize = 1024 * 1024;

/// The HTTP client used when the caller does not bring one: short timeouts,
/// no redirects (metadata and keys are read from exactly the advertised URLs).
pub(crate) fn default_client() -> Result<reqwest::Client, VerifyError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse-verify/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| VerifyError::InvalidConfig(format!("HTTP client: {e}")))
}

/// A JSON object read from an authorization server response.
pub(crate) struct JsonResponse {
    pub status: reqwest::StatusCode,
    pub headers: HeaderMap,
    pub body: Result<serde_json::Map<String, Value>, String>,
}

/// Sends `request` and reads a JSON object body of at most [`MAX_BODY`]
/// bytes. Transport failures are [`VerifyError::Upstream`]; the status is
/// left to the caller.
pub(crate) async fn send_json(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<JsonResponse, VerifyError> {
    let mut response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| VerifyError::upstream(format!("{what}: {}", without_url(&e))))?;
    let status = response.status();
    let headers = response.headers().clone();
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY as u64)
    {
        return Err(VerifyError::upstream(format!("{what}: response too large")));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| VerifyError::upstream(format!("{what}: {}", without_url(&e))))?
    {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(VerifyError::upstream(format!("{what}: response too large")));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".to_string()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    };
    Ok(JsonResponse {
        status,
        headers,
        body,
    })
}

/// GETs `url` and requires a 200 with a JSON object.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: &str,
    what: &str,
) -> Result<(serde_json::Map<String, Value>, HeaderMap), VerifyError> {
    let res = send_json(http.get(url), what).await?;
    if res.status != reqwest::StatusCode::OK {
        return Err(VerifyError::upstream(format!(
            "{what}: HTTP {}",
            res.status.as_u16()
        )));
    }
    let body = res
        .body
        .map_err(|e| VerifyError::upstream(format!("{what}: {e}")))?;
    Ok((body, res.headers))
}

/// `max-age` from a Cache-Control header, if any (`no-store`/`no-cache`
/// count as zero).
pub(crate) fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// reqwest errors print the URL, which for the introspection request is
/// harmless but noisy; keep the kind of failure only.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "could not read the response"
    } else if e.is_redirect() {
        "unexpected redirect"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn h(v: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(CACHE_CONTROL, HeaderValue::from_static(v));
        m
    }

    #[test]
    fn max_age_parsing() {
        assert_eq!(
            max_age(&h("public, max-age=300")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age(&h("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&h("public")), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }
}
