"""Verification of Gatehouse access tokens (RFC 9068 JWTs and opaque tokens)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
import jwt
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.exceptions import PyJWTError

from . import errors as E
from .resource import InvalidResourceError, canonicalize_resource

__all__ = [
    "GatehouseVerifier",
    "IntrospectionConfig",
    "VerifiedToken",
    "SUPPORTED_ALGORITHMS",
    "discovery_urls",
]

log = logging.getLogger("gatehouse_verify")

# Asymmetric JWS algorithms this package can verify, with the JWK key type
# (and curves) each one needs. Symmetric (HS*) and "none" are deliberately absent.
_ALG_KEYS: dict[str, tuple[str, frozenset[str] | None]] = {
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
}
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_ALG_KEYS)

_ACCESS_TOKEN_TYPS = ("at+jwt", "application/at+jwt")
# base64url without padding. Python's base64 decoder skips characters
# outside the alphabet, so the parts are checked with this (at C speed)
# before they are decoded: the header once (then its check is cached), the
# signature on every token. The payload is covered by the signature.
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_REQUIRED_JWT_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")


@dataclass(frozen=True)
class IntrospectionConfig:
    """How to introspect tokens (RFC 7662) at Gatehouse.

    ``client_id``/``client_secret`` are a confidential client of the same
    tenant (authenticated with ``client_secret_basic``). Answers are cached for
    ``cache_ttl`` seconds, never past the token's ``exp``; ``0`` disables the
    cache. With ``introspect_jwts`` JWTs are introspected too (after local
    validation), so revocation counts within ``cache_ttl``. ``endpoint``
    overrides the ``introspection_endpoint`` from discovery.
    """

    client_id: str
    client_secret: str = field(repr=False)
    cache_ttl: float = 30
    introspect_jwts: bool = False
    endpoint: str | None = None
    max_cache_entries: int = 10_000


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check.

    ``audience`` is this resource in canonical form (the ``aud`` it matched);
    ``scopes`` come from the space-separated ``scope`` claim; ``act`` is the
    RFC 8693 actor claim if the token carries one; ``claims`` holds every claim
    (or the introspection response).
    """

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    audience: str
    expires_at: int
    jti: str | None
    act: dict[str, Any] | None
    claims: dict[str, Any]
    issuer: str = ""
    introspected: bool = False

    def has_scopes(self, *scopes: str) -> bool:
        """Whether the token carries every one of ``scopes``."""
        return all(s in self.scopes for s in scopes)

    def require_scopes(self, *scopes: str) -> None:
        """Raises :class:`InsufficientScopeError` (answer 403) unless every scope is granted."""
        missing = [s for s in scopes if s not in self.scopes]
        if missing:
            raise E.InsufficientScopeError(missing, list(scopes))

    @property
    def actor_chain(self) -> list[dict[str, Any]]:
        """The delegation chain of the ``act`` claim, current actor first
        (``act``, then ``act.act``, ...). Each entry is the actor object
        without its nested ``act``. Empty when the token has no ``act``."""
        chain: list[dict[str, Any]] = []
        node = self.act
        while isinstance(node, dict):
            chain.append({k: v for k, v in node.items() if k != "act"})
            node = node.get("act")
        return chain

    @property
    def is_user_token(self) -> bool:
        """Gatehouse puts ``auth_time`` in tokens issued for a signed-in user only."""
        return "auth_time" in self.claims


def _verified_token(**values: Any) -> VerifiedToken:
    """A ``VerifiedToken`` with every field given, without the frozen
    dataclass's per-field ``object.__setattr__`` (a microsecond per token on
    the verification hot path). Same object as ``VerifiedToken(**values)``."""
    token = object.__new__(VerifiedToken)
    token.__dict__.update(values)
    return token


def discovery_urls(issuer: str) -> list[str]:
    """Metadata URLs to try for ``issuer``, in order: RFC 8414 (path inserted
    after the host), then OpenID Connect Discovery (path appended), then OIDC
    with the path inserted."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [
            f"{origin}/.well-known/oauth-authorization-server",
            f"{origin}/.well-known/openid-configuration",
        ]
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
        f"{origin}/.well-known/openid-configuration{path}",
    ]


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64url_decode(segment: str) -> bytes:
    """base64url without padding (``base64.urlsafe_b64decode`` minus its
    Python-level steps); raises ValueError."""
    data = segment.encode("ascii").translate(_URLSAFE_TO_STANDARD)
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _b64url_json(segment: str, part: str = "header") -> Any:
    try:
        return json.loads(_b64url_decode(segment))
    except (ValueError, TypeError) as e:
        raise E.MalformedTokenError(f"token {part} is not base64url-encoded JSON") from e


def _b64url_bytes(segment: str) -> bytes:
    try:
        return _b64url_decode(segment)
    except (ValueError, TypeError) as e:
        raise E.MalformedTokenError("token signature is not base64url") from e


# ECDSA over JOSE's R||S signatures (RFC 7518 §3.4): the hash and the size
# of R and S per algorithm.
_EC_JWS: dict[str, tuple[type[hashes.HashAlgorithm], int]] = {
    "ES256": (hashes.SHA256, 32),
    "ES384": (hashes.SHA384, 48),
    "ES512": (hashes.SHA512, 66),
}

SignatureCheck = Callable[[bytes, bytes], bool]


def _signature_check(key: Any, alg: str) -> SignatureCheck:
    """``check(signing_input, signature) -> bool`` for ``key`` and ``alg``.

    ECDSA is done here, with the ``ECDSA`` object made once: JOSE's R||S
    goes to DER, then ``cryptography`` verifies (what PyJWT does, without
    its per-call allocations; ES256 is the default on the hot path). Other
    algorithms use PyJWT's implementation as they are.
    """
    ec_alg = _EC_JWS.get(alg)
    if ec_alg is not None and isinstance(key, ec.EllipticCurvePublicKey):
        hash_cls, size = ec_alg
        ecdsa = ec.ECDSA(hash_cls())

        def check_ec(signing_input: bytes, signature: bytes) -> bool:
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            try:
                key.verify(der, signing_input, ecdsa)
            except _BadSignature:
                return False
            return True

        return check_ec
    algorithm = jwt.get_algorithm_by_name(alg)

    def check_other(signing_input: bytes, signature: bytes) -> bool:
        return bool(algorithm.verify(signing_input, key, signature))

    return check_other


def _is_number(v: Any) -> bool:
    t = type(v)
    if t is int:
        return True
    if t is float:
        return math.isfinite(v)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _form(s: str) -> str:
    """application/x-www-form-urlencoded, as RFC 6749 §2.3.1 wants for Basic credentials."""
    return quote_plus(s, safe="")


class _TokenCache:
    """A small bounded map of token hash -> (deadline, result)."""

    def __init__(self, max_entries: int):
        self._max = max(1, max_entries)
        self._data: OrderedDict[str, tuple[float, VerifiedToken | E.InvalidTokenError]] = OrderedDict()

    def get(self, key: str, now: float) -> VerifiedToken | E.InvalidTokenError | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        deadline, value = hit
        if now >= deadline:
            del self._data[key]
            return None
        return value

    def put(self, key: str, deadline: float, value: VerifiedToken | E.InvalidTokenError, now: float) -> None:
        if deadline <= now:
            return
        self._data[key] = (deadline, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class GatehouseVerifier:
    """Verifies access tokens issued by one Gatehouse tenant for one resource.

    ::

        verifier = GatehouseVerifier(
            issuer="https://auth.example.com/t/acme",
            resource="https://mcp.example.com/mcp",
        )
        token = await verifier.verify(bearer)      # raises InvalidTokenError
        token.require_scopes("tickets:read")       # raises InsufficientScopeError

    Parameters:
        issuer: the tenant's issuer, exactly as in its metadata (no trailing slash).
        resource: this server's resource URI; compared with ``aud`` in canonical form.
        algorithms: the JWS algorithms to accept. Keep it to the tenant's
            algorithm(s). ``none`` and ``HS*`` are refused.
        leeway: seconds of clock skew tolerated for ``exp`` and ``nbf``.
        jwks_min_refresh_interval: at most one JWKS fetch per this many
            seconds, however many unknown ``kid`` values arrive.
        jwks_max_age: the JWKS is refetched when older than this (Gatehouse
            serves it with ``max-age=300``); if that fetch fails the old keys
            are kept.
        introspection: an :class:`IntrospectionConfig` (or a mapping with its
            fields) to accept opaque tokens; without it opaque tokens are refused.
        http_client: an ``httpx.AsyncClient`` to use; by default a short-lived
            client is made for each request.
        timeout: seconds for each HTTP request to Gatehouse.
        clock: returns the current Unix time (for tests).
    """

    def __init__(
        self,
        issuer: str,
        resource: str,
        algorithms: Iterable[str] = ("ES256", "EdDSA", "RS256"),
        leeway: float = 60,
        jwks_min_refresh_interval: float = 30,
        introspection: IntrospectionConfig | Mapping[str, Any] | None = None,
        *,
        jwks_max_age: float = 300,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer is required")
        parts = urlsplit(issuer)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        try:
            self.resource = canonicalize_resource(resource)
        except InvalidResourceError as e:
            raise ValueError(f"invalid resource: {e}") from e
        algs = tuple(algorithms) if not isinstance(algorithms, str) else (algorithms,)
        if not algs:
            raise ValueError("algorithms must not be empty")
        for alg in algs:
            if alg not in _ALG_KEYS:
                raise ValueError(
                    f"algorithm {alg!r} is not allowed; use asymmetric algorithms only "
                    f"({', '.join(SUPPORTED_ALGORITHMS)})"
                )
        if leeway < 0 or jwks_min_refresh_interval < 0 or jwks_max_age < 0:
            raise ValueError("leeway and intervals must not be negative")
        if isinstance(introspection, Mapping):
            introspection = IntrospectionConfig(**introspection)
        if introspection is not None and not isinstance(introspection, IntrospectionConfig):
            raise TypeError("introspection must be an IntrospectionConfig or a mapping")

        self.issuer = issuer
        self.algorithms = algs
        self.leeway = leeway
        self.jwks_min_refresh_interval = jwks_min_refresh_interval
        self.jwks_max_age = jwks_max_age
        self.introspection = introspection
        self._http = http_client
        self._timeout = timeout
        self._clock = clock

        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str, list[dict[str, Any]]] | None = None
        # (kid, alg) -> signature check with the key object: built from the
        # JWK once per JWKS fetch rather than once per token.
        self._verifying_keys: dict[tuple[str, str], SignatureCheck] = {}
        # Encoded JWS header -> (alg, kid) once it passed the header checks:
        # a tenant's tokens share a handful of headers.
        self._headers: dict[str, tuple[str, str]] = {}
        self._jwks_attempted_at: float | None = None  # monotonic, last fetch attempt
        self._jwks_loaded_at: float | None = None  # monotonic, last successful fetch
        self._locks: dict[int, tuple[asyncio.Lock, asyncio.Lock]] = {}
        self._cache = _TokenCache(introspection.max_cache_entries if introspection else 1)
        # Counters, handy for monitoring and tests.
        self.stats = {"discovery_fetches": 0, "jwks_fetches": 0, "introspections": 0}

    # ------------------------------------------------------------------ API

    async def verify(self, token: str) -> VerifiedToken:
        """Verifies ``token`` and returns what it says.

        Raises a subclass of :class:`InvalidTokenError` when the token must be
        refused (answer 401), :class:`DiscoveryError` or
        :class:`IntrospectionError` when Gatehouse could not be asked (answer 5xx).
        """
        if not isinstance(token, str) or not token or token != token.strip():
            raise E.MalformedTokenError("empty or malformed token")
        dots = token.count(".")
        if dots == 2:
            verified = await self._verify_jwt(token)
            if self.introspection is not None and self.introspection.introspect_jwts:
                await self._introspect(token)
            return verified
        if dots == 0 and self.introspection is not None:
            return await self._introspect(token)
        if dots == 0:
            raise E.MalformedTokenError("opaque token, and no introspection is configured")
        raise E.MalformedTokenError("not a JWS compact serialization")

    async def metadata(self) -> dict[str, Any]:
        """The issuer's authorization server metadata (fetched once, then cached)."""
        if self._metadata is not None:
            return self._metadata
        lock, _ = self._lock_pair()
        async with lock:
            if self._metadata is None:
                self._metadata = await self._discover()
        return self._metadata

    async def refresh_keys(self) -> None:
        """Fetches the JWKS now (ignores the rate limit)."""
        await self._fetch_jwks()

    # ------------------------------------------------------------ internals

    def _lock_pair(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        # asyncio.Lock binds to the running loop; keep one pair per loop so a
        # verifier made at import time works under any loop.
        loop_id = id(asyncio.get_running_loop())
        pair = self._locks.get(loop_id)
        if pair is None:
            if len(self._locks) > 8:
                self._locks.clear()
            pair = (asyncio.Lock(), asyncio.Lock())
            self._locks[loop_id] = pair
        return pair

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", self._timeout)
        kwargs.setdefault("follow_redirects", False)
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
        if self._http is not None:
            return await self._http.request(method, url, headers=headers, **kwargs)
        async with httpx.AsyncClient() as client:
            return await client.request(method, url, headers=headers, **kwargs)

    async def _get_json(self, url: str) -> tuple[int, Any]:
        resp = await self._request("GET", url)
        if resp.status_code != 200:
            return resp.status_code, None
        try:
            return 200, resp.json()
        except ValueError:
            return 200, None

    async def _discover(self) -> dict[str, Any]:
        problems: list[str] = []
        for url in discovery_urls(self.issuer):
            self.stats["discovery_fetches"] += 1
            try:
                status, doc = await self._get_json(url)
            except httpx.HTTPError as e:
                problems.append(f"{url}: {type(e).__name__}")
                continue
            if status != 200 or not isinstance(doc, dict):
                problems.append(f"{url}: HTTP {status}" if status != 200 else f"{url}: not a JSON object")
                continue
            if doc.get("issuer") != self.issuer:
                # RFC 8414 §3.3: a document for another issuer must not be used.
                raise E.DiscoveryError(
                    f"metadata at {url} is for issuer {doc.get('issuer')!r}, not {self.issuer!r}"
                )
            if not isinstance(doc.get("jwks_uri"), str):
                raise E.DiscoveryError(f"metadata at {url} has no jwks_uri")
            return doc
        raise E.DiscoveryError("authorization server metadata not found: " + "; ".join(problems))

    async def _fetch_jwks(self) -> None:
        meta = await self.metadata()
        _, lock = self._lock_pair()
        async with lock:
            await self._fetch_jwks_locked(meta["jwks_uri"])

    async def _fetch_jwks_locked(self, jwks_uri: str) -> None:
        self._jwks_attempted_at = time.monotonic()
        self.stats["jwks_fetches"] += 1
        try:
            status, doc = await self._get_json(jwks_uri)
        except httpx.HTTPError as e:
            raise E.DiscoveryError(f"could not fetch the JWKS: {type(e).__name__}") from e
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise E.DiscoveryError(f"unusable JWKS at {jwks_uri} (HTTP {status})")
        keys: dict[str, list[dict[str, Any]]] = {}
        for jwk_ in doc["keys"]:
            if not isinstance(jwk_, dict) or not isinstance(jwk_.get("kid"), str):
                continue
            if jwk_.get("use", "sig") != "sig":
                continue
            keys.setdefault(jwk_["kid"], []).append(jwk_)
        self._keys = keys
        self._verifying_keys = {}
        self._jwks_loaded_at = time.monotonic()

    def _may_refresh(self, now: float) -> bool:
        return self._jwks_attempted_at is None or now - self._jwks_attempted_at >= self.jwks_min_refresh_interval

    async def _candidates(self, kid: str) -> list[dict[str, Any]]:
        """The JWKs named ``kid``, refreshing the JWKS when it is stale or the
        kid is unknown, at most once per ``jwks_min_refresh_interval``."""
        meta = await self.metadata()
        now = time.monotonic()
        if self._keys is None:
            _, lock = self._lock_pair()
            async with lock:
                if self._keys is None:
                    await self._fetch_jwks_locked(meta["jwks_uri"])
        elif (
            self._jwks_loaded_at is not None
            and now - self._jwks_loaded_at >= self.jwks_max_age
            and self._may_refresh(now)
        ):
            _, lock = self._lock_pair()
            async with lock:
                if self._may_refresh(time.monotonic()):
                    try:
                        await self._fetch_jwks_locked(meta["jwks_uri"])
                    except E.DiscoveryError as e:
                        log.warning("keeping the cached JWKS: %s", e)
        assert self._keys is not None
        if kid in self._keys:
            return self._keys[kid]
        _, lock = self._lock_pair()
        async with lock:
            if kid not in self._keys and self._may_refresh(time.monotonic()):
                log.info("unknown kid %r: refetching the JWKS", kid[:64])
                await self._fetch_jwks_locked(meta["jwks_uri"])
        if kid in self._keys:
            return self._keys[kid]
        raise E.UnknownKeyError("token signed with an unknown key")

    def _fresh_signature_check(self, kid: str, alg: str) -> SignatureCheck | None:
        """The cached signature check for ``kid`` and ``alg`` while the JWKS
        is fresh (no await, nothing to fetch); else None."""
        check = self._verifying_keys.get((kid, alg))
        if (
            check is not None
            and self._jwks_loaded_at is not None
            and time.monotonic() - self._jwks_loaded_at < self.jwks_max_age
        ):
            return check
        return None

    async def _signature_check_for(self, kid: str, alg: str) -> SignatureCheck:
        """The signature check with the key named ``kid``, for ``alg``,
        refetching the JWKS when it is stale or the kid unknown."""
        candidates = await self._candidates(kid)  # a refetch of the JWKS clears the cache
        check = self._verifying_keys.get((kid, alg))
        if check is not None:
            return check
        jwk_ = self._pick_key(candidates, alg)
        try:
            check = _signature_check(jwt.PyJWK(jwk_, algorithm=alg).key, alg)
        except PyJWTError as e:
            raise E.KeyMismatchError(f"key {kid!r} is not usable with {alg}") from e
        self._verifying_keys[(kid, alg)] = check
        return check

    def _read_header(self, header_b64: str) -> tuple[str, str]:
        """``(alg, kid)`` of a JWS header that passes the checks (RFC 9068
        ``typ``, an allowed ``alg``, no ``crit``, a ``kid``)."""
        known = self._headers.get(header_b64)
        if known is not None:
            return known
        if not header_b64 or not _B64URL.fullmatch(header_b64):
            raise E.MalformedTokenError("token header is not base64url")
        header = _b64url_json(header_b64)
        if not isinstance(header, dict):
            raise E.MalformedTokenError("token header is not a JSON object")
        if "crit" in header:
            raise E.MalformedTokenError("critical header extensions are not supported")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPS:
            raise E.InvalidTokenTypeError(f"token typ is {typ!r}, not 'at+jwt'")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise E.AlgorithmNotAllowedError(f"token alg {alg!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise E.UnknownKeyError("token header has no kid")
        if len(self._headers) >= 64:
            self._headers.clear()
        self._headers[header_b64] = (alg, kid)
        return alg, kid

    async def _verify_jwt(self, token: str) -> VerifiedToken:
        header_b64, payload_b64, signature_b64 = token.split(".")
        alg, kid = self._read_header(header_b64)
        # The signature part must be strictly base64url (else one token
        # would have many spellings); the payload is covered by the
        # signature: only the issuer's own bytes get past it.
        if not payload_b64 or not _B64URL.fullmatch(signature_b64):
            raise E.MalformedTokenError("token payload or signature is not base64url")

        check = self._fresh_signature_check(kid, alg) or await self._signature_check_for(kid, alg)
        # Over the exact bytes signed, with the key object kept since the
        # JWKS was read.
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        if not signature_b64 or not check(signing_input, _b64url_bytes(signature_b64)):
            raise E.InvalidSignatureError("signature verification failed")
        claims = _b64url_json(payload_b64, "payload")
        if not isinstance(claims, dict):
            raise E.MalformedTokenError("token payload is not a JSON object")
        for name in _REQUIRED_JWT_CLAIMS:
            if name not in claims:
                raise E.MissingClaimError(name)
        return self._check_claims(claims, introspected=False)

    def _pick_key(self, candidates: list[dict[str, Any]], alg: str) -> dict[str, Any]:
        kty, curves = _ALG_KEYS[alg]
        for jwk_ in candidates:
            if "alg" in jwk_ and jwk_["alg"] != alg:
                continue
            if jwk_.get("kty") != kty:
                continue
            if curves is not None and jwk_.get("crv") not in curves:
                continue
            return jwk_
        raise E.KeyMismatchError(f"the key named by kid is not a {alg} key")

    def _check_claims(self, claims: dict[str, Any], *, introspected: bool) -> VerifiedToken:
        now = self._clock()

        iss = claims.get("iss")
        if not introspected or iss is not None:
            if iss != self.issuer:
                raise E.InvalidIssuerError("token issuer is not the configured issuer")

        if "aud" not in claims:
            raise E.MissingClaimError("aud")
        aud = claims["aud"]
        # Gatehouse's tokens carry exactly this resource's canonical URI:
        # that case is one comparison.
        if aud != self.resource:
            auds = [aud] if isinstance(aud, str) else aud
            if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
                raise E.InvalidClaimError("aud must be a string or a list of strings")
            if not any(self._is_this_resource(a) for a in auds):
                raise E.InvalidAudienceError("token is not for this resource")

        if "exp" not in claims:
            raise E.MissingClaimError("exp")
        exp = claims["exp"]
        if not _is_number(exp):
            raise E.InvalidClaimError("exp must be a number")
        if now >= exp + self.leeway:
            raise E.TokenExpiredError("token expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_number(nbf):
                raise E.InvalidClaimError("nbf must be a number")
            if nbf > now + self.leeway:
                raise E.TokenNotYetValidError("token is not valid yet")
        iat = claims.get("iat")
        if iat is not None and not _is_number(iat):
            raise E.InvalidClaimError("iat must be a number")

        for name in ("sub", "client_id"):
            if name not in claims:
                raise E.MissingClaimError(name)
            if not isinstance(claims[name], str) or not claims[name]:
                raise E.InvalidClaimError(f"{name} must be a non-empty string")
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise E.InvalidClaimError("jti must be a string")
        scope = claims.get("scope", "")
        if scope is None:
            scope = ""
        if not isinstance(scope, str):
            raise E.InvalidClaimError("scope must be a space-separated string")
        act = claims.get("act")
        if act is not None:
            self._check_act(act)

        return _verified_token(
            subject=claims["sub"],
            client_id=claims["client_id"],
            scopes=tuple(filter(None, scope.split(" "))),
            audience=self.resource,
            expires_at=int(exp),
            jti=jti,
            act=act,
            claims=dict(claims),
            issuer=self.issuer,
            introspected=introspected,
        )

    def _is_this_resource(self, aud: str) -> bool:
        if aud == self.resource:
            return True
        try:
            return canonicalize_resource(aud) == self.resource
        except InvalidResourceError:
            return False

    @staticmethod
    def _check_act(act: Any) -> None:
        depth = 0
        node = act
        while node is not None:
            depth += 1
            if not isinstance(node, dict) or depth > 32:
                raise E.InvalidClaimError("act must be a JSON object (RFC 8693 §4.1)")
            sub = node.get("sub")
            if sub is not None and not isinstance(sub, str):
                raise E.InvalidClaimError("act.sub must be a string")
            node = node.get("act")

    # -------------------------------------------------------- introspection

    async def _introspect(self, token: str) -> VerifiedToken:
        cfg = self.introspection
        assert cfg is not None
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key, time.monotonic())
        if isinstance(cached, VerifiedToken):
            if self._clock() < cached.expires_at + self.leeway:
                return cached
        elif isinstance(cached, E.InvalidTokenError):
            raise copy.copy(cached)

        endpoint = cfg.endpoint
        if endpoint is None:
            endpoint = (await self.metadata()).get("introspection_endpoint")
            if not isinstance(endpoint, str):
                raise E.IntrospectionError("the issuer's metadata has no introspection_endpoint")
        basic = base64.b64encode(f"{_form(cfg.client_id)}:{_form(cfg.client_secret)}".encode()).decode()
        self.stats["introspections"] += 1
        try:
            resp = await self._request(
                "POST",
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": f"Basic {basic}"},
            )
        except httpx.HTTPError as e:
            raise E.IntrospectionError(f"introspection request failed: {type(e).__name__}") from e
        if resp.status_code != 200:
            raise E.IntrospectionError(f"introspection endpoint answered HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError as e:
            raise E.IntrospectionError("introspection response is not JSON") from e
        if not isinstance(body, dict) or "active" not in body:
            raise E.IntrospectionError("introspection response has no 'active' member")

        mono = time.monotonic()
        try:
            if body["active"] is not True:
                raise E.InactiveTokenError("token is not active")
            token_type = body.get("token_type")
            if isinstance(token_type, str) and token_type.lower() == "refresh_token":
                raise E.InactiveTokenError("a refresh token is not an access token")
            verified = self._check_claims(body, introspected=True)
        except E.InvalidTokenError as e:
            if cfg.cache_ttl > 0:
                self._cache.put(key, mono + cfg.cache_ttl, e, mono)
            raise
        if cfg.cache_ttl > 0:
            remaining = verified.expires_at - self._clock()
            self._cache.put(key, mono + min(cfg.cache_ttl, remaining), verified, mono)
        return verified
