// Upstream answers are classified (DESIGN §3.5, issue 10 defect 7): only a
// definitive "this grant is dead" (invalid_grant, GitHub's 200
// bad_refresh_token, a 401 for the user's token at userinfo) revokes a grant.
// The broker's own credentials refused (invalid_client, unauthorized_client,
// GitHub's incorrect_client_credentials after a secret rotation), 403/429
// rate limiting, 5xx, timeouts, resets and garbage answer 502/503/504, keep
// the grant, log one error line and count
// mcpb_upstream_errors_total{upstream,op,class}; once the upstream recovers
// the same grant works again. Driven per class for the upstream refresh
// (stale token), the forced refresh and the userinfo check after a
// downstream 401, and the code exchange and userinfo at /callback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startIdp } from '../fakes/idp.mjs';
import { startEcho } from '../lib/nodes.mjs';
import { startBroker, baseConfig, createDatabase, freePort, http, psql, sleep } from '../lib/harness.mjs';
import { fullFlow } from '../lib/flow.mjs';
import { approveUntilUpstream, upstreamLogin, browserGet, assertErrorRedirect, counts, publicClient } from '../lib/oauth_setup.mjs';

const UPSTREAM_TIMEOUT_MS = 1000;
let idp, echo, db, broker;

before(async () => {
  idp = await startIdp({ port: 0 });
  echo = await startEcho();
  db = await createDatabase('uperr');
  const port = await freePort();
  const t = { timeout_ms: UPSTREAM_TIMEOUT_MS };
  broker = await startBroker(baseConfig({ port, databaseUrl: db, extra: {
    registration: { dynamic: true, client_id_metadata_documents: false },
    limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 },
    upstreams: {
      gh: { preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret', scopes: ['read:user'], ...t,
        authorize_url: `${idp.base}/github/login/oauth/authorize`, token_url: `${idp.base}/github/login/oauth/access_token`,
        userinfo_url: `${idp.base}/github/api/user`, revoke_url: `${idp.base}/github/api/applications/{client_id}/grant` },
      sentry: { preset: 'sentry', client_id: 'sentry-client', client_secret: 'sentry-secret', scopes: ['org:read'], ...t,
        authorize_url: `${idp.base}/sentry/oauth/authorize/`, token_url: `${idp.base}/sentry/oauth/token/`,
        userinfo_url: `${idp.base}/sentry/api/0/`, revoke_url: `${idp.base}/sentry/oauth/revoke/` },
      oidc: { preset: 'oidc', issuer: `${idp.base}/oidc`, client_id: 'oidc-client', client_secret: 'oidc-secret',
        scopes: ['openid', 'profile'], ...t },
    },
    resources: [
      { path: '/mcp', upstream: 'sentry', downstream: echo.url },
      { path: '/gh', upstream: 'gh', downstream: echo.url },
      { path: '/oidc', upstream: 'oidc', downstream: echo.url },
    ],
  } }));
});

after(async () => {
  const stopped = await broker?.stop();
  await echo?.close();
  await idp?.close();
  // SIGTERM drains and exits 0; a sanitizer build's reports fail the file here.
  const bad = broker ? broker.logs().filter((l) => /AddressSanitizer|LeakSanitizer|runtime error:/.test(l)) : [];
  assert.deepEqual(bad, []);
  if (stopped) assert.equal(stopped.code, 0, `broker exited ${stopped.code ?? stopped.signal}`);
});

// ---- helpers

const idpConfig = async (patch) => {
  const r = await http(`${idp.base}/_control/config`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(patch) });
  assert.equal(r.status, 200, r.text);
};
const setFault = (key, spec) => idpConfig({ fault: { [key]: spec } });
/** Runs fn with the fault on (for every request: curl retries a request
 * whose reused connection was reset, and that retry must fail too), then off. */
async function withFault(key, fault, fn) {
  await setFault(key, fault);
  try {
    return await fn();
  } finally {
    await setFault(key, null);
  }
}
const call = (token, path = '/mcp') => http(`${broker.url}${path}`, {
  method: 'POST',
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
  body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo' } }),
});
const flow = (path, login = 'alice') => fullFlow(broker.url, { resource: `${broker.url}${path}`, login });
const grantOf = (access) => psql(db, `SELECT g.id FROM tokens t JOIN grants g ON g.id = t.grant_id
  WHERE t.token_hash = sha256(convert_to('${access}', 'UTF8'))`);
const grantState = (gid) => psql(db, `SELECT status || ':' || coalesce(revoked_reason, '') FROM grants WHERE id = '${gid}'`);
/** Makes the stored upstream token stale and evicts the node's cached copy (as a refresh elsewhere would). */
async function stale(gid) {
  await psql(db, `UPDATE grants SET up_expires_at = now() - interval '1 second' WHERE id = '${gid}'`);
  await psql(db, `SELECT pg_notify('mcpb_revoke', 'u:${gid}')`);
  await sleep(50);
}

async function metrics() {
  const r = await http(`${broker.url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.text, /^# TYPE mcpb_upstream_errors_total counter$/m);
  const out = new Map();
  for (const m of r.text.matchAll(/^mcpb_upstream_errors_total\{upstream="([^"]*)",op="([^"]*)",class="([^"]*)"\} (\d+)$/gm)) {
    out.set(`${m[1]}/${m[2]}/${m[3]}`, Number(m[4]));
  }
  return out;
}
/** Runs fn and asserts it counted exactly `expect` ({ 'gh/refresh/invalid_client': 1, ... }) and nothing else. */
async function counted(expect, fn) {
  const before = await metrics();
  const out = await fn();
  const afterM = await metrics();
  const delta = {};
  for (const [k, v] of afterM) if (v !== (before.get(k) ?? 0)) delta[k] = v - (before.get(k) ?? 0);
  assert.deepEqual(delta, expect, 'mcpb_upstream_errors_total delta');
  return out;
}
/** The broker's log lines since mark, parsed. */
const logsSince = (mark) => broker.logs().slice(mark).map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);

function assertUpstreamFailure(r, status, what) {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text}`);
  assert.equal(r.json?.jsonrpc, '2.0', what);
  assert.equal(r.json?.error?.code, -32603, what);
  assert.equal(r.headers.get('www-authenticate'), null, `${what}: no challenge, the grant lives`);
}

// Non-definitive classes at a token endpoint (sentry: RFC 6749 JSON dialect).
// [fault, client status, metric class, Retry-After]
const TOKEN_CLASSES = [
  [{ mode: 'invalid_client' }, 502, 'invalid_client'],
  [{ mode: 'error', error: 'invalid_client', status: 400 }, 502, 'invalid_client'],
  [{ mode: 'unauthorized_client' }, 502, 'unauthorized_client'],
  [{ mode: 'rate_limited', retry_after: 7 }, 503, 'rate_limited', '7'],
  [{ mode: 'status', status: 403 }, 503, 'rate_limited', '1'],
  [{ mode: 'status', status: 429, retry_after: 42 }, 503, 'rate_limited', '42'],
  [{ mode: 'status', status: 500 }, 503, 'server_error', '1'],
  [{ mode: 'status', status: 503, retry_after: 3 }, 503, 'server_error', '3'],
  [{ mode: 'error', error: 'temporarily_unavailable', status: 400 }, 503, 'server_error'],
  [{ mode: 'error', error: 'invalid_request', status: 400 }, 502, 'refused'],
  [{ mode: 'timeout' }, 504, 'timeout'],
  [{ mode: 'reset' }, 503, 'unreachable'],
  [{ mode: 'garbage' }, 502, 'garbage'],
  [{ mode: 'bad_json' }, 502, 'garbage'],
  [{ mode: 'incomplete' }, 502, 'garbage'],
  [{ mode: 'wrong_type' }, 502, 'garbage'],
  [{ mode: 'huge' }, 502, 'garbage'],
];

// Non-definitive classes at userinfo (GitHub /user dialect).
const USERINFO_CLASSES = [
  [{ mode: 'rate_limited', retry_after: 30 }, 503, 'rate_limited', /^(29|30)$/], // 403 + X-RateLimit-Reset
  [{ mode: 'status', status: 403 }, 503, 'rate_limited'],
  [{ mode: 'status', status: 429, retry_after: 9 }, 503, 'rate_limited', /^9$/],
  [{ mode: 'status', status: 500 }, 503, 'server_error'],
  [{ mode: 'status', status: 503, retry_after: 2 }, 503, 'server_error', /^2$/],
  [{ mode: 'invalid_grant' }, 502, 'garbage'], // a 400 from userinfo says nothing about the token
  [{ mode: 'timeout' }, 504, 'timeout'],
  [{ mode: 'reset' }, 503, 'unreachable'],
  [{ mode: 'garbage' }, 502, 'garbage'],
  [{ mode: 'bad_json' }, 502, 'garbage'],
  [{ mode: 'incomplete' }, 502, 'garbage'],
  [{ mode: 'wrong_type' }, 502, 'garbage'],
];

// ---- upstream refresh of a stale token

test('refresh: every non-definitive class answers 502/503/504 and keeps the grant, which works again after', async () => {
  const t = await flow('/mcp', 'rf-sentry');
  const gid = await grantOf(t.access_token);
  assert.equal((await call(t.access_token)).status, 200);
  for (const [fault, status, cls, retryAfter] of TOKEN_CLASSES) {
    const what = `refresh ${JSON.stringify(fault)}`;
    await stale(gid);
    const mark = broker.logs().length;
    const r = await counted({ [`sentry/refresh/${cls}`]: 1 }, () => withFault('sentry.token.refresh', fault, () => call(t.access_token)));
    assertUpstreamFailure(r, status, what);
    if (retryAfter) assert.equal(r.headers.get('retry-after'), retryAfter, what);
    assert.equal(await grantState(gid), 'active:', what);
    const line = logsSince(mark).find((l) => l.event === 'upstream.error');
    assert.ok(line, `${what}: an upstream.error line`);
    assert.equal(line.level, 'error', what);
    assert.deepEqual([line.upstream, line.op, line.class], ['sentry', 'refresh', cls], what);
    // The upstream recovered: the same grant refreshes and the call works.
    const ok = await call(t.access_token);
    assert.equal(ok.status, 200, `${what}, recovered: ${ok.text}`);
  }
  assert.equal(await psql(db, `SELECT count(*) FROM audit_events WHERE event = 'grant.revoked' AND grant_id = '${gid}'`), '0');
});

test('refresh: invalid_grant is definitive: the grant is revoked, and stays so after the upstream recovers', async () => {
  const t = await flow('/mcp', 'rf-dead');
  const gid = await grantOf(t.access_token);
  await stale(gid);
  await setFault('sentry.token.refresh', { mode: 'invalid_grant', count: 1 });
  const r = await counted({ 'sentry/refresh/grant_dead': 1 }, () => call(t.access_token));
  assert.equal(r.status, 401, r.text);
  assert.match(r.headers.get('www-authenticate'), /error="invalid_token"/);
  assert.equal(await grantState(gid), 'revoked:upstream_invalid_grant');
  assert.equal((await call(t.access_token)).status, 401);
});

test('GitHub refresh: a rotated client secret (200 incorrect_client_credentials) keeps the grant; bad_refresh_token revokes it', async () => {
  await idpConfig({ github: { expiring: true } });
  try {
    const t = await flow('/gh', 'rf-github');
    const gid = await grantOf(t.access_token);
    assert.equal((await call(t.access_token, '/gh')).status, 200);
    // The defect as reported: the upstream client secret is rotated at the
    // provider before the broker's config: every refresh is refused.
    await idpConfig({ github: { clients: { 'gh-client': 'rotated-secret' } } });
    await stale(gid);
    const r = await counted({ 'gh/refresh/invalid_client': 1 }, () => call(t.access_token, '/gh'));
    assertUpstreamFailure(r, 502, 'rotated secret');
    assert.equal(await grantState(gid), 'active:');
    // GitHub's rate limit answer on the token endpoint: 403 + reset time.
    await setFault('github.token.refresh', { mode: 'rate_limited', retry_after: 20, count: 1 });
    const rl = await counted({ 'gh/refresh/rate_limited': 1 }, () => call(t.access_token, '/gh'));
    assertUpstreamFailure(rl, 503, 'github rate limit');
    assert.match(rl.headers.get('retry-after'), /^(19|20)$/);
    // Secret fixed: the same grant works again.
    await idpConfig({ github: { clients: { 'gh-client': 'gh-secret' } } });
    const ok = await call(t.access_token, '/gh');
    assert.equal(ok.status, 200, ok.text);
    assert.equal(await grantState(gid), 'active:');
    // GitHub's own "this refresh token is dead": HTTP 200 with error=bad_refresh_token.
    await stale(gid);
    await setFault('github.token.refresh', { mode: 'bad_refresh_token', count: 1 });
    const dead = await counted({ 'gh/refresh/grant_dead': 1 }, () => call(t.access_token, '/gh'));
    assert.equal(dead.status, 401, dead.text);
    assert.equal(await grantState(gid), 'revoked:upstream_invalid_grant');
  } finally {
    await idpConfig({ github: { expiring: false, clients: { 'gh-client': 'gh-secret' } }, fault: { 'github.token.refresh': null } });
  }
});

// ---- the downstream-401 check

test('downstream 401, refreshable grant: the forced refresh is classified the same way', async () => {
  const t = await flow('/mcp', 'd401-sentry');
  const gid = await grantOf(t.access_token);
  assert.equal((await call(t.access_token)).status, 200);
  const rejected = new Set([echo.seen.at(-1).authorization]);
  echo.reject = (req) => rejected.has(req.headers.authorization);
  try {
    for (const [fault, status, cls, retryAfter] of TOKEN_CLASSES) {
      const what = `forced refresh ${JSON.stringify(fault)}`;
      const r = await counted({ [`sentry/refresh/${cls}`]: 1 }, () => withFault('sentry.token.refresh', fault, () => call(t.access_token)));
      assertUpstreamFailure(r, status, what);
      if (retryAfter) assert.equal(r.headers.get('retry-after'), retryAfter, what);
      assert.equal(await grantState(gid), 'active:', what);
      // Recovered: the downstream still refuses the old token, the forced
      // refresh now succeeds and the replay is accepted.
      const ok = await call(t.access_token);
      assert.equal(ok.status, 200, `${what}, recovered: ${ok.text}`);
      rejected.add(echo.seen.at(-1).authorization); // next round: the downstream refuses this one too
    }
    await setFault('sentry.token.refresh', { mode: 'invalid_grant', count: 1 });
    const dead = await counted({ 'sentry/refresh/grant_dead': 1 }, () => call(t.access_token));
    assert.equal(dead.status, 401, dead.text);
    assert.equal(await grantState(gid), 'revoked:upstream_invalid_grant');
  } finally {
    echo.reject = null;
  }
});

test('downstream 401, non-refreshable grant: only a 401 from userinfo revokes; rate limits, 5xx, timeouts and garbage keep it', async () => {
  const t = await flow('/gh', 'd401-github');
  const gid = await grantOf(t.access_token);
  assert.equal((await call(t.access_token, '/gh')).status, 200);
  const ghTok = echo.seen.at(-1).authorization;
  assert.match(ghTok, /^Bearer gho_/);
  let refusing = true;
  echo.reject = (req) => refusing && req.headers.authorization === ghTok;
  try {
    for (const [fault, status, cls, retryAfter] of USERINFO_CLASSES) {
      const what = `userinfo check ${JSON.stringify(fault)}`;
      refusing = true;
      const r = await counted({ [`gh/userinfo/${cls}`]: 1 }, () => withFault('github.user', fault, () => call(t.access_token, '/gh')));
      assertUpstreamFailure(r, status, what);
      if (retryAfter) assert.match(r.headers.get('retry-after'), retryAfter, what);
      assert.equal(await grantState(gid), 'active:', what);
      // The upstream and the downstream recovered: the same grant works.
      refusing = false;
      const ok = await call(t.access_token, '/gh');
      assert.equal(ok.status, 200, `${what}, recovered: ${ok.text}`);
    }
    // A 401 for the user's token at userinfo is the definitive answer.
    refusing = true;
    await setFault('github.user', { mode: 'error', count: 1 });
    const dead = await counted({ 'gh/userinfo/grant_dead': 1 }, () => call(t.access_token, '/gh'));
    assert.equal(dead.status, 401, dead.text);
    assert.match(dead.headers.get('www-authenticate'), /error="invalid_token"/);
    assert.equal(await grantState(gid), 'revoked:upstream_rejected');
    refusing = false;
    assert.equal((await call(t.access_token, '/gh')).status, 401);
  } finally {
    echo.reject = null;
  }
});

// ---- /callback: code exchange and userinfo

async function callbackWith(client, path, key, fault) {
  const s = await approveUntilUpstream(broker.url, { ...client, resource: `${broker.url}${path}`, state: 'cb-state' });
  assert.equal(s.res.status, 302, s.res.text);
  const cb = await upstreamLogin(s.res.headers.get('location'), { login: 'callback-user' });
  return withFault(key, fault, () => browserGet(cb, s.jar));
}

test('/callback: a failed code exchange is classified and counted, gives an error redirect, writes nothing', async () => {
  const client = await publicClient(broker.url);
  const cases = [
    ['/gh', 'github.token', { mode: 'invalid_client' }, 'server_error', 'gh/exchange/invalid_client'],
    ['/gh', 'github.token', { mode: 'error', error: 'bad_verification_code' }, 'server_error', 'gh/exchange/grant_dead'],
    ['/gh', 'github.token', { mode: 'rate_limited' }, 'temporarily_unavailable', 'gh/exchange/rate_limited'],
    ['/gh', 'github.token', { mode: 'garbage' }, 'temporarily_unavailable', 'gh/exchange/garbage'],
    ['/oidc', 'oidc.token', { mode: 'invalid_client' }, 'server_error', 'oidc/exchange/invalid_client'],
    ['/oidc', 'oidc.token', { mode: 'unauthorized_client' }, 'server_error', 'oidc/exchange/unauthorized_client'],
    ['/oidc', 'oidc.token', { mode: 'invalid_grant' }, 'server_error', 'oidc/exchange/grant_dead'],
    ['/oidc', 'oidc.token', { mode: 'status', status: 503 }, 'temporarily_unavailable', 'oidc/exchange/server_error'],
    ['/oidc', 'oidc.token', { mode: 'timeout' }, 'temporarily_unavailable', 'oidc/exchange/timeout'],
    ['/oidc', 'oidc.token', { mode: 'incomplete' }, 'temporarily_unavailable', 'oidc/exchange/garbage'],
  ];
  await flow('/oidc', 'warm-discovery'); // discovery is not what is measured here
  for (const [path, key, fault, error, metric] of cases) {
    const what = `${key} ${JSON.stringify(fault)}`;
    const before = await counts(db);
    const res = await counted({ [metric]: 1 }, () => callbackWith(client, path, key, fault));
    assertErrorRedirect(res, { redirectUri: client.redirectUri, error, state: 'cb-state', iss: broker.url });
    assert.deepEqual(await counts(db), before, `${what}: nothing may be half-written`);
  }
  // Recovered: the next sign-in completes.
  await flow('/gh', 'callback-user');
  await flow('/oidc', 'callback-user');
});

test('/callback: a failed userinfo call is classified and counted, gives an error redirect, writes nothing', async () => {
  const client = await publicClient(broker.url);
  await flow('/oidc', 'warm-discovery');
  const cases = [];
  for (const [fault, , cls] of USERINFO_CLASSES) {
    const error = cls === 'garbage' || cls === 'rate_limited' || cls === 'server_error' || cls === 'timeout' || cls === 'unreachable'
      ? 'temporarily_unavailable' : 'server_error';
    cases.push(['/gh', 'github.user', fault, error, `gh/userinfo/${cls}`]);
  }
  cases.push(['/gh', 'github.user', { mode: 'error' }, 'server_error', 'gh/userinfo/grant_dead']);
  cases.push(['/oidc', 'oidc.userinfo', { mode: 'rate_limited', retry_after: 5 }, 'temporarily_unavailable', 'oidc/userinfo/rate_limited']);
  cases.push(['/oidc', 'oidc.userinfo', { mode: 'status', status: 500 }, 'temporarily_unavailable', 'oidc/userinfo/server_error']);
  cases.push(['/oidc', 'oidc.userinfo', { mode: 'incomplete' }, 'temporarily_unavailable', 'oidc/userinfo/garbage']);
  cases.push(['/oidc', 'oidc.userinfo', { mode: 'error' }, 'server_error', 'oidc/userinfo/grant_dead']);
  for (const [path, key, fault, error, metric] of cases) {
    const what = `${key} ${JSON.stringify(fault)}`;
    const before = await counts(db);
    const res = await counted({ [metric]: 1 }, () => callbackWith(client, path, key, fault));
    assertErrorRedirect(res, { redirectUri: client.redirectUri, error, state: 'cb-state', iss: broker.url });
    assert.deepEqual(await counts(db), before, `${what}: nothing may be half-written`);
  }
  await flow('/gh', 'callback-user');
  await flow('/oidc', 'callback-user');
});

// ---- the log

test('no log line carries an upstream token; each failure logged its class', async () => {
  const lines = broker.logs();
  const leaks = lines.filter((l) => /(gho|ghr|sntr|sntrr|oidc_at|oidc_rt|ghcode|oidc_code)_[A-Za-z0-9_-]{20,}/.test(l));
  assert.deepEqual(leaks, []);
  const classes = new Set(logsSince(0).filter((l) => l.event === 'upstream.error').map((l) => l.class));
  for (const c of ['grant_dead', 'invalid_client', 'unauthorized_client', 'rate_limited', 'server_error', 'timeout', 'unreachable', 'garbage', 'refused']) {
    assert.ok(classes.has(c), `an upstream.error line with class ${c}`);
  }
});
