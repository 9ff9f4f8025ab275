// mcp-broker rotate-keys: upstream tokens re-encrypted under the new first
// key while the old one still decrypts; afterwards the old key can go.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startIdp } from '../fakes/idp.mjs';
import { baseConfig, createDatabase, freePort, http, key, psql, run, startBroker, writeConfig } from '../lib/harness.mjs';
import { fullFlow } from '../lib/flow.mjs';
import { startEcho, upstreamConfig } from '../lib/nodes.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

test('rotate-keys moves every grant to the first key; the old key can then be removed', async () => {
  const idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const db = await createDatabase('rotate');
  const port = await freePort();
  const k1 = { id: 'old', key: key() }, k2 = { id: 'new', key: key() };
  const cfg = (keys) => baseConfig({ port, databaseUrl: db, extra: {
    encryption_keys: keys, upstreams: upstreamConfig(idp), limits: { register_per_ip_per_hour: 0 },
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: echo.url }],
  } });
  const base = cfg([k1]);
  const cookie = base.cookie_secret;
  const withKeys = (keys) => ({ ...cfg(keys), cookie_secret: cookie });
  let b = await startBroker(base);
  const t1 = await fullFlow(b.url);
  const t2 = await fullFlow(b.url, { login: 'bob' });
  await b.stop();
  assert.equal(await psql(db, "SELECT string_agg(DISTINCT key_id, ',') FROM grants"), 'old');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'mcpb-rot-'));
  // The new key alone cannot read the old grants: rotate-keys says so and fails.
  const onlyNew = writeConfig(tmp, withKeys([k2]));
  const bad = await run(['rotate-keys', '--config', onlyNew]);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /re-encrypted 0 grants under key "new"; 2 unreadable/);
  assert.ok(!bad.stderr.includes(k1.key) && !bad.stderr.includes(k2.key));
  // New key first, old key still listed: both grants move.
  const both = writeConfig(tmp, withKeys([k2, k1]));
  const ok = await run(['rotate-keys', '--config', both]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /re-encrypted 2 grants under key "new"; 0 unreadable/);
  assert.equal(await psql(db, "SELECT string_agg(DISTINCT key_id, ',') FROM grants"), 'new');
  const again = await run(['rotate-keys', '--config', both]);
  assert.match(again.stdout, /re-encrypted 0 grants/);
  // The old key is gone from the config: the grants still work.
  b = await startBroker(withKeys([k2]));
  cleanups.push(() => b.stop('SIGKILL'));
  for (const t of [t1, t2]) {
    const r = await http(`${b.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
    assert.equal(r.status, 200, r.text);
    assert.match(echo.seen.at(-1).authorization, /^Bearer sntr_/);
  }
  // A ciphertext moved to another grant fails to open (grant id is the AAD).
  await psql(db, `UPDATE grants SET up_access = (SELECT up_access FROM grants ORDER BY id LIMIT 1) WHERE id = (SELECT id FROM grants ORDER BY id DESC LIMIT 1)`);
  const moved = await psql(db, 'SELECT t.token_hash FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE g.id = (SELECT id FROM grants ORDER BY id DESC LIMIT 1) LIMIT 1');
  assert.ok(moved);
  const r1 = await http(`${b.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${t1.access_token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
  const r2 = await http(`${b.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${t2.access_token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
  assert.deepEqual([r1.status, r2.status].sort(), [200, 503]);
});
