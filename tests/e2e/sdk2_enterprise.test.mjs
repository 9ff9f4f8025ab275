// Enterprise-managed authorization (SEP-990), end to end. The MCP
// TypeScript SDK 2.4 client's CrossAppAccessProvider signs in with no
// browser: it trades the user's ID token for an ID-JAG at a fake enterprise
// IdP (RFC 8693 token exchange, tests/fakes/enterprise-idp.mjs) and the
// ID-JAG for a broker access token (jwt-bearer grant, client_secret_basic).
// The grant is the enterprise user's (issuer, subject) and holds no GitHub
// session: the first tool call asks for it by URL elicitation; the user's
// browser proves who they are at the enterprise IdP (the trusted issuer's
// login_upstream), connects GitHub, and the retried call carries the GitHub
// token. Two nodes; the IdP's keys are fetched over https by the SSRF-safe
// fetcher. Then every refusal SEP-990 asks for: two audiences, alg none, a
// foreign issuer, a replayed jti (on the other node), another client's
// ID-JAG, a wrong typ, expired, a resource not ours, a bad signature, a
// client not registered for the grant - invalid_grant or
// unauthorized_client, nothing written, the nodes healthy. And the rate: how
// many ID-JAGs one node turns into tokens per second.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and `npm ci`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  Client, StreamableHTTPClientTransport, UrlElicitationRequiredError, CrossAppAccessProvider, discoverAndRequestJwtAuthGrant,
} from '@modelcontextprotocol/client';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startEnterpriseIdp } from '../fakes/enterprise-idp.mjs';
import { startNodes } from '../lib/nodes.mjs';
import { http, psql } from '../lib/harness.mjs';
import { makeCa, startHttpsServer } from '../lib/tls.mjs';
import { CookieJar, browserGet, browserPost, parseConsent } from '../lib/flow.mjs';

const AGENT = 'ent-agent', AGENT_SECRET = 'ent-agent-secret-0123456789';
const IDP_CLIENT = 'agent-at-idp', IDP_SECRET = 'idp-secret-0123456789';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

let ent, ca, keys, ds, env, nodeA, nodeB, resourceUrl;

before(async () => {
  ent = await startEnterpriseIdp({
    clients: { [IDP_CLIENT]: IDP_SECRET, 'broker-at-idp': 'broker-secret-0123456789' },
    clientMap: { [IDP_CLIENT]: AGENT },
  });
  ca = await makeCa({ sans: ['DNS:keys.corp.test', 'IP:127.0.0.1'] });
  keys = await startHttpsServer({ cert: ca.serverCert, key: ca.serverKey });
  keys.routes['/jwks'] = { json: ent.jwks, headers: { 'cache-control': 'max-age=300' } };
  ds = await startSdk2Downstream({ port: 0 });
  env = await startNodes(2, {
    downstream: ds.url,
    resources: [{
      path: '/mcp', upstream: 'gh', downstream: ds.url, identity_headers: true,
      scopes: { 'issues:read': ['echo', 'whoami'], 'issues:write': ['*'] }, default_scopes: ['issues:read'],
    }],
    extra: {
      registration: {
        dynamic: true, client_id_metadata_documents: false, cimd_ca_file: ca.caCert,
        cimd_resolve: [`keys.corp.test:${keys.port}:127.0.0.1`], cimd_allow_private_cidrs: ['127.0.0.1/32'],
        cimd_timeout_ms: 2000,
      },
      clients: [
        { client_id: AGENT, client_name: 'Corp Agent', client_secret: AGENT_SECRET, grant_types: [JWT_BEARER] },
        { client_id: 'code-client', client_secret: 'code-client-secret-0123', redirect_uris: ['https://c.example/cb'] },
      ],
      trusted_issuers: [{ issuer: ent.base, jwks_uri: `https://keys.corp.test:${keys.port}/jwks`, login_upstream: 'corp' }],
      resource_servers: [{ client_id: 'rs-1', client_secret: 'rs-secret-0123456789' }],
      limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0, token_failures_per_client_address_per_minute: 10000, token_failures_per_address_per_minute: 10000 },
    },
    upstreamsExtra: { corp: { preset: 'oidc', issuer: ent.base, client_id: 'broker-at-idp', client_secret: 'broker-secret-0123456789', scopes: ['openid', 'profile'] } },
  });
  [nodeA, nodeB] = env.nodes;
  resourceUrl = `${env.publicUrl}/mcp`;
}, { timeout: 60000 });

after(async () => {
  await env?.stop();
  await ds?.close();
  await keys?.close();
  await ent?.close();
  ca?.cleanup();
}, { timeout: 30000 });

const q = (sql) => psql(env.db, sql);
const onNode = (url, node) => { const u = new URL(url); u.port = new URL(node.url).port; return u.toString(); };
const basic = (id, secret) => 'Basic ' + Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64');
function tokenRequest(node, fields, { id = AGENT, secret = AGENT_SECRET } = {}) {
  return http(`${node.url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(id, secret) },
    body: new URLSearchParams({ grant_type: JWT_BEARER, ...fields }).toString(),
  });
}
/** An ID-JAG as the enterprise IdP would issue it, with overrides. */
function jag(claims = {}, header = {}) {
  const now = ent.now();
  return ent.sign({ alg: 'RS256', kid: ent.kid, typ: 'oauth-id-jag+jwt', ...header }, {
    iss: ent.base, sub: 'ent-alice', aud: env.publicUrl, client_id: AGENT, resource: resourceUrl,
    scope: 'issues:read', jti: crypto.randomUUID(), iat: now, exp: now + 120, ...claims,
  });
}

describe('an enterprise user through the SDK 2.4 CrossAppAccessProvider', { timeout: 90000 }, () => {
  let client, provider, grantId;
  before(async () => {
    provider = new CrossAppAccessProvider({
      assertion: async (ctx) => (await discoverAndRequestJwtAuthGrant({
        idpUrl: ent.base, audience: ctx.authorizationServerUrl, resource: ctx.resourceUrl, idToken: ent.idTokenFor('alice'),
        clientId: IDP_CLIENT, clientSecret: IDP_SECRET, scope: ctx.scope, fetchFn: ctx.fetchFn,
      })).jwtAuthGrant,
      clientId: AGENT, clientSecret: AGENT_SECRET, expectedIssuer: env.publicUrl,
    });
    client = new Client({ name: 'corp-agent', version: '1.0.0' }, { capabilities: { elicitation: { url: {} } } });
    const transport = new StreamableHTTPClientTransport(new URL(resourceUrl), { authProvider: provider });
    await client.connect(transport);
    grantId = await q(`SELECT grant_id FROM tokens WHERE token_hash = sha256('${provider.tokens().access_token}'::bytea)`);
  });
  after(async () => { await client?.close().catch(() => {}); });

  it('signs in without a browser: token exchange at the IdP, jwt-bearer at the broker, an access token only', async () => {
    const t = provider.tokens();
    assert.match(t.access_token, /^mcpb_at_/);
    assert.equal(t.refresh_token, undefined, 'no refresh token: the client exchanges a fresh ID-JAG');
    assert.equal(ent.exchanges.length, 1);
    assert.equal(ent.exchanges[0].audience, env.publicUrl);
    assert.equal(ent.exchanges[0].resource, resourceUrl);
    assert.equal(await q(`SELECT u.upstream || '|' || u.subject || '|' || g.upstream || '|' || (g.up_access IS NULL)::text FROM grants g JOIN users u ON u.id = g.user_id WHERE g.id = '${grantId}'`),
      `${ent.base}|ent-alice|gh|true`);
    const meta = await http(`${env.publicUrl}/.well-known/oauth-authorization-server`);
    assert.ok(meta.json.grant_types_supported.includes(JWT_BEARER));
  });

  it('the first tool call asks for GitHub; the user proves who they are at the IdP and connects it', async () => {
    const err = await client.callTool({ name: 'whoami', arguments: {} }).then(() => null, (e) => e);
    assert.ok(err instanceof UrlElicitationRequiredError, `expected UrlElicitationRequiredError, got ${err}`);
    const url = err.elicitations[0].url;
    const jar = new CookieJar();
    const page = await browserGet(onNode(url, nodeB), jar);
    assert.equal(page.status, 200);
    assert.match(page.text, /Corp Agent/);
    const form = parseConsent(page.text);
    const post = await browserPost(onNode(form.action, nodeB), jar, { ...form.fields, decision: 'approve' });
    assert.equal(post.status, 302);
    const idLeg = new URL(post.headers.get('location'));
    assert.equal(idLeg.origin, ent.base, 'the identity leg is at the enterprise IdP');
    idLeg.searchParams.set('login', 'alice');
    idLeg.searchParams.set('auto', '1');
    const cb1 = await browserGet(onNode((await http(idLeg.toString())).headers.get('location'), nodeA), jar);
    assert.equal(cb1.status, 302, cb1.text);
    const ghLeg = new URL(cb1.headers.get('location'));
    assert.match(ghLeg.pathname, /^\/github\//);
    ghLeg.searchParams.set('login', 'alice');
    ghLeg.searchParams.set('auto', '1');
    const cb2 = await browserGet(onNode((await http(ghLeg.toString())).headers.get('location'), nodeB), jar);
    assert.equal(cb2.status, 200, cb2.text);
    const seen0 = ds.seen.length;
    const who = JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text);
    assert.match(who.authorization, /^Bearer gho_/);
    assert.equal(await q(`SELECT (up_access IS NOT NULL)::text FROM grants WHERE id = '${grantId}'`), 'true');
    // Downstream the user is the enterprise IdP's (its login upstream's
    // name and the same sub), never a GitHub user of the same number.
    const sub = await q(`SELECT u.subject FROM grants g JOIN users u ON u.id = g.user_id WHERE g.id = '${grantId}'`);
    const call = ds.seen.slice(seen0).find((e) => /tools\/call/.test(e.body));
    assert.equal(call.headers['x-mcp-user'], `corp:${sub}`);
    const intro = await http(`${nodeB.url}/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('rs-1:rs-secret-0123456789').toString('base64')}` },
      body: new URLSearchParams({ token: provider.tokens().access_token }).toString(),
    });
    assert.equal(intro.json.sub, `corp:${sub}`, 'introspection names the user as X-MCP-User does');
  });

  it('a fresh ID-JAG keeps the same grant, and so what the user connected', async () => {
    const r = await tokenRequest(nodeB, { assertion: jag() });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.token_type, 'Bearer');
    assert.equal(r.json.refresh_token, undefined);
    assert.equal(await q(`SELECT grant_id FROM tokens WHERE token_hash = sha256('${r.json.access_token}'::bytea)`), grantId);
  });

  it('the identity leg signed in as another enterprise user attaches nothing', async () => {
    const r = await tokenRequest(nodeA, { assertion: jag({ sub: 'ent-bob' }) });
    assert.equal(r.status, 200, r.text);
    const call = await http(`${nodeA.url}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${r.json.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
    });
    assert.equal(call.json.error.code, -32042);
    const jar = new CookieJar();
    const form = parseConsent((await browserGet(call.json.error.data.elicitations[0].url, jar)).text);
    const post = await browserPost(form.action, jar, { ...form.fields, decision: 'approve' });
    const idLeg = new URL(post.headers.get('location'));
    idLeg.searchParams.set('login', 'alice'); // bob's link, alice's browser
    idLeg.searchParams.set('auto', '1');
    const cb = await browserGet((await http(idLeg.toString())).headers.get('location'), jar);
    assert.equal(cb.status, 403);
    assert.equal(await q(`SELECT count(*) FROM grants g JOIN users u ON u.id = g.user_id WHERE u.subject = 'ent-bob' AND g.up_access IS NOT NULL`), '0');
  });
});

describe('the jwt-bearer grant refuses what SEP-990 says it must', { timeout: 90000 }, () => {
  const counts = () => q(`SELECT (SELECT count(*) FROM grants) || '|' || (SELECT count(*) FROM tokens) || '|' || (SELECT count(*) FROM users)`);
  async function refused(node, fields, error, opts) {
    const before = await counts();
    const r = await tokenRequest(node, fields, opts);
    assert.equal(r.status, error === 'invalid_client' ? 401 : 400, `${r.status} ${r.text}`);
    assert.equal(r.json.error, error, r.text);
    assert.equal(await counts(), before, 'nothing written');
    return r;
  }
  const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  function foreignSign(header, claims) {
    const b = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
    const input = `${b(header)}.${b(claims)}`;
    return `${input}.${crypto.sign('sha256', Buffer.from(input), other.privateKey).toString('base64url')}`;
  }

  it('two audiences, another audience, alg none, HS256, a wrong typ, no typ', async () => {
    await refused(nodeA, { assertion: jag({ aud: [env.publicUrl, 'https://other.example'] }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({ aud: 'https://other.example' }) }, 'invalid_grant');
    const parts = jag().split('.');
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'oauth-id-jag+jwt' })).toString('base64url')}.${parts[1]}.`;
    await refused(nodeA, { assertion: none }, 'invalid_grant');
    const hs = `${Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'oauth-id-jag+jwt' })).toString('base64url')}.${parts[1]}.${parts[2]}`;
    await refused(nodeA, { assertion: hs }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({}, { typ: 'JWT' }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({}, { typ: undefined }) }, 'invalid_grant');
    assert.equal((await tokenRequest(nodeA, { assertion: jag({}, { typ: 'application/oauth-id-jag+jwt' }) })).status, 200,
      'typ with the application/ prefix is the same media type');
  });

  it('a foreign issuer, a trusted issuer\'s name with another key, a tampered payload', async () => {
    await refused(nodeA, { assertion: jag({ iss: 'https://evil.example' }) }, 'invalid_grant');
    const forged = foreignSign({ alg: 'RS256', kid: ent.kid, typ: 'oauth-id-jag+jwt' },
      { iss: ent.base, sub: 'ent-alice', aud: env.publicUrl, client_id: AGENT, resource: resourceUrl, jti: 'x1', iat: ent.now(), exp: ent.now() + 60 });
    await refused(nodeA, { assertion: forged }, 'invalid_grant');
    const [h, , s] = jag().split('.');
    const p = Buffer.from(JSON.stringify({ iss: ent.base, sub: 'ent-root', aud: env.publicUrl, client_id: AGENT, resource: resourceUrl, jti: 'x2', iat: ent.now(), exp: ent.now() + 60 })).toString('base64url');
    await refused(nodeA, { assertion: `${h}.${p}.${s}` }, 'invalid_grant');
  });

  it('a replayed jti is refused on every node', async () => {
    const a = jag();
    assert.equal((await tokenRequest(nodeA, { assertion: a })).status, 200);
    await refused(nodeB, { assertion: a }, 'invalid_grant');
    await refused(nodeA, { assertion: a }, 'invalid_grant');
  });

  it('another client\'s ID-JAG, expired, too long-lived, from the future, no jti, no subject, a resource not ours', async () => {
    await refused(nodeA, { assertion: jag({ client_id: 'code-client' }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({ exp: ent.now() - 120 }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({ exp: ent.now() + 7200 }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({ iat: ent.now() + 600 }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({ jti: undefined }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({ sub: undefined }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag({ resource: 'https://other.example/mcp' }) }, 'invalid_grant');
    await refused(nodeA, { assertion: jag(), resource: 'https://other.example/mcp' }, 'invalid_target');
    await refused(nodeA, { assertion: jag({ scope: 'admin' }) }, 'invalid_scope');
    await refused(nodeA, { assertion: jag(), scope: 'issues:write' }, 'invalid_scope');
  });

  it('scopes: granted = the IdP\'s ∩ the request\'s ∩ the resource\'s', async () => {
    const r = await tokenRequest(nodeA, { assertion: jag({ scope: 'issues:read issues:write other' }), scope: 'issues:write' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.scope, 'issues:write');
    const d = await tokenRequest(nodeA, { assertion: jag({ scope: undefined }) });
    assert.equal(d.json.scope, 'issues:read', 'no scope claim: the resource\'s defaults');
  });

  it('only a confidential client registered for the grant; no assertion is invalid_request', async () => {
    await refused(nodeA, { assertion: jag({ client_id: 'code-client' }) }, 'unauthorized_client', { id: 'code-client', secret: 'code-client-secret-0123' });
    await refused(nodeA, { assertion: jag() }, 'invalid_client', { id: AGENT, secret: 'wrong-secret-000000000' });
    await refused(nodeA, {}, 'invalid_request');
    await refused(nodeA, { assertion: 'not.a.jwt' }, 'invalid_grant');
    await refused(nodeA, { assertion: 'x'.repeat(4000) }, 'invalid_grant');
    const big = await tokenRequest(nodeA, { assertion: 'x'.repeat(80000) });
    assert.equal(big.status, 413, 'a body over the endpoint\'s limit');
    for (const n of env.nodes) assert.equal((await http(`${n.url}/readyz`)).status, 200);
  });

  it('the rate: ID-JAGs turned into tokens per second on one node (sequential, fresh jti each)', async (t) => {
    const n = 200, assertions = Array.from({ length: n }, () => jag());
    const t0 = process.hrtime.bigint();
    for (const a of assertions) assert.equal((await tokenRequest(nodeA, { assertion: a })).status, 200);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    t.diagnostic(`ID-JAG grants: ${n} in ${s.toFixed(2)} s = ${(n / s).toFixed(0)}/s sequential on one node`);
  });
});
