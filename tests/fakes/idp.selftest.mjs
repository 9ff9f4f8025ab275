// Self-test of the fake IdP: node --test tests/fakes/idp.selftest.mjs
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startIdp } from './idp.mjs';

const logLines = [];
let idp;
let base;

before(async () => {
  idp = await startIdp({ port: 0, log: (line) => logLines.push(line) });
  base = idp.base;
});
after(() => idp.close());
beforeEach(async () => { await control('reset'); });

// ------------------------------------------------------------ helpers

const UA = { 'user-agent': 'idp-selftest' };

async function control(name, body) {
  const init = body === undefined && name !== 'reset' ? {} : { method: 'POST', body: JSON.stringify(body ?? {}) };
  const r = await fetch(`${base}/_control/${name}`, init);
  const j = await r.json();
  return { status: r.status, body: j };
}
const config = (patch) => control('config', patch);
const stats = async () => (await control('stats')).body;

const AUTH = { github: '/github/login/oauth/authorize', sentry: '/sentry/oauth/authorize/', oidc: '/oidc/authorize' };
const TOKEN = { github: '/github/login/oauth/access_token', sentry: '/sentry/oauth/token/', oidc: '/oidc/token' };
const CLIENT = {
  github: ['gh-client', 'gh-secret'],
  sentry: ['sentry-client', 'sentry-secret'],
  oidc: ['oidc-client', 'oidc-secret'],
};
const REDIRECT = 'http://127.0.0.1:8080/callback?keep=1';

function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

const unesc = (s) => s.replace(/&(amp|lt|gt|quot|#39|#96);/g, (m, e) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#96': '`' }[e]));

// Acts as the browser: GET the login page, submit its form.
async function loginViaForm(p, params, { login = 'alice', decision = 'approve' } = {}) {
  const u = new URL(base + AUTH[p]);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  const page = await fetch(u);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /text\/html/);
  const html = await page.text();
  const form = /<form method="post" action="([^"]*)">/.exec(html);
  assert.ok(form, 'login page has a POST form');
  assert.equal(unesc(form[1]), AUTH[p]);
  assert.match(html, /<input id="login" type="text" name="login" value="alice"/);
  assert.match(html, /name="decision" value="approve"/);
  assert.match(html, /name="decision" value="deny"/);
  const fields = {};
  for (const m of html.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g)) fields[unesc(m[1])] = unesc(m[2]);
  assert.deepEqual(fields, params, 'hidden fields carry every request parameter');
  const r = await fetch(new URL(unesc(form[1]), base), {
    method: 'POST', redirect: 'manual', body: new URLSearchParams({ ...fields, login, decision }),
  });
  assert.equal(r.status, 302);
  return new URL(r.headers.get('location'));
}

function authParams(p, extra = {}) {
  const q = { client_id: CLIENT[p][0], redirect_uri: REDIRECT, state: 'st-123', scope: p === 'oidc' ? 'openid profile email' : 'read:user repo' };
  if (p !== 'github') q.response_type = 'code';
  return { ...q, ...extra };
}

async function getCode(p, extra = {}, opts = {}) {
  const loc = await loginViaForm(p, authParams(p, extra), opts);
  assert.equal(loc.origin + loc.pathname, 'http://127.0.0.1:8080/callback');
  assert.equal(loc.searchParams.get('keep'), '1', 'existing redirect query kept');
  assert.equal(loc.searchParams.get('state'), 'st-123');
  const code = loc.searchParams.get('code');
  assert.ok(code, `code in ${loc}`);
  return { code, loc };
}

async function token(p, params, { basic = false, accept, secret } = {}) {
  const [id, sec] = CLIENT[p];
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (accept) headers.accept = accept;
  const body = new URLSearchParams(params);
  if (basic) headers.authorization = `Basic ${Buffer.from(`${id}:${secret ?? sec}`).toString('base64')}`;
  else {
    if (!body.has('client_id')) body.set('client_id', id);
    if (!body.has('client_secret')) body.set('client_secret', secret ?? sec);
  }
  const r = await fetch(base + TOKEN[p], { method: 'POST', headers, body });
  const text = await r.text();
  const ct = r.headers.get('content-type') ?? '';
  const data = ct.includes('json') ? JSON.parse(text) : Object.fromEntries(new URLSearchParams(text));
  return { status: r.status, ct, data, headers: r.headers };
}

async function api(p, tok, scheme = 'Bearer') {
  const path = { github: '/github/api/user', sentry: '/sentry/api/0/', oidc: '/oidc/userinfo' }[p];
  const r = await fetch(base + path, { headers: { ...UA, ...(tok && { authorization: `${scheme} ${tok}` }) } });
  return { status: r.status, body: await r.json(), headers: r.headers };
}

async function revoke(p, tok, { secret } = {}) {
  const [id, sec] = CLIENT[p];
  const path = { sentry: '/sentry/oauth/revoke/', oidc: '/oidc/revoke' }[p];
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: tok, token_type_hint: 'refresh_token', client_id: id, client_secret: secret ?? sec }),
  });
  return { status: r.status, text: await r.text() };
}

async function githubRevoke(tok, { secret = 'gh-secret', clientId = 'gh-client' } = {}) {
  const r = await fetch(`${base}/github/api/applications/${clientId}/grant`, {
    method: 'DELETE',
    headers: { authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`, 'content-type': 'application/json', ...UA },
    body: JSON.stringify({ access_token: tok }),
  });
  return r.status;
}

// ------------------------------------------------------------ GitHub

test('github: form flow, form-encoded token, /user, non-expiring, revoke grant', async () => {
  const { verifier, challenge } = pkce();
  const { code } = await getCode('github', { code_challenge: challenge, code_challenge_method: 'S256' });
  assert.match(code, /^ghcode_/);
  const t = await token('github', { code, redirect_uri: REDIRECT, code_verifier: verifier });
  assert.equal(t.status, 200);
  assert.match(t.ct, /application\/x-www-form-urlencoded/);
  assert.match(t.data.access_token, /^gho_[A-Za-z0-9_-]{43}$/);
  assert.equal(t.data.token_type, 'bearer');
  assert.equal(t.data.scope, 'read:user,repo');
  assert.equal(t.data.expires_in, undefined);
  assert.equal(t.data.refresh_token, undefined);

  const last = (await control('last_request?key=github.token')).body;
  assert.ok(last.body_keys.includes('code_verifier'));
  assert.equal(last.body.redirect_uri, REDIRECT);
  assert.equal(last.body.code_verifier, '[redacted 43 chars]');
  assert.match(last.body.client_secret, /^\[redacted/);
  assert.equal(last.client_auth, 'post');
  assert.ok(!JSON.stringify(last).includes(code));

  for (const scheme of ['Bearer', 'token']) {
    const u = await api('github', t.data.access_token, scheme);
    assert.equal(u.status, 200);
    assert.deepEqual(u.body, { id: 1001, login: 'alice', name: 'Alice', email: 'alice@example.com' });
    assert.equal(u.headers.get('x-oauth-scopes'), 'read:user,repo');
  }
  const noUa = await fetch(`${base}/github/api/user`, { headers: { authorization: `Bearer ${t.data.access_token}`, 'user-agent': '' } });
  assert.equal(noUa.status, 403, 'GitHub requires a User-Agent');
  await noUa.text();

  assert.equal(await githubRevoke(t.data.access_token, { secret: 'nope' }), 401);
  assert.equal(await githubRevoke('gho_unknown'), 404);
  assert.equal(await githubRevoke(t.data.access_token), 204);
  const dead = await api('github', t.data.access_token);
  assert.equal(dead.status, 401);
  assert.deepEqual(dead.body.message, 'Bad credentials');

  const s = await stats();
  assert.equal(s['github.authorize'], 2);
  assert.equal(s['github.token'], 1);
  assert.equal(s['github.user'], 4);
  assert.equal(s['github.revoke'], 3);
  assert.equal(s.revoked_tokens, 1);
});

test('github: JSON answers, errors with HTTP 200, single-use codes, redirect_uri mismatch', async () => {
  const { code } = await getCode('github');
  const bad = await token('github', { code }, { secret: 'wrong', accept: 'application/json' });
  assert.equal(bad.status, 200);
  assert.equal(bad.data.error, 'incorrect_client_credentials');
  const badForm = await token('github', { code }, { secret: 'wrong' });
  assert.equal(badForm.status, 200);
  assert.equal(badForm.data.error, 'incorrect_client_credentials');

  const ok = await token('github', { code }, { accept: 'application/json', basic: true });
  assert.match(ok.ct, /application\/json/);
  assert.match(ok.data.access_token, /^gho_/);
  const reuse = await token('github', { code }, { accept: 'application/json' });
  assert.equal(reuse.status, 200);
  assert.equal(reuse.data.error, 'bad_verification_code');

  const c2 = (await getCode('github')).code;
  const mism = await token('github', { code: c2, redirect_uri: 'http://127.0.0.1:8080/other' });
  assert.equal(mism.data.error, 'redirect_uri_mismatch');

  const c3 = (await getCode('github')).code;
  const unsupported = await token('github', { code: c3, grant_type: 'password' });
  assert.equal(unsupported.data.error, 'unsupported_grant_type');
});

test('github: expiring mode issues refresh tokens that rotate', async () => {
  await config({ github: { expiring: true, access_ttl: 60 } });
  const { code } = await getCode('github');
  const t = await token('github', { code });
  assert.equal(t.data.expires_in, '60');
  assert.match(t.data.refresh_token, /^ghr_/);
  assert.equal(t.data.refresh_token_expires_in, '15897600');
  const r1 = await token('github', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token }, { accept: 'application/json' });
  assert.equal(r1.status, 200);
  assert.match(r1.data.access_token, /^gho_/);
  assert.notEqual(r1.data.refresh_token, t.data.refresh_token);
  assert.equal(r1.data.expires_in, 60);
  const again = await token('github', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token });
  assert.equal(again.status, 200);
  assert.equal(again.data.error, 'bad_refresh_token');
  const s = await stats();
  assert.equal(s['github.token'], 1);
  assert.equal(s['github.token.refresh'], 2);
  assert.equal(s.revoked_tokens, 0, 'rotation is not revocation');
});

test('github: deny, auto-approve shortcut, new users get the next id, escaping', async () => {
  const deny = await loginViaForm('github', authParams('github'), { decision: 'deny' });
  assert.equal(deny.searchParams.get('error'), 'access_denied');
  assert.equal(deny.searchParams.get('state'), 'st-123');
  assert.equal(deny.searchParams.get('code'), null);

  const u = new URL(base + AUTH.github);
  for (const [k, v] of Object.entries({ ...authParams('github'), login: 'carol', auto: '1' })) u.searchParams.set(k, v);
  const r = await fetch(u, { redirect: 'manual' });
  assert.equal(r.status, 302);
  const code = new URL(r.headers.get('location')).searchParams.get('code');
  const t = await token('github', { code });
  const me = await api('github', t.data.access_token);
  assert.deepEqual(me.body, { id: 1003, login: 'carol', name: 'Carol', email: 'carol@example.com' });

  const evil = '"><script>alert(1)</script>';
  const page = await fetch(`${base}${AUTH.github}?client_id=${encodeURIComponent(evil)}&redirect_uri=${encodeURIComponent(REDIRECT)}&state=${encodeURIComponent(evil)}`);
  const html = await page.text();
  assert.ok(!html.includes('<script>'), 'echoed input is escaped');
  assert.ok(html.includes('&lt;script&gt;'));

  const noRedirect = await fetch(`${base}${AUTH.github}?client_id=x`);
  assert.equal(noRedirect.status, 400);
  await noRedirect.text();

  const badLogin = await fetch(base + AUTH.github, { method: 'POST', body: new URLSearchParams({ ...authParams('github'), login: '<bad>', decision: 'approve' }) });
  assert.equal(badLogin.status, 400);
  assert.match(await badLogin.text(), /Invalid username/);
});

// ------------------------------------------------------------ Sentry

test('sentry: full flow, JSON answers, rotating refresh, api, revoke', async () => {
  const { code } = await getCode('sentry', {}, { login: 'bob' });
  const t = await token('sentry', { grant_type: 'authorization_code', code, redirect_uri: REDIRECT });
  assert.equal(t.status, 200);
  assert.match(t.ct, /application\/json/);
  assert.match(t.data.access_token, /^sntr_/);
  assert.match(t.data.refresh_token, /^sntrr_/);
  assert.equal(t.data.expires_in, 3600);
  assert.ok(Math.abs(Date.parse(t.data.expires_at) - Date.now() - 3600e3) < 5000);
  assert.equal(t.data.token_type, 'bearer');
  assert.equal(t.data.scope, 'read:user repo');
  assert.deepEqual(t.data.user, { id: '1002', name: 'Bob', email: 'bob@example.com' });

  const me = await api('sentry', t.data.access_token);
  assert.equal(me.status, 200);
  assert.equal(me.body.user.id, '1002');
  assert.equal((await api('sentry', t.data.access_token, 'token')).status, 401, 'sentry takes Bearer only');

  const r1 = await token('sentry', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token }, { basic: true });
  assert.equal(r1.status, 200);
  assert.notEqual(r1.data.refresh_token, t.data.refresh_token);
  assert.equal(r1.data.user.id, '1002');
  const old = await token('sentry', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token });
  assert.equal(old.status, 400);
  assert.equal(old.data.error, 'invalid_grant');

  assert.equal((await revoke('sentry', r1.data.refresh_token, { secret: 'nope' })).status, 401);
  assert.equal((await revoke('sentry', r1.data.refresh_token)).status, 200);
  assert.equal((await api('sentry', r1.data.access_token)).status, 401);
  assert.equal((await api('sentry', t.data.access_token)).status, 401, 'revocation kills the whole grant');
  const after = await token('sentry', { grant_type: 'refresh_token', refresh_token: r1.data.refresh_token });
  assert.equal(after.data.error, 'invalid_grant');
  assert.equal((await revoke('sentry', 'sntr_unknown')).status, 200, 'RFC 7009: unknown token is fine');

  const s = await stats();
  assert.equal(s['sentry.token'], 1);
  assert.equal(s['sentry.token.refresh'], 3);
  assert.equal(s['sentry.user'], 4);
  assert.equal(s['sentry.revoke'], 3);
  assert.equal(s.revoked_tokens, 3, 'whole grant: first access, current access, current refresh');
});

test('sentry: errors, wrong secret, access_ttl, trailing-slash paths', async () => {
  await config({ sentry: { access_ttl: 5 } });
  const { code } = await getCode('sentry');
  const bad = await token('sentry', { grant_type: 'authorization_code', code, redirect_uri: REDIRECT }, { secret: 'wrong', basic: true });
  assert.equal(bad.status, 401);
  assert.equal(bad.data.error, 'invalid_client');
  assert.match(bad.headers.get('www-authenticate'), /^Basic/);
  const noRedirect = await token('sentry', { grant_type: 'authorization_code', code });
  assert.equal(noRedirect.status, 400);
  assert.equal(noRedirect.data.error, 'invalid_grant');
  const c2 = (await getCode('sentry')).code;
  const t = await token('sentry', { grant_type: 'authorization_code', code: c2, redirect_uri: REDIRECT });
  assert.equal(t.data.expires_in, 5);
  const json = await fetch(base + TOKEN.sentry, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(json.status, 400);
  assert.equal((await json.json()).error, 'invalid_request');
  const noSlash = await fetch(`${base}/sentry/oauth/token`, { method: 'POST' });
  assert.equal(noSlash.status, 404);
  await noSlash.text();
  const noType = await fetch(`${base}${AUTH.sentry}?client_id=sentry-client&redirect_uri=${encodeURIComponent(REDIRECT)}&state=s`, { redirect: 'manual' });
  assert.equal(noType.status, 302);
  assert.equal(new URL(noType.headers.get('location')).searchParams.get('error'), 'unsupported_response_type');
});

// ------------------------------------------------------------ OIDC

test('oidc: discovery, PKCE flow, userinfo, id_token, refresh without rotation, revoke', async () => {
  const d = await (await fetch(`${base}/oidc/.well-known/openid-configuration`)).json();
  assert.equal(d.issuer, `${base}/oidc`);
  assert.equal(d.authorization_endpoint, `${base}/oidc/authorize`);
  assert.equal(d.token_endpoint, `${base}/oidc/token`);
  assert.equal(d.userinfo_endpoint, `${base}/oidc/userinfo`);
  assert.equal(d.revocation_endpoint, `${base}/oidc/revoke`);
  assert.deepEqual(d.code_challenge_methods_supported, ['S256']);

  const { verifier, challenge } = pkce();
  const { code, loc } = await getCode('oidc', { code_challenge: challenge, code_challenge_method: 'S256', nonce: 'n-1' });
  assert.equal(loc.searchParams.get('iss'), `${base}/oidc`);
  const t = await token('oidc', { grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier }, { basic: true });
  assert.equal(t.status, 200);
  assert.match(t.data.access_token, /^oidc_at_/);
  assert.match(t.data.refresh_token, /^oidc_rt_/);
  assert.equal(t.data.expires_in, 3600);
  assert.equal(t.headers.get('cache-control'), 'no-store');

  const [h, pl, sig] = t.data.id_token.split('.');
  const claims = JSON.parse(Buffer.from(pl, 'base64url'));
  assert.equal(claims.iss, `${base}/oidc`);
  assert.equal(claims.sub, '1001');
  assert.equal(claims.aud, 'oidc-client');
  assert.equal(claims.nonce, 'n-1');
  const jwks = await (await fetch(`${base}/oidc/jwks`)).json();
  const key = crypto.createPublicKey({ key: jwks.keys[0], format: 'jwk' });
  assert.ok(crypto.verify('sha256', Buffer.from(`${h}.${pl}`), key, Buffer.from(sig, 'base64url')), 'id_token signature verifies');

  const ui = await api('oidc', t.data.access_token);
  assert.equal(ui.status, 200);
  assert.deepEqual(ui.body, { sub: '1001', preferred_username: 'alice', name: 'Alice', email: 'alice@example.com', email_verified: true });

  const r1 = await token('oidc', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token });
  assert.equal(r1.status, 200);
  assert.equal(r1.data.refresh_token, undefined, 'no rotation by default');
  const r2 = await token('oidc', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token });
  assert.equal(r2.status, 200, 'old refresh token stays valid');

  assert.equal((await revoke('oidc', t.data.refresh_token)).status, 200);
  const r3 = await token('oidc', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token });
  assert.equal(r3.data.error, 'invalid_grant');
  const dead = await api('oidc', r2.data.access_token);
  assert.equal(dead.status, 401);
  assert.match(dead.headers.get('www-authenticate'), /invalid_token/);

  const s = await stats();
  assert.equal(s['oidc.discovery'], 1);
  assert.equal(s['oidc.token'], 1);
  assert.equal(s['oidc.token.refresh'], 3);
  assert.equal(s['oidc.userinfo'], 2);
  assert.equal(s['oidc.revoke'], 1);
});

test('oidc: rotate_refresh, PKCE failures, wrong secret, plain method rejected', async () => {
  await config({ oidc: { rotate_refresh: true } });
  const { code } = await getCode('oidc');
  const t = await token('oidc', { grant_type: 'authorization_code', code, redirect_uri: REDIRECT });
  const r1 = await token('oidc', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token });
  assert.match(r1.data.refresh_token, /^oidc_rt_/);
  assert.equal((await token('oidc', { grant_type: 'refresh_token', refresh_token: t.data.refresh_token })).data.error, 'invalid_grant');

  const { challenge } = pkce();
  const c1 = (await getCode('oidc', { code_challenge: challenge, code_challenge_method: 'S256' })).code;
  const wrong = await token('oidc', { grant_type: 'authorization_code', code: c1, redirect_uri: REDIRECT, code_verifier: pkce().verifier });
  assert.equal(wrong.status, 400);
  assert.equal(wrong.data.error, 'invalid_grant');
  assert.match(wrong.data.error_description, /code_verifier/);

  const c2 = (await getCode('oidc', { code_challenge: challenge, code_challenge_method: 'S256' })).code;
  const missing = await token('oidc', { grant_type: 'authorization_code', code: c2, redirect_uri: REDIRECT });
  assert.equal(missing.data.error, 'invalid_grant');

  const g = pkce();
  const c3 = (await getCode('github', { code_challenge: g.challenge, code_challenge_method: 'S256' })).code;
  const ghWrong = await token('github', { code: c3, code_verifier: pkce().verifier });
  assert.equal(ghWrong.data.error, 'bad_verification_code');

  const c4 = (await getCode('oidc')).code;
  const badSecret = await token('oidc', { grant_type: 'authorization_code', code: c4, redirect_uri: REDIRECT }, { secret: 'x' });
  assert.equal(badSecret.status, 401);
  assert.equal(badSecret.data.error, 'invalid_client');

  const plain = await fetch(`${base}${AUTH.oidc}?${new URLSearchParams({ ...authParams('oidc'), code_challenge: challenge, auto: '1' })}`, { redirect: 'manual' });
  assert.equal(new URL(plain.headers.get('location')).searchParams.get('error'), 'invalid_request');

  await config({ oidc: { clients: { 'other-app': 'other-secret' } } });
  const c5 = (await getCode('oidc', { client_id: 'other-app' })).code;
  const other = await token('oidc', { grant_type: 'authorization_code', code: c5, redirect_uri: REDIRECT, client_id: 'other-app', client_secret: 'other-secret' });
  assert.equal(other.status, 200, 'configured client with its own secret');
});

// ------------------------------------------------------------ faults

async function faulty(key, fault) {
  const r = await config({ fault: { [key]: fault } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

test('fault: invalid_grant, error, status with Retry-After, count clears', async () => {
  const { code } = await getCode('sentry');
  const t = await token('sentry', { grant_type: 'authorization_code', code, redirect_uri: REDIRECT });
  const rt = { grant_type: 'refresh_token', refresh_token: t.data.refresh_token };

  await faulty('sentry.token.refresh', { mode: 'invalid_grant', count: 1 });
  const a = await token('sentry', rt);
  assert.equal(a.status, 400);
  assert.equal(a.data.error, 'invalid_grant');

  await faulty('sentry.token.refresh', { mode: 'status', status: 429, retry_after: 7, count: 2 });
  for (let i = 0; i < 2; i++) {
    const b = await token('sentry', rt);
    assert.equal(b.status, 429);
    assert.equal(b.headers.get('retry-after'), '7');
  }
  const ok = await token('sentry', rt);
  assert.equal(ok.status, 200, 'fault cleared after count');

  await faulty('sentry.token', { mode: 'status', status: 500 });
  for (let i = 0; i < 2; i++) {
    const c = await token('sentry', { grant_type: 'authorization_code', code: 'x', redirect_uri: REDIRECT });
    assert.equal(c.status, 500);
    assert.equal(c.data.error, 'server_error');
  }

  await faulty('github.token', { mode: 'error', error: 'bad_verification_code', count: 1 });
  const gh = await token('github', { code: 'whatever' }, { accept: 'application/json' });
  assert.equal(gh.status, 200);
  assert.equal(gh.data.error, 'bad_verification_code');

  await faulty('oidc.userinfo', { mode: 'error', count: 1 });
  assert.equal((await api('oidc', 'oidc_at_x')).status, 401);

  await faulty('oidc.authorize', { mode: 'error', error: 'temporarily_unavailable', count: 1 });
  const az = await fetch(`${base}${AUTH.oidc}?${new URLSearchParams(authParams('oidc'))}`, { redirect: 'manual' });
  assert.equal(az.status, 302);
  assert.equal(new URL(az.headers.get('location')).searchParams.get('error'), 'temporarily_unavailable');

  const s = await stats();
  assert.ok(s.faults_applied >= 8);
});

test('fault: timeout holds the request until the client gives up', async () => {
  await faulty('oidc.token', { mode: 'timeout' });
  const t0 = Date.now();
  await assert.rejects(
    fetch(base + TOKEN.oidc, { method: 'POST', body: new URLSearchParams({ grant_type: 'authorization_code' }), signal: AbortSignal.timeout(300) }),
    (e) => e.name === 'TimeoutError' || e.name === 'AbortError',
  );
  assert.ok(Date.now() - t0 >= 250);
  assert.equal((await stats())['oidc.token'], 1);
});

test('fault: delay_ms then a normal answer', async () => {
  await faulty('oidc.discovery', { delay_ms: 200, count: 1 });
  const t0 = Date.now();
  const r = await fetch(`${base}/oidc/.well-known/openid-configuration`);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).issuer, `${base}/oidc`);
  assert.ok(Date.now() - t0 >= 190);
});

test('fault: garbage, huge, reset', async () => {
  await faulty('github.user', { mode: 'garbage', count: 1 });
  const g = await fetch(`${base}/github/api/user`, { headers: UA });
  assert.equal(g.status, 200);
  assert.equal(await g.text(), '<html>oops');

  await faulty('sentry.token', { mode: 'huge', count: 1 });
  const h = await fetch(base + TOKEN.sentry, { method: 'POST', body: new URLSearchParams({ grant_type: 'authorization_code' }) });
  assert.equal(h.status, 200);
  const big = await h.arrayBuffer();
  assert.ok(big.byteLength >= 5 * 1024 * 1024, `huge body is ${big.byteLength} bytes`);

  await faulty('sentry.token', { mode: 'huge', count: 1 });
  const h2 = await fetch(base + TOKEN.sentry, { method: 'POST', body: new URLSearchParams({ grant_type: 'authorization_code' }) });
  const reader = h2.body.getReader();
  await reader.read();
  await reader.cancel(); // client gives up mid-stream; the server must cope

  await faulty('oidc.revoke', { mode: 'reset', count: 1 });
  await assert.rejects(fetch(`${base}/oidc/revoke`, { method: 'POST', body: new URLSearchParams({ token: 'x' }) }));
  const after = await fetch(`${base}/oidc/revoke`, { method: 'POST', body: new URLSearchParams({ token: 'x' }) });
  assert.equal(after.status, 401, 'back to normal: no client credentials');
  await after.text();
});

test('fault config validation names the problem', async () => {
  const bad = await config({ fault: { 'github.tokn': { mode: 'timeout' } } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.errors[0], /unknown endpoint key/);
  const badMode = await config({ fault: { 'github.token': { mode: 'explode' } } });
  assert.equal(badMode.status, 400);
  const badKey = await config({ sentry: { access_tll: 5 } });
  assert.equal(badKey.status, 400);
  assert.match(badKey.body.errors[0], /sentry.access_tll: unknown key/);
  const badType = await config({ github: { expiring: 'yes' } });
  assert.equal(badType.status, 400);
  const clear = await config({ fault: { 'github.token': { mode: 'timeout' } } });
  assert.equal(clear.body.config.fault['github.token'].mode, 'timeout');
  const cleared = await config({ fault: { 'github.token': null } });
  assert.deepEqual(cleared.body.config.fault, {});
});

// ------------------------------------------------------------ control

test('control: revoke_user, expire_access, tokens, reset, body limit', async () => {
  const gh = await token('github', { code: (await getCode('github')).code });
  const se = await token('sentry', { grant_type: 'authorization_code', code: (await getCode('sentry')).code, redirect_uri: REDIRECT });
  const oi = await token('oidc', { grant_type: 'authorization_code', code: (await getCode('oidc')).code, redirect_uri: REDIRECT });
  const bob = await token('oidc', { grant_type: 'authorization_code', code: (await getCode('oidc', {}, { login: 'bob' })).code, redirect_uri: REDIRECT });

  const list = await control('tokens');
  assert.equal(list.body.tokens.length, 7);
  const dump = JSON.stringify(list.body);
  for (const v of [gh.data.access_token, se.data.access_token, se.data.refresh_token, oi.data.access_token, oi.data.refresh_token]) {
    assert.ok(!dump.includes(v), 'token values are never listed');
  }
  assert.deepEqual(Object.keys(list.body.tokens[0]).sort(),
    ['client_id', 'created_at', 'expired', 'expires_at', 'grant', 'kind', 'personality', 'revoked', 'revoked_reason', 'scope', 'user', 'user_id'].sort());

  const exp = await control('expire_access', { user: 'alice' });
  assert.equal(exp.body.expired, 3);
  assert.equal((await api('github', gh.data.access_token)).status, 401);
  assert.equal((await api('sentry', se.data.access_token)).status, 401);
  assert.equal((await api('oidc', oi.data.access_token)).status, 401);
  assert.equal((await api('oidc', bob.data.access_token)).status, 200, 'bob untouched');
  const refreshed = await token('oidc', { grant_type: 'refresh_token', refresh_token: oi.data.refresh_token });
  assert.equal(refreshed.status, 200, 'expired access, refresh still works');

  const rv = await control('revoke_user', { user: 'alice' });
  assert.equal(rv.status, 200);
  assert.equal(rv.body.revoked, 6);
  assert.equal((await token('sentry', { grant_type: 'refresh_token', refresh_token: se.data.refresh_token })).data.error, 'invalid_grant');
  assert.equal((await token('oidc', { grant_type: 'refresh_token', refresh_token: oi.data.refresh_token })).data.error, 'invalid_grant');
  assert.equal((await api('oidc', refreshed.data.access_token)).status, 401);
  assert.equal((await api('oidc', bob.data.access_token)).status, 200);
  assert.equal((await control('revoke_user', { user: 'nobody' })).status, 404);
  assert.equal((await stats()).revoked_tokens, 6);
  const aliceTokens = await control('tokens?user=alice');
  assert.ok(aliceTokens.body.tokens.every((t) => t.revoked));

  const big = await fetch(base + TOKEN.oidc, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a='.padEnd(70 * 1024, 'x') });
  assert.equal(big.status, 413);
  await big.text();
  const bigControl = await fetch(`${base}/_control/config`, { method: 'POST', body: `{"x":"${'y'.repeat(70 * 1024)}"}` });
  assert.equal(bigControl.status, 413);
  await bigControl.text();

  assert.equal((await control('last_request?key=oidc.revoke')).status, 404);
  await control('reset');
  const s = await stats();
  assert.equal(s['oidc.token'], 0);
  assert.equal(s.revoked_tokens, 0);
  assert.equal((await control('tokens')).body.tokens.length, 0);
  assert.deepEqual((await control('users')).body.users.map((u) => [u.login, u.id]), [['alice', 1001], ['bob', 1002]]);
});

test('logs carry no tokens, codes or secrets', () => {
  assert.ok(logLines.length > 50);
  const all = logLines.join('\n');
  assert.doesNotMatch(all, /gho_|ghr_|ghcode_|sntr_|sntrr_|oidc_at_|oidc_rt_|oidc_code_|gh-secret|sentry-secret|oidc-secret|st-123/);
  const one = JSON.parse(logLines.find((l) => l.includes('"key":"oidc.token"')));
  assert.deepEqual(Object.keys(one).filter((k) => ['method', 'path', 'status'].includes(k)), ['method', 'path', 'status']);
});

// ------------------------------------------------------------ CLI

test('CLI: one listening line on stdout, JSON logs on stderr, clean exit on SIGTERM', async () => {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./idp.mjs', import.meta.url)), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const line = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out.split('\n')[0]); });
    child.once('exit', (c) => reject(new Error(`exited ${c}: ${err}`)));
  });
  const ev = JSON.parse(line);
  assert.deepEqual(Object.keys(ev), ['event', 'port', 'base']);
  assert.equal(ev.event, 'listening');
  assert.equal(ev.base, `http://127.0.0.1:${ev.port}`);
  assert.equal(line, `{"event":"listening","port":${ev.port},"base":"http://127.0.0.1:${ev.port}"}`);

  const u = new URL(`${ev.base}${AUTH.github}`);
  for (const [k, v] of Object.entries({ ...authParams('github'), auto: '1' })) u.searchParams.set(k, v);
  const r = await fetch(u, { redirect: 'manual' });
  const code = new URL(r.headers.get('location')).searchParams.get('code');
  const t = await fetch(`${ev.base}${TOKEN.github}`, { method: 'POST', body: new URLSearchParams({ code, client_id: 'gh-client', client_secret: 'gh-secret' }) });
  const tok = new URLSearchParams(await t.text()).get('access_token');
  assert.match(tok, /^gho_/);
  // a request left hanging must not delay the exit
  await fetch(`${ev.base}/_control/config`, { method: 'POST', body: JSON.stringify({ fault: { 'github.user': { mode: 'timeout' } } }) }).then((x) => x.text());
  const hanging = fetch(`${ev.base}/github/api/user`, { headers: UA }).catch(() => 'aborted');

  await new Promise((resolve) => setTimeout(resolve, 100));
  const t0 = Date.now();
  child.kill('SIGTERM');
  const code2 = await new Promise((resolve) => child.once('exit', (c) => resolve(c)));
  assert.equal(code2, 0);
  assert.ok(Date.now() - t0 < 1500, 'prompt exit');
  assert.equal(await hanging, 'aborted');
  assert.equal(out.trim().split('\n').length, 1, 'exactly one stdout line');
  const lines = err.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(lines.some((l) => l.method === 'POST' && l.path === TOKEN.github && l.status === 200));
  assert.ok(!err.includes(code) && !err.includes(tok) && !err.includes('gh-secret'));
});
