/* fa_ctx.c - the one place that allocates: accounted malloc/free, the
 * scratch arena used by a single call, growable buffers and the last error
 * (errno + sentence). A table's memory figure is the sum kept here. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include "fa_int.h"

/* glibc keeps an 8-byte header before each chunk: count it, so that the
 * accounting matches what the process really gives up. */
#define FA_MALLOC_OVERHEAD 8
#define FA_BLOCK_SIZE 16384

#define BLOCK_DATA(b) FA_BLOCK_DATA (b)

size_t fa_usable (const void *p)
{
    return p ? malloc_usable_size ((void *)p) : 0;
}

/* Test hook: allocation failure injection (csrc/tests). */
static inline int injected_failure (fa_ctx *ctx)
{
    return ctx->fail_after > 0 && --ctx->fail_after == 0;
}

void *fa_alloc (fa_ctx *ctx, size_t n)
{
    void *p = injected_failure (ctx) ? NULL : malloc (n ? n : 1);
    if (!p) {
        fa_nomem (ctx);
        return NULL;
    }
    ctx->mem += malloc_usable_size (p) + FA_MALLOC_OVERHEAD;
    return p;
}

void *fa_realloc (fa_ctx *ctx, void *p, size_t n)
{
    size_t old = p ? malloc_usable_size (p) + FA_MALLOC_OVERHEAD : 0;
    void *q = injected_failure (ctx) ? NULL : realloc (p, n ? n : 1);
    if (!q) {
        fa_nomem (ctx);
        return NULL;
    }
    ctx->mem = ctx->mem - old + malloc_usable_size (q) + FA_MALLOC_OVERHEAD;
    return q;
}

void fa_free (fa_ctx *ctx, void *p)
{
    if (!p)
        return;
    ctx->mem -= malloc_usable_size (p) + FA_MALLOC_OVERHEAD;
    free (p);
}

int fa_fail (fa_ctx *ctx, int errnum, const char *fmt, ...)
{
    va_list ap;
    ctx->errnum = errnum;
    ctx->fault = FA_FAULT_VALUE;
    va_start (ap, fmt);
    vsnprintf (ctx->errmsg, sizeof (ctx->errmsg), fmt, ap);
    va_end (ap);
    return -1;
}

int fa_nomem (fa_ctx *ctx)
{
    return fa_fail (ctx, ENOMEM, "out of memory");
}

void fa_quote (char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0, i = 0, limit = 64;
    if (cap == 0)
        return;
    while (i < n && o + 8 < cap && i < limit) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf (dst + o, cap - o, "\\x%02x", c);
            i++;
            continue;
        }
        if (c >= 0x80) { /* copy a whole UTF-8 sequence or stop */
            size_t k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + k > n || i + k > limit || o + k + 4 >= cap)
                break;
            memcpy (dst + o, s + i, k);
            o += k;
            i += k;
            continue;
        }
        dst[o++] = (char)c;
        i++;
    }
    if (i < n && o + 4 < cap) {
        memcpy (dst + o, "...", 3);
        o += 3;
    }
    dst[o < cap ? o : cap - 1] = '\0';
}

/* ---- arena ---- */

static fa_block *block_new (fa_ctx *ctx, size_t need)
{
    size_t hdr = (sizeof (fa_block) + 7) & ~(size_t)7;
    size_t size = need > FA_BLOCK_SIZE ? need : FA_BLOCK_SIZE;
    fa_block *b = fa_alloc (ctx, hdr + size);
    if (!b)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

/* fa_arena's slow path (n already rounded): no room in the current block. */
void *fa_arena_more (fa_ctx *ctx, size_t n)
{
    fa_block *b = ctx->cur;
    /* reuse a following block left by a release, if large enough */
    if (b && b->next && b->next->size >= n) {
        b = b->next;
        b->used = 0;
    }
    else {
        fa_block *nb = block_new (ctx, n);
        if (!nb)
            return NULL;
        if (b) {
            /* free what followed b (released blocks too small) */
            fa_block *x = b->next;
            while (x) {
                fa_block *nx = x->next;
                fa_free (ctx, x);
                x = nx;
            }
            b->next = nb;
        }
        else
            ctx->head = nb;
        b = nb;
    }
    ctx->cur = b;
    b->used = n;
    return BLOCK_DATA (b);
}

void fa_arena_reset (fa_ctx *ctx)
{
    fa_block *b = ctx->head;
    if (!b)
        return;
    /* keep the first block only: a huge patch must not pin memory */
    fa_block *x = b->next;
    while (x) {
        fa_block *nx = x->next;
        fa_free (ctx, x);
        x = nx;
    }
    b->next = NULL;
    b->used = 0;
    ctx->cur = b;
}

fa_mark fa_arena_mark (fa_ctx *ctx)
{
    fa_mark m = {ctx->cur, ctx->cur ? ctx->cur->used : 0};
    return m;
}

void fa_arena_release (fa_ctx *ctx, fa_mark m)
{
    if (!m.blk) {
        if (ctx->head) {
            ctx->head->used = 0;
            ctx->cur = ctx->head;
        }
        return;
    }
    m.blk->used = m.used;
    ctx->cur = m.blk; /* later blocks are reused or freed by fa_arena */
}

void fa_begin (fa_ctx *ctx)
{
    fa_arena_reset (ctx);
    ctx->errnum = 0;
    ctx->fault = 0;
    ctx->errmsg[0] = '\0';
    ctx->ts.len = 0;
    ctx->tmp.len = 0;
}

/* ---- buffers ---- */

int fa_buf_grow (fa_ctx *ctx, fa_buf *b, size_t extra)
{
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    if (need < b->len)
        return fa_nomem (ctx);
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return fa_nomem (ctx);
        cap *= 2;
    }
    char *p = fa_realloc (ctx, b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

void fa_buf_free (fa_ctx *ctx, fa_buf *b)
{
    fa_free (ctx, b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int fa_buf_put_u64 (fa_ctx *ctx, fa_buf *b, uint64_t v)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return fa_buf_put (ctx, b, tmp + i, (size_t)(24 - i));
}

/* ---- public ---- */

fa_ctx *fa_ctx_new (void)
{
    fa_ctx *ctx = calloc (1, sizeof (*ctx));
    if (!ctx)
        return NULL;
    ctx->mem = malloc_usable_size (ctx) + FA_MALLOC_OVERHEAD;
    ctx->cloc = newlocale (LC_ALL_MASK, "C", (locale_t)0);
    return ctx;
}

void fa_ctx_destroy (fa_ctx *ctx)
{
    if (!ctx)
        return;
    fa_block *b = ctx->head;
    while (b) {
        fa_block *nx = b->next;
        free (b);
        b = nx;
    }
    free (ctx->out.p);
    free (ctx->ts.p);
    free (ctx->tmp.p);
    if (ctx->cloc)
        freelocale (ctx->cloc);
    free (ctx);
}

int fa_ctx_errnum (const fa_ctx *ctx)
{
    return ctx->errnum;
}

const char *fa_ctx_errmsg (const fa_ctx *ctx)
{
    return ctx->errmsg;
}

const char *fa_ctx_output (const fa_ctx *ctx, size_t *len)
{
    if (len)
        *len = ctx->out.len;
    return ctx->out.p ? ctx->out.p : "";
}
