/**
 * Errors thrown by {@link GatehouseVerifier.verify}.
 *
 * - {@link InvalidTokenError} and its subclasses: refuse the token (401,
 *   `WWW-Authenticate: Bearer error="invalid_token"`).
 * - {@link DiscoveryError}, {@link IntrospectionError}: Gatehouse could not be
 *   asked. This says nothing about the token: answer 5xx, not 401.
 * - {@link InsufficientScopeError} (from `requireScopes`): answer 403
 *   `insufficient_scope`.
 */

export class GatehouseVerifyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Metadata or JWKS could not be fetched or is unusable (including an issuer mismatch). */
export class DiscoveryError extends GatehouseVerifyError {}

/** The introspection endpoint could not be reached, refused our credentials, or answered garbage. */
export class IntrospectionError extends GatehouseVerifyError {}

/** The token must be refused (HTTP 401, `error="invalid_token"`). */
export class InvalidTokenError extends GatehouseVerifyError {
  readonly error = 'invalid_token';
}

/** Not a JWS compact serialization (and not an opaque token we can introspect). */
export class MalformedTokenError extends InvalidTokenError {}
/** `typ` is not `at+jwt` (e.g. an ID token with `typ: JWT`). */
export class InvalidTokenTypeError extends InvalidTokenError {}
/** `alg` is not in the allow-list (`none` and `HS*` never are). */
export class AlgorithmNotAllowedError extends InvalidTokenError {}
/** No `kid`, or a `kid` not in the JWKS even after a refresh. */
export class UnknownKeyError extends InvalidTokenError {}
/** The key named by `kid` does not fit the token's `alg`. */
export class KeyMismatchError extends InvalidTokenError {}
/** The signature does not verify. */
export class InvalidSignatureError extends InvalidTokenError {}
/** `iss` is not exactly the configured issuer. */
export class InvalidIssuerError extends InvalidTokenError {}
/** `aud` does not name this resource (canonical comparison). */
export class InvalidAudienceError extends InvalidTokenError {}
/** `exp` is past (beyond the clock tolerance). */
export class TokenExpiredError extends InvalidTokenError {}
/** `nbf` is in the future (beyond the clock tolerance). */
export class TokenNotYetValidError extends InvalidTokenError {}
/** A claim has the wrong type or shape. */
export class InvalidClaimError extends InvalidTokenError {}
/** Introspection said `active: false` (revoked, expired, unknown, or not ours). */
export class InactiveTokenError extends InvalidTokenError {}

/** A required claim is absent. */
export class MissingClaimError extends InvalidTokenError {
  constructor(
    readonly claim: string,
    message = `token has no "${claim}" claim`,
  ) {
    super(message);
  }
}

/** The token is valid but lacks scopes (HTTP 403, `error="insufficient_scope"`). */
export class InsufficientScopeError extends GatehouseVerifyError {
  readonly error = 'insufficient_scope';
  constructor(
    readonly missing: string[],
    readonly required: string[],
  ) {
    super(`missing scope: ${missing.join(' ')}`);
  }
}
