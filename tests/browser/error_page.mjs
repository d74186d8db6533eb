// The error page in Chromium: an /authorize request that must not be
// redirected (its redirect URI is not registered) shows Gatehouse's HTML
// error page, and that page loads nothing from anywhere else.
//
// Inputs (environment):
//   GATEHOUSE_URL, AUTHORIZE_URL
//   REDIRECT_URI         the unregistered redirect URI in it
//   EXPECT_ERROR_CODE, EXPECT_MESSAGE (a part of the message)
// Output: { status, content_type, message, code, requests }.

import { check, checkEqual, input, origin, scenario, textOf } from './lib.mjs';

await scenario('error_page', async ({ page, requests }) => {
  const gatehouse = origin(input('GATEHOUSE_URL'));
  const authorizeUrl = input('AUTHORIZE_URL');
  const redirectUri = input('REDIRECT_URI');

  const response = await page.goto(authorizeUrl);
  await page.waitForLoadState('networkidle');
  checkEqual(response.status(), 400, 'status of the error page');
  const contentType = response.headers()['content-type'] ?? '';
  check(contentType.startsWith('text/html'), `the error page is ${contentType}, not HTML`);
  checkEqual(page.url(), authorizeUrl, 'URL of the error page (no redirect)');
  checkEqual(await page.title(), 'Sign-in error', 'title of the error page');
  const message = await textOf(page, '#error-message');
  const expected = input('EXPECT_MESSAGE');
  check(message.includes(expected), `the error message should say "${expected}", says "${message}"`);
  const code = await textOf(page, '#error-code');
  checkEqual(code, input('EXPECT_ERROR_CODE'), 'error code on the page');

  // Nothing from elsewhere: every request Chromium made went to Gatehouse,
  // none to the client, and the page references no subresource at all.
  const elsewhere = requests.filter((r) => origin(r.url) !== gatehouse);
  checkEqual(elsewhere, [], 'requests to other origins');
  check(!requests.some((r) => r.url.startsWith(redirectUri)), 'the browser went to the unregistered redirect URI');
  const subresources = await page.evaluate(() => ({
    elements: [...document.querySelectorAll('script,link,img,iframe,object,embed,video,audio,source,form')].map(
      (e) => e.outerHTML.slice(0, 120),
    ),
    loaded: performance.getEntriesByType('resource').map((e) => e.name),
  }));
  checkEqual(subresources, { elements: [], loaded: [] }, 'subresources of the error page');
  return { status: response.status(), content_type: contentType, message, code, requests };
});
