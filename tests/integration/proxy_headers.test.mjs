// Proxy: what the downstream receives (credential injection, stripping of
// the client's token, cookies, spoofed identity and hop-by-hop headers,
// pass-through of the MCP headers, path and query) and what the client gets
// back. Real binary, real PostgreSQL, fake GitHub IdP, fake downstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, defaultResource, call, rawRequest, CLIENT_ID } from '../lib/proxy_setup.mjs';

let env, alice, aliceCustom, bob;
const T = { timeout: 20000 };
const secrets = [];

before(async () => {
  env = await startProxyEnv({
    prefix: 'proxy_hdr',
    resources: (ds) => [
      // x-hop-secret is allowed by config, yet the downstream names it in
      // Connection: hop-by-hop wins.
      defaultResource(ds, { response_headers: ['X-End-To-End', 'x-hop-secret'] }),
      {
        path: '/custom', upstream: 'gh', downstream: `${ds.url}/custom-base`,
        identity_headers: false,
        inject: { header: 'X-Upstream-Token', value: 'token {upstream_token}; v=1' },
      },
    ],
  });
  alice = await env.token({ scope: 'repo:read' });
  aliceCustom = await env.token({ resource: '/custom' });
  bob = await env.token({ scope: 'repo:read', login: 'bob' });
  for (const t of [alice, aliceCustom, bob]) secrets.push(t.access_token, t.refresh_token);
}, { timeout: 40000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

const GHO = /^gho_[A-Za-z0-9_-]{43}$/;

function lastRequest() { return env.ds.requests.at(-1); }

test('the upstream token is injected; the client token, cookies, spoofed identity and hop-by-hop headers are not forwarded', T, async () => {
  await env.openSession(alice.access_token, 'sess-hdr-alice');
  const n = env.ds.requests.length;
  const body = JSON.stringify(call('list_issues', 41, { repo: 'o/r' }));
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp/sub/path?a=1&b=two%20words&flag', body,
    headers: [
      ['Authorization', `Bearer ${alice.access_token}`],
      ['Content-Type', 'application/json'],
      ['Accept', 'application/json, text/event-stream'],
      ['Mcp-Session-Id', 'sess-hdr-alice'],
      ['MCP-Protocol-Version', '2025-06-18'],
      ['Last-Event-ID', 'ev-7'],
      ['Cookie', 'mcpb_session=abc; other=1'],
      ['X-MCP-User', 'gh:9999'], ['X-MCP-Client', 'evil-client'], ['X-MCP-Scopes', 'repo:write admin'],
      ['Connection', 'close, X-Drop-Me'], ['X-Drop-Me', 'hop'],
      ['Keep-Alive', 'timeout=5'], ['TE', 'trailers'], ['Upgrade', 'websocket'],
      ['Proxy-Authorization', 'Basic Zm9vOmJhcg=='],
      ['X-Custom-End-To-End', 'kept'],
    ],
  });
  assert.equal(r.status, 200, r.body);
  assert.equal(JSON.parse(r.body).id, 41);
  assert.equal(env.ds.requests.length, n + 1, 'exactly one downstream request');
  const d = lastRequest();
  const h = d.headers;
  // Injection: the user's GitHub token, never the broker's own token.
  assert.match(h.authorization ?? '', /^Bearer gho_/);
  assert.match(h.authorization.slice(7), GHO);
  const raw = d.rawHeaders.join('\n');
  assert.ok(!raw.includes('mcpb_'), 'no mcpb_ token in any downstream header');
  assert.ok(!d.body.includes('mcpb_'));
  assert.equal(d.rawHeaders.filter((x) => x.toLowerCase() === 'authorization').length, 1);
  // Stripped.
  assert.equal(h.cookie, undefined, 'Cookie stripped');
  for (const k of ['keep-alive', 'te', 'upgrade', 'proxy-authorization', 'x-drop-me']) assert.equal(h[k], undefined, `${k} dropped`);
  assert.ok(!/x-drop-me|close/i.test(h.connection ?? ''), `Connection not forwarded as sent: ${h.connection}`);
  // The broker's own identity headers replace the spoofed ones.
  assert.equal(h['x-mcp-user'], 'gh:1001');
  assert.equal(h['x-mcp-client'], CLIENT_ID);
  assert.equal(h['x-mcp-scopes'], 'repo:read');
  for (const k of ['X-MCP-User', 'X-MCP-Client', 'X-MCP-Scopes'])
    assert.equal(d.rawHeaders.filter((x) => x.toLowerCase() === k.toLowerCase()).length, 1, `one ${k}`);
  // Passed through.
  assert.equal(h['mcp-session-id'], 'sess-hdr-alice');
  assert.equal(h['mcp-protocol-version'], '2025-06-18');
  assert.equal(h['last-event-id'], 'ev-7');
  assert.equal(h.accept, 'application/json, text/event-stream');
  assert.equal(h['content-type'], 'application/json');
  assert.equal(h['x-custom-end-to-end'], 'kept');
  // Method, path suffix, query string and body.
  assert.equal(d.method, 'POST');
  assert.equal(d.path, '/mcp/sub/path');
  assert.deepEqual(d.query, { a: '1', b: 'two words', flag: '' });
  assert.equal(d.body, body);
});

test('GET and DELETE pass through with the MCP headers; each user gets their own upstream token', T, async () => {
  await env.openSession(alice.access_token, 'sess-g');
  const g = await env.mcp('/mcp?x=1', {
    method: 'GET', token: alice.access_token,
    headers: { accept: 'text/event-stream', 'mcp-session-id': 'sess-g', 'last-event-id': 'ev-3', 'mcp-protocol-version': '2025-06-18' },
  });
  assert.equal(g.status, 200, g.text);
  const dg = lastRequest();
  assert.equal(dg.method, 'GET');
  assert.equal(dg.path, '/mcp');
  assert.deepEqual(dg.query, { x: '1' });
  assert.equal(dg.headers['last-event-id'], 'ev-3');
  assert.equal(dg.headers.accept, 'text/event-stream');
  const aliceUpstream = dg.headers.authorization;

  const del = await env.mcp('/mcp', { method: 'DELETE', token: alice.access_token, headers: { 'mcp-session-id': 'sess-g' } });
  assert.equal(del.status, 200, del.text);
  const dd = lastRequest();
  assert.equal(dd.method, 'DELETE');
  assert.equal(dd.headers['mcp-session-id'], 'sess-g');
  assert.equal(dd.headers.authorization, aliceUpstream, 'the same upstream token for the same grant');

  const b = await env.mcp('/mcp', { token: bob.access_token, body: call('get_file', 2) });
  assert.equal(b.status, 200, b.text);
  const db = lastRequest();
  assert.equal(db.headers['x-mcp-user'], 'gh:1002');
  assert.match(db.headers.authorization.slice(7), GHO);
  assert.notEqual(db.headers.authorization, aliceUpstream, "bob's upstream token is not alice's");
});

test('inject template and identity_headers=false: custom header, no Authorization, no X-MCP-*', T, async () => {
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/custom/deeper?q=1', body: JSON.stringify(call('anything', 5)),
    headers: [
      ['Authorization', `Bearer ${aliceCustom.access_token}`], ['Content-Type', 'application/json'],
      ['X-Upstream-Token', 'token spoofed; v=1'], ['X-MCP-User', 'gh:9999'], ['X-MCP-Scopes', 'everything'],
    ],
  });
  assert.equal(r.status, 200, r.body);
  const d = lastRequest();
  assert.equal(d.path, '/custom-base/deeper');
  assert.deepEqual(d.query, { q: '1' });
  assert.equal(d.rawHeaders.filter((x) => x.toLowerCase() === 'x-upstream-token').length, 1, 'one injected header');
  const m = /^token (gho_[A-Za-z0-9_-]{43}); v=1$/.exec(d.headers['x-upstream-token'] ?? '');
  assert.ok(m, `template applied: ${d.headers['x-upstream-token']}`);
  assert.equal(d.headers.authorization, undefined, "the client's Authorization is stripped and none injected");
  for (const k of ['x-mcp-user', 'x-mcp-client', 'x-mcp-scopes']) assert.equal(d.headers[k], undefined, `${k} absent`);
  assert.ok(!d.rawHeaders.join('\n').includes('mcpb_'));
});

test('response: allowed downstream headers reach the client, hop-by-hop ones (and those named in Connection) do not', T, async () => {
  const s = await env.mcp('/mcp', { token: alice.access_token, body: { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }, headers: { 'x-fake-mode': 'session', 'x-fake-session-id': 'sess-resp-1' } });
  assert.equal(s.status, 200);
  assert.equal(s.headers.get('mcp-session-id'), 'sess-resp-1');
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: JSON.stringify(call('list_issues', 3)),
    headers: [['Authorization', `Bearer ${alice.access_token}`], ['Content-Type', 'application/json'], ['X-Fake-Mode', 'headers']],
  });
  assert.equal(r.status, 200, r.body);
  assert.equal(r.headers['x-end-to-end'], 'passes');
  assert.equal(r.headers['keep-alive'], undefined, 'Keep-Alive dropped');
  assert.equal(r.headers['x-hop-secret'], undefined, 'a header the downstream named in Connection is hop-by-hop (RFC 9110 7.6.1)');
});

test('the path suffix cannot climb out of the downstream base path', T, async () => {
  // The downstream is .../mcp: whatever the client sends, the upstream token
  // may only travel to paths under it (a refusal with 400/404 is fine too).
  const attempts = ['/mcp/../admin', '/mcp/%2e%2e/admin', '/mcp/..%2Fadmin', '/mcp/sub/%2E%2E/%2E%2E/admin'];
  const escaped = [];
  for (const p of attempts) {
    const n = env.ds.requests.length;
    const r = await rawRequest(env.broker.port, { method: 'GET', path: p, headers: [['Authorization', `Bearer ${alice.access_token}`]] });
    const d = env.ds.requests[n];
    if (d && !(d.path === '/mcp' || d.path.startsWith('/mcp/')))
      escaped.push(`${p} -> downstream ${d.path} (client got ${r.status}, Authorization ${d.headers.authorization ? 'injected' : 'absent'})`);
  }
  assert.deepEqual(escaped, []);
});

test('percent-encoded path characters keep their meaning downstream', T, async () => {
  // %3F is a literal "?" in a path segment, %23 a literal "#", %20 a space:
  // none may turn into a query, a fragment, or a 502.
  const cases = [
    ['/mcp/x%3Fq=1', '/mcp/x%3Fq=1'],
    ['/mcp/a%23frag', '/mcp/a%23frag'],
    ['/mcp/a%20b', '/mcp/a%20b'],
  ];
  const problems = [];
  for (const [p, want] of cases) {
    const n = env.ds.requests.length;
    const r = await rawRequest(env.broker.port, { method: 'GET', path: p, headers: [['Authorization', `Bearer ${alice.access_token}`]] });
    const d = env.ds.requests[n];
    const got = d ? `${d.path}${d.rawQuery}` : `(not forwarded, ${r.status})`;
    if (!d || r.status !== 200 || decodeURIComponent(d.path) !== decodeURIComponent(want) || d.rawQuery !== '')
      problems.push(`${p}: downstream got ${got}, want ${want}`);
  }
  assert.deepEqual(problems, []);
});

test('no token, code or upstream credential in the broker log', T, async () => {
  const log = env.broker.logText();
  for (const s of secrets) assert.ok(!log.includes(s), 'a broker token in the log');
  assert.ok(!/gho_[A-Za-z0-9_-]{20}/.test(log), 'an upstream token in the log');
  assert.ok(!/mcpb_(at|rt|ac)_[A-Za-z0-9_-]{20}/.test(log), 'a broker token in the log');
});
