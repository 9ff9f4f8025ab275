// Handlers that block run on the handler pool (http.handler_threads), never
// on a worker's loop: with the database stalled under a token request, the
// proxied traffic that worker serves goes on. One worker (http.threads 1),
// so the token request and the tool call share its loop; the control node
// (handler_threads 0, handlers on the loop) shows the stall the pool avoids.
// The stall is real: psql holds ACCESS EXCLUSIVE on the tokens table, which
// a refresh must read.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { startIdp } from '../fakes/idp.mjs';
import { baseConfig, createDatabase, freePort, http, lockTable, startBroker } from '../lib/harness.mjs';
import { fullFlow, tokenRequest } from '../lib/flow.mjs';
import { startEcho, upstreamConfig } from '../lib/nodes.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });
const HOLD_MS = 3000;
const ADMIN = 'admin-offload-test-token-0123456789abcdef';

async function node(handlerThreads) {
  const idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const db = await createDatabase('offload');
  const port = await freePort();
  const b = await startBroker(baseConfig({ port, databaseUrl: db, extra: {
    admin_tokens: [ADMIN],
    http: { threads: 1, ...(handlerThreads == null ? {} : { handler_threads: handlerThreads }) },
    upstreams: upstreamConfig(idp),
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: echo.url }],
  } }));
  cleanups.push(() => b.stop());
  return { b, db };
}

const call = (b, token) => http(`${b.url}/mcp`, { method: 'POST', timeoutMs: 15000,
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
  body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}' });

/** A refresh stuck behind the lock, and a tool call beside it: the call's ms. */
async function callBesideStall({ b, db }) {
  const t = await fullFlow(b.url, { resource: `${b.url}/mcp` });
  assert.equal((await call(b, t.access_token)).status, 200); // the token and upstream token cached
  const lock = await lockTable(db, 'tokens', HOLD_MS);
  try {
    const refresh = tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token, client_id: t.clientId });
    await new Promise((r) => setTimeout(r, 300)); // the refresh waits for the lock in its handler
    const t0 = performance.now();
    const r = await call(b, t.access_token);
    const ms = performance.now() - t0;
    assert.equal(r.status, 200, r.text);
    const rf = await refresh;
    assert.equal(rf.status, 200, `the refresh, once the lock is gone: ${rf.text}`);
    return ms;
  } finally {
    lock.kill();
  }
}

test('a token request stuck on the database does not hold the tool calls of its worker', { timeout: 60000 }, async (t) => {
  const ms = await callBesideStall(await node(null)); // the default pool
  t.diagnostic(`tool call beside a stalled refresh: ${ms.toFixed(0)} ms`);
  assert.ok(ms < 1000, `the tool call waited ${ms.toFixed(0)} ms behind the stalled refresh`);
});

test('control: with the handlers on the loop (handler_threads 0) the same call waits for the stall', { timeout: 60000 }, async (t) => {
  const ms = await callBesideStall(await node(0));
  t.diagnostic(`tool call beside a stalled refresh, handlers on the loop: ${ms.toFixed(0)} ms`);
  assert.ok(ms >= HOLD_MS - 300 - 500, `only ${ms.toFixed(0)} ms: the control did not stall, so the first test proves nothing`);
});

const metric = (text, name) => {
  const m = text.match(new RegExp(`^${name} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
};

test('a full handler pool answers 503 + Retry-After at once, and serves again once it drains', { timeout: 60000 }, async (t) => {
  const n = await node(1); // one handler thread: it queues 8 (LIM_OFFLOAD_QUEUE_PER_THREAD)
  const { b, db } = n;
  const tok = await fullFlow(b.url, { resource: `${b.url}/mcp` });
  const lock = await lockTable(db, 'tokens', HOLD_MS);
  try {
    // The one thread is held by a refresh waiting on the lock...
    const held = tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: tok.refresh_token, client_id: tok.clientId });
    await new Promise((r) => setTimeout(r, 300));
    // ...and 8 more wait in the queue (each would read the locked table too).
    const queued = [];
    for (let i = 0; i < 8; i++)
      queued.push(tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: `mcpb_rt_bogus${i}`, client_id: tok.clientId }));
    const deadline = Date.now() + 5000;
    let pending = 0;
    while (pending < 9 && Date.now() < deadline) { // /metrics answers on the worker, stall or not
      pending = metric((await http(`${b.url}/metrics`)).text, 'mcpb_http_handler_pool_pending');
      if (pending < 9) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(pending, 9, 'the held refresh and the 8 queued ones');
    const t0 = performance.now();
    const over = await tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: 'mcpb_rt_over', client_id: tok.clientId });
    const ms = performance.now() - t0;
    t.diagnostic(`the request past the queue: ${over.status} in ${ms.toFixed(0)} ms`);
    assert.equal(over.status, 503, over.text);
    assert.equal(over.headers.get('retry-after'), '1');
    assert.equal(over.json?.error, 'temporarily_unavailable');
    assert.ok(ms < 1000, `the refusal took ${ms.toFixed(0)} ms: it should not wait for the pool`);
    assert.equal(metric((await http(`${b.url}/metrics`)).text, 'mcpb_http_handler_pool_refused_total'), 1);
    // A load balancer still sees the node ready (its proxy is), and the
    // operator's API is served: with no pool thread free, on the loop.
    const ready = await http(`${b.url}/readyz`, { timeoutMs: 3000 });
    assert.equal(ready.status, 200, `readyz with the pool full: ${ready.text}`);
    const grants = await http(`${b.url}/admin/v1/grants`, { timeoutMs: 3000, headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(grants.status, 200, `the admin API with the pool full: ${grants.text}`);
    assert.equal(grants.json?.grants?.length, 1, grants.text);
    assert.equal((await http(`${b.url}/admin/v1/grants`, { headers: { authorization: 'Bearer wrong' } })).status, 403);
    // The proxy runs on the worker: unaffected.
    assert.equal((await call(b, tok.access_token)).status, 200);
    await lock.done;
    const rf = await held;
    assert.equal(rf.status, 200, `the held refresh, once the lock is gone: ${rf.text}`);
    for (const q of await Promise.all(queued)) {
      assert.equal(q.status, 400, q.text);
      assert.equal(q.json?.error, 'invalid_grant');
    }
  } finally {
    lock.kill();
  }
  assert.equal((await http(`${b.url}/readyz`)).status, 200);
  // A job counts as pending until its thread returns from it, which may be
  // just after its answer has reached the client: wait for the gauge a moment.
  let left = -1;
  for (const until = Date.now() + 2000; left !== 0 && Date.now() < until;) {
    left = metric((await http(`${b.url}/metrics`)).text, 'mcpb_http_handler_pool_pending');
    if (left !== 0) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(left, 0, 'the pool drained');
});
