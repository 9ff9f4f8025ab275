#include "scope.h"

#include <stdlib.h>
#include <string.h>

static int scope_char_ok(unsigned char c)
{
	/* scope-token = 1*( %x21 / %x23-5B / %x5D-7E ) */
	return c == 0x21 || (c >= 0x23 && c <= 0x5B) || (c >= 0x5D && c <= 0x7E);
}

int scopes_has(const struct scopes *s, const char *scope)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], scope) == 0)
			return 1;
	return 0;
}

int scopes_add(struct scopes *s, const char *scope)
{
	if (scopes_has(s, scope))
		return 0;
	if (s->n >= LIM_SCOPES)
		return -1;
	char *d = strdup(scope);
	if (!d)
		return -1;
	s->v[s->n++] = d;
	return 0;
}

void scopes_remove(struct scopes *s, const char *scope)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], scope) == 0) {
			free(s->v[i]);
			memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(s->v[0]));
			s->n--;
			return;
		}
}

int scopes_parse(const char *str, struct scopes *out)
{
	memset(out, 0, sizeof(*out));
	if (!str)
		return 0;
	if (strlen(str) > LIM_SCOPE)
		return -1;
	const char *p = str;
	while (*p) {
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		const char *e = p;
		while (*e && *e != ' ')
			e++;
		size_t n = (size_t)(e - p);
		char tok[129];
		if (n > 128)
			goto bad;
		for (size_t i = 0; i < n; i++)
			if (!scope_char_ok((unsigned char)p[i]))
				goto bad;
		memcpy(tok, p, n);
		tok[n] = '\0';
		if (scopes_add(out, tok) < 0)
			goto bad;
		p = e;
	}
	return 0;
bad:
	scopes_free(out);
	return -1;
}

int scopes_subset(const struct scopes *sub, const struct scopes *super)
{
	for (size_t i = 0; i < sub->n; i++)
		if (!scopes_has(super, sub->v[i]))
			return 0;
	return 1;
}

char *scopes_join(const struct scopes *s)
{
	struct buf b;
	buf_init(&b, LIM_SCOPE * 2);
	for (size_t i = 0; i < s->n; i++)
		if ((i && buf_add(&b, " ", 1) < 0) || buf_adds(&b, s->v[i]) < 0)
			return NULL;
	return buf_take(&b, NULL);
}

void scopes_free(struct scopes *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i]);
		s->v[i] = NULL;
	}
	s->n = 0;
}
