"""Canonical resource URIs (same cases as Gatehouse's src/oauth/resource.rs) and metadata helpers."""

from __future__ import annotations

import pytest

from gatehouse_verify import (
    InvalidResourceError,
    bearer_challenge,
    canonicalize_resource,
    discovery_urls,
    protected_resource_metadata,
    resource_metadata_url,
    same_resource,
)


@pytest.mark.parametrize(
    "given,canonical",
    [
        ("https://mcp.example.com", "https://mcp.example.com"),
        ("https://mcp.example.com/", "https://mcp.example.com"),
        ("HTTPS://MCP.Example.COM/mcp", "https://mcp.example.com/mcp"),
        ("https://H:443/", "https://h"),
        ("http://localhost:80/mcp", "http://localhost/mcp"),
        ("https://h:8443/mcp", "https://h:8443/mcp"),
        ("http://h:443", "http://h:443"),
        ("https://h/mcp", "https://h/mcp"),
        ("https://h/mcp/", "https://h/mcp/"),
        ("https://h/MCP", "https://h/MCP"),
        ("https://h/a%2fb", "https://h/a%2fb"),
        ("https://h/a/./b/../mcp", "https://h/a/mcp"),
        ("https://h/mcp?tenant=a", "https://h/mcp?tenant=a"),
        ("https://h/?tenant=a", "https://h?tenant=a"),
        ("https://h/mcp?", "https://h/mcp"),
        ("http://[::1]:8080/mcp", "http://[::1]:8080/mcp"),
        ("http://[0:0::1]/x", "http://[::1]/x"),
    ],
)
def test_canonical_forms(given, canonical):
    assert canonicalize_resource(given) == canonical
    assert canonicalize_resource(canonical) == canonical  # fixed point


@pytest.mark.parametrize(
    "bad",
    [
        "https://h/mcp#x",
        "https://h/mcp#",
        "/mcp",
        "urn:example:mcp",
        "https:h/mcp",
        "https:///h/mcp",
        "https://user@h/mcp",
        "https://h/mcp\n",
        "https://h:99999/",
        "https://h/ mcp",
        "https://h/é",
        "",
    ],
)
def test_invalid_resources(bad):
    with pytest.raises(InvalidResourceError):
        canonicalize_resource(bad)


def test_same_resource():
    assert same_resource("https://h", "https://H:443/")
    assert not same_resource("https://h/mcp", "https://h/mcp/")
    assert not same_resource("https://h/mcp", "http://h/mcp")
    assert not same_resource("https://h/#", "https://h/#")


def test_resource_metadata_url():
    assert (
        resource_metadata_url("https://mcp.example.com/mcp")
        == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    )
    assert resource_metadata_url("https://mcp.example.com/") == (
        "https://mcp.example.com/.well-known/oauth-protected-resource"
    )
    assert resource_metadata_url("http://127.0.0.1:8765/mcp") == (
        "http://127.0.0.1:8765/.well-known/oauth-protected-resource/mcp"
    )


def test_protected_resource_metadata():
    doc = protected_resource_metadata(
        "https://mcp.example.com/mcp", "https://auth.example.com/t/acme", ["tickets:read", "tickets:write"]
    )
    assert doc == {
        "resource": "https://mcp.example.com/mcp",
        "authorization_servers": ["https://auth.example.com/t/acme"],
        "scopes_supported": ["tickets:read", "tickets:write"],
        "bearer_methods_supported": ["header"],
    }
    assert "scopes_supported" not in protected_resource_metadata("https://h", "https://a")
    assert protected_resource_metadata("https://h", "https://a", resource_name="X")["resource_name"] == "X"
    with pytest.raises(InvalidResourceError):
        protected_resource_metadata("https://h/#x", "https://a")


def test_bearer_challenge():
    meta = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert bearer_challenge(meta) == f'Bearer resource_metadata="{meta}"'
    assert bearer_challenge(meta, error="insufficient_scope", scope=["tickets:write"]) == (
        f'Bearer error="insufficient_scope", scope="tickets:write", resource_metadata="{meta}"'
    )
    assert bearer_challenge(error="invalid_token", error_description='say "hi"') == (
        'Bearer error="invalid_token", error_description="say \\"hi\\""'
    )
    assert bearer_challenge() == "Bearer"


def test_discovery_urls():
    assert discovery_urls("https://auth.example.com") == [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration",
    ]
    assert discovery_urls("https://auth.example.com/t/acme") == [
        "https://auth.example.com/.well-known/oauth-authorization-server/t/acme",
        "https://auth.example.com/t/acme/.well-known/openid-configuration",
        "https://auth.example.com/.well-known/openid-configuration/t/acme",
    ]
