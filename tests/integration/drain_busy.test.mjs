// Draining while a request is held up in its handler (a slow upstream at
// /callback): the listener still closes by the drain deadline, so a load
// balancer sees refused connections and moves on, and the held request is
// answered before the node exits 0. Twice: with the handler on the handler
// pool (the default: the worker stays free and quiesces at once), and with
// http.handler_threads 0, where the handler holds the only worker (its
// quiesce is late, and logged). Real binary, real PostgreSQL, the fake IdP
// with a delayed token endpoint.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startIdp } from '../fakes/idp.mjs';
import { baseConfig, createDatabase, freePort, http, requireCluster, sleep, startBroker, waitFor } from '../lib/harness.mjs';
import { runFlow } from '../lib/flow.mjs';
import { upstreamConfig } from '../lib/nodes.mjs';

const HELD_MS = 5000; // the upstream's token answer at /callback
const DRAIN_S = 2;

let idp, broker;

async function start(handlerThreads) {
  requireCluster();
  idp = await startIdp({ port: 0, log: false });
  const db = await createDatabase('drain_busy');
  const port = await freePort();
  const upstreams = upstreamConfig(idp);
  upstreams.gh.timeout_ms = HELD_MS + 4000;
  broker = await startBroker(baseConfig({ port, databaseUrl: db, extra: {
    http: { threads: 1, drain_timeout_s: DRAIN_S, ...(handlerThreads == null ? {} : { handler_threads: handlerThreads }) },
    limits: { register_per_ip_per_hour: 0 },
    upstreams,
    resources: [{ path: '/mcp', upstream: 'gh', downstream: 'http://127.0.0.1:9/' }],
  } }));
}

async function stop() {
  await broker?.stop('SIGKILL');
  await idp?.close();
  broker = idp = null;
}

after(stop);

/** 'refused', 'open' or 'silent' (nothing within ms: a dropped SYN). */
function probe(port, ms = 1000) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const t = setTimeout(() => { s.destroy(); resolve('silent'); }, ms);
    s.on('connect', () => { clearTimeout(t); s.destroy(); resolve('open'); });
    s.on('error', (e) => { clearTimeout(t); resolve(e.code === 'ECONNREFUSED' ? 'refused' : e.code); });
  });
}

async function heldAtDrain(onLoop) {
  const r = await http(`${idp.base}/_control/config`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ fault: { 'github.token': { delay_ms: HELD_MS } } }) });
  assert.equal(r.status, 200, r.text);
  const redirectUri = 'http://127.0.0.1:33418/callback';
  const reg = await http(`${broker.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }) });
  assert.equal(reg.status, 201, reg.text);
  const flow = runFlow({ broker: broker.url, clientId: reg.json.client_id, redirectUri, resource: `${broker.url}/mcp` })
    .then((f) => ({ f }), (e) => ({ e }));
  // The flow is at /callback, the worker inside the code exchange the IdP holds.
  const applied = async () => (await http(`${idp.base}/_control/stats`)).json?.faults_applied ?? 0;
  assert.ok(await waitFor(async () => (await applied()) >= 1, 10000), 'the code exchange reached the IdP');
  await sleep(200);
  const t0 = Date.now();
  broker.proc.kill('SIGTERM');
  await sleep(DRAIN_S * 1000 + 600);
  const state = await probe(broker.port);
  const at = Date.now() - t0;
  assert.equal(state, 'refused', `${at} ms after SIGTERM, with the request still held, a new connection was ${state}`);
  assert.ok(at < HELD_MS - 1000, `probed at ${at} ms, before the held request could end`);
  const held = await flow;
  assert.equal(held.e, undefined, `the held flow failed: ${held.e?.message}`);
  assert.equal(held.f.steps.callback?.status, 302, 'the held /callback is answered');
  assert.ok(held.f.code, 'with its code');
  const done = await broker.exited;
  assert.equal(done.code, 0, `exit ${done.code ?? done.signal}`);
  const late = broker.logs().some((l) => /"event":"http.drain_quiesce_late"/.test(l));
  assert.equal(late, onLoop, onLoop ? 'the late quiesce is logged' : 'the worker was held: the handler did not run on the pool');
}

test('SIGTERM while a handler on the pool waits on a slow upstream: the listener closes by the drain deadline, the held request is answered, exit 0', { timeout: 60000 }, async () => {
  await start(null);
  try {
    await heldAtDrain(false);
  } finally {
    await stop();
  }
});

test('the same with the handlers on the loop (handler_threads 0): the held worker quiesces late, and still by the deadline', { timeout: 60000 }, async () => {
  await start(0);
  try {
    await heldAtDrain(true);
  } finally {
    await stop();
  }
});
