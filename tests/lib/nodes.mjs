// Several broker nodes sharing one database, keys and public_url (as behind
// a load balancer), a fake IdP and a tiny recording downstream.
import http from 'node:http';
import { startIdp } from '../fakes/idp.mjs';
import { startBroker, createDatabase, freePort, key } from './harness.mjs';

/** A minimal downstream MCP endpoint: answers every request 200 with a
 * JSON-RPC result and records the Authorization header it received. */
export async function startEcho() {
  const seen = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      seen.push({ method: req.method, url: req.url, authorization: req.headers.authorization, headers: req.headers });
      if (req.headers.authorization === 'Bearer reject-me' || (echo.reject && echo.reject(req))) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"error":"invalid_token"}');
        return;
      }
      let id = null;
      try { id = JSON.parse(body).id ?? null; } catch { /* not JSON */ }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id, result: { ok: true } }));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const echo = {
    url: `http://127.0.0.1:${server.address().port}/mcp`,
    seen,
    reject: null,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
  return echo;
}

export function upstreamConfig(idp) {
  return {
    gh: {
      preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret', scopes: ['read:user'],
      authorize_url: `${idp.base}/github/login/oauth/authorize`, token_url: `${idp.base}/github/login/oauth/access_token`,
      userinfo_url: `${idp.base}/github/api/user`, revoke_url: `${idp.base}/github/api/applications/{client_id}/grant`,
      timeout_ms: 2000,
    },
    sentry: {
      preset: 'sentry', client_id: 'sentry-client', client_secret: 'sentry-secret', scopes: ['org:read'],
      authorize_url: `${idp.base}/sentry/oauth/authorize/`, token_url: `${idp.base}/sentry/oauth/token/`,
      userinfo_url: `${idp.base}/sentry/api/0/`, revoke_url: `${idp.base}/sentry/oauth/revoke/`,
      timeout_ms: 2000,
    },
  };
}

/**
 * Starts n nodes on one fresh database. Returns { nodes, idp, echo, db,
 * adminToken, publicUrl, stop() }. Every node claims node 0's public_url.
 * upstreamsExtra: upstreams beside the fake IdP's gh and sentry.
 */
export async function startNodes(n, { extra = {}, resources, downstream, upstreamsExtra = {} } = {}) {
  const idp = await startIdp({ port: 0 });
  const echo = downstream ? null : await startEcho();
  const db = await createDatabase('nodes');
  const ports = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const publicUrl = `http://127.0.0.1:${ports[0]}`;
  const adminToken = 'admin-' + key().replace(/[^A-Za-z0-9]/g, '');
  const shared = {
    public_url: publicUrl,
    database_url: db,
    encryption_keys: [{ id: 'k1', key: key() }],
    cookie_secret: key(),
    admin_tokens: [adminToken],
    http: { threads: 4, drain_timeout_s: 5 },
    limits: { register_per_ip_per_hour: 0 },
    database: { pool_size: 6, connect_timeout_s: 2 },
    upstreams: { ...upstreamConfig(idp), ...upstreamsExtra },
    resources: resources || [
      { path: '/mcp', upstream: 'sentry', downstream: downstream || echo.url,
        scopes: { 'issues:read': ['list_issues', 'echo'], 'issues:write': ['*'] }, default_scopes: ['issues:read'] },
      { path: '/gh', upstream: 'gh', downstream: downstream || echo.url },
    ],
    ...extra,
  };
  const nodes = [];
  for (let i = 0; i < n; i++) {
    nodes.push(await startBroker({ ...shared, listen: `127.0.0.1:${ports[i]}` }));
  }
  return {
    nodes, idp, echo, db, adminToken, publicUrl,
    stop: async () => {
      await Promise.all(nodes.map((b) => b.stop('SIGKILL')));
      if (echo) await echo.close();
      await idp.close();
    },
  };
}
