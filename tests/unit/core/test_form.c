/* form.c: application/x-www-form-urlencoded parsing. A pair is kept, or the
 * whole form is refused: never a field dropped in silence. */
#include <jansson.h>
#include <string.h>

#include "form.h"
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

int main(void)
{
	test_fields();
	test_refused();
	TEST_DONE();
}
