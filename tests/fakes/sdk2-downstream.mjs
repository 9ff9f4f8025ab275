// A downstream MCP server built with the MCP TypeScript SDK 2.4 the way its
// serving guide says: createMcpHandler(factory) from @modelcontextprotocol/server
// (the 2026-07-28 wire natively, the 2025-era wire through its stateless
// fallback, on one endpoint) mounted on node:http with toNodeHandler from
// @modelcontextprotocol/node. The SDK itself checks SEP-2243's headers on the
// 2026-07-28 wire (a missing or disagreeing Mcp-Method / Mcp-Name is -32020),
// so whatever the broker forwards must satisfy a real v2 server.
//
// In-process: `const s = await startSdk2Downstream({ port: 0 })` gives
// { port, url (…/mcp), seen, jobs, close() }.
//
// Tools:
//   echo {text}                     answers text
//   whoami {}                       the Authorization (and X-Sentry-Token) headers it was called with, and the wire era
//   create_issue {title}            answers {number, title} (a write tool for the scope tests)
//   slow_progress {steps, interval_ms}
//                                   one notifications/progress per step (the answer streams as SSE), then {steps}
//   start_job {steps, interval_ms}  a long-running job: answers at once with {taskId}; the job runs on and is
//                                   polled and cancelled with the task methods below
// Task methods (SEP-2663's tasks/get, tasks/update, tasks/cancel; the SDK 2.4 server has no task store of its
// own, so they are registered with explicit schemas, as the SDK does for the Tasks extension names):
//   tasks/get {taskId}              {taskId, status: working|completed|cancelled, progress, createdAt, ...}
//   tasks/update {taskId, note}     records the note on the job, answers the task
//   tasks/cancel {taskId}           cancels the job, answers the task
//
// Every HTTP request is recorded in `seen`: {t, method, path, headers, body (text), status, era, tools}.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer, createMcpHandler } from '@modelcontextprotocol/server';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { z } from 'zod';

const MAX_RECORDS = 5000;
const TaskParams = z.looseObject({ taskId: z.string() });
const UpdateParams = z.looseObject({ taskId: z.string(), note: z.string().optional() });
const TaskResult = z.looseObject({ taskId: z.string(), status: z.string() });

export async function startSdk2Downstream({ port = 0, host = '127.0.0.1', path = '/mcp' } = {}) {
  const seen = [];
  const jobs = new Map();
  const text = (t) => ({ content: [{ type: 'text', text: typeof t === 'string' ? t : JSON.stringify(t) }] });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function taskView(j) {
    return {
      taskId: j.taskId, status: j.status, progress: j.progress, total: j.total, notes: j.notes,
      createdAt: j.createdAt, lastUpdatedAt: new Date(j.updated).toISOString(), ttl: 60000, pollInterval: 50,
    };
  }
  function job(taskId) {
    const j = jobs.get(taskId);
    if (!j) throw Object.assign(new Error(`unknown task ${taskId}`), { code: -32602 });
    return j;
  }

  function factory(ctx) {
    const authorization = ctx.requestInfo?.headers.get('authorization') ?? null;
    const sentry = ctx.requestInfo?.headers.get('x-sentry-token') ?? null; // a connected account's token
    const server = new McpServer({ name: 'sdk2-downstream', version: '2.4.0' }, { capabilities: { tools: {}, tasks: { cancel: {}, list: {} } } });
    server.registerTool('echo', { description: 'Echoes text', inputSchema: z.object({ text: z.string() }) },
      async ({ text: t }) => text(t));
    server.registerTool('whoami', { description: 'What the server was called with', inputSchema: z.object({}) },
      async () => text({ authorization, sentry, era: ctx.era }));
    server.registerTool('create_issue', { description: 'Creates an issue (a write)', inputSchema: z.object({ title: z.string() }) },
      async ({ title }) => text({ number: 1, title }));
    server.registerTool('slow_progress', {
      description: 'Reports progress every interval_ms',
      inputSchema: z.object({ steps: z.number().int().min(1).max(50), interval_ms: z.number().int().min(1).max(2000) }),
    }, async ({ steps, interval_ms: ms }, c) => {
      const token = c.mcpReq._meta?.progressToken;
      for (let i = 1; i <= steps; i++) {
        await sleep(ms);
        if (token !== undefined) {
          await c.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: token, progress: i, total: steps } });
        }
      }
      return text({ steps });
    });
    server.registerTool('start_job', {
      description: 'Starts a long-running job, polled with tasks/get',
      inputSchema: z.object({ steps: z.number().int().min(1).max(1000), interval_ms: z.number().int().min(1).max(2000) }),
    }, async ({ steps, interval_ms: ms }) => {
      const taskId = `task-${randomUUID()}`;
      const j = { taskId, status: 'working', progress: 0, total: steps, notes: [], createdAt: new Date().toISOString(), updated: Date.now() };
      j.timer = setInterval(() => {
        j.progress++;
        j.updated = Date.now();
        if (j.progress >= steps) { j.status = 'completed'; clearInterval(j.timer); }
      }, ms);
      jobs.set(taskId, j);
      return { ...text({ taskId }), structuredContent: { taskId } };
    });
    server.server.setRequestHandler('tasks/get', { params: TaskParams, result: TaskResult }, async ({ taskId }) => taskView(job(taskId)));
    server.server.setRequestHandler('tasks/update', { params: UpdateParams, result: TaskResult }, async ({ taskId, note }) => {
      const j = job(taskId);
      if (note) j.notes.push(note);
      j.updated = Date.now();
      return taskView(j);
    });
    server.server.setRequestHandler('tasks/cancel', { params: TaskParams, result: TaskResult }, async ({ taskId }) => {
      const j = job(taskId);
      clearInterval(j.timer);
      if (j.status === 'working') j.status = 'cancelled';
      j.updated = Date.now();
      return taskView(j);
    });
    return server;
  }

  const handle = toNodeHandler(createMcpHandler(factory));
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const e = { t: Date.now(), method: req.method, path: req.url, headers: { ...req.headers }, body: '', status: null, tools: [] };
    seen.push(e);
    if (seen.length > MAX_RECORDS) seen.shift();
    req.on('data', (d) => { if (e.body.length < 1024 * 1024) e.body += d.toString('utf8'); });
    req.on('end', () => {
      try {
        const m = JSON.parse(e.body);
        for (const x of Array.isArray(m) ? m : [m]) if (x?.method === 'tools/call') e.tools.push(x.params?.name);
        e.rpc = (Array.isArray(m) ? m : [m]).map((x) => x?.method);
      } catch { /* not JSON */ }
    });
    res.on('finish', () => { e.status = res.statusCode; e.finished = true; });
    res.on('close', () => { e.status ??= res.statusCode; e.closed = true; });
    if (req.url.split('?')[0] !== path) {
      res.writeHead(404).end();
      return;
    }
    handle(req, res);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(port, host, resolve); });
  const p = server.address().port;
  return {
    port: p,
    url: `http://${host}:${p}${path}`,
    seen,
    jobs,
    async close() {
      for (const j of jobs.values()) clearInterval(j.timer);
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
