// mcp-broker rotate-keys: upstream tokens re-encrypted under the new first
// key while the old one still decrypts; afterwards the old key can go.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startIdp } from '../fakes/idp.mjs';
import { baseConfig, createDatabase, freePort, http, key, psql, run, startBroker, waitFor, writeConfig } from '../lib/harness.mjs';
import { connectInBand, fullFlow } from '../lib/flow.mjs';
import { setFault } from '../lib/oauth_setup.mjs';
import { startEcho, upstreamConfig } from '../lib/nodes.mjs';

const cleanups = [];
const sha256hex = (s) => createHash('sha256').update(s).digest('hex');
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
  const ping = (t) => http(`${b.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
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
    const r = await ping(t);
    assert.equal(r.status, 200, r.text);
    assert.match(echo.seen.at(-1).authorization, /^Bearer sntr_/);
  }
  // A ciphertext moved to another grant fails to open (grant id is the AAD).
  // A running node keeps each grant's sealed upstream token in memory
  // (broker/store/cache.c, up to CACHE_TTL_S; evicted by the broker's own NOTIFY,
  // which a bare UPDATE does not send), so whether it would read the moved
  // row depends on whether its revocation listener was up before the pings
  // above. The row is moved while no node runs; a fresh node reads it.
  const grantOf = (t) => psql(db, `SELECT grant_id FROM tokens WHERE kind = 'access' AND token_hash = '\\x${sha256hex(t.access_token)}'::bytea`);
  const [g1, g2] = [await grantOf(t1), await grantOf(t2)];
  assert.match(g1, /^[0-9a-f-]{36}$/);
  assert.match(g2, /^[0-9a-f-]{36}$/);
  assert.notEqual(g1, g2);
  await b.stop();
  assert.equal(await psql(db, `UPDATE grants SET up_access = (SELECT up_access FROM grants WHERE id = '${g1}') WHERE id = '${g2}' RETURNING 1`), '1');
  b = await startBroker(withKeys([k2]));
  const seen = echo.seen.length;
  const r1 = await ping(t1);
  assert.equal(r1.status, 200, r1.text);
  const r2 = await ping(t2);
  assert.equal(r2.status, 503, r2.text);
  assert.equal(echo.seen.length, seen + 1, 'the grant whose token does not open is not proxied');
  // Logged before the 503 was sent, but stderr is another pipe: let it arrive.
  const openFailed = () => b.logs().some((l) => l.includes('"event":"vault.open_failed"') && l.includes(`grant ${g2} does not decrypt`));
  assert.ok(await waitFor(openFailed, 5000), b.logText());
});

/** tools/call through b with t's access token (2025-11-25 wire). */
const toolCall = (b, t) => http(`${b.url}/mcp`, {
  method: 'POST',
  headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json', 'mcp-protocol-version': '2025-11-25' },
  body: '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}',
});

/** Connects login's Sentry account to t's grant through the elicitation's page. */
async function connectSentry(b, t, login) {
  const e = (await toolCall(b, t)).json.error;
  assert.equal(e?.code, -32042);
  const r = await connectInBand(e.data.elicitations[0].url, { login });
  assert.equal(r.status, 200, r.text);
}

test('rotate-keys re-encrypts connected accounts, and the revocations still to be sent', async () => {
  const idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const db = await createDatabase('rotate_conn');
  const port = await freePort();
  const k1 = { id: 'old', key: key() }, k2 = { id: 'new', key: key() };
  const base = baseConfig({ port, databaseUrl: db, extra: {
    encryption_keys: [k1], upstreams: upstreamConfig(idp), limits: { register_per_ip_per_hour: 0 },
    admin_tokens: ['admin-rotate-0123456789abcdef'],
    resources: [{ path: '/mcp', upstream: 'gh', connect: ['sentry'], downstream: echo.url,
      inject: [{ value: 'Bearer {upstream_token}' }, { header: 'X-Sentry-Token', value: '{upstream_token:sentry}' }] }],
  } });
  const withKeys = (keys) => ({ ...base, encryption_keys: keys });
  let b = await startBroker(base);
  const alice = await fullFlow(b.url);
  const bob = await fullFlow(b.url, { login: 'bob' });
  await connectSentry(b, alice, 'alice');
  await connectSentry(b, bob, 'bob');
  // bob's account is disconnected while Sentry's revocation endpoint fails:
  // its tokens wait, sealed, in connection_revocations.
  await setFault(idp, 'sentry.revoke', { mode: 'status', status: 503, count: 100 });
  const bobGrant = await psql(db, `SELECT grant_id FROM tokens WHERE token_hash = '\\x${sha256hex(bob.access_token)}'::bytea`);
  const d = await http(`${b.url}/admin/v1/disconnect`, { method: 'POST', headers: { authorization: 'Bearer admin-rotate-0123456789abcdef' }, body: JSON.stringify({ grant_id: bobGrant, upstream: 'sentry' }) });
  assert.equal(d.json.disconnected, 1, d.text);
  assert.ok(await waitFor(async () => await psql(db, 'SELECT attempts FROM connection_revocations') !== '0', 10000), 'the revoker tried');
  await b.stop();
  assert.equal(await psql(db, "SELECT key_id FROM grant_connections"), 'old');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'mcpb-rot-'));
  const bad = await run(['rotate-keys', '--config', writeConfig(tmp, withKeys([k2]))]);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /re-encrypted 0 connected accounts under key "new"; 2 unreadable/);
  const ok = await run(['rotate-keys', '--config', writeConfig(tmp, withKeys([k2, k1]))]);
  assert.equal(ok.code, 0, ok.stderr + ok.stdout);
  assert.match(ok.stdout, /re-encrypted 2 connected accounts under key "new"; 0 unreadable/);
  assert.equal(await psql(db, "SELECT key_id FROM grant_connections"), 'new');
  assert.equal(await psql(db, "SELECT key_id FROM connection_revocations"), 'new');
  // Only the new key: the connected account still reaches the downstream,
  // and bob's pending revocation still opens when Sentry answers again.
  await setFault(idp, 'sentry.revoke', null);
  await psql(db, 'UPDATE connection_revocations SET next_attempt = now()');
  b = await startBroker(withKeys([k2]));
  cleanups.push(() => b.stop('SIGKILL'));
  const r = await toolCall(b, alice);
  assert.equal(r.status, 200, r.text);
  assert.match(echo.seen.at(-1).headers['x-sentry-token'], /^sntr_/);
  assert.ok(await waitFor(async () => await psql(db, 'SELECT outcome FROM connection_revocations') === 'revoked', 15000),
    await psql(db, 'SELECT outcome FROM connection_revocations'));
});

/**
 * A second session that opens a transaction, runs sql in it and keeps it
 * open (psql reading stdin) until end(sql) sends the last statement.
 */
async function holdTransaction(db, sql) {
  const app = `mcpb-holder-${randomBytes(4).toString('hex')}`;
  const p = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', db], { env: { ...process.env, PGAPPNAME: app }, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((res) => p.on('close', (code) => res(code)));
  cleanups.push(() => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });
  p.stdin.write(`BEGIN;\n${sql};\n`);
  const held = await waitFor(() => psql(db, `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}' AND state = 'idle in transaction'`).then((n) => n === '1'), 10000);
  assert.ok(held, `the holding transaction did not start: ${stderr}`);
  return { end: async (last) => { p.stdin.end(`${last};\n`); assert.equal(await exited, 0, stderr); } };
}

test('rotate-keys passes over no grant another transaction holds: a token being issued, an upstream refresh in progress', async () => {
  const idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const db = await createDatabase('rotate_locked');
  const port = await freePort();
  const k1 = { id: 'old', key: key() }, k2 = { id: 'new', key: key() };
  const cfg = baseConfig({ port, databaseUrl: db, extra: {
    encryption_keys: [k1], upstreams: upstreamConfig(idp), limits: { register_per_ip_per_hour: 0 },
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: echo.url }],
  } });
  const b = await startBroker(cfg);
  cleanups.push(() => b.stop('SIGKILL'));
  const tokens = [await fullFlow(b.url), await fullFlow(b.url, { login: 'bob' }), await fullFlow(b.url, { login: 'carol' })];
  await b.stop();
  const grantOf = (t) => psql(db, `SELECT grant_id FROM tokens WHERE kind = 'access' AND token_hash = '\\x${sha256hex(t.access_token)}'::bytea`);
  const [issuing, refreshing] = [await grantOf(tokens[0]), await grantOf(tokens[1])];
  assert.equal(await psql(db, "SELECT count(*) || ' ' || string_agg(DISTINCT key_id, ',') FROM grants"), '3 old');
  // A node issuing a token for the first grant: the foreign key check of its
  // INSERT holds FOR KEY SHARE on the grant row until it commits.
  const issue = await holdTransaction(db, `INSERT INTO tokens(token_hash, kind, grant_id, client_id, resource, scopes, expires_at) ` +
    `SELECT '\\x${randomBytes(32).toString('hex')}'::bytea, 'access', id, 'c', 'r', '{}', now() + interval '1 hour' FROM grants WHERE id = '${issuing}'`);
  // A node refreshing the second grant's upstream token: FOR UPDATE for the
  // length of the upstream call, which then fails (rolled back, row unchanged).
  const refresh = await holdTransaction(db, `SELECT 1 FROM grants WHERE id = '${refreshing}' FOR UPDATE`);
  const both = writeConfig(mkdtempSync(path.join(os.tmpdir(), 'mcpb-rot-')), { ...cfg, encryption_keys: [k2, k1] });
  let done;
  const rotating = run(['rotate-keys', '--config', both]).then((r) => { done = r; return r; });
  const waiting = () => psql(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mcp-broker-rotate' AND datname = current_database() AND wait_event_type = 'Lock'");
  assert.ok(await waitFor(async () => done || (await waiting()) === '1', 10000) && !done,
    `rotate-keys must wait for the grant being refreshed, not pass over it: ${JSON.stringify(done)}`);
  // Waiting for that one only: the grant with a token being issued is already moved.
  assert.equal(await psql(db, `SELECT key_id FROM grants WHERE id = '${issuing}'`), 'new');
  assert.equal(await psql(db, `SELECT key_id FROM grants WHERE id = '${refreshing}'`), 'old');
  await refresh.end('ROLLBACK');
  const r = await rotating;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /re-encrypted 3 grants under key "new"; 0 unreadable/);
  await issue.end('COMMIT');
  assert.equal(await psql(db, "SELECT count(*) || ' ' || string_agg(DISTINCT key_id, ',') FROM grants"), '3 new');
  // The old key can go: every grant still opens.
  const b2 = await startBroker({ ...cfg, encryption_keys: [k2] });
  cleanups.push(() => b2.stop('SIGKILL'));
  for (const t of tokens) {
    const res = await http(`${b2.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${t.access_token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
    assert.equal(res.status, 200, res.text);
  }
});
