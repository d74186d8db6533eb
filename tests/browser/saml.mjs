// SAML 2.0 login through SimpleSAMLphp (tests/saml-idp) in Chromium:
// /authorize sends the browser to the IdP with an AuthnRequest, the user
// signs in on the IdP's own login page, the IdP's page auto-posts the
// SAMLResponse to Gatehouse's ACS (the connector's callback URL), then
// Gatehouse's consent page and the redirect to the client. Gatehouse and
// the IdP are on different sites (127.0.0.1 and localhost), so the IdP's
// POST is cross-site and Chromium withholds Gatehouse's SameSite=Lax
// cookies from it: Gatehouse must answer with its re-post page, whose
// same-origin POST of the same fields carries the cookies. The script
// checks exactly that: two POSTs to the ACS, the first cross-site from the
// IdP's page without the login cookie and answered with a page (the re-post
// page), the second same-origin with the cookie and the re-post marker,
// answered with Gatehouse's consent page.
//
// Inputs (environment):
//   GATEHOUSE_URL, AUTHORIZE_URL, REDIRECT_URI (see toClient in lib.mjs)
//   IDP_URL              SimpleSAMLphp's base URL
//   ACS_URL              the connector's ACS URL at Gatehouse
//   IDP_USER, IDP_PASSWORD   an account at the IdP
//   EXPECT_CLIENT_NAME, EXPECT_SCOPES, EXPECT_RESOURCES
// Output: { visited, idp_pages, acs_posts, consent, redirect, params, cookies }.

import {
  bodyText,
  check,
  checkConsent,
  checkEqual,
  has,
  input,
  origin,
  queryOf,
  readConsent,
  scenario,
  submit,
  toClient,
} from './lib.mjs';

const LOGIN_COOKIE = 'gh_login';
const REPOST_MARKER = 'gh_resubmitted';

/// The names of the cookies in a Cookie request header.
function cookieNames(header) {
  return (header ?? '')
    .split(';')
    .map((c) => c.split('=')[0].trim())
    .filter((n) => n !== '');
}

await scenario('saml', async ({ context, page }) => {
  const gatehouse = origin(input('GATEHOUSE_URL'));
  const idp = origin(input('IDP_URL'));
  const acs = input('ACS_URL');
  const redirectUri = input('REDIRECT_URI');
  check(
    new URL(gatehouse).hostname !== new URL(idp).hostname,
    `Gatehouse (${gatehouse}) and the IdP (${idp}) should be on different sites`,
  );
  checkEqual(origin(acs), gatehouse, 'origin of the ACS URL');

  const visited = [];
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) visited.push(f.url());
  });
  // Every POST to the ACS: who sent it, with which cookies and fields, and
  // what Gatehouse answered. Origin, Sec-Fetch-Site and Cookie are read
  // from the raw request headers (allHeaders): what Chromium actually sent.
  const acsPosts = [];
  context.on('request', (r) => {
    if (r.method() !== 'POST' || r.url() !== acs) return;
    const fields = new URLSearchParams(r.postData() ?? '');
    const post = {
      origin: null,
      fetch_site: null,
      fields: [...fields.keys()].sort(),
      saml_response: fields.get('SAMLResponse'),
      cookies: null,
      status: null,
    };
    acsPosts.push(post);
    post.done = (async () => {
      const headers = await r.allHeaders();
      post.origin = headers['origin'] ?? null;
      post.fetch_site = headers['sec-fetch-site'] ?? null;
      post.cookies = cookieNames(headers['cookie']);
      const response = await r.response();
      post.status = response?.status() ?? null;
    })().catch((e) => {
      post.error = String(e);
    });
  });

  await page.goto(input('AUTHORIZE_URL'));
  checkEqual(origin(page.url()), idp, 'where /authorize sent the browser');

  // SimpleSAMLphp's username/password page.
  const idpPages = [];
  for (const field of ['#username', '#password', '#submit_button']) {
    check(await has(page, field), `the IdP's page ${page.url()} has no ${field}: ${await bodyText(page)}`);
  }
  idpPages.push(await page.title());
  await page.fill('#username', input('IDP_USER'));
  await page.fill('#password', input('IDP_PASSWORD'));
  // Submitting leads to the IdP's page that auto-posts the response to the
  // ACS, then to Gatehouse's re-post page, which posts again: wait for
  // where that ends, Gatehouse's consent page or an error page.
  await submit(page, '#submit_button');
  await page
    .locator('#allow, #error-message')
    .first()
    .waitFor()
    .catch(() => {});
  await page.waitForLoadState('load');
  await Promise.all(acsPosts.map((p) => p.done));
  const posts = acsPosts.map(({ done, saml_response, ...p }) => ({ ...p, has_saml_response: !!saml_response }));
  const seen = JSON.stringify(posts);

  check(
    acsPosts.length === 2,
    `expected two POSTs to the ACS ${acs} (the IdP's cross-site one without Gatehouse's cookies, ` +
      `then the same-origin re-post with them), saw ${acsPosts.length}: ${seen}; ` +
      `navigations: ${visited.join(' -> ')}; page says: ${await bodyText(page)}`,
  );
  const [first, second] = acsPosts;
  check(!first.error && !second.error, `could not read the POSTs to the ACS: ${seen}`);
  checkEqual(first.origin, idp, 'Origin of the first POST to the ACS (the IdP\'s page)');
  checkEqual(first.fetch_site, 'cross-site', 'Sec-Fetch-Site of the IdP\'s POST to the ACS');
  check(
    !first.cookies.includes(LOGIN_COOKIE),
    `the IdP's cross-site POST to the ACS carried ${LOGIN_COOKIE} (Chromium should withhold SameSite=Lax cookies): ${seen}`,
  );
  check(!first.fields.includes(REPOST_MARKER), `the IdP's POST carried ${REPOST_MARKER}: ${seen}`);
  checkEqual(first.status, 200, 'status of the first POST to the ACS (Gatehouse\'s re-post page)');
  // Gatehouse's pages are Referrer-Policy: no-referrer, so Chromium sends
  // `Origin: null` with their POSTs; Sec-Fetch-Site names the initiator.
  checkEqual(second.fetch_site, 'same-origin', 'Sec-Fetch-Site of the second POST to the ACS (Gatehouse\'s re-post page)');
  check(
    second.fields.includes(REPOST_MARKER),
    `the second POST to the ACS lacks ${REPOST_MARKER}, so it did not come from the re-post page: ${seen}`,
  );
  check(
    second.cookies.includes(LOGIN_COOKIE),
    `the same-origin re-post to the ACS did not carry ${LOGIN_COOKIE}: ${seen}`,
  );
  check(
    first.saml_response && first.saml_response === second.saml_response,
    `the re-post did not post the IdP's SAMLResponse unchanged: ${seen}`,
  );
  check(
    !(await has(page, '#saml-repost')),
    `Gatehouse answered the re-post with its re-post page again: ${seen}`,
  );

  // The sign-in went through: Gatehouse's consent page (the answer to the
  // re-post).
  checkEqual(origin(page.url()), gatehouse, 'origin after the IdP sent the browser back');
  const consent = await readConsent(page);
  checkConsent(consent);

  const redirect = await toClient(page, redirectUri, () => submit(page, '#allow'));
  const cookies = (await context.cookies(gatehouse)).map((c) => ({ name: c.name, sameSite: c.sameSite, httpOnly: c.httpOnly }));
  return { visited, idp_pages: idpPages, acs_posts: posts, consent, redirect, params: queryOf(redirect), cookies };
});
