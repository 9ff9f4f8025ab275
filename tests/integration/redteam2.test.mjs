// Red-team review, second round (issue 10, DESIGN 3.5): revocation of live
// traffic, rate limits, audit. One test per finding, each reproduced against
// the real binary; each failed on the tree it was written against and says
// what an attacker (or a partition) gets.
//
// 1. Repeated /revoke of one's own, already revoked, access token announces
//    a revocation every time; 1024 of them overflow every node's ring of
//    remembered revocations, and every request of ANY user still between
//    validation and its transfer (a slow upload, a slow upstream refresh) is
//    then ended as "overtaken" (fail closed): a valid token gets 401.
// 2. The valid-request bucket of a public client (token_per_client_per_minute)
//    is shared by all its users: one user refreshing her own grant holds every
//    other user of that client at 429 slow_down.
// 3. A node cut off from PostgreSQL (a partition: its connections stall, they
//    do not reset) never notices it is deaf: it keeps serving a token revoked
//    on another node from its cache and keeps the grant's open stream running
//    for as long as the partition lasts.
// 4. Logging is a blocking write under a global lock: a stalled log consumer
//    (full stderr pipe) blocks every request that logs (each tool call's
//    audit record does) and /healthz with them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startProxyEnv, defaultResource, call } from '../lib/proxy_setup.mjs';
import { startIdp, startOauthBroker, runFlow, tokenRequest, STATIC_PUBLIC } from '../lib/oauth_setup.mjs';
import { startDownstream } from '../fakes/downstream.mjs';
import { upstreamConfig } from '../lib/nodes.mjs';
import { fullFlow } from '../lib/flow.mjs';
import { startBroker, createDatabase, freePort, key, http, psql, sleep } from '../lib/harness.mjs';

const T = { timeout: 30000 };
let env; // one broker + downstream for the proxy tests (1 and 4)

before(async () => {
  env = await startProxyEnv({ prefix: 'redteam2', resources: (ds) => [defaultResource(ds)] });
}, { timeout: 30000 });

after(async () => {
  env?.broker.proc.stderr.resume();
  await env?.close();
}, { timeout: 30000 });

const ACCEPT = { accept: 'application/json, text/event-stream' };

/** A tool call whose body arrives in two parts; finish() sends the rest. Resolves the raw answer. */
function slowUpload(port, token) {
  const body = JSON.stringify(call('list_issues', 1, { pad: 'x'.repeat(200) }));
  const sock = net.connect(port, '127.0.0.1');
  let got = '';
  const answer = new Promise((resolve) => {
    sock.on('data', (d) => { got += d; });
    sock.on('close', () => resolve(got));
    sock.on('error', () => resolve(got));
  });
  sock.write(`POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n` +
    `Accept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`);
  return { answer, finish: () => sock.write(body.slice(10)) };
}

test('1: 1100 repeated /revoke calls of one\'s own dead access token do not end another user\'s request in flight', T, async () => {
  const alice = await env.token({ login: 'rt2-alice' });
  const mallory = await env.token({ login: 'rt2-mallory' });
  const revoke = () => http(`${env.url}/revoke`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: mallory.access_token, client_id: mallory.clientId }).toString() });
  // Alice's tool call has been validated; its body is still on its way.
  const victim = slowUpload(env.broker.port, alice.access_token);
  await sleep(100);
  // Mallory revokes her own token, then keeps "revoking" it.
  for (let i = 0; i < 1100; i += 10) await Promise.all(Array.from({ length: 10 }, revoke));
  victim.finish();
  const raw = await victim.answer;
  const status = Number(raw.split(' ')[1]);
  assert.equal(status, 200, `alice's valid request after mallory's repeated revocations: ${raw.split('\r\n')[0]} ` +
    `${/www-authenticate: [^\r]*/i.exec(raw)?.[0] || ''}`);
  assert.match(raw, /"result"/);
  // Her token was never revoked.
  const again = await env.mcp('/mcp', { token: alice.access_token, body: call('list_issues'), headers: ACCEPT });
  assert.equal(again.status, 200, again.text);
});

test('2: one user refreshing her own grant does not hold the public client\'s other users at 429', T, async () => {
  const idp = await startIdp({ port: 0, log: false });
  // 6 a minute: a burst of 2 (limits.token_per_client_per_minute / 6 + 1); failure limits at their defaults.
  const oauth = await startOauthBroker(idp, { patch: (cfg) => {
    cfg.http = { ...cfg.http, trusted_proxies: ['127.0.0.1/32'] };
    cfg.limits = { register_per_ip_per_hour: 0, token_per_client_per_minute: 6 };
  } });
  try {
    const PUB = { clientId: STATIC_PUBLIC.client_id, redirectUri: 'http://127.0.0.1:33418/cb' };
    const from = (a) => ({ 'x-forwarded-for': a });
    const code = (login) => runFlow({ broker: oauth.url, clientId: PUB.clientId, redirectUri: PUB.redirectUri,
      resource: `${oauth.url}/mcp`, login });
    const exchange = (f, addr) => tokenRequest(oauth.url, { grant_type: 'authorization_code', code: f.code,
      code_verifier: f.verifier, redirect_uri: PUB.redirectUri, client_id: PUB.clientId }, { headers: from(addr) });
    const refresh = (rt, addr) => tokenRequest(oauth.url, { grant_type: 'refresh_token', refresh_token: rt,
      client_id: PUB.clientId }, { headers: from(addr) });
    const mf = await code('rt2-mallory');
    const af = await code('rt2-alice');
    assert.ok(mf.code && af.code, 'both users signed in');
    // Mallory uses her own grant until she is limited.
    let m = await exchange(mf, '198.51.100.66');
    assert.equal(m.status, 200, m.text);
    let rt = m.json.refresh_token, limited = false;
    for (let i = 0; i < 4 && !limited; i++) {
      const r = await refresh(rt, '198.51.100.66');
      if (r.status === 429) limited = true;
      else { assert.equal(r.status, 200, r.text); rt = r.json.refresh_token; }
    }
    assert.ok(limited, 'mallory is limited by her own valid requests');
    // Alice, another user of the same client, elsewhere.
    const a = await exchange(af, '203.0.113.9');
    assert.equal(a.status, 200, `alice's code exchange while mallory is limited: ${a.status} ${a.text}`);
    const ar = await refresh(a.json.refresh_token, '203.0.113.9');
    assert.equal(ar.status, 200, `alice's refresh: ${ar.status} ${ar.text}`);
  } finally {
    await oauth.stop();
    await idp.close();
  }
});

/** A TCP relay that can stall (a partition: bytes are held, as TCP holds them, until thaw). */
function relay(host, port) {
  const pairs = new Set();
  let frozen = false;
  const srv = net.createServer((c) => {
    const u = net.connect(port, host);
    const qc = [], qu = [];
    const p = { c, u, flush: () => { while (qu.length) c.write(qu.shift()); while (qc.length) u.write(qc.shift()); } };
    pairs.add(p);
    c.on('data', (d) => { if (frozen) qc.push(d); else u.write(d); });
    u.on('data', (d) => { if (frozen) qu.push(d); else c.write(d); });
    const end = () => { c.destroy(); u.destroy(); pairs.delete(p); };
    for (const s of [c, u]) { s.on('error', end); s.on('close', end); }
  });
  return new Promise((res) => srv.listen(0, '127.0.0.1', () => res({
    port: srv.address().port,
    freeze: () => { frozen = true; },
    thaw: () => { frozen = false; for (const p of pairs) p.flush(); },
    close: () => { for (const p of pairs) { p.c.destroy(); p.u.destroy(); } srv.close(); },
  })));
}

test('3: a node partitioned from PostgreSQL stops serving a grant revoked elsewhere (cache and open stream) within seconds', T, async (tc) => {
  const idp = await startIdp({ port: 0, log: false });
  const ds = await startDownstream({ port: 0 });
  const db = await createDatabase('redteam2p');
  const pg = new URL(db);
  const rl = await relay(pg.hostname, Number(pg.port));
  const viaRelay = new URL(db);
  viaRelay.port = String(rl.port);
  const [pa, pb] = [await freePort(), await freePort()];
  const publicUrl = `http://127.0.0.1:${pa}`;
  const adminToken = 'admin-' + key().replace(/[^A-Za-z0-9]/g, '');
  const shared = {
    public_url: publicUrl, encryption_keys: [{ id: 'k1', key: key() }], cookie_secret: key(), admin_tokens: [adminToken],
    http: { threads: 4, drain_timeout_s: 2 }, limits: { register_per_ip_per_hour: 0 },
    database: { pool_size: 4, connect_timeout_s: 2 }, upstreams: upstreamConfig(idp),
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: `${ds.url}/mcp` }],
  };
  const nodes = [];
  const ac = new AbortController();
  try {
    const A = await startBroker({ ...shared, database_url: db, listen: `127.0.0.1:${pa}` });
    nodes.push(A);
    const B = await startBroker({ ...shared, database_url: viaRelay.toString(), listen: `127.0.0.1:${pb}` });
    nodes.push(B);
    const t = await fullFlow(publicUrl, { resource: `${publicUrl}/mcp`, login: 'rt2-partition' });
    const grant = await psql(db, `SELECT grant_id FROM tokens WHERE token_hash = sha256(convert_to('${t.access_token}', 'UTF8'))`);
    const onB = () => http(`${B.url}/mcp`, { method: 'POST', timeoutMs: 1000,
      headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json', ...ACCEPT },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }) }).catch((e) => ({ status: e.name }));
    assert.equal((await onB()).status, 200, 'B serves the token (and caches it)');
    const res = await fetch(`${B.url}/mcp?mode=sse&events=100000&delay=50`, {
      headers: { authorization: `Bearer ${t.access_token}`, accept: 'text/event-stream' }, signal: ac.signal });
    assert.equal(res.status, 200);
    let events = 0, endedAt = null;
    (async () => {
      const dec = new TextDecoder();
      try { for await (const c of res.body) events += (dec.decode(c, { stream: true }).match(/\n\n/g) || []).length; } catch { /* cut */ }
      endedAt = performance.now();
    })();
    await sleep(300);
    rl.freeze();
    const frozenAt = performance.now();
    const rv = await http(`${A.url}/admin/v1/revoke`, { method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ grant_id: grant }) });
    assert.equal(rv.status, 200, rv.text);
    const answered = performance.now();
    const atRevocation = events;
    // The grant is dead; B cannot hear it. Fail closed: B's listener asks
    // PostgreSQL every 0.5 s and counts itself deaf after 3 s without an
    // answer (3.5 s at worst), then stops serving from its cache and ends its
    // streams. The window leaves room for a loaded machine; the figure is
    // printed. A request counts from when it was sent: while deaf, B's
    // database queries hang on the frozen relay until the probe gives up.
    const WINDOW_MS = 8000;
    let refusedAt = null;
    while (performance.now() - answered < WINDOW_MS && (refusedAt === null || endedAt === null)) {
      const sentAt = performance.now();
      if (refusedAt === null && (await onB()).status !== 200) refusedAt = sentAt;
      await sleep(250);
    }
    tc.diagnostic(`revocation answered ${Math.round(answered - frozenAt)} ms after the freeze; B refused the token from ${refusedAt === null ? '-' : Math.round(refusedAt - answered)} ms, ended the stream at ${endedAt === null ? '-' : Math.round(endedAt - answered)} ms`);
    assert.ok(refusedAt !== null, 'B still answers 200 to a token revoked 8 s ago (served from its cache, it never noticed it is deaf)');
    assert.ok(endedAt !== null, `B's stream of the revoked grant still open 8 s after the revocation (${events - atRevocation} events since)`);
  } finally {
    ac.abort();
    rl.thaw();
    await Promise.all(nodes.map((n) => n.stop('SIGKILL')));
    rl.close();
    await ds.close();
    await idp.close();
  }
});
