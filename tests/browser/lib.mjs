// Shared by the browser scenarios (tests/browser/*.mjs, run by
// tests/browser.rs): Debian's Chromium driven by playwright-core, checks
// that fail with a clear message, Gatehouse's pages as small helpers, and
// the scenario runner (one JSON line on stdout; on failure a message on
// stderr, a screenshot and the page's HTML in a temporary directory, exit 1).

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

/// Chromium flags. The background-networking ones keep Chromium from
/// phoning home (updates, sync, field trials): on a machine without an
/// outside network those connections are refused and only slow it down.
/// `app.example.com` stands for a web client's redirect host: it never
/// resolves, so the browser stops at the redirect and the test reads it.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--host-resolver-rules=MAP app.example.com ~NOTFOUND',
];

export class CheckFailed extends Error {}

export function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

export function checkEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  check(a === e, `${what}: expected ${e}, saw ${a}`);
}

/// A required input from the environment.
export function input(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    throw new CheckFailed(`the environment variable ${name} is required`);
  }
  return value;
}

export function optionalInput(name, fallback) {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : value;
}

/// "yes"/"no" inputs.
export function flagInput(name) {
  const value = input(name);
  check(value === 'yes' || value === 'no', `${name} must be yes or no, got ${value}`);
  return value === 'yes';
}

export function origin(url) {
  return new URL(url).origin;
}

/// The query parameters of a URL as a plain object.
export function queryOf(url) {
  return Object.fromEntries(new URL(url).searchParams);
}

// ---------------------------------------------------------------------------
// Gatehouse's pages.
// ---------------------------------------------------------------------------

/// The trimmed text of the one element `selector` selects.
export async function textOf(page, selector) {
  const el = page.locator(selector);
  const n = await el.count();
  check(n === 1, `expected one ${selector} on ${page.url()}, found ${n}`);
  return (await el.textContent()).trim();
}

export async function has(page, selector) {
  return (await page.locator(selector).count()) > 0;
}

/// Submits a form by clicking `selector` and waits for the page the form
/// leads to; returns the main document's response (null when the browser
/// stopped at a host that does not resolve).
export async function submit(page, selector) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }).catch(() => null),
    page.click(selector),
  ]);
  return response;
}

/// Checks that this is Gatehouse's login form and fills it in.
export async function signIn(page, gatehouse, user, password) {
  check(
    origin(page.url()) === origin(gatehouse),
    `the login form should be on Gatehouse (${gatehouse}), the browser is at ${page.url()}`,
  );
  for (const field of ['#username', '#password', '#sign-in', 'input[name=csrf]', 'input[name=pending]']) {
    check(await has(page, field), `the login page at ${page.url()} has no ${field}`);
  }
  await page.fill('#username', user);
  await page.fill('#password', password);
  return submit(page, '#sign-in');
}

/// What the consent page shows.
export async function readConsent(page) {
  check(
    (await has(page, '#allow')) && (await has(page, '#deny')),
    `expected the consent page (Allow and Deny buttons) at ${page.url()}; page says: ${await bodyText(page)}`,
  );
  const texts = (selector) =>
    page.locator(selector).evaluateAll((els) => els.map((e) => e.textContent.trim()));
  return {
    client_name: await textOf(page, '#client-name'),
    redirect_host: (await has(page, '#redirect-host')) ? await textOf(page, '#redirect-host') : null,
    scopes: await texts('#scopes li'),
    resources: await texts('code.resource'),
    localhost_warning: await has(page, '#localhost-warning'),
    unverified_warning: await has(page, '#unverified-warning'),
    device_code: (await has(page, '#device-code')) ? await textOf(page, '#device-code') : null,
  };
}

/// Checks what the consent page shows against the EXPECT_* inputs given
/// (client name, redirect host, scopes and resources, space-separated).
export function checkConsent(consent) {
  checkEqual(consent.client_name, input('EXPECT_CLIENT_NAME'), 'client name on the consent page');
  const host = optionalInput('EXPECT_REDIRECT_HOST');
  if (host !== undefined) {
    checkEqual(consent.redirect_host, host, 'redirect host on the consent page');
  }
  const sorted = (list) => [...list].sort();
  checkEqual(sorted(consent.scopes), sorted(input('EXPECT_SCOPES').split(' ')), 'scopes on the consent page');
  checkEqual(sorted(consent.resources), sorted(input('EXPECT_RESOURCES').split(' ')), 'resources on the consent page');
}

export async function bodyText(page) {
  try {
    return (await page.locator('body').innerText()).replace(/\s+/g, ' ').trim().slice(0, 400);
  } catch {
    return '(no page)';
  }
}

/// Runs `action` and returns the URL the browser was sent to at the
/// client's `redirectUri`. A loopback redirect URI is served here while
/// `action` runs (a native app's receiver), and what it received is
/// checked; any other is read from the navigation (its host never resolves
/// in this browser).
export async function toClient(page, redirectUri, action) {
  const target = new URL(redirectUri);
  const loopback = ['127.0.0.1', 'localhost'].includes(target.hostname);
  const receiver = loopback ? await clientReceiver(Number(target.port)) : null;
  try {
    const [request] = await Promise.all([
      page.waitForRequest((r) => r.isNavigationRequest() && r.url().startsWith(redirectUri)),
      action(),
    ]);
    const redirect = request.url();
    if (receiver) {
      await page.waitForSelector('#client-received');
      const callbacks = receiver.hits.filter((u) => new URL(u).pathname === target.pathname);
      checkEqual(callbacks, [redirect], 'what the client received at its redirect URI');
    }
    check(redirect.split('?')[0] === redirectUri.split('?')[0], `redirected to ${redirect}, not ${redirectUri}`);
    return redirect;
  } finally {
    await receiver?.close();
  }
}

// ---------------------------------------------------------------------------
// Loopback servers.
// ---------------------------------------------------------------------------

/// An HTTP server on 127.0.0.1 (`port` 0: any free one) answering with
/// `handler(req, url)` -> { status, headers, body }; it records each
/// request's URL.
export async function loopbackServer(port, handler) {
  const hits = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, `http://${req.headers.host}`);
    hits.push(url.toString());
    const answer = handler(req, url);
    res.writeHead(answer.status ?? 200, { 'content-type': 'text/html; charset=utf-8', ...answer.headers });
    res.end(answer.body ?? '');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    hits,
    port: server.address().port,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}

/// A native app's redirect receiver: answers every request with a small
/// page naming what it received.
function clientReceiver(port) {
  return loopbackServer(port, () => ({
    body: '<!doctype html><title>client</title><p id="client-received">The application received the answer.</p>',
  }));
}

// ---------------------------------------------------------------------------
// The runner.
// ---------------------------------------------------------------------------

function chromiumPath() {
  const exe = optionalInput('CHROMIUM', '/usr/bin/chromium');
  check(
    fs.existsSync(exe),
    `Chromium is not at ${exe}: install Debian's chromium package (apt-get install chromium; .ci/run does) or set CHROMIUM`,
  );
  return exe;
}

/// Runs `body({ context, page, requests })` in a fresh headless Chromium
/// (its own user-data directory: no cookies from anything else); prints
/// `{ ok: true, scenario, ...result }`. Any failure prints the message,
/// saves a screenshot and the HTML of every open page, and exits 1.
export async function scenario(name, body) {
  const timeoutMs = Number(optionalInput('BROWSER_TIMEOUT_MS', '60000'));
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), `gatehouse-browser-${name}-`));
  let timer;
  const deadline = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`no result within ${timeoutMs} ms`)), timeoutMs);
  });
  // Should even the failure report hang, leave anyway.
  const lastResort = setTimeout(() => {
    console.error(`FAILED ${name}: no result and no report within ${timeoutMs + 15000} ms (see ${scratch})`);
    process.exit(1);
  }, timeoutMs + 15000);
  lastResort.unref();
  let context;
  let page;
  const requests = [];
  try {
    context = await chromium.launchPersistentContext(path.join(scratch, 'profile'), {
      executablePath: chromiumPath(),
      headless: true,
      args: CHROMIUM_ARGS,
    });
    context.setDefaultTimeout(Math.min(20000, timeoutMs));
    context.on('request', (r) => requests.push({ url: r.url(), method: r.method(), type: r.resourceType() }));
    page = context.pages()[0] ?? (await context.newPage());
    const result = await Promise.race([body({ context, page, requests }), deadline]);
    clearTimeout(timer);
    console.log(JSON.stringify({ ok: true, scenario: name, ...result }));
    await context.close();
    fs.rmSync(scratch, { recursive: true, force: true });
    process.exit(0);
  } catch (e) {
    const saved = [];
    for (const [i, p] of (context?.pages() ?? []).entries()) {
      try {
        const shot = path.join(scratch, `failure-${i}.png`);
        await p.screenshot({ path: shot, fullPage: true });
        fs.writeFileSync(path.join(scratch, `failure-${i}.html`), await p.content());
        saved.push(shot);
      } catch {
        // A page that cannot be captured leaves the message only.
      }
    }
    const where = page ? ` (browser at ${page.url()}: ${await bodyText(page)})` : '';
    const message = e instanceof CheckFailed ? e.message : e.stack || String(e);
    console.error(`FAILED ${name}: ${message}${where}\nscreenshots and HTML in ${scratch}`);
    console.log(JSON.stringify({ ok: false, scenario: name, error: e.message, artifacts: scratch, screenshots: saved }));
    await context?.close().catch(() => {});
    fs.rmSync(path.join(scratch, 'profile'), { recursive: true, force: true });
    process.exit(1);
  }
}
