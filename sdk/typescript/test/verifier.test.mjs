// Local (JWT) validation: one test per check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createPublicKey } from 'node:crypto';

import {
  actorChain,
  AlgorithmNotAllowedError,
  createVerifier,
  DiscoveryError,
  hasScopes,
  InsufficientScopeError,
  InvalidAudienceError,
  InvalidClaimError,
  InvalidIssuerError,
  InvalidSignatureError,
  InvalidTokenError,
  InvalidTokenTypeError,
  KeyMismatchError,
  MalformedTokenError,
  MissingClaimError,
  requireScopes,
  TokenExpiredError,
  TokenNotYetValidError,
  UnknownKeyError,
} from '../dist/index.js';
import { b64url, makeKey, RESOURCE, sleep, withGatehouse } from './helpers.mjs';

const verifier = (gh, opts = {}) => createVerifier({ issuer: gh.issuer, resource: RESOURCE, ...opts });
const now = () => Math.floor(Date.now() / 1000);
const unsigned = (header, claims, sig = '') =>
  [b64url(JSON.stringify(header)), b64url(JSON.stringify(claims)), sig].join('.');

test(
  'valid token',
  withGatehouse(async (gh) => {
    const v = verifier(gh);
    const t = await v.verify(await gh.mint({ scope: 'mcp:read mcp:write openid' }));
    assert.equal(t.subject, '3f0c6f7e-7f3b-4a57-9a8e-2b1f3c4d5e6f');
    assert.equal(t.clientId, 'demo-public');
    assert.deepEqual(t.scopes, ['mcp:read', 'mcp:write', 'openid']);
    assert.equal(t.audience, RESOURCE);
    assert.equal(t.issuer, gh.issuer);
    assert.equal(t.expiresAt, t.claims.exp);
    assert.equal(t.jti, t.claims.jti);
    assert.equal(t.act, undefined);
    assert.equal(t.introspected, false);
    assert.ok(hasScopes(t, 'mcp:read', 'mcp:write'));
    requireScopes(t, 'mcp:read');
    assert.throws(() => requireScopes(t, 'mcp:read', 'mcp:admin'), (e) => {
      assert.ok(e instanceof InsufficientScopeError);
      assert.deepEqual(e.missing, ['mcp:admin']);
      return true;
    });
  }),
);

for (const alg of ['EdDSA', 'RS256']) {
  test(
    `valid ${alg} token`,
    withGatehouse(async (gh) => {
      const key = await makeKey(alg);
      gh.keys.push(key);
      const t = await verifier(gh).verify(await gh.mint({ key }));
      assert.equal(t.clientId, 'demo-public');
    }),
  );
}

test(
  'wrong issuer refused',
  withGatehouse(async (gh) => {
    await assert.rejects(verifier(gh).verify(await gh.mint({ iss: gh.issuer + '/' })), InvalidIssuerError);
    await assert.rejects(verifier(gh).verify(await gh.mint({ iss: 'http://evil.example' })), InvalidIssuerError);
  }),
);

test(
  'wrong audience refused',
  withGatehouse(async (gh) => {
    await assert.rejects(
      verifier(gh).verify(await gh.mint({ aud: 'http://127.0.0.1:8765/other' })),
      InvalidAudienceError,
    );
    // An ID token's aud is a client id.
    await assert.rejects(verifier(gh).verify(await gh.mint({ aud: 'demo-public' })), InvalidAudienceError);
  }),
);

test(
  'audience compared in canonical form',
  withGatehouse(async (gh) => {
    const v = verifier(gh, { resource: 'HTTP://127.0.0.1:8765/mcp' });
    assert.equal(v.resource, RESOURCE);
    assert.equal((await v.verify(await gh.mint())).audience, RESOURCE);

    const root = verifier(gh, { resource: 'https://MCP.Example.com:443/' });
    assert.equal(root.resource, 'https://mcp.example.com');
    await root.verify(await gh.mint({ aud: 'https://mcp.example.com' }));

    await verifier(gh, { resource: 'http://localhost:80/mcp' }).verify(await gh.mint({ aud: 'http://localhost/mcp' }));

    await assert.rejects(v.verify(await gh.mint({ aud: RESOURCE + '/' })), InvalidAudienceError);
    await assert.rejects(v.verify(await gh.mint({ aud: 'http://127.0.0.1:8765/MCP' })), InvalidAudienceError);
  }),
);

test(
  'audience list',
  withGatehouse(async (gh) => {
    const v = verifier(gh);
    await v.verify(await gh.mint({ aud: ['https://other.example/mcp', RESOURCE] }));
    await assert.rejects(v.verify(await gh.mint({ aud: ['https://other.example/mcp'] })), InvalidAudienceError);
    await assert.rejects(v.verify(await gh.mint({ aud: [] })), InvalidAudienceError);
  }),
);

test(
  'expired token refused',
  withGatehouse(async (gh) => {
    const v = verifier(gh, { clockTolerance: 60 });
    await assert.rejects(v.verify(await gh.mint({ iat: now() - 4000, exp: now() - 61 })), TokenExpiredError);
    await v.verify(await gh.mint({ iat: now() - 4000, exp: now() - 30 })); // within tolerance
    await assert.rejects(verifier(gh, { clockTolerance: 0 }).verify(await gh.mint({ exp: now() - 1 })), TokenExpiredError);
  }),
);

test(
  'nbf in the future refused',
  withGatehouse(async (gh) => {
    const v = verifier(gh, { clockTolerance: 60 });
    await assert.rejects(v.verify(await gh.mint({ nbf: now() + 120 })), TokenNotYetValidError);
    await v.verify(await gh.mint({ nbf: now() + 30 }));
    await v.verify(await gh.mint({ nbf: now() - 5 }));
  }),
);

test(
  'typ JWT refused',
  withGatehouse(async (gh) => {
    const v = verifier(gh);
    await assert.rejects(v.verify(await gh.mint({ header: { typ: 'JWT' } })), InvalidTokenTypeError);
    await assert.rejects(v.verify(await gh.mint({ header: { typ: null } })), InvalidTokenTypeError);
    await v.verify(await gh.mint({ header: { typ: 'application/at+jwt' } }));
    await v.verify(await gh.mint({ header: { typ: 'AT+JWT' } }));
  }),
);

test(
  'alg none refused',
  withGatehouse(async (gh) => {
    const token = unsigned({ alg: 'none', typ: 'at+jwt', kid: gh.keys[0].kid }, gh.claims());
    await assert.rejects(verifier(gh).verify(token), AlgorithmNotAllowedError);
    assert.throws(() => verifier(gh, { algorithms: ['none'] }), TypeError);
  }),
);

test(
  'HS256 signed with the public key refused',
  withGatehouse(async (gh) => {
    const key = gh.keys[0];
    // The classic key-confusion attack: the public key (PEM or JWK text) as HMAC secret.
    const pem = createPublicKey({ key: key.jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    for (const secret of [pem, JSON.stringify(key.jwk)]) {
      const header = { alg: 'HS256', typ: 'at+jwt', kid: key.kid };
      const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(gh.claims()))}`;
      const sig = createHmac('sha256', secret).update(input).digest('base64url');
      await assert.rejects(verifier(gh).verify(`${input}.${sig}`), AlgorithmNotAllowedError);
    }
    for (const alg of ['HS256', 'HS512']) assert.throws(() => verifier(gh, { algorithms: [alg] }), TypeError);
    assert.equal(gh.count('/jwks.json'), 0); // refused before any key was looked at
  }),
);

test(
  'alg outside the allow-list refused',
  withGatehouse(async (gh) => {
    const key = await makeKey('RS256');
    gh.keys.push(key);
    await assert.rejects(verifier(gh, { algorithms: ['ES256'] }).verify(await gh.mint({ key })), AlgorithmNotAllowedError);
  }),
);

test(
  'key of another type than alg refused',
  withGatehouse(async (gh) => {
    const ecKey = gh.keys[0];
    const rsaKey = await makeKey('RS256', ecKey.kid);
    const token = await gh.mint({ key: rsaKey });
    gh.published = [ecKey.jwk];
    await assert.rejects(verifier(gh).verify(token), KeyMismatchError);
  }),
);

test(
  'bad signature refused',
  withGatehouse(async (gh) => {
    const other = await makeKey('ES256', gh.keys[0].kid);
    await assert.rejects(verifier(gh).verify(await gh.mint({ key: other })), InvalidSignatureError);
    const [h, , s] = (await gh.mint()).split('.');
    const forged = b64url(JSON.stringify(gh.claims({ scope: 'mcp:admin' })));
    await assert.rejects(verifier(gh).verify(`${h}.${forged}.${s}`), InvalidSignatureError);
  }),
);

for (const claim of ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id']) {
  test(
    `missing ${claim} refused`,
    withGatehouse(async (gh) => {
      await assert.rejects(verifier(gh).verify(await gh.mint({ [claim]: null })), (e) => {
        assert.ok(e instanceof MissingClaimError, `${e}`);
        assert.equal(e.claim, claim);
        return true;
      });
    }),
  );
}

test(
  'malformed tokens refused',
  withGatehouse(async (gh) => {
    const v = verifier(gh);
    for (const token of ['', 'abc.def', 'a.b.c.d', '!!.!!.!!', 'eyJhbGciOiJFUzI1NiJ9.e30.', ' ' + (await gh.mint())]) {
      await assert.rejects(v.verify(token), InvalidTokenError);
    }
    const crit = unsigned({ alg: 'ES256', typ: 'at+jwt', kid: gh.keys[0].kid, crit: ['exp'], exp: 1 }, gh.claims(), 'c2ln');
    await assert.rejects(v.verify(crit), MalformedTokenError);
    await assert.rejects(v.verify('opaque-token-without-introspection'), MalformedTokenError);
  }),
);

test(
  'missing kid refused',
  withGatehouse(async (gh) => {
    await assert.rejects(verifier(gh).verify(await gh.mint({ header: { kid: null } })), UnknownKeyError);
  }),
);

test(
  'unknown kid refetches once and rate-limits',
  withGatehouse(async (gh) => {
    const v = verifier(gh, { jwksCooldown: 0.5 });
    await v.verify(await gh.mint());
    assert.equal(gh.count('/jwks.json'), 1);

    const stranger = await makeKey('ES256');
    await sleep(600);
    await assert.rejects(v.verify(await gh.mint({ key: stranger })), UnknownKeyError);
    assert.equal(gh.count('/jwks.json'), 2);

    for (let i = 0; i < 5; i++) {
      await assert.rejects(v.verify(await gh.mint({ key: await makeKey('ES256') })), UnknownKeyError);
    }
    assert.equal(gh.count('/jwks.json'), 2);
    await v.verify(await gh.mint());
    assert.equal(gh.count('/jwks.json'), 2);

    await sleep(600);
    await assert.rejects(v.verify(await gh.mint({ key: stranger })), UnknownKeyError);
    assert.equal(gh.count('/jwks.json'), 3);
    assert.equal(v.stats.jwksFetches, 3);
  }),
);

test(
  'concurrent first use fetches metadata and JWKS once',
  withGatehouse(async (gh) => {
    const v = verifier(gh);
    const tokens = await Promise.all(Array.from({ length: 20 }, () => gh.mint()));
    const results = await Promise.all(tokens.map((t) => v.verify(t)));
    assert.equal(results.length, 20);
    assert.equal(gh.count('/jwks.json'), 1);
    assert.equal(gh.count('/.well-known/oauth-authorization-server'), 1);
  }),
);

test(
  'key rotation',
  withGatehouse(async (gh) => {
    const v = verifier(gh, { jwksCooldown: 0.2, jwksCacheMaxAge: 1 });
    const old = gh.keys[0];
    await v.verify(await gh.mint({ key: old }));

    const next = await makeKey('EdDSA');
    gh.keys.push(next);
    await sleep(300);
    await v.verify(await gh.mint({ key: next })); // unknown kid -> refetch -> found
    await v.verify(await gh.mint({ key: old }));
    assert.equal(gh.count('/jwks.json'), 2);

    gh.keys.splice(gh.keys.indexOf(old), 1); // retired
    await sleep(1100);
    await v.verify(await gh.mint({ key: next }));
    assert.equal(gh.count('/jwks.json'), 3);
    await assert.rejects(v.verify(await gh.mint({ key: old })), UnknownKeyError);
  }),
);

test(
  'discovery inserts the issuer path (RFC 8414) for a tenant issuer',
  withGatehouse(
    async (gh) => {
      assert.ok(gh.issuer.endsWith('/t/acme'));
      await verifier(gh).verify(await gh.mint());
      assert.deepEqual(gh.paths().slice(0, 2), ['/.well-known/oauth-authorization-server/t/acme', '/t/acme/jwks.json']);
    },
    { issuerPath: '/t/acme' },
  ),
);

test(
  'discovery falls back to openid-configuration',
  withGatehouse(
    async (gh) => {
      gh.disabledPaths.add('/.well-known/oauth-authorization-server/t/acme');
      await verifier(gh).verify(await gh.mint());
      assert.deepEqual(gh.paths().slice(0, 2), [
        '/.well-known/oauth-authorization-server/t/acme',
        '/t/acme/.well-known/openid-configuration',
      ]);
    },
    { issuerPath: '/t/acme' },
  ),
);

test(
  'discovery refuses metadata for another issuer',
  withGatehouse(async (gh) => {
    gh.metadataOverrides.issuer = gh.issuer + '/t/other';
    await assert.rejects(verifier(gh).verify(await gh.mint()), DiscoveryError);
    assert.equal(gh.count('/jwks.json'), 0);
  }),
);

test('unreachable Gatehouse is not an invalid token', async () => {
  const v = createVerifier({ issuer: 'http://127.0.0.1:9', resource: RESOURCE, timeout: 1000 });
  await assert.rejects(v.verify('eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.e30.c2ln'), (e) => {
    assert.ok(e instanceof DiscoveryError);
    assert.ok(!(e instanceof InvalidTokenError));
    return true;
  });
});

test(
  'act chain',
  withGatehouse(async (gh) => {
    const act = { sub: 'agent-a', client_id: 'agent-a', act: { sub: 'agent-b' } };
    const t = await verifier(gh).verify(await gh.mint({ act }));
    assert.deepEqual(t.act, act);
    assert.deepEqual(actorChain(t), [{ sub: 'agent-a', client_id: 'agent-a' }, { sub: 'agent-b' }]);
    await assert.rejects(verifier(gh).verify(await gh.mint({ act: 'agent-a' })), InvalidClaimError);
    await assert.rejects(verifier(gh).verify(await gh.mint({ act: { sub: 'a', act: ['b'] } })), InvalidClaimError);
  }),
);

test(
  'claims of the wrong type refused',
  withGatehouse(async (gh) => {
    for (const claims of [{ scope: ['mcp:read'] }, { sub: 42 }, { client_id: '' }, { aud: [RESOURCE, 7] }]) {
      await assert.rejects(verifier(gh).verify(await gh.mint(claims)), InvalidClaimError, JSON.stringify(claims));
    }
  }),
);

test('construction checks', () => {
  assert.throws(() => createVerifier({ issuer: 'auth.example.com', resource: RESOURCE }), TypeError);
  assert.throws(() => createVerifier({ issuer: 'https://a.example', resource: 'https://h/mcp#x' }), TypeError);
  assert.throws(() => createVerifier({ issuer: 'https://a.example', resource: RESOURCE, algorithms: [] }), TypeError);
});
