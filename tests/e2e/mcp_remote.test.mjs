// End-to-end with mcp-remote (issue 5): the stdio <-> remote MCP bridge that
// Claude Desktop, Cursor and Windsurf run for a remote server, as an
// unmodified child process (tests/node_modules/mcp-remote/dist/proxy.js),
// through the real broker to the SDK-built fake downstream
// (tests/fakes/mcp-server.mjs), with the fake GitHub (tests/fakes/idp.mjs)
// upstream. The test is both sides of mcp-remote:
//  - its MCP host: JSON-RPC lines on mcp-remote's stdin/stdout, as Claude
//    Desktop speaks them;
//  - the user's browser: mcp-remote opens the authorization URL with the
//    `open` package, which runs its bundled xdg-open, which (no desktop, no
//    DISPLAY) runs $BROWSER; BROWSER is a two-line shell script that appends
//    the URL to a file. The test reads it, approves the broker's consent
//    page, logs in at the fake GitHub and follows the redirect to
//    mcp-remote's loopback callback server (/oauth/callback?code=…).
// Each mcp-remote run gets its own HOME (it keeps client registrations and
// tokens in ~/.mcp-auth) and a minimal environment (no DISPLAY, no desktop).
//
// Covered: dynamic client registration (what mcp-remote does by default),
// a restart that reuses the stored tokens, refresh after the broker expired
// the access token, mid-session step-up to a wider scope (403
// insufficient_scope, a second browser sign-in), a pre-registered client
// (--static-oauth-client-info) and a Client ID Metadata Document
// (--client-metadata-url, served over HTTPS by the test, tests/lib/tls.mjs).
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster) and
// `npm ci` in tests/ (tests/run.sh does it).
import { browse as browseToRedirect } from './sdk_journey.mjs';
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, chmodSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startIdp } from '../fakes/idp.mjs';
import { startMcpServer } from '../fakes/mcp-server.mjs';
import { startBroker, baseConfig, createDatabase, freePort, psql, waitFor, http } from '../lib/harness.mjs';
import { makeCa, startHttpsServer } from '../lib/tls.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROXY = path.resolve(HERE, '../node_modules/mcp-remote/dist/proxy.js');
// The opener `open` runs when it is executable (else a system xdg-open, if any).
const BUNDLED_XDG_OPEN = path.resolve(HERE, '../node_modules/open/xdg-open');
const MCP_REMOTE_VERSION = JSON.parse(readFileSync(path.resolve(HERE, '../node_modules/mcp-remote/package.json'), 'utf8')).version;
const PROTOCOL = '2025-06-18';
const DOC_PATH = '/mcp-remote.json';

const sha256hex = (s) => createHash('sha256').update(s).digest('hex');
const hasBrokerToken = (v) => typeof v === 'string' && /mcpb_(at|rt|ac)_/.test(v);

/** The broker's http.request log lines from index `from` on: "METHOD path status". */
function requests(broker, from = 0) {
  const out = [];
  for (const l of broker.logs().slice(from)) {
    let j;
    try { j = JSON.parse(l); } catch { continue; }
    if (j.event === 'http.request') out.push({ method: j.method, path: j.path, route: j.route, status: j.status, s: `${j.method} ${j.path} ${j.status}` });
  }
  return out;
}

/**
 * One mcp-remote process: `node proxy.js <url> <port> ...args` with its own
 * HOME and fake browser. JSON-RPC over its stdin/stdout.
 */
class McpRemote {
  constructor({ serverUrl, port, args = [], home }) {
    this.home = home || mkdtempSync(path.join(os.tmpdir(), 'mcpb-mcp-remote-'));
    this.urlFile = path.join(this.home, 'browser-urls');
    const bin = path.join(this.home, 'bin');
    mkdirSync(bin, { recursive: true });
    const browser = path.join(bin, 'fake-browser');
    writeFileSync(browser, `#!/bin/sh\nprintf '%s\\n' "$1" >> '${this.urlFile}'\n`);
    chmodSync(browser, 0o755);
    this.port = port;
    this.stderr = '';
    this.messages = [];
    this.proc = spawn(process.execPath, [PROXY, serverUrl, String(port), ...args], {
      cwd: this.home,
      // Minimal on purpose: no DISPLAY/WAYLAND_DISPLAY/XDG_CURRENT_DESKTOP, so
      // xdg-open takes its generic path and runs $BROWSER.
      env: { PATH: process.env.PATH, HOME: this.home, BROWSER: browser, LANG: 'C' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc.stdin.on('error', () => {});
    this.proc.stderr.on('data', (d) => {
      this.stderr += d;
      if (process.env.MCPB_TEST_VERBOSE) process.stderr.write(`[mcp-remote] ${d}`);
    });
    let buf = '';
    this.proc.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        let m;
        try { m = JSON.parse(line); } catch { m = { unparsable: line }; }
        this.messages.push(m);
      }
    });
    this.exited = new Promise((resolve) => this.proc.on('close', (code, signal) => resolve({ code, signal })));
  }

  send(m) { this.proc.stdin.write(JSON.stringify(m) + '\n'); }

  async answer(id, ms = 15000) {
    const m = await waitFor(() => this.messages.find((x) => x.id === id && ('result' in x || 'error' in x)), ms);
    assert.ok(m, `no answer to request ${id} within ${ms} ms; mcp-remote stderr:\n${this.stderr.slice(-3000)}`);
    return m;
  }

  async request(id, method, params) {
    this.send({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });
    return this.answer(id);
  }

  async initialize() {
    const r = await this.answer(1, 25000);
    this.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    return r;
  }

  /** URLs the fake browser was asked to open, oldest first. */
  browserUrls() {
    return existsSync(this.urlFile) ? readFileSync(this.urlFile, 'utf8').split('\n').filter(Boolean) : [];
  }

  async nextBrowserUrl(n, ms = 20000) {
    const ok = await waitFor(() => this.browserUrls().length >= n, ms);
    assert.ok(ok, `mcp-remote opened no browser (#${n}) within ${ms} ms; stderr:\n${this.stderr.slice(-3000)}`);
    return new URL(this.browserUrls()[n - 1]);
  }

  /** The tokens mcp-remote stored (one server, so one *_tokens.json). */
  storedTokens() {
    const dir = path.join(this.home, '.mcp-auth', 'mcp-remote-v1');
    const f = readdirSync(dir).filter((x) => x.endsWith('_tokens.json'));
    assert.equal(f.length, 1, `token files: ${readdirSync(dir).join(', ')}`);
    return JSON.parse(readFileSync(path.join(dir, f[0]), 'utf8'));
  }

  /** Closes stdin, as an MCP host does; SIGKILL if it has not exited after 5 s. */
  async close() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }

  cleanup() { rmSync(this.home, { recursive: true, force: true }); }
}

/**
 * The user's browser (the SDK journey's, tests/e2e/sdk_journey.mjs), then the
 * redirect target: mcp-remote's loopback callback page.
 */
async function browse(authorizationUrl, { brokerUrl, login = 'alice' }) {
  const { redirect, page } = await browseToRedirect(authorizationUrl.toString(), { brokerUrl, login });
  // mcp-remote may still be starting its callback server (step-up): retry a
  // refused connection briefly, as a user reloading the page would.
  let final;
  await waitFor(async () => { final = await http(redirect.toString()); return true; }, 5000, 100);
  assert.ok(final, `mcp-remote's callback ${redirect.origin}${redirect.pathname} never answered`);
  return { consentPage: page, redirect, final };
}

describe('mcp-remote through the broker', { timeout: 60000 }, () => {
  let idp, mcp, broker, dbUrl, ca, docs, mcpUrl;
  let staticPort, cimdPort, clientMetadataUrl;
  const remotes = [];
  let dcr; // the default (dynamic registration) mcp-remote, reused by the next three tests
  let dcrOk = false;
  let dcrPort;

  const newRemote = (opts) => { const r = new McpRemote({ serverUrl: mcpUrl, ...opts }); remotes.push(r); return r; };
  const initParams = { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'claude-desktop-e2e', version: '1.0.0' } };
  const downstreamCalls = (tool) => mcp.seen.filter((e) => e.tools.includes(tool));
  const text = (m) => m.result.content[0].text;

  before(async () => {
    assert.doesNotThrow(() => accessSync(BUNDLED_XDG_OPEN, fsConstants.X_OK), `${BUNDLED_XDG_OPEN} must be executable (npm ci in tests/)`);
    idp = await startIdp({ port: 0 });
    mcp = await startMcpServer({ port: 0 });
    dbUrl = await createDatabase('e2e_mcp_remote');
    ca = await makeCa();
    docs = await startHttpsServer({ cert: ca.serverCert, key: ca.serverKey });
    const port = await freePort();
    [dcrPort, staticPort, cimdPort] = [await freePort(), await freePort(), await freePort()];
    clientMetadataUrl = docs.url(DOC_PATH);
    docs.routes[DOC_PATH] = {
      json: {
        client_id: clientMetadataUrl,
        client_name: 'mcp-remote (CIMD e2e)',
        client_uri: 'https://client.example.test/',
        redirect_uris: [`http://127.0.0.1:${cimdPort}/oauth/callback`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      },
      headers: { 'cache-control': 'public, max-age=3600' },
    };
    const gh = `${idp.base}/github`;
    const cfg = baseConfig({
      port, databaseUrl: dbUrl, extra: {
        registration: {
          dynamic: true, client_id_metadata_documents: true, cimd_ca_file: ca.caCert,
          cimd_resolve: [`client.example.test:${docs.port}:127.0.0.1`], cimd_allow_private_cidrs: ['127.0.0.1/32'],
          cimd_timeout_ms: 3000,
        },
        clients: [{
          client_id: 'mcp-remote-static', client_name: 'mcp-remote (pre-registered)',
          redirect_uris: [`http://127.0.0.1:${staticPort}/oauth/callback`],
        }],
        upstreams: {
          gh: {
            preset: 'github', client_id: 'gh-client', client_secret: 'gh-secret',
            authorize_url: `${gh}/login/oauth/authorize`, token_url: `${gh}/login/oauth/access_token`,
            userinfo_url: `${gh}/api/user`, revoke_url: `${gh}/api/applications/{client_id}/grant`,
            scopes: ['read:user', 'repo'],
          },
        },
        resources: [{
          path: '/mcp', upstream: 'gh', downstream: mcp.url,
          // Three scopes, not two: mcp-remote 0.15.1 replaces a step-up scope
          // that happens to equal the whole scopes_supported list by the
          // scope of its first challenge (applyScope() takes it for its own),
          // so with two scopes it could never obtain issues:write.
          scopes: { 'issues:read': ['list_issues', 'echo', 'whoami', 'slow_progress'], 'issues:write': ['*'], 'issues:triage': ['list_issues'] },
          default_scopes: ['issues:read'],
        }],
      },
    });
    broker = await startBroker(cfg);
    mcpUrl = `${broker.url}/mcp`;
  });

  after(async () => {
    // mcp-remote first: it holds standalone GET streams open through the
    // broker, which a draining broker would otherwise wait for.
    await Promise.all(remotes.map((r) => r.close().catch(() => {})));
    await broker?.stop();
    await docs?.close();
    await mcp?.close();
    await idp?.close();
    ca?.cleanup();
    for (const r of remotes) r.cleanup();
  });

  it('default flags: GET probe, discovery, DCR, browser sign-in, then MCP over stdio', async () => {
    const from = broker.logs().length;
    dcr = newRemote({ port: dcrPort });
    // The host speaks first, as Claude Desktop does; mcp-remote answers once
    // it is connected (after the sign-in).
    dcr.send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: initParams });

    const url = await dcr.nextBrowserUrl(1);
    assert.equal(url.origin + url.pathname, `${broker.url}/authorize`);
    assert.equal(url.searchParams.get('response_type'), 'code');
    assert.match(url.searchParams.get('client_id'), /^mcpb_c_/, 'a dynamically registered client id');
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
    assert.match(url.searchParams.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/);
    // mcp-remote's default callback host is localhost.
    assert.equal(url.searchParams.get('redirect_uri'), `http://localhost:${dcrPort}/oauth/callback`);
    assert.equal(url.searchParams.get('resource'), mcpUrl, 'RFC 8707 resource indicator');
    assert.equal(url.searchParams.get('scope'), 'issues:read', 'the scope from the challenge');
    assert.ok(url.searchParams.get('state'));
    // mcp-remote says whether the browser opened only once its opener has
    // settled (open-browser.ts: the helper exited, or still runs after
    // HELPER_SETTLE_MS = 500 ms), i.e. after the fake browser wrote the URL:
    // wait for the verdict, either one, then require the bundled opener's
    // success (no fallback helper tried).
    const verdict = await waitFor(() => /Browser opened automatically|Could not open a browser automatically/.exec(dcr.stderr)?.[0], 5000);
    assert.equal(verdict, 'Browser opened automatically', dcr.stderr.slice(-3000));
    assert.doesNotMatch(dcr.stderr, /Trying \S+ to open the browser/, 'the bundled xdg-open ran $BROWSER');

    // What mcp-remote did before it opened the browser, in order, as the
    // broker logged it: a plain GET of the MCP URL is its probe (401 with the
    // RFC 9728 challenge), then discovery, a second GET (is a sign-in
    // needed?), the SDK's POST initialize (401), discovery again, DCR. The
    // broker logs a request after answering it: wait for the DCR line.
    await waitFor(() => requests(broker, from).some((e) => e.path === '/register'), 5000);
    const seq = requests(broker, from).map((e) => e.s);
    assert.deepEqual(seq, [
      'GET /mcp 401',
      'GET /.well-known/oauth-protected-resource/mcp 200',
      'GET /.well-known/oauth-authorization-server 200',
      'GET /mcp 401',
      'POST /mcp 401',
      'GET /.well-known/oauth-protected-resource/mcp 200',
      'GET /.well-known/oauth-authorization-server 200',
      'POST /register 201',
    ], seq.join('\n'));

    const { consentPage, redirect, final } = await browse(url, { brokerUrl: broker.url });
    assert.ok(consentPage.includes('MCP CLI Proxy'), 'the consent page names the client mcp-remote registered');
    assert.equal(redirect.origin + redirect.pathname, `http://localhost:${dcrPort}/oauth/callback`);
    assert.match(redirect.searchParams.get('code'), /^mcpb_ac_/);
    assert.equal(redirect.searchParams.get('state'), url.searchParams.get('state'));
    assert.equal(redirect.searchParams.get('iss'), broker.url);
    assert.equal(final.status, 200, `mcp-remote's callback page: ${final.status} ${final.text.slice(0, 300)}`);
    assert.match(final.text, /Authorization successful/);

    const init = await dcr.initialize();
    assert.equal(init.error, undefined, JSON.stringify(init.error));
    assert.equal(init.result.serverInfo.name, 'fake-downstream');
    assert.equal(init.result.protocolVersion, PROTOCOL);
    assert.ok(init.result.capabilities.tools);

    const tools = await dcr.request(2, 'tools/list');
    assert.deepEqual(tools.result.tools.map((t) => t.name).sort(), ['create_issue', 'echo', 'list_issues', 'slow_progress', 'whoami']);
    const echo = await dcr.request(3, 'tools/call', { name: 'echo', arguments: { text: 'hello from mcp-remote' } });
    assert.equal(text(echo), 'hello from mcp-remote');
    assert.equal(echo.result.isError, undefined);
    assert.equal(downstreamCalls('echo').length, 1);
    assert.ok(downstreamCalls('echo')[0].headers['mcp-session-id'], 'the call ran in a downstream session');

    const who = JSON.parse(text(await dcr.request(4, 'tools/call', { name: 'whoami', arguments: {} })));
    assert.ok(who.authorization.startsWith('Bearer gho_'), 'the downstream gets the fake GitHub token');
    assert.ok(!hasBrokerToken(who.authorization), 'never the broker token');
    assert.equal(who.user, 'gh:1001');
    assert.equal(who.client, url.searchParams.get('client_id'));
    assert.equal(who.scopes, 'issues:read');

    // After the browser: the code exchange, then MCP with the broker token.
    const after = requests(broker, from).map((e) => e.s);
    const tokenAt = after.indexOf('POST /token 200');
    assert.ok(tokenAt > after.indexOf('GET /callback 302'), after.join('\n'));
    assert.ok(after.slice(tokenAt + 1).every((s) => /^(POST|GET) \/mcp (200|202)$/.test(s)), after.join('\n'));
    assert.equal(after.filter((s) => s.startsWith('POST /register')).length, 1);

    // mcp-remote keeps the broker's tokens under ~/.mcp-auth.
    const t = dcr.storedTokens();
    assert.match(t.access_token, /^mcpb_at_/);
    assert.match(t.refresh_token, /^mcpb_rt_/);
    assert.equal(t.scope, 'issues:read');
    assert.equal(dcr.browserUrls().length, 1, 'one browser sign-in');
    dcrOk = true;
  });

  it('the broker refuses an access token it expired; mcp-remote refreshes and the call goes through', async () => {
    assert.ok(dcrOk, 'needs the signed-in mcp-remote of the first test');
    const old = dcr.storedTokens();
    const hash = sha256hex(old.access_token);
    assert.equal(await psql(dbUrl, `UPDATE tokens SET expires_at = now() - interval '1 second' WHERE kind = 'access' AND token_hash = '\\x${hash}'::bytea RETURNING 1`), '1');
    // Forget the node's cached validation without revoking anything (a t:
    // notification would revoke the token and end mcp-remote's GET stream
    // too): the revocation listener is cut, the node's cache goes off until
    // it listens again, and then starts empty.
    await psql(dbUrl, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mcp-broker-listen' AND datname = current_database()");
    const probe = () => http(mcpUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${old.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 'probe', method: 'ping' }),
    });
    const mark = broker.logs().length;
    let probes = 0;
    assert.ok(await waitFor(async () => { probes++; return (await probe()).status === 401; }, 5000), 'the expired token is refused');
    // The broker logs a request after answering it: wait for the probes' lines.
    const probeLines = () => requests(broker, mark).filter((e) => e.path === '/mcp' && e.method === 'POST').length;
    assert.ok(await waitFor(() => probeLines() === probes, 5000), `${probeLines()} of ${probes} probes logged`);
    const from = broker.logs().length;
    const r = await dcr.request(5, 'tools/call', { name: 'echo', arguments: { text: 'after refresh' } });
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    assert.equal(text(r), 'after refresh');
    const seq = requests(broker, from).filter((e) => e.method === 'POST').map((e) => e.s);
    assert.deepEqual(seq, ['POST /mcp 401', 'POST /token 200', 'POST /mcp 200'], seq.join('\n'));
    const now = dcr.storedTokens();
    assert.notEqual(now.access_token, old.access_token);
    assert.notEqual(now.refresh_token, old.refresh_token, 'refresh tokens rotate');
    assert.equal(dcr.browserUrls().length, 1, 'no new browser sign-in');
  });

  it('step-up: create_issue needs issues:write; mcp-remote signs in again in the browser and retries', async () => {
    assert.ok(dcrOk, 'needs the signed-in mcp-remote of the first test');
    const before = downstreamCalls('create_issue').length;
    dcr.send({ jsonrpc: '2.0', id: 6, method: 'tools/call', params: { name: 'create_issue', arguments: { title: 'via mcp-remote' } } });
    const url = await dcr.nextBrowserUrl(2);
    const scope = url.searchParams.get('scope').split(' ').sort();
    assert.deepEqual(scope, ['issues:read', 'issues:write']);
    assert.equal(url.searchParams.get('client_id'), new URL(dcr.browserUrls()[0]).searchParams.get('client_id'), 'the registration is reused');
    const { final } = await browse(url, { brokerUrl: broker.url });
    assert.equal(final.status, 200, `mcp-remote's callback page: ${final.status} ${final.text.slice(0, 300)}`);
    const r = await dcr.answer(6);
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    assert.deepEqual(JSON.parse(text(r)), { number: 2, title: 'via mcp-remote' });
    assert.equal(downstreamCalls('create_issue').length, before + 1, 'the tool ran once');
    assert.deepEqual(dcr.storedTokens().scope.split(' ').sort(), ['issues:read', 'issues:write']);
  });

  it('a restart with the same HOME reuses the stored tokens: no browser, no registration', async () => {
    assert.ok(dcrOk, 'needs the signed-in mcp-remote of the first test');
    const home = dcr.home;
    const exit = await dcr.close();
    assert.deepEqual(exit, { code: 0, signal: null }, 'mcp-remote exits cleanly when the host closes stdin');
    const from = broker.logs().length;
    const again = newRemote({ port: dcrPort, home });
    again.send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: initParams });
    const init = await again.initialize();
    assert.equal(init.result.serverInfo.name, 'fake-downstream');
    const r = await again.request(2, 'tools/call', { name: 'echo', arguments: { text: 'after restart' } });
    assert.equal(text(r), 'after restart');
    assert.equal(again.browserUrls().length, 2, 'no new browser sign-in');
    const seq = requests(broker, from);
    const all = seq.map((e) => e.s).join('\n');
    assert.ok(!seq.some((e) => ['/register', '/authorize', '/token'].includes(e.path)), all);
    // It still probes (an unauthenticated GET, 401) and rediscovers, then
    // presents the stored token: every POST is accepted.
    assert.deepEqual(seq.filter((e) => e.status === 401).map((e) => e.s), ['GET /mcp 401'], all);
    assert.ok(seq.filter((e) => e.method === 'POST').every((e) => e.path === '/mcp' && (e.status === 200 || e.status === 202)), all);
    await again.close();
  });

  it('--static-oauth-client-info: a pre-registered public client, no registration', async () => {
    const from = broker.logs().length;
    const r = newRemote({
      port: staticPort,
      args: ['--host', '127.0.0.1', '--static-oauth-client-info', JSON.stringify({ client_id: 'mcp-remote-static' })],
    });
    r.send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: initParams });
    const url = await r.nextBrowserUrl(1);
    assert.equal(url.searchParams.get('client_id'), 'mcp-remote-static');
    assert.equal(url.searchParams.get('redirect_uri'), `http://127.0.0.1:${staticPort}/oauth/callback`);
    const { consentPage, final } = await browse(url, { brokerUrl: broker.url, login: 'bob' });
    assert.ok(consentPage.includes('mcp-remote (pre-registered)'), 'the consent page names the configured client');
    assert.equal(final.status, 200);
    const init = await r.initialize();
    assert.equal(init.result.serverInfo.name, 'fake-downstream');
    const who = JSON.parse(text(await r.request(2, 'tools/call', { name: 'whoami', arguments: {} })));
    assert.equal(who.client, 'mcp-remote-static');
    assert.equal(who.user, 'gh:1002');
    assert.ok(who.authorization.startsWith('Bearer gho_'));
    const echo = await r.request(3, 'tools/call', { name: 'echo', arguments: { text: 'static client' } });
    assert.equal(text(echo), 'static client');
    const seq = requests(broker, from);
    assert.equal(seq.filter((e) => e.path === '/register').length, 0, seq.map((e) => e.s).join('\n'));
    assert.equal(seq.filter((e) => e.path === '/token' && e.status === 200).length, 1);
    assert.match(r.storedTokens().access_token, /^mcpb_at_/);
    assert.deepEqual(await r.close(), { code: 0, signal: null });
  });

  it('--client-metadata-url: the HTTPS URL is the client_id (CIMD), no registration', async () => {
    const from = broker.logs().length;
    const hits = docs.hits(DOC_PATH);
    const r = newRemote({ port: cimdPort, args: ['--host', '127.0.0.1', '--client-metadata-url', clientMetadataUrl] });
    r.send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: initParams });
    const url = await r.nextBrowserUrl(1);
    assert.equal(url.searchParams.get('client_id'), clientMetadataUrl);
    assert.equal(url.searchParams.get('redirect_uri'), `http://127.0.0.1:${cimdPort}/oauth/callback`);
    const { consentPage, final } = await browse(url, { brokerUrl: broker.url });
    assert.ok(consentPage.includes('mcp-remote (CIMD e2e)'), 'the consent page names the client from its document');
    assert.equal(final.status, 200);
    assert.ok(docs.hits(DOC_PATH) > hits, 'the broker fetched the metadata document');
    const init = await r.initialize();
    assert.equal(init.result.serverInfo.name, 'fake-downstream');
    const echo = await r.request(2, 'tools/call', { name: 'echo', arguments: { text: 'cimd client' } });
    assert.equal(text(echo), 'cimd client');
    const seq = requests(broker, from);
    assert.equal(seq.filter((e) => e.path === '/register').length, 0, seq.map((e) => e.s).join('\n'));
    assert.deepEqual(await r.close(), { code: 0, signal: null });
  });

  it('no broker log line carries a token or a code, and every mcp-remote exited', async () => {
    const leaks = broker.logs().filter((l) => /mcpb_(at|rt|ac)_|gh[ory]_|ghcode_/.test(l));
    assert.equal(leaks.length, 0, `${leaks.length} broker log lines carry a token or code`);
    assert.equal(remotes.length, 4);
    assert.deepEqual(remotes.map((r) => r.proc.exitCode), [0, 0, 0, 0], 'each exited 0 when its stdin closed');
  });
});
