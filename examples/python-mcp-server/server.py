"""A small MCP server protected by Gatehouse: the MCP Python SDK (mcp 2.x,
``MCPServer``) with the ``gatehouse-verify`` token verifier.

Environment:

* ``GATEHOUSE_ISSUER``: the Gatehouse tenant's issuer, exactly (no trailing slash)
* ``MCP_RESOURCE``: this server's canonical resource URI, ``http://127.0.0.1:<PORT>/mcp``
* ``PORT``: the loopback port to listen on (default 8765)

Tools: ``whoami`` (needs ``mcp:read``) and ``write_note`` (needs ``mcp:write``
as well). Every request needs a Gatehouse access token whose ``aud`` is
``MCP_RESOURCE`` and whose scope contains ``mcp:read``; a ``tools/call`` of
``write_note`` without ``mcp:write`` is refused at the HTTP layer with ``403``
and ``WWW-Authenticate: Bearer error="insufficient_scope", scope="mcp:read
mcp:write", ...``, which MCP clients answer by asking the user for the
additional scope (step-up authorization).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse_verify import bearer_challenge, protected_resource_metadata, resource_metadata_url
from gatehouse_verify.mcp import GatehouseTokenVerifier

READ = "mcp:read"
WRITE = "mcp:write"
SCOPES = [READ, WRITE]

# The scopes each tool needs on top of mcp:read (which every request needs).
TOOL_SCOPES: dict[str, list[str]] = {"write_note": [READ, WRITE]}

# Requests whose body is larger than this are refused before the MCP handler.
MAX_BODY = 1024 * 1024


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"{name} must be set")
    return value


ISSUER = env("GATEHOUSE_ISSUER")
PORT = int(env("PORT", "8765"))
RESOURCE = env("MCP_RESOURCE", f"http://127.0.0.1:{PORT}/mcp")
METADATA_URL = resource_metadata_url(RESOURCE)

mcp = MCPServer(
    "gatehouse-example-python",
    token_verifier=GatehouseTokenVerifier(issuer=ISSUER, resource=RESOURCE, algorithms=["ES256"]),
    auth=AuthSettings(
        issuer_url=ISSUER,
        resource_server_url=RESOURCE,
        required_scopes=[READ],
        validate_token_resource=True,
    ),
)


def current_token():
    token = get_access_token()
    if token is None:  # the HTTP layer lets no request through without one
        raise ToolError("no access token")
    return token


@mcp.tool()
def whoami() -> str:
    """Who is calling: the token's subject, client and scopes. Needs mcp:read."""
    token = current_token()
    return f"subject={token.subject} client={token.client_id} scopes={' '.join(sorted(token.scopes))}"


@mcp.tool()
def write_note(text: str) -> str:
    """Saves a note (not really). Needs mcp:write."""
    if WRITE not in current_token().scopes:
        # Unreachable through HTTP (ToolScopeGate answers 403 first); kept so
        # the tool is safe on its own.
        raise ToolError("write_note needs the scope mcp:write")
    return f"saved: {text}"


def scopes_needed(body: bytes) -> list[str]:
    """The scopes the tool calls in a JSON-RPC message (or batch) need."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return []  # the MCP handler answers with a parse error
    messages = parsed if isinstance(parsed, list) else [parsed]
    needed: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            continue
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        for scope in TOOL_SCOPES.get(name, []) if isinstance(name, str) else []:
            if scope not in needed:
                needed.append(scope)
    return needed


def challenge(status: int, error: str | None, description: str | None, scope: list[str]) -> Response:
    header = bearer_challenge(METADATA_URL, error=error, error_description=description, scope=scope)
    body = {"error": error or "invalid_token", "error_description": description or "authentication required"}
    return JSONResponse(body, status_code=status, headers={"WWW-Authenticate": header})


class ToolScopeGate:
    """Wraps the SDK's ``/mcp`` endpoint (itself behind the SDK's bearer
    middleware, which has already verified the token when this runs).

    * No valid token: ``401`` whose challenge also names the scope every
      request needs (``scope="mcp:read"``, as MCP 2025-11-25 asks), so clients
      request only that at first instead of everything in ``scopes_supported``.
    * A ``tools/call`` of a tool the token lacks scopes for: ``403
      insufficient_scope`` naming all the scopes the call needs, before the
      MCP handler runs, so the client can step up.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        if not isinstance(user, AuthenticatedUser):
            presented = any(k.lower() == b"authorization" for k, _ in scope.get("headers", []))
            if presented:
                response = challenge(401, "invalid_token", "the access token is not valid for this server", [READ])
            else:
                response = challenge(401, None, None, [READ])
            await response(scope, receive, send)
            return
        granted = set(user.scopes)
        if READ not in granted:
            await challenge(403, "insufficient_scope", f"this server needs the scope {READ}", [READ])(
                scope, receive, send
            )
            return
        if scope.get("method") == "POST":
            body = await read_body(receive)
            if body is None:
                await JSONResponse({"error": "request body too large"}, status_code=413)(scope, receive, send)
                return
            needed = scopes_needed(body)
            if not set(needed) <= granted:
                description = f"this operation needs the scope {' '.join(needed)}"
                await challenge(403, "insufficient_scope", description, needed)(scope, receive, send)
                return
            receive = replay(body, receive)
        await self.app(scope, receive, send)


async def read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


async def metadata(_request: Request) -> Response:
    return JSONResponse(protected_resource_metadata(RESOURCE, ISSUER, SCOPES))


def build_app():
    app = mcp.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    routes = app.router.routes
    for i, route in enumerate(routes):
        if isinstance(route, Route) and route.path == "/mcp":
            routes[i] = Route("/mcp", endpoint=ToolScopeGate(route.app))
            break
    else:
        raise RuntimeError("the SDK app has no /mcp route")
    # The SDK publishes only its required_scopes; publish every scope of this
    # server, at the RFC 9728 URL for /mcp and at the root one. First match wins.
    well_known = "/.well-known/oauth-protected-resource"
    routes[0:0] = [
        Route(well_known + "/mcp", endpoint=metadata, methods=["GET"]),
        Route(well_known, endpoint=metadata, methods=["GET"]),
    ]
    return app


async def main() -> None:
    config = uvicorn.Config(build_app(), host="127.0.0.1", port=PORT, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # startup failed: raise its error
            sys.exit("the server stopped during startup")
        await asyncio.sleep(0.05)
    print(f"listening on http://127.0.0.1:{PORT}/mcp", flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
