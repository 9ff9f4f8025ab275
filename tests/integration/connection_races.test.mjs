// Connected accounts under concurrency, two nodes on one database:
//  - a disconnect racing a refresh: the refresh (node A) holds the
//    connection's row while Sentry answers slowly; the operator's disconnect
//    (node B) waits for it, then takes the refreshed tokens with it, so the
//    token that was just minted is the one revoked at Sentry — no live
//    Sentry session survives, and the next call asks to connect again;
//  - a grant revoked with a connection: the connection goes in the same
//    transaction and its tokens are revoked at Sentry.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startNodes } from '../lib/nodes.mjs';
import { http as fetchHttp, psql, waitFor } from '../lib/harness.mjs';
import { connectInBand, fullFlow } from '../lib/flow.mjs';
import { setFault } from '../lib/oauth_setup.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

async function recordingDownstream() {
  const seen = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      seen.push({ headers: req.headers, body });
      let id = null;
      try { id = JSON.parse(body).id ?? null; } catch { /* not JSON */ }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id, result: {} }));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}/mcp`, seen, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

async function until(fn, what, ms = 15000) {
  assert.ok(await waitFor(fn, ms), `timed out: ${what}`);
}

test('connected accounts: a disconnect racing a refresh, a revocation taking the connection', { timeout: 90000 }, async () => {
  const ds = await recordingDownstream();
  cleanups.push(() => ds.close());
  const env = await startNodes(2, {
    downstream: ds.url,
    extra: {
      registration: { dynamic: true, client_id_metadata_documents: false },
      resource_servers: [{ client_id: 'rs-1', client_secret: 'rs-secret-0123456789' }],
    },
    resources: [{
      path: '/mcp', upstream: 'gh', connect: ['sentry'], downstream: ds.url,
      inject: [{ value: 'Bearer {upstream_token}' }, { header: 'X-Sentry-Token', value: '{upstream_token:sentry}' }],
    }],
  });
  cleanups.push(() => env.stop());
  const [nodeA, nodeB] = env.nodes;
  const q = (sql) => psql(env.db, sql);
  const call = (node, t) => fetchHttp(`${node.url}/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
  });
  async function connect(t, login) {
    const e = (await call(nodeA, t)).json.error.data.elicitations[0];
    const r = await connectInBand(e.url, { login });
    assert.equal(r.status, 200, r.text);
  }
  const sentry = async (user) => (await fetchHttp(`${env.idp.base}/_control/tokens?user=${user}&personality=sentry&kind=access`)).json.tokens;
  const admin = (body) => fetchHttp(`${nodeB.url}/admin/v1/disconnect`, {
    method: 'POST', headers: { authorization: `Bearer ${env.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });

  const alice = await fullFlow(env.publicUrl, { resource: `${env.publicUrl}/mcp` });
  await connect(alice, 'alice');
  const grant = await q('SELECT grant_id FROM grant_connections');
  assert.equal((await sentry('alice')).length, 1);
  // Introspection names the user as X-MCP-User does and lists the
  // connected accounts (an extension member).
  const intro = (t) => fetchHttp(`${nodeB.url}/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('rs-1:rs-secret-0123456789').toString('base64')}` },
    body: new URLSearchParams({ token: t.access_token }).toString(),
  });
  const i1 = await intro(alice);
  assert.equal(i1.json.active, true, i1.text);
  assert.match(i1.json.sub, /^gh:\d+$/);
  assert.deepEqual(i1.json.mcpb_connections, ['sentry']);

  // The Sentry token is stale and Sentry is slow to refresh it.
  await q("UPDATE grant_connections SET up_expires_at = now() - interval '1 minute'");
  await setFault(env.idp, 'sentry.token.refresh', { delay_ms: 1500, count: 1 });
  const refreshing = call(nodeA, alice);
  await until(async () => (await q("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'grant_connections' AND l.mode = 'RowShareLock'")) !== '0'
    || (await q("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%grant_connections%FOR UPDATE%' AND state = 'idle in transaction'")) !== '0', 'the refresh holds the connection');
  const t0 = Date.now();
  const d = await admin({ grant_id: grant, upstream: 'sentry' });
  const waited = Date.now() - t0;
  assert.equal(d.status, 200, d.text);
  assert.equal(d.json.disconnected, 1);
  const r = await refreshing;
  assert.equal(r.status, 200, r.text);
  assert.ok(waited > 300, `the disconnect waited for the refresh (${waited} ms)`);
  const fresh = ds.seen.at(-1).headers['x-sentry-token'];
  assert.match(fresh, /^sntr_/, 'the call went out with the refreshed token');
  assert.equal(await q('SELECT count(*) FROM grant_connections'), '0');
  // Both Sentry access tokens end revoked: the old one by the rotation, the
  // refreshed one by the revoker, from what the disconnect moved.
  await until(async () => { const l = await sentry('alice'); return l.length === 2 && l.every((x) => x.revoked); }, 'every Sentry token of alice revoked');
  assert.ok((await sentry('alice')).some((x) => x.revoked_reason === 'revoked'));
  assert.equal(await q('SELECT outcome FROM connection_revocations'), 'revoked');
  assert.equal((await call(nodeB, alice)).json.error?.code, -32042, 'the next call asks again');
  assert.equal((await intro(alice)).json.mcpb_connections, undefined, 'none connected: no member');

  // A grant revoked through /revoke takes its connection with it.
  const bob = await fullFlow(env.publicUrl, { resource: `${env.publicUrl}/mcp`, login: 'bob' });
  await connect(bob, 'bob');
  assert.equal(await q('SELECT count(*) FROM grant_connections'), '1');
  const rv = await fetchHttp(`${nodeB.url}/revoke`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: bob.refresh_token, client_id: bob.clientId }).toString(),
  });
  assert.equal(rv.status, 200, rv.text);
  assert.equal(await q('SELECT count(*) FROM grant_connections'), '0');
  assert.equal(await q("SELECT reason FROM connection_revocations WHERE upstream = 'sentry' ORDER BY id DESC LIMIT 1"), 'client_revoked');
  await until(async () => (await sentry('bob')).every((x) => x.revoked), 'bob\'s Sentry token revoked');
  assert.equal((await call(nodeA, bob)).status, 401);
  for (const n of env.nodes) assert.equal((await fetchHttp(`${n.url}/readyz`)).status, 200);
});
