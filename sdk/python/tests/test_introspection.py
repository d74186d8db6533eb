"""Opaque tokens through RFC 7662 introspection."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import INTROSPECTION_CLIENT, RESOURCE, FakeGatehouse
from gatehouse_verify import (
    GatehouseVerifier,
    InactiveTokenError,
    IntrospectionConfig,
    IntrospectionError,
    InvalidAudienceError,
    InvalidIssuerError,
    TokenExpiredError,
)

OPAQUE = "m3Vn0kq1Yw9tQ2c8rZx4Lgm3Vn0kq1Yw9tQ2c8rZx4L"  # 43 chars, no dots


def verifier(gh: FakeGatehouse, **cfg) -> GatehouseVerifier:
    cfg.setdefault("client_id", INTROSPECTION_CLIENT[0])
    cfg.setdefault("client_secret", INTROSPECTION_CLIENT[1])
    leeway = cfg.pop("leeway", 60)
    return GatehouseVerifier(
        issuer=gh.issuer, resource=RESOURCE, introspection=IntrospectionConfig(**cfg), leeway=leeway
    )


def active(gh: FakeGatehouse, **overrides) -> dict:
    c = gh.claims(**overrides)
    c.pop("auth_time", None)
    return {"active": True, "token_type": "Bearer", **c}


async def test_introspection_active(gatehouse):
    gatehouse.introspection[OPAQUE] = active(gatehouse, scope="mcp:read mcp:write")
    t = await verifier(gatehouse).verify(OPAQUE)
    assert t.introspected
    assert t.client_id == "demo-public"
    assert t.scopes == ("mcp:read", "mcp:write")
    assert t.audience == RESOURCE
    assert t.expires_at == gatehouse.introspection[OPAQUE]["exp"]
    # client_secret_basic, both parts form-urlencoded (RFC 6749 §2.3.1)
    assert gatehouse.introspection_auth == [INTROSPECTION_CLIENT]
    assert gatehouse.count("/introspect") == 1


async def test_introspection_inactive(gatehouse):
    with pytest.raises(InactiveTokenError):
        await verifier(gatehouse).verify(OPAQUE)


async def test_introspection_cached(gatehouse):
    gatehouse.introspection[OPAQUE] = active(gatehouse)
    v = verifier(gatehouse, cache_ttl=30)
    first = await v.verify(OPAQUE)
    second = await v.verify(OPAQUE)
    assert first == second
    assert gatehouse.count("/introspect") == 1
    # Negative answers are cached too (an inactive token never becomes active).
    for _ in range(3):
        with pytest.raises(InactiveTokenError):
            await v.verify("another-opaque-token")
    assert gatehouse.count("/introspect") == 2


async def test_introspection_cache_expires_with_ttl(gatehouse):
    gatehouse.introspection[OPAQUE] = active(gatehouse)
    v = verifier(gatehouse, cache_ttl=0.3)
    await v.verify(OPAQUE)
    gatehouse.introspection[OPAQUE] = {"active": False}  # revoked
    await v.verify(OPAQUE)  # still cached
    await asyncio.sleep(0.4)
    with pytest.raises(InactiveTokenError):
        await v.verify(OPAQUE)
    assert gatehouse.count("/introspect") == 2


async def test_introspection_cache_bounded_by_exp(gatehouse):
    now = int(time.time())
    gatehouse.introspection[OPAQUE] = active(gatehouse, exp=now + 2)
    v = verifier(gatehouse, cache_ttl=300, leeway=0)
    await v.verify(OPAQUE)
    await asyncio.sleep(2.1)
    # The cache entry ended at exp; asking again, Gatehouse's answer is taken
    # (here it still, wrongly, says active, so the local exp check refuses it).
    with pytest.raises(TokenExpiredError):
        await v.verify(OPAQUE)
    assert gatehouse.count("/introspect") == 2


async def test_introspection_cache_disabled(gatehouse):
    gatehouse.introspection[OPAQUE] = active(gatehouse)
    v = verifier(gatehouse, cache_ttl=0)
    await v.verify(OPAQUE)
    await v.verify(OPAQUE)
    assert gatehouse.count("/introspect") == 2


async def test_introspection_checks_audience(gatehouse):
    # Gatehouse answers for any token of the tenant; the audience is ours to check.
    gatehouse.introspection[OPAQUE] = active(gatehouse, aud="https://other.example/mcp")
    with pytest.raises(InvalidAudienceError):
        await verifier(gatehouse).verify(OPAQUE)


async def test_introspection_checks_issuer(gatehouse):
    gatehouse.introspection[OPAQUE] = active(gatehouse, iss="https://elsewhere.example")
    with pytest.raises(InvalidIssuerError):
        await verifier(gatehouse).verify(OPAQUE)


async def test_introspection_refresh_token_refused(gatehouse):
    body = active(gatehouse)
    body["token_type"] = "refresh_token"
    gatehouse.introspection[OPAQUE] = body
    with pytest.raises(InactiveTokenError):
        await verifier(gatehouse).verify(OPAQUE)


async def test_introspection_bad_credentials(gatehouse):
    v = verifier(gatehouse, client_secret="wrong")
    with pytest.raises(IntrospectionError):
        await v.verify(OPAQUE)


async def test_introspect_jwts_sees_revocation(gatehouse):
    token = gatehouse.mint()
    plain = GatehouseVerifier(issuer=gatehouse.issuer, resource=RESOURCE)
    await plain.verify(token)  # locally valid
    strict = verifier(gatehouse, introspect_jwts=True)
    with pytest.raises(InactiveTokenError):  # ... but revoked at Gatehouse
        await strict.verify(token)
    gatehouse.introspection[token] = active(gatehouse)
    strict2 = verifier(gatehouse, introspect_jwts=True)
    t = await strict2.verify(token)
    assert not t.introspected  # claims come from the verified JWT


async def test_introspection_config_as_mapping(gatehouse):
    gatehouse.introspection[OPAQUE] = active(gatehouse)
    v = GatehouseVerifier(
        issuer=gatehouse.issuer,
        resource=RESOURCE,
        introspection={"client_id": INTROSPECTION_CLIENT[0], "client_secret": INTROSPECTION_CLIENT[1]},
    )
    assert (await v.verify(OPAQUE)).client_id == "demo-public"
    assert INTROSPECTION_CLIENT[1] not in repr(v.introspection)
