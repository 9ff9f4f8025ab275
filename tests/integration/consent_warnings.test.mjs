// The consent page's warnings (DESIGN 3.6) and application_type at DCR and
// in CIMD documents (SEP-837). The page says when the client's identity is
// unverified (dynamically registered, or a CIMD document from a host not in
// registration.cimd_trusted_hosts) and when every redirect URI of the client
// is on localhost. Documents are served over HTTPS from a throwaway CA
// (tests/lib/tls.mjs) reached through cimd_resolve pins, as in cimd.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startIdp, startOauthBroker, runCleanups, http, psql, unchanged, counts, assertReady, register, pkce, authorizeUrl,
  browserGet, CookieJar, STATIC_PUBLIC, LOOPBACK_REDIRECT, TABLES,
} from '../lib/oauth_setup.mjs';
import { makeCa, startHttpsServer } from '../lib/tls.mjs';

const UNVERIFIED = "<p class=\"warn\"><strong>Unverified application.</strong> This application's identity has not been verified by the operator of this service.</p>";
const LOCALHOST = '<p class="warn">This application will receive the authorization on this computer only (localhost).</p>';
const HTTPS_REDIRECT = 'https://app.example.test/cb';
const STATIC_LOOP = { client_id: 'static-loop', client_name: 'Static Loopback CLI', redirect_uris: ['http://127.0.0.1/cb', 'http://[::1]/cb'] };
const UNTRUSTED = 'client.example.test';
const TRUSTED = 'apps.trusted.example.test';

let idp, ca, srv, env;
const cleanups = [];
const docUrl = (p, host) => srv.url(p, host);

/** A CIMD document for path p on host, with overrides (undefined drops a key). */
function doc(p, host, extra = {}) {
  return { client_id: docUrl(p, host), client_name: `Doc ${p}`, redirect_uris: [LOOPBACK_REDIRECT], token_endpoint_auth_method: 'none', ...extra };
}

before(async () => {
  ca = await makeCa({ sans: [`DNS:${UNTRUSTED}`, `DNS:${TRUSTED}`] });
  cleanups.push(() => ca.cleanup());
  srv = await startHttpsServer({ cert: ca.serverCert, key: ca.serverKey });
  cleanups.push(() => srv.close());
  const routes = {};
  const put = (p, host, extra) => { routes[p] = { json: doc(p, host, extra) }; };
  put('/untrusted-loop.json', UNTRUSTED);
  put('/untrusted-web.json', UNTRUSTED, { redirect_uris: [HTTPS_REDIRECT], application_type: 'web' });
  put('/trusted-web.json', TRUSTED, { redirect_uris: [HTTPS_REDIRECT] });
  put('/trusted-loop.json', TRUSTED, { application_type: 'native' });
  put('/trusted-hostile.json', TRUSTED, { client_name: '<script>alert(1)</script>' });
  put('/web-loopback.json', TRUSTED, { application_type: 'web' });
  put('/web-scheme.json', TRUSTED, { application_type: 'web', redirect_uris: ['cursor://cb'] });
  put('/bad-type.json', TRUSTED, { application_type: 'browser' });
  put('/num-type.json', TRUSTED, { application_type: 7 });
  Object.assign(srv.routes, routes);
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  env = await startOauthBroker(idp, { patch: (cfg) => {
    Object.assign(cfg.registration, {
      client_id_metadata_documents: true, cimd_ca_file: ca.caCert, cimd_allow_private_cidrs: ['127.0.0.1/32'],
      cimd_resolve: [`${UNTRUSTED}:${srv.port}:127.0.0.1`, `${TRUSTED}:${srv.port}:127.0.0.1`],
      cimd_trusted_hosts: ['*.trusted.example.test'], cimd_min_ttl_s: 0,
    });
    cfg.clients.push(STATIC_LOOP);
  } });
  cleanups.push(() => env.stop());
});
after(() => runCleanups(cleanups));

/** The consent page for clientId and redirectUri (200 asserted). */
async function consent(clientId, redirectUri) {
  const page = await browserGet(authorizeUrl(env.url, {
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, code_challenge: pkce().challenge,
    code_challenge_method: 'S256', state: 'st', resource: `${env.url}/mcp`, scope: 'repo:read',
  }), new CookieJar());
  assert.equal(page.status, 200, `${clientId}: ${page.status} ${page.text.slice(0, 400)}`);
  assert.match(page.headers.get('content-type'), /^text\/html/);
  return page.text;
}

function assertWarnings(html, { unverified, localhost }, what) {
  assert.equal(html.includes(UNVERIFIED), unverified, `${what}: unverified warning ${unverified ? 'missing' : 'shown'}`);
  assert.equal(html.includes(LOCALHOST), localhost, `${what}: localhost warning ${localhost ? 'missing' : 'shown'}`);
  assert.equal((html.match(/class="warn"/g) || []).length, unverified + localhost, `${what}: no other warning`);
}

test('dynamically registered clients are unverified; loopback-only ones also say localhost', async () => {
  const loop = await register(env.url, { redirect_uris: [LOOPBACK_REDIRECT, 'http://localhost:8976/cb'], token_endpoint_auth_method: 'none', client_name: 'DCR Loop' });
  assert.equal(loop.status, 201, loop.text);
  assertWarnings(await consent(loop.json.client_id, LOOPBACK_REDIRECT), { unverified: true, localhost: true }, 'DCR loopback');
  const web = await register(env.url, { redirect_uris: [HTTPS_REDIRECT], token_endpoint_auth_method: 'none', client_name: 'DCR Web' });
  assert.equal(web.status, 201, web.text);
  assertWarnings(await consent(web.json.client_id, HTTPS_REDIRECT), { unverified: true, localhost: false }, 'DCR web');
  // One https URI among loopback ones: not "this computer only".
  const mixed = await register(env.url, { redirect_uris: [LOOPBACK_REDIRECT, HTTPS_REDIRECT], token_endpoint_auth_method: 'none' });
  assert.equal(mixed.status, 201, mixed.text);
  assertWarnings(await consent(mixed.json.client_id, LOOPBACK_REDIRECT), { unverified: true, localhost: false }, 'DCR mixed');
  // A private-use scheme goes to whichever app claimed it: not localhost.
  const scheme = await register(env.url, { redirect_uris: ['cursor://anysphere.cursor-retrieval/cb'], token_endpoint_auth_method: 'none' });
  assert.equal(scheme.status, 201, scheme.text);
  assertWarnings(await consent(scheme.json.client_id, 'cursor://anysphere.cursor-retrieval/cb'), { unverified: true, localhost: false }, 'DCR scheme');
});

test('a hostile client name is escaped beside the warnings', async () => {
  const name = '<script>alert(1)</script><p class="warn">verified by the operator</p>';
  const r = await register(env.url, { redirect_uris: [LOOPBACK_REDIRECT], token_endpoint_auth_method: 'none', client_name: name });
  assert.equal(r.status, 201, r.text);
  const html = await consent(r.json.client_id, LOOPBACK_REDIRECT);
  assert.ok(!html.includes('<script>') && !html.includes(name), 'the name is never raw HTML');
  assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;&lt;p class=&quot;warn&quot;&gt;'), html.slice(0, 800));
  assertWarnings(html, { unverified: true, localhost: true }, 'hostile DCR');
  const cimd = await consent(docUrl('/trusted-hostile.json', TRUSTED), LOOPBACK_REDIRECT);
  assert.ok(!cimd.includes('<script>') && cimd.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
  assertWarnings(cimd, { unverified: false, localhost: true }, 'hostile CIMD');
});

test('CIMD clients: unverified unless their host is in cimd_trusted_hosts', async () => {
  assertWarnings(await consent(docUrl('/untrusted-loop.json', UNTRUSTED), LOOPBACK_REDIRECT), { unverified: true, localhost: true }, 'untrusted loopback');
  assertWarnings(await consent(docUrl('/untrusted-web.json', UNTRUSTED), HTTPS_REDIRECT), { unverified: true, localhost: false }, 'untrusted web');
  assertWarnings(await consent(docUrl('/trusted-web.json', TRUSTED), HTTPS_REDIRECT), { unverified: false, localhost: false }, 'trusted web');
  assertWarnings(await consent(docUrl('/trusted-loop.json', TRUSTED), LOOPBACK_REDIRECT), { unverified: false, localhost: true }, 'trusted loopback');
});

test('pre-registered clients show no unverified warning', async () => {
  assertWarnings(await consent(STATIC_PUBLIC.client_id, 'https://app.example.com/cb'), { unverified: false, localhost: false }, 'static');
  assertWarnings(await consent(STATIC_LOOP.client_id, 'http://127.0.0.1/cb'), { unverified: false, localhost: true }, 'static loopback');
});

test('application_type at /register: recorded and returned; a web client gets only https off localhost', async () => {
  const meta = async (id) => psql(env.db, `SELECT metadata->>'application_type' FROM clients WHERE client_id = '${id}'`);
  const cases = [
    [{ redirect_uris: [HTTPS_REDIRECT] }, 'web'],
    [{ redirect_uris: [LOOPBACK_REDIRECT] }, 'native'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: 'native' }, 'native'],
    [{ redirect_uris: ['http://[::1]:9/cb', 'com.example.app:/cb'], application_type: 'native' }, 'native'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: 'web' }, 'web'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: null }, 'web'],
  ];
  for (const [d, want] of cases) {
    const r = await register(env.url, { ...d, token_endpoint_auth_method: 'none' });
    assert.equal(r.status, 201, `${JSON.stringify(d)}: ${r.text}`);
    assert.equal(r.json.application_type, want, JSON.stringify(d));
    assert.equal(await meta(r.json.client_id), want, JSON.stringify(d));
  }
});

test('application_type bad inputs at /register: the RFC 7591 error, nothing written, node healthy', async () => {
  const refused = [
    [{ redirect_uris: [LOOPBACK_REDIRECT], application_type: 'web' }, 'invalid_redirect_uri'],
    [{ redirect_uris: ['http://localhost:3000/cb'], application_type: 'web' }, 'invalid_redirect_uri'],
    [{ redirect_uris: ['https://localhost/cb'], application_type: 'web' }, 'invalid_redirect_uri'],
    [{ redirect_uris: ['cursor://cb'], application_type: 'web' }, 'invalid_redirect_uri'],
    [{ redirect_uris: [HTTPS_REDIRECT, 'http://[::1]/cb'], application_type: 'web' }, 'invalid_redirect_uri'],
    [{ redirect_uris: ['http://evil.example.com/cb'], application_type: 'native' }, 'invalid_redirect_uri'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: 'browser' }, 'invalid_client_metadata'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: 'Web' }, 'invalid_client_metadata'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: '' }, 'invalid_client_metadata'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: ['web'] }, 'invalid_client_metadata'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: 1 }, 'invalid_client_metadata'],
    [{ redirect_uris: [HTTPS_REDIRECT], application_type: '<script>' }, 'invalid_client_metadata'],
  ];
  for (const [d, error] of refused) {
    await unchanged(env, async () => {
      const r = await register(env.url, { ...d, token_endpoint_auth_method: 'none' });
      assert.equal(r.status, 400, `${JSON.stringify(d)}: ${r.status} ${r.text}`);
      assert.equal(r.json.error, error, `${JSON.stringify(d)}: ${r.text}`);
      assert.ok(!r.text.includes('<script>') && !r.text.includes('browser'), 'the input is never echoed');
    });
  }
});

test('CIMD documents: application_type is held to the same rule', async () => {
  for (const [p, why] of [
    ['/web-loopback.json', "the document&#39;s application_type does not allow its redirect_uris"],
    ['/web-scheme.json', "the document&#39;s application_type does not allow its redirect_uris"],
    ['/bad-type.json', "the document&#39;s application_type must be web or native"],
    ['/num-type.json', "the document&#39;s application_type must be web or native"],
  ]) {
    const id = docUrl(p, TRUSTED);
    const redirectUri = p === '/web-scheme.json' ? 'cursor://cb' : LOOPBACK_REDIRECT;
    const before = await counts(env.db, TABLES);
    const page = await browserGet(authorizeUrl(env.url, {
      response_type: 'code', client_id: id, redirect_uri: redirectUri, code_challenge: pkce().challenge,
      code_challenge_method: 'S256', state: 'st', resource: `${env.url}/mcp`,
    }), new CookieJar());
    assert.equal(page.status, 400, `${p}: ${page.status} ${page.text.slice(0, 300)}`);
    assert.equal(page.headers.get('location'), null, 'an error page never redirects');
    assert.ok(page.text.includes(why), `${p}: ${page.text.slice(0, 600)}`);
    assert.deepEqual(await counts(env.db, TABLES), before, 'nothing may be half-written');
    assert.equal(await psql(env.db, `SELECT count(*) FROM clients WHERE client_id = '${id}'`), '0');
    await assertReady(env.url);
  }
});
