/* A capped, owned byte buffer, always NUL-terminated after buf_add*. */
#ifndef MCPB_BUF_H
#define MCPB_BUF_H
#include <stddef.h>

#define WUR __attribute__((warn_unused_result))

struct buf {
	char *ptr;
	size_t len, cap, max;
	int secret; /* wipe on free and on regrow */
};

/* A non-owning view. */
struct str {
	const char *p;
	size_t len;
};

void buf_init(struct buf *b, size_t max);
/* Appends n bytes; on overflow past max or allocation failure the buffer is
 * freed and -1 returned. */
int buf_add(struct buf *b, const void *data, size_t n) WUR;
int buf_adds(struct buf *b, const char *s) WUR;
int buf_printf(struct buf *b, const char *fmt, ...) WUR __attribute__((format(printf, 2, 3)));
/* Moves the contents out (caller frees); the buffer is left empty. */
char *buf_take(struct buf *b, size_t *len);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);

#endif
