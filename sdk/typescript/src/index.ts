/**
 * Verify Gatehouse access tokens in MCP servers.
 *
 * Core: {@link createVerifier}. MCP TypeScript SDK adapter:
 * `gatehouseAuthVerifier` from `@gatehouse/verify/mcp`.
 */
export {
  createVerifier,
  hasScopes,
  requireScopes,
  actorChain,
  discoveryUrls,
  SUPPORTED_ALGORITHMS,
  type GatehouseVerifier,
  type VerifierOptions,
  type IntrospectionOptions,
  type VerifiedToken,
  type AuthorizationServerMetadata,
  type VerifierStats,
} from './verifier.js';
export {
  protectedResourceMetadata,
  bearerChallenge,
  type ProtectedResourceMetadata,
  type ChallengeOptions,
} from './metadata.js';
export { canonicalizeResource, sameResource, resourceMetadataUrl, InvalidResourceError } from './resource.js';
export * from './errors.js';
