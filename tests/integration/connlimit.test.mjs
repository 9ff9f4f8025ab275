// Connection limit (http.max_connections): past it a client learns at once
// instead of waiting in the listen backlog. A connection accepted beyond the
// limit gets one 503 + Retry-After: 1 + Connection: close to its request;
// beyond the headroom (64 more) the connection is closed as soon as it is
// accepted. Once the held connections go, the node serves again. Out of
// file descriptors (more connections queued than the process may open),
// the node pauses accepting instead of spinning on a listener that stays
// readable, and accepts again once descriptors are free.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startProxyEnv, rawExchange } from '../lib/proxy_setup.mjs';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BINARY, baseConfig, createDatabase, freePort, http, sleep, startBroker } from '../lib/harness.mjs';

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

/** CPU seconds (user + system) pid has used. */
function cpuSec(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

test('out of descriptors: accepting pauses (no spin), and resumes once they are free', { timeout: 60000 }, async () => {
  const FDS = 160; /* the node's RLIMIT_NOFILE: below the connections queued */
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-fds-'));
  const wrapper = path.join(dir, 'broker.sh');
  writeFileSync(wrapper, `#!/bin/sh\nexec prlimit --nofile=${FDS}:${FDS} -- "${BINARY}" "$@"\n`, { mode: 0o755 });
  const port = await freePort();
  const cfg = baseConfig({ port, databaseUrl: await createDatabase('connlimit_fds'),
    extra: { http: { threads: 2, max_connections: 1000, connection_timeout_s: 60 }, database: { pool_size: 2 } } });
  const b = await startBroker(cfg, { binary: wrapper, dir });
  const held = [];
  try {
    for (let i = 0; i < 2 * FDS; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      held.push(s);
    }
    await sleep(1500); /* the node took what it could; the rest waits in the backlog */
    const c0 = cpuSec(b.proc.pid);
    await sleep(2000);
    const cpu = (cpuSec(b.proc.pid) - c0) / 2;
    assert.ok(cpu < 0.2, `out of descriptors the node used ${(cpu * 100).toFixed(0)} % of a core (a spin is 100 %)`);
  } finally {
    for (const s of held) s.destroy();
  }
  // Free again: served on a new connection within a moment.
  let ok = false;
  for (let i = 0; i < 40 && !ok; i++) {
    const r = await http(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 1000 }).catch(() => null);
    ok = r?.status === 200;
    if (!ok) await sleep(250);
  }
  assert.ok(ok, 'the node accepts again once descriptors are free');
  const m = (await http(`http://127.0.0.1:${port}/metrics`, { timeoutMs: 5000 })).text;
  assert.match(m, /mcpb_http_connections_refused_total\{kind="descriptors"\} [1-9]/,
    m.split('\n').filter((l) => l.includes('refused')).join('\n'));
  assert.ok(b.logs().some((l) => l.includes('"http.connection_limit"') && l.includes('descriptors')), 'logged');
  await b.stop();
});
