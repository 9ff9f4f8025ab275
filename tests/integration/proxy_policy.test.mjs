// Proxy: the tool-scope policy on JSON-RPC tools/call (single and batch),
// body validation (400), the body limit (413), and the tool audit trail.
// A refused call must never reach the downstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, defaultResource, call, parseChallenge, rawRequest } from '../lib/proxy_setup.mjs';

let env, reader, writer;
const T = { timeout: 20000 };
const secrets = [];

before(async () => {
  env = await startProxyEnv({
    prefix: 'proxy_pol',
    resources: (ds) => [defaultResource(ds, {
      scopes: { 'repo:read': ['list_issues', 'get_file'], 'repo:write': ['*'], 'issues:admin': ['close_issue', 'list_issues'] },
      default_scopes: ['repo:read'],
    })],
  });
  reader = await env.token({ scope: 'repo:read' });
  writer = await env.token({ scope: 'repo:read repo:write' });
  for (const t of [reader, writer]) secrets.push(t.access_token, t.refresh_token);
}, { timeout: 40000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

async function refused(opts, path = '/mcp') {
  const n = env.ds.requests.length;
  const r = await env.mcp(path, opts);
  assert.equal(env.ds.requests.length, n, 'the downstream saw a refused request');
  return r;
}

test('allowed tools/call and non-tool methods pass', T, async () => {
  for (const body of [call('list_issues', 1), call('get_file', 2), { jsonrpc: '2.0', id: 3, method: 'tools/list' },
    { jsonrpc: '2.0', id: 4, method: 'initialize', params: { protocolVersion: '2025-06-18' } }]) {
    const r = await env.mcp('/mcp', { token: reader.access_token, body });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.id, body.id);
  }
  const notif = await env.mcp('/mcp', { token: reader.access_token, body: { jsonrpc: '2.0', method: 'notifications/initialized' } });
  assert.equal(notif.status, 202);
  const w = await env.mcp('/mcp', { token: writer.access_token, body: call('delete_repo', 9) });
  assert.equal(w.status, 200, 'repo:write allows "*"');
});

test('a forbidden tools/call: 403 insufficient_scope with the step-up scope, never forwarded', T, async () => {
  const r = await refused({ token: reader.access_token, body: call('delete_repo', 5) });
  assert.equal(r.status, 403, r.text);
  const c = parseChallenge(r.headers.get('www-authenticate'));
  assert.equal(c.scheme, 'Bearer');
  assert.equal(c.params.error, 'insufficient_scope');
  assert.equal(c.params.scope, 'repo:read repo:write');
  assert.equal(c.params.resource_metadata, `${env.url}/.well-known/oauth-protected-resource/mcp`);
  // The same through the SSE accept header and on a sub-path.
  const r2 = await refused({ token: reader.access_token, body: call('close_issue', 6), headers: { accept: 'application/json, text/event-stream' } }, '/mcp/sub');
  assert.equal(r2.status, 403);
  assert.equal(parseChallenge(r2.headers.get('www-authenticate')).params.scope, 'repo:read repo:write');
});

test('a batch mixing allowed and forbidden calls is refused whole', T, async () => {
  const mixed = [call('list_issues', 1), { jsonrpc: '2.0', id: 2, method: 'tools/list' }, call('delete_repo', 3)];
  const r = await refused({ token: reader.access_token, body: mixed });
  assert.equal(r.status, 403, r.text);
  assert.equal(parseChallenge(r.headers.get('www-authenticate')).params.error, 'insufficient_scope');
  const forbiddenFirst = [call('delete_repo', 1), call('list_issues', 2)];
  assert.equal((await refused({ token: reader.access_token, body: forbiddenFirst })).status, 403);
  const ok = await env.mcp('/mcp', { token: reader.access_token, body: [call('list_issues', 1), call('get_file', 2)] });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json.map((x) => x.id), [1, 2]);
});

test('bodies the policy cannot read: 400, never forwarded', T, async () => {
  const bad = [
    ['not json', 'this is not json', 'application/json'],
    ['empty', '', 'application/json'],
    ['scalar', '42', 'application/json'],
    ['string', '"tools/call"', 'application/json'],
    ['empty batch', '[]', 'application/json'],
    ['batch with a non-object', `[${JSON.stringify(call('list_issues'))}, 7]`, 'application/json'],
    ['truncated', JSON.stringify(call('list_issues')).slice(0, -3), 'application/json'],
    ['tools/call without a name', JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: {} }), 'application/json'],
    ['tool name not a string', JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: ['delete_repo'] } }), 'application/json'],
    // Duplicate keys: another parser downstream could take the last name.
    ['duplicate name', '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_issues","name":"delete_repo"}}', 'application/json'],
    ['duplicate method', '{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"delete_repo"}}', 'application/json'],
  ];
  for (const [what, body, ct] of bad) {
    const r = await refused({ token: reader.access_token, body, headers: { 'content-type': ct } });
    assert.equal(r.status, 400, `${what}: ${r.status} ${r.text}`);
    assert.equal(r.json?.jsonrpc, '2.0', `${what}: JSON-RPC error body`);
  }
});

test('Mcp-Method / Mcp-Name headers must agree with the body', T, async () => {
  const disagree = [
    [{ 'mcp-method': 'tools/list' }, call('delete_repo', 1)],
    [{ 'mcp-method': 'tools/call', 'mcp-name': 'list_issues' }, call('delete_repo', 2)],
    [{ 'mcp-name': 'list_issues' }, call('get_file', 3)],
    [{ 'mcp-method': 'tools/call' }, { jsonrpc: '2.0', id: 4, method: 'tools/list' }],
  ];
  for (const [headers, body] of disagree) {
    const r = await refused({ token: writer.access_token, body, headers });
    assert.equal(r.status, 400, `${JSON.stringify(headers)}: ${r.status}`);
  }
  // A second Mcp-Name must not ride along unchecked to a header-routing downstream.
  const n = env.ds.requests.length;
  const dup = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: JSON.stringify(call('get_file', 6)),
    headers: [['Authorization', `Bearer ${reader.access_token}`], ['Content-Type', 'application/json'],
      ['Mcp-Method', 'tools/call'], ['Mcp-Name', 'get_file'], ['Mcp-Name', 'delete_repo']],
  });
  const d = env.ds.requests[n];
  if (d) {
    const names = d.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1].toLowerCase() === 'mcp-name');
    assert.ok(!names.includes('delete_repo'), `an unchecked Mcp-Name reached the downstream: ${JSON.stringify(names)} (client got ${dup.status})`);
  } else {
    assert.equal(dup.status, 400);
  }
  const agree = await env.mcp('/mcp', { token: reader.access_token, body: call('get_file', 5), headers: { 'mcp-method': 'tools/call', 'mcp-name': 'get_file' } });
  assert.equal(agree.status, 200, agree.text);
  assert.equal(env.ds.requests.at(-1).headers['mcp-name'], 'get_file');
});

test('bodies over the 1 MiB proxy limit: 413, never forwarded', T, async () => {
  const pad = 'x'.repeat(1024 * 1024 + 16);
  const big = JSON.stringify(call('list_issues', 1, { pad }));
  const r = await refused({ token: reader.access_token, body: big });
  assert.equal(r.status, 413);
  // Chunked (no Content-Length): refused with 411 whatever its size.
  const small = JSON.stringify(call('list_issues', 3));
  const n = env.ds.requests.length;
  const chunked = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: `${(Buffer.byteLength(small)).toString(16)}\r\n${small}\r\n0\r\n\r\n`,
    headers: [['Authorization', `Bearer ${reader.access_token}`], ['Content-Type', 'application/json'],
      ['Transfer-Encoding', 'chunked']],
  });
  assert.equal(chunked.status, 411);
  assert.equal(env.ds.requests.length, n);
  // Just under the limit passes whole.
  const fit = JSON.stringify(call('list_issues', 2, { pad: 'y'.repeat(1024 * 1024 - 200) }));
  const ok = await env.mcp('/mcp', { token: reader.access_token, body: fit, headers: { 'content-type': 'application/json' } });
  assert.equal(ok.status, 200, ok.text.slice(0, 200));
  assert.equal(env.ds.requests.at(-1).body.length, fit.length);
});

test('the policy holds for every method that carries a body', T, async () => {
  // A forbidden tools/call must not reach the downstream by changing the verb.
  const leaks = [];
  for (const method of ['PUT', 'PATCH', 'DELETE']) {
    const n = env.ds.requests.length;
    const r = await env.mcp('/mcp', { method, token: reader.access_token, body: call('delete_repo', 1) });
    if (env.ds.requests.length !== n) leaks.push(`${method}: forwarded (client got ${r.status})`);
  }
  assert.deepEqual(leaks, []);
});

test('tools/call is audited as tool.called, with no token in audit_events', T, async () => {
  const r = await env.mcp('/mcp', { token: reader.access_token, body: call('get_file', 77, { path: 'README.md' }) });
  assert.equal(r.status, 200);
  const grant = await env.grantOf(reader.access_token);
  // The audit row is written when the request completes.
  let rows = '';
  for (let i = 0; i < 50 && !rows; i++) {
    rows = await env.psql(`SELECT event, client_id, grant_id, detail->>'tool', detail->>'status', detail->>'outcome' FROM audit_events WHERE event = 'tool.called' AND detail->>'tool' = 'get_file' AND grant_id = '${grant}'`);
    if (!rows) await new Promise((res) => setTimeout(res, 100));
  }
  assert.ok(rows, 'a tool.called row');
  const [event, clientId, g, tool, status, outcome] = rows.split('\n')[0].split('|');
  assert.deepEqual([event, clientId, g, tool, status, outcome], ['tool.called', reader.clientId, grant, 'get_file', '200', 'ok']);
  // A batch audits each tool.
  const countSql = `SELECT count(*) FROM audit_events WHERE event = 'tool.called' AND grant_id = '${grant}' AND detail->>'tool' IN ('list_issues', 'get_file')`;
  // Tool audit records are written in batches (within 200 ms): let earlier
  // calls' records land before counting.
  await new Promise((res) => setTimeout(res, 500));
  const c0 = Number(await env.psql(countSql));
  const b = await env.mcp('/mcp', { token: reader.access_token, body: [call('list_issues', 1), call('get_file', 2)] });
  assert.equal(b.status, 200);
  let c1 = c0;
  for (let i = 0; i < 50 && c1 < c0 + 2; i++) {
    await new Promise((res) => setTimeout(res, 50));
    c1 = Number(await env.psql(countSql));
  }
  assert.equal(c1, c0 + 2, 'one tool.called row per call of the batch');
  // No token values anywhere in the audit trail.
  const dump = await env.psql('SELECT row_to_json(a)::text FROM audit_events a');
  assert.ok(dump.length > 0);
  for (const s of secrets) assert.ok(!dump.includes(s), 'a broker token in audit_events');
  assert.ok(!/mcpb_(at|rt|ac)_/.test(dump), 'a broker token in audit_events');
  assert.ok(!/gh[ora]_[A-Za-z0-9_-]{10}|ghcode_/.test(dump), 'an upstream token in audit_events');
  for (const t of env.ds.requests.map((d) => d.headers.authorization).filter(Boolean))
    assert.ok(!dump.includes(t.slice(7)), 'the injected upstream token in audit_events');
});
