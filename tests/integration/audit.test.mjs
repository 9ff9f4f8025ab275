// The audit trail never blocks a request (DESIGN §3.5, issue 10 defect 9).
//
// Proxied tool calls are audited through a bounded queue and a background
// writer. Here the database stops taking audit records while everything
// else keeps working: a psql session holds an ACCESS EXCLUSIVE lock on
// audit_events, so the writer's INSERT waits (until the statement timeout)
// exactly as it would on a stalled or unreachable server, and the queue
// fills. Before the fix, every record beyond a full queue was written
// synchronously on the libmicrohttpd worker that completed the request
// (a 5 s connection wait plus the stalled INSERT), stalling the
// database-free hot path. Now:
// - proxied tool calls keep answering fast (p99 far below the 5 s wait)
//   while the queue is full and records are dropped;
// - mcpb_audit_dropped_total counts every dropped record and an
//   audit.dropped log line reports them, rate-limited (not one per record);
// - when the database takes records again the queue drains, and every
//   record is accounted for: written or counted as dropped, none lost
//   silently;
// - a node stopped while the database takes no records exits promptly
//   (one failed write, then the rest is dropped and reported) instead of
//   waiting out every queued batch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startProxyEnv, call } from '../lib/proxy_setup.mjs';
import { http, waitFor } from '../lib/harness.mjs';

const BATCH = 64;      // tools/call entries per JSON-RPC batch (one audit record each; resource.c audits at most 64)
const BATCHES = 150;   // 9600 records: beyond the 8192-record queue
const SINGLES = 100;   // single tool calls timed while records are being dropped

let env, tok;
before(async () => {
  env = await startProxyEnv({ prefix: 'audit' });
  tok = await env.token({ scope: 'repo:read' });
}, { timeout: 40000 });
after(async () => {
  if (!env) return;
  await env.close();
  // Shutdown drains the writer; a sanitizer build's reports fail the file here.
  const bad = env.broker.logs().filter((l) => /AddressSanitizer|LeakSanitizer|runtime error:/.test(l));
  assert.deepEqual(bad, [], 'sanitizer reports');
  const { code } = await env.broker.exited;
  assert.equal(code, 0, 'the node drained and exited 0');
}, { timeout: 30000 });

async function dropped() {
  const r = await http(`${env.url}/metrics`, { timeoutMs: 5000 });
  assert.equal(r.status, 200);
  const m = /^mcpb_audit_dropped_total (\d+)$/m.exec(r.text);
  assert.ok(m, `mcpb_audit_dropped_total on /metrics:\n${r.text.split('\n').filter((l) => l.includes('audit')).join('\n')}`);
  return Number(m[1]);
}
const written = async () => Number(await env.psql("SELECT count(*) FROM audit_events WHERE event = 'tool.called'"));

/** A psql session holding ACCESS EXCLUSIVE on audit_events until release(). */
async function lockAuditTable(db = env.db) {
  const p = spawn('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', db], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const locked = new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => { out += d; if (out.includes('locked')) resolve(); });
    p.on('exit', (code) => reject(new Error(`psql exited ${code} before locking`)));
  });
  p.stdin.write("BEGIN; LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n");
  await locked;
  const exited = new Promise((resolve) => p.on('exit', resolve));
  return { release: async () => { p.stdin.end('ROLLBACK;\n'); await exited; }, kill: () => p.kill('SIGKILL') };
}

function percentile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

test('a full audit queue and a stalled database: tool calls stay fast, drops are counted and reported, nothing is lost silently', { timeout: 120000 }, async () => {
  // The writer works: a first call's record reaches the table.
  const first = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues') });
  assert.equal(first.status, 200, first.text);
  assert.equal(await waitFor(async () => (await written()) === 1, 5000), true, 'the first record is written');
  const metricsBefore = (await http(`${env.url}/metrics`)).text; // checked below, after the latencies
  let generated = 1;

  const lock = await lockAuditTable();
  let released = false;
  const batchMs = [], singleMs = [];
  const t0 = Date.now();
  try {
    for (let b = 0; b < BATCHES; b++) {
      const body = Array.from({ length: BATCH }, (_, i) => call('list_issues', b * BATCH + i + 1));
      const s = performance.now();
      const r = await env.mcp('/mcp', { token: tok.access_token, body });
      batchMs.push(performance.now() - s);
      assert.equal(r.status, 200, `batch ${b}: ${r.status} ${r.text.slice(0, 200)}`);
      assert.equal(r.json.length, BATCH);
      generated += BATCH;
    }
    for (let i = 0; i < SINGLES; i++) {
      const s = performance.now();
      const r = await env.mcp('/mcp', { token: tok.access_token, body: call('get_file', i + 1) });
      singleMs.push(performance.now() - s);
      assert.equal(r.status, 200, `single call ${i}: ${r.status} ${r.text.slice(0, 200)}`);
      generated += 1;
    }
    const p50 = percentile(singleMs, 0.5), p99 = percentile(singleMs, 0.99), max = Math.max(...singleMs);
    const bmax = Math.max(...batchMs);
    console.log(`audit stalled: ${SINGLES} single tool calls p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms; ` +
      `${BATCHES} batches of ${BATCH} calls p50 ${percentile(batchMs, 0.5).toFixed(1)} ms, max ${bmax.toFixed(1)} ms`);
    assert.ok(p99 < 500, `single tool calls p99 ${p99.toFixed(1)} ms while the audit writer is stalled (the old synchronous fallback waited 5 s)`);
    assert.ok(bmax < 2000, `batches of ${BATCH} audited calls max ${bmax.toFixed(1)} ms`);

    assert.match(metricsBefore, /^mcpb_audit_dropped_total 0$/m, 'the counter is exposed from the start, at 0');
    // The queue is bounded: beyond 8192 queued + one 256-record batch in the writer's hands, records were dropped.
    const during = generated - 1;
    const d = await dropped();
    assert.ok(d >= during - (8192 + 256) && d <= during, `${d} dropped of ${during} generated while stalled`);
    // Reported by a log line, not one per record.
    const lines = env.broker.logs().filter((l) => l.includes('"audit.dropped"'));
    const elapsedS = (Date.now() - t0) / 1000;
    assert.ok(lines.length >= 1, 'an audit.dropped line');
    assert.ok(lines.length <= 1 + Math.ceil(elapsedS / 10), `${lines.length} audit.dropped lines in ${elapsedS.toFixed(1)} s (one per 10 s at most)`);
    const j = JSON.parse(lines[0]);
    assert.ok(j.dropped >= 1 && j.queue_full >= 1, lines[0]);
    await env.assertHealthy('a stalled audit writer');
  } finally {
    if (!released) await lock.release().catch(() => lock.kill());
    released = true;
  }

  // The database takes records again: the queue drains, and every record
  // generated is either in the table or counted as dropped.
  const balanced = await waitFor(async () => (await written()) + (await dropped()) === generated, 60000, 250);
  const w = await written(), d = await dropped();
  assert.equal(w + d, generated, `written ${w} + dropped ${d} = generated ${generated}`);
  assert.ok(balanced);
  console.log(`after the stall: ${w} records written, ${d} dropped, of ${generated}`);
  assert.ok(w >= 1 + 8192, `${w} records written once the database took them again (the full queue at least)`);
  // And the trail goes on: a call made now is written.
  const later = await env.mcp('/mcp', { token: tok.access_token, body: call('list_issues', 99999) });
  assert.equal(later.status, 200);
  const rid = later.headers.get('x-request-id');
  assert.ok(/^[A-Za-z0-9_-]+$/.test(rid || ''), `request id ${rid}`);
  assert.ok(await waitFor(async () => (await env.psql(`SELECT count(*) FROM audit_events WHERE request_id = '${rid}'`)) === '1', 5000),
    'a record made after the outage is written');
  assert.equal(await dropped(), d, 'nothing dropped once the database is back');
});

test('SIGTERM while the database takes no audit records: the node exits promptly and reports what it dropped', { timeout: 120000 }, async () => {
  const other = await startProxyEnv({ prefix: 'audit_stop' });
  let lock;
  try {
    const t = await other.token({ scope: 'repo:read' });
    const warm = await other.mcp('/mcp', { token: t.access_token, body: call('list_issues') });
    assert.equal(warm.status, 200);
    await waitFor(async () => (await other.psql("SELECT count(*) FROM audit_events WHERE event = 'tool.called'")) === '1', 5000);
    lock = await lockAuditTable(other.db);
    let queued = 0;
    for (let b = 0; b < 40; b++) {
      const r = await other.mcp('/mcp', { token: t.access_token, body: Array.from({ length: BATCH }, (_, i) => call('list_issues', i + 1)) });
      assert.equal(r.status, 200);
      queued += BATCH;
    }
    const s = Date.now();
    await other.ds.close();
    other.broker.proc.kill('SIGTERM');
    const kill = setTimeout(() => other.broker.proc.kill('SIGKILL'), 60000);
    const { code, signal } = await other.broker.exited;
    clearTimeout(kill);
    const stopS = (Date.now() - s) / 1000;
    console.log(`stop with ${queued} audit records queued and the table locked: exited in ${stopS.toFixed(1)} s`);
    assert.equal(code, 0, `exit ${code ?? signal}`);
    // One write attempt (the statement timeout, 5 s) and the rest dropped; not 5 s per batch.
    assert.ok(stopS < 12, `stopped in ${stopS.toFixed(1)} s (${Math.ceil(queued / 256)} batches queued)`);
    const lines = other.broker.logs().filter((l) => l.includes('"audit.dropped"')).map((l) => JSON.parse(l));
    const failed = lines.reduce((n, j) => n + j.write_failed, 0);
    assert.equal(failed, queued, `every queued record reported as dropped (${JSON.stringify(lines)})`);
    assert.deepEqual(other.broker.logs().filter((l) => /AddressSanitizer|LeakSanitizer|runtime error:/.test(l)), []);
  } finally {
    await lock?.release().catch(() => lock.kill());
    if (other.broker.proc.exitCode === null && other.broker.proc.signalCode === null) other.broker.proc.kill('SIGKILL');
    await other.ds.close().catch(() => {});
    await other.idp.close();
  }
});
