"""Verify Gatehouse access tokens in MCP servers.

Core: :class:`GatehouseVerifier` (``await verifier.verify(token)``).
MCP Python SDK adapter: :class:`gatehouse_verify.mcp.GatehouseTokenVerifier`
(also importable from here when ``mcp`` is installed).
"""

from __future__ import annotations

from typing import Any

from .errors import (
    AlgorithmNotAllowedError,
    DiscoveryError,
    GatehouseVerifyError,
    InactiveTokenError,
    InsufficientScopeError,
    IntrospectionError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    InvalidTokenTypeError,
    KeyMismatchError,
    MalformedTokenError,
    MissingClaimError,
    TokenExpiredError,
    TokenNotYetValidError,
    UnknownKeyError,
)
from .metadata import bearer_challenge, protected_resource_metadata
from .resource import InvalidResourceError, canonicalize_resource, resource_metadata_url, same_resource
from .verifier import SUPPORTED_ALGORITHMS, GatehouseVerifier, IntrospectionConfig, VerifiedToken, discovery_urls

__version__ = "0.1.0"

__all__ = [
    "GatehouseVerifier",
    "IntrospectionConfig",
    "VerifiedToken",
    "SUPPORTED_ALGORITHMS",
    "discovery_urls",
    "protected_resource_metadata",
    "resource_metadata_url",
    "bearer_challenge",
    "canonicalize_resource",
    "same_resource",
    "InvalidResourceError",
    "GatehouseVerifyError",
    "DiscoveryError",
    "IntrospectionError",
    "InvalidTokenError",
    "MalformedTokenError",
    "InvalidTokenTypeError",
    "AlgorithmNotAllowedError",
    "UnknownKeyError",
    "KeyMismatchError",
    "InvalidSignatureError",
    "InvalidIssuerError",
    "InvalidAudienceError",
    "TokenExpiredError",
    "TokenNotYetValidError",
    "MissingClaimError",
    "InvalidClaimError",
    "InactiveTokenError",
    "InsufficientScopeError",
    "GatehouseTokenVerifier",
]


def __getattr__(name: str) -> Any:
    # The MCP adapter needs the optional `mcp` package; import it on demand.
    if name == "GatehouseTokenVerifier":
        from .mcp import GatehouseTokenVerifier

        return GatehouseTokenVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
