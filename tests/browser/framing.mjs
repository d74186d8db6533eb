// Clickjacking: the login and consent pages refuse to be framed. A page on
// another origin (a server here, on 127.0.0.1 but another port: same site,
// so Gatehouse's SameSite=Lax cookies still reach the frame and the frame
// really gets the login or consent page) frames them; Chromium must show
// nothing of them. A control frame of the same Gatehouse (/healthz, which
// sets no framing rules) shows that frames from Gatehouse do render here.
//
// Inputs (environment):
//   GATEHOUSE_URL, LOGIN_USER, LOGIN_PASSWORD
//   LOGIN_AUTHORIZE_URL     an /authorize URL (no session yet: the login page)
//   CONSENT_AUTHORIZE_URL   another one, opened in a frame once signed in
//                           (the consent page)
// Output: { login: {...}, consent: {...} } with each framed page's response
// status and framing headers and what the frame showed.

import { check, checkEqual, has, input, loopbackServer, origin, scenario, signIn } from './lib.mjs';

const escapeAttr = (s) => s.replaceAll('&', '&amp;').replaceAll('"', '&quot;');

await scenario('framing', async ({ context, page }) => {
  const gatehouse = input('GATEHOUSE_URL');
  const framer = await loopbackServer(0, (_req, url) => ({
    body:
      '<!doctype html><title>framer</title>' +
      `<iframe id="target" name="target" src="${escapeAttr(url.searchParams.get('src') ?? '')}"></iframe>` +
      `<iframe id="control" src="${escapeAttr(gatehouse)}/healthz"></iframe>`,
  }));
  const framerOrigin = `http://127.0.0.1:${framer.port}`;
  check(framerOrigin !== origin(gatehouse), 'the framing page must be on another origin');

  // Documents Gatehouse answered for the target frame, by path.
  const frameDocuments = [];
  context.on('response', (r) => {
    const req = r.request();
    if (req.resourceType() === 'document' && req.frame() !== page.mainFrame() && origin(r.url()) === origin(gatehouse)) {
      frameDocuments.push(r);
    }
  });

  /// Frames `src` and reports what the target frame showed.
  async function frame(src, marker) {
    frameDocuments.length = 0;
    await page.goto(`${framerOrigin}/frame?src=${encodeURIComponent(src)}`);
    await page.waitForLoadState('load');
    const control = await (await page.$('#control')).contentFrame();
    checkEqual((await control.locator('body').innerText()).trim(), 'ok', 'the control frame (/healthz)');
    const served = frameDocuments.find((r) => r.status() === 200 && !new URL(r.url()).pathname.endsWith('/healthz'));
    check(served, `Gatehouse served no page to the frame for ${src}`);
    const headers = await served.allHeaders();
    const target = await (await page.$('#target')).contentFrame();
    const shown = target ? await has(target, marker) : false;
    check(
      !shown,
      `Chromium showed Gatehouse's ${marker} page inside a frame on ${framerOrigin} ` +
        `(X-Frame-Options: ${headers['x-frame-options']}, CSP: ${headers['content-security-policy']})`,
    );
    return {
      path: new URL(served.url()).pathname,
      status: served.status(),
      x_frame_options: headers['x-frame-options'] ?? null,
      content_security_policy: headers['content-security-policy'] ?? null,
      frame_url: target?.url() ?? null,
      shown,
    };
  }

  const login = await frame(input('LOGIN_AUTHORIZE_URL'), '#sign-in');
  checkEqual(login.path, '/login', 'the page Gatehouse served to the first frame');

  // The same pages render at the top level: sign in, see the consent page.
  await page.goto(input('LOGIN_AUTHORIZE_URL'));
  await signIn(page, gatehouse, input('LOGIN_USER'), input('LOGIN_PASSWORD'));
  check(await has(page, '#allow'), `no consent page after signing in at the top level: ${page.url()}`);

  const consent = await frame(input('CONSENT_AUTHORIZE_URL'), '#allow');
  checkEqual(consent.path, '/authorize', 'the page Gatehouse served to the second frame');
  await framer.close();
  return { framer: framerOrigin, login, consent };
});
