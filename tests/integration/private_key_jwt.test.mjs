// private_key_jwt client authentication (RFC 7523, issue 13, DESIGN 3.6).
//
// Keys are made with node's crypto and assertions signed with crypto.sign.
// Two nodes (A, B) share one database and one public_url; a local HTTPS
// server with a throwaway CA (tests/lib/tls.mjs, as in cimd.test.mjs) serves
// a CIMD document declaring only private_key_jwt and the JWKS documents of
// jwks_uri clients. A recording listener on 127.0.0.2 proves that a jwks_uri
// at a forbidden address is never connected to.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startIdp } from '../fakes/idp.mjs';
import { startBroker, createDatabase, freePort, key, http, psql } from '../lib/harness.mjs';
import { upstreamConfig } from '../lib/nodes.mjs';
import { runFlow, tokenRequest } from '../lib/flow.mjs';
import { makeCa, startHttpsServer, startRecordingListener } from '../lib/tls.mjs';
import { createPrivateKeyJwtAuth } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const REDIRECT = 'http://127.0.0.1:33418/callback';
const TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const TABLES = ['grants', 'tokens', 'auth_codes', 'client_assertion_jtis', 'jwks_cache'];

let idp, ca, srv, rec2, A, B, db;
const cleanups = [];
const b64u = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ed = crypto.generateKeyPairSync('ed25519');
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const pub = (k, extra) => ({ ...k.publicKey.export({ format: 'jwk' }), ...extra });

/** A compact JWS of claims signed with alg by k (a key pair). */
function sign(alg, k, claims, header = {}) {
  const input = `${b64u({ alg, typ: 'JWT', ...header })}.${b64u(claims)}`;
  const data = Buffer.from(input);
  let sig;
  if (alg === 'RS256') sig = crypto.sign('sha256', data, k.privateKey);
  else if (alg === 'PS256') sig = crypto.sign('sha256', data, { key: k.privateKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  else if (alg === 'ES256') sig = crypto.sign('sha256', data, { key: k.privateKey, dsaEncoding: 'ieee-p1363' });
  else if (alg === 'EdDSA') sig = crypto.sign(null, data, k.privateKey);
  else if (alg === 'HS256') sig = crypto.createHmac('sha256', k).update(data).digest();
  else sig = Buffer.alloc(0);
  return `${input}.${sig.toString('base64url')}`;
}

/** Claims for client id: aud the token endpoint, 60 s, a fresh jti. */
const claims = (id, extra = {}) => ({
  iss: id, sub: id, aud: `${A.url}/token`, exp: now() + 60, iat: now(), jti: crypto.randomUUID(), ...extra,
});

async function counts() {
  const v = (await psql(db, `SELECT ${TABLES.map((t) => `(SELECT count(*) FROM ${t})`).join(', ')}`)).split('|').map(Number);
  return Object.fromEntries(TABLES.map((t, i) => [t, v[i]]));
}

before(async () => {
  ca = await makeCa();
  cleanups.push(() => ca.cleanup());
  rec2 = await startRecordingListener({ host: '127.0.0.2' });
  srv = await startHttpsServer({ cert: ca.serverCert, key: ca.serverKey });
  cleanups.push(() => Promise.all([rec2.close(), srv.close()]));
  const url = (p) => srv.url(p);
  srv.routes['/cimd-pk.json'] = { json: {
    client_id: url('/cimd-pk.json'), client_name: 'ChatGPT-like', redirect_uris: [REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'private_key_jwt',
    jwks_uri: url('/cimd-keys.json'),
  }, headers: { 'cache-control': 'max-age=300' } };
  srv.routes['/cimd-inline.json'] = { json: {
    client_id: url('/cimd-inline.json'), redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [pub(rsa, { kid: 'i1' })] },
  }, headers: { 'cache-control': 'max-age=300' } };
  srv.routes['/cimd-keys.json'] = { json: { keys: [pub(ec, { kid: 'c1', use: 'sig', alg: 'ES256' })] }, headers: { 'cache-control': 'max-age=300' } };
  srv.routes['/static-keys.json'] = { json: { keys: [pub(ed)] } };
  srv.routes['/huge-keys.json'] = { big: 16 * 1024 + 1 };
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());

  db = await createDatabase('pkjwt');
  const [pa, pb] = [await freePort(), await freePort()];
  const cfg = (port) => ({
    listen: `127.0.0.1:${port}`, public_url: `http://127.0.0.1:${pa}`, database_url: db,
    encryption_keys: [{ id: 'k1', key: shared.enc }], cookie_secret: shared.cookie,
    http: { threads: 4, drain_timeout_s: 2 }, database: { pool_size: 4, connect_timeout_s: 2 }, housekeeping_interval_s: 1,
    limits: { token_failures_per_client_address_per_minute: 1000, token_failures_per_address_per_minute: 1000 },
    registration: {
      dynamic: false, client_id_metadata_documents: true, cimd_ca_file: ca.caCert,
      cimd_resolve: [`client.example.test:${srv.port}:127.0.0.1`, `private.example.test:${rec2.port}:127.0.0.2`],
      cimd_allow_private_cidrs: ['127.0.0.1/32'], cimd_timeout_ms: 2000, cimd_min_ttl_s: 0, cimd_max_ttl_s: 600,
    },
    clients: [
      { client_id: 'pk-inline', redirect_uris: [REDIRECT],
        jwks: { keys: [pub(rsa, { kid: 'r1' }), pub(ed), pub(ec, { kid: 'e1' })] } },
      { client_id: 'pk-uri', redirect_uris: [REDIRECT], jwks_uri: url('/static-keys.json') },
      { client_id: 'pk-huge', redirect_uris: [REDIRECT], jwks_uri: url('/huge-keys.json') },
      { client_id: 'pk-private', redirect_uris: [REDIRECT], jwks_uri: `https://private.example.test:${rec2.port}/keys.json` },
    ],
    upstreams: upstreamConfig(idp),
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: 'http://127.0.0.1:9/mcp',
      scopes: { 'issues:read': ['list_issues'] }, default_scopes: ['issues:read'] }],
  });
  const shared = { enc: key(), cookie: key() };
  const ba = await startBroker(cfg(pa));
  cleanups.push(() => ba.stop('SIGKILL'));
  const bb = await startBroker(cfg(pb));
  cleanups.push(() => bb.stop('SIGKILL'));
  A = { broker: ba, url: ba.url };
  B = { broker: bb, url: bb.url };
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const assertion = (a) => ({ client_assertion_type: TYPE, client_assertion: a });

/** A code for clientId through the whole browser flow. */
async function code(clientId) {
  const f = await runFlow({ broker: A.url, clientId, redirectUri: REDIRECT });
  assert.ok(f.code, `flow for ${clientId}: ${JSON.stringify(Object.fromEntries(Object.entries(f.steps).map(([k, v]) => [k, [v.status, v.text.slice(0, 200)]])))}`);
  return f;
}

test('metadata advertises private_key_jwt and its algorithms', async () => {
  const m = (await http(`${A.url}/.well-known/oauth-authorization-server`)).json;
  assert.ok(m.token_endpoint_auth_methods_supported.includes('private_key_jwt'));
  assert.ok(m.revocation_endpoint_auth_methods_supported.includes('private_key_jwt'));
  assert.deepEqual(m.token_endpoint_auth_signing_alg_values_supported, ['RS256', 'PS256', 'ES256', 'EdDSA']);
  // The static clients' rows say how they authenticate (jwks or jwks_uri: a key).
  assert.equal(await psql(db, `SELECT string_agg(client_id || '=' || token_endpoint_auth_method, ',' ORDER BY client_id)
    FROM clients WHERE client_id IN ('pk-inline', 'pk-uri')`), 'pk-inline=private_key_jwt,pk-uri=private_key_jwt');
});

test('a pre-registered client with inline jwks: code flow, refresh and revocation', async () => {
  const f = await code('pk-inline');
  const tok = await tokenRequest(A.url, { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
    redirect_uri: REDIRECT, client_id: 'pk-inline', ...assertion(sign('RS256', rsa, claims('pk-inline'), { kid: 'r1' })) });
  assert.equal(tok.status, 200, tok.text);
  assert.ok(tok.json.access_token && tok.json.refresh_token);
  assert.equal(A.broker.logText().includes(tok.json.refresh_token), false);
  // Refresh on the other node, no kid (the SDK's createPrivateKeyJwtAuth), no client_id, aud the issuer.
  const ref = await tokenRequest(B.url, { grant_type: 'refresh_token', refresh_token: tok.json.refresh_token,
    ...assertion(sign('EdDSA', ed, claims('pk-inline', { aud: A.url }))) });
  assert.equal(ref.status, 200, ref.text);
  // ES256 by kid, aud as an array, at /revoke.
  const rev = await http(`${A.url}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: ref.json.refresh_token,
      ...assertion(sign('ES256', ec, claims('pk-inline', { aud: ['x', `${A.url}/token`] }), { kid: 'e1' })) }).toString() });
  assert.equal(rev.status, 200, rev.text);
  // Its key is its only credential: client_id alone does not authenticate it.
  const bare = await tokenRequest(A.url, { grant_type: 'refresh_token', refresh_token: ref.json.refresh_token, client_id: 'pk-inline' });
  assert.equal(bare.status, 401, bare.text);
  assert.equal(bare.json.error, 'invalid_client');
});

test('a jwks_uri client and a CIMD client declaring only private_key_jwt get tokens', async () => {
  let f = await code('pk-uri');
  let tok = await tokenRequest(A.url, { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
    redirect_uri: REDIRECT, ...assertion(sign('EdDSA', ed, claims('pk-uri'))) });
  assert.equal(tok.status, 200, tok.text);
  const cid = srv.url('/cimd-pk.json');
  f = await code(cid);
  const hits = srv.hits('/cimd-keys.json');
  tok = await tokenRequest(A.url, { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
    redirect_uri: REDIRECT, client_id: cid, ...assertion(sign('ES256', ec, claims(cid), { kid: 'c1' })) });
  assert.equal(tok.status, 200, tok.text);
  assert.equal(srv.hits('/cimd-keys.json'), hits + 1);
  // The JWKS is cached for every node (Cache-Control max-age=300).
  const ref = await tokenRequest(B.url, { grant_type: 'refresh_token', refresh_token: tok.json.refresh_token,
    ...assertion(sign('ES256', ec, claims(cid))) });
  assert.equal(ref.status, 200, ref.text);
  assert.equal(srv.hits('/cimd-keys.json'), hits + 1, 'served from the shared cache');
});

const refusals = (env) => env.broker.logs().filter((l) => l.includes('"event":"client_assertion.refused"'))
  .map((l) => JSON.parse(l).msg);

test("the MCP SDK's createPrivateKeyJwtAuth (no kid, aud the issuer, 300 s) authenticates", async () => {
  const f = await code('pk-inline');
  const params = new URLSearchParams({ grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
    redirect_uri: REDIRECT });
  const metadata = (await http(`${A.url}/.well-known/oauth-authorization-server`)).json;
  const addAuth = createPrivateKeyJwtAuth({ issuer: 'pk-inline', subject: 'pk-inline', alg: 'ES256',
    privateKey: ec.privateKey.export({ type: 'pkcs8', format: 'pem' }) });
  await addAuth(new Headers(), params, new URL(`${A.url}/token`), metadata);
  assert.equal(params.get('client_assertion_type'), TYPE);
  const tok = await tokenRequest(A.url, Object.fromEntries(params));
  assert.equal(tok.status, 200, tok.text);
});

test('a CIMD document with inline jwks: tokens, and the cached document keeps its keys on another node', async () => {
  const cid = srv.url('/cimd-inline.json');
  const f = await code(cid);
  const tok = await tokenRequest(A.url, { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
    redirect_uri: REDIRECT, ...assertion(sign('PS256', rsa, claims(cid), { kid: 'i1' })) });
  assert.equal(tok.status, 200, tok.text);
  const hits = srv.hits('/cimd-inline.json');
  const ref = await tokenRequest(B.url, { grant_type: 'refresh_token', refresh_token: tok.json.refresh_token,
    ...assertion(sign('RS256', rsa, claims(cid))) });
  assert.equal(ref.status, 200, ref.text);
  assert.equal(srv.hits('/cimd-inline.json'), hits, 'the document came from the shared cache');
  const bare = await tokenRequest(B.url, { grant_type: 'refresh_token', refresh_token: ref.json.refresh_token, client_id: cid });
  assert.equal(bare.status, 401, bare.text);
});

/** The assertion fields are refused with 401 invalid_client at node env,
 * for the reason why (the log's, when given), nothing is written, and the
 * node stays ready. */
async function assertRefused(env, fields, label, why) {
  const before = await counts();
  const conns = rec2.connections.length;
  const logged = refusals(env).length;
  const res = await tokenRequest(env.url, { grant_type: 'authorization_code', code: 'mcpb_ac_nope',
    code_verifier: 'v'.repeat(43), redirect_uri: REDIRECT, ...fields });
  assert.equal(res.status, 401, `${label}: ${res.status} ${res.text}`);
  assert.equal(res.json?.error, 'invalid_client', `${label}: ${res.text}`);
  assert.deepEqual(await counts(), before, `${label}: nothing may be written`);
  assert.equal(rec2.connections.length, conns, `${label}: a forbidden address was reached`);
  if (why) assert.deepEqual(refusals(env).slice(logged), [why], label);
  const sig = (fields.client_assertion || '').split('.')[2];
  if (sig && sig.length > 20) assert.equal(env.broker.logText().includes(sig), false, `${label}: the assertion was logged`);
  assert.equal((await http(`${env.url}/readyz`)).status, 200);
}

test('a jti is single use, on every node', async () => {
  const a = sign('RS256', rsa, claims('pk-inline'), { kid: 'r1' });
  // First use: the client authenticates (the code is bogus, so invalid_grant).
  const first = await tokenRequest(A.url, { grant_type: 'authorization_code', code: 'mcpb_ac_nope', code_verifier: 'v'.repeat(43),
    redirect_uri: REDIRECT, ...assertion(a) });
  assert.equal(first.status, 400, first.text);
  assert.equal(first.json.error, 'invalid_grant');
  await assertRefused(A, assertion(a), 'replayed on the same node', 'the assertion\'s jti was already used');
  await assertRefused(B, assertion(a), 'replayed on a second node', 'the assertion\'s jti was already used');
});

test('every bad assertion answers invalid_client with nothing written', async () => {
  const id = 'pk-inline';
  const rs = (c, h = { kid: 'r1' }) => assertion(sign('RS256', rsa, c, h));
  await assertRefused(A, rs(claims(id, { aud: 'https://other.example/token' })), 'wrong aud', 'aud names neither the token endpoint nor the issuer');
  await assertRefused(A, rs(claims(id, { exp: now() + 400 })), 'exp more than 5 minutes ahead', 'exp is too far ahead');
  await assertRefused(A, rs(claims(id, { exp: now() - 120, iat: now() - 180 })), 'expired', 'the assertion has expired');
  await assertRefused(A, rs(claims(id, { nbf: now() + 120 })), 'not yet valid', 'the assertion is not yet valid');
  await assertRefused(A, rs(claims(id, { jti: undefined })), 'no jti', 'jti is missing or too long');
  await assertRefused(A, rs(claims(id), { kid: 'nope' }), 'unknown kid', 'no key of the client verifies the signature');
  await assertRefused(A, assertion(sign('RS256', other, claims(id))), 'a key the client does not have', 'no key of the client verifies the signature');
  await assertRefused(A, assertion(sign('PS256', rsa, claims(id), { kid: 'r1' }).replace(/\.[^.]*$/, `.${sign('RS256', rsa, claims(id)).split('.')[2]}`)), 'signature of another input', 'no key of the client verifies the signature');
  await assertRefused(A, assertion(sign('none', null, claims(id))), 'alg none', 'the assertion is not a JWS signed with RS256, PS256, ES256 or EdDSA');
  await assertRefused(A, assertion(sign('HS256', rsa.publicKey.export({ type: 'spki', format: 'pem' }), claims(id), { kid: 'r1' })), 'HS256 with the public key as secret', 'the assertion is not a JWS signed with RS256, PS256, ES256 or EdDSA');
  await assertRefused(A, rs({ ...claims(id), sub: 'someone-else' }), 'iss != sub', 'sub is not the client_id');
  await assertRefused(A, { client_id: 'pk-uri', ...rs(claims(id)) }, 'client_id != iss', 'iss is missing or differs from client_id');
  await assertRefused(A, assertion(sign('EdDSA', ed, claims('pk-huge'))), 'a JWKS over the size cap', 'the client metadata document is too large');
  await assertRefused(A, assertion(sign('EdDSA', ed, claims('pk-private'))), 'a jwks_uri at a private address', 'the client_id host resolves to a forbidden address');
  await assertRefused(A, { client_assertion_type: 'urn:other', client_assertion: sign('EdDSA', ed, claims('pk-uri')) }, 'another assertion type');
  await assertRefused(A, assertion('not.a.jws'), 'garbage', 'the assertion is not a JWS signed with RS256, PS256, ES256 or EdDSA');
  await assertRefused(A, assertion(`${b64u({ alg: 'RS256', kid: 'r1' })}.${'a'.repeat(4000)}.c2ln`), 'a long bogus payload', 'the assertion is not a JWS signed with RS256, PS256, ES256 or EdDSA');
  // Two methods at once, or half of one: invalid_request.
  const two = await tokenRequest(A.url, { grant_type: 'refresh_token', refresh_token: 'x', client_secret: 'y'.repeat(20),
    ...assertion(sign('EdDSA', ed, claims('pk-uri'))) });
  assert.equal(two.status, 400, two.text);
  assert.equal(two.json.error, 'invalid_request');
  const half = await tokenRequest(A.url, { grant_type: 'refresh_token', refresh_token: 'x', client_assertion: 'a.b.c' });
  assert.equal(half.status, 400, half.text);
});

test('housekeeping purges spent jtis and JWKS documents long expired, and keeps live ones', async () => {
  await psql(db, `INSERT INTO client_assertion_jtis VALUES ('old', now() - interval '2 minutes'), ('live', now() + interval '1 minute');
    INSERT INTO jwks_cache VALUES ('https://old.example/j', '{}', now() - interval '2 days'),
      ('https://live.example/j', '{}', now() - interval '1 hour')`);
  const left = async () => psql(db, `SELECT (SELECT string_agg(jti_hash, ',' ORDER BY jti_hash) FROM client_assertion_jtis
    WHERE jti_hash IN ('old', 'live')), (SELECT string_agg(jwks_uri, ',') FROM jwks_cache WHERE jwks_uri LIKE '%.example/j')`);
  const deadline = Date.now() + 15000;
  let v;
  while ((v = await left()) !== 'live|https://live.example/j' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
  assert.equal(v, 'live|https://live.example/j');
});
