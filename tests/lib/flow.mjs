// The test as the user's browser: drives the broker's consent page and the
// fake IdP's login through the whole double OAuth flow, with a cookie jar.
import { createHash, randomBytes } from 'node:crypto';
import { http } from './harness.mjs';

export const b64url = (buf) => Buffer.from(buf).toString('base64url');
export function pkce() {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

export class CookieJar {
  constructor() { this.cookies = new Map(); }
  take(res) {
    const set = res.headers.getSetCookie ? res.headers.getSetCookie() : [];
    for (const c of set) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      this.cookies.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
    }
  }
  header() { return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '); }
}

/** Parses the consent page: the form's action and hidden inputs. */
export function parseConsent(html) {
  const form = /<form method="post" action="([^"]+)">([\s\S]*?)<\/form>/.exec(html);
  if (!form) throw new Error(`no consent form in:\n${html.slice(0, 500)}`);
  const fields = {};
  for (const m of form[2].matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    fields[m[1]] = m[2].replaceAll('&quot;', '"').replaceAll('&#39;', "'").replaceAll('&lt;', '<')
      .replaceAll('&gt;', '>').replaceAll('&amp;', '&');
  }
  return { action: form[1].replaceAll('&amp;', '&'), fields };
}

export async function browserGet(url, jar) {
  const res = await http(url, { headers: jar.cookies.size ? { cookie: jar.header() } : {} });
  jar.take(res);
  return res;
}

export async function browserPost(url, jar, fields) {
  const res = await http(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
    body: new URLSearchParams(fields).toString(),
  });
  jar.take(res);
  return res;
}

export function authorizeUrl(broker, params) {
  const u = new URL('/authorize', broker);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.append(k, v);
  return u.toString();
}

/**
 * Runs GET /authorize -> consent (approve) -> fake IdP login -> /callback.
 * Returns { code, state, iss, location, jar, steps } with the final redirect
 * to the client parsed, or stops early when `stopAt` names a step.
 */
export async function runFlow({ broker, clientId, redirectUri, scope, resource, state = 'st-' + b64url(randomBytes(6)),
  login = 'alice', decision = 'approve', jar = new CookieJar(), challenge, extra = {} }) {
  const p = challenge ? { challenge } : pkce();
  const steps = {};
  const url = authorizeUrl(broker, {
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, code_challenge: p.challenge,
    code_challenge_method: 'S256', state, scope, resource, ...extra,
  });
  steps.authorize = await browserGet(url, jar);
  if (steps.authorize.status !== 200) return { steps, jar, verifier: p.verifier };
  const consent = parseConsent(steps.authorize.text);
  steps.consent = await browserPost(consent.action, jar, { ...consent.fields, decision });
  if (steps.consent.status !== 302) return { steps, jar, verifier: p.verifier };
  let loc = steps.consent.headers.get('location');
  if (!loc.startsWith(broker)) {
    // The fake IdP's auto-approve shortcut stands in for the user's login.
    const up = new URL(loc);
    up.searchParams.set('login', login);
    up.searchParams.set('auto', '1');
    steps.upstream = await http(up.toString());
    if (steps.upstream.status !== 302) return { steps, jar, verifier: p.verifier };
    loc = steps.upstream.headers.get('location');
    steps.callback = await browserGet(loc, jar);
    if (steps.callback.status !== 302) return { steps, jar, verifier: p.verifier };
    loc = steps.callback.headers.get('location');
  }
  const final = new URL(loc);
  return {
    steps, jar, verifier: p.verifier, location: loc,
    code: final.searchParams.get('code'), state: final.searchParams.get('state'),
    iss: final.searchParams.get('iss'), error: final.searchParams.get('error'),
  };
}

export async function tokenRequest(broker, fields, { basic, headers = {} } = {}) {
  const h = { 'content-type': 'application/x-www-form-urlencoded', ...headers };
  if (basic) h.authorization = 'Basic ' + Buffer.from(`${encodeURIComponent(basic[0])}:${encodeURIComponent(basic[1])}`).toString('base64');
  return http(new URL('/token', broker).toString(), { method: 'POST', headers: h, body: new URLSearchParams(fields).toString() });
}

export async function exchangeCode(broker, { clientId, code, verifier, redirectUri, secret }) {
  return tokenRequest(broker, {
    grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri,
    client_id: clientId, ...(secret ? { client_secret: secret } : {}),
  });
}

/** Register + flow + exchange: a ready token pair for a public client. */
export async function fullFlow(broker, opts = {}) {
  const redirectUri = opts.redirectUri || 'http://127.0.0.1:33418/callback';
  let clientId = opts.clientId;
  if (!clientId) {
    const reg = await http(new URL('/register', broker).toString(), {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', client_name: 'test client' }),
    });
    if (reg.status !== 201) throw new Error(`register: ${reg.status} ${reg.text}`);
    clientId = reg.json.client_id;
  }
  const f = await runFlow({ broker, clientId, redirectUri, ...opts });
  if (!f.code) throw new Error(`flow failed: ${JSON.stringify(Object.fromEntries(Object.entries(f.steps).map(([k, v]) => [k, [v.status, v.headers.get('location'), v.text.slice(0, 300)]])))}`);
  const t = await exchangeCode(broker, { clientId, code: f.code, verifier: f.verifier, redirectUri });
  if (t.status !== 200) throw new Error(`token: ${t.status} ${t.text}`);
  return { clientId, redirectUri, ...t.json, flow: f };
}

/**
 * The user's browser through an in-band connect: the URL elicitation's page,
 * Continue, then the identity leg and the account leg at the fake IdP as
 * login (its auto-approve shortcut). at(url) may move each broker URL to
 * another node. Returns the last answer (200 "Connected" when it worked).
 */
export async function connectInBand(url, { login = 'alice', jar = new CookieJar(), at = (u) => u } = {}) {
  const page = await browserGet(at(url), jar);
  if (page.status !== 200) return page;
  const form = parseConsent(page.text);
  let r = await browserPost(at(form.action), jar, { ...form.fields, decision: 'approve' });
  for (let leg = 0; leg < 2 && r.status === 302; leg++) {
    const up = new URL(r.headers.get('location'));
    up.searchParams.set('login', login);
    up.searchParams.set('auto', '1');
    const idp = await http(up.toString());
    if (idp.status !== 302) return idp;
    r = await browserGet(at(idp.headers.get('location')), jar);
  }
  return r;
}
