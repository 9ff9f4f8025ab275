// Connection limit (http.max_connections): past it a client learns at once
// instead of waiting in the listen backlog. A connection accepted beyond the
// limit gets one 503 + Retry-After: 1 + Connection: close to its request;
// beyond the headroom (64 more) the connection is closed as soon as it is
// accepted. Once the held connections go, the node serves again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startProxyEnv, rawExchange } from '../lib/proxy_setup.mjs';
import { http, sleep } from '../lib/harness.mjs';

const LIMIT = 8;
const HEADROOM = 64; /* HTTP_CONN_HEADROOM in broker/http/http.c */
let env;
before(async () => {
  env = await startProxyEnv({ prefix: 'connlimit', http: { max_connections: LIMIT, connection_timeout_s: 60 } });
}, { timeout: 60000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

/** n connected sockets that send nothing; each records whether the server closed it. */
async function idle(n) {
  const socks = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(env.broker.port, '127.0.0.1');
    s.on('error', () => {});
    s.on('close', () => { s.closedByPeer = true; });
    await new Promise((res, rej) => { s.once('connect', res); s.once('error', rej); });
    socks.push(s);
  }
  await sleep(300); /* accepted by the node */
  return socks;
}

const get = (path) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${env.broker.port}\r\n\r\n`;

test('past max_connections: 503 + Retry-After at once; past the headroom: closed at once; then healthy', { timeout: 60000 }, async () => {
  const held = await idle(LIMIT);
  try {
    assert.ok(held.every((s) => !s.closedByPeer), 'the connections within the limit stay open');

    // The next connection's request: answered within a second, not hung.
    let t0 = Date.now();
    const r = await rawExchange(env.broker.port, get('/healthz'), { waitMs: 3000 });
    const took = Date.now() - t0;
    assert.deepEqual(r.statuses, [503], r.text);
    assert.ok(took < 1500, `answered in ${took} ms`);
    assert.match(r.text, /\r\nRetry-After: 1\r\n/i);
    assert.match(r.text, /\r\nConnection: close\r\n/i);
    assert.ok(r.closed, 'the connection closes after the 503');
    const body = JSON.parse(r.text.slice(r.text.indexOf('\r\n\r\n') + 4));
    assert.deepEqual(body, { error: 'temporarily_unavailable' });

    // Fill the headroom with idle connections (accepted, not answered yet).
    held.push(...await idle(HEADROOM));
    // Beyond it: closed at once, before any byte of an answer.
    t0 = Date.now();
    const s = net.connect(env.broker.port, '127.0.0.1');
    const got = [];
    s.on('data', (d) => got.push(d));
    const outcome = await new Promise((res) => {
      const timer = setTimeout(() => res('open'), 3000);
      s.on('error', () => { clearTimeout(timer); res('closed'); });
      s.on('close', () => { clearTimeout(timer); res('closed'); });
      s.on('connect', () => s.write(get('/healthz')));
    });
    s.destroy();
    assert.equal(outcome, 'closed', 'a connection beyond the headroom is closed');
    assert.ok(Date.now() - t0 < 1500, `closed in ${Date.now() - t0} ms`);
    assert.equal(Buffer.concat(got).length, 0, 'nothing was answered on it');
  } finally {
    for (const s of held) s.destroy();
  }
  await sleep(300); /* the node sees them close */

  // Healthy again: requests on new connections succeed.
  for (let i = 0; i < 3; i++) {
    const r = await rawExchange(env.broker.port, get('/healthz'), { waitMs: 1000 });
    assert.equal(r.statuses[0], 200, r.text);
  }
  await env.assertHealthy('the connection limit');

  // Counted, and one warning line (rate-limited), not one per refusal.
  const m = (await http(`${env.url}/metrics`, { timeoutMs: 5000 })).text;
  assert.match(m, /mcpb_http_connections_refused_total\{kind="503"\} [1-9]/, m.split('\n').filter((l) => l.includes('refused')).join('\n'));
  assert.match(m, /mcpb_http_connections_refused_total\{kind="closed"\} [1-9]/);
  const warns = env.broker.logs().filter((l) => l.includes('"http.connection_limit"'));
  assert.equal(warns.length, 1, warns.join('\n'));
});
