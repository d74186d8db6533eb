// A real OpenID Connect provider for Gatehouse's OIDC connector tests:
// panva/oidc-provider with its development login and consent pages.
//
// Environment:
//   UPSTREAM_PORT            port on 127.0.0.1 (required); the issuer is http://127.0.0.1:<port>
//   UPSTREAM_REDIRECT_URIS   comma-separated redirect URIs of the client (Gatehouse's callback)
//   UPSTREAM_CLIENT_ID       default "gatehouse"
//   UPSTREAM_CLIENT_SECRET   default "gatehouse-upstream-secret-0123456789"
//   UPSTREAM_CLAIMS_AT_USERINFO=1  put scope claims (email, name, groups) only in the
//                            userinfo response, not in the ID token (the spec's default)
//   UPSTREAM_ACCOUNTS        JSON object replacing the accounts below, by login name
//
// The development login form accepts any password for a known login name.
// Prints "ready" on stdout once listening.

import Provider from 'oidc-provider';

const port = Number(process.env.UPSTREAM_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('UPSTREAM_PORT must be a port number');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
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

const configuration = {
  clients: [
    {
      client_id: process.env.UPSTREAM_CLIENT_ID || 'gatehouse',
      client_secret: process.env.UPSTREAM_CLIENT_SECRET || 'gatehouse-upstream-secret-0123456789',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Every authorization request must carry an S256 PKCE challenge.
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  conformIdTokenClaims: process.env.UPSTREAM_CLAIMS_AT_USERINFO === '1',
  features: {
    devInteractions: { enabled: true },
  },
  cookies: { keys: ['test-only-cookie-signing-key'] },
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
const server = provider.listen(port, '127.0.0.1', () => {
  console.log('ready');
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
