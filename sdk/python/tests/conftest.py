"""A fake Gatehouse tenant served over real HTTP from a thread: discovery,
JWKS and introspection, with keys generated here by `cryptography`."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

RESOURCE = "http://127.0.0.1:8765/mcp"
INTROSPECTION_CLIENT = ("ticketing-mcp", "s3cret:with/odd+chars &=")


@dataclass
class Key:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]


def make_key(alg: str = "ES256", kid: str | None = None) -> Key:
    kid = kid or uuid.uuid4().hex[:22]
    if alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(alg)
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return Key(kid, alg, private, jwk)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class FakeGatehouse:
    base: str = ""
    issuer: str = ""
    keys: list[Key] = field(default_factory=list)
    published: list[dict[str, Any]] | None = None  # JWKS keys; None = all of `keys`
    introspection: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata_overrides: dict[str, Any] = field(default_factory=dict)
    disabled_paths: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    introspection_auth: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what the server serves
    def metadata(self) -> dict[str, Any]:
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks.json",
            "introspection_endpoint": f"{self.issuer}/introspect",
            "response_types_supported": ["code"],
        }
        doc.update(self.metadata_overrides)
        return doc

    def jwks(self) -> dict[str, Any]:
        keys = self.published if self.published is not None else [k.jwk for k in self.keys]
        return {"keys": keys}

    def count(self, suffix: str) -> int:
        with self.lock:
            return sum(1 for _, p in self.requests if p.endswith(suffix))

    # -- minting
    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        c: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "3f0c6f7e-7f3b-4a57-9a8e-2b1f3c4d5e6f",
            "aud": RESOURCE,
            "client_id": "demo-public",
            "scope": "mcp:read openid",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 3600,
            "auth_time": now - 10,
        }
        for k, v in overrides.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def mint(self, key: Key | None = None, header: dict[str, Any] | None = None, **claims: Any) -> str:
        key = key or self.keys[0]
        h: dict[str, Any] = {"typ": "at+jwt", "kid": key.kid}
        h.update(header or {})
        h = {k: v for k, v in h.items() if v is not None}
        return jwt.encode(self.claims(**claims), key.private, algorithm=key.alg, headers=h)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        gh = self.server.gh
        path = urlsplit(self.path).path
        with gh.lock:
            gh.requests.append((method, path))
        issuer_path = urlsplit(gh.issuer).path
        if path in gh.disabled_paths:
            return self._send(404, {"error": "not_found"})
        meta_paths = {
            "/.well-known/oauth-authorization-server" + issuer_path,
            "/.well-known/openid-configuration" + issuer_path,
            issuer_path + "/.well-known/openid-configuration",
            issuer_path + "/.well-known/oauth-authorization-server",
        }
        if method == "GET" and path in meta_paths:
            return self._send(200, gh.metadata())
        if method == "GET" and path == issuer_path + "/jwks.json":
            return self._send(200, gh.jwks())
        if method == "POST" and path == issuer_path + "/introspect":
            return self._introspect(gh)
        return self._send(404, {"error": "not_found"})

    def _introspect(self, gh: FakeGatehouse) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        auth = self.headers.get("Authorization", "")
        creds: tuple[str, str] | None = None
        if auth.lower().startswith("basic "):
            raw = base64.b64decode(auth[6:]).decode()
            user, _, pw = raw.partition(":")
            creds = (unquote_plus(user), unquote_plus(pw))
        if creds != INTROSPECTION_CLIENT:
            return self._send(401, {"error": "invalid_client"})
        with gh.lock:
            gh.introspection_auth.append(creds)
        token = (form.get("token") or [""])[0]
        return self._send(200, gh.introspection.get(token, {"active": False}))

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gh: FakeGatehouse


def _serve(issuer_path: str = "") -> tuple[FakeGatehouse, _Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    gh = FakeGatehouse(base=base, issuer=base + issuer_path, keys=[make_key("ES256")])
    server.gh = gh
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return gh, server


@pytest.fixture
def gatehouse():
    gh, server = _serve()
    yield gh
    server.shutdown()
    server.server_close()


@pytest.fixture
def tenant_gatehouse():
    """A non-default tenant: the issuer has a path (/t/acme)."""
    gh, server = _serve("/t/acme")
    yield gh
    server.shutdown()
    server.server_close()
