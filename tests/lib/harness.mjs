// Helpers shared by the integration and e2e tests: free ports, throwaway
// databases on the cluster tests/run.sh started, the real broker binary with
// a generated config, psql, and small HTTP helpers.
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);
export const SOURCE_DIR = process.env.MCPB_SOURCE_DIR ||
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BINARY = process.env.MCPB_BINARY || path.join(SOURCE_DIR, 'build/mcp-broker');
export const CLUSTER_URL = process.env.MCPB_TEST_DATABASE_URL;
export const PGCLUSTER = path.join(SOURCE_DIR, 'deploy/pgcluster.sh');

export function requireCluster() {
  if (!CLUSTER_URL) throw new Error('MCPB_TEST_DATABASE_URL is not set: run the tests through tests/run.sh');
  return CLUSTER_URL;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function key() { return randomBytes(32).toString('base64'); }

/** Runs SQL through psql; returns stdout (tuples only, unaligned, '|' separated). */
export async function psql(dbUrl, sql) {
  const { stdout } = await execFileP('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', dbUrl, '-c', sql],
    { maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

/** A psql session holding ACCESS EXCLUSIVE on table for holdMs, then rolling
 * back: a real stall for whatever must read the table. Resolves once the
 * lock is held; { done } settles when psql exits, kill() ends it early. */
export async function lockTable(dbUrl, table, holdMs) {
  const p = spawn('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', dbUrl], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const locked = new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => { out += d; if (out.includes('locked')) resolve(); });
    p.on('exit', (code) => reject(new Error(`psql exited ${code} before locking`)));
  });
  p.stdin.write(`BEGIN; LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE; SELECT 'locked'; SELECT pg_sleep(${holdMs / 1000}); ROLLBACK;\n`);
  await locked;
  const done = new Promise((resolve) => p.on('exit', resolve));
  p.stdin.end();
  return { done, kill: () => p.kill('SIGKILL') };
}

/** Creates a fresh database on the shared cluster and returns its URL. */
export async function createDatabase(prefix = 't') {
  const base = requireCluster();
  const name = `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  await psql(base, `CREATE DATABASE ${name}`);
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Starts a private cluster (for tests that restart PostgreSQL). */
export async function startCluster() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mcpb-pg-'));
  await execFileP('chmod', ['755', dir]);
  const { stdout } = await execFileP('bash', [PGCLUSTER, 'start', path.join(dir, 'pg')]);
  const url = stdout.trim();
  return {
    url,
    dir,
    stop: () => execFileP('bash', [PGCLUSTER, 'stop', path.join(dir, 'pg')]),
    start: () => execFileP('bash', [PGCLUSTER, 'start', path.join(dir, 'pg')]),
    destroy: async () => {
      await execFileP('bash', [PGCLUSTER, 'stop', path.join(dir, 'pg')]).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes a config file for a broker listening on port. */
export function writeConfig(dir, cfg) {
  const file = path.join(dir, `config-${randomBytes(3).toString('hex')}.json`);
  writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

export function baseConfig({ port, databaseUrl, extra = {} }) {
  return {
    listen: `127.0.0.1:${port}`,
    public_url: `http://127.0.0.1:${port}`,
    database_url: databaseUrl,
    encryption_keys: [{ id: 'k1', key: key() }],
    cookie_secret: key(),
    http: { threads: 4, drain_timeout_s: 10 },
    database: { pool_size: 4, connect_timeout_s: 2 },
    ...extra,
  };
}

/** Runs the binary to completion: {code, stdout, stderr}. */
export function run(args, { env = {}, timeoutMs = 30000 } = {}) {
  return new Promise((resolve) => {
    const p = spawn(BINARY, args, { env: { ...process.env, ...env } });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code, signal) => { clearTimeout(t); resolve({ code, signal, stdout, stderr }); });
  });
}

/**
 * Starts `mcp-broker serve` with cfg (object) and resolves once it logged
 * node.started. Returns { url, port, proc, logs(), stop(sig), exited }.
 */
export async function startBroker(cfg, { args = [], env = {}, dir, keepLogs = true, binary = BINARY } = {}) {
  const tmp = dir || mkdtempSync(path.join(os.tmpdir(), 'mcpb-'));
  const file = writeConfig(tmp, cfg);
  const proc = spawn(binary, ['serve', '--config', file, ...args], { env: { ...process.env, ...env } });
  const lines = [];
  let buf = '';
  let startedResolve, startedReject;
  const started = new Promise((res, rej) => { startedResolve = res; startedReject = rej; });
  proc.stderr.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (keepLogs || lines.length < 200) lines.push(line);
      if (process.env.MCPB_TEST_VERBOSE) process.stderr.write(`[broker] ${line}\n`);
      try {
        const j = JSON.parse(line);
        if (j.event === 'node.started') startedResolve(j);
      } catch { /* not JSON: libmicrohttpd's own error log */ }
    }
  });
  proc.stdout.on('data', () => {});
  const exited = new Promise((res) => proc.on('close', (code, signal) => {
    startedReject(new Error(`broker exited (${code ?? signal}) before starting:\n${lines.join('\n')}`));
    res({ code, signal });
  }));
  const timer = setTimeout(() => startedReject(new Error(`broker did not start:\n${lines.join('\n')}`)), 40000);
  const info = await started.finally(() => clearTimeout(timer));
  const url = `http://127.0.0.1:${info.port}`;
  return {
    url,
    port: info.port,
    proc,
    file,
    dir: tmp,
    exited,
    logs: () => lines.slice(),
    logText: () => lines.join('\n'),
    stop: async (sig = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(sig);
      return exited;
    },
  };
}

/** fetch with a timeout that never throws on HTTP errors. */
export async function http(url, opts = {}) {
  const { timeoutMs = 10000, ...rest } = opts;
  const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(timeoutMs), ...rest });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/** Polls fn until it returns truthy or timeoutMs passes; returns the last value. */
export async function waitFor(fn, timeoutMs = 10000, stepMs = 50) {
  const end = Date.now() + timeoutMs;
  let v;
  while (Date.now() < end) {
    try { v = await fn(); if (v) return v; } catch { /* retry */ }
    await sleep(stepMs);
  }
  return v;
}
