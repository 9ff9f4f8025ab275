// The upstream leg against each personality of the fake IdP: GitHub (form or
// JSON token answers, numeric id from /user, PKCE), Sentry (JSON, user in the
// token answer, expiring and refreshable tokens), generic OIDC through
// discovery of <issuer>/.well-known/openid-configuration. Then the storage
// rule: a pg_dump of the database holds no upstream token and no broker
// token, code or secret in plain text.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import nodeHttp from 'node:http';
import {
  startIdp, startOauthBroker, runCleanups, http, psql, unchanged, publicClient, control, setFault, resetIdp, tokensFor, tokenRequest,
  approveUntilUpstream, upstreamLogin, browserGet, assertErrorRedirect, locationParams, assertReady,
  STATIC_CONF, STATIC_CONF_SECRET, TABLES,
} from '../lib/oauth_setup.mjs';

const execFileP = promisify(execFile);
let idp, env, client, stub;
const cleanups = [];
const issued = []; // every broker secret this file saw, for the dump check
const verifiers = [];

/**
 * A GitHub token endpoint that answers form-encoded, as github.com does
 * without Accept: JSON (it forwards to the fake without that header), or,
 * while stub.respond is set, answers that {status, type, body} instead.
 */
function startFormStub(target) {
  const stub = { respond: null };
  const server = nodeHttp.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    if (stub.respond) {
      res.writeHead(stub.respond.status ?? 200, { 'content-type': stub.respond.type ?? 'application/json' });
      res.end(stub.respond.body);
      return;
    }
    const r = await fetch(target, { method: 'POST', headers: { 'content-type': req.headers['content-type'] || '' }, body: Buffer.concat(chunks) });
    const body = await r.text();
    res.writeHead(r.status, { 'content-type': r.headers.get('content-type') || 'text/plain' });
    res.end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    stub,
    url: `http://127.0.0.1:${server.address().port}/login/oauth/access_token`,
    close: () => new Promise((done) => { server.closeAllConnections(); server.close(() => done()); }),
  })));
}

before(async () => {
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  stub = await startFormStub(`${idp.base}/github/login/oauth/access_token`);
  cleanups.push(() => stub.close());
  env = await startOauthBroker(idp, {
    patch: (cfg) => {
      cfg.upstreams.ghform = { ...cfg.upstreams.gh, token_url: stub.url };
      cfg.resources.push({ path: '/ghform-mcp', upstream: 'ghform', downstream: 'http://127.0.0.1:9/x', scopes: { 'repo:read': ['*'] } });
    },
  });
  cleanups.push(() => env.stop());
  client = await publicClient(env.url);
});
after(() => runCleanups(cleanups));

const user = (upstream, subject) => psql(env.db, `SELECT coalesce(login, '') || '|' || coalesce(email, '') || '|' || coalesce(name, '') FROM users WHERE upstream = '${upstream}' AND subject = '${subject}'`);
const grantOf = (accessToken) => psql(env.db, `SELECT g.upstream || '|' || (g.up_refresh IS NOT NULL)::text || '|' || coalesce(round(extract(epoch FROM g.up_expires_at - now()))::text, 'none') || '|' || g.key_id
  FROM grants g JOIN tokens t ON t.grant_id = g.id WHERE t.token_hash = sha256('${accessToken}'::bytea)`);
function keep(t) { issued.push(t.access_token, t.refresh_token, t.flow.code); verifiers.push(t.flow.verifier); return t; }

test('OIDC: discovery failure is an error redirect, then discovery of <issuer>/.well-known/openid-configuration', async () => {
  await setFault(idp, 'oidc.discovery', { mode: 'status', status: 500, count: 1 });
  await unchanged(env, async () => {
    const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/oidc-mcp`, state: 'disc' });
    assertErrorRedirect(s.res, { redirectUri: client.redirectUri, error: 'temporarily_unavailable', state: 'disc', iss: env.url });
  });
  const stats0 = await control(idp, 'stats');
  const t = keep(await tokensFor(env.url, { ...client, path: '/oidc-mcp', login: 'carol' }));
  const last = await control(idp, 'last_request?key=oidc.discovery');
  assert.equal(last.path, '/oidc/.well-known/openid-configuration');
  const stats1 = await control(idp, 'stats');
  assert.ok(stats1['oidc.discovery'] > stats0['oidc.discovery'] - 1);
  assert.equal(stats1['oidc.token'], stats0['oidc.token'] + 1);
  assert.equal(stats1['oidc.userinfo'], stats0['oidc.userinfo'] + 1);
  const authz = await control(idp, 'last_request?key=oidc.authorize');
  assert.equal(authz.query.client_id, 'oidc-client');
  assert.equal(authz.query.code_challenge_method, 'S256');
  assert.equal(authz.query.redirect_uri, `${env.url}/callback`);
  const tok = await control(idp, 'last_request?key=oidc.token');
  assert.equal(tok.body.grant_type, 'authorization_code');
  assert.ok(tok.body_keys.includes('code_verifier'));
  assert.equal(tok.body.redirect_uri, `${env.url}/callback`);
  const users = (await control(idp, 'users')).users;
  const carol = users.find((u) => u.login === 'carol');
  assert.equal(await user('oidc', String(carol.id)), 'carol|carol@example.com|Carol');
  assert.match(await grantOf(t.access_token), /^oidc\|true\|(35\d\d|3600)\|k1$/);
  // RFC 9207: an answer naming another issuer is refused (mix-up defence).
  const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/oidc-mcp`, state: 'mixup' });
  const cb = new URL(await upstreamLogin(s.res.headers.get('location')));
  assert.equal(cb.searchParams.get('iss'), `${idp.base}/oidc`);
  cb.searchParams.set('iss', 'https://evil.example.com');
  await unchanged(env, async () => {
    assertErrorRedirect(await browserGet(cb.toString(), s.jar), { redirectUri: client.redirectUri, error: 'server_error', state: 'mixup', iss: env.url });
  });
  // Cached: a second flow does not fetch the document again.
  keep(await tokensFor(env.url, { ...client, path: '/oidc-mcp', login: 'carol' }));
  assert.equal((await control(idp, 'stats'))['oidc.discovery'], stats1['oidc.discovery']);
});

test('OIDC: tokens issued upstream but never stored (userinfo fails) are revoked upstream at once', async () => {
  const stats0 = await control(idp, 'stats');
  await setFault(idp, 'oidc.userinfo', { mode: 'status', status: 500, count: 1 });
  await unchanged(env, async () => {
    const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/oidc-mcp`, state: 'noid' });
    const cb = await upstreamLogin(s.res.headers.get('location'));
    assertErrorRedirect(await browserGet(cb, s.jar), { redirectUri: client.redirectUri, error: 'temporarily_unavailable', state: 'noid', iss: env.url });
  });
  const stats1 = await control(idp, 'stats');
  assert.equal(stats1['oidc.token'], (stats0['oidc.token'] || 0) + 1, 'the code was exchanged');
  assert.equal(stats1['oidc.revoke'], (stats0['oidc.revoke'] || 0) + 1, 'and the tokens revoked upstream');
  const last = await control(idp, 'last_request?key=oidc.revoke');
  assert.equal(last.body.token_type_hint, 'refresh_token');
  await assertReady(env.url);
});

test('GitHub: JSON and form-encoded token answers, numeric id from /user, PKCE upstream', async () => {
  await control(idp, 'config', { github: { expiring: true } });
  const t = keep(await tokensFor(env.url, { ...client, path: '/mcp', login: 'bob' }));
  const tok = await control(idp, 'last_request?key=github.token');
  assert.equal(tok.body.client_id, 'gh-client');
  assert.equal(tok.body.redirect_uri, `${env.url}/callback`);
  assert.ok(tok.body_keys.includes('code_verifier'), 'PKCE verifier sent upstream');
  const u = await control(idp, 'last_request?key=github.user');
  assert.equal(u.headers.authorization, 'Bearer');
  assert.match(u.headers['user-agent'], /^mcp-broker\//);
  assert.equal(await user('gh', '1002'), 'bob|bob@example.com|Bob');
  assert.match(await grantOf(t.access_token), /^gh\|true\|\d+\|k1$/);

  // The same through a token endpoint that answers application/x-www-form-urlencoded.
  const f = keep(await tokensFor(env.url, { ...client, path: '/ghform-mcp', login: 'alice' }));
  assert.equal(await user('ghform', '1001'), 'alice|alice@example.com|Alice');
  assert.match(await grantOf(f.access_token), /^ghform\|true\|\d+\|k1$/);
  // GitHub's error style (HTTP 200 with error=) through the form path.
  await setFault(idp, 'github.token', { mode: 'error', error: 'bad_verification_code', count: 1 });
  const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/ghform-mcp`, state: 'form-err' });
  const cb = await upstreamLogin(s.res.headers.get('location'));
  await unchanged(env, async () => {
    assertErrorRedirect(await browserGet(cb, s.jar), { redirectUri: client.redirectUri, error: 'server_error', state: 'form-err', iss: env.url });
  });
  await control(idp, 'config', { github: { expiring: false } });
  const plain = keep(await tokensFor(env.url, { ...client, path: '/mcp', login: 'bob' }));
  assert.match(await grantOf(plain.access_token), /^gh\|false\|none\|k1$/, 'non-expiring GitHub token');
});

test('garbage from the upstream token endpoint: an error redirect, nothing written', async () => {
  const cases = [
    { body: '{"access_token":' },
    { body: '[]' },
    { body: '' },
    { body: 'null' },
    { body: '{"access_token":123,"token_type":"bearer"}' },
    { body: '{"access_token":["gho_x"]}' },
    { body: '{"access_token":""}' },
    { body: JSON.stringify({ access_token: `gho_${'x'.repeat(10000)}`, token_type: 'bearer' }) },
    { body: '{"access_token":"gho_a\\u0000b"}' },
    { body: '{"a":'.repeat(5000) },
    { body: 'access_token=gho_a&access_token=gho_b&token_type=bearer', type: 'application/x-www-form-urlencoded' },
    { body: '{"access_token":"gho_abc","access_token":"gho_def"}' },
    { body: '<html>oops</html>', type: 'text/html' },
    { body: '{"access_token":"gho_abc"}', status: 302 },
  ];
  for (const c of cases) {
    const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/ghform-mcp`, state: 'junk' });
    const cb = await upstreamLogin(s.res.headers.get('location'));
    stub.stub.respond = c;
    try {
      await unchanged(env, async () => {
        assertErrorRedirect(await browserGet(cb, s.jar), { redirectUri: client.redirectUri, error: 'temporarily_unavailable', state: 'junk', iss: env.url });
      });
    } catch (e) {
      e.message = `${c.body.slice(0, 60)}: ${e.message}`;
      throw e;
    } finally {
      stub.stub.respond = null;
    }
  }
  await assertReady(env.url);
});

test('Sentry: JSON answer with the user inside, no /api/0/ call, refreshable upstream grant', async () => {
  const stats0 = await control(idp, 'stats');
  const t = keep(await tokensFor(env.url, { ...client, path: '/sentry-mcp', login: 'dave', scope: 'issues:read issues:write' }));
  const stats1 = await control(idp, 'stats');
  assert.equal(stats1['sentry.token'], stats0['sentry.token'] + 1);
  assert.equal(stats1['sentry.user'], stats0['sentry.user'], 'identity comes from the token answer');
  const authz = await control(idp, 'last_request?key=sentry.authorize');
  assert.equal(authz.query.client_id, 'sentry-client');
  assert.equal(authz.query.response_type, 'code');
  assert.equal(authz.query.scope, 'org:read project:read');
  const dave = (await control(idp, 'users')).users.find((u) => u.login === 'dave');
  // Sentry's token answer carries id, name and email (no username).
  assert.match(await user('sentry', String(dave.id)), /^(dave)?\|dave@example\.com\|Dave$/);
  assert.match(await grantOf(t.access_token), /^sentry\|true\|(35\d\d|3600)\|k1$/);
  assert.equal(t.scope, 'issues:read issues:write');
  // Same user again: one user row, two grants.
  keep(await tokensFor(env.url, { ...client, path: '/sentry-mcp', login: 'dave' }));
  assert.equal(await psql(env.db, `SELECT count(*) FROM users WHERE upstream = 'sentry' AND subject = '${dave.id}'`), '1');
  assert.equal(await psql(env.db, `SELECT count(*) FROM grants g JOIN users u ON u.id = g.user_id WHERE u.upstream = 'sentry' AND u.subject = '${dave.id}'`), '2');
  // Sentry's RFC 6749 error answers.
  for (const [fault, error] of [[{ mode: 'invalid_grant' }, 'server_error'], [{ mode: 'error', error: 'invalid_client', status: 401 }, 'server_error'],
    [{ mode: 'status', status: 429 }, 'temporarily_unavailable']]) {
    const s = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/sentry-mcp`, state: 'se' });
    const cb = await upstreamLogin(s.res.headers.get('location'));
    await setFault(idp, 'sentry.token', { ...fault, count: 1 });
    await unchanged(env, async () => {
      assertErrorRedirect(await browserGet(cb, s.jar), { redirectUri: client.redirectUri, error, state: 'se', iss: env.url });
    }).catch((e) => { e.message = `${JSON.stringify(fault)}: ${e.message}`; throw e; });
  }
  await assertReady(env.url);
});

test('a pg_dump holds no upstream token and no broker token, code or secret in plain text', async () => {
  // Rotate refresh tokens and leave a pending authorization and a confidential registration behind.
  const r = await tokenRequest(env.url, { grant_type: 'refresh_token', refresh_token: issued[1], client_id: client.clientId });
  assert.equal(r.status, 200, r.text);
  issued.push(r.json.access_token, r.json.refresh_token);
  const conf = await http(`${env.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: ['https://dump.example.com/cb'] }) });
  issued.push(conf.json.client_secret);
  const pending = await approveUntilUpstream(env.url, { ...client, resource: `${env.url}/mcp` });
  const upstreamState = locationParams(pending.res.headers.get('location')).state;
  const ct = await tokensFor(env.url, { clientId: STATIC_CONF.client_id, redirectUri: STATIC_CONF.redirect_uris[0], secret: STATIC_CONF_SECRET });
  keep(ct);

  const { stdout: dump } = await execFileP('pg_dump', ['--no-owner', '-d', env.db], { maxBuffer: 256 * 1024 * 1024 });
  assert.ok(dump.includes('COPY public.grants'), 'the dump has the grants');
  assert.ok(Number(await psql(env.db, 'SELECT count(*) FROM grants')) >= 6);
  for (const prefix of ['gho_', 'ghr_', 'sntr_', 'sntrr_', 'oidc_at_', 'oidc_rt_', 'ghcode_', 'sntrcode_', 'oidc_code_',
    'mcpb_at_', 'mcpb_rt_', 'mcpb_ac_', 'mcpb_cs_']) {
    assert.ok(!dump.includes(prefix), `${prefix} in the dump`);
  }
  const upstreamTokens = [...idp.state.tokens.keys()];
  assert.ok(upstreamTokens.some((k) => k.startsWith('ghr_')) && upstreamTokens.some((k) => k.startsWith('sntrr_'))
    && upstreamTokens.some((k) => k.startsWith('oidc_rt_')), 'upstream refresh tokens were issued');
  for (const s of [...upstreamTokens, ...issued, ...verifiers, upstreamState, STATIC_CONF_SECRET]) {
    assert.ok(s && !dump.includes(s), `a secret (${String(s).slice(0, 6)}…) is in the dump`);
    // bytea is dumped as hex: look for the hex of the secret as well.
    assert.ok(!dump.includes(Buffer.from(s).toString('hex')), 'a secret is in the dump as hex');
  }
  const log = env.broker.logText();
  for (const s of [...upstreamTokens, ...issued, ...verifiers, upstreamState]) assert.ok(!log.includes(s), 'a secret in the broker log');
  for (const prefix of ['gho_', 'ghr_', 'sntr_', 'oidc_at_', 'oidc_rt_', 'ghcode_', 'sntrcode_', 'oidc_code_', 'mcpb_at_', 'mcpb_rt_', 'mcpb_ac_', 'mcpb_cs_']) {
    assert.ok(!log.includes(prefix), `${prefix} in the broker log`);
  }
  await resetIdp(idp);
});
