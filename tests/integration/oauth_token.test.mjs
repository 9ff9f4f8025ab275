// The token endpoint: authorization_code with PKCE, client authentication
// per method, redirect_uri and resource binding, single-use codes (a replay
// revokes what the first exchange issued), refresh rotation with reuse
// detection and the grace window, and every malformed request. Refused
// requests write nothing and the node stays ready.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  startIdp, startOauthBroker, runCleanups, http, psql, unchanged, counts, assertReady, assertOAuthError, publicClient, register,
  runFlow, exchangeCode, tokenRequest, tokensFor, callResource, authorizeUrl, pkce, CookieJar, browserGet, parseConsent,
  browserPost, upstreamLogin, STATIC_PUBLIC, STATIC_PLUS, STATIC_PLUS_SECRET, STATIC_CONF, STATIC_CONF_SECRET, LOOPBACK_REDIRECT,
} from '../lib/oauth_setup.mjs';

let idp, env, client;
const cleanups = [];
before(async () => {
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  env = await startOauthBroker(idp);
  cleanups.push(() => env.stop());
  client = await publicClient(env.url);
});
after(() => runCleanups(cleanups));

const hashHex = (s) => createHash('sha256').update(s).digest('hex');
const flow = (over = {}) => runFlow({ broker: env.url, clientId: client.clientId, redirectUri: client.redirectUri,
  resource: `${env.url}/mcp`, ...over });
const codeFields = (f, over = {}) => ({ grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
  redirect_uri: client.redirectUri, client_id: client.clientId, ...over });
const refresh = (rt, over = {}, opts) => tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: rt, client_id: client.clientId, ...over }, opts);
/** A resource answering anything but 401 accepted the token (the downstream here is unreachable: 502). */
async function accepted(token, path = '/mcp') {
  const r = await callResource(env.url, path, token);
  return r.status !== 401;
}

test('code exchange: opaque prefixed tokens, no-store, only hashes stored, audience-bound', async () => {
  const f = await flow({ scope: 'repo:read repo:write' });
  const t = await tokenRequest(env.url, codeFields(f));
  assert.equal(t.status, 200, t.text);
  assert.match(t.headers.get('cache-control'), /no-store/);
  assert.match(t.headers.get('pragma') || '', /no-cache/);
  assert.match(t.json.access_token, /^mcpb_at_[A-Za-z0-9_-]{43}$/);
  assert.match(t.json.refresh_token, /^mcpb_rt_[A-Za-z0-9_-]{43}$/);
  assert.equal(t.json.token_type, 'Bearer');
  assert.equal(t.json.expires_in, 300);
  assert.equal(t.json.scope, 'repo:read repo:write');
  for (const tok of [t.json.access_token, t.json.refresh_token]) {
    assert.equal(await psql(env.db, `SELECT count(*) FROM tokens WHERE token_hash = decode('${hashHex(tok)}', 'hex')`), '1');
  }
  const all = await psql(env.db, "SELECT string_agg(row_to_json(t)::text, ' ') FROM tokens t");
  assert.ok(!all.includes(t.json.access_token) && !all.includes(t.json.refresh_token));
  assert.ok(await accepted(t.json.access_token, '/mcp'));
  assert.ok(!(await accepted(t.json.access_token, '/sentry-mcp')), 'a /mcp token is refused on /sentry-mcp');
  const wrong = await callResource(env.url, '/sentry-mcp', t.json.access_token);
  assert.match(wrong.headers.get('www-authenticate'), /error="invalid_token"/);
  assert.ok(!(await accepted(t.json.refresh_token, '/mcp')), 'a refresh token is not an access token');
  const log = env.broker.logText();
  for (const s of [t.json.access_token, t.json.refresh_token, f.code, f.verifier]) assert.ok(!log.includes(s), 'secret in log');
});

test('client authentication: Basic, post, none, and every mix-up', async () => {
  const conf = { clientId: STATIC_CONF.client_id, redirectUri: STATIC_CONF.redirect_uris[0] };
  const f = await runFlow({ broker: env.url, ...conf, resource: `${env.url}/mcp` });
  assert.ok(f.code, 'flow for the confidential client');
  const base = { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier, redirect_uri: conf.redirectUri };
  const bad = [
    ['no credentials', { ...base, client_id: conf.clientId }, undefined, 401, 'invalid_client'],
    ['wrong secret (post)', { ...base, client_id: conf.clientId, client_secret: 'nope-nope-nope-nope' }, undefined, 401, 'invalid_client'],
    ['wrong secret (Basic)', base, [conf.clientId, 'nope-nope-nope-nope'], 401, 'invalid_client'],
    ['empty secret (Basic)', base, [conf.clientId, ''], 401, 'invalid_client'],
    ['unknown client (Basic)', base, ['no-such-client', STATIC_CONF_SECRET], 401, 'invalid_client'],
    ['Basic and post', { ...base, client_secret: STATIC_CONF_SECRET }, [conf.clientId, STATIC_CONF_SECRET], 400, 'invalid_request'],
    ['Basic id differs from client_id', { ...base, client_id: client.clientId }, [conf.clientId, STATIC_CONF_SECRET], 400, 'invalid_request'],
    ['another client (none)', { ...base, client_id: client.clientId }, undefined, 400, 'invalid_grant'],
    ['unknown client (none)', { ...base, client_id: 'mcpb_c_unknown' }, undefined, 401, 'invalid_client'],
    ['no client at all', base, undefined, 401, 'invalid_client'],
  ];
  for (const [why, fields, basic, status, error] of bad) {
    await unchanged(env, async () => {
      const r = await tokenRequest(env.url, fields, { basic });
      assertOAuthError(r, status, error);
      if (status === 401 && basic) assert.match(r.headers.get('www-authenticate') || '', /^Basic/);
    }).catch((e) => { e.message = `${why}: ${e.message}`; throw e; });
  }
  for (const [why, headers] of [['Bearer instead of Basic', { authorization: `Bearer ${STATIC_CONF_SECRET}` }],
    ['Basic garbage', { authorization: 'Basic !!!notbase64' }], ['Basic without colon', { authorization: `Basic ${Buffer.from('static-conf').toString('base64')}` }]]) {
    await unchanged(env, async () => assertOAuthError(await tokenRequest(env.url, base, { headers }), 401, 'invalid_client'))
      .catch((e) => { e.message = `${why}: ${e.message}`; throw e; });
  }
  const ok = await tokenRequest(env.url, base, { basic: [conf.clientId, STATIC_CONF_SECRET] });
  assert.equal(ok.status, 200, ok.text);
  // client_secret_post, and refresh with the confidential client's credentials.
  const r1 = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: ok.json.refresh_token });
  assertOAuthError(r1, 401, 'invalid_client');
  const r2 = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: ok.json.refresh_token, client_id: conf.clientId, client_secret: STATIC_CONF_SECRET });
  assert.equal(r2.status, 200, r2.text);

  // A dynamically registered confidential client (client_secret_post), and a public client presenting a secret.
  const reg = await register(env.url, { redirect_uris: ['https://dyn.example.com/cb'], token_endpoint_auth_method: 'client_secret_post' });
  assert.equal(reg.status, 201);
  const f2 = await runFlow({ broker: env.url, clientId: reg.json.client_id, redirectUri: 'https://dyn.example.com/cb', resource: `${env.url}/mcp` });
  const b2 = { grant_type: 'authorization_code', code: f2.code, code_verifier: f2.verifier, redirect_uri: 'https://dyn.example.com/cb', client_id: reg.json.client_id };
  assertOAuthError(await tokenRequest(env.url, b2), 401, 'invalid_client');
  assertOAuthError(await tokenRequest(env.url, { ...b2, client_secret: `${reg.json.client_secret}x` }), 401, 'invalid_client');
  const ok2 = await tokenRequest(env.url, { ...b2, client_secret: reg.json.client_secret });
  assert.equal(ok2.status, 200, ok2.text);
  const f3 = await flow();
  await unchanged(env, async () => assertOAuthError(await tokenRequest(env.url, codeFields(f3, { client_secret: 'a-secret-for-a-public-client' })), 401, 'invalid_client'));
  assert.equal((await tokenRequest(env.url, codeFields(f3))).status, 200);
});

test('Basic credentials are accepted form-encoded (RFC 6749 2.3.1) and as sent by clients that do not encode', async () => {
  const id = STATIC_PLUS.client_id;
  const redirectUri = STATIC_PLUS.redirect_uris[0];
  const raw = `Basic ${Buffer.from(`${id}:${STATIC_PLUS_SECRET}`).toString('base64')}`;
  const ways = [
    ['form-encoded Basic', { basic: [id, STATIC_PLUS_SECRET] }, {}],
    ['raw Basic (MCP SDK style)', { headers: { authorization: raw } }, {}],
    ['client_secret_post', {}, { client_id: id, client_secret: STATIC_PLUS_SECRET }],
  ];
  for (const [why, opts, extra] of ways) {
    const f = await runFlow({ broker: env.url, clientId: id, redirectUri, resource: `${env.url}/mcp` });
    assert.ok(f.code, why);
    const fields = { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier, redirect_uri: redirectUri, ...extra };
    const r = await tokenRequest(env.url, fields, opts);
    assert.equal(r.status, 200, `${why}: ${r.text}`);
  }
  // A near miss is still refused either way.
  const f = await runFlow({ broker: env.url, clientId: id, redirectUri, resource: `${env.url}/mcp` });
  const fields = { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier, redirect_uri: redirectUri };
  for (const secret of [STATIC_PLUS_SECRET.replace('+', ' '), STATIC_PLUS_SECRET.replace('%2B', '+'), STATIC_PLUS_SECRET.slice(0, -1)]) {
    await unchanged(env, async () => {
      assertOAuthError(await tokenRequest(env.url, fields, { basic: [id, secret] }), 401, 'invalid_client');
      assertOAuthError(await tokenRequest(env.url, fields, { headers: { authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` } }), 401, 'invalid_client');
    });
  }
});

test('PKCE: missing, malformed, plain or wrong verifiers are refused', async () => {
  const f = await flow();
  const cases = [
    [{ code_verifier: undefined }, 'invalid_request'],
    [{ code_verifier: '' }, 'invalid_grant'],
    [{ code_verifier: 'short' }, 'invalid_grant'],
    [{ code_verifier: 'a'.repeat(129) }, 'invalid_grant'],
    [{ code_verifier: `${'a'.repeat(50)} ` }, 'invalid_grant'],
    [{ code_verifier: pkce().verifier }, 'invalid_grant'],
    [{ code_verifier: f.verifier.slice(0, -1) + (f.verifier.endsWith('A') ? 'B' : 'A') }, 'invalid_grant'],
  ];
  // "plain": the challenge itself presented as the verifier.
  const challenge = createHash('sha256').update(f.verifier).digest('base64url');
  cases.push([{ code_verifier: challenge }, 'invalid_grant']);
  for (const [over, error] of cases) {
    const fields = codeFields(f, over);
    for (const [k, v] of Object.entries(fields)) if (v === undefined) delete fields[k];
    await unchanged(env, async () => assertOAuthError(await tokenRequest(env.url, fields), 400, error))
      .catch((e) => { e.message = `${JSON.stringify(over).slice(0, 80)}: ${e.message}`; throw e; });
  }
  const ok = await tokenRequest(env.url, codeFields(f));
  assert.equal(ok.status, 200, ok.text);
});

test('redirect_uri and resource must match the authorization request', async () => {
  const f = await flow();
  for (const [over, status, error] of [
    [{ redirect_uri: 'http://127.0.0.1:33418/other' }, 400, 'invalid_grant'],
    [{ redirect_uri: 'http://127.0.0.1:33419/callback' }, 400, 'invalid_grant'],
    [{ redirect_uri: `${LOOPBACK_REDIRECT}/` }, 400, 'invalid_grant'],
    [{ resource: `${env.url}/sentry-mcp` }, 400, 'invalid_target'],
    [{ resource: `${env.url}/nope` }, 400, 'invalid_target'],
    [{ resource: 'https://evil.example.com/mcp' }, 400, 'invalid_target'],
  ]) {
    const fields = codeFields(f, over);
    for (const [k, v] of Object.entries(fields)) if (v === undefined) delete fields[k];
    await unchanged(env, async () => assertOAuthError(await tokenRequest(env.url, fields), status, error))
      .catch((e) => { e.message = `${JSON.stringify(over)}: ${e.message}`; throw e; });
  }
  // The canonical forms of the bound resource are fine.
  const ok = await tokenRequest(env.url, codeFields(f, { resource: `${env.url}/mcp/` }));
  assert.equal(ok.status, 200, ok.text);
});

test('redirect_uri left out of the authorization request may be left out of the token request', async () => {
  const only = await publicClient(env.url, { redirectUri: 'https://only.example.com/cb' });
  const p = pkce();
  const jar = new CookieJar();
  const page = await browserGet(authorizeUrl(env.url, { response_type: 'code', client_id: only.clientId, code_challenge: p.challenge,
    code_challenge_method: 'S256', resource: `${env.url}/mcp`, state: 's' }), jar);
  assert.equal(page.status, 200, page.text.slice(0, 200));
  const consent = parseConsent(page.text);
  const up = await browserPost(consent.action, jar, { ...consent.fields, decision: 'approve' });
  const cb = await browserGet(await upstreamLogin(up.headers.get('location')), jar);
  assert.equal(cb.status, 302);
  assert.ok(cb.headers.get('location').startsWith('https://only.example.com/cb?'));
  const code = new URL(cb.headers.get('location')).searchParams.get('code');
  const t = await tokenRequest(env.url, { grant_type: 'authorization_code', code, code_verifier: p.verifier, client_id: only.clientId });
  assert.equal(t.status, 200, t.text);
  // Where the code could have gone to another URI, redirect_uri is required: two registered URIs,
  // or a loopback URI whose port differs from the registered one.
  for (const [clientId, redirectUri] of [[STATIC_PUBLIC.client_id, 'https://app.example.com/cb'], [STATIC_PUBLIC.client_id, 'http://127.0.0.1:5555/cb']]) {
    const f = await runFlow({ broker: env.url, clientId, redirectUri, resource: `${env.url}/mcp` });
    assert.ok(f.code);
    await unchanged(env, async () => assertOAuthError(await tokenRequest(env.url, { grant_type: 'authorization_code', code: f.code,
      code_verifier: f.verifier, client_id: clientId }), 400, 'invalid_request'));
    assert.equal((await exchangeCode(env.url, { clientId, code: f.code, verifier: f.verifier, redirectUri })).status, 200);
  }
  const single = await publicClient(env.url, { redirectUri: 'http://127.0.0.1/single' });
  const f = await runFlow({ broker: env.url, clientId: single.clientId, redirectUri: 'http://127.0.0.1:6000/single', resource: `${env.url}/mcp` });
  await unchanged(env, async () => assertOAuthError(await tokenRequest(env.url, { grant_type: 'authorization_code', code: f.code,
    code_verifier: f.verifier, client_id: single.clientId }), 400, 'invalid_request'));
});

test('a replayed code is refused and revokes what the first exchange issued', async () => {
  const f = await flow();
  const first = await tokenRequest(env.url, codeFields(f));
  assert.equal(first.status, 200);
  assert.ok(await accepted(first.json.access_token));
  const before = await counts(env.db);
  const replay = await tokenRequest(env.url, codeFields(f));
  assertOAuthError(replay, 400, 'invalid_grant');
  assert.deepEqual(await counts(env.db), before, 'no new rows');
  assert.ok(!(await accepted(first.json.access_token)), 'the first access token is dead');
  assertOAuthError(await refresh(first.json.refresh_token), 400, 'invalid_grant');
  const grant = await psql(env.db, `SELECT g.status || '|' || g.revoked_reason FROM grants g JOIN tokens t ON t.grant_id = g.id
    WHERE t.token_hash = decode('${hashHex(first.json.access_token)}', 'hex')`);
  assert.equal(grant, 'revoked|code_replay');
  // Replayed by another client: refused as well.
  const other = await publicClient(env.url);
  assertOAuthError(await tokenRequest(env.url, codeFields(f, { client_id: other.clientId })), 400, 'invalid_grant');
  await assertReady(env.url);
});

test('a code redeemed by another client, an expired, unknown or malformed code: invalid_grant', async () => {
  const f = await flow();
  const other = await publicClient(env.url);
  await unchanged(env, async () => {
    assertOAuthError(await tokenRequest(env.url, codeFields(f, { client_id: other.clientId })), 400, 'invalid_grant');
    assertOAuthError(await tokenRequest(env.url, codeFields(f, { client_id: STATIC_CONF.client_id, client_secret: STATIC_CONF_SECRET })), 400, 'invalid_grant');
  });
  await psql(env.db, `UPDATE auth_codes SET expires_at = now() - interval '1 second' WHERE code_hash = decode('${hashHex(f.code)}', 'hex')`);
  await unchanged(env, async () => {
    assertOAuthError(await tokenRequest(env.url, codeFields(f)), 400, 'invalid_grant');
    assertOAuthError(await tokenRequest(env.url, codeFields(f, { code: 'mcpb_ac_' + 'A'.repeat(43) })), 400, 'invalid_grant');
    assertOAuthError(await tokenRequest(env.url, codeFields(f, { code: 'x' })), 400, 'invalid_grant');
    assertOAuthError(await tokenRequest(env.url, codeFields(f, { code: '' })), 400, 'invalid_request');
    assertOAuthError(await tokenRequest(env.url, codeFields(f, { code: 'c'.repeat(5000) })), 400, 'invalid_request');
  });
  // The grant behind a fresh code was revoked meanwhile (operator, user): no tokens.
  const g = await flow();
  await psql(env.db, `UPDATE grants SET status = 'revoked', revoked_at = now() WHERE id = (SELECT grant_id FROM auth_codes
    WHERE code_hash = decode('${hashHex(g.code)}', 'hex'))`);
  await unchanged(env, async () => assertOAuthError(await tokenRequest(env.url, codeFields(g)), 400, 'invalid_grant'));
});

test('malformed token requests: the right RFC 6749 error, nothing written', async () => {
  const f = await flow();
  const body = new URLSearchParams(codeFields(f)).toString();
  const post = (b, headers = { 'content-type': 'application/x-www-form-urlencoded' }) =>
    http(`${env.url}/token`, { method: 'POST', headers, body: b });
  await unchanged(env, async () => {
    assertOAuthError(await post(`${body}&code=${encodeURIComponent(f.code)}`), 400, 'invalid_request');
    assertOAuthError(await post(`${body}&client_id=x`), 400, 'invalid_request');
    assertOAuthError(await post(`${body}&grant_type=refresh_token`), 400, 'invalid_request');
    assertOAuthError(await post(body.replace('grant_type=authorization_code', 'grant_type=client_credentials')), 400, 'unauthorized_client');
    assertOAuthError(await post(body.replace('grant_type=authorization_code', 'grant_type=password')), 400, 'unsupported_grant_type');
    assertOAuthError(await post(body.replace('grant_type=authorization_code&', '')), 400, 'invalid_request');
    assertOAuthError(await post(`${body}&bad=%C3%28`), 400, 'invalid_request');
    assertOAuthError(await post(JSON.stringify(codeFields(f)), { 'content-type': 'application/json' }), 400, 'invalid_request');
    assertOAuthError(await post(body, {}), 400, 'invalid_request');
    assertOAuthError(await post(`${body}&x=${'y'.repeat(4200)}`), 400, 'invalid_request');
    const many = Array.from({ length: 40 }, (_, i) => `f${i}=1`).join('&');
    assertOAuthError(await post(`${body}&${many}`), 400, 'invalid_request');
    const big = await post(`${body}&pad=${'p'.repeat(20000)}`);
    assert.equal(big.status, 413);
    const stream = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode(body)); c.close(); } });
    // A chunked upload (no Content-Length) is refused whatever its size.
    const chunked = await http(`${env.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: stream, duplex: 'half' });
    assert.equal(chunked.status, 411);
    const get = await http(`${env.url}/token?${body}`);
    assert.equal(get.status, 405);
  });
  // The code survived all of that.
  const ok = await post(body);
  assert.equal(ok.status, 200, ok.text);
});

test('refresh: rotation, narrowing, grace-window retry, reuse detection', async () => {
  const t0 = await tokensFor(env.url, { ...client, scope: 'repo:read repo:write' });
  const r1 = await refresh(t0.refresh_token);
  assert.equal(r1.status, 200, r1.text);
  assert.match(r1.headers.get('cache-control'), /no-store/);
  assert.match(r1.json.refresh_token, /^mcpb_rt_/);
  assert.notEqual(r1.json.refresh_token, t0.refresh_token);
  assert.notEqual(r1.json.access_token, t0.access_token);
  assert.equal(r1.json.scope, 'repo:read repo:write');
  assert.ok(await accepted(r1.json.access_token));
  // What one rotation wrote (one statement): the new pair on the same grant
  // with the right kinds, scopes and lifetimes, the presented token marked
  // used with a sealed successor, and exactly one token.refreshed record.
  const tok = (t) => `decode('${hashHex(t)}', 'hex')`;
  const grantOf = `(SELECT grant_id FROM tokens WHERE token_hash = ${tok(t0.refresh_token)})`;
  assert.equal(await psql(env.db, `SELECT string_agg(kind || ':' || array_to_string(scopes, ',') || ':' || (grant_id = ${grantOf}) || ':' ||
    (expires_at > now() + interval '1 minute'), ' ' ORDER BY kind) FROM tokens WHERE token_hash IN (${tok(r1.json.access_token)}, ${tok(r1.json.refresh_token)})`),
  'access:repo:read,repo:write:true:true refresh:repo:read,repo:write:true:true');
  assert.equal(await psql(env.db, `SELECT (used_at IS NOT NULL) || ':' || (length(successor) > 0) FROM tokens WHERE token_hash = ${tok(t0.refresh_token)}`), 'true:true');
  assert.equal(await psql(env.db, `SELECT count(*) || ':' || min(detail->>'scope') || ':' || min(actor) FROM audit_events
    WHERE event = 'token.refreshed' AND grant_id = ${grantOf}`), `1:repo:read repo:write:client`);
  // Inside the grace window the rotated token gets the same successor pair, also concurrently.
  const [g1, g2] = await Promise.all([refresh(t0.refresh_token), refresh(t0.refresh_token)]);
  for (const g of [g1, g2]) {
    assert.equal(g.status, 200, g.text);
    assert.equal(g.json.access_token, r1.json.access_token);
    assert.equal(g.json.refresh_token, r1.json.refresh_token);
  }
  // Narrowing is allowed, widening is not.
  const before = await counts(env.db);
  assertOAuthError(await refresh(r1.json.refresh_token, { scope: 'repo:read repo:admin' }), 400, 'invalid_scope');
  assertOAuthError(await refresh(r1.json.refresh_token, { client_id: STATIC_CONF.client_id, client_secret: STATIC_CONF_SECRET }), 400, 'invalid_grant');
  assertOAuthError(await refresh('mcpb_rt_unknown'), 400, 'invalid_grant');
  assertOAuthError(await refresh(t0.access_token), 400, 'invalid_grant');
  assertOAuthError(await refresh(''), 400, 'invalid_request');
  assert.deepEqual(await counts(env.db), before);
  const r2 = await refresh(r1.json.refresh_token, { scope: 'repo:read' });
  assert.equal(r2.status, 200, r2.text);
  assert.equal(r2.json.scope, 'repo:read');
  // Past the grace window a rotated token is a stolen one: the whole grant dies.
  await psql(env.db, `UPDATE tokens SET used_at = now() - interval '60 seconds' WHERE token_hash = decode('${hashHex(r1.json.refresh_token)}', 'hex')`);
  assertOAuthError(await refresh(r1.json.refresh_token), 400, 'invalid_grant');
  assert.ok(!(await accepted(r2.json.access_token)), 'the grant is revoked');
  assertOAuthError(await refresh(r2.json.refresh_token), 400, 'invalid_grant');
  const reason = await psql(env.db, `SELECT g.revoked_reason FROM grants g JOIN tokens t ON t.grant_id = g.id
    WHERE t.token_hash = decode('${hashHex(r2.json.refresh_token)}', 'hex')`);
  assert.equal(reason, 'refresh_reuse');
  // An expired refresh token.
  const t3 = await tokensFor(env.url, client);
  await psql(env.db, `UPDATE tokens SET expires_at = now() - interval '1 second' WHERE token_hash = decode('${hashHex(t3.refresh_token)}', 'hex')`);
  await unchanged(env, async () => assertOAuthError(await refresh(t3.refresh_token), 400, 'invalid_grant'));
  // The successor pair is stored encrypted only.
  const dump = await psql(env.db, "SELECT string_agg(row_to_json(t)::text, ' ') FROM tokens t");
  for (const s of [r1.json.access_token, r1.json.refresh_token, r2.json.refresh_token]) assert.ok(!dump.includes(s));
});

test('refresh_grace 0: any reuse of a rotated refresh token revokes the grant', async () => {
  const strict = await startOauthBroker(idp, { patch: (cfg) => { cfg.tokens.refresh_grace = 0; } });
  try {
    const c = await publicClient(strict.url);
    const t0 = await tokensFor(strict.url, c);
    const rt = (tok, id = c.clientId) => tokenRequest(strict.url, { grant_type: 'refresh_token', refresh_token: tok, client_id: id });
    const r1 = await rt(t0.refresh_token);
    assert.equal(r1.status, 200);
    const again = await rt(t0.refresh_token);
    assertOAuthError(again, 400, 'invalid_grant');
    assertOAuthError(await rt(r1.json.refresh_token), 400, 'invalid_grant');
    const r = await callResource(strict.url, '/mcp', r1.json.access_token);
    assert.equal(r.status, 401);
  } finally {
    await strict.stop();
  }
});

test('refresh: resource must be the grant\'s, an empty scope keeps the granted scopes', async () => {
  const t0 = await tokensFor(env.url, { ...client, scope: 'repo:read repo:write' });
  for (const resource of [`${env.url}/sentry-mcp`, `${env.url}/nope`, 'https://evil.example.com/mcp']) {
    await unchanged(env, async () => assertOAuthError(await refresh(t0.refresh_token, { resource }), 400, 'invalid_target'))
      .catch((e) => { e.message = `${resource}: ${e.message}`; throw e; });
  }
  const r1 = await refresh(t0.refresh_token, { resource: `${env.url}/mcp/` });
  assert.equal(r1.status, 200, r1.text);
  const r2 = await refresh(r1.json.refresh_token, { scope: '' });
  assert.equal(r2.status, 200, r2.text);
  assert.equal(r2.json.scope, 'repo:read repo:write');
});

test('two concurrent exchanges of one code: one wins, and the replay revokes it', async () => {
  const f = await flow();
  const [a, b] = await Promise.all([tokenRequest(env.url, codeFields(f)), tokenRequest(env.url, codeFields(f))]);
  const ok = [a, b].filter((r) => r.status === 200);
  const refused = [a, b].filter((r) => r.status !== 200);
  assert.equal(ok.length, 1, `${a.status} ${b.status}`);
  assertOAuthError(refused[0], 400, 'invalid_grant');
  assert.ok(!(await accepted(ok[0].json.access_token)), 'the winner\'s token is revoked by the replay');
});

test('browser clients may read token and registration answers cross-origin', async () => {
  const origin = { origin: 'http://localhost:6274' };
  const f = await flow();
  const ok = await tokenRequest(env.url, codeFields(f), { headers: origin });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('access-control-allow-origin'), '*');
  const err = await tokenRequest(env.url, { grant_type: 'password' }, { headers: origin });
  assert.equal(err.headers.get('access-control-allow-origin'), '*');
  const reg = await register(env.url, { redirect_uris: [LOOPBACK_REDIRECT], token_endpoint_auth_method: 'none' }, { headers: origin });
  assert.equal(reg.status, 201);
  assert.equal(reg.headers.get('access-control-allow-origin'), '*');
  for (const path of ['/token', '/register']) {
    const pre = await http(`${env.url}${path}`, { method: 'OPTIONS', headers: { ...origin, 'access-control-request-method': 'POST' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), '*');
  }
});

test('a client may use only the grant types it registered: unauthorized_client', async () => {
  const reg = await register(env.url, { redirect_uris: [LOOPBACK_REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
  assert.equal(reg.status, 201, reg.text);
  const t = await tokensFor(env.url, { clientId: reg.json.client_id });
  await unchanged(env, async () => {
    const r = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token, client_id: reg.json.client_id });
    assertOAuthError(r, 400, 'unauthorized_client');
  });
  const onlyRefresh = await register(env.url, { redirect_uris: [LOOPBACK_REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['refresh_token'] });
  assert.equal(onlyRefresh.status, 201, onlyRefresh.text);
  const f = await runFlow({ broker: env.url, clientId: onlyRefresh.json.client_id, redirectUri: LOOPBACK_REDIRECT, resource: `${env.url}/mcp` });
  if (f.code) {
    await unchanged(env, async () => assertOAuthError(await exchangeCode(env.url, { clientId: onlyRefresh.json.client_id, code: f.code,
      verifier: f.verifier, redirectUri: LOOPBACK_REDIRECT }), 400, 'unauthorized_client'));
  } else {
    // Refusing it already at the authorization endpoint is fine too.
    assert.equal(new URL(f.steps.authorize.headers.get('location')).searchParams.get('error'), 'unauthorized_client');
  }
});
