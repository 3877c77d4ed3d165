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
 * next call, so every result the harness compares later is copied). */
typedef struct {
    char *p;
    size_t n;
} fz_buf;

static inline fz_buf fz_copy (const char *p, size_t n)
{
    fz_buf b;
    b.p = malloc (n + 1);
    CHECK (b.p != NULL, "out of memory in the harness");
    if (n)
        memcpy (b.p, p, n);
    b.p[n] = '\0';
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

#endif
