// The device authorization grant's user side in Chromium (RFC 8628): a
// wrong code on the /device page shows an error there; the
// verification_uri_complete link fills the code in; sign in, check the
// consent page names the device's code, allow, see the "connected" page.
//
// Inputs (environment):
//   GATEHOUSE_URL, VERIFICATION_URI, VERIFICATION_URI_COMPLETE, USER_CODE
//   WRONG_CODE           a well-formed code that is not live
//   LOGIN_USER, LOGIN_PASSWORD
//   EXPECT_CLIENT_NAME, EXPECT_SCOPES, EXPECT_RESOURCES
// Output: { wrong_code_error, prefilled, consent, done }.

import { check, checkConsent, checkEqual, input, readConsent, scenario, signIn, submit, textOf } from './lib.mjs';

await scenario('device', async ({ page }) => {
  const gatehouse = input('GATEHOUSE_URL');
  const verificationUri = input('VERIFICATION_URI');
  const userCode = input('USER_CODE');

  // A code that is not live: an error on the page, and the form again.
  await page.goto(verificationUri);
  checkEqual(await page.inputValue('#user_code'), '', 'code field of a bare /device page');
  await page.fill('#user_code', input('WRONG_CODE'));
  const wrong = await submit(page, '#continue');
  checkEqual(wrong?.status(), 400, 'status after a wrong code');
  checkEqual(page.url(), verificationUri, 'URL after a wrong code');
  const wrongCodeError = await textOf(page, '#device-error');
  check(
    wrongCodeError.includes('not valid or has expired'),
    `the error after a wrong code should say it is not valid, says: ${wrongCodeError}`,
  );
  check(await page.locator('#continue').isVisible(), 'no form to try again after a wrong code');

  // The link the device shows: the code is filled in.
  await page.goto(input('VERIFICATION_URI_COMPLETE'));
  const prefilled = await page.inputValue('#user_code');
  checkEqual(prefilled, userCode, 'code filled in from verification_uri_complete');
  await submit(page, '#continue');
  await signIn(page, gatehouse, input('LOGIN_USER'), input('LOGIN_PASSWORD'));

  const consent = await readConsent(page);
  checkConsent(consent);
  checkEqual(consent.device_code, userCode, 'device code on the consent page');
  check(await page.locator('#device-warning').isVisible(), 'the consent page does not warn about connecting a device');

  await submit(page, '#allow');
  const done = await textOf(page, '#device-approved');
  checkEqual(done, 'Device connected', 'heading after allowing the device');
  return { wrong_code_error: wrongCodeError, prefilled, consent, done };
});
