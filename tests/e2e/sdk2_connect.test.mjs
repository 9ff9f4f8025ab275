// Connected accounts, end to end: a resource signed in with GitHub that also
// needs the user's Sentry account ("connect": ["sentry"], its token injected
// as X-Sentry-Token). The MCP TypeScript SDK 2.4 client, through two broker
// nodes sharing one database, to a real SDK 2.4 server, on both wires:
//  - 2025-11-25: tools/call answers JSON-RPC -32042 (SEP-1036), which the SDK
//    raises as UrlElicitationRequiredError;
//  - 2026-07-28: the call answers an input_required result embedding the
//    URL-mode elicitation (SEP-2322); the SDK's input-required driver hands it
//    to the client's elicitation/create handler and retries.
// The test is the user's browser: it opens the URL on the *other* node, signs
// in with GitHub as the grant's user (the identity leg), then with Sentry
// (the account leg); the retried call reaches the server with both tokens.
// Then every bad input of the connect page: a ticket replayed, expired, of a
// revoked grant, malformed; a form without CSRF; the identity leg signed in
// as another GitHub user; a leg finished in another browser — nothing is
// attached and the nodes stay healthy.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and `npm ci`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport, UrlElicitationRequiredError } from '@modelcontextprotocol/client';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startNodes } from '../lib/nodes.mjs';
import { http, psql } from '../lib/harness.mjs';
import { CookieJar, browserGet, browserPost, parseConsent } from '../lib/flow.mjs';
import { setFault } from '../lib/oauth_setup.mjs';
import { TestOAuthProvider, hasBrokerToken } from './sdk_journey.mjs';

const WIRES = [
  { version: '2025-11-25', negotiation: undefined },
  { version: '2026-07-28', negotiation: { mode: { pin: '2026-07-28' } } },
];

let env, ds, nodeA, nodeB;

before(async () => {
  ds = await startSdk2Downstream({ port: 0 });
  env = await startNodes(2, {
    downstream: ds.url,
    extra: { registration: { dynamic: true, client_id_metadata_documents: false } },
    resources: [{
      path: '/mcp', upstream: 'gh', connect: ['sentry'], downstream: ds.url,
      inject: [
        { header: 'Authorization', value: 'Bearer {upstream_token}' },
        { header: 'X-Sentry-Token', value: '{upstream_token:sentry}' },
      ],
      scopes: { 'issues:read': ['echo', 'whoami'], 'issues:write': ['*'] }, default_scopes: ['issues:read'],
    }],
  });
  [nodeA, nodeB] = env.nodes;
}, { timeout: 60000 });

after(async () => {
  await env?.stop();
  await ds?.close();
}, { timeout: 30000 });

const onNode = (url, node) => { const u = new URL(url); u.port = new URL(node.url).port; return u.toString(); };
const q = (sql) => psql(env.db, sql);

/**
 * The user's browser through the connect page: GET the URL (on node), POST
 * Continue, the identity leg at GitHub as identityLogin, the account leg at
 * Sentry as accountLogin. Each /callback goes to the node named by
 * callbackNode. Returns every answer (stops at the first unexpected one).
 */
async function connectInBrowser(url, { node = nodeB, callbackNode = nodeA, identityLogin = 'alice', accountLogin = 'alice',
  jar = new CookieJar(), legJar } = {}) {
  const steps = {};
  steps.page = await browserGet(onNode(url, node), jar);
  if (steps.page.status !== 200) return steps;
  const form = parseConsent(steps.page.text);
  steps.post = await browserPost(onNode(form.action, node), jar, { ...form.fields, decision: 'approve' });
  if (steps.post.status !== 302) return steps;
  for (const [leg, login] of [['identity', identityLogin], ['account', accountLogin]]) {
    const up = new URL(steps[leg === 'identity' ? 'post' : 'identityCallback'].headers.get('location'));
    up.searchParams.set('login', login);
    up.searchParams.set('auto', '1');
    const idp = await http(up.toString());
    assert.equal(idp.status, 302, `fake IdP ${leg} login: ${idp.status}`);
    const cb = await browserGet(onNode(idp.headers.get('location'), callbackNode), leg === 'account' && legJar ? legJar : jar);
    steps[`${leg}Callback`] = cb;
    steps[`${leg}Upstream`] = up;
    if (leg === 'identity' && cb.status !== 302) return steps;
  }
  return steps;
}

for (const wire of WIRES) {
  describe(`connect Sentry in band, SDK 2.4 client on the ${wire.version} wire`, { timeout: 90000 }, () => {
    let provider, client, transport, grantId;
    const elicited = [];
    const text = (r) => JSON.parse(r.content[0].text);

    function connectNew() {
      client = new Client({ name: 'mcp-broker-e2e-connect', version: '1.0.0' }, {
        capabilities: { elicitation: { url: {} } },
        ...(wire.negotiation ? { versionNegotiation: wire.negotiation } : {}),
      });
      // 2026-07-28: the input-required driver calls this for the embedded
      // elicitation; the user connects in the browser, then it accepts.
      client.setRequestHandler('elicitation/create', async (req) => {
        elicited.push(req.params);
        const steps = await connectInBrowser(req.params.url);
        assert.equal(steps.accountCallback?.status, 200, 'the connect flow completed');
        return { action: 'accept' };
      });
      transport = new StreamableHTTPClientTransport(new URL(`${env.publicUrl}/mcp`), { authProvider: provider });
      return client.connect(transport);
    }

    before(async () => {
      provider = new TestOAuthProvider({ redirectUrl: `http://127.0.0.1:${41000 + WIRES.indexOf(wire)}/callback`, brokerUrl: env.publicUrl });
      await connectNew().catch(() => {});
      await transport.finishAuth(provider.authorizations[0].redirect.searchParams);
      await connectNew();
      grantId = await q(`SELECT grant_id FROM tokens WHERE token_hash = sha256('${provider.tokens().access_token}'::bytea)`);
    });
    after(async () => { await client?.close().catch(() => {}); });

    it('listing needs no connected account; a call that does asks for it by URL elicitation', async () => {
      const seen0 = ds.seen.length;
      const tools = await client.listTools();
      assert.ok(tools.tools.some((t) => t.name === 'whoami'));
      const listed = ds.seen.slice(seen0).find((e) => e.tools.length === 0 && /tools\/list/.test(e.body));
      assert.match(listed.headers.authorization, /^Bearer gho_/);
      assert.equal(listed.headers['x-sentry-token'], undefined, 'no Sentry account yet: no header');
      if (wire.version === '2025-11-25') {
        const before = ds.seen.length;
        const err = await client.callTool({ name: 'whoami', arguments: {} }).then(() => null, (e) => e);
        assert.ok(err instanceof UrlElicitationRequiredError, `expected UrlElicitationRequiredError, got ${err}`);
        assert.equal(err.code, -32042);
        const [e] = err.elicitations;
        assert.equal(e.mode, 'url');
        assert.match(e.elicitationId, /^[0-9a-f-]{36}$/);
        assert.ok(e.url.startsWith(`${env.publicUrl}/connect?ticket=mcpb_ct_`), e.url);
        assert.match(e.message, /sentry/);
        assert.equal(ds.seen.length, before, 'nothing was forwarded');
        elicited.push(e);
      }
    });

    it('the user connects Sentry on the other node; the retried call carries both tokens', async (t) => {
      const t0 = Date.now();
      if (wire.version === '2025-11-25') {
        const steps = await connectInBrowser(elicited.at(-1).url);
        assert.equal(steps.page.status, 200);
        assert.match(steps.page.text, /Connect your sentry account/);
        assert.equal(steps.page.headers.get('x-frame-options'), 'DENY');
        assert.match(steps.page.headers.get('content-security-policy'), /frame-ancestors 'none'/);
        assert.ok(new URL(steps.post.headers.get('location')).pathname.startsWith('/github/'), 'identity leg at GitHub');
        assert.ok(new URL(steps.identityCallback.headers.get('location')).pathname.startsWith('/sentry/'), 'then Sentry');
        assert.ok(steps.identityUpstream.searchParams.get('code_challenge'), 'PKCE on the identity leg');
        assert.equal(steps.accountCallback.status, 200);
        assert.match(steps.accountCallback.text, /Connected/);
      }
      const who = text(await client.callTool({ name: 'whoami', arguments: {} }));
      // A diagnostic, not a target: the page, Continue, both legs at the
      // fake IdP, the attach and the retried call, on 2 shared cores.
      t.diagnostic(`connect round trip (page to a successful retry, ${wire.version}): ${Date.now() - t0} ms`);
      assert.match(who.authorization, /^Bearer gho_/);
      assert.match(who.sentry, /^sntr_/, 'the connected Sentry token reached the server');
      if (wire.version === '2026-07-28') {
        assert.equal(elicited.length, 1, 'one elicitation, fulfilled by the handler');
        assert.equal(elicited[0].mode, 'url');
        assert.ok(elicited[0].url.startsWith(`${env.publicUrl}/connect?ticket=`));
      }
      for (const e of ds.seen.filter((s) => s.t >= t0))
        for (const [k, v] of Object.entries(e.headers)) assert.ok(!hasBrokerToken(String(v)), `${k} carries a broker token`);
      assert.equal(await q(`SELECT count(*) FROM grant_connections WHERE grant_id = '${grantId}' AND upstream = 'sentry'`), '1');
      const sealed = await q(`SELECT position('sntr_'::bytea IN up_access) FROM grant_connections WHERE grant_id = '${grantId}'`);
      assert.equal(sealed, '0', 'the Sentry token is stored sealed');
      assert.equal(await q(`SELECT count(*) FROM audit_events WHERE event = 'connection.created' AND grant_id = '${grantId}'`), '1');
      assert.equal(await q(`SELECT count(*) FROM connect_tickets WHERE grant_id = '${grantId}' AND used_at IS NULL`), '0');
    });

    it('a connection the upstream refuses for good is dropped and asked for again', async () => {
      if (wire.version !== '2025-11-25') return;
      // The Sentry token expired and its refresh token is refused upstream.
      await q(`UPDATE grant_connections SET up_expires_at = now() - interval '1 minute' WHERE grant_id = '${grantId}'`);
      await setFault(env.idp, 'sentry.token.refresh', { mode: 'invalid_grant', count: 1 });
      const err = await client.callTool({ name: 'whoami', arguments: {} }).then(() => null, (e) => e);
      assert.ok(err instanceof UrlElicitationRequiredError, `expected a new elicitation, got ${err}`);
      assert.equal(await q(`SELECT count(*) FROM grant_connections WHERE grant_id = '${grantId}'`), '0');
      assert.equal(await q(`SELECT status FROM grants WHERE id = '${grantId}'`), 'active', 'the grant lives on');
      const steps = await connectInBrowser(err.elicitations[0].url, { node: nodeA, callbackNode: nodeB });
      assert.equal(steps.accountCallback.status, 200);
      assert.match(text(await client.callTool({ name: 'whoami', arguments: {} })).sentry, /^sntr_/);
    });
  });
}

describe('the connect page refuses what it must', { timeout: 90000 }, () => {
  let token, refresh, grantId;
  const mcp = (tk, body, node = nodeA) => http(`${node.url}/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tk}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' },
    body: JSON.stringify(body),
  });
  async function freshUrl() {
    const r = await mcp(token, { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'whoami', arguments: {} } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.id, 7);
    assert.equal(r.json.error.code, -32042);
    return r.json.error.data.elicitations[0].url;
  }
  const connections = () => q(`SELECT count(*) FROM grant_connections WHERE grant_id = '${grantId}'`);
  async function healthy() {
    for (const n of env.nodes) assert.equal((await http(`${n.url}/readyz`)).status, 200);
  }

  before(async () => {
    const p = new TestOAuthProvider({ redirectUrl: 'http://127.0.0.1:41999/callback', brokerUrl: env.publicUrl });
    const c = new Client({ name: 'refusals', version: '1' });
    const t = new StreamableHTTPClientTransport(new URL(`${env.publicUrl}/mcp`), { authProvider: p });
    await c.connect(t).catch(() => {});
    await t.finishAuth(p.authorizations[0].redirect.searchParams);
    token = p.tokens().access_token;
    refresh = p.tokens().refresh_token;
    grantId = await q(`SELECT grant_id FROM tokens WHERE token_hash = sha256('${token}'::bytea)`);
  });

  it('a batch that needs the account is answered whole, request by request; notifications alone are forwarded', async () => {
    const r = await mcp(token, [
      { jsonrpc: '2.0', id: 'a', method: 'tools/call', params: { name: 'whoami', arguments: {} } },
      { jsonrpc: '2.0', method: 'notifications/progress', params: {} },
      { jsonrpc: '2.0', id: 'b', method: 'ping' },
    ]);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.map((m) => [m.id, m.error.code]), [['a', -32042], ['b', -32042]],
      'nothing of the batch was forwarded, so every request is answered');
  });

  it('signing in as another GitHub user attaches nothing', async () => {
    const steps = await connectInBrowser(await freshUrl(), { identityLogin: 'mallory' });
    assert.equal(steps.identityCallback.status, 403);
    assert.match(steps.identityCallback.text, /another account/);
    assert.equal(await connections(), '0');
    assert.equal(await q(`SELECT count(*) FROM audit_events WHERE event = 'connection.identity_mismatch' AND grant_id = '${grantId}'`), '1');
  });

  it('a ticket is spent by its first flow: a replay, a second POST and a reload are refused', async () => {
    const url = await freshUrl();
    const jar = new CookieJar();
    const page = await browserGet(url, jar);
    assert.equal(page.status, 200);
    assert.equal((await browserGet(url, jar)).status, 200, 'opening the page does not spend the ticket');
    const form = parseConsent(page.text);
    const first = await browserPost(form.action, jar, { ...form.fields, decision: 'approve' });
    assert.equal(first.status, 302);
    const again = await browserPost(form.action, jar, { ...form.fields, decision: 'approve' });
    assert.equal(again.status, 400);
    assert.match(again.text, /expired or already used/);
    assert.equal((await browserGet(url, jar)).status, 400);
    // Cancelling spends it too.
    const url2 = await freshUrl();
    const jar2 = new CookieJar();
    const f2 = parseConsent((await browserGet(url2, jar2)).text);
    assert.equal((await browserPost(f2.action, jar2, { ...f2.fields, decision: 'deny' })).status, 200);
    assert.equal((await browserGet(url2, jar2)).status, 400);
    assert.equal(await connections(), '0');
  });

  it('an expired ticket, a revoked grant\'s, a malformed or repeated one: 400', async () => {
    const url = await freshUrl();
    const t = new URL(url).searchParams.get('ticket');
    await q(`UPDATE connect_tickets SET expires_at = now() - interval '1 second' WHERE ticket_hash = sha256('${t}'::bytea)`);
    assert.equal((await http(url)).status, 400);
    for (const bad of ['', 'mcpb_ct_', 'mcpb_ct_a"b', `x${t}`, `${t}&ticket=${t}`, 'mcpb_ct_' + 'A'.repeat(200)]) {
      const r = await http(`${env.publicUrl}/connect?ticket=${bad}`);
      assert.equal(r.status, 400, `ticket ${bad.slice(0, 20)}`);
      assert.ok(!r.text.includes(t), 'the ticket is not echoed');
    }
    assert.equal((await http(`${env.publicUrl}/connect`)).status, 400);
    await healthy();
  });

  it('a form without its CSRF token, or from another browser, is refused', async () => {
    const url = await freshUrl();
    const jar = new CookieJar();
    const form = parseConsent((await browserGet(url, jar)).text);
    assert.equal((await browserPost(form.action, jar, { ticket: form.fields.ticket, decision: 'approve' })).status, 403);
    assert.equal((await browserPost(form.action, new CookieJar(), { ...form.fields, decision: 'approve' })).status, 403);
    // Refused before the ticket was spent: the right browser still can.
    assert.equal((await browserPost(form.action, jar, { ...form.fields, decision: 'approve' })).status, 302);
  });

  it('a leg finished in another browser attaches nothing', async () => {
    const steps = await connectInBrowser(await freshUrl(), { legJar: new CookieJar() });
    assert.equal(steps.identityCallback.status, 302);
    assert.equal(steps.accountCallback.status, 403);
    assert.equal(await connections(), '0');
  });

  it('a ticket of a grant revoked meanwhile connects nothing', async () => {
    const url = await freshUrl();
    const r = await http(`${env.publicUrl}/revoke`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: refresh, client_id: await q(`SELECT client_id FROM grants WHERE id = '${grantId}'`) }).toString(),
    });
    assert.equal(r.status, 200);
    assert.equal((await http(url)).status, 400);
    assert.equal(await connections(), '0');
    await healthy();
  });
});
