// End-to-end: the MCP TypeScript SDK v1 client (@modelcontextprotocol/sdk)
// against one Gatehouse-protected MCP server. See lib.mjs for the flow and
// the environment it reads.
import { readFileSync } from 'node:fs';

import { auth, UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { run, runFlow } from './lib.mjs';

const { version } = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8'),
);

run(`sdk v${version}`, () =>
  runFlow({
    version: `@modelcontextprotocol/sdk ${version}`,
    newClient: (name) => new Client({ name, version: '1.0.0' }),
    newTransport: (url, provider, fetch) => new StreamableHTTPClientTransport(new URL(url), { authProvider: provider, fetch }),
    callTool: (client, params, timeout) => client.callTool(params, undefined, { timeout }),
    isUnauthorized: (e) => e instanceof UnauthorizedError,
    // v1's finishAuth takes the code only; the flow checks iss and state itself.
    finishAuth: (transport, callback) => transport.finishAuth(callback.searchParams.get('code')),
    auth,
  }),
);
