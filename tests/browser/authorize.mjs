// An authorization code flow in Chromium: /authorize, the dev connector's
// login form (a wrong password first, when asked), the consent page, then
// Allow or Deny and the redirect to the client.
//
// Inputs (environment):
//   GATEHOUSE_URL        Gatehouse's base URL
//   AUTHORIZE_URL        the /authorize URL to open
//   REDIRECT_URI         the redirect URI in it (see toClient in lib.mjs)
//   LOGIN_USER, LOGIN_PASSWORD
//   WRONG_PASSWORD       yes/no: try a wrong password first
//   DECISION             allow or deny
//   EXPECT_CLIENT_NAME, EXPECT_REDIRECT_HOST, EXPECT_SCOPES, EXPECT_RESOURCES
//   EXPECT_LOCALHOST_WARNING, EXPECT_UNVERIFIED_WARNING   yes/no
// Output: { login_error, consent, redirect, params }.

import {
  check,
  checkConsent,
  checkEqual,
  flagInput,
  input,
  origin,
  queryOf,
  readConsent,
  scenario,
  signIn,
  submit,
  textOf,
  toClient,
} from './lib.mjs';

await scenario('authorize', async ({ page, requests }) => {
  const gatehouse = input('GATEHOUSE_URL');
  const redirectUri = input('REDIRECT_URI');
  const decision = input('DECISION');
  check(decision === 'allow' || decision === 'deny', `DECISION must be allow or deny, got ${decision}`);
  const user = input('LOGIN_USER');
  const password = input('LOGIN_PASSWORD');
  const sentToClient = () => requests.filter((r) => r.url.startsWith(redirectUri));

  await page.goto(input('AUTHORIZE_URL'));
  checkEqual(new URL(page.url()).pathname, '/login', 'path after /authorize');

  let loginError = null;
  if (flagInput('WRONG_PASSWORD')) {
    const res = await signIn(page, gatehouse, user, `${password}-wrong`);
    checkEqual(res?.status(), 401, 'status of the login page after a wrong password');
    loginError = await textOf(page, '#login-error');
    checkEqual(loginError, 'Wrong email or password.', 'error shown after a wrong password');
    check(origin(page.url()) === origin(gatehouse), `a wrong password left Gatehouse for ${page.url()}`);
    checkEqual(await page.inputValue('#username'), user, 'email kept in the form after a wrong password');
    checkEqual(await page.inputValue('#password'), '', 'password field after a wrong password');
    checkEqual(sentToClient(), [], 'requests to the client after a wrong password');
  }

  await signIn(page, gatehouse, user, password);
  check(origin(page.url()) === origin(gatehouse), `after signing in the browser left Gatehouse for ${page.url()}`);
  const consent = await readConsent(page);
  checkConsent(consent);
  checkEqual(consent.localhost_warning, flagInput('EXPECT_LOCALHOST_WARNING'), 'localhost warning shown');
  checkEqual(consent.unverified_warning, flagInput('EXPECT_UNVERIFIED_WARNING'), 'self-registered warning shown');
  checkEqual(sentToClient(), [], 'requests to the client before the user decided');

  const redirect = await toClient(page, redirectUri, () => submit(page, `#${decision}`));
  const params = queryOf(redirect);
  return { login_error: loginError, consent, redirect, params };
});
