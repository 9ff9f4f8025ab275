/* The JSON-RPC view of a proxied MCP request body: pure functions (no HTTP,
 * no I/O) so the policy's reading of outside bytes can be tested and fuzzed
 * alone. What the policy judges is what the downstream gets: rpc_parse
 * accepts only input every JSON parser reads alike. */
#ifndef MCPB_RPC_H
#define MCPB_RPC_H
#include <jansson.h>
#include <stddef.h>

#define RPC_MAX_DEPTH 64 /* arrays and objects nested in one message */
#define RPC_MAX_TOOL 256 /* bytes of a tools/call params.name */

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

/* The Mcp-Method / Mcp-Name request headers (either may be NULL) agree with
 * the body: 1 yes (or no headers), 0 no. */
int rpc_headers_agree(json_t *body, const char *mcp_method, const char *mcp_name);

#endif
