"""Exceptions raised by :class:`gatehouse_verify.GatehouseVerifier`.

Two families:

* :class:`InvalidTokenError` and its subclasses: the token is not acceptable.
  Answer ``401`` with ``WWW-Authenticate: Bearer error="invalid_token"``.
* :class:`DiscoveryError` and :class:`IntrospectionError`: Gatehouse could not
  be reached or answered something unusable. This says nothing about the
  token; answer ``5xx`` (or ``503``), not ``401``.

:class:`InsufficientScopeError` is raised by
:meth:`VerifiedToken.require_scopes`; answer ``403`` with
``error="insufficient_scope"``.
"""

from __future__ import annotations

__all__ = [
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
]


class GatehouseVerifyError(Exception):
    """Base class of every error of this package."""


class DiscoveryError(GatehouseVerifyError):
    """Authorization server metadata or the JWKS could not be fetched or is unusable
    (including a metadata ``issuer`` that is not the configured issuer)."""


class IntrospectionError(GatehouseVerifyError):
    """The introspection endpoint could not be reached, refused our client
    credentials, or answered something that is not an RFC 7662 response."""


class InvalidTokenError(GatehouseVerifyError):
    """The token must be refused (HTTP 401, ``error="invalid_token"``)."""

    error = "invalid_token"


class MalformedTokenError(InvalidTokenError):
    """Not a well-formed JWS compact serialization (and not an opaque token we can introspect)."""


class InvalidTokenTypeError(InvalidTokenError):
    """The ``typ`` header is not ``at+jwt`` (e.g. an ID token, ``typ: JWT``)."""


class AlgorithmNotAllowedError(InvalidTokenError):
    """The ``alg`` header is not in the allow-list (``none`` and ``HS*`` never are)."""


class UnknownKeyError(InvalidTokenError):
    """No ``kid``, or a ``kid`` that is not in the issuer's JWKS even after a refresh."""


class KeyMismatchError(InvalidTokenError):
    """The key named by ``kid`` is not usable with the token's ``alg``."""


class InvalidSignatureError(InvalidTokenError):
    """The signature does not verify."""


class InvalidIssuerError(InvalidTokenError):
    """``iss`` is not exactly the configured issuer."""


class InvalidAudienceError(InvalidTokenError):
    """``aud`` does not name this resource (compared in canonical form)."""


class TokenExpiredError(InvalidTokenError):
    """``exp`` is in the past (beyond the leeway)."""


class TokenNotYetValidError(InvalidTokenError):
    """``nbf`` (or ``iat``) is in the future (beyond the leeway)."""


class MissingClaimError(InvalidTokenError):
    """A required claim (``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``jti``, ``client_id``) is absent."""

    def __init__(self, claim: str, message: str | None = None):
        super().__init__(message or f"token has no {claim!r} claim")
        self.claim = claim


class InvalidClaimError(InvalidTokenError):
    """A claim has the wrong type or shape (e.g. ``scope`` not a string, ``act`` not an object)."""


class InactiveTokenError(InvalidTokenError):
    """Introspection answered ``active: false`` (revoked, expired, unknown or not for us)."""


class InsufficientScopeError(GatehouseVerifyError):
    """The token is valid but lacks scopes (HTTP 403, ``error="insufficient_scope"``)."""

    error = "insufficient_scope"

    def __init__(self, missing: list[str], required: list[str]):
        super().__init__("missing scope: " + " ".join(missing))
        self.missing = list(missing)
        self.required = list(required)
