/* html.c: escaping and the error page builder. Every character that can end
 * a text node, an attribute value or start markup comes out as a character
 * reference; hostile titles and messages never reach the page as markup. */
#include <stdlib.h>
#include <string.h>

#include "html.h"
#include "test.h"

/* html_escape(s) into a fresh buffer of cap max; NULL when it fails. */
static char *esc(const char *s, size_t max)
{
	struct buf b;
	buf_init(&b, max);
	if (html_escape(&b, s) < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b, NULL);
}

static void check_esc(const char *in, const char *want)
{
	char *got = esc(in, 4096);
	CHECK_STR(got, want);
	free(got);
}

static void test_escape(void)
{
	check_esc("", "");
	check_esc("plain text 123", "plain text 123");
	check_esc("&", "&amp;");
	check_esc("<", "&lt;");
	check_esc(">", "&gt;");
	check_esc("\"", "&quot;");
	check_esc("'", "&#39;");
	check_esc("`", "&#96;");
	check_esc("&amp;", "&amp;amp;"); /* escaped again, never taken as already escaped */
	check_esc("<script>alert('x')</script>", "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
	check_esc("\" onmouseover=\"x", "&quot; onmouseover=&quot;x");
	check_esc("' autofocus onfocus='x", "&#39; autofocus onfocus=&#39;x");
	check_esc("caf\xc3\xa9 \xe2\x9c\x93", "caf\xc3\xa9 \xe2\x9c\x93"); /* UTF-8 passes */
	check_esc("tab\tnl\ncr\r", "tab\tnl\ncr\r");
	/* A C string ends at NUL: nothing behind it reaches the page. */
	check_esc("a\0<script>", "a");

	/* Every special character of every byte value, and nothing else. */
	char all[256];
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	char *got = esc(all, 4096);
	CHECK(got != NULL);
	for (const char *p = got; p && *p; p++)
		CHECK(*p != '<' && *p != '>' && *p != '"' && *p != '\'' && *p != '`');
	for (const char *p = got; p && (p = strchr(p, '&')); p++)
		CHECK(strncmp(p, "&amp;", 5) == 0 || strncmp(p, "&lt;", 4) == 0 || strncmp(p, "&gt;", 4) == 0 ||
		      strncmp(p, "&quot;", 6) == 0 || strncmp(p, "&#39;", 5) == 0 || strncmp(p, "&#96;", 5) == 0);
	CHECK(got && strlen(got) == 255 - 6 + 5 + 4 + 4 + 6 + 5 + 5);
	free(got);

	/* Over the buffer's cap: an error, not a cut string. */
	CHECK(esc("<<<<", 15) == NULL);
	got = esc("<<<<", 17);
	CHECK_STR(got, "&lt;&lt;&lt;&lt;");
	free(got);
}

static char *page(const char *title, const char *message, size_t max)
{
	struct buf b;
	buf_init(&b, max);
	if (html_error_build(&b, title, message) < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b, NULL);
}

static void test_error_page(void)
{
	char *p = page("Invalid request", "The request names no client.", 8192);
	CHECK_STR(p, "<!doctype html><html><head><meta charset=\"utf-8\"><title>Invalid request</title><style>"
		     "body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}</style>"
		     "</head><body><h1>Invalid request</h1><p>The request names no client.</p><p>You can close this "
		     "window and try again from your application.</p></body></html>");
	free(p);

	p = page("</title><script>x()</script>", "<img src=x onerror=alert(1)>\"'`&", 8192);
	CHECK(p && !strstr(p, "<script>") && !strstr(p, "<img") && !strstr(p, "</title><script"));
	CHECK(p && strstr(p, "<title>&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt;</title>"));
	CHECK(p && strstr(p, "<h1>&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt;</h1>"));
	CHECK(p && strstr(p, "<p>&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&#96;&amp;</p>"));
	free(p);

	p = page("T\0<b>", "M\0<i>", 8192);
	CHECK(p && strstr(p, "<title>T</title>") && strstr(p, "<p>M</p>") && !strstr(p, "<b>") && !strstr(p, "<i>"));
	free(p);

	/* A message too long for the page: refused whole (html_error_page then
	 * answers a plain 500). */
	char *big = malloc(9000);
	memset(big, '<', 8999);
	big[8999] = '\0';
	CHECK(page("Title", big, 8192) == NULL);
	free(big);
}

int main(void)
{
	test_escape();
	test_error_page();
	TEST_DONE();
}
