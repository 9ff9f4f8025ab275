// Proxy: streaming. SSE events reach the client as the downstream emits
// them; an idle GET stream stays open; a client disconnect aborts the
// downstream request (streaming, idle, or still waiting for headers); 200
// open streams do not pin the 2 worker threads.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, defaultResource, call, readSse } from '../lib/proxy_setup.mjs';
import { createHash } from 'node:crypto';
import { http, sleep } from '../lib/harness.mjs';
import net from 'node:net';

let env, tok;
const T = { timeout: 30000 };
const clients = new Set(); // AbortControllers still open, aborted in after()

before(async () => {
  env = await startProxyEnv({
    prefix: 'proxy_stream',
    http: { threads: 2 },
    resources: (ds) => [defaultResource(ds, { idle_timeout_ms: 60000 })],
  });
  tok = await env.token({ scope: 'repo:read' });
}, { timeout: 40000 });
after(async () => {
  for (const ac of clients) ac.abort();
  await env?.close();
}, { timeout: 30000 });

function headers(extra = {}) {
  return { authorization: `Bearer ${tok.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...extra };
}

/** Opens a proxied stream; returns {res, ac, sse}. */
async function open(path, { method = 'GET', body, extra } = {}) {
  const ac = new AbortController();
  clients.add(ac);
  const res = await fetch(`${env.url}${path}`, { method, headers: headers(extra), body, signal: ac.signal });
  const sse = readSse(res);
  return { res, ac, sse };
}

test('SSE events arrive as the downstream emits them (no buffering)', T, async () => {
  const t0 = Date.now();
  const { res, sse } = await open('/mcp?mode=sse&events=5&delay=200', { method: 'POST', body: JSON.stringify(call('list_issues', 21)) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  assert.ok(Date.now() - t0 < 1000, 'headers arrive before the first event');
  const end = await sse.done;
  assert.equal(end.ok, true, `clean end: ${end.error}`);
  const sent = env.ds.requests.at(-1).events;
  assert.equal(sent.length, 5);
  assert.deepEqual(sse.events.map((e) => e.id), ['ev-1', 'ev-2', 'ev-3', 'ev-4', 'ev-5']);
  assert.deepEqual(JSON.parse(sse.events[0].data), { jsonrpc: '2.0', id: 21, result: { seq: 1 } });
  // The first event reached the client well before the last was even sent.
  assert.ok(sse.events[0].at < sent[4].at - 500, `first event at +${sse.events[0].at - t0} ms, last sent at +${sent[4].at - t0} ms`);
  for (let i = 0; i < 5; i++)
    assert.ok(sse.events[i].at - sent[i].at < 150, `event ${i + 1} delayed by ${sse.events[i].at - sent[i].at} ms`);
});

test('an idle GET SSE stream stays open', T, async () => {
  await env.openSession(tok.access_token, 'sess-idle');
  const { res, ac, sse } = await open('/mcp?mode=idle', { extra: { 'mcp-session-id': 'sess-idle' } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  let ended = false;
  sse.done.then(() => { ended = true; });
  await sleep(5000);
  assert.equal(ended, false, 'the idle stream was closed');
  assert.equal(env.ds.requests.at(-1).closedAt, null, 'the downstream request is still open');
  // The node answers other requests meanwhile.
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 1) });
  assert.equal(r.status, 200);
  ac.abort();
  clients.delete(ac);
});

async function abortCase(path, { method = 'GET', body, waitHeaders = true } = {}) {
  const n = env.ds.requests.length;
  const ac = new AbortController();
  clients.add(ac);
  const p = fetch(`${env.url}${path}`, { method, headers: headers(), body, signal: ac.signal });
  p.catch(() => {});
  if (waitHeaders) readSse(await p);
  const [rec] = (await env.ds.waitForRequests(n + 1)).slice(n);
  await sleep(500);
  assert.equal(rec.closedAt, null, 'the downstream request was open before the abort');
  const t0 = Date.now();
  ac.abort();
  clients.delete(ac);
  try {
    await env.ds.waitForAbort((r) => r === rec, 3000);
  } catch {
    assert.fail(`the downstream request (${rec.mode}) was still open 3 s after the client disconnected`);
  }
  return rec.closedAt - t0;
}

test('client disconnect aborts the downstream request: streaming SSE', T, async () => {
  const ms = await abortCase('/mcp?mode=sse&events=1000&delay=250', { method: 'POST', body: JSON.stringify(call('list_issues', 2)) });
  assert.ok(ms < 1500, `aborted after ${ms} ms`);
});

test('client disconnect aborts the downstream request: idle GET stream', T, async () => {
  await abortCase('/mcp?mode=idle');
});

test('client disconnect aborts the downstream request: still waiting for headers', T, async () => {
  await abortCase('/mcp?mode=hang', { method: 'POST', body: JSON.stringify(call('list_issues', 3)), waitHeaders: false });
});

test('200 concurrent SSE streams with 2 worker threads; a normal request still answers fast', { timeout: 45000 }, async () => {
  const N = 200;
  const before = env.ds.requests.length;
  const opened = await Promise.all(Array.from({ length: N }, (_, i) => open(`/mcp?mode=idle&n=${i}`)));
  try {
    assert.equal(opened.filter((o) => o.res.status === 200).length, N);
    await env.ds.waitForRequests(before + N);
    const open200 = env.ds.requests.slice(before).filter((r) => r.closedAt === null).length;
    assert.equal(open200, N, 'every stream is open at the downstream');
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 100 + i) });
      const took = Date.now() - t0;
      assert.equal(r.status, 200);
      assert.ok(took < 1000, `a normal request took ${took} ms beside ${N} open streams`);
    }
    const h = await http(`${env.url}/healthz`, { timeoutMs: 2000 });
    assert.equal(h.status, 200);
    // An SSE stream opened now still streams promptly.
    const t0 = Date.now();
    const s = await open('/mcp?mode=sse&events=2&delay=50', { method: 'POST', body: JSON.stringify(call('list_issues', 5)) });
    const end = await s.sse.done;
    assert.equal(end.ok, true);
    assert.equal(s.sse.events.length, 2);
    assert.ok(Date.now() - t0 < 2000);
  } finally {
    for (const o of opened) { o.ac.abort(); clients.delete(o.ac); }
  }
});

// Standalone GET streams and other calls keep separate keep-alive pools to
// the downstream (libcurl 7.88 walks a whole pool each time a transfer
// ends): each pool must still reuse its connections.
test('calls beside open GET streams reuse keep-alive connections, and so do GETs', T, async () => {
  const c0 = env.ds.connections;
  const streams = await Promise.all(Array.from({ length: 5 }, (_, i) => open(`/mcp?mode=idle&pool=${i}`)));
  try {
    assert.equal(streams.filter((o) => o.res.status === 200).length, 5);
    assert.equal(env.ds.connections - c0, 5, 'one downstream connection per open stream');
    const c1 = env.ds.connections;
    for (let i = 0; i < 30; i++) {
      const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 300 + i) });
      assert.equal(r.status, 200);
    }
    // Each of the 2 workers keeps its own keep-alive pools: a client
    // connection that lands on the other worker opens one more, no more.
    assert.ok(env.ds.connections - c1 <= 2, `30 sequential calls opened ${env.ds.connections - c1} downstream connections`);
    // A finished (non-event-stream) GET leaves its connection in the stream
    // pool, where the next GET finds it.
    const before = env.ds.connections;
    for (let i = 0; i < 10; i++) {
      const r = await fetch(`${env.url}/mcp?mode=echo&g=${i}`, { headers: headers({ accept: 'application/json' }) });
      assert.equal(r.status, 200);
      await r.arrayBuffer();
    }
    assert.ok(env.ds.connections - before <= 2, `10 sequential GETs opened ${env.ds.connections - before} downstream connections`);
  } finally {
    for (const o of streams) { o.ac.abort(); clients.delete(o.ac); }
  }
});

test('a large answer to a slow client streams through intact (backpressure)', T, async () => {
  const size = 8 * 1024 * 1024;
  const ac = new AbortController();
  clients.add(ac);
  const res = await fetch(`${env.url}/mcp?mode=big&size=${size}`, { method: 'POST', headers: headers(), body: JSON.stringify(call('list_issues', 31)), signal: ac.signal });
  assert.equal(res.status, 200);
  const hash = createHash('sha256');
  let total = 0;
  // A slow reader: nothing read for a while, then small sips. The broker
  // must hold the downstream back, not drop, repeat or reorder bytes.
  await sleep(500);
  for await (const chunk of res.body) {
    hash.update(chunk);
    total += chunk.length;
    await sleep(1);
  }
  clients.delete(ac);
  const rec = env.ds.requests.at(-1);
  assert.equal(rec.mode, 'big');
  assert.ok(total > size, `received ${total} bytes`);
  assert.equal(hash.digest('hex'), rec.bigSha256, 'the body arrived byte for byte');
});

// An HTTP/1.0 client cannot take chunks: a streamed answer goes to it
// close-delimited, through the response's own (small) block buffer.
test('a large streamed answer reaches an HTTP/1.0 client intact, close-delimited', T, async () => {
  const size = 600 * 1024; // beyond what is held for one write: streamed
  const body = JSON.stringify(call('list_issues', 41));
  const raw = await new Promise((resolve, reject) => {
    const port = Number(new URL(env.url).port);
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('HTTP/1.0 answer timed out')); }, 15000);
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('data', (d) => chunks.push(d));
    sock.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(chunks)); });
    sock.write(`POST /mcp?mode=big&size=${size} HTTP/1.0\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${tok.access_token}\r\n` +
      `Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
  const i = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, i).toString('latin1');
  assert.match(head, /^HTTP\/1\.[01] 200 /);
  assert.doesNotMatch(head, /transfer-encoding/i, 'no chunked encoding toward an HTTP/1.0 client');
  const payload = raw.subarray(i + 4);
  const rec = env.ds.requests.at(-1);
  assert.equal(rec.mode, 'big');
  assert.ok(payload.length > size, `received ${payload.length} bytes`);
  assert.equal(createHash('sha256').update(payload).digest('hex'), rec.bigSha256, 'the body arrived byte for byte');
});
