// Fake downstream MCP server for the proxy integration tests.
//
// A plain node:http server (no MCP SDK, node built-ins only) that records
// every request it receives and answers according to a mode. The mode of a
// request is, in order: its `X-Fake-Mode` header, its `mode` query parameter,
// then the server-wide mode set with setMode() (default `echo`).
//
// Modes:
//   echo      JSON-RPC echo: application/json answering the request's id
//             (a batch gets an array, notifications only get 202); non-POST
//             requests get 200 {"method": ...}.
//   sse       text/event-stream with N events (query `events` or header
//             X-Fake-Events, default 3) spaced by D ms (query `delay` or header
//             X-Fake-Delay, default 0), each with `id: <n>`; then the stream ends.
//             The send time of every event is recorded (rec.events). With
//             X-Fake-Session-Id the stream also assigns that Mcp-Session-Id.
//   idle      text/event-stream headers, then nothing: an idle open GET stream.
//   hang      accepts the request and never answers.
//   reset     text/event-stream, one event, then destroys the socket.
//   500       500 with a JSON-RPC error body.
//   401       401 with the downstream's own Bearer challenge (it refuses the
//             injected credential).
//   drip      the echo answer written one byte every D ms (default 50).
//   session   echo plus `Mcp-Session-Id` (header X-Fake-Session-Id, or random).
//   big       application/json answer of about S bytes (query `size` or header
//             X-Fake-Size, default 8 MiB) written as fast as the socket takes
//             it (honouring backpressure); rec.bigSha256 is its SHA-256.
//   progress  a tool call streaming its progress: text/event-stream with N
//             `notifications/progress` events (query `events`/X-Fake-Events,
//             default 3) spaced by D ms (`delay`/X-Fake-Delay, default 0), then
//             the JSON-RPC result for the request's id; rec.events as for sse.
//   headers   echo plus response headers that must not reach the client
//             (hop-by-hop ones and one named in Connection).
//
// startDownstream({port}) -> { port, url, requests, setMode(m), reset(),
//   abortedCount, onAbort(fn), waitForRequests(n, ms), waitForAbort(pred, ms), close() }
// Each request record: { seq, method, path, query, headers, body, mode,
//   receivedAt, events:[{id, at}], finished, aborted, closedAt }.
// `aborted` is set when the connection closed before the answer was complete
// (for `hang`/`idle`/`sse`: the broker gave the request up).
import http from 'node:http';
import { randomBytes, createHash } from 'node:crypto';

const MODES = new Set(['echo', 'sse', 'idle', 'hang', 'reset', '500', '401', 'drip', 'session', 'headers', 'hostile-headers', 'big', 'progress']);

function jsonRpcAnswer(body) {
  let msg;
  try { msg = JSON.parse(body); } catch { return null; }
  const one = (m) => (m && typeof m === 'object' && 'id' in m && m.method !== undefined
    ? { jsonrpc: '2.0', id: m.id, result: { echo: { method: m.method, params: m.params ?? null } } }
    : null);
  if (Array.isArray(msg)) {
    const out = msg.map(one).filter(Boolean);
    return out.length ? out : null;
  }
  return one(msg);
}

function firstId(body) {
  try {
    const m = JSON.parse(body);
    if (Array.isArray(m)) return m.find((x) => x && 'id' in x)?.id ?? null;
    return m && 'id' in m ? m.id : null;
  } catch { return null; }
}

export async function startDownstream({ port = 0, host = '127.0.0.1', mode = 'echo' } = {}) {
  let serverMode = mode;
  const requests = [];
  const sockets = new Set();
  const timers = new Set();
  const abortHooks = new Set();
  const requestHooks = new Set();
  let abortedCount = 0;
  let seq = 0;
  let connections = 0; // TCP connections accepted so far

  const later = (fn, ms) => {
    const t = setTimeout(() => { timers.delete(t); fn(); }, ms);
    timers.add(t);
    return t;
  };

  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://downstream');
    const rec = {
      seq: ++seq,
      method: req.method,
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      rawQuery: u.search,
      headers: { ...req.headers },
      rawHeaders: req.rawHeaders.slice(),
      body: '',
      mode: null,
      receivedAt: Date.now(),
      events: [],
      finished: false,
      aborted: false,
      closedAt: null,
    };
    requests.push(rec);
    const pick = (name, hdr, dflt) => {
      const v = req.headers[hdr] ?? u.searchParams.get(name);
      const n = v === undefined || v === null ? NaN : Number(v);
      return Number.isFinite(n) ? n : dflt;
    };
    const m = String(req.headers['x-fake-mode'] ?? u.searchParams.get('mode') ?? serverMode);
    rec.mode = MODES.has(m) ? m : 'echo';

    res.on('finish', () => { rec.finished = true; });
    res.on('close', () => {
      rec.closedAt = Date.now();
      if (!rec.finished && !rec.aborted) {
        rec.aborted = true;
        abortedCount++;
        for (const fn of abortHooks) { try { fn(rec); } catch { /* a test hook */ } }
      }
    });

    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('error', () => {});
    req.on('end', () => {
      rec.body = Buffer.concat(chunks).toString('utf8');
      for (const fn of requestHooks) { try { fn(rec); } catch { /* a test hook */ } }
      handle(rec, req, res, pick);
    });
  });

  function sendJson(res, status, obj, extra = {}) {
    const text = obj === null ? '' : JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
    res.end(text);
  }

  function echo(rec, res, extra = {}) {
    if (rec.method !== 'POST') return sendJson(res, 200, { method: rec.method, path: rec.path }, extra);
    const a = jsonRpcAnswer(rec.body);
    if (!a) {
      res.writeHead(202, extra);
      return res.end();
    }
    return sendJson(res, 200, a, extra);
  }

  function sseHead(res, extra = {}) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...extra });
    res.flushHeaders();
  }

  function sseEvent(rec, res, n, id) {
    const data = JSON.stringify({ jsonrpc: '2.0', id, result: { seq: n } });
    res.write(`id: ev-${n}\nevent: message\ndata: ${data}\n\n`);
    rec.events.push({ id: `ev-${n}`, at: Date.now() });
  }

  function handle(rec, req, res, pick) {
    const id = firstId(rec.body);
    switch (rec.mode) {
      case 'echo':
        return echo(rec, res);
      case 'session':
        return echo(rec, res, { 'mcp-session-id': req.headers['x-fake-session-id'] || `sess-${randomBytes(12).toString('hex')}` });
      case 'headers':
        res.setHeader('connection', 'keep-alive, x-hop-secret');
        res.setHeader('keep-alive', 'timeout=5');
        res.setHeader('x-hop-secret', 'must-not-pass');
        res.setHeader('x-end-to-end', 'passes');
        return echo(rec, res);
      case 'hostile-headers':
        // Fields a downstream must not be able to set on the broker's origin.
        res.setHeader('set-cookie', ['__Host-mcpb_browser=evil; Path=/; Secure', 'other=1']);
        res.setHeader('access-control-allow-origin', '*');
        res.setHeader('access-control-allow-credentials', 'true');
        res.setHeader('strict-transport-security', 'max-age=0');
        res.setHeader('content-security-policy', "default-src *");
        res.setHeader('www-authenticate', 'Basic realm="downstream"');
        res.setHeader('location', 'https://evil.example/');
        res.setHeader('x-powered-by', 'downstream');
        res.setHeader('x-end-to-end', 'passes-if-configured');
        res.setHeader('cache-control', 'no-cache');
        res.setHeader('etag', '"v1"');
        res.setHeader('mcp-protocol-version', '2025-11-25');
        return echo(rec, res);
      case '500':
        return sendJson(res, 500, { jsonrpc: '2.0', id, error: { code: -32603, message: 'downstream exploded' } });
      case '401':
        return sendJson(res, 401, { error: 'bad credentials' },
          { 'www-authenticate': 'Bearer realm="downstream", error="invalid_token"' });
      case 'hang':
        return; // never answers; close() destroys the socket
      case 'idle':
        return sseHead(res);
      case 'progress': {
        const n = pick('events', 'x-fake-events', 3);
        const delay = pick('delay', 'x-fake-delay', 0);
        let token = null;
        try { token = JSON.parse(rec.body)?.params?._meta?.progressToken ?? null; } catch { /* not JSON */ }
        sseHead(res);
        let i = 0;
        const tick = () => {
          if (res.destroyed) return;
          if (++i <= n) {
            const data = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: token, progress: i, total: n } });
            res.write(`id: ev-${i}\nevent: message\ndata: ${data}\n\n`);
            rec.events.push({ id: `ev-${i}`, at: Date.now() });
            later(tick, delay);
            return;
          }
          const data = JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'done' }] } });
          res.end(`id: ev-${i}\nevent: message\ndata: ${data}\n\n`);
          rec.events.push({ id: `ev-${i}`, at: Date.now() });
        };
        later(tick, delay);
        return;
      }
      case 'sse': {
        const n = pick('events', 'x-fake-events', 3);
        const delay = pick('delay', 'x-fake-delay', 0);
        sseHead(res, req.headers['x-fake-session-id'] ? { 'mcp-session-id': req.headers['x-fake-session-id'] } : {});
        let i = 0;
        const tick = () => {
          if (res.destroyed) return;
          sseEvent(rec, res, ++i, id);
          if (i >= n) res.end();
          else later(tick, delay);
        };
        later(tick, delay);
        return;
      }
      case 'reset':
        sseHead(res);
        sseEvent(rec, res, 1, id);
        later(() => {
          rec.resetAt = Date.now();
          if (typeof req.socket.resetAndDestroy === 'function') req.socket.resetAndDestroy();
          else req.socket.destroy();
        }, pick('delay', 'x-fake-delay', 100));
        return;
      case 'drip': {
        const a = rec.method === 'POST' ? jsonRpcAnswer(rec.body) : { method: rec.method };
        const text = JSON.stringify(a ?? {});
        const delay = pick('delay', 'x-fake-delay', 50);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.flushHeaders();
        let i = 0;
        const tick = () => {
          if (res.destroyed) return;
          res.write(text[i++]);
          if (i >= text.length) res.end();
          else later(tick, delay);
        };
        later(tick, delay);
        return;
      }
      case 'big': {
        const size = pick('size', 'x-fake-size', 8 * 1024 * 1024);
        const head = `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"blob":"`;
        const tail = '"}}';
        const hash = createHash('sha256').update(head);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(head);
        let left = size;
        let k = 0;
        const pump = () => {
          while (left > 0 && !res.destroyed) {
            const n = Math.min(left, 64 * 1024);
            // Varying content so that a reordered or repeated chunk changes the hash.
            const chunk = Buffer.alloc(n, 97 + (k++ % 26));
            hash.update(chunk);
            left -= n;
            if (!res.write(chunk)) return res.once('drain', pump);
          }
          if (!res.destroyed) {
            hash.update(tail);
            rec.bigSha256 = hash.digest('hex');
            res.end(tail);
          }
        };
        return pump();
      }
      default:
        return echo(rec, res);
    }
  }

  server.on('connection', (s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.requestTimeout = 0;
  server.headersTimeout = 60000;
  server.keepAliveTimeout = 5000;

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const actual = server.address().port;

  const waitUntil = (pred, ms, what) => new Promise((resolve, reject) => {
    const end = Date.now() + ms;
    const poll = () => {
      const v = pred();
      if (v) return resolve(v);
      if (Date.now() > end) return reject(new Error(`downstream: timed out waiting for ${what}`));
      setTimeout(poll, 10).unref();
    };
    poll();
  });

  return {
    port: actual,
    url: `http://${host}:${actual}`,
    server,
    requests,
    get abortedCount() { return abortedCount; },
    /** TCP connections accepted so far (keep-alive reuse shows here). */
    get connections() { return connections; },
    get mode() { return serverMode; },
    setMode(m) {
      if (!MODES.has(m)) throw new Error(`downstream: unknown mode ${m}`);
      serverMode = m;
    },
    /** Forgets recorded requests (counters too). */
    reset() { requests.length = 0; abortedCount = 0; serverMode = mode; },
    /** fn(rec) runs when a request's connection closes before its answer completed. */
    onAbort(fn) { abortHooks.add(fn); return () => abortHooks.delete(fn); },
    /** fn(rec) runs when a request (with its body) has arrived. */
    onRequest(fn) { requestHooks.add(fn); return () => requestHooks.delete(fn); },
    waitForRequests(n, ms = 5000) { return waitUntil(() => requests.length >= n && requests, ms, `${n} requests`); },
    waitForAbort(pred = () => true, ms = 5000) {
      return waitUntil(() => requests.find((r) => r.aborted && pred(r)), ms, 'an aborted request');
    },
    /** Open (unanswered or streaming) requests. */
    openCount() { return requests.filter((r) => r.closedAt === null).length; },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
