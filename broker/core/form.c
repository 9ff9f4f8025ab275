#include "form.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <string.h>

#include "lim.h"

static char *decode(const char *s, size_t n, size_t *outlen)
{
	char tmp[LIM_FORM_VALUE * 3 + 1];
	if (n >= sizeof(tmp))
		return NULL;
	memcpy(tmp, s, n);
	for (size_t i = 0; i < n; i++)
		if (tmp[i] == '+')
			tmp[i] = ' ';
	tmp[n] = '\0';
	int len = 0;
	char *out = curl_easy_unescape(NULL, tmp, (int)n, &len);
	OPENSSL_cleanse(tmp, n);
	if (!out)
		return NULL;
	*outlen = (size_t)len;
	return out;
}

json_t *form_parse(const char *s, size_t len, int *duplicate)
{
	json_t *o = json_object();
	size_t fields = 0;
	*duplicate = 0;
	if (!o)
		return NULL;
	const char *p = s, *end = s + len;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if (stop == p) { /* empty pair: "a=1&&b=2" */
			p = stop + 1;
			continue;
		}
		if (++fields > LIM_FORM_FIELDS)
			goto bad;
		const char *eq = memchr(p, '=', (size_t)(stop - p));
		const char *ks = p, *vs = eq ? eq + 1 : stop;
		size_t kn = (size_t)((eq ? eq : stop) - p), vn = (size_t)(stop - vs);
		size_t klen = 0, vlen = 0;
		char *k = decode(ks, kn, &klen);
		char *v = decode(vs, vn, &vlen);
		int ok = k && v && klen > 0 && klen <= 128 && vlen <= LIM_FORM_VALUE && strlen(k) == klen &&
			 strlen(v) == vlen;
		json_t *js = ok ? json_stringn(v, vlen) : NULL; /* NULL for invalid UTF-8 */
		if (js && json_object_get(o, k)) {
			*duplicate = 1;
			json_decref(js);
		} else if (js && json_object_set_new(o, k, js) < 0) {
			js = NULL; /* a name that is not UTF-8 (or no memory): released by jansson */
		}
		if (v) {
			OPENSSL_cleanse(v, vlen);
			curl_free(v);
		}
		curl_free(k);
		if (!js)
			goto bad;
		p = stop + 1;
	}
	return o;
bad:
	json_decref(o);
	return NULL;
}

int form_add(struct buf *b, const char *name, const char *value)
{
	char *k = curl_easy_escape(NULL, name, 0);
	char *v = curl_easy_escape(NULL, value, 0);
	int rc = -1;
	if (k && v && (b->len == 0 || buf_add(b, "&", 1) == 0) && buf_adds(b, k) == 0 && buf_add(b, "=", 1) == 0 &&
	    buf_adds(b, v) == 0)
		rc = 0;
	if (v)
		OPENSSL_cleanse(v, strlen(v));
	curl_free(k);
	curl_free(v);
	return rc;
}

void form_free(json_t **form)
{
	if (!form || !*form)
		return;
	const char *k;
	json_t *v;
	json_object_foreach(*form, k, v) OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
	json_decref(*form);
	*form = NULL;
}

const char *form_get(const json_t *form, const char *name)
{
	return json_string_value(json_object_get(form, name));
}
