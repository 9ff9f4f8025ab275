// The README's run command: deploy/local.sh brings up a node answering
// /readyz 200 in front of the demo upstream and demo MCP server, a user can
// walk the whole flow through it, and Ctrl-C stops what it started.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { SOURCE_DIR, createDatabase, freePort, http, waitFor, sleep } from '../lib/harness.mjs';
import { fullFlow } from '../lib/flow.mjs';

test('deploy/local.sh serves /readyz 200 and the demo flow works end to end', async () => {
  const db = await createDatabase('local');
  const [bp, ip, mp] = [await freePort(), await freePort(), await freePort()];
  const p = spawn('bash', [path.join(SOURCE_DIR, 'deploy/local.sh')], {
    env: { ...process.env, DATABASE_URL: db, BROKER_PORT: String(bp), DEMO_IDP_PORT: String(ip), DEMO_MCP_PORT: String(mp) },
    detached: true, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => p.on('close', (code, signal) => r({ code, signal })));
  const base = `http://127.0.0.1:${bp}`;
  try {
    const ready = await waitFor(async () => (await http(`${base}/readyz`, { timeoutMs: 1000 })).status === 200, 120000, 250);
    assert.ok(ready, `no /readyz 200:\n${err.slice(-3000)}`);
    await waitFor(async () => (await http(`http://127.0.0.1:${mp}/mcp`, { timeoutMs: 1000 }).catch(() => ({ status: 0 }))).status > 0, 20000, 100);
    const challenge = await http(`${base}/mcp`);
    assert.equal(challenge.status, 401);
    assert.match(challenge.headers.get('www-authenticate'), /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/);
    const t = await fullFlow(base, { login: 'newcomer' });
    assert.match(t.access_token, /^mcpb_at_/);
    const init = await http(`${base}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    assert.equal(init.status, 200, init.text);
    assert.match(init.text, /"serverInfo"/);
    assert.ok(init.headers.get('mcp-session-id'));
  } finally {
    try { process.kill(-p.pid, 'SIGINT'); } catch { /* gone */ }
    const done = await Promise.race([exited, sleep(15000).then(() => null)]);
    if (!done) process.kill(-p.pid, 'SIGKILL');
  }
  // Everything it started is gone: the ports are free again.
  await sleep(300);
  for (const port of [bp, ip, mp]) {
    const r = await http(`http://127.0.0.1:${port}/`, { timeoutMs: 1000 }).catch(() => null);
    assert.equal(r, null, `port ${port} still answers`);
  }
});
