// notifications/elicitation/complete (SEP-1036): when the user finishes an
// in-band connect, every standalone stream (GET, text/event-stream) the
// grant holds open, on any node, gets the notification, spliced in between
// two of the downstream's events and never inside one. Two nodes: the stream
// is on node A, the connect flow ends on node B (the NOTIFY crosses).
// The downstream is a raw HTTP server, so the test decides where its event
// stream stands when the notification comes: in the middle of an event.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startNodes } from '../lib/nodes.mjs';
import { http as fetchHttp, psql, waitFor } from '../lib/harness.mjs';
import { connectInBand, fullFlow } from '../lib/flow.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

/** A downstream whose GET stream the test writes by hand; POSTs answer 200. */
async function rawDownstream() {
  const streams = [];
  let opened;
  const wait = new Promise((r) => { opened = r; });
  const server = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      res.write(': open\n\n');
      streams.push(res);
      opened(res);
      return;
    }
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      let id = null;
      try { id = JSON.parse(body).id ?? null; } catch { /* not JSON */ }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id, result: {} }));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}/mcp`,
    stream: () => wait,
    close: () => new Promise((r) => { for (const s of streams) s.destroy(); server.closeAllConnections(); server.close(r); }),
  };
}

/** Reads an event stream as text, chunk by chunk. */
function reader(res) {
  const dec = new TextDecoder();
  let text = '';
  const it = res.body.getReader();
  (async () => {
    for (;;) {
      const { done, value } = await it.read().catch(() => ({ done: true }));
      if (done) return;
      text += dec.decode(value, { stream: true });
    }
  })();
  return { text: () => text, cancel: () => it.cancel().catch(() => {}) };
}

async function until(fn, what, ms = 10000) {
  assert.ok(await waitFor(fn, ms, 25), `timed out: ${what}`);
}

test('a completed connect is told on the grant\'s open streams, between two events, on every node', { timeout: 60000 }, async () => {
  const ds = await rawDownstream();
  cleanups.push(() => ds.close());
  const env = await startNodes(2, {
    downstream: ds.url,
    extra: { registration: { dynamic: true, client_id_metadata_documents: false } },
    resources: [{
      path: '/mcp', upstream: 'gh', connect: ['sentry'], downstream: ds.url,
      inject: [{ value: 'Bearer {upstream_token}' }, { header: 'X-Sentry-Token', value: '{upstream_token:sentry}' }],
    }],
  });
  cleanups.push(() => env.stop());
  const [nodeA, nodeB] = env.nodes;
  const alice = await fullFlow(env.publicUrl, { resource: `${env.publicUrl}/mcp` });
  const bob = await fullFlow(env.publicUrl, { resource: `${env.publicUrl}/mcp`, login: 'bob' });
  const headers = (t) => ({ authorization: `Bearer ${t.access_token}`, accept: 'text/event-stream', 'mcp-protocol-version': '2025-11-25' });

  // alice's stream on node A; bob's too (another grant: it must hear nothing).
  const resA = await fetch(`${nodeA.url}/mcp`, { headers: headers(alice) });
  assert.equal(resA.status, 200);
  const streamA = reader(resA);
  const dsA = await ds.stream();
  const resBob = await fetch(`${nodeA.url}/mcp`, { headers: headers(bob) });
  const streamBob = reader(resBob);
  await until(() => streamA.text().includes(': open'), 'the stream opened');

  // The elicitation, then the downstream is left in the middle of an event.
  const call = await fetchHttp(`${nodeA.url}/mcp`, {
    method: 'POST', headers: { ...headers(alice), 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
  });
  const [e] = call.json.error.data.elicitations;
  dsA.write('event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message",');
  await until(() => streamA.text().includes('notifications/message'), 'the half event arrived');

  // The user connects Sentry; the flow ends on node B.
  const onB = (u) => { const x = new URL(u); x.port = new URL(nodeB.url).port; return x.toString(); };
  const r = await connectInBand(e.url, { at: onB });
  assert.equal(r.status, 200, r.text);

  // Held while the downstream's event is incomplete ...
  await new Promise((res) => setTimeout(res, 300));
  assert.doesNotMatch(streamA.text(), /elicitation\/complete/, 'not inside the downstream\'s event');
  // ... and spliced in right after it ends, even where the same write
  // goes on with the start of the next event (CRLF line ends this time).
  dsA.write('"params":{"level":"info","data":"x"}}\r\n\r\nevent: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"y"}}');
  await until(() => streamA.text().includes('elicitation/complete'), 'the notification');
  dsA.write('\r\n\r\n');
  await until(() => /"data":"y"\}\}\r\n\r\n$/.test(streamA.text()), 'the second event');
  const events = streamA.text().split(/\r\n\r\n|\n\n/).filter((x) => x.startsWith('event:'));
  const data = (ev) => JSON.parse(ev.split(/\r?\ndata: /)[1]);
  assert.equal(events.length, 3, JSON.stringify(streamA.text()));
  assert.deepEqual(data(events[0]), { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'x' } });
  assert.deepEqual(data(events[1]), { jsonrpc: '2.0', method: 'notifications/elicitation/complete', params: { elicitationId: e.elicitationId } });
  assert.deepEqual(data(events[2]), { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'y' } });
  assert.doesNotMatch(streamBob.text(), /elicitation/, 'another grant\'s stream hears nothing');

  // Between events, it goes at once: a second connect (a fresh elicitation).
  await psql(env.db, 'DELETE FROM grant_connections');
  const call2 = await fetchHttp(`${nodeB.url}/mcp`, {
    method: 'POST', headers: { ...headers(alice), 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
  });
  const e2 = call2.json.error.data.elicitations[0];
  assert.equal((await connectInBand(e2.url)).status, 200);
  await until(() => streamA.text().includes(e2.elicitationId), 'the second notification');
  streamA.cancel();
  streamBob.cancel();
  for (const n of env.nodes) assert.equal((await fetchHttp(`${n.url}/readyz`)).status, 200);
});
