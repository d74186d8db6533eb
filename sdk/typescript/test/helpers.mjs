// A fake Gatehouse tenant on a real local HTTP server: discovery, JWKS and
// introspection, with keys generated here by jose.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

export const RESOURCE = 'http://127.0.0.1:8765/mcp';
export const INTROSPECTION_CLIENT = ['ticketing-mcp', 's3cret:with/odd+chars &='];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const b64url = (buf) => Buffer.from(buf).toString('base64url');

export async function makeKey(alg = 'ES256', kid = randomUUID().replace(/-/g, '').slice(0, 22)) {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicKey, jwk };
}

export async function startGatehouse({ issuerPath = '' } = {}) {
  const gh = {
    keys: [await makeKey('ES256')],
    published: null, // JWKS keys; null = all of `keys`
    introspection: new Map(),
    metadataOverrides: {},
    disabledPaths: new Set(),
    requests: [],
    introspectionAuth: [],
    count(suffix) {
      return this.requests.filter(([, p]) => p.endsWith(suffix)).length;
    },
    paths() {
      return this.requests.map(([, p]) => p);
    },
    metadata() {
      return {
        issuer: this.issuer,
        authorization_endpoint: `${this.issuer}/authorize`,
        token_endpoint: `${this.issuer}/token`,
        jwks_uri: `${this.issuer}/jwks.json`,
        introspection_endpoint: `${this.issuer}/introspect`,
        response_types_supported: ['code'],
        ...this.metadataOverrides,
      };
    },
    claims(overrides = {}) {
      const now = Math.floor(Date.now() / 1000);
      const c = {
        iss: this.issuer,
        sub: '3f0c6f7e-7f3b-4a57-9a8e-2b1f3c4d5e6f',
        aud: RESOURCE,
        client_id: 'demo-public',
        scope: 'mcp:read openid',
        jti: randomUUID(),
        iat: now,
        exp: now + 3600,
        auth_time: now - 10,
      };
      for (const [k, v] of Object.entries(overrides)) {
        if (v === null) delete c[k];
        else c[k] = v;
      }
      return c;
    },
    async mint({ key, header = {}, ...claims } = {}) {
      key ??= this.keys[0];
      const h = { alg: key.alg, typ: 'at+jwt', kid: key.kid, ...header };
      for (const k of Object.keys(h)) if (h[k] === null) delete h[k];
      return new SignJWT(this.claims(claims)).setProtectedHeader(h).sign(key.privateKey);
    },
  };

  const send = (res, status, body) => {
    const data = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
    res.end(data);
  };

  const server = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    gh.requests.push([req.method, path]);
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (gh.disabledPaths.has(path)) return send(res, 404, { error: 'not_found' });
      const metaPaths = [
        `/.well-known/oauth-authorization-server${issuerPath}`,
        `/.well-known/openid-configuration${issuerPath}`,
        `${issuerPath}/.well-known/openid-configuration`,
        `${issuerPath}/.well-known/oauth-authorization-server`,
      ];
      if (req.method === 'GET' && metaPaths.includes(path)) return send(res, 200, gh.metadata());
      if (req.method === 'GET' && path === `${issuerPath}/jwks.json`) {
        return send(res, 200, { keys: gh.published ?? gh.keys.map((k) => k.jwk) });
      }
      if (req.method === 'POST' && path === `${issuerPath}/introspect`) {
        const auth = req.headers.authorization ?? '';
        let creds = null;
        if (auth.toLowerCase().startsWith('basic ')) {
          const raw = Buffer.from(auth.slice(6), 'base64').toString();
          const i = raw.indexOf(':');
          const dec = (s) => new URLSearchParams(`v=${s}`).get('v');
          creds = [dec(raw.slice(0, i)), dec(raw.slice(i + 1))];
        }
        if (!creds || creds[0] !== INTROSPECTION_CLIENT[0] || creds[1] !== INTROSPECTION_CLIENT[1]) {
          return send(res, 401, { error: 'invalid_client' });
        }
        gh.introspectionAuth.push(creds);
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        return send(res, 200, gh.introspection.get(form.get('token')) ?? { active: false });
      }
      return send(res, 404, { error: 'not_found' });
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  gh.base = `http://127.0.0.1:${server.address().port}`;
  gh.issuer = gh.base + issuerPath;
  gh.close = () =>
    new Promise((r) => {
      server.closeAllConnections?.();
      server.close(r);
    });
  return gh;
}

/** Runs `fn` with a fresh fake Gatehouse and closes it afterwards. */
export function withGatehouse(fn, opts) {
  return async (t) => {
    const gh = await startGatehouse(opts);
    try {
      await fn(gh, t);
    } finally {
      await gh.close();
    }
  };
}
