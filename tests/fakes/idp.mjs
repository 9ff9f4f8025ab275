#!/usr/bin/env node
// Fake upstream identity provider for mcp-broker tests and demos.
//
// One HTTP server, three personalities under path prefixes:
//   /github  GitHub OAuth app   (form-encoded token answers, errors with 200,
//                               non-expiring tokens unless github.expiring)
//   /sentry  Sentry             (JSON, expiring access, rotating refresh,
//                               RFC 7009 revocation)
//   /oidc    generic OIDC       (discovery, JSON, PKCE S256, userinfo,
//                               refresh rotation only if oidc.rotate_refresh)
// plus a loopback control API under /_control for tests (stats, config,
// fault injection, revocation and expiry of a user's tokens).
//
// Only node built-ins. Usage:
//   node tests/fakes/idp.mjs [--port N] [--host 127.0.0.1]
// prints exactly one stdout line {"event":"listening","port":N,"base":"..."}
// and one JSON line per request on stderr (never tokens, codes or secrets).
// In-process: import { startIdp } and call startIdp({ port: 0 }).
// See README.md beside this file for the endpoint and control API list.

import http from 'node:http';
import crypto from 'node:crypto';
import { URL, pathToFileURL } from 'node:url';
import querystring from 'node:querystring';

// ---------------------------------------------------------------- constants

const BODY_LIMIT = 64 * 1024;          // every incoming body; more -> 413
const HUGE_BYTES = 5 * 1024 * 1024;    // fault mode "huge"
const LOGIN_RE = /^[a-z0-9][a-z0-9._-]{0,38}$/;
const VERIFIER_RE = /^[A-Za-z0-9._~-]{43,128}$/;
const CHALLENGE_RE = /^[A-Za-z0-9_-]{43}$/;
const GH_ERROR_URI = 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors';

const PERSONALITIES = ['github', 'sentry', 'oidc'];

const AUTH_PATH = {
  github: '/github/login/oauth/authorize',
  sentry: '/sentry/oauth/authorize/',
  oidc: '/oidc/authorize',
};
const TOKEN_PATH = {
  github: '/github/login/oauth/access_token',
  sentry: '/sentry/oauth/token/',
  oidc: '/oidc/token',
};

// Token prefixes: distinct per personality and kind so a test can grep a DB
// dump or a log for any of them.
const PREFIX = {
  github: { access: 'gho_', refresh: 'ghr_', code: 'ghcode_' },
  sentry: { access: 'sntr_', refresh: 'sntrr_', code: 'sntrcode_' },
  oidc: { access: 'oidc_at_', refresh: 'oidc_rt_', code: 'oidc_code_' },
};

const BRAND = {
  github: { name: 'GitHub', color: '#24292f' },
  sentry: { name: 'Sentry', color: '#362d59' },
  oidc: { name: 'Generic OIDC', color: '#1f6feb' },
};

export const ENDPOINT_KEYS = [
  'github.authorize', 'github.token', 'github.token.refresh', 'github.user', 'github.revoke', 'github.revoke_token',
  'sentry.authorize', 'sentry.token', 'sentry.token.refresh', 'sentry.token.client_credentials', 'sentry.user', 'sentry.revoke',
  'oidc.discovery', 'oidc.jwks', 'oidc.authorize', 'oidc.token', 'oidc.token.refresh', 'oidc.token.client_credentials',
  'oidc.userinfo', 'oidc.revoke',
];

const FAULT_MODES = ['error', 'invalid_grant', 'status', 'timeout', 'garbage', 'huge', 'reset',
  'invalid_client', 'unauthorized_client', 'bad_refresh_token', 'rate_limited', 'incomplete', 'bad_json', 'wrong_type'];
// Modes that only make sense for a token endpoint (<p>.token, <p>.token.refresh, <p>.token.client_credentials).
const TOKEN_ONLY_MODES = new Set(['invalid_client', 'unauthorized_client', 'bad_refresh_token']);
const isTokenKey = (key) => /^[a-z]+\.token(\.refresh|\.client_credentials)?$/.test(key);
const FAULT_FIELDS = ['mode', 'status', 'count', 'delay_ms', 'retry_after', 'error'];

// Times are seconds; a ttl of 0 means "never expires".
export const DEFAULT_CONFIG = Object.freeze({
  github: {
    clients: { 'gh-client': 'gh-secret' },
    default_client_secret: 'gh-secret', // secret for client_ids not in clients; null = reject them
    expiring: false,                    // true = GitHub App style expiring user tokens
    access_ttl: 28800,
    refresh_ttl: 15897600,
    code_ttl: 600,
    require_user_agent: true,           // real api.github.com answers 403 without User-Agent
  },
  sentry: {
    clients: { 'sentry-client': 'sentry-secret' },
    default_client_secret: 'sentry-secret',
    access_ttl: 3600,
    refresh_ttl: 0,
    code_ttl: 600,
  },
  oidc: {
    clients: { 'oidc-client': 'oidc-secret' },
    default_client_secret: 'oidc-secret',
    access_ttl: 3600,
    refresh_ttl: 0,
    rotate_refresh: false,
    issue_refresh: true,
    require_pkce: false,
    id_token: true,                     // RS256 id_token when scope has openid
    code_ttl: 600,
  },
  fault: {},
});

const SECRET_KEYS = new Set(['client_secret', 'code', 'code_verifier', 'access_token', 'refresh_token',
  'id_token', 'token', 'password', 'client_assertion', 'assertion', 'subject_token']);

// ---------------------------------------------------------------- state

function freshState() {
  const st = {
    config: structuredClone(DEFAULT_CONFIG),
    users: new Map(),       // login -> {id, login, name, email}
    nextUserId: 1001,
    codes: new Map(),       // code -> record
    tokens: new Map(),      // token -> record
    nextGrant: 1,
    stats: Object.fromEntries(ENDPOINT_KEYS.map((k) => [k, 0])),
    revokedCount: 0,
    faultsApplied: 0,
    lastRequest: new Map(), // endpoint key -> redacted snapshot
  };
  userFor(st, 'alice');
  userFor(st, 'bob');
  return st;
}

function userFor(st, raw) {
  const login = String(raw ?? '').trim().toLowerCase();
  if (!LOGIN_RE.test(login)) return null;
  let u = st.users.get(login);
  if (!u) {
    u = { id: st.nextUserId++, login, name: login[0].toUpperCase() + login.slice(1), email: `${login}@example.com` };
    st.users.set(login, u);
  }
  return u;
}

function findUser(st, ref) {
  const s = String(ref ?? '').trim().toLowerCase();
  for (const u of st.users.values()) if (u.login === s || String(u.id) === s) return u;
  return null;
}

const randomToken = (prefix) => prefix + crypto.randomBytes(32).toString('base64url');

function secretEquals(a, b) {
  const ha = crypto.createHash('sha256').update(String(a)).digest();
  const hb = crypto.createHash('sha256').update(String(b)).digest();
  return crypto.timingSafeEqual(ha, hb);
}

function isLive(rec, now = Date.now()) {
  return !rec.revoked && (rec.expires_at == null || rec.expires_at > now);
}

function revokeRec(st, rec, reason) {
  if (rec.revoked) return 0;
  rec.revoked = true;
  rec.revoked_reason = reason;
  rec.revoked_at = Date.now();
  if (reason !== 'rotated') st.revokedCount++;
  return 1;
}

function issueToken(st, p, kind, grant, ttl) {
  const token = randomToken(PREFIX[p][kind]);
  const now = Date.now();
  const rec = {
    token, personality: p, kind, grant: grant.id, user: grant.user, user_id: grant.user_id,
    client_id: grant.client_id, scope: grant.scope, created_at: now,
    expires_at: ttl > 0 ? now + ttl * 1000 : null, revoked: false, revoked_reason: null,
  };
  st.tokens.set(token, rec);
  return rec;
}

const expiresIn = (rec) => (rec.expires_at == null ? undefined : Math.max(0, Math.ceil((rec.expires_at - Date.now()) / 1000)));

// ---------------------------------------------------------------- small HTTP helpers

const isPlainObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function esc(s) {
  return String(s ?? '').replace(/[&<>"'`]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' }[c]));
}

function send(res, status, type, body, headers = {}) {
  if (res.headersSent || res.destroyed) return;
  const buf = Buffer.from(body ?? '');
  res.writeHead(status, { 'content-type': type, 'content-length': buf.length, ...headers });
  res.end(buf);
}
const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' };
const sendJson = (res, status, obj, headers) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(obj), headers);
const sendHtml = (res, status, html) => send(res, status, 'text/html; charset=utf-8', html,
  { 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'" });

// GitHub answers the token endpoint form-encoded unless Accept asks for JSON.
function sendGithub(req, res, status, obj) {
  const clean = Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
  if (/application\/json/i.test(req.headers.accept ?? '')) return sendJson(res, status, clean, NO_STORE);
  return send(res, status, 'application/x-www-form-urlencoded; charset=utf-8', querystring.stringify(clean), NO_STORE);
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const cl = Number(req.headers['content-length']);
    if (Number.isFinite(cl) && cl > limit) { req.resume(); resolve(null); return; }
    const chunks = [];
    let size = 0;
    let done = false;
    req.on('data', (c) => {
      if (done) return;
      size += c.length;
      if (size > limit) { done = true; chunks.length = 0; resolve(null); return; }
      chunks.push(c);
    });
    req.on('end', () => { if (!done) { done = true; resolve(Buffer.concat(chunks)); } });
    req.on('error', (e) => { if (!done) { done = true; reject(e); } });
    req.on('close', () => { if (!done) { done = true; reject(new Error('request aborted')); } });
  });
}

// Strings only; repeated keys are remembered (OAuth forbids them).
function paramsFrom(sp) {
  const out = { params: Object.create(null), dups: [] };
  for (const k of new Set(sp.keys())) {
    const all = sp.getAll(k);
    if (all.length > 1) out.dups.push(k);
    out.params[k] = all[0];
  }
  return out;
}

function parseBody(req, buf) {
  const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (!buf.length) return { type: 'empty', params: Object.create(null), dups: [] };
  if (ct === 'application/x-www-form-urlencoded') {
    return { type: 'form', ...paramsFrom(new URLSearchParams(buf.toString('utf8'))) };
  }
  if (ct === 'application/json' || ct.endsWith('+json')) {
    const params = Object.create(null);
    try {
      const v = JSON.parse(buf.toString('utf8'));
      if (!isPlainObj(v)) return { type: 'invalid', params, dups: [] };
      for (const [k, x] of Object.entries(v)) if (x != null) params[k] = typeof x === 'string' ? x : JSON.stringify(x);
      return { type: 'json', params, dups: [] };
    } catch {
      return { type: 'invalid', params, dups: [] };
    }
  }
  return { type: 'other', params: Object.create(null), dups: [] };
}

function formDecode(s) {
  try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch { return s; }
}

// Client credentials from HTTP Basic (RFC 6749 2.3.1, form-encoded parts) or
// the body. Basic wins; a different client_id in the body is a mismatch.
function clientCreds(req, params) {
  const h = req.headers.authorization ?? '';
  if (/^basic\s/i.test(h)) {
    const dec = Buffer.from(h.slice(6).trim(), 'base64').toString('utf8');
    const i = dec.indexOf(':');
    if (i < 0) return { method: 'basic', id: undefined };
    const id = formDecode(dec.slice(0, i));
    if (params.client_id !== undefined && params.client_id !== id) return { method: 'basic', id: undefined };
    return { method: 'basic', id, secret: formDecode(dec.slice(i + 1)) };
  }
  if (params.client_id !== undefined) {
    return { method: params.client_secret !== undefined ? 'post' : 'none', id: params.client_id, secret: params.client_secret };
  }
  return { method: 'none' };
}

function checkClient(st, p, creds) {
  if (!creds.id || typeof creds.secret !== 'string') return false;
  const conf = st.config[p];
  const expected = Object.hasOwn(conf.clients, creds.id) ? conf.clients[creds.id] : conf.default_client_secret;
  return typeof expected === 'string' && secretEquals(creds.secret, expected);
}

function scopeList(p, s) {
  return String(s ?? '').split(p === 'github' ? /[\s,]+/ : /\s+/).filter(Boolean);
}
const scopeString = (p, list) => list.join(p === 'github' ? ',' : ' ');

function snapshot(key, req, url, body) {
  const red = (obj) => Object.fromEntries(Object.entries(obj).map(([k, v]) =>
    [k, SECRET_KEYS.has(k.toLowerCase()) || /secret|password/i.test(k) ? `[redacted ${String(v).length} chars]` : v]));
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (k === 'authorization') headers[k] = String(v).split(/\s+/)[0];
    else if (k === 'cookie' || k === 'proxy-authorization') headers[k] = '[redacted]';
    else headers[k] = v;
  }
  const creds = clientCreds(req, body.params);
  return {
    key, at: new Date().toISOString(), method: req.method, path: url.pathname,
    query: red(paramsFrom(url.searchParams).params), headers, body_type: body.type,
    body: red(body.params), body_keys: Object.keys(body.params), client_auth: creds.method,
    client_id: creds.id ?? null,
  };
}

// ---------------------------------------------------------------- OIDC signing

function signingKey(ctx) {
  if (!ctx.keys) {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = publicKey.export({ format: 'jwk' });
    const kid = crypto.createHash('sha256').update(jwk.n).digest('base64url').slice(0, 16);
    ctx.keys = { privateKey, jwk: { ...jwk, kid, use: 'sig', alg: 'RS256' }, kid };
  }
  return ctx.keys;
}

function signJwt(ctx, payload) {
  const k = signingKey(ctx);
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc({ alg: 'RS256', typ: 'JWT', kid: k.kid })}.${enc(payload)}`;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), k.privateKey).toString('base64url')}`;
}

// ---------------------------------------------------------------- login page

function errorPage(res, p, status, message) {
  res.idpInfo.error = 'invalid_request';
  const b = BRAND[p];
  sendHtml(res, status, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(b.name)} (fake): error</title></head>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto"><h1>${esc(b.name)} (fake IdP)</h1>
<p role="alert">${esc(message)}</p></body></html>`);
}

function loginPage(st, p, params, error) {
  const b = BRAND[p];
  const own = new Set(['login', 'auto', 'decision']);
  const hidden = Object.keys(params).filter((k) => !own.has(k))
    .map((k) => `<input type="hidden" name="${esc(k)}" value="${esc(params[k])}">`).join('\n    ');
  const scopes = scopeList(p, params.scope);
  let target = params.redirect_uri;
  try { target = new URL(params.redirect_uri).origin; } catch { /* shown as given */ }
  const known = [...st.users.values()].slice(0, 8).map((u) => `${u.login} (${u.id})`).join(', ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in to ${esc(b.name)} (fake)</title>
<style>
body{font-family:system-ui,sans-serif;background:#f6f8fa;margin:0}
main{max-width:28rem;margin:3rem auto;background:#fff;border:1px solid #d0d7de;border-radius:8px;overflow:hidden}
header{background:${b.color};color:#fff;padding:1rem 1.25rem;font-weight:600}
header small{opacity:.75;font-weight:400;margin-left:.5rem}
section{padding:1rem 1.25rem}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
.muted{color:#57606a;font-size:.875rem}.error{color:#cf222e;font-weight:600}
button{padding:.5rem 1rem;font-size:1rem;border-radius:6px;border:1px solid #1f883d;background:#1f883d;color:#fff;cursor:pointer}
button.deny{background:#fff;color:#24292f;border-color:#d0d7de}
</style></head>
<body><main>
<header>${esc(b.name)}<small>fake identity provider</small></header>
<section>
  <h1 style="font-size:1.25rem">Authorize <code>${esc(params.client_id)}</code></h1>
  <p>The application <b>${esc(params.client_id)}</b> wants to access your ${esc(b.name)} account.</p>
  ${scopes.length ? `<p>Requested scopes:</p><ul>${scopes.map((s) => `<li><code>${esc(s)}</code></li>`).join('')}</ul>` : '<p>No scopes requested.</p>'}
  <p class="muted">You will be sent back to <code>${esc(target)}</code>.</p>
  ${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
  <form method="post" action="${esc(AUTH_PATH[p])}">
    ${hidden}
    <label for="login">Username</label>
    <input id="login" type="text" name="login" value="${esc(params.login ?? 'alice')}" autocomplete="username" autofocus required>
    <p class="muted">Any username works; there is no password. Known users: ${esc(known)}.</p>
    <button type="submit" name="decision" value="approve">Authorize</button>
    <button type="submit" name="decision" value="deny" class="deny" formnovalidate>Deny</button>
  </form>
</section>
</main></body></html>`;
}

// ---------------------------------------------------------------- authorize

function parseRedirect(s) {
  if (typeof s !== 'string' || s === '') return null;
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u : null;
  } catch { return null; }
}

function redirectBack(ctx, res, p, target, params) {
  const u = new URL(target.href);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  if (p === 'oidc') u.searchParams.set('iss', `${ctx.base}/oidc`); // RFC 9207
  if (params.error) res.idpInfo.error = params.error;
  if (res.headersSent || res.destroyed) return;
  res.writeHead(302, { location: u.href, 'cache-control': 'no-store', 'content-length': 0 });
  res.end();
}

async function hAuthorize(ctx, req, res, r) {
  const p = r.route.p;
  const st = ctx.state;
  if (req.method === 'POST' && r.body.type !== 'form') return errorPage(res, p, 400, 'The form must be posted as application/x-www-form-urlencoded.');
  const src = req.method === 'GET' ? r.query : r.body;
  const params = src.params;
  if (src.dups.length) return errorPage(res, p, 400, `Repeated parameter: ${src.dups.join(', ')}.`);
  if (!params.client_id) return errorPage(res, p, 400, 'Missing client_id.');
  const target = parseRedirect(params.redirect_uri);
  if (!target) {
    return errorPage(res, p, 400, params.redirect_uri
      ? 'redirect_uri must be an absolute http(s) URL.'
      : 'Missing redirect_uri (this fake has no registered default callback).');
  }
  const back = (extra) => redirectBack(ctx, res, p, target, { ...extra, state: params.state });
  if (p !== 'github' && params.response_type !== 'code') {
    return back({ error: 'unsupported_response_type', error_description: 'response_type must be code' });
  }
  if (params.code_challenge !== undefined) {
    if ((params.code_challenge_method ?? 'plain') !== 'S256') return back({ error: 'invalid_request', error_description: 'code_challenge_method must be S256' });
    if (!CHALLENGE_RE.test(params.code_challenge)) return back({ error: 'invalid_request', error_description: 'code_challenge must be 43 base64url characters' });
  } else if (params.code_challenge_method !== undefined) {
    return back({ error: 'invalid_request', error_description: 'code_challenge_method without code_challenge' });
  } else if (p === 'oidc' && st.config.oidc.require_pkce) {
    return back({ error: 'invalid_request', error_description: 'PKCE (code_challenge, S256) is required' });
  }

  let decision;
  let login;
  if (req.method === 'GET') {
    if (params.auto !== '1') return sendHtml(res, 200, loginPage(st, p, params));
    decision = params.decision ?? 'approve';
    login = params.login ?? 'alice';
  } else {
    decision = params.decision;
    login = params.login;
  }
  if (decision === 'deny') return back({ error: 'access_denied', error_description: 'The user has denied your application access.' });
  if (decision !== 'approve') return errorPage(res, p, 400, 'decision must be approve or deny.');
  const user = userFor(st, login);
  if (!user) return sendHtml(res, 400, loginPage(st, p, params, 'Invalid username: 1-39 letters, digits, ".", "_" or "-".'));

  const code = randomToken(PREFIX[p].code);
  st.codes.set(code, {
    personality: p, client_id: params.client_id, redirect_uri: params.redirect_uri,
    scope: scopeString(p, scopeList(p, params.scope)), user: user.login, user_id: user.id,
    challenge: params.code_challenge, nonce: params.nonce, used: false,
    expires_at: Date.now() + st.config[p].code_ttl * 1000,
  });
  return back({ code });
}

// ---------------------------------------------------------------- token

const fail = (error, description, extra = {}) => ({ error, description, ...extra });

function codeGrant(st, p, creds, b) {
  const gh = { gh: 'bad_verification_code' };
  if (!b.code) return fail('invalid_request', 'code is required', gh);
  const rec = st.codes.get(b.code);
  if (!rec || rec.personality !== p) return fail('invalid_grant', 'The code passed is incorrect or expired.', gh);
  if (rec.used) return fail('invalid_grant', 'The code has already been used.', gh);
  rec.used = true; // burnt by any attempt, right or wrong
  if (rec.expires_at <= Date.now()) return fail('invalid_grant', 'The code passed is incorrect or expired.', gh);
  if (rec.client_id !== creds.id) return fail('invalid_grant', 'The code was issued to another client.', gh);
  if (p === 'github') {
    if (b.redirect_uri !== undefined && b.redirect_uri !== rec.redirect_uri) {
      return fail('invalid_grant', 'The redirect_uri MUST match the registered callback URL for this application.', { gh: 'redirect_uri_mismatch' });
    }
  } else if (b.redirect_uri !== rec.redirect_uri) {
    return fail('invalid_grant', 'redirect_uri is missing or does not match the authorization request');
  }
  if (rec.challenge !== undefined) {
    if (b.code_verifier === undefined) return fail('invalid_grant', 'code_verifier is required', gh);
    if (!VERIFIER_RE.test(b.code_verifier)) return fail('invalid_grant', 'code_verifier is malformed', gh);
    const s256 = crypto.createHash('sha256').update(b.code_verifier, 'ascii').digest('base64url');
    if (s256 !== rec.challenge) return fail('invalid_grant', 'code_verifier does not match code_challenge', gh);
  } else if (b.code_verifier !== undefined) {
    return fail('invalid_grant', 'code_verifier sent but the authorization request had no code_challenge', gh);
  }
  st.codes.delete(b.code);
  const grant = { id: st.nextGrant++, user: rec.user, user_id: rec.user_id, client_id: rec.client_id, scope: rec.scope, nonce: rec.nonce };
  const conf = st.config[p];
  let access;
  let refresh;
  if (p === 'github') {
    access = issueToken(st, p, 'access', grant, conf.expiring ? conf.access_ttl : 0);
    if (conf.expiring) refresh = issueToken(st, p, 'refresh', grant, conf.refresh_ttl);
  } else {
    access = issueToken(st, p, 'access', grant, conf.access_ttl);
    if (p === 'sentry' || conf.issue_refresh) refresh = issueToken(st, p, 'refresh', grant, conf.refresh_ttl);
  }
  return { grant, access, refresh };
}

function refreshGrant(st, p, creds, b) {
  const gh = { gh: 'bad_refresh_token' };
  if (!b.refresh_token) return fail('invalid_request', 'refresh_token is required', gh);
  const old = st.tokens.get(b.refresh_token);
  if (!old || old.personality !== p || old.kind !== 'refresh' || !isLive(old)) {
    return fail('invalid_grant', 'The refresh token passed is incorrect or expired.', gh);
  }
  if (old.client_id !== creds.id) return fail('invalid_grant', 'The refresh token was issued to another client.', gh);
  let scope = old.scope;
  if (b.scope !== undefined) {
    const have = new Set(scopeList(p, old.scope));
    const want = scopeList(p, b.scope);
    if (!want.every((s) => have.has(s))) return fail('invalid_scope', 'requested scope exceeds the original grant', { gh: 'bad_refresh_token' });
    scope = scopeString(p, want);
  }
  const conf = st.config[p];
  const grant = { id: old.grant, user: old.user, user_id: old.user_id, client_id: old.client_id, scope, nonce: undefined };
  const access = issueToken(st, p, 'access', grant, conf.access_ttl);
  let refresh;
  if (p !== 'oidc' || conf.rotate_refresh) {
    revokeRec(st, old, 'rotated');
    refresh = issueToken(st, p, 'refresh', grant, conf.refresh_ttl);
  }
  return { grant, access, refresh, refreshed: true };
}

// RFC 6749 section 4.4 (sentry and oidc; GitHub has no such grant): the
// client itself is the subject; an access token only, config.<p>.access_ttl.
function clientCredentialsGrant(st, p, creds, b) {
  if (p === 'github') return fail('unsupported_grant_type', 'unsupported grant_type');
  const grant = { id: st.nextGrant++, user: null, user_id: null, client_id: creds.id, scope: b.scope ?? '', machine: true };
  return { grant, access: issueToken(st, p, 'access', grant, st.config[p].access_ttl) };
}

function tokenError(ctx, req, res, p, e, creds) {
  if (p === 'github') {
    const error = e.error === 'invalid_client' ? 'incorrect_client_credentials' : (e.gh ?? e.error);
    res.idpInfo.error = error;
    return sendGithub(req, res, e.status ?? 200, { error, error_description: e.description, error_uri: GH_ERROR_URI });
  }
  res.idpInfo.error = e.error;
  const status = e.status ?? (e.error === 'invalid_client' ? 401 : 400);
  const headers = { ...NO_STORE };
  if (status === 401 && creds?.method === 'basic') headers['www-authenticate'] = 'Basic realm="fake-idp"';
  return sendJson(res, status, { error: e.error, error_description: e.description }, headers);
}

async function hToken(ctx, req, res, r) {
  const p = r.route.p;
  const st = ctx.state;
  const b = r.body;
  const okTypes = p === 'github' ? ['form', 'json', 'empty'] : ['form'];
  if (!okTypes.includes(b.type)) return tokenError(ctx, req, res, p, fail('invalid_request', 'body must be application/x-www-form-urlencoded'));
  if (b.dups.length) return tokenError(ctx, req, res, p, fail('invalid_request', `repeated parameter: ${b.dups.join(', ')}`));
  const params = b.params;
  const creds = clientCreds(req, params);
  if (!checkClient(st, p, creds)) {
    return tokenError(ctx, req, res, p, fail('invalid_client', p === 'github'
      ? 'The client_id and/or client_secret passed are incorrect.' : 'client authentication failed'), creds);
  }
  const gt = params.grant_type ?? (p === 'github' ? 'authorization_code' : undefined);
  let out;
  if (gt === 'authorization_code') out = codeGrant(st, p, creds, params);
  else if (gt === 'refresh_token') out = refreshGrant(st, p, creds, params);
  else if (gt === 'client_credentials') out = clientCredentialsGrant(st, p, creds, params);
  else out = fail(gt ? 'unsupported_grant_type' : 'invalid_request', gt ? 'unsupported grant_type' : 'grant_type is required');
  if (out.error) return tokenError(ctx, req, res, p, out, creds);

  const { access, refresh, grant } = out;
  if (grant.machine) {
    return sendJson(res, 200, { access_token: access.token, token_type: 'Bearer', expires_in: expiresIn(access), scope: access.scope || undefined }, NO_STORE);
  }
  const user = findUser(st, grant.user);
  if (p === 'github') {
    return sendGithub(req, res, 200, {
      access_token: access.token,
      expires_in: expiresIn(access),
      refresh_token: refresh?.token,
      refresh_token_expires_in: refresh ? expiresIn(refresh) : undefined,
      scope: access.scope,
      token_type: 'bearer',
    });
  }
  if (p === 'sentry') {
    return sendJson(res, 200, {
      access_token: access.token,
      refresh_token: refresh.token,
      expires_in: expiresIn(access) ?? null,
      expires_at: access.expires_at == null ? null : new Date(access.expires_at).toISOString(),
      token_type: 'bearer',
      scope: access.scope,
      user: { id: String(user.id), name: user.name, email: user.email },
    }, NO_STORE);
  }
  const body = { access_token: access.token, token_type: 'Bearer', expires_in: expiresIn(access) };
  if (refresh) body.refresh_token = refresh.token;
  body.scope = access.scope;
  if (st.config.oidc.id_token && scopeList(p, access.scope).includes('openid')) {
    const now = Math.floor(Date.now() / 1000);
    body.id_token = signJwt(ctx, {
      iss: `${ctx.base}/oidc`, sub: String(user.id), aud: grant.client_id, iat: now, exp: now + 3600,
      auth_time: now, ...(grant.nonce !== undefined && { nonce: grant.nonce }),
      preferred_username: user.login, name: user.name, email: user.email, email_verified: true,
    });
  }
  return sendJson(res, 200, body, NO_STORE);
}

// ---------------------------------------------------------------- user info

function bearer(req, allowTokenScheme) {
  const m = /^(bearer|token) +(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!m || (m[1].toLowerCase() === 'token' && !allowTokenScheme)) return null;
  return m[2];
}

function liveAccess(st, p, t) {
  const rec = t ? st.tokens.get(t) : undefined;
  return rec && rec.personality === p && rec.kind === 'access' && isLive(rec) ? rec : null;
}

function apiUnauthorized(res, p, hadToken) {
  res.idpInfo.error = 'invalid_token';
  if (p === 'github') return sendJson(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
  if (p === 'sentry') return sendJson(res, 401, { detail: hadToken ? 'Invalid token' : 'Authentication credentials were not provided.' });
  return sendJson(res, 401, { error: 'invalid_token', error_description: 'access token is missing, unknown, expired or revoked' },
    { 'www-authenticate': hadToken ? 'Bearer realm="fake-idp", error="invalid_token"' : 'Bearer realm="fake-idp"' });
}

async function hUser(ctx, req, res, r) {
  const p = r.route.p;
  const st = ctx.state;
  if (p === 'github' && st.config.github.require_user_agent && !req.headers['user-agent']) {
    res.idpInfo.error = 'missing_user_agent';
    return send(res, 403, 'text/plain; charset=utf-8',
      'Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).\n');
  }
  const t = bearer(req, p === 'github');
  const rec = liveAccess(st, p, t);
  if (!rec) return apiUnauthorized(res, p, Boolean(t));
  const u = findUser(st, rec.user);
  if (!u) return sendJson(res, 200, p === 'sentry' ? { version: '0', auth: { scopes: scopeList(p, rec.scope) }, user: null } : { sub: `client:${rec.client_id}` });
  if (p === 'github') {
    return sendJson(res, 200, { id: u.id, login: u.login, name: u.name, email: u.email }, { 'x-oauth-scopes': rec.scope });
  }
  if (p === 'sentry') {
    return sendJson(res, 200, {
      version: '0',
      auth: { scopes: scopeList(p, rec.scope) },
      user: { id: String(u.id), name: u.name, username: u.login, email: u.email },
    });
  }
  return sendJson(res, 200, { sub: String(u.id), preferred_username: u.login, name: u.name, email: u.email, email_verified: true });
}

// ---------------------------------------------------------------- revocation

async function hGithubRevoke(ctx, req, res, r) {
  const st = ctx.state;
  const clientId = formDecode(r.match[1]);
  const creds = clientCreds(req, {});
  if (creds.method !== 'basic' || creds.id !== clientId || !checkClient(st, 'github', creds)) {
    res.idpInfo.error = 'bad_credentials';
    return sendJson(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
  }
  const at = r.body.type === 'json' ? r.body.params.access_token : undefined;
  if (!at) {
    res.idpInfo.error = 'validation_failed';
    return sendJson(res, 422, { message: 'Invalid request.\n\n"access_token" wasn\'t supplied.', documentation_url: 'https://docs.github.com/rest' });
  }
  const rec = st.tokens.get(at);
  if (!rec || rec.personality !== 'github' || rec.kind !== 'access' || rec.client_id !== clientId || rec.revoked) {
    res.idpInfo.error = 'not_found';
    return sendJson(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
  }
  if (r.route.key === 'github.revoke_token') {
    revokeRec(st, rec, 'revoked'); // DELETE /applications/{id}/token: this token only
  } else {
    for (const t of st.tokens.values()) {
      if (t.personality === 'github' && t.user_id === rec.user_id && t.client_id === clientId) revokeRec(st, t, 'grant_deleted');
    }
  }
  res.writeHead(204);
  return res.end();
}

// RFC 7009. Sentry drops the whole grant; OIDC drops the grant for a refresh
// token and only the token itself for an access token. Unknown tokens and
// tokens of another client answer 200 without effect.
async function hRevoke(ctx, req, res, r) {
  const p = r.route.p;
  const st = ctx.state;
  const b = r.body;
  if (b.type !== 'form') return tokenError(ctx, req, res, p, fail('invalid_request', 'body must be application/x-www-form-urlencoded'));
  const creds = clientCreds(req, b.params);
  if (!checkClient(st, p, creds)) return tokenError(ctx, req, res, p, fail('invalid_client', 'client authentication failed'), creds);
  if (!b.params.token) return tokenError(ctx, req, res, p, fail('invalid_request', 'token is required'));
  const rec = st.tokens.get(b.params.token);
  if (rec && rec.personality === p && rec.client_id === creds.id) {
    if (p === 'sentry' || rec.kind === 'refresh') {
      for (const t of st.tokens.values()) if (t.personality === p && t.grant === rec.grant) revokeRec(st, t, 'revoked');
    } else {
      revokeRec(st, rec, 'revoked');
    }
  }
  return send(res, 200, 'text/plain; charset=utf-8', '', NO_STORE);
}

// ---------------------------------------------------------------- discovery

async function hDiscovery(ctx, req, res) {
  const iss = `${ctx.base}/oidc`;
  return sendJson(res, 200, {
    issuer: iss,
    authorization_endpoint: `${iss}/authorize`,
    token_endpoint: `${iss}/token`,
    userinfo_endpoint: `${iss}/userinfo`,
    revocation_endpoint: `${iss}/revoke`,
    jwks_uri: `${iss}/jwks`,
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nonce', 'preferred_username', 'name', 'email', 'email_verified'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    revocation_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
  });
}

async function hJwks(ctx, req, res) {
  return sendJson(res, 200, { keys: [signingKey(ctx).jwk] });
}

// ---------------------------------------------------------------- routes

const tokenKey = (p) => (body) => {
  const gt = body.params.grant_type;
  if (gt === 'refresh_token') return `${p}.token.refresh`;
  return gt === 'client_credentials' && p !== 'github' ? `${p}.token.client_credentials` : `${p}.token`;
};

const ROUTES = [
  { path: AUTH_PATH.github, methods: ['GET', 'POST'], p: 'github', kind: 'authorize', key: 'github.authorize', h: hAuthorize },
  { path: TOKEN_PATH.github, methods: ['POST'], p: 'github', kind: 'token', key: tokenKey('github'), h: hToken },
  { path: '/github/api/user', methods: ['GET'], p: 'github', kind: 'api', key: 'github.user', h: hUser },
  { re: /^\/github\/api\/applications\/([^/]+)\/grant$/, methods: ['DELETE'], p: 'github', kind: 'revoke', key: 'github.revoke', h: hGithubRevoke },
  { re: /^\/github\/api\/applications\/([^/]+)\/token$/, methods: ['DELETE'], p: 'github', kind: 'revoke', key: 'github.revoke_token', h: hGithubRevoke },
  { path: AUTH_PATH.sentry, methods: ['GET', 'POST'], p: 'sentry', kind: 'authorize', key: 'sentry.authorize', h: hAuthorize },
  { path: TOKEN_PATH.sentry, methods: ['POST'], p: 'sentry', kind: 'token', key: tokenKey('sentry'), h: hToken },
  { path: '/sentry/api/0/', methods: ['GET'], p: 'sentry', kind: 'api', key: 'sentry.user', h: hUser },
  { path: '/sentry/oauth/revoke/', methods: ['POST'], p: 'sentry', kind: 'revoke', key: 'sentry.revoke', h: hRevoke },
  { path: '/oidc/.well-known/openid-configuration', methods: ['GET'], p: 'oidc', kind: 'meta', key: 'oidc.discovery', h: hDiscovery },
  { path: '/oidc/.well-known/oauth-authorization-server', methods: ['GET'], p: 'oidc', kind: 'meta', key: 'oidc.discovery', h: hDiscovery },
  { path: '/oidc/jwks', methods: ['GET'], p: 'oidc', kind: 'meta', key: 'oidc.jwks', h: hJwks },
  { path: AUTH_PATH.oidc, methods: ['GET', 'POST'], p: 'oidc', kind: 'authorize', key: 'oidc.authorize', h: hAuthorize },
  { path: TOKEN_PATH.oidc, methods: ['POST'], p: 'oidc', kind: 'token', key: tokenKey('oidc'), h: hToken },
  { path: '/oidc/userinfo', methods: ['GET', 'POST'], p: 'oidc', kind: 'api', key: 'oidc.userinfo', h: hUser },
  { path: '/oidc/revoke', methods: ['POST'], p: 'oidc', kind: 'revoke', key: 'oidc.revoke', h: hRevoke },
];

function findRoute(path) {
  for (const route of ROUTES) {
    if (route.path === path) return { route, match: null };
    const m = route.re?.exec(path);
    if (m) return { route, match: m };
  }
  return null;
}

// ---------------------------------------------------------------- faults

function takeFault(st, key) {
  const f = st.config.fault[key];
  if (!f) return null;
  if (f.count != null) {
    f.count -= 1;
    if (f.count <= 0) delete st.config.fault[key];
  }
  st.faultsApplied++;
  return { ...f };
}

function sleep(ctx, ms, res) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(t); ctx.timers.delete(t); res.off('close', done); resolve(); };
    const t = setTimeout(done, ms);
    ctx.timers.add(t);
    res.once('close', done);
  });
}

function waitDrain(res) {
  return new Promise((resolve) => {
    const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
    res.on('drain', done);
    res.on('close', done);
  });
}

// The native "error" answer of an endpoint, in that endpoint's own dialect.
function nativeError(ctx, req, res, r, code, status) {
  const p = r.route.p;
  switch (r.route.kind) {
    case 'authorize': {
      const params = (req.method === 'GET' ? r.query : r.body).params;
      const target = parseRedirect(params.redirect_uri);
      if (target) return redirectBack(ctx, res, p, target, { error: code, error_description: 'injected fault', state: params.state });
      return errorPage(res, p, status ?? 400, `injected fault: ${code}`);
    }
    case 'token': return tokenError(ctx, req, res, p, fail(code, 'injected fault', { gh: code, status }));
    case 'api':
      if (status === undefined) return apiUnauthorized(res, p, true);
      return sendJson(res, status, { error: code, message: 'injected fault' });
    default:
      res.idpInfo.error = code;
      return sendJson(res, status ?? (r.route.kind === 'revoke' ? 400 : 500), { error: code, error_description: 'injected fault' });
  }
}

// Returns true when the fault answered (or deliberately did not answer).
async function applyFault(ctx, req, res, r, f) {
  if (f.delay_ms > 0) {
    await sleep(ctx, f.delay_ms, res);
    if (res.destroyed || res.writableEnded) return true;
  }
  switch (f.mode) {
    case undefined:
      return false;
    case 'error':
      nativeError(ctx, req, res, r, f.error ?? 'server_error', f.status);
      return true;
    case 'invalid_grant':
      if (r.route.kind === 'token') tokenError(ctx, req, res, r.route.p, fail('invalid_grant', 'injected fault', { gh: 'invalid_grant', status: f.status ?? 400 }));
      else { res.idpInfo.error = 'invalid_grant'; sendJson(res, f.status ?? 400, { error: 'invalid_grant', error_description: 'injected fault' }, NO_STORE); }
      return true;
    case 'status': {
      const status = f.status ?? 500;
      const headers = { ...NO_STORE };
      if (status === 429 || status === 503 || f.retry_after !== undefined) headers['retry-after'] = String(f.retry_after ?? 1);
      res.idpInfo.error = f.error ?? (status === 429 || status === 503 ? 'temporarily_unavailable' : 'server_error');
      sendJson(res, status, { error: res.idpInfo.error, error_description: `injected fault: HTTP ${status}` }, headers);
      return true;
    }
    case 'invalid_client':
      // The broker's own client credentials refused (its secret was rotated):
      // GitHub says so with 200 incorrect_client_credentials, RFC 6749 with 401.
      tokenError(ctx, req, res, r.route.p, fail('invalid_client', 'injected fault: client authentication failed', { status: f.status }),
        clientCreds(req, r.body.params));
      return true;
    case 'unauthorized_client':
      tokenError(ctx, req, res, r.route.p, fail('unauthorized_client', 'injected fault: grant type not allowed for this client',
        { gh: 'unauthorized_client', status: f.status }));
      return true;
    case 'bad_refresh_token':
      // GitHub's dead refresh token: HTTP 200 with error=, form or JSON by Accept.
      res.idpInfo.error = 'bad_refresh_token';
      sendGithub(req, res, f.status ?? 200, { error: 'bad_refresh_token', error_description: 'The refresh token passed is incorrect or expired.', error_uri: GH_ERROR_URI });
      return true;
    case 'rate_limited': {
      res.idpInfo.error = 'rate_limited';
      const wait = f.retry_after ?? (r.route.p === 'github' ? 60 : 1);
      if (r.route.p === 'github') {
        // api.github.com's primary rate limit: 403, no Retry-After, the reset time instead.
        sendJson(res, f.status ?? 403, { message: 'API rate limit exceeded for user ID 1001.', documentation_url: 'https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting' }, {
          'x-ratelimit-limit': '5000', 'x-ratelimit-remaining': '0', 'x-ratelimit-used': '5000',
          'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + wait),
        });
      } else {
        sendJson(res, f.status ?? 429, { error: 'rate_limited', error_description: 'injected fault: too many requests' }, { ...NO_STORE, 'retry-after': String(wait) });
      }
      return true;
    }
    case 'incomplete':
      // 200 JSON without the one field that matters (access_token, the user id).
      res.idpInfo.error = 'incomplete';
      if (r.route.kind === 'token') sendJson(res, 200, { token_type: 'bearer', scope: 'read:user' }, NO_STORE);
      else if (r.route.kind === 'api') sendJson(res, 200, { login: 'nobody', name: 'Nobody' });
      else sendJson(res, 200, {});
      return true;
    case 'bad_json':
      res.idpInfo.error = 'bad_json';
      send(res, 200, 'application/json; charset=utf-8', '{"access_token":"gho_trunc', NO_STORE);
      return true;
    case 'wrong_type': {
      // A well-formed answer announced as text/plain. Token endpoints get a
      // made-up token answer (nothing is issued or rotated, so the client's
      // grant is untouched); other endpoints give their normal answer.
      res.idpInfo.error = 'wrong_type';
      if (r.route.kind === 'token') {
        send(res, 200, 'text/plain; charset=utf-8', JSON.stringify({ access_token: randomToken(PREFIX[r.route.p].access), token_type: 'bearer', expires_in: 3600 }), NO_STORE);
        return true;
      }
      const writeHead = res.writeHead.bind(res);
      res.writeHead = (status, headers = {}) => writeHead(status, { ...headers, 'content-type': 'text/plain; charset=utf-8' });
      return false;
    }
    case 'timeout':
      // Hold the request until the client gives up; an unref'd socket does
      // not keep the process alive, and close() destroys it anyway.
      req.socket.setTimeout(0);
      req.socket.unref();
      return true;
    case 'garbage':
      send(res, 200, 'text/html; charset=utf-8', '<html>oops');
      return true;
    case 'huge': {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"access_token":"');
      const chunk = Buffer.alloc(64 * 1024, 'A');
      for (let sent = 0; sent < HUGE_BYTES && !res.destroyed; sent += chunk.length) {
        if (!res.write(chunk)) await waitDrain(res);
      }
      if (!res.destroyed) res.end('","token_type":"bearer"}');
      return true;
    }
    case 'reset':
      if (typeof req.socket.resetAndDestroy === 'function') req.socket.resetAndDestroy();
      else req.socket.destroy();
      return true;
    default:
      return false;
  }
}

function validateFault(key, f) {
  const errs = [];
  if (!isPlainObj(f)) return [`fault.${key} must be an object or null`];
  for (const k of Object.keys(f)) if (!FAULT_FIELDS.includes(k)) errs.push(`fault.${key}.${k}: unknown field (known: ${FAULT_FIELDS.join(', ')})`);
  if (f.mode !== undefined && !FAULT_MODES.includes(f.mode)) errs.push(`fault.${key}.mode must be one of ${FAULT_MODES.join(', ')}`);
  if (TOKEN_ONLY_MODES.has(f.mode) && !isTokenKey(key)) errs.push(`fault.${key}.mode ${f.mode} applies to token endpoints only`);
  if (f.mode === undefined && !(f.delay_ms > 0)) errs.push(`fault.${key}: needs a mode or a delay_ms > 0`);
  if (f.status !== undefined && !(Number.isInteger(f.status) && f.status >= 100 && f.status <= 599)) errs.push(`fault.${key}.status must be an HTTP status`);
  if (f.count !== undefined && !(Number.isInteger(f.count) && f.count > 0)) errs.push(`fault.${key}.count must be a positive integer`);
  if (f.delay_ms !== undefined && !(Number.isFinite(f.delay_ms) && f.delay_ms >= 0)) errs.push(`fault.${key}.delay_ms must be a number >= 0`);
  if (f.retry_after !== undefined && !(Number.isInteger(f.retry_after) && f.retry_after >= 0)) errs.push(`fault.${key}.retry_after must be an integer >= 0`);
  if (f.error !== undefined && !(typeof f.error === 'string' && /^[\w.-]{1,64}$/.test(f.error))) errs.push(`fault.${key}.error must be a short error code`);
  return errs;
}

// ---------------------------------------------------------------- control API

function validatePatch(patch) {
  const errs = [];
  for (const [k, v] of Object.entries(patch)) {
    if (k === 'fault') {
      if (!isPlainObj(v)) { errs.push('fault must be an object'); continue; }
      for (const [fk, fv] of Object.entries(v)) {
        if (!ENDPOINT_KEYS.includes(fk)) errs.push(`fault.${fk}: unknown endpoint key (known: ${ENDPOINT_KEYS.join(', ')})`);
        else if (fv !== null) errs.push(...validateFault(fk, fv));
      }
      continue;
    }
    if (!PERSONALITIES.includes(k)) { errs.push(`${k}: unknown key (known: ${[...PERSONALITIES, 'fault'].join(', ')})`); continue; }
    if (!isPlainObj(v)) { errs.push(`${k} must be an object`); continue; }
    for (const [ck, cv] of Object.entries(v)) {
      const where = `${k}.${ck}`;
      if (!Object.hasOwn(DEFAULT_CONFIG[k], ck)) { errs.push(`${where}: unknown key (known: ${Object.keys(DEFAULT_CONFIG[k]).join(', ')})`); continue; }
      if (ck === 'clients') {
        if (!isPlainObj(cv) || Object.entries(cv).some(([id, s]) => id === '__proto__' || (s !== null && typeof s !== 'string'))) {
          errs.push(`${where} must map client_id to a secret string (null removes)`);
        }
      } else if (ck === 'default_client_secret') {
        if (cv !== null && typeof cv !== 'string') errs.push(`${where} must be a string or null`);
      } else if (typeof cv !== typeof DEFAULT_CONFIG[k][ck]) {
        errs.push(`${where} must be a ${typeof DEFAULT_CONFIG[k][ck]}`);
      } else if (typeof cv === 'number' && !(Number.isFinite(cv) && cv >= 0)) {
        errs.push(`${where} must be a number >= 0`);
      }
    }
  }
  return errs;
}

function applyPatch(cfg, patch) {
  for (const [k, v] of Object.entries(patch)) {
    if (k === 'fault') {
      for (const [fk, fv] of Object.entries(v)) {
        if (fv === null) delete cfg.fault[fk];
        else cfg.fault[fk] = { ...fv };
      }
      continue;
    }
    for (const [ck, cv] of Object.entries(v)) {
      if (ck !== 'clients') { cfg[k][ck] = cv; continue; }
      for (const [id, secret] of Object.entries(cv)) {
        if (secret === null) delete cfg[k].clients[id];
        else cfg[k].clients[id] = secret;
      }
    }
  }
}

function tokenView(t) {
  return {
    personality: t.personality, kind: t.kind, user: t.user, user_id: t.user_id, client_id: t.client_id,
    scope: t.scope, grant: t.grant, created_at: new Date(t.created_at).toISOString(),
    expires_at: t.expires_at == null ? null : new Date(t.expires_at).toISOString(),
    expired: t.expires_at != null && t.expires_at <= Date.now(),
    revoked: t.revoked, revoked_reason: t.revoked_reason,
  };
}

function userTokens(st, body) {
  const u = findUser(st, body.user);
  if (!u) return { error: `unknown user: ${typeof body.user === 'string' ? body.user : '(missing)'}` };
  if (body.personality !== undefined && !PERSONALITIES.includes(body.personality)) return { error: 'unknown personality' };
  const list = [...st.tokens.values()].filter((t) => t.user_id === u.id && (body.personality === undefined || t.personality === body.personality));
  return { u, list };
}

const CONTROL = {
  stats: { method: 'GET', h: (ctx, url, res) => sendJson(res, 200, { ...ctx.state.stats, revoked_tokens: ctx.state.revokedCount, faults_applied: ctx.state.faultsApplied }) },
  reset: {
    method: 'POST',
    h: (ctx, url, res) => { Object.assign(ctx.state, freshState()); sendJson(res, 200, { ok: true }); },
  },
  config: {
    method: ['GET', 'POST'],
    h: (ctx, url, res, body, req) => {
      if (req.method === 'POST') {
        const errs = validatePatch(body);
        if (errs.length) return sendJson(res, 400, { error: 'invalid_config', errors: errs });
        applyPatch(ctx.state.config, body);
      }
      return sendJson(res, 200, { config: ctx.state.config });
    },
  },
  revoke_user: {
    method: 'POST',
    h: (ctx, url, res, body) => {
      const st = ctx.state;
      const r = userTokens(st, body);
      if (r.error) return sendJson(res, 404, { error: r.error });
      let revoked = 0;
      for (const t of r.list) revoked += revokeRec(st, t, 'user_revoked');
      for (const [code, c] of st.codes) {
        if (c.user_id === r.u.id && (body.personality === undefined || c.personality === body.personality)) st.codes.delete(code);
      }
      return sendJson(res, 200, { user: r.u.login, id: r.u.id, revoked });
    },
  },
  expire_access: {
    method: 'POST',
    h: (ctx, url, res, body) => {
      const r = userTokens(ctx.state, body);
      if (r.error) return sendJson(res, 404, { error: r.error });
      const now = Date.now();
      let expired = 0;
      for (const t of r.list) {
        if (t.kind === 'access' && isLive(t, now)) { t.expires_at = now - 1; expired++; }
      }
      return sendJson(res, 200, { user: r.u.login, id: r.u.id, expired });
    },
  },
  tokens: {
    method: 'GET',
    h: (ctx, url, res) => {
      const q = url.searchParams;
      const u = q.has('user') ? findUser(ctx.state, q.get('user')) : null;
      const list = [...ctx.state.tokens.values()].filter((t) => (!q.has('user') || (u && t.user_id === u.id))
        && (!q.has('personality') || t.personality === q.get('personality'))
        && (!q.has('kind') || t.kind === q.get('kind')));
      return sendJson(res, 200, { tokens: list.map(tokenView) });
    },
  },
  last_request: {
    method: 'GET',
    h: (ctx, url, res) => {
      const key = url.searchParams.get('key');
      const rec = key ? ctx.state.lastRequest.get(key) : undefined;
      if (!rec) return sendJson(res, 404, { error: 'no_request', key, known: ENDPOINT_KEYS });
      return sendJson(res, 200, rec);
    },
  },
  users: {
    method: 'GET',
    h: (ctx, url, res) => sendJson(res, 200, { users: [...ctx.state.users.values()] }),
  },
};

async function handleControl(ctx, req, res, url) {
  const ep = Object.hasOwn(CONTROL, url.pathname.slice('/_control/'.length)) ? CONTROL[url.pathname.slice('/_control/'.length)] : null;
  if (!ep) return sendJson(res, 404, { error: 'not_found', known: Object.keys(CONTROL).map((k) => `/_control/${k}`) });
  const methods = [ep.method].flat();
  if (!methods.includes(req.method)) return sendJson(res, 405, { error: 'method_not_allowed' }, { allow: methods.join(', ') });
  let body = {};
  if (req.method === 'POST') {
    const buf = await readBody(req, BODY_LIMIT);
    if (buf === null) return tooLarge(req, res);
    if (buf.length) {
      try { body = JSON.parse(buf.toString('utf8')); } catch { return sendJson(res, 400, { error: 'invalid_json' }); }
      if (!isPlainObj(body)) return sendJson(res, 400, { error: 'body must be a JSON object' });
    }
  }
  return ep.h(ctx, url, res, body, req);
}

// ---------------------------------------------------------------- dispatch

function tooLarge(req, res) {
  res.idpInfo.error = 'body_too_large';
  sendJson(res, 413, { error: 'payload_too_large', error_description: `body exceeds ${BODY_LIMIT} bytes` }, { connection: 'close' });
}

function indexText(ctx) {
  return `Fake IdP (mcp-broker tests) at ${ctx.base}
GitHub : ${AUTH_PATH.github}  ${TOKEN_PATH.github}  /github/api/user  DELETE /github/api/applications/{client_id}/grant  DELETE /github/api/applications/{client_id}/token
Sentry : ${AUTH_PATH.sentry}  ${TOKEN_PATH.sentry}  /sentry/api/0/  /sentry/oauth/revoke/
OIDC   : /oidc/.well-known/openid-configuration  ${AUTH_PATH.oidc}  ${TOKEN_PATH.oidc}  /oidc/userinfo  /oidc/revoke  /oidc/jwks
Control: ${Object.keys(CONTROL).map((k) => `/_control/${k}`).join('  ')}
Clients: gh-client/gh-secret, sentry-client/sentry-secret, oidc-client/oidc-secret. Users: any name (alice=1001, bob=1002).
`;
}

async function handle(ctx, req, res) {
  const t0 = Date.now();
  let url;
  try { url = new URL(req.url, 'http://fake-idp.invalid'); } catch { url = new URL('http://fake-idp.invalid/'); }
  const info = { key: undefined, fault: undefined, error: undefined };
  res.idpInfo = info;
  let logged = false;
  const logIt = (status) => {
    if (logged) return;
    logged = true;
    ctx.log({
      t: new Date().toISOString(), method: req.method, path: url.pathname.slice(0, 200), status,
      ...(info.key && { key: info.key }), ...(info.fault && { fault: info.fault }), ...(info.error && { error: info.error }),
      ms: Date.now() - t0,
    });
  };
  res.on('finish', () => logIt(res.statusCode));
  res.on('close', () => logIt(res.writableFinished ? res.statusCode : 0));

  if (url.pathname.startsWith('/_control/')) return handleControl(ctx, req, res, url);
  if (url.pathname === '/' && req.method === 'GET') return send(res, 200, 'text/plain; charset=utf-8', indexText(ctx));
  const found = findRoute(url.pathname);
  if (!found) return sendJson(res, 404, { error: 'not_found', message: 'no such endpoint on the fake IdP; GET / lists them' });
  const { route, match } = found;
  if (!route.methods.includes(req.method)) return sendJson(res, 405, { error: 'method_not_allowed' }, { allow: route.methods.join(', ') });

  let body = { type: 'empty', params: Object.create(null), dups: [] };
  if (req.method !== 'GET') {
    const buf = await readBody(req, BODY_LIMIT);
    if (buf === null) return tooLarge(req, res);
    body = parseBody(req, buf);
  }
  const st = ctx.state;
  const key = typeof route.key === 'function' ? route.key(body) : route.key;
  info.key = key;
  st.stats[key] = (st.stats[key] ?? 0) + 1;
  st.lastRequest.set(key, snapshot(key, req, url, body));
  const r = { route, match, url, query: paramsFrom(url.searchParams), body };
  const fault = takeFault(st, key);
  if (fault) {
    info.fault = fault.mode ?? 'delay';
    if (await applyFault(ctx, req, res, r, fault)) return undefined;
  }
  return route.h(ctx, req, res, r);
}

// ---------------------------------------------------------------- start / stop

function baseFor(host, port) {
  const h = !host || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

/**
 * Start the fake IdP. Options: port (0 = any free one), host (default
 * 127.0.0.1), log (false | true = JSON lines on stderr | function(line)).
 * Resolves to { port, base, state, close() }; state is the live internal
 * state (config, users, tokens, codes, stats) for in-process inspection;
 * close() destroys every connection (including held "timeout" requests).
 */
export function startIdp({ port = 0, host = '127.0.0.1', log = false } = {}) {
  const sockets = new Set();
  const ctx = {
    state: freshState(),
    base: '',
    keys: null,
    timers: new Set(),
    log: typeof log === 'function' ? (o) => log(JSON.stringify(o))
      : log ? (o) => process.stderr.write(`${JSON.stringify(o)}\n`) : () => {},
  };
  const server = http.createServer((req, res) => {
    handle(ctx, req, res).catch((e) => {
      ctx.log({ t: new Date().toISOString(), event: 'handler_error', message: String(e?.message ?? e).slice(0, 200) });
      if (!res.headersSent && !res.destroyed) sendJson(res, 500, { error: 'server_error' });
      else res.destroy();
    });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const actual = server.address().port;
      ctx.base = baseFor(host, actual);
      let closing = null;
      resolve({
        port: actual,
        base: ctx.base,
        state: ctx.state,
        server,
        close() {
          if (!closing) {
            closing = new Promise((done) => server.close(() => done()));
            for (const t of ctx.timers) clearTimeout(t);
            ctx.timers.clear();
            server.closeAllConnections();
            for (const s of sockets) s.destroy();
          }
          return closing;
        },
      });
    });
  });
}

// ---------------------------------------------------------------- CLI

function parseArgs(argv) {
  const out = { port: 0, host: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => inline ?? argv[++i];
    if (flag === '--port') {
      const v = value();
      if (!/^\d+$/.test(v ?? '') || Number(v) > 65535) throw new Error(`--port needs a number 0-65535, got ${v}`);
      out.port = Number(v);
    } else if (flag === '--host') {
      out.host = value();
      if (!out.host) throw new Error('--host needs a value');
    } else if (flag === '--help' || flag === '-h') {
      out.help = true;
    } else {
      throw new Error(`unknown argument ${flag}`);
    }
  }
  return out;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`idp.mjs: ${e.message}\nusage: node tests/fakes/idp.mjs [--port N] [--host 127.0.0.1]\n`);
    process.exit(2);
  }
  if (args.help) {
    process.stdout.write('usage: node tests/fakes/idp.mjs [--port N] [--host 127.0.0.1]\n');
    return;
  }
  let idp;
  try {
    idp = await startIdp({ port: args.port, host: args.host, log: true });
  } catch (e) {
    process.stderr.write(`${JSON.stringify({ event: 'listen_failed', message: e.message })}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: idp.port, base: idp.base })}\n`);
  const stop = (signal) => {
    process.stderr.write(`${JSON.stringify({ event: 'stopping', signal })}\n`);
    const hard = setTimeout(() => process.exit(0), 2000);
    hard.unref();
    idp.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
