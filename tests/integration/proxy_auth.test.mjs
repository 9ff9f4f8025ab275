// Proxy: who gets through (DESIGN 3.4). Missing, malformed, unknown,
// wrong-audience, expired and revoked tokens get the 401 challenge; tokens in
// the query string are refused; the Origin rule (DNS rebinding). The
// downstream must never see a refused request.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startProxyEnv, defaultResource, call, parseChallenge, rawRequest } from '../lib/proxy_setup.mjs';
import { http } from '../lib/harness.mjs';

let env, tokMcp, tokOther;
const T = { timeout: 20000 };

before(async () => {
  env = await startProxyEnv({
    prefix: 'proxy_auth',
    resources: (ds) => [
      defaultResource(ds, { allowed_origins: ['https://app.example.com', 'http://localhost:6274'] }),
      { path: '/other', upstream: 'gh', downstream: `${ds.url}/other` },
    ],
  });
  tokMcp = await env.token({ scope: 'repo:read' });
  tokOther = await env.token({ resource: '/other' });
}, { timeout: 40000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

function prm(path = '/mcp') { return `${env.url}/.well-known/oauth-protected-resource${path}`; }

/** Sends req and asserts the downstream never saw it; returns the response. */
async function refused(path, opts) {
  const n = env.ds.requests.length;
  const r = await env.mcp(path, opts);
  assert.equal(env.ds.requests.length, n, `the downstream saw a refused ${opts?.method ?? 'POST'} ${path}`);
  return r;
}

function assertChallenge(r, { status = 401, error, path = '/mcp' } = {}) {
  assert.equal(r.status, status, r.text);
  const c = parseChallenge(r.headers.get('www-authenticate'));
  assert.equal(c.scheme, 'Bearer');
  assert.equal(c.params.resource_metadata, prm(path));
  assert.equal(c.params.error, error, `error param in ${r.headers.get('www-authenticate')}`);
  return c;
}

test('no token: 401 with the resource_metadata challenge, for every method', T, async () => {
  for (const method of ['GET', 'POST', 'DELETE', 'PUT']) {
    const r = await refused('/mcp', { method, body: method === 'POST' || method === 'PUT' ? call('list_issues') : undefined });
    assertChallenge(r, { error: undefined });
  }
  const deep = await refused('/mcp/some/sub/path?x=1', { method: 'GET' });
  assertChallenge(deep, { error: undefined });
  // The challenge points at a document that names this resource.
  const doc = await http(prm());
  assert.equal(doc.status, 200);
  assert.equal(doc.json.resource, `${env.url}/mcp`);
});

test('malformed Authorization headers: 401 error="invalid_token"', T, async () => {
  const bad = [
    'Basic dXNlcjpwYXNz',
    'Bearer',
    `Token ${tokMcp.access_token}`,
    tokMcp.access_token,
    `Bearer ${'a'.repeat(400)}`,
    `Bearer ${tokMcp.access_token}x`,
    `Bearer mcpb_at_${randomBytes(32).toString('base64url')}`,
    `Bearer ${tokMcp.refresh_token}`,
  ];
  for (const a of bad) {
    const r = await refused('/mcp', { body: call('list_issues'), headers: { authorization: a } });
    assertChallenge(r, { error: 'invalid_token' });
  }
});

test('a token issued for another resource is refused (audience)', T, async () => {
  const r = await refused('/mcp', { token: tokOther.access_token, body: call('list_issues') });
  assertChallenge(r, { error: 'invalid_token' });
  const r2 = await refused('/other', { token: tokMcp.access_token, body: call('list_issues') });
  assertChallenge(r2, { error: 'invalid_token', path: '/other' });
  // Each works where it belongs.
  const ok = await env.mcp('/other', { token: tokOther.access_token, body: call('anything') });
  assert.equal(ok.status, 200, ok.text);
  const ok2 = await env.mcp('/mcp', { token: tokMcp.access_token, body: call('list_issues') });
  assert.equal(ok2.status, 200, ok2.text);
});

test('expired and revoked tokens: 401 invalid_token', T, async () => {
  // Fresh tokens that this node has never validated (no cache entry).
  const expiring = await env.token({ scope: 'repo:read' });
  const h = (await env.psql(`UPDATE tokens SET expires_at = now() - interval '1 s' WHERE grant_id = '${await env.grantOf(expiring.access_token)}' AND kind = 'access' RETURNING 1`));
  assert.equal(h, '1');
  assertChallenge(await refused('/mcp', { token: expiring.access_token, body: call('list_issues') }), { error: 'invalid_token' });
  assertChallenge(await refused('/mcp', { method: 'GET', token: expiring.access_token }), { error: 'invalid_token' });

  const revoked = await env.token({ scope: 'repo:read' });
  const g = await env.grantOf(revoked.access_token);
  assert.equal(await env.psql(`UPDATE grants SET status = 'revoked' WHERE id = '${g}' RETURNING 1`), '1');
  assertChallenge(await refused('/mcp', { token: revoked.access_token, body: call('list_issues') }), { error: 'invalid_token' });
  assertChallenge(await refused('/mcp', { method: 'DELETE', token: revoked.access_token }), { error: 'invalid_token' });
});

test('a token in the query string is refused, even beside a valid header', T, async () => {
  const q = await refused(`/mcp?access_token=${tokMcp.access_token}`, { body: call('list_issues') });
  assert.ok(q.status === 400 || q.status === 401, `status ${q.status}`);
  assert.ok(q.headers.get('www-authenticate'), 'a challenge');
  const both = await refused(`/mcp?access_token=${tokMcp.access_token}`, { token: tokMcp.access_token, body: call('list_issues') });
  assert.ok(both.status === 400 || both.status === 401, `status ${both.status}`);
  const get = await refused(`/mcp?x=1&access_token=${tokMcp.access_token}`, { method: 'GET' });
  assert.ok(get.status === 400 || get.status === 401, `status ${get.status}`);
});

test('Origin: a foreign one gets 403, an allowed one and none pass', T, async () => {
  const evil = await refused('/mcp', { token: tokMcp.access_token, body: call('list_issues'), headers: { origin: 'https://evil.example' } });
  assert.equal(evil.status, 403, evil.text);
  assert.equal(evil.json?.jsonrpc, '2.0');
  // Lookalikes of an allowed origin.
  for (const o of ['https://app.example.com.evil.example', 'http://app.example.com', 'https://app.example.com:8443', 'null']) {
    const r = await refused('/mcp', { token: tokMcp.access_token, body: call('list_issues'), headers: { origin: o } });
    assert.equal(r.status, 403, `${o}: ${r.status}`);
  }
  // Without a token too: the Origin rule does not depend on authentication.
  const anon = await refused('/mcp', { method: 'GET', headers: { origin: 'https://evil.example' } });
  assert.equal(anon.status, 403);
  // A resource without allowed_origins accepts no browser Origin at all.
  const other = await refused('/other', { token: tokOther.access_token, body: call('x'), headers: { origin: 'https://app.example.com' } });
  assert.equal(other.status, 403);

  for (const o of ['https://app.example.com', 'http://localhost:6274']) {
    const ok = await env.mcp('/mcp', { token: tokMcp.access_token, body: call('list_issues'), headers: { origin: o } });
    assert.equal(ok.status, 200, `${o}: ${ok.text}`);
  }
  const none = await env.mcp('/mcp', { token: tokMcp.access_token, body: call('list_issues') });
  assert.equal(none.status, 200);
});

test('CORS preflight from an allowed Origin is answered without a token', T, async () => {
  // A browser-based MCP client (allowed_origins exists for it) sends an
  // OPTIONS preflight without Authorization before every POST.
  const n = env.ds.requests.length;
  const r = await rawRequest(env.broker.port, {
    method: 'OPTIONS', path: '/mcp',
    headers: [['Origin', 'https://app.example.com'], ['Access-Control-Request-Method', 'POST'],
      ['Access-Control-Request-Headers', 'authorization, content-type, mcp-session-id, mcp-protocol-version']],
  });
  assert.equal(env.ds.requests.length, n, 'the preflight is not proxied');
  assert.ok(r.status >= 200 && r.status < 300, `preflight status ${r.status}`);
  assert.equal(r.headers['access-control-allow-origin'], 'https://app.example.com');
  const evil = await rawRequest(env.broker.port, {
    method: 'OPTIONS', path: '/mcp', headers: [['Origin', 'https://evil.example'], ['Access-Control-Request-Method', 'POST']],
  });
  assert.equal(evil.status, 403);
});
