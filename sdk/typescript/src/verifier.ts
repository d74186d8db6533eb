import {
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type FlattenedJWSInput,
  type JWSHeaderParameters,
  type JWTPayload,
} from 'jose';

import {
  AlgorithmNotAllowedError,
  DiscoveryError,
  InactiveTokenError,
  InsufficientScopeError,
  IntrospectionError,
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
} from './errors.js';
import { canonicalizeResource, InvalidResourceError } from './resource.js';

/** Asymmetric JWS algorithms that may be allowed. `none` and `HS*` never are. */
export const SUPPORTED_ALGORITHMS = [
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
] as const;

const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'];
const ACCESS_TOKEN_TYPS = new Set(['at+jwt', 'application/at+jwt']);

export interface IntrospectionOptions {
  /** A confidential client of the same tenant (sent with `client_secret_basic`). */
  clientId: string;
  clientSecret: string;
  /** Seconds to cache answers, never past the token's `exp`. 0 disables. Default 30. */
  cacheTtl?: number;
  /** Also introspect JWTs (after local validation), so revocation counts. Default false. */
  introspectJwts?: boolean;
  /** Overrides the `introspection_endpoint` from discovery. */
  endpoint?: string;
  /** Bound of the answer cache. Default 10000. */
  maxCacheEntries?: number;
}

export interface VerifierOptions {
  /** The tenant's issuer, exactly as in its metadata. */
  issuer: string;
  /** This server's resource URI; compared with `aud` in canonical form. */
  resource: string;
  /** Allowed JWS algorithms. Default `['ES256', 'EdDSA', 'RS256']`; keep it to the tenant's. */
  algorithms?: readonly string[];
  /** Seconds of clock skew tolerated for `exp`/`nbf`. Default 60. */
  clockTolerance?: number;
  /** At most one JWKS refetch for unknown `kid`s per this many seconds. Default 30. */
  jwksCooldown?: number;
  /** The JWKS is refetched when older than this many seconds. Default 300. */
  jwksCacheMaxAge?: number;
  /** Enables opaque tokens; without it they are refused. */
  introspection?: IntrospectionOptions;
  /** Milliseconds for each HTTP request to Gatehouse. Default 5000. */
  timeout?: number;
  /** A `fetch` implementation (defaults to the global one). */
  fetch?: typeof fetch;
}

/** What a token that passed every check says. */
export interface VerifiedToken {
  subject: string;
  clientId: string;
  scopes: string[];
  /** This resource in canonical form (the `aud` the token matched). */
  audience: string;
  /** Unix seconds. */
  expiresAt: number;
  jti?: string;
  /** RFC 8693 actor claim, when present. */
  act?: Record<string, unknown>;
  /** Every claim (or the introspection response). */
  claims: Record<string, unknown>;
  issuer: string;
  introspected: boolean;
}

export interface AuthorizationServerMetadata {
  issuer: string;
  jwks_uri: string;
  introspection_endpoint?: string;
  [member: string]: unknown;
}

export interface VerifierStats {
  discoveryFetches: number;
  jwksFetches: number;
  introspections: number;
}

export interface GatehouseVerifier {
  readonly issuer: string;
  /** The configured resource in canonical form. */
  readonly resource: string;
  readonly algorithms: readonly string[];
  /** Verifies a bearer token; throws an {@link InvalidTokenError} subclass to refuse it. */
  verify(token: string): Promise<VerifiedToken>;
  /** The issuer's metadata (fetched once). */
  metadata(): Promise<AuthorizationServerMetadata>;
  readonly stats: Readonly<VerifierStats>;
}

/** Whether `token` carries every one of `scopes`. */
export function hasScopes(token: VerifiedToken, ...scopes: string[]): boolean {
  return scopes.every((s) => token.scopes.includes(s));
}

/** Throws {@link InsufficientScopeError} (answer 403) unless every scope is granted. */
export function requireScopes(token: VerifiedToken, ...scopes: string[]): void {
  const missing = scopes.filter((s) => !token.scopes.includes(s));
  if (missing.length) throw new InsufficientScopeError(missing, scopes);
}

/** The `act` delegation chain, current actor first, each without its nested `act`. */
export function actorChain(token: VerifiedToken): Record<string, unknown>[] {
  const chain: Record<string, unknown>[] = [];
  let node: unknown = token.act;
  while (isObject(node)) {
    const { act, ...actor } = node;
    chain.push(actor);
    node = act;
  }
  return chain;
}

/** Metadata URLs to try: RFC 8414 (path inserted), OIDC (path appended), OIDC (path inserted). */
export function discoveryUrls(issuer: string): string[] {
  const u = new URL(issuer);
  const origin = `${u.protocol}//${u.host}`;
  const path = u.pathname.replace(/\/+$/, '');
  if (!path) {
    return [`${origin}/.well-known/oauth-authorization-server`, `${origin}/.well-known/openid-configuration`];
  }
  return [
    `${origin}/.well-known/oauth-authorization-server${path}`,
    `${origin}${path}/.well-known/openid-configuration`,
    `${origin}/.well-known/openid-configuration${path}`,
  ];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** application/x-www-form-urlencoded, as RFC 6749 §2.3.1 wants for Basic credentials. */
const form = (s: string) => new URLSearchParams({ v: s }).toString().slice(2);

async function sha256Hex(text: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

type Cached = { deadline: number; value: VerifiedToken } | { deadline: number; error: InvalidTokenError };

/** Creates a verifier for the tokens one Gatehouse tenant issues for one resource. */
export function createVerifier(options: VerifierOptions): GatehouseVerifier {
  const issuer = options.issuer;
  let issuerUrl: URL;
  try {
    issuerUrl = new URL(issuer);
  } catch {
    throw new TypeError('issuer must be an http(s) URL');
  }
  if (!['https:', 'http:'].includes(issuerUrl.protocol) || issuerUrl.search || issuerUrl.hash || issuer.includes('#')) {
    throw new TypeError('issuer must be an http(s) URL without query or fragment');
  }
  let resource: string;
  try {
    resource = canonicalizeResource(options.resource);
  } catch (e) {
    throw new TypeError(`invalid resource: ${(e as Error).message}`);
  }
  const algorithms = [...(options.algorithms ?? ['ES256', 'EdDSA', 'RS256'])];
  if (algorithms.length === 0) throw new TypeError('algorithms must not be empty');
  for (const alg of algorithms) {
    if (!(SUPPORTED_ALGORITHMS as readonly string[]).includes(alg)) {
      throw new TypeError(`algorithm "${alg}" is not allowed; use asymmetric algorithms only (${SUPPORTED_ALGORITHMS.join(', ')})`);
    }
  }
  const clockTolerance = options.clockTolerance ?? 60;
  const cooldownMs = (options.jwksCooldown ?? 30) * 1000;
  const cacheMaxAgeMs = (options.jwksCacheMaxAge ?? 300) * 1000;
  const timeout = options.timeout ?? 5000;
  const fetchImpl: typeof fetch = options.fetch ?? ((...args) => globalThis.fetch(...args));
  if (clockTolerance < 0 || cooldownMs < 0 || cacheMaxAgeMs < 0) throw new TypeError('durations must not be negative');
  const introspection = options.introspection;
  const stats: VerifierStats = { discoveryFetches: 0, jwksFetches: 0, introspections: 0 };

  // ---------------------------------------------------------------- discovery
  let metadataPromise: Promise<AuthorizationServerMetadata> | undefined;

  async function discover(): Promise<AuthorizationServerMetadata> {
    const problems: string[] = [];
    for (const url of discoveryUrls(issuer)) {
      stats.discoveryFetches++;
      let res: Response;
      try {
        res = await fetchImpl(url, {
          headers: { accept: 'application/json' },
          redirect: 'manual',
          signal: AbortSignal.timeout(timeout),
        });
      } catch (e) {
        problems.push(`${url}: ${(e as Error).name}`);
        continue;
      }
      if (res.status !== 200) {
        problems.push(`${url}: HTTP ${res.status}`);
        await res.body?.cancel();
        continue;
      }
      let doc: unknown;
      try {
        doc = await res.json();
      } catch {
        problems.push(`${url}: not JSON`);
        continue;
      }
      if (!isObject(doc)) {
        problems.push(`${url}: not a JSON object`);
        continue;
      }
      if (doc.issuer !== issuer) {
        // RFC 8414 §3.3: a document for another issuer must not be used.
        throw new DiscoveryError(`metadata at ${url} is for issuer ${JSON.stringify(doc.issuer)}, not ${JSON.stringify(issuer)}`);
      }
      if (typeof doc.jwks_uri !== 'string') throw new DiscoveryError(`metadata at ${url} has no jwks_uri`);
      return doc as AuthorizationServerMetadata;
    }
    throw new DiscoveryError(`authorization server metadata not found: ${problems.join('; ')}`);
  }

  function metadata(): Promise<AuthorizationServerMetadata> {
    if (!metadataPromise) {
      metadataPromise = discover();
      metadataPromise.catch(() => {
        metadataPromise = undefined; // retry on the next call
      });
    }
    return metadataPromise;
  }

  // --------------------------------------------------------------------- JWKS
  let jwksPromise: Promise<ReturnType<typeof createRemoteJWKSet>> | undefined;

  function jwks(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (!jwksPromise) {
      jwksPromise = metadata().then((meta) => {
        let url: URL;
        try {
          url = new URL(meta.jwks_uri);
        } catch {
          throw new DiscoveryError('jwks_uri is not a URL');
        }
        return createRemoteJWKSet(url, {
          cooldownDuration: cooldownMs,
          cacheMaxAge: cacheMaxAgeMs,
          timeoutDuration: timeout,
          [customFetch]: (input: string | URL | Request, init?: RequestInit) => {
            stats.jwksFetches++;
            return fetchImpl(input, init);
          },
        });
      });
      jwksPromise.catch(() => {
        jwksPromise = undefined;
      });
    }
    return jwksPromise;
  }

  async function getKey(header: JWSHeaderParameters, token: FlattenedJWSInput) {
    const remote = await jwks();
    try {
      return await remote(header, token);
    } catch (e) {
      if (e instanceof joseErrors.JWKSNoMatchingKey) {
        const known = remote.jwks()?.keys.some((k) => k.kid === header.kid);
        throw known
          ? new KeyMismatchError(`the key named by kid is not a ${header.alg} key`)
          : new UnknownKeyError('token signed with an unknown key');
      }
      if (e instanceof joseErrors.JWKSMultipleMatchingKeys) throw new UnknownKeyError('kid names several keys');
      if (e instanceof joseErrors.JOSENotSupported || e instanceof joseErrors.JWKInvalid) {
        throw new KeyMismatchError('the key named by kid is not usable');
      }
      throw new DiscoveryError(`could not fetch the JWKS: ${(e as Error).message}`, { cause: e });
    }
  }

  // ---------------------------------------------------------------- checking
  function isThisResource(aud: string): boolean {
    if (aud === resource) return true;
    try {
      return canonicalizeResource(aud) === resource;
    } catch (e) {
      if (e instanceof InvalidResourceError) return false;
      throw e;
    }
  }

  function checkAct(act: unknown): void {
    let node = act;
    for (let depth = 0; node !== undefined && node !== null; depth++) {
      if (!isObject(node) || depth >= 32) throw new InvalidClaimError('act must be a JSON object (RFC 8693 §4.1)');
      if (node.sub !== undefined && typeof node.sub !== 'string') throw new InvalidClaimError('act.sub must be a string');
      node = node.act;
    }
  }

  function checkClaims(claims: Record<string, unknown>, introspected: boolean): VerifiedToken {
    const now = Date.now() / 1000;
    if (!introspected || claims.iss !== undefined) {
      if (claims.iss !== issuer) throw new InvalidIssuerError('token issuer is not the configured issuer');
    }
    if (claims.aud === undefined) throw new MissingClaimError('aud');
    const auds = typeof claims.aud === 'string' ? [claims.aud] : claims.aud;
    if (!Array.isArray(auds) || !auds.every((a) => typeof a === 'string')) {
      throw new InvalidClaimError('aud must be a string or an array of strings');
    }
    if (!auds.some(isThisResource)) throw new InvalidAudienceError('token is not for this resource');

    if (claims.exp === undefined) throw new MissingClaimError('exp');
    if (!isNumber(claims.exp)) throw new InvalidClaimError('exp must be a number');
    if (now >= claims.exp + clockTolerance) throw new TokenExpiredError('token expired');
    if (claims.nbf !== undefined) {
      if (!isNumber(claims.nbf)) throw new InvalidClaimError('nbf must be a number');
      if (claims.nbf > now + clockTolerance) throw new TokenNotYetValidError('token is not valid yet');
    }
    if (claims.iat !== undefined && !isNumber(claims.iat)) throw new InvalidClaimError('iat must be a number');
    for (const name of ['sub', 'client_id'] as const) {
      if (claims[name] === undefined) throw new MissingClaimError(name);
      if (typeof claims[name] !== 'string' || claims[name] === '') {
        throw new InvalidClaimError(`${name} must be a non-empty string`);
      }
    }
    if (claims.jti !== undefined && typeof claims.jti !== 'string') throw new InvalidClaimError('jti must be a string');
    const scope = claims.scope ?? '';
    if (typeof scope !== 'string') throw new InvalidClaimError('scope must be a space-separated string');
    if (claims.act !== undefined) checkAct(claims.act);

    const out: VerifiedToken = {
      subject: claims.sub as string,
      clientId: claims.client_id as string,
      scopes: scope.split(' ').filter(Boolean),
      audience: resource,
      expiresAt: Math.floor(claims.exp),
      claims: { ...claims },
      issuer,
      introspected,
    };
    if (typeof claims.jti === 'string') out.jti = claims.jti;
    if (isObject(claims.act)) out.act = claims.act;
    return out;
  }

  async function verifyJwt(token: string): Promise<VerifiedToken> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch (e) {
      throw new MalformedTokenError('token header is not base64url-encoded JSON', { cause: e });
    }
    if ('crit' in header) throw new MalformedTokenError('critical header extensions are not supported');
    if (typeof header.typ !== 'string' || !ACCESS_TOKEN_TYPS.has(header.typ.toLowerCase())) {
      throw new InvalidTokenTypeError(`token typ is ${JSON.stringify(header.typ)}, not "at+jwt"`);
    }
    if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) {
      throw new AlgorithmNotAllowedError(`token alg ${JSON.stringify(header.alg)} is not allowed`);
    }
    if (typeof header.kid !== 'string' || header.kid === '') throw new UnknownKeyError('token header has no kid');

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        issuer,
        algorithms,
        typ: 'at+jwt',
        clockTolerance,
        requiredClaims: REQUIRED_CLAIMS,
      }));
    } catch (e) {
      throw translateJoseError(e);
    }
    return checkClaims(payload as Record<string, unknown>, false);
  }

  // ------------------------------------------------------------ introspection
  const cache = new Map<string, Cached>();
  const maxEntries = Math.max(1, introspection?.maxCacheEntries ?? 10_000);
  const cacheTtlMs = (introspection?.cacheTtl ?? 30) * 1000;

  function remember(key: string, entry: Cached): void {
    if (entry.deadline <= performance.now()) return;
    cache.delete(key);
    cache.set(key, entry);
    while (cache.size > maxEntries) {
      const oldest = cache.keys().next().value;
      if (oldest === undefined) break;
      cache.delete(oldest);
    }
  }

  async function introspect(token: string): Promise<VerifiedToken> {
    const cfg = introspection!;
    const key = await sha256Hex(token);
    const hit = cache.get(key);
    if (hit) {
      if (hit.deadline > performance.now()) {
        if ('error' in hit) throw hit.error;
        if (Date.now() / 1000 < hit.value.expiresAt + clockTolerance) return hit.value;
      }
      cache.delete(key);
    }
    let endpoint = cfg.endpoint;
    if (!endpoint) {
      const meta = await metadata();
      if (typeof meta.introspection_endpoint !== 'string') {
        throw new IntrospectionError("the issuer's metadata has no introspection_endpoint");
      }
      endpoint = meta.introspection_endpoint;
    }
    const basic = btoa(`${form(cfg.clientId)}:${form(cfg.clientSecret)}`);
    stats.introspections++;
    let res: Response;
    try {
      res = await fetchImpl(endpoint, {
        method: 'POST',
        headers: {
          authorization: `Basic ${basic}`,
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        redirect: 'manual',
        signal: AbortSignal.timeout(timeout),
      });
    } catch (e) {
      throw new IntrospectionError(`introspection request failed: ${(e as Error).name}`, { cause: e });
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new IntrospectionError(`introspection endpoint answered HTTP ${res.status}`);
    }
    let body: unknown;
    try {
      body = await res.json();
    } catch (e) {
      throw new IntrospectionError('introspection response is not JSON', { cause: e });
    }
    if (!isObject(body) || !('active' in body)) throw new IntrospectionError("introspection response has no 'active' member");

    const mono = performance.now();
    let verified: VerifiedToken;
    try {
      if (body.active !== true) throw new InactiveTokenError('token is not active');
      if (typeof body.token_type === 'string' && body.token_type.toLowerCase() === 'refresh_token') {
        throw new InactiveTokenError('a refresh token is not an access token');
      }
      verified = checkClaims(body, true);
    } catch (e) {
      if (e instanceof InvalidTokenError && cacheTtlMs > 0) remember(key, { deadline: mono + cacheTtlMs, error: e });
      throw e;
    }
    if (cacheTtlMs > 0) {
      const remainingMs = (verified.expiresAt - Date.now() / 1000) * 1000;
      remember(key, { deadline: mono + Math.min(cacheTtlMs, remainingMs), value: verified });
    }
    return verified;
  }

  // --------------------------------------------------------------------- API
  async function verify(token: string): Promise<VerifiedToken> {
    if (typeof token !== 'string' || token === '' || token !== token.trim()) {
      throw new MalformedTokenError('empty or malformed token');
    }
    const dots = token.split('.').length - 1;
    if (dots === 2) {
      const verified = await verifyJwt(token);
      if (introspection?.introspectJwts) await introspect(token);
      return verified;
    }
    if (dots === 0) {
      if (introspection) return introspect(token);
      throw new MalformedTokenError('opaque token, and no introspection is configured');
    }
    throw new MalformedTokenError('not a JWS compact serialization');
  }

  return {
    issuer,
    resource,
    algorithms: Object.freeze([...algorithms]),
    verify,
    metadata,
    stats,
  };
}

function translateJoseError(e: unknown): unknown {
  if (e instanceof InvalidTokenError || e instanceof DiscoveryError) return e;
  const E = joseErrors;
  if (e instanceof E.JWTExpired) return new TokenExpiredError('token expired', { cause: e });
  if (e instanceof E.JWTClaimValidationFailed) {
    if (e.reason === 'missing') return new MissingClaimError(e.claim);
    switch (e.claim) {
      case 'typ':
        return new InvalidTokenTypeError('token typ is not "at+jwt"', { cause: e });
      case 'iss':
        return new InvalidIssuerError('token issuer is not the configured issuer', { cause: e });
      case 'nbf':
        return e.reason === 'check_failed'
          ? new TokenNotYetValidError('token is not valid yet', { cause: e })
          : new InvalidClaimError('nbf must be a number', { cause: e });
      default:
        return new InvalidClaimError(e.message, { cause: e });
    }
  }
  if (e instanceof E.JWSSignatureVerificationFailed) return new InvalidSignatureError('signature verification failed', { cause: e });
  if (e instanceof E.JOSEAlgNotAllowed) return new AlgorithmNotAllowedError(e.message, { cause: e });
  if (e instanceof E.JWSInvalid || e instanceof E.JWTInvalid || e instanceof E.JOSENotSupported) {
    return new MalformedTokenError(`invalid token: ${e.message}`, { cause: e });
  }
  return e;
}
