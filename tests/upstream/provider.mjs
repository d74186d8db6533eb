// A real OpenID Connect provider for Gatehouse's OIDC connector tests:
// panva/oidc-provider with its development login and consent pages.
//
// Environment:
//   UPSTREAM_PORT            port on 127.0.0.1 (required); the issuer is http://127.0.0.1:<port>
//   UPSTREAM_HOST            the issuer's host instead of 127.0.0.1 (e.g. localhost, so a
//                            browser sees the provider and Gatehouse as different sites);
//                            the provider still listens on 127.0.0.1
//   UPSTREAM_REDIRECT_URIS   comma-separated redirect URIs of the client (Gatehouse's callback)
//   UPSTREAM_CLIENT_ID       default "gatehouse"
//   UPSTREAM_CLIENT_SECRET   default "gatehouse-upstream-secret-0123456789"
//   UPSTREAM_CLAIMS_AT_USERINFO=1  put scope claims (email, name, groups) only in the
//                            userinfo response, not in the ID token (the spec's default)
//   UPSTREAM_ACCOUNTS        JSON object replacing the accounts below, by login name
//   UPSTREAM_EXTRA_CLAIMS    JSON object merged into every account's claims; its keys
//                            (and any non-standard account keys) are released in the
//                            ID token with the openid scope (e.g. tid/oid, cognito:groups)
//   UPSTREAM_ISSUER_PATH     path appended to the issuer (e.g. /<tid>/v2.0, Entra's
//                            shape); the provider is served under that path
//   UPSTREAM_TEMPLATE_DISCOVERY  path (e.g. /organizations/v2.0) whose
//                            /.well-known/openid-configuration is the provider's own
//                            document with UPSTREAM_TEMPLATE_FROM in the issuer
//                            replaced by "{tenantid}" (Entra multi-tenant)
//   UPSTREAM_TEMPLATE_FROM   the issuer part replaced there (e.g. the tid)
//   UPSTREAM_RESOURCE        an API identifier (absolute URI): with resource=<it>
//                            and scope api:read, the provider issues JWT access
//                            tokens (RFC 9068) whose aud is that API
//   UPSTREAM_REFRESH=1       the client also gets refresh tokens (without
//                            offline_access), for upstream session re-checks
//
// Test control: POST /__test/disable/<login> removes an account, as an admin
// disabling a user would; the provider then refuses that user's refresh
// tokens with invalid_grant.
//
// The development login form accepts any password for a known login name.
// Prints "ready" on stdout once listening.

import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.UPSTREAM_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('UPSTREAM_PORT must be a port number');
  process.exit(2);
}
const issuerPath = (process.env.UPSTREAM_ISSUER_PATH || '').replace(/\/$/, '');
const issuerHost = process.env.UPSTREAM_HOST || '127.0.0.1';
const issuer = `http://${issuerHost}:${port}${issuerPath}`;
const redirectUris = (process.env.UPSTREAM_REDIRECT_URIS || '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
if (redirectUris.length === 0) {
  console.error('UPSTREAM_REDIRECT_URIS is required');
  process.exit(2);
}

const accounts = process.env.UPSTREAM_ACCOUNTS
  ? JSON.parse(process.env.UPSTREAM_ACCOUNTS)
  : {
      alice: {
        email: 'alice@corp.example',
        email_verified: true,
        name: 'Alice Upstream',
        groups: ['engineering', 'admins'],
      },
      bob: {
        email: 'bob@corp.example',
        email_verified: false,
        name: 'Bob Upstream',
        groups: [],
      },
    };

const extraClaims = process.env.UPSTREAM_EXTRA_CLAIMS
  ? JSON.parse(process.env.UPSTREAM_EXTRA_CLAIMS)
  : {};
const standardClaims = new Set(['sub', 'email', 'email_verified', 'name', 'groups']);
const customClaims = new Set(Object.keys(extraClaims));
for (const account of Object.values(accounts)) {
  for (const key of Object.keys(account)) {
    if (!standardClaims.has(key)) customClaims.add(key);
  }
}

const apiResource = process.env.UPSTREAM_RESOURCE || null;
const withRefresh = process.env.UPSTREAM_REFRESH === '1';

const configuration = {
  clients: [
    {
      client_id: process.env.UPSTREAM_CLIENT_ID || 'gatehouse',
      client_secret: process.env.UPSTREAM_CLIENT_SECRET || 'gatehouse-upstream-secret-0123456789',
      redirect_uris: redirectUris,
      grant_types: withRefresh ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Every authorization request must carry an S256 PKCE challenge.
  pkce: { required: () => true },
  claims: {
    openid: ['sub', ...customClaims],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  conformIdTokenClaims: process.env.UPSTREAM_CLAIMS_AT_USERINFO === '1',
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: Boolean(apiResource),
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      async getResourceServerInfo(_ctx, resourceIndicator) {
        if (resourceIndicator !== apiResource) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: 'api:read',
          audience: apiResource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 600,
        };
      },
    },
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', 'api:read'],
  async issueRefreshToken(_ctx, client) {
    return withRefresh && client.grantTypeAllowed('refresh_token');
  },
  cookies: { keys: ['test-only-cookie-signing-key'] },
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...extraClaims, ...account };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
const callback = provider.callback();
const templateDiscovery = process.env.UPSTREAM_TEMPLATE_DISCOVERY
  ? `${process.env.UPSTREAM_TEMPLATE_DISCOVERY.replace(/\/$/, '')}/.well-known/openid-configuration`
  : null;
const server = http.createServer(async (req, res) => {
  const disable = req.method === 'POST' && req.url.match(/^\/__test\/disable\/([A-Za-z0-9_-]+)$/);
  if (disable) {
    delete accounts[disable[1]];
    res.writeHead(204);
    res.end();
    return;
  }
  if (templateDiscovery && req.url === templateDiscovery) {
    const own = await fetch(`${issuer}/.well-known/openid-configuration`);
    const doc = await own.json();
    doc.issuer = doc.issuer.replace(process.env.UPSTREAM_TEMPLATE_FROM, '{tenantid}');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(doc));
    return;
  }
  if (issuerPath && req.url.startsWith(`${issuerPath}/`)) {
    req.originalUrl = req.url;
    req.url = req.url.substring(issuerPath.length);
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log('ready');
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
