// Red-team review of the hostile-input hardening (issue 10, DESIGN 3.5):
// one test per finding, each reproduced against the real binary over raw
// sockets. Every test failed on the tree it was written against; each says
// what a downstream (or a load balancer, or another user) would see.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startProxyEnv, defaultResource, call, rawRequest, rawExchange, stalledConnections } from '../lib/proxy_setup.mjs';
import { sleep } from '../lib/harness.mjs';

const T = { timeout: 30000 };
const BUDGET = 256 * 1024; // http.max_body_bytes_in_flight for this file

// A downstream that answers every request with whatever `rawAnswer` holds,
// byte for byte (node:http cannot write a malformed answer).
let rawAnswer = '';
const rawDs = net.createServer((s) => {
  let got = Buffer.alloc(0);
  s.on('error', () => {});
  s.on('data', (d) => {
    got = Buffer.concat([got, d]);
    const i = got.indexOf('\r\n\r\n');
    if (i < 0) return;
    const m = /content-length: *(\d+)/i.exec(got.subarray(0, i).toString('latin1'));
    if (got.length - i - 4 >= (m ? Number(m[1]) : 0)) s.end(rawAnswer);
  });
});

let env, alice, bob, rawTok;

before(async () => {
  await new Promise((res) => rawDs.listen(0, '127.0.0.1', res));
  env = await startProxyEnv({
    prefix: 'redteam',
    http: { trusted_proxies: ['127.0.0.1/32'], max_body_bytes_in_flight: BUDGET },
    resources: (ds) => [
      defaultResource(ds, { identity_headers: true }),
      defaultResource(ds, { path: '/raw', downstream: `http://127.0.0.1:${rawDs.address().port}/mcp` }),
    ],
  });
  alice = await env.token({ scope: 'repo:read' });
  bob = await env.token({ scope: 'repo:read', login: 'bob' });
  rawTok = await env.token({ scope: 'repo:read', resource: '/raw' });
}, { timeout: 60000 });
after(async () => {
  await env?.close();
  rawDs.close();
}, { timeout: 30000 });

/** Raw bytes to the broker on a fresh connection (tests/lib/proxy_setup.mjs). */
const exchange = (bytes, opts) => rawExchange(env.broker.port, bytes, opts);

const host = () => `Host: 127.0.0.1:${env.broker.port}\r\n`;
const post = (token, b, extra = '') => `POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${token}\r\n` +
  `Content-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(b)}\r\nConnection: close\r\n\r\n${b}`;
const init = (id) => JSON.stringify({ jsonrpc: '2.0', id, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } });
const bigCall = (id, kib) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'list_issues', arguments: { pad: 'x'.repeat(kib * 1024) } } });

test('request headers: underscore aliases and X-Forwarded-*/X-MCP-*/auth-proxy identity headers never reach the downstream', T, async () => {
  // WSGI/CGI servers (wsgiref, gunicorn < 22, waitress < 1.4...) map both
  // "X-MCP-User" and "X_MCP_User" to HTTP_X_MCP_USER, so an alias is the
  // broker's identity header (or, for Mcp_Session_Id, a session the
  // broker never checked). Measured behind this broker with Python's
  // wsgiref: HTTP_X_MCP_USER="github:victim,gh:1003" (the forged value
  // first), HTTP_MCP_SESSION_ID="alices-session", HTTP_X_FORWARDED_FOR=
  // "6.6.6.6,127.0.0.1". The other names are what auth proxies and
  // frameworks read as "who the client is / where it came from".
  const forged = ['X_MCP_User', 'X_MCP_Client', 'X_MCP_Scopes', 'Mcp_Session_Id', 'X_Forwarded_For', 'X_Forwarded_Proto',
    'X_Real_IP', 'X-MCP-Subject', 'X-MCP-Upstream', 'X-Forwarded-User', 'X-Forwarded-Email', 'X-Forwarded-Access-Token',
    'X-Forwarded-Groups', 'X-Forwarded-Ssl', 'X-Forwarded-Scheme', 'X-Auth-Request-User', 'X-Auth-Request-Email',
    'Remote-User', 'X-Remote-User', 'Client-IP'];
  const n = env.ds.requests.length;
  const r = await exchange(post(alice.access_token, JSON.stringify(call('list_issues', 1)), forged.map((h) => `${h}: forged-${h}\r\n`).join('')));
  const reached = env.ds.requests.slice(n);
  // Refusing the request (400) is as good as stripping the headers.
  if (r.statuses[0] !== 200) {
    assert.equal(reached.length, 0, 'refused, and nothing reached the downstream');
    return;
  }
  assert.equal(reached.length, 1);
  const d = reached[0];
  const leaked = [];
  for (let i = 0; i < d.rawHeaders.length; i += 2)
    if (/forged-/.test(d.rawHeaders[i + 1])) leaked.push(d.rawHeaders[i]);
  assert.deepEqual(leaked, [], `forged headers reached the downstream: ${leaked.join(', ')}`);
});

test('session binding: an initialize carrying another user\'s session id (plus trailing whitespace) never reaches the downstream with it', T, async () => {
  // libmicrohttpd 0.9.75 keeps trailing SP/HTAB in a field value; the
  // broker hashes "S " (bound to nobody: the initialize exception lets it
  // through) while Node, Express and every other parser trim it to "S",
  // alice's session.
  const S = `sess-rt-alice-${Date.now()}`;
  const o = await env.mcp('/mcp', { token: alice.access_token, body: JSON.parse(init(1)), headers: { 'x-fake-mode': 'session', 'x-fake-session-id': S } });
  assert.equal(o.status, 200, o.text);
  assert.equal(o.headers.get('mcp-session-id'), S);
  const n = env.ds.requests.length;
  for (const ws of [' ', '\t', '  ', ' \t'])
    await exchange(post(bob.access_token, init(2), `Mcp-Session-Id: ${S}${ws}\r\n`));
  const carried = env.ds.requests.slice(n).filter((d) => (d.headers['mcp-session-id'] ?? '').trim() === S);
  assert.equal(carried.length, 0, `bob's initialize reached the downstream in alice's session ${carried.length} times`);
  await env.assertHealthy('session whitespace');
});

/** n connections that send only the head of an upload, then stall. */
const stalled = (n, head) => stalledConnections(env.broker.port, n, head);

test('body budget: headers-only uploads to unauthenticated endpoints do not starve authenticated bodies', T, async () => {
  // Each announces 16 KiB (the OAuth endpoints' limit) and sends nothing;
  // the budget is charged from Content-Length before a byte arrives and
  // before anybody is authenticated. 16 such sockets hold 256 KiB here; at
  // the defaults (64 MiB) 4096 do, and nothing caps them per address.
  const socks = await stalled(16, `POST /token HTTP/1.1\r\n${host()}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 16384\r\n\r\n`);
  try {
    const r = await exchange(post(alice.access_token, JSON.stringify(call('list_issues', 3))));
    assert.deepEqual(r.statuses, [200], `an authenticated 93-byte call while anonymous sockets idle: ${r.text.slice(0, 200)}`);
  } finally {
    for (const s of socks) s.destroy();
    await sleep(500); // their reservations go back when the broker sees them close
  }
});

test('body budget: a request body stops counting once the downstream answered (not for the whole stream)', T, async () => {
  // Alice's 200 KiB tool call streams its progress for ~3 s. Her body was
  // forwarded long ago (and is only kept for a replay after a downstream
  // 401), yet it keeps its share of the node's budget until the stream
  // ends: every other user's body is refused meanwhile.
  const [s] = await stalled(1, post(alice.access_token, bigCall(4, 200), 'X-Fake-Mode: progress\r\nX-Fake-Events: 20\r\nX-Fake-Delay: 150\r\n'));
  try {
    await sleep(500);
    assert.match(s.answer, /^HTTP\/1\.1 200 /, 'alice\'s stream is running');
    const r = await exchange(post(bob.access_token, bigCall(5, 100)));
    assert.deepEqual(r.statuses, [200], `bob's 100 KiB call during alice's stream: ${r.text.slice(0, 200)}`);
  } finally {
    s.destroy();
  }
});

test('X-Forwarded-For: an oversized client-written part does not make the client the load balancer', T, async () => {
  // The client writes 2.5 KiB of X-Forwarded-For; the trusted load
  // balancer appends its own line naming the real client. The joined
  // value overflows the broker's 2 KiB buffer and the broker falls back to
  // the peer: the client becomes the load balancer (rate limits, audit,
  // and the X-Forwarded-For the downstream gets).
  const n = env.ds.requests.length;
  const r = await rawRequest(env.broker.port, {
    method: 'POST', path: '/mcp', body: JSON.stringify(call('list_issues', 6)),
    headers: [['Authorization', `Bearer ${alice.access_token}`], ['Content-Type', 'application/json'],
      ['X-Forwarded-For', `${'10.9.8.7, '.repeat(250)}6.6.6.6`], ['X-Forwarded-For', '203.0.113.9']],
  });
  const reached = env.ds.requests.slice(n);
  if (r.status !== 200) {
    assert.ok(r.status >= 400 && r.status < 500, `refused: ${r.status}`);
    assert.equal(reached.length, 0);
    return;
  }
  assert.equal(reached.length, 1);
  assert.equal(reached[0].headers['x-forwarded-for'], '203.0.113.9', 'the client is the right-most untrusted entry, not the load balancer');
});

test('chunked framing: bare LF and bare CR in chunk lines are refused (RFC 9112 7.1), never forwarded', T, async () => {
  // libmicrohttpd 0.9.75 (even with MHD_OPTION_STRICT_FOR_CLIENT) takes a
  // bare LF as the end of a chunk line and lets a bare CR through in a
  // chunk extension: a front end that frames these bytes the RFC way reads
  // a different body (the "funky chunks" desync class).
  const b = JSON.stringify(call('list_issues', 7));
  const hx = b.length.toString(16);
  const head = `POST /mcp HTTP/1.1\r\n${host()}Authorization: Bearer ${alice.access_token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
  const cases = {
    'chunk-size line ended by a bare LF': `${hx}\n${b}\r\n0\r\n\r\n`,
    'chunk data ended by a bare LF': `${hx}\r\n${b}\n0\r\n\r\n`,
    'bare CR inside a chunk extension': `${hx};a\rb\r\n${b}\r\n0\r\n\r\n`,
  };
  for (const [what, chunks] of Object.entries(cases)) {
    const n = env.ds.requests.length;
    const r = await exchange(head + chunks, { waitMs: 1000 });
    assert.equal(env.ds.requests.length, n, `${what}: reached the downstream (${JSON.stringify(r.statuses)})`);
    assert.ok(r.statuses.length === 1 && r.statuses[0] >= 400, `${what}: one refusal, got ${JSON.stringify(r.statuses)}`);
  }
});

test('a downstream 1xx is never relayed as the final answer (502)', T, async () => {
  // A client (or the load balancer in front) that sees "101 Switching
  // Protocols" may treat the connection as a tunnel from then on.
  // What follows the 101 is the downstream's to choose: here, an answer.
  rawAnswer = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n' +
    'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}';
  const r = await exchange(`POST /raw HTTP/1.1\r\n${host()}Authorization: Bearer ${rawTok.access_token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${JSON.stringify(call('list_issues', 8)).length}\r\nConnection: close\r\n\r\n${JSON.stringify(call('list_issues', 8))}`, { waitMs: 3000 });
  assert.ok(!r.statuses.some((s) => s < 200), `a 1xx reached the client: ${JSON.stringify(r.statuses)}`);
  assert.deepEqual(r.statuses, [502], r.text.slice(0, 300));
  await env.assertHealthy('downstream 1xx');
});
