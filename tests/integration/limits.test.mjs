// Request limits the http layer applies to every route before any handler
// runs (broker/core/lim.h): the raw query string (LIM_QUERY_BYTES, 8192,
// escapes counted as sent) and the request's header lines (LIM_HEADER_BYTES,
// 16384 for all "name: value\r\n" lines). Over either: 414 uri_too_long or
// 431 request_header_fields_too_large, on an OAuth endpoint as on a proxied
// resource, nothing reaching the downstream, the node still healthy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, call, rawRequest } from '../lib/proxy_setup.mjs';

const LIM_QUERY_BYTES = 8192;
const LIM_HEADER_BYTES = 16384;

let env, alice;
const T = { timeout: 30000 };

before(async () => {
  env = await startProxyEnv({ prefix: 'limits' });
  alice = await env.token({ scope: 'repo:read' });
}, { timeout: 60000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

const get = (path, headers = []) => rawRequest(env.broker.port, { path, headers });
/** A query of exactly n bytes: "a=" then filler. */
const query = (n, fill = 'q') => `a=${fill.repeat(n - 2)}`;

test('a query string of LIM_QUERY_BYTES passes; one byte more is 414 uri_too_long', T, async () => {
  const meta = '/.well-known/oauth-authorization-server';
  const ok = await get(`${meta}?${query(LIM_QUERY_BYTES)}`);
  assert.equal(ok.status, 200, ok.body.slice(0, 200));
  const long = await get(`${meta}?${query(LIM_QUERY_BYTES + 1)}`, [['X-Request-Id', 'limits-q1']]);
  assert.equal(long.status, 414);
  assert.deepEqual(JSON.parse(long.body), { error: 'uri_too_long' });
  assert.equal(long.headers['x-request-id'], 'limits-q1');
  assert.equal(long.headers['x-content-type-options'], 'nosniff');
  // Percent-escapes count as sent, not as decoded (2731 x "%41" is 2731 bytes decoded).
  const escaped = await get(`${meta}?a=${'%41'.repeat(Math.ceil((LIM_QUERY_BYTES - 1) / 3))}`);
  assert.equal(escaped.status, 414);
  await env.assertHealthy('long queries');
});

test('/authorize with an over-long query answers 414 itself: no redirect, no error page', T, async () => {
  const redirect = encodeURIComponent('http://127.0.0.1:33418/callback');
  const r = await get(`/authorize?response_type=code&client_id=proxy-test&redirect_uri=${redirect}&state=${'s'.repeat(LIM_QUERY_BYTES)}`);
  assert.equal(r.status, 414);
  assert.equal(r.headers.location, undefined);
  assert.deepEqual(JSON.parse(r.body), { error: 'uri_too_long' });
});

test('a proxied resource: the query limit answers before authentication and before the downstream', T, async () => {
  const n = env.ds.requests.length;
  const body = JSON.stringify(call('list_issues', 1));
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: `/mcp?${query(LIM_QUERY_BYTES + 1)}`, body,
    headers: [['Authorization', `Bearer ${alice.access_token}`], ['Content-Type', 'application/json'],
      ['Accept', 'application/json, text/event-stream']],
  });
  assert.equal(r.status, 414);
  assert.equal(r.headers['www-authenticate'], undefined, 'answered before the resource looked at the token');
  assert.equal(env.ds.requests.length, n, 'nothing reached the downstream');
  // Without a token, too: the limit comes before the 401.
  const anon = await get(`/mcp?${query(LIM_QUERY_BYTES + 1)}`);
  assert.equal(anon.status, 414);
});

test('header lines up to LIM_HEADER_BYTES pass; beyond, 431 before the handler', T, async () => {
  const auth = ['Authorization', `Bearer ${alice.access_token}`];
  const fixed = ['Content-Type', 'application/json'];
  const accept = ['Accept', 'application/json, text/event-stream'];
  const body = JSON.stringify(call('list_issues', 2));
  const sizeOf = (hs) => hs.reduce((s, [k, v]) => s + k.length + v.length + 4, 0) +
    `Host: 127.0.0.1:${env.broker.port}\r\n`.length + 'Connection: close\r\n'.length +
    `Content-Length: ${body.length}\r\n`.length;
  const padTo = (total) => {
    const base = sizeOf([auth, fixed, accept, ['X-Pad', '']]);
    return ['X-Pad', 'p'.repeat(total - base)];
  };
  const send = (pad) => rawRequest(env.broker.port, { method: 'POST', path: '/mcp', body, headers: [auth, fixed, accept, pad] });

  const n = env.ds.requests.length;
  const ok = await send(padTo(LIM_HEADER_BYTES));
  assert.equal(ok.status, 200, ok.body.slice(0, 200));
  assert.equal(env.ds.requests.length, n + 1);
  const big = await send(padTo(LIM_HEADER_BYTES + 1));
  assert.equal(big.status, 431);
  assert.deepEqual(JSON.parse(big.body), { error: 'request_header_fields_too_large' });
  assert.equal(env.ds.requests.length, n + 1, 'nothing more reached the downstream');
  // On an OAuth endpoint, spread over several lines: the same.
  const line = 'l'.repeat(LIM_HEADER_BYTES / 4);
  const spread = await get('/.well-known/oauth-protected-resource/mcp', [['X-A', line], ['X-B', line], ['X-C', line], ['X-D', line]]);
  assert.equal(spread.status, 431);
  await env.assertHealthy('large headers');
  const logs = env.broker.logText();
  assert.match(logs, /"event":"http.headers_too_large"/);
});
