// Shared setup of the proxy integration tests: the fake GitHub IdP, a fake
// downstream MCP server, a fresh database and a broker whose resources point
// at the downstream; tokens come from the full double OAuth flow.
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { startIdp } from '../fakes/idp.mjs';
import { startDownstream } from '../fakes/downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, http, psql } from './harness.mjs';
import { fullFlow } from './flow.mjs';

export const CLIENT_ID = 'proxy-test';
export const REDIRECT_URI = 'http://127.0.0.1:33418/callback';

export function githubUpstream(idp) {
  return {
    preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret',
    authorize_url: `${idp.base}/github/login/oauth/authorize`,
    token_url: `${idp.base}/github/login/oauth/access_token`,
    userinfo_url: `${idp.base}/github/api/user`,
    revoke_url: `${idp.base}/github/api/applications/{client_id}/grant`,
    scopes: ['read:user'],
  };
}

/**
 * Starts idp + downstream + database + broker. resources(ds) returns the
 * resources array (ds.url is the downstream base). Returns an env object with
 * token(opts), mcp(path, opts), assertHealthy(what), psql(sql), grantOf(token), close().
 */
export async function startProxyEnv({ resources, http: httpCfg = {}, prefix = 'proxy' } = {}) {
  const idp = await startIdp({ port: 0, log: false });
  let ds, broker, db, cfg;
  try {
    ds = await startDownstream({ port: 0 });
    db = await createDatabase(prefix);
    const port = await freePort();
    const res = resources ? resources(ds) : [defaultResource(ds)];
    cfg = baseConfig({
      port, databaseUrl: db, extra: {
        upstreams: { gh: githubUpstream(idp) },
        clients: [{ client_id: CLIENT_ID, client_name: 'Proxy tests', redirect_uris: ['http://127.0.0.1/callback'] }],
        limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 },
        resources: res,
      },
    });
    cfg.http = { ...cfg.http, ...httpCfg };
    broker = await startBroker(cfg);
  } catch (e) {
    // Nothing may keep the test process alive after a failed setup.
    await ds?.close();
    await idp.close();
    throw e;
  }
  const env = {
    idp, ds, db, broker, cfg, url: broker.url,
    /** Access token via the full flow (the test is the browser). */
    async token({ scope, login = 'alice', resource = '/mcp' } = {}) {
      return fullFlow(broker.url, {
        clientId: CLIENT_ID, redirectUri: REDIRECT_URI, scope, login,
        resource: resource.startsWith('http') ? resource : `${broker.url}${resource}`,
      });
    },
    /** A request to the broker; never throws on HTTP errors. */
    mcp(path, { token, method = 'POST', body, headers = {}, timeoutMs = 10000 } = {}) {
      const h = { ...headers };
      if (token) h.authorization = `Bearer ${token}`;
      if (body !== undefined && typeof body !== 'string') {
        body = JSON.stringify(body);
        if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
      }
      return http(`${broker.url}${path}`, { method, headers: h, body, timeoutMs });
    },
    /**
     * Opens a downstream session with the given id for token's user (an
     * initialize the fake downstream answers with that Mcp-Session-Id), so
     * that the broker binds it: a session id nobody opened is refused.
     */
    async openSession(token, sid, path = '/mcp') {
      const init = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } };
      const r = await env.mcp(path, { token, body: init, headers: { 'x-fake-mode': 'session', 'x-fake-session-id': sid } });
      assert.equal(r.status, 200, `opening session ${sid}: ${r.status} ${r.text}`);
      assert.equal(r.headers.get('mcp-session-id'), sid);
      return sid;
    },
    /** Asserts /healthz and /readyz answer 200. */
    async assertHealthy(what = '') {
      const h = await http(`${broker.url}/healthz`, { timeoutMs: 3000 });
      assert.equal(h.status, 200, `/healthz after ${what}`);
      const r = await http(`${broker.url}/readyz`, { timeoutMs: 3000 });
      assert.equal(r.status, 200, `/readyz after ${what}`);
    },
    psql: (sql) => psql(db, sql),
    /** The grant id of an access token (tokens store SHA-256 hashes only). */
    async grantOf(token) {
      return psql(db, `SELECT grant_id FROM tokens WHERE token_hash = '\\x${sha256hex(token)}'::bytea`);
    },
    /** Downstream first (ends every proxied stream), then the broker (SIGKILL after 15 s). */
    async close() {
      await ds.close();
      const t = setTimeout(() => broker.proc.kill('SIGKILL'), 15000);
      await broker.stop('SIGTERM');
      clearTimeout(t);
      await idp.close();
    },
  };
  return env;
}

export const sha256hex = (s) => createHash('sha256').update(s).digest('hex');

export function defaultResource(ds, extra = {}) {
  return {
    path: '/mcp', upstream: 'gh', downstream: `${ds.url}/mcp`,
    scopes: { 'repo:read': ['list_issues', 'get_file'], 'repo:write': ['*'] },
    default_scopes: ['repo:read'],
    ...extra,
  };
}

export const call = (name, id = 1, args = {}) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });

/** Parses a WWW-Authenticate Bearer challenge into {scheme, params}. */
export function parseChallenge(h) {
  assert.ok(h, 'WWW-Authenticate present');
  const m = /^(\S+)\s+(.*)$/.exec(h);
  assert.ok(m, `challenge shape: ${h}`);
  const params = {};
  for (const p of m[2].matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) params[p[1]] = p[2];
  return { scheme: m[1], params };
}

/**
 * Reads an SSE response body incrementally: returns { events: [{id, data, at}],
 * done: Promise<{ok, error}> }; onEvent(ev) runs as each event arrives.
 */
export function readSse(res, onEvent = () => {}) {
  const events = [];
  const decoder = new TextDecoder();
  let buf = '';
  const done = (async () => {
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { at: Date.now(), id: null, data: '' };
          for (const line of block.split('\n')) {
            if (line.startsWith('id:')) ev.id = line.slice(3).trim();
            else if (line.startsWith('data:')) ev.data += line.slice(5).trim();
          }
          events.push(ev);
          onEvent(ev);
        }
      }
      return { ok: true };
    } catch (error) {
      return { ok: false, error };
    }
  })();
  return { events, done };
}

/**
 * One raw HTTP/1.1 request over a fresh TCP connection (fetch refuses
 * hop-by-hop headers such as Connection, Keep-Alive, TE and Upgrade).
 * headers: array of [name, value]; `Connection: close` is added unless a
 * Connection header is given (then make it include "close").
 * Resolves {status, headers (lower-cased name -> value), body}.
 */
export function rawRequest(port, { method = 'GET', path = '/', headers = [], body = '', timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('rawRequest timed out')); }, timeoutMs);
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('data', (d) => chunks.push(d));
    sock.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks).toString('latin1');
      const i = all.indexOf('\r\n\r\n');
      if (i < 0) return reject(new Error(`rawRequest: no response head in ${JSON.stringify(all.slice(0, 200))}`));
      const lines = all.slice(0, i).split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const h = {};
      for (const l of lines.slice(1)) {
        const c = l.indexOf(':');
        const k = l.slice(0, c).trim().toLowerCase();
        const v = l.slice(c + 1).trim();
        h[k] = h[k] === undefined ? v : `${h[k]}, ${v}`;
      }
      let rest = all.slice(i + 4);
      if (/chunked/i.test(h['transfer-encoding'] || '')) {
        let out = '';
        for (;;) {
          const j = rest.indexOf('\r\n');
          if (j < 0) break;
          const n = parseInt(rest.slice(0, j), 16);
          if (!n) break;
          out += rest.slice(j + 2, j + 2 + n);
          rest = rest.slice(j + 2 + n + 2);
        }
        rest = out;
      }
      resolve({ status, headers: h, body: Buffer.from(rest, 'latin1').toString('utf8') });
    });
    const b = Buffer.from(body);
    const hs = [...headers];
    if (!hs.some(([k]) => k.toLowerCase() === 'connection')) hs.push(['Connection', 'close']);
    if (b.length && !hs.some(([k]) => ['content-length', 'transfer-encoding'].includes(k.toLowerCase()))) hs.push(['Content-Length', String(b.length)]);
    const head = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, ...hs.map(([k, v]) => `${k}: ${v}`)].join('\r\n');
    sock.write(head + '\r\n\r\n');
    if (b.length) sock.write(b);
  });
}

/**
 * Sends raw bytes to 127.0.0.1:port on a fresh connection and collects
 * everything until the server closes or waitMs pass in silence. Resolves
 * {text (latin1), closed, statuses (every "HTTP/1.x NNN" seen)}.
 */
export function rawExchange(port, bytes, { waitMs = 1500 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    let timer;
    let settled = false;
    const done = (closed) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ text, closed, statuses: [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1])) });
    };
    const arm = () => { clearTimeout(timer); timer = setTimeout(() => done(false), waitMs); };
    sock.on('connect', () => { sock.write(bytes); arm(); });
    sock.on('data', (d) => { chunks.push(d); arm(); });
    sock.on('end', () => done(true));
    sock.on('close', () => done(true));
    sock.on('error', (e) => (chunks.length ? done(true) : (settled = true, clearTimeout(timer), reject(e))));
  });
}

/**
 * Opens n connections to 127.0.0.1:port that each write `bytes` (a request
 * head, perhaps part of a body) and then stall; settles for settleMs.
 * Each socket records what came back (.answer) and whether the server
 * closed it (.closedByPeer). The caller destroys them.
 */
export async function stalledConnections(port, n, bytes, { settleMs = 300 } = {}) {
  const socks = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    s.answer = '';
    s.on('data', (d) => { s.answer += d.toString('latin1'); });
    s.on('close', () => { s.closedByPeer = true; });
    await new Promise((res) => s.once('connect', res));
    s.write(bytes);
    socks.push(s);
  }
  await new Promise((r) => setTimeout(r, settleMs));
  return socks;
}
