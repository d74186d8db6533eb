"""Adapter for the MCP Python SDK (``pip install 'gatehouse-verify[mcp]'``).

:class:`GatehouseTokenVerifier` implements the SDK's ``TokenVerifier``
protocol (``mcp.server.auth.provider``), so the SDK's bearer middleware
accepts Gatehouse tokens::

    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer          # mcp 2.x (FastMCP in 1.x)
    from gatehouse_verify.mcp import GatehouseTokenVerifier

    mcp = MCPServer(
        "tickets",
        token_verifier=GatehouseTokenVerifier(issuer=ISSUER, resource=RESOURCE),
        auth=AuthSettings(issuer_url=ISSUER, resource_server_url=RESOURCE,
                          required_scopes=["tickets:read"], validate_token_resource=True),
    )

Works with mcp 1.x (``FastMCP``) and 2.x (``MCPServer``).
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.auth.provider import AccessToken

from .errors import InvalidTokenError
from .verifier import GatehouseVerifier, VerifiedToken

__all__ = ["GatehouseTokenVerifier", "to_access_token"]

log = logging.getLogger("gatehouse_verify")


def to_access_token(token: str, verified: VerifiedToken) -> AccessToken:
    """The SDK's ``AccessToken`` for a verified token. ``resource`` is the
    canonical resource; on SDK versions that have them, ``subject`` is ``sub``
    and ``claims`` holds every claim (``iss``, ``act``, ...)."""
    values: dict[str, Any] = {
        "token": token,
        "client_id": verified.client_id,
        "scopes": list(verified.scopes),
        "expires_at": verified.expires_at,
        "resource": verified.audience,
        "subject": verified.subject,
        "claims": dict(verified.claims),
    }
    fields = getattr(AccessToken, "model_fields", None)
    if isinstance(fields, dict):
        values = {k: v for k, v in values.items() if k in fields}
    return AccessToken(**values)


class GatehouseTokenVerifier:
    """An MCP SDK ``TokenVerifier`` backed by a :class:`GatehouseVerifier`.

    Pass an existing verifier, or the :class:`GatehouseVerifier` arguments::

        GatehouseTokenVerifier(GatehouseVerifier(issuer=..., resource=...))
        GatehouseTokenVerifier(issuer=..., resource=...)

    ``verify_token`` returns ``None`` for any token that must be refused (the
    SDK then answers 401). When Gatehouse cannot be reached
    (:class:`DiscoveryError`, :class:`IntrospectionError`) the exception
    propagates, so the request fails with 500 instead of blaming the client.
    """

    def __init__(self, verifier: GatehouseVerifier | None = None, /, **kwargs: Any):
        if verifier is not None and kwargs:
            raise TypeError("pass either a GatehouseVerifier or its arguments, not both")
        self.verifier = verifier if verifier is not None else GatehouseVerifier(**kwargs)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            verified = await self.verifier.verify(token)
        except InvalidTokenError as e:
            log.info("bearer token refused: %s", e)
            return None
        return to_access_token(token, verified)
