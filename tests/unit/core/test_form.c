/* form.c: application/x-www-form-urlencoded parsing. A pair is kept, or the
 * whole form is refused: never a field dropped in silence. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "form.h"
#include "lim.h"
#include "test.h"

static json_t *parse(const char *s, int *dup)
{
	return form_parse(s, strlen(s), dup);
}

static void test_fields(void)
{
	int dup = -1;
	json_t *f = parse("grant_type=authorization_code&code=a%2Bb+c&&empty=&noeq", &dup);
	CHECK(f && dup == 0);
	CHECK_STR(form_get(f, "grant_type"), "authorization_code");
	CHECK_STR(form_get(f, "code"), "a+b c");
	CHECK_STR(form_get(f, "empty"), "");
	CHECK_STR(form_get(f, "noeq"), "");
	CHECK(json_object_size(f) == 4);
	form_free(&f);
	CHECK(f == NULL);

	f = parse("a=1&a=2", &dup);
	CHECK(f && dup == 1);
	CHECK_STR(form_get(f, "a"), "1");
	form_free(&f);
}

static void test_refused(void)
{
	int dup = 0;
	CHECK(parse("a=%00", &dup) == NULL);
	CHECK(parse("a=%FF", &dup) == NULL);
	CHECK(parse("=1", &dup) == NULL);
	/* A name that is not UTF-8 refuses the form (it used to be dropped, so
	 * "client_id=x&\xff=y" read as {client_id: x}; found by fuzz_form). */
	CHECK(parse("a=1&%FF=2", &dup) == NULL);
	CHECK(parse("error_description\xffThe+code", &dup) == NULL);
	CHECK(parse("client_id=x&b%C3=y", &dup) == NULL);
	CHECK(parse("%ED%A0%80=1", &dup) == NULL); /* an encoded surrogate */
}

/* The limits: LIM_FORM_FIELDS pairs, LIM_FORM_VALUE bytes per decoded value,
 * 128 bytes per name; one more refuses the form. */
static void test_limits(void)
{
	int dup = 0;
	struct buf b;
	buf_init(&b, 64 * 1024);
	int built = 1;
	for (int i = 0; i < LIM_FORM_FIELDS && built; i++)
		built = buf_printf(&b, "%sf%d=v", i ? "&" : "", i) == 0;
	CHECK(built); /* an allocation failure (torture) ends the test here */
	if (!built)
		return;
	json_t *f = form_parse(b.ptr, b.len, &dup);
	CHECK(f && json_object_size(f) == LIM_FORM_FIELDS);
	form_free(&f);
	if (buf_adds(&b, "&one=more") == 0) {
		f = form_parse(b.ptr, b.len, &dup);
		CHECK(f == NULL);
		form_free(&f);
	}
	buf_free(&b);

	static char v[3 * LIM_FORM_VALUE + 8];
	memcpy(v, "a=", 2);
	memset(v + 2, 'x', LIM_FORM_VALUE);
	v[2 + LIM_FORM_VALUE] = '\0';
	f = parse(v, &dup);
	CHECK(f && strlen(form_get(f, "a")) == LIM_FORM_VALUE);
	form_free(&f);
	v[2 + LIM_FORM_VALUE] = 'x';
	v[3 + LIM_FORM_VALUE] = '\0';
	CHECK(parse(v, &dup) == NULL);
	/* Counted after decoding: LIM_FORM_VALUE escaped bytes fit. */
	for (size_t i = 0; i < LIM_FORM_VALUE; i++)
		memcpy(v + 2 + 3 * i, "%41", 3);
	v[2 + 3 * LIM_FORM_VALUE] = '\0';
	f = parse(v, &dup);
	CHECK(f && strlen(form_get(f, "a")) == LIM_FORM_VALUE && form_get(f, "a")[0] == 'A');
	form_free(&f);

	char name[140];
	memset(name, 'n', 128);
	memcpy(name + 128, "=1", 3);
	f = parse(name, &dup);
	CHECK(f && json_object_size(f) == 1);
	form_free(&f);
	memset(name, 'n', 129);
	memcpy(name + 129, "=1", 3);
	CHECK(parse(name, &dup) == NULL);
	/* Bytes after len are not read. */
	f = form_parse("a=1&b=2", 3, &dup);
	CHECK(f && json_object_size(f) == 1);
	CHECK_STR(form_get(f, "a"), "1");
	form_free(&f);
	form_free(&f); /* NULL is fine */
}

static void test_add(void)
{
	struct buf b;
	buf_init(&b, 256);
	CHECK(form_add(&b, "code", "a b&c=d+e/%") == 0);
	CHECK(form_add(&b, "state", "") == 0);
	CHECK(form_add(&b, "iss", "https://x.example") == 0);
	CHECK_STR(b.ptr, "code=a%20b%26c%3Dd%2Be%2F%25&state=&iss=https%3A%2F%2Fx.example");
	int dup = 0;
	json_t *f = form_parse(b.ptr, b.len, &dup);
	CHECK_STR(form_get(f, "code"), "a b&c=d+e/%");
	CHECK_STR(form_get(f, "state"), "");
	form_free(&f);
	buf_free(&b);
	buf_init(&b, 8);
	CHECK(form_add(&b, "name", "value") < 0); /* over the cap */
	buf_free(&b);
}

int main(void)
{
	test_fields();
	test_refused();
	test_limits();
	test_add();
	TEST_DONE();
}
