/**
 * A small MCP server protected by Gatehouse: the MCP TypeScript SDK
 * (`@modelcontextprotocol/sdk`, express) with `@gatehouse/verify` and its
 * adapter for the SDK's `requireBearerAuth`.
 *
 * Environment:
 *   GATEHOUSE_ISSUER  the Gatehouse tenant's issuer, exactly (no trailing slash)
 *   MCP_RESOURCE      this server's canonical resource URI, http://127.0.0.1:<PORT>/mcp
 *   PORT              the loopback port to listen on (default 8765)
 *
 * Tools: `whoami` (needs mcp:read) and `write_note` (needs mcp:write as
 * well). Every request needs a Gatehouse access token whose `aud` is
 * MCP_RESOURCE and whose scope contains mcp:read; a `tools/call` of
 * `write_note` without mcp:write is refused at the HTTP layer with 403 and
 * `WWW-Authenticate: Bearer error="insufficient_scope", scope="mcp:read
 * mcp:write", ...`, which MCP clients answer by asking the user for the
 * additional scope (step-up authorization).
 */
import type { NextFunction, Request, Response } from 'express';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { bearerChallenge, createVerifier, protectedResourceMetadata, resourceMetadataUrl } from '@gatehouse/verify';
import { gatehouseAuthVerifier } from '@gatehouse/verify/mcp';

const READ = 'mcp:read';
const WRITE = 'mcp:write';
const SCOPES = [READ, WRITE];

/** The scopes each tool needs (every request needs mcp:read). */
const TOOL_SCOPES: Record<string, string[]> = { write_note: [READ, WRITE] };

function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (!value) {
    console.error(`${name} must be set`);
    process.exit(2);
  }
  return value;
}

const ISSUER = env('GATEHOUSE_ISSUER');
const PORT = Number(env('PORT', '8765'));
const RESOURCE = env('MCP_RESOURCE', `http://127.0.0.1:${PORT}/mcp`);
const METADATA_URL = resourceMetadataUrl(RESOURCE);

/** The MCP server for one request (stateless: no sessions to keep). */
function mcpServer(): McpServer {
  const server = new McpServer({ name: 'gatehouse-example-typescript', version: '0.1.0' });
  const token = (authInfo: AuthInfo | undefined): AuthInfo => {
    if (!authInfo) throw new Error('no access token'); // requireBearerAuth lets none through
    return authInfo;
  };
  server.registerTool(
    'whoami',
    { description: "Who is calling: the token's subject, client and scopes. Needs mcp:read." },
    async (extra) => {
      const auth = token(extra.authInfo);
      const subject = String(auth.extra?.subject ?? '');
      const scopes = [...auth.scopes].sort().join(' ');
      return { content: [{ type: 'text', text: `subject=${subject} client=${auth.clientId} scopes=${scopes}` }] };
    },
  );
  server.registerTool(
    'write_note',
    { description: 'Saves a note (not really). Needs mcp:write.', inputSchema: { text: z.string() } },
    async ({ text }, extra) => {
      // Unreachable without mcp:write through HTTP (requireToolScopes answers
      // 403 first); kept so the tool is safe on its own.
      if (!token(extra.authInfo).scopes.includes(WRITE)) {
        return { isError: true, content: [{ type: 'text', text: 'write_note needs the scope mcp:write' }] };
      }
      return { content: [{ type: 'text', text: `saved: ${text}` }] };
    },
  );
  return server;
}

/** The scopes the tool calls in a JSON-RPC message (or batch) need. */
function scopesNeeded(body: unknown): string[] {
  const needed: string[] = [];
  for (const message of Array.isArray(body) ? body : [body]) {
    if (typeof message !== 'object' || message === null) continue;
    const { method, params } = message as { method?: unknown; params?: { name?: unknown } };
    if (method !== 'tools/call' || typeof params?.name !== 'string') continue;
    for (const scope of TOOL_SCOPES[params.name] ?? []) {
      if (!needed.includes(scope)) needed.push(scope);
    }
  }
  return needed;
}

/**
 * After requireBearerAuth: a `tools/call` of a tool the token lacks scopes
 * for gets 403 insufficient_scope naming all the scopes the call needs,
 * before the MCP handler runs, so the client can step up.
 */
function requireToolScopes(req: Request & { auth?: AuthInfo }, res: Response, next: NextFunction): void {
  const needed = scopesNeeded(req.body);
  const granted = req.auth?.scopes ?? [];
  if (needed.every((s) => granted.includes(s))) {
    next();
    return;
  }
  const description = `this operation needs the scope ${needed.join(' ')}`;
  res.set(
    'WWW-Authenticate',
    bearerChallenge({ resourceMetadata: METADATA_URL, error: 'insufficient_scope', errorDescription: description, scope: needed }),
  );
  res.status(403).json({ error: 'insufficient_scope', error_description: description });
}

async function handleMcp(req: Request & { auth?: AuthInfo }, res: Response): Promise<void> {
  if (req.method !== 'POST') {
    // Stateless server: no standalone SSE stream (GET) and no session to end (DELETE).
    res.set('Allow', 'POST').status(405).json({
      jsonrpc: '2.0',
      error: { code: -32000, message: 'Method not allowed.' },
      id: null,
    });
    return;
  }
  const server = mcpServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    void transport.close();
    void server.close();
  });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (e) {
    console.error('MCP request failed:', e);
    if (!res.headersSent) {
      res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null });
    }
  }
}

const app = createMcpExpressApp({ host: '127.0.0.1' });

// RFC 9728 metadata, at the URL derived from /mcp and at the root one.
const metadata = protectedResourceMetadata(RESOURCE, ISSUER, SCOPES);
app.get(['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource'], (_req, res) => {
  res.json(metadata);
});

// 401 (with scope="mcp:read" in the challenge, since requiredScopes is set)
// for a missing, invalid, expired or other-audience token; 403 without mcp:read.
const bearer = requireBearerAuth({
  verifier: gatehouseAuthVerifier(createVerifier({ issuer: ISSUER, resource: RESOURCE, algorithms: ['ES256'] })),
  requiredScopes: [READ],
  resourceMetadataUrl: METADATA_URL,
});

app.all('/mcp', bearer, requireToolScopes, handleMcp);

const listener = app.listen(PORT, '127.0.0.1', (error?: Error) => {
  if (error) {
    console.error(`cannot listen on 127.0.0.1:${PORT}: ${error.message}`);
    process.exit(1);
  }
  console.log(`listening on http://127.0.0.1:${PORT}/mcp`);
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    listener.close();
    process.exit(0);
  });
}
