// The MCP TypeScript SDK adapter, alone and behind requireBearerAuth on an express app.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import express from 'express';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { InvalidTokenError as McpInvalidTokenError, ServerError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

import { createVerifier, protectedResourceMetadata, resourceMetadataUrl } from '../dist/index.js';
import { gatehouseAuthVerifier } from '../dist/mcp.js';
import { RESOURCE, withGatehouse } from './helpers.mjs';

test(
  'adapter returns AuthInfo',
  withGatehouse(async (gh) => {
    const av = gatehouseAuthVerifier(createVerifier({ issuer: gh.issuer, resource: RESOURCE }));
    const token = await gh.mint({ scope: 'mcp:read mcp:write', client_id: 'agent-1', sub: 'user-7' });
    const info = await av.verifyAccessToken(token);
    assert.equal(info.token, token);
    assert.equal(info.clientId, 'agent-1');
    assert.deepEqual(info.scopes, ['mcp:read', 'mcp:write']);
    assert.equal(typeof info.expiresAt, 'number');
    assert.ok(info.expiresAt > Date.now() / 1000);
    assert.ok(info.resource instanceof URL);
    assert.equal(info.resource.href, RESOURCE);
    assert.equal(info.extra.subject, 'user-7');
    assert.equal(info.extra.issuer, gh.issuer);
  }),
);

test(
  'adapter accepts verifier options too',
  withGatehouse(async (gh) => {
    const av = gatehouseAuthVerifier({ issuer: gh.issuer, resource: RESOURCE });
    assert.equal((await av.verifyAccessToken(await gh.mint())).clientId, 'demo-public');
  }),
);

test(
  "adapter throws the SDK's InvalidTokenError for bad tokens",
  withGatehouse(async (gh) => {
    const av = gatehouseAuthVerifier(createVerifier({ issuer: gh.issuer, resource: RESOURCE }));
    const now = Math.floor(Date.now() / 1000);
    const bad = [
      await gh.mint({ exp: now - 3600, iat: now - 7200 }),
      await gh.mint({ aud: 'https://other.example/mcp' }),
      await gh.mint({ iss: 'https://evil.example' }),
      await gh.mint({ header: { typ: 'JWT' } }),
      'not-a-token',
      'a.b.c',
    ];
    for (const token of bad) await assert.rejects(av.verifyAccessToken(token), McpInvalidTokenError);
  }),
);

test("adapter throws the SDK's ServerError when Gatehouse is unreachable", async () => {
  const av = gatehouseAuthVerifier({ issuer: 'http://127.0.0.1:9', resource: RESOURCE, timeout: 1000 });
  await assert.rejects(
    av.verifyAccessToken('eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.e30.c2ln'),
    ServerError,
  );
});

async function listen(app) {
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}

const INIT = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'test', version: '0' } },
};

test(
  'requireBearerAuth on express: 401 challenge, 403 insufficient_scope, 200',
  withGatehouse(async (gh) => {
    const app = express();
    app.use(express.json());
    const { server, base } = await listen(app);
    try {
      const resource = `${base}/mcp`;
      const metadataUrl = resourceMetadataUrl(resource);
      assert.equal(metadataUrl, `${base}/.well-known/oauth-protected-resource/mcp`);

      app.get('/.well-known/oauth-protected-resource/mcp', (_req, res) => {
        res.json(protectedResourceMetadata(resource, gh.issuer, ['mcp:read', 'mcp:write']));
      });
      const auth = requireBearerAuth({
        verifier: gatehouseAuthVerifier(createVerifier({ issuer: gh.issuer, resource })),
        requiredScopes: ['mcp:read'],
        resourceMetadataUrl: metadataUrl,
      });
      app.post('/mcp', auth, async (req, res) => {
        const mcp = new McpServer({ name: 'gatehouse-test', version: '0.0.0' });
        mcp.registerTool('whoami', { description: 'who called' }, async (extra) => ({
          content: [{ type: 'text', text: `${extra.authInfo?.clientId} ${extra.authInfo?.extra?.subject}` }],
        }));
        const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
        res.on('close', () => {
          transport.close();
          mcp.close();
        });
        await mcp.connect(transport);
        await transport.handleRequest(req, res, req.body);
      });

      const post = (body, token) =>
        fetch(`${base}/mcp`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
          body: JSON.stringify(body),
        });

      // Metadata document for clients.
      const prm = await (await fetch(metadataUrl)).json();
      assert.equal(prm.resource, resource);
      assert.deepEqual(prm.authorization_servers, [gh.issuer]);

      // No token: 401 pointing at the metadata.
      let r = await post(INIT);
      assert.equal(r.status, 401);
      let challenge = r.headers.get('www-authenticate');
      assert.match(challenge, /^Bearer /);
      assert.ok(challenge.includes(`resource_metadata="${metadataUrl}"`), challenge);

      // Token for another resource: 401 invalid_token.
      r = await post(INIT, await gh.mint({ aud: 'https://other.example/mcp' }));
      assert.equal(r.status, 401);
      challenge = r.headers.get('www-authenticate');
      assert.ok(challenge.includes('error="invalid_token"'), challenge);
      assert.ok(challenge.includes(`resource_metadata="${metadataUrl}"`), challenge);

      // Valid token without the scope: 403 insufficient_scope.
      r = await post(INIT, await gh.mint({ aud: resource, scope: 'openid' }));
      assert.equal(r.status, 403);
      challenge = r.headers.get('www-authenticate');
      assert.ok(challenge.includes('error="insufficient_scope"'), challenge);
      assert.ok(challenge.includes('scope="mcp:read"'), challenge);

      // Good token: the MCP request goes through, and tools see the auth info.
      const good = await gh.mint({ aud: resource, scope: 'mcp:read', client_id: 'agent-1', sub: 'user-7' });
      r = await post(INIT, good);
      assert.equal(r.status, 200, await r.clone().text());
      const init = await r.json();
      assert.equal(init.result.serverInfo.name, 'gatehouse-test');

      r = await post({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'whoami', arguments: {} } }, good);
      assert.equal(r.status, 200);
      const call = await r.json();
      assert.equal(call.result.content[0].text, 'agent-1 user-7');
    } finally {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    }
  }),
);
