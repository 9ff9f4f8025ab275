// End-to-end of DPoP (RFC 9449) with the MCP TypeScript SDK 2.4's own DPoP
// support (@modelcontextprotocol/client: DpopSession, OAuthClientProvider.dpop(),
// which makes auth() sign a proof into every token request and the transport
// wrap its fetch with withDpopFromProvider: `Authorization: DPoP <token>` and a
// fresh proof per request, use_dpop_nonce retried at /token and at the
// resource, DPoP-Nonce remembered) through the real broker to the SDK 2.4
// server (tests/fakes/sdk2-downstream.mjs), on both wires (2025-11-25 by
// default negotiation, 2026-07-28 pinned), against two brokers: one without
// and one with dpop.require_nonce.
//
// Per broker and wire:
//  - an authorization-code client (DCR, PKCE; the test is the browser) whose
//    provider has dpop(): token_type DPoP, the access and refresh rows bound
//    to the session's thumbprint (tokens.jkt); tools/list and tool calls in
//    the DPoP scheme, each with its own proof (htm, htu, ath, the key); the
//    downstream gets the upstream token and never a DPoP header or a broker
//    token; the bound token is refused as a Bearer token; SSE progress; with
//    require_nonce, the SDK's own use_dpop_nonce retries at /token and at the
//    resource (a stale nonce planted in its session); the access token
//    expiring: the SDK refreshes with a proof and gets a bound pair again;
//    a new key with the old tokens (a restarted client): refused
//    invalid_dpop_proof at the resource and at /token (the refresh token
//    not consumed), the SDK drops its tokens and signs in again, bound to
//    the new key;
//  - the same client on a require_dpop resource (/strict);
//  - a machine client: ClientCredentialsProvider (which has no dpop() in 2.4)
//    subclassed with dpop(), on a require_dpop resource (/machine) backed by
//    an OIDC upstream's client_credentials;
//  - a client without dpop() on /strict, and a ClientCredentialsProvider
//    without dpop() on /machine: they get Bearer tokens the resource refuses;
//    the SDK fails the connect with an error (no hang), the downstream sees
//    nothing.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and `npm ci`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Client, ClientCredentialsProvider, DpopSession, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';
import { startIdp } from '../fakes/idp.mjs';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, psql, waitFor, http } from '../lib/harness.mjs';
import { TestOAuthProvider, sha256hex, hasBrokerToken, withTimeout, sdk2Resource, githubOf, machineOidcOf, sdk2ToolRound } from './sdk_journey.mjs';

const WIRES = [
  { version: '2025-11-25', negotiation: undefined },
  { version: '2026-07-28', negotiation: { mode: { pin: '2026-07-28' } } },
];
const MODES = [{ nonce: false }, { nonce: true }];
const SECRET = (id) => `${id}-secret-0123456789abcdef`;
const machineId = (i) => `dpop-machine-${i}`;
const plainMachineId = (i) => `plain-machine-${i}`;

/** The SDK's own provider (TestOAuthProvider: in memory, the test as browser) with a DPoP session. */
class DpopOAuthProvider extends TestOAuthProvider {
  constructor(opts, session) { super(opts); this.session = session; }
  dpop() { return this.session; }
}
/** SDK 2.4's ClientCredentialsProvider has no dpop(); the interface's optional method added. */
class DpopClientCredentialsProvider extends ClientCredentialsProvider {
  constructor(opts, session) { super(opts); this.session = session; }
  dpop() { return this.session; }
}

const b64json = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
/** The header and claims of a DPoP proof (it is a JWS: nothing secret in them). */
const decodeProof = (p) => { const [h, c] = p.split('.'); return { header: b64json(h), claims: b64json(c) }; };
/** RFC 7638 thumbprint of an EC public JWK (the SDK's default ES256 keys). */
const thumbprint = (jwk) => createHash('sha256').update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })).digest('base64url');
const ath = (token) => createHash('sha256').update(token).digest('base64url');

/**
 * A fetch recording each request as the broker got it: method, path, the
 * Authorization scheme, the DPoP proof decoded, the grant type; and the
 * answer: status, WWW-Authenticate, DPoP-Nonce, /token's error and token_type.
 * It sits under the SDK's DPoP wrapper, so it sees the proofs the SDK signed.
 */
function recording(log) {
  return async (input, init = {}) => {
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    const headers = new Headers(init.headers);
    const e = { t: Date.now(), method: init.method || 'GET', path: url.pathname };
    const authz = headers.get('authorization');
    e.scheme = authz ? authz.split(' ')[0] : null;
    e.token = authz ? authz.split(' ')[1] : null;
    if (headers.get('dpop')) e.proof = decodeProof(headers.get('dpop'));
    if (init.body instanceof URLSearchParams) e.grant = init.body.get('grant_type');
    log.push(e);
    const res = await fetch(input, init);
    e.status = res.status;
    e.wwwAuthenticate = res.headers.get('www-authenticate');
    e.nonce = res.headers.get('dpop-nonce');
    e.contentType = res.headers.get('content-type');
    if (url.pathname === '/token') {
      const j = await res.clone().json().catch(() => ({}));
      e.error = j.error;
      e.tokenType = j.token_type;
    }
    return res;
  };
}
const seq = (entries) => entries.map((e) => `${e.method} ${e.path} ${e.status}${e.grant ? ` ${e.grant}` : ''}${e.error ? ` ${e.error}` : ''}`);
const text = (r) => r.content[0].text;
// The downstream saw none of this client's requests to path: every answer
// it got there is the broker's own 401 challenge. (Judged from the client's
// side: the downstream is shared, and another test's client may still be
// reconnecting its standalone GET stream to it.)
function neverForwarded(entries, path) {
  const there = entries.filter((e) => e.path === path);
  assert.ok(there.length >= 1, `a request to ${path}: ${seq(entries).join(', ')}`);
  for (const e of there) {
    assert.equal(e.status, 401, `${e.method} ${path}: ${seq(entries).join(', ')}`);
    assert.match(e.wwwAuthenticate || '', /^(DPoP|Bearer) resource_metadata=/);
  }
}
// The 2025-11-25 client opens its standalone GET stream in the background: it may still be in flight.
const answered = (e) => e.status !== undefined || e.method !== 'GET';
const jktOf = (dbUrl, token) => psql(dbUrl, `SELECT kind || ':' || coalesce(jkt, '-') FROM tokens WHERE token_hash = '\\x${sha256hex(token)}'::bytea`);

let idp, ds;
before(async () => {
  idp = await startIdp({ port: 0, log: false });
  ds = await startSdk2Downstream({ port: 0 });
}, { timeout: 60000 });
after(async () => {
  await ds?.close();
  await idp?.close();
}, { timeout: 30000 });

for (const mode of MODES) {
  describe(`DPoP with the SDK 2.4 through the broker, dpop.require_nonce ${mode.nonce}`, { timeout: 240000 }, () => {
    let broker, dbUrl, mcpUrl, strictUrl, machineUrl;

    before(async () => {
      dbUrl = await createDatabase(`e2e_sdk2_dpop_${mode.nonce ? 'n' : 'p'}`);
      const clients = [];
      for (const i of WIRES.keys()) {
        for (const id of [machineId(i), plainMachineId(i)]) {
          clients.push({
            client_id: id, client_name: `Nightly job ${id}`, client_secret: SECRET(id),
            grant_types: ['client_credentials'], resources: ['/machine'], scopes: ['issues:read'],
          });
        }
      }
      broker = await startBroker(baseConfig({
        port: await freePort(), databaseUrl: dbUrl, extra: {
          registration: { dynamic: true, client_id_metadata_documents: false },
          dpop: { require_nonce: mode.nonce },
          upstreams: { gh: githubOf(idp.base), oidc: machineOidcOf(idp.base) },
          clients,
          limits: { token_per_client_per_minute: 0 },
          resources: [
            sdk2Resource(ds.url),
            sdk2Resource(ds.url, { path: '/strict', require_dpop: true }),
            sdk2Resource(ds.url, { path: '/machine', upstream: 'oidc', require_dpop: true }),
          ],
        },
      }));
      mcpUrl = new URL(`${broker.url}/mcp`);
      strictUrl = new URL(`${broker.url}/strict`);
      machineUrl = new URL(`${broker.url}/machine`);
    }, { timeout: 60000 });
    after(async () => { await broker?.stop(); }, { timeout: 30000 });

    // The /token requests of one sign-in: with require_nonce the first proof
    // has no nonce, the broker answers use_dpop_nonce with one and the SDK
    // retries by itself.
    const tokenSeq = (grant) => (mode.nonce ? [`POST /token 400 ${grant} use_dpop_nonce`, `POST /token 200 ${grant}`] : [`POST /token 200 ${grant}`]);
    function assertTokenProofs(entries, session, tokenUrl, { firstContact = true } = {}) {
      for (const e of entries) {
        assert.ok(e.proof, `${e.method} ${e.path}: a DPoP proof`);
        assert.equal(e.proof.header.typ, 'dpop+jwt');
        assert.equal(e.proof.header.alg, 'ES256');
        assert.equal(thumbprint(e.proof.header.jwk), session.thumbprint);
        assert.equal(e.proof.claims.htm, 'POST');
        assert.equal(e.proof.claims.htu, tokenUrl);
        assert.equal(e.proof.claims.ath, undefined, 'no ath at /token');
      }
      if (mode.nonce && !firstContact) {
        // The session holds a nonce from earlier answers: the proof carries one.
        assert.ok(entries.at(-1).proof.claims.nonce, 'a nonce in the proof');
        assert.ok(entries.at(-1).nonce, 'every /token answer carries a fresh nonce');
      } else if (mode.nonce) {
        assert.equal(entries[0].proof.claims.nonce, undefined);
        assert.ok(entries[0].nonce, 'use_dpop_nonce carries a DPoP-Nonce');
        assert.equal(entries[1].proof.claims.nonce, entries[0].nonce, 'the retry carries the nonce it was given');
        assert.ok(entries[1].nonce, 'every /token answer carries a fresh nonce');
      } else {
        for (const e of entries) {
          assert.equal(e.proof.claims.nonce, undefined);
          assert.equal(e.nonce, null, 'no DPoP-Nonce without require_nonce');
        }
      }
    }

    for (const [i, wire] of WIRES.entries()) {
      const newClient = (name) => new Client({ name, version: '1.0.0' }, wire.negotiation ? { versionNegotiation: wire.negotiation } : {});
      const seenSince = (t) => ds.seen.filter((e) => e.t >= t);
      // Every downstream request since t: the upstream token only, no DPoP, no broker token.
      function assertDownstreamClean(t0, upstreamPrefix) {
        const seen = seenSince(t0);
        assert.ok(seen.length > 0, 'the downstream was reached');
        for (const e of seen) {
          assert.equal(e.headers.dpop, undefined, 'the DPoP proof is not forwarded');
          assert.ok(e.headers.authorization.startsWith(`Bearer ${upstreamPrefix}`), `downstream Authorization: ${e.headers.authorization.split(' ')[0]}`);
          for (const [k, v] of Object.entries(e.headers)) assert.ok(!hasBrokerToken(String(v)), `${k} carries a broker token`);
          if (e.rpc?.[0] !== 'initialize') assert.equal(e.headers['mcp-protocol-version'], wire.version);
        }
      }
      // Every request the SDK sent to a resource since index `from`: the DPoP
      // scheme with the current token and a fresh proof of the session's key.
      function assertResourceProofs(entries, session, url) {
        const jtis = new Set();
        assert.ok(entries.length > 0);
        for (const e of entries) {
          assert.equal(e.scheme, 'DPoP', `${e.method} ${e.path}: the DPoP scheme`);
          assert.ok(e.proof, `${e.method} ${e.path}: a proof`);
          assert.equal(thumbprint(e.proof.header.jwk), session.thumbprint);
          assert.equal(e.proof.claims.htm, e.method);
          assert.equal(e.proof.claims.htu, url.toString());
          assert.equal(e.proof.claims.ath, ath(e.token), 'ath is the hash of the token presented');
          assert.ok(!jtis.has(e.proof.claims.jti), 'a fresh jti per request');
          jtis.add(e.proof.claims.jti);
        }
      }

      describe(`on the ${wire.version} wire`, () => {
        const log = [];
        const opened = [];
        let session, provider, client, transport;
        const fetchFn = recording(log);
        function connectNew(p = provider, url = mcpUrl, f = fetchFn) {
          const c = newClient('mcp-broker-e2e-sdk2-dpop');
          const t = new StreamableHTTPClientTransport(url, { authProvider: p, fetch: f });
          opened.push(c);
          if (p === provider && url === mcpUrl) { client = c; transport = t; }
          return c.connect(t).then(() => ({ c, t }));
        }

        before(async () => {
          session = await DpopSession.create();
          provider = new DpopOAuthProvider({ redirectUrl: `http://127.0.0.1:${41000 + i}/callback`, brokerUrl: broker.url }, session);
        });
        after(async () => { for (const c of opened) await c.close().catch(() => {}); });

        it('signs in with a DPoP key: token_type DPoP, the access and refresh tokens bound to its thumbprint', async () => {
          await assert.rejects(connectNew(), (e) => e instanceof UnauthorizedError || /nauthorized/.test(String(e?.message)));
          assert.equal(provider.authorizations.length, 1);
          const { redirect } = provider.authorizations[0];
          const from = log.length;
          await transport.finishAuth(redirect.searchParams);
          const tok = log.slice(from).filter((e) => e.path === '/token');
          assert.deepEqual(seq(tok), tokenSeq('authorization_code'));
          assertTokenProofs(tok, session, `${broker.url}/token`);
          assert.equal(tok.at(-1).tokenType, 'DPoP');
          const t = provider.tokens();
          assert.equal(t.token_type, 'DPoP');
          assert.ok(t.access_token.startsWith('mcpb_at_') && t.refresh_token.startsWith('mcpb_rt_'));
          assert.equal(await jktOf(dbUrl, t.access_token), `access:${session.thumbprint}`);
          assert.equal(await jktOf(dbUrl, t.refresh_token), `refresh:${session.thumbprint}`);
          const c0 = log.length;
          await connectNew();
          assert.equal(transport.protocolVersion, wire.version);
          assert.equal(client.getServerVersion().name, 'sdk2-downstream');
          const mcp = log.slice(c0).filter((e) => e.path === '/mcp');
          assertResourceProofs(mcp, session, mcpUrl);
          for (const e of mcp.filter(answered)) assert.ok([200, 202, 405].includes(e.status), `${e.method} /mcp ${e.status}`);
        });

        it('tools/list and tool calls in the DPoP scheme reach the SDK 2.4 server with the upstream token, never the proof', async () => {
          const t0 = Date.now();
          const from = log.length;
          const who = await sdk2ToolRound(client, wire, { tag: 'dpop', auth: /^Bearer gho_/ });
          const mcp = log.slice(from).filter((e) => e.path === '/mcp');
          // (The 2025-11-25 client's standalone GET stream may land here: 405 from the stateless server.)
          const posts = mcp.filter((e) => e.method === 'POST');
          assert.ok(posts.length >= 3);
          assert.deepEqual(posts.map((e) => e.status), posts.map(() => 200));
          assertResourceProofs(mcp, session, mcpUrl);
          assertDownstreamClean(t0, 'gho_');
          // The bound token is not a Bearer token (RFC 9449 section 7.1).
          const bearer = await http(mcpUrl.toString(), {
            method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 'probe', method: 'ping' }),
            headers: { authorization: `Bearer ${provider.tokens().access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': wire.version },
          });
          assert.equal(bearer.status, 401);
          assert.match(bearer.headers.get('www-authenticate'), /^DPoP .*error="invalid_token"/);
        });

        it('progress notifications stream while the tool runs (SSE), in the DPoP scheme', async () => {
          const progress = [];
          const from = log.length;
          const r = await client.callTool({ name: 'slow_progress', arguments: { steps: 5, interval_ms: 100 } }, {
            onprogress: (p) => progress.push({ t: Date.now(), ...p }),
          });
          const done = Date.now();
          assert.deepEqual(progress.map((p) => p.progress), [1, 2, 3, 4, 5]);
          assert.ok(done - progress[0].t >= 250, 'the first progress came long before the result');
          assert.equal(JSON.parse(text(r)).steps, 5);
          const post = log.slice(from).filter((e) => e.path === '/mcp' && e.method === 'POST').at(-1);
          assert.equal(post.scheme, 'DPoP');
          assert.match(post.contentType, /^text\/event-stream/);
        });

        if (mode.nonce) {
          it('a stale nonce at the resource: 401 use_dpop_nonce with a fresh one, the SDK re-signs and retries by itself', async () => {
            session.rememberNonce(mcpUrl, 'c3RhbGUtbm9uY2Utbm90LWZyb20tdGhlLWJyb2tlcg');
            const t0 = Date.now();
            const from = log.length;
            assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: 'after nonce' } })), 'after nonce');
            const mcp = log.slice(from).filter((e) => e.path === '/mcp');
            assert.deepEqual(mcp.map((e) => e.status), [401, 200]);
            assert.match(mcp[0].wwwAuthenticate, /^DPoP .*error="use_dpop_nonce"/);
            assert.ok(mcp[0].nonce);
            assert.equal(mcp[0].proof.claims.nonce, 'c3RhbGUtbm9uY2Utbm90LWZyb20tdGhlLWJyb2tlcg');
            assert.equal(mcp[1].proof.claims.nonce, mcp[0].nonce);
            assert.notEqual(mcp[1].proof.claims.jti, mcp[0].proof.claims.jti, 'a new proof, not a replay');
            assert.equal(seenSince(t0).filter((e) => e.tools.includes('echo')).length, 1, 'only the retry reached the downstream');
          });
        } else {
          it('without require_nonce no proof carries a nonce and no answer offers one', async () => {
            for (const e of log.filter((x) => x.proof)) assert.equal(e.proof.claims.nonce, undefined);
            for (const e of log) assert.equal(e.nonce, null);
          });
        }

        it('an expired access token: the SDK refreshes with a proof and gets a DPoP-bound pair again', async () => {
          const old = provider.tokens();
          const hash = sha256hex(old.access_token);
          assert.equal(await psql(dbUrl, `UPDATE tokens SET expires_at = now() - interval '1 second' WHERE kind = 'access' AND token_hash = '\\x${hash}'::bytea RETURNING 1`), '1');
          await psql(dbUrl, `SELECT pg_notify('mcpb_revoke', 't:\\x${hash}')`);
          // A correct DPoP request with the old token, until the broker has forgotten it.
          const probe = async () => http(mcpUrl.toString(), {
            method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 'probe', method: 'ping' }),
            headers: {
              authorization: `DPoP ${old.access_token}`, dpop: await session.buildProof({ htm: 'POST', htu: mcpUrl, accessToken: old.access_token }),
              'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': wire.version,
            },
          });
          assert.ok(await waitFor(async () => (await probe()).status === 401, 5000), 'the expired token is refused');
          const from = log.length;
          assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: 'after refresh' } })), 'after refresh');
          const after = log.slice(from);
          // With require_nonce the session's nonce is normally still current
          // (good for one to two nonce_ttl_s); a use_dpop_nonce round is allowed.
          const s = seq(after).filter((x) => x !== 'POST /token 400 refresh_token use_dpop_nonce' || !mode.nonce);
          assert.deepEqual(s, ['POST /mcp 401', 'POST /token 200 refresh_token', 'POST /mcp 200'], seq(after).join('\n'));
          assert.equal(after[0].scheme, 'DPoP');
          assert.match(after[0].wwwAuthenticate, /^DPoP .*error="invalid_token"/);
          const tok = after.filter((e) => e.path === '/token');
          assertTokenProofs(tok, session, `${broker.url}/token`, { firstContact: false });
          assert.equal(tok.at(-1).tokenType, 'DPoP');
          const t = provider.tokens();
          assert.equal(t.token_type, 'DPoP');
          assert.notEqual(t.access_token, old.access_token);
          assert.notEqual(t.refresh_token, old.refresh_token);
          assert.equal(await jktOf(dbUrl, t.access_token), `access:${session.thumbprint}`);
          assert.equal(await jktOf(dbUrl, t.refresh_token), `refresh:${session.thumbprint}`);
          assertResourceProofs(after.filter((e) => e.path === '/mcp'), session, mcpUrl);
          assert.equal(after.at(-1).token, t.access_token, 'the retry presents the new token');
        });

        it('a new DPoP key (a restarted client with its old tokens): refused at the resource and at /token; the SDK signs in again, bound to the new key', async () => {
          const old = provider.tokens();
          const oldSession = session;
          session = await DpopSession.create();
          provider.session = session;
          const from = log.length;
          const nAuth = provider.authorizations.length;
          await assert.rejects(client.callTool({ name: 'echo', arguments: { text: 'new key' } }),
            (e) => e instanceof UnauthorizedError || /nauthorized/.test(String(e?.message)));
          const after = log.slice(from);
          // (With require_nonce the new session first earns a nonce: use_dpop_nonce rounds are left out.)
          const nonceRound = (e) => (e.wwwAuthenticate || '').includes('use_dpop_nonce') || e.error === 'use_dpop_nonce';
          assert.ok(mode.nonce || !after.some(nonceRound));
          const plain = after.filter((e) => !nonceRound(e));
          assert.deepEqual(seq(plain), ['POST /mcp 401', 'POST /token 400 refresh_token invalid_dpop_proof'], seq(after).join('\n'));
          assert.match(plain[0].wwwAuthenticate, /^DPoP .*error="invalid_dpop_proof"/);
          assert.equal(plain[0].token, old.access_token);
          assert.equal(thumbprint(plain[0].proof.header.jwk), session.thumbprint);
          assert.notEqual(session.thumbprint, oldSession.thumbprint);
          neverForwarded(after, '/mcp');
          // The SDK dropped the tokens (invalid_dpop_proof) and went to the authorization endpoint.
          assert.equal(provider.authorizations.length, nAuth + 1);
          // The old refresh token was not consumed by the refused attempt.
          assert.equal(await psql(dbUrl, `SELECT (used_at IS NULL AND revoked_at IS NULL)::text FROM tokens WHERE token_hash = '\\x${sha256hex(old.refresh_token)}'::bytea`), 'true');
          await transport.finishAuth(provider.authorizations.at(-1).redirect.searchParams);
          const t = provider.tokens();
          assert.equal(t.token_type, 'DPoP');
          assert.equal(await jktOf(dbUrl, t.access_token), `access:${session.thumbprint}`);
          assert.equal(await jktOf(dbUrl, t.refresh_token), `refresh:${session.thumbprint}`);
          assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: 'new key' } })), 'new key');
        });

        it('a require_dpop resource: a DPoP client signs in, connects and calls a tool', async () => {
          const prm = await http(`${broker.url}/.well-known/oauth-protected-resource/strict`);
          assert.equal(prm.json.dpop_bound_access_tokens_required, true);
          assert.ok(prm.json.dpop_signing_alg_values_supported.includes('ES256'));
          const s2 = await DpopSession.create();
          const p2 = new DpopOAuthProvider({ redirectUrl: `http://127.0.0.1:${41100 + i}/callback`, brokerUrl: broker.url }, s2);
          const slog = [];
          const sf = recording(slog);
          const c = newClient('mcp-broker-e2e-sdk2-dpop-strict');
          const t = new StreamableHTTPClientTransport(strictUrl, { authProvider: p2, fetch: sf });
          opened.push(c);
          await assert.rejects(c.connect(t), (e) => e instanceof UnauthorizedError || /nauthorized/.test(String(e?.message)));
          // A require_dpop resource challenges in the DPoP scheme from the first 401 (RFC 9449 section 7.1).
          assert.match(slog.find((e) => e.path === '/strict').wwwAuthenticate, /^DPoP resource_metadata="[^"]+\/strict".*algs="[^"]*ES256/);
          await t.finishAuth(p2.authorizations[0].redirect.searchParams);
          assert.deepEqual(seq(slog.filter((e) => e.path === '/token')), tokenSeq('authorization_code'));
          assert.equal(p2.tokens().token_type, 'DPoP');
          assert.equal(await jktOf(dbUrl, p2.tokens().access_token), `access:${s2.thumbprint}`);
          const t0 = Date.now();
          const c2 = newClient('mcp-broker-e2e-sdk2-dpop-strict');
          opened.push(c2);
          const from = slog.length;
          await c2.connect(new StreamableHTTPClientTransport(strictUrl, { authProvider: p2, fetch: sf }));
          const who = JSON.parse(text(await c2.callTool({ name: 'whoami', arguments: {} })));
          assert.match(who.authorization, /^Bearer gho_/);
          const strict = slog.slice(from).filter((e) => e.path === '/strict');
          for (const e of strict.filter(answered)) assert.ok([200, 202, 405].includes(e.status), `${e.method} /strict ${e.status}`);
          assertResourceProofs(strict, s2, strictUrl);
          assertDownstreamClean(t0, 'gho_');
        });

        it('a client without dpop() on the require_dpop resource: refused a Bearer token at /token, the SDK fails the connect (no hang), nothing issued', async () => {
          const p3 = new TestOAuthProvider({ redirectUrl: `http://127.0.0.1:${41200 + i}/callback`, brokerUrl: broker.url });
          const nlog = [];
          const nf = recording(nlog);
          const c = newClient('mcp-broker-e2e-sdk2-no-dpop');
          const t = new StreamableHTTPClientTransport(strictUrl, { authProvider: p3, fetch: nf });
          opened.push(c);
          // The first 401 is a DPoP challenge; the SDK signs in anyway, and
          // the broker refuses the code exchange that has no proof: a
          // require_dpop resource gets no Bearer token (the code is left
          // unused, nothing is written).
          await assert.rejects(c.connect(t), (e) => e instanceof UnauthorizedError || /nauthorized/.test(String(e?.message)));
          const first = nlog.find((e) => e.path === '/strict');
          assert.equal(first?.status, 401, seq(nlog).join(", "));
          assert.match(first.wwwAuthenticate, /^DPoP /);
          const err = await withTimeout(t.finishAuth(p3.authorizations[0].redirect.searchParams).then(() => null, (e) => e), 20000, 'the SDK hung');
          assert.ok(err instanceof Error, `the code exchange fails: ${seq(nlog).join(', ')}`);
          assert.match(`${err.code} ${err.message}`, /DPoP-bound tokens only/, `${err.stack} | ${seq(nlog).join(', ')}`);
          const tok = nlog.filter((e) => e.path === '/token');
          assert.ok(tok.length >= 1 && tok.every((e) => e.status === 400), seq(nlog).join('\n'));
          assert.equal(p3.tokens(), undefined, `no token issued: ${seq(nlog).join(', ')}`);
          neverForwarded(nlog, '/strict');
          console.log(`[no-dpop client on require_dpop, ${wire.version}, nonce ${mode.nonce}] ${err.constructor.name}: ${err.message} | ${seq(nlog).join(', ')}`);
        });

        it('a machine client (ClientCredentialsProvider with dpop()) gets a DPoP-bound client_credentials token and calls a tool', async () => {
          const id = machineId(i);
          const ms = await DpopSession.create();
          const mp = new DpopClientCredentialsProvider({ clientId: id, clientSecret: SECRET(id), scope: 'issues:read', expectedIssuer: broker.url }, ms);
          const mlog = [];
          const t0 = Date.now();
          const { c } = await connectNew(mp, machineUrl, recording(mlog));
          const tok = mlog.filter((e) => e.path === '/token');
          assert.deepEqual(seq(tok), tokenSeq('client_credentials'), seq(mlog).join('\n'));
          assertTokenProofs(tok, ms, `${broker.url}/token`);
          assert.equal(mp.tokens().token_type, 'DPoP');
          assert.equal(mp.tokens().refresh_token, undefined);
          assert.equal(await jktOf(dbUrl, mp.tokens().access_token), `access:${ms.thumbprint}`);
          const who = JSON.parse(text(await c.callTool({ name: 'whoami', arguments: {} })));
          assert.match(who.authorization, /^Bearer oidc_at_/);
          const from = mlog.findIndex((e) => e.path === '/token' && e.status === 200) + 1;
          const mach = mlog.slice(from).filter((e) => e.path === '/machine');
          for (const e of mach.filter(answered)) assert.ok([200, 202, 405].includes(e.status), `${e.method} /machine ${e.status}`);
          assertResourceProofs(mach, ms, machineUrl);
          assertDownstreamClean(t0, 'oidc_at_');
        });

        it('a ClientCredentialsProvider without dpop() on the require_dpop resource: refused at /token, the SDK fails the connect', async () => {
          const id = plainMachineId(i);
          const pp = new ClientCredentialsProvider({ clientId: id, clientSecret: SECRET(id), scope: 'issues:read', expectedIssuer: broker.url });
          const plog = [];
          const err = await withTimeout(connectNew(pp, machineUrl, recording(plog)).then(() => null, (e) => e), 20000, 'the SDK hung');
          assert.ok(err instanceof Error, 'the connect fails');
          assert.equal(pp.tokens(), undefined, 'no Bearer token issued for a require_dpop resource');
          const tok = plog.filter((e) => e.path === '/token');
          assert.ok(tok.length >= 1 && tok.every((e) => e.status === 400), seq(plog).join('\n'));
          neverForwarded(plog, '/machine');
          console.log(`[no-dpop machine on require_dpop, ${wire.version}, nonce ${mode.nonce}] ${err.constructor.name}: ${err.message} | ${seq(plog).join(', ')}`);
        });
      });
    }

    it('no broker log line carries a token, a code or a proof', async () => {
      const leaks = broker.logs().filter((l) => /mcpb_(at|rt|ac)_|gh[ory]_|ghcode_|oidc_(at|rt)_|-secret-0123|eyJ[A-Za-z0-9_-]{20,}\.eyJ/.test(l));
      assert.equal(leaks.length, 0, leaks.join('\n'));
    });
  });
}
