// A downstream MCP server built the way the MCP TypeScript SDK tells you to
// build one: createMcpExpressApp() (Express 5 with the SDK's Host check and
// express.json(), i.e. body-parser + iconv-lite: charsets, Content-Encoding
// gzip/deflate/br, BOM stripping) + McpServer + StreamableHTTPServerTransport
// in stateless mode (no sessions, JSON answers). It is the second, real JSON
// parser of the differential tests (tests/integration/differential.test.mjs):
// whatever it executes is what a production SDK server would execute.
//
//   node tests/fakes/sdk-downstream.mjs [--port N] [--control-port N] [--host 127.0.0.1]
//   stdout (one line): {"event":"listening","port":N,"url":"http://127.0.0.1:N/mcp","control":"http://127.0.0.1:M"}
//   exits 0 on SIGTERM/SIGINT
//
// In-process: `const s = await startSdkDownstream({ port: 0 })` gives
// { port, url (…/mcp), controlUrl, record, reset(), close() }.
//
// Tools:
//   read_thing {…any arguments}          records, answers "read <thing>"
//   delete_everything {…any arguments}   records, answers "deleted everything"
// Each tool execution is recorded as {request (seq), tool, arguments}.
//
// Every HTTP request to the MCP port is recorded too: {seq, method, path,
// headers (Node's view), rawHeaders (as received: [name, value, …]), body (the exact bytes received, base64, after the
// HTTP framing), status, messages (the JSON-RPC methods and tool names the
// McpServer received)}. Bodies are kept up to 1 MiB.
//
// Control API, on its own port (never reachable through a broker resource
// that points at the MCP port):
//   GET  /record  {"requests": [...], "executions": [...]}
//   POST /reset   clears both lists (204)
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { z } from 'zod';

const MAX_RECORDED_BODY = 1024 * 1024;
const MAX_RECORDS = 10000;

function buildServer(record, entry) {
  const server = new McpServer({ name: 'sdk-downstream', version: '1.0.0' });
  const exec = (tool) => async (args) => {
    record.executions.push({ request: entry.seq, tool, arguments: args ?? null });
    return { content: [{ type: 'text', text: tool === 'read_thing' ? `read ${args?.thing ?? 'thing'}` : 'deleted everything' }] };
  };
  // Loose object schemas: any arguments are accepted and recorded as given.
  server.registerTool('read_thing', { description: 'Reads a thing (allowed by tools:read)', inputSchema: z.looseObject({}) },
    exec('read_thing'));
  server.registerTool('delete_everything', { description: 'Deletes everything (needs tools:write)', inputSchema: z.looseObject({}) },
    exec('delete_everything'));
  return server;
}

/** Records the body bytes exactly as Node's HTTP parser hands them to the
 * request stream, without consuming them (body-parser reads the stream). */
function tapBody(req, entry) {
  const push = req.push;
  let size = 0;
  req.push = function tappedPush(chunk, encoding) {
    if (chunk && size < MAX_RECORDED_BODY) {
      const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, encoding);
      entry.chunks.push(b.subarray(0, MAX_RECORDED_BODY - size));
      size += b.length;
    }
    return push.call(this, chunk, encoding);
  };
}

function view(record) {
  return {
    requests: record.requests.map(({ chunks, ...e }) => ({ ...e, body: Buffer.concat(chunks).toString('base64') })),
    executions: record.executions,
  };
}

export async function startSdkDownstream({ port = 0, controlPort = 0, host = '127.0.0.1', path = '/mcp' } = {}) {
  const record = { requests: [], executions: [] };
  let seq = 0;
  const app = createMcpExpressApp({ host });

  app.post(path, async (req, res) => {
    const entry = req.mcpEntry;
    const server = buildServer(record, entry);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => { transport.close(); server.close(); });
    try {
      await server.connect(transport);
      const deliver = transport.onmessage;
      transport.onmessage = (msg, extra) => {
        entry.messages.push({ method: msg?.method ?? null, name: msg?.params?.name ?? null });
        deliver(msg, extra);
      };
      await transport.handleRequest(req, res, req.body);
    } catch (e) {
      if (!res.headersSent) res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: String(e?.message ?? e) }, id: null });
    }
  });
  // Stateless: no standalone GET stream, no session to DELETE.
  app.all(path, (req, res) => {
    res.status(405).set('Allow', 'POST').json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed.' }, id: null });
  });
  // body-parser's refusals (415 charset/encoding, 400 parse, 413) as JSON-RPC errors.
  app.use((err, req, res, next) => { // eslint-disable-line no-unused-vars
    const status = Number.isInteger(err?.status) ? err.status : 500;
    res.status(status).json({ jsonrpc: '2.0', error: { code: -32700, message: String(err?.type ?? err?.message ?? 'error') }, id: null });
  });

  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const entry = {
      seq: ++seq, t: Date.now(), method: req.method, path: req.url, headers: { ...req.headers }, rawHeaders: [...req.rawHeaders],
      chunks: [], status: null, messages: [],
    };
    record.requests.push(entry);
    if (record.requests.length > MAX_RECORDS) record.requests.shift();
    tapBody(req, entry);
    req.mcpEntry = entry;
    res.on('finish', () => { entry.status = res.statusCode; });
    res.on('close', () => { entry.status ??= res.statusCode; });
    app(req, res);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });

  const control = http.createServer((req, res) => {
    const send = (status, obj) => {
      const body = obj === undefined ? '' : JSON.stringify(obj);
      res.writeHead(status, obj === undefined ? {} : { 'content-type': 'application/json' });
      res.end(body);
    };
    req.resume();
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/record') return send(200, view(record));
      if (req.method === 'POST' && req.url === '/reset') {
        record.requests.length = 0;
        record.executions.length = 0;
        return send(204);
      }
      return send(404, { error: 'not found' });
    });
  });

  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(port, host, resolve); });
  try {
    await new Promise((resolve, reject) => { control.once('error', reject); control.listen(controlPort, host, resolve); });
  } catch (e) {
    server.close();
    throw e;
  }
  const p = server.address().port;
  const cp = control.address().port;
  return {
    port: p,
    url: `http://${host}:${p}${path}`,
    controlUrl: `http://${host}:${cp}`,
    record,
    reset() { record.requests.length = 0; record.executions.length = 0; },
    async close() {
      for (const s of sockets) s.destroy();
      control.closeAllConnections?.();
      await Promise.all([new Promise((r) => server.close(r)), new Promise((r) => control.close(r))]);
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name, def) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : def;
  };
  const s = await startSdkDownstream({
    port: Number(arg('--port', 0)), controlPort: Number(arg('--control-port', 0)), host: arg('--host', '127.0.0.1'),
  });
  console.log(JSON.stringify({ event: 'listening', port: s.port, url: s.url, control: s.controlUrl }));
  const stop = async () => { await s.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
