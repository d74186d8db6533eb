//! Per-tool scopes at the HTTP layer.
//!
//! The MCP authorization specification signals "this needs more scopes" with
//! an HTTP `403` and `WWW-Authenticate: Bearer error="insufficient_scope",
//! scope="…"`; clients then re-authorize with the scopes named there. Once
//! rmcp runs a tool the HTTP status is settled, so this middleware looks at the
//! JSON-RPC body first: a `tools/call` of a tool in
//! [`TOOL_SCOPES`](crate::tools::TOOL_SCOPES) by a token without its scopes is
//! answered `403` here, and everything else goes on to rmcp with the body
//! restored.

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_verify::{require_scopes, VerifiedToken};
use serde_json::Value;

use crate::tools::TOOL_SCOPES;

/// Largest JSON-RPC body this server reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// axum middleware (`axum::middleware::from_fn`); must run inside
/// `RequireBearer`, which puts the [`VerifiedToken`] in the extensions.
pub async fn require_tool_scopes(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) if is_length_limit(&e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than 1 MiB",
            )
                .into_response()
        }
        Err(_) => return (StatusCode::BAD_REQUEST, "cannot read request body").into_response(),
    };
    let needed = scopes_needed(&bytes);
    if !needed.is_empty() {
        let Some(token) = parts.extensions.get::<VerifiedToken>() else {
            tracing::error!("step-up middleware runs outside RequireBearer");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        if let Err(refusal) = require_scopes(token, needed.iter().copied()) {
            tracing::debug!(client_id = %token.client_id, ?needed, "tool call refused: missing scopes");
            return refusal;
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The scopes the tool calls in a JSON-RPC message (or batch) need, in
/// table order without duplicates. Bodies that are not JSON-RPC need
/// nothing here: rmcp answers them.
pub fn scopes_needed(body: &[u8]) -> Vec<&'static str> {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let calls: Vec<&str> = match &message {
        Value::Array(batch) => batch.iter().filter_map(called_tool).collect(),
        single => called_tool(single).into_iter().collect(),
    };
    let mut needed: Vec<&'static str> = Vec::new();
    for (tool, scopes) in TOOL_SCOPES {
        if calls.contains(tool) {
            for scope in *scopes {
                if !needed.contains(scope) {
                    needed.push(scope);
                }
            }
        }
    }
    needed
}

/// The tool name of a `tools/call` request.
fn called_tool(message: &Value) -> Option<&str> {
    if message.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    message.get("params")?.get("name")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_note_needs_write() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_note","arguments":{"text":"x"}}}"#;
        assert_eq!(scopes_needed(body), ["mcp:read", "mcp:write"]);
    }

    #[test]
    fn batch_is_inspected() {
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami"}},
                       {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"write_note","arguments":{"text":"x"}}}]"#;
        assert_eq!(scopes_needed(body), ["mcp:read", "mcp:write"]);
    }

    #[test]
    fn other_messages_need_nothing_extra() {
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"name":"write_note"}}"#,
            br#"not json"#,
            br#""#,
        ] {
            assert!(
                scopes_needed(body).is_empty(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
