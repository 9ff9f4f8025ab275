// The MCP 2026-07-28 wire through the proxy, raw HTTP (DESIGN 3.6):
// SEP-2243's Mcp-Method / Mcp-Name agreement for every method that mirrors
// a body field (tasks/* by params.taskId), a mismatch answered 400 with
// -32020 and the request's id, the headers a 2026-07-28 request must carry,
// the broker's own origin allowed without config, and stateless requests
// (no Mcp-Session-Id) never bound to a session.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, call, rawRequest } from '../lib/proxy_setup.mjs';

let env, tok;
const T = { timeout: 20000 };
const MODERN = '2026-07-28';

before(async () => {
  env = await startProxyEnv({ prefix: 'wire2026' });
  tok = await env.token({ scope: 'repo:read' });
}, { timeout: 40000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

const bindings = () => env.psql('SELECT count(*) FROM mcp_session_bindings');

/** A POST the broker must refuse with -32020 naming `id`, the downstream unreached. */
async function mismatch(what, body, headers, id) {
  const n = env.ds.requests.length;
  const r = await env.mcp('/mcp', { token: tok.access_token, body, headers });
  assert.equal(r.status, 400, `${what}: ${r.status} ${r.text}`);
  assert.equal(r.json?.jsonrpc, '2.0', `${what}: a JSON-RPC error`);
  assert.equal(r.json?.error?.code, -32020, `${what}: HeaderMismatch, got ${r.text}`);
  assert.deepEqual(r.json?.id, id, `${what}: the request's own id`);
  assert.equal(env.ds.requests.length, n, `${what}: reached the downstream`);
}

test('tasks/get, tasks/update and tasks/cancel pass with Mcp-Name = params.taskId', T, async () => {
  for (const method of ['tasks/get', 'tasks/update', 'tasks/cancel']) {
    const body = { jsonrpc: '2.0', id: 11, method, params: { taskId: 'task-7f3a' } };
    const r = await env.mcp('/mcp', {
      token: tok.access_token, body,
      headers: { 'mcp-protocol-version': MODERN, 'mcp-method': method, 'mcp-name': 'task-7f3a' },
    });
    assert.equal(r.status, 200, `${method}: ${r.status} ${r.text}`);
    const d = env.ds.requests.at(-1);
    assert.equal(d.headers['mcp-name'], 'task-7f3a', `${method}: Mcp-Name forwarded`);
    assert.equal(JSON.parse(d.body).params.taskId, 'task-7f3a');
  }
});

test('a header that disagrees with the body: 400, -32020 and the request id, nothing forwarded', T, async () => {
  const before = await bindings();
  await mismatch('tasks/get, other task', { jsonrpc: '2.0', id: 21, method: 'tasks/get', params: { taskId: 'a' } },
    { 'mcp-method': 'tasks/get', 'mcp-name': 'b' }, 21);
  await mismatch('string id', { jsonrpc: '2.0', id: 'req-22', method: 'tasks/cancel', params: { taskId: 'a' } },
    { 'mcp-method': 'tasks/cancel', 'mcp-name': 'b' }, 'req-22');
  await mismatch('Mcp-Method', call('list_issues', 23), { 'mcp-method': 'tools/list' }, 23);
  await mismatch('Mcp-Name of a tool', call('list_issues', 24), { 'mcp-method': 'tools/call', 'mcp-name': 'delete_repo' }, 24);
  await mismatch('prompts/get', { jsonrpc: '2.0', id: 25, method: 'prompts/get', params: { name: 'p1' } },
    { 'mcp-method': 'prompts/get', 'mcp-name': 'p2' }, 25);
  await mismatch('resources/read', { jsonrpc: '2.0', id: 26, method: 'resources/read', params: { uri: 'file:///a' } },
    { 'mcp-method': 'resources/read', 'mcp-name': 'file:///b' }, 26);
  await mismatch('base64 Mcp-Name of another tool', call('list_issues', 27),
    { 'mcp-method': 'tools/call', 'mcp-name': `=?base64?${Buffer.from('delete_repo').toString('base64')}?=` }, 27);
  await mismatch('invalid base64', call('list_issues', 28), { 'mcp-method': 'tools/call', 'mcp-name': '=?base64?!!!?=' }, 28);
  await mismatch('a notification', { jsonrpc: '2.0', method: 'notifications/cancelled', params: {} },
    { 'mcp-method': 'notifications/progress' }, null);
  await mismatch('the second message of a batch', [call('list_issues', 31), { jsonrpc: '2.0', id: 32, method: 'tools/list' }],
    { 'mcp-method': 'tools/call' }, 32);
  // Headers on a request without a body name nothing the broker could check.
  const r = await env.mcp('/mcp', { method: 'GET', token: tok.access_token, headers: { accept: 'text/event-stream', 'mcp-method': 'tools/list' } });
  assert.equal(r.status, 400);
  assert.equal(r.json?.error?.code, -32020);
  assert.equal(r.json?.id, null);
  assert.equal(await bindings(), before, 'nothing written');
  await env.assertHealthy('header mismatches');
});

test('the base64 form of Mcp-Name agrees when it decodes to the body value', T, async () => {
  const name = `=?base64?${Buffer.from('list_issues').toString('base64')}?=`;
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 41), headers: { 'mcp-method': 'tools/call', 'mcp-name': name } });
  assert.equal(r.status, 200, r.text);
});

test('on the 2026-07-28 wire a request must carry Mcp-Method, and Mcp-Name where it mirrors a field', T, async () => {
  const v = { 'mcp-protocol-version': MODERN };
  await mismatch('no Mcp-Method', { jsonrpc: '2.0', id: 51, method: 'tools/list' }, v, 51);
  await mismatch('tools/call without Mcp-Name', call('list_issues', 52), { ...v, 'mcp-method': 'tools/call' }, 52);
  await mismatch('tasks/get without Mcp-Name', { jsonrpc: '2.0', id: 53, method: 'tasks/get', params: { taskId: 't' } },
    { ...v, 'mcp-method': 'tasks/get' }, 53);
  const ok = await env.mcp('/mcp', { token: tok.access_token, body: { jsonrpc: '2.0', id: 54, method: 'tools/list' }, headers: { ...v, 'mcp-method': 'tools/list' } });
  assert.equal(ok.status, 200, ok.text);
  // Notifications are exempt; the 2025-11-25 wire has no such headers at all.
  const note = await env.mcp('/mcp', { token: tok.access_token, body: { jsonrpc: '2.0', method: 'notifications/initialized' }, headers: v });
  assert.equal(note.status, 202, note.text);
  const old = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 55), headers: { 'mcp-protocol-version': '2025-11-25' } });
  assert.equal(old.status, 200, old.text);
  await env.assertHealthy('2026-07-28 requests');
});

test("the broker's own public origin is same-origin: allowed without allowed_origins", T, async () => {
  const port = env.broker.port;
  for (const o of [env.url, env.url.toUpperCase().replace('HTTP://', 'http://')]) {
    const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 61), headers: { origin: o } });
    assert.equal(r.status, 200, `${o}: ${r.status} ${r.text}`);
    assert.equal(r.headers.get('access-control-allow-origin'), o);
  }
  const lookalikes = [
    `http://127.0.0.1:${port + 1}`, // other port
    `https://127.0.0.1:${port}`, // other scheme
    'http://127.0.0.1', // default port
    `http://localhost:${port}`, // other host
    `http://127.0.0.10:${port}`, // host with a suffix
    `http://x@127.0.0.1:${port}`, // userinfo
    `${env.url}/mcp`, // more than an origin
    'null',
  ];
  for (const o of lookalikes) {
    const n = env.ds.requests.length;
    const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 62), headers: { origin: o } });
    assert.equal(r.status, 403, `${o}: ${r.status}`);
    assert.equal(env.ds.requests.length, n, `${o} reached the downstream`);
  }
  const pre = await rawRequest(port, { method: 'OPTIONS', path: '/mcp', headers: [['Origin', env.url], ['Access-Control-Request-Method', 'POST']] });
  assert.ok(pre.status >= 200 && pre.status < 300, `preflight from the own origin: ${pre.status}`);
});

test('a stateless request (no Mcp-Session-Id) binds no session; a session the downstream hands out is bound', T, async () => {
  const before = await bindings();
  for (let i = 0; i < 3; i++) {
    const r = await env.mcp('/mcp', {
      token: tok.access_token, body: { jsonrpc: '2.0', id: 70 + i, method: 'tools/list' },
      headers: { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/list' },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('mcp-session-id'), null);
    assert.equal(env.ds.requests.at(-1).headers['mcp-session-id'], undefined);
  }
  assert.equal(await bindings(), before, 'a stateless request was bound to a session');
  const sid = `sess-w26-${Date.now()}`;
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 80), headers: { 'x-fake-mode': 'session', 'x-fake-session-id': sid } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('mcp-session-id'), sid);
  assert.equal(Number(await bindings()), Number(before) + 1, 'the handed-out session is bound');
});
