// Negative caches (DESIGN §4.6: no database on the hot path, negative
// results included). A proxied request repeating an Mcp-Session-Id nobody
// bound, or an access token the database does not know, is answered from
// the node's memory; a session bound later on another node is accepted
// there as soon as the binding's NOTIFY arrives (not after the TTL).
// A client is looked up once per node and kept in memory too; disabling it
// is announced, so every node refuses it at once (not after the TTL).
// "No database" is proved by holding ACCESS EXCLUSIVE on the table the
// lookup reads: a request that asked PostgreSQL would wait for the lock.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { http, lockTable, sleep } from '../lib/harness.mjs';
import { fullFlow, tokenRequest } from '../lib/flow.mjs';
import { startNodes } from '../lib/nodes.mjs';
import { startDownstream } from '../fakes/downstream.mjs';

let env, ds, A, B, RES, alice;
const T = { timeout: 60000 };
const FAST_MS = 1000;   // an answer from memory, on a shared 2-core box
const LOCK_MS = 2500;   // how long a request that asked the database waits at least

const init = (id = 1) => ({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } });
const toolCall = (id = 2) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: {} } });
const mcp = (node, { token, body = toolCall(), headers = {}, timeoutMs = 15000 }) => http(`${node.url}/mcp`, {
  method: 'POST', timeoutMs,
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
  body: JSON.stringify(body) });
const sid = (tag) => `sess-neg-${tag}-${randomBytes(8).toString('hex')}`;

async function metric(node, name, label) {
  const r = await http(`${node.url}/metrics`, { timeoutMs: 5000 });
  assert.equal(r.status, 200);
  const re = new RegExp(`^mcpb_${name}\\{[^}]*"${label}"\\} (\\d+)$`, 'm');
  const m = re.exec(r.text);
  return m ? Number(m[1]) : 0;
}

async function timed(fn) {
  const t0 = performance.now();
  const r = await fn();
  return { r, ms: performance.now() - t0 };
}

before(async () => {
  ds = await startDownstream({ port: 0 });
  env = await startNodes(2, { downstream: `${ds.url}/mcp` });
  [A, B] = env.nodes;
  RES = `${env.publicUrl}/mcp`;
  alice = await fullFlow(env.publicUrl, { resource: RES });
  // Warm the positive caches (token, upstream token) on both nodes.
  for (const n of [A, B]) assert.equal((await mcp(n, { token: alice.access_token })).status, 200);
}, { timeout: 60000 });
after(async () => { await env?.stop(); await ds?.close(); }, { timeout: 30000 });

test('an unbound session id, repeated, is refused from memory: no database round trip', T, async () => {
  const X = sid('x');
  const first = await mcp(A, { token: alice.access_token, headers: { 'mcp-session-id': X } });
  assert.equal(first.status, 404, first.text);
  const hits0 = await metric(A, 'session_negative_cache_total', 'hit');
  const lock = await lockTable(env.db, 'mcp_session_bindings', LOCK_MS + 500);
  try {
    const n = ds.requests.length;
    for (let i = 0; i < 20; i++) {
      const { r, ms } = await timed(() => mcp(A, { token: alice.access_token, headers: { 'mcp-session-id': X } }));
      assert.equal(r.status, 404, r.text);
      assert.ok(ms < FAST_MS, `request ${i} with the known-unbound id took ${ms.toFixed(0)} ms: it waited for the database`);
    }
    assert.equal(ds.requests.length, n, 'the downstream saw an unbound session id');
    // Control: an id never seen does ask the database, so waits for the lock.
    const { r, ms } = await timed(() => mcp(A, { token: alice.access_token, headers: { 'mcp-session-id': sid('fresh') } }));
    assert.ok(ms >= LOCK_MS - 200 || r.status !== 404, `a fresh id answered ${r.status} in ${ms.toFixed(0)} ms without the database`);
  } finally {
    lock.kill();
  }
  assert.equal(await metric(A, 'session_negative_cache_total', 'hit') - hits0, 20);
});

test('an unknown access token, repeated, is refused from memory: no database round trip', T, async () => {
  const bogus = `mcpb_at_${randomBytes(32).toString('base64url')}`;
  assert.equal((await mcp(A, { token: bogus })).status, 401);
  const lock = await lockTable(env.db, 'tokens', LOCK_MS + 500);
  try {
    for (let i = 0; i < 20; i++) {
      const { r, ms } = await timed(() => mcp(A, { token: bogus }));
      assert.equal(r.status, 401, r.text);
      assert.ok(ms < FAST_MS, `request ${i} with the known-invalid token took ${ms.toFixed(0)} ms`);
    }
    const { r, ms } = await timed(() => mcp(A, { token: `mcpb_at_${randomBytes(32).toString('base64url')}` }));
    assert.ok(ms >= LOCK_MS - 200 || r.status !== 401, `a fresh token answered ${r.status} in ${ms.toFixed(0)} ms without the database`);
  } finally {
    lock.kill();
  }
  // A token issued after all that is valid at once on both nodes.
  const fresh = await fullFlow(env.publicUrl, { resource: RES });
  for (const n of [A, B]) assert.equal((await mcp(n, { token: fresh.access_token })).status, 200);
});

test('bound on node A after node B refused it as unknown: B accepts it after the NOTIFY, not after the TTL', T, async (t) => {
  for (let round = 0; round < 3; round++) {
    const X = sid(`cross${round}`);
    // B refuses X and remembers it (the second refusal is a negative-cache hit).
    const hits0 = await metric(B, 'session_negative_cache_total', 'hit');
    for (let i = 0; i < 2; i++) assert.equal((await mcp(B, { token: alice.access_token, headers: { 'mcp-session-id': X } })).status, 404);
    assert.equal(await metric(B, 'session_negative_cache_total', 'hit') - hits0, 1, 'B remembered X as unbound');
    // A binds X to alice (the downstream assigns it in answer to an initialize).
    const opened = await mcp(A, { token: alice.access_token, body: init(), headers: { 'x-fake-mode': 'session', 'x-fake-session-id': X } });
    assert.equal(opened.status, 200, opened.text);
    assert.equal(opened.headers.get('mcp-session-id'), X);
    // A accepts it at once (evicted locally); B within the propagation budget.
    assert.equal((await mcp(A, { token: alice.access_token, headers: { 'mcp-session-id': X } })).status, 200);
    const t0 = performance.now();
    let r;
    do {
      r = await mcp(B, { token: alice.access_token, headers: { 'mcp-session-id': X } });
      if (r.status === 200) break;
      await sleep(20);
    } while (performance.now() - t0 < 2000);
    assert.equal(r.status, 200, `B still refused the bound session ${(performance.now() - t0).toFixed(0)} ms after A bound it`);
    assert.equal(ds.requests.at(-1).headers['mcp-session-id'], X);
    t.diagnostic(`round ${round}: B accepted the session ${(performance.now() - t0).toFixed(1)} ms after A's answer`);
  }
});

test('a client is read once per node: its token requests skip the database; disabled on A, refused on B at once', T, async () => {
  const c = await fullFlow(env.publicUrl, { resource: RES, login: 'negcache-client' });
  const refresh = (node, rt) => tokenRequest(node.url, { grant_type: 'refresh_token', refresh_token: rt, client_id: c.clientId });
  let rt = c.refresh_token;
  // B has never seen the client: the first refresh reads it, the next ones find it in memory.
  const hits0 = await metric(B, 'client_cache_total', 'hit');
  for (let i = 0; i < 3; i++) {
    const r = await refresh(B, rt);
    assert.equal(r.status, 200, r.text);
    rt = r.json.refresh_token;
  }
  assert.equal(await metric(B, 'client_cache_total', 'hit') - hits0, 2);
  // With the clients table locked, a refresh on B does not wait for it.
  const lock = await lockTable(env.db, 'clients', LOCK_MS + 500);
  try {
    const { r, ms } = await timed(() => refresh(B, rt));
    assert.equal(r.status, 200, r.text);
    assert.ok(ms < FAST_MS, `a refresh took ${ms.toFixed(0)} ms with the clients table locked: it asked the database`);
    rt = r.json.refresh_token;
    // Control: a client B has not read waits for the lock.
    const other = await timed(() => tokenRequest(B.url, { grant_type: 'refresh_token', refresh_token: 'x', client_id: 'nobody-negcache' }));
    assert.ok(other.ms >= LOCK_MS - 200, `an unknown client was answered ${other.r.status} in ${other.ms.toFixed(0)} ms without the database`);
  } finally {
    lock.kill();
  }
  // The grant ends (RFC 7009 on A), then the operator disables the client on
  // A with nothing left to revoke: the disabling alone is announced.
  const rv = await http(`${A.url}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: rt, token_type_hint: 'refresh_token', client_id: c.clientId }).toString() });
  assert.equal(rv.status, 200, rv.text);
  assert.equal((await refresh(B, rt)).json.error, 'invalid_grant', 'B still knows the client as enabled');
  const off = await http(`${A.url}/admin/v1/revoke`, { method: 'POST', headers: { authorization: `Bearer ${env.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ client_id: c.clientId, disable_client: true }) });
  assert.deepEqual(off.json, { revoked: 0 }, off.text);
  assert.equal((await refresh(A, rt)).json.error, 'invalid_client', 'A refused the disabled client');
  const t0 = performance.now();
  let r;
  do {
    r = await refresh(B, rt);
    if (r.json?.error === 'invalid_client') break;
    await sleep(20);
  } while (performance.now() - t0 < 2000);
  assert.equal(r.status, 401, r.text);
  assert.equal(r.json.error, 'invalid_client', `B still took the disabled client ${(performance.now() - t0).toFixed(0)} ms after A disabled it`);
});
