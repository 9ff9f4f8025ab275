#include "policy.h"

#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "scope.h"

/* The scopes that allow tool (each scope's list names it, or "*"). A rule
 * set larger than LIM_SCOPES is cut short: fewer scopes allow the tool. */
static void scopes_for_tool(const struct cfg_resource *res, const char *tool, struct scopes *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t s = 0; s < res->n_scopes; s++)
		for (size_t t = 0; t < res->scopes[s].n_tools; t++)
			if (strcmp(res->scopes[s].tools[t], "*") == 0 || strcmp(res->scopes[s].tools[t], tool) == 0) {
				if (scopes_add(out, res->scopes[s].scope) < 0)
					return;
				break;
			}
}

static int any_held(const struct scopes *have, const struct scopes *allow)
{
	for (size_t k = 0; k < allow->n; k++)
		if (scopes_has(have, allow->v[k]))
			return 1;
	return 0;
}

/* Step-up: what the token has plus one scope that allows the tool. NULL
 * when memory is lacking. */
static char *step_up(const struct scopes *have, const struct scopes *allow)
{
	struct scopes want = { 0 };
	int bad = 0;
	for (size_t k = 0; k < have->n && !bad; k++)
		bad = scopes_add(&want, have->v[k]) < 0;
	if (allow->n && !bad)
		bad = scopes_add(&want, allow->v[0]) < 0;
	char *joined = bad ? NULL : scopes_join(&want);
	scopes_free(&want);
	return joined;
}

/* One message: a tools/call is recorded in tools and judged. */
static enum policy_rc judge(const struct cfg_resource *res, const struct scopes *have, json_t *msg, json_t *tools,
			    struct policy_verdict *v)
{
	const char *tool = NULL;
	int call = rpc_tool_call(msg, &tool);
	if (call == 0)
		return POLICY_ALLOW;
	if (call < 0)
		return POLICY_NO_NAME;
	if (json_array_size(tools) >= POLICY_MAX_TOOLS)
		return POLICY_TOO_MANY;
	if (json_array_append_new(tools, json_string(tool)) < 0)
		return POLICY_ERROR;
	enum policy_rc rc = POLICY_ALLOW;
	struct scopes allow;
	scopes_for_tool(res, tool, &allow);
	if (!any_held(have, &allow)) {
		v->tool = tool;
		v->want = step_up(have, &allow);
		rc = v->want ? POLICY_INSUFFICIENT : POLICY_ERROR;
	}
	scopes_free(&allow);
	return rc;
}

enum policy_rc policy_check(const struct cfg_resource *res, const char *scope, json_t *body, json_t *tools,
			    struct policy_verdict *v)
{
	struct scopes have = { 0 };
	enum policy_rc rc = POLICY_ERROR;
	memset(v, 0, sizeof(*v));
	if (scopes_parse(scope, &have) < 0)
		goto out;
	rc = POLICY_ALLOW;
	size_t n = rpc_count(body);
	for (size_t i = 0; i < n && rc == POLICY_ALLOW; i++)
		rc = judge(res, &have, rpc_message(body, i), tools, v);
out:
	scopes_free(&have);
	return rc;
}

void policy_verdict_free(struct policy_verdict *v)
{
	free(v->want);
	v->want = NULL;
	v->tool = NULL;
}
