// The SDK journey shared by tests/e2e/sdk.test.mjs and tests/e2e/sdk_cimd.test.mjs
// (not a *.test.mjs itself, so ctest does not register it): the official MCP
// TypeScript SDK as the client, through the real broker, to a real SDK-built
// downstream MCP server (tests/fakes/mcp-server.mjs), with the fake GitHub
// (tests/fakes/idp.mjs) as the upstream IdP. The test is the user's browser:
// it drives the broker's consent page and the fake login.
//
// defineSdkJourney({ cimd }) declares the whole describe()/it() suite. With
// cimd: false the broker has dynamic registration only and the SDK registers
// (DCR). With cimd: true the SDK's OAuthClientProvider has a clientMetadataUrl
// and the broker advertises client_id_metadata_document_supported, so the SDK
// uses that URL as its client_id and never calls /register. The document is
// served over HTTPS by the test (tests/lib/tls.mjs, a throwaway CA); the
// broker trusts that CA and reaches the server through a cimd_resolve pin
// with the 127.0.0.1/32 testing allowance. The `if (cimd)` branches are where
// the two journeys differ.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and
// `npm ci` in tests/ (tests/run.sh does it).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { CallToolResultSchema, LATEST_PROTOCOL_VERSION, LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { startIdp } from '../fakes/idp.mjs';
import { startMcpServer } from '../fakes/mcp-server.mjs';
import { startBroker, baseConfig, createDatabase, freePort, psql, waitFor, http } from '../lib/harness.mjs';
import { CookieJar, browserGet, browserPost, parseConsent } from '../lib/flow.mjs';
import { makeCa, startHttpsServer } from '../lib/tls.mjs';

export const sha256hex = (s) => createHash('sha256').update(s).digest('hex');
export const b64sha = (s) => createHash('sha256').update(s).digest('base64url');
export function withTimeout(promise, ms, message) {
  let timer;
  const t = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}
/** The tools of the SDK 2.4 server fake (tests/fakes/sdk2-downstream.mjs) by scope. */
export const SDK2_SCOPES = { 'issues:read': ['echo', 'whoami', 'slow_progress', 'start_job'], 'issues:write': ['*'] };
/** A resource in front of that server: its scopes, issues:read by default; extra overrides. */
export const sdk2Resource = (downstream, { path = '/mcp', upstream = 'gh', ...extra } = {}) =>
  ({ path, upstream, downstream, scopes: SDK2_SCOPES, default_scopes: ['issues:read'], ...extra });
/** The fake IdP's GitHub personality, as the broker's upstream. */
export const githubOf = (idpBase) => ({
  preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret',
  authorize_url: `${idpBase}/github/login/oauth/authorize`, token_url: `${idpBase}/github/login/oauth/access_token`,
  userinfo_url: `${idpBase}/github/api/user`, revoke_url: `${idpBase}/github/api/applications/{client_id}/grant`,
  scopes: ['read:user', 'repo'],
});
/** The fake IdP's OIDC personality granting the broker client credentials (machine clients). */
export const machineOidcOf = (idpBase) => ({
  preset: 'oidc', issuer: `${idpBase}/oidc`, client_id: 'oidc-client', client_secret: 'oidc-secret',
  scopes: ['api'], client_credentials: true,
});

/**
 * The SDK 2.4 server fake's tool round through client at wire: tools/list
 * gives its five tools, echo echoes tag, and whoami tells the Authorization
 * the downstream got (matching auth) and the wire it spoke. Returns whoami's
 * answer.
 */
export async function sdk2ToolRound(client, wire, { tag, auth }) {
  const text = (r) => r.content[0].text;
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((x) => x.name).sort(), ['create_issue', 'echo', 'slow_progress', 'start_job', 'whoami']);
  assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: `${tag} at ${wire.version}` } })), `${tag} at ${wire.version}`);
  const who = JSON.parse(text(await client.callTool({ name: 'whoami', arguments: {} })));
  assert.match(who.authorization, auth);
  assert.equal(who.era, wire.version === '2026-07-28' ? 'modern' : 'legacy');
  return who;
}

export const hasBrokerToken = (v) => typeof v === 'string' && /mcpb_(at|rt|ac)_/.test(v);

/**
 * The user's browser: loads the SDK's authorization URL (the broker's consent
 * page), approves, logs in at the fake GitHub, follows /callback and returns
 * { redirect, page }: the redirect to the client's redirect_uri (never
 * fetched: the client is not listening, the test reads the code from it) and
 * the consent page's HTML.
 */
export async function browse(authorizationUrl, { brokerUrl, login = 'alice' }) {
  const jar = new CookieJar();
  const page = await browserGet(authorizationUrl, jar);
  assert.equal(page.status, 200, `consent page: ${page.status} ${page.text.slice(0, 300)}`);
  const consent = parseConsent(page.text);
  const approved = await browserPost(new URL(consent.action, brokerUrl).toString(), jar, { ...consent.fields, decision: 'approve' });
  assert.equal(approved.status, 302, `consent approve: ${approved.status} ${approved.text.slice(0, 300)}`);
  const up = new URL(approved.headers.get('location'));
  assert.notEqual(up.origin, new URL(brokerUrl).origin, 'approve redirects to the upstream IdP');
  up.searchParams.set('login', login);
  up.searchParams.set('auto', '1');
  const idp = await http(up.toString());
  assert.equal(idp.status, 302, `fake IdP login: ${idp.status}`);
  const cb = await browserGet(idp.headers.get('location'), jar);
  assert.equal(cb.status, 302, `broker /callback: ${cb.status} ${cb.text.slice(0, 300)}`);
  return { redirect: new URL(cb.headers.get('location')), page: page.text };
}

/** An in-memory OAuthClientProvider whose redirectToAuthorization is the test's browser. */
export class TestOAuthProvider {
  constructor({ redirectUrl, brokerUrl, clientMetadataUrl = 'https://client.invalid/mcp-broker-e2e.json' }) {
    this._redirectUrl = redirectUrl;
    this.brokerUrl = brokerUrl;
    // Used as a URL client_id if the broker advertises
    // client_id_metadata_document_supported (the CIMD journey passes the
    // document's URL; without CIMD the default must be ignored).
    this.clientMetadataUrl = clientMetadataUrl;
    this.registrations = 0;   // saveClientInformation() calls (with CIMD the SDK saves the URL client_id once)
    this.saved = [];          // every saveTokens() call (kept in memory only)
    this.authorizations = []; // {url, redirect, page, state}
    this.lastCode = undefined;
    this._state = undefined;
  }

  get redirectUrl() { return this._redirectUrl; }
  get clientMetadata() {
    return {
      client_name: 'mcp-broker e2e (MCP TypeScript SDK)',
      redirect_uris: [this._redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state() { this._state = randomBytes(12).toString('base64url'); return this._state; }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; this.registrations++; }
  tokens() { return this._tokens; }
  saveTokens(t) { this._tokens = t; this.saved.push(t); }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  saveDiscoveryState(s) { this.discovery = s; }
  discoveryState() { return this.discovery; }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this._verifier = undefined;
    if (scope === 'all' || scope === 'discovery') this.discovery = undefined;
  }

  async redirectToAuthorization(url) {
    const { redirect, page } = await browse(url.toString(), { brokerUrl: this.brokerUrl });
    this.authorizations.push({ url, redirect, page, state: this._state });
    this.lastCode = redirect.searchParams.get('code');
  }
}

/** fetch that records what the SDK asked (method, URL, status, a few headers; never a token). */
export function recordingFetch(log) {
  return async (input, init = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const e = { t: Date.now(), method: init.method || 'GET', path: url.pathname, url: url.toString() };
    if (init.body instanceof URLSearchParams) {
      e.form = Object.fromEntries([...init.body.keys()].map((k) => [k, /token|code|verifier|secret/.test(k) ? '[redacted]' : init.body.get(k)]));
    }
    log.push(e);
    const res = await fetch(input, init);
    e.status = res.status;
    e.wwwAuthenticate = res.headers.get('www-authenticate');
    e.contentType = res.headers.get('content-type');
    return res;
  };
}

/**
 * Declares the SDK journey suite. cimd: false, dynamic registration (DCR);
 * cimd: true, a Client ID Metadata Document URL as client_id (no /register).
 */
export function defineSdkJourney({ cimd }) {
  describe(cimd ? 'MCP TypeScript SDK through the broker with a CIMD client_id' : 'MCP TypeScript SDK through the broker', { timeout: 60000 }, () => {
    let idp, mcp, broker, dbUrl, provider, client, transport, mcpUrl, redirectUrl;
    let ca, docs, clientMetadataUrl; // CIMD only: the document's CA, HTTPS server and URL
    const DOC_PATH = '/oauth/mcp-broker-e2e.json';
    const log = []; // the SDK's HTTP requests
    const errors = []; // transport errors the SDK reported

    function newTransport(opts = {}) {
      const t = new StreamableHTTPClientTransport(mcpUrl, {
        authProvider: provider,
        fetch: recordingFetch(log),
        reconnectionOptions: { initialReconnectionDelay: 100, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1.5, maxRetries: 3 },
        ...opts,
      });
      return t;
    }
    function newClient() {
      const c = new Client({ name: 'mcp-broker-e2e', version: '1.0.0' });
      c.onerror = (e) => errors.push(e);
      return c;
    }
    const downstreamCalls = (tool) => mcp.seen.filter((e) => e.tools.includes(tool));
    const text = (r) => r.content[0].text;

    before(async () => {
      idp = await startIdp({ port: 0 });
      mcp = await startMcpServer({ port: 0 });
      dbUrl = await createDatabase(cimd ? 'e2e_sdk_cimd' : 'e2e_sdk');
      const port = await freePort();
      redirectUrl = `http://127.0.0.1:${await freePort()}/callback`;
      if (cimd) {
        // The client's metadata document, over HTTPS with a throwaway CA.
        ca = await makeCa();
        docs = await startHttpsServer({ cert: ca.serverCert, key: ca.serverKey });
        clientMetadataUrl = docs.url(DOC_PATH);
        docs.routes[DOC_PATH] = {
          json: {
            client_id: clientMetadataUrl,
            client_name: 'mcp-broker e2e (MCP TypeScript SDK, CIMD)',
            client_uri: 'https://client.example.test/',
            redirect_uris: [redirectUrl],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'none',
          },
          headers: { 'cache-control': 'public, max-age=3600' },
        };
      }
      const gh = `${idp.base}/github`;
      const cfg = baseConfig({
        port, databaseUrl: dbUrl, extra: {
          registration: cimd ? {
            // DCR stays on: the SDK must still prefer the URL client_id.
            dynamic: true, client_id_metadata_documents: true, cimd_ca_file: ca.caCert,
            cimd_resolve: [`client.example.test:${docs.port}:127.0.0.1`], cimd_allow_private_cidrs: ['127.0.0.1/32'],
            cimd_timeout_ms: 3000,
          } : { dynamic: true, client_id_metadata_documents: false },
          upstreams: {
            gh: {
              preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret',
              authorize_url: `${gh}/login/oauth/authorize`, token_url: `${gh}/login/oauth/access_token`,
              userinfo_url: `${gh}/api/user`, revoke_url: `${gh}/api/applications/{client_id}/grant`,
              scopes: ['read:user', 'repo'],
            },
          },
          resources: [{
            path: '/mcp', upstream: 'gh', downstream: mcp.url,
            scopes: { 'issues:read': ['list_issues', 'echo', 'whoami', 'slow_progress'], 'issues:write': ['*'] },
            default_scopes: ['issues:read'],
          }],
        },
      });
      broker = await startBroker(cfg);
      mcpUrl = new URL(`${broker.url}/mcp`);
      provider = new TestOAuthProvider({ redirectUrl, brokerUrl: broker.url, ...(cimd ? { clientMetadataUrl } : {}) });
    });

    after(async () => {
      await client?.close().catch(() => {});
      await broker?.stop();
      await mcp?.close();
      await idp?.close();
      await docs?.close();
      ca?.cleanup();
    });

    it(cimd
      ? 'discovers, uses its metadata document URL as client_id (no /register), authorizes with PKCE and connects'
      : 'discovers, registers, authorizes with PKCE and connects (401 → UnauthorizedError → finishAuth → reconnect)', async () => {
      client = newClient();
      transport = newTransport();
      await assert.rejects(client.connect(transport), (e) => e instanceof UnauthorizedError);

      // Discovery from the 401: the challenge named the PRM document, and the
      // SDK read it and the broker's RFC 8414 metadata.
      const first = log.find((e) => e.path === '/mcp');
      assert.equal(first.status, 401);
      assert.match(first.wwwAuthenticate, /^Bearer /);
      const prmUrl = `${broker.url}/.well-known/oauth-protected-resource/mcp`;
      assert.ok(first.wwwAuthenticate.includes(`resource_metadata="${prmUrl}"`), first.wwwAuthenticate);
      assert.ok(first.wwwAuthenticate.includes('scope="issues:read"'), 'the challenge asks for the default scopes');
      assert.ok(log.some((e) => e.url === prmUrl && e.status === 200), 'PRM fetched from the challenge URL');
      assert.ok(log.some((e) => e.path === '/.well-known/oauth-authorization-server' && e.status === 200), 'AS metadata fetched');
      const d = provider.discovery;
      assert.equal(d.resourceMetadata.resource, `${broker.url}/mcp`);
      assert.deepEqual(d.resourceMetadata.authorization_servers, [broker.url]);
      assert.equal(d.authorizationServerMetadata.issuer, broker.url);
      assert.deepEqual(d.authorizationServerMetadata.code_challenge_methods_supported, ['S256']);
      if (cimd) {
        // CIMD is on (and DCR too): the SDK uses its clientMetadataUrl as client_id.
        assert.equal(d.authorizationServerMetadata.client_id_metadata_document_supported, true);
        assert.equal(d.authorizationServerMetadata.registration_endpoint, `${broker.url}/register`);
        assert.equal(log.filter((e) => e.path === '/register').length, 0, 'the SDK did not call /register');
        assert.equal(provider.clientInformation().client_id, clientMetadataUrl);
      } else {
        // CIMD is off: the SDK must ignore its clientMetadataUrl and register (DCR).
        assert.equal(d.authorizationServerMetadata.client_id_metadata_document_supported, false);

        // Dynamic registration.
        const reg = log.filter((e) => e.path === '/register');
        assert.equal(reg.length, 1);
        assert.equal(reg[0].status, 201);
        assert.equal(provider.registrations, 1);
        assert.ok(provider.clientInformation().client_id);
        assert.notEqual(provider.clientInformation().client_id, provider.clientMetadataUrl);
      }
      assert.equal(provider.clientInformation().client_secret, undefined, 'public client');
      if (cimd) {
        assert.equal(await psql(dbUrl, "SELECT count(*) FROM clients WHERE kind = 'dynamic'"), '0');
        // The broker fetched the document (once) to show the consent page.
        assert.equal(docs.hits(DOC_PATH), 1);
        assert.equal(await psql(dbUrl, `SELECT kind || '|' || client_name FROM clients WHERE client_id = '${clientMetadataUrl}'`),
          'cimd|mcp-broker e2e (MCP TypeScript SDK, CIMD)');
      }

      // The authorization request: PKCE S256, resource indicator, least-privilege scope.
      assert.equal(provider.authorizations.length, 1);
      const { url, redirect, state, page } = provider.authorizations[0];
      assert.equal(url.origin + url.pathname, `${broker.url}/authorize`);
      if (cimd) {
        assert.equal(url.searchParams.get('client_id'), clientMetadataUrl);
        // The consent page names the document and its host.
        assert.ok(page.includes('<strong>mcp-broker e2e (MCP TypeScript SDK, CIMD)</strong>'), page.slice(0, 600));
        assert.ok(page.includes(`This application is described by <span class="host">client.example.test:${docs.port}</span>`), page);
      }
      assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
      assert.equal(url.searchParams.get('code_challenge'), b64sha(provider.codeVerifier()));
      assert.equal(url.searchParams.get('resource'), `${broker.url}/mcp`);
      assert.equal(url.searchParams.get('scope'), 'issues:read');
      assert.equal(url.searchParams.get('redirect_uri'), redirectUrl);
      // The redirect back to the client: code, state, iss (RFC 9207).
      assert.equal(redirect.origin + redirect.pathname, redirectUrl);
      assert.ok(provider.lastCode?.startsWith('mcpb_ac_'), 'a broker authorization code');
      assert.equal(redirect.searchParams.get('state'), state);
      assert.equal(redirect.searchParams.get('iss'), broker.url);
      assert.equal(provider.tokens(), undefined, 'no tokens before the code exchange');

      // Token exchange.
      await transport.finishAuth(provider.lastCode);
      const tok = log.filter((e) => e.path === '/token');
      assert.equal(tok.length, 1);
      assert.equal(tok[0].status, 200);
      assert.equal(tok[0].form.grant_type, 'authorization_code');
      assert.equal(tok[0].form.code_verifier, '[redacted]', 'PKCE verifier sent');
      assert.equal(tok[0].form.resource, `${broker.url}/mcp`);
      if (cimd) {
        assert.equal(tok[0].form.client_id, clientMetadataUrl, 'the URL client_id at the token endpoint');
        assert.equal(tok[0].form.client_secret, undefined);
      }
      const t = provider.tokens();
      assert.ok(t.access_token.startsWith('mcpb_at_'), 'a broker access token');
      assert.ok(t.refresh_token?.startsWith('mcpb_rt_'), 'a broker refresh token');
      assert.equal(t.token_type.toLowerCase(), 'bearer');
      assert.equal(t.scope, 'issues:read');

      // Reconnect: a new transport, the same provider (now holding tokens).
      transport = newTransport();
      await client.connect(transport);
      assert.ok(transport.sessionId, 'the downstream session id came back through the broker');
      assert.equal(client.getServerVersion().name, 'fake-downstream');
      assert.equal(transport.protocolVersion, LATEST_PROTOCOL_VERSION);
      const init = mcp.seen.find((e) => e.rpc.includes('initialize'));
      assert.ok(init, 'initialize reached the downstream');
      assert.equal(init.headers['mcp-session-id'], undefined);
    });

    it('lists tools and calls echo through the broker', async () => {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((x) => x.name).sort(), ['create_issue', 'echo', 'list_issues', 'slow_progress', 'whoami']);
      const r = await client.callTool({ name: 'echo', arguments: { text: 'hello through the broker' } });
      assert.equal(text(r), 'hello through the broker');
      assert.equal(r.isError, undefined);
      const calls = downstreamCalls('echo');
      assert.equal(calls.length, 1);
      assert.equal(calls[0].status, 200);
      assert.equal(calls[0].headers['mcp-session-id'], transport.sessionId);
      assert.equal(calls[0].headers['mcp-protocol-version'], LATEST_PROTOCOL_VERSION);
    });

    it('server notifications reach the client on the idle GET stream', async () => {
      // After notifications/initialized the SDK opened the standalone GET SSE
      // stream; the broker holds it open (idle) and must pass events as they come.
      const get = mcp.seen.find((e) => e.method === 'GET' && e.session === transport.sessionId && !e.headers['last-event-id']);
      assert.ok(get, 'the standalone GET stream reached the downstream');
      assert.ok(!get.closed, 'and is still open');
      // The SDK sent it on its own after initialize; its answer may still be on
      // the way to the client (the downstream saw it first).
      assert.ok(await waitFor(() => log.some((e) => e.method === 'GET' && e.path === '/mcp' && e.status === 200 &&
        e.contentType?.startsWith('text/event-stream')), 3000), 'the client has the GET stream open (200, text/event-stream)');
      const got = new Promise((resolve) => client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => resolve({ t: Date.now(), n })));
      const r = await client.callTool({ name: 'echo', arguments: { text: 'on the GET stream', notify: true } });
      assert.equal(text(r), 'on the GET stream');
      const { n } = await withTimeout(got, 5000, 'no notification on the GET stream within 5 s');
      assert.equal(n.params.data, 'on the GET stream');
      assert.equal(n.params.logger, 'echo');
    });

    it('whoami: the downstream gets the upstream (GitHub) token, never the broker token', async () => {
      const r = await client.callTool({ name: 'whoami', arguments: {} });
      const who = JSON.parse(text(r));
      assert.ok(typeof who.authorization === 'string' && who.authorization.startsWith('Bearer gho_'),
        'Authorization is the fake GitHub access token');
      assert.ok(!hasBrokerToken(who.authorization), 'the broker token is not forwarded');
      assert.equal(who.user, 'gh:1001');
      assert.equal(who.client, provider.clientInformation().client_id);
      assert.equal(who.scopes, 'issues:read');
      // Nothing the downstream ever received carries a broker token or cookie.
      for (const e of mcp.seen) {
        for (const [k, v] of Object.entries(e.headers)) {
          assert.ok(!hasBrokerToken(String(v)), `header ${k} of ${e.method} ${e.path} carries a broker token`);
        }
        assert.equal(e.headers.cookie, undefined);
        assert.ok(e.headers.authorization?.startsWith('Bearer gho_'), `${e.method} without the upstream token`);
      }
    });

    it('progress notifications arrive while the tool runs (the SSE answer is not buffered)', async () => {
      const progress = [];
      const started = Date.now();
      const r = await client.callTool({ name: 'slow_progress', arguments: { steps: 6, interval_ms: 100 } }, CallToolResultSchema, {
        onprogress: (p) => progress.push({ t: Date.now(), ...p }),
      });
      const done = Date.now();
      assert.deepEqual(progress.map((p) => p.progress), [1, 2, 3, 4, 5, 6]);
      assert.ok(progress.every((p) => p.total === 6));
      assert.ok(progress.every((p) => p.t <= done));
      // The first notification arrives ~100 ms in, the call ends ~600 ms in;
      // a buffering proxy would deliver all of them at the end.
      assert.ok(done - progress[0].t >= 300, `first progress ${progress[0].t - started} ms, done ${done - started} ms`);
      assert.ok(progress[5].t - progress[0].t >= 300, 'notifications are spread over the call');
      const res = JSON.parse(text(r));
      assert.equal(res.steps, 6);
      const post = downstreamCalls('slow_progress').at(-1);
      assert.equal(post.headers.accept.includes('text/event-stream'), true);
    });

    it('create_issue with only issues:read: 403 insufficient_scope before the downstream sees it', async () => {
      const before = log.length;
      const err = await client.callTool({ name: 'create_issue', arguments: { title: 'nope' } }).then(
        () => assert.fail('create_issue succeeded with issues:read'), (e) => e);
      // The SDK tries its step-up (auth() with the challenged scope; holding a
      // refresh token it refreshes, which cannot widen the grant), gets the same
      // 403 again and gives up with a StreamableHTTPError carrying the status.
      assert.ok(err instanceof StreamableHTTPError, `${err?.constructor?.name}: ${err?.message}`);
      assert.equal(err.code, 403);
      assert.match(err.message, /403/);
      const forbidden = log.slice(before).filter((e) => e.path === '/mcp' && e.method === 'POST');
      assert.equal(forbidden.length, 2, 'the call and the SDK retry after its step-up attempt');
      for (const e of forbidden) {
        assert.equal(e.status, 403);
        assert.match(e.wwwAuthenticate, /^Bearer /);
        assert.match(e.wwwAuthenticate, /error="insufficient_scope"/);
        assert.match(e.wwwAuthenticate, /scope="issues:read issues:write"/);
        assert.ok(e.wwwAuthenticate.includes(`resource_metadata="${broker.url}/.well-known/oauth-protected-resource/mcp"`));
      }
      const refreshes = log.slice(before).filter((e) => e.path === '/token');
      assert.equal(refreshes.length, 1);
      assert.equal(refreshes[0].form.grant_type, 'refresh_token');
      assert.equal(downstreamCalls('create_issue').length, 0, 'the downstream never saw the forbidden call');
      assert.equal(mcp.state.issues.length, 1);
      // The session still works afterwards with the refreshed token.
      const r = await client.callTool({ name: 'list_issues', arguments: {} });
      assert.equal(JSON.parse(text(r)).issues.length, 1);
    });

    it('server-closed SSE stream: the SDK resumes it through the broker with Last-Event-ID', async () => {
      const progress = [];
      const tokens = [];
      const idAt = {}; // progress -> id of the event that carried it
      const r = await client.callTool({ name: 'slow_progress', arguments: { steps: 5, interval_ms: 80, close_stream_after: 2 } },
        CallToolResultSchema, {
          // The SDK reports an event's id before it dispatches its message.
          onprogress: (p) => { progress.push(p.progress); idAt[p.progress] = tokens.at(-1); },
          onresumptiontoken: (t) => tokens.push(t),
        });
      assert.equal(JSON.parse(text(r)).steps, 5);
      assert.deepEqual(progress, [1, 2, 3, 4, 5]);
      const s = mcp.sessions.get(transport.sessionId);
      assert.equal(s.closedStreams, 1);
      // The resume: a GET with Last-Event-ID = the last event id the client saw
      // before the server closed the stream, with the session id, through the broker.
      const resumes = mcp.seen.filter((e) => e.method === 'GET' && e.headers['last-event-id']);
      assert.equal(resumes.length, 1);
      const g = resumes[0];
      assert.equal(g.headers['last-event-id'], idAt[2], 'resumed after the event of progress 2');
      // Nothing was skipped or repeated: every later event id is new.
      assert.equal(new Set(tokens).size, tokens.length);
      assert.ok(idAt[3] && idAt[3] !== idAt[2]);
      assert.equal(g.headers['mcp-session-id'], transport.sessionId);
      assert.ok(g.headers.authorization.startsWith('Bearer gho_'));
      assert.equal(g.status, 200);
      assert.ok(log.some((e) => e.method === 'GET' && e.path === '/mcp' && e.status === 200 &&
        e.contentType?.startsWith('text/event-stream')));
    });

    it('client reconnect: a new transport resumes the session and the interrupted call with Last-Event-ID', async () => {
      const sessionId = transport.sessionId;
      const tokens = [];
      let got3;
      const third = withTimeout(new Promise((r) => { got3 = r; }), 5000, 'no progress 3 within 5 s');
      const interrupted = client.callTool({ name: 'slow_progress', arguments: { steps: 10, interval_ms: 100 } }, CallToolResultSchema, {
        onprogress: (p) => { if (p.progress === 3) got3(); },
        onresumptiontoken: (t) => tokens.push(t),
      }).then(() => 'completed', (e) => e);
      await third;
      const post = downstreamCalls('slow_progress').at(-1);
      // The network drops: the client's connections go away mid-stream.
      await client.close();
      const outcome = await interrupted;
      assert.ok(outcome instanceof Error, 'the interrupted call did not complete on the closed client');
      // The broker passes the disconnect downstream (the server's SSE response closes).
      assert.ok(await waitFor(() => post.closed, 5000), 'the downstream saw the client disconnect');
      assert.ok(!post.finished, 'the downstream stream was cut, not completed');
      const lastSeen = tokens.at(-1);
      assert.ok(lastSeen);

      // Reconnect with the same session id and resume from the last event id.
      client = newClient();
      transport = newTransport({ sessionId });
      await client.connect(transport); // no initialize: the session exists
      assert.equal(transport.sessionId, sessionId);
      const resumed = [];
      const onmessage = transport.onmessage;
      transport.onmessage = (m, x) => { resumed.push(m); onmessage(m, x); };
      const resumedTokens = [];
      // With a resumptionToken the SDK sends nothing: it GETs the stream with
      // Last-Event-ID and maps the replayed answer onto this request's id.
      const r = await client.request({ method: 'tools/call', params: { name: 'slow_progress', arguments: { steps: 10, interval_ms: 100 } } },
        CallToolResultSchema, { resumptionToken: lastSeen, onresumptiontoken: (t) => resumedTokens.push(t), timeout: 10000 });
      const res = JSON.parse(text(r));
      assert.equal(res.steps, 10);
      assert.equal(res.sent.length, 10, 'the tool kept running while the client was away');
      assert.equal(res.session, sessionId);
      // Only one execution: the resume replayed the stream, it did not call again.
      assert.equal(downstreamCalls('slow_progress').filter((e) => e.t >= post.t).length, 1);
      const g = mcp.seen.filter((e) => e.method === 'GET' && e.headers['last-event-id'] === lastSeen);
      assert.equal(g.length, 1);
      assert.equal(g[0].headers['mcp-session-id'], sessionId);
      assert.ok(g[0].headers.authorization.startsWith('Bearer gho_'));
      assert.equal(g[0].status, 200);
      assert.ok(g[0].finished, 'the resumed stream ended normally, after the result');
      // Exactly what came after the last event the client had seen: the
      // interrupted call's progress 4..10 (replayed and then live, none lost,
      // none repeated), then its result.
      const notes = resumed.filter((m) => m.method === 'notifications/progress');
      assert.deepEqual(notes.map((m) => m.params.progress), [4, 5, 6, 7, 8, 9, 10]);
      assert.equal(new Set(notes.map((m) => m.params.progressToken)).size, 1);
      assert.equal(resumed.filter((m) => 'result' in m).length, 1);
      assert.equal(resumed.at(-1).result.content[0].text, text(r));
      // The SDK hands those notifications to no onprogress handler (their token
      // belongs to the request that died with the old client) and says so.
      const unknown = errors.filter((e) => /progress notification for an unknown token/.test(e.message));
      assert.equal(unknown.length, 7);
      // (The SDK does not pass onresumptiontoken along when it resumes from a
      // resumptionToken, so resumedTokens stays empty: nothing to assert there.)
      void resumedTokens;
    });

    it('expired access token: the SDK refreshes at the broker and retries the call', async () => {
      const old = provider.tokens();
      const hash = sha256hex(old.access_token);
      const n = await psql(dbUrl, `UPDATE tokens SET expires_at = now() - interval '1 second' WHERE kind = 'access' AND token_hash = '\\x${hash}'::bytea RETURNING 1`);
      assert.equal(n, '1');
      // The broker caches validated tokens (up to 30 s, never past their
      // expiry) and evicts them on its revocation channel; an expiry written
      // behind its back needs the same eviction a revocation of this one
      // token sends (revoke.c: pg_notify('mcpb_revoke', 't:' || hash)).
      await psql(dbUrl, `SELECT pg_notify('mcpb_revoke', 't:\\x${hash}')`);
      const probe = () => http(mcpUrl.toString(), {
        method: 'POST',
        headers: { authorization: `Bearer ${old.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream',
          'mcp-session-id': transport.sessionId, 'mcp-protocol-version': transport.protocolVersion },
        body: JSON.stringify({ jsonrpc: '2.0', id: 'probe', method: 'ping' }),
      });
      assert.ok(await waitFor(async () => (await probe()).status === 401, 5000), 'the expired token is refused');
      const before = log.length;
      const r = await client.callTool({ name: 'echo', arguments: { text: 'after refresh' } });
      assert.equal(text(r), 'after refresh');
      const seq = log.slice(before).map((e) => `${e.method} ${e.path} ${e.status}${e.form ? ' ' + e.form.grant_type : ''}`);
      assert.deepEqual(seq, ['POST /mcp 401', 'POST /token 200 refresh_token', 'POST /mcp 200'], seq.join('\n'));
      assert.match(log.slice(before)[0].wwwAuthenticate, /error="invalid_token"/);
      const now = provider.tokens();
      assert.ok(now.access_token !== old.access_token, 'a new access token');
      assert.ok(now.refresh_token !== old.refresh_token, 'refresh tokens rotate');
      assert.ok(now.access_token.startsWith('mcpb_at_'), 'a broker access token');
      // The old refresh token is spent (outside the grace window it would revoke the grant).
      const rows = await psql(dbUrl, `SELECT count(*) FROM tokens WHERE kind = 'refresh' AND used_at IS NOT NULL AND token_hash = '\\x${sha256hex(old.refresh_token)}'::bytea`);
      assert.equal(rows, '1');
    });

    it('step-up: re-authorising with issues:write lets create_issue through', async () => {
      const before = provider.authorizations.length;
      provider.invalidateCredentials('tokens');
      const result = await auth(provider, { serverUrl: mcpUrl, scope: 'issues:read issues:write', fetchFn: recordingFetch(log) });
      assert.equal(result, 'REDIRECT');
      assert.equal(provider.authorizations.length, before + 1);
      assert.equal(provider.authorizations.at(-1).url.searchParams.get('scope'), 'issues:read issues:write');
      assert.equal(await auth(provider, { serverUrl: mcpUrl, authorizationCode: provider.lastCode, fetchFn: recordingFetch(log) }), 'AUTHORIZED');
      assert.equal(provider.tokens().scope, 'issues:read issues:write');
      if (cimd) {
        assert.equal(log.filter((e) => e.path === '/register').length, 0, 'still no /register');
        assert.equal(provider.clientInformation().client_id, clientMetadataUrl, 'the URL client_id is reused');
      } else {
        assert.equal(provider.registrations, 1, 'the client registration is reused');
      }
      const r = await client.callTool({ name: 'create_issue', arguments: { title: 'through the broker' } });
      assert.deepEqual(JSON.parse(text(r)), { number: 2, title: 'through the broker' });
      assert.equal(downstreamCalls('create_issue').length, 1);
      // The session id was bound to the same user: the new grant keeps using it.
      assert.equal(downstreamCalls('create_issue')[0].headers['mcp-session-id'], transport.sessionId);
    });

    // A client that drops an *idle* proxied SSE stream must be noticed while
    // libmicrohttpd has the connection suspended (the proxy engine watches
    // parked sockets); otherwise the downstream keeps the old stream and
    // answers the SDK's reopened GET with 409 "Only one SSE stream is allowed
    // per session".
    it('a dropped idle GET stream is reopened by the SDK and delivers server notifications again', async () => {
      const gets = [];
      const errs = [];
      const dropFetch = (input, init = {}) => {
        if ((init.method || 'GET') !== 'GET') return fetch(input, init);
        const ac = new AbortController();
        init.signal?.addEventListener('abort', () => ac.abort(), { once: true });
        gets.push(ac);
        return fetch(input, { ...init, signal: ac.signal });
      };
      const c = new Client({ name: 'mcp-broker-e2e-drop', version: '1.0.0' });
      c.onerror = (e) => errs.push(e);
      const t = new StreamableHTTPClientTransport(mcpUrl, {
        authProvider: provider, fetch: dropFetch,
        reconnectionOptions: { initialReconnectionDelay: 100, maxReconnectionDelay: 400, reconnectionDelayGrowFactor: 2, maxRetries: 6 },
      });
      try {
        await c.connect(t);
        const streams = () => mcp.seen.filter((e) => e.method === 'GET' && e.session === t.sessionId);
        assert.ok(await waitFor(() => streams().length === 1 && streams()[0].status === 200, 5000), 'GET stream open');
        gets.at(-1).abort(); // the network drops the idle stream
        // The SDK reopens it (the downstream allows one GET stream per session,
        // so it must have let go of the old one).
        assert.ok(await waitFor(() => streams().some((e, i) => i > 0 && e.status === 200 && !e.closed), 3000),
          `reopened GET statuses: ${streams().map((e) => e.status).join(',')}; SDK: ${errs.map((e) => e.message).join('; ')}`);
        assert.ok(streams()[0].closed, 'the downstream saw the client drop the idle stream');
        const got = new Promise((resolve) => c.setNotificationHandler(LoggingMessageNotificationSchema, (n) => resolve(n)));
        await c.callTool({ name: 'echo', arguments: { text: 'after the drop', notify: true } });
        assert.equal((await withTimeout(got, 3000, 'no notification on the reopened stream')).params.data, 'after the drop');
      } finally {
        await t.terminateSession().catch(() => {});
        await c.close();
      }
    });

    it('terminates the session with DELETE through the broker', async () => {
      const sessionId = transport.sessionId;
      await transport.terminateSession();
      assert.equal(transport.sessionId, undefined);
      const del = mcp.seen.filter((e) => e.method === 'DELETE' && e.headers['mcp-session-id'] === sessionId);
      assert.equal(del.length, 1);
      assert.equal(del[0].headers['mcp-session-id'], sessionId);
      assert.equal(del[0].status, 200);
      assert.equal(mcp.sessions.has(sessionId), false);
      // The transport errors the SDK reported over the whole run are exactly
      // the expected ones.
      const expected = [
        /^Unauthorized$/, // the first connect, before authorization
        /Server returned 403 after trying upscoping/, // create_issue without issues:write
        /^SSE stream disconnected: AbortError/, // the client closed mid-stream
        /progress notification for an unknown token/, // replayed progress of the interrupted call
      ];
      const unexpected = errors.filter((e) => !expected.some((re) => re.test(e.message)));
      assert.deepEqual(unexpected.map(String), []);
      // No broker log line carries a token or a code, ours or GitHub's.
      const leaks = broker.logs().filter((l) => /mcpb_(at|rt|ac)_|gh[ory]_|ghcode_/.test(l));
      assert.equal(leaks.length, 0, `${leaks.length} broker log lines carry a token or code`);
    });

    if (cimd) {
      it('the broker fetched the document once and served every later step from its cache', async () => {
        // Two authorizations, two code exchanges, refreshes and many proxied
        // calls: one fetch (max-age=3600), one TLS connection.
        assert.equal(docs.hits(DOC_PATH), 1);
        assert.equal(docs.requests.length, 1);
        assert.equal(docs.connections, 1);
        assert.match(docs.requests[0].headers['user-agent'], /^mcp-broker\//);
        assert.equal(log.filter((e) => e.path === '/register').length, 0);
        assert.equal(await psql(dbUrl, 'SELECT count(*) FROM clients'), '1');
        const grants = await psql(dbUrl, `SELECT count(*) FROM grants WHERE client_id = '${clientMetadataUrl}'`);
        assert.equal(grants, '2', 'the first authorization and the step-up');
        const fetches = broker.logs().filter((l) => l.includes('"event":"cimd.fetch"')).map((l) => JSON.parse(l));
        assert.deepEqual(fetches.map((f) => [f.result, f.status]), [['ok', 200]]);
      });
    }
  });
}
