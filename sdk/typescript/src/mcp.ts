/**
 * Adapter for the MCP TypeScript SDK (`@modelcontextprotocol/sdk`, a peer
 * dependency): an `OAuthTokenVerifier` for `requireBearerAuth`.
 *
 * ```ts
 * import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
 * import { createVerifier, resourceMetadataUrl } from '@gatehouse/verify';
 * import { gatehouseAuthVerifier } from '@gatehouse/verify/mcp';
 *
 * app.use('/mcp', requireBearerAuth({
 *   verifier: gatehouseAuthVerifier(createVerifier({ issuer, resource })),
 *   requiredScopes: ['tickets:read'],
 *   resourceMetadataUrl: resourceMetadataUrl(resource),
 * }));
 * ```
 */
import {
  InvalidTokenError as McpInvalidTokenError,
  ServerError as McpServerError,
} from '@modelcontextprotocol/sdk/server/auth/errors.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';

import { DiscoveryError, IntrospectionError, InvalidTokenError } from './errors.js';
import { createVerifier, type GatehouseVerifier, type VerifiedToken, type VerifierOptions } from './verifier.js';

/** Structurally the SDK's `OAuthTokenVerifier`. */
export interface GatehouseAuthVerifier {
  verifyAccessToken(token: string): Promise<AuthInfo>;
  readonly verifier: GatehouseVerifier;
}

/** The SDK's `AuthInfo` for a verified token; `extra` carries subject, issuer, jti, act and all claims. */
export function toAuthInfo(token: string, verified: VerifiedToken): AuthInfo {
  return {
    token,
    clientId: verified.clientId,
    scopes: [...verified.scopes],
    expiresAt: verified.expiresAt,
    resource: new URL(verified.audience),
    extra: {
      subject: verified.subject,
      issuer: verified.issuer,
      jti: verified.jti,
      act: verified.act,
      introspected: verified.introspected,
      claims: verified.claims,
    },
  };
}

/**
 * Wraps a verifier (or creates one from options) as an SDK `OAuthTokenVerifier`.
 * Refused tokens throw the SDK's `InvalidTokenError` (so `requireBearerAuth`
 * answers 401 with `WWW-Authenticate`); when Gatehouse cannot be reached the
 * SDK's `ServerError` is thrown (500), since the token may well be fine.
 */
export function gatehouseAuthVerifier(verifier: GatehouseVerifier | VerifierOptions): GatehouseAuthVerifier {
  const v: GatehouseVerifier = 'verify' in verifier ? verifier : createVerifier(verifier);
  return {
    verifier: v,
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      let verified: VerifiedToken;
      try {
        verified = await v.verify(token);
      } catch (e) {
        if (e instanceof InvalidTokenError) throw new McpInvalidTokenError(e.message);
        if (e instanceof DiscoveryError || e instanceof IntrospectionError) {
          throw new McpServerError('the authorization server could not be reached');
        }
        throw e;
      }
      return toAuthInfo(token, verified);
    },
  };
}
