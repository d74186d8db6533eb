// What verifying a token costs next to the bare signature check it wraps.
//
//   npm run bench            (sdk/bench-sdks.sh typescript does the same)
//   BENCH_TIME_MS=200 npm run bench   (a quick pass)
//
// tinybench, ES256 (P-256, SHA-256), one crypto library underneath: jose 6
// verifies with the runtime's WebCrypto (crypto.subtle).
// - verify (cached keys): GatehouseVerifier.verify, every check (typ, alg,
//   kid, signature, iss, aud, exp/nbf/iat, required claims, scope).
// - bare signature check: crypto.subtle.verify of the same signature over the
//   same signing input with the same CryptoKey, both prepared beforehand.
// - jose compactVerify: the JWS alone through jose, for reference.
//
// The verifier's fetch serves the discovery document and the JWKS from
// memory; after the first verification no request is made while measuring
// (checked at the end). Each task is awaited in turn (no concurrency).
import { randomUUID, webcrypto } from 'node:crypto';

import { compactVerify, exportJWK, generateKeyPair, importJWK, SignJWT } from 'jose';
import { Bench } from 'tinybench';

import { createVerifier } from '../dist/index.js';

const ISSUER = 'http://gatehouse.bench';
const RESOURCE = 'http://127.0.0.1:8765/mcp';
const TIME_MS = Number(process.env.BENCH_TIME_MS || 3000);

const { privateKey, publicKey } = await generateKeyPair('ES256');
const kid = randomUUID().replace(/-/g, '').slice(0, 22);
const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };

let requests = 0;
const fetchImpl = async (input) => {
  requests++;
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  const json = (body) =>
    new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } });
  if (url.pathname === '/.well-known/oauth-authorization-server') {
    return json({ issuer: ISSUER, jwks_uri: `${ISSUER}/jwks.json` });
  }
  if (url.pathname === '/jwks.json') return json({ keys: [jwk] });
  return new Response('{"error":"not_found"}', { status: 404 });
};

// The claims and header Gatehouse puts in an access token.
const now = Math.floor(Date.now() / 1000);
const token = await new SignJWT({
  client_id: 'demo-public',
  scope: 'mcp:read',
  jti: randomUUID(),
  auth_time: now - 10,
})
  .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid })
  .setIssuer(ISSUER)
  .setSubject('3f0c6f7e-7f3b-4a57-9a8e-2b1f3c4d5e6f')
  .setAudience(RESOURCE)
  .setIssuedAt(now)
  .setExpirationTime(now + 3600)
  .sign(privateKey);

const verifier = createVerifier({ issuer: ISSUER, resource: RESOURCE, algorithms: ['ES256'], fetch: fetchImpl });
const first = await verifier.verify(token); // discovery and JWKS, once
if (first.scopes.join(' ') !== 'mcp:read') throw new Error('unexpected verification result');
const requestsBefore = requests;

const dot = token.lastIndexOf('.');
const signingInput = new TextEncoder().encode(token.slice(0, dot));
const signature = Buffer.from(token.slice(dot + 1), 'base64url');
const cryptoKey = await webcrypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, [
  'verify',
]);
const ecdsa = { name: 'ECDSA', hash: 'SHA-256' };
if (!(await webcrypto.subtle.verify(ecdsa, cryptoKey, signature, signingInput))) {
  throw new Error('the bare check does not verify the token');
}
const joseKey = await importJWK(jwk, 'ES256');

const bench = new Bench({ time: TIME_MS, warmupTime: Math.min(1000, TIME_MS), throws: true });
bench
  .add('verify (cached keys)', async () => {
    await verifier.verify(token);
  })
  .add('bare signature check (crypto.subtle.verify)', async () => {
    await webcrypto.subtle.verify(ecdsa, cryptoKey, signature, signingInput);
  })
  .add('jose compactVerify (signature only)', async () => {
    await compactVerify(token, joseKey);
  });
await bench.run();

if (requests !== requestsBefore) throw new Error('the verifier made a request while measuring');

const us = (ms) => (ms * 1000).toFixed(1);
const rows = bench.tasks.map((t) => ({
  task: t.name,
  'median µs': us(t.result.latency.p50),
  'mean µs': us(t.result.latency.mean),
  'p99 µs': us(t.result.latency.p99),
  samples: t.result.latency.samplesCount ?? t.result.latency.samples?.length,
}));
console.table(rows);
const [verify, bare] = bench.tasks;
console.log(
  `verify / bare signature check (medians): ${(verify.result.latency.p50 / bare.result.latency.p50).toFixed(3)}`,
);
