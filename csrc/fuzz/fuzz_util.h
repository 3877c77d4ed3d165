/* fuzz_util.h — helpers shared by the fuzz targets (harness only).
 *
 * The library never aborts on bad input; the harness does, when one of the
 * invariants it checks is broken. CHECK prints what failed (with the file
 * and line, so the report names the invariant) and calls abort(), which
 * libFuzzer (or driver.c) turns into a saved crash input.
 */
#ifndef FA_FUZZ_UTIL_H
#define FA_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa.h"

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf (stderr, "fuzz invariant broken at %s:%d: %s\n  ",        \
                     __FILE__, __LINE__, #cond);                              \
            fprintf (stderr, __VA_ARGS__);                                    \
            fprintf (stderr, "\n");                                           \
            abort ();                                                         \
        }                                                                     \
    } while (0)

/* An owned copy of some bytes (the ctx output is only valid until the
 * next call, so every result the harness compares later is copied). The
 * copy has exactly n bytes and no terminator, so that ASan catches a
 * library read past the end of a text the harness passes back in. */
typedef struct {
    char *p;
    size_t n;
} fz_buf;

static inline fz_buf fz_copy (const char *p, size_t n)
{
    fz_buf b;
    b.p = malloc (n ? n : 1);
    CHECK (b.p != NULL, "out of memory in the harness");
    if (n)
        memcpy (b.p, p, n);
    b.n = n;
    return b;
}

static inline fz_buf fz_output (fa_ctx *ctx)
{
    size_t n = 0;
    const char *p = fa_ctx_output (ctx, &n);
    CHECK (n == 0 || p != NULL, "fa_ctx_output returned NULL with length %zu", n);
    return fz_copy (p, n);
}

static inline void fz_free (fz_buf *b)
{
    free (b->p);
    b->p = NULL;
    b->n = 0;
}

static inline int fz_eq (const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp (a, b, an) == 0);
}

/* A failed call must leave an errno value and a sentence in its ctx. */
static inline void fz_check_error (fa_ctx *ctx, const char *what)
{
    const char *msg = fa_ctx_errmsg (ctx);
    CHECK (fa_ctx_errnum (ctx) > 0, "%s failed with errnum %d", what,
           fa_ctx_errnum (ctx));
    CHECK (msg != NULL && msg[0] != '\0', "%s failed without a message", what);
}

/* Print at most 200 bytes of a buffer, escaped, for invariant reports. */
static inline void fz_dump (const char *label, const char *p, size_t n)
{
    fprintf (stderr, "  %s (%zu bytes): ", label, n);
    for (size_t i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            fputc (c, stderr);
        else
            fprintf (stderr, "\\x%02x", c);
    }
    fprintf (stderr, n > 200 ? "...\n" : "\n");
}

/* ---- key-order-free comparison ------------------------------------------
 * A merge patch cannot move keys, so merge(old, diff(old, new)) equals new
 * as a JSON value but may list keys in another order. fz_sorted rewrites a
 * canonical (compact, valid) text with every object's members sorted by
 * key bytes; two canonical texts are the same value iff their sorted forms
 * are equal bytes (canonical text is unique per value up to key order). */

typedef struct {
    char *p;
    size_t n, cap;
} fz_out;

static inline void fz_put (fz_out *o, const char *p, size_t n)
{
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        while (cap < o->n + n + 1)
            cap *= 2;
        o->p = realloc (o->p, cap);
        CHECK (o->p != NULL, "out of memory in the harness");
        o->cap = cap;
    }
    if (n)
        memcpy (o->p + o->n, p, n);
    o->n += n;
}

typedef struct {
    const char *key;
    size_t klen;
    fz_out val;
} fz_member;

static inline int fz_member_cmp (const void *a, const void *b)
{
    const fz_member *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp (x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Span of the string starting at *p (on the opening quote). */
static inline size_t fz_string_span (const char *p, const char *end)
{
    const char *q = p + 1;
    while (q < end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    CHECK (q < end, "unterminated string in canonical text");
    return (size_t)(q + 1 - p);
}

static inline void fz_sort_value (const char **pp, const char *end, fz_out *o)
{
    const char *p = *pp;
    CHECK (p < end, "canonical text ends early");
    if (*p == '{' || *p == '[') {
        int obj = *p == '{';
        fz_member *m = NULL;
        size_t nm = 0, cap = 0;
        p++;
        while (p < end && *p != (obj ? '}' : ']')) {
            if (nm == cap) {
                cap = cap ? cap * 2 : 8;
                m = realloc (m, cap * sizeof *m);
                CHECK (m != NULL, "out of memory in the harness");
            }
            memset (&m[nm], 0, sizeof m[nm]);
            if (obj) {
                m[nm].key = p;
                m[nm].klen = fz_string_span (p, end);
                p += m[nm].klen;
                CHECK (p < end && *p == ':', "no ':' after a key in canonical text");
                p++;
            }
            fz_sort_value (&p, end, &m[nm].val);
            nm++;
            if (p < end && *p == ',')
                p++;
        }
        CHECK (p < end, "unterminated container in canonical text");
        p++;
        if (obj)
            qsort (m, nm, sizeof *m, fz_member_cmp);
        fz_put (o, obj ? "{" : "[", 1);
        for (size_t i = 0; i < nm; i++) {
            if (i)
                fz_put (o, ",", 1);
            if (obj) {
                fz_put (o, m[i].key, m[i].klen);
                fz_put (o, ":", 1);
            }
            fz_put (o, m[i].val.p, m[i].val.n);
            free (m[i].val.p);
        }
        fz_put (o, obj ? "}" : "]", 1);
        free (m);
    } else if (*p == '"') {
        size_t n = fz_string_span (p, end);
        fz_put (o, p, n);
        p += n;
    } else {
        const char *q = p;
        while (q < end && *q != ',' && *q != ']' && *q != '}')
            q++;
        fz_put (o, p, (size_t)(q - p));
        p = q;
    }
    *pp = p;
}

/* The key-sorted form of a canonical text (empty stays empty). */
static inline fz_buf fz_sorted (const char *p, size_t n)
{
    fz_out o = {NULL, 0, 0};
    const char *q = p, *end = p + n;
    if (n) {
        fz_sort_value (&q, end, &o);
        CHECK (q == end, "trailing bytes in canonical text");
    }
    fz_buf b = fz_copy (o.p ? o.p : "", o.n);
    free (o.p);
    return b;
}

/* Same JSON value (key order aside)? */
static inline int fz_same_value (const char *a, size_t an, const char *b, size_t bn)
{
    if (fz_eq (a, an, b, bn))
        return 1;
    fz_buf x = fz_sorted (a, an), y = fz_sorted (b, bn);
    int r = fz_eq (x.p, x.n, y.p, y.n);
    fz_free (&x);
    fz_free (&y);
    return r;
}

#endif
