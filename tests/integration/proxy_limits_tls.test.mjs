// Proxy: rate limits and mutual TLS to the downstream (DESIGN §3.4, §4.4).
//
// Rate limits (broker/core/ratelimit.c token buckets, per node, burst = 2 x rate):
//   - resources[].rate_per_grant: a quick burst on one grant gets 429s with
//     Retry-After >= 1 and a JSON-RPC error body; the downstream never sees
//     a refused request; another grant is not affected; after Retry-After the
//     grant passes again;
//   - limits.proxy_per_grant_per_second is the default for a resource that
//     sets no rate_per_grant;
//   - resources[].rate_per_client spans every grant of one client, not
//     other clients.
// limits.token_per_client_per_minute is deliberately NOT tested: it is read
// by broker/core/config.c but nothing in broker/ (token.c included) enforces it.
//
// Mutual TLS (resources[].client_cert/client_key/ca_file): a node:https
// downstream that requires a client certificate from a throwaway CA
// (tests/lib/tls.mjs makeCa; the client certificate is made here with the
// openssl CLI). With the right certificate and CA the call succeeds and the
// downstream sees the client certificate's subject; without a client
// certificate, with a wrong ca_file or with no ca_file at all the broker
// answers 502 and no request reaches the downstream; the node stays healthy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import nodeHttp from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { promisify } from 'node:util';
import { startIdp } from '../fakes/idp.mjs';
import { startDownstream } from '../fakes/downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, http, psql, sleep, waitFor } from '../lib/harness.mjs';
import { fullFlow } from '../lib/flow.mjs';
import { upstreamConfig } from '../lib/nodes.mjs';
import { makeCa } from '../lib/tls.mjs';
import { sha256hex } from '../lib/proxy_setup.mjs';

const execFileP = promisify(execFile);
const T = { timeout: 20000 };

const RATE_GRANT = 5;     // /rl: rate_per_grant
const RATE_DEFAULT = 3;   // limits.proxy_per_grant_per_second (/rl-default sets none)
const RATE_CLIENT = 4;    // /rl-client: rate_per_client
const CLIENT_CN = `mcpb-proxy-client-${randomBytes(3).toString('hex')}`;
const CLIENT_O = 'mcp-broker tests';

let idp, ds, rlBroker, rlDb, tlsBroker, tlsDb, ca, otherCa, clientCert, clientKey, mtls;

// ---------------------------------------------------------------- helpers

const rpc = (id, method = 'tools/list') => JSON.stringify({ jsonrpc: '2.0', id, method, params: {} });

/** One POST through node:http (keeps every raw header field: a repeated
 * field stays visible). Resolves { status, fields(name) -> [values], text, json }. */
function post(url, token, body = rpc(1), timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const req = nodeHttp.request(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      timeout: timeoutMs,
    }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        const raw = res.rawHeaders;
        const fields = (name) => {
          const out = [];
          for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name.toLowerCase()) out.push(raw[i + 1]);
          return out;
        };
        resolve({ status: res.statusCode, headers: res.headers, fields, text, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`POST ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** n concurrent POSTs with one token; { results, elapsedS }. */
async function burst(url, token, n) {
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: n }, (_, i) => post(url, token, rpc(i + 1))));
  return { results, elapsedS: (Date.now() - t0) / 1000 };
}

const ok = (rs) => rs.filter((r) => r.status === 200);
const limited = (rs) => rs.filter((r) => r.status === 429);

/** Upper bound on what a token bucket (full at start) can let through in elapsedS. */
const maxAllowed = (rate, elapsedS) => 2 * rate + Math.ceil(rate * elapsedS) + 1;

function assertJsonRpcError(r, status, what) {
  assert.equal(r.status, status, `${what}: ${r.text}`);
  assert.match(r.headers['content-type'] ?? '', /application\/json/, `${what}: content-type`);
  assert.equal(r.json?.jsonrpc, '2.0', `${what}: JSON-RPC body ${r.text}`);
  assert.equal(typeof r.json?.error?.code, 'number', `${what}: error.code`);
  assert.equal(typeof r.json?.error?.message, 'string', `${what}: error.message`);
  assert.ok('id' in r.json, `${what}: a JSON-RPC error carries an id (null here)`);
}

/** Every Retry-After field value of a 429, each a whole number of seconds >= 1. */
function retryAfter(r) {
  const values = r.fields('retry-after');
  assert.ok(values.length >= 1, `429 without Retry-After: ${JSON.stringify(r.headers)}`);
  for (const v of values) {
    assert.match(v.trim(), /^\d+$/, `Retry-After is delay-seconds: ${JSON.stringify(values)}`);
    assert.ok(Number(v) >= 1, `Retry-After >= 1: ${v}`);
  }
  return Math.max(...values.map(Number));
}

function assert429(r, what) {
  assertJsonRpcError(r, 429, what);
  return retryAfter(r);
}

const dsCount = (p) => ds.requests.filter((r) => r.path === p).length;

async function grantOf(db, token) {
  return psql(db, `SELECT grant_id FROM tokens WHERE token_hash = '\\x${sha256hex(token)}'::bytea`);
}

async function assertHealthy(broker, what) {
  const h = await http(`${broker.url}/healthz`, { timeoutMs: 3000 });
  assert.equal(h.status, 200, `/healthz after ${what}`);
  const r = await http(`${broker.url}/readyz`, { timeoutMs: 3000 });
  assert.equal(r.status, 200, `/readyz after ${what}: ${r.text}`);
}

const flow = (broker, resourcePath, opts = {}) => fullFlow(broker.url, { resource: `${broker.url}${resourcePath}`, ...opts });

/** A client certificate signed by ca (openssl CLI), into ca.dir. */
async function makeClientCert(c) {
  const p = (f) => path.join(c.dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await execFileP('openssl', ['req', '-new', ...ec, '-keyout', p('client.key'), '-out', p('client.csr'),
    '-subj', `/O=${CLIENT_O}/CN=${CLIENT_CN}`]);
  writeFileSync(p('client.ext'), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=clientAuth',
    'authorityKeyIdentifier=keyid,issuer',
    '',
  ].join('\n'));
  await execFileP('openssl', ['x509', '-req', '-in', p('client.csr'), '-CA', c.caCert, '-CAkey', c.caKey,
    '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-sha256',
    '-extfile', p('client.ext'), '-out', p('client.crt')]);
  return { cert: p('client.crt'), key: p('client.key') };
}

/** A JSON-RPC echo over HTTPS that requires a client certificate from ca. */
async function startMtlsDownstream(c) {
  const requests = [];
  const handshakeErrors = [];
  const sockets = new Set();
  const server = https.createServer({
    cert: readFileSync(c.serverCert), key: readFileSync(c.serverKey), ca: readFileSync(c.caCert),
    requestCert: true, rejectUnauthorized: true,
  }, (req, res) => {
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      const peer = req.socket.getPeerCertificate();
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ path: req.url, method: req.method, authorized: req.socket.authorized,
        subject: peer?.subject ? { ...peer.subject } : null, authorization: req.headers.authorization });
      let id = null;
      try { id = JSON.parse(body).id ?? null; } catch { /* not JSON */ }
      const text = JSON.stringify({ jsonrpc: '2.0', id, result: { mtls: true, subject: peer?.subject?.CN ?? null } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.on('tlsClientError', (err) => { handshakeErrors.push(err.code || err.message); });
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve); });
  const port = server.address().port;
  return {
    url: `https://127.0.0.1:${port}/mcp`, requests, handshakeErrors,
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
  };
}

// ---------------------------------------------------------------- setup

before(async () => {
  idp = await startIdp({ port: 0, log: false });
  ds = await startDownstream({ port: 0 });
  ca = await makeCa();
  otherCa = await makeCa();
  ({ cert: clientCert, key: clientKey } = await makeClientCert(ca));
  mtls = await startMtlsDownstream(ca);

  const limits = { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 };
  const ups = { gh: upstreamConfig(idp).gh };

  rlDb = await createDatabase('proxy_rl');
  const rlPort = await freePort();
  rlBroker = await startBroker(baseConfig({
    port: rlPort, databaseUrl: rlDb, extra: {
      upstreams: ups,
      limits: { ...limits, proxy_per_grant_per_second: RATE_DEFAULT },
      resources: [
        { path: '/rl', upstream: 'gh', downstream: `${ds.url}/ds-rl`, rate_per_grant: RATE_GRANT },
        { path: '/rl-default', upstream: 'gh', downstream: `${ds.url}/ds-default` },
        { path: '/rl-client', upstream: 'gh', downstream: `${ds.url}/ds-client`, rate_per_grant: 1000, rate_per_client: RATE_CLIENT },
      ],
    },
  }));

  tlsDb = await createDatabase('proxy_tls');
  const tlsPort = await freePort();
  const tlsRes = (p, extra) => ({ path: p, upstream: 'gh', downstream: mtls.url, connect_timeout_ms: 3000, idle_timeout_ms: 5000, ...extra });
  tlsBroker = await startBroker(baseConfig({
    port: tlsPort, databaseUrl: tlsDb, extra: {
      upstreams: ups,
      limits,
      resources: [
        tlsRes('/tls', { client_cert: clientCert, client_key: clientKey, ca_file: ca.caCert }),
        tlsRes('/tls-nocert', { ca_file: ca.caCert }),
        tlsRes('/tls-wrongca', { client_cert: clientCert, client_key: clientKey, ca_file: otherCa.caCert }),
        tlsRes('/tls-noca', { client_cert: clientCert, client_key: clientKey }),
      ],
    },
  }));
}, { timeout: 40000 });

after(async () => {
  await rlBroker?.stop('SIGKILL');
  await tlsBroker?.stop('SIGKILL');
  await mtls?.close();
  await ds?.close();
  await idp?.close();
  ca?.cleanup();
  otherCa?.cleanup();
}, { timeout: 20000 });

// ---------------------------------------------------------------- rate limits

test('per-grant limit: rate_per_grant 5, a burst of 30 gets 429s the downstream never sees; other grants unaffected; Retry-After honoured', T, async () => {
  const a = await flow(rlBroker, '/rl');
  const b = await flow(rlBroker, '/rl');
  const url = `${rlBroker.url}/rl`;
  const before = dsCount('/ds-rl');

  const { results, elapsedS } = await burst(url, a.access_token, 30);
  for (const r of results) assert.ok(r.status === 200 || r.status === 429, `burst answer ${r.status}: ${r.text}`);
  const passed = ok(results).length;
  const refused = limited(results);
  assert.ok(refused.length > 0, `30 quick requests at ${RATE_GRANT}/s: some 429 (got ${passed} x 200 in ${elapsedS}s)`);
  assert.ok(passed >= 2 * RATE_GRANT, `the burst allowance (2 x ${RATE_GRANT}) passes: ${passed}`);
  assert.ok(passed <= maxAllowed(RATE_GRANT, elapsedS), `at most burst + rate x ${elapsedS}s pass: ${passed}`);
  let wait = 1;
  for (const r of refused) wait = Math.max(wait, assert429(r, 'rate-limited request'));
  for (const r of ok(results)) assert.equal(r.json?.result?.echo?.method, 'tools/list', 'a passed request got the downstream answer');
  assert.equal(dsCount('/ds-rl') - before, passed, 'the downstream saw exactly the requests that were not 429');

  // Another grant on the same resource has its own bucket.
  for (let i = 0; i < 4; i++) {
    const r = await post(url, b.access_token, rpc(100 + i));
    assert.equal(r.status, 200, `another grant right after the burst: ${r.text}`);
  }

  // The limited grant passes again once Retry-After has elapsed.
  await sleep(wait * 1000 + 100);
  const again = await post(url, a.access_token, rpc(200));
  assert.equal(again.status, 200, `after waiting Retry-After (${wait}s): ${again.text}`);
  assert.equal(dsCount('/ds-rl') - before, passed + 4 + 1);
  await assertHealthy(rlBroker, 'a rate-limited burst');
});

test('a 429 carries exactly one Retry-After field (RFC 9110 §10.2.3: a singleton)', T, async () => {
  const a = await flow(rlBroker, '/rl');
  const { results } = await burst(`${rlBroker.url}/rl`, a.access_token, 20);
  const refused = limited(results);
  assert.ok(refused.length > 0, 'some 429');
  for (const r of refused) {
    assert.equal(r.fields('retry-after').length, 1,
      `one Retry-After field, got ${JSON.stringify(r.fields('retry-after'))}`);
  }
});

test('limits.proxy_per_grant_per_second is the default for a resource without rate_per_grant', T, async () => {
  const a = await flow(rlBroker, '/rl-default');
  const before = dsCount('/ds-default');
  const { results, elapsedS } = await burst(`${rlBroker.url}/rl-default`, a.access_token, 20);
  for (const r of results) assert.ok(r.status === 200 || r.status === 429, `burst answer ${r.status}: ${r.text}`);
  const passed = ok(results).length;
  assert.ok(limited(results).length > 0, `20 quick requests at ${RATE_DEFAULT}/s: some 429`);
  assert.ok(passed >= 2 * RATE_DEFAULT, `the default burst allowance passes: ${passed}`);
  // Below what /rl's own rate_per_grant (burst 10) would allow: the default applies.
  assert.ok(passed <= maxAllowed(RATE_DEFAULT, elapsedS), `at most ${maxAllowed(RATE_DEFAULT, elapsedS)} pass at ${RATE_DEFAULT}/s: ${passed}`);
  for (const r of limited(results)) assert429(r, 'default-limited request');
  assert.equal(dsCount('/ds-default') - before, passed, 'the downstream saw exactly the requests that were not 429');
});

test('per-client limit: rate_per_client 4 spans two grants of the same client, not other clients', T, async () => {
  const g1 = await flow(rlBroker, '/rl-client');
  const g2 = await flow(rlBroker, '/rl-client', { clientId: g1.clientId, redirectUri: g1.redirectUri });
  const other = await flow(rlBroker, '/rl-client');
  assert.equal(g2.clientId, g1.clientId);
  assert.notEqual(other.clientId, g1.clientId);
  const [grant1, grant2] = [await grantOf(rlDb, g1.access_token), await grantOf(rlDb, g2.access_token)];
  assert.ok(grant1 && grant2 && grant1 !== grant2, `two grants of one client: ${grant1} ${grant2}`);

  const url = `${rlBroker.url}/rl-client`;
  const before = dsCount('/ds-client');
  const t0 = Date.now();
  const first = await burst(url, g1.access_token, 12);
  const second = await burst(url, g2.access_token, 8);
  const elapsedS = (Date.now() - t0) / 1000;
  const all = [...first.results, ...second.results];
  for (const r of all) assert.ok(r.status === 200 || r.status === 429, `answer ${r.status}: ${r.text}`);
  const passed = ok(all).length;
  assert.ok(ok(first.results).length >= 2 * RATE_CLIENT, `the client's burst allowance passes on grant 1: ${ok(first.results).length}`);
  assert.ok(limited(first.results).length > 0, 'grant 1 is limited by the client bucket (its own rate_per_grant is 1000)');
  assert.ok(limited(second.results).length > 0,
    `grant 2 never sent a request before, yet shares its client's drained bucket: ${second.results.map((r) => r.status)}`);
  assert.ok(passed <= maxAllowed(RATE_CLIENT, elapsedS), `at most ${maxAllowed(RATE_CLIENT, elapsedS)} pass across both grants: ${passed}`);
  let wait = 1;
  for (const r of limited(all)) wait = Math.max(wait, assert429(r, 'client-limited request'));

  // Another client is not affected.
  const o = await post(url, other.access_token, rpc(300));
  assert.equal(o.status, 200, `another client right after: ${o.text}`);
  assert.equal(dsCount('/ds-client') - before, passed + 1, 'the downstream saw exactly the requests that were not 429');

  await sleep(wait * 1000 + 100);
  const again = await post(url, g2.access_token, rpc(301));
  assert.equal(again.status, 200, `after waiting Retry-After (${wait}s): ${again.text}`);
});

// ---------------------------------------------------------------- mutual TLS

let tlsTokens;
async function tlsToken(p) {
  tlsTokens ??= {};
  tlsTokens[p] ??= (await flow(tlsBroker, p)).access_token;
  return tlsTokens[p];
}

function recentLog(broker, requestId, event) {
  return broker.logs().map((l) => { try { return JSON.parse(l); } catch { return null; } })
    .find((j) => j && j.event === event && j.request_id === requestId);
}

test('mutual TLS: with client_cert/client_key/ca_file the call succeeds and the downstream sees the client certificate', T, async () => {
  const tok = await tlsToken('/tls');
  const n = mtls.requests.length;
  const r = await post(`${tlsBroker.url}/tls`, tok, rpc(7));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json?.id, 7);
  assert.equal(r.json?.result?.mtls, true);
  assert.equal(mtls.requests.length, n + 1, 'the downstream got the request');
  const seen = mtls.requests.at(-1);
  assert.equal(seen.authorized, true, 'the downstream verified the client certificate');
  assert.equal(seen.subject?.CN, CLIENT_CN, `client certificate subject: ${JSON.stringify(seen.subject)}`);
  assert.equal(seen.subject?.O, CLIENT_O);
  assert.match(seen.authorization ?? '', /^Bearer gho_/, 'the upstream token is injected over the TLS connection');
  await assertHealthy(tlsBroker, 'a mutual-TLS call');
});

test('mutual TLS: without client_cert/client_key the downstream refuses the handshake: 502, nothing reached it', T, async () => {
  // Warm a pooled mTLS connection first: it must not be reused for a
  // resource configured without the client certificate.
  const good = await post(`${tlsBroker.url}/tls`, await tlsToken('/tls'), rpc(8));
  assert.equal(good.status, 200, good.text);
  const tok = await tlsToken('/tls-nocert');
  const n = mtls.requests.length;
  const errs = mtls.handshakeErrors.length;
  const r = await post(`${tlsBroker.url}/tls-nocert`, tok, rpc(9));
  assertJsonRpcError(r, 502, 'no client certificate');
  assert.equal(mtls.requests.length, n, 'no request reached the downstream without a client certificate');
  assert.ok(await waitFor(() => mtls.handshakeErrors.slice(errs).some((e) => /DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_REQUIRED/.test(e)), 3000),
    `the downstream refused the TLS handshake for want of a client certificate: ${mtls.handshakeErrors.slice(errs)}`);
  const line = recentLog(tlsBroker, r.headers['x-request-id'], 'proxy.downstream_failed');
  assert.ok(line, 'the failure is logged as proxy.downstream_failed');
  await assertHealthy(tlsBroker, 'a refused client handshake');
});

test('mutual TLS: a wrong ca_file (another CA) fails verification of the downstream: 502, nothing sent', T, async () => {
  const tok = await tlsToken('/tls-wrongca');
  const n = mtls.requests.length;
  const errs = mtls.handshakeErrors.length;
  const r = await post(`${tlsBroker.url}/tls-wrongca`, tok, rpc(10));
  assertJsonRpcError(r, 502, 'wrong ca_file');
  assert.ok(await waitFor(() => mtls.handshakeErrors.slice(errs).some((e) => /UNKNOWN_CA|BAD_CERTIFICATE/.test(e)), 3000),
    `the broker aborted the handshake on the downstream's certificate: ${mtls.handshakeErrors.slice(errs)}`);
  assert.equal(mtls.requests.length, n, 'no request (and so no upstream token) went to an unverified downstream');
  const line = recentLog(tlsBroker, r.headers['x-request-id'], 'proxy.downstream_failed');
  assert.ok(line, 'the failure is logged as proxy.downstream_failed');
  assert.match(String(line.curl), /certificate|SSL/i, `a certificate verification failure: ${line.curl}`);
  await assertHealthy(tlsBroker, 'an unverifiable downstream');
});

test('mutual TLS: without ca_file the system trust store does not know the throwaway CA: 502 (verification is never off)', T, async () => {
  const tok = await tlsToken('/tls-noca');
  const n = mtls.requests.length;
  const r = await post(`${tlsBroker.url}/tls-noca`, tok, rpc(11));
  assertJsonRpcError(r, 502, 'no ca_file');
  assert.equal(mtls.requests.length, n, 'nothing reached the downstream');
  const line = recentLog(tlsBroker, r.headers['x-request-id'], 'proxy.downstream_failed');
  assert.match(String(line?.curl), /certificate|SSL/i, `a certificate verification failure: ${line?.curl}`);
  // The good resource still works after all the failures.
  const good = await post(`${tlsBroker.url}/tls`, await tlsToken('/tls'), rpc(12));
  assert.equal(good.status, 200, good.text);
  await assertHealthy(tlsBroker, 'TLS failures');
});
