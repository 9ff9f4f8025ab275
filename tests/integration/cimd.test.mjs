// Client ID Metadata Documents (issue 6) and the registration policy.
//
// A local HTTPS server with a throwaway CA (tests/lib/tls.mjs) serves the
// documents; the brokers trust that CA (cimd_ca_file) and reach it through
// curl --resolve pins (cimd_resolve). Recording listeners on 127.0.0.1,
// 127.0.0.2 and ::1 prove that a refused client_id caused no connection to a
// forbidden address. Brokers:
//   A, B    two nodes on one database, 127.0.0.1/32 allowed (the positive cases,
//           the shared PostgreSQL cache, TTLs, bad documents, URL shapes)
//   strict  no private CIDR allowance, DCR off (addresses, DNS pins)
//   policy  host allow/deny lists, min TTL 60, DCR behind an initial access
//           token with a per-IP cap, no loopback or private-scheme redirects
//   off     CIMD and DCR both off
import { test, before, after } from 'node:test';
import nodeHttp from 'node:http';
import assert from 'node:assert/strict';
import { startIdp } from '../fakes/idp.mjs';
import { startBroker, createDatabase, freePort, key, http, psql, sleep, waitFor } from '../lib/harness.mjs';
import { upstreamConfig } from '../lib/nodes.mjs';
import { runFlow, exchangeCode, tokenRequest, authorizeUrl, browserGet, CookieJar, pkce } from '../lib/flow.mjs';
import { makeCa, startHttpsServer, startRecordingListener, jsonOfSize } from '../lib/tls.mjs';

const REDIRECT = 'http://127.0.0.1:33418/callback';
const HTTPS_REDIRECT = 'https://app.example.test/cb';
const IAT = 'iat-cimd-test-0123456789abcdef';
const TABLES = ['grants', 'tokens', 'auth_codes', 'users', 'clients', 'consents'];

let idp, ca, srv, rec1, rec2, rec6, otherCa, srv2;
let A, B, strict, policy, off;
const ADMIN = `admin-${key().replace(/[^A-Za-z0-9]/g, '')}`;
const cleanups = [];

const url = (p, host = 'client.example.test') => srv.url(p, host);
const escapeHtml = (s) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
  .replaceAll('"', '&quot;').replaceAll("'", '&#39;');

/** A valid document for path p (its client_id is its own URL). */
function doc(p, extra = {}) {
  return {
    client_id: url(p), client_name: 'CIMD Test App', redirect_uris: [REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none',
    client_uri: 'https://client.example.test/', logo_uri: 'https://client.example.test/logo.png',
    software_id: 'x-unknown-ok', x_vendor_extension: { nested: [1, 2, 3] }, // unknown fields are ignored
    ...extra,
  };
}

function routes() {
  const r = {};
  const jsonDoc = (p, headers = {}, extra = {}) => { r[p] = { json: doc(p, extra), headers }; };
  jsonDoc('/doc.json', { 'cache-control': 'public, max-age=300' });
  jsonDoc('/flow.json', { 'cache-control': 'max-age=300' });
  jsonDoc('/short.json', { 'cache-control': 'max-age=1' });
  jsonDoc('/huge.json', { 'cache-control': 'max-age=99999999999' });
  jsonDoc('/nostore.json', { 'cache-control': 'no-store' });
  jsonDoc('/plain.json'); // no Cache-Control
  jsonDoc('/disabled.json', { 'cache-control': 'max-age=1' });
  jsonDoc('/xss.json', {}, { client_name: '<script>alert(1)</script><img src=x onerror=alert(2)>' });
  jsonDoc('/https-doc.json', { 'cache-control': 'max-age=1' }, { redirect_uris: [HTTPS_REDIRECT] });
  jsonDoc('/no-method.json', {}, { token_endpoint_auth_method: undefined });
  jsonDoc('/mismatch.json', {}, { client_id: url('/doc.json') });
  jsonDoc('/pkjwt.json', {}, { token_endpoint_auth_method: 'private_key_jwt' });
  jsonDoc('/secret-basic.json', {}, { token_endpoint_auth_method: 'client_secret_basic' });
  jsonDoc('/no-redirects.json', {}, { redirect_uris: undefined });
  jsonDoc('/empty-redirects.json', {}, { redirect_uris: [] });
  jsonDoc('/bad-redirect.json', {}, { redirect_uris: ['http://evil.example.com/cb'] });
  jsonDoc('/bad-grant.json', {}, { grant_types: ['client_credentials'] });
  // Exactly 5 KiB is accepted; one byte more is not.
  const padded = (p, size) => {
    const base = JSON.stringify({ ...doc(p), pad: '' });
    r[p] = { json: JSON.stringify({ ...doc(p), pad: 'p'.repeat(size - base.length) }) };
    assert.equal(Buffer.byteLength(r[p].json), size);
  };
  padded('/exact5k.json', 5120);
  padded('/over5k.json', 5121);
  r['/big.json'] = { big: 6 * 1024 };
  r['/big-chunked.json'] = { big: 6 * 1024, chunked: true };
  r['/page.html'] = { html: '<!doctype html><title>hi</title><p>not a document</p>' };
  r['/html-doc.json'] = { body: JSON.stringify(doc('/html-doc.json')), contentType: 'text/html' };
  r['/jsonp.json'] = { body: JSON.stringify(doc('/jsonp.json')), contentType: 'application/jsonp' };
  r['/no-ctype.json'] = { body: JSON.stringify(doc('/no-ctype.json')) };
  r['/array.json'] = { json: '[1,2,3]' };
  r['/broken.json'] = { json: '{"client_id": ' };
  r['/dup.json'] = { json: `{"client_id":"${url('/dup.json')}","client_id":"${url('/dup.json')}","redirect_uris":["${REDIRECT}"]}` };
  r['/hang.json'] = { hang: true };
  r['/gone.json'] = { json: doc('/gone.json'), status: 404 };
  r['/redirect-forbidden.json'] = { redirect: `https://127.0.0.2:${rec2.port}/doc.json` };
  r['/redirect-meta.json'] = { redirect: 'https://169.254.169.254/latest/meta-data/', status: 301 };
  r['/redirect-same.json'] = { redirect: url('/doc.json'), status: 307 };
  return r;
}

/** Row counts of the OAuth tables (one psql call); with clientId also
 * row: how many clients rows carry that id. */
async function counts(db, clientId) {
  const q = TABLES.map((t) => `(SELECT count(*) FROM ${t})`);
  if (clientId !== undefined) q.push(`(SELECT count(*) FROM clients WHERE client_id = '${clientId.replaceAll("'", "''")}')`);
  const v = (await psql(db, `SELECT ${q.join(', ')}`)).split('|').map(Number);
  const out = Object.fromEntries(TABLES.map((t, i) => [t, v[i]]));
  if (clientId !== undefined) out.row = v[TABLES.length];
  return out;
}

function baseCfg({ port, db, publicUrl, registration, limits = {}, shared = {} }) {
  return {
    listen: `127.0.0.1:${port}`,
    public_url: publicUrl || `http://127.0.0.1:${port}`,
    database_url: db,
    encryption_keys: [{ id: 'k1', key: key() }],
    cookie_secret: key(),
    http: { threads: 4, drain_timeout_s: 2 },
    database: { pool_size: 4, connect_timeout_s: 2 },
    limits: { register_per_ip_per_hour: 0, ...limits },
    registration,
    upstreams: upstreamConfig(idp),
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: 'http://127.0.0.1:9/mcp',
      scopes: { 'issues:read': ['list_issues'], 'issues:write': ['*'] }, default_scopes: ['issues:read'] }],
    ...shared,
  };
}

async function startEnv(name, registration, opts = {}) {
  const db = await createDatabase(`cimd_${name}`);
  const port = await freePort();
  const broker = await startBroker(baseCfg({ port, db, registration, ...opts }));
  cleanups.push(() => broker.stop('SIGKILL'));
  return { name, broker, url: broker.url, db };
}

before(async () => {
  ca = await makeCa();
  cleanups.push(() => ca.cleanup());
  rec1 = await startRecordingListener({ host: '127.0.0.1' });
  rec2 = await startRecordingListener({ host: '127.0.0.2' });
  rec6 = await startRecordingListener({ host: '::1' });
  srv = await startHttpsServer({ cert: ca.serverCert, key: ca.serverKey });
  // A server whose certificate comes from a CA the brokers do not trust.
  otherCa = await makeCa({ sans: ['DNS:untrusted.example.test'] });
  cleanups.push(() => otherCa.cleanup());
  srv2 = await startHttpsServer({ cert: otherCa.serverCert, key: otherCa.serverKey });
  cleanups.push(() => Promise.all([rec1.close(), rec2.close(), rec6.close(), srv.close(), srv2.close()]));
  Object.assign(srv.routes, routes());
  srv2.routes['/doc.json'] = { json: { ...doc('/doc.json'), client_id: srv2.url('/doc.json', 'untrusted.example.test') } };
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());

  const pin = `client.example.test:${srv.port}:127.0.0.1`;
  // A and B: two nodes behind one public_url, sharing database and keys.
  const db = await createDatabase('cimd_ab');
  const [pa, pb] = [await freePort(), await freePort()];
  const shared = {
    public_url: `http://127.0.0.1:${pa}`, encryption_keys: [{ id: 'k1', key: key() }], cookie_secret: key(),
    admin_tokens: [ADMIN],
  };
  const reg = {
    dynamic: true, client_id_metadata_documents: true, cimd_ca_file: ca.caCert,
    cimd_resolve: [pin, `nosan.example.test:${srv.port}:127.0.0.1`, `untrusted.example.test:${srv2.port}:127.0.0.1`],
    cimd_allow_private_cidrs: ['127.0.0.1/32'],
    cimd_deny_hosts: ['evil.example.test', '*.blocked.example.test'], // and no allow list
    cimd_timeout_ms: 1000, cimd_min_ttl_s: 0, cimd_max_ttl_s: 600,
  };
  // The fetch never uses a proxy, whatever the environment says.
  const env = { https_proxy: `http://127.0.0.1:${rec1.port}`, HTTPS_PROXY: `http://127.0.0.1:${rec1.port}` };
  const ba = await startBroker(baseCfg({ port: pa, db, registration: reg, shared }), { env });
  cleanups.push(() => ba.stop('SIGKILL'));
  const bb = await startBroker(baseCfg({ port: pb, db, registration: reg, shared }), { env });
  cleanups.push(() => bb.stop('SIGKILL'));
  A = { name: 'A', broker: ba, url: ba.url, db };
  B = { name: 'B', broker: bb, url: bb.url, db };

  strict = await startEnv('strict', {
    dynamic: false, client_id_metadata_documents: true, cimd_ca_file: ca.caCert,
    cimd_resolve: [
      pin,
      `evil.example.test:${rec1.port}:127.0.0.1`,
      `evil6.example.test:${rec6.port}:[::1]`,
      `ten.example.test:${rec1.port}:10.0.0.1`,
      `meta.example.test:${rec1.port}:169.254.169.254`,
      `mapped.example.test:${rec1.port}:[::ffff:127.0.0.1]`,
    ],
    cimd_timeout_ms: 5000,
  }, { shared: { http: { threads: 1, drain_timeout_s: 2 } } }); // one worker thread: see the last_error test
  policy = await startEnv('policy', {
    dynamic: true, initial_access_token: IAT, client_id_metadata_documents: true, cimd_ca_file: ca.caCert,
    cimd_resolve: [pin, `evil.example.test:${srv.port}:127.0.0.1`], cimd_allow_private_cidrs: ['127.0.0.1/32'],
    cimd_allow_hosts: ['*.example.test', 'exact.example.org'], cimd_deny_hosts: ['evil.example.test', '*.blocked.example.test'],
    allow_loopback_redirects: false, allow_private_schemes: false,
  }, { limits: { register_per_ip_per_hour: 2 } });
  off = await startEnv('off', { dynamic: false, client_id_metadata_documents: false });
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function authorize(env, clientId, { redirectUri = REDIRECT, jar = new CookieJar() } = {}) {
  const p = pkce();
  return browserGet(authorizeUrl(env.url, {
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, code_challenge: p.challenge,
    code_challenge_method: 'S256', state: 'st-1',
  }), jar);
}

/** GET over a new TCP connection (no keep-alive reuse): a pooled connection
 * could belong to a busy worker thread of the broker. */
function freshGet(u, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const req = nodeHttp.get(u, { agent: false, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, text, headers: { get: (k) => res.headers[k.toLowerCase()] ?? null } }));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${u}`)));
    req.on('error', reject);
  });
}
const authorizeFresh = (env, clientId) => freshGet(authorizeUrl(env.url, {
  response_type: 'code', client_id: clientId, redirect_uri: REDIRECT, code_challenge: pkce().challenge,
  code_challenge_method: 'S256', state: 'st-1',
}));

const fetchLogs = (env) => env.broker.logs().filter((l) => l.includes('"event":"cimd.fetch"')).map((l) => JSON.parse(l));

function assertErrorPage(res, status, title, message) {
  assert.equal(res.status, status, `${res.status} ${res.text.slice(0, 400)}`);
  assert.equal(res.headers.get('location'), null, 'an error page never redirects');
  assert.match(res.headers.get('content-type') || '', /^text\/html/);
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.match(res.headers.get('cache-control') || '', /no-store/);
  assert.ok(res.text.includes(`<h1>${escapeHtml(title)}</h1>`), `title ${title} in ${res.text.slice(0, 400)}`);
  assert.ok(res.text.includes(`<p>${escapeHtml(message)}</p>`), `"${message}" in ${res.text.slice(0, 600)}`);
}

/**
 * The client_id is refused at /authorize (400 error page with why) and at
 * /token (401 invalid_client); nothing is written; the node stays ready.
 * fetch: true when the broker may have fetched (an allowed address),
 * false when it must not even have tried (no cimd.fetch log line), or
 * 'refused' when it tried and refused before connecting.
 */
async function assertRefused(env, clientId, why, { fetch = true, title = 'Unknown client', redirectUri } = {}) {
  const before = await counts(env.db);
  const logsBefore = fetchLogs(env).length;
  const conns = { srv: srv.connections, rec1: rec1.connections.length, rec2: rec2.connections.length, rec6: rec6.connections.length };
  const res = await authorize(env, clientId, { redirectUri });
  assertErrorPage(res, 400, title, why);
  const tok = await tokenRequest(env.url, { grant_type: 'authorization_code', code: 'mcpb_ac_nope', code_verifier: 'v'.repeat(43),
    redirect_uri: REDIRECT, client_id: clientId });
  assert.equal(tok.status, 401, `${clientId} at /token: ${tok.status} ${tok.text}`);
  assert.equal(tok.json?.error, 'invalid_client', tok.text);
  const { row, ...after } = await counts(env.db, clientId);
  assert.deepEqual(after, before, 'nothing may be half-written');
  assert.equal(row, 0, `a clients row for ${clientId}`);
  const r = await http(`${env.url}/readyz`);
  assert.equal(r.status, 200, `readyz ${r.status}`);
  // No listener on a forbidden address was ever reached.
  assert.equal(rec1.connections.length, conns.rec1, `127.0.0.1 listener reached by ${clientId}`);
  assert.equal(rec2.connections.length, conns.rec2, `127.0.0.2 listener reached by ${clientId}`);
  assert.equal(rec6.connections.length, conns.rec6, `::1 listener reached by ${clientId}`);
  const fetched = fetchLogs(env).slice(logsBefore);
  if (fetch === false) {
    assert.equal(fetched.length, 0, `no fetch may be attempted for ${clientId}`);
    assert.equal(srv.connections, conns.srv, `no connection to the document server for ${clientId}`);
  } else if (fetch === 'refused') {
    assert.ok(fetched.length >= 1 && fetched.every((f) => f.result === 'refused' && f.status === 0),
      JSON.stringify(fetched));
    assert.equal(srv.connections, conns.srv, `no connection to the document server for ${clientId}`);
  }
  return { res, fetched };
}

// ---- positive ---------------------------------------------------------------

test('metadata advertises exactly what each broker enables', async () => {
  const m = async (env) => (await http(`${env.url}/.well-known/oauth-authorization-server`)).json;
  const ma = await m(A);
  assert.equal(ma.client_id_metadata_document_supported, true);
  assert.equal(ma.registration_endpoint, `${A.url}/register`);
  assert.ok(ma.token_endpoint_auth_methods_supported.includes('none'));
  const ms = await m(strict);
  assert.equal(ms.client_id_metadata_document_supported, true);
  assert.equal(ms.registration_endpoint, undefined, 'DCR off: no registration_endpoint');
  const mp = await m(policy);
  assert.equal(mp.client_id_metadata_document_supported, true);
  assert.equal(mp.registration_endpoint, `${policy.url}/register`);
  const mo = await m(off);
  assert.equal(mo.client_id_metadata_document_supported, false);
  assert.equal(mo.registration_endpoint, undefined);
  // openid-configuration says the same.
  const oo = (await http(`${off.url}/.well-known/openid-configuration`)).json;
  assert.equal(oo.client_id_metadata_document_supported, false);
  assert.equal(oo.registration_endpoint, undefined);
});

test('a valid document: consent names its host, one fetch, the second node uses the PostgreSQL cache, the flow completes', async () => {
  const id = url('/flow.json');
  const host = `client.example.test:${srv.port}`;
  const conns = srv.connections;
  const a = await authorize(A, id);
  assert.equal(a.status, 200, a.text.slice(0, 400));
  assert.ok(a.text.includes(`This application is described by <span class="host">${host}</span>`), a.text);
  assert.ok(a.text.includes('<strong>CIMD Test App</strong>'), 'the document\'s client_name');
  assert.ok(a.text.includes(`Client ID: <code>${escapeHtml(id)}</code>`));
  assert.equal(srv.hits('/flow.json'), 1, 'fetched once');
  assert.equal(srv.connections, conns + 1, 'one TLS connection');
  const req = srv.requests.filter((r) => r.path === '/flow.json')[0];
  assert.equal(req.method, 'GET');
  assert.match(req.headers.accept, /application\/json/);
  assert.equal(req.headers.host, host);
  const row = await psql(A.db, `SELECT kind, client_name, array_to_string(redirect_uris, ' '), token_endpoint_auth_method,
    ((metadata->>'x_vendor_extension') IS NOT NULL)::text, round(extract(epoch FROM cimd_expires_at - now())) FROM clients WHERE client_id = '${id}'`);
  const [kind, name, uris, method, kept, ttl] = row.split('|');
  assert.deepEqual([kind, name, uris, method, kept], ['cimd', 'CIMD Test App', REDIRECT, 'none', 'true']);
  assert.ok(Number(ttl) > 290 && Number(ttl) <= 300, `max-age=300 honoured: ${ttl}`);

  // Node B: served from the shared cache (no second fetch).
  const b = await authorize(B, id);
  assert.equal(b.status, 200, b.text.slice(0, 400));
  assert.ok(b.text.includes(`<span class="host">${host}</span>`));
  assert.equal(srv.hits('/flow.json'), 1, 'node B used the PostgreSQL cache');

  // The whole flow on B (consent posts to the public_url, node A), code exchanged at B.
  const f = await runFlow({ broker: B.url, clientId: id, redirectUri: REDIRECT, login: 'alice' });
  assert.ok(f.code, `flow: ${JSON.stringify(Object.fromEntries(Object.entries(f.steps).map(([k, v]) => [k, [v.status, v.text.slice(0, 200)]])))}`);
  assert.ok(f.location.startsWith(REDIRECT));
  assert.equal(f.iss, A.url);
  const t = await exchangeCode(B.url, { clientId: id, code: f.code, verifier: f.verifier, redirectUri: REDIRECT });
  assert.equal(t.status, 200, t.text);
  assert.ok(t.json.access_token.startsWith('mcpb_at_'));
  assert.ok(t.json.refresh_token.startsWith('mcpb_rt_'));
  // Refresh at A: a public client, no secret.
  const r = await tokenRequest(A.url, { grant_type: 'refresh_token', refresh_token: t.json.refresh_token, client_id: id });
  assert.equal(r.status, 200, r.text);
  assert.equal(await psql(A.db, `SELECT count(*) FROM grants WHERE client_id = '${id}'`), '1');
  assert.equal(srv.hits('/flow.json'), 1, 'the document was fetched exactly once for the whole flow on two nodes');
  // A public CIMD client has no secret to present.
  const withSecret = await tokenRequest(A.url, { grant_type: 'refresh_token', refresh_token: r.json.refresh_token, client_id: id, client_secret: 'x' });
  assert.equal(withSecret.status, 401, withSecret.text);
  assert.equal(withSecret.json.error, 'invalid_client');
  assert.ok(!A.broker.logText().includes('mcpb_at_') && !B.broker.logText().includes('mcpb_rt_'));
});

test('the redirect_uri must be one of the document\'s', async () => {
  const id = url('/doc.json');
  assert.equal((await authorize(A, id)).status, 200);
  const before = await counts(A.db);
  for (const ru of ['https://attacker.example.com/cb', 'http://127.0.0.1:33418/other', 'http://localhost.evil.com/callback']) {
    const res = await authorize(A, id, { redirectUri: ru });
    assertErrorPage(res, 400, 'Invalid redirect URI', 'The redirect URI is not registered for this application.');
  }
  // Loopback: any port (RFC 8252).
  assert.equal((await authorize(A, id, { redirectUri: 'http://127.0.0.1:5555/callback' })).status, 200);
  assert.deepEqual(await counts(A.db), before);
  assert.equal(srv.hits('/doc.json'), 1);
});

test('Cache-Control is honoured within [min, max]: max-age=1 refetches after expiry, huge max-age is capped, no-store refetches', async () => {
  const short = url('/short.json');
  assert.equal((await authorize(A, short)).status, 200);
  assert.equal((await authorize(B, short)).status, 200);
  assert.equal(srv.hits('/short.json'), 1, 'fresh for one second');
  await sleep(1300);
  assert.equal((await authorize(B, short)).status, 200);
  assert.equal(srv.hits('/short.json'), 2, 'refetched after max-age');
  assert.equal(await psql(A.db, `SELECT count(*) FROM clients WHERE client_id = '${short}'`), '1', 'the cache row is updated, not duplicated');

  const huge = url('/huge.json');
  assert.equal((await authorize(A, huge)).status, 200);
  const ttl = Number(await psql(A.db, `SELECT extract(epoch FROM cimd_expires_at - now()) FROM clients WHERE client_id = '${huge}'`));
  assert.ok(ttl > 590 && ttl <= 600, `capped at cimd_max_ttl_s 600: ${ttl}`);

  const plain = url('/plain.json');
  assert.equal((await authorize(A, plain)).status, 200);
  const ttlPlain = Number(await psql(A.db, `SELECT extract(epoch FROM cimd_expires_at - now()) FROM clients WHERE client_id = '${plain}'`));
  assert.ok(ttlPlain > 590 && ttlPlain <= 600, `no Cache-Control: default lifetime, capped: ${ttlPlain}`);

  const ns = url('/nostore.json');
  assert.equal((await authorize(A, ns)).status, 200);
  assert.equal((await authorize(B, ns)).status, 200);
  assert.equal(srv.hits('/nostore.json'), 2, 'no-store with cimd_min_ttl_s 0: fetched every time');

  // cimd_min_ttl_s (60 by default) raises a short max-age.
  const p = url('/https-doc.json');
  const res = await authorize(policy, p, { redirectUri: HTTPS_REDIRECT });
  assert.equal(res.status, 200, res.text.slice(0, 300));
  const ttlMin = Number(await psql(policy.db, `SELECT extract(epoch FROM cimd_expires_at - now()) FROM clients WHERE client_id = '${p}'`));
  assert.ok(ttlMin > 50 && ttlMin <= 60, `raised to cimd_min_ttl_s 60: ${ttlMin}`);
});

test('an operator-disabled CIMD client stays refused on every node, also after its document is refetched', async () => {
  const id = url('/disabled.json');
  assert.equal((await authorize(A, id)).status, 200);
  const r = await http(`${B.url}/admin/v1/revoke`, { method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ client_id: id, disable_client: true }) });
  assert.equal(r.status, 200, r.text);
  const generic = 'The application that sent you here is not registered.';
  assertErrorPage(await authorize(A, id), 400, 'Unknown client', generic);
  assertErrorPage(await authorize(B, id), 400, 'Unknown client', generic);
  assert.equal(srv.hits('/disabled.json'), 1);
  await sleep(1300); // max-age=1: the next lookup refetches
  assertErrorPage(await authorize(B, id), 400, 'Unknown client', generic);
  assert.equal(srv.hits('/disabled.json'), 2, 'refetched');
  assert.equal(await psql(A.db, `SELECT disabled_at IS NOT NULL FROM clients WHERE client_id = '${id}'`), 't');
});

test('the document\'s client_name is shown escaped, beside the host', async () => {
  const res = await authorize(A, url('/xss.json'));
  assert.equal(res.status, 200, res.text.slice(0, 300));
  assert.ok(!res.text.includes('<script>') && !res.text.includes('<img'), 'raw markup from the document');
  assert.ok(res.text.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
  assert.ok(res.text.includes(`<span class="host">client.example.test:${srv.port}</span>`));
  assert.match(res.headers.get('content-security-policy'), /default-src 'none'/);
});

test('a document of exactly 5 KiB and one without token_endpoint_auth_method are accepted', async () => {
  assert.equal((await authorize(A, url('/exact5k.json'))).status, 200);
  assert.equal((await authorize(A, url('/no-method.json'))).status, 200);
});

// ---- the client_id URL itself -----------------------------------------------

test('URL shapes: http, no path, fragment, credentials, query — refused before any connection', async () => {
  const h = `client.example.test:${srv.port}`;
  const cases = [
    [`http://${h}/doc.json`, 'the client_id URL must be https'],
    [`HTTP://${h}/doc.json`, 'the client_id URL must be https'],
    [`https://${h}`, 'the client_id URL must have a path'],
    [`https://${h}/`, 'the client_id URL must have a path'],
    [`https://${h}/doc.json#frag`, 'the client_id URL must not have a fragment'],
    [`https://${h}/doc.json#`, 'the client_id URL must not have a fragment'],
    [`https://user:pw@${h}/doc.json`, 'the client_id URL must not contain credentials'],
    [`https://user@${h}/doc.json`, 'the client_id URL must not contain credentials'],
    [`https://${h}/doc.json?x=1`, 'the client_id URL must not have a query'],
    [`https://${h}/doc.json?`, 'the client_id URL must not have a query'],
    ['https:///doc.json', 'the client_id URL must have a path'], // curl reads the host "doc.json"
    [`https://exa mple.test:${srv.port}/doc.json`, 'the client_id is not a valid URL'],
  ];
  for (const [id, why] of cases) await assertRefused(A, id, why, { fetch: false });
});

// clients.c keeps the CIMD refusal reason in a thread-local (last_error)
// that only /authorize reads and clears. A lookup that does not set it (an
// over-long id, an opaque unknown id) must not show the reason left behind
// by an earlier request on the same worker thread (here a /token lookup).
// The strict broker has one worker thread, so this is deterministic.
test('a refusal reason never leaks into a later request on the same thread', async () => {
  const stale = async () => {
    const t = await tokenRequest(strict.url, { grant_type: 'authorization_code', code: 'mcpb_ac_x', code_verifier: 'v'.repeat(43),
      redirect_uri: REDIRECT, client_id: 'https://exa mple.test/doc.json' });
    assert.equal(t.status, 401, t.text);
  };
  const generic = 'The application that sent you here is not registered.';
  await stale();
  // Over LIM_CLIENT_ID (512), clients_lookup refuses any id before CIMD sees it.
  assertErrorPage(await authorize(strict, `https://client.example.test/${'a'.repeat(600)}`), 400, 'Unknown client', generic);
  await stale();
  assertErrorPage(await authorize(strict, 'no-such-client'), 400, 'Unknown client', generic);
});

test('CIMD disabled: a URL client_id is an unknown client, never fetched', async () => {
  await assertRefused(off, url('/doc.json'), 'this server does not accept URL client identifiers', { fetch: false });
  const r = await http(`${off.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' }) });
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.error, 'access_denied');
  assert.equal(await psql(off.db, 'SELECT count(*) FROM clients'), '0');
});

test('forbidden addresses as IP literals: refused without a connection attempt', async () => {
  const forbidden = 'the client_id host resolves to a forbidden address';
  for (const host of [`127.0.0.1:${rec1.port}`, `10.0.0.1:${rec1.port}`, `169.254.169.254:${rec1.port}`, `[::1]:${rec6.port}`,
    `[::ffff:127.0.0.1]:${rec1.port}`, `[fe80::1]:${rec1.port}`, `100.64.0.1:${rec1.port}`, `192.168.1.1:${rec1.port}`,
    `224.0.0.1:${rec1.port}`, `0.0.0.0:${rec1.port}`, `[fd00::1]:${rec1.port}`]) {
    await assertRefused(strict, `https://${host}/doc.json`, forbidden, { fetch: false });
  }
  // Other spellings of 127.0.0.1 are refused too, at the latest when connecting.
  for (const host of [`127.1:${rec1.port}`, `2130706433:${rec1.port}`, `0x7f000001:${rec1.port}`]) {
    await assertRefused(strict, `https://${host}/doc.json`, forbidden, { fetch: undefined });
  }
  assert.equal(rec1.connections.length, 0);
  assert.equal(rec6.connections.length, 0);
});

test('forbidden addresses through DNS names: the connect-time check refuses, the listener sees nothing', async () => {
  const forbidden = 'the client_id host resolves to a forbidden address';
  for (const h of [`evil.example.test:${rec1.port}`, `evil6.example.test:${rec6.port}`, `ten.example.test:${rec1.port}`,
    `meta.example.test:${rec1.port}`, `mapped.example.test:${rec1.port}`]) {
    await assertRefused(strict, `https://${h}/doc.json`, forbidden, { fetch: 'refused' });
  }
  // The real document server behind a name resolving to 127.0.0.1: refused
  // on a broker without the testing allowance, no connection.
  await assertRefused(strict, url('/doc.json'), forbidden, { fetch: 'refused' });
  assert.equal(rec1.connections.length, 0, 'the 127.0.0.1 listener recorded no connection');
  assert.equal(rec6.connections.length, 0, 'the ::1 listener recorded no connection');
  // The allowance is a CIDR: 127.0.0.2 is still forbidden on A.
  const r = await assertRefused(A, `https://127.0.0.2:${rec2.port}/doc.json`, forbidden, { fetch: false });
  void r;
  assert.equal(rec2.connections.length, 0);
});

test('redirects are never followed, even to an allowed address', async () => {
  const why = 'the client metadata URL redirects';
  for (const p of ['/redirect-forbidden.json', '/redirect-meta.json', '/redirect-same.json']) {
    const before = srv.hits('/doc.json');
    await assertRefused(A, url(p), why);
    // Once per lookup (/authorize, then /token): a refused document is not cached.
    assert.equal(srv.hits(p), 2, `${p} requested once per lookup`);
    assert.equal(srv.hits('/doc.json'), before, `${p}: the Location was not followed`);
  }
  assert.equal(rec2.connections.length, 0, 'the 127.0.0.2 listener (the redirect target) recorded no connection');
});

// ---- bad documents -----------------------------------------------------------

test('bad documents: size, content type, status, JSON, timeout', async () => {
  await assertRefused(A, url('/big.json'), 'the client metadata document is too large');
  await assertRefused(A, url('/big-chunked.json'), 'the client metadata document is too large');
  await assertRefused(A, url('/over5k.json'), 'the client metadata document is too large');
  await assertRefused(A, url('/page.html'), 'the client metadata document is not application/json');
  await assertRefused(A, url('/html-doc.json'), 'the client metadata document is not application/json');
  await assertRefused(A, url('/jsonp.json'), 'the client metadata document is not application/json');
  await assertRefused(A, url('/no-ctype.json'), 'the client metadata document is not application/json');
  await assertRefused(A, url('/gone.json'), 'the client metadata URL did not answer 200');
  await assertRefused(A, url('/array.json'), 'the client metadata document is not a JSON object');
  await assertRefused(A, url('/broken.json'), 'the client metadata document is not a JSON object');
  await assertRefused(A, url('/dup.json'), 'the client metadata document is not a JSON object');
  // Never answers: bounded by cimd_timeout_ms (1000).
  const hits = srv.hits('/hang.json');
  const t0 = Date.now();
  const res = await authorize(A, url('/hang.json'));
  const ms = Date.now() - t0;
  assertErrorPage(res, 400, 'Unknown client', 'the client metadata document did not arrive in time');
  assert.ok(ms >= 900 && ms < 5000, `bounded by the timeout: ${ms} ms`);
  assert.equal(srv.hits('/hang.json'), hits + 1, 'the request reached the server, which never answered');
  await assertRefused(A, url('/hang.json'), 'the client metadata document did not arrive in time');
});

// A document host that never answers holds a worker thread and a database
// connection for cimd_timeout_ms; an anonymous party choosing such a host
// must not stall the node. A and B have 4 workers and 4 connections: at most
// 2 fetches run at once, the others are answered 503 at once. Requests go
// one by one on new connections, each sent once the previous one is either
// fetching (its worker is inside curl, so it cannot accept the next one) or
// answered; so each lands on an idle worker and the outcome is deterministic.
test('a tarpit document host cannot stall the node: concurrent fetches are capped', async () => {
  const id = url('/hang.json');
  const before = srv.hits('/hang.json');
  const t0 = Date.now();
  const pending = [];
  for (let i = 0; i < 4; i++) {
    const h = srv.hits('/hang.json');
    let answered = false;
    pending.push(authorizeFresh(A, id).then((r) => { answered = true; return { r, ms: Date.now() - t0 }; }));
    assert.ok(await waitFor(() => answered || srv.hits('/hang.json') > h, 800, 5), `request ${i + 1} neither fetched nor answered`);
  }
  // Without a cap all 4 workers would now sit in curl for the 1 s timeout,
  // and these would be answered only after the first fetch gave up.
  const health = await freshGet(`${A.url}/healthz`);
  const healthMs = Date.now() - t0;
  const other = await authorizeFresh(A, 'no-such-client');
  const otherMs = Date.now() - t0;
  const done = await Promise.all(pending);
  assert.deepEqual(done.map(({ r }) => r.status), [400, 400, 503, 503]);
  const firstTimeout = Math.min(done[0].ms, done[1].ms);
  assert.equal(health.status, 200);
  assert.ok(healthMs < firstTimeout, `/healthz answered at ${healthMs} ms, before the first fetch ended (${firstTimeout} ms)`);
  assertErrorPage(other, 400, 'Unknown client', 'The application that sent you here is not registered.');
  assert.ok(otherMs < firstTimeout, `an ordinary /authorize answered at ${otherMs} ms, before ${firstTimeout} ms`);
  for (const { r } of done.slice(0, 2)) assertErrorPage(r, 400, 'Unknown client', 'the client metadata document did not arrive in time');
  for (const { r, ms } of done.slice(2)) {
    assertErrorPage(r, 503, 'Temporarily unavailable', 'Please try again in a moment.');
    assert.ok(ms < firstTimeout, `refused at once (${ms} ms), not after a fetch (${firstTimeout} ms)`);
  }
  assert.equal(srv.hits('/hang.json') - before, 2, 'two fetches, no more');
  assert.equal((await http(`${A.url}/readyz`)).status, 200);
  assert.ok(A.broker.logText().includes('"event":"cimd.busy"'));
});

test('bad documents: client_id mismatch, redirect_uris, auth method, grant types', async () => {
  await assertRefused(A, url('/mismatch.json'), "the document's client_id differs from its URL");
  await assertRefused(A, url('/no-redirects.json'), 'the document has no valid redirect_uris');
  await assertRefused(A, url('/empty-redirects.json'), 'the document has no valid redirect_uris');
  await assertRefused(A, url('/bad-redirect.json'), "the document's redirect_uris are not acceptable");
  await assertRefused(A, url('/pkjwt.json'), 'private_key_jwt needs exactly one of jwks and jwks_uri');
  await assertRefused(A, url('/secret-basic.json'), 'token_endpoint_auth_method must be "none" or "private_key_jwt"');
  await assertRefused(A, url('/bad-grant.json'), "the document's grant_types are not acceptable");
  // Same rules as DCR: loopback redirects are refused where the policy says so.
  await assertRefused(policy, url('/doc.json'), "the document's redirect_uris are not acceptable");
});

// ---- policy ------------------------------------------------------------------

test('the certificate is verified: wrong name, untrusted CA', async () => {
  const why = 'the client metadata document could not be fetched';
  const hits = srv.requests.length;
  await assertRefused(A, url('/doc.json', 'nosan.example.test'), why);
  assert.equal(srv.requests.length, hits, 'no HTTP request after a name mismatch');
  await assertRefused(A, srv2.url('/doc.json', 'untrusted.example.test'), why);
  assert.ok(srv2.connections >= 1, 'the untrusted server was contacted');
  assert.equal(srv2.requests.length, 0, 'but no request was sent over the unverified connection');
});

test('deny list without an allow list, trailing dots and case included', async () => {
  const why = 'the client_id host is not allowed by policy';
  for (const h of ['evil.example.test', 'evil.example.test.', 'EVIL.Example.TEST', 'x.blocked.example.test',
    'x.blocked.example.test.', 'X.BLOCKED.example.test']) {
    await assertRefused(A, `https://${h}:${srv.port}/doc.json`, why, { fetch: false });
  }
});

test('host allow and deny lists with wildcards', async () => {
  const why = 'the client_id host is not allowed by policy';
  // evil.example.test matches the allow wildcard but the deny list wins.
  await assertRefused(policy, `https://evil.example.test:${srv.port}/doc.json`, why, { fetch: false });
  await assertRefused(policy, `https://x.blocked.example.test:${srv.port}/doc.json`, why, { fetch: false });
  await assertRefused(policy, `https://a.b.blocked.example.test:${srv.port}/doc.json`, why, { fetch: false });
  // Not in the allow list: the bare parent of a wildcard, another domain, a suffix trick.
  await assertRefused(policy, `https://example.test:${srv.port}/doc.json`, why, { fetch: false });
  await assertRefused(policy, `https://client.example.org:${srv.port}/doc.json`, why, { fetch: false });
  await assertRefused(policy, `https://client.example.test.evil.org:${srv.port}/doc.json`, why, { fetch: false });
  await assertRefused(policy, `https://notexample.test:${srv.port}/doc.json`, why, { fetch: false });
  await assertRefused(policy, `https://127.0.0.1:${srv.port}/doc.json`, why, { fetch: false });
  // client.example.test matches "*.example.test" (and resolves where the testing allowance permits).
  const res = await authorize(policy, url('/https-doc.json'), { redirectUri: HTTPS_REDIRECT });
  assert.equal(res.status, 200, res.text.slice(0, 300));
  assert.ok(res.text.includes(`<span class="host">client.example.test:${srv.port}</span>`));
});

test('DCR policy: initial access token, redirect URI rules, per-IP cap', async () => {
  const reg = (body, headers = {}) => http(`${policy.url}/register`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  const good = { redirect_uris: [HTTPS_REDIRECT], token_endpoint_auth_method: 'none', client_name: 'dcr' };
  const dyn = () => psql(policy.db, "SELECT count(*) FROM clients WHERE kind = 'dynamic'");
  const missing = await reg(good);
  assert.equal(missing.status, 401, missing.text);
  assert.equal(missing.json.error, 'invalid_token');
  assert.match(missing.headers.get('www-authenticate'), /^Bearer/);
  const wrong = await reg(good, { authorization: `Bearer ${IAT}-wrong` });
  assert.equal(wrong.status, 401, wrong.text);
  assert.equal(wrong.json.error, 'invalid_token');
  assert.equal(await dyn(), '0');
  const ok = { authorization: `Bearer ${IAT}` };
  for (const uri of ['http://127.0.0.1:5000/cb', 'http://localhost/cb', 'http://[::1]/cb',
    'cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback', 'com.example.app:/oauth2redirect']) {
    const r = await reg({ ...good, redirect_uris: [uri] }, ok);
    assert.equal(r.status, 400, `${uri}: ${r.text}`);
    assert.equal(r.json.error, 'invalid_redirect_uri', uri);
  }
  assert.equal(await dyn(), '0', 'refused registrations write nothing');
  const first = await reg(good, ok);
  assert.equal(first.status, 201, first.text);
  const second = await reg(good, ok);
  assert.equal(second.status, 201, second.text);
  const third = await reg(good, ok);
  assert.equal(third.status, 429, third.text);
  assert.ok(Number(third.headers.get('retry-after')) > 0);
  assert.equal(await dyn(), '2');
  // Over the cap, the token check still comes first.
  const noTok = await reg(good);
  assert.equal(noTok.status, 401);
  assert.ok(!policy.broker.logText().includes(IAT), 'the initial access token is never logged');
  assert.equal((await http(`${policy.url}/readyz`)).status, 200);
});

test('DCR off: /register refused, not advertised, nothing written', async () => {
  const r = await http(`${strict.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' }) });
  assert.equal(r.status, 403, r.text);
  assert.equal(r.json.error, 'access_denied');
  assert.equal(await psql(strict.db, 'SELECT count(*) FROM clients'), '0');
});

test('every node is healthy at the end and no refused document was cached', async () => {
  for (const env of [A, B, strict, policy, off]) {
    assert.equal((await http(`${env.url}/readyz`)).status, 200, env.name);
  }
  const ids = (await psql(A.db, "SELECT string_agg(client_id, ' ' ORDER BY client_id) FROM clients WHERE kind = 'cimd'")).split(' ');
  const expected = ['/disabled.json', '/doc.json', '/exact5k.json', '/flow.json', '/huge.json', '/no-method.json', '/nostore.json', '/plain.json', '/short.json', '/xss.json']
    .map((p) => url(p)).sort();
  assert.deepEqual(ids, expected);
  assert.equal(await psql(strict.db, 'SELECT count(*) FROM clients'), '0');
  assert.equal(rec1.connections.length + rec2.connections.length + rec6.connections.length, 0,
    'no connection ever reached a forbidden address');
});
