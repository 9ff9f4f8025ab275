// Machine clients (SEP-1046, RFC 6749 section 4.4): a pre-registered
// confidential client gets an access token with grant_type=client_credentials;
// the broker obtains the upstream credential by the upstream's own
// client_credentials grant, injects it downstream, renews it the same way,
// and every refusal writes nothing and leaves the node healthy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startIdp } from '../fakes/idp.mjs';
import { startDownstream } from '../fakes/downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, http, psql, run, writeConfig, sleep } from '../lib/harness.mjs';
import { control, setFault } from '../lib/oauth_setup.mjs';
import { call } from '../lib/proxy_setup.mjs';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';

const T = { timeout: 30000 };
const ADMIN = 'admin-token-for-client-credentials-tests';
const MACHINE = { id: 'machine-1', secret: 'machine-secret-0123456789' };
let idp, ds, db, broker, cfg;

function config(port, dbUrl) {
  return baseConfig({
    port, databaseUrl: dbUrl, extra: {
      admin_tokens: [ADMIN],
      upstreams: {
        oidc: {
          preset: 'oidc', issuer: `${idp.base}/oidc`, client_id: 'oidc-client', client_secret: 'oidc-secret',
          scopes: ['api'], client_credentials: true,
        },
      },
      clients: [
        { client_id: MACHINE.id, client_name: 'Nightly job', client_secret: MACHINE.secret,
          grant_types: ['client_credentials'], resources: ['/mcp'], scopes: ['repo:read'] },
        { client_id: 'web-app', client_secret: 'web-secret-0123456789', redirect_uris: ['http://127.0.0.1/cb'] },
        { client_id: 'public-app', redirect_uris: ['http://127.0.0.1/cb'] },
      ],
      limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 },
      resources: [{
        path: '/mcp', upstream: 'oidc', downstream: `${ds.url}/mcp`,
        scopes: { 'repo:read': ['list_issues'], 'repo:write': ['*'] }, default_scopes: ['repo:read'],
      }],
    },
  });
}

before(async () => {
  idp = await startIdp({ port: 0, log: false });
  ds = await startDownstream({ port: 0 });
  db = await createDatabase('client_cred');
  cfg = config(await freePort(), db);
  broker = await startBroker(cfg);
}, { timeout: 40000 });

after(async () => {
  await ds?.close();
  await broker?.stop('SIGTERM');
  await idp?.close();
}, { timeout: 30000 });

const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

function token(params, { id = MACHINE.id, secret = MACHINE.secret, auth = 'basic' } = {}) {
  const form = new URLSearchParams({ grant_type: 'client_credentials', ...params });
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (auth === 'basic') headers.authorization = basic(id, secret);
  else if (auth === 'post') { form.set('client_id', id); form.set('client_secret', secret); }
  else form.set('client_id', id);
  return http(`${broker.url}/token`, { method: 'POST', headers, body: form.toString() });
}

const counts = async () => psql(db, `SELECT (SELECT count(*) FROM grants) || '/' || (SELECT count(*) FROM tokens) || '/' || (SELECT count(*) FROM users)`);

function mcp(accessToken, body) {
  return http(`${broker.url}/mcp`, {
    method: 'POST', body: JSON.stringify(body),
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
  });
}

async function healthy(what) {
  assert.equal((await http(`${broker.url}/healthz`)).status, 200, `/healthz after ${what}`);
  assert.equal((await http(`${broker.url}/readyz`)).status, 200, `/readyz after ${what}`);
}

async function refused(params, opts, status, error) {
  const before = await counts();
  const r = await token(params, opts);
  assert.equal(r.status, status, r.text);
  assert.equal(r.json.error, error, r.text);
  assert.equal(await counts(), before, 'a refused request wrote nothing');
  await healthy(error);
}

test('metadata advertises client_credentials', T, async () => {
  const m = (await http(`${broker.url}/.well-known/oauth-authorization-server`)).json;
  assert.ok(m.grant_types_supported.includes('client_credentials'));
});

test('a machine client gets an access token only, and its tool calls carry the upstream client-credentials token', T, async () => {
  const s0 = (await control(idp, 'stats'))['oidc.token.client_credentials'];
  const r = await token({ resource: `${broker.url}/mcp` });
  assert.equal(r.status, 200, r.text);
  assert.match(r.json.access_token, /^mcpb_at_/);
  assert.equal(r.json.refresh_token, undefined, 'no refresh token for client_credentials');
  assert.equal(r.json.scope, 'repo:read');
  assert.equal(r.json.expires_in, 300, 'tokens.access_ttl, as every access token');
  assert.equal((await control(idp, 'stats'))['oidc.token.client_credentials'], s0 + 1);
  assert.equal(await psql(db, `SELECT login || '|' || name FROM users WHERE upstream = 'oidc' AND subject = 'client:${MACHINE.id}'`), `${MACHINE.id}|Nightly job`);
  assert.equal(await psql(db, `SELECT count(*) FROM grants WHERE client_id = '${MACHINE.id}' AND up_refresh IS NULL AND up_access IS NOT NULL`), '1');
  // The next request (client_secret_post this time) gets a new access token
  // under the same grant: no new grant, no upstream call.
  const again = await token({}, { auth: 'post' });
  assert.equal(again.status, 200, again.text);
  assert.notEqual(again.json.access_token, r.json.access_token);
  assert.equal((await control(idp, 'stats'))['oidc.token.client_credentials'], s0 + 1);
  assert.equal(await psql(db, `SELECT count(DISTINCT grant_id) FROM tokens WHERE client_id = '${MACHINE.id}'`), '1');

  const n = ds.requests.length;
  const ok = await mcp(r.json.access_token, call('list_issues', 1));
  assert.equal(ok.status, 200, ok.text);
  const seen = ds.requests[n];
  assert.match(seen.headers.authorization, /^Bearer oidc_at_/, 'the upstream client-credentials token is injected');
  assert.equal(seen.headers['x-mcp-user'], `oidc:client:${MACHINE.id}`);
  assert.equal(seen.headers['x-mcp-client'], MACHINE.id);
  // The injected token is the upstream's own, live at its userinfo.
  const ui = await http(`${idp.base}/oidc/userinfo`, { headers: { authorization: seen.headers.authorization } });
  assert.equal(ui.json.sub, 'client:oidc-client');

  const denied = await mcp(r.json.access_token, call('delete_repo', 2));
  assert.equal(denied.status, 403, 'a tool outside its scopes');
  assert.equal(ds.requests.length, n + 1, 'the refused call never reached the downstream');
});

test('the upstream token is renewed by running the client_credentials grant again', T, async () => {
  await control(idp, 'config', { oidc: { access_ttl: 2 } });
  await psql(db, `UPDATE grants SET status = 'revoked', revoked_at = now() WHERE client_id = '${MACHINE.id}'`);
  try {
    const r = await token({});
    assert.equal(r.status, 200, r.text);
    const n = ds.requests.length;
    assert.equal((await mcp(r.json.access_token, call('list_issues', 1))).status, 200);
    const first = ds.requests[n].headers.authorization;
    const s0 = (await control(idp, 'stats'))['oidc.token.client_credentials'];
    await sleep(2500);
    assert.equal((await mcp(r.json.access_token, call('list_issues', 2))).status, 200);
    const second = ds.requests[n + 1].headers.authorization;
    assert.notEqual(second, first, 'a fresh upstream token');
    assert.equal((await control(idp, 'stats'))['oidc.token.client_credentials'], s0 + 1);
    assert.equal((await control(idp, 'stats'))['oidc.token.refresh'], 0, 'no refresh_token grant upstream');
    // A renewal the upstream fails is a 503 that keeps the grant; the next one works.
    await sleep(2500);
    await setFault(idp, 'oidc.token.client_credentials', { mode: 'status', status: 500, count: 1 });
    const failed = await mcp(r.json.access_token, call('list_issues', 3));
    assert.equal(failed.status, 503, failed.text);
    assert.equal(ds.requests.length, n + 2, 'nothing forwarded without an upstream token');
    assert.equal((await mcp(r.json.access_token, call('list_issues', 4))).status, 200);
  } finally {
    await control(idp, 'config', { oidc: { access_ttl: 3600 } });
  }
});

test('revocation ends it: /revoke of its access token, admin revoke by client', T, async () => {
  const a = await token({});
  const rv = await http(`${broker.url}/revoke`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(MACHINE.id, MACHINE.secret) },
    body: new URLSearchParams({ token: a.json.access_token }).toString(),
  });
  assert.equal(rv.status, 200, rv.text);
  assert.equal((await mcp(a.json.access_token, call('list_issues', 1))).status, 401);

  const b = await token({});
  assert.equal((await mcp(b.json.access_token, call('list_issues', 1))).status, 200);
  const ad = await http(`${broker.url}/admin/v1/revoke`, {
    method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ client_id: MACHINE.id }),
  });
  assert.equal(ad.status, 200, ad.text);
  assert.equal((await mcp(b.json.access_token, call('list_issues', 1))).status, 401);
  assert.equal(await psql(db, `SELECT count(*) FROM grants WHERE client_id = '${MACHINE.id}' AND status = 'active'`), '0');
});

test('bad inputs: the RFC error, nothing written, the node healthy', T, async () => {
  // No machine grant to reuse: every request below reaches the upstream.
  await psql(db, `UPDATE grants SET status = 'revoked', revoked_at = now() WHERE client_id = '${MACHINE.id}'`);
  await refused({}, { id: 'public-app', auth: 'none' }, 400, 'unauthorized_client');
  await refused({}, { id: 'web-app', secret: 'web-secret-0123456789' }, 400, 'unauthorized_client');
  await refused({}, { secret: 'wrong-secret-0123456789' }, 401, 'invalid_client');
  await refused({ resource: `${broker.url}/other` }, {}, 400, 'invalid_target');
  await refused({ resource: 'https://elsewhere.example/mcp' }, {}, 400, 'invalid_target');
  await refused({ scope: 'repo:write' }, {}, 400, 'invalid_scope');
  await refused({ scope: 'repo:read repo:write' }, {}, 400, 'invalid_scope');
  // The upstream refuses the broker's client_credentials grant, or is down.
  await setFault(idp, 'oidc.token.client_credentials', { mode: 'unauthorized_client', count: 1 });
  await refused({}, {}, 400, 'invalid_grant');
  await setFault(idp, 'oidc.token.client_credentials', { mode: 'status', status: 500, count: 1 });
  await refused({}, {}, 503, 'temporarily_unavailable');
  const ok = await token({ scope: 'repo:read' });
  assert.equal(ok.status, 200, 'the next request works');
});

test('check-config: a client_credentials client needs an upstream with that grant; GitHub has none', T, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpb-cc-'));
  const bad = (mutate) => { const c = structuredClone(cfg); mutate(c); return writeConfig(dir, c); };
  const cases = [
    [(c) => { c.upstreams.oidc = { preset: 'github', client_id: 'x', client_secret: 'y' }; }, /GitHub, which has no client_credentials grant/],
    [(c) => { delete c.upstreams.oidc.client_credentials; }, /needs "client_credentials": true/],
    [(c) => { delete c.clients[0].client_secret; }, /needs a client_secret/],
    [(c) => { c.clients[0].redirect_uris = ['http://127.0.0.1/cb']; }, /has no redirect_uris/],
    [(c) => { c.clients[0].grant_types = ['client_credentials', 'refresh_token']; }, /grant_types: expected/],
    [(c) => { c.clients[0].resources = ['/nope']; }, /no resource with path "\/nope"/],
    [(c) => { c.clients[0].scopes = ['admin']; }, /"admin" is not a scope of any of its resources/],
    [(c) => { delete c.clients[1].redirect_uris; }, /clients\[1\]\.redirect_uris: missing required key/],
  ];
  for (const [mutate, msg] of cases) {
    const r = await run(['check-config', '--config', bad(mutate)]);
    assert.notEqual(r.code, 0, String(msg));
    assert.match(r.stdout + r.stderr, msg);
  }
  const good = await run(['check-config', '--config', writeConfig(dir, cfg)]);
  assert.equal(good.code, 0, good.stdout + good.stderr);
});
