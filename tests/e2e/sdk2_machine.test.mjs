// End-to-end of issue 13's machine-client mode with the MCP TypeScript SDK
// 2.4: the SDK's own ClientCredentialsProvider (@modelcontextprotocol/client;
// options clientId, clientSecret, scope, expectedIssuer; client_secret_basic)
// against the broker with pre-registered machine clients
// (grant_type=client_credentials, README "Machine clients"), through to the
// SDK 2.4 server (tests/fakes/sdk2-downstream.mjs), at both wires as
// sdk2.test.mjs selects them (2025-11-25 by default negotiation, 2026-07-28
// pinned). Per wire: the SDK gets its token by itself on the first 401
// (discovery, client_credentials with Basic auth) and connects; tools/list;
// a tool call whose downstream sees the upstream's own client-credentials
// token; the same with client_secret_post (the stored client information
// naming that method, which the SDK's method selection honours); a tool
// outside the client's scopes refused 403 before the downstream; renewal
// when the broker's access token really expires (tokens.access_ttl = 30: no
// refresh token, the SDK runs client_credentials again); an admin revoke by
// client_id refuses the client's tokens (the SDK's next call re-runs the
// grant, a new grant); a wrong secret is refused invalid_client, nothing
// written.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and `npm ci`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, ClientCredentialsProvider, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { startIdp } from '../fakes/idp.mjs';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, psql, http, sleep } from '../lib/harness.mjs';
import { hasBrokerToken, sdk2Resource, machineOidcOf, sdk2ToolRound } from './sdk_journey.mjs';

const WIRES = [
  { version: '2025-11-25', negotiation: undefined },
  { version: '2026-07-28', negotiation: { mode: { pin: '2026-07-28' } } },
];
const ACCESS_TTL = 30;
const ADMIN = 'admin-token-for-sdk2-machine-e2e';
const SECRET = (id) => `${id}-secret-0123456789abcdef`;
const machine = (i, how) => `machine-${how}-${i}`;
// A 401 with a token the SDK holds: the provider keeps no discovery state, so
// the SDK discovers again, then runs client_credentials and retries the call.
const RENEWAL = [
  'POST /mcp 401', 'GET /.well-known/oauth-protected-resource/mcp 200', 'GET /.well-known/oauth-authorization-server 200',
  'POST /token 200 client_credentials basic', 'POST /mcp 200',
];

/** client_secret_post: the SDK authenticates by the method the stored client information names. */
class PostClientCredentialsProvider extends ClientCredentialsProvider {
  clientInformation() {
    return { ...super.clientInformation(), token_endpoint_auth_method: 'client_secret_post' };
  }
}

/** A fetch recording {t, method, path, status, grant, auth (basic|post|none), error} of each request. */
function recording(log) {
  return async (input, init = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const headers = new Headers(init.headers);
    const e = { t: Date.now(), method: init.method || 'GET', path: url.pathname };
    if (init.body instanceof URLSearchParams) {
      e.grant = init.body.get('grant_type');
      e.scope = init.body.get('scope');
      e.resource = init.body.get('resource');
      e.auth = /^Basic /.test(headers.get('authorization') ?? '') ? 'basic' : init.body.has('client_secret') ? 'post' : 'none';
    }
    log.push(e);
    const res = await fetch(input, init);
    e.status = res.status;
    e.wwwAuthenticate = res.headers.get('www-authenticate');
    if (url.pathname === '/token' && res.status !== 200) e.error = (await res.clone().json().catch(() => ({}))).error;
    return res;
  };
}

let idp, ds, broker, dbUrl, mcpUrl;

before(async () => {
  idp = await startIdp({ port: 0, log: false });
  ds = await startSdk2Downstream({ port: 0 });
  dbUrl = await createDatabase('e2e_sdk2_machine');
  const clients = [];
  for (const i of WIRES.keys()) {
    for (const how of ['basic', 'post']) {
      clients.push({
        client_id: machine(i, how), client_name: `Nightly job ${how} ${i}`, client_secret: SECRET(machine(i, how)),
        grant_types: ['client_credentials'], resources: ['/mcp'], scopes: ['issues:read'],
      });
    }
  }
  broker = await startBroker(baseConfig({
    port: await freePort(), databaseUrl: dbUrl, extra: {
      admin_tokens: [ADMIN],
      tokens: { access_ttl: ACCESS_TTL },
      upstreams: { oidc: machineOidcOf(idp.base) },
      clients,
      limits: { token_per_client_per_minute: 0 },
      resources: [sdk2Resource(ds.url, { upstream: 'oidc' })],
    },
  }));
  mcpUrl = new URL(`${broker.url}/mcp`);
}, { timeout: 60000 });

after(async () => {
  await broker?.stop();
  await ds?.close();
  await idp?.close();
}, { timeout: 30000 });

const counts = async () => psql(dbUrl, `SELECT (SELECT count(*) FROM grants) || '/' || (SELECT count(*) FROM tokens) || '/' || (SELECT count(*) FROM users)`);
const text = (r) => r.content[0].text;
const seq = (entries) => entries.map((e) => `${e.method} ${e.path} ${e.status}${e.grant ? ` ${e.grant} ${e.auth}` : ''}`);

function probe(accessToken) {
  return http(mcpUrl.toString(), {
    method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 'probe', method: 'ping' }),
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
  });
}

for (const [i, wire] of WIRES.entries()) {
  describe(`SDK 2.4 ClientCredentialsProvider -> broker -> SDK 2.4 server on the ${wire.version} wire`, { timeout: 120000 }, () => {
    const id = machine(i, 'basic');
    const log = [];
    const opened = [];
    let provider, client, transport, tokenAt;

    async function connect(p, fetchFn) {
      const c = new Client({ name: 'mcp-broker-e2e-sdk2-machine', version: '1.0.0' }, wire.negotiation ? { versionNegotiation: wire.negotiation } : {});
      const t = new StreamableHTTPClientTransport(mcpUrl, { authProvider: p, fetch: fetchFn });
      opened.push(c);
      await c.connect(t);
      return { c, t };
    }
    const fetchFn = recording(log);
    const seenSince = (t) => ds.seen.filter((e) => e.t >= t);

    before(() => {
      provider = new ClientCredentialsProvider({ clientId: id, clientSecret: SECRET(id), scope: 'issues:read', expectedIssuer: broker.url });
    });
    after(async () => { for (const c of opened) await c.close().catch(() => {}); });

    it('gets its token by client_credentials (Basic) on the first 401 and connects at this wire', async () => {
      ({ c: client, t: transport } = await connect(provider, fetchFn));
      const tok = log.filter((e) => e.path === '/token');
      assert.deepEqual(seq(tok), ['POST /token 200 client_credentials basic'], seq(log).join('\n'));
      assert.equal(tok[0].resource, mcpUrl.toString(), 'RFC 8707 resource');
      assert.equal(log.find((e) => e.path === '/mcp').status, 401);
      assert.ok(!log.some((e) => e.path === '/register' || e.path === '/authorize'), 'no registration, no user');
      tokenAt = tok[0].t;
      const t = provider.tokens();
      assert.match(t.access_token, /^mcpb_at_/);
      assert.equal(t.refresh_token, undefined);
      assert.equal(t.expires_in, ACCESS_TTL);
      assert.equal(t.scope, 'issues:read');
      assert.equal(transport.protocolVersion, wire.version);
      assert.equal(client.getServerVersion().name, 'sdk2-downstream');
    });

    it('lists tools and calls one; the downstream gets the upstream client-credentials token', async () => {
      const t0 = Date.now();
      const who = await sdk2ToolRound(client, wire, { tag: 'machine', auth: /^Bearer oidc_at_/ });
      // The injected token is the upstream's own client-credentials token, live at its userinfo.
      const ui = await http(`${idp.base}/oidc/userinfo`, { headers: { authorization: who.authorization } });
      assert.equal(ui.status, 200);
      assert.equal(ui.json.sub, 'client:oidc-client');
      for (const e of seenSince(t0)) {
        for (const [k, v] of Object.entries(e.headers)) assert.ok(!hasBrokerToken(String(v)), `${k} carries a broker token`);
        assert.equal(e.headers['x-mcp-user'], `oidc:client:${id}`);
        assert.equal(e.headers['x-mcp-client'], id);
        assert.equal(e.headers['mcp-protocol-version'], wire.version);
      }
      if (wire.version === '2026-07-28') {
        const call = seenSince(t0).find((e) => e.tools.includes('echo'));
        assert.equal(call.headers['mcp-method'], 'tools/call');
        assert.equal(call.headers['mcp-name'], 'echo');
      }
    });

    it('client_secret_post: the same provider with the method named in its client information', async () => {
      const pid = machine(i, 'post');
      const plog = [];
      const p = new PostClientCredentialsProvider({ clientId: pid, clientSecret: SECRET(pid), expectedIssuer: broker.url });
      const { c } = await connect(p, recording(plog));
      assert.deepEqual(seq(plog.filter((e) => e.path === '/token')), ['POST /token 200 client_credentials post']);
      const who = JSON.parse(text(await c.callTool({ name: 'whoami', arguments: {} })));
      assert.match(who.authorization, /^Bearer oidc_at_/);
      assert.equal(p.tokens().scope, 'issues:read', "the client's scopes by default");
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${pid}' AND status = 'active'`), '1');
    });

    it('a tool outside the client\'s scopes is refused 403 before the downstream', async () => {
      const t0 = Date.now();
      const before = log.length;
      const c0 = await counts();
      await assert.rejects(client.callTool({ name: 'create_issue', arguments: { title: 'nope' } }));
      const after = log.slice(before);
      // The SDK's step-up: it asks for the wider scope the 403 names; the
      // broker refuses a scope outside the client's and issues nothing.
      assert.deepEqual(seq(after), [
        'POST /mcp 403', 'GET /.well-known/oauth-protected-resource/mcp 200', 'GET /.well-known/oauth-authorization-server 200',
        'POST /token 400 client_credentials basic',
      ]);
      assert.match(after[0].wwwAuthenticate, /error="insufficient_scope"/);
      assert.match(after[0].wwwAuthenticate, /scope="[^"]*issues:write/);
      assert.match(after[3].scope, /issues:write/);
      assert.equal(after[3].error, 'invalid_scope');
      assert.equal(seenSince(t0).filter((e) => e.tools.includes('create_issue')).length, 0, 'the downstream never saw it');
      assert.equal(await counts(), c0, 'nothing written');
      assert.equal((await http(`${broker.url}/healthz`)).status, 200);
    });

    it('the broker access token expires (tokens.access_ttl): the SDK runs client_credentials again and retries', async () => {
      const old = provider.tokens().access_token;
      const grants0 = await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${id}'`);
      const wait = tokenAt + ACCESS_TTL * 1000 + 1500 - Date.now();
      if (wait > 0) await sleep(wait);
      assert.equal((await probe(old)).status, 401, 'the expired token is refused');
      const before = log.length;
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: 'after renewal' } })), 'after renewal');
      assert.deepEqual(seq(log.slice(before)), RENEWAL);
      assert.notEqual(provider.tokens().access_token, old);
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${id}'`), grants0, 'the same grant, reused');
    });

    it('an admin revoke by client_id refuses its tokens; the SDK re-runs the grant, under a new grant', async () => {
      const old = provider.tokens().access_token;
      const ad = await http(`${broker.url}/admin/v1/revoke`, {
        method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: id }),
      });
      assert.equal(ad.status, 200, ad.text);
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${id}' AND status = 'active'`), '0');
      assert.equal((await probe(old)).status, 401, 'the revoked token is refused');
      const t0 = Date.now();
      const before = log.length;
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: 'after revoke' } })), 'after revoke');
      assert.deepEqual(seq(log.slice(before)), RENEWAL);
      assert.equal(seenSince(t0).filter((e) => e.tools.includes('echo')).length, 1, 'only the retry reached the downstream');
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${id}' AND status = 'active'`), '1');
      // The other machine client was not touched.
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${machine(i, 'post')}' AND status = 'active'`), '1');
    });

    it('a wrong secret is refused invalid_client: the SDK reports it, nothing written, the node healthy', async () => {
      const wlog = [];
      const c0 = await counts();
      const p = new ClientCredentialsProvider({ clientId: id, clientSecret: 'not-the-secret-0123456789', expectedIssuer: broker.url });
      await assert.rejects(connect(p, recording(wlog)));
      const tok = wlog.filter((e) => e.path === '/token');
      assert.ok(tok.length >= 1);
      for (const e of tok) {
        assert.equal(e.status, 401, seq(wlog).join('\n'));
        assert.equal(e.error, 'invalid_client');
      }
      assert.equal(p.tokens(), undefined);
      assert.equal(await counts(), c0, 'nothing written');
      assert.equal((await http(`${broker.url}/healthz`)).status, 200);
      assert.equal((await http(`${broker.url}/readyz`)).status, 200);
    });

    it('no broker log line carries a token or a secret', async () => {
      const leaks = broker.logs().filter((l) => /mcpb_(at|rt|ac)_|oidc_(at|rt)_|-secret-0123/.test(l));
      assert.equal(leaks.length, 0, leaks.join('\n'));
    });
  });
}
