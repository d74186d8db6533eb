// End-to-end: the MCP TypeScript SDK v2 client (@modelcontextprotocol/client)
// against one Gatehouse-protected MCP server. See lib.mjs for the flow and
// the environment it reads.
import { readFileSync } from 'node:fs';

import { auth, Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';

import { run, runFlow } from './lib.mjs';

const { version } = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/client/package.json', import.meta.url), 'utf8'),
);

run(`client v${version}`, () =>
  runFlow({
    version: `@modelcontextprotocol/client ${version}`,
    newClient: (name) => new Client({ name, version: '1.0.0' }),
    newTransport: (url, provider, fetch) => new StreamableHTTPClientTransport(new URL(url), { authProvider: provider, fetch }),
    callTool: (client, params, timeout) => client.callTool(params, { timeout }),
    isUnauthorized: (e) => UnauthorizedError.isInstance(e),
    // v2 takes the whole callback query: it checks iss (RFC 9207) against
    // the issuer it discovered before redeeming the code.
    finishAuth: (transport, callback) => transport.finishAuth(callback.searchParams),
    auth,
  }),
);
