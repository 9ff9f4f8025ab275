// Benchmarks, reported as figures and ratios measured side by side in one
// run (never as pass/fail): run with tests/bench/run.sh.
//  1. GET /healthz under wrk -t2 -c32 -d10s (the foundation baseline)
//  2. a small tools/call: straight to the downstream vs through nginx as a
//     plain reverse proxy vs through the broker (requests/s, p50, p99)
//  3. the broker's RSS idle and with 1,000 idle SSE streams open
//  4. one complete double-flow (ms), code exchanges/s, refreshes/s, and
//     pgbench -N TPS on the same PostgreSQL
//  5. token modes on one broker, same run, same load: token requests/s for
//     client_credentials (a machine client, grant reuse path: no upstream
//     call) authenticated by client_secret_basic vs by private_key_jwt
//     (RFC 7523 assertions, ES256 and RS256, a fresh jti each, signed ahead
//     and untimed) vs authorization_code + PKCE exchanges of a plain public
//     client vs refresh_token, with ratios
//  6. DPoP (RFC 9449) on one broker, same run: a small proxied tools/call
//     with a Bearer token vs with a DPoP-bound token and a fresh ES256 proof
//     per request (all proofs signed ahead, untimed: wrk only sends them),
//     requests/s and p50; and POST /token for a public client without vs
//     with a DPoP proof (pre-signed): authorization_code + PKCE exchanges and
//     refresh_token rotations; with ratios
//  7. proxied tools/call with none and with BENCH_STREAMS (9,000) idle SSE
//     streams open: throughput, p50, idle CPU, memory per stream, CPU per
//     request
// and last, the issue-12 targets as one table, each figure beside the
// reference it is measured against in the same run (nginx proxy_pass,
// /healthz, no streams open, pgbench -N on the same PostgreSQL).
//  8. (BENCH_ONLY=proxy only) the hot path: tools/call direct, through nginx
//     and through the broker (and BENCH_BASELINE_BINARY side by side) with
//     CPU, syscalls and context switches per request (perf stat)
//  9. (BENCH_ONLY=refresh only) refresh grants/s vs pgbench -N in
//     interleaved rounds (and BENCH_BASELINE_BINARY side by side)
// BENCH_ONLY=token-modes runs section 5 alone, BENCH_ONLY=dpop section 6,
// BENCH_ONLY=streams section 7, BENCH_ONLY=proxy section 8,
// BENCH_ONLY=refresh section 9.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, writeFileSync, readFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startIdp } from '../fakes/idp.mjs';
import { startDownstream } from '../fakes/downstream.mjs';
import { baseConfig, createDatabase, freePort, http as req, startBroker } from '../lib/harness.mjs';
import { fullFlow, runFlow, tokenRequest, exchangeCode } from '../lib/flow.mjs';
import { upstreamConfig } from '../lib/nodes.mjs';

const DURATION = process.env.BENCH_SECONDS || '10';
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mcpb-bench-'));
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

/** wrk's stdout for one run of lua against url. Asynchronous: this process
 * keeps reading the brokers' log pipes meanwhile. */
function runWrk(url, lua, threads, conns) {
  return new Promise((resolve, reject) => {
    const p = spawn('wrk', ['-t', String(threads), '-c', String(conns), '-d', `${DURATION}s`, '--latency', '-s', lua, url]);
    let text = '';
    p.stdout.on('data', (d) => { text += d; });
    p.on('error', reject);
    p.on('close', () => resolve(text));
  });
}

async function wrk(url, { token, body, threads = 2, conns = 32 } = {}) {
  const lua = path.join(tmp, `wrk-${Math.random().toString(36).slice(2)}.lua`);
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' };
  if (token) headers.Authorization = `Bearer ${token}`;
  writeFileSync(lua, `wrk.method = "${body ? 'POST' : 'GET'}"\n` +
    (body ? `wrk.body = ${JSON.stringify(body)}\n` : '') +
    Object.entries(headers).map(([k, v]) => `wrk.headers["${k}"] = "${v}"`).join('\n') + '\n' +
    `done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %f %d %d\\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end\n`);
  const out = await runWrk(url, lua, threads, conns);
  const m = /RESULT (\S+) (\S+) (\S+) (\d+) (\d+)/.exec(out);
  return { rps: Number(m[1]), p50: Number(m[2]), p99: Number(m[3]), non2xx: Number(m[4]), errors: Number(m[5]) };
}

function startNginx(conf) {
  const dir = mkdtempSync(path.join(tmp, 'nginx-'));
  const file = path.join(dir, 'nginx.conf');
  writeFileSync(file, `worker_processes 2; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
daemon off; events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir}; ${conf} }`);
  const p = spawn('nginx', ['-c', file, '-p', dir], { stdio: 'ignore' });
  return { stop: () => p.kill('SIGTERM') };
}

const fmt = (r) => `${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(6)} ms${r.non2xx || r.errors ? `  (non-2xx ${r.non2xx}, errors ${r.errors})` : ''}`;

const pool = async (items, conc, fn) => {
  let i = 0;
  await Promise.all(Array.from({ length: conc }, async () => { while (i < items.length) await fn(items[i++]); }));
};

/** Runs fn over items, conc at a time: {ok, n, sec, rate} where ok counts fn's true answers. */
async function timed(items, conc, fn) {
  let ok = 0;
  const t0 = process.hrtime.bigint();
  await pool(items, conc, async (x) => { if (await fn(x)) ok++; });
  const sec = Number(process.hrtime.bigint() - t0) / 1e9;
  return { ok, n: items.length, sec, rate: ok / sec };
}

/** Section 5: the three ways to get a broker access token, side by side on one broker. */
async function tokenModes(say, idp) {
  const N = Number(process.env.BENCH_TOKEN_N || 1000), CONC = 16;
  const machine = { id: 'bench-machine', secret: 'bench-machine-secret-0123456789' };
  // private_key_jwt machine clients: one key each, in its inline jwks.
  const pk = {
    ES256: { id: 'bench-machine-es256', key: crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }) },
    RS256: { id: 'bench-machine-rs256', key: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }) },
  };
  const db = await createDatabase('bench_tokens');
  const b = await startBroker(baseConfig({ port: await freePort(), databaseUrl: db, extra: {
    http: { threads: 4, drain_timeout_s: 5 },
    log: { level: process.env.BENCH_LOG_LEVEL || 'info' },
    database: { pool_size: 8 },
    limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 },
    upstreams: {
      ...upstreamConfig(idp),
      oidc: { preset: 'oidc', issuer: `${idp.base}/oidc`, client_id: 'oidc-client', client_secret: 'oidc-secret',
        scopes: ['api'], client_credentials: true },
    },
    clients: [{ client_id: machine.id, client_secret: machine.secret, grant_types: ['client_credentials'],
      resources: ['/cc'], scopes: ['read'] },
    ...Object.values(pk).map((m) => ({ client_id: m.id, grant_types: ['client_credentials'], resources: ['/cc'],
      scopes: ['read'], jwks: { keys: [m.key.publicKey.export({ format: 'jwk' })] } }))],
    resources: [
      { path: '/mcp', upstream: 'sentry', downstream: 'http://127.0.0.1:9/mcp', scopes: { 'issues:read': ['*'] }, default_scopes: ['issues:read'] },
      { path: '/cc', upstream: 'oidc', downstream: 'http://127.0.0.1:9/cc', scopes: { read: ['*'] }, default_scopes: ['read'] },
    ],
  } }), { keepLogs: false });
  const redirectUri = 'http://127.0.0.1:9/cb';
  const reg = await req(`${b.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }) });
  const clientId = reg.json.client_id;
  // Codes are made ahead (untimed: browser, consent, upstream login); a code lives tokens.code_ttl (60 s).
  const flows = [];
  await pool(Array.from({ length: N }, (_, i) => i), 8, async (i) => {
    const f = await runFlow({ broker: b.url, clientId, redirectUri, resource: `${b.url}/mcp`, login: `tm${i % 20}` });
    if (f.code) flows.push(f);
  });
  // The machine client's first token makes its grant (one upstream client_credentials call); the timed ones reuse it.
  const cc = () => tokenRequest(b.url, { grant_type: 'client_credentials', resource: `${b.url}/cc` }, { basic: [machine.id, machine.secret] });
  if ((await cc()).status !== 200) throw new Error('client_credentials: the first token was refused');
  // n assertions of machine client alg (iss = sub = its id, aud the token
  // endpoint, 120 s, a fresh jti each), as a client signs one per request.
  const b64u = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
  const assertions = (alg, n) => {
    const { id, key } = pk[alg];
    const now = Math.floor(Date.now() / 1000);
    return Array.from({ length: n }, () => {
      const input = `${b64u({ alg, typ: 'JWT' })}.${b64u({ iss: id, sub: id, aud: `${b.url}/token`, iat: now, exp: now + 120, jti: crypto.randomUUID() })}`;
      const sig = crypto.sign('sha256', Buffer.from(input), alg === 'ES256' ? { key: key.privateKey, dsaEncoding: 'ieee-p1363' } : key.privateKey);
      return `${input}.${sig.toString('base64url')}`;
    });
  };
  const pkcc = (a) => tokenRequest(b.url, { grant_type: 'client_credentials', resource: `${b.url}/cc`,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: a });
  for (const alg of Object.keys(pk)) {
    const r = await pkcc(assertions(alg, 1)[0]);
    if (r.status !== 200) throw new Error(`private_key_jwt ${alg}: the first token was refused: ${r.status} ${r.text}`);
  }

  const pairs = [];
  const ex = await timed(flows, CONC, async (f) => {
    const r = await exchangeCode(b.url, { clientId, code: f.code, verifier: f.verifier, redirectUri });
    if (r.status === 200) pairs.push(r.json);
    return r.status === 200;
  });
  const ccr = await timed(Array.from({ length: N }), CONC, async () => (await cc()).status === 200);
  const pkr = {};
  for (const alg of Object.keys(pk)) pkr[alg] = await timed(assertions(alg, N), CONC, async (a) => (await pkcc(a)).status === 200);
  const rf = await timed(pairs, CONC, async (p) =>
    (await tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: p.refresh_token, client_id: clientId })).status === 200);
  const line = (name, r) => `  ${name.padEnd(42)} ${String(r.ok).padStart(4)}/${r.n} in ${r.sec.toFixed(2)} s = ${r.rate.toFixed(0).padStart(5)} /s`;
  say(`token modes (POST /token, ${CONC} concurrent, one broker, same run):`);
  say(line('client_credentials (grant reuse)', ccr));
  say(line('client_credentials private_key_jwt ES256', pkr.ES256));
  say(line('client_credentials private_key_jwt RS256', pkr.RS256));
  say(line('authorization_code + PKCE (public)', ex));
  say(line('refresh_token (rotation)', rf));
  say(`  ratios: client_credentials/code exchange ${(ccr.rate / ex.rate).toFixed(2)}, client_credentials/refresh ${(ccr.rate / rf.rate).toFixed(2)}, refresh/code exchange ${(rf.rate / ex.rate).toFixed(2)}`);
  say(`  ratios: private_key_jwt/client_secret ES256 ${(pkr.ES256.rate / ccr.rate).toFixed(2)}, RS256 ${(pkr.RS256.rate / ccr.rate).toFixed(2)}`);
  await b.stop();
}

/** An ES256 DPoP key and a signer of proofs for it (RFC 9449 section 4.2): a fresh jti each. */
function dpopKey() {
  const key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = key.publicKey.export({ format: 'jwk' });
  const b64u = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const header = b64u({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } });
  const proof = (htm, htu, accessToken) => {
    const claims = { jti: crypto.randomBytes(16).toString('base64url'), htm, htu, iat: Math.floor(Date.now() / 1000) };
    if (accessToken) claims.ath = crypto.createHash('sha256').update(accessToken).digest('base64url');
    const input = `${header}.${b64u(claims)}`;
    return `${input}.${crypto.sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  };
  return { proof };
}

/**
 * wrk POSTing body to url, every request through the script's request()
 * (the same Lua path for both runs): with `proofs` (a file, one DPoP proof a
 * line) each request carries the next unused proof of its thread's share
 * (thread i takes lines i, i + T, ...: no proof is sent twice) and
 * `Authorization: DPoP token`; without, `Authorization: Bearer token`.
 */
async function wrkRequests(url, { token, body, proofs, threads = 2, conns = 32 }) {
  const u = new URL(url);
  const lua = path.join(tmp, `wrk-${Math.random().toString(36).slice(2)}.lua`);
  const q = (v) => JSON.stringify(v);
  writeFileSync(lua, `local T = ${threads}
local made = 0
function setup(thread) thread:set("tid", made); made = made + 1 end
local reqs, k = {}, 0
local base = { ["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream" }
function init(args)
  local h = {}
  for name, v in pairs(base) do h[name] = v end
  ${proofs ? `h["Authorization"] = ${q(`DPoP ${token}`)}
  local i = 0
  for line in io.lines(${q(proofs)}) do
    if i % T == tid then h["DPoP"] = line; reqs[#reqs + 1] = wrk.format("POST", ${q(u.pathname)}, h, ${q(body)}) end
    i = i + 1
  end` : `h["Authorization"] = ${q(`Bearer ${token}`)}
  reqs[1] = wrk.format("POST", ${q(u.pathname)}, h, ${q(body)})`}
end
function request()
  k = k + 1
  if k > #reqs then k = 1 end
  return reqs[k]
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %f %d %d %d\\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.requests))
end
`);
  const out = await runWrk(url, lua, threads, conns);
  const m = /RESULT (\S+) (\S+) (\S+) (\d+) (\d+) (\d+)/.exec(out);
  if (!m) throw new Error(`wrk: ${out}`);
  return { rps: Number(m[1]), p50: Number(m[2]), p99: Number(m[3]), non2xx: Number(m[4]), errors: Number(m[5]), requests: Number(m[6]) };
}

/** Section 6: DPoP's cost at the proxy and at /token, side by side on one broker. */
async function dpopSection(say, idp) {
  const N = Number(process.env.BENCH_DPOP_TOKEN_N || 1000), CONC = 16;
  const ROUNDS = Number(process.env.BENCH_DPOP_ROUNDS || 2);
  const dsPort = await freePort();
  const answer = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}';
  const ngDs = startNginx(`server { listen 127.0.0.1:${dsPort}; location / { default_type application/json; return 200 '${answer}'; } }`);
  const db = await createDatabase('bench_dpop');
  const b = await startBroker(baseConfig({ port: await freePort(), databaseUrl: db, extra: {
    http: { threads: 4, drain_timeout_s: 5, max_connections: 8192 },
    log: { level: process.env.BENCH_LOG_LEVEL || 'info' },
    database: { pool_size: 8 },
    limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 },
    // Proofs are signed before each timed run: their iat must outlast it.
    dpop: { proof_max_age_s: Math.min(600, Math.max(120, Number(DURATION) + 60)) },
    upstreams: upstreamConfig(idp),
    resources: [{ path: '/mcp', upstream: 'sentry', downstream: `http://127.0.0.1:${dsPort}/mcp`,
      scopes: { 'issues:read': ['*'] }, default_scopes: ['issues:read'] }],
  } }), { keepLogs: false });
  await new Promise((r) => setTimeout(r, 300));
  const mcpUrl = `${b.url}/mcp`, tokenUrl = `${b.url}/token`;
  const key = dpopKey();
  const redirectUri = 'http://127.0.0.1:9/cb';
  const reg = await req(`${b.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }) });
  const clientId = reg.json.client_id;
  const flow = async (login) => {
    const f = await runFlow({ broker: b.url, clientId, redirectUri, resource: mcpUrl, login });
    if (!f.code) throw new Error('dpop bench: the flow gave no code');
    return f;
  };
  const exchange = (f, proof) => tokenRequest(b.url, { grant_type: 'authorization_code', code: f.code, code_verifier: f.verifier,
    redirect_uri: redirectUri, client_id: clientId }, proof ? { headers: { dpop: proof } } : {});

  // (1) proxied tools/call: one Bearer token, one DPoP-bound token.
  const bearer = (await exchange(await flow('dpb0'))).json;
  const boundRes = await exchange(await flow('dpb1'), key.proof('POST', tokenUrl));
  if (boundRes.status !== 200 || boundRes.json.token_type !== 'DPoP') throw new Error(`dpop bench: no DPoP token: ${boundRes.status} ${boundRes.text}`);
  const bound = boundRes.json;
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } });
  const mcpHeaders = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const check = await req(mcpUrl, { method: 'POST', body, headers: { ...mcpHeaders, authorization: `DPoP ${bound.access_token}`, dpop: key.proof('POST', mcpUrl, bound.access_token) } });
  if (check.status !== 200) throw new Error(`dpop bench: a DPoP tools/call was refused: ${check.status} ${check.headers.get('www-authenticate')}`);
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const br = await wrkRequests(mcpUrl, { token: bearer.access_token, body });
    // Enough proofs for the DPoP run even if it went as fast as the Bearer one, and more.
    const n = Math.ceil(br.rps * Number(DURATION) * 1.5) + 1000;
    const file = path.join(tmp, `proofs-${r}.txt`);
    const s0 = process.hrtime.bigint();
    const lines = Array.from({ length: n }, () => key.proof('POST', mcpUrl, bound.access_token));
    const signSec = Number(process.hrtime.bigint() - s0) / 1e9;
    writeFileSync(file, lines.join('\n') + '\n');
    const dr = await wrkRequests(mcpUrl, { token: bound.access_token, body, proofs: file });
    if (dr.requests > n) say(`  (warning: the DPoP run sent ${dr.requests} requests for ${n} proofs: replays counted as non-2xx)`);
    rounds.push({ br, dr, n, signSec });
  }

  // (2) POST /token: a public client without vs with a DPoP proof (codes
  // made ahead, untimed; a code lives tokens.code_ttl, 60 s).
  const flows = [];
  await pool(Array.from({ length: 2 * N }, (_, i) => i), 8, async (i) => { flows.push(await flow(`dpt${i % 20}`)); });
  // Without and with DPoP alternate in CHUNKS slices (A1 B1 A2 B2 ...), so
  // that a neighbour's load on a shared machine falls on both alike.
  const CHUNKS = 5;
  const plainFlows = flows.slice(0, N), boundFlows = flows.slice(N);
  const exProofs = boundFlows.map(() => key.proof('POST', tokenUrl));
  const plainPairs = [], boundPairs = [];
  const slices = (xs) => Array.from({ length: CHUNKS }, (_, c) => xs.slice(Math.floor((c * xs.length) / CHUNKS), Math.floor(((c + 1) * xs.length) / CHUNKS)));
  const sum = (rs) => { const ok = rs.reduce((a, r) => a + r.ok, 0), n = rs.reduce((a, r) => a + r.n, 0), sec = rs.reduce((a, r) => a + r.sec, 0); return { ok, n, sec, rate: ok / sec }; };
  async function alternate(aItems, aFn, bItems, bFn) {
    const as = slices(aItems), bs = slices(bItems), ra = [], rb = [];
    for (let c = 0; c < CHUNKS; c++) {
      ra.push(await timed(as[c], CONC, aFn));
      rb.push(await timed(bs[c], CONC, bFn));
    }
    return [sum(ra), sum(rb)];
  }
  const [exPlain, exBound] = await alternate(plainFlows, async (f) => {
    const r = await exchange(f);
    if (r.status === 200 && r.json.token_type === 'Bearer') plainPairs.push(r.json);
    return r.status === 200;
  }, boundFlows.map((f, i) => [f, exProofs[i]]), async ([f, p]) => {
    const r = await exchange(f, p);
    if (r.status === 200 && r.json.token_type === 'DPoP') boundPairs.push(r.json);
    return r.status === 200 && r.json.token_type === 'DPoP';
  });
  const rfProofs = boundPairs.map(() => key.proof('POST', tokenUrl));
  const refresh = (p, proof) => tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: p.refresh_token, client_id: clientId },
    proof ? { headers: { dpop: proof } } : {});
  const [rfPlain, rfBound] = await alternate(plainPairs, async (p) => (await refresh(p)).status === 200,
    boundPairs.map((p, i) => [p, rfProofs[i]]), async ([p, proof]) => {
      const r = await refresh(p, proof);
      return r.status === 200 && r.json.token_type === 'DPoP';
    });

  say(`DPoP (RFC 9449), one broker, same run; proofs ES256, a fresh jti each, signed ahead (untimed):`);
  say(`  proxied tools/call, wrk -t2 -c32 -d${DURATION}s, ${ROUNDS} round(s) Bearer then DPoP:`);
  rounds.forEach(({ br, dr, n, signSec }, r) => {
    say(`    round ${r + 1} Bearer:  ${fmt(br)}`);
    say(`    round ${r + 1} DPoP:    ${fmt(dr)}   (${n} proofs signed in ${signSec.toFixed(1)} s)`);
  });
  const avg = (xs) => xs.reduce((a, x) => a + x, 0) / xs.length;
  const bR = avg(rounds.map((x) => x.br.rps)), dR = avg(rounds.map((x) => x.dr.rps));
  const bP = avg(rounds.map((x) => x.br.p50)), dP = avg(rounds.map((x) => x.dr.p50));
  const line = (name, r) => `    ${name.padEnd(40)} ${String(r.ok).padStart(4)}/${r.n} in ${r.sec.toFixed(2)} s = ${r.rate.toFixed(0).padStart(5)} /s`;
  say(`  POST /token, public client, ${CONC} concurrent, without/with DPoP alternating in ${CHUNKS} slices:`);
  say(line('authorization_code + PKCE, Bearer', exPlain));
  say(line('authorization_code + PKCE, DPoP proof', exBound));
  say(line('refresh_token, Bearer pair', rfPlain));
  say(line('refresh_token, DPoP-bound pair + proof', rfBound));
  say(`  ratios DPoP/Bearer: tools/call req/s ${(dR / bR).toFixed(3)} (mean ${dR.toFixed(0)} vs ${bR.toFixed(0)}), p50 ${(dP / bP).toFixed(2)}x (${dP.toFixed(2)} vs ${bP.toFixed(2)} ms); ` +
    `code exchange/s ${(exBound.rate / exPlain.rate).toFixed(2)}; refresh/s ${(rfBound.rate / rfPlain.rate).toFixed(2)}`);
  await b.stop();
  ngDs.stop();
}


/** CPU seconds (user + system) the process has used so far. */
function cpuSec(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; /* utime, stime in USER_HZ ticks */
}

/** Waits (20 s at most) until the processes pids use under 5 % of a core
 * together over half a second: what a phase left behind (thousands of
 * streams closing) does not fall into the next one's figures. */
async function settle(pids) {
  const total = () => pids.reduce((a, p) => a + cpuSec(p), 0);
  for (let i = 0; i < 40; i++) {
    const c0 = total();
    await new Promise((r) => setTimeout(r, 500));
    if ((total() - c0) / 0.5 < 0.05) return;
  }
}

/** Opens n idle SSE streams through the broker; resolves with a closer. */
async function openIdleStreams(url, token, n) {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const rqs = [];
  let opened = 0, failed = 0;
  const one = () => new Promise((resolve) => {
    const rq = http.request(`${url}?mode=idle`, { agent, headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', 'x-fake-mode': 'idle' } }, (res) => {
      res.on('data', () => {});
      if (res.statusCode === 200) opened++; else failed++;
      resolve();
    });
    rq.on('error', () => { failed++; resolve(); });
    rq.setTimeout(60000, () => rq.destroy());
    rq.end();
    rqs.push(rq);
  });
  for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: Math.min(500, n - i) }, one));
  return { opened, failed, close: () => { for (const rq of rqs) rq.destroy(); agent.destroy(); } };
}

/** Section 7: proxied tools/call with and without N idle SSE streams open,
 * the idle CPU and memory per stream; for each binary given (the current
 * build, and BENCH_BASELINE_BINARY when set, side by side in one run).
 * BENCH_STREAM_ROUNDS (1) rounds, the binaries taking turns in each (none,
 * then with the streams open): on a shared, noisy box the medians of
 * interleaved rounds are what compares. */
/** A broker node for a side-by-side measurement (binary undefined: this
 * build): its own database, the bench's worker count (BENCH_THREADS, 4),
 * /mcp proxied to dsPort's /mcp; { b, db } (b: startBroker's). */
async function benchNode(idp, name, label, binary, dsPort, { maxConnections = 8192, logLevel, extraResources = [] } = {}) {
  const db = await createDatabase(`bench_${name}_${label}`);
  const port = await freePort();
  const cfg = baseConfig({ port, databaseUrl: db, extra: {
    http: { threads: Number(process.env.BENCH_THREADS || 4), drain_timeout_s: 5, max_connections: maxConnections },
    log: { level: logLevel || process.env.BENCH_LOG_LEVEL || 'info' },
    database: { pool_size: 8 },
    limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 },
    upstreams: upstreamConfig(idp),
    resources: [
      { path: '/mcp', upstream: 'sentry', downstream: `http://127.0.0.1:${dsPort}/mcp`, scopes: { 'issues:read': ['*'] }, default_scopes: ['issues:read'] },
      ...extraResources,
    ],
  } });
  return { b: await startBroker(cfg, { keepLogs: false, binary }), db };
}

async function streamsSection(say, idp) {
  const n = Number(process.env.BENCH_STREAMS || 9000);
  const rounds = Math.max(1, Number(process.env.BENCH_STREAM_ROUNDS || 1));
  const dsPort = await freePort();
  const answer = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}';
  const ngDs = startNginx(`server { listen 127.0.0.1:${dsPort}; location / { default_type application/json; return 200 '${answer}'; } }`);
  const sse = await startDownstream({ port: 0 });
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } });
  const binaries = [['current', undefined]];
  if (process.env.BENCH_BASELINE_BINARY) binaries.unshift(['baseline', process.env.BENCH_BASELINE_BINARY]);
  const nodes = [];
  for (const [label, binary] of binaries) {
    const { b } = await benchNode(idp, 'streams', label, binary, dsPort, { maxConnections: Math.max(8192, 2 * n + 256),
      logLevel: 'warn', extraResources: [{ path: '/sse', upstream: 'sentry', downstream: `${sse.url}` }] });
    const t = await fullFlow(b.url, { resource: `${b.url}/mcp` });
    const ts = await fullFlow(b.url, { resource: `${b.url}/sse` });
    await wrk(`${b.url}/mcp`, { body, token: t.access_token }); /* warm-up */
    nodes.push({ label, b, t, ts, none: [], withS: [], cpuNone: [], cpuWith: [] });
  }
  for (let round = 0; round < rounds; round++) {
    for (const nd of nodes) {
      const { b, t, ts, label } = nd;
      let c0 = cpuSec(b.proc.pid);
      const none = await wrk(`${b.url}/mcp`, { body, token: t.access_token });
      nd.cpuNone.push((cpuSec(b.proc.pid) - c0) / (none.rps * Number(DURATION)) * 1e6);
      nd.none.push(none);
      const rss0 = rss(b.proc.pid);
      const s = await openIdleStreams(`${b.url}/sse`, ts.access_token, n);
      const c0w = cpuSec(b.proc.pid), t0w = Date.now();
      await new Promise((r) => setTimeout(r, 2000));
      if (round === 0) {
        /* Memory and idle CPU: the first round's, before the heap held
         * anything of earlier streams. */
        nd.perStream = (rss(b.proc.pid) - rss0) / Math.max(1, s.opened);
        nd.opened = s.opened;
        nd.failed = s.failed;
        /* Idle CPU once the opens are over (the first sweeps still move the
         * new streams to the quiet list): 5 to 15 s after the last open. */
        await new Promise((r) => setTimeout(r, 3000));
        nd.idleEarly = (cpuSec(b.proc.pid) - c0w) / ((Date.now() - t0w) / 1000) * 100;
        c0 = cpuSec(b.proc.pid);
        await new Promise((r) => setTimeout(r, 10000));
        nd.idleCpu = (cpuSec(b.proc.pid) - c0) / 10 * 100;
        if (process.env.BENCH_PERF) say(`perf, ${label}, idle with ${n} streams open (self %, top symbols):\n${await perfTop(b.proc.pid, 4)}`);
      }
      c0 = cpuSec(b.proc.pid);
      const [withS, prof] = await Promise.all([wrk(`${b.url}/mcp`, { body, token: t.access_token }),
        process.env.BENCH_PERF && round === 0 ? perfTop(b.proc.pid, Math.max(1, Number(DURATION) - 1)) : null]);
      nd.cpuWith.push((cpuSec(b.proc.pid) - c0) / (withS.rps * Number(DURATION)) * 1e6);
      nd.withS.push(withS);
      if (prof) say(`perf, ${label}, tools/call with ${n} streams open (self %, top symbols):\n${prof}`);
      s.close();
      await settle([process.pid, ...nodes.map((x) => x.b.proc.pid)]); /* the nodes and the SSE downstream (this process) let the streams go */
    }
  }
  const med = (xs) => { const v = [...xs].sort((a, b) => a - b); return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2; };
  const rows = [];
  for (const nd of nodes) {
    await nd.b.stop();
    rows.push({ label: nd.label, opened: nd.opened, failed: nd.failed, idleCpu: nd.idleCpu, idleEarly: nd.idleEarly, perStream: nd.perStream,
      none: { rps: med(nd.none.map((x) => x.rps)), p50: med(nd.none.map((x) => x.p50)) },
      withS: { rps: med(nd.withS.map((x) => x.rps)), p50: med(nd.withS.map((x) => x.p50)) },
      ratios: nd.withS.map((x, i) => x.rps / nd.none[i].rps),
      cpuNone: med(nd.cpuNone), cpuWith: med(nd.cpuWith) });
  }
  ngDs.stop();
  await sse.close?.();
  say(`idle streams: proxied tools/call (wrk -t2 -c32 -d${DURATION}s) with none and with ${n} idle SSE streams open` +
    (rounds > 1 ? `; medians of ${rounds} interleaved rounds` : ''));
  say('binary    streams  none req/s  p50 ms | with req/s  p50 ms | ratio (target >= 0.9) | idle CPU % of a core (< 1; in the first 5 s) | KiB/stream (<= 20) | CPU us/req none, with');
  for (const r of rows) {
    say(`${r.label.padEnd(9)} ${String(r.opened).padStart(5)}/${n}  ${r.none.rps.toFixed(0).padStart(7)} ${r.none.p50.toFixed(2).padStart(7)} | ${r.withS.rps.toFixed(0).padStart(7)} ${r.withS.p50.toFixed(2).padStart(7)} | ${(r.withS.rps / r.none.rps).toFixed(2).padStart(5)} | ${r.idleCpu.toFixed(2).padStart(6)} (${r.idleEarly.toFixed(1)}) | ${r.perStream.toFixed(1).padStart(6)} | ${r.cpuNone.toFixed(0)}, ${r.cpuWith.toFixed(0)}${r.failed ? ` (${r.failed} stream opens failed)` : ''}` +
      (rounds > 1 ? `   rounds: ${r.ratios.map((x) => x.toFixed(2)).join(' ')}` : ''));
  }
  return { n, current: rows.at(-1) };
}

/** Counts the syscalls and context switches of pid (every thread) for
 * seconds, with perf stat; null where perf cannot. */
function perfCount(pid, seconds) {
  return new Promise((resolve) => {
    const p = spawn('perf', ['stat', '-x,', '-e', 'raw_syscalls:sys_enter,context-switches', '-p', String(pid), '--', 'sleep', String(seconds)]);
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', () => resolve(null));
    p.on('close', () => {
      const get = (name) => { const l = err.split('\n').find((x) => x.includes(name)); const v = l ? Number(l.split(',')[0]) : NaN; return Number.isFinite(v) ? v : null; };
      resolve({ syscalls: get('raw_syscalls:sys_enter'), cs: get('context-switches') });
    });
  });
}

/** The top symbols (self time) of pid over seconds, from perf record. */
function perfTop(pid, seconds) {
  const file = path.join(tmp, `perf-${pid}.data`);
  return new Promise((resolve) => {
    const rec = spawn('perf', ['record', '-F', '999', '-g', '-p', String(pid), '-o', file, '--', 'sleep', String(seconds)], { stdio: 'ignore' });
    rec.on('error', () => resolve(null));
    rec.on('close', () => {
      const rep = spawn('perf', ['report', '-i', file, '--no-children', '--sort', 'dso,symbol', '--stdio']);
      let out = '';
      rep.stdout.on('data', (d) => { out += d; });
      rep.on('error', () => resolve(null));
      rep.on('close', () => resolve(out.split('\n').filter((l) => /^\s+[0-9.]+%/.test(l)).slice(0, 15).map((l) => `  ${l.trim().replace(/\s+/g, ' ')}`).join('\n')));
    });
  });
}

/** nginx answering a fixed JSON-RPC result (the downstream, never the
 * bottleneck) and nginx as a plain keep-alive reverse proxy in front of it. */
async function nginxPair() {
  const dsPort = await freePort(), pxPort = await freePort();
  const answer = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}';
  const ngDs = startNginx(`server { listen 127.0.0.1:${dsPort}; location / { default_type application/json; return 200 '${answer}'; } }`);
  const ngPx = startNginx(`upstream ds { server 127.0.0.1:${dsPort}; keepalive 64; }
    server { listen 127.0.0.1:${pxPort}; location / { proxy_pass http://ds; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_buffering off; } }`);
  return { dsPort, pxPort, ngDs, ngPx };
}

/** Section 8 (BENCH_ONLY=proxy): the hot path. A small tools/call straight
 * to the downstream, through nginx proxy_pass and through the broker (and
 * BENCH_BASELINE_BINARY, an older build, side by side), with the broker's
 * CPU, syscalls and context switches per request; /healthz beside it. */
async function proxySection(say, idp) {
  const { dsPort, pxPort, ngDs, ngPx } = await nginxPair();
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } });
  const binaries = [['current', undefined]];
  if (process.env.BENCH_BASELINE_BINARY) binaries.unshift(['baseline', process.env.BENCH_BASELINE_BINARY]);
  const rows = [];
  await new Promise((r) => setTimeout(r, 300));
  const direct = await wrk(`http://127.0.0.1:${dsPort}/mcp`, { body });
  const viaNginx = await wrk(`http://127.0.0.1:${pxPort}/mcp`, { body });
  for (const [label, binary] of binaries) {
    const { b } = await benchNode(idp, 'proxy', label, binary, dsPort);
    const t = await fullFlow(b.url, { resource: `${b.url}/mcp` });
    await wrk(`${b.url}/mcp`, { body, token: t.access_token }); /* warm-up */
    let c0 = cpuSec(b.proc.pid);
    const hz = await wrk(`${b.url}/healthz`);
    const cpuHz = (cpuSec(b.proc.pid) - c0) / (hz.rps * Number(DURATION)) * 1e6;
    c0 = cpuSec(b.proc.pid);
    const [call, pc] = await Promise.all([wrk(`${b.url}/mcp`, { body, token: t.access_token }), perfCount(b.proc.pid, Math.max(1, Number(DURATION) - 1))]);
    const cpuCall = (cpuSec(b.proc.pid) - c0) / (call.rps * Number(DURATION)) * 1e6;
    const reqs = call.rps * Math.max(1, Number(DURATION) - 1);
    rows.push({ label, hz, cpuHz, call, cpuCall, sys: pc?.syscalls != null ? pc.syscalls / reqs : null, cs: pc?.cs != null ? pc.cs / reqs : null });
    await b.stop();
  }
  ngDs.stop();
  ngPx.stop();
  say(`hot path: a small tools/call (wrk -t2 -c32 -d${DURATION}s), same run`);
  say(`direct to the downstream:  ${fmt(direct)}`);
  say(`through nginx proxy_pass:  ${fmt(viaNginx)}`);
  say('binary    /healthz req/s  us CPU | tools/call req/s  p50 ms  p99 ms | x nginx | us CPU/req | syscalls/req | ctx switches/req');
  const n = (v, d = 1) => (v == null ? '   n/a' : v.toFixed(d).padStart(6));
  for (const r of rows) {
    say(`${r.label.padEnd(9)} ${r.hz.rps.toFixed(0).padStart(14)} ${r.cpuHz.toFixed(1).padStart(7)} | ${r.call.rps.toFixed(0).padStart(16)} ${r.call.p50.toFixed(2).padStart(7)} ${r.call.p99.toFixed(2).padStart(7)} | ${(r.call.rps / viaNginx.rps).toFixed(2).padStart(7)} | ${r.cpuCall.toFixed(1).padStart(10)} | ${n(r.sys)} | ${n(r.cs, 2)}`);
  }
  return { direct, viaNginx, current: rows.at(-1) };
}

/** Refresh grants/s under wrk (-t2 -c32): chained rotations on 34 grants
 * of one public client (tests/bench/refresh.lua), a C client as pgbench
 * is; with the broker's and PostgreSQL's CPU per refresh. */
async function wrkRefresh(b, clientId, redirectUri) {
  const seeds = [];
  for (let i = 0; i < 34; i++) {
    const f = await runFlow({ broker: b.url, clientId, redirectUri, resource: `${b.url}/mcp`, login: `wrk-rt${i}` });
    const r = await exchangeCode(b.url, { clientId, code: f.code, verifier: f.verifier, redirectUri });
    seeds.push(r.json.refresh_token);
  }
  const file = path.join(tmp, 'refresh-seeds.txt');
  writeFileSync(file, seeds.join('\n') + '\n');
  const c0 = cpuSec(b.proc.pid), p0 = postgresCpu();
  const out = await new Promise((resolve, reject) => {
    const p = spawn('wrk', ['-t2', '-c32', `-d${DURATION}s`, '--latency', '-s', path.join(path.dirname(new URL(import.meta.url).pathname), 'refresh.lua'), b.url],
      { env: { ...process.env, RT_FILE: file, RT_CLIENT: clientId, RT_THREADS: '2' } });
    let text = '';
    p.stdout.on('data', (d) => { text += d; });
    p.on('error', reject);
    p.on('close', () => resolve(text));
  });
  const n = Number(/(\d+) requests in/.exec(out)?.[1] || 0);
  const bad = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] || 0);
  const rate = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] || 0) * (n ? (n - bad) / n : 0);
  const dups = Number(/REFRESH_DUPS (\d+)/.exec(out)?.[1] || 0);
  return { rate, bad: bad + dups, brokerUs: n ? (cpuSec(b.proc.pid) - c0) / n * 1e6 : NaN, pgUs: n ? (postgresCpu() - p0) / n * 1e6 : NaN };
}

/** Section 9 (BENCH_ONLY=refresh): refresh grants/s under wrk against
 * pgbench -N on the same PostgreSQL, in BENCH_REFRESH_ROUNDS (3) rounds in
 * which pgbench and each binary (the current build, and
 * BENCH_BASELINE_BINARY when set) take turns; medians and each round's
 * ratio, with the broker's and PostgreSQL's CPU per refresh. BENCH_PERF=1:
 * the broker's top symbols during the last round's refreshes. */
async function refreshSection(say, idp) {
  const rounds = Math.max(1, Number(process.env.BENCH_REFRESH_ROUNDS || 3));
  const binaries = [['current', undefined]];
  if (process.env.BENCH_BASELINE_BINARY) binaries.unshift(['baseline', process.env.BENCH_BASELINE_BINARY]);
  const dsPort = await freePort();
  const nodes = [];
  for (const [label, binary] of binaries) {
    const { b } = await benchNode(idp, 'refresh', label, binary, dsPort);
    const reg = await req(`${b.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:9/cb'], token_endpoint_auth_method: 'none' }) });
    nodes.push({ label, b, clientId: reg.json.client_id, runs: [] });
  }
  const pg = [];
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  let top = null;
  for (let i = 0; i < rounds; i++) {
    await settle(nodes.map((n) => n.b.proc.pid));
    pg.push(await pgbenchTps());
    for (const n of nodes) {
      await settle([n.b.proc.pid]);
      const last = i === rounds - 1 && n === nodes.at(-1) && process.env.BENCH_PERF === '1';
      const [w, t] = await Promise.all([wrkRefresh(n.b, n.clientId, 'http://127.0.0.1:9/cb'),
        last ? new Promise((r) => setTimeout(r, 1000)).then(() => perfTop(n.b.proc.pid, Math.max(1, Number(DURATION) - 2))) : null]);
      n.runs.push(w);
      if (t) top = t;
    }
  }
  say(`refresh grants (wrk -t2 -c32 -d${DURATION}s, chained rotations on 34 grants) vs pgbench -N (16 clients), ${rounds} interleaved rounds`);
  say(`pgbench -N TPS per round: ${pg.map((x) => x.toFixed(0)).join(', ')} (median ${median(pg).toFixed(0)})`);
  say('binary    refreshes/s (median) | x pgbench (median; per round) | broker us CPU/refresh | PostgreSQL us CPU/refresh | refused');
  for (const n of nodes) {
    const rates = n.runs.map((r) => r.rate);
    const per = n.runs.map((r, k) => (r.rate / pg[k]).toFixed(2));
    say(`${n.label.padEnd(9)} ${median(rates).toFixed(0).padStart(20)} | ${median(n.runs.map((r, k) => r.rate / pg[k])).toFixed(2).padStart(6)} (${per.join(', ')}) | ` +
      `${median(n.runs.map((r) => r.brokerUs)).toFixed(0).padStart(21)} | ${median(n.runs.map((r) => r.pgUs)).toFixed(0).padStart(25)} | ${n.runs.reduce((a, r) => a + r.bad, 0)}`);
    await n.b.stop();
  }
  if (top) say(`broker's top symbols (self) during the last refresh run:\n${top}`);
}

/** CPU seconds used so far by the PostgreSQL processes on the machine
 * (run.sh's throwaway cluster; nothing else should run beside a benchmark). */
function postgresCpu() {
  let total = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.startsWith('postgres')) continue;
      total += cpuSec(pid);
    } catch { /* gone */ }
  }
  return total;
}

/** TPS of pgbench -N (the simple-update script without the branch/teller
 * updates) on the benchmark's PostgreSQL: 16 clients, as many as the
 * refresh run. */
async function pgbenchTps() {
  const url = new URL(process.env.MCPB_TEST_DATABASE_URL);
  const db = await createDatabase('bench_pgbench');
  const dbName = new URL(db).pathname.slice(1);
  const bin = existsSync('/usr/lib/postgresql/15/bin/pgbench') ? '/usr/lib/postgresql/15/bin/pgbench' : 'pgbench';
  const args = ['-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username || 'postgres')];
  const run = (extra) => new Promise((resolve) => {
    const p = spawn(bin, [...args, ...extra, dbName], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', () => {});
    p.on('error', () => resolve(''));
    p.on('close', () => resolve(out));
  });
  await run(['-i', '-q', '-s', '4']);
  const out = await run(['-N', '-c', '16', '-j', '2', '-T', String(DURATION)]);
  const m = /tps = ([\d.]+)/.exec(out);
  return m ? Number(m[1]) : NaN;
}

async function main() {
  const lines = [];
  const say = (s) => { lines.push(s); console.log(s); };
  // One section alone: BENCH_ONLY=dpop | streams | token-modes | proxy | refresh.
  const only = { dpop: ['DPoP only', dpopSection], streams: ['idle streams only', streamsSection], 'token-modes': ['token modes only', tokenModes], proxy: ['the hot path only', proxySection], refresh: ['refresh grants only', refreshSection] }[process.env.BENCH_ONLY];
  if (only) {
    const idp = await startIdp({ port: 0, log: false });
    say(`mcp-broker benchmarks on ${os.cpus().length} cores (${os.cpus()[0].model}): ${only[0]}`);
    await only[1](say, idp);
    await idp.close();
    writeFileSync(path.join(tmp, 'report.txt'), lines.join('\n') + '\n');
    return;
  }
  const idp = await startIdp({ port: 0 });
  // The downstream for the tools/call comparison: nginx answering a fixed
  // JSON-RPC result, so that the downstream is not the bottleneck.
  const { dsPort, pxPort, ngDs, ngPx } = await nginxPair();
  const sse = await startDownstream({ port: 0 });
  const db = await createDatabase('bench');
  const port = await freePort();
  const cfg = baseConfig({ port, databaseUrl: db, extra: {
    http: { threads: 4, drain_timeout_s: 5, max_connections: 8192 },
    log: { level: process.env.BENCH_LOG_LEVEL || 'info' },
    database: { pool_size: 8 },
    limits: { register_per_ip_per_hour: 0, token_per_client_per_minute: 0 },
    upstreams: upstreamConfig(idp),
    resources: [
      { path: '/mcp', upstream: 'sentry', downstream: `http://127.0.0.1:${dsPort}/mcp`,
        scopes: { 'issues:read': ['*'] }, default_scopes: ['issues:read'] },
      { path: '/sse', upstream: 'sentry', downstream: `${sse.url}` },
    ],
  } });
  const b = await startBroker(cfg, { keepLogs: false });
  await new Promise((r) => setTimeout(r, 500));
  say(`mcp-broker benchmarks on ${os.cpus().length} cores (${os.cpus()[0].model}), wrk -t2 -c32 -d${DURATION}s`);
  say(`idle RSS after start: ${rss(b.proc.pid)} KiB`);

  let c0 = cpuSec(b.proc.pid);
  const hz = await wrk(`${b.url}/healthz`);
  const cpuHz = (cpuSec(b.proc.pid) - c0) / (hz.rps * Number(DURATION)) * 1e6;
  say(`GET /healthz:                 ${fmt(hz)}  (${cpuHz.toFixed(1)} us CPU/req)`);

  const t = await fullFlow(b.url, { resource: `${b.url}/mcp` });
  const body = JSON.stringify(process.env.BENCH_METHOD === 'ping' ? { jsonrpc: '2.0', id: 1, method: 'ping' }
    : { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hi' } } });
  const direct = await wrk(`http://127.0.0.1:${dsPort}/mcp`, { body });
  const viaNginx = await wrk(`http://127.0.0.1:${pxPort}/mcp`, { body });
  c0 = cpuSec(b.proc.pid);
  const viaBroker = await wrk(`${b.url}/mcp`, { body, token: t.access_token });
  const cpuCall = (cpuSec(b.proc.pid) - c0) / (viaBroker.rps * Number(DURATION)) * 1e6;
  say(`tools/call direct:            ${fmt(direct)}`);
  say(`tools/call via nginx:         ${fmt(viaNginx)}`);
  say(`tools/call via mcp-broker:    ${fmt(viaBroker)}  (${cpuCall.toFixed(1)} us CPU/req)`);
  say(`ratios: broker/direct ${(viaBroker.rps / direct.rps).toFixed(3)}, broker/nginx ${(viaBroker.rps / viaNginx.rps).toFixed(3)} (throughput); p99 broker/nginx ${(viaBroker.p99 / viaNginx.p99).toFixed(2)}`);

  // 1,000 idle SSE streams through the broker.
  const ts = await fullFlow(b.url, { resource: `${b.url}/sse` });
  const before = rss(b.proc.pid);
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const streams = [];
  await Promise.all(Array.from({ length: 1000 }, () => new Promise((resolve, reject) => {
    const rq = http.request(`${b.url}/sse?mode=idle`, { agent, headers: { authorization: `Bearer ${ts.access_token}`, accept: 'text/event-stream', 'x-fake-mode': 'idle' } }, (res) => {
      streams.push({ rq, res });
      res.on('data', () => {});
      resolve();
    });
    rq.on('error', reject);
    rq.end();
  })));
  await new Promise((r) => setTimeout(r, 1000));
  const withStreams = rss(b.proc.pid);
  const probe = Date.now();
  const h = await req(`${b.url}/healthz`);
  say(`RSS with 1000 idle SSE streams open: ${withStreams} KiB (before ${before} KiB, +${((withStreams - before) / 1000).toFixed(1)} KiB/stream); /healthz meanwhile ${h.status} in ${Date.now() - probe} ms`);
  for (const s of streams) s.rq.destroy();
  agent.destroy();

  // Flow timing, code exchanges/s and refreshes/s.
  const N = 200;
  const t0 = Date.now();
  for (let i = 0; i < 10; i++) await fullFlow(b.url, { resource: `${b.url}/mcp`, login: `flow${i}` });
  say(`one complete flow (register, authorize, consent, upstream login, callback, token): ${((Date.now() - t0) / 10).toFixed(1)} ms`);
  const reg = await req(`${b.url}/register`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:9/cb'], token_endpoint_auth_method: 'none' }) });
  const clientId = reg.json.client_id;
  const codes = [];
  for (let i = 0; i < N; i++) {
    const f = await runFlow({ broker: b.url, clientId, redirectUri: 'http://127.0.0.1:9/cb', resource: `${b.url}/mcp`, login: `ex${i % 20}` });
    codes.push(f);
  }
  const pairs = [];
  let t1 = process.hrtime.bigint();
  await pool(codes, 16, async (f) => {
    const r = await exchangeCode(b.url, { clientId, code: f.code, verifier: f.verifier, redirectUri: 'http://127.0.0.1:9/cb' });
    if (r.status === 200) pairs.push(r.json);
  });
  const exSec = Number(process.hrtime.bigint() - t1) / 1e9;
  say(`code exchanges: ${pairs.length}/${N} in ${exSec.toFixed(2)} s = ${(pairs.length / exSec).toFixed(0)} /s (16 concurrent)`);
  let ok = 0;
  t1 = process.hrtime.bigint();
  await pool(pairs, 16, async (p) => {
    const r = await tokenRequest(b.url, { grant_type: 'refresh_token', refresh_token: p.refresh_token, client_id: clientId });
    if (r.status === 200) ok++;
  });
  const rfSec = Number(process.hrtime.bigint() - t1) / 1e9;
  const refreshRate = ok / rfSec;
  say(`refreshes: ${ok}/${pairs.length} in ${rfSec.toFixed(2)} s = ${refreshRate.toFixed(0)} /s (16 concurrent)`);
  const wr = await wrkRefresh(b, clientId, 'http://127.0.0.1:9/cb');
  say(`refreshes under wrk -t2 -c32 (chained rotations, 34 grants): ${wr.rate.toFixed(0)} /s${wr.bad ? ` (${wr.bad} refused)` : ''}, ` +
    `broker ${wr.brokerUs.toFixed(0)} us CPU/refresh, PostgreSQL ${wr.pgUs.toFixed(0)} us CPU/refresh`);
  const pgTps = await pgbenchTps();
  say(`pgbench -N on the same PostgreSQL (16 clients, ${DURATION} s): ${pgTps.toFixed(0)} TPS`);
  say(`final RSS: ${rss(b.proc.pid)} KiB`);
  await b.stop();

  // Throughput of 1, 2 and 3 nodes behind nginx (round robin) on one
  // PostgreSQL: the same tools/call, the same wrk, on this machine's cores.
  const ports = [await freePort(), await freePort(), await freePort()];
  const shared = { ...cfg, public_url: `http://127.0.0.1:${ports[0]}` };
  const nodes = [];
  for (const p of ports) nodes.push(await startBroker({ ...shared, listen: `127.0.0.1:${p}` }, { keepLogs: false }));
  const tn = await fullFlow(nodes[0].url, { resource: `${shared.public_url}/mcp` });
  const base1 = await wrk(`${nodes[0].url}/mcp`, { body, token: tn.access_token });
  say(`1 node (direct):              ${fmt(base1)}`);
  for (const k of [1, 2, 3]) {
    const lbPort = await freePort();
    const lb = startNginx(`upstream b { ${ports.slice(0, k).map((p) => `server 127.0.0.1:${p};`).join(' ')} keepalive 64; }
      server { listen 127.0.0.1:${lbPort}; location / { proxy_pass http://b; proxy_http_version 1.1;
        proxy_set_header Connection ""; proxy_buffering off; } }`);
    await new Promise((r) => setTimeout(r, 300));
    const rr = await wrk(`http://127.0.0.1:${lbPort}/mcp`, { body, token: tn.access_token });
    say(`${k} node${k > 1 ? 's' : ' '} behind nginx:         ${fmt(rr)}`);
    lb.stop();
  }
  for (const n of nodes) await n.stop();
  ngDs.stop();
  ngPx.stop();
  await sse.close();
  await tokenModes(say, idp);
  await dpopSection(say, idp);
  const st = await streamsSection(say, idp);
  await idp.close();

  // The targets, each beside its reference from this same run.
  const w = st.current;
  const rows = [
    ['tools/call throughput vs nginx proxy_pass', `${viaBroker.rps.toFixed(0)} req/s`, `nginx ${viaNginx.rps.toFixed(0)} req/s`, '>= 0.6x', viaBroker.rps / viaNginx.rps, (x) => x >= 0.6, (x) => `${x.toFixed(2)}x`],
    ['tools/call p50', `${viaBroker.p50.toFixed(2)} ms`, `nginx ${viaNginx.p50.toFixed(2)} ms`, '<= nginx + 0.5 ms', viaBroker.p50 - viaNginx.p50, (x) => x <= 0.5, (x) => `${x >= 0 ? '+' : ''}${x.toFixed(2)} ms`],
    ['broker CPU per tools/call', `${cpuCall.toFixed(1)} us`, `/healthz ${cpuHz.toFixed(1)} us`, '<= 40 us', cpuCall, (x) => x <= 40, (x) => `${x.toFixed(1)} us`],
    [`tools/call with ${st.n} idle SSE streams`, `${w.withS.rps.toFixed(0)} req/s`, `none ${w.none.rps.toFixed(0)} req/s`, '>= 0.9x', w.withS.rps / w.none.rps, (x) => x >= 0.9, (x) => `${x.toFixed(2)}x`],
    [`p50 with ${st.n} idle SSE streams`, `${w.withS.p50.toFixed(2)} ms`, `none ${w.none.p50.toFixed(2)} ms`, '<= +0.5 ms', w.withS.p50 - w.none.p50, (x) => x <= 0.5, (x) => `${x >= 0 ? '+' : ''}${x.toFixed(2)} ms`],
    [`idle CPU, ${st.n} streams open`, `${w.idleCpu.toFixed(2)} % of a core`, '-', '< 1 %', w.idleCpu, (x) => x < 1, (x) => `${x.toFixed(2)} %`],
    ['memory per idle SSE stream', `${w.perStream.toFixed(1)} KiB`, '-', '<= 20 KB', w.perStream * 1.024, (x) => x <= 20, (x) => `${x.toFixed(1)} KB`],
    ['CPU per tools/call with streams open', `${w.cpuWith.toFixed(0)} us`, `none ${w.cpuNone.toFixed(0)} us`, '-', w.cpuWith / w.cpuNone, () => true, (x) => `${x.toFixed(2)}x`],
    ['refresh grants/s (wrk) vs pgbench -N', `${wr.rate.toFixed(0)} /s`, `pgbench ${pgTps.toFixed(0)} TPS`, '>= 0.5x', wr.rate / pgTps, (x) => x >= 0.5, (x) => `${x.toFixed(2)}x`],
  ];
  say('');
  say('targets (issue 12), measured side by side in this run:');
  say(`${'what'.padEnd(44)} ${'figure'.padEnd(18)} ${'reference'.padEnd(22)} ${'value'.padEnd(10)} ${'target'.padEnd(18)} met`);
  for (const [what, fig, ref, target, v, ok, show] of rows)
    say(`${what.padEnd(44)} ${fig.padEnd(18)} ${ref.padEnd(22)} ${show(v).padEnd(10)} ${target.padEnd(18)} ${target === '-' ? '' : ok(v) ? 'yes' : 'no'}`);
  writeFileSync(path.join(tmp, 'report.txt'), lines.join('\n') + '\n');
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
