// Proxy: downstream failures. Unreachable -> 502, hanging -> 504 within the
// configured idle timeout, 500 passed through, a reset mid SSE stream ends
// the client's stream, a slow drip is not an idle stream, a downstream 401
// becomes the broker's own challenge. The node stays healthy after each.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, defaultResource, call, readSse } from '../lib/proxy_setup.mjs';
import { freePort } from '../lib/harness.mjs';

let env, tok, tokDead, tokCapped;
const T = { timeout: 30000 };

before(async () => {
  const deadPort = await freePort(); // nothing listens there
  env = await startProxyEnv({
    prefix: 'proxy_fault',
    resources: (ds) => [
      defaultResource(ds, { idle_timeout_ms: 1000, connect_timeout_ms: 1000 }),
      { path: '/dead', upstream: 'gh', downstream: `http://127.0.0.1:${deadPort}/mcp`, connect_timeout_ms: 1000 },
      { path: '/capped', upstream: 'gh', downstream: `${ds.url}/mcp`, idle_timeout_ms: 1000, stream_idle_timeout_ms: 1500 },
    ],
  });
  tok = await env.token({ scope: 'repo:read' });
  tokDead = await env.token({ resource: '/dead' });
  tokCapped = await env.token({ resource: '/capped' });
}, { timeout: 40000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

function assertJsonRpcError(r, status) {
  assert.equal(r.status, status, r.text);
  assert.match(r.headers.get('content-type') ?? '', /application\/json/);
  assert.equal(r.json?.jsonrpc, '2.0');
  assert.equal(typeof r.json?.error?.code, 'number');
  assert.equal(typeof r.json?.error?.message, 'string');
}

test('downstream unreachable: 502 with a JSON-RPC error body', T, async () => {
  const t0 = Date.now();
  const r = await env.mcp('/dead', { token: tokDead.access_token, body: call('anything', 3) });
  assertJsonRpcError(r, 502);
  assert.ok(Date.now() - t0 < 3000, 'connection refused is answered at once');
  const g = await env.mcp('/dead', { method: 'GET', token: tokDead.access_token, headers: { accept: 'text/event-stream' } });
  assertJsonRpcError(g, 502);
  await env.assertHealthy('an unreachable downstream');
});

test('downstream accepts and never answers (POST): 504 within idle_timeout_ms', T, async () => {
  const t0 = Date.now();
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 4), headers: { 'x-fake-mode': 'hang' }, timeoutMs: 20000 });
  const took = Date.now() - t0;
  assertJsonRpcError(r, 504);
  // idle_timeout_ms is 1000: allow generous slack, not a multiple of it.
  assert.ok(took >= 900 && took < 3000, `504 after ${took} ms with idle_timeout_ms 1000`);
  await env.assertHealthy('a hanging downstream');
});

test('downstream accepts and never answers (GET): 504 within idle_timeout_ms', T, async () => {
  const t0 = Date.now();
  const r = await env.mcp('/mcp', { method: 'GET', token: tok.access_token, headers: { 'x-fake-mode': 'hang', accept: 'text/event-stream' }, timeoutMs: 20000 });
  const took = Date.now() - t0;
  assertJsonRpcError(r, 504);
  assert.ok(took >= 900 && took < 3000, `504 after ${took} ms with idle_timeout_ms 1000`);
  await env.assertHealthy('a hanging downstream');
});

/** Opens the standalone GET stream on path; resolves when it ends or after ms. */
async function silentStream(path, token, ms) {
  const t0 = Date.now();
  const res = await fetch(`${env.url}${path}`, {
    signal: AbortSignal.timeout(ms),
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', 'x-fake-mode': 'idle' },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  const end = await readSse(res).done;
  return { took: Date.now() - t0, timedOut: !end.ok && end.error?.name === 'TimeoutError' };
}

test('a silent standalone GET SSE stream outlives idle_timeout_ms; stream_idle_timeout_ms cuts it', T, async () => {
  // idle_timeout_ms is 1000 on both; only /capped sets stream_idle_timeout_ms (1500).
  const [open, capped] = await Promise.all([
    silentStream('/mcp', tok.access_token, 4000),
    silentStream('/capped', tokCapped.access_token, 8000),
  ]);
  assert.ok(open.timedOut, `the silent stream stayed open until the client left (ended after ${open.took} ms)`);
  assert.ok(!capped.timedOut && capped.took >= 1400 && capped.took < 4000, `the capped stream ended after ${capped.took} ms`);
  await env.assertHealthy('silent streams');
});

test('downstream 500 is passed through as 500 with its body', T, async () => {
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 12), headers: { 'x-fake-mode': '500' } });
  assert.equal(r.status, 500);
  assert.deepEqual(r.json, { jsonrpc: '2.0', id: 12, error: { code: -32603, message: 'downstream exploded' } });
  await env.assertHealthy('a downstream 500');
});

test('downstream resets mid SSE stream: the client stream ends, no hang', T, async () => {
  const t0 = Date.now();
  const res = await fetch(`${env.url}/mcp`, {
    method: 'POST', signal: AbortSignal.timeout(10000),
    headers: { authorization: `Bearer ${tok.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'x-fake-mode': 'reset' },
    body: JSON.stringify(call('list_issues', 8)),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  const s = readSse(res);
  const end = await s.done;
  assert.equal(s.events.length, 1, 'the event sent before the reset arrived');
  assert.equal(s.events[0].id, 'ev-1');
  assert.ok(Date.now() - t0 < 3000, `stream ended after ${Date.now() - t0} ms`);
  // An abrupt end must not look like a clean end of stream to the client.
  assert.equal(end.ok, false, 'the client sees the stream break, not a clean end');
  await env.assertHealthy('a downstream reset');
  // And the node still proxies.
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 9) });
  assert.equal(r.status, 200);
});

test('a slow drip (a byte every 50 ms for ~5 s) is not idle: it completes', T, async () => {
  const t0 = Date.now();
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 10), headers: { 'x-fake-mode': 'drip', 'x-fake-delay': '50' }, timeoutMs: 20000 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.id, 10);
  assert.ok(Date.now() - t0 > 3000, 'it really dripped');
});

test('downstream 401 (refuses the injected credential): the client gets the broker challenge', T, async () => {
  const t2 = await env.token({ scope: 'repo:read' });
  const n = env.ds.requests.length;
  const r = await env.mcp('/mcp', { token: t2.access_token, body: call('list_issues', 11), headers: { 'x-fake-mode': '401' } });
  assert.equal(r.status, 401, r.text);
  const wa = r.headers.get('www-authenticate') ?? '';
  assert.ok(!/realm="downstream"/.test(wa), `the downstream's challenge leaked to the client: ${wa}`);
  assert.match(wa, /resource_metadata="[^"]+\/\.well-known\/oauth-protected-resource\/mcp"/);
  assert.ok(env.ds.requests.length - n <= 2, 'at most one replay');
  await env.assertHealthy('a downstream 401');
});
