// Differential tests (DESIGN §3.5, issue 10 defect 1): the broker's tool
// policy must judge exactly what the downstream executes. The downstream is
// a real MCP TypeScript SDK server (tests/fakes/sdk-downstream.mjs:
// createMcpExpressApp, i.e. express.json() = body-parser + iconv-lite, +
// McpServer + StreamableHTTPServerTransport), a second parser that decodes
// charsets, inflates Content-Encodings, strips BOMs and takes the last of
// duplicate keys. Each trick is sent as raw bytes twice: straight to that
// downstream (what would it execute?) and through the broker with a token
// that holds only tools:read (read_thing; delete_everything needs
// tools:write). Then:
//   - nothing forbidden ever executes through the broker;
//   - where DESIGN §3.5 names the answer (415 for media type/encoding, 400
//     for the body, 403 insufficient_scope for a forbidden call, 200 for an
//     allowed one), it is that answer, and a refusal never reaches the
//     downstream;
//   - what the broker forwards is byte for byte the body it parsed, with
//     `Content-Type: application/json` and no Content-Encoding, and the
//     downstream executes exactly the allowed calls the trick carries;
//   - (last test) every tool the downstream ran is one the broker judged:
//     its tool.called audit rows, matched by the X-Request-Id it sends down.
// `bypass` marks the tricks that make the SDK server run delete_everything
// when sent to it directly (asserted, so the differential stays real).
// A table (trick, direct, broker) is printed at the end.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { startProxyEnv, rawRequest, parseChallenge } from '../lib/proxy_setup.mjs';
import { startSdkDownstream } from '../fakes/sdk-downstream.mjs';

const T = { timeout: 10000 };
const ALLOWED = new Set(['read_thing']);
const ACCEPT = ['Accept', 'application/json, text/event-stream'];

let env, sdk, reader;
const rows = [];
const forwardedLog = []; // {trick, requestId, ran}: checked against the broker's audit at the end

before(async () => {
  sdk = await startSdkDownstream({ port: 0 });
  try {
    env = await startProxyEnv({
      prefix: 'diff',
      resources: () => [{
        path: '/mcp', upstream: 'gh', downstream: sdk.url,
        scopes: { 'tools:read': ['read_thing'], 'tools:write': ['*'] },
        default_scopes: ['tools:read'],
      }],
    });
    reader = await env.token({ scope: 'tools:read' });
    assert.equal(reader.scope, 'tools:read');
  } catch (e) {
    await env?.close();
    await sdk.close();
    throw e;
  }
}, { timeout: 40000 });

after(async () => {
  if (rows.length) console.log(table(rows));
  await env?.close();
  await sdk?.close();
}, { timeout: 30000 });

// ---------------------------------------------------------------- payloads

const rpc = (name, id = 1, args) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, ...(args ? { arguments: args } : {}) } });
const ALLOW = JSON.stringify(rpc('read_thing', 1, { thing: 'x' }));
const FORBID = JSON.stringify(rpc('delete_everything', 1));
// Plain ASCII JSON to jansson (method "tools+AC8-call", no tools/call to
// judge); tools/call delete_everything once decoded as UTF-7 (or UTF-7-IMAP).
const UTF7 = '{"jsonrpc":"2.0","id":1,"method":"tools+AC8-call","params":{"name":"delete_everything"}}';
const UTF7_IMAP = '{"jsonrpc":"2.0","id":1,"method":"tools&AC8-call","params":{"name":"delete_everything"}}';

const utf16le = (s) => Buffer.from(s, 'utf16le');
const utf16be = (s) => Buffer.from(s, 'utf16le').swap16();
function utf32(s, be) {
  const cps = [...s].map((c) => c.codePointAt(0));
  const b = Buffer.alloc(cps.length * 4);
  cps.forEach((cp, i) => (be ? b.writeUInt32BE(cp, i * 4) : b.writeUInt32LE(cp, i * 4)));
  return b;
}
const BOM8 = Buffer.from([0xef, 0xbb, 0xbf]);
const BOM16LE = Buffer.from([0xff, 0xfe]);
const BOM16BE = Buffer.from([0xfe, 0xff]);
const BOM32LE = Buffer.from([0xff, 0xfe, 0x00, 0x00]);
const cat = (...parts) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, 'latin1'))));
const utf8 = (s) => Buffer.from(s, 'utf8');
/** arguments nested `depth` arrays deep inside a call (root object, params and arguments add 3 levels). */
const nested = (name, depth) => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${name}","arguments":{"deep":${'['.repeat(depth)}${']'.repeat(depth)}}}}`;

// ---------------------------------------------------------------- tricks
// ct: the Content-Type value (null: no Content-Type), or headers: the full
// list; body: the wire bytes (string: UTF-8); expect: the broker answers
// DESIGN §3.5 allows (null: only the invariants); runs: the tools the
// downstream must execute when the broker forwards; bypass: the trick makes
// the SDK downstream run delete_everything when sent to it directly (checked,
// so that the differential is a real one).
const J = 'application/json';
const tricks = [
  // Positive: the accepted spellings of application/json work, and judge.
  { name: 'application/json, allowed', ct: J, body: ALLOW, expect: [200], runs: ['read_thing'] },
  { name: 'application/json; charset=utf-8, allowed', ct: `${J}; charset=utf-8`, body: ALLOW, expect: [200], runs: ['read_thing'] },
  { name: 'Application/JSON;Charset="UTF-8", allowed', ct: 'Application/JSON;Charset="UTF-8"', body: ALLOW, expect: [200], runs: ['read_thing'] },
  { name: 'APPLICATION/JSON; CHARSET=utf-8, allowed', ct: 'APPLICATION/JSON; CHARSET=utf-8', body: ALLOW, expect: [200], runs: ['read_thing'] },
  { name: 'application/json, forbidden', ct: J, body: FORBID, expect: [403], bypass: true },
  { name: 'application/json; charset=utf-8, forbidden', ct: `${J}; charset=utf-8`, body: FORBID, expect: [403], bypass: true },
  { name: 'Application/JSON;Charset="UTF-8", forbidden', ct: 'Application/JSON;Charset="UTF-8"', body: FORBID, expect: [403], bypass: true },
  // Chunked uploads are refused (411: a Content-Length is required), the
  // forbidden call too, although the SDK downstream would run it.
  { name: 'chunked body, allowed call', headers: [['Content-Type', J], ['Transfer-Encoding', 'chunked']],
    body: ALLOW, chunked: true, expect: [411] },
  { name: 'chunked body, forbidden call', headers: [['Content-Type', J], ['Transfer-Encoding', 'chunked']],
    body: FORBID, chunked: true, expect: [411], bypass: true },

  // Charsets other than UTF-8: 415, whatever the body says.
  { name: 'charset=utf-7 (issue 10 #1)', ct: `${J}; charset=utf-7`, body: UTF7, expect: [415], bypass: true },
  { name: 'charset=UTF-7', ct: `${J}; charset=UTF-7`, body: UTF7, expect: [415], bypass: true },
  { name: 'charset="UTF-7" (quoted)', ct: `${J}; charset="UTF-7"`, body: UTF7, expect: [415], bypass: true },
  { name: 'charset=utf-7-imap', ct: `${J}; charset=utf-7-imap`, body: UTF7_IMAP, expect: [415], bypass: true },
  { name: 'charset=utf-7, body plain ASCII allowed', ct: `${J}; charset=utf-7`, body: ALLOW, expect: [415] },
  { name: 'charset=utf-16le', ct: `${J}; charset=utf-16le`, body: utf16le(FORBID), expect: [415], bypass: true },
  { name: 'charset=utf-16be', ct: `${J}; charset=utf-16be`, body: utf16be(FORBID), expect: [415], bypass: true },
  { name: 'charset=utf-16 (no BOM)', ct: `${J}; charset=utf-16`, body: utf16le(FORBID), expect: [415], bypass: true },
  { name: 'charset=utf-32', ct: `${J}; charset=utf-32`, body: cat(BOM32LE, utf32(FORBID, false)), expect: [415], bypass: true },
  { name: 'charset=utf-32be', ct: `${J}; charset=utf-32be`, body: utf32(FORBID, true), expect: [415], bypass: true },
  { name: 'charset=latin1', ct: `${J}; charset=latin1`, body: FORBID, expect: [415] },
  { name: 'charset=iso-8859-1', ct: `${J}; charset=iso-8859-1`, body: FORBID, expect: [415] },
  { name: 'charset=us-ascii', ct: `${J}; charset=us-ascii`, body: ALLOW, expect: [415] },
  { name: 'charset=utf8 (alias)', ct: `${J}; charset=utf8`, body: ALLOW, expect: [415] },
  { name: 'charset=utf-7;charset=utf-8 (Node takes the first)', ct: `${J}; charset=utf-7; charset=utf-8`, body: UTF7, expect: [415], bypass: true },
  { name: 'charset=utf-8;charset=utf-7', ct: `${J}; charset=utf-8; charset=utf-7`, body: UTF7, expect: [415] },
  { name: 'charset=utf-8;charset=utf-8', ct: `${J}; charset=utf-8; charset=utf-8`, body: ALLOW, expect: [415] },
  { name: 'no space: ;charset=utf-7', ct: `${J};charset=utf-7`, body: UTF7, expect: [415], bypass: true },
  { name: 'space before ;: " ; charset=utf-7"', ct: `${J} ; charset=utf-7`, body: UTF7, expect: [415], bypass: true },
  { name: 'charset = utf-7 (spaces round =)', ct: `${J}; charset = utf-7`, body: UTF7, expect: [400, 415], bypass: true },
  { name: 'charset=utf-7 after a tab', ct: `${J};\tcharset=utf-7`, body: UTF7, expect: [400, 415], bypass: true },
  { name: 'charset="utf\\-7" (quoted-pair)', ct: `${J}; charset="utf\\-7"`, body: UTF7, expect: [400, 415], bypass: true },
  { name: 'bare token then charset=utf-7', ct: `${J}; x; charset=utf-7`, body: UTF7, expect: [400, 415], bypass: true },
  { name: 'x="a;charset=utf-8"; charset=utf-7', ct: `${J}; x="a;charset=utf-8"; charset=utf-7`, body: UTF7, expect: [400, 415], bypass: true },
  { name: 'charset=utf-7 with a trailing ;', ct: `${J}; charset=utf-7;`, body: UTF7, expect: [400, 415] },
  { name: 'unknown parameter foo=bar', ct: `${J}; foo=bar`, body: ALLOW, expect: [415] },
  { name: 'charset=utf-8 + unknown parameter', ct: `${J}; charset=utf-8; profile="x"`, body: ALLOW, expect: [415] },
  { name: 'trailing ; (empty parameter)', ct: `${J};`, body: ALLOW, expect: null, runs: ['read_thing'] },
  { name: "charset='utf-8' (single quotes)", ct: `${J}; charset='utf-8'`, body: ALLOW, expect: [415] },
  { name: 'charset="utf-8 " (space inside quotes)', ct: `${J}; charset="utf-8 "`, body: ALLOW, expect: null, runs: ['read_thing'] },
  { name: 'two Content-Type headers (utf-7 first)', headers: [['Content-Type', `${J}; charset=utf-7`], ['Content-Type', J]],
    body: UTF7, expect: [400, 415] },
  { name: 'two Content-Type headers (utf-7 second)', headers: [['Content-Type', J], ['Content-Type', `${J}; charset=utf-7`]],
    body: UTF7, expect: [400, 415] },
  // Framing (DESIGN §3.5 second rule): a lenient downstream would read these as the Content-Type.
  { name: 'two Content-Type headers, names in different case', headers: [['Content-Type', J], ['content-type', `${J}; charset=utf-7`]],
    body: UTF7, expect: [400, 415] },
  { name: '"Content-Type\\t:" header name (tab before the colon)', headers: [['Content-Type', J], ['Content-Type\t', `${J}; charset=utf-7`]],
    body: UTF7, expect: [400], framing: true },
  { name: 'Content-Type continued by obs-fold', headers: [['Content-Type', `${J}\r\n ; charset=utf-7`]], body: UTF7, expect: [400], framing: true },

  // Byte order marks: never JSON for the broker (400), stripped by iconv-lite.
  { name: 'UTF-8 BOM', ct: J, body: cat(BOM8, FORBID), expect: [400], bypass: true },
  { name: 'UTF-8 BOM, charset=utf-8', ct: `${J}; charset=utf-8`, body: cat(BOM8, ALLOW), expect: [400] },
  { name: 'UTF-16LE BOM', ct: J, body: cat(BOM16LE, utf16le(FORBID)), expect: [400] },
  { name: 'UTF-16BE BOM', ct: J, body: cat(BOM16BE, utf16be(FORBID)), expect: [400] },
  { name: 'UTF-16LE BOM, charset=utf-16', ct: `${J}; charset=utf-16`, body: cat(BOM16LE, utf16le(FORBID)), expect: [415], bypass: true },
  { name: 'UTF-16BE BOM, charset=utf-16', ct: `${J}; charset=utf-16`, body: cat(BOM16BE, utf16be(FORBID)), expect: [415], bypass: true },
  { name: 'UTF-16LE BOM, charset=utf-8', ct: `${J}; charset=utf-8`, body: cat(BOM16LE, utf16le(FORBID)), expect: [400] },

  // Content-Encoding: body-parser inflates; only identity is accepted.
  { name: 'Content-Encoding: gzip', headers: [['Content-Type', J], ['Content-Encoding', 'gzip']], body: zlib.gzipSync(FORBID), expect: [415], bypass: true },
  { name: 'Content-Encoding: deflate', headers: [['Content-Type', J], ['Content-Encoding', 'deflate']], body: zlib.deflateSync(FORBID), expect: [415], bypass: true },
  { name: 'Content-Encoding: br', headers: [['Content-Type', J], ['Content-Encoding', 'br']], body: zlib.brotliCompressSync(FORBID), expect: [415], bypass: true },
  { name: 'Content-Encoding: GZIP', headers: [['Content-Type', J], ['Content-Encoding', 'GZIP']], body: zlib.gzipSync(FORBID), expect: [415], bypass: true },
  { name: 'Content-Encoding: identity, gzip', headers: [['Content-Type', J], ['Content-Encoding', 'identity, gzip']], body: zlib.gzipSync(FORBID), expect: [415] },
  { name: 'Content-Encoding: gzip, plain body', headers: [['Content-Type', J], ['Content-Encoding', 'gzip']], body: ALLOW, expect: [415] },
  { name: 'two Content-Encoding headers', headers: [['Content-Type', J], ['Content-Encoding', 'identity'], ['Content-Encoding', 'gzip']],
    body: zlib.gzipSync(FORBID), expect: [400, 415] },
  { name: 'empty Content-Encoding', headers: [['Content-Type', J], ['Content-Encoding', '']], body: ALLOW, expect: null, runs: ['read_thing'] },
  { name: 'Content-Encoding: x-gzip', headers: [['Content-Type', J], ['Content-Encoding', 'x-gzip']], body: zlib.gzipSync(FORBID), expect: [415] },
  { name: 'Content-Encoding: identity', headers: [['Content-Type', J], ['Content-Encoding', 'identity']], body: ALLOW, expect: [200], runs: ['read_thing'] },

  // Any method with a body is judged the same way.
  { name: 'PUT, charset=utf-7', method: 'PUT', ct: `${J}; charset=utf-7`, body: UTF7, expect: [415] },
  { name: 'DELETE with a body, gzip', method: 'DELETE', headers: [['Content-Type', J], ['Content-Encoding', 'gzip']], body: zlib.gzipSync(FORBID), expect: [415] },
  { name: 'GET with a body, forbidden call', method: 'GET', ct: J, body: FORBID, expect: [403] },
  { name: 'PATCH with a body, duplicate name', method: 'PATCH', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","name":"delete_everything"}}', expect: [400] },

  // Media types other than application/json: 415.
  { name: 'no Content-Type', ct: null, body: FORBID, expect: [415] },
  { name: 'text/plain', ct: 'text/plain', body: FORBID, expect: [415] },
  { name: 'application/json-seq', ct: 'application/json-seq', body: FORBID, expect: [415] },
  { name: 'application/jsonx', ct: 'application/jsonx', body: FORBID, expect: [415] },
  { name: '"application/json, text/plain"', ct: 'application/json, text/plain', body: FORBID, expect: [415] },
  { name: 'application/vnd.api+json', ct: 'application/vnd.api+json', body: FORBID, expect: [415] },
  { name: 'text/plain; x=application/json', ct: 'text/plain; x=application/json', body: FORBID, expect: [415] },
  { name: 'application/x-www-form-urlencoded', ct: 'application/x-www-form-urlencoded', body: FORBID, expect: [415] },

  // Duplicate keys: JSON.parse takes the last one.
  { name: 'method twice', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"delete_everything"},"method":"tools/call"}', expect: [400], bypass: true },
  { name: 'params.name twice', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","name":"delete_everything"}}', expect: [400], bypass: true },
  { name: 'params twice', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing"},"params":{"name":"delete_everything"}}', expect: [400], bypass: true },
  { name: 'name twice, second key escaped', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","n\\u0061me":"delete_everything"}}', expect: [400], bypass: true },
  { name: 'id twice', ct: J, body: '{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"read_thing"}}', expect: [400] },
  { name: 'duplicate key in arguments', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"a":1,"a":2}}}', expect: [400] },
  { name: 'duplicate key in a batch member', ct: J, body: `[${ALLOW},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_thing","name":"delete_everything"}}]`, expect: [400], bypass: true },

  // Unicode escapes decode the same on both sides: the broker must judge the decoded name.
  { name: 'escaped "tools\\u002fcall" + "delete\\u005feverything"', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"method":"tools\\u002fcall","params":{"name":"delete\\u005feverything"}}', expect: [403], bypass: true },
  { name: 'escaped first letters, upper-case hex', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"method":"\\u0074ools/call","params":{"name":"\\u0064elete\\u005Feverything"}}', expect: [403], bypass: true },
  { name: 'escaped keys \\u006dethod, p\\u0061rams, n\\u0061me', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"\\u006dethod":"tools/call","p\\u0061rams":{"n\\u0061me":"delete_everything"}}', expect: [403], bypass: true },
  { name: 'fully escaped name', ct: J,
    body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${[...'delete_everything'].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"}}`, expect: [403], bypass: true },
  { name: 'escaped allowed "read\\u005fthing"', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read\\u005fthing","arguments":{"thing":"\\u00e9\\ud83d\\ude00"}}}', expect: [200], runs: ['read_thing'] },
  { name: 'lone surrogate \\ud800 in a string', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"thing":"\\ud800"}}}', expect: [400] },

  // Invalid UTF-8: 400 (Node would decode it to U+FFFD).
  { name: 'invalid UTF-8 byte in a name', ct: J, body: cat('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"thing":"', Buffer.from([0xff]), '"}}}'), expect: [400] },
  { name: 'overlong "/" (C0 AF) in the method', ct: J, body: cat('{"jsonrpc":"2.0","id":1,"method":"tools', Buffer.from([0xc0, 0xaf]), 'call","params":{"name":"delete_everything"}}'), expect: [400] },
  { name: 'UTF-8-encoded surrogate (ED A0 80)', ct: J, body: cat('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"thing":"', Buffer.from([0xed, 0xa0, 0x80]), '"}}}'), expect: [400] },
  { name: 'valid multi-byte UTF-8 in arguments', ct: J, body: utf8(JSON.stringify(rpc('read_thing', 1, { thing: 'ü€😀' }))), expect: [200], runs: ['read_thing'] },

  // Nesting: deeper than 64 is refused.
  { name: 'nesting 60 levels, allowed', ct: J, body: nested('read_thing', 57), expect: [200], runs: ['read_thing'] },
  { name: 'nesting 64 levels (the limit), allowed', ct: J, body: nested('read_thing', 61), expect: [200], runs: ['read_thing'] },
  { name: 'nesting 65 levels, allowed call', ct: J, body: nested('read_thing', 62), expect: [400] },
  { name: 'nesting 73 levels, allowed call', ct: J, body: nested('read_thing', 70), expect: [400] },
  { name: 'nesting 203 levels, forbidden call', ct: J, body: nested('delete_everything', 200), expect: [400, 403], bypass: true },
  { name: 'nesting 3000 levels', ct: J, body: nested('read_thing', 3000), expect: [400] },

  // Numbers.
  { name: 'id 99999999999999999999999', ct: J, body: '{"jsonrpc":"2.0","id":99999999999999999999999,"method":"tools/call","params":{"name":"delete_everything"}}', expect: [400] },
  { name: 'id -99999999999999999999999', ct: J, body: '{"jsonrpc":"2.0","id":-99999999999999999999999,"method":"tools/call","params":{"name":"read_thing"}}', expect: [400] },
  { name: 'id 1e400', ct: J, body: '{"jsonrpc":"2.0","id":1e400,"method":"tools/call","params":{"name":"read_thing"}}', expect: [400] },
  { name: 'huge integer in arguments', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"n":123456789012345678901234567890}}}', expect: [400] },
  // An int64 that JavaScript rounds; the SDK refuses unsafe integer ids, so nothing runs.
  { name: 'id 9007199254740993 (int64, not a double)', ct: J, body: '{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/call","params":{"name":"read_thing"}}', expect: null },

  // NUL bytes, raw and escaped.
  { name: 'raw NUL inside the tool name', ct: J, body: cat('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing', Buffer.from([0]), '"}}'), expect: [400] },
  { name: 'raw NUL after the JSON', ct: J, body: cat(ALLOW, Buffer.from([0])), expect: [400] },
  { name: 'raw NUL before the JSON', ct: J, body: cat(Buffer.from([0]), ALLOW), expect: [400] },
  { name: 'raw NUL between batch members', ct: J, body: cat('[', ALLOW, Buffer.from([0]), ',', FORBID, ']'), expect: [400] },
  { name: 'escaped \\u0000 after an allowed name', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing\\u0000"}}', expect: [400] },
  { name: 'escaped \\u0000 in the method', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call\\u0000","params":{"name":"delete_everything"}}', expect: [400] },
  { name: 'escaped \\u0000 in an argument', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"thing":"a\\u0000b"}}}', expect: [400] },
  { name: 'escaped \\u0000 in a key', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"a\\u0000":1}}}', expect: [400] },

  // Exactly one JSON text.
  { name: 'trailing garbage', ct: J, body: `${ALLOW}garbage`, expect: [400] },
  { name: 'two JSON texts back to back', ct: J, body: `${ALLOW}${FORBID}`, expect: [400] },
  { name: 'two JSON texts, newline-delimited', ct: J, body: `${ALLOW}\n${FORBID}\n`, expect: [400] },
  { name: 'trailing ]', ct: J, body: `${FORBID}]`, expect: [400] },
  { name: 'truncated', ct: J, body: ALLOW.slice(0, -2), expect: [400] },
  { name: 'empty body with Content-Length: 0', ct: J, body: '', expect: [400] },

  // Batches.
  { name: 'batch: allowed + forbidden', ct: J, body: JSON.stringify([rpc('read_thing', 1), rpc('delete_everything', 2)]), expect: [403], bypass: true },
  { name: 'batch: forbidden + allowed', ct: J, body: JSON.stringify([rpc('delete_everything', 1), rpc('read_thing', 2)]), expect: [403], bypass: true },
  { name: 'batch: allowed + forbidden notification', ct: J,
    body: JSON.stringify([rpc('read_thing', 1), { jsonrpc: '2.0', method: 'tools/call', params: { name: 'delete_everything' } }]), expect: [403] },
  { name: 'batch: two allowed', ct: J, body: JSON.stringify([rpc('read_thing', 1), rpc('read_thing', 2)]), expect: [200], runs: ['read_thing', 'read_thing'] },
  { name: 'batch: empty', ct: J, body: '[]', expect: [400] },
  { name: 'batch: nested batch', ct: J, body: JSON.stringify([[rpc('delete_everything', 1)]]), expect: [400] },
  { name: 'batch: a scalar member', ct: J, body: `[${ALLOW},1]`, expect: [400] },
  { name: 'a scalar body', ct: J, body: '1', expect: [400] },
  { name: 'a string body', ct: J, body: '"tools/call"', expect: [400] },

  // __proto__ keys: JSON.parse keeps them as own properties.
  { name: '__proto__ beside the allowed name', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","__proto__":{"name":"delete_everything"}}}', expect: [200], runs: ['read_thing'] },
  { name: '__proto__ holding the only name', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"__proto__":{"name":"delete_everything"}}}', expect: [400] },
  { name: '__proto__ holding method and params', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"__proto__":{"method":"tools/call","params":{"name":"delete_everything"}},"method":"tools/list"}', expect: null },
  { name: '__proto__ in arguments', ct: J,
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_thing","arguments":{"__proto__":{"admin":true}}}}', expect: [200], runs: ['read_thing'] },

  // Case variants: the SDK is case-sensitive; nothing forbidden may run.
  { name: 'method Tools/Call', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"delete_everything"}}', expect: null },
  { name: 'method TOOLS/CALL', ct: J, body: '{"jsonrpc":"2.0","id":1,"method":"TOOLS/CALL","params":{"name":"delete_everything"}}', expect: null },
  { name: 'name Delete_Everything', ct: J, body: JSON.stringify(rpc('Delete_Everything')), expect: [403] },
  { name: 'name READ_THING', ct: J, body: JSON.stringify(rpc('READ_THING')), expect: [403] },
  { name: 'key "Method" beside "method"', ct: J, body: '{"jsonrpc":"2.0","id":1,"Method":"tools/list","method":"tools/call","params":{"name":"delete_everything"}}', expect: [403] },

  // Whitespace: JSON's four whitespace characters are fine, nothing else.
  { name: 'JSON whitespace around an allowed call', ct: J, body: ` \t\r\n${ALLOW} \r\n\t`, expect: [200], runs: ['read_thing'] },
  { name: 'JSON whitespace around a forbidden call', ct: J, body: `\r\n\t ${FORBID}\n`, expect: [403], bypass: true },
  { name: 'whitespace inside tokens', ct: J, body: '{ "jsonrpc" : "2.0" ,\n\t"id" : 1 , "method" :\r\n"tools/call" , "params" : { "name" : "delete_everything" } }', expect: [403], bypass: true },
  { name: 'leading form feed', ct: J, body: `\f${ALLOW}`, expect: [400] },
  { name: 'leading vertical tab', ct: J, body: `\v${ALLOW}`, expect: [400] },
  { name: 'leading NBSP (C2 A0)', ct: J, body: cat(Buffer.from([0xc2, 0xa0]), ALLOW), expect: [400] },
  { name: 'trailing U+2028', ct: J, body: utf8(`${ALLOW}\u2028`), expect: [400] },
];

// ---------------------------------------------------------------- plumbing

const record = async () => (await fetch(`${sdk.controlUrl}/record`)).json();
const resetRecord = async () => {
  const r = await fetch(`${sdk.controlUrl}/reset`, { method: 'POST' });
  assert.equal(r.status, 204);
};

function wire(trick) {
  const body = Buffer.isBuffer(trick.body) ? trick.body : utf8(trick.body);
  const headers = [ACCEPT, ...(trick.headers ?? (trick.ct === null ? [] : [['Content-Type', trick.ct]]))];
  if (trick.chunked) {
    const half = Math.floor(body.length / 2);
    const chunk = (b) => cat(b.length.toString(16), '\r\n', b, '\r\n');
    return { body, headers, bytes: cat(chunk(body.subarray(0, half)), chunk(body.subarray(half)), '0\r\n\r\n') };
  }
  if (!body.length) headers.push(['Content-Length', '0']);
  return { body, headers, bytes: body };
}

/** Sends the trick to port (with the token if given); returns the answer and the downstream's record. */
async function send(port, path, trick, token) {
  const w = wire(trick);
  const headers = token ? [['Authorization', `Bearer ${token}`], ...w.headers] : w.headers;
  await resetRecord();
  const res = await rawRequest(port, { method: trick.method ?? 'POST', path, headers, body: w.bytes });
  return { res, rec: await record(), body: w.body };
}

const ran = (rec) => rec.executions.map((e) => e.tool);
const cell = (res, rec, viaBroker) => {
  const r = ran(rec);
  if (r.length) return `${res.status} ran ${r.join('+')}`;
  if (!viaBroker) return `${res.status} nothing ran`;
  return rec.requests.length ? `${res.status} forwarded, nothing ran` : `${res.status} refused`;
};

function table(list) {
  const w0 = Math.max(5, ...list.map((r) => r[0].length));
  const w1 = Math.max(6, ...list.map((r) => r[1].length));
  const line = (a, b, c) => `${a.padEnd(w0)} | ${b.padEnd(w1)} | ${c}`;
  return ['', 'Differential: the same bytes sent straight to the SDK downstream and through the broker (token: tools:read)',
    line('trick', 'direct', 'broker'), `${'-'.repeat(w0)}-+-${'-'.repeat(w1)}-+-${'-'.repeat(24)}`,
    ...list.map((r) => line(...r)), ''].join('\n');
}

for (const trick of tricks) {
  test(trick.name, T, async () => {
    const direct = await send(sdk.port, '/mcp', trick);
    const via = await send(env.broker.port, '/mcp', trick, reader.access_token);
    rows.push([trick.name, cell(direct.res, direct.rec), cell(via.res, via.rec, true)]);
    const forwarded = via.rec.requests.length > 0;
    if (forwarded) forwardedLog.push({ trick: trick.name, requestId: via.rec.requests[0].headers['x-request-id'], ran: ran(via.rec) });

    // The trick is real: straight to the SDK server, it runs the forbidden tool.
    if (trick.bypass) {
      assert.ok(ran(direct.rec).includes('delete_everything'),
        `the SDK downstream should run delete_everything when sent this directly (got ${cell(direct.res, direct.rec)})`);
    }
    // Nothing forbidden ever runs through the broker.
    const forbidden = ran(via.rec).filter((t) => !ALLOWED.has(t));
    assert.deepEqual(forbidden, [], `the downstream ran ${forbidden.join(', ')} through the broker (broker answered ${via.res.status})`);
    if (trick.expect) {
      assert.ok(trick.expect.includes(via.res.status),
        `broker answered ${via.res.status}, DESIGN §3.5 wants ${trick.expect.join(' or ')}: ${via.res.body.slice(0, 200)}`);
      // A refusal is the broker's own and never reaches the downstream.
      if (!trick.expect.includes(200)) assert.equal(forwarded, false, `the broker forwarded a request it must refuse (${cell(via.res, via.rec, true)})`);
    }
    if (!forwarded && via.res.status === 403) {
      const c = parseChallenge(via.res.headers['www-authenticate']);
      assert.equal(c.scheme, 'Bearer');
      assert.equal(c.params.error, 'insufficient_scope');
    }
    // The broker's own 400/415 are JSON-RPC errors (framing errors may be answered before routing).
    if (!forwarded && !trick.framing && (via.res.status === 400 || via.res.status === 415)) {
      assert.equal(JSON.parse(via.res.body).jsonrpc, '2.0', 'a JSON-RPC error body');
    }
    // What was forwarded is what was judged: the same bytes, as plain application/json.
    for (const q of via.rec.requests) {
      assert.ok(Buffer.from(q.body, 'base64').equals(via.body), 'the forwarded body differs from the body the broker parsed');
      const named = (n) => q.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1].toLowerCase() === n);
      assert.deepEqual(named('content-type'), ['application/json'], 'forwarded Content-Type');
      assert.ok(named('content-encoding').every((v) => v === 'identity'), `forwarded Content-Encoding ${named('content-encoding')}`);
    }
    if (forwarded) {
      assert.equal(via.rec.requests.length, 1, 'one request forwarded');
      assert.deepEqual(ran(via.rec), trick.runs ?? [], 'the downstream ran what the broker judged');
      assert.equal(via.res.status, via.rec.requests[0].status, 'the client got the downstream\'s answer');
    }
    if (trick.runs?.length && trick.expect?.includes(200)) {
      assert.equal(via.res.status, 200, 'the allowed call went through');
      const answer = JSON.parse(via.res.body);
      for (const m of Array.isArray(answer) ? answer : [answer]) assert.ok(m.result, `a tool result: ${via.res.body.slice(0, 200)}`);
    }
  });
}

// The broker audits every tools/call it let through (tool.called, keyed by
// the request id it also sends downstream as X-Request-Id): each tool the
// downstream ran must be one the broker judged, request by request.
test('every tool the downstream ran was judged by the broker (tool.called audit, per request)', { timeout: 15000 }, async () => {
  const ranSome = forwardedLog.filter((f) => f.ran.length);
  assert.ok(ranSome.length >= 5, `allowed calls went through (${ranSome.length})`);
  for (const f of forwardedLog) assert.match(f.requestId ?? '', /^[A-Za-z0-9._-]{1,64}$/, `${f.trick}: X-Request-Id downstream`);
  const ids = forwardedLog.map((f) => `'${f.requestId}'`).join(',');
  const judged = new Map();
  for (let i = 0; i < 40; i++) {
    const out = await env.psql(`SELECT request_id, detail->>'tool' FROM audit_events WHERE event = 'tool.called' AND request_id IN (${ids}) ORDER BY id`);
    judged.clear();
    for (const line of out.split('\n').filter(Boolean)) {
      const [rid, tool] = line.split('|');
      judged.set(rid, [...(judged.get(rid) ?? []), tool]);
    }
    // The audit is written in the background: wait until every forwarded
    // request has its records (a total alone could be reached early by a
    // request judged for more calls than its downstream ran).
    if (forwardedLog.every((f) => (judged.get(f.requestId) ?? []).length >= f.ran.length)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const f of forwardedLog) {
    const left = [...(judged.get(f.requestId) ?? [])];
    for (const tool of f.ran) {
      const k = left.indexOf(tool);
      assert.ok(k >= 0, `${f.trick}: the downstream ran ${tool}, the broker judged ${JSON.stringify(judged.get(f.requestId) ?? [])}`);
      left.splice(k, 1);
    }
  }
});
