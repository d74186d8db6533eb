"""What an MCP server publishes: RFC 9728 protected resource metadata and
RFC 6750 ``WWW-Authenticate`` challenges pointing at it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .resource import canonicalize_resource, resource_metadata_url

__all__ = ["protected_resource_metadata", "resource_metadata_url", "bearer_challenge"]


def protected_resource_metadata(
    resource: str,
    issuer: str,
    scopes: Iterable[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The RFC 9728 document to serve at :func:`resource_metadata_url` of ``resource``.

    ``resource`` is published as given (RFC 9728 wants it identical to the URL
    the metadata was derived from), so register and configure it in canonical
    form; it must be a valid resource URI. ``issuer`` is the Gatehouse tenant's
    issuer, exactly. Extra keyword arguments (``resource_name``,
    ``resource_documentation``, ...) are added as members.
    """
    canonicalize_resource(resource)  # validates; raises InvalidResourceError
    doc: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    }
    scope_list = list(scopes)
    if scope_list:
        doc["scopes_supported"] = scope_list
    doc.update(extra)
    return doc


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(
    resource_metadata: str | None = None,
    *,
    error: str | None = None,
    error_description: str | None = None,
    scope: str | Iterable[str] | None = None,
) -> str:
    """A ``WWW-Authenticate`` value, e.g. for a 403::

        bearer_challenge(resource_metadata_url(RESOURCE), error="insufficient_scope", scope="tickets:write")
        # 'Bearer error="insufficient_scope", scope="tickets:write", resource_metadata="https://…"'
    """
    params: list[str] = []
    if error:
        params.append(f"error={_quote(error)}")
    if error_description:
        params.append(f"error_description={_quote(error_description)}")
    if scope is not None:
        text = scope if isinstance(scope, str) else " ".join(scope)
        if text:
            params.append(f"scope={_quote(text)}")
    if resource_metadata:
        params.append(f"resource_metadata={_quote(resource_metadata)}")
    return "Bearer" + (" " + ", ".join(params) if params else "")
