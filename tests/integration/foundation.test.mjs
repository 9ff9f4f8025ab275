// The foundation: CLI, configuration errors, health endpoints, metrics,
// migrations (concurrent and newer-than-binary), SIGTERM drain and recovery
// from a PostgreSQL restart, all against the real binary and PostgreSQL.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  run, startBroker, baseConfig, createDatabase, freePort, http, psql, startCluster, waitFor, key, sleep,
} from '../lib/harness.mjs';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'mcpb-found-'));
const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

test('--help, --version and keygen', async () => {
  const h = await run(['--help']);
  assert.equal(h.code, 0);
  for (const c of ['serve', 'migrate', 'check-config', 'keygen']) assert.match(h.stdout, new RegExp(c));
  const v = await run(['--version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^mcp-broker \d+\.\d+\.\d+/);
  for (const c of ['serve', 'migrate', 'check-config', 'keygen']) {
    const r = await run([c, '--help']);
    assert.equal(r.code, 0, `${c} --help`);
    assert.match(r.stdout, /usage: mcp-broker/);
  }
  const k1 = await run(['keygen']);
  const k2 = await run(['keygen']);
  assert.equal(k1.code, 0);
  assert.equal(Buffer.from(k1.stdout.trim(), 'base64').length, 32);
  assert.notEqual(k1.stdout, k2.stdout);
  const bad = await run(['frobnicate']);
  assert.equal(bad.code, 2);
  const noconf = await run(['serve']);
  assert.equal(noconf.code, 2);
  assert.match(noconf.stderr, /--config/);
});

test('check-config prints every problem with its JSON path', async () => {
  const file = path.join(tmp, 'bad.json');
  writeFileSync(file, JSON.stringify({
    listen: 'nohost',
    public_url: 'ftp://example.com',
    database_url: '${MCPB_DEFINITELY_UNSET_VAR}',
    encryption_keys: [{ id: 'k1', key: Buffer.alloc(16).toString('base64') }],
    cookie_secret: 42,
    bogus: true,
    tokens: { access_ttl: 'soon' },
  }));
  const r = await run(['check-config', '--config', file]);
  assert.equal(r.code, 1);
  const expect = [
    /\$\.listen: expected host:port/,
    /\$\.public_url: expected an http or https URL/,
    /\$\.database_url: environment variable MCPB_DEFINITELY_UNSET_VAR is not set/,
    /\$\.encryption_keys\[0\]\.key: expected base64 of exactly 32 bytes/,
    /\$\.cookie_secret: expected a string/,
    /\$\.bogus: unknown key/,
    /\$\.tokens\.access_ttl: expected an integer/,
  ];
  for (const e of expect) assert.match(r.stderr, e);
  assert.match(r.stderr, /7 problems/);
  // Secrets never echo: the bad key's value is not in the output.
  assert.ok(!r.stderr.includes(Buffer.alloc(16).toString('base64')));

  const good = path.join(tmp, 'good.json');
  writeFileSync(good, JSON.stringify(baseConfig({ port: 1, databaseUrl: 'postgresql://x@127.0.0.1/y' })));
  const g = await run(['check-config', '--config', good]);
  assert.equal(g.code, 0, g.stderr);
  assert.match(g.stdout, /ok/);
  const missing = await run(['check-config', '--config', path.join(tmp, 'nope.json')]);
  assert.equal(missing.code, 1);
});

test('healthz, readyz and metrics on a fresh database', async () => {
  const db = await createDatabase('found');
  const port = await freePort();
  const b = await startBroker(baseConfig({ port, databaseUrl: db }));
  cleanups.push(() => b.stop('SIGKILL'));
  const h = await http(`${b.url}/healthz`);
  assert.equal(h.status, 200);
  assert.deepEqual(h.json, { status: 'ok' });
  assert.match(h.headers.get('x-request-id'), /^[0-9a-f]{16}$/);
  const r = await http(`${b.url}/readyz`);
  assert.equal(r.status, 200);
  assert.equal(r.json.status, 'ready');
  const given = await http(`${b.url}/healthz`, { headers: { 'X-Request-Id': 'abc-123' } });
  assert.equal(given.headers.get('x-request-id'), 'abc-123');
  const nf = await http(`${b.url}/nope`);
  assert.equal(nf.status, 404);
  const na = await http(`${b.url}/healthz`, { method: 'POST', body: 'x' });
  assert.equal(na.status, 405);
  const m = await http(`${b.url}/metrics`);
  assert.equal(m.status, 200);
  assert.match(m.headers.get('content-type'), /text\/plain/);
  assert.match(m.text, /mcpb_http_requests_total\{route="healthz",status="200"\} 2/);
  assert.match(m.text, /mcpb_http_requests_total\{route="unmatched",status="404"\} 1/);
  assert.match(m.text, /mcpb_http_request_duration_seconds_bucket\{route="readyz",status="200",le="\+Inf"\} 1/);
  assert.match(m.text, /mcpb_db_pool_size 4/);
  // Every log line is one JSON object with time, level, event.
  for (const line of b.logs()) {
    const j = JSON.parse(line);
    assert.ok(j.time && j.level && j.event, line);
  }
  const req = b.logs().map((l) => JSON.parse(l)).find((j) => j.event === 'http.request' && j.route === 'readyz');
  assert.ok(req.request_id && req.status === 200 && typeof req.duration_ms === 'number');
  const done = await b.stop('SIGTERM');
  assert.equal(done.code, 0);
  assert.match(b.logText(), /node.stopped/);
});

test('two concurrent migrate runs: exactly one applies', async () => {
  const db = await createDatabase('mig');
  const file = path.join(tmp, 'mig.json');
  writeFileSync(file, JSON.stringify(baseConfig({ port: 1, databaseUrl: db })));
  const [a, b] = await Promise.all([run(['migrate', '--config', file]), run(['migrate', '--config', file])]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const applied = [a.stdout, b.stdout].map((s) => Number(/applied (\d+)/.exec(s)[1]));
  assert.equal(applied.filter((n) => n > 0).length, 1, `${a.stdout} / ${b.stdout}`);
  assert.equal(applied.filter((n) => n === 0).length, 1);
  const versions = await psql(db, 'SELECT count(*), count(DISTINCT version) FROM schema_migrations');
  const [n, d] = versions.split('|').map(Number);
  assert.equal(n, d);
  const again = await run(['migrate', '--config', file]);
  assert.match(again.stdout, /applied 0 migrations/);
});

test('a node refuses a schema newer than it knows', async () => {
  const db = await createDatabase('newer');
  const port = await freePort();
  const file = path.join(tmp, 'newer.json');
  writeFileSync(file, JSON.stringify(baseConfig({ port, databaseUrl: db })));
  assert.equal((await run(['migrate', '--config', file])).code, 0);
  await psql(db, "INSERT INTO schema_migrations(version, name) VALUES (9999, 'from the future')");
  const m = await run(['migrate', '--config', file]);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /newer than this binary/);
  const s = await run(['serve', '--config', file], { timeoutMs: 20000 });
  assert.equal(s.code, 1);
  assert.match(s.stderr, /newer than this binary/);
  const s2 = await run(['serve', '--no-migrate', '--config', file], { timeoutMs: 20000 });
  assert.equal(s2.code, 1);
  assert.match(s2.stderr, /newer than this binary/);
});

test('readyz goes 503 while PostgreSQL restarts and 200 again without restarting the node', async () => {
  const cluster = await startCluster();
  cleanups.push(() => cluster.destroy());
  const port = await freePort();
  const b = await startBroker(baseConfig({ port, databaseUrl: cluster.url }));
  cleanups.push(() => b.stop('SIGKILL'));
  assert.equal((await http(`${b.url}/readyz`)).status, 200);
  await cluster.stop();
  const down = await waitFor(async () => (await http(`${b.url}/readyz`)).status === 503, 10000);
  assert.ok(down, 'readyz should answer 503 while the database is down');
  const r503 = await http(`${b.url}/readyz`);
  assert.equal(r503.json.reason, 'database unreachable');
  assert.equal((await http(`${b.url}/healthz`)).status, 200, 'liveness stays 200');
  await cluster.start();
  const t0 = Date.now();
  const up = await waitFor(async () => (await http(`${b.url}/readyz`)).status === 200, 15000);
  assert.ok(up, 'readyz should recover');
  assert.ok(Date.now() - t0 < 5000, `recovered in ${Date.now() - t0} ms`);
  assert.equal(b.proc.exitCode, null, 'the node kept running');
  const m = await http(`${b.url}/metrics`);
  assert.match(m.text, /mcpb_db_reconnects_total [1-9]/);
  assert.equal((await b.stop()).code, 0);
});

test('SIGTERM: a node that is serving exits 0 promptly', async () => {
  const db = await createDatabase('drain');
  const port = await freePort();
  const b = await startBroker(baseConfig({ port, databaseUrl: db }));
  cleanups.push(() => b.stop('SIGKILL'));
  for (let i = 0; i < 20; i++) assert.equal((await http(`${b.url}/readyz`)).status, 200);
  const t0 = Date.now();
  b.proc.kill('SIGTERM');
  const done = await b.exited;
  assert.equal(done.code, 0);
  assert.ok(Date.now() - t0 < 3000, `exit took ${Date.now() - t0} ms`);
  assert.match(b.logText(), /node.draining/);
});
