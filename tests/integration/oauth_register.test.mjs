// RFC 7591 dynamic client registration: metadata answers, the redirect URI
// policy, malformed and oversized documents, the registration switches
// (disabled, initial access token) and the per-IP rate limit. Every refused
// registration leaves the database as it was and the node ready.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  startIdp, startOauthBroker, runCleanups, http, psql, register, unchanged, assertOAuthError, assertReady, counts,
  CookieJar, browserGet, authorizeUrl, pkce,
} from '../lib/oauth_setup.mjs';

let idp, env;
const cleanups = [];
before(async () => {
  idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  env = await startOauthBroker(idp);
  cleanups.push(() => env.stop());
});
after(() => runCleanups(cleanups));

const sha256hex = (s) => createHash('sha256').update(s).digest('hex');

test('public and confidential registrations answer 201 with their metadata', async () => {
  const pub = await register(env.url, {
    redirect_uris: ['http://127.0.0.1:5000/cb'], token_endpoint_auth_method: 'none', client_name: 'Public One',
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], client_uri: 'https://one.example.com',
  });
  assert.equal(pub.status, 201, pub.text);
  assert.match(pub.headers.get('cache-control'), /no-store/);
  assert.match(pub.json.client_id, /^mcpb_c_[A-Za-z0-9_-]{16,}$/);
  assert.equal(pub.json.client_secret, undefined);
  assert.equal(pub.json.token_endpoint_auth_method, 'none');
  assert.deepEqual(pub.json.redirect_uris, ['http://127.0.0.1:5000/cb']);
  assert.deepEqual(pub.json.grant_types, ['authorization_code', 'refresh_token']);
  assert.deepEqual(pub.json.response_types, ['code']);
  assert.equal(pub.json.client_name, 'Public One');
  assert.equal(pub.json.client_uri, 'https://one.example.com');
  assert.ok(Number.isInteger(pub.json.client_id_issued_at));
  assert.ok(Math.abs(pub.json.client_id_issued_at - Date.now() / 1000) < 60);
  assert.equal(await psql(env.db, `SELECT kind || '|' || (secret_hash IS NULL)::text FROM clients WHERE client_id = '${pub.json.client_id}'`), 'dynamic|true');

  // token_endpoint_auth_method defaults to client_secret_basic (RFC 7591 section 2).
  for (const method of [undefined, 'client_secret_basic', 'client_secret_post']) {
    const conf = await register(env.url, { redirect_uris: ['https://conf.example.com/cb'], ...(method ? { token_endpoint_auth_method: method } : {}) });
    assert.equal(conf.status, 201, conf.text);
    assert.equal(conf.json.token_endpoint_auth_method, method || 'client_secret_basic');
    assert.match(conf.json.client_secret, /^mcpb_cs_[A-Za-z0-9_-]{43}$/);
    assert.equal(conf.json.client_secret_expires_at, 0);
    // Only the hash is stored.
    const row = await psql(env.db, `SELECT encode(secret_hash, 'hex') FROM clients WHERE client_id = '${conf.json.client_id}'`);
    assert.equal(row, sha256hex(conf.json.client_secret));
    const dump = await psql(env.db, `SELECT row_to_json(c)::text FROM clients c`);
    assert.ok(!dump.includes(conf.json.client_secret));
    const audit = await psql(env.db, `SELECT string_agg(detail::text, ' ') FROM audit_events`);
    assert.ok(!audit.includes(conf.json.client_secret));
  }
  assert.ok(!env.broker.logText().includes('mcpb_cs_'), 'no client secret in the log');
});

test('redirect URI policy: https, loopback http, private-use schemes', async () => {
  const ok = [
    'https://app.example.com/cb', 'https://app.example.com:8443/cb?x=1', 'http://127.0.0.1:1234/cb',
    'http://127.0.0.1/cb', 'http://[::1]:8080/cb', 'http://localhost:3000/callback',
    'cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback', 'com.example.app:/oauth2redirect/example-provider',
    'vscode://vscode.github-authentication/did-authenticate',
  ];
  for (const uri of ok) {
    const r = await register(env.url, { redirect_uris: [uri], token_endpoint_auth_method: 'none' });
    assert.equal(r.status, 201, `${uri}: ${r.text}`);
    assert.deepEqual(r.json.redirect_uris, [uri]);
  }
  const bad = [
    'http://example.com/cb', 'http://10.0.0.1/cb', 'http://127.0.0.1.example.com/cb', 'https://app.example.com/cb#frag',
    'https://app.example.com/cb#', 'javascript:alert(1)', 'JAVASCRIPT://x/%0aalert(1)', 'data:text/html,<script>alert(1)</script>',
    'file:///etc/passwd', 'https://user:pw@app.example.com/cb', '', 'not a uri', '/relative/cb', 'https://app.example.com/c b',
    'https://app.example.com/cb\n', `https://app.example.com/${'a'.repeat(2100)}`, 'https:///nohost',
  ];
  for (const uri of bad) {
    await unchanged(env, async () => {
      const r = await register(env.url, { redirect_uris: [uri], token_endpoint_auth_method: 'none' });
      assertOAuthError(r, 400, 'invalid_redirect_uri');
    });
  }
  // One bad URI among good ones spoils the registration.
  await unchanged(env, async () => {
    const r = await register(env.url, { redirect_uris: ['https://ok.example.com/cb', 'http://evil.example.com/cb'] });
    assertOAuthError(r, 400, 'invalid_redirect_uri');
  });
  // Counts and shapes.
  for (const v of [undefined, [], 'https://app.example.com/cb', [42], [null],
    Array.from({ length: 11 }, (_, i) => `https://app.example.com/cb${i}`)]) {
    await unchanged(env, async () => {
      const r = await register(env.url, { ...(v === undefined ? {} : { redirect_uris: v }), token_endpoint_auth_method: 'none' });
      assertOAuthError(r, 400, 'invalid_redirect_uri');
    });
  }
  const ten = await register(env.url, { redirect_uris: Array.from({ length: 10 }, (_, i) => `https://app.example.com/cb${i}`) });
  assert.equal(ten.status, 201);
});

test('malformed and invalid client metadata: invalid_client_metadata, nothing written', async () => {
  const cases = [
    { raw: '{"redirect_uris": ["https://a.example.com/cb"]', why: 'truncated JSON' },
    { raw: 'redirect_uris=https://a.example.com/cb', why: 'not JSON' },
    { raw: '["https://a.example.com/cb"]', why: 'an array' },
    { raw: '', why: 'empty body' },
    { raw: '{"redirect_uris":["https://a.example.com/cb"],"redirect_uris":["https://b.example.com/cb"]}', why: 'duplicate key' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], token_endpoint_auth_method: 'private_key_jwt' }, why: 'auth method' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], grant_types: ['client_credentials'] }, why: 'grant type' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], grant_types: 'authorization_code' }, why: 'grant types string' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], response_types: ['token'] }, why: 'implicit' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], client_name: 'x'.repeat(201) }, why: 'long name' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], client_name: 42 }, why: 'name type' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], client_name: 'a\u0000b' }, why: 'NUL in name' },
    { doc: { redirect_uris: ['https://a.example.com/cb'], logo_uri: 'javascript:alert(1)' }, why: 'logo_uri scheme' },
  ];
  for (const c of cases) {
    await unchanged(env, async () => {
      const r = await register(env.url, c.doc, { raw: c.raw });
      assert.equal(r.status, 400, `${c.why}: ${r.status} ${r.text}`);
      assert.ok(['invalid_client_metadata', 'invalid_redirect_uri'].includes(r.json?.error), `${c.why}: ${r.text}`);
      if (c.why !== 'truncated JSON' && c.doc) assert.equal(r.json.error, 'invalid_client_metadata', c.why);
    });
  }
  // Wrong content type.
  await unchanged(env, async () => {
    const r = await http(`${env.url}/register`, { method: 'POST', headers: { 'content-type': 'text/plain' },
      body: JSON.stringify({ redirect_uris: ['https://a.example.com/cb'] }) });
    assertOAuthError(r, 400, 'invalid_client_metadata');
  });
  // Deeply nested JSON is refused without harm.
  await unchanged(env, async () => {
    const deep = `{"redirect_uris":["https://a.example.com/cb"],"x":${'['.repeat(3000)}${']'.repeat(3000)}}`;
    const r = await register(env.url, null, { raw: deep });
    assert.ok(r.status === 400 || r.status === 413, `${r.status}`);
  });
});

test('oversized registration bodies get 413 and the node stays healthy', async () => {
  const big = JSON.stringify({ redirect_uris: ['https://a.example.com/cb'], client_name: 'x', pad: 'y'.repeat(20000) });
  await unchanged(env, async () => {
    const r = await register(env.url, null, { raw: big });
    assert.equal(r.status, 413);
  });
  // Without Content-Length (chunked upload): 411, a length is required.
  await unchanged(env, async () => {
    const small = JSON.stringify({ redirect_uris: ['https://a.example.com/cb'], client_name: 'x' });
    const stream = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode(small)); c.close(); } });
    const r = await http(`${env.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: stream, duplex: 'half' });
    assert.equal(r.status, 411);
  });
  await assertReady(env.url);
});

test('<script> in client_name is stored as text and escaped on the consent page', async () => {
  const name = '<script>alert("x")</script><img src=x onerror=alert(1)>&\'';
  const reg = await register(env.url, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none', client_name: name });
  assert.equal(reg.status, 201, reg.text);
  assert.equal(reg.json.client_name, name);
  assert.match(reg.headers.get('content-type'), /^application\/json/);
  const p = pkce();
  const page = await browserGet(authorizeUrl(env.url, {
    response_type: 'code', client_id: reg.json.client_id, redirect_uri: 'http://127.0.0.1:4321/cb',
    code_challenge: p.challenge, code_challenge_method: 'S256', resource: `${env.url}/mcp`,
  }), new CookieJar());
  assert.equal(page.status, 200, page.text.slice(0, 300));
  assert.ok(!page.text.includes('<script>'), 'raw script tag on the consent page');
  assert.ok(!page.text.includes('<img'), 'raw img tag on the consent page');
  assert.ok(page.text.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
  assert.match(page.headers.get('content-security-policy'), /default-src 'none'/);
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
});

test('registration disabled: refused, nothing written, no registration_endpoint', async () => {
  const off = await startOauthBroker(idp, { patch: (cfg) => { cfg.registration = { dynamic: false }; } });
  try {
    await unchanged(off, async () => {
      const r = await register(off.url, { redirect_uris: ['https://a.example.com/cb'] });
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.error, 'access_denied');
    });
    const m = (await http(`${off.url}/.well-known/oauth-authorization-server`)).json;
    assert.equal(m.registration_endpoint, undefined);
  } finally {
    await off.stop();
  }
});

test('initial access token and per-IP rate limit', async () => {
  const iat = 'iat-0123456789abcdef-secret';
  const gated = await startOauthBroker(idp, {
    patch: (cfg) => {
      cfg.registration = { dynamic: true, initial_access_token: iat };
      cfg.limits = { register_per_ip_per_hour: 3 };
      cfg.http.threads = 8;
      cfg.database.pool_size = 8;
    },
  });
  try {
    const doc = { redirect_uris: ['https://a.example.com/cb'], token_endpoint_auth_method: 'none' };
    for (const auth of [undefined, 'Bearer wrong-token-0123456789', `Basic ${Buffer.from(`x:${iat}`).toString('base64')}`, `Bearer ${iat}x`]) {
      await unchanged(gated, async () => {
        const r = await register(gated.url, doc, { headers: auth ? { authorization: auth } : {} });
        assert.equal(r.status, 401, `${auth}: ${r.text}`);
        assert.equal(r.json.error, 'invalid_token');
        assert.match(r.headers.get('www-authenticate'), /^Bearer/);
      });
    }
    const ok = { authorization: `Bearer ${iat}` };
    // A concurrent burst cannot outrun the limit.
    const burst = await Promise.all(Array.from({ length: 8 }, () => register(gated.url, doc, { headers: ok })));
    assert.deepEqual(burst.map((r) => r.status).sort(), [201, 201, 201, 429, 429, 429, 429, 429]);
    assert.equal(await psql(gated.db, "SELECT count(*) FROM clients WHERE kind = 'dynamic'"), '3');
    const before = await counts(gated.db);
    const limited = await register(gated.url, doc, { headers: ok });
    assert.equal(limited.status, 429, limited.text);
    assert.ok(Number(limited.headers.get('retry-after')) > 0);
    assert.deepEqual(await counts(gated.db), before);
    assert.ok(!gated.broker.logText().includes(iat), 'the initial access token is never logged');
    await assertReady(gated.url);
  } finally {
    await gated.stop();
  }
});
