// The peer of the side-by-side load harness (benches/side_by_side.rs):
// panva/node-oidc-provider set up like Gatehouse's quick start and the
// harness's Gatehouse configuration.
//
//   - a confidential service client (client_secret_basic) for
//     client_credentials and introspection;
//   - a public client (PKCE, no secret) with authorization_code and
//     refresh_token, whose refresh token rotates on every use (as
//     Gatehouse's always do);
//   - the demo MCP resource (RFC 8707 resource indicator) with scopes
//     mcp:read and mcp:write, for which access tokens are RFC 9068 JWTs
//     (typ at+jwt) signed with an ES256 key generated at start;
//   - a second resource whose access tokens are opaque: node-oidc-provider
//     refuses to introspect its JWT access tokens (they are not stored), so
//     the introspection scenario introspects an opaque token here;
//   - introspection enabled; the development login and consent pages (any
//     login name, any password), which the harness drives to get refresh
//     tokens the ordinary way.
//
// Tokens, grants and sessions live in node-oidc-provider's own in-memory
// adapter: no database round trip on any path.
//
// Environment (the harness sets all of them):
//   PEER_PORT              port on 127.0.0.1; the issuer is http://127.0.0.1:<port>
//   PEER_RESOURCE          the JWT resource (Gatehouse's demo MCP server URI)
//   PEER_OPAQUE_RESOURCE   the opaque-token resource
//   PEER_SERVICE_CLIENT, PEER_SERVICE_SECRET   the service client
//   PEER_PUBLIC_CLIENT, PEER_REDIRECT_URI      the public client
//   PEER_ACCESS_TOKEN_TTL  seconds (default 600, like the harness's Gatehouse)
//
// Prints "ready" on stdout once listening.

import crypto from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('PEER_PORT'));
if (!Number.isInteger(port) || port <= 0) {
  console.error('PEER_PORT must be a port number');
  process.exit(2);
}
const resource = required('PEER_RESOURCE');
const opaqueResource = required('PEER_OPAQUE_RESOURCE');
const accessTokenTTL = Number(process.env.PEER_ACCESS_TOKEN_TTL || 600);

const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomUUID(),
  alg: 'ES256',
  use: 'sig',
};

const resourceScope = 'mcp:read mcp:write';

const configuration = {
  clients: [
    {
      client_id: required('PEER_SERVICE_CLIENT'),
      client_secret: required('PEER_SERVICE_SECRET'),
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: required('PEER_PUBLIC_CLIENT'),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [required('PEER_REDIRECT_URI')],
      token_endpoint_auth_method: 'none',
    },
  ],
  jwks: { keys: [signingKey] },
  // ID tokens (the code flow asks for openid) are ES256 too.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'mcp:read', 'mcp:write'],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: () => true,
      async getResourceServerInfo(_ctx, indicator) {
        if (indicator === resource) {
          return {
            scope: resourceScope,
            audience: resource,
            accessTokenFormat: 'jwt',
            accessTokenTTL,
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        if (indicator === opaqueResource) {
          return {
            scope: resourceScope,
            audience: opaqueResource,
            accessTokenFormat: 'opaque',
            accessTokenTTL,
          };
        }
        throw new errors.InvalidTarget();
      },
    },
  },
  // Like Gatehouse: a client allowed the refresh_token grant gets a refresh
  // token (no offline_access needed), and every use rotates it.
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  rotateRefreshToken: true,
  ttl: {
    RefreshToken: 86400,
    Grant: 86400,
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id };
      },
    };
  },
};

const provider = new Provider(`http://127.0.0.1:${port}`, configuration);
const server = provider.listen(port, '127.0.0.1', () => {
  console.log('ready');
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
