// Shared by the end-to-end client scripts: a scripted "user's browser" that
// answers Gatehouse's login and consent pages over plain HTTP, an
// OAuthClientProvider for the official MCP TypeScript SDK (v1 and v2 share
// the interface), and the flow both scripts run.
//
// Environment:
//   MCP_SERVER_URL        the MCP server under test (its canonical resource URI)
//   MCP_OTHER_SERVER_URL  a second MCP server of the same tenant (audience check)
//   GATEHOUSE_URL         Gatehouse's issuer (default tenant), exactly
//   E2E_USER, E2E_PASSWORD  the user to sign in as (default admin@example.com / password)
//   E2E_TIMEOUT_MS        overall deadline (default 90000)

import { randomBytes } from 'node:crypto';

const HTTP_TIMEOUT_MS = 10_000;
const MCP_TIMEOUT_MS = 20_000;

export function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

let label = 'e2e';

export function step(message) {
  console.log(`[${label}] ok: ${message}`);
}

/** Prints the last line and exits once it is written (stdout may be a pipe). */
function exit(code, line) {
  process.stdout.write(`${line}\n`, () => process.exit(code));
  // In case the write never completes.
  setTimeout(() => process.exit(code), 2000).unref();
}

export function fail(message) {
  exit(1, `[${label}] FAIL: ${message}`);
}

export function check(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

export function equal(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`assertion failed: ${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/** Runs `main` with an overall deadline; exits 0 on success, 1 on any failure. */
export function run(name, main) {
  label = name;
  const deadline = Number(process.env.E2E_TIMEOUT_MS ?? 90_000);
  const timer = setTimeout(() => fail(`timed out after ${deadline} ms`), deadline);
  timer.unref();
  main().then(
    () => exit(0, `[${label}] PASS`),
    (e) => fail(e?.stack ?? String(e)),
  );
}

export function jwtClaims(token) {
  const parts = String(token).split('.');
  check(parts.length === 3, 'the access token is a JWT');
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

function decodeEntities(s) {
  return s
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(parseInt(d, 10)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

/** The first form of a page: where it posts, and its hidden fields (as a browser would send them). */
function parseForm(html) {
  const form = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/);
  if (!form) throw new Error(`no form in page:\n${html}`);
  const attr = (tag, name) => {
    const m = tag.match(new RegExp(`\\b${name}="([^"]*)"`));
    return m ? decodeEntities(m[1]) : undefined;
  };
  const action = attr(form[1], 'action');
  if (!action) throw new Error(`form without action:\n${html}`);
  const fields = {};
  for (const [tag] of form[2].matchAll(/<input\b[^>]*>/g)) {
    const name = attr(tag, 'name');
    if (attr(tag, 'type') === 'hidden' && name) fields[name] = attr(tag, 'value') ?? '';
  }
  for (const required of ['pending', 'csrf']) {
    if (!(required in fields)) throw new Error(`no hidden field ${required} in form:\n${html}`);
  }
  return { action, fields };
}

function codes(html) {
  return [...html.matchAll(/<code[^>]*>([^<]*)<\/code>/g)].map((m) => decodeEntities(m[1]));
}

/** What the consent page showed. */
function parseConsent(html) {
  const name = html.match(/<span id="client-name">([^<]*)<\/span>/);
  const list = html.match(/<ul class="scopes" id="scopes">([\s\S]*?)<\/ul>/);
  const already = html.match(/Already allowed:([\s\S]*?)<\/small>/);
  const resources = [...html.matchAll(/<code class="resource">([^<]*)<\/code>/g)].map((m) => decodeEntities(m[1]));
  return {
    clientName: name ? decodeEntities(name[1]) : undefined,
    selfRegisteredWarning: html.includes('id="unverified-warning"') && html.includes('registered itself'),
    newScopes: list ? codes(list[1]) : [],
    alreadyGranted: already ? codes(already[1]) : [],
    resources,
  };
}

/**
 * The user's browser: a cookie jar and fetch with `redirect: 'manual'`. It
 * follows redirects within Gatehouse, signs in on the login page, allows on
 * the consent page, and stops at the redirect back to the client.
 */
export class Browser {
  constructor(gatehouse, user, password) {
    this.gatehouse = new URL(gatehouse).origin;
    this.user = user;
    this.password = password;
    this.cookies = new Map();
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.cookies.size) {
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    }
    const res = await fetch(url, {
      ...init,
      headers,
      redirect: 'manual',
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    return res;
  }

  /** Submits a page's form with its hidden fields and `extra`; it must post to Gatehouse. */
  submit(html, extra) {
    const form = parseForm(html);
    if (new URL(form.action).origin !== this.gatehouse) throw new Error(`the form posts to ${form.action}, not Gatehouse`);
    return this.post(form.action, { ...form.fields, ...extra });
  }

  post(url, fields) {
    return this.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
  }

  /** Runs one authorization from the authorization URL to the client's redirect URI. */
  async authorize(authorizationUrl) {
    const trace = { url: new URL(authorizationUrl), login: false, consent: [], callback: undefined };
    let res = await this.request(trace.url);
    for (let i = 0; i < 8; i++) {
      if (res.status >= 300 && res.status < 400) {
        const to = new URL(res.headers.get('location'), res.url || trace.url);
        await res.body?.cancel();
        if (to.origin === this.gatehouse) {
          res = await this.request(to);
          continue;
        }
        trace.callback = to;
        return trace;
      }
      const html = await res.text();
      if (res.status === 200 && html.includes('name="password"')) {
        trace.login = true;
        res = await this.submit(html, { username: this.user, password: this.password });
        continue;
      }
      if (res.status === 200 && html.includes('name="decision"')) {
        trace.consent.push(parseConsent(html));
        res = await this.submit(html, { decision: 'allow' });
        continue;
      }
      throw new Error(`unexpected page from Gatehouse (HTTP ${res.status}) at ${res.url}:\n${html}`);
    }
    throw new Error('too many steps in the authorization');
  }
}

/**
 * An in-memory OAuthClientProvider. `redirectToAuthorization` hands the URL
 * to the Browser, which plays the user; the callback it reaches is kept in
 * `authorizations` for the script to check and pass to `finishAuth`.
 */
export class E2EProvider {
  constructor({ clientName, browser }) {
    this.browser = browser;
    this._clientName = clientName;
    // Nothing listens there: the Browser stops at the redirect.
    this._redirectUrl = `http://127.0.0.1:${49152 + (randomBytes(2).readUInt16BE() % 16000)}/callback`;
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this._discovery = undefined;
    this._states = [];
    this.authorizations = [];
    this.savedTokens = [];
    this.invalidated = [];
  }

  get redirectUrl() {
    return this._redirectUrl;
  }

  get clientMetadata() {
    return {
      client_name: this._clientName,
      redirect_uris: [this._redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state() {
    const s = randomBytes(16).toString('base64url');
    this._states.push(s);
    return s;
  }

  get lastState() {
    return this._states.at(-1);
  }

  clientInformation() {
    return this._client;
  }

  saveClientInformation(info) {
    this._client = info;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
    this.savedTokens.push(tokens);
  }

  saveCodeVerifier(v) {
    this._verifier = v;
  }

  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }

  saveDiscoveryState(state) {
    this._discovery = state;
  }

  discoveryState() {
    return this._discovery;
  }

  invalidateCredentials(scope) {
    this.invalidated.push(scope);
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this._verifier = undefined;
    if (scope === 'all' || scope === 'discovery') this._discovery = undefined;
  }

  async redirectToAuthorization(url) {
    this.authorizations.push(await this.browser.authorize(url));
  }
}

/** Parses the parameters of a `WWW-Authenticate: Bearer ...` challenge. */
export function challengeParams(header) {
  const params = {};
  if (!header) return params;
  const m = header.match(/^\s*Bearer\b(.*)$/i);
  if (!m) return params;
  for (const p of m[1].matchAll(/([A-Za-z_]+)\s*=\s*"((?:[^"\\]|\\.)*)"/g)) {
    params[p[1]] = p[2].replace(/\\(.)/g, '$1');
  }
  return params;
}

/** A raw JSON-RPC POST to an MCP endpoint (no SDK), bounded in time. */
export async function rawPost(url, body, token) {
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  await res.body?.cancel();
  return { status: res.status, challenge: res.headers.get('www-authenticate') };
}

const INITIALIZE = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw-probe', version: '0' } },
};

function textOf(result) {
  return (result?.content ?? [])
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('\n');
}

function metadataUrlFor(resource) {
  const u = new URL(resource);
  return `${u.origin}/.well-known/oauth-protected-resource${u.pathname === '/' ? '' : u.pathname}`;
}

/**
 * The whole end-to-end flow against one MCP server, for one SDK version.
 *
 * `sdk` supplies: version (for messages), newClient(name),
 * newTransport(url, provider, fetch), callTool(client, params, timeoutMs),
 * isUnauthorized(error), finishAuth(transport, callbackUrl) and
 * auth(provider, options).
 */
export async function runFlow(sdk) {
  const serverUrl = env('MCP_SERVER_URL');
  const otherUrl = env('MCP_OTHER_SERVER_URL');
  const issuer = env('GATEHOUSE_URL');
  const browser = new Browser(issuer, env('E2E_USER', 'admin@example.com'), env('E2E_PASSWORD', 'password'));
  const clientName = `Gatehouse e2e (${sdk.version})`;
  const provider = new E2EProvider({ clientName, browser });
  const metadataUrl = metadataUrlFor(serverUrl);
  // The SDK's own requests (discovery, registration, token) get a deadline
  // too; requests to the MCP endpoint keep theirs (the SDK's request timeout,
  // and the standalone SSE stream must stay open).
  const boundedFetch = (url, init) =>
    init?.signal || String(url).startsWith(serverUrl)
      ? fetch(url, init)
      : fetch(url, { ...init, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });

  // 0. What the server publishes, checked without the SDK.
  const prm = await (await fetch(metadataUrl, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) })).json();
  equal(prm.resource, serverUrl, 'protected resource metadata: resource');
  equal(JSON.stringify(prm.authorization_servers), JSON.stringify([issuer]), 'authorization_servers');
  check(
    ['mcp:read', 'mcp:write'].every((s) => prm.scopes_supported?.includes(s)),
    `scopes_supported lists mcp:read and mcp:write: ${JSON.stringify(prm.scopes_supported)}`,
  );
  const rootUrl = `${new URL(serverUrl).origin}/.well-known/oauth-protected-resource`;
  const root = await (await fetch(rootUrl, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) })).json();
  equal(root.resource, serverUrl, `${rootUrl}: resource`);
  equal(JSON.stringify(root.authorization_servers), JSON.stringify([issuer]), `${rootUrl}: authorization_servers`);
  const anonymous = await rawPost(serverUrl, INITIALIZE);
  equal(anonymous.status, 401, 'status without a token');
  equal(challengeParams(anonymous.challenge).resource_metadata, metadataUrl, '401 challenge resource_metadata');
  step(`protected resource metadata names ${issuer}; 401 challenge: ${anonymous.challenge}`);

  // 1. Connect: 401, discovery, registration, authorization (our Browser plays the user).
  const first = sdk.newTransport(serverUrl, provider, boundedFetch);
  let client = sdk.newClient(clientName);
  let connectError;
  try {
    await client.connect(first, { timeout: MCP_TIMEOUT_MS });
  } catch (e) {
    connectError = e;
  }
  check(connectError && sdk.isUnauthorized(connectError), `connect without a token ends in UnauthorizedError, got ${connectError}`);
  const registered = provider.clientInformation();
  check(registered?.client_id, 'the SDK registered a client (DCR)');
  step(`connect -> 401 -> SDK discovered Gatehouse and registered client ${registered.client_id}`);

  equal(provider.authorizations.length, 1, 'authorizations after connect');
  const login = provider.authorizations[0];
  equal(login.url.origin + login.url.pathname, `${issuer}/authorize`, 'authorization endpoint');
  equal(login.url.searchParams.get('client_id'), registered.client_id, 'client_id sent to /authorize');
  equal(login.url.searchParams.get('resource'), serverUrl, 'resource sent to /authorize');
  equal(login.url.searchParams.get('code_challenge_method'), 'S256', 'PKCE method');
  const firstScope = (login.url.searchParams.get('scope') ?? '').split(' ').filter(Boolean);
  check(!firstScope.includes('mcp:write'), `the first authorization asks for least privilege (no mcp:write): scope=${firstScope.join(' ')}`);
  check(login.login, 'the login page was shown');
  equal(login.consent.length, 1, 'consent pages in the first authorization');
  const consent = login.consent[0];
  equal(consent.clientName, clientName, 'client name on the consent page');
  check(consent.selfRegisteredWarning, 'the consent page warns that the application registered itself');
  check(consent.newScopes.includes('mcp:read') && !consent.newScopes.includes('mcp:write'), `consent lists mcp:read only of the MCP scopes: ${consent.newScopes}`);
  check(consent.resources.includes(serverUrl), `consent names the MCP server: ${consent.resources}`);
  step(`authorize?scope=${firstScope.join('+')} -> login -> consent for "${consent.clientName}" (self-registered warning shown, asks ${consent.newScopes.join(' ')})`);

  const callback = login.callback;
  check(callback && callback.href.startsWith(provider.redirectUrl), `redirected to the client's redirect URI: ${callback}`);
  equal(callback.searchParams.get('iss'), issuer, 'iss in the authorization response');
  equal(callback.searchParams.get('state'), provider.lastState, 'state in the authorization response');
  check(callback.searchParams.get('code'), 'code in the authorization response');
  step(`callback has code, state and iss=${callback.searchParams.get('iss')}`);

  await sdk.finishAuth(first, callback);
  const tokens = provider.tokens();
  check(tokens?.access_token, 'finishAuth saved tokens');
  check(tokens.refresh_token, 'a refresh token was issued (refresh_token grant registered)');
  const claims = jwtClaims(tokens.access_token);
  equal(claims.aud, serverUrl, 'access token aud');
  equal(claims.iss, issuer, 'access token iss');
  equal(claims.client_id, registered.client_id, 'access token client_id');
  check(!claims.scope.split(' ').includes('mcp:write'), `no mcp:write yet: ${claims.scope}`);
  step(`finishAuth exchanged the code; token aud=${claims.aud} scope="${claims.scope}"`);

  // 2. Reconnect with the token and call whoami.
  const transport = sdk.newTransport(serverUrl, provider, boundedFetch);
  client = sdk.newClient(clientName);
  await client.connect(transport, { timeout: MCP_TIMEOUT_MS });
  const who = textOf(await sdk.callTool(client, { name: 'whoami', arguments: {} }, MCP_TIMEOUT_MS));
  check(who.includes(`client=${registered.client_id}`), `whoami names the registered client: ${who}`);
  check(who.includes(`subject=${claims.sub}`), `whoami names the token's subject: ${who}`);
  step(`reconnected; whoami -> ${who}`);

  // 3. The same token at another MCP server of the tenant: refused (audience binding).
  const elsewhere = await rawPost(otherUrl, INITIALIZE, tokens.access_token);
  equal(elsewhere.status, 401, `status of this token at ${otherUrl}`);
  equal(challengeParams(elsewhere.challenge).error, 'invalid_token', 'error at the other server');
  step(`the token is refused by ${otherUrl} (401 invalid_token)`);

  // 4. write_note needs mcp:write: 403 insufficient_scope at the HTTP layer.
  const probe = await rawPost(
    serverUrl,
    { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'write_note', arguments: { text: 'probe' } } },
    tokens.access_token,
  );
  equal(probe.status, 403, 'raw tools/call write_note without mcp:write');
  const needed = challengeParams(probe.challenge);
  equal(needed.error, 'insufficient_scope', '403 challenge error');
  equal(needed.scope, 'mcp:read mcp:write', '403 challenge scope');
  equal(needed.resource_metadata, metadataUrl, '403 challenge resource_metadata');
  step(`write_note without mcp:write -> 403 ${probe.challenge}`);

  // 5. The SDK gets the same 403 and steps up.
  const note = `hello from ${sdk.version}`;
  const before = provider.authorizations.length;
  const savesBefore = provider.savedTokens.length;
  let refused;
  try {
    const r = await sdk.callTool(client, { name: 'write_note', arguments: { text: note } }, MCP_TIMEOUT_MS);
    throw new Error(`write_note succeeded without mcp:write: ${textOf(r)}`);
  } catch (e) {
    refused = e;
  }
  if (provider.authorizations.length > before) {
    check(sdk.isUnauthorized(refused), `after starting the step-up the SDK throws UnauthorizedError, got ${refused}`);
    step(`SDK stepped up by itself on 403 insufficient_scope (re-authorization started)`);
  } else {
    // The SDK did not start a new authorization (v1 refreshes instead, which
    // cannot widen the scope). Do what an application would: forget the
    // tokens and authorize again with the challenge's scope.
    const refreshes = provider.savedTokens.length - savesBefore;
    step(
      `SDK did not re-authorize on 403 (it refreshed the token ${refreshes} time(s), which cannot widen the scope, then: ` +
        `${String(refused?.message ?? refused).split('\n')[0]}); stepping up explicitly with auth(scope="${needed.scope}")`,
    );
    await provider.invalidateCredentials('tokens');
    const result = await sdk.auth(provider, {
      serverUrl: new URL(serverUrl),
      scope: needed.scope,
      resourceMetadataUrl: new URL(needed.resource_metadata),
      fetchFn: boundedFetch,
    });
    equal(result, 'REDIRECT', 'explicit auth() result');
  }
  equal(provider.authorizations.length, before + 1, 'authorizations after the step-up');
  const stepUp = provider.authorizations.at(-1);
  const stepUpScope = (stepUp.url.searchParams.get('scope') ?? '').split(' ');
  check(stepUpScope.includes('mcp:read') && stepUpScope.includes('mcp:write'), `step-up asks for mcp:read and mcp:write: ${stepUpScope}`);
  equal(stepUp.url.searchParams.get('resource'), serverUrl, 'resource sent in the step-up');
  equal(stepUp.consent.length, 1, 'consent pages in the step-up (a self-registered client always asks)');
  const more = stepUp.consent[0];
  const forced = stepUp.url.searchParams.getAll('prompt').join(' ').split(' ').includes('consent');
  check(more.alreadyGranted.includes('mcp:read'), `mcp:read shown as already allowed: ${more.alreadyGranted}`);
  check(!more.alreadyGranted.includes('mcp:write'), `mcp:write not shown as already allowed: ${more.alreadyGranted}`);
  if (!forced) {
    // Incremental consent: only what this client does not have yet.
    equal(JSON.stringify(more.newScopes), JSON.stringify(['mcp:write']), 'scopes the step-up consent page lists as new');
  } else {
    // prompt=consent (v2 sends it whenever it asks for offline_access, as
    // OpenID Connect requires) makes Gatehouse ask for every requested scope
    // again, so the list of new scopes may hold more than mcp:write.
    check(more.newScopes.includes('mcp:write'), `the step-up consent page asks for mcp:write: ${more.newScopes}`);
    check(more.newScopes.every((s) => stepUpScope.includes(s)), `the step-up consent page asks only for requested scopes: ${more.newScopes}`);
  }
  check(more.selfRegisteredWarning, 'the step-up consent page still warns that the application registered itself');
  equal(stepUp.callback?.searchParams.get('iss'), issuer, 'iss in the step-up response');
  equal(stepUp.callback?.searchParams.get('state'), provider.lastState, 'state in the step-up response');
  step(`step-up authorize?scope=${stepUpScope.join('+')}${forced ? '&prompt=consent' : ''} -> ${stepUp.login ? 'login -> ' : ''}consent lists as new: ${more.newScopes.join(' ')} (already allowed: ${more.alreadyGranted.join(' ')})`);

  await sdk.finishAuth(transport, stepUp.callback);
  const upgraded = jwtClaims(provider.tokens().access_token);
  equal(upgraded.aud, serverUrl, 'step-up token aud');
  check(upgraded.scope.split(' ').includes('mcp:write'), `step-up token has mcp:write: ${upgraded.scope}`);
  const saved = textOf(await sdk.callTool(client, { name: 'write_note', arguments: { text: note } }, MCP_TIMEOUT_MS));
  equal(saved, `saved: ${note}`, 'write_note result');
  step(`finishAuth -> token scope="${upgraded.scope}"; write_note -> ${saved}`);

  await client.close();
}
