/* Tool-level scope policy of a proxied resource: which scopes a JSON-RPC
 * body needs, judged over rpc.c's reading of it. Pure: no HTTP, no I/O, so
 * that every decision can be unit-tested alone. */
#ifndef MCPB_POLICY_H
#define MCPB_POLICY_H
#include <jansson.h>
#include "buf.h"
#include "config.h"

/* tools/call messages one body may carry: each forwarded call is audited,
 * and a batch with more than the audit keeps is refused rather than partly
 * unrecorded. */
#define POLICY_MAX_TOOLS 64

enum policy_rc {
	POLICY_ALLOW,        /* every tools/call is allowed (or there is none) */
	POLICY_NO_NAME,      /* a tools/call without a usable params.name */
	POLICY_TOO_MANY,     /* more than POLICY_MAX_TOOLS tools/call messages */
	POLICY_INSUFFICIENT, /* a tool no scope of the token allows: step up */
	POLICY_ERROR,        /* the token's scope list unreadable, or memory lacking */
};

/* Beside POLICY_INSUFFICIENT: the refused tool (a view into the body) and
 * the scopes to ask for, the token's plus one that allows the tool
 * (malloc'd; freed by policy_verdict_free). */
struct policy_verdict {
	const char *tool;
	char *want;
};

/* Judges every message of body (rpc_parse's result) against res's scope
 * rules for a token holding scope (space-separated). The name of each
 * tools/call judged is appended to tools (an array, for the audit) until
 * the first refusal, which stops the judging. */
enum policy_rc policy_check(const struct cfg_resource *res, const char *scope, json_t *body, json_t *tools,
			    struct policy_verdict *v) WUR;
void policy_verdict_free(struct policy_verdict *v);

#endif
