// End-to-end with the MCP TypeScript SDK 2.4 (@modelcontextprotocol/client,
// @modelcontextprotocol/server, @modelcontextprotocol/node): its client, with
// its own OAuth provider flow, through the real broker to a real SDK 2.4 server
// (tests/fakes/sdk2-downstream.mjs), on BOTH wires: 2025-11-25 (the client's
// default 'legacy' negotiation) and 2026-07-28 (versionNegotiation pinned to
// it: stateless, SEP-2243 headers on every request). Per wire: sign-in (DCR,
// PKCE), tools/list, tools/call with the upstream token injected, scope 403
// then step-up, SSE progress, refresh, the task methods routed by Mcp-Name =
// params.taskId, a tampered header answered -32020 with the request's id, and
// a client on the broker's own origin accepted as same-origin.
// The harness (the test as the user's browser, the in-memory provider, the
// recording fetch) is sdk_journey.mjs's.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and `npm ci`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport, UnauthorizedError, auth } from '@modelcontextprotocol/client';
import { z } from 'zod';
import { startIdp } from '../fakes/idp.mjs';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startBroker, baseConfig, createDatabase, freePort, psql, waitFor, http } from '../lib/harness.mjs';
import { TestOAuthProvider, recordingFetch, sha256hex, hasBrokerToken, sdk2ToolRound } from './sdk_journey.mjs';

const Task = z.looseObject({ taskId: z.string(), status: z.string() });
const WIRES = [
  { version: '2025-11-25', negotiation: undefined },
  { version: '2026-07-28', negotiation: { mode: { pin: '2026-07-28' } } },
];

let idp, ds, broker, dbUrl, mcpUrl;

before(async () => {
  idp = await startIdp({ port: 0 });
  ds = await startSdk2Downstream({ port: 0 });
  dbUrl = await createDatabase('e2e_sdk2');
  const port = await freePort();
  const gh = `${idp.base}/github`;
  broker = await startBroker(baseConfig({
    port, databaseUrl: dbUrl, extra: {
      registration: { dynamic: true, client_id_metadata_documents: false },
      upstreams: {
        gh: {
          preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret',
          authorize_url: `${gh}/login/oauth/authorize`, token_url: `${gh}/login/oauth/access_token`,
          userinfo_url: `${gh}/api/user`, revoke_url: `${gh}/api/applications/{client_id}/grant`,
          scopes: ['read:user', 'repo'],
        },
      },
      resources: [{
        path: '/mcp', upstream: 'gh', downstream: ds.url,
        scopes: { 'issues:read': ['echo', 'whoami', 'slow_progress', 'start_job'], 'issues:write': ['*'] },
        default_scopes: ['issues:read'],
      }],
    },
  }));
  mcpUrl = new URL(`${broker.url}/mcp`);
}, { timeout: 60000 });

after(async () => {
  await broker?.stop();
  await ds?.close();
  await idp?.close();
}, { timeout: 30000 });

for (const wire of WIRES) {
  describe(`SDK 2.4 client -> broker -> SDK 2.4 server on the ${wire.version} wire`, { timeout: 60000 }, () => {
    const log = [];
    let provider, client, transport;
    let tamper = null; // (headers) => void: alters the next POST's headers once
    const answers = []; // {status, json, sent} of tampered POSTs

    const baseFetch = recordingFetch(log);
    async function wireFetch(input, init = {}) {
      if (!tamper || (init.method || 'GET') !== 'POST') return baseFetch(input, init);
      const headers = new Headers(init.headers);
      const sent = JSON.parse(init.body);
      tamper(headers);
      tamper = null;
      const res = await baseFetch(input, { ...init, headers });
      answers.push({ status: res.status, json: await res.clone().json().catch(() => undefined), sent });
      return res;
    }
    function connectNew() {
      client = new Client({ name: 'mcp-broker-e2e-sdk2', version: '1.0.0' }, wire.negotiation ? { versionNegotiation: wire.negotiation } : {});
      transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: wireFetch });
      return client.connect(transport);
    }
    const text = (r) => r.content[0].text;
    const seenSince = (t) => ds.seen.filter((e) => e.t >= t);

    before(() => {
      provider = new TestOAuthProvider({ redirectUrl: `http://127.0.0.1:${40000 + WIRES.indexOf(wire)}/callback`, brokerUrl: broker.url });
    });
    after(async () => { await client?.close().catch(() => {}); });

    it('signs in (401, discovery, DCR, PKCE, code exchange) and connects at this wire', async () => {
      await assert.rejects(connectNew(), (e) => e instanceof UnauthorizedError || /nauthorized/.test(String(e?.message)));
      assert.equal(log.find((e) => e.path === '/mcp').status, 401);
      assert.equal(log.filter((e) => e.path === '/register' && e.status === 201).length, 1, 'registered dynamically');
      assert.equal(provider.authorizations.length, 1);
      const { url, redirect } = provider.authorizations[0];
      assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
      assert.equal(url.searchParams.get('resource'), mcpUrl.toString());
      assert.equal(redirect.searchParams.get('iss'), broker.url);
      await transport.finishAuth(redirect.searchParams);
      const t = provider.tokens();
      assert.ok(t.access_token.startsWith('mcpb_at_') && t.refresh_token.startsWith('mcpb_rt_'));
      assert.equal(t.scope, 'issues:read');
      await connectNew();
      assert.equal(transport.protocolVersion, wire.version);
      assert.equal(client.getServerVersion().name, 'sdk2-downstream');
    });

    it('lists tools and calls one; the downstream gets the upstream token, never the broker token', async () => {
      const t0 = Date.now();
      const who = await sdk2ToolRound(client, wire, { tag: 'hello', auth: /^Bearer gho_/ });
      for (const e of seenSince(t0)) {
        for (const [k, v] of Object.entries(e.headers)) assert.ok(!hasBrokerToken(String(v)), `${k} carries a broker token`);
        assert.equal(e.headers['mcp-protocol-version'], wire.version);
      }
      const call = seenSince(t0).find((e) => e.tools.includes('echo'));
      if (wire.version === '2026-07-28') {
        assert.equal(call.headers['mcp-method'], 'tools/call');
        assert.equal(call.headers['mcp-name'], 'echo');
        assert.equal(call.headers['mcp-session-id'], undefined, 'stateless');
      }
    });

    it('progress notifications stream while the tool runs (SSE, not buffered)', async () => {
      const progress = [];
      const r = await client.callTool({ name: 'slow_progress', arguments: { steps: 6, interval_ms: 100 } }, {
        onprogress: (p) => progress.push({ t: Date.now(), ...p }),
      });
      const done = Date.now();
      assert.deepEqual(progress.map((p) => p.progress), [1, 2, 3, 4, 5, 6]);
      assert.ok(done - progress[0].t >= 300, 'the first progress came long before the result');
      assert.equal(JSON.parse(text(r)).steps, 6);
      const post = log.filter((e) => e.path === '/mcp' && e.method === 'POST').at(-1);
      assert.match(post.contentType, /^text\/event-stream/);
    });

    it('a long-running job is polled, updated and cancelled with tasks/* (Mcp-Name = taskId passes the broker)', async () => {
      const t0 = Date.now();
      const started = await client.callTool({ name: 'start_job', arguments: { steps: 1000, interval_ms: 20 } });
      const { taskId } = started.structuredContent;
      assert.match(taskId, /^task-/);
      const got = await client.request({ method: 'tasks/get', params: { taskId } }, Task);
      assert.equal(got.taskId, taskId);
      assert.equal(got.status, 'working');
      assert.ok(await waitFor(async () => (await client.request({ method: 'tasks/get', params: { taskId } }, Task)).progress > 0, 5000),
        'the job advances between polls');
      const upd = await client.request({ method: 'tasks/update', params: { taskId, note: 'keep going' } }, Task);
      assert.deepEqual(upd.notes, ['keep going']);
      const cancelled = await client.request({ method: 'tasks/cancel', params: { taskId } }, Task);
      assert.equal(cancelled.status, 'cancelled');
      assert.equal(ds.jobs.get(taskId).status, 'cancelled');
      const taskPosts = seenSince(t0).filter((e) => e.rpc?.[0]?.startsWith('tasks/'));
      assert.ok(taskPosts.length >= 4);
      for (const e of taskPosts) {
        assert.equal(e.status, 200, `${e.rpc[0]}: ${e.status}`);
        if (wire.version === '2026-07-28') {
          assert.equal(e.headers['mcp-method'], e.rpc[0]);
          assert.equal(e.headers['mcp-name'], taskId, 'routed by the task id');
        }
      }
    });

    it('a header that disagrees with the body is answered 400 with -32020 and the request id', async () => {
      const t0 = Date.now();
      tamper = (h) => {
        // On the 2026-07-28 wire the SDK sent Mcp-Name: echo; on the 2025-11-25 one no SEP-2243 header at all.
        h.set('mcp-method', 'tools/call');
        h.set('mcp-name', 'create_issue');
      };
      const outcome = await client.callTool({ name: 'echo', arguments: { text: 'tampered' } }).then(text, (e) => e);
      const a = answers.at(-1);
      assert.equal(a.status, 400);
      assert.equal(a.json?.error?.code, -32020, JSON.stringify(a.json));
      assert.equal(a.json.id, a.sent.id, "the request's own id");
      assert.notEqual(a.json.id, null);
      const echoes = seenSince(t0).filter((e) => e.tools.includes('echo'));
      if (wire.version === '2026-07-28') {
        // SDK 2.4's recovery from a HeaderMismatch: it lists the tools again and
        // retries once with the headers it derives itself; only that retry is forwarded.
        assert.equal(outcome, 'tampered');
        assert.equal(echoes.length, 1);
        assert.equal(echoes[0].headers['mcp-name'], 'echo');
      } else {
        assert.ok(outcome instanceof Error, 'the 2025-11-25 client reports the refusal');
        assert.match(outcome.message, /-32020/);
        assert.equal(echoes.length, 0, 'never forwarded');
      }
      // The client goes on.
      assert.equal(text(await client.callTool({ name: 'echo', arguments: { text: 'after' } })), 'after');
    });

    it("a client on the broker's own origin (Origin = public_url's origin) is same-origin, without allowed_origins", async () => {
      const origin = new URL(broker.url).origin;
      const c = new Client({ name: 'mcp-broker-e2e-sdk2-origin', version: '1.0.0' }, wire.negotiation ? { versionNegotiation: wire.negotiation } : {});
      const statuses = [];
      const t = new StreamableHTTPClientTransport(mcpUrl, {
        authProvider: provider,
        fetch: async (input, init = {}) => {
          const headers = new Headers(init.headers);
          headers.set('origin', origin);
          const res = await fetch(input, { ...init, headers });
          statuses.push(res.status);
          return res;
        },
      });
      try {
        await c.connect(t);
        assert.equal(text(await c.callTool({ name: 'echo', arguments: { text: 'same origin' } })), 'same origin');
        // (405: the stateless server has no GET stream for the 2025-11-25 client.)
        assert.ok(statuses.length > 0 && !statuses.includes(403), statuses.join(','));
      } finally {
        await c.close();
      }
    });

    it('a tool beyond the granted scope is refused 403 before the downstream; step-up lets it through', async () => {
      const t0 = Date.now();
      const before = log.length;
      await assert.rejects(client.callTool({ name: 'create_issue', arguments: { title: 'nope' } }));
      const refused = log.slice(before).filter((e) => e.path === '/mcp' && e.method === 'POST');
      assert.ok(refused.length >= 1);
      assert.equal(refused[0].status, 403);
      assert.match(refused[0].wwwAuthenticate, /error="insufficient_scope"/);
      assert.match(refused[0].wwwAuthenticate, /scope="[^"]*issues:write/);
      assert.equal(seenSince(t0).filter((e) => e.tools.includes('create_issue')).length, 0, 'the downstream never saw it');

      provider.invalidateCredentials('tokens');
      assert.equal(await auth(provider, { serverUrl: mcpUrl, scope: 'issues:read issues:write', fetchFn: baseFetch }), 'REDIRECT');
      const { redirect } = provider.authorizations.at(-1);
      assert.equal(await auth(provider, { serverUrl: mcpUrl, authorizationCode: redirect.searchParams.get('code'), iss: redirect.searchParams.get('iss'), fetchFn: baseFetch }), 'AUTHORIZED');
      assert.equal(provider.tokens().scope, 'issues:read issues:write');
      const r = await client.callTool({ name: 'create_issue', arguments: { title: 'through the broker' } });
      assert.deepEqual(JSON.parse(text(r)), { number: 1, title: 'through the broker' });
    });

    it('an expired access token: the SDK refreshes at the broker and retries', async () => {
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
      const seq = log.slice(before).map((e) => `${e.method} ${e.path} ${e.status}${e.form ? ' ' + e.form.grant_type : ''}`);
      assert.deepEqual(seq, ['POST /mcp 401', 'POST /token 200 refresh_token', 'POST /mcp 200'], seq.join('\n'));
      assert.notEqual(provider.tokens().access_token, old.access_token);
      assert.notEqual(provider.tokens().refresh_token, old.refresh_token);
    });

    it('no broker log line carries a token or a code', async () => {
      const leaks = broker.logs().filter((l) => /mcpb_(at|rt|ac)_|gh[ory]_|ghcode_/.test(l));
      assert.equal(leaks.length, 0);
    });
  });
}
