// Hostile HTTP (DESIGN 3.5), over raw sockets so that every byte is the
// attacker's: message framing (RFC 9112 6: CL+TE, chunked last, duplicate
// or malformed Content-Length), field syntax (RFC 9110 5: token names, no
// whitespace before the colon, no control bytes), authentication before
// the body is read, the node-wide cap on buffered bodies, X-Forwarded-For
// across all its lines, the response-header allow-list and session
// binding per downstream. Each rule: the answer, the connection closed
// where the framing can't be trusted, nothing reaching the downstream, the
// node still healthy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { startProxyEnv, defaultResource, call, rawRequest, rawExchange, stalledConnections } from '../lib/proxy_setup.mjs';
import { sleep } from '../lib/harness.mjs';

let env, alice, bob, aliceB;
const T = { timeout: 30000 };
const BUDGET = 256 * 1024;

before(async () => {
  env = await startProxyEnv({
    prefix: 'hostile_http',
    http: { trusted_proxies: ['127.0.0.1/32'], max_body_bytes_in_flight: BUDGET },
    resources: (ds) => [
      defaultResource(ds),
      // A second resource path in front of the same downstream.
      defaultResource(ds, { path: '/mcp-b' }),
    ],
  });
  alice = await env.token({ scope: 'repo:read' });
  bob = await env.token({ scope: 'repo:read', login: 'bob' });
  aliceB = await env.token({ scope: 'repo:read', resource: '/mcp-b' });
}, { timeout: 60000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

/** Raw bytes to the broker on a fresh connection (tests/lib/proxy_setup.mjs). */
const exchange = (bytes, opts) => rawExchange(env.broker.port, bytes, opts);

const body = (name, id = 1) => JSON.stringify(call(name, id));
const host = () => `Host: 127.0.0.1:${env.broker.port}\r\n`;

async function refused(what, bytes, { status = 400, closed = true } = {}) {
  const n = env.ds.requests.length;
  const r = await exchange(bytes);
  // Where libmicrohttpd answers itself (a missing Host), 0.9.75 writes the
  // head of its error twice before the body: still one answer, then close.
  const heads = r.statuses.length === 2 && /<html>/.test(r.text) ? r.statuses.slice(1) : r.statuses;
  assert.deepEqual(heads, [status], `${what}: one ${status} answer, got ${JSON.stringify(r.statuses)}\n${r.text.slice(0, 300)}`);
  if (closed) assert.ok(r.closed, `${what}: the connection is closed after the answer`);
  assert.equal(env.ds.requests.length, n, `${what}: nothing reached the downstream`);
  return r;
}

test('framing: Content-Length with Transfer-Encoding is refused and closed; the hidden request never runs', T, async () => {
  const hidden = `GET /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n\r\n`;
  const chunk = `0\r\n\r\n${hidden}`;
  for (const te of ['chunked', 'Chunked', ' chunked ']) {
    await refused(`CL + TE "${te}"`, `POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${chunk.length}\r\nTransfer-Encoding:${te}\r\n\r\n${chunk}`);
  }
  // TE before CL, and on the OAuth endpoints too (every route).
  await refused('TE then CL on /token', `POST /token HTTP/1.1\r\n${host()}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n` +
    `Content-Type: application/x-www-form-urlencoded\r\n\r\n0\r\n\r\n${hidden}`);
  await env.assertHealthy('CL + TE');
});

test('framing: a Transfer-Encoding whose last coding is not chunked is 400 (no hang); other codings 501', T, async () => {
  const start = Date.now();
  for (const te of ['chunked, identity', 'identity', 'gzip', 'chunked;ext=1', 'chunked, chunked', 'chunked,', ',chunked', 'x\u0001, chunked']) {
    await refused(`TE "${te}"`, `POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
      `Content-Type: application/json\r\nTransfer-Encoding: ${te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
  }
  assert.ok(Date.now() - start < 10000, 'each answered at once');
  await refused('TE "gzip, chunked"', `POST /mcp HTTP/1.1\r\n${host()}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, { status: 501 });
  // A well-formed chunked upload: 411, a Content-Length is required (every
  // route; libmicrohttpd reads chunk lines leniently).
  for (const path of ['/mcp', '/token', '/register']) {
    await refused(`chunked on ${path}`, `POST ${path} HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
      `Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, { status: 411 });
  }
  // Two lines are one list (RFC 9110 5.3): "chunked" then "identity".
  await refused('TE on two lines', `POST /mcp HTTP/1.1\r\n${host()}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n`);
  await refused('TE in HTTP/1.0', `POST /token HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
  await env.assertHealthy('TE');
});

test('framing: duplicate or malformed Content-Length is 400 and closed', T, async () => {
  const b = body('list_issues');
  for (const [what, cl] of [['two differing', [b.length, b.length + 5]], ['two equal', [b.length, b.length]]]) {
    await refused(`CL ${what}`, `POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
      `Content-Type: application/json\r\n${cl.map((v) => `Content-Length: ${v}\r\n`).join('')}\r\n${b}`);
  }
  for (const v of [`+${b.length}`, `${b.length}, ${b.length}`, `0x${b.length.toString(16)}`, `${b.length}a`, '-1', '99999999999999999999999']) {
    const n = env.ds.requests.length;
    const r = await exchange(`POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${v}\r\n\r\n${b}`);
    // libmicrohttpd answers some of these itself (400; 0.9.75 writes the
    // head of that answer twice): only 4xx, the body never read as a second
    // request, the connection closed, nothing forwarded.
    assert.ok(r.statuses.length >= 1 && r.statuses.every((st) => st >= 400 && st < 500), `CL "${v}": ${JSON.stringify(r.statuses)}`);
    assert.ok(!/"jsonrpc"|"status":"ok"/.test(r.text), `CL "${v}": the body was answered as a request`);
    assert.ok(r.closed, `CL "${v}": closed`);
    assert.equal(env.ds.requests.length, n, `CL "${v}" reached the downstream`);
  }
  await env.assertHealthy('Content-Length');
});

test('field syntax: whitespace before the colon, empty names and control bytes are 400 on every route', T, async () => {
  const b = body('list_issues');
  for (const [name, value] of [
    ['X-MCP-User\t', 'github:victim'], ['Authorization\t', 'Bearer attacker'], ['X-Forwarded-For\t', '6.6.6.6'],
    ['X-MCP-User ', 'github:victim'], ['Content-Length ', '0'], ['Transfer-Encoding\t', 'chunked'],
    ['X\u0001Y', '1'], ['X(Y)', '1'], ['X@Y', '1'], ['X"Y', '1'], ['X[Y', '1'],
  ]) {
    await refused(`header name ${JSON.stringify(name)}`, `POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
      `Content-Type: application/json\r\n${name}: ${value}\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
  }
  for (const v of ['a\u0001b', 'a\u007fb', 'a\rb', 'a\u001bb']) {
    const r = await exchange(`GET /healthz HTTP/1.1\r\n${host()}X-Thing: ${v}\r\n\r\n`);
    assert.equal(r.statuses.length, 1, JSON.stringify(v));
    assert.equal(r.statuses[0], 400, `value ${JSON.stringify(v)} on /healthz`);
  }
  // A NUL inside a value is cut there by libmicrohttpd's parser: the broker
  // judges and forwards the same cut value, never the bytes after it.
  const n = env.ds.requests.length;
  const r = await exchange(`POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
    `Content-Type: application/json\r\nX-Thing: a\u0000X-MCP-User: github:victim\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
  assert.equal(r.statuses.length, 1, r.text.slice(0, 200));
  const d = env.ds.requests[n];
  if (d) {
    assert.equal(d.headers['x-mcp-user'] === 'github:victim', false, 'the bytes after a NUL became a header');
    assert.ok(!d.rawHeaders.join('\n').includes('victim'), 'the bytes after a NUL reached the downstream');
  }
  await refused('name with tab on /token', `POST /token HTTP/1.1\r\n${host()}Content-Type\t: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n`);
  await env.assertHealthy('field syntax');
});

test('field syntax: obs-fold is refused (never forwarded as a line of its own)', T, async () => {
  const b = body('list_issues');
  const n = env.ds.requests.length;
  const r = await exchange(`POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\n` +
    `Content-Type: application/json\r\nX-Note: first\r\n X-MCP-User: github:victim\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
  assert.deepEqual(r.statuses, [400], r.text.slice(0, 300));
  assert.equal(env.ds.requests.length, n);
});

test('Host: missing (HTTP/1.1) or given twice is 400', T, async () => {
  await refused('no Host', `GET /healthz HTTP/1.1\r\n\r\n`, { closed: false });
  await refused('two Hosts', `GET /healthz HTTP/1.1\r\n${host()}Host: evil.example\r\n\r\n`, { closed: false });
});

test('authentication before the body: 401 while the body has not been sent, and the connection closes', T, async () => {
  for (const auth of ['', `Authorization: Bearer mcpb_at_${'A'.repeat(43)}\r\n`, 'Authorization: Basic Zm9vOmJhcg==\r\n']) {
    const started = Date.now();
    // Headers only: a 1 MB body is announced and never sent.
    const r = await exchange(`POST /mcp HTTP/1.1\r\n${host()}${auth}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n`, { waitMs: 3000 });
    assert.deepEqual(r.statuses, [401], `${auth || 'no token'}: ${r.text.slice(0, 200)}`);
    assert.ok(r.closed, 'closed: the unread body is not taken for a request');
    assert.ok(Date.now() - started < 2500, 'answered without waiting for the body');
    assert.match(r.text, /WWW-Authenticate: Bearer resource_metadata=/i);
  }
  // Expect: 100-continue: the 401 comes instead of "100 Continue".
  const r = await exchange(`POST /mcp HTTP/1.1\r\n${host()}Content-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n`);
  assert.deepEqual(r.statuses, [401], r.text.slice(0, 200));
  // A refused media type with a valid token: 415 before the body too.
  const m = await exchange(`POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\nContent-Type: application/json; charset=utf-7\r\nContent-Length: 1000000\r\n\r\n`, { waitMs: 3000 });
  assert.deepEqual(m.statuses, [415], m.text.slice(0, 200));
  assert.ok(m.closed);
});

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

/** n uploads announcing 1 MB that send their headers and `sent` bytes, then stall. */
const stalledUploads = (n, headers, sent) => stalledConnections(env.broker.port, n, Buffer.concat([
  Buffer.from(`POST /mcp HTTP/1.1\r\n${host()}${headers}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n`),
  Buffer.alloc(sent, 0x20)]), { settleMs: 500 });

test('stalled uploads: unauthenticated ones cost nothing, authenticated ones are capped node-wide as bytes arrive (503 + Retry-After)', { timeout: 60000 }, async () => {
  const pid = env.broker.proc.pid;
  const base = rssKiB(pid);
  const anon = await stalledUploads(200, '', 900 * 1024);
  const anonRss = rssKiB(pid);
  // Each is answered 401 and closed at once. Whether the 401 itself reaches
  // this client depends on TCP: closing a socket with unread data resets it
  // (RFC 9293 3.6), and a reset may discard an answer not read yet; the
  // broker's side is the same either way.
  const answered = anon.filter((s) => /^HTTP\/1\.1 401 /.test(s.answer)).length;
  const closed = anon.filter((s) => s.destroyed || s.readableEnded || s.closedByPeer).length;
  for (const s of anon) s.destroy();
  console.log(`RSS with 200 stalled unauthenticated 1 MB uploads (900 KiB sent): ${base} -> ${anonRss} KiB (+${anonRss - base}); closed by the broker ${closed}/200, 401 read before the reset ${answered}`);
  assert.equal(closed, 200, 'every unauthenticated upload was answered and closed without its body being waited for');
  assert.ok(anon.every((s) => s.answer === '' || /^HTTP\/1\.1 401 /.test(s.answer)), 'nothing but 401');
  assert.ok(anonRss - base < 30 * 1024, `RSS grew ${anonRss - base} KiB for 200 unauthenticated uploads`);

  // Authenticated: bytes are charged to the node's budget as they arrive.
  // 20 uploads each send 64 KiB of an announced 1 MB against a 256 KiB
  // budget: at most four hold their bytes; the others are refused, with
  // 503 + Retry-After at their headers or by a close mid-body.
  await sleep(300);
  const before2 = rssKiB(pid);
  const authd = await stalledUploads(20, `Authorization: Bearer ${alice.access_token}\r\n`, 64 * 1024);
  try {
    const refused503 = authd.filter((s) => /^HTTP\/1\.1 503 /.test(s.answer));
    const cut = authd.filter((s) => s.answer === '' && s.closedByPeer);
    const holding = authd.filter((s) => s.answer === '' && !s.closedByPeer);
    const authRss = rssKiB(pid);
    console.log(`20 stalled authenticated uploads (64 KiB sent each) with a ${BUDGET / 1024} KiB budget: ${holding.length} held, ${refused503.length} answered 503, ${cut.length} closed mid-body; RSS ${before2} -> ${authRss} KiB`);
    assert.ok(holding.length <= BUDGET / (64 * 1024), `${holding.length} uploads hold more than the budget`);
    assert.equal(holding.length + refused503.length + cut.length, 20);
    assert.ok(refused503.every((s) => /Retry-After: 1/i.test(s.answer)));
    // Meanwhile a small authenticated call is refused too (the budget is
    // spent) or passes: never a hang, never a crash.
    const mid = await env.mcp('/mcp', { token: alice.access_token, body: call('list_issues', 76), timeoutMs: 5000 });
    assert.ok([200, 503].includes(mid.status), `during the crowd: ${mid.status}`);
  } finally {
    for (const s of authd) s.destroy();
  }
  // Headers alone hold nothing: 50 authenticated uploads that announce a
  // length and stall do not stop the next call.
  await sleep(500);
  const heads = await stalledUploads(50, `Authorization: Bearer ${alice.access_token}\r\n`, 0);
  try {
    const ok = await env.mcp('/mcp', { token: alice.access_token, body: call('list_issues', 77) });
    assert.equal(ok.status, 200, 'the budget is released when requests end, and announcements hold nothing');
  } finally {
    for (const s of heads) s.destroy();
  }
  await sleep(300);
  await env.assertHealthy('stalled uploads');
  // Every byte charged was given back (no request holds any now).
  const m = await env.mcp('/metrics', { method: 'GET' });
  assert.match(m.text, /^mcpb_http_body_bytes_in_flight 0$/m, 'the node-wide body budget is back to 0');
});

test('X-Forwarded-For is read across all its lines: a client-forged first line does not win', T, async () => {
  const n = env.ds.requests.length;
  // The client forges "6.6.6.6"; the (trusted, loopback) load balancer
  // appends its own line naming the real client 203.0.113.9.
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: body('list_issues', 5),
    headers: [['Authorization', `Bearer ${alice.access_token}`], ['Content-Type', 'application/json'],
      ['X-Forwarded-For', '6.6.6.6'], ['X-Forwarded-For', '203.0.113.9']],
  });
  assert.equal(r.status, 200, r.body);
  const d = env.ds.requests[n];
  assert.equal(d.headers['x-forwarded-for'], '203.0.113.9', 'the right-most untrusted entry across lines');
});

test('response headers pass by allow-list: never Set-Cookie, CORS, HSTS, CSP, Location or WWW-Authenticate from the downstream', T, async () => {
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: body('list_issues', 6),
    headers: [['Authorization', `Bearer ${alice.access_token}`], ['Content-Type', 'application/json'], ['X-Fake-Mode', 'hostile-headers']],
  });
  assert.equal(r.status, 200, r.body);
  for (const h of ['set-cookie', 'access-control-allow-origin', 'access-control-allow-credentials', 'strict-transport-security',
    'content-security-policy', 'www-authenticate', 'location', 'x-powered-by', 'x-end-to-end']) {
    assert.equal(r.headers[h], undefined, `${h} must not pass: ${r.headers[h]}`);
  }
  assert.equal(r.headers['cache-control'], 'no-cache');
  assert.equal(r.headers.etag, '"v1"');
  assert.equal(r.headers['mcp-protocol-version'], '2025-11-25');
  assert.match(r.headers['content-type'], /^application\/json/);
});

const init = (id) => ({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } });

test('sessions are bound per downstream and fail closed: unknown ids are 404, another path to the same downstream is checked too', T, async () => {
  // Alice opens a session through /mcp-b; bob presents it through /mcp
  // (another resource path, same downstream).
  const S = `sess-pd-${Date.now()}`;
  const o = await env.mcp('/mcp-b', { token: aliceB.access_token, body: init(1), headers: { 'x-fake-mode': 'session', 'x-fake-session-id': S } });
  assert.equal(o.status, 200, o.text);
  assert.equal(await env.psql(`SELECT count(*) FROM mcp_session_bindings WHERE session_hash = sha256('${S}'::bytea)`), '1');
  let n = env.ds.requests.length;
  const b = await env.mcp('/mcp', { token: bob.access_token, body: call('list_issues', 2), headers: { 'mcp-session-id': S } });
  assert.equal(b.status, 404, `bob through the other path: ${b.status}`);
  assert.equal(env.ds.requests.length, n);
  // Alice herself through /mcp: her session (same user, same downstream).
  const a = await env.mcp('/mcp', { token: alice.access_token, body: call('list_issues', 3), headers: { 'mcp-session-id': S } });
  assert.equal(a.status, 200, a.text);

  // An id no grant of this user opened is refused, not forwarded unbound.
  n = env.ds.requests.length;
  for (const method of ['POST', 'GET', 'DELETE']) {
    const u = await env.mcp('/mcp', { method, token: bob.access_token, body: method === 'POST' ? call('list_issues', 4) : undefined, headers: { 'mcp-session-id': `sess-never-issued-${method}` } });
    assert.equal(u.status, 404, `${method} with an unknown session id: ${u.status}`);
  }
  assert.equal(env.ds.requests.length, n, 'unknown session ids never reach the downstream');

  // A binding removed (housekeeping, a database restore): the id is
  // refused from then on, never forwarded as unbound.
  await env.psql(`DELETE FROM mcp_session_bindings WHERE session_hash = sha256('${S}'::bytea)`);
  const S2 = `sess-gone-${Date.now()}`;
  const o2 = await env.mcp('/mcp', { token: alice.access_token, body: init(5), headers: { 'x-fake-mode': 'session', 'x-fake-session-id': S2 } });
  assert.equal(o2.status, 200);
  await env.psql(`DELETE FROM mcp_session_bindings WHERE session_hash = sha256('${S2}'::bytea)`);
  n = env.ds.requests.length;
  const g = await env.mcp('/mcp', { token: bob.access_token, body: call('list_issues', 6), headers: { 'mcp-session-id': S2 } });
  assert.equal(g.status, 404);
  assert.equal(env.ds.requests.length, n);
  // An initialize may carry a stale id: it opens a new session.
  const re = await env.mcp('/mcp', { token: bob.access_token, body: init(7), headers: { 'mcp-session-id': 'sess-stale', 'x-fake-mode': 'session' } });
  assert.equal(re.status, 200);
  await env.assertHealthy('sessions');
});

test('headers that would make the downstream re-decide who the client is, the URL or the method are stripped', T, async () => {
  const forged = ['X-Real-IP', 'X-Client-IP', 'True-Client-IP', 'CF-Connecting-IP', 'X-Cluster-Client-IP', 'X-Forwarded-Port',
    'X-Forwarded-Server', 'X-Forwarded-Prefix', 'X-Forwarded-Uri', 'X-Original-URL', 'X-Rewrite-URL', 'X-Original-URI',
    'X-Original-Method', 'X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override', 'X-Forwarded-Host',
    'X-Forwarded-Proto', 'Forwarded', 'X-MCP-User', 'X-MCP-Client', 'X-MCP-Scopes', 'X-MCP-Grant'];
  const n = env.ds.requests.length;
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: body('list_issues', 8),
    headers: [['Authorization', `Bearer ${alice.access_token}`], ['Content-Type', 'application/json'],
      ...forged.map((h) => [h, h.includes('Method') ? 'DELETE' : h.includes('UR') ? '/admin' : 'forged-6.6.6.6'])],
  });
  assert.equal(r.status, 200, r.body);
  const d = env.ds.requests[n];
  const raw = d.rawHeaders.join('\n');
  for (const h of forged) {
    const v = d.headers[h.toLowerCase()];
    assert.ok(v === undefined || !/forged|DELETE|\/admin/.test(v), `${h} reached the downstream as ${v}`);
  }
  assert.ok(!/forged-6\.6\.6\.6|\/admin/.test(raw), 'no forged value reached the downstream');
  assert.equal(d.method, 'POST');
});

test('a batch with more tools/call than the audit records is refused whole (no unaudited call)', T, async () => {
  const n = env.ds.requests.length;
  const batch = Array.from({ length: 65 }, (_, i) => call('list_issues', i + 1));
  const r = await env.mcp('/mcp', { token: alice.access_token, body: batch });
  assert.equal(r.status, 400, r.text);
  assert.equal(env.ds.requests.length, n);
  const ok = await env.mcp('/mcp', { token: alice.access_token, body: batch.slice(0, 64) });
  assert.equal(ok.status, 200, ok.text.slice(0, 200));
});
