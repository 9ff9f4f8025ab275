// Fake enterprise identity provider (the Okta or Entra ID of SEP-990's
// enterprise-managed authorization), node built-ins only. It plays both of
// its parts:
//  - an OIDC provider the broker signs users in with (its trusted issuer's
//    login_upstream): discovery, /authorize (with the fake IdPs' shortcut
//    `login=NAME&auto=1`, PKCE S256 checked when sent), /token
//    (authorization_code), /userinfo;
//  - the issuer of Identity Assertion JWT Authorization Grants by RFC 8693
//    token exchange at /token: subject_token an ID token it issued
//    (subject_token_type ...:id_token), requested_token_type
//    urn:ietf:params:oauth:token-type:id-jag, audience, resource, scope; the
//    answer's access_token is the ID-JAG (typ oauth-id-jag+jwt, RS256), its
//    client_id the client of the authorization server that `clientMap` maps
//    the requesting IdP client to.
// Users: any login name; the subject is `ent-<login>`. Keys: one RSA key;
// `jwks` is its public JWKS (the test serves it over https for the broker).
// `sign(header, claims)` signs anything with that key (for hostile
// ID-JAGs); `idTokenFor(login)` is the ID token the MCP client got at its
// own sign-in. `exchanges` records every token exchange.
//
// startEnterpriseIdp({ clients, clientMap }) -> { base, jwks, sign, idTokenFor, exchanges, close() }
import http from 'node:http';
import crypto from 'node:crypto';

const b64u = (b) => Buffer.from(b).toString('base64url');
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';

export async function startEnterpriseIdp({ port = 0, clients = {}, clientMap = {}, idjagTtl = 300 } = {}) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = 'ent-' + crypto.randomBytes(4).toString('hex');
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  const codes = new Map(); // code -> {login, client_id, redirect_uri, challenge}
  const tokens = new Map(); // access token -> login
  const exchanges = [];
  let base = '';

  function sign(header, claims) {
    const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
    return `${input}.${b64u(crypto.sign('sha256', Buffer.from(input), privateKey))}`;
  }
  function verify(jwt) {
    const [h, p, s] = String(jwt).split('.');
    if (!s || !crypto.verify('sha256', Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s, 'base64url'))) return null;
    try { return JSON.parse(Buffer.from(p, 'base64url').toString()); } catch { return null; }
  }
  const now = () => Math.floor(Date.now() / 1000);
  function idTokenFor(login, aud = 'mcp-client-at-idp') {
    return sign({ alg: 'RS256', kid, typ: 'JWT' }, { iss: base, sub: `ent-${login}`, aud, iat: now(), exp: now() + 600, preferred_username: login });
  }

  function send(res, status, body, headers = {}) {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  }
  function clientOf(req, form) {
    let id = form.get('client_id'), secret = form.get('client_secret');
    const a = req.headers.authorization;
    if (a && a.startsWith('Basic ')) {
      const [u, p] = Buffer.from(a.slice(6), 'base64').toString().split(':');
      id = decodeURIComponent(u); secret = decodeURIComponent(p ?? '');
    }
    return id && clients[id] !== undefined && clients[id] === secret ? id : null;
  }

  function metadata() {
    return {
      issuer: base, authorization_endpoint: `${base}/authorize`, token_endpoint: `${base}/token`,
      userinfo_endpoint: `${base}/userinfo`, jwks_uri: `${base}/jwks`, response_types_supported: ['code'],
      subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'],
      grant_types_supported: ['authorization_code', 'urn:ietf:params:oauth:grant-type:token-exchange'],
      code_challenge_methods_supported: ['S256'], token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    };
  }

  function tokenExchange(req, res, form, client) {
    const subject = verify(form.get('subject_token'));
    const rec = { client, audience: form.get('audience'), resource: form.get('resource'), scope: form.get('scope'), t: Date.now() };
    exchanges.push(rec);
    if (form.get('requested_token_type') !== ID_JAG || form.get('subject_token_type') !== ID_TOKEN)
      return send(res, 400, { error: 'invalid_request', error_description: 'only ID tokens for ID-JAGs' });
    if (!subject || subject.iss !== base || subject.exp < now())
      return send(res, 400, { error: 'invalid_grant', error_description: 'the subject token is not ours or expired' });
    if (!rec.audience || !rec.resource || !clientMap[client])
      return send(res, 400, { error: 'invalid_target', error_description: 'no client at that audience' });
    const claims = {
      iss: base, sub: subject.sub, aud: rec.audience, client_id: clientMap[client], resource: rec.resource,
      jti: crypto.randomUUID(), iat: now(), exp: now() + idjagTtl, ...(rec.scope ? { scope: rec.scope } : {}),
    };
    const jag = sign({ alg: 'RS256', kid, typ: 'oauth-id-jag+jwt' }, claims);
    rec.claims = claims;
    send(res, 200, { issued_token_type: ID_JAG, access_token: jag, token_type: 'N_A', expires_in: idjagTtl, ...(rec.scope ? { scope: rec.scope } : {}) });
  }

  function tokenEndpoint(req, res, form) {
    const client = clientOf(req, form);
    if (!client) return send(res, 401, { error: 'invalid_client' });
    const gt = form.get('grant_type');
    if (gt === 'urn:ietf:params:oauth:grant-type:token-exchange') return tokenExchange(req, res, form, client);
    if (gt !== 'authorization_code') return send(res, 400, { error: 'unsupported_grant_type' });
    const c = codes.get(form.get('code'));
    codes.delete(form.get('code'));
    if (!c || c.client_id !== client || c.redirect_uri !== form.get('redirect_uri')) return send(res, 400, { error: 'invalid_grant' });
    if (c.challenge && b64u(crypto.createHash('sha256').update(form.get('code_verifier') || '').digest()) !== c.challenge)
      return send(res, 400, { error: 'invalid_grant', error_description: 'PKCE' });
    const at = 'ent_at_' + crypto.randomBytes(16).toString('hex');
    tokens.set(at, c.login);
    send(res, 200, { access_token: at, token_type: 'Bearer', expires_in: 3600, scope: 'openid profile', id_token: idTokenFor(c.login, client) });
  }

  const server = http.createServer(async (req, res) => {
    const u = new URL(req.url, 'http://x');
    let body = '';
    for await (const ch of req) body += ch;
    if (req.method === 'GET' && (u.pathname === '/.well-known/openid-configuration' || u.pathname === '/.well-known/oauth-authorization-server'))
      return send(res, 200, metadata());
    if (req.method === 'GET' && u.pathname === '/jwks') return send(res, 200, { keys: [jwk] });
    if (req.method === 'GET' && u.pathname === '/authorize') {
      const q = u.searchParams;
      if (q.get('auto') !== '1' || !q.get('login') || !q.get('redirect_uri')) { res.writeHead(400); return res.end('login=NAME&auto=1 only'); }
      const code = 'ent_code_' + crypto.randomBytes(12).toString('hex');
      codes.set(code, { login: q.get('login'), client_id: q.get('client_id'), redirect_uri: q.get('redirect_uri'), challenge: q.get('code_challenge') });
      const to = new URL(q.get('redirect_uri'));
      to.searchParams.set('code', code);
      if (q.get('state')) to.searchParams.set('state', q.get('state'));
      res.writeHead(302, { location: to.toString() });
      return res.end();
    }
    if (req.method === 'POST' && u.pathname === '/token') return tokenEndpoint(req, res, new URLSearchParams(body));
    if (req.method === 'GET' && u.pathname === '/userinfo') {
      const login = tokens.get((req.headers.authorization || '').replace(/^Bearer /, ''));
      if (!login) return send(res, 401, { error: 'invalid_token' });
      return send(res, 200, { sub: `ent-${login}`, preferred_username: login, email: `${login}@corp.example` });
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}`;
  return {
    base, kid, jwks: { keys: [jwk] }, sign, idTokenFor, exchanges, now,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}
