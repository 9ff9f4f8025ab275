// A steady, bounded load of MCP clients for the multi-node tests: each
// virtual client registers, walks the whole flow (the test as the browser),
// then alternates tool calls and refreshes through the load balancer.
// Every failure is recorded with its step, status and time.
import { http, sleep } from './harness.mjs';
import { fullFlow, tokenRequest } from './flow.mjs';

const CALL = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: {} } });

export function startLoad({ lb, resource, clients = 6, callsPerFlow = 6, pauseMs = 5 }) {
  const stats = { ok: 0, failed: [], flows: 0, issued: [], byStep: {} };
  let running = true;
  const note = (step, ok, detail = {}) => {
    stats.byStep[step] = stats.byStep[step] || { ok: 0, failed: 0 };
    if (ok) { stats.ok++; stats.byStep[step].ok++; } else {
      stats.byStep[step].failed++;
      stats.failed.push({ t: Date.now(), step, ...detail });
    }
  };
  async function one(i) {
    let n = 0;
    while (running) {
      let t;
      try {
        t = await fullFlow(lb, { resource, login: `load${i}_${n++ % 3}` });
        stats.flows++;
        stats.issued.push({ access: t.access_token, refresh: t.refresh_token, clientId: t.clientId, at: Date.now() });
        note('flow', true);
      } catch (e) {
        note('flow', false, { err: String(e.message || e).slice(0, 200) });
        await sleep(50);
        continue;
      }
      let access = t.access_token, refresh = t.refresh_token;
      for (let k = 0; k < callsPerFlow && running; k++) {
        try {
          const r = await http(`${lb.replace(/\/$/, '')}${new URL(resource).pathname}`, {
            method: 'POST', body: CALL, timeoutMs: 10000,
            headers: { authorization: `Bearer ${access}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          });
          note('call', r.status === 200, { status: r.status, retryAfter: r.headers.get('retry-after') });
        } catch (e) {
          note('call', false, { err: String(e.message || e).slice(0, 200) });
        }
        if (k === Math.floor(callsPerFlow / 2)) {
          try {
            const r = await tokenRequest(lb, { grant_type: 'refresh_token', refresh_token: refresh, client_id: t.clientId });
            note('refresh', r.status === 200, { status: r.status, retryAfter: r.headers.get('retry-after'), body: r.status === 200 ? undefined : r.text.slice(0, 200) });
            if (r.status === 200) {
              access = r.json.access_token;
              refresh = r.json.refresh_token;
              stats.issued.push({ access, refresh, clientId: t.clientId, at: Date.now() });
            }
          } catch (e) {
            note('refresh', false, { err: String(e.message || e).slice(0, 200) });
          }
        }
        await sleep(pauseMs);
      }
    }
  }
  const workers = Array.from({ length: clients }, (_, i) => one(i));
  return {
    stats,
    stop: async () => { running = false; await Promise.all(workers); return stats; },
  };
}
