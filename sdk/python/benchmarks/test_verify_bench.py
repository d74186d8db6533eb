"""What verifying a token costs next to the bare signature check it wraps.

Run: ``sdk/bench-sdks.sh python`` (pytest-benchmark; a one-shot smoke of the
same functions: ``pytest benchmarks --benchmark-disable``).

The verifier is built over an ``httpx.MockTransport`` that serves the
discovery document and the JWKS, so nothing leaves the process; after the
first verification the keys are cached and no request is made while
measuring (checked at the end). ``verify`` is a coroutine that, with cached
keys, finishes without ever suspending: it is driven here by hand
(``_run``), so the figure is the verification itself and not an event loop's
scheduling, which a server pays per request whatever it does.

Benchmarks, ES256 (P-256, SHA-256), one library underneath (``cryptography``,
which PyJWT uses):
- ``verify_cached_keys``: ``GatehouseVerifier.verify`` (every check: typ,
  alg, kid, signature, iss, aud, exp/nbf/iat, required claims, scope).
- ``bare_signature_check``: ``EllipticCurvePublicKey.verify`` on the signing
  input and the DER signature, both prepared beforehand: the crypto alone.
- ``pyjwt_decode_signature_only``: ``jwt.decode`` with only the signature
  checked, for comparison with what the SDK used to call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm

from gatehouse_verify import GatehouseVerifier

ISSUER = "http://gatehouse.bench"
RESOURCE = "http://127.0.0.1:8765/mcp"


def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _run(coro: Any) -> Any:
    """Runs a coroutine that must not suspend (cached keys, no I/O)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("verify suspended: it waited for I/O while measuring")


class _Issuer:
    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.kid = uuid.uuid4().hex[:22]
        jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": "ES256", "use": "sig"})
        self.jwk = jwk
        self.requests = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks.json"})
        if request.url.path == "/jwks.json":
            return httpx.Response(200, json={"keys": [self.jwk]})
        return httpx.Response(404, json={"error": "not_found"})

    def token(self) -> str:
        # The claims and header Gatehouse puts in an access token.
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "3f0c6f7e-7f3b-4a57-9a8e-2b1f3c4d5e6f",
            "aud": RESOURCE,
            "client_id": "demo-public",
            "scope": "mcp:read",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 3600,
            "auth_time": now - 10,
        }
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"typ": "at+jwt", "kid": self.kid})


@pytest.fixture(scope="module")
def setup() -> Any:
    issuer = _Issuer()
    client = httpx.AsyncClient(transport=httpx.MockTransport(issuer.handler))
    verifier = GatehouseVerifier(issuer=ISSUER, resource=RESOURCE, algorithms=("ES256",), http_client=client)
    token = issuer.token()
    asyncio.run(verifier.verify(token))  # discovery and JWKS, once
    requests_before = issuer.requests
    yield issuer, verifier, token
    assert issuer.requests == requests_before, "no HTTP request while measuring"


def test_verify_cached_keys(benchmark: Any, setup: Any) -> None:
    _, verifier, token = setup

    async def in_a_loop() -> Any:
        # As in a server: verify runs inside an event loop (it may need one
        # for its locks), but with cached keys it never waits on it.
        return benchmark(lambda: _run(verifier.verify(token)))

    verified = asyncio.run(in_a_loop())
    assert verified.scopes == ("mcp:read",)


def test_bare_signature_check(benchmark: Any, setup: Any) -> None:
    issuer, _, token = setup
    signing_input, _, sig = token.rpartition(".")
    raw = _b64url_decode(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = issuer.private.public_key()
    message = signing_input.encode()
    algorithm = ec.ECDSA(hashes.SHA256())
    benchmark(public.verify, der, message, algorithm)


def test_pyjwt_decode_signature_only(benchmark: Any, setup: Any) -> None:
    issuer, _, token = setup
    public = issuer.private.public_key()
    options = {"verify_signature": True, "verify_exp": False, "verify_aud": False, "verify_iss": False}
    claims = benchmark(jwt.decode, token, public, algorithms=["ES256"], options=options)
    assert json.dumps(claims)
