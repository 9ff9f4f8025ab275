// Proxy: session binding (the MCP session-hijacking defence, DESIGN 4.4).
// The Mcp-Session-Id a downstream assigns is bound to the user who opened
// it; another user presenting it gets 404 and the downstream never sees it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, call, sha256hex, rawRequest } from '../lib/proxy_setup.mjs';

let env, alice, alice2, bob;
const T = { timeout: 20000 };

before(async () => {
  env = await startProxyEnv({ prefix: 'proxy_sess' });
  alice = await env.token({ scope: 'repo:read' });
  alice2 = await env.token({ scope: 'repo:read' }); // alice on a second device: another grant
  bob = await env.token({ scope: 'repo:read', login: 'bob' });
}, { timeout: 40000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

const init = (id = 1) => ({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } });

async function openSession(token) {
  const r = await env.mcp('/mcp', { token, body: init(), headers: { 'x-fake-mode': 'session' } });
  assert.equal(r.status, 200, r.text);
  const sid = r.headers.get('mcp-session-id');
  assert.ok(sid, 'the downstream session id reaches the client');
  return sid;
}

test('a session opened by alice is bound to her: bob gets 404 and never reaches the downstream', T, async () => {
  const S = await openSession(alice.access_token);
  // Bound in PostgreSQL (hashed, so every node knows it and a dump does not reveal it).
  const row = await env.psql(`SELECT count(*) FROM mcp_session_bindings WHERE session_hash = '\\x${sha256hex(S)}'::bytea`);
  assert.equal(row, '1');
  assert.equal(await env.psql(`SELECT count(*) FROM mcp_session_bindings WHERE position(convert_to('${S}', 'UTF8') in session_hash) > 0`), '0');

  for (const [method, body, extra] of [
    ['POST', call('list_issues', 2), {}],
    ['POST', { jsonrpc: '2.0', id: 3, method: 'tools/list' }, {}],
    ['GET', undefined, { accept: 'text/event-stream' }],
    ['DELETE', undefined, {}],
  ]) {
    const n = env.ds.requests.length;
    const r = await env.mcp('/mcp', { method, token: bob.access_token, body, headers: { 'mcp-session-id': S, ...extra } });
    assert.equal(r.status, 404, `bob ${method} with alice's session: ${r.status} ${r.text}`);
    assert.equal(env.ds.requests.length, n, `the downstream saw bob's ${method}`);
  }

  // Alice, with the same session, passes; so does alice on her other device.
  for (const t of [alice, alice2]) {
    const r = await env.mcp('/mcp', { token: t.access_token, body: call('list_issues', 4), headers: { 'mcp-session-id': S } });
    assert.equal(r.status, 200, r.text);
    assert.equal(env.ds.requests.at(-1).headers['mcp-session-id'], S);
  }
  const del = await env.mcp('/mcp', { method: 'DELETE', token: alice.access_token, headers: { 'mcp-session-id': S } });
  assert.equal(del.status, 200);
});

test("bob's own session works for bob and is refused to alice", T, async () => {
  const B = await openSession(bob.access_token);
  const ok = await env.mcp('/mcp', { token: bob.access_token, body: call('get_file', 5), headers: { 'mcp-session-id': B } });
  assert.equal(ok.status, 200);
  const n = env.ds.requests.length;
  const r = await env.mcp('/mcp', { token: alice.access_token, body: call('get_file', 6), headers: { 'mcp-session-id': B } });
  assert.equal(r.status, 404);
  assert.equal(env.ds.requests.length, n);
});

test('a session id assigned on an SSE answer is bound too', T, async () => {
  const S = `sess-sse-${Date.now()}`;
  const res = await fetch(`${env.url}/mcp`, {
    method: 'POST', signal: AbortSignal.timeout(10000),
    headers: { authorization: `Bearer ${alice.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'x-fake-mode': 'sse', 'x-fake-events': '1', 'x-fake-session-id': S },
    body: JSON.stringify(init(7)),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(res.headers.get('mcp-session-id'), S);
  assert.match(await res.text(), /id: ev-1/);
  const n = env.ds.requests.length;
  const r = await env.mcp('/mcp', { token: bob.access_token, body: call('list_issues', 8), headers: { 'mcp-session-id': S } });
  assert.equal(r.status, 404);
  assert.equal(env.ds.requests.length, n);
});

test("a duplicated Mcp-Session-Id header cannot smuggle alice's session past the check", T, async () => {
  const S = await openSession(alice.access_token);
  const n = env.ds.requests.length;
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: JSON.stringify(call('list_issues', 9)),
    headers: [['Authorization', `Bearer ${bob.access_token}`], ['Content-Type', 'application/json'],
      ['Mcp-Session-Id', 'sess-unknown-decoy'], ['Mcp-Session-Id', S]],
  });
  const d = env.ds.requests[n];
  if (d) {
    const sent = d.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1].toLowerCase() === 'mcp-session-id');
    assert.ok(!sent.includes(S), `bob's request reached the downstream carrying alice's session (${JSON.stringify(sent)}), client got ${r.status}`);
  } else {
    assert.ok(r.status >= 400 && r.status < 500, `refused with ${r.status}`);
  }
});

test('a session assigned in answer to a request carrying a stale session id is bound too', T, async () => {
  // A client re-initialising after its session expired may still send the old id.
  const S2 = `sess-reinit-${Date.now()}`;
  const r = await env.mcp('/mcp', { token: alice.access_token, body: init(10), headers: { 'x-fake-mode': 'session', 'x-fake-session-id': S2, 'mcp-session-id': 'sess-expired-long-ago' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('mcp-session-id'), S2);
  const n = env.ds.requests.length;
  const b = await env.mcp('/mcp', { token: bob.access_token, body: call('list_issues', 11), headers: { 'mcp-session-id': S2 } });
  assert.equal(b.status, 404, `bob used alice's new session: ${b.status}`);
  assert.equal(env.ds.requests.length, n);
});
