// Login at an upstream OpenID provider in Chromium: /authorize sends the
// browser to the provider (panva/oidc-provider, tests/upstream), the user
// signs in and consents on the provider's own pages, the provider sends the
// browser back to Gatehouse's callback, then Gatehouse's consent page and
// the redirect to the client. Gatehouse and the provider are on different
// sites (127.0.0.1 and localhost), so the return leg is a cross-site
// navigation and Gatehouse's cookies must survive it (SameSite=Lax).
//
// Inputs (environment):
//   GATEHOUSE_URL, AUTHORIZE_URL, REDIRECT_URI (see toClient in lib.mjs)
//   UPSTREAM_URL         the provider's issuer
//   UPSTREAM_LOGIN       an account at the provider
//   EXPECT_CLIENT_NAME, EXPECT_SCOPES, EXPECT_RESOURCES
// Output: { visited, upstream_pages, consent, redirect, params, cookies }.

import {
  check,
  checkConsent,
  checkEqual,
  input,
  origin,
  queryOf,
  readConsent,
  scenario,
  submit,
  toClient,
} from './lib.mjs';

await scenario('upstream', async ({ context, page }) => {
  const gatehouse = origin(input('GATEHOUSE_URL'));
  const upstream = origin(input('UPSTREAM_URL'));
  const redirectUri = input('REDIRECT_URI');
  check(
    new URL(gatehouse).hostname !== new URL(upstream).hostname,
    `Gatehouse (${gatehouse}) and the provider (${upstream}) should be on different sites`,
  );
  const visited = [];
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) visited.push(f.url());
  });

  await page.goto(input('AUTHORIZE_URL'));
  checkEqual(origin(page.url()), upstream, 'where /authorize sent the browser');

  // The provider's development login page.
  const upstreamPages = [];
  check(
    (await page.locator('input[name=login]').count()) === 1,
    `no login field on the provider's page ${page.url()}`,
  );
  upstreamPages.push(await page.title());
  await page.fill('input[name=login]', input('UPSTREAM_LOGIN'));
  await page.fill('input[name=password]', 'any');
  await submit(page, 'button[type=submit]');

  // Its consent page.
  checkEqual(origin(page.url()), upstream, 'origin of the page after signing in at the provider');
  check(
    (await page.locator('input[name=prompt][value=consent]').count()) === 1,
    `expected the provider's consent page at ${page.url()}`,
  );
  upstreamPages.push(await page.title());
  await submit(page, 'button[type=submit]');

  // Back at Gatehouse, through its callback, on its consent page.
  checkEqual(origin(page.url()), gatehouse, 'origin after the provider sent the browser back');
  check(
    visited.some((u) => origin(u) === gatehouse && new URL(u).pathname.startsWith('/callback/')),
    `the browser never went through Gatehouse's callback: ${visited.join(' -> ')}`,
  );
  const consent = await readConsent(page);
  checkConsent(consent);

  const redirect = await toClient(page, redirectUri, () => submit(page, '#allow'));
  const cookies = (await context.cookies(gatehouse)).map((c) => ({ name: c.name, sameSite: c.sameSite, httpOnly: c.httpOnly }));
  return { visited, upstream_pages: upstreamPages, consent, redirect, params: queryOf(redirect), cookies };
});
