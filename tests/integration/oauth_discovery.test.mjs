// OAuth discovery: RFC 9728 protected resource metadata, RFC 8414
// authorization server metadata (both well-known paths), and the 401
// challenge every method gets on a resource without a token.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startIdp, startOauthBroker, runCleanups, http, RESOURCES } from '../lib/oauth_setup.mjs';

let idp, env;
const cleanups = [];
before(async () => {
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  env = await startOauthBroker(idp);
  cleanups.push(() => env.stop());
});
after(() => runCleanups(cleanups));

const scopeKeys = (res) => Object.keys(res.scopes);

test('protected resource metadata for each resource path', async () => {
  for (const res of RESOURCES) {
    const r = await http(`${env.url}/.well-known/oauth-protected-resource${res.path}`);
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type'), /^application\/json/);
    assert.equal(r.json.resource, `${env.url}${res.path}`);
    assert.deepEqual(r.json.authorization_servers, [env.url]);
    assert.deepEqual(r.json.scopes_supported, scopeKeys(res));
    assert.deepEqual(r.json.bearer_methods_supported, ['header']);
    assert.ok(!r.json.scopes_supported.includes('offline_access'));
  }
  // Several resources: the suffix-less form names none of them.
  const root = await http(`${env.url}/.well-known/oauth-protected-resource`);
  assert.equal(root.status, 404);
  const unknown = await http(`${env.url}/.well-known/oauth-protected-resource/nope`);
  assert.equal(unknown.status, 404, `unknown PRM: ${unknown.status}`);
  assert.equal(unknown.json?.resource, undefined);
});

test('authorization server metadata on both well-known paths', async () => {
  const a = await http(`${env.url}/.well-known/oauth-authorization-server`);
  const o = await http(`${env.url}/.well-known/openid-configuration`);
  assert.equal(a.status, 200);
  assert.equal(o.status, 200);
  assert.deepEqual(o.json, a.json);
  const m = a.json;
  assert.equal(m.issuer, env.url);
  // issuer equals, character for character, the entry of every PRM document.
  for (const res of RESOURCES) {
    const prm = await http(`${env.url}/.well-known/oauth-protected-resource${res.path}`);
    assert.equal(prm.json.authorization_servers[0], m.issuer);
  }
  assert.equal(m.authorization_endpoint, `${env.url}/authorize`);
  assert.equal(m.token_endpoint, `${env.url}/token`);
  assert.equal(m.registration_endpoint, `${env.url}/register`);
  assert.deepEqual(m.code_challenge_methods_supported, ['S256']);
  assert.deepEqual(m.response_types_supported, ['code']);
  assert.deepEqual([...m.grant_types_supported].sort(), ['authorization_code', 'refresh_token']);
  assert.deepEqual([...m.token_endpoint_auth_methods_supported].sort(), ['client_secret_basic', 'client_secret_post', 'none', 'private_key_jwt']);
  assert.equal(m.client_id_metadata_document_supported, false);
  assert.equal(m.authorization_response_iss_parameter_supported, true);
  const all = [...new Set(RESOURCES.flatMap(scopeKeys))].sort();
  assert.deepEqual([...m.scopes_supported].sort(), all);
  assert.ok(!m.scopes_supported.includes('offline_access'));
  for (const [k, v] of Object.entries(m)) {
    if (typeof v === 'string' && k.endsWith('_endpoint')) assert.ok(v.startsWith(`${env.url}/`), `${k}: ${v}`);
  }
});

test('401 challenge with resource_metadata and scope for every method', async () => {
  for (const res of RESOURCES) {
    const prmUrl = `${env.url}/.well-known/oauth-protected-resource${res.path}`;
    const want = (res.default_scopes || scopeKeys(res)).join(' ');
    for (const method of ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD']) {
      const r = await http(`${env.url}${res.path}`, {
        method, ...(method === 'POST' || method === 'PUT' || method === 'PATCH'
          ? { headers: { 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' } : {}),
      });
      assert.equal(r.status, 401, `${method} ${res.path}`);
      const h = r.headers.get('www-authenticate');
      assert.ok(h, `${method} ${res.path}: no WWW-Authenticate`);
      assert.match(h, /^Bearer /);
      assert.ok(h.includes(`resource_metadata="${prmUrl}"`), h);
      assert.ok(h.includes(`scope="${want}"`), h);
      assert.ok(!/error=/.test(h), `no error without a token: ${h}`);
    }
    // A path below the resource is the resource too.
    const sub = await http(`${env.url}${res.path}/sub/path`);
    assert.equal(sub.status, 401);
    // A token that is not ours: invalid_token.
    const bad = await http(`${env.url}${res.path}`, { headers: { authorization: 'Bearer mcpb_at_notatoken' } });
    assert.equal(bad.status, 401);
    assert.match(bad.headers.get('www-authenticate'), /error="invalid_token"/);
    assert.ok(bad.headers.get('www-authenticate').includes(`resource_metadata="${prmUrl}"`));
  }
});

test('one resource: root PRM form, CIMD flag and registration switch follow the config', async () => {
  const one = await startOauthBroker(idp, {
    resources: [RESOURCES[0]],
    patch: (cfg) => { cfg.registration = { dynamic: false, client_id_metadata_documents: true }; },
  });
  try {
    const root = await http(`${one.url}/.well-known/oauth-protected-resource`);
    const named = await http(`${one.url}/.well-known/oauth-protected-resource/mcp`);
    assert.equal(root.status, 200);
    assert.deepEqual(root.json, named.json);
    assert.equal(root.json.resource, `${one.url}/mcp`);
    const m = (await http(`${one.url}/.well-known/oauth-authorization-server`)).json;
    assert.equal(m.client_id_metadata_document_supported, true);
    assert.equal(m.registration_endpoint, undefined);
    assert.deepEqual(m.scopes_supported, ['repo:read', 'repo:write']);
    assert.equal(root.json.authorization_servers[0], m.issuer);
  } finally {
    await one.stop();
  }
});

test('public_url with a trailing slash still gives one exact issuer', async () => {
  const one = await startOauthBroker(idp, {
    resources: [RESOURCES[0]],
    patch: (cfg) => { cfg.public_url += '/'; },
  });
  try {
    const m = (await http(`${one.url}/.well-known/oauth-authorization-server`)).json;
    const prm = (await http(`${one.url}/.well-known/oauth-protected-resource/mcp`)).json;
    assert.equal(m.issuer, one.url);
    assert.equal(prm.authorization_servers[0], m.issuer);
    assert.equal(prm.resource, `${one.url}/mcp`);
    assert.equal(m.token_endpoint, `${one.url}/token`);
  } finally {
    await one.stop();
  }
});
