"""The MCP Python SDK adapter: TokenVerifier protocol, and a real MCP server app."""

from __future__ import annotations

import inspect
import time

import pytest

pytest.importorskip("mcp")

from mcp.server.auth.provider import AccessToken, TokenVerifier  # noqa: E402

from conftest import INTROSPECTION_CLIENT, RESOURCE  # noqa: E402
from gatehouse_verify import GatehouseVerifier, IntrospectionConfig  # noqa: E402
from gatehouse_verify.mcp import GatehouseTokenVerifier  # noqa: E402


def adapter(gh, **kw) -> GatehouseTokenVerifier:
    return GatehouseTokenVerifier(issuer=gh.issuer, resource=RESOURCE, **kw)


async def test_adapter_returns_access_token(gatehouse):
    tv = adapter(gatehouse)
    typed: TokenVerifier = tv  # structurally a TokenVerifier (checked by type checkers)
    assert inspect.iscoroutinefunction(typed.verify_token)
    token = gatehouse.mint(scope="mcp:read mcp:write", client_id="agent-1", sub="user-7")
    at = await tv.verify_token(token)
    assert isinstance(at, AccessToken)
    assert at.token == token
    assert at.client_id == "agent-1"
    assert at.scopes == ["mcp:read", "mcp:write"]
    assert at.expires_at is not None and at.expires_at > time.time()
    assert at.resource == RESOURCE
    fields = AccessToken.model_fields
    if "subject" in fields:
        assert at.subject == "user-7"
    if "claims" in fields:
        assert at.claims["iss"] == gatehouse.issuer


async def test_adapter_wraps_existing_verifier(gatehouse):
    v = GatehouseVerifier(issuer=gatehouse.issuer, resource=RESOURCE)
    tv = GatehouseTokenVerifier(v)
    assert tv.verifier is v
    assert (await tv.verify_token(gatehouse.mint())) is not None
    with pytest.raises(TypeError):
        GatehouseTokenVerifier(v, issuer=gatehouse.issuer)


async def test_adapter_returns_none_for_bad_tokens(gatehouse):
    tv = adapter(gatehouse)
    now = int(time.time())
    bad = [
        gatehouse.mint(exp=now - 3600, iat=now - 7200),  # expired
        gatehouse.mint(aud="https://other.example/mcp"),  # not for us
        gatehouse.mint(iss="https://evil.example"),  # wrong issuer
        gatehouse.mint(header={"typ": "JWT"}),  # ID token
        "not-a-token",  # opaque, no introspection configured
        "a.b.c",
    ]
    for token in bad:
        assert await tv.verify_token(token) is None


async def test_adapter_with_introspection(gatehouse):
    claims = gatehouse.claims(scope="mcp:read")
    gatehouse.introspection["opaque123"] = {"active": True, "token_type": "Bearer", **claims}
    tv = adapter(
        gatehouse,
        introspection=IntrospectionConfig(INTROSPECTION_CLIENT[0], INTROSPECTION_CLIENT[1]),
    )
    at = await tv.verify_token("opaque123")
    assert at is not None and at.scopes == ["mcp:read"] and at.expires_at == claims["exp"]
    assert await tv.verify_token("revoked456") is None


def _mcp_app(gh):
    """An MCP server (mcp 2.x MCPServer, or FastMCP on 1.x) guarded by the adapter."""
    from mcp.server.auth.settings import AuthSettings

    settings = {"issuer_url": gh.issuer, "resource_server_url": RESOURCE, "required_scopes": ["mcp:read"]}
    if "validate_token_resource" in AuthSettings.model_fields:
        settings["validate_token_resource"] = True
    auth = AuthSettings(**settings)
    try:
        from mcp.server.mcpserver import MCPServer as Server
    except ImportError:  # mcp 1.x
        from mcp.server.fastmcp import FastMCP as Server
    server = Server("gatehouse-test", token_verifier=adapter(gh), auth=auth)

    @server.tool()
    def whoami() -> str:
        return "ok"

    return server.streamable_http_app()


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_mcp_server_end_to_end(gatehouse):
    from starlette.testclient import TestClient

    app = _mcp_app(gatehouse)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        # Protected resource metadata, served by the SDK from AuthSettings.
        prm = client.get("/.well-known/oauth-protected-resource/mcp")
        assert prm.status_code == 200
        assert prm.json()["authorization_servers"][0].rstrip("/") == gatehouse.issuer

        # No token: 401 pointing at the metadata.
        r = client.post("/mcp", json=INIT, headers=HEADERS)
        assert r.status_code == 401
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert 'resource_metadata="http://127.0.0.1:8765/.well-known/oauth-protected-resource/mcp"' in challenge

        # A token for another resource: 401.
        other = gatehouse.mint(aud="https://other.example/mcp")
        r = client.post("/mcp", json=INIT, headers={**HEADERS, "Authorization": f"Bearer {other}"})
        assert r.status_code == 401

        # Valid token without the required scope: 403 insufficient_scope.
        weak = gatehouse.mint(scope="openid")
        r = client.post("/mcp", json=INIT, headers={**HEADERS, "Authorization": f"Bearer {weak}"})
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]

        # Good token: the MCP request goes through.
        good = gatehouse.mint(scope="mcp:read")
        r = client.post("/mcp", json=INIT, headers={**HEADERS, "Authorization": f"Bearer {good}"})
        assert r.status_code == 200, r.text
        assert "gatehouse-test" in r.text
