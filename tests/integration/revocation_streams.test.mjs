// Revocation ends live traffic (DESIGN §3.5): every open stream of a revoked
// grant — a tool call streaming its progress (POST answered with SSE) and a
// GET SSE stream — is cut on every node within the propagation budget after
// the revoking call answered, for every cause: RFC 7009 /revoke (refresh and
// access token), the operator API (grant, user, user+upstream, client with
// disable_client, upstream, all), refresh-token reuse and upstream death.
// Cut means: the client's stream ends with an error (no clean end a client
// could take for a completed call), nothing more arrives, the downstream sees
// its request closed; other grants' streams on the same nodes keep flowing.
// Two nodes share one database; the revoking call goes to node A, so streams
// on A measure the same-node path and streams on B the cross-node one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { http, psql, sleep, CLUSTER_URL } from '../lib/harness.mjs';
import { fullFlow, tokenRequest } from '../lib/flow.mjs';
import { startNodes } from '../lib/nodes.mjs';
import { startDownstream } from '../fakes/downstream.mjs';

const BUDGET_MS = 100;   // DESIGN §3.5: p99 after the revoking call answered
// What each single stream is held to on a shared 2-core test box; the
// budget itself is asserted on the p99 of the measurement below.
const STREAM_MS = 500;
const WAIT_MS = 3000;    // how long a stream that should be cut is watched
const DELAY = 50;        // ms between the downstream's events
const MEASURE = 40;      // revocations measured (each: one same-node and one cross-node stream)

let env, ds, A, B, RES;
const open = new Set();  // AbortControllers of streams still open
const samples = { same: [], cross: [] };
let tagSeq = 0;

const flow = (opts = {}) => fullFlow(env.publicUrl, { resource: RES, ...opts });
const gh = (opts = {}) => fullFlow(env.publicUrl, { resource: `${env.publicUrl}/gh`, ...opts });
const grantOf = (access) => psql(env.db, `SELECT grant_id FROM tokens WHERE token_hash = sha256(convert_to('${access}', 'UTF8'))`);
const subjectOf = (login, upstream = 'sentry') => psql(env.db, `SELECT subject FROM users WHERE upstream = '${upstream}' AND (login = '${login}' OR email = '${login}@example.com')`);
const idpConfig = (patch) => http(`${env.idp.base}/_control/config`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(patch) });
const admin = (node, body) => http(`${node.url}/admin/v1/revoke`, {
  method: 'POST', headers: { authorization: `Bearer ${env.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
const revoke = (node, t, token, hint) => http(`${node.url}/revoke`, {
  method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ token, client_id: t.clientId, ...(hint ? { token_type_hint: hint } : {}) }).toString() });
const call = (node, token, path = '/mcp') => http(`${node.url}${path}`, {
  method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
  body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo' } }) });

async function until(pred, ms) {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (pred()) return true;
    await sleep(5);
  }
  return !!pred();
}

/**
 * Opens a proxied stream: kind 'post' is a tool call answered by a progress
 * stream, 'get' a GET SSE stream ('idle': one that never sends). Events are
 * time-stamped with performance.now() as they arrive.
 */
async function openStream(node, token, { kind = 'post', path = '/mcp', label } = {}) {
  const tag = `s${++tagSeq}`;
  const ac = new AbortController();
  open.add(ac);
  const mode = kind === 'post' ? 'progress' : kind === 'idle' ? 'idle' : 'sse';
  const url = `${node.url}${path}?mode=${mode}&events=100000&delay=${DELAY}&tag=${tag}`;
  const headers = { authorization: `Bearer ${token}`, accept: 'application/json, text/event-stream' };
  const init = kind === 'post'
    ? { method: 'POST', headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo', arguments: {}, _meta: { progressToken: tag } } }) }
    : { method: 'GET', headers };
  const res = await fetch(url, { ...init, signal: ac.signal });
  const s = { label: label || `${kind}@${node === A ? 'A' : 'B'}`, kind, node, tag, ac, status: res.status, events: [], endedAt: null, ok: null, error: null };
  assert.equal(res.status, 200, `${s.label}: ${res.status}`);
  assert.match(res.headers.get('content-type') || '', /^text\/event-stream/);
  s.done = (async () => {
    const dec = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          s.events.push({ at: performance.now(), text: buf.slice(0, i) });
          buf = buf.slice(i + 2);
        }
      }
      s.ok = true;
    } catch (e) {
      s.ok = false;
      s.error = e;
    }
    s.endedAt = performance.now();
    open.delete(ac);
  })();
  return s;
}

const rec = (s) => ds.requests.find((r) => r.query.tag === s.tag);

/** Every stream is flowing: headers in, the downstream has it, events arrive. */
async function established(streams) {
  const ok = await until(() => streams.every((s) => rec(s) && (s.kind === 'idle' || s.events.length >= 2)), 5000);
  assert.ok(ok, `streams established: ${streams.map((s) => `${s.label}:${s.events.length}`).join(' ')}`);
}

/** Runs the revoking call; resolves {res, at} with at = when it answered. */
async function timed(fn) {
  const res = await fn();
  return { res, at: performance.now(), wall: Date.now() };
}

/** Asserts every stream was cut within STREAM_MS of the call's answer; records latencies. */
async function expectCut(streams, answered, what, sameNode = A) {
  await until(() => streams.every((s) => s.endedAt !== null), WAIT_MS);
  for (const s of streams) {
    assert.ok(s.endedAt !== null, `${what}: ${s.label} still open ${WAIT_MS} ms after the revoking call answered (${s.events.length} events so far)`);
    const ms = Math.max(0, s.endedAt - answered.at);
    (s.node === sameNode ? samples.same : samples.cross).push(ms);
    assert.ok(ms < STREAM_MS, `${what}: ${s.label} ended ${ms.toFixed(1)} ms after the revoking call answered`);
    assert.equal(s.ok, false, `${what}: ${s.label} must end with an error, not as a complete answer`);
    assert.ok(!s.events.some((e) => e.at > s.endedAt), 'no event after the end');
    if (s.kind === 'post') assert.ok(!s.events.some((e) => /"result"/.test(e.text)), `${what}: ${s.label} got a final result`);
  }
  // The downstream saw each request closed before its answer was complete.
  const closed = await until(() => streams.every((s) => rec(s).closedAt !== null), WAIT_MS);
  for (const s of streams) {
    const r = rec(s);
    assert.ok(closed && r.aborted, `${what}: the downstream request of ${s.label} was not aborted`);
    assert.ok(r.closedAt - answered.wall < STREAM_MS + 50, `${what}: downstream of ${s.label} closed ${r.closedAt - answered.wall} ms after the answer`);
  }
  // Nothing more: the downstream stopped sending and the client got nothing after the end.
  const counts = streams.map((s) => [s.events.length, rec(s).events.length]);
  await sleep(3 * DELAY);
  streams.forEach((s, i) => {
    assert.equal(s.events.length, counts[i][0], `${what}: ${s.label} received events after its end`);
    assert.equal(rec(s).events.length, counts[i][1], `${what}: the downstream kept sending to ${s.label}`);
  });
}

/** Asserts the streams are still open and still receiving events. */
async function expectAlive(streams, what) {
  const counts = streams.map((s) => s.events.length);
  await sleep(6 * DELAY);
  streams.forEach((s, i) => {
    assert.equal(s.endedAt, null, `${what}: bystander ${s.label} was cut (${s.error})`);
    if (s.kind !== 'idle') assert.ok(s.events.length > counts[i], `${what}: bystander ${s.label} stopped receiving`);
    assert.equal(rec(s).aborted, false, `${what}: bystander ${s.label}'s downstream request was aborted`);
  });
}

function closeAll(streams) {
  for (const s of streams) s.ac.abort();
}

/** A POST and a GET stream of token on each node. */
async function fourStreams(token, path = '/mcp', label = 'victim') {
  const kinds = [[A, 'post'], [A, 'get'], [B, 'post'], [B, 'get']];
  return Promise.all(kinds.map(([n, k]) => openStream(n, token, { kind: k, path, label: `${label} ${k}@${n === A ? 'A' : 'B'}` })));
}

async function expect401(token, path = '/mcp') {
  for (const n of [A, B]) assert.equal((await call(n, token, path)).status, 401, `a new request on ${n === A ? 'A' : 'B'} is refused`);
}

function pct(list, p) {
  const s = [...list].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

before(async () => {
  ds = await startDownstream({ port: 0 });
  env = await startNodes(2, { downstream: `${ds.url}/mcp`, extra: { tokens: { refresh_grace: 0 } } });
  [A, B] = env.nodes;
  RES = `${env.publicUrl}/mcp`;
}, { timeout: 60000 });

after(async () => {
  for (const ac of open) ac.abort();
  await env?.stop();
  await ds?.close();
}, { timeout: 30000 });

const T = { timeout: 60000 };

test('RFC 7009 /revoke of the refresh token cuts the grant\'s streams on both nodes; another grant of the same client streams on', T, async () => {
  const t = await flow({ login: 'rv-refresh' });
  const mate = await flow({ login: 'rv-refresh', clientId: t.clientId });
  const victims = await fourStreams(t.access_token);
  const by = [await openStream(A, mate.access_token, { label: 'same client, other grant @A' }),
    await openStream(B, mate.access_token, { kind: 'get', label: 'same client, other grant @B' })];
  await established([...victims, ...by]);
  const answered = await timed(() => revoke(A, t, t.refresh_token, 'refresh_token'));
  assert.equal(answered.res.status, 200, answered.res.text);
  await expectCut(victims, answered, '/revoke refresh');
  await expectAlive(by, '/revoke refresh');
  await expect401(t.access_token);
  closeAll(by);
});

test('RFC 7009 /revoke of an access token cuts the streams opened with it, not those of the grant\'s next token', T, async () => {
  const t = await flow({ login: 'rv-access' });
  const victims = await fourStreams(t.access_token);
  const next = await tokenRequest(A.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token, client_id: t.clientId });
  assert.equal(next.status, 200, next.text);
  const by = [await openStream(A, next.json.access_token, { label: 'next token @A' }),
    await openStream(B, next.json.access_token, { kind: 'get', label: 'next token @B' })];
  await established([...victims, ...by]);
  const answered = await timed(() => revoke(A, t, t.access_token, 'access_token'));
  assert.equal(answered.res.status, 200, answered.res.text);
  await expectCut(victims, answered, '/revoke access');
  await expectAlive(by, '/revoke access');
  await expect401(t.access_token);
  closeAll(by);
});

test('operator API by grant_id cuts that grant only (an idle GET stream too)', T, async () => {
  const t = await flow({ login: 'op-grant' });
  const mate = await flow({ login: 'op-grant', clientId: t.clientId });
  const victims = [...await fourStreams(t.access_token), await openStream(B, t.access_token, { kind: 'idle', label: 'victim idle@B' })];
  const by = [await openStream(A, mate.access_token, { label: 'other grant @A' }), await openStream(B, mate.access_token, { kind: 'idle', label: 'other grant idle@B' })];
  await established([...victims, ...by]);
  const gid = await grantOf(t.access_token);
  const answered = await timed(() => admin(A, { grant_id: gid }));
  assert.deepEqual(answered.res.json, { revoked: 1 });
  await expectCut(victims, answered, 'admin grant_id');
  await expectAlive(by, 'admin grant_id');
  await expect401(t.access_token);
  closeAll(by);
});

test('operator API by user cuts every grant of that user, not another user\'s', T, async () => {
  const t1 = await flow({ login: 'op-user' });
  const t2 = await flow({ login: 'op-user' });
  const other = await flow({ login: 'op-user-other' });
  const victims = [...await fourStreams(t1.access_token), await openStream(B, t2.access_token, { label: 'second grant post@B' })];
  const by = [await openStream(A, other.access_token, { label: 'other user @A' }), await openStream(B, other.access_token, { kind: 'get', label: 'other user @B' })];
  await established([...victims, ...by]);
  const answered = await timed(async () => admin(A, { user: await subjectOf('op-user') }));
  assert.deepEqual(answered.res.json, { revoked: 2 });
  await expectCut(victims, answered, 'admin user');
  await expectAlive(by, 'admin user');
  await expect401(t1.access_token);
  await expect401(t2.access_token);
  closeAll(by);
});

test('operator API by user and upstream cuts that user\'s grants of the upstream, not those of another upstream', T, async () => {
  const t = await flow({ login: 'op-userup' });
  const g = await gh({ login: 'op-userup' });
  const victims = await fourStreams(t.access_token);
  const by = [await openStream(A, g.access_token, { path: '/gh', label: 'same login, gh @A' }),
    await openStream(B, g.access_token, { kind: 'get', path: '/gh', label: 'same login, gh @B' })];
  await established([...victims, ...by]);
  const answered = await timed(async () => admin(A, { user: await subjectOf('op-userup'), upstream: 'sentry' }));
  assert.deepEqual(answered.res.json, { revoked: 1 });
  await expectCut(victims, answered, 'admin user+upstream');
  await expectAlive(by, 'admin user+upstream');
  await expect401(t.access_token);
  closeAll(by);
});

test('operator API by client with disable_client cuts every grant of the client, not another client\'s', T, async () => {
  const t1 = await flow({ login: 'op-client-1' });
  const t2 = await flow({ login: 'op-client-2', clientId: t1.clientId });
  const other = await flow({ login: 'op-client-1' });
  const victims = [...await fourStreams(t1.access_token), await openStream(A, t2.access_token, { kind: 'get', label: 'second user get@A' })];
  const by = [await openStream(A, other.access_token, { label: 'other client @A' }), await openStream(B, other.access_token, { kind: 'get', label: 'other client @B' })];
  await established([...victims, ...by]);
  const answered = await timed(() => admin(A, { client_id: t1.clientId, disable_client: true }));
  assert.deepEqual(answered.res.json, { revoked: 2 });
  await expectCut(victims, answered, 'admin client');
  await expectAlive(by, 'admin client');
  await expect401(t1.access_token);
  closeAll(by);
});

test('refresh-token reuse revokes the grant and cuts its streams (every token of it)', T, async () => {
  const t = await flow({ login: 'reuse' });
  const next = await tokenRequest(B.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token, client_id: t.clientId });
  assert.equal(next.status, 200, next.text);
  const other = await flow({ login: 'reuse' });
  const victims = [...await fourStreams(t.access_token), await openStream(B, next.json.access_token, { label: 'rotated token post@B' })];
  const by = [await openStream(A, other.access_token, { label: 'other grant @A' }), await openStream(B, other.access_token, { kind: 'get', label: 'other grant @B' })];
  await established([...victims, ...by]);
  // The rotated-out refresh token again (no grace window here): reuse.
  const answered = await timed(() => tokenRequest(A.url, { grant_type: 'refresh_token', refresh_token: t.refresh_token, client_id: t.clientId }));
  assert.equal(answered.res.status, 400, answered.res.text);
  assert.equal(answered.res.json.error, 'invalid_grant');
  await expectCut(victims, answered, 'refresh reuse');
  await expectAlive(by, 'refresh reuse');
  await expect401(next.json.access_token);
  assert.equal(await psql(env.db, `SELECT revoked_reason FROM grants WHERE id = '${await grantOf(t.access_token)}'`), 'refresh_reuse');
  closeAll(by);
});

test('upstream death (the upstream refresh answers invalid_grant) cuts the grant\'s streams', T, async () => {
  const t = await flow({ login: 'updeath' });
  const other = await flow({ login: 'updeath' });
  const victims = await fourStreams(t.access_token);
  const by = [await openStream(A, other.access_token, { label: 'other grant @A' }), await openStream(B, other.access_token, { kind: 'get', label: 'other grant @B' })];
  await established([...victims, ...by]);
  // The downstream refuses the injected token, the broker forces an upstream
  // refresh, and the upstream says the grant is dead.
  await idpConfig({ fault: { 'sentry.token.refresh': { mode: 'invalid_grant', count: 1 } } });
  try {
    const answered = await timed(() => http(`${A.url}/mcp?mode=401`, {
      method: 'POST', headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo' } }) }));
    assert.equal(answered.res.status, 401, answered.res.text);
    assert.match(await psql(env.db, `SELECT status || ':' || revoked_reason FROM grants WHERE id = '${await grantOf(t.access_token)}'`), /^revoked:upstream_/);
    await expectCut(victims, answered, 'upstream death');
  } finally {
    await idpConfig({ fault: { 'sentry.token.refresh': null } });
  }
  await expectAlive(by, 'upstream death');
  await expect401(t.access_token);
  closeAll(by);
});

test('a request validated before the revocation reached the node, whose transfer starts after, never reaches the downstream', T, async () => {
  // B validates the token, then waits 1.5 s on an upstream refresh (the
  // upstream token is stale); meanwhile the access token is revoked on A.
  const t = await flow({ login: 'race' });
  const gid = await grantOf(t.access_token);
  await psql(env.db, `UPDATE grants SET up_expires_at = now() - interval '1 second' WHERE id = '${gid}'`);
  await idpConfig({ fault: { 'sentry.token.refresh': { delay_ms: 1500, count: 1 } } });
  try {
    const tag = `race${++tagSeq}`;
    const ac = new AbortController();
    open.add(ac);
    const late = fetch(`${B.url}/mcp?mode=progress&events=100000&delay=${DELAY}&tag=${tag}`, {
      method: 'POST', headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo' } }), signal: ac.signal });
    await sleep(400);
    const r = await revoke(A, t, t.access_token, 'access_token');
    assert.equal(r.status, 200);
    const res = await late;
    const text = res.status === 200 ? '' : await res.text();
    ac.abort();
    open.delete(ac);
    assert.ok(res.status >= 400, `the overtaken request was answered ${res.status} ${res.headers.get('content-type')}`);
    assert.doesNotMatch(text, /mcpb_|sntr_/);
    assert.equal(ds.requests.find((q) => q.query.tag === tag), undefined, 'the downstream received the overtaken request');
    // It was validated before and stopped at the start of its transfer (not refused at validation).
    assert.ok(B.logs().some((l) => /"event":"proxy.revoked".*on its way/.test(l)), 'B ended the transfer as it started');
  } finally {
    await idpConfig({ fault: { 'sentry.token.refresh': null } });
  }
});

test('a node deaf to NOTIFY while a grant is revoked cuts the grant\'s streams when it listens again; the revoking node at once', T, async () => {
  const t = await flow({ login: 'deaf' });
  const other = await flow({ login: 'deaf' });
  const onA = await openStream(A, t.access_token, { label: 'victim post@A' });
  const onB = await openStream(B, t.access_token, { kind: 'get', label: 'victim get@B' });
  const by = [await openStream(B, other.access_token, { label: 'other grant @B' })];
  await established([onA, onB, ...by]);
  const gid = await grantOf(t.access_token);
  const dbName = new URL(env.db).pathname.slice(1);
  // A's pool keeps connections for the revoking call.
  for (let i = 0; i < 3; i++) assert.equal((await http(`${A.url}/readyz`)).status, 200);
  // No new connection to the database: the listeners, once killed, stay deaf.
  await psql(CLUSTER_URL, `ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS false`);
  let answered;
  try {
    const killed = await psql(CLUSTER_URL, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '${dbName}' AND application_name = 'mcp-broker-listen'`);
    assert.equal(killed, '2');
    await sleep(300);
    answered = await timed(() => admin(A, { grant_id: gid }));
    assert.deepEqual(answered.res.json, { revoked: 1 });
    // The revoking node needs no NOTIFY.
    await expectCut([onA], answered, 'deaf: same node');
    await sleep(500);
    assert.equal(onB.endedAt, null, 'B cannot know yet');
  } finally {
    await psql(CLUSTER_URL, `ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`);
  }
  const cut = await until(() => onB.endedAt !== null, 8000);
  assert.ok(cut, 'B never cut the stream of a grant revoked while it was deaf');
  assert.equal(onB.ok, false);
  assert.ok(await until(() => rec(onB).aborted, 2000), 'B\'s downstream request was aborted');
  await expectAlive(by, 'deaf');
  closeAll(by);
});

test('operator API by upstream cuts that upstream\'s grants, not another upstream\'s', T, async () => {
  const t1 = await flow({ login: 'op-up-1' });
  const t2 = await flow({ login: 'op-up-2' });
  const g = await gh({ login: 'op-up-3' });
  const victims = [...await fourStreams(t1.access_token), await openStream(B, t2.access_token, { kind: 'get', label: 'other user get@B' })];
  const by = [await openStream(A, g.access_token, { path: '/gh', label: 'gh @A' }), await openStream(B, g.access_token, { kind: 'get', path: '/gh', label: 'gh @B' })];
  await established([...victims, ...by]);
  const answered = await timed(() => admin(A, { upstream: 'sentry' }));
  assert.ok(answered.res.json.revoked >= 2, answered.res.text);
  await expectCut(victims, answered, 'admin upstream');
  await expectAlive(by, 'admin upstream');
  await expect401(t1.access_token);
  closeAll(by);
});

test('operator API "all" cuts every stream on both nodes; a grant made afterwards streams', T, async () => {
  const t1 = await flow({ login: 'all-1' });
  const g = await gh({ login: 'all-2' });
  const victims = [...await fourStreams(t1.access_token), ...await fourStreams(g.access_token, '/gh', 'gh')];
  await established(victims);
  const answered = await timed(() => admin(A, { all: true }));
  assert.ok(answered.res.json.revoked >= 2, answered.res.text);
  await expectCut(victims, answered, 'admin all');
  await expect401(t1.access_token);
  const fresh = await flow({ login: 'all-3' });
  const s = [await openStream(A, fresh.access_token), await openStream(B, fresh.access_token, { kind: 'get' })];
  await established(s);
  await expectAlive(s, 'after all');
  closeAll(s);
});

test(`stream cut latency after /revoke over ${MEASURE} revocations, same node and cross node (p99 < ${BUDGET_MS} ms)`, { timeout: 240000 }, async () => {
  const lat = { same: [], cross: [] };
  const keeper = await flow({ login: 'keeper' });
  const by = [await openStream(A, keeper.access_token, { label: 'keeper @A' }), await openStream(B, keeper.access_token, { kind: 'get', label: 'keeper @B' })];
  await established(by);
  for (let i = 0; i < MEASURE; i++) {
    const t = await flow({ login: `m${i}` });
    const [on, off] = i % 2 ? [B, A] : [A, B];
    const [k1, k2] = i % 4 < 2 ? ['post', 'get'] : ['get', 'post'];
    const same = await openStream(on, t.access_token, { kind: k1, label: `m${i} same ${k1}` });
    const cross = await openStream(off, t.access_token, { kind: k2, label: `m${i} cross ${k2}` });
    await established([same, cross]);
    const answered = await timed(() => revoke(on, t, t.refresh_token));
    assert.equal(answered.res.status, 200);
    await expectCut([same, cross], answered, `measurement ${i}`, on);
    lat.same.push(Math.max(0, same.endedAt - answered.at));
    lat.cross.push(Math.max(0, cross.endedAt - answered.at));
  }
  await expectAlive(by, 'measurement');
  closeAll(by);
  const line = (name, l) => `${name}: p50 ${pct(l, 50).toFixed(1)} ms, p99 ${pct(l, 99).toFixed(1)} ms, max ${Math.max(...l).toFixed(1)} ms (n=${l.length})`;
  console.log(`# stream cut after the revoking call answered — ${line('same node', lat.same)}; ${line('cross node', lat.cross)}`);
  console.log(`# every cut in this file — ${line('same node', samples.same)}; ${line('cross node', samples.cross)}`);
  for (const n of [A, B]) {
    const m = /^mcpb_proxy_revoked_total (\d+)$/m.exec((await http(`${n.url}/metrics`)).text);
    assert.ok(m && Number(m[1]) >= MEASURE, `mcpb_proxy_revoked_total on ${n === A ? 'A' : 'B'}: ${m && m[1]}`);
  }
  assert.ok(pct(lat.same, 99) < BUDGET_MS, `same-node p99 ${pct(lat.same, 99).toFixed(1)} ms`);
  assert.ok(pct(lat.cross, 99) < BUDGET_MS, `cross-node p99 ${pct(lat.cross, 99).toFixed(1)} ms`);
});
