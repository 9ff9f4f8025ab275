// Housekeeping: expired pending authorizations, codes and tokens, dynamic
// clients that never completed a flow within registration.dynamic_client_ttl_days,
// and long-expired CIMD cache rows are purged by whichever node takes the
// advisory lock; live rows are left alone. A purged client is announced,
// so no node keeps authenticating its cached copy.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startIdp } from '../fakes/idp.mjs';
import { baseConfig, createDatabase, freePort, http, psql, startBroker, waitFor } from '../lib/harness.mjs';
import { fullFlow, tokenRequest } from '../lib/flow.mjs';
import { startEcho, upstreamConfig } from '../lib/nodes.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

test('expired rows and stale dynamic clients are purged; live ones stay', { timeout: 60000 }, async () => {
  const idp = await startIdp({ port: 0 });
  cleanups.push(() => idp.close());
  const echo = await startEcho();
  cleanups.push(() => echo.close());
  const db = await createDatabase('hk');
  const port = await freePort();
  const b = await startBroker(baseConfig({ port, databaseUrl: db, extra: {
    housekeeping_interval_s: 1,
    registration: { dynamic: true, dynamic_client_ttl_days: 7 },
    limits: { register_per_ip_per_hour: 0 },
    upstreams: upstreamConfig(idp),
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: echo.url }],
  } }));
  cleanups.push(() => b.stop('SIGKILL'));
  const live = await fullFlow(b.url);
  // A client that registered long ago and never completed a flow, one that
  // did (has a grant), and a fresh one.
  const reg = (name) => http(`${b.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: name, redirect_uris: ['http://127.0.0.1:9/cb'], token_endpoint_auth_method: 'none' }) });
  const stale = (await reg('stale')).json.client_id;
  const fresh = (await reg('fresh')).json.client_id;
  // The node reads the stale client once (and keeps it: a bogus refresh
  // token is its refusal, not the client's).
  const asStale = () => tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: 'bogus', client_id: stale });
  assert.equal((await asStale()).json.error, 'invalid_grant');
  await psql(db, `UPDATE clients SET created_at = now() - interval '30 days' WHERE client_id IN ('${stale}', '${live.clientId}')`);
  // Expired rows of every kind.
  await psql(db, `UPDATE tokens SET expires_at = now() - interval '2 minutes' WHERE token_hash = sha256(convert_to('${live.refresh_token}', 'UTF8'))`);
  await psql(db, `UPDATE auth_codes SET expires_at = now() - interval '2 minutes'`);
  const purged = await waitFor(async () =>
    (await psql(db, `SELECT count(*) FROM clients WHERE client_id = '${stale}'`)) === '0' &&
    (await psql(db, 'SELECT count(*) FROM auth_codes')) === '0' &&
    (await psql(db, `SELECT count(*) FROM tokens WHERE token_hash = sha256(convert_to('${live.refresh_token}', 'UTF8'))`)) === '0', 8000, 200);
  assert.ok(purged, 'expired rows purged');
  assert.equal(await psql(db, `SELECT count(*) FROM clients WHERE client_id IN ('${fresh}', '${live.clientId}')`), '2', 'live clients stay');
  // The purge is announced: the kept copy goes, the client is unknown.
  assert.ok(await waitFor(async () => (await asStale()).json.error === 'invalid_client', 2000, 200),
    'the purged client still authenticated from the node\'s cache');
  const r = await http(`${b.url}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${live.access_token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
  assert.equal(r.status, 200, 'the live access token still works');
  assert.match(b.logText(), /housekeeping.purged/);
});
