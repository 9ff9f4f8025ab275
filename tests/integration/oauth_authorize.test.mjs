// The authorization endpoint, the consent page and the upstream leg of the
// double flow: request validation (unsafe errors as pages, the rest as
// redirects with state and iss), consent with CSRF bound to the browser,
// the redirect upstream, /callback and its failures. Each refused request
// leaves the OAuth tables as they were and the node ready.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startIdp, startOauthBroker, runCleanups, http, psql, unchanged, counts, assertReady, assertErrorPage, assertErrorRedirect,
  locationParams, approveUntilUpstream, upstreamLogin, publicClient, register, setFault, resetIdp, control,
  CookieJar, runFlow, exchangeCode, pkce, authorizeUrl, browserGet, browserPost, parseConsent,
  STATIC_PUBLIC, LOOPBACK_REDIRECT, TABLES, RESOURCES,
} from '../lib/oauth_setup.mjs';

let idp, env, client;
const cleanups = [];
const WITH_PENDING = [...TABLES, 'pending_authorizations'];
before(async () => {
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  env = await startOauthBroker(idp, { timeoutMs: 1500 });
  cleanups.push(() => env.stop());
  client = await publicClient(env.url, { name: 'Flow Tester' });
});
after(() => runCleanups(cleanups));

/** A valid authorization request for the registered public client, with overrides (undefined drops a key). */
function request(over = {}) {
  const p = pkce();
  const params = {
    response_type: 'code', client_id: client.clientId, redirect_uri: client.redirectUri, code_challenge: p.challenge,
    code_challenge_method: 'S256', state: 'client-state-1', resource: `${env.url}/mcp`, scope: 'repo:read', ...over,
  };
  return { url: authorizeUrl(env.url, params), verifier: p.verifier };
}

/** Builds a URL with repeated parameters, in order. */
function rawAuthorize(pairs) {
  const u = new URL('/authorize', env.url);
  for (const [k, v] of pairs) u.searchParams.append(k, v);
  return u.toString();
}

test('consent page names the client, the redirect host and the scopes, with safe headers', async () => {
  const jar = new CookieJar();
  const before = await counts(env.db, WITH_PENDING);
  const page = await browserGet(authorizeUrl(env.url, {
    response_type: 'code', client_id: STATIC_PUBLIC.client_id, redirect_uri: 'https://app.example.com/cb',
    code_challenge: pkce().challenge, code_challenge_method: 'S256', state: 's', resource: `${env.url}/mcp`,
    scope: 'repo:read repo:write',
  }), jar);
  assert.equal(page.status, 200, page.text.slice(0, 300));
  assert.match(page.headers.get('content-type'), /^text\/html/);
  assert.match(page.headers.get('content-security-policy'), /default-src 'none'/);
  assert.match(page.headers.get('content-security-policy'), /frame-ancestors 'none'/);
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
  assert.match(page.headers.get('cache-control'), /no-store/);
  for (const s of ['Static Public CLI', 'app.example.com', 'repo:read', 'repo:write', `${env.url}/mcp`]) {
    assert.ok(page.text.includes(s), `consent page names ${s}`);
  }
  assert.match(page.text, /<form method="post"/);
  assert.match(page.text, /name="decision" value="approve"/);
  assert.match(page.text, /name="decision" value="deny"/);
  const { fields } = parseConsent(page.text);
  assert.ok(fields.csrf && fields.csrf.length >= 32, 'a CSRF token');
  assert.ok(fields.request, 'the pending request');
  const cookie = page.headers.getSetCookie().find((c) => c.startsWith('mcpb_browser='));
  assert.ok(cookie, 'browser-binding cookie');
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Lax/);
  // Showing the page writes nothing.
  assert.deepEqual(await counts(env.db, WITH_PENDING), before);
});

test('approve sends the browser upstream with the broker client, its callback, a fresh state and PKCE', async () => {
  const before = await counts(env.db, ['pending_authorizations']);
  const gh = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp`, state: 'client-state-xyz' });
  assert.equal(gh.res.status, 302, gh.res.text.slice(0, 300));
  const loc = gh.res.headers.get('location');
  assert.ok(loc.startsWith(`${idp.base}/github/login/oauth/authorize?`), loc);
  const p = locationParams(loc);
  assert.equal(p.client_id, 'gh-client');
  assert.equal(p.redirect_uri, `${env.url}/callback`);
  assert.equal(p.response_type, 'code');
  assert.equal(p.scope, 'read:user repo');
  assert.ok(p.state && p.state.length >= 32 && p.state !== 'client-state-xyz', 'a fresh upstream state');
  assert.equal(p.code_challenge_method, 'S256');
  assert.match(p.code_challenge, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(!loc.includes(client.clientId), 'the MCP client id does not travel upstream');
  assert.match(gh.res.headers.get('cache-control'), /no-store/);
  assert.deepEqual(await counts(env.db, ['pending_authorizations']), { pending_authorizations: before.pending_authorizations + 1 });
  // Only a hash of the upstream state is stored.
  const stored = await psql(env.db, 'SELECT string_agg(encode(state_hash, \'hex\') || client_state, \' \') FROM pending_authorizations');
  assert.ok(!stored.includes(p.state));

  // Sentry's preset does not do PKCE upstream; a second approval gets another state.
  const se = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/sentry-mcp`, scope: 'issues:read' });
  assert.equal(se.res.status, 302);
  const sp = locationParams(se.res.headers.get('location'));
  assert.ok(se.res.headers.get('location').startsWith(`${idp.base}/sentry/oauth/authorize/?`));
  assert.equal(sp.client_id, 'sentry-client');
  assert.equal(sp.code_challenge, undefined);
  assert.notEqual(sp.state, p.state);
});

test('callback redirects to the client with a one-time code, state and iss', async () => {
  const before = await counts(env.db, WITH_PENDING);
  const f = await runFlow({ broker: env.url, clientId: client.clientId, redirectUri: client.redirectUri,
    resource: `${env.url}/mcp`, state: 'abc&def=ghi', login: 'alice' });
  assert.equal(f.steps.callback.status, 302);
  assert.ok(f.location.startsWith(`${client.redirectUri}?`), f.location);
  assert.match(f.code, /^mcpb_ac_[A-Za-z0-9_-]{43}$/);
  assert.equal(f.state, 'abc&def=ghi');
  assert.equal(f.iss, env.url);
  assert.match(f.steps.callback.headers.get('cache-control'), /no-store/);
  const after = await counts(env.db, WITH_PENDING);
  assert.equal(after.grants, before.grants + 1);
  assert.equal(after.auth_codes, before.auth_codes + 1);
  assert.equal(after.tokens, before.tokens);
  assert.equal(after.pending_authorizations, before.pending_authorizations, 'the pending request is consumed');
  const ttl = Number(await psql(env.db, 'SELECT max(extract(epoch FROM expires_at - now())) FROM auth_codes'));
  assert.ok(ttl > 0 && ttl <= 60, `code lifetime ${ttl}`);
  // The code is stored hashed only.
  assert.equal(await psql(env.db, `SELECT count(*) FROM auth_codes WHERE code_hash = sha256('${f.code}'::bytea)`), '1');
  // The same callback again: the state was used up.
  const again = await browserGet(f.steps.upstream.headers.get('location'), f.jar);
  assertErrorPage(again, 400);
  const t = await exchangeCode(env.url, { clientId: client.clientId, code: f.code, verifier: f.verifier, redirectUri: client.redirectUri });
  assert.equal(t.status, 200, t.text);
});

test('deny redirects access_denied with state and iss, writing nothing', async () => {
  await unchanged(env, async () => {
    const f = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp`, state: 'deny-state', decision: 'deny' });
    assertErrorRedirect(f.res, { redirectUri: client.redirectUri, error: 'access_denied', state: 'deny-state', iss: env.url });
  }, WITH_PENDING);
});

test('unsafe errors (client, redirect_uri) show a page and never redirect', async () => {
  const good = request();
  const u = new URL(good.url);
  const variants = [
    ['no client_id', { client_id: undefined }],
    ['empty client_id', { client_id: '' }],
    ['unknown client', { client_id: 'mcpb_c_doesnotexist' }],
    ['very long client_id', { client_id: 'x'.repeat(5000) }],
    ['unregistered redirect', { redirect_uri: 'https://evil.example.com/cb' }],
    ['other path on loopback', { redirect_uri: 'http://127.0.0.1:33418/other' }],
    ['other loopback host', { redirect_uri: 'http://localhost:33418/callback' }],
    ['extra query', { redirect_uri: `${LOOPBACK_REDIRECT}?x=1` }],
    ['https for http', { redirect_uri: 'https://127.0.0.1:33418/callback' }],
    ['userinfo trick', { redirect_uri: 'http://127.0.0.1:33418@evil.example.com/callback' }],
    ['fragment', { redirect_uri: `${LOOPBACK_REDIRECT}#x` }],
  ];
  for (const [why, over] of variants) {
    const q = new URL(u);
    for (const [k, v] of Object.entries(over)) if (v === undefined) q.searchParams.delete(k); else q.searchParams.set(k, v);
    await unchanged(env, async () => assertErrorPage(await browserGet(q.toString(), new CookieJar()), 400), WITH_PENDING)
      .catch((e) => { e.message = `${why}: ${e.message}`; throw e; });
  }
  // Duplicated client_id or redirect_uri: a page, not a redirect.
  const base = [...u.searchParams];
  for (const dup of ['client_id', 'redirect_uri']) {
    const pairs = [...base, [dup, dup === 'client_id' ? 'static-public' : 'https://evil.example.com/cb']];
    await unchanged(env, async () => assertErrorPage(await browserGet(rawAuthorize(pairs), new CookieJar()), 400), WITH_PENDING);
  }
  // client_id that is not VSCHAR (invalid UTF-8, control characters): unknown client, not a server error.
  for (const raw of ['%FF', '%C3%A9', 'a%00b', 'a%0Ab']) {
    const q = `${env.url}/authorize?response_type=code&client_id=${raw}&redirect_uri=${encodeURIComponent(client.redirectUri)}`;
    await unchanged(env, async () => assertErrorPage(await browserGet(q, new CookieJar()), 400), WITH_PENDING)
      .catch((e) => { e.message = `client_id=${raw}: ${e.message}`; throw e; });
  }
  // No redirect_uri while the client registered two.
  const two = new URL(u);
  two.searchParams.set('client_id', STATIC_PUBLIC.client_id);
  two.searchParams.delete('redirect_uri');
  await unchanged(env, async () => assertErrorPage(await browserGet(two.toString(), new CookieJar()), 400), WITH_PENDING);
  // A static confidential client's URI under another client id.
  const cross = new URL(u);
  cross.searchParams.set('redirect_uri', 'https://agents.example.com/cb');
  await unchanged(env, async () => assertErrorPage(await browserGet(cross.toString(), new CookieJar()), 400), WITH_PENDING);
});

test('other request errors redirect to the verified redirect_uri with error, state and iss', async () => {
  const cases = [
    ['invalid_request', { response_type: undefined }],
    ['unsupported_response_type', { response_type: 'token' }],
    ['invalid_request', { code_challenge: undefined }],
    ['invalid_request', { code_challenge_method: undefined }],
    ['invalid_request', { code_challenge_method: 'plain' }],
    ['invalid_request', { code_challenge_method: 's256' }],
    ['invalid_request', { code_challenge: 'short' }],
    ['invalid_request', { code_challenge: 'a'.repeat(42) + '!' }],
    ['invalid_target', { resource: `${env.url}/nope` }],
    ['invalid_target', { resource: 'https://other.example.com/mcp' }],
    ['invalid_target', { resource: `${env.url}/mcp?x=1` }],
    ['invalid_target', { resource: `${env.url}/mcp#frag` }],
    ['invalid_target', { resource: 'not a url' }],
    ['invalid_target', { resource: undefined }], // three resources: must be named
    ['invalid_scope', { scope: 'repo:admin' }],
    ['invalid_scope', { scope: 'repo:read issues:read' }], // another resource's scope
    ['invalid_scope', { scope: 'files:read', resource: `${env.url}/mcp` }],
  ];
  for (const [error, over] of cases) {
    await unchanged(env, async () => {
      const r = await browserGet(request(over).url, new CookieJar());
      assertErrorRedirect(r, { redirectUri: client.redirectUri, error, state: 'client-state-1', iss: env.url });
    }, WITH_PENDING).catch((e) => { e.message = `${JSON.stringify(over)}: ${e.message}`; throw e; });
  }
  // Repeated parameters.
  const base = [...new URL(request().url).searchParams];
  for (const [dup, value, error] of [['scope', 'repo:write', 'invalid_request'], ['state', 'other', 'invalid_request'],
    ['response_type', 'code', 'invalid_request'], ['code_challenge', pkce().challenge, 'invalid_request'],
    ['code_challenge_method', 'S256', 'invalid_request'], ['resource', `${env.url}/sentry-mcp`, 'invalid_target']]) {
    await unchanged(env, async () => {
      const r = await browserGet(rawAuthorize([...base, [dup, value]]), new CookieJar());
      const p = assertErrorRedirect(r, { redirectUri: client.redirectUri, error, iss: env.url });
      if (dup !== 'state') assert.equal(p.state, 'client-state-1');
    }, WITH_PENDING).catch((e) => { e.message = `duplicated ${dup}: ${e.message}`; throw e; });
  }
  // A state outside VSCHAR (RFC 6749 appendix A.5) is refused and not echoed.
  for (const raw of ['%FF%FE', '%C3%A9', 'a%0Ab', 'a%7Fb']) {
    const q = `${request({ state: undefined }).url}&state=${raw}`;
    await unchanged(env, async () => {
      const p = assertErrorRedirect(await browserGet(q, new CookieJar()), { redirectUri: client.redirectUri, error: 'invalid_request', iss: env.url });
      assert.equal(p.state, undefined);
    }, WITH_PENDING).catch((e) => { e.message = `state=${raw}: ${e.message}`; throw e; });
  }
  // Without state the error redirect carries none.
  const r = await browserGet(request({ state: undefined, code_challenge_method: 'plain' }).url, new CookieJar());
  const p = assertErrorRedirect(r, { redirectUri: client.redirectUri, error: 'invalid_request', iss: env.url });
  assert.equal(p.state, undefined);
});

test('loopback redirect URIs match on any port; the code goes to the port asked for', async () => {
  const redirectUri = 'http://127.0.0.1:49152/cb';
  const f = await runFlow({ broker: env.url, clientId: STATIC_PUBLIC.client_id, redirectUri, resource: `${env.url}/mcp` });
  assert.ok(f.code, JSON.stringify(f.steps.authorize?.status));
  assert.ok(f.location.startsWith('http://127.0.0.1:49152/cb?'), f.location);
  const wrong = await exchangeCode(env.url, { clientId: STATIC_PUBLIC.client_id, code: f.code, verifier: f.verifier, redirectUri: 'http://127.0.0.1/cb' });
  assert.equal(wrong.status, 400);
  assert.equal(wrong.json.error, 'invalid_grant');
  const t = await exchangeCode(env.url, { clientId: STATIC_PUBLIC.client_id, code: f.code, verifier: f.verifier, redirectUri });
  assert.equal(t.status, 200, t.text);
  // Without a port, and IPv6 loopback registered by another client.
  const v6 = await publicClient(env.url, { redirectUri: 'http://[::1]/cb' });
  const page = await browserGet(authorizeUrl(env.url, { response_type: 'code', client_id: v6.clientId, redirect_uri: 'http://[::1]:7777/cb',
    code_challenge: pkce().challenge, code_challenge_method: 'S256', resource: `${env.url}/mcp` }), new CookieJar());
  assert.equal(page.status, 200, page.text.slice(0, 200));
  // Non-loopback https: the port is part of the exact match.
  const https = await browserGet(authorizeUrl(env.url, { response_type: 'code', client_id: STATIC_PUBLIC.client_id,
    redirect_uri: 'https://app.example.com:8443/cb', code_challenge: pkce().challenge, code_challenge_method: 'S256',
    resource: `${env.url}/mcp` }), new CookieJar());
  assertErrorPage(https, 400);
});

test('redirect URIs with a query or a private-use scheme get the code appended exactly', async () => {
  const uris = ['https://app.example.com/cb?tenant=a%20b&x=1', 'cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback',
    'com.example.app:/oauth2redirect/example-provider', 'myapp:/cb'];
  const reg = await register(env.url, { redirect_uris: uris, token_endpoint_auth_method: 'none', client_name: 'Native' });
  assert.equal(reg.status, 201, reg.text);
  for (const redirectUri of uris) {
    const f = await runFlow({ broker: env.url, clientId: reg.json.client_id, redirectUri, resource: `${env.url}/mcp`, state: 'st' });
    assert.equal(f.steps.callback?.status, 302, `${redirectUri}: ${JSON.stringify(Object.fromEntries(Object.entries(f.steps).map(([k, v]) => [k, v.status])))}`);
    const sep = redirectUri.includes('?') ? '&' : '?';
    assert.ok(f.location.startsWith(redirectUri + sep), `${redirectUri} -> ${f.location}`);
    const q = new URLSearchParams(f.location.slice(f.location.indexOf('?') + 1));
    assert.match(q.get('code'), /^mcpb_ac_/);
    assert.equal(q.get('state'), 'st');
    assert.equal(q.get('iss'), env.url);
    if (redirectUri.includes('tenant')) assert.equal(q.get('tenant'), 'a b');
    const t = await exchangeCode(env.url, { clientId: reg.json.client_id, code: q.get('code'), verifier: f.verifier, redirectUri });
    assert.equal(t.status, 200, `${redirectUri}: ${t.text}`);
    // Deny goes to the same exact place.
    const d = await approveUntilUpstream(env.url, { clientId: reg.json.client_id, redirectUri, resource: `${env.url}/mcp`, state: 'st', decision: 'deny' });
    assert.ok(d.res.headers.get('location').startsWith(redirectUri + sep), d.res.headers.get('location'));
  }
  // The consent page shows where a private-use redirect really goes, not a host-like part of it.
  const page = await browserGet(authorizeUrl(env.url, { response_type: 'code', client_id: reg.json.client_id,
    redirect_uri: 'com.example.app:/oauth2redirect/example-provider', code_challenge: pkce().challenge,
    code_challenge_method: 'S256', resource: `${env.url}/mcp` }), new CookieJar());
  assert.equal(page.status, 200);
  const host = /<p class="host">([^<]*)<\/p>/.exec(page.text)?.[1];
  assert.ok(host && host.startsWith('com.example.app:'), `shown redirect: ${host}`);
});

test('resource is canonicalised, defaults to the only resource, and scope defaults to default_scopes', async () => {
  const port = new URL(env.url).port;
  for (const resource of [`HTTP://127.0.0.1:${port}/mcp`, `${env.url}/mcp/`, `http://127.0.0.1:${port}/mcp//`]) {
    const page = await browserGet(request({ resource }).url, new CookieJar());
    assert.equal(page.status, 200, `${resource}: ${page.status} ${page.headers.get('location')}`);
    assert.ok(page.text.includes(`<code>${env.url}/mcp</code>`), resource);
  }
  // The path is case-sensitive.
  const upper = await browserGet(request({ resource: `${env.url}/MCP` }).url, new CookieJar());
  assertErrorRedirect(upper, { redirectUri: client.redirectUri, error: 'invalid_target' });

  // No scope: the resource's default_scopes (or all of its scopes without defaults). offline_access is ignored.
  for (const [path, scope, want] of [['/mcp', undefined, 'repo:read'], ['/mcp', 'offline_access', 'repo:read'],
    ['/mcp', '', 'repo:read'], ['/oidc-mcp', undefined, 'files:read files:write'], ['/sentry-mcp', undefined, 'issues:read'],
    ['/mcp', 'repo:write offline_access', 'repo:write']]) {
    const f = await runFlow({ broker: env.url, clientId: client.clientId, redirectUri: client.redirectUri, resource: `${env.url}${path}`, scope });
    assert.ok(f.code, `${path} ${scope}: ${Object.entries(f.steps).map(([k, v]) => `${k} ${v.status} ${v.headers.get('location') ?? ''} ${v.status >= 400 ? v.text.slice(0, 200) : ''}`).join('; ')}`);
    const t = await exchangeCode(env.url, { clientId: client.clientId, code: f.code, verifier: f.verifier, redirectUri: client.redirectUri });
    assert.equal(t.status, 200, t.text);
    assert.deepEqual(t.json.scope.split(' ').sort(), want.split(' ').sort(), `${path} scope=${scope}`);
  }

  const one = await startOauthBroker(idp, { resources: [RESOURCES[1]], patch: (cfg) => { cfg.public_url = cfg.public_url.replace('127.0.0.1', 'localhost'); } });
  try {
    const c = await publicClient(one.url);
    const oneUrl = one.cfg.public_url;
    const page = await browserGet(authorizeUrl(one.url, { response_type: 'code', client_id: c.clientId, redirect_uri: c.redirectUri,
      code_challenge: pkce().challenge, code_challenge_method: 'S256' }), new CookieJar());
    assert.equal(page.status, 200, page.headers.get('location'));
    assert.ok(page.text.includes(`<code>${oneUrl}/sentry-mcp</code>`));
    const mixed = await browserGet(authorizeUrl(one.url, { response_type: 'code', client_id: c.clientId, redirect_uri: c.redirectUri,
      code_challenge: pkce().challenge, code_challenge_method: 'S256', resource: `${oneUrl.replace('localhost', 'LocalHost')}/sentry-mcp/` }), new CookieJar());
    assert.equal(mixed.status, 200, mixed.headers.get('location'));
  } finally {
    await one.stop();
  }
});

test('CSRF: a missing token, another browser\'s token or cookie, or a damaged form is refused', async () => {
  const start = async (jar = new CookieJar()) => {
    const page = await browserGet(request().url, jar);
    assert.equal(page.status, 200);
    return { jar, ...parseConsent(page.text) };
  };
  const a = await start();
  const b = await start();
  const post = (jar, fields, headers = {}) => http(a.action, { method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(jar ? { cookie: jar.header() } : {}), ...headers },
    body: new URLSearchParams(fields).toString() });
  const refused = [
    ['no csrf', a.jar, { request: a.fields.request, decision: 'approve' }, 403],
    ['empty csrf', a.jar, { ...a.fields, csrf: '', decision: 'approve' }, 403],
    ['csrf of another browser', a.jar, { ...a.fields, csrf: b.fields.csrf, decision: 'approve' }, 403],
    ['form of another browser', a.jar, { ...b.fields, decision: 'approve' }, 403],
    ['no cookie', null, { ...a.fields, decision: 'approve' }, 403],
    ['cookie of another browser', b.jar, { ...a.fields, decision: 'approve' }, 403],
    ['damaged request', a.jar, { ...a.fields, request: a.fields.request.slice(0, -4) + 'AAAA', decision: 'approve' }, 400],
    ['no request', a.jar, { csrf: a.fields.csrf, decision: 'approve' }, 400],
    ['no decision', a.jar, { ...a.fields }, 400],
    ['odd decision', a.jar, { ...a.fields, decision: 'maybe' }, 400],
  ];
  for (const [why, jar, fields, status] of refused) {
    await unchanged(env, async () => {
      const r = await post(jar, fields);
      assertErrorPage(r, status);
    }, WITH_PENDING).catch((e) => { e.message = `${why}: ${e.message}`; throw e; });
  }
  // Duplicated decision, wrong content type, oversized form.
  await unchanged(env, async () => {
    const body = `${new URLSearchParams({ ...a.fields, decision: 'deny' })}&decision=approve`;
    assertErrorPage(await http(a.action, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: a.jar.header() }, body }), 400);
    assertErrorPage(await post(a.jar, { ...a.fields, decision: 'approve' }, { 'content-type': 'text/plain' }), 400);
    const big = await http(a.action, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: a.jar.header() },
      body: `${new URLSearchParams({ ...a.fields, decision: 'approve' })}&pad=${'x'.repeat(40000)}` });
    assert.equal(big.status, 413);
  }, WITH_PENDING);
  // The untouched form still works in its own browser.
  const ok = await post(a.jar, { ...a.fields, decision: 'approve' });
  assert.equal(ok.status, 302);
  assert.ok(ok.headers.get('location').startsWith(idp.base));
});

test('callback: unknown, expired, foreign-browser and malformed states are refused without redirect', async () => {
  const stats0 = await control(idp, 'stats');
  await unchanged(env, async () => {
    for (const q of ['', '?code=x', '?state=&code=x', `?state=${'s'.repeat(200)}&code=x`, '?state=unknown-state-0123456789&code=x',
      '?state=a&state=b&code=x', '?state=unknown&code=a&code=b']) {
      assertErrorPage(await browserGet(`${env.url}/callback${q}`, new CookieJar()), 400);
    }
  }, WITH_PENDING);
  // Another browser finishes the sign-in: refused, and the state is burnt.
  const s1 = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp` });
  const cb1 = await upstreamLogin(s1.res.headers.get('location'));
  await unchanged(env, async () => {
    assertErrorPage(await browserGet(cb1, new CookieJar()), 403);
  });
  assertErrorPage(await browserGet(cb1, s1.jar), 400);
  // An expired pending request.
  const s2 = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp` });
  const cb2 = await upstreamLogin(s2.res.headers.get('location'));
  await psql(env.db, "UPDATE pending_authorizations SET expires_at = now() - interval '1 second'");
  await unchanged(env, async () => assertErrorPage(await browserGet(cb2, s2.jar), 400));
  // None of this reached the upstream token endpoint.
  const stats1 = await control(idp, 'stats');
  assert.equal(stats1['github.token'], stats0['github.token']);
});

test('upstream error= at the callback becomes access_denied for the client', async () => {
  const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp`, state: 'up-deny' });
  const cb = await upstreamLogin(s.res.headers.get('location'), { decision: 'deny' });
  assert.match(cb, /error=access_denied/);
  await unchanged(env, async () => {
    const r = await browserGet(cb, s.jar);
    assertErrorRedirect(r, { redirectUri: client.redirectUri, error: 'access_denied', state: 'up-deny', iss: env.url });
  });
  // An upstream that fails its own authorize step (fault) likewise.
  await setFault(idp, 'github.authorize', { mode: 'error', error: 'server_error', count: 1 });
  const s2 = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp`, state: 'up-err' });
  const cb2 = await upstreamLogin(s2.res.headers.get('location'));
  await unchanged(env, async () => {
    assertErrorRedirect(await browserGet(cb2, s2.jar), { redirectUri: client.redirectUri, error: 'access_denied', state: 'up-err', iss: env.url });
  });
});

test('upstream failures at code exchange or identity: an error redirect, nothing written, node healthy', async () => {
  const faults = [
    ['github.token', { mode: 'error', error: 'bad_verification_code' }, 'server_error'],
    ['github.token', { mode: 'invalid_grant' }, 'server_error'],
    ['github.token', { mode: 'status', status: 500 }, 'temporarily_unavailable'],
    ['github.token', { mode: 'status', status: 503 }, 'temporarily_unavailable'],
    ['github.token', { mode: 'timeout' }, 'temporarily_unavailable'],
    ['github.token', { mode: 'garbage' }, 'temporarily_unavailable'],
    ['github.token', { mode: 'huge' }, 'temporarily_unavailable'],
    ['github.token', { mode: 'reset' }, 'temporarily_unavailable'],
    ['github.user', { mode: 'error' }, 'server_error'],
    ['github.user', { mode: 'status', status: 500 }, 'temporarily_unavailable'],
    ['github.user', { mode: 'garbage' }, 'temporarily_unavailable'],
    ['github.user', { mode: 'huge' }, 'temporarily_unavailable'],
    ['github.user', { mode: 'timeout' }, 'temporarily_unavailable'],
  ];
  for (const [key, fault, error] of faults) {
    const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp`, state: 'fault-state' });
    const cb = await upstreamLogin(s.res.headers.get('location'));
    // A reset on a kept-alive connection is retried once by libcurl on a
    // fresh one (the handler pool's threads each keep theirs): both reset.
    await setFault(idp, key, { ...fault, count: fault.mode === 'reset' ? 2 : 1 });
    await unchanged(env, async () => {
      const t0 = Date.now();
      const r = await browserGet(cb, s.jar);
      assertErrorRedirect(r, { redirectUri: client.redirectUri, error, state: 'fault-state', iss: env.url });
      assert.ok(Date.now() - t0 < 8000, 'bounded by the upstream timeout');
    }).catch((e) => { e.message = `${key} ${JSON.stringify(fault)}: ${e.message}`; throw e; });
    await setFault(idp, key, null);
  }
  // Still working afterwards.
  const f = await runFlow({ broker: env.url, clientId: client.clientId, redirectUri: client.redirectUri, resource: `${env.url}/mcp` });
  assert.ok(f.code);
  assert.ok(!env.broker.logText().includes('gho_'), 'no upstream token in the log');
});

test('remembered consent skips the page only for the same client, redirect and scope', async () => {
  const jar = new CookieJar();
  const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp`, jar });
  assert.equal(s.res.status, 302);
  const again = await browserGet(request().url, jar);
  assert.equal(again.status, 302, 'the same request in the same browser goes straight upstream');
  assert.ok(again.headers.get('location').startsWith(idp.base));
  const wider = await browserGet(request({ scope: 'repo:read repo:write' }).url, jar);
  assert.equal(wider.status, 200, 'a wider scope asks again');
  const other = await publicClient(env.url, { name: 'Other' });
  const otherPage = await browserGet(request({ client_id: other.clientId }).url, jar);
  assert.equal(otherPage.status, 200, 'another client asks again');
  const fresh = await browserGet(request().url, new CookieJar());
  assert.equal(fresh.status, 200, 'another browser asks again');
  await resetIdp(idp);
  await assertReady(env.url);
});

test('an unknown-client page never repeats the reason of an earlier lookup', async () => {
  // One worker thread, so both requests run where the first one left its reason.
  const one = await startOauthBroker(idp, { patch: (cfg) => { cfg.http.threads = 1; } });
  try {
    const url = (clientId) => `${one.url}/authorize?response_type=code&client_id=${encodeURIComponent(clientId)}&redirect_uri=${encodeURIComponent(LOOPBACK_REDIRECT)}`;
    const cimd = await browserGet(url('https://client.example.com/cimd.json'), new CookieJar());
    assertErrorPage(cimd, 400);
    assert.match(cimd.text, /URL client identifiers/);
    // The token endpoint looks the same client up and never reads the reason.
    const t = await http(`${one.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: 'x', code_verifier: 'v'.repeat(43), redirect_uri: LOOPBACK_REDIRECT,
        client_id: 'https://client.example.com/cimd.json' }).toString() });
    assert.equal(t.status, 401);
    const unknown = await browserGet(url('no-such-client'), new CookieJar());
    assertErrorPage(unknown, 400);
    assert.doesNotMatch(unknown.text, /URL client identifiers/);
    assert.match(unknown.text, /not registered/);
  } finally {
    await one.stop();
  }
});
