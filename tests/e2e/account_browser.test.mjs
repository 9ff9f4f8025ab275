// The pages a person uses, in a real browser: Debian's headless Chromium
// driven over the DevTools protocol by puppeteer-core (nothing downloaded at
// run time). Two broker nodes share one database behind one public URL.
//  - the connect page of an in-band connect (a URL elicitation's link):
//    Continue, the identity leg at GitHub, the account leg at Sentry, each
//    through the fake IdP's own login form;
//  - GET /account: sign in with GitHub, the user's grants (client, resource,
//    scopes, created, last used) with their connected accounts, nobody
//    else's; a screenshot; disconnect and revoke with the keyboard only —
//    the sessions end on every node and the upstream tokens are revoked
//    upstream by the revoker;
//  - every value escaped (a client named with markup), the consent page's
//    headers; forged, foreign and stale form posts refused with nothing
//    changed; the operator API's listing and disconnect of connections.
//
// Needs MCPB_TEST_DATABASE_URL (tests/run.sh starts a cluster), `npm ci` and
// /usr/bin/chromium (deploy/install-deps.sh --test installs it).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import puppeteer from 'puppeteer-core';
import { startSdk2Downstream } from '../fakes/sdk2-downstream.mjs';
import { startNodes } from '../lib/nodes.mjs';
import { http, psql } from '../lib/harness.mjs';
import { CookieJar, browserGet, browserPost, fullFlow } from '../lib/flow.mjs';

const CHROMIUM = process.env.MCPB_CHROMIUM || '/usr/bin/chromium';
const REDIRECT = 'http://127.0.0.1:33418/callback';
const HOSTILE = '<img src=x onerror="window.pwned=1">"Evil" & Co';

let env, ds, nodeA, nodeB, browser;
const q = (sql) => psql(env.db, sql);
const onNode = (url, node) => { const u = new URL(url); u.port = new URL(node.url).port; return u.toString(); };

async function register(name) {
  const r = await http(`${env.publicUrl}/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', client_name: name }),
  });
  assert.equal(r.status, 201, r.text);
  return r.json.client_id;
}

/** A grant for login through client (registered as name), and its access token. */
async function grantFor(name, login) {
  const clientId = await register(name);
  const t = await fullFlow(env.publicUrl, { clientId, redirectUri: REDIRECT, login, resource: `${env.publicUrl}/mcp` });
  const grant = await q(`SELECT grant_id FROM tokens WHERE token_hash = sha256('${t.access_token}'::bytea)`);
  return { clientId, token: t.access_token, grant };
}

/** tools/call on the 2025-11-25 wire; returns the JSON-RPC answer. */
async function call(node, token, name = 'whoami') {
  const r = await http(`${node.url}/mcp`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-11-25',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name, arguments: {} } }),
  });
  return r;
}

/** Signs in at the fake IdP's login form shown in page, as login. */
async function idpLogin(page, login) {
  await page.waitForSelector('input#login');
  await page.$eval('input#login', (el) => { el.value = ''; });
  await page.type('input#login', login);
  await Promise.all([page.waitForNavigation(), page.click('button[value="approve"]')]);
}

async function newPage() {
  const ctx = await browser.createBrowserContext(); // its own cookies
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  return { ctx, page };
}

/** Presses Tab until the focused element's text is label (at most 40 times); then Enter. */
async function keyboardActivate(page, label) {
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press('Tab');
    const text = await page.evaluate(() => document.activeElement?.textContent?.trim());
    if (text === label) {
      await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
      return;
    }
  }
  throw new Error(`no focusable element "${label}" reached with Tab`);
}

async function until(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sentryTokens = async (user) => (await http(`${env.idp.base}/_control/tokens?user=${user}&personality=sentry`)).json.tokens;

describe('the broker\'s pages in headless Chromium', { skip: !existsSync(CHROMIUM) && `no ${CHROMIUM}`, timeout: 180000 }, () => {
  let alice, aliceEvil, bob;

  before(async () => {
    ds = await startSdk2Downstream({ port: 0 });
    env = await startNodes(2, {
      downstream: ds.url,
      extra: { registration: { dynamic: true, client_id_metadata_documents: false } },
      resources: [{
        path: '/mcp', upstream: 'gh', connect: ['sentry'], downstream: ds.url,
        inject: [
          { header: 'Authorization', value: 'Bearer {upstream_token}' },
          { header: 'X-Sentry-Token', value: '{upstream_token:sentry}' },
        ],
        scopes: { 'issues:read': ['echo', 'whoami'], 'issues:write': ['*'] }, default_scopes: ['issues:read'],
      }],
    });
    [nodeA, nodeB] = env.nodes;
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    });
    alice = await grantFor('Triage Bot', 'alice');
    aliceEvil = await grantFor(HOSTILE, 'alice');
    bob = await grantFor('Bob\'s Agent', 'bob');
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await env?.stop();
    await ds?.close();
  });

  it('connects Sentry in band through the connect page, each leg at the IdP\'s own login form', async () => {
    const r = await call(nodeA, alice.token);
    assert.equal(r.status, 200);
    assert.equal(r.json.error?.code, -32042, r.text);
    const [e] = r.json.error.data.elicitations;
    const { ctx, page } = await newPage();
    try {
      const res = await page.goto(onNode(e.url, nodeB)); // another node than the one that elicited
      assert.equal(res.status(), 200);
      assert.match(res.headers()['content-security-policy'], /default-src 'none'/);
      assert.match(await page.content(), /Triage Bot/);
      await Promise.all([page.waitForNavigation(), page.click('button[value="approve"]')]);
      await idpLogin(page, 'alice'); // identity leg: GitHub, as the grant's user
      await idpLogin(page, 'alice'); // account leg: Sentry
      assert.match(await page.$eval('h1', (h) => h.textContent), /Connected/);
    } finally { await ctx.close(); }
    assert.equal(await q(`SELECT count(*) FROM grant_connections WHERE grant_id = '${alice.grant}' AND upstream = 'sentry'`), '1');
  });

  it('the operator API lists the connection', async () => {
    const r = await http(`${nodeB.url}/admin/v1/grants?user=${encodeURIComponent(await q(`SELECT u.subject FROM grants g JOIN users u ON u.id = g.user_id WHERE g.id = '${alice.grant}'`))}`,
      { headers: { authorization: `Bearer ${env.adminToken}` } });
    assert.equal(r.status, 200);
    const g = r.json.grants.find((x) => x.grant_id === alice.grant);
    assert.equal(g.connections.length, 1);
    assert.equal(g.connections[0].upstream, 'sentry');
    assert.match(g.connections[0].subject, /^\d+$/, 'the Sentry account\'s id (its token answer names no login)');
    assert.deepEqual(r.json.grants.find((x) => x.grant_id === aliceEvil.grant).connections, []);
  });

  it('GET /account: sign in with GitHub, see your grants and connections only, escaped; a screenshot', async () => {
    const { ctx, page } = await newPage();
    try {
      const res = await page.goto(`${nodeA.url}/account`);
      assert.equal(res.status(), 200);
      const h = res.headers();
      assert.match(h['content-security-policy'], /default-src 'none'.*frame-ancestors 'none'/);
      assert.equal(h['x-frame-options'], 'DENY');
      assert.equal(h['cache-control'], 'no-store');
      const buttons = await page.$$eval('button', (b) => b.map((x) => x.textContent));
      assert.deepEqual(buttons.sort(), ['Sign in with gh', 'Sign in with sentry']);
      await Promise.all([page.waitForNavigation(), page.click('xpath/.//button[text()="Sign in with gh"]')]);
      await idpLogin(page, 'alice');
      assert.equal(new URL(page.url()).pathname, '/account');
      const text = await page.$eval('body', (b) => b.innerText);
      assert.match(text, /Signed in with gh as alice/);
      const sections = await page.$$eval('section', (s) => s.map((x) => x.querySelector('h2').textContent));
      assert.deepEqual(sections.sort(), [HOSTILE, 'Triage Bot'].sort(), 'alice\'s two grants, not bob\'s');
      assert.doesNotMatch(text, /Bob's Agent/);
      assert.equal(await page.$('img'), null, 'the client name\'s markup is text');
      assert.equal(await page.evaluate(() => window.pwned), undefined);
      const triage = await page.$eval('section[aria-label="Triage Bot"]', (s) => s.innerText);
      assert.match(triage, /Resource\s+http:\/\/127\.0\.0\.1:\d+\/mcp/);
      assert.match(triage, /Scopes\s+issues:read/);
      assert.match(triage, /Created\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC/);
      assert.match(triage, /Last used\s+never/);
      assert.match(triage, /gh \(signed in with it\)/);
      assert.match(triage, /sentry, connected \d{4}-\d\d-\d\d \d\d:\d\d UTC Disconnect sentry/);
      const shot = await page.screenshot({ fullPage: true });
      assert.ok(shot.length > 5000, `screenshot of ${shot.length} bytes`);
      assert.equal(shot.subarray(1, 4).toString(), 'PNG');
    } finally { await ctx.close(); }
  });

  it('keyboard only: disconnect Sentry, then revoke the grant; every node stops serving it', async () => {
    const { ctx, page } = await newPage();
    try {
      await page.goto(`${nodeB.url}/account`);
      await keyboardActivate(page, 'Sign in with gh');
      await page.waitForSelector('input#login');
      await page.keyboard.press('Enter'); // the fake IdP's form, alice prefilled and focused
      await page.waitForNavigation();
      assert.equal(new URL(page.url()).pathname, '/account');
      await keyboardActivate(page, 'Disconnect sentry');
      assert.match(await page.$eval('[role=status]', (p) => p.textContent), /disconnected/);
      assert.equal(await q(`SELECT count(*) FROM grant_connections WHERE grant_id = '${alice.grant}'`), '0');
      assert.equal(await q(`SELECT reason FROM connection_revocations WHERE grant_id = '${alice.grant}'`), 'user_disconnected');
      await until(async () => (await sentryTokens('alice')).some((t) => t.kind === 'access' && t.revoked), 'the Sentry token revoked upstream');
      // The next call asks to connect again, on either node.
      assert.equal((await call(nodeA, alice.token)).json.error?.code, -32042);

      await keyboardActivate(page, 'Revoke Triage Bot');
      assert.match(await page.$eval('[role=status]', (p) => p.textContent), /revoked/);
      const sections = await page.$$eval('section', (s) => s.map((x) => x.querySelector('h2').textContent));
      assert.deepEqual(sections, [HOSTILE]);
      for (const node of [nodeA, nodeB]) {
        await until(async () => (await call(node, alice.token)).status === 401, `401 on ${node.url}`);
      }
      assert.equal(await q(`SELECT status FROM grants WHERE id = '${alice.grant}'`), 'revoked');
      assert.equal(await q(`SELECT revoked_reason FROM grants WHERE id = '${alice.grant}'`), 'user_revoked');
      // At GitHub only that grant's token goes: alice's other grant still
      // holds a session of the same account, which GitHub's grant API
      // would have ended too. The sign-ins of this page and the identity
      // legs left no token behind either (each revoked after use).
      await until(async () => (await q(`SELECT outcome FROM upstream_revocations WHERE grant_id = '${alice.grant}'`)) === 'revoked_token', 'the grant\'s GitHub token revoked');
      const gh = (await http(`${env.idp.base}/_control/tokens?user=alice&personality=github&kind=access`)).json.tokens;
      assert.equal(gh.filter((t) => !t.revoked).length, 1, JSON.stringify(gh));
      assert.ok(!gh.some((t) => t.revoked_reason === 'grant_deleted'));
    } finally { await ctx.close(); }
  });

  describe('bad inputs, without a browser', () => {
    let jar, csrf;
    before(async () => {
      // A signed-in session of alice's, the way the browser holds it.
      jar = new CookieJar();
      const page = await browserGet(`${nodeA.url}/account`, jar);
      csrf = /name="csrf" value="([^"]+)"/.exec(page.text)[1];
      const login = await browserPost(`${nodeA.url}/account/login`, jar, { csrf, upstream: 'gh' });
      assert.equal(login.status, 302);
      const up = new URL(login.headers.get('location'));
      up.searchParams.set('auto', '1');
      up.searchParams.set('login', 'alice');
      const idp = await http(up.toString());
      const cb = await browserGet(onNode(idp.headers.get('location'), nodeB), jar);
      assert.equal(cb.status, 303, cb.text);
    });

    const post = (path, fields, j = jar) => browserPost(`${nodeA.url}/account/${path}`, j, fields);
    const grants = () => q('SELECT string_agg(id::text || status, \',\' ORDER BY id) FROM grants');

    it('refuses a post without the CSRF token, or another browser\'s', async () => {
      const before = await grants();
      assert.equal((await post('revoke', { grant: aliceEvil.grant })).status, 403);
      assert.equal((await post('revoke', { grant: aliceEvil.grant, csrf: 'x'.repeat(43) })).status, 403);
      const other = new CookieJar();
      await browserGet(`${nodeA.url}/account`, other);
      other.cookies.set([...jar.cookies.keys()].find((k) => k.includes('account')), [...jar.cookies.entries()].find(([k]) => k.includes('account'))[1]);
      assert.equal((await post('revoke', { grant: aliceEvil.grant, csrf }, other)).status, 403, 'the form of another browser');
      assert.equal(await grants(), before);
    });

    it('refuses another user\'s grant, an unknown or malformed one, and an unknown account', async () => {
      const before = await grants();
      assert.equal((await post('revoke', { grant: bob.grant, csrf })).status, 404);
      assert.equal((await post('disconnect', { grant: bob.grant, upstream: 'sentry', csrf })).status, 404);
      assert.equal((await post('revoke', { grant: '00000000-0000-0000-0000-000000000000', csrf })).status, 404);
      assert.equal((await post('revoke', { grant: "x' OR 1=1 --", csrf })).status, 404);
      assert.equal((await post('disconnect', { grant: aliceEvil.grant, upstream: 'sentry', csrf })).status, 404, 'nothing connected');
      assert.equal((await post('revoke', { csrf })).status, 404);
      assert.equal((await post('login', { csrf, upstream: 'nope' })).status, 400);
      const dup = await http(`${nodeA.url}/account/revoke`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
        body: `csrf=${encodeURIComponent(csrf)}&grant=${aliceEvil.grant}&grant=${bob.grant}`,
      });
      assert.equal(dup.status, 400, 'a repeated field');
      assert.equal(await grants(), before);
      assert.equal((await http(`${nodeA.url}/readyz`)).status, 200);
    });

    it('a forged or signed-out session sees the sign-in page and cannot act', async () => {
      const forged = new CookieJar();
      for (const [k, v] of jar.cookies) forged.cookies.set(k, k.includes('account') ? v.slice(0, -4) + 'AAAA' : v);
      const page = await browserGet(`${nodeA.url}/account`, forged);
      assert.equal(page.status, 200);
      assert.match(page.text, /Sign in with gh/);
      assert.equal((await post('revoke', { grant: aliceEvil.grant, csrf }, forged)).status, 403);
      const out = await post('logout', { csrf });
      assert.equal(out.status, 303);
      assert.match((await browserGet(`${nodeA.url}/account`, jar)).text, /Sign in with gh/);
      assert.equal((await post('revoke', { grant: aliceEvil.grant, csrf })).status, 403);
      assert.equal(await q(`SELECT status FROM grants WHERE id = '${aliceEvil.grant}'`), 'active');
    });

    it('sign-ins started from one address are bounded (each writes a row)', async () => {
      const j = new CookieJar();
      const c = /name="csrf" value="([^"]+)"/.exec((await browserGet(`${nodeB.url}/account`, j)).text)[1];
      const before = Number(await q('SELECT count(*) FROM pending_account_logins'));
      const codes = [];
      for (let i = 0; i < 30; i++) codes.push((await browserPost(`${nodeB.url}/account/login`, j, { csrf: c, upstream: 'gh' })).status);
      const limited = codes.indexOf(429);
      assert.ok(limited >= 15 && limited <= 21, `the burst, then 429: ${codes}`);
      assert.ok(codes.slice(limited).every((x) => x === 429));
      assert.equal(Number(await q('SELECT count(*) FROM pending_account_logins')) - before, limited, 'a refused start writes nothing');
      assert.equal((await http(`${nodeB.url}/readyz`)).status, 200);
    });

    it('a sign-in callback replayed, or finished in another browser, is refused', async () => {
      const j2 = new CookieJar();
      const page = await browserGet(`${nodeA.url}/account`, j2);
      const c2 = /name="csrf" value="([^"]+)"/.exec(page.text)[1];
      const login = await browserPost(`${nodeA.url}/account/login`, j2, { csrf: c2, upstream: 'gh' });
      const up = new URL(login.headers.get('location'));
      up.searchParams.set('auto', '1');
      const back = (await http(up.toString())).headers.get('location');
      assert.equal((await browserGet(back, new CookieJar())).status, 403, 'another browser');
      assert.equal((await browserGet(back, j2)).status, 400, 'the state was spent by the first try');
    });
  });

  it('the operator disconnects every account at an upstream; bad bodies are refused', async () => {
    const r0 = await call(nodeA, aliceEvil.token);
    const [e] = r0.json.error.data.elicitations;
    const { ctx, page } = await newPage();
    try {
      await page.goto(e.url);
      await Promise.all([page.waitForNavigation(), page.click('button[value="approve"]')]);
      await idpLogin(page, 'alice');
      await idpLogin(page, 'alice');
    } finally { await ctx.close(); }
    const admin = (body) => http(`${nodeB.url}/admin/v1/disconnect`, {
      method: 'POST', headers: { authorization: `Bearer ${env.adminToken}`, 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    for (const bad of [{}, { grant_id: aliceEvil.grant }, { upstream: 'sentry', extra: 1 }, { grant_id: 'x', upstream: 'sentry' }, '[', '"sentry"']) {
      const r = await admin(bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
    }
    assert.equal(await q('SELECT count(*) FROM grant_connections'), '1');
    const r = await admin({ upstream: 'sentry' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.disconnected, 1);
    assert.equal(await q('SELECT count(*) FROM grant_connections'), '0');
    assert.equal((await admin({ upstream: 'sentry' })).json.disconnected, 0);
    assert.equal(await q("SELECT count(*) FROM audit_events WHERE event = 'connection.disconnected' AND actor = 'admin'"), '1');
    const noAuth = await http(`${nodeB.url}/admin/v1/disconnect`, { method: 'POST', body: '{"upstream":"sentry"}' });
    assert.equal(noAuth.status, 401);
  });
});
