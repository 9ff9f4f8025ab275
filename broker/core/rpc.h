/* The JSON-RPC view of a proxied MCP request body: pure functions (no HTTP,
 * no I/O) so the policy's reading of outside bytes can be tested and fuzzed
 * alone. What the policy judges is what the downstream gets: rpc_parse
 * accepts only input every JSON parser reads alike. */
#ifndef MCPB_RPC_H
#define MCPB_RPC_H
#include <jansson.h>
#include <stddef.h>

#define RPC_MAX_DEPTH 64             /* arrays and objects nested in one message */
#define RPC_MAX_TOOL 256             /* bytes of a tools/call params.name */
#define RPC_HEADER_MISMATCH (-32020) /* SEP-2243 HeaderMismatch: headers disagree with the body */

/* Parses body[0..len) as exactly one JSON-RPC message (an object) or a
 * non-empty batch (an array of objects): strict UTF-8 JSON without a BOM,
 * duplicate keys, NUL in strings, numbers jansson cannot hold exactly, or
 * nesting deeper than RPC_MAX_DEPTH. 0 and *out (new reference), or -1. */
int rpc_parse(const char *body, size_t len, json_t **out) __attribute__((warn_unused_result));

/* Messages of a parsed body: a batch's size, or 1. */
size_t rpc_count(json_t *body);
json_t *rpc_message(json_t *body, size_t i);

/* For one message: 1 and *tool when it is a tools/call with a string
 * params.name of 1..RPC_MAX_TOOL bytes (a view into msg); 0 when it is not
 * a tools/call; -1 when it is one without a usable name. */
int rpc_tool_call(json_t *msg, const char **tool);

/* SEP-2243 (and SEP-2663's tasks binding): the params field the Mcp-Name
 * header mirrors for method ("name", "uri" or "taskId"), or NULL when the
 * method has none. resources/subscribe and resources/unsubscribe mirror uri
 * (clients of other SDKs send it); the SEP requires it only of the table's
 * tools/call, prompts/get, resources/read and tasks/get|update|cancel. */
const char *rpc_name_field(const char *method);

/* 1 when an MCP-Protocol-Version header value (NULL: none) names the
 * 2026-07-28 revision or a later one, where SEP-2243's headers are required. */
int rpc_wire_requires_headers(const char *protocol_version);

/* The Mcp-Method / Mcp-Name request headers (either may be NULL) agree with
 * every message of the body, a batch's included, by SEP-2243: Mcp-Method
 * equals the method; Mcp-Name, without the SP/HTAB around it and decoded
 * when it is an "=?base64?...?=" value (of at most LIM_MCP_NAME bytes),
 * equals the string params field rpc_name_field names for the method (a
 * message without one disagrees with any Mcp-Name). required: the request is
 * on a wire that requires the headers, so a request (a message with an id)
 * without Mcp-Method, or without Mcp-Name where its body has the mirrored
 * field (resources/subscribe and unsubscribe excepted: the SEP does not
 * require it of them), disagrees too; notifications are exempt. 1 yes (or no headers on a
 * wire that does not require them), 0 no and *bad is the first message that
 * disagrees (a view into body). */
int rpc_headers_agree(json_t *body, const char *mcp_method, const char *mcp_name, int required, json_t **bad);

/* 1 when msg is a request that does work on the user's behalf, and so
 * needs every upstream account the resource injects: any request (a
 * message with an id and a method) but initialize, ping, logging/setLevel,
 * server/discover, subscriptions/listen, resources/unsubscribe and the
 * listings (a method ending in "/list"). Notifications, responses and
 * anything else: 0. */
int rpc_acts(json_t *msg);

#endif
