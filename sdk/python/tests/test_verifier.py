"""Local (JWT) validation: one test per check."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import RESOURCE, FakeGatehouse, b64url, make_key
from gatehouse_verify import (
    AlgorithmNotAllowedError,
    DiscoveryError,
    GatehouseVerifier,
    InsufficientScopeError,
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
    VerifiedToken,
)


def verifier(gh: FakeGatehouse, **kw) -> GatehouseVerifier:
    kw.setdefault("resource", RESOURCE)
    return GatehouseVerifier(issuer=gh.issuer, **kw)


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(signature)]
    )


async def test_valid_token(gatehouse):
    v = verifier(gatehouse)
    token = gatehouse.mint(scope="mcp:read mcp:write openid", client_id="demo-public")
    t = await v.verify(token)
    assert isinstance(t, VerifiedToken)
    assert t.subject == "3f0c6f7e-7f3b-4a57-9a8e-2b1f3c4d5e6f"
    assert t.client_id == "demo-public"
    assert t.scopes == ("mcp:read", "mcp:write", "openid")
    assert t.audience == RESOURCE
    assert t.issuer == gatehouse.issuer
    assert t.expires_at == t.claims["exp"]
    assert t.jti == t.claims["jti"]
    assert t.act is None and t.actor_chain == []
    assert t.is_user_token and not t.introspected
    assert t.has_scopes("mcp:read", "mcp:write")
    t.require_scopes("mcp:read")
    with pytest.raises(InsufficientScopeError) as e:
        t.require_scopes("mcp:read", "mcp:admin")
    assert e.value.missing == ["mcp:admin"]


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
async def test_valid_token_other_algorithms(gatehouse, alg):
    key = make_key(alg)
    gatehouse.keys.append(key)
    t = await verifier(gatehouse).verify(gatehouse.mint(key=key))
    assert t.client_id == "demo-public"


async def test_empty_scope_and_service_token(gatehouse):
    token = gatehouse.mint(scope="", sub="svc", client_id="svc", auth_time=None)
    t = await verifier(gatehouse).verify(token)
    assert t.scopes == () and not t.is_user_token


async def test_wrong_issuer_refused(gatehouse):
    token = gatehouse.mint(iss=gatehouse.issuer + "/")  # even a trailing slash differs
    with pytest.raises(InvalidIssuerError):
        await verifier(gatehouse).verify(token)
    with pytest.raises(InvalidIssuerError):
        await verifier(gatehouse).verify(gatehouse.mint(iss="http://evil.example"))


async def test_wrong_audience_refused(gatehouse):
    token = gatehouse.mint(aud="http://127.0.0.1:8765/other")
    with pytest.raises(InvalidAudienceError):
        await verifier(gatehouse).verify(token)


async def test_id_token_audience_refused(gatehouse):
    # An ID token's aud is a client id; even with the right typ it is not for us.
    token = gatehouse.mint(aud="demo-public")
    with pytest.raises(InvalidAudienceError):
        await verifier(gatehouse).verify(token)


async def test_audience_compared_in_canonical_form(gatehouse):
    # Configured in a non-canonical spelling; Gatehouse puts the canonical one in aud.
    v = verifier(gatehouse, resource="HTTP://127.0.0.1:8765/mcp")
    assert v.resource == RESOURCE
    assert (await v.verify(gatehouse.mint())).audience == RESOURCE

    root = verifier(gatehouse, resource="https://MCP.Example.com:443/")
    assert root.resource == "https://mcp.example.com"
    await root.verify(gatehouse.mint(aud="https://mcp.example.com"))

    default_port = verifier(gatehouse, resource="http://localhost:80/mcp")
    await default_port.verify(gatehouse.mint(aud="http://localhost/mcp"))

    # A trailing slash on a non-root path is a different resource.
    with pytest.raises(InvalidAudienceError):
        await v.verify(gatehouse.mint(aud=RESOURCE + "/"))
    # Path case is kept.
    with pytest.raises(InvalidAudienceError):
        await v.verify(gatehouse.mint(aud="http://127.0.0.1:8765/MCP"))


async def test_audience_list(gatehouse):
    v = verifier(gatehouse)
    await v.verify(gatehouse.mint(aud=["https://other.example/mcp", RESOURCE]))
    with pytest.raises(InvalidAudienceError):
        await v.verify(gatehouse.mint(aud=["https://other.example/mcp"]))
    with pytest.raises(InvalidAudienceError):
        await v.verify(gatehouse.mint(aud=[]))
    with pytest.raises(InvalidClaimError):
        await v.verify(gatehouse.mint(aud=[RESOURCE, 7]))


async def test_expired_refused(gatehouse):
    now = int(time.time())
    v = verifier(gatehouse, leeway=60)
    with pytest.raises(TokenExpiredError):
        await v.verify(gatehouse.mint(iat=now - 4000, exp=now - 61))
    # Within the leeway it still passes.
    await v.verify(gatehouse.mint(iat=now - 4000, exp=now - 30))
    with pytest.raises(TokenExpiredError):
        await verifier(gatehouse, leeway=0).verify(gatehouse.mint(exp=now - 1))


async def test_nbf_in_future_refused(gatehouse):
    now = int(time.time())
    v = verifier(gatehouse, leeway=60)
    with pytest.raises(TokenNotYetValidError):
        await v.verify(gatehouse.mint(nbf=now + 120))
    await v.verify(gatehouse.mint(nbf=now + 30))
    await v.verify(gatehouse.mint(nbf=now - 5))


async def test_typ_jwt_refused(gatehouse):
    v = verifier(gatehouse)
    with pytest.raises(InvalidTokenTypeError):
        await v.verify(gatehouse.mint(header={"typ": "JWT"}))
    with pytest.raises(InvalidTokenTypeError):
        await v.verify(gatehouse.mint(header={"typ": None}))
    # RFC 9068 spellings that mean the same are accepted.
    await v.verify(gatehouse.mint(header={"typ": "application/at+jwt"}))
    await v.verify(gatehouse.mint(header={"typ": "AT+JWT"}))


async def test_alg_none_refused(gatehouse):
    v = verifier(gatehouse)
    token = unsigned({"alg": "none", "typ": "at+jwt", "kid": gatehouse.keys[0].kid}, gatehouse.claims())
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(token)
    with pytest.raises(ValueError):
        GatehouseVerifier(issuer=gatehouse.issuer, resource=RESOURCE, algorithms=["none"])


async def test_hs256_with_public_key_refused(gatehouse):
    """Key confusion: an HMAC "signed" with the public key as secret."""
    key = gatehouse.keys[0]
    v = verifier(gatehouse)
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, json.dumps(key.jwk).encode()):
        header = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(gatehouse.claims()).encode())
        )
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(AlgorithmNotAllowedError):
            await v.verify(signing_input + "." + b64url(sig))
    for alg in ("HS256", "HS512"):
        with pytest.raises(ValueError):
            GatehouseVerifier(issuer=gatehouse.issuer, resource=RESOURCE, algorithms=[alg])
    assert gatehouse.count("/jwks.json") == 0  # refused before any key was looked at


async def test_alg_outside_allow_list_refused(gatehouse):
    key = make_key("RS256")
    gatehouse.keys.append(key)
    v = verifier(gatehouse, algorithms=["ES256"])
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(gatehouse.mint(key=key))


async def test_key_alg_mismatch_refused(gatehouse):
    # The header claims RS256 but kid names the EC key.
    ec_key = gatehouse.keys[0]
    rsa_key = make_key("RS256", kid=ec_key.kid)
    token = gatehouse.mint(key=rsa_key)
    gatehouse.published = [ec_key.jwk]
    with pytest.raises(KeyMismatchError):
        await verifier(gatehouse).verify(token)


async def test_bad_signature_refused(gatehouse):
    other = make_key("ES256", kid=gatehouse.keys[0].kid)  # same kid, different key
    with pytest.raises(InvalidSignatureError):
        await verifier(gatehouse).verify(gatehouse.mint(key=other))
    # Payload swapped under a valid signature.
    good = gatehouse.mint().split(".")
    forged = b64url(json.dumps(gatehouse.claims(scope="mcp:admin")).encode())
    with pytest.raises(InvalidSignatureError):
        await verifier(gatehouse).verify(".".join([good[0], forged, good[2]]))


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"])
async def test_missing_required_claim_refused(gatehouse, claim):
    with pytest.raises(MissingClaimError) as e:
        await verifier(gatehouse).verify(gatehouse.mint(**{claim: None}))
    assert e.value.claim == claim


async def test_malformed_tokens_refused(gatehouse):
    v = verifier(gatehouse)
    for token in ["", "abc.def", "a.b.c.d", "!!.!!.!!", "eyJhbGciOiJFUzI1NiJ9.e30.", " " + gatehouse.mint()]:
        with pytest.raises(InvalidTokenError):
            await v.verify(token)
    with pytest.raises(MalformedTokenError):
        await v.verify(gatehouse.mint(header={"crit": ["exp"]}))
    with pytest.raises(MalformedTokenError):
        await v.verify("opaque-token-without-introspection")


async def test_missing_kid_refused(gatehouse):
    with pytest.raises(UnknownKeyError):
        await verifier(gatehouse).verify(gatehouse.mint(header={"kid": None}))


async def test_unknown_kid_refetches_once_and_rate_limits(gatehouse):
    v = verifier(gatehouse, jwks_min_refresh_interval=0.5)
    await v.verify(gatehouse.mint())
    assert gatehouse.count("/jwks.json") == 1

    stranger = make_key("ES256")  # never published
    await asyncio.sleep(0.6)
    with pytest.raises(UnknownKeyError):
        await v.verify(gatehouse.mint(key=stranger))
    assert gatehouse.count("/jwks.json") == 2  # one refetch for the unknown kid

    # A burst of unknown kids within the interval triggers no fetch at all.
    for _ in range(5):
        with pytest.raises(UnknownKeyError):
            await v.verify(gatehouse.mint(key=make_key("ES256")))
    assert gatehouse.count("/jwks.json") == 2

    # Known keys keep working from the cache meanwhile.
    await v.verify(gatehouse.mint())
    assert gatehouse.count("/jwks.json") == 2

    await asyncio.sleep(0.6)
    with pytest.raises(UnknownKeyError):
        await v.verify(gatehouse.mint(key=stranger))
    assert gatehouse.count("/jwks.json") == 3


async def test_concurrent_first_use_fetches_once(gatehouse):
    v = verifier(gatehouse)
    tokens = [gatehouse.mint() for _ in range(20)]
    results = await asyncio.gather(*(v.verify(t) for t in tokens))
    assert len(results) == 20
    assert gatehouse.count("/jwks.json") == 1
    assert gatehouse.count("/.well-known/oauth-authorization-server") == 1


async def test_key_rotation(gatehouse):
    v = verifier(gatehouse, jwks_min_refresh_interval=0.2, jwks_max_age=1.0)
    old = gatehouse.keys[0]
    await v.verify(gatehouse.mint(key=old))

    # Gatehouse publishes the next key, then starts signing with it.
    new = make_key("EdDSA")
    gatehouse.keys.append(new)
    await asyncio.sleep(0.3)
    await v.verify(gatehouse.mint(key=new))  # unknown kid -> refetch -> found
    await v.verify(gatehouse.mint(key=old))  # old one still published
    assert gatehouse.count("/jwks.json") == 2

    # The old key is retired; once the cached JWKS is older than jwks_max_age it goes.
    gatehouse.keys.remove(old)
    await asyncio.sleep(1.1)
    await v.verify(gatehouse.mint(key=new))
    assert gatehouse.count("/jwks.json") == 3
    with pytest.raises(UnknownKeyError):
        await v.verify(gatehouse.mint(key=old))


async def test_stale_jwks_kept_when_refresh_fails(gatehouse):
    v = verifier(gatehouse, jwks_min_refresh_interval=0.1, jwks_max_age=0.2)
    await v.verify(gatehouse.mint())
    gatehouse.disabled_paths.add("/jwks.json")
    await asyncio.sleep(0.3)
    await v.verify(gatehouse.mint())  # refresh failed, cached keys still used
    assert gatehouse.count("/jwks.json") == 2


async def test_discovery_path_insertion_for_tenant_issuer(tenant_gatehouse):
    gh = tenant_gatehouse
    assert gh.issuer.endswith("/t/acme")
    await verifier(gh).verify(gh.mint())
    paths = [p for _, p in gh.requests]
    assert paths[0] == "/.well-known/oauth-authorization-server/t/acme"
    assert paths[1] == "/t/acme/jwks.json"


async def test_discovery_falls_back_to_openid_configuration(tenant_gatehouse):
    gh = tenant_gatehouse
    gh.disabled_paths.add("/.well-known/oauth-authorization-server/t/acme")
    await verifier(gh).verify(gh.mint())
    paths = [p for _, p in gh.requests]
    assert paths[:2] == [
        "/.well-known/oauth-authorization-server/t/acme",
        "/t/acme/.well-known/openid-configuration",
    ]


async def test_discovery_issuer_mismatch_refused(gatehouse):
    gatehouse.metadata_overrides["issuer"] = gatehouse.issuer + "/t/other"
    with pytest.raises(DiscoveryError):
        await verifier(gatehouse).verify(gatehouse.mint())
    assert gatehouse.count("/jwks.json") == 0


async def test_discovery_unreachable_is_not_an_invalid_token():
    v = GatehouseVerifier(issuer="http://127.0.0.1:9", resource=RESOURCE, timeout=1)
    with pytest.raises(DiscoveryError) as e:
        await v.verify("eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.e30.c2ln")
    assert not isinstance(e.value, InvalidTokenError)


async def test_act_chain(gatehouse):
    act = {"sub": "agent-a", "client_id": "agent-a", "act": {"sub": "agent-b"}}
    t = await verifier(gatehouse).verify(gatehouse.mint(act=act))
    assert t.act == act
    assert t.actor_chain == [{"sub": "agent-a", "client_id": "agent-a"}, {"sub": "agent-b"}]
    with pytest.raises(InvalidClaimError):
        await verifier(gatehouse).verify(gatehouse.mint(act="agent-a"))
    with pytest.raises(InvalidClaimError):
        await verifier(gatehouse).verify(gatehouse.mint(act={"sub": "a", "act": ["b"]}))


async def test_bad_claim_types_refused(gatehouse):
    v = verifier(gatehouse)
    for claims in ({"scope": ["mcp:read"]}, {"exp": "tomorrow"}, {"sub": 42}, {"client_id": ""}):
        with pytest.raises(InvalidClaimError):
            await v.verify(gatehouse.mint(**claims))


def test_construction_checks():
    with pytest.raises(ValueError):
        GatehouseVerifier(issuer="auth.example.com", resource=RESOURCE)
    with pytest.raises(ValueError):
        GatehouseVerifier(issuer="https://auth.example.com", resource="https://h/mcp#frag")
    with pytest.raises(ValueError):
        GatehouseVerifier(issuer="https://auth.example.com", resource=RESOURCE, algorithms=[])


async def test_verifier_survives_event_loop_changes(gatehouse):
    # A verifier made outside any loop, used from several loops (e.g. tests, workers).
    v = verifier(gatehouse)
    token = gatehouse.mint()

    def run_in_new_loop():
        return asyncio.run(v.verify(token))

    first = await asyncio.to_thread(run_in_new_loop)
    second = await asyncio.to_thread(run_in_new_loop)
    assert first.jti == second.jti


def test_base64_helper_roundtrip():
    assert base64.urlsafe_b64decode(b64url(b"xyz") + "=") == b"xyz"


async def test_verified_token_is_an_ordinary_frozen_verified_token(gatehouse):
    """The hot path builds VerifiedToken without its __init__: it must be
    the same value, immutable, with every field set."""
    import dataclasses

    got = await verifier(gatehouse).verify(gatehouse.mint())
    again = VerifiedToken(**{f.name: getattr(got, f.name) for f in dataclasses.fields(VerifiedToken)})
    assert got == again
    assert hash(got.scopes) == hash(again.scopes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.subject = "someone else"  # type: ignore[misc]
