// DPoP (RFC 9449, DESIGN 3.6): a proof at /token binds the access token
// (and a public client's refresh token) to the client's key; the proxy then
// takes that token only in the DPoP scheme with a proof for the request.
// Every bad proof gets the RFC error, writes nothing, never reaches the
// downstream, and leaves the node healthy. Nonce mode (dpop.require_nonce)
// runs on two nodes sharing one database and cookie_secret: a nonce one node
// issued is good at the other.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, createPrivateKey, generateKeyPairSync, randomBytes, sign as nodeSign } from 'node:crypto';
import * as jose from 'jose';
import { startIdp } from '../fakes/idp.mjs';
import { startDownstream } from '../fakes/downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, http, psql, waitFor } from '../lib/harness.mjs';
import { runFlow, tokenRequest } from '../lib/flow.mjs';
import { counts, assertOAuthError } from '../lib/oauth_setup.mjs';
import { githubUpstream, call, parseChallenge, rawRequest, sha256hex } from '../lib/proxy_setup.mjs';

const T = { timeout: 30000 };
const ADMIN = 'admin-token-for-dpop-tests-0123456789';
const PUBLIC = { id: 'dpop-public', redirect: 'http://127.0.0.1:33418/callback' };
const CONF = { id: 'dpop-conf', secret: 'dpop-conf-secret-0123456789', redirect: 'https://agents.example.com/cb' };
const MACHINE = { id: 'dpop-machine', secret: 'dpop-machine-secret-0123456789' };
const RS = { id: 'rs-1', secret: 'rs-secret-0123456789abcdef' };
const MAX_AGE = 30; // dpop.proof_max_age_s
const ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA'];

let idp, ds, main, nodeA, nodeB;
const cleanups = [];

function brokerConfig(port, db, { nonce = false } = {}) {
  return baseConfig({
    port, databaseUrl: db, extra: {
      admin_tokens: [ADMIN],
      tokens: { access_ttl: 300, refresh_ttl: 86400, code_ttl: 60, refresh_grace: 10 },
      dpop: { require_nonce: nonce, nonce_ttl_s: 300, proof_max_age_s: MAX_AGE },
      upstreams: {
        gh: githubUpstream(idp),
        oidc: { preset: 'oidc', issuer: `${idp.base}/oidc`, client_id: 'oidc-client', client_secret: 'oidc-secret',
          scopes: ['api'], client_credentials: true },
      },
      clients: [
        { client_id: PUBLIC.id, client_name: 'DPoP public', redirect_uris: ['http://127.0.0.1/callback'] },
        { client_id: CONF.id, client_name: 'DPoP confidential', client_secret: CONF.secret, redirect_uris: [CONF.redirect] },
        { client_id: MACHINE.id, client_name: 'DPoP machine', client_secret: MACHINE.secret,
          grant_types: ['client_credentials'], resources: ['/m2m'], scopes: ['repo:read'] },
      ],
      resource_servers: [{ client_id: RS.id, client_secret: RS.secret }],
      // Many refusals from 127.0.0.1: the failure limits are not under test here.
      limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0,
        token_failures_per_client_address_per_minute: 0, token_failures_per_address_per_minute: 0 },
      resources: [
        { path: '/mcp', upstream: 'gh', downstream: `${ds.url}/mcp`,
          scopes: { 'repo:read': ['list_issues', 'get_file'], 'repo:write': ['*'] }, default_scopes: ['repo:read'] },
        { path: '/strict', upstream: 'gh', downstream: `${ds.url}/strict`, require_dpop: true,
          scopes: { 'repo:read': ['list_issues'] }, default_scopes: ['repo:read'] },
        { path: '/m2m', upstream: 'oidc', downstream: `${ds.url}/m2m`,
          scopes: { 'repo:read': ['list_issues'] }, default_scopes: ['repo:read'] },
      ],
    },
  });
}

/** SIGTERM drains and exits 0; a sanitizer build's reports fail the test here. */
async function stopBroker(b) {
  const { code, signal } = await b.stop('SIGTERM');
  const bad = b.logs().filter((l) => /AddressSanitizer|LeakSanitizer|runtime error:/.test(l));
  if (code !== 0 || bad.length) throw new Error(`broker exited ${code ?? signal}:\n${b.logs().slice(-30).join('\n')}`);
}

/** A broker handle: url (where to connect), pub (public_url: what htu names), db. */
function handle(broker, cfg, db) {
  return { broker, url: broker.url, pub: cfg.public_url, db, cfg };
}

before(async () => {
  idp = await startIdp({ port: 0, log: false });
  cleanups.push(() => idp.close());
  ds = await startDownstream({ port: 0 });
  cleanups.push(() => ds.close());
  const db1 = await createDatabase('dpop');
  const cfg1 = brokerConfig(await freePort(), db1);
  const b1 = await startBroker(cfg1);
  cleanups.push(() => stopBroker(b1));
  main = handle(b1, cfg1, db1);
  // Two nonce-mode nodes on one database, one cookie_secret, one public_url
  // (node A's, as behind a load balancer). B starts after A has migrated.
  const db2 = await createDatabase('dpop_nonce');
  const cfgA = brokerConfig(await freePort(), db2, { nonce: true });
  const cfgB = { ...structuredClone(cfgA), listen: `127.0.0.1:${await freePort()}` };
  const a = await startBroker(cfgA);
  cleanups.push(() => stopBroker(a));
  const b = await startBroker(cfgB);
  cleanups.push(() => stopBroker(b));
  nodeA = handle(a, cfgA, db2);
  nodeB = handle(b, cfgB, db2);
}, { timeout: 60000 });

after(async () => {
  let first;
  for (const c of cleanups.splice(0).reverse()) {
    try { await c(); } catch (e) { first ??= e; }
  }
  if (first) throw first;
}, { timeout: 30000 });

// ---- proofs -------------------------------------------------------------

const now = () => Math.floor(Date.now() / 1000);
const newJti = () => randomBytes(12).toString('base64url');
const b64json = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const athOf = (token) => createHash('sha256').update(token).digest('base64url');

async function newKey(alg = 'ES256') {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = await jose.exportJWK(publicKey);
  return { alg, publicKey, privateKey, jwk, privateJwk: await jose.exportJWK(privateKey), jkt: await jose.calculateJwkThumbprint(jwk) };
}

/** A proof by key k for (htm, htu); claims/header override or add, omit drops claims. */
function proof(k, htm, htu, { claims = {}, header = {}, omit = [] } = {}) {
  const payload = { jti: newJti(), htm, htu, iat: now(), ...claims };
  for (const o of omit) delete payload[o];
  return new jose.SignJWT(payload).setProtectedHeader({ alg: k.alg, typ: 'dpop+jwt', jwk: k.jwk, ...header }).sign(k.privateKey);
}

/** A compact JWS signed by hand (what jose refuses to make): sign(input) returns the base64url signature. */
function handJws(header, payload, sign) {
  const input = `${b64json(header)}.${b64json(payload)}`;
  return `${input}.${sign(input)}`;
}
/** An ES256 signature of input by the private JWK (IEEE P1363 r||s, as JWS wants). */
const es256 = (privateJwk) => (input) =>
  nodeSign('sha256', Buffer.from(input), { key: createPrivateKey({ key: privateJwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' }).toString('base64url');

/** A signature of input by key k as its alg wants, made by node:crypto from the private JWK. */
const handSign = (k) => (input) => {
  const key = createPrivateKey({ key: k.privateJwk, format: 'jwk' });
  const data = Buffer.from(input);
  const sig = k.alg === 'EdDSA' ? nodeSign(null, data, key)
    : k.alg === 'ES256' ? nodeSign('sha256', data, { key, dsaEncoding: 'ieee-p1363' })
      : k.alg === 'PS256' ? nodeSign('sha256', data, { key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: 32 })
        : nodeSign('sha256', data, key);
  return sig.toString('base64url');
};

// ---- helpers ---------------------------------------------------------------

/** A code for clientId at node b (the test is the browser and the IdP user). */
async function code(b, { clientId = PUBLIC.id, redirectUri = PUBLIC.redirect, resource = '/mcp', login = 'alice' } = {}) {
  const f = await runFlow({ broker: b.url, clientId, redirectUri, resource: `${b.pub}${resource}`, login });
  assert.ok(f.code, `flow: ${JSON.stringify(Object.fromEntries(Object.entries(f.steps).map(([k, v]) => [k, v.status])))}`);
  return f;
}

function exchange(b, f, { dpop, clientId = PUBLIC.id, redirectUri = PUBLIC.redirect, secret, headers = {} } = {}) {
  return tokenRequest(b.url, {
    grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier, redirect_uri: redirectUri, client_id: clientId,
    ...(secret ? { client_secret: secret } : {}),
  }, { headers: { ...headers, ...(dpop !== undefined ? { dpop } : {}) } });
}

function refresh(b, refreshToken, { dpop, clientId = PUBLIC.id, secret } = {}) {
  return tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId,
    ...(secret ? { client_secret: secret } : {}) }, { headers: dpop !== undefined ? { dpop } : {} });
}

function machineToken(b, { dpop } = {}) {
  return tokenRequest(b.url, { grant_type: 'client_credentials', resource: `${b.pub}/m2m` },
    { basic: [MACHINE.id, MACHINE.secret], headers: dpop !== undefined ? { dpop } : {} });
}

/** A fresh DPoP-bound pair for the public client, bound to key k. */
async function boundPair(b, k, opts = {}) {
  const f = await code(b, opts);
  const t = await exchange(b, f, { dpop: await proof(k, 'POST', `${b.pub}/token`) });
  assert.equal(t.status, 200, t.text);
  assert.equal(t.json.token_type, 'DPoP', t.text);
  return t.json;
}

/** The tokens row of token: kind|jkt ('' for NULL). */
const row = (b, token) => psql(b.db, `SELECT kind || '|' || coalesce(jkt, '') FROM tokens WHERE token_hash = '\\x${sha256hex(token)}'::bytea`);
const grantStatus = (b, token) => psql(b.db, `SELECT g.status FROM grants g JOIN tokens t ON t.grant_id = g.id WHERE t.token_hash = '\\x${sha256hex(token)}'::bytea`);

async function ready(b, what) {
  assert.equal((await http(`${b.url}/healthz`)).status, 200, `/healthz after ${what}`);
  const r = await http(`${b.url}/readyz`);
  assert.equal(r.status, 200, `/readyz after ${what}: ${r.status} ${r.text}`);
}

/** Runs fn (a /token request) and asserts the RFC error, that no OAuth table changed and that the node is ready. */
async function tokenRefused(b, what, fn, { status = 400, error = 'invalid_dpop_proof', why } = {}) {
  const before = await counts(b.db);
  const r = await fn();
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text}`);
  assertOAuthError(r, status, error);
  if (why) assert.match(r.json.error_description || '', why, `${what}: refused for the reason under test`);
  assert.deepEqual(await counts(b.db), before, `${what}: nothing may be written`);
  await ready(b, what);
  return r;
}

/** A request to a resource at node b; never throws on HTTP errors. */
function mcp(b, path, { scheme, token, dpop, method = 'POST', body = call('list_issues'), headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `${scheme ?? 'DPoP'} ${token}`;
  if (dpop !== undefined) h.dpop = dpop;
  const send = method !== 'GET' && method !== 'DELETE' && body !== undefined;
  if (send) h['content-type'] = 'application/json';
  return http(`${b.url}${path}`, { method, headers: h, ...(send ? { body: JSON.stringify(body) } : {}) });
}

/** A proxied request the downstream must not see; returns the answer. */
async function unseen(what, fn) {
  const n = ds.requests.length;
  const r = await fn();
  assert.equal(ds.requests.length, n, `the downstream saw a refused request (${what}): ${r.status} ${r.text}`);
  return r;
}

/** Asserts a 401 DPoP challenge (RFC 9449 section 7.1) with error, algs and resource_metadata. */
function assertDpopChallenge(b, r, { error, path = '/mcp', what = '' } = {}) {
  assert.equal(r.status, 401, `${what}: ${r.status} ${r.text}`);
  const h = r.headers.get('www-authenticate');
  assert.ok(h && h.startsWith('DPoP '), `${what}: challenge ${h}`);
  const c = parseChallenge(h);
  assert.equal(c.params.error, error, `${what}: ${h}`);
  assert.equal(c.params.resource_metadata, `${b.pub}/.well-known/oauth-protected-resource${path}`, `${what}: ${h}`);
  assert.ok(c.params.algs, `${what}: algs in ${h}`);
  for (const a of c.params.algs.split(' ')) assert.ok(ALGS.includes(a), `${what}: alg ${a}`);
  return c;
}

/** A proxied request that must be refused with a DPoP challenge and never reach the downstream. */
async function proxyRefused(b, what, opts, error, path = '/mcp', why) {
  const r = await unseen(what, () => mcp(b, path, opts));
  const c = assertDpopChallenge(b, r, { error, path, what });
  if (why) assert.match(c.params.error_description || '', why, `${what}: refused for the reason under test`);
  return c;
}

/** The reason each bad proof must be refused for (a word of the broker's fixed error_description). */
const WHY = {
  htu: /htu/, htm: /htm/, iat: /iat/, jti: /jti/, typ: /typ/, alg: /signed JWT of a supported alg/, jwk: /jwk/,
  sig: /signature/, ath: /ath/, key: /key is not the one/, replay: /used before/, noproof: /proof is required/,
  asDpop: /presented as DPoP/, unbound: /not DPoP-bound/, rsa: /over 4096 bits or its exponent/,
};

/** A proxied request that must pass; returns the downstream's record of it. */
async function proxyOk(b, what, path, opts) {
  const n = ds.requests.length;
  const r = await mcp(b, path, opts);
  assert.equal(r.status, 200, `${what}: ${r.status} ${r.text} ${r.headers.get('www-authenticate')}`);
  assert.equal(ds.requests.length, n + 1, `${what}: forwarded once`);
  return { r, seen: ds.requests[n] };
}

/** A proof at the proxy for token by key k. */
const pp = (b, k, token, { htm = 'POST', path = '/mcp', ...o } = {}) =>
  proof(k, htm, `${b.pub}${path}`, { ...o, claims: { ath: athOf(token), ...(o.claims || {}) } });

// ---- metadata ----------------------------------------------------------------

test('metadata: dpop_signing_alg_values_supported in both documents, dpop_bound_access_tokens_required per resource', T, async () => {
  const as = (await http(`${main.url}/.well-known/oauth-authorization-server`)).json;
  assert.ok(Array.isArray(as.dpop_signing_alg_values_supported), JSON.stringify(as));
  assert.deepEqual([...as.dpop_signing_alg_values_supported].sort(), [...ALGS].sort());
  const strict = (await http(`${main.url}/.well-known/oauth-protected-resource/strict`)).json;
  assert.equal(strict.dpop_bound_access_tokens_required, true);
  assert.deepEqual([...strict.dpop_signing_alg_values_supported].sort(), [...ALGS].sort());
  const plain = (await http(`${main.url}/.well-known/oauth-protected-resource/mcp`)).json;
  assert.equal(plain.dpop_bound_access_tokens_required, false);
});

// ---- /token ------------------------------------------------------------------

test('/token: every bad proof is 400 invalid_dpop_proof, writes nothing and leaves the code usable', T, async () => {
  const k = await newKey();
  const other = await newKey();
  const f = await code(main);
  const htu = `${main.pub}/token`;
  const ex = (dpop) => () => exchange(main, f, { dpop });
  const rsa = await newKey('RS256');
  const ed = await newKey('EdDSA');
  const big = await proof(k, 'POST', htu, { claims: { pad: 'x'.repeat(9000) } });
  assert.ok(big.length > 8192);
  const bad = [
    ['another htu', await proof(k, 'POST', `${main.pub}/authorize`)],
    ['another origin', await proof(k, 'POST', 'https://elsewhere.example/token')],
    ['htm GET', await proof(k, 'GET', htu)],
    ['iat too old', await proof(k, 'POST', htu, { claims: { iat: now() - MAX_AGE - 30 } })],
    ['iat too far ahead', await proof(k, 'POST', htu, { claims: { iat: now() + 120 } })],
    ['iat a string', await proof(k, 'POST', htu, { claims: { iat: String(now()) } })],
    ['no iat', await proof(k, 'POST', htu, { omit: ['iat'] })],
    ['no jti', await proof(k, 'POST', htu, { omit: ['jti'] })],
    ['empty jti', await proof(k, 'POST', htu, { claims: { jti: '' } })],
    ['no htm', await proof(k, 'POST', htu, { omit: ['htm'] })],
    ['no htu', await proof(k, 'POST', htu, { omit: ['htu'] })],
    ['typ JWT', await proof(k, 'POST', htu, { header: { typ: 'JWT' } })],
    ['no typ', handJws({ alg: 'ES256', jwk: k.jwk }, { jti: newJti(), htm: 'POST', htu, iat: now() }, es256(k.privateJwk))],
    ['alg none', handJws({ alg: 'none', typ: 'dpop+jwt', jwk: k.jwk }, { jti: newJti(), htm: 'POST', htu, iat: now() }, () => '')],
    ['HS256 keyed by the public jwk', handJws({ alg: 'HS256', typ: 'dpop+jwt', jwk: k.jwk }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      (input) => createHmac('sha256', JSON.stringify(k.jwk)).update(input).digest('base64url'))],
    ['HS256 with an oct jwk', handJws({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: Buffer.from('secret').toString('base64url') } },
      { jti: newJti(), htm: 'POST', htu, iat: now() }, (input) => createHmac('sha256', 'secret').update(input).digest('base64url'))],
    ['a jwk with its private part d', handJws({ alg: 'ES256', typ: 'dpop+jwt', jwk: k.privateJwk }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      es256(k.privateJwk))],
    ['an RSA jwk with its private parts', handJws({ alg: 'RS256', typ: 'dpop+jwt', jwk: rsa.privateJwk }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      handSign(rsa))],
    ['an OKP jwk with its private part d', handJws({ alg: 'EdDSA', typ: 'dpop+jwt', jwk: ed.privateJwk }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      handSign(ed))],
    ['an oct jwk under ES256', handJws({ alg: 'ES256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: 'c2VjcmV0' } }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      es256(k.privateJwk))],
    ['a crit header', handJws({ alg: 'ES256', typ: 'dpop+jwt', jwk: k.jwk, crit: ['exp'], exp: now() + 60 }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      es256(k.privateJwk))],
    ['an RSA-1024 jwk', ((kp) => handJws({ alg: 'RS256', typ: 'dpop+jwt', jwk: kp.publicKey.export({ format: 'jwk' }) }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      (input) => nodeSign('sha256', Buffer.from(input), kp.privateKey).toString('base64url')))(generateKeyPairSync('rsa', { modulusLength: 1024 }))],
    ['a P-384 jwk under ES256', ((kp) => handJws({ alg: 'ES256', typ: 'dpop+jwt', jwk: kp.publicKey.export({ format: 'jwk' }) }, { jti: newJti(), htm: 'POST', htu, iat: now() },
      (input) => nodeSign('sha256', Buffer.from(input), { key: kp.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')))(generateKeyPairSync('ec', { namedCurve: 'P-384' }))],
    ['no jwk', handJws({ alg: 'ES256', typ: 'dpop+jwt' }, { jti: newJti(), htm: 'POST', htu, iat: now() }, es256(k.privateJwk))],
    ['jwk of another kty than alg', await proof(await newKey('RS256'), 'POST', htu, { header: { alg: 'RS256', jwk: k.jwk } })],
    ['signed by another key than the header jwk', await proof(other, 'POST', htu, { header: { jwk: k.jwk } })],
    ['a flipped signature byte', ((p) => { const s = Buffer.from(p.split('.')[2], 'base64url'); s[5] ^= 1; return p.replace(/[^.]+$/, s.toString('base64url')); })(
      await proof(k, 'POST', htu))],
    // Keys that would make the check costly are refused before any
    // arithmetic: an RSA modulus over 4096 bits, an exponent other than 65537.
    ['an RSA-8192 jwk', handJws({ alg: 'RS256', typ: 'dpop+jwt', jwk: { kty: 'RSA', e: 'AQAB', n: randomBytes(1024).toString('base64url') } },
      { jti: newJti(), htm: 'POST', htu, iat: now() }, () => randomBytes(1024).toString('base64url'))],
    ['an RSA exponent other than 65537', handJws({ alg: 'RS256', typ: 'dpop+jwt', jwk: { ...rsa.jwk, e: 'AQAAAQ' } },
      { jti: newJti(), htm: 'POST', htu, iat: now() }, handSign(rsa))],
    ['garbage', 'garbage'],
    ['three dots of nothing', '..'],
    ['empty', ''],
    ['oversized', big],
  ];
  const why = {
    'another htu': 'htu',
    'another origin': 'htu',
    'htm GET': 'htm',
    'iat too old': 'iat',
    'iat too far ahead': 'iat',
    'iat a string': 'iat',
    'no iat': 'iat',
    'no jti': 'jti',
    'empty jti': 'jti',
    'no htm': 'htm',
    'no htu': 'htu',
    'typ JWT': 'typ',
    'no typ': 'typ',
    'alg none': 'alg',
    'HS256 keyed by the public jwk': 'alg',
    'HS256 with an oct jwk': 'alg',
    'a jwk with its private part d': 'jwk',
    'an RSA jwk with its private parts': 'jwk',
    'an OKP jwk with its private part d': 'jwk',
    'an oct jwk under ES256': 'jwk',
    'no jwk': 'jwk',
    'jwk of another kty than alg': 'jwk',
    'signed by another key than the header jwk': 'sig',
    'a flipped signature byte': 'sig',
    'garbage': 'alg',
    'an RSA-8192 jwk': 'rsa',
    'an RSA exponent other than 65537': 'rsa',
    'a crit header': 'alg',
    'an RSA-1024 jwk': 'jwk',
    'a P-384 jwk under ES256': 'jwk',
    'three dots of nothing': 'alg',
    'empty': 'alg',
    'oversized': 'alg',
  };
  for (const [what, p] of bad) {
    assert.ok(why[what], `a reason for ${what}`);
    await tokenRefused(main, what, ex(p), { why: WHY[why[what]] });
  }

  // Two DPoP headers (fetch would join them: a raw request sends two lines).
  const p1 = await proof(k, 'POST', htu);
  const p2 = await proof(k, 'POST', htu);
  await tokenRefused(main, 'two DPoP headers', async () => {
    const body = new URLSearchParams({ grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
      redirect_uri: PUBLIC.redirect, client_id: PUBLIC.id }).toString();
    const r = await rawRequest(main.broker.port, { method: 'POST', path: '/token', body,
      headers: [['Content-Type', 'application/x-www-form-urlencoded'], ['DPoP', p1], ['DPoP', p2]] });
    return { status: r.status, json: JSON.parse(r.body), text: r.body, headers: new Headers(r.headers) };
  });
  await tokenRefused(main, 'two proofs joined in one header', ex(`${p1}, ${p2}`));

  // A replayed jti. At /token a jti is remembered once its proof got
  // tokens (so self-made proofs with bogus grants take no room): a proof
  // whose request failed passes the DPoP step again, one that got tokens
  // is refused at it.
  const once = await proof(k, 'POST', htu);
  const bogus = `mcpb_rt_${randomBytes(32).toString('base64url')}`;
  await tokenRefused(main, 'first use of a proof', () => refresh(main, bogus, { dpop: once }), { error: 'invalid_grant' });
  await tokenRefused(main, 'the same proof after a failure', () => refresh(main, bogus, { dpop: once }), { error: 'invalid_grant' });
  const used = await proof(k, 'POST', htu);
  const got = await exchange(main, await code(main), { dpop: used });
  assert.equal(got.status, 200, got.text);
  await tokenRefused(main, 'replayed jti', ex(used), { why: WHY.replay });

  // None of the above consumed the code: with a good proof it redeems.
  const t = await exchange(main, f, { dpop: await proof(k, 'POST', htu) });
  assert.equal(t.status, 200, t.text);
  assert.equal(t.json.token_type, 'DPoP');
  assert.match(t.headers.get('cache-control') || '', /no-store/);
  assert.equal(await row(main, t.json.access_token), `access|${k.jkt}`, 'tokens.jkt is the RFC 7638 thumbprint');
  assert.equal(await row(main, t.json.refresh_token), `refresh|${k.jkt}`, 'a public client\'s refresh token is bound');
});

test('/token: a code exchange without a proof stays Bearer; every alg of the metadata binds', T, async () => {
  const f = await code(main);
  const t = await exchange(main, f);
  assert.equal(t.status, 200, t.text);
  assert.equal(t.json.token_type, 'Bearer');
  assert.equal(await row(main, t.json.access_token), 'access|');
  assert.equal(await row(main, t.json.refresh_token), 'refresh|');
  for (const alg of ALGS) {
    const k = await newKey(alg);
    const pair = await boundPair(main, k);
    assert.equal(await row(main, pair.access_token), `access|${k.jkt}`, alg);
    await proxyOk(main, `${alg} proof at the proxy`, '/mcp', { token: pair.access_token, dpop: await pp(main, k, pair.access_token) });
  }
  // RFC 7638: the thumbprint covers the key's required members only, so a
  // jwk with kid, use and alg binds to the same jkt; a hand-made signature
  // (node:crypto, not jose) verifies as well.
  for (const alg of ['ES256', 'PS256']) {
    const k = await newKey(alg);
    const jwk = { kid: `kid-${alg}`, use: 'sig', alg, ...k.jwk };
    const f2 = await code(main);
    const t2 = await exchange(main, f2, { dpop: handJws({ alg, typ: 'dpop+jwt', jwk }, { jti: newJti(), htm: 'POST', htu: `${main.pub}/token`, iat: now() }, handSign(k)) });
    assert.equal(t2.status, 200, `${alg} with kid/use/alg members: ${t2.text}`);
    assert.equal(await row(main, t2.json.access_token), `access|${k.jkt}`, `${alg}: the thumbprint ignores kid, use and alg`);
  }
});

test('/token: a public client\'s bound refresh token needs its key; a refusal is not reuse', T, async () => {
  const k = await newKey();
  const other = await newKey();
  const pair = await boundPair(main, k);
  const htu = `${main.pub}/token`;
  await tokenRefused(main, 'refresh without a proof', () => refresh(main, pair.refresh_token));
  await tokenRefused(main, 'refresh with another key', async () => refresh(main, pair.refresh_token, { dpop: await proof(other, 'POST', htu) }));
  await tokenRefused(main, 'refresh with a proof for /authorize', async () => refresh(main, pair.refresh_token, { dpop: await proof(k, 'POST', `${main.pub}/authorize`) }));
  assert.equal(await grantStatus(main, pair.refresh_token), 'active', 'the refusals did not trigger reuse detection');
  assert.equal(await psql(main.db, `SELECT used_at IS NULL FROM tokens WHERE token_hash = '\\x${sha256hex(pair.refresh_token)}'::bytea`), 't');

  const r = await refresh(main, pair.refresh_token, { dpop: await proof(k, 'POST', htu) });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.token_type, 'DPoP');
  assert.notEqual(r.json.refresh_token, pair.refresh_token);
  assert.equal(await row(main, r.json.access_token), `access|${k.jkt}`);
  assert.equal(await row(main, r.json.refresh_token), `refresh|${k.jkt}`);
  await proxyOk(main, 'the refreshed token', '/mcp', { token: r.json.access_token, dpop: await pp(main, k, r.json.access_token) });

  // Inside refresh_grace: the lost-answer retry, with the key, gets the same
  // pair; without it (or with another key) it is refused, not taken for reuse.
  await tokenRefused(main, 'grace retry without a proof', () => refresh(main, pair.refresh_token));
  await tokenRefused(main, 'grace retry with another key', async () => refresh(main, pair.refresh_token, { dpop: await proof(other, 'POST', htu) }));
  const again = await refresh(main, pair.refresh_token, { dpop: await proof(k, 'POST', htu) });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.access_token, r.json.access_token);
  assert.equal(again.json.token_type, 'DPoP');
  assert.equal(await grantStatus(main, pair.refresh_token), 'active');

  // The successor is bound as well.
  await tokenRefused(main, 'successor without a proof', () => refresh(main, r.json.refresh_token));
  const next = await refresh(main, r.json.refresh_token, { dpop: await proof(k, 'POST', htu) });
  assert.equal(next.status, 200, next.text);
  assert.equal(next.json.token_type, 'DPoP');

  // Past the grace window: without the key the old token still cannot kill
  // the grant; with it, reuse detection works as for any refresh token.
  assert.equal(await psql(main.db, `UPDATE tokens SET used_at = now() - interval '1 hour' WHERE token_hash = '\\x${sha256hex(pair.refresh_token)}'::bytea RETURNING 1`), '1');
  await tokenRefused(main, 'reuse after grace without a proof', () => refresh(main, pair.refresh_token));
  await tokenRefused(main, 'reuse after grace with another key', async () => refresh(main, pair.refresh_token, { dpop: await proof(other, 'POST', htu) }));
  assert.equal(await grantStatus(main, pair.refresh_token), 'active', 'a refusal for the proof is not reuse');
  const reuse = await refresh(main, pair.refresh_token, { dpop: await proof(k, 'POST', htu) });
  assertOAuthError(reuse, 400, 'invalid_grant');
  assert.equal(await grantStatus(main, pair.refresh_token), 'revoked', 'reuse by the key holder revokes the grant');
  await proxyRefused(main, 'a token of the grant revoked for reuse', { token: next.json.access_token, dpop: await pp(main, k, next.json.access_token) }, 'invalid_token');
});

test('/token: a confidential client\'s refresh token is not bound; its access tokens are when it sends a proof', T, async () => {
  const k = await newKey();
  const f = await code(main, { clientId: CONF.id, redirectUri: CONF.redirect });
  const t = await exchange(main, f, { clientId: CONF.id, redirectUri: CONF.redirect, secret: CONF.secret,
    dpop: await proof(k, 'POST', `${main.pub}/token`) });
  assert.equal(t.status, 200, t.text);
  assert.equal(t.json.token_type, 'DPoP');
  assert.equal(await row(main, t.json.access_token), `access|${k.jkt}`);
  assert.equal(await row(main, t.json.refresh_token), 'refresh|', 'a confidential client\'s refresh token has no jkt');
  // Without a proof: a Bearer access token.
  const r = await refresh(main, t.json.refresh_token, { clientId: CONF.id, secret: CONF.secret });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.token_type, 'Bearer');
  assert.equal(await row(main, r.json.access_token), 'access|');
  // With one: bound again, the refresh token still not.
  const r2 = await refresh(main, r.json.refresh_token, { clientId: CONF.id, secret: CONF.secret, dpop: await proof(k, 'POST', `${main.pub}/token`) });
  assert.equal(r2.status, 200, r2.text);
  assert.equal(r2.json.token_type, 'DPoP');
  assert.equal(await row(main, r2.json.access_token), `access|${k.jkt}`);
  assert.equal(await row(main, r2.json.refresh_token), 'refresh|');
});

test('/token: a client_credentials machine client gets a DPoP-bound access token', T, async () => {
  const k = await newKey('ES256');
  const t = await machineToken(main, { dpop: await proof(k, 'POST', `${main.pub}/token`) });
  assert.equal(t.status, 200, t.text);
  assert.equal(t.json.token_type, 'DPoP');
  assert.equal(t.json.refresh_token, undefined);
  assert.equal(await row(main, t.json.access_token), `access|${k.jkt}`);
  const { seen } = await proxyOk(main, 'machine token with a proof', '/m2m', { token: t.json.access_token, dpop: await pp(main, k, t.json.access_token, { path: '/m2m' }) });
  assert.match(seen.headers.authorization, /^Bearer oidc_at_/, 'the upstream credential is injected');
  await proxyRefused(main, 'machine token as Bearer', { scheme: 'Bearer', token: t.json.access_token }, 'invalid_token', '/m2m');
  // The next one reuses the grant; with another key it is bound to that key.
  const k2 = await newKey('EdDSA');
  const t2 = await machineToken(main, { dpop: await proof(k2, 'POST', `${main.pub}/token`) });
  assert.equal(t2.status, 200, t2.text);
  assert.equal(await row(main, t2.json.access_token), `access|${k2.jkt}`);
  await proxyRefused(main, 'machine token with the first key', { token: t2.json.access_token, dpop: await pp(main, k, t2.json.access_token, { path: '/m2m' }) },
    'invalid_dpop_proof', '/m2m', WHY.key);
  // Bad proofs are refused before the client is even looked at.
  await tokenRefused(main, 'machine: proof for GET', async () => machineToken(main, { dpop: await proof(k, 'GET', `${main.pub}/token`) }));
  // Without a proof, Bearer as before.
  const b = await machineToken(main);
  assert.equal(b.status, 200, b.text);
  assert.equal(b.json.token_type, 'Bearer');
  await proxyOk(main, 'machine Bearer token', '/m2m', { scheme: 'Bearer', token: b.json.access_token });
});

// ---- the proxy -------------------------------------------------------------

test('proxy: a bound token works in the DPoP scheme with a proof; the downstream never sees the proof nor the token', T, async () => {
  const k = await newKey();
  const pair = await boundPair(main, k);
  const at = pair.access_token;
  for (const [what, path, method, htuPath] of [
    ['POST /mcp', '/mcp', 'POST', '/mcp'],
    ['GET /mcp', '/mcp', 'GET', '/mcp'],
    ['POST /mcp/x', '/mcp/x', 'POST', '/mcp/x'],
    ['GET /mcp/x?a=1 (the query is not part of htu)', '/mcp/x?a=1', 'GET', '/mcp/x'],
  ]) {
    const dpop = await pp(main, k, at, { htm: method, path: htuPath });
    const { seen } = await proxyOk(main, what, path, { token: at, dpop, method });
    assert.equal(seen.headers.dpop, undefined, `${what}: the DPoP header is dropped`);
    assert.ok(!JSON.stringify(seen.rawHeaders).includes(at), `${what}: the client's token never reaches the downstream`);
    assert.ok(!JSON.stringify(seen.rawHeaders).includes(dpop.split('.')[2]), `${what}: nor its proof`);
    assert.match(seen.headers.authorization || '', /^Bearer gho_/, `${what}: the upstream credential is injected`);
  }
  // A proof whose htu carries the query the request has is accepted too
  // (both sides ignore it).
  await proxyOk(main, 'htu with the query', '/mcp/x?a=1', { token: at, method: 'GET',
    dpop: await proof(k, 'GET', `${main.pub}/mcp/x?a=1`, { claims: { ath: athOf(at) } }) });
  // An unbound token in the Bearer scheme with a DPoP header beside it: the
  // proof is ignored, and dropped before the downstream.
  const plain = await exchange(main, await code(main));
  const { seen: s2 } = await proxyOk(main, 'Bearer token with a stray DPoP header', '/mcp', { scheme: 'Bearer', token: plain.json.access_token,
    dpop: await pp(main, k, plain.json.access_token) });
  assert.equal(s2.headers.dpop, undefined, 'a stray DPoP header is dropped');
  // Scheme case-insensitive; htu scheme and host case-insensitive.
  await proxyOk(main, 'scheme dpop in lowercase', '/mcp', { scheme: 'dpop', token: at, dpop: await pp(main, k, at) });
  await proxyOk(main, 'htu host in capitals', '/mcp', { token: at,
    dpop: await proof(k, 'POST', `${main.pub.replace('http://', 'HTTP://')}/mcp`, { claims: { ath: athOf(at) } }) });
});

// Regression: the htu was compared with r->path, which libmicrohttpd has
// percent-decoded, so the proof for the URL the client requested never
// matched. The proof's path is now decoded the same way before comparing:
// /mcp/a%20b and the (URI-invalid) /mcp/a b name the same request for the
// broker, which forwards the decoded path re-encoded.
test('proxy: a path with a percent-encoded character takes the proof for the URL the client requested', T, async () => {
  const k = await newKey();
  const pair = await boundPair(main, k);
  const at = pair.access_token;
  const n = ds.requests.length;
  const r = await rawRequest(main.broker.port, { method: 'GET', path: '/mcp/a%20b',
    headers: [['Authorization', `DPoP ${at}`], ['DPoP', await proof(k, 'GET', `${main.pub}/mcp/a%20b`, { claims: { ath: athOf(at) } })]] });
  // What the broker compares against instead: the decoded path (an htu
  // that is no URI at all, with a raw space).
  const decoded = await rawRequest(main.broker.port, { method: 'GET', path: '/mcp/a%20b',
    headers: [['Authorization', `DPoP ${at}`], ['DPoP', await proof(k, 'GET', `${main.pub}/mcp/a b`, { claims: { ath: athOf(at) } })]] });
  assert.equal(r.status, 200, `GET /mcp/a%20b with a proof for ${main.pub}/mcp/a%20b: ${r.status} ${r.headers['www-authenticate']}`);
  assert.equal(decoded.status, 200, `the same request, a proof naming it decoded: ${decoded.status}`);
  assert.equal(ds.requests.length, n + 2);
  // Another path is still another URL, however it is spelled.
  const other = await rawRequest(main.broker.port, { method: 'GET', path: '/mcp/a%20b',
    headers: [['Authorization', `DPoP ${at}`], ['DPoP', await proof(k, 'GET', `${main.pub}/mcp/a%20c`, { claims: { ath: athOf(at) } })]] });
  assert.equal(other.status, 401);
  const broken = await rawRequest(main.broker.port, { method: 'GET', path: '/mcp/a%20b',
    headers: [['Authorization', `DPoP ${at}`], ['DPoP', await proof(k, 'GET', `${main.pub}/mcp/a%2`, { claims: { ath: athOf(at) } })]] });
  assert.equal(broken.status, 401);
  assert.equal(ds.requests.length, n + 2);
});

// Regression: LIM_DPOP_HTU was 2048, as LIM_PATH is, so the htu of the
// longest path the broker accepts (public_url longer) was read as none.
test('proxy: a request with the longest path the broker accepts takes its proof', T, async () => {
  const k = await newKey();
  const pair = await boundPair(main, k);
  const at = pair.access_token;
  const path = `/mcp/${'a'.repeat(2048 - 5)}`;
  assert.equal(path.length, 2048);
  // The path itself is fine: a Bearer token gets through on it.
  const plain = await exchange(main, await code(main));
  await proxyOk(main, 'a Bearer token on the longest path', path, { scheme: 'Bearer', token: plain.json.access_token, method: 'GET' });
  await proxyOk(main, 'a bound token on the longest path', path, { token: at, method: 'GET', dpop: await pp(main, k, at, { htm: 'GET', path }) });
});

// Regression: the /token preflight (routes.c cors_preflight) did not allow
// the DPoP header, so a browser-based client could not send its proof.
test('CORS: preflights allow the DPoP header at the resource and at /token, answers expose DPoP-Nonce', T, async () => {
  const origin = main.pub;
  const pre = await http(`${main.url}/mcp`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST',
    'access-control-request-headers': 'authorization, dpop, content-type' } });
  assert.equal(pre.status, 204, pre.text);
  assert.match(pre.headers.get('access-control-allow-headers') || '', /(^|,\s*)DPoP(,|$)/i);
  const k = await newKey();
  const pair = await boundPair(main, k);
  const ok = await proxyOk(main, 'a bound call with an Origin', '/mcp', { token: pair.access_token, dpop: await pp(main, k, pair.access_token), headers: { origin } });
  assert.match(ok.r.headers.get('access-control-expose-headers') || '', /DPoP-Nonce/i);
  assert.match(ok.r.headers.get('access-control-expose-headers') || '', /WWW-Authenticate/i);
  const tok = await tokenRequest(main.url, { grant_type: 'refresh_token', refresh_token: 'mcpb_rt_x', client_id: PUBLIC.id }, { headers: { origin: 'https://app.example' } });
  assert.match(tok.headers.get('access-control-expose-headers') || '', /DPoP-Nonce/i, '/token exposes DPoP-Nonce');
  const tp = await http(`${main.url}/token`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST',
    'access-control-request-headers': 'content-type, dpop' } });
  assert.equal(tp.status, 204, tp.text);
  assert.match(tp.headers.get('access-control-allow-headers') || '', /(^|,\s*)DPoP(,|$)/i,
    `OPTIONS /token: Access-Control-Allow-Headers ${tp.headers.get('access-control-allow-headers')}`);
});

test('proxy: every bad presentation of a bound token is refused with a DPoP challenge and never forwarded', T, async () => {
  const k = await newKey();
  const other = await newKey();
  const pair = await boundPair(main, k);
  const at = pair.access_token;
  const unbound = await exchange(main, await code(main));
  assert.equal(unbound.json.token_type, 'Bearer');
  const bt = unbound.json.access_token;
  // Validated once, so the cached path is exercised below as well.
  await proxyOk(main, 'bound token', '/mcp', { token: at, dpop: await pp(main, k, at) });

  const cases = [
    ['Bearer use of a bound token', { scheme: 'Bearer', token: at }, 'invalid_token'],
    ['Bearer use of a bound token with a valid proof beside it', { scheme: 'Bearer', token: at, dpop: await pp(main, k, at) }, 'invalid_token'],
    ['DPoP scheme with an unbound token', { token: bt, dpop: await pp(main, k, bt) }, 'invalid_token'],
    ['DPoP scheme with an unknown token', { token: `mcpb_at_${randomBytes(32).toString('base64url')}`, dpop: await pp(main, k, at) }, 'invalid_token'],
    ['proof for the path in capitals', { token: at, dpop: await pp(main, k, at, { path: '/MCP' }) }, 'invalid_dpop_proof'],
    ['no DPoP header', { token: at }, 'invalid_dpop_proof'],
    ['proof for another URL', { token: at, dpop: await pp(main, k, at, { path: '/other' }) }, 'invalid_dpop_proof'],
    ['proof for another sub-path', { token: at, dpop: await pp(main, k, at, { path: '/mcp/y' }) }, 'invalid_dpop_proof'],
    ['proof for another origin', { token: at, dpop: await proof(k, 'POST', 'http://elsewhere.example/mcp', { claims: { ath: athOf(at) } }) }, 'invalid_dpop_proof'],
    ['proof for another method', { token: at, dpop: await pp(main, k, at, { htm: 'GET' }) }, 'invalid_dpop_proof'],
    ['proof without ath', { token: at, dpop: await proof(k, 'POST', `${main.pub}/mcp`) }, 'invalid_dpop_proof'],
    ['proof with the ath of another token', { token: at, dpop: await pp(main, k, bt) }, 'invalid_dpop_proof'],
    ['proof with the plain token as ath', { token: at, dpop: await pp(main, k, at, { claims: { ath: at } }) }, 'invalid_dpop_proof'],
    ['proof by another key than the bound one', { token: at, dpop: await pp(main, other, at) }, 'invalid_dpop_proof'],
    ['proof signed by another key than its header jwk', { token: at, dpop: await pp(main, other, at, { header: { jwk: k.jwk } }) }, 'invalid_dpop_proof'],
    // The binding is checked before the signature: a forged key is turned
    // away without any verification (its junk signature is never looked at).
    ['an RSA-8192 key with a junk signature', { token: at, dpop: handJws({ alg: 'RS256', typ: 'dpop+jwt',
      jwk: { kty: 'RSA', e: 'AQAB', n: randomBytes(1024).toString('base64url') } },
    { jti: newJti(), htm: 'POST', htu: `${main.pub}/mcp`, iat: now(), ath: athOf(at) }, () => randomBytes(1024).toString('base64url')) }, 'invalid_dpop_proof'],
    ['expired iat', { token: at, dpop: await pp(main, k, at, { claims: { iat: now() - MAX_AGE - 30 } }) }, 'invalid_dpop_proof'],
    ['iat too far ahead', { token: at, dpop: await pp(main, k, at, { claims: { iat: now() + 120 } }) }, 'invalid_dpop_proof'],
    ['typ JWT', { token: at, dpop: await pp(main, k, at, { header: { typ: 'JWT' } }) }, 'invalid_dpop_proof'],
    ['alg none', { token: at, dpop: handJws({ alg: 'none', typ: 'dpop+jwt', jwk: k.jwk },
      { jti: newJti(), htm: 'POST', htu: `${main.pub}/mcp`, iat: now(), ath: athOf(at) }, () => '') }, 'invalid_dpop_proof'],
    ['the /token proof', { token: at, dpop: await proof(k, 'POST', `${main.pub}/token`) }, 'invalid_dpop_proof'],
    ['garbage proof', { token: at, dpop: 'garbage' }, 'invalid_dpop_proof'],
  ];
  const why = {
    'Bearer use of a bound token': 'asDpop',
    'Bearer use of a bound token with a valid proof beside it': 'asDpop',
    'DPoP scheme with an unbound token': 'unbound',
    'DPoP scheme with an unknown token': null,
    'proof for the path in capitals': 'htu',
    'no DPoP header': 'noproof',
    'proof for another URL': 'htu',
    'proof for another sub-path': 'htu',
    'proof for another origin': 'htu',
    'proof for another method': 'htm',
    'proof without ath': 'ath',
    'proof with the ath of another token': 'ath',
    'proof with the plain token as ath': 'ath',
    'proof by another key than the bound one': 'key',
    'proof signed by another key than its header jwk': 'sig',
    'an RSA-8192 key with a junk signature': 'key',
    'expired iat': 'iat',
    'iat too far ahead': 'iat',
    'typ JWT': 'typ',
    'alg none': 'alg',
    'the /token proof': 'htu',
    'garbage proof': 'alg',
  };
  for (const [what, opts, error] of cases) {
    assert.ok(what in why, `a reason for ${what}`);
    await proxyRefused(main, what, opts, error, '/mcp', why[what] && WHY[why[what]]);
  }
  // GET and DELETE are gated the same way.
  await proxyRefused(main, 'GET without a proof', { method: 'GET', token: at }, 'invalid_dpop_proof');
  await proxyRefused(main, 'DELETE with a POST proof', { method: 'DELETE', token: at, dpop: await pp(main, k, at) }, 'invalid_dpop_proof');

  // A tool outside the token's scopes: 403 insufficient_scope, challenged
  // in the scheme the token came in.
  const denied = await unseen('insufficient scope', async () => mcp(main, '/mcp', { token: at, dpop: await pp(main, k, at), body: call('delete_repo') }));
  assert.equal(denied.status, 403, denied.text);
  const dc = parseChallenge(denied.headers.get('www-authenticate'));
  assert.equal(dc.scheme, 'DPoP', denied.headers.get('www-authenticate'));
  assert.equal(dc.params.error, 'insufficient_scope');
  assert.ok(dc.params.algs, 'algs in the DPoP challenge');

  // Replay: a proof passes once.
  const once = await pp(main, k, at);
  await proxyOk(main, 'first use', '/mcp', { token: at, dpop: once });
  await proxyRefused(main, 'replayed proof', { token: at, dpop: once }, 'invalid_dpop_proof', '/mcp', WHY.replay);

  // The same proof five times at once: one passes (the jti memory is shared by the node's threads).
  const raced = await pp(main, k, at);
  const n0 = ds.requests.length;
  const statuses = (await Promise.all(Array.from({ length: 5 }, () => mcp(main, '/mcp', { token: at, dpop: raced })))).map((x) => x.status).sort();
  assert.deepEqual(statuses, [200, 401, 401, 401, 401]);
  assert.equal(ds.requests.length, n0 + 1, 'one raced proof reached the downstream');

  // Two DPoP headers: refused by the header screen.
  const n = ds.requests.length;
  const two = await rawRequest(main.broker.port, { method: 'POST', path: '/mcp', body: JSON.stringify(call('list_issues')),
    headers: [['Authorization', `DPoP ${at}`], ['Content-Type', 'application/json'], ['DPoP', await pp(main, k, at)], ['DPoP', await pp(main, k, at)]] });
  assert.equal(two.status, 400, two.body);
  assert.equal(ds.requests.length, n, 'two DPoP headers never reach the downstream');

  // The token still works afterwards, and the node is healthy.
  await proxyOk(main, 'bound token after the refusals', '/mcp', { token: at, dpop: await pp(main, k, at) });
  await ready(main, 'proxy refusals');
});

test('proxy: a require_dpop resource refuses Bearer tokens and challenges in the DPoP scheme', T, async () => {
  const k = await newKey();
  // /token issues no Bearer token for it: the exchange without a proof is
  // refused, nothing written, and the code still redeems with one.
  const f = await code(main, { resource: '/strict' });
  await tokenRefused(main, 'a Bearer token for /strict', () => exchange(main, f), { why: /DPoP-bound tokens only/ });
  const bound = await exchange(main, f, { dpop: await proof(k, 'POST', `${main.pub}/token`) });
  assert.equal(bound.status, 200, bound.text);
  assert.equal(bound.json.token_type, 'DPoP');
  // Nor a refresh without one (the refresh token of a public client is bound anyway).
  await tokenRefused(main, 'a Bearer refresh for /strict', () => refresh(main, bound.json.refresh_token), { why: /DPoP/ });
  // A Bearer token for /strict as one issued before the resource required
  // DPoP (or by a node of an older version): its binding cleared in the database.
  const old = await boundPair(main, k, { resource: '/strict' });
  await psql(main.db, `UPDATE tokens SET jkt = NULL WHERE token_hash = '\\x${sha256hex(old.access_token)}'::bytea`);
  const bearer = { json: { access_token: old.access_token } };
  assert.equal(await row(main, old.access_token), 'access|');
  await proxyRefused(main, 'Bearer token at /strict', { scheme: 'Bearer', token: bearer.json.access_token }, 'invalid_token', '/strict',
    /accepts DPoP-bound tokens only/);
  await proxyRefused(main, 'Bearer token in the DPoP scheme at /strict', { token: bearer.json.access_token,
    dpop: await pp(main, k, bearer.json.access_token, { path: '/strict' }) }, 'invalid_token', '/strict');
  await proxyRefused(main, 'no token at /strict', {}, undefined, '/strict');
  const pair = await boundPair(main, k, { resource: '/strict' });
  await proxyOk(main, 'bound token at /strict', '/strict', { token: pair.access_token, dpop: await pp(main, k, pair.access_token, { path: '/strict' }) });
  // A bound token for /strict is not one for /mcp (audience first).
  const r = await unseen('a /strict token at /mcp', async () => mcp(main, '/mcp', { token: pair.access_token, dpop: await pp(main, k, pair.access_token) }));
  assert.equal(r.status, 401);
});

// ---- introspection and revocation ---------------------------------------------

test('introspection: a bound access token answers token_type DPoP and cnf.jkt', T, async () => {
  const intro = (token) => http(`${main.url}/introspect`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${RS.id}:${RS.secret}`).toString('base64')}` },
    body: new URLSearchParams({ token }).toString() });
  const k = await newKey();
  const pair = await boundPair(main, k);
  const a = await intro(pair.access_token);
  assert.equal(a.status, 200, a.text);
  assert.equal(a.json.active, true);
  assert.equal(a.json.token_type, 'DPoP');
  assert.deepEqual(a.json.cnf, { jkt: k.jkt });
  const rt = await intro(pair.refresh_token);
  assert.equal(rt.json.active, true);
  assert.equal(rt.json.token_type, 'refresh_token');
  const plain = await exchange(main, await code(main));
  const b = await intro(plain.json.access_token);
  assert.equal(b.json.token_type, 'Bearer');
  assert.equal(b.json.cnf, undefined);
});

test('revocation still cuts a bound token: /revoke of the access token, admin revoke of the grant', T, async () => {
  const k = await newKey();
  const pair = await boundPair(main, k);
  const at = pair.access_token;
  await proxyOk(main, 'before /revoke', '/mcp', { token: at, dpop: await pp(main, k, at) });
  const rv = await http(`${main.url}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: at, token_type_hint: 'access_token', client_id: PUBLIC.id }).toString() });
  assert.equal(rv.status, 200, rv.text);
  const cut = await waitFor(async () => (await mcp(main, '/mcp', { token: at, dpop: await pp(main, k, at) })).status === 401, 5000);
  assert.ok(cut, 'a revoked bound token is refused with a valid proof');
  await proxyRefused(main, 'revoked bound token', { token: at, dpop: await pp(main, k, at) }, 'invalid_token');

  const p2 = await boundPair(main, k);
  await proxyOk(main, 'before the admin revoke', '/mcp', { token: p2.access_token, dpop: await pp(main, k, p2.access_token) });
  const gid = await psql(main.db, `SELECT grant_id FROM tokens WHERE token_hash = '\\x${sha256hex(p2.access_token)}'::bytea`);
  const ad = await http(`${main.url}/admin/v1/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ grant_id: gid }) });
  assert.equal(ad.status, 200, ad.text);
  const cut2 = await waitFor(async () => (await mcp(main, '/mcp', { token: p2.access_token, dpop: await pp(main, k, p2.access_token) })).status === 401, 5000);
  assert.ok(cut2, 'a bound token of a revoked grant is refused');
  await tokenRefused(main, 'refresh of a revoked grant with the right key', async () => refresh(main, p2.refresh_token, { dpop: await proof(k, 'POST', `${main.pub}/token`) }),
    { error: 'invalid_grant' });
});

// ---- nonce mode -------------------------------------------------------------

test('nonce mode: /token demands a nonce (use_dpop_nonce + DPoP-Nonce), takes it, and every answer carries one', T, async () => {
  const k = await newKey();
  const htu = `${nodeA.pub}/token`;
  const f = await code(nodeA);
  const r = await tokenRefused(nodeA, 'no nonce', async () => exchange(nodeA, f, { dpop: await proof(k, 'POST', htu) }), { error: 'use_dpop_nonce' });
  const nonce = r.headers.get('dpop-nonce');
  assert.match(nonce || '', /^[A-Za-z0-9_-]{32}$/, `DPoP-Nonce: ${nonce}`);
  const forged = `${nonce.slice(0, 31)}${nonce[31] === 'A' ? 'B' : 'A'}`;
  const fr = await tokenRefused(nodeA, 'forged nonce', async () => exchange(nodeA, f, { dpop: await proof(k, 'POST', htu, { claims: { nonce: forged } }) }),
    { error: 'use_dpop_nonce' });
  assert.ok(fr.headers.get('dpop-nonce'), 'a fresh nonce with the refusal');
  await tokenRefused(nodeA, 'random nonce', async () => exchange(nodeA, f, { dpop: await proof(k, 'POST', htu, { claims: { nonce: randomBytes(24).toString('base64url') } }) }),
    { error: 'use_dpop_nonce' });
  // A nonce does not excuse a bad proof.
  await tokenRefused(nodeA, 'nonce but htm GET', async () => exchange(nodeA, f, { dpop: await proof(k, 'GET', htu, { claims: { nonce } }) }));
  const ok = await exchange(nodeA, f, { dpop: await proof(k, 'POST', htu, { claims: { nonce } }) });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.token_type, 'DPoP');
  assert.match(ok.headers.get('dpop-nonce') || '', /^[A-Za-z0-9_-]{32}$/, 'a 200 carries DPoP-Nonce');
  assert.equal(await row(nodeA, ok.json.access_token), `access|${k.jkt}`);
  // Node B takes node A's nonce (one cookie_secret) for the refresh.
  const rb = await refresh(nodeB, ok.json.refresh_token, { dpop: await proof(k, 'POST', htu, { claims: { nonce: ok.headers.get('dpop-nonce') } }) });
  assert.equal(rb.status, 200, `node B with node A's nonce: ${rb.text}`);
  assert.equal(rb.json.token_type, 'DPoP');
  // Without a proof at all, a Bearer pair as before (the nonce is for proofs).
  const plain = await exchange(nodeA, await code(nodeA));
  assert.equal(plain.status, 200, plain.text);
  assert.equal(plain.json.token_type, 'Bearer');
});

test('nonce mode: the proxy demands a nonce, takes one from either node, refuses a forged one', T, async () => {
  const k = await newKey();
  const f = await code(nodeA);
  const first = await exchange(nodeA, f, { dpop: await proof(k, 'POST', `${nodeA.pub}/token`) });
  assertOAuthError(first, 400, 'use_dpop_nonce');
  const t = await exchange(nodeA, f, { dpop: await proof(k, 'POST', `${nodeA.pub}/token`, { claims: { nonce: first.headers.get('dpop-nonce') } }) });
  assert.equal(t.status, 200, t.text);
  const at = t.json.access_token;

  const noNonce = await unseen('no nonce', async () => mcp(nodeA, '/mcp', { token: at, dpop: await pp(nodeA, k, at) }));
  assertDpopChallenge(nodeA, noNonce, { error: 'use_dpop_nonce', what: 'no nonce' });
  const nonce = noNonce.headers.get('dpop-nonce');
  assert.match(nonce || '', /^[A-Za-z0-9_-]{32}$/, `DPoP-Nonce: ${nonce}`);
  const ok = await proxyOk(nodeA, 'with the nonce', '/mcp', { token: at, dpop: await pp(nodeA, k, at, { claims: { nonce } }) });
  assert.equal(ok.seen.headers.dpop, undefined);
  // The answer carries a current nonce (RFC 9449 section 8.2), and it is good.
  const fresh = ok.r.headers.get('dpop-nonce');
  assert.match(fresh || '', /^[A-Za-z0-9_-]{32}$/, 'a proxied 200 carries DPoP-Nonce');
  await proxyOk(nodeA, 'with the nonce of the last answer', '/mcp', { token: at, dpop: await pp(nodeA, k, at, { claims: { nonce: fresh } }) });
  const forged = `${nonce.slice(0, 31)}${nonce[31] === 'A' ? 'B' : 'A'}`;
  const fr = await unseen('forged nonce', async () => mcp(nodeA, '/mcp', { token: at, dpop: await pp(nodeA, k, at, { claims: { nonce: forged } }) }));
  assertDpopChallenge(nodeA, fr, { error: 'use_dpop_nonce', what: 'forged nonce' });
  // A nonce does not excuse a bad proof.
  await proxyRefused(nodeA, 'nonce but another method', { token: at, dpop: await pp(nodeA, k, at, { htm: 'GET', claims: { nonce } }) }, 'invalid_dpop_proof');
  // Node A's nonce at node B (htu is the shared public_url), and B's at A.
  await proxyOk(nodeB, 'node A\'s nonce at node B', '/mcp', { token: at, dpop: await pp(nodeB, k, at, { claims: { nonce } }) });
  const atB = await unseen('no nonce at B', async () => mcp(nodeB, '/mcp', { token: at, dpop: await pp(nodeB, k, at) }));
  assertDpopChallenge(nodeB, atB, { error: 'use_dpop_nonce', what: 'no nonce at B' });
  await proxyOk(nodeA, 'node B\'s nonce at node A', '/mcp', { token: at, dpop: await pp(nodeA, k, at, { claims: { nonce: atB.headers.get('dpop-nonce') } }) });
  // A Bearer token is not asked for a nonce.
  const plain = await exchange(nodeA, await code(nodeA));
  await proxyOk(nodeA, 'Bearer token in nonce mode', '/mcp', { scheme: 'Bearer', token: plain.json.access_token });
});

test('every node is still healthy, and no token or proof is in its log', T, async () => {
  for (const b of [main, nodeA, nodeB]) {
    await ready(b, 'the DPoP tests');
    const log = b.broker.logText();
    assert.ok(!/mcpb_(at|rt|ac)_[A-Za-z0-9_-]{20}/.test(log), 'a broker token in the log');
    assert.ok(!/eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}/.test(log), 'a DPoP proof in the log');
  }
});
