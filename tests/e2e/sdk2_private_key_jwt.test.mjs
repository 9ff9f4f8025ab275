// End-to-end of private_key_jwt client authentication (RFC 7523, DESIGN 3.6)
// with the MCP TypeScript SDK 2.4's own helpers (@modelcontextprotocol/client:
// createPrivateKeyJwtAuth as an OAuthClientProvider's addClientAuthentication,
// and PrivateKeyJwtProvider), through the real broker to the SDK 2.4 server
// (tests/fakes/sdk2-downstream.mjs), at both wires as sdk2_machine.test.mjs
// selects them (2025-11-25 by default negotiation, 2026-07-28 pinned).
//
// Per wire:
//  (a) a CIMD client: its client_id is the https URL of its metadata document
//      (token_endpoint_auth_method private_key_jwt, jwks_uri also https),
//      served by the test over HTTPS with a throwaway CA the broker trusts
//      (tests/lib/tls.mjs; cimd_resolve pin, 127.0.0.1/32 testing allowance,
//      as private_key_jwt.test.mjs). The SDK runs the whole authorization-code
//      journey (401, discovery, no /register, PKCE, the user's consent and
//      login at the fake IdP, the code exchange with an assertion), lists and
//      calls tools with the upstream token injected downstream, and refreshes
//      with an assertion when its access token expires. A provider holding a
//      key the document does not list cannot refresh: invalid_client, nothing
//      written.
//  (b) a pre-registered machine client (grant_types ["client_credentials"],
//      inline jwks with an EC and an RSA key) with the SDK's
//      PrivateKeyJwtProvider, ES256 then RS256: token on the first 401,
//      tools/list, a tool call seeing the upstream's client-credentials token.
//      The same provider signing with a key not in the JWKS is refused
//      invalid_client and nothing is written to grants or tokens.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and `npm ci`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  Client, PrivateKeyJwtProvider, StreamableHTTPClientTransport, UnauthorizedError, createPrivateKeyJwtAuth,
} from '@modelcontextprotocol/client';
import { startIdp } from '../fakes/idp.mjs';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, psql, http, waitFor } from '../lib/harness.mjs';
import { makeCa, startHttpsServer } from '../lib/tls.mjs';
import { TestOAuthProvider, hasBrokerToken, sha256hex, sdk2Resource, machineOidcOf, sdk2ToolRound } from './sdk_journey.mjs';

const WIRES = [
  { version: '2025-11-25', negotiation: undefined },
  { version: '2026-07-28', negotiation: { mode: { pin: '2026-07-28' } } },
];
const TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const TABLES = ['grants', 'tokens'];

const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const stranger = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }); // in no JWKS
const pem = (k) => k.privateKey.export({ type: 'pkcs8', format: 'pem' });
const pub = (k, extra) => ({ ...k.publicKey.export({ format: 'jwk' }), ...extra });
const machine = (i) => `pk-machine-${i}`;
const docPath = (i) => `/clients/pk-sdk-${i}.json`;
const KEYS_PATH = '/clients/pk-sdk-keys.json';

const decode = (jwt) => {
  const [h, p] = jwt.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), claims: JSON.parse(Buffer.from(p, 'base64url')) };
};

/** A fetch recording {t, method, path, status, grant, auth (assertion|basic|secret|none), assertion (decoded), error}. */
function recording(log) {
  return async (input, init = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const headers = new Headers(init.headers);
    const e = { t: Date.now(), method: init.method || 'GET', path: url.pathname };
    if (init.body instanceof URLSearchParams) {
      const b = init.body;
      e.grant = b.get('grant_type');
      e.clientId = b.get('client_id');
      e.resource = b.get('resource');
      e.auth = b.has('client_assertion') ? 'assertion' : /^Basic /.test(headers.get('authorization') ?? '') ? 'basic'
        : b.has('client_secret') ? 'secret' : 'none';
      if (b.has('client_assertion')) {
        e.assertionType = b.get('client_assertion_type');
        e.assertion = decode(b.get('client_assertion'));
      }
    }
    log.push(e);
    const res = await fetch(input, init);
    e.status = res.status;
    e.wwwAuthenticate = res.headers.get('www-authenticate');
    if (url.pathname === '/token' && res.status !== 200) e.error = (await res.clone().json().catch(() => ({}))).error;
    return res;
  };
}
const seq = (entries) => entries.map((e) => `${e.method} ${e.path} ${e.status}${e.grant ? ` ${e.grant} ${e.auth}` : ''}`);
const text = (r) => r.content[0].text;

/** The authorization-code provider of a CIMD client authenticating with private_key_jwt (SDK's createPrivateKeyJwtAuth). */
class PrivateKeyJwtCimdProvider extends TestOAuthProvider {
  constructor({ clientMetadataUrl, privateKey, alg, ...rest }) {
    super({ ...rest, clientMetadataUrl });
    this.addClientAuthentication = createPrivateKeyJwtAuth({ issuer: clientMetadataUrl, subject: clientMetadataUrl, privateKey, alg });
  }
  get clientMetadata() { return { ...super.clientMetadata, token_endpoint_auth_method: 'private_key_jwt' }; }
}

let idp, ds, ca, docs, broker, dbUrl, mcpUrl;
const redirects = [];

before(async () => {
  ca = await makeCa();
  docs = await startHttpsServer({ cert: ca.serverCert, key: ca.serverKey });
  idp = await startIdp({ port: 0, log: false });
  ds = await startSdk2Downstream({ port: 0 });
  dbUrl = await createDatabase('e2e_sdk2_pkjwt');
  docs.routes[KEYS_PATH] = { json: { keys: [pub(ec, { kid: 'sdk-ec', use: 'sig', alg: 'ES256' })] }, headers: { 'cache-control': 'max-age=300' } };
  for (const i of WIRES.keys()) {
    redirects.push(`http://127.0.0.1:${await freePort()}/callback`);
    docs.routes[docPath(i)] = { json: {
      client_id: docs.url(docPath(i)), client_name: `SDK 2.4 private_key_jwt ${i}`, redirect_uris: [redirects[i]],
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      token_endpoint_auth_method: 'private_key_jwt', jwks_uri: docs.url(KEYS_PATH),
    }, headers: { 'cache-control': 'max-age=300' } };
  }
  broker = await startBroker(baseConfig({
    port: await freePort(), databaseUrl: dbUrl, extra: {
      registration: {
        dynamic: false, client_id_metadata_documents: true, cimd_ca_file: ca.caCert,
        cimd_resolve: [`client.example.test:${docs.port}:127.0.0.1`], cimd_allow_private_cidrs: ['127.0.0.1/32'],
        cimd_timeout_ms: 3000,
      },
      upstreams: { oidc: machineOidcOf(idp.base) },
      clients: [...WIRES.keys()].map((i) => ({
        client_id: machine(i), client_name: `Nightly job (private_key_jwt) ${i}`,
        grant_types: ['client_credentials'], resources: ['/mcp'], scopes: ['issues:read'],
        jwks: { keys: [pub(ec, { kid: 'm-ec' }), pub(rsa, { kid: 'm-rsa' })] },
      })),
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
  await docs?.close();
  ca?.cleanup();
}, { timeout: 30000 });

async function counts() {
  const v = (await psql(dbUrl, `SELECT ${TABLES.map((t) => `(SELECT count(*) FROM ${t})`).join(', ')}`)).split('|').map(Number);
  return Object.fromEntries(TABLES.map((t, i) => [t, v[i]]));
}
const seenSince = (t) => ds.seen.filter((e) => e.t >= t);

/** Checks an assertion the SDK sent: RFC 7523 claims for client id, aud the broker's issuer, alg as asked. */
function assertAssertion(e, id, alg) {
  assert.equal(e.auth, 'assertion', `${e.grant}: authenticated by an assertion`);
  assert.equal(e.assertionType, TYPE);
  const { header, claims } = e.assertion;
  assert.equal(header.alg, alg);
  assert.equal(claims.iss, id);
  assert.equal(claims.sub, id);
  assert.equal(claims.aud, broker.url, "the SDK's audience: the issuer of the metadata");
  assert.ok(claims.exp > claims.iat && claims.exp - claims.iat <= 300);
  assert.ok(claims.jti);
}

for (const [i, wire] of WIRES.entries()) {
  const clientOpts = wire.negotiation ? { versionNegotiation: wire.negotiation } : {};

  describe(`SDK 2.4 CIMD client with private_key_jwt (createPrivateKeyJwtAuth) on the ${wire.version} wire`, { timeout: 120000 }, () => {
    const log = [];
    const opened = [];
    let cid, provider, client, transport;
    const fetchFn = recording(log);

    function connectNew(p = provider, f = fetchFn) {
      const c = new Client({ name: 'mcp-broker-e2e-sdk2-pkjwt', version: '1.0.0' }, clientOpts);
      const t = new StreamableHTTPClientTransport(mcpUrl, { authProvider: p, fetch: f });
      opened.push(c);
      return { c, t, connected: c.connect(t) };
    }

    before(() => {
      cid = docs.url(docPath(i));
      provider = new PrivateKeyJwtCimdProvider({ redirectUrl: redirects[i], brokerUrl: broker.url, clientMetadataUrl: cid, privateKey: pem(ec), alg: 'ES256' });
    });
    after(async () => { for (const c of opened) await c.close().catch(() => {}); });

    it('signs in: 401, discovery, the URL client_id (no /register), PKCE, code exchange with an assertion', async () => {
      const docHits = docs.hits(docPath(i));
      let pending = connectNew();
      await assert.rejects(pending.connected, (e) => e instanceof UnauthorizedError || /nauthorized/.test(String(e?.message)));
      assert.equal(log.find((e) => e.path === '/mcp').status, 401);
      assert.ok(!log.some((e) => e.path === '/register'), 'no dynamic registration');
      assert.equal(provider.authorizations.length, 1);
      const { url, redirect, page } = provider.authorizations[0];
      assert.equal(url.searchParams.get('client_id'), cid, 'the document URL is the client_id');
      assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
      assert.equal(url.searchParams.get('resource'), mcpUrl.toString());
      assert.ok(page.includes('client.example.test'), 'the consent page names the document host');
      assert.equal(redirect.searchParams.get('iss'), broker.url);
      assert.ok(docs.hits(docPath(i)) > docHits, 'the broker fetched the document');
      await pending.t.finishAuth(redirect.searchParams);
      const tok = log.filter((e) => e.path === '/token');
      assert.deepEqual(seq(tok), ['POST /token 200 authorization_code assertion'], seq(log).join('\n'));
      assertAssertion(tok[0], cid, 'ES256');
      assert.equal(tok[0].resource, mcpUrl.toString());
      const t = provider.tokens();
      assert.ok(t.access_token.startsWith('mcpb_at_') && t.refresh_token.startsWith('mcpb_rt_'));
      assert.equal(t.scope, 'issues:read');
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${cid}' AND status = 'active'`), '1');
      pending = connectNew();
      await pending.connected;
      ({ c: client, t: transport } = pending);
      assert.equal(transport.protocolVersion, wire.version);
      assert.equal(client.getServerVersion().name, 'sdk2-downstream');
    });

    it('lists tools and calls one; the downstream gets the upstream token, never the broker token', async () => {
      const t0 = Date.now();
      const who = await sdk2ToolRound(client, wire, { tag: 'pkjwt', auth: /^Bearer oidc_at_/ });
      const ui = await http(`${idp.base}/oidc/userinfo`, { headers: { authorization: who.authorization } });
      assert.equal(ui.status, 200, 'the injected token is live at the upstream');
      assert.equal(ui.json.preferred_username, 'alice', "the user's own upstream token");
      const seen = seenSince(t0);
      assert.ok(seen.length >= 3);
      for (const e of seen) {
        for (const [k, v] of Object.entries(e.headers)) assert.ok(!hasBrokerToken(String(v)), `${k} carries a broker token`);
        assert.equal(e.headers['x-mcp-client'], cid);
        assert.equal(e.headers['mcp-protocol-version'], wire.version);
      }
    });

    it('an expired access token: the SDK refreshes with a fresh assertion and retries', async () => {
      const old = provider.tokens();
      const hash = sha256hex(old.access_token);
      assert.equal(await psql(dbUrl, `UPDATE tokens SET expires_at = now() - interval '1 second' WHERE kind = 'access' AND token_hash = '\\x${hash}'::bytea RETURNING 1`), '1');
      await psql(dbUrl, `SELECT pg_notify('mcpb_revoke', 't:\\x${hash}')`);
      const probe = () => http(mcpUrl.toString(), {
        method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 'probe', method: 'ping' }),
        headers: { authorization: `Bearer ${old.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      });
      assert.ok(await waitFor(async () => (await probe()).status === 401, 5000), 'the expired token is refused');
      const before = log.length;
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: 'after refresh' } })), 'after refresh');
      const after = log.slice(before);
      assert.deepEqual(seq(after), ['POST /mcp 401', 'POST /token 200 refresh_token assertion', 'POST /mcp 200'], seq(after).join('\n'));
      const ref = after[1];
      assertAssertion(ref, cid, 'ES256');
      const code = log.find((e) => e.grant === 'authorization_code');
      assert.notEqual(ref.assertion.claims.jti, code.assertion.claims.jti, 'a fresh jti');
      assert.notEqual(provider.tokens().access_token, old.access_token);
      assert.notEqual(provider.tokens().refresh_token, old.refresh_token);
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${cid}' AND status = 'active'`), '1', 'the same grant');
    });

    it('a provider signing with a key the document does not list cannot refresh: invalid_client, nothing written', async () => {
      const wlog = [];
      const p = new PrivateKeyJwtCimdProvider({ redirectUrl: redirects[i], brokerUrl: broker.url, clientMetadataUrl: cid, privateKey: pem(stranger), alg: 'ES256' });
      // Its user does not sign in again: the SDK's fallback to a new authorization is only recorded.
      const asked = [];
      p.redirectToAuthorization = (u) => { asked.push(u); };
      // The same client information and refresh token as the real client, but the wrong key.
      p.saveClientInformation(provider.clientInformation());
      p.saveTokens({ ...provider.tokens(), access_token: 'mcpb_at_expired-or-unknown' });
      p.saveDiscoveryState(provider.discoveryState());
      const rt = provider.tokens().refresh_token;
      const c0 = await counts();
      const { connected } = connectNew(p, recording(wlog));
      await assert.rejects(connected);
      const tok = wlog.filter((e) => e.path === '/token');
      assert.ok(tok.length >= 1, seq(wlog).join('\n'));
      assert.equal(tok[0].grant, 'refresh_token');
      assert.equal(tok[0].auth, 'assertion');
      assert.equal(tok[0].status, 401, seq(wlog).join('\n'));
      assert.equal(tok[0].error, 'invalid_client');
      assert.deepEqual(await counts(), c0, 'nothing written to grants or tokens');
      // invalid_client: the SDK drops the stored client and tokens and falls back to a new authorization.
      assert.deepEqual(seq(wlog), ['POST /mcp 401', 'POST /token 401 refresh_token assertion']);
      assert.equal(asked.length, 1, 'a new authorization asked for, not signed in');
      assert.equal(new URL(asked[0]).searchParams.get('client_id'), cid);
      // The real client's refresh token is untouched and still refreshes.
      assert.equal(provider.tokens().refresh_token, rt);
      assert.equal(await psql(dbUrl, `SELECT count(*) FROM tokens WHERE kind = 'refresh' AND token_hash = '\\x${sha256hex(rt)}'::bytea AND revoked_at IS NULL AND used_at IS NULL`), '1');
      assert.equal((await http(`${broker.url}/readyz`)).status, 200);
    });
  });

  describe(`SDK 2.4 PrivateKeyJwtProvider (client_credentials) -> broker -> SDK 2.4 server on the ${wire.version} wire`, { timeout: 120000 }, () => {
    const id = machine(i);
    const opened = [];

    async function connect(p, fetchFn) {
      const c = new Client({ name: 'mcp-broker-e2e-sdk2-pkjwt-machine', version: '1.0.0' }, clientOpts);
      const t = new StreamableHTTPClientTransport(mcpUrl, { authProvider: p, fetch: fetchFn });
      opened.push(c);
      await c.connect(t);
      return { c, t };
    }
    after(async () => { for (const c of opened) await c.close().catch(() => {}); });

    for (const [alg, k] of [['ES256', ec], ['RS256', rsa]]) {
      it(`${alg}: the token on the first 401 (client_credentials with an assertion), tools/list and a tool call`, async () => {
        const log = [];
        const provider = new PrivateKeyJwtProvider({ clientId: id, privateKey: pem(k), algorithm: alg, scope: 'issues:read', expectedIssuer: broker.url });
        const { c, t } = await connect(provider, recording(log));
        const tok = log.filter((e) => e.path === '/token');
        assert.deepEqual(seq(tok), ['POST /token 200 client_credentials assertion'], seq(log).join('\n'));
        assertAssertion(tok[0], id, alg);
        assert.equal(tok[0].resource, mcpUrl.toString(), 'RFC 8707 resource');
        assert.ok(!log.some((e) => e.path === '/register' || e.path === '/authorize'), 'no registration, no user');
        const tk = provider.tokens();
        assert.match(tk.access_token, /^mcpb_at_/);
        assert.equal(tk.refresh_token, undefined);
        assert.equal(tk.scope, 'issues:read');
        assert.equal(t.protocolVersion, wire.version);
        const t0 = Date.now();
        const { tools } = await c.listTools();
        assert.deepEqual(tools.map((x) => x.name).sort(), ['create_issue', 'echo', 'slow_progress', 'start_job', 'whoami']);
        assert.equal(text(await c.callTool({ name: 'echo', arguments: { text: `${alg} machine` } })), `${alg} machine`);
        const who = JSON.parse(text(await c.callTool({ name: 'whoami', arguments: {} })));
        assert.match(who.authorization, /^Bearer oidc_at_/);
        const ui = await http(`${idp.base}/oidc/userinfo`, { headers: { authorization: who.authorization } });
        assert.equal(ui.status, 200);
        assert.equal(ui.json.sub, 'client:oidc-client', "the upstream's own client-credentials token");
        for (const e of seenSince(t0)) {
          for (const [hk, v] of Object.entries(e.headers)) assert.ok(!hasBrokerToken(String(v)), `${hk} carries a broker token`);
          assert.equal(e.headers['x-mcp-user'], `oidc:client:${id}`);
          assert.equal(e.headers['x-mcp-client'], id);
          assert.equal(e.headers['mcp-protocol-version'], wire.version);
        }
        assert.equal(await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${id}' AND status = 'active'`), '1');
      });
    }

    it('a key not in the JWKS is refused invalid_client: the SDK reports it, nothing written, the node healthy', async () => {
      const wlog = [];
      const c0 = await counts();
      const refusals0 = broker.logs().filter((l) => l.includes('"event":"client_assertion.refused"')).length;
      const p = new PrivateKeyJwtProvider({ clientId: id, privateKey: pem(stranger), algorithm: 'ES256', expectedIssuer: broker.url });
      await assert.rejects(connect(p, recording(wlog)));
      const tok = wlog.filter((e) => e.path === '/token');
      assert.ok(tok.length >= 1, seq(wlog).join('\n'));
      for (const e of tok) {
        assert.equal(e.auth, 'assertion');
        assert.equal(e.status, 401, seq(wlog).join('\n'));
        assert.equal(e.error, 'invalid_client');
      }
      assert.equal(p.tokens(), undefined);
      assert.deepEqual(await counts(), c0, 'nothing written to grants or tokens');
      const why = broker.logs().filter((l) => l.includes('"event":"client_assertion.refused"')).slice(refusals0).map((l) => JSON.parse(l).msg);
      assert.ok(why.length >= 1 && why.every((m) => m === 'no key of the client verifies the signature'), why.join('\n'));
      assert.equal((await http(`${broker.url}/healthz`)).status, 200);
      assert.equal((await http(`${broker.url}/readyz`)).status, 200);
    });
  });
}

describe('afterwards', () => {
  it('the JWKS came from the shared cache (one fetch of the jwks_uri for every exchange)', () => {
    assert.equal(docs.hits(KEYS_PATH), 1);
  });
  it('no broker log line carries a token, a code or an assertion', () => {
    const leaks = broker.logs().filter((l) => /mcpb_(at|rt|ac)_|oidc_(at|rt)_|eyJ[A-Za-z0-9_-]{20,}\./.test(l));
    assert.equal(leaks.length, 0, leaks.join('\n'));
  });
});
