// Canonical resource URIs (same cases as Gatehouse's src/oauth/resource.rs) and metadata helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  bearerChallenge,
  canonicalizeResource,
  discoveryUrls,
  InvalidResourceError,
  protectedResourceMetadata,
  resourceMetadataUrl,
  sameResource,
} from '../dist/index.js';

const CANONICAL = [
  ['https://mcp.example.com', 'https://mcp.example.com'],
  ['https://mcp.example.com/', 'https://mcp.example.com'],
  ['HTTPS://MCP.Example.COM/mcp', 'https://mcp.example.com/mcp'],
  ['https://H:443/', 'https://h'],
  ['http://localhost:80/mcp', 'http://localhost/mcp'],
  ['https://h:8443/mcp', 'https://h:8443/mcp'],
  ['http://h:443', 'http://h:443'],
  ['https://h/mcp', 'https://h/mcp'],
  ['https://h/mcp/', 'https://h/mcp/'],
  ['https://h/MCP', 'https://h/MCP'],
  ['https://h/a%2fb', 'https://h/a%2fb'],
  ['https://h/a/./b/../mcp', 'https://h/a/mcp'],
  ['https://h/mcp?tenant=a', 'https://h/mcp?tenant=a'],
  ['https://h/?tenant=a', 'https://h?tenant=a'],
  ['https://h/mcp?', 'https://h/mcp'],
  ['http://[::1]:8080/mcp', 'http://[::1]:8080/mcp'],
  ['http://[0:0::1]/x', 'http://[::1]/x'],
];

test('canonical forms', () => {
  for (const [given, canonical] of CANONICAL) {
    assert.equal(canonicalizeResource(given), canonical, given);
    assert.equal(canonicalizeResource(canonical), canonical, `fixed point ${canonical}`);
  }
});

test('invalid resources', () => {
  for (const bad of [
    'https://h/mcp#x',
    'https://h/mcp#',
    '/mcp',
    'urn:example:mcp',
    'https:h/mcp',
    'https:///h/mcp',
    'https://user@h/mcp',
    'https://h/mcp\n',
    'https://h:99999/',
    'https://h/ mcp',
    'https://h/é',
    '',
  ]) {
    assert.throws(() => canonicalizeResource(bad), InvalidResourceError, JSON.stringify(bad));
  }
});

test('same resource', () => {
  assert.ok(sameResource('https://h', 'https://H:443/'));
  assert.ok(!sameResource('https://h/mcp', 'https://h/mcp/'));
  assert.ok(!sameResource('https://h/mcp', 'http://h/mcp'));
  assert.ok(!sameResource('https://h/#', 'https://h/#'));
});

test('resource metadata URL (RFC 9728 §3.1)', () => {
  assert.equal(
    resourceMetadataUrl('https://mcp.example.com/mcp'),
    'https://mcp.example.com/.well-known/oauth-protected-resource/mcp',
  );
  assert.equal(resourceMetadataUrl('https://mcp.example.com/'), 'https://mcp.example.com/.well-known/oauth-protected-resource');
  assert.equal(
    resourceMetadataUrl('http://127.0.0.1:8765/mcp'),
    'http://127.0.0.1:8765/.well-known/oauth-protected-resource/mcp',
  );
});

test('protected resource metadata', () => {
  assert.deepEqual(
    protectedResourceMetadata('https://mcp.example.com/mcp', 'https://auth.example.com/t/acme', ['tickets:read', 'tickets:write']),
    {
      resource: 'https://mcp.example.com/mcp',
      authorization_servers: ['https://auth.example.com/t/acme'],
      scopes_supported: ['tickets:read', 'tickets:write'],
      bearer_methods_supported: ['header'],
    },
  );
  assert.ok(!('scopes_supported' in protectedResourceMetadata('https://h', 'https://a')));
  assert.equal(protectedResourceMetadata('https://h', 'https://a', [], { resource_name: 'X' }).resource_name, 'X');
  assert.throws(() => protectedResourceMetadata('https://h/#x', 'https://a'), InvalidResourceError);
});

test('bearer challenge', () => {
  const meta = 'https://mcp.example.com/.well-known/oauth-protected-resource/mcp';
  assert.equal(bearerChallenge({ resourceMetadata: meta }), `Bearer resource_metadata="${meta}"`);
  assert.equal(
    bearerChallenge({ resourceMetadata: meta, error: 'insufficient_scope', scope: ['tickets:write'] }),
    `Bearer error="insufficient_scope", scope="tickets:write", resource_metadata="${meta}"`,
  );
  assert.equal(
    bearerChallenge({ error: 'invalid_token', errorDescription: 'say "hi"' }),
    'Bearer error="invalid_token", error_description="say \\"hi\\""',
  );
  assert.equal(bearerChallenge(), 'Bearer');
});

test('discovery URLs', () => {
  assert.deepEqual(discoveryUrls('https://auth.example.com'), [
    'https://auth.example.com/.well-known/oauth-authorization-server',
    'https://auth.example.com/.well-known/openid-configuration',
  ]);
  assert.deepEqual(discoveryUrls('https://auth.example.com/t/acme'), [
    'https://auth.example.com/.well-known/oauth-authorization-server/t/acme',
    'https://auth.example.com/t/acme/.well-known/openid-configuration',
    'https://auth.example.com/.well-known/openid-configuration/t/acme',
  ]);
});
