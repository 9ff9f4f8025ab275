// Shared setup of the OAuth integration tests (tests/integration/oauth_*):
// the fake IdP in-process, a broker with three upstreams (GitHub, Sentry,
// generic OIDC through discovery) and three resources, pre-registered
// clients, and the checks every bad-input test repeats: row counts before
// and after, and /readyz afterwards.
import assert from 'node:assert/strict';
import { startIdp } from '../fakes/idp.mjs';
import { startBroker, baseConfig, createDatabase, freePort, http, psql } from './harness.mjs';
import { CookieJar, runFlow, exchangeCode, tokenRequest, pkce, authorizeUrl, browserGet, browserPost, parseConsent }
  from './flow.mjs';

export { startIdp };

export const LOOPBACK_REDIRECT = 'http://127.0.0.1:33418/callback';
export const STATIC_PUBLIC = { client_id: 'static-public', client_name: 'Static Public CLI',
  redirect_uris: ['http://127.0.0.1/cb', 'https://app.example.com/cb'] };
export const STATIC_CONF_SECRET = 'conf-secret-0123456789abcdef';
export const STATIC_CONF = { client_id: 'static-conf', client_name: 'Agent Service',
  client_secret: STATIC_CONF_SECRET, redirect_uris: ['https://agents.example.com/cb'] };
/** A confidential client whose secret has the characters form encoding changes (base64 '+', '/', '=', a '%'). */
export const STATIC_PLUS_SECRET = 'Zm9v+YmFy/YmF6%2B:qux==';
export const STATIC_PLUS = { client_id: 'static-plus', client_secret: STATIC_PLUS_SECRET, redirect_uris: ['https://plus.example.com/cb'] };

/** The three upstreams, all pointing at the fake IdP. */
export function upstreams(idpBase, { timeoutMs = 3000 } = {}) {
  return {
    gh: {
      preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret', timeout_ms: timeoutMs,
      authorize_url: `${idpBase}/github/login/oauth/authorize`,
      token_url: `${idpBase}/github/login/oauth/access_token`,
      userinfo_url: `${idpBase}/github/api/user`,
      revoke_url: `${idpBase}/github/api/applications/{client_id}/grant`,
      scopes: ['read:user', 'repo'],
    },
    sentry: {
      preset: 'sentry', client_id: 'sentry-client', client_secret: 'sentry-secret', timeout_ms: timeoutMs,
      authorize_url: `${idpBase}/sentry/oauth/authorize/`,
      token_url: `${idpBase}/sentry/oauth/token/`,
      userinfo_url: `${idpBase}/sentry/api/0/`,
      revoke_url: `${idpBase}/sentry/oauth/revoke/`,
      scopes: ['org:read', 'project:read'],
    },
    oidc: {
      preset: 'oidc', issuer: `${idpBase}/oidc`, client_id: 'oidc-client', client_secret: 'oidc-secret',
      timeout_ms: timeoutMs, scopes: ['openid', 'profile', 'email'],
    },
  };
}

export const RESOURCES = [
  { path: '/mcp', upstream: 'gh', downstream: 'http://127.0.0.1:9/mcp',
    scopes: { 'repo:read': ['list_issues', 'get_file'], 'repo:write': ['*'] }, default_scopes: ['repo:read'] },
  { path: '/sentry-mcp', upstream: 'sentry', downstream: 'http://127.0.0.1:9/sentry',
    scopes: { 'issues:read': ['list_issues'], 'issues:write': ['*'] }, default_scopes: ['issues:read'] },
  { path: '/oidc-mcp', upstream: 'oidc', downstream: 'http://127.0.0.1:9/oidc',
    scopes: { 'files:read': ['read'], 'files:write': ['write'] } },
];

/**
 * Starts a broker on a fresh database. patch(cfg) may edit the config in
 * place. Returns { broker, url, db, cfg, stop() }.
 */
export async function startOauthBroker(idp, { patch, resources = RESOURCES, timeoutMs } = {}) {
  const db = await createDatabase('oauth');
  const port = await freePort();
  const cfg = baseConfig({ port, databaseUrl: db, extra: {
    tokens: { access_ttl: 300, refresh_ttl: 86400, code_ttl: 60, refresh_grace: 10 },
    registration: { dynamic: true, client_id_metadata_documents: false },
    // Bad-input tests send many refusals from 127.0.0.1: failure limits off (ratelimit_abuse tests them).
    limits: { register_per_ip_per_hour: 0, token_failures_per_client_address_per_minute: 0, token_failures_per_address_per_minute: 0 },
    clients: [STATIC_PUBLIC, STATIC_CONF, STATIC_PLUS],
    upstreams: upstreams(idp.base, { timeoutMs }),
    resources: structuredClone(resources),
  } });
  if (patch) patch(cfg);
  const broker = await startBroker(cfg);
  // SIGTERM drains and exits 0; a sanitizer build's reports fail the test here.
  const stop = async () => {
    const { code, signal } = await broker.stop();
    const bad = broker.logs().filter((l) => /AddressSanitizer|LeakSanitizer|runtime error:/.test(l));
    if (code !== 0 || bad.length) throw new Error(`broker exited ${code ?? signal}:\n${broker.logs().slice(-30).join('\n')}`);
  };
  return { broker, url: broker.url, db, cfg, stop };
}

/** Runs every cleanup (last first) even when one fails; rethrows the first failure. */
export async function runCleanups(list) {
  let first;
  for (const c of list.splice(0).reverse()) {
    try { await c(); } catch (e) { first ??= e; }
  }
  if (first) throw first;
}

/** Fake IdP control API. */
export async function control(idp, path, body) {
  const r = await http(`${idp.base}/_control/${path}`, body === undefined ? {} : {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  if (r.status !== 200) throw new Error(`idp control ${path}: ${r.status} ${r.text}`);
  return r.json;
}
export const setFault = (idp, key, spec) => control(idp, 'config', { fault: { [key]: spec } });
export const resetIdp = (idp) => control(idp, 'reset', {});

export const TABLES = ['grants', 'tokens', 'auth_codes', 'users', 'clients', 'consents'];

/** Row counts of the OAuth tables: { grants: n, ... }. */
export async function counts(db, tables = TABLES) {
  const out = await psql(db, `SELECT ${tables.map((t) => `(SELECT count(*) FROM ${t})`).join(', ')}`);
  const v = out.split('|').map(Number);
  return Object.fromEntries(tables.map((t, i) => [t, v[i]]));
}

/** Runs fn and asserts that no OAuth table changed, then that the node is ready. */
export async function unchanged(env, fn, tables = TABLES) {
  const before = await counts(env.db, tables);
  const out = await fn();
  assert.deepEqual(await counts(env.db, tables), before, 'nothing may be half-written');
  await assertReady(env.url);
  return out;
}

export async function assertReady(url) {
  const r = await http(`${url}/readyz`);
  assert.equal(r.status, 200, `readyz: ${r.status} ${r.text}`);
}

export async function register(url, doc, { headers = {}, raw } = {}) {
  return http(`${url}/register`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers },
    body: raw !== undefined ? raw : JSON.stringify(doc),
  });
}

/** Registers a public client with one loopback redirect URI. */
export async function publicClient(url, { redirectUri = LOOPBACK_REDIRECT, name = 'test client' } = {}) {
  const r = await register(url, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', client_name: name });
  assert.equal(r.status, 201, r.text);
  return { clientId: r.json.client_id, redirectUri };
}

/** Query parameters of a Location header as a plain object (repeats kept as arrays). */
export function locationParams(loc) {
  const u = new URL(loc);
  const out = {};
  for (const [k, v] of u.searchParams) out[k] = k in out ? [].concat(out[k], v) : v;
  return out;
}

/** Asserts an HTML error page: status, no redirect, safe headers. */
export function assertErrorPage(res, status) {
  assert.equal(res.status, status, `${res.status} ${res.text.slice(0, 200)}`);
  assert.equal(res.headers.get('location'), null, 'an unsafe error must never redirect');
  assert.match(res.headers.get('content-type') || '', /^text\/html/);
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.match(res.headers.get('cache-control') || '', /no-store/);
}

/** Asserts an RFC 6749 JSON error answer. */
export function assertOAuthError(res, status, error) {
  assert.equal(res.status, status, `${res.status} ${res.text}`);
  assert.equal(res.json?.error, error, res.text);
  assert.match(res.headers.get('cache-control') || '', /no-store/);
  assert.match(res.headers.get('content-type') || '', /^application\/json/);
}

/** Asserts a redirect back to the client carrying error, state and iss. */
export function assertErrorRedirect(res, { redirectUri, error, state, iss }) {
  assert.equal(res.status, 302, `${res.status} ${res.text.slice(0, 300)}`);
  const loc = res.headers.get('location');
  assert.ok(loc.startsWith(redirectUri.split('?')[0]), `redirect to ${loc}`);
  const p = locationParams(loc);
  assert.equal(p.error, error, loc);
  if (state !== undefined) assert.equal(p.state, state, loc);
  if (iss !== undefined) assert.equal(p.iss, iss, loc);
  assert.equal(p.code, undefined);
  return p;
}

/**
 * GET /authorize and POST the decision as a browser; returns the consent
 * step answer (on approve a 302 to the upstream) with the jar and verifier.
 */
export async function approveUntilUpstream(url, { clientId, redirectUri, resource, scope, state = 'cs-1', jar = new CookieJar(), extra = {},
  decision = 'approve' }) {
  const p = pkce();
  const a = await browserGet(authorizeUrl(url, {
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, code_challenge: p.challenge,
    code_challenge_method: 'S256', state, scope, resource, ...extra,
  }), jar);
  assert.equal(a.status, 200, a.text.slice(0, 300));
  const consent = parseConsent(a.text);
  const res = await browserPost(consent.action, jar, { ...consent.fields, decision });
  return { res, jar, verifier: p.verifier, consent, page: a };
}

/** Follows the upstream leg with the fake IdP's login shortcut; returns the upstream's 302 to /callback. */
export async function upstreamLogin(location, { login = 'alice', decision } = {}) {
  const up = new URL(location);
  up.searchParams.set('login', login);
  up.searchParams.set('auto', '1');
  if (decision) up.searchParams.set('decision', decision);
  const r = await http(up.toString());
  assert.equal(r.status, 302, `upstream login: ${r.status} ${r.text.slice(0, 200)}`);
  return r.headers.get('location');
}

/** A full flow and code exchange for clientId on resource path; returns tokens plus context. */
export async function tokensFor(url, { clientId, redirectUri = LOOPBACK_REDIRECT, path = '/mcp', scope, login = 'alice', secret }) {
  const f = await runFlow({ broker: url, clientId, redirectUri, resource: `${url}${path}`, scope, login });
  assert.ok(f.code, `flow failed: ${JSON.stringify(Object.fromEntries(Object.entries(f.steps).map(([k, v]) => [k, [v.status, v.headers.get('location'), v.text.slice(0, 200)]])))}`);
  const t = await exchangeCode(url, { clientId, code: f.code, verifier: f.verifier, redirectUri, secret });
  assert.equal(t.status, 200, t.text);
  return { ...t.json, flow: f };
}

/** Calls the protected resource with a bearer token. */
export function callResource(url, path, token, { method = 'POST', body = '{"jsonrpc":"2.0","id":1,"method":"ping"}' } = {}) {
  return http(`${url}${path}`, {
    method, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    ...(method === 'GET' || method === 'HEAD' ? {} : { body }),
  });
}

export { CookieJar, runFlow, exchangeCode, tokenRequest, pkce, authorizeUrl, browserGet, browserPost, parseConsent, http, psql };
