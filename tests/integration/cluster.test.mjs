// Horizontal deployment under faults: three broker nodes behind nginx (round
// robin, no stickiness) on one PostgreSQL, under a steady load of MCP clients
// doing the whole flow, tool calls and refreshes. Proves: any step on any
// node; SIGTERM (rolling restart) fails nothing; kill -9 fails only what was
// in flight there; a PostgreSQL restart gives 503 + Retry-After, no crash,
// recovery within 2 s, no token issued without being stored; revocation on
// one node is effective on the others within 100 ms p99.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startIdp } from '../fakes/idp.mjs';
import { freePort, http, key, psql, sleep, startBroker, startCluster, waitFor } from '../lib/harness.mjs';
import { fullFlow } from '../lib/flow.mjs';
import { startEcho, upstreamConfig } from '../lib/nodes.mjs';
import { startLoad } from '../lib/load.mjs';

const PHASE_MS = Number(process.env.MCPB_CLUSTER_PHASE_MS || 3000);
let cluster, idp, echo, nginx, lb, ports, nodes = [], shared, adminToken, resource;

function nodeConfig(i) {
  return { ...shared, listen: `127.0.0.1:${ports[i]}` };
}

async function startNginx(lbPort) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-lb-'));
  const conf = path.join(dir, 'nginx.conf');
  // No upstream keepalive: every request opens a connection, so a draining
  // node's closed listener is an "error" nginx retries on the next node.
  writeFileSync(conf, `worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn; daemon off;
events { worker_connections 2048; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream brokers { ${ports.map((p) => `server 127.0.0.1:${p} max_fails=1 fail_timeout=1s;`).join(' ')} }
  server {
    listen 127.0.0.1:${lbPort};
    location / {
      proxy_pass http://brokers;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 1s;
      proxy_read_timeout 30s;
      proxy_buffering off;
      proxy_set_header Host $http_host;
    }
  }
}`);
  const p = spawn('nginx', ['-c', conf, '-p', dir], { stdio: 'ignore' });
  await waitFor(async () => (await http(`http://127.0.0.1:${lbPort}/healthz`, { timeoutMs: 500 }).catch(() => ({ status: 0 }))).status === 200, 10000);
  return { stop: () => p.kill('SIGTERM'), errors: () => { try { return readFileSync(`${dir}/error.log`, 'utf8'); } catch { return ''; } } };
}

const logEvents = (b) => b.logs().map((l) => { try { return JSON.parse(l); } catch { return {}; } });

before(async () => {
  cluster = await startCluster();
  idp = await startIdp({ port: 0 });
  echo = await startEcho();
  ports = [await freePort(), await freePort(), await freePort()];
  const lbPort = await freePort();
  lb = `http://127.0.0.1:${lbPort}`;
  resource = `${lb}/mcp`;
  adminToken = 'admin-' + key().replace(/[^A-Za-z0-9]/g, '');
  shared = {
    public_url: lb,
    database_url: cluster.url,
    encryption_keys: [{ id: 'k1', key: key() }],
    cookie_secret: key(),
    admin_tokens: [adminToken],
    http: { threads: 4, drain_timeout_s: 10 },
    database: { pool_size: 6, connect_timeout_s: 1, statement_timeout_ms: 2000 },
    limits: { register_per_ip_per_hour: 0 },
    upstreams: upstreamConfig(idp),
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: echo.url }],
  };
  for (let i = 0; i < 3; i++) nodes.push(await startBroker(nodeConfig(i)));
  nginx = await startNginx(lbPort);
}, { timeout: 60000 });

after(async () => {
  nginx?.stop();
  await Promise.all(nodes.map((b) => b?.stop('SIGKILL')));
  await echo?.close();
  await idp?.close();
  await cluster?.destroy();
}, { timeout: 30000 });

test('every step of a flow lands on any node (round robin, no stickiness)', { timeout: 60000 }, async () => {
  const load = startLoad({ lb, resource, clients: 4 });
  await sleep(PHASE_MS);
  const stats = await load.stop();
  assert.equal(stats.failed.length, 0, JSON.stringify(stats.failed.slice(0, 5)));
  assert.ok(stats.flows >= 4, `flows: ${stats.flows}`);
  for (const [i, b] of nodes.entries()) {
    const routes = new Set(logEvents(b).filter((e) => e.event === 'http.request').map((e) => e.route));
    for (const r of ['register', 'authorize', 'consent', 'callback', 'token', 'resource'])
      assert.ok(routes.has(r), `node ${i} served no ${r} request (${[...routes]})`);
  }
});

test('SIGTERM of a node mid-load (rolling restart): zero failed requests', { timeout: 60000 }, async () => {
  const load = startLoad({ lb, resource, clients: 6 });
  await sleep(PHASE_MS / 2);
  const victim = nodes[1];
  victim.proc.kill('SIGTERM');
  const done = await victim.exited;
  assert.equal(done.code, 0, 'the drained node exits 0');
  await sleep(300);
  nodes[1] = await startBroker(nodeConfig(1));
  await sleep(PHASE_MS / 2);
  const stats = await load.stop();
  assert.equal(stats.failed.length, 0, `failures during a rolling restart: ${JSON.stringify(stats.failed.slice(0, 5))}\nnginx: ${nginx.errors().split('\n').filter((l) => /error|upstream/.test(l)).slice(-5).join('\n')}`);
  assert.ok(stats.ok > 50, `requests: ${stats.ok}`);
  console.log(`# SIGTERM phase: ${stats.ok} requests, ${stats.failed.length} failed`);
});

test('kill -9 of a node mid-load: only in-flight requests fail, nothing is lost', { timeout: 60000 }, async () => {
  const clients = 6;
  const load = startLoad({ lb, resource, clients });
  await sleep(PHASE_MS / 2);
  const killedAt = Date.now();
  nodes[2].proc.kill('SIGKILL');
  await nodes[2].exited;
  await sleep(PHASE_MS / 2);
  const stats = await load.stop();
  const after = stats.failed.filter((f) => f.t > killedAt + 1500);
  console.log(`# kill -9 phase: ${stats.ok} requests, ${stats.failed.length} failed (${JSON.stringify(stats.failed.map((f) => f.step))})`);
  assert.ok(stats.failed.length <= clients, `at most one in-flight request per client fails: ${JSON.stringify(stats.failed)}`);
  assert.equal(after.length, 0, 'clients continue through the other nodes');
  // Nothing lost or corrupted: every token pair handed out still works.
  const sample = stats.issued.slice(-40);
  for (const t of sample) {
    const r = await http(`${resource}`, { method: 'POST', headers: { authorization: `Bearer ${t.access}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
    assert.ok(r.status === 200 || r.status === 401, `unexpected ${r.status}`);
  }
  const orphanPending = await psql(cluster.url, "SELECT count(*) FROM pending_authorizations WHERE expires_at < now() - interval '1 hour'");
  assert.equal(orphanPending, '0');
  nodes[2] = await startBroker(nodeConfig(2));
});

test('PostgreSQL restarted mid-load: 503 + Retry-After, no crash, recovery within 2 s, no token unstored', { timeout: 90000 }, async () => {
  const load = startLoad({ lb, resource, clients: 6 });
  await sleep(PHASE_MS / 2);
  const downAt = Date.now();
  await cluster.stop();
  await sleep(1500);
  await cluster.start();
  const upAt = Date.now();
  // First success through the load balancer after the database is back.
  let recovered = null;
  for (let i = 0; i < 200 && !recovered; i++) {
    const r = await http(`${lb}/readyz`, { timeoutMs: 1000 }).catch(() => ({ status: 0 }));
    if (r.status === 200) recovered = Date.now();
    else await sleep(20);
  }
  await sleep(PHASE_MS / 2);
  const stats = await load.stop();
  assert.ok(recovered, 'the cluster recovers');
  const recoveryMs = recovered - upAt;
  const during = stats.failed.filter((f) => f.t >= downAt);
  const statuses = [...new Set(during.map((f) => f.status ?? 'network'))];
  console.log(`# PostgreSQL restart: ${during.length} failed requests during the outage (statuses ${statuses}), readyz back ${recoveryMs} ms after PostgreSQL`);
  assert.ok(recoveryMs < 2000, `recovery took ${recoveryMs} ms`);
  for (const f of during) {
    if (f.status === undefined) continue; // a flow step: fullFlow surfaces its own failure
    assert.equal(f.status, 503, JSON.stringify(f));
    assert.ok(f.retryAfter, `503 without Retry-After: ${JSON.stringify(f)}`);
  }
  for (const b of nodes) assert.equal(b.proc.exitCode, null, 'no node crashed');
  // Every access token a client was given is stored: it validates now.
  const issuedDuring = stats.issued.filter((t) => t.at >= downAt - 1000);
  for (const t of issuedDuring) {
    const r = await http(resource, { method: 'POST', headers: { authorization: `Bearer ${t.access}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
    assert.notEqual(r.status, 401, 'a token handed out during the outage is unknown');
  }
  // And steady traffic is clean again.
  const load2 = startLoad({ lb, resource, clients: 4 });
  await sleep(1500);
  const s2 = await load2.stop();
  assert.equal(s2.failed.length, 0, JSON.stringify(s2.failed.slice(0, 3)));
});

test('revocation issued on one node is refused by the others within 100 ms (p99)', { timeout: 60000 }, async () => {
  const lat = [];
  for (let i = 0; i < 30; i++) {
    const t = await fullFlow(lb, { resource, login: `rv${i}` });
    const others = [nodes[(i + 1) % 3], nodes[(i + 2) % 3]];
    // A probe in flight when the revocation lands is cut (not an answer): ask again.
    const call = (b) => http(`${b.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' })
      .catch((e) => ({ status: 'cut', error: e }));
    for (const b of others) assert.equal((await call(b)).status, 200);
    const gid = await psql(cluster.url, `SELECT grant_id FROM tokens WHERE token_hash = sha256(convert_to('${t.access_token}', 'UTF8'))`);
    const r = await http(`${nodes[i % 3].url}/admin/v1/revoke`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ grant_id: gid }) });
    assert.equal(r.json.revoked, 1);
    const t0 = process.hrtime.bigint();
    for (const b of others) {
      let s;
      for (let k = 0; k < 500 && (s = (await call(b)).status) !== 401; k++);
      assert.equal(s, 401);
    }
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  lat.sort((a, b) => a - b);
  const p99 = lat[Math.ceil(lat.length * 0.99) - 1];
  console.log(`# 3-node revocation: p50 ${lat[Math.floor(lat.length / 2)].toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`);
  assert.ok(p99 < 100, `p99 ${p99} ms`);
});
