// Fake downstream MCP server, built with the official MCP TypeScript SDK
// (McpServer + StreamableHTTPServerTransport on node:http): what the broker
// proxies to in the e2e tests.
//
//   node tests/fakes/mcp-server.mjs [--port N] [--host 127.0.0.1]
//   stdout (one line): {"event":"listening","port":N,"url":"http://127.0.0.1:N/mcp"}
//   exits 0 on SIGTERM/SIGINT
//
// In-process: `const s = await startMcpServer({ port: 0 })` gives
// { port, url, close(), seen, sessions }.
//
// Stateful Streamable HTTP: every initialize opens a session (random
// Mcp-Session-Id) with its own McpServer; an in-memory EventStore gives every
// SSE event an id so that a client can resume a stream with Last-Event-ID.
//
// Tools: echo {text, notify} (notify: also a notifications/message on the
// session's standalone GET stream); whoami (the Authorization, X-MCP-User,
// X-MCP-Client and X-MCP-Scopes headers this server received with the call);
// list_issues; create_issue {title};
// slow_progress {steps, interval_ms, close_stream_after}
// (one progress notification per step via the request's progressToken, then
// the result; with close_stream_after=K the server closes the response's SSE
// stream after K notifications, and the client must resume it).
//
// `seen` records every HTTP request (method, path, headers, JSON-RPC methods
// and tool names, session, status as soon as the head is written, `finished`
// when the answer was complete, `closed` when the connection went away) for
// the tests' assertions. Nothing here ever prints a header value: tokens
// stay in memory.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

const MAX_BODY = 1024 * 1024;

/** In-memory EventStore: ids are "<streamId>.<seq>", seq global and increasing. */
export class MemoryEventStore {
  constructor() {
    this.seq = 0;
    this.events = []; // {id, streamId, message, seq}, oldest first
    this.byId = new Map();
  }

  async storeEvent(streamId, message) {
    const id = `${streamId}.${++this.seq}`;
    const ev = { id, streamId, message, seq: this.seq };
    this.events.push(ev);
    this.byId.set(id, ev);
    if (this.events.length > 10000) this.byId.delete(this.events.shift().id);
    return id;
  }

  async getStreamIdForEventId(eventId) {
    return this.byId.get(eventId)?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const last = this.byId.get(lastEventId);
    if (!last) return '';
    for (const ev of this.events) {
      // Priming events carry no message ({}): nothing to replay.
      if (ev.streamId === last.streamId && ev.seq > last.seq && ev.message && 'jsonrpc' in ev.message) {
        await send(ev.id, ev.message);
      }
    }
    return last.streamId;
  }
}

function headerView(h) {
  return {
    authorization: h.authorization ?? null,
    user: h['x-mcp-user'] ?? null,
    client: h['x-mcp-client'] ?? null,
    scopes: h['x-mcp-scopes'] ?? null,
  };
}

function buildServer(state, session) {
  const server = new McpServer({ name: 'fake-downstream', version: '1.0.0' }, {
    capabilities: { logging: {} },
  });
  const text = (t) => ({ content: [{ type: 'text', text: typeof t === 'string' ? t : JSON.stringify(t) }] });

  server.registerTool('echo', {
    description: 'Returns its text; with notify, also sends it as a log message on the session\'s GET stream',
    inputSchema: { text: z.string(), notify: z.boolean().optional() },
  }, async ({ text: t, notify }) => {
    // No relatedRequestId: the SDK routes it to the standalone GET SSE stream.
    if (notify) await server.sendLoggingMessage({ level: 'info', logger: 'echo', data: t });
    return text(t);
  });

  server.registerTool('whoami', {
    description: 'The credentials and identity headers this server received with the call',
  }, async (extra) => text(headerView(extra.requestInfo?.headers ?? {}))); // no inputSchema: (extra) only

  server.registerTool('list_issues', {
    description: 'Lists the issues',
  }, async () => text({ issues: state.issues }));

  server.registerTool('create_issue', {
    description: 'Creates an issue',
    inputSchema: { title: z.string() },
  }, async ({ title }) => {
    const issue = { number: state.issues.length + 1, title };
    state.issues.push(issue);
    return text(issue);
  });

  server.registerTool('slow_progress', {
    description: 'Sends `steps` progress notifications `interval_ms` apart, then returns',
    inputSchema: {
      steps: z.number().int().min(1).max(100).default(5),
      interval_ms: z.number().int().min(0).max(5000).default(100),
      close_stream_after: z.number().int().min(0).max(100).optional(),
    },
  }, async ({ steps, interval_ms: interval, close_stream_after: closeAfter }, extra) => {
    const token = extra._meta?.progressToken;
    const sent = [];
    for (let i = 1; i <= steps; i++) {
      await new Promise((r) => setTimeout(r, interval));
      if (extra.signal.aborted) throw new Error('cancelled');
      if (token !== undefined) {
        await extra.sendNotification({
          method: 'notifications/progress',
          params: { progressToken: token, progress: i, total: steps, message: `step ${i}` },
        });
      }
      sent.push(Date.now());
      if (closeAfter && i === closeAfter) {
        // Polling-style disconnect (SEP-1699): the client resumes with Last-Event-ID.
        if (!extra.closeSSEStream) throw new Error('closeSSEStream unavailable (no event store or old protocol)');
        session.closedStreams++;
        extra.closeSSEStream();
      }
    }
    return text({ steps, sent, session: session.id });
  });
  return server;
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) { reject(Object.assign(new Error('too large'), { status: 413 })); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => {
      const s = Buffer.concat(chunks).toString('utf8');
      if (!s) return resolve(undefined);
      try { resolve(JSON.parse(s)); } catch { reject(Object.assign(new Error('bad json'), { status: 400 })); }
    });
    req.on('error', reject);
  });
}

function rpcError(res, status, code, message) {
  if (res.headersSent) return res.end();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

function summarise(body) {
  const msgs = Array.isArray(body) ? body : body ? [body] : [];
  return {
    rpc: msgs.map((m) => m?.method ?? (m && 'result' in m ? 'result' : 'error')),
    tools: msgs.filter((m) => m?.method === 'tools/call').map((m) => m.params?.name),
  };
}

export async function startMcpServer({ port = 0, host = '127.0.0.1', path = '/mcp' } = {}) {
  const state = { issues: [{ number: 1, title: 'first issue' }] };
  const sessions = new Map(); // id -> {id, transport, server, closedStreams}
  const seen = [];

  const httpServer = http.createServer(async (req, res) => {
    const url = new URL(req.url, `http://${req.headers.host || host}`);
    const entry = { t: Date.now(), method: req.method, path: url.pathname, headers: { ...req.headers }, rpc: [], tools: [] };
    seen.push(entry);
    const writeHead = res.writeHead;
    res.writeHead = function (status, ...rest) { entry.status = status; return writeHead.call(this, status, ...rest); };
    res.on('finish', () => { entry.status = res.statusCode; entry.finished = true; });
    res.on('close', () => { entry.status ??= res.statusCode; entry.closed = true; });
    try {
      if (url.pathname !== path) return rpcError(res, 404, -32601, 'not found');
      let body;
      if (req.method === 'POST') {
        body = await readJson(req);
        Object.assign(entry, summarise(body));
      }
      const sid = req.headers['mcp-session-id'];
      let s = sid ? sessions.get(sid) : undefined;
      if (sid && !s) return rpcError(res, 404, -32001, 'Session not found');
      if (!s) {
        if (req.method !== 'POST' || !isInitializeRequest(body)) {
          return rpcError(res, 400, -32000, 'Bad Request: no valid session id');
        }
        s = { id: null, closedStreams: 0 };
        s.transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          eventStore: new MemoryEventStore(),
          retryInterval: 50, // the client reconnects 50 ms after a server-closed stream
          onsessioninitialized: (id) => { s.id = id; sessions.set(id, s); },
          onsessionclosed: (id) => { sessions.delete(id); },
        });
        s.transport.onclose = () => { if (s.id) sessions.delete(s.id); };
        s.server = buildServer(state, s);
        await s.server.connect(s.transport);
      }
      entry.session = s.id;
      await s.transport.handleRequest(req, res, body);
      entry.session ??= s.id; // an initialize: the id exists now
    } catch (e) {
      rpcError(res, e.status || 500, -32603, e.status ? e.message : 'internal error');
    }
  });

  await new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(port, host, resolve);
  });
  const actual = httpServer.address().port;
  return {
    port: actual,
    url: `http://${host}:${actual}${path}`,
    seen,
    sessions,
    state,
    server: httpServer,
    async close() {
      for (const s of sessions.values()) await s.transport.close().catch(() => {});
      sessions.clear();
      httpServer.closeAllConnections();
      await new Promise((r) => httpServer.close(() => r()));
    },
  };
}

function parseArgs(argv) {
  const o = { port: 0, host: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') o.port = Number(argv[++i]);
    else if (argv[i] === '--host') o.host = argv[++i];
    else if (argv[i] === '--help' || argv[i] === '-h') {
      process.stdout.write('usage: node tests/fakes/mcp-server.mjs [--port N] [--host 127.0.0.1]\n');
      process.exit(0);
    } else {
      process.stderr.write(`unknown argument: ${argv[i]}\n`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) {
    process.stderr.write('--port must be 0..65535\n');
    process.exit(2);
  }
  return o;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const o = parseArgs(process.argv.slice(2));
  const s = await startMcpServer(o);
  process.stdout.write(JSON.stringify({ event: 'listening', port: s.port, url: s.url }) + '\n');
  const stop = () => { s.close().then(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
