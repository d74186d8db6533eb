//! The MCP side: two tools served with rmcp's `#[tool_router]` macros.
//!
//! Authentication happens before rmcp sees the request: the
//! [`RequireBearer`](gatehouse_verify::RequireBearer) layer verifies the token
//! and stores the [`VerifiedToken`] in the HTTP request's extensions. rmcp's
//! streamable HTTP transport hands the request's [`http::request::Parts`] to
//! every handler through the request context, so a tool reads the token with
//! `Extension(parts): Extension<Parts>` and `parts.extensions`.

use gatehouse_verify::VerifiedToken;
use http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde::Deserialize;

/// Scope every MCP request needs (checked by the `RequireBearer` layer).
pub const READ_SCOPE: &str = "mcp:read";
/// Extra scope of the tools that change something.
pub const WRITE_SCOPE: &str = "mcp:write";

/// Tools and the scopes calling them takes. The HTTP layer
/// ([`crate::step_up`]) enforces this table before rmcp runs, so a client
/// without the scope gets the `403 insufficient_scope` challenge it can
/// re-authorize from; the tools check again as a second line of defence.
pub const TOOL_SCOPES: &[(&str, &[&str])] = &[("write_note", &[READ_SCOPE, WRITE_SCOPE])];

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteNoteArgs {
    /// The note to save.
    pub text: String,
}

/// The MCP server. A new instance serves each request (stateless mode).
#[derive(Debug, Clone)]
pub struct NotesServer {
    tool_router: ToolRouter<Self>,
}

impl Default for NotesServer {
    fn default() -> Self {
        NotesServer {
            tool_router: Self::tool_router(),
        }
    }
}

/// The token `RequireBearer` verified for this HTTP request.
fn verified_token(parts: &Parts) -> Result<&VerifiedToken, ErrorData> {
    parts.extensions.get::<VerifiedToken>().ok_or_else(|| {
        // Only possible if the server is wired without the layer.
        ErrorData::internal_error("request was not authenticated", None)
    })
}

#[tool_router]
impl NotesServer {
    #[tool(description = "Who is calling: the token's subject, client and scopes. Needs mcp:read.")]
    async fn whoami(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let token = verified_token(&parts)?;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "subject={} client={} scopes={}",
            token.subject,
            token.client_id,
            token.scopes.join(" ")
        ))]))
    }

    #[tool(description = "Save a note. Needs mcp:write.")]
    async fn write_note(
        &self,
        Parameters(WriteNoteArgs { text }): Parameters<WriteNoteArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let token = verified_token(&parts)?;
        if !token.has_scope(WRITE_SCOPE) {
            // The HTTP layer answers 403 before we get here; never rely on it alone.
            return Err(ErrorData::invalid_request(
                "write_note needs the scope mcp:write",
                None,
            ));
        }
        tracing::info!(client_id = %token.client_id, subject = %token.subject, "note saved");
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "saved: {text}"
        ))]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for NotesServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Example MCP server protected by Gatehouse: `whoami` needs mcp:read, \
                 `write_note` needs mcp:write.",
            )
    }
}
