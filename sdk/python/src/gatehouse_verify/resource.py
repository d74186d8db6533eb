"""Canonical resource URIs (RFC 8707), as Gatehouse puts them in ``aud``.

The rules mirror Gatehouse's own canonicalisation: scheme and host are
lowercased, the scheme's default port is dropped, a root path (``/`` or empty)
is dropped, any other path is kept exactly as written (trailing slash, case
and percent-encoding included) apart from the removal of ``.`` and ``..``
segments, and a non-empty query is kept. Fragments and user information are
refused.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "InvalidResourceError",
    "canonicalize_resource",
    "same_resource",
    "resource_metadata_url",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.DOTALL)
_FORBIDDEN = set('"<>\\^`{|}')
_DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_CHARS = re.compile(r"^[A-Za-z0-9.\-_~!$&'()*+,;=]+$")


class InvalidResourceError(ValueError):
    """The value is not an absolute http(s) URI usable as a resource indicator."""


def _is_uri_char(ch: str) -> bool:
    return 0x21 <= ord(ch) <= 0x7E and ch not in _FORBIDDEN


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    out: list[str] = []
    inp = path
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./"):
            inp = inp[2:]
        elif inp.startswith("/./"):
            inp = "/" + inp[3:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):
            inp = "/" + inp[4:]
            if out:
                out.pop()
        elif inp == "/..":
            inp = "/"
            if out:
                out.pop()
        elif inp in (".", ".."):
            inp = ""
        else:
            start = 1 if inp.startswith("/") else 0
            nxt = inp.find("/", start)
            if nxt == -1:
                out.append(inp)
                inp = ""
            else:
                out.append(inp[:nxt])
                inp = inp[nxt:]
    return "".join(out)


def _split(resource: str) -> tuple[str, str, int | None, str, str]:
    """Returns (scheme, host, port, path, query) of a valid resource URI, host and
    scheme already canonical, port None when it is the default."""
    if not isinstance(resource, str):
        raise InvalidResourceError("resource must be a string")
    if not resource or not all(_is_uri_char(c) for c in resource):
        raise InvalidResourceError("resource contains a character that is not allowed in a URI")
    m = _SCHEME.match(resource)
    if not m:
        raise InvalidResourceError("resource must be an absolute URI")
    if "#" in resource:
        raise InvalidResourceError("resource must not contain a fragment")
    scheme = m.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidResourceError("resource must be an https or http URI")
    rest = m.group(2)
    if not rest.startswith("//"):
        raise InvalidResourceError("resource must include a host")
    rest = rest[2:]
    end = len(rest)
    for sep in ("/", "?"):
        i = rest.find(sep)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    if not authority:
        raise InvalidResourceError("resource must include a host")
    if "@" in authority:
        raise InvalidResourceError("resource must not contain user information")

    port_text: str | None = None
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise InvalidResourceError("resource is not a valid URI")
        literal = authority[1:close]
        after = authority[close + 1 :]
        try:
            host = "[" + ipaddress.IPv6Address(literal).compressed + "]"
        except ValueError as e:
            raise InvalidResourceError("resource is not a valid URI") from e
        if after:
            if not after.startswith(":"):
                raise InvalidResourceError("resource is not a valid URI")
            port_text = after[1:]
    else:
        host, sep, port_part = authority.partition(":")
        if sep:
            port_text = port_part
        if not host or not _HOST_CHARS.match(host):
            raise InvalidResourceError("resource is not a valid URI")
        host = host.lower()
        if ":" in port_part:
            raise InvalidResourceError("resource is not a valid URI")

    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii():
            raise InvalidResourceError("resource is not a valid URI")
        port = int(port_text)
        if port > 65535:
            raise InvalidResourceError("resource is not a valid URI")
        if port == _DEFAULT_PORTS[scheme]:
            port = None

    path, _, query = tail.partition("?")
    path = _remove_dot_segments(path) if path else ""
    # WHATWG URL (what Gatehouse's parser follows) encodes ' in special-scheme queries.
    query = query.replace("'", "%27")
    return scheme, host, port, path, query


def canonicalize_resource(resource: str) -> str:
    """Returns the canonical form of a resource URI, the form Gatehouse puts in ``aud``.

    ``https://MCP.example.com:443/`` becomes ``https://mcp.example.com``;
    ``https://h/mcp`` and ``https://h/mcp/`` stay different. Raises
    :class:`InvalidResourceError` for anything that is not an absolute http(s)
    URI with a host and without fragment or user information.
    """
    scheme, host, port, path, query = _split(resource)
    out = f"{scheme}://{host}"
    if port is not None:
        out += f":{port}"
    if path and path != "/":
        out += path
    if query:
        out += "?" + query
    return out


def same_resource(a: str, b: str) -> bool:
    """Whether two URIs name the same resource (same canonical form). Invalid URIs never match."""
    try:
        return canonicalize_resource(a) == canonicalize_resource(b)
    except InvalidResourceError:
        return False


def resource_metadata_url(resource: str) -> str:
    """The RFC 9728 §3.1 metadata URL of a resource: ``/.well-known/oauth-protected-resource``
    inserted between the host and the path (``https://h/mcp`` gives
    ``https://h/.well-known/oauth-protected-resource/mcp``)."""
    scheme, host, port, path, query = _split(resource)
    out = f"{scheme}://{host}"
    if port is not None:
        out += f":{port}"
    out += "/.well-known/oauth-protected-resource"
    if path and path != "/":
        out += path
    if query:
        out += "?" + query
    return out
