// Opaque tokens through RFC 7662 introspection.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  createVerifier,
  InactiveTokenError,
  IntrospectionError,
  InvalidAudienceError,
  InvalidIssuerError,
  TokenExpiredError,
} from '../dist/index.js';
import { INTROSPECTION_CLIENT, RESOURCE, sleep, withGatehouse } from './helpers.mjs';

const OPAQUE = 'm3Vn0kq1Yw9tQ2c8rZx4Lgm3Vn0kq1Yw9tQ2c8rZx4L';

const verifier = (gh, cfg = {}, opts = {}) =>
  createVerifier({
    issuer: gh.issuer,
    resource: RESOURCE,
    introspection: { clientId: INTROSPECTION_CLIENT[0], clientSecret: INTROSPECTION_CLIENT[1], ...cfg },
    ...opts,
  });

const active = (gh, overrides = {}) => {
  const c = gh.claims(overrides);
  delete c.auth_time;
  return { active: true, token_type: 'Bearer', ...c };
};

test(
  'introspection: active token',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, active(gh, { scope: 'mcp:read mcp:write' }));
    const t = await verifier(gh).verify(OPAQUE);
    assert.equal(t.introspected, true);
    assert.equal(t.clientId, 'demo-public');
    assert.deepEqual(t.scopes, ['mcp:read', 'mcp:write']);
    assert.equal(t.audience, RESOURCE);
    assert.equal(t.expiresAt, gh.introspection.get(OPAQUE).exp);
    // client_secret_basic with both parts form-urlencoded (RFC 6749 §2.3.1)
    assert.deepEqual(gh.introspectionAuth, [INTROSPECTION_CLIENT]);
    assert.equal(gh.count('/introspect'), 1);
  }),
);

test(
  'introspection: inactive token',
  withGatehouse(async (gh) => {
    await assert.rejects(verifier(gh).verify(OPAQUE), InactiveTokenError);
  }),
);

test(
  'introspection: answers cached',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, active(gh));
    const v = verifier(gh, { cacheTtl: 30 });
    const first = await v.verify(OPAQUE);
    const second = await v.verify(OPAQUE);
    assert.deepEqual(first, second);
    assert.equal(gh.count('/introspect'), 1);
    for (let i = 0; i < 3; i++) await assert.rejects(v.verify('another-opaque-token'), InactiveTokenError);
    assert.equal(gh.count('/introspect'), 2);
    assert.equal(v.stats.introspections, 2);
  }),
);

test(
  'introspection: cache expires with cacheTtl',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, active(gh));
    const v = verifier(gh, { cacheTtl: 0.3 });
    await v.verify(OPAQUE);
    gh.introspection.set(OPAQUE, { active: false }); // revoked
    await v.verify(OPAQUE); // still cached
    await sleep(400);
    await assert.rejects(v.verify(OPAQUE), InactiveTokenError);
    assert.equal(gh.count('/introspect'), 2);
  }),
);

test(
  'introspection: cache bounded by exp',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, active(gh, { exp: Math.floor(Date.now() / 1000) + 2 }));
    const v = verifier(gh, { cacheTtl: 300 }, { clockTolerance: 0 });
    await v.verify(OPAQUE);
    await sleep(2100);
    await assert.rejects(v.verify(OPAQUE), TokenExpiredError);
    assert.equal(gh.count('/introspect'), 2);
  }),
);

test(
  'introspection: cache disabled',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, active(gh));
    const v = verifier(gh, { cacheTtl: 0 });
    await v.verify(OPAQUE);
    await v.verify(OPAQUE);
    assert.equal(gh.count('/introspect'), 2);
  }),
);

test(
  'introspection: audience checked',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, active(gh, { aud: 'https://other.example/mcp' }));
    await assert.rejects(verifier(gh).verify(OPAQUE), InvalidAudienceError);
  }),
);

test(
  'introspection: issuer checked',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, active(gh, { iss: 'https://elsewhere.example' }));
    await assert.rejects(verifier(gh).verify(OPAQUE), InvalidIssuerError);
  }),
);

test(
  'introspection: refresh token refused',
  withGatehouse(async (gh) => {
    gh.introspection.set(OPAQUE, { ...active(gh), token_type: 'refresh_token' });
    await assert.rejects(verifier(gh).verify(OPAQUE), InactiveTokenError);
  }),
);

test(
  'introspection: bad client credentials',
  withGatehouse(async (gh) => {
    await assert.rejects(verifier(gh, { clientSecret: 'wrong' }).verify(OPAQUE), IntrospectionError);
  }),
);

test(
  'introspectJwts sees revocation of a locally valid JWT',
  withGatehouse(async (gh) => {
    const token = await gh.mint();
    await createVerifier({ issuer: gh.issuer, resource: RESOURCE }).verify(token);
    await assert.rejects(verifier(gh, { introspectJwts: true }).verify(token), InactiveTokenError);
    gh.introspection.set(token, active(gh));
    const t = await verifier(gh, { introspectJwts: true }).verify(token);
    assert.equal(t.introspected, false);
  }),
);
