// TLS helpers for the CIMD tests: a throwaway CA and server certificate made
// with the openssl CLI, an HTTPS server with per-path behaviours that counts
// TCP connections and requests, and a plain TCP "recording listener" that
// records every connection it gets (to prove that nothing reached a
// forbidden address).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const SERVER_SANS = ['DNS:client.example.test', 'DNS:evil.example.test', 'DNS:localhost', 'IP:127.0.0.1', 'IP:::1'];

async function openssl(args, cwd) {
  try {
    await execFileP('openssl', args, { cwd });
  } catch (e) {
    throw new Error(`openssl ${args.join(' ')}: ${e.stderr || e.message}`);
  }
}

/**
 * Creates a throwaway CA and a server certificate signed by it (P-256 keys,
 * valid two days) in a fresh temp dir. Returns { dir, caCert, caKey,
 * serverCert, serverKey, cleanup() } (paths; cleanup removes the dir).
 */
export async function makeCa({ sans = SERVER_SANS } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-tls-'));
  const p = (f) => path.join(dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2',
    '-subj', `/CN=mcp-broker test CA ${randomBytes(4).toString('hex')}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-addext', 'subjectKeyIdentifier=hash'], dir);
  await openssl(['req', '-new', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'),
    '-subj', '/CN=client.example.test'], dir);
  writeFileSync(p('server.ext'), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'subjectKeyIdentifier=hash',
    'authorityKeyIdentifier=keyid,issuer',
    `subjectAltName=${sans.join(',')}`,
    '',
  ].join('\n'));
  await openssl(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'),
    '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-sha256',
    '-extfile', p('server.ext'), '-out', p('server.crt')], dir);
  return {
    dir,
    caCert: p('ca.crt'),
    caKey: p('ca.key'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A JSON body of exactly n bytes: {"pad":"xxxx…"}. */
export function jsonOfSize(n) {
  const skeleton = '{"pad":""}';
  return `{"pad":"${'x'.repeat(n - skeleton.length)}"}`;
}

/**
 * Starts an HTTPS server on 127.0.0.1 (port 0 by default) with the given
 * certificate. routes maps a path to a behaviour (mutable afterwards through
 * server.routes):
 *   { json: object|string, headers?, status? }    a JSON document (application/json)
 *   { body: string, contentType, headers?, status? }  any body
 *   { big: bytes }                                a JSON body of that many bytes
 *   { html: string }                              text/html
 *   { hang: true }                                reads the request, never answers
 *   { redirect: location, status? }               302 (or status) to location
 * Unknown paths get 404. Returns { port, url(path, host), connections,
 * requests (array of {path, method, headers, t}), hits(path), routes, close() }.
 */
export async function startHttpsServer({ cert, key, routes = {}, host = '127.0.0.1', port = 0 } = {}) {
  const state = { connections: 0, requests: [], routes: { ...routes } };
  const sockets = new Set();
  const server = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
    const p = new URL(req.url, 'https://x').pathname;
    state.requests.push({ path: p, method: req.method, headers: req.headers, t: Date.now() });
    const r = state.routes[p];
    req.resume();
    if (!r) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    if (r.hang) return; // never answers (the socket is closed at shutdown)
    const status = r.status || 200;
    if (r.redirect) {
      res.writeHead(r.status || 302, { location: r.redirect, 'content-type': 'text/plain' });
      res.end('moved');
      return;
    }
    let body, ctype;
    if (r.json !== undefined) {
      body = typeof r.json === 'string' ? r.json : JSON.stringify(r.json);
      ctype = 'application/json';
    } else if (r.big !== undefined) {
      body = jsonOfSize(r.big);
      ctype = 'application/json';
    } else if (r.html !== undefined) {
      body = r.html;
      ctype = 'text/html; charset=utf-8';
    } else {
      body = r.body ?? '';
      ctype = r.contentType;
    }
    const headers = { ...(ctype ? { 'content-type': ctype } : {}), ...(r.headers || {}) };
    if (r.chunked) {
      // No Content-Length: the size cap must hold on the bytes, not on a header.
      res.writeHead(status, headers);
      const buf = Buffer.from(body);
      for (let i = 0; i < buf.length; i += 1024) res.write(buf.subarray(i, i + 1024));
      res.end();
      return;
    }
    headers['content-length'] = Buffer.byteLength(body);
    res.writeHead(status, headers);
    res.end(body);
  });
  server.on('connection', (s) => {
    state.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => {}); // a refused handshake is the client's business
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const actual = server.address().port;
  return {
    port: actual,
    host,
    server,
    get connections() { return state.connections; },
    requests: state.requests,
    routes: state.routes,
    hits: (p) => state.requests.filter((r) => r.path === p).length,
    url: (p, h = 'client.example.test') => `https://${h}:${actual}${p}`,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

/**
 * A plain TCP listener that records every connection it accepts (remote
 * address, time, first bytes) and closes it. Returns { port, host,
 * connections, close() }.
 */
export async function startRecordingListener({ host = '127.0.0.1', port = 0 } = {}) {
  const connections = [];
  const sockets = new Set();
  const server = net.createServer((s) => {
    const rec = { remote: `${s.remoteAddress}:${s.remotePort}`, t: Date.now(), bytes: 0 };
    connections.push(rec);
    sockets.add(s);
    s.on('data', (d) => { rec.bytes += d.length; });
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    setTimeout(() => s.destroy(), 200).unref();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    port: server.address().port,
    host,
    connections,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
