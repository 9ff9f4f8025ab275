// Rate limits can't be turned against others (DESIGN §3.5, issue 10 defect 5).
//
// - The lock-out repro: a burst of garbage refresh_token requests naming a
//   popular public client (no secret needed) from one address used to empty
//   the per-client bucket (limits.token_per_client_per_minute), and a real
//   user's code exchange from another address got 429 slow_down. Now that
//   bucket is charged only by requests that proved something, and failures
//   go to buckets of their own, per (client id, address) and per address
//   (limits.token_failures_per_client_address_per_minute and
//   limits.token_failures_per_address_per_minute).
// - The failure buckets answer the sprayer 429 slow_down with Retry-After,
//   before anything is evaluated (a correct secret or verifier from there is
//   not even tried), while other addresses and the client's valid requests
//   pass: garbage refresh tokens and codes, wrong PKCE verifiers, wrong
//   client secrets at /token and /revoke, wrong resource server secrets at
//   /introspect, wrong initial access tokens at /register, and one address
//   naming many client ids.
// - The valid path is still limited by token_per_client_per_minute, and a
//   refused valid request consumes nothing (the refresh token still works).
// The client address comes from X-Forwarded-For behind the trusted proxy
// 127.0.0.1 (http.trusted_proxies), as in security.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  startIdp, startOauthBroker, runCleanups, http, runFlow, tokenRequest, register, assertOAuthError,
  STATIC_PUBLIC, STATIC_CONF, STATIC_CONF_SECRET,
} from '../lib/oauth_setup.mjs';
import { sleep } from '../lib/harness.mjs';

const RS = { client_id: 'rs-one', client_secret: 'rs-secret-0123456789abcdef' };
const IAT = 'iat-0123456789abcdef-0123456789';
const PUB = { clientId: STATIC_PUBLIC.client_id, redirectUri: 'http://127.0.0.1:33418/cb' };
const CONF = { clientId: STATIC_CONF.client_id, redirectUri: STATIC_CONF.redirect_uris[0] };

let idp;
const cleanups = [];
before(async () => {
  idp = await startIdp({ port: 0, log: false });
  cleanups.push(() => idp.close());
});
after(() => runCleanups(cleanups));

/** A broker behind the trusted proxy 127.0.0.1 with these limits (undefined: the default). */
async function broker(limits) {
  const env = await startOauthBroker(idp, {
    patch: (cfg) => {
      cfg.http = { ...cfg.http, trusted_proxies: ['127.0.0.1/32'] };
      cfg.limits = { register_per_ip_per_hour: 0, ...limits };
      for (const [k, v] of Object.entries(cfg.limits)) if (v === undefined) delete cfg.limits[k];
      cfg.resource_servers = [RS];
      cfg.registration = { ...cfg.registration, initial_access_token: IAT };
    },
  });
  cleanups.push(() => env.stop());
  return env;
}

const from = (addr) => ({ 'x-forwarded-for': addr });
const garbageToken = () => `mcpb_rt_${randomBytes(32).toString('base64url')}`;
const garbageRefresh = (env, addr, clientId = PUB.clientId) => tokenRequest(env.url,
  { grant_type: 'refresh_token', refresh_token: garbageToken(), client_id: clientId }, { headers: from(addr) });

/** The browser part of the flow (not rate limited); the code exchange is the test's. */
async function code(env, c) {
  const f = await runFlow({ broker: env.url, clientId: c.clientId, redirectUri: c.redirectUri, resource: `${env.url}/mcp` });
  assert.ok(f.code, `flow for ${c.clientId}: ${JSON.stringify(Object.fromEntries(Object.entries(f.steps).map(([k, v]) => [k, v.status])))}`);
  return f;
}
const exchange = (env, c, f, addr, { verifier = f.verifier, basic } = {}) => tokenRequest(env.url, {
  grant_type: 'authorization_code', code: f.code, code_verifier: verifier, redirect_uri: c.redirectUri,
  ...(basic ? {} : { client_id: c.clientId }),
}, { headers: from(addr), basic });

/** A 429 slow_down with one Retry-After of 1..max seconds; returns it. */
function assertSlowDown(r, max, what) {
  assertOAuthError(r, 429, 'slow_down');
  const ra = r.headers.get('retry-after');
  assert.match(ra || '', /^\d+$/, `${what}: Retry-After ${ra}`);
  assert.ok(Number(ra) >= 1 && Number(ra) <= max, `${what}: Retry-After ${ra} not in 1..${max}`);
  return Number(ra);
}

test('lock-out repro: 110 garbage refreshes naming a public client from one address do not 429 a real user elsewhere (default limits)', async () => {
  const env = await broker({ token_failures_per_client_address_per_minute: undefined, token_failures_per_address_per_minute: undefined });
  const f = await code(env, PUB);
  const statuses = [];
  for (let i = 0; i < 110; i++) {
    const r = await garbageRefresh(env, '198.51.100.7');
    statuses.push(r.status);
    if (r.status === 400) assert.equal(r.json.error, 'invalid_grant');
    else assertSlowDown(r, 130, `garbage refresh ${i}`);
  }
  // The real user, from another address, exchanges the code and refreshes.
  const t = await exchange(env, PUB, f, '203.0.113.9');
  assert.equal(t.status, 200, `the real user's code exchange after the burst: ${t.status} ${t.text}`);
  const r = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: t.json.refresh_token, client_id: PUB.clientId },
    { headers: from('203.0.113.9') });
  assert.equal(r.status, 200, r.text);
  // Default 30 failures a minute per (client, address): the sprayer was cut off after ~30.
  const refused = statuses.filter((s) => s === 400).length;
  assert.ok(refused >= 30 && refused <= 32, `${refused} garbage refreshes evaluated (expected ~30, then 429)`);
  assert.deepEqual(statuses.slice(refused), Array(110 - refused).fill(429), 'after the limit, only 429');
  const lines = env.broker.logs().filter((l) => l.includes('"ratelimit.failures_exceeded"'));
  assert.equal(lines.length, 1, `one log line when the pair crossed its limit, not one per refusal:\n${lines.join('\n')}`);
  assert.match(lines[0], /198\.51\.100\.7/);
});

test('failure buckets: garbage refreshes, garbage codes, wrong verifiers and many client ids get 429 from their address only', async () => {
  const env = await broker({ token_failures_per_client_address_per_minute: 5, token_failures_per_address_per_minute: 12 });
  // Garbage refresh tokens: 5 evaluated, then 429 with Retry-After (5 a minute: one per 12 s).
  for (let i = 0; i < 5; i++) assertOAuthError(await garbageRefresh(env, '198.51.100.1'), 400, 'invalid_grant');
  for (let i = 0; i < 3; i++) assertSlowDown(await garbageRefresh(env, '198.51.100.1'), 13, 'sprayer');
  // Another address naming the same client: evaluated as usual, and a real exchange passes.
  assertOAuthError(await garbageRefresh(env, '198.51.100.2'), 400, 'invalid_grant');
  const f1 = await code(env, PUB);
  const ok1 = await exchange(env, PUB, f1, '198.51.100.2');
  assert.equal(ok1.status, 200, ok1.text);

  // Garbage codes count the same way.
  for (let i = 0; i < 5; i++) {
    const r = await tokenRequest(env.url, { grant_type: 'authorization_code', code: `mcpb_ac_${randomBytes(32).toString('base64url')}`,
      code_verifier: 'v'.repeat(43), redirect_uri: PUB.redirectUri, client_id: PUB.clientId }, { headers: from('198.51.100.3') });
    assertOAuthError(r, 400, 'invalid_grant');
  }
  assertSlowDown(await garbageRefresh(env, '198.51.100.3'), 13, 'after garbage codes');

  // Wrong PKCE verifiers for a real code: after 5, even the right verifier
  // is not tried from that address (no guessing), and the code is intact for its user.
  const f2 = await code(env, PUB);
  for (let i = 0; i < 5; i++) {
    const r = await exchange(env, PUB, f2, '198.51.100.4', { verifier: randomBytes(32).toString('base64url') });
    assertOAuthError(r, 400, 'invalid_grant');
  }
  assertSlowDown(await exchange(env, PUB, f2, '198.51.100.4'), 13, 'right verifier from the guessing address');
  const ok2 = await exchange(env, PUB, f2, '198.51.100.5');
  assert.equal(ok2.status, 200, ok2.text);

  // One address naming many client ids: the per-address bucket (12) stops it.
  const sprayed = [];
  for (let i = 0; i < 14; i++) sprayed.push((await garbageRefresh(env, '198.51.100.6', `no-such-client-${i}`)).status);
  assert.deepEqual(sprayed, [...Array(12).fill(401), 429, 429], 'per-address failure limit');
  assertSlowDown(await garbageRefresh(env, '198.51.100.6', PUB.clientId), 13, 'any client id from the sprayed address');
  // IPv6 counts per /64: another address of the same /64 is the same sprayer.
  for (let i = 0; i < 5; i++) assertOAuthError(await garbageRefresh(env, `2001:db8:5:6::${i + 1}`), 400, 'invalid_grant');
  assertSlowDown(await garbageRefresh(env, '2001:db8:5:6:abcd::1'), 13, 'same /64');
  assertOAuthError(await garbageRefresh(env, '2001:db8:5:7::1'), 400, 'invalid_grant');

  // None of it touched the client's own bucket or other addresses.
  const f3 = await code(env, PUB);
  const ok3 = await exchange(env, PUB, f3, '203.0.113.50');
  assert.equal(ok3.status, 200, ok3.text);
});

test('wrong client secrets of a confidential client (at /token and /revoke), of a resource server and initial access tokens: 429 from that address only', async () => {
  const env = await broker({ token_failures_per_client_address_per_minute: 5, token_failures_per_address_per_minute: 100 });
  const f = await code(env, CONF);
  for (let i = 0; i < 5; i++) {
    const r = await exchange(env, CONF, f, '198.51.100.10', { basic: [CONF.clientId, `wrong-${i}-0123456789abcdef`] });
    assertOAuthError(r, 401, 'invalid_client');
  }
  // The right secret from the guessing address is not tried.
  assertSlowDown(await exchange(env, CONF, f, '198.51.100.10', { basic: [CONF.clientId, STATIC_CONF_SECRET] }), 13, 'right secret, guessing address');
  // The client itself, elsewhere, is not affected.
  const t = await exchange(env, CONF, f, '203.0.113.10', { basic: [CONF.clientId, STATIC_CONF_SECRET] });
  assert.equal(t.status, 200, t.text);

  // /revoke shares the buckets: guessing there counts for /token too.
  const revoke = (addr, secret) => http(`${env.url}/revoke`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...from(addr) },
    body: new URLSearchParams({ token: garbageToken(), client_id: CONF.clientId, client_secret: secret }).toString(),
  });
  for (let i = 0; i < 5; i++) assertOAuthError(await revoke('198.51.100.11', `wrong-${i}-0123456789abcdef`), 401, 'invalid_client');
  assertSlowDown(await revoke('198.51.100.11', STATIC_CONF_SECRET), 13, '/revoke');
  const viaToken = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: t.json.refresh_token },
    { headers: from('198.51.100.11'), basic: [CONF.clientId, STATIC_CONF_SECRET] });
  assertSlowDown(viaToken, 13, '/token after guessing at /revoke');
  const fine = await revoke('203.0.113.11', STATIC_CONF_SECRET);
  assert.equal(fine.status, 200, fine.text);

  // /introspect: wrong resource server secrets.
  const introspect = (addr, secret) => http(`${env.url}/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${RS.client_id}:${secret}`).toString('base64')}`, ...from(addr) },
    body: new URLSearchParams({ token: t.json.access_token }).toString(),
  });
  for (let i = 0; i < 5; i++) assertOAuthError(await introspect('198.51.100.12', `wrong-${i}-0123456789abcdef`), 401, 'invalid_client');
  assertSlowDown(await introspect('198.51.100.12', RS.client_secret), 13, '/introspect');
  const active = await introspect('203.0.113.12', RS.client_secret);
  assert.equal(active.status, 200, active.text);
  assert.equal(active.json.active, true);

  // /register: wrong initial access tokens.
  const doc = { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none' };
  for (let i = 0; i < 5; i++) {
    const r = await register(env.url, doc, { headers: { authorization: `Bearer ${IAT}-wrong-${i}`, ...from('198.51.100.13') } });
    assert.equal(r.status, 401, r.text);
  }
  assertSlowDown(await register(env.url, doc, { headers: { authorization: `Bearer ${IAT}`, ...from('198.51.100.13') } }), 13, '/register');
  const reg = await register(env.url, doc, { headers: { authorization: `Bearer ${IAT}`, ...from('203.0.113.13') } });
  assert.equal(reg.status, 201, reg.text);
  assert.ok(!env.broker.logText().includes(STATIC_CONF_SECRET) && !env.broker.logText().includes(IAT), 'no secret in the log');
});

test('the valid path is still limited by token_per_client_per_minute, and a limited refresh consumes nothing', async () => {
  // 60 a minute: a burst of 11, then one a second. Failure limits off: only the clients' buckets.
  const env = await broker({ token_per_client_per_minute: 60, token_failures_per_client_address_per_minute: 0,
    token_failures_per_address_per_minute: 0 });
  // A confidential client's bucket is charged once it authenticated, whatever it then asks.
  let confLimited, confPassed = 0;
  for (let i = 0; i < 20 && !confLimited; i++) {
    const r = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: garbageToken() },
      { headers: from('203.0.113.30'), basic: [CONF.clientId, STATIC_CONF_SECRET] });
    if (r.status === 429) confLimited = r;
    else { assertOAuthError(r, 400, 'invalid_grant'); confPassed++; }
  }
  assert.ok(confLimited, 'an authenticated client is limited by its own bucket');
  assert.ok(confPassed >= 11 && confPassed <= 13, `${confPassed} authenticated requests before the first 429 (burst 11)`);
  assertSlowDown(confLimited, 2, 'confidential');

  // The public client's bucket is its own, and only valid requests pay.
  const f = await code(env, PUB);
  const t = await exchange(env, PUB, f, '203.0.113.20');
  assert.equal(t.status, 200, t.text);
  for (let i = 0; i < 30; i++) assertOAuthError(await garbageRefresh(env, `198.51.100.${30 + (i % 5)}`), 400, 'invalid_grant');
  let rt = t.json.refresh_token;
  let limited, passed = 1;
  for (let i = 0; i < 20 && !limited; i++) {
    const r = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: rt, client_id: PUB.clientId },
      { headers: from(`203.0.113.${21 + (i % 3)}`) });
    if (r.status === 429) limited = r;
    else { assert.equal(r.status, 200, r.text); rt = r.json.refresh_token; passed++; }
  }
  assert.ok(limited, 'valid requests beyond the burst are limited, from whichever address');
  assert.ok(passed >= 11 && passed <= 13, `${passed} valid requests before the first 429 (burst 11; the 30 garbage ones did not count)`);
  const wait = assertSlowDown(limited, 2, 'valid path');
  await sleep(wait * 1000 + 100);
  const again = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: rt, client_id: PUB.clientId },
    { headers: from('203.0.113.21') });
  assert.equal(again.status, 200, `the refresh token refused with 429 was not rotated and still works: ${again.text}`);
});
