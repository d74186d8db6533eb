// Compile-only check (tsc -p tsconfig.test.json, no output): the public types
// fit the MCP TypeScript SDK, as a consumer importing the package would see them.
import express from 'express';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js';
import {
  createVerifier,
  protectedResourceMetadata,
  requireScopes,
  resourceMetadataUrl,
  type VerifiedToken,
} from '@gatehouse/verify';
import { gatehouseAuthVerifier } from '@gatehouse/verify/mcp';

const ISSUER = 'https://auth.example.com/t/acme';
const RESOURCE = 'https://mcp.example.com/mcp';

const verifier = createVerifier({ issuer: ISSUER, resource: RESOURCE, algorithms: ['ES256'] });
const sdkVerifier: OAuthTokenVerifier = gatehouseAuthVerifier(verifier);

const app = express();
app.get('/.well-known/oauth-protected-resource/mcp', (_req, res) => {
  res.json(protectedResourceMetadata(RESOURCE, ISSUER, ['tickets:read']));
});
app.post(
  '/mcp',
  requireBearerAuth({ verifier: sdkVerifier, requiredScopes: ['tickets:read'], resourceMetadataUrl: resourceMetadataUrl(RESOURCE) }),
  (req, res) => {
    res.json({ client: req.auth?.clientId });
  },
);

export async function check(bearer: string): Promise<string> {
  const token: VerifiedToken = await verifier.verify(bearer);
  requireScopes(token, 'tickets:write');
  return token.subject;
}
