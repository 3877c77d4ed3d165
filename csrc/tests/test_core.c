/* test_core.c - C tests of every entry point of fa.h and its error
 * branches, including allocation failures (fa_int.h's fail_after hook).
 * Every input is copied into an exact-size heap buffer so that a read past
 * its end is caught under AddressSanitizer. Prints "N passed, M failed". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa.h"
#include "fa_int.h"

#include "check.h"

static const fa_limits owner = {64, 256, 1024, 1};
static const fa_limits generic = {10000, UINT32_MAX, UINT32_MAX, 0};

/* An exact-size heap copy (freed by the caller via done()). */
static char *dup_exact (const char *s, size_t n)
{
    char *p = malloc (n ? n : 1);
    memcpy (p, s, n);
    return p;
}

static int out_is (const fa_ctx *ctx, const char *want)
{
    size_t n;
    const char *o = fa_ctx_output (ctx, &n);
    if (n == strlen (want) && memcmp (o, want, n) == 0)
        return 1;
    fprintf (stderr, "  output: %.*s\n  wanted: %s\n", (int)n, o, want);
    return 0;
}

static int canon (fa_ctx *ctx, const char *s, const fa_limits *lim)
{
    char *b = dup_exact (s, strlen (s));
    int r = fa_canonical (ctx, b, strlen (s), lim);
    free (b);
    return r;
}

static int apply (fa_table *t, uint64_t id, const char *s, int flags, fa_info *info)
{
    char *b = dup_exact (s, strlen (s));
    int r = fa_table_apply (t, id, b, strlen (s), &owner, "user", 4, flags, info);
    free (b);
    return r;
}

static int get_is (fa_table *t, uint64_t id, const char *want)
{
    const char *txt;
    size_t n;
    int r = fa_table_get (t, id, &txt, &n);
    if (!want)
        return r == 0 && txt == NULL && n == 0;
    return r == 1 && n == strlen (want) && memcmp (txt, want, n) == 0;
}

static void test_ctx (void)
{
    fa_ctx_destroy (NULL);
    fa_ctx *ctx = fa_ctx_new ();
    size_t n = 99;
    CHECK (ctx != NULL);
    CHECK (fa_ctx_errnum (ctx) == 0);
    CHECK (strcmp (fa_ctx_errmsg (ctx), "") == 0);
    CHECK (fa_ctx_output (ctx, &n) != NULL && n == 0);
    fa_ctx_destroy (ctx);
}

static void test_canonical (void)
{
    fa_ctx *ctx = fa_ctx_new ();
    CHECK (canon (ctx, " {\"b\":1.50,\"a\":[-0,1e2,\"\\u00e9\\n\"],\"b\":null} ", &generic) == 0);
    CHECK (out_is (ctx, "{\"b\":null,\"a\":[0,100.0,\"\xc3\xa9\\n\"]}"));
    CHECK (canon (ctx, "1700000123.5", &generic) == 0 && out_is (ctx, "1700000123.5"));
    CHECK (canon (ctx, "1e16", &generic) == 0 && out_is (ctx, "1e+16"));
    CHECK (canon (ctx, "0.00001", &generic) == 0 && out_is (ctx, "1e-05"));
    CHECK (canon (ctx, "5e-324", &generic) == 0 && out_is (ctx, "5e-324"));
    CHECK (canon (ctx, "-0.0", &generic) == 0 && out_is (ctx, "-0.0"));
    CHECK (canon (ctx, "[{\"a\":[{\"b\":{}}]}]", &generic) == 0
           && out_is (ctx, "[{\"a\":[{\"b\":{}}]}]"));
    /* errors: -1, EINVAL, a sentence, empty output */
    static const char *bad[] = {
        "", "[", "{", "{\"a\"", "{\"a\":", "[1,]", "01", "1.", "-", "tru", "nul",
        "\"\\ud800\"", "\"\xff\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\x01\"",
        "1e400", "[1] [", "{\"a\" 1}", "\"\\q\"", "\"\\u12g4\"", "NaN", "{1:2}",
    };
    for (size_t i = 0; i < sizeof (bad) / sizeof (bad[0]); i++) {
        size_t n;
        int r = canon (ctx, bad[i], &generic);
        CHECK (r == -1 && fa_ctx_errnum (ctx) == EINVAL && fa_ctx_errmsg (ctx)[0]);
        fa_ctx_output (ctx, &n);
        CHECK (n == 0);
    }
    /* depth: 100,000 deep fails fast with the limit named */
    size_t deep = 100000;
    char *d = malloc (deep);
    memset (d, '[', deep);
    CHECK (fa_canonical (ctx, d, deep, &generic) == -1 && fa_ctx_errnum (ctx) == EINVAL);
    CHECK (strstr (fa_ctx_errmsg (ctx), "nesting depth exceeds 4096") != NULL);
    free (d);
    /* key limits in the generic parser when asked */
    fa_limits small = {3, 2, 1, 1};
    CHECK (canon (ctx, "{\"abc\":1}", &small) == -1
           && strcmp (fa_ctx_errmsg (ctx), "key exceeds 2 bytes") == 0);
    CHECK (canon (ctx, "{\"a\":1,\"b\":2}", &small) == -1
           && strcmp (fa_ctx_errmsg (ctx), "object has more than 1 keys") == 0);
    CHECK (canon (ctx, "{\"a\":1,\"a\":2}", &small) == 0 && out_is (ctx, "{\"a\":2}"));
    CHECK (canon (ctx, "{\"\":1}", &small) == -1
           && strcmp (fa_ctx_errmsg (ctx), "empty key") == 0);
    CHECK (canon (ctx, "{\"a.\":1}", &small) == -1
           && strcmp (fa_ctx_errmsg (ctx), "key contains '.': a.") == 0);
    CHECK (canon (ctx, "[[[[1]]]]", &small) == -1
           && strcmp (fa_ctx_errmsg (ctx), "nesting depth exceeds 3") == 0);
    fa_ctx_destroy (ctx);
}

static void test_merge_diff (void)
{
    fa_ctx *ctx = fa_ctx_new ();
    const char *tree = "{\"a\":\"foo\",\"b\":{\"x\":null,\"y\":{}}}";
    const char *patch = "{\"a\":{\"bb\":{\"ccc\":null}}}";
    char *tb = dup_exact (tree, strlen (tree)), *pb = dup_exact (patch, strlen (patch));
    CHECK (fa_merge (ctx, tb, strlen (tree), pb, strlen (patch), &owner) == 0);
    CHECK (out_is (ctx, ""));
    free (pb);
    patch = "{\"c\":[1,null],\"b\":{\"z\":1}}";
    pb = dup_exact (patch, strlen (patch));
    CHECK (fa_merge (ctx, tb, strlen (tree), pb, strlen (patch), &owner) == 1);
    CHECK (out_is (ctx, "{\"a\":\"foo\",\"c\":[1,null],\"b\":{\"z\":1}}"));
    CHECK (fa_merge (ctx, NULL, 0, pb, strlen (patch), &owner) == 1);
    CHECK (fa_merge (ctx, pb, 3, pb, strlen (patch), &owner) == -1
           && fa_ctx_errnum (ctx) == EINVAL);
    CHECK (fa_merge (ctx, "[]", 2, pb, strlen (patch), &owner) == -1
           && strcmp (fa_ctx_errmsg (ctx), "tree must be a JSON object") == 0);
    CHECK (fa_merge (ctx, NULL, 0, "7", 1, &owner) == -1
           && strcmp (fa_ctx_errmsg (ctx), "annotations must be a JSON object") == 0);
    free (tb);
    free (pb);
    /* diff */
    const char *o = "{\"a\":{\"b\":1,\"c\":2},\"d\":1,\"e\":[1]}";
    const char *n = "{\"a\":{\"b\":1,\"c\":3},\"e\":[1],\"f\":{\"g\":1}}";
    CHECK (fa_diff (ctx, o, strlen (o), n, strlen (n)) == 1);
    CHECK (out_is (ctx, "{\"a\":{\"c\":3},\"f\":{\"g\":1},\"d\":null}"));
    CHECK (fa_diff (ctx, o, strlen (o), o, strlen (o)) == 0 && out_is (ctx, ""));
    CHECK (fa_diff (ctx, NULL, 0, NULL, 0) == 0);
    CHECK (fa_diff (ctx, NULL, 0, n, strlen (n)) == 1 && out_is (ctx, n));
    CHECK (fa_diff (ctx, o, strlen (o), NULL, 0) == 1
           && out_is (ctx, "{\"a\":null,\"d\":null,\"e\":null}"));
    CHECK (fa_diff (ctx, "[1]", 3, o, strlen (o)) == -1 && fa_ctx_errnum (ctx) == EINVAL);
    fa_ctx_destroy (ctx);
}

static void test_table_basic (void)
{
    fa_table_destroy (NULL);
    fa_table *t = fa_table_new ();
    fa_ctx *ctx = fa_table_ctx (t);
    fa_info info;
    size_t m0 = fa_table_memory (t);
    CHECK (m0 > 0 && fa_table_count (t) == 0);
    CHECK (apply (t, 1, "{\"user\":{\"a\":1},\"sched\":{\"t\":1.5}}", 0, &info) == 1);
    CHECK (info.changed == 1 && info.old_len == 0 && info.new_len == 34);
    CHECK (info.old_ns_len == 0 && info.new_ns_len == 7);
    CHECK (apply (t, 1, "{\"sched\":{\"t\":1.50}}", 0, &info) == 0 && info.changed == 0);
    CHECK (get_is (t, 1, "{\"user\":{\"a\":1},\"sched\":{\"t\":1.5}}"));
    CHECK (fa_table_count (t) == 1 && fa_table_memory (t) > m0);
    /* replace */
    CHECK (apply (t, 1, "{\"x\":1}", FA_REPLACE, &info) == 1 && get_is (t, 1, "{\"x\":1}"));
    CHECK (info.old_len == 34 && info.old_ns_len == 7 && info.new_ns_len == 0);
    /* errors leave it unchanged */
    CHECK (apply (t, 1, "{\"x\":", 0, NULL) == -1 && fa_ctx_errnum (ctx) == EINVAL);
    CHECK (apply (t, 1, "{\"a.b\":1}", 0, NULL) == -1 && get_is (t, 1, "{\"x\":1}"));
    /* dry run + commit */
    CHECK (apply (t, 1, "{\"y\":2}", FA_DRYRUN, &info) == 1 && get_is (t, 1, "{\"x\":1}"));
    CHECK (fa_table_commit (t) == 0 && get_is (t, 1, "{\"x\":1,\"y\":2}"));
    CHECK (fa_table_commit (t) == -1 && strcmp (fa_ctx_errmsg (ctx), "nothing staged") == 0);
    CHECK (apply (t, 2, "{\"y\":2}", FA_DRYRUN, NULL) == 1);
    CHECK (fa_table_remove (t, 99) == 0);
    CHECK (fa_table_commit (t) == -1 && get_is (t, 2, NULL));
    CHECK (apply (t, 1, "{\"x\":null,\"y\":null}", FA_DRYRUN, NULL) == 1);
    CHECK (fa_table_commit (t) == 0 && get_is (t, 1, NULL) && fa_table_count (t) == 0);
    /* remove / ids */
    CHECK (apply (t, 5, "{\"a\":1}", 0, NULL) == 1 && apply (t, 6, "{\"a\":1}", 0, NULL) == 1);
    uint64_t ids[4] = {0};
    CHECK (fa_table_ids (t, ids, 4) == 2 && ids[0] + ids[1] == 11);
    CHECK (fa_table_ids (t, ids, 1) == 2);
    CHECK (fa_table_remove (t, 5) == 1 && fa_table_remove (t, 5) == 0 && get_is (t, 5, NULL));
    /* views and encode */
    CHECK (apply (t, 6, "{\"sched\":{\"t\":1},\"user\":{\"m\":\"x\\\"\"}}", 0, NULL) == 1);
    CHECK (fa_table_get_view (t, 6, "sched\0", 6, 0) == 1 && out_is (ctx, "{\"sched\":{\"t\":1}}"));
    CHECK (fa_table_get_view (t, 6, "sched\0a\0", 8, 1) == 1
           && out_is (ctx, "{\"user\":{\"m\":\"x\\\"\"}}"));
    CHECK (fa_table_get_view (t, 6, "zz", 2, 0) == 0 && out_is (ctx, ""));
    CHECK (fa_table_get_view (t, 7, "sched\0", 6, 0) == 0);
    uint64_t eids[3] = {6, 7, 6};
    uint8_t full[3] = {1, 1, 0};
    CHECK (fa_table_encode (t, eids, 3, full, "sched\0", 6, 0) == 0);
    CHECK (out_is (ctx, "[[6,{\"a\":1,\"sched\":{\"t\":1},\"user\":{\"m\":\"x\\\"\"}}],[7,null],"
                        "[6,{\"sched\":{\"t\":1}}]]"));
    CHECK (fa_table_encode (t, eids, 0, NULL, NULL, 0, 0) == 0 && out_is (ctx, "[]"));
    /* the hot path with the table's default limits */
    CHECK (fa_table_annotate (t, 8, "{\"a\":{\"b\":1}}", 13) == 1 && get_is (t, 8, "{\"a\":{\"b\":1}}"));
    CHECK (fa_table_annotate (t, 8, "{\"a\":{\"b\":1}}", 13) == 0);
    CHECK (fa_table_annotate (t, 8, "{\"a.b\":1}", 9) == -1 && fa_ctx_errnum (ctx) == EINVAL);
    fa_limits two = {2, 256, 1024, 1};
    fa_table_set_limits (t, &two);
    CHECK (fa_table_annotate (t, 8, "{\"a\":{\"b\":[1]}}", 15) == -1
           && strcmp (fa_ctx_errmsg (ctx), "nesting depth exceeds 2") == 0);
    CHECK (get_is (t, 8, "{\"a\":{\"b\":1}}"));
    fa_table_destroy (t);
}

static void test_apply_many (void)
{
    fa_table *t = fa_table_new ();
    const char *buf = "{\"a\":1}{\"a\":1}{\"b\":2}{bad}{\"c\":3}";
    uint64_t ids[5] = {1, 1, 2, 3, 4};
    size_t off[6] = {0, 7, 14, 21, 26, 33}, nch = 0, fi = 99;
    char *b = dup_exact (buf, 33);
    CHECK (fa_table_apply_many (t, ids, b, off, 3, &owner, &nch, &fi) == 0 && nch == 2);
    CHECK (fa_table_apply_many (t, ids, b, off, 5, &owner, &nch, &fi) == -1 && fi == 3);
    CHECK (nch == 0 && get_is (t, 4, NULL) && get_is (t, 2, "{\"b\":2}"));
    size_t boff[3] = {7, 0, 7};
    CHECK (fa_table_apply_many (t, ids, b, boff, 2, &owner, NULL, &fi) == -1 && fi == 0);
    CHECK (fa_table_apply_many (t, ids, b, off, 0, &owner, NULL, NULL) == 0);
    free (b);
    fa_table_destroy (t);
}

/* fa_table_apply_spans: each patch its own span (a NUL inside one is just
 * a bad byte of that patch), stops at the bad one with the count so far,
 * n = 0 does nothing. */
static void test_apply_spans (void)
{
    fa_table *t = fa_table_new ();
    const char *texts[5] = {"{\"a\":1}", "{\"a\":1}", "{\"b\":2}", "{\"c\":3}\0{}", "{\"d\":4}"};
    size_t lens[5] = {7, 7, 7, 10, 7}, nch = 0, fi = 99;
    uint64_t ids[5] = {1, 1, 2, 3, 4};
    fa_span sp[5];
    char *b[5];
    for (int i = 0; i < 5; i++) {
        b[i] = dup_exact (texts[i], lens[i]);
        sp[i].p = b[i];
        sp[i].n = lens[i];
    }
    CHECK (fa_table_apply_spans (t, ids, sp, 3, &owner, &nch, &fi) == 0 && nch == 2);
    CHECK (get_is (t, 1, "{\"a\":1}") && get_is (t, 2, "{\"b\":2}"));
    CHECK (fa_table_apply_spans (t, ids + 1, sp + 1, 4, &owner, &nch, &fi) == -1 && fi == 2);
    CHECK (nch == 0 && fa_ctx_errnum (fa_table_ctx (t)) == EINVAL && get_is (t, 3, NULL)
           && get_is (t, 4, NULL));
    sp[3].n = 7; /* without its NUL and what follows: a good patch */
    CHECK (fa_table_apply_spans (t, ids + 3, sp + 3, 2, &owner, &nch, NULL) == 0 && nch == 2
           && get_is (t, 3, "{\"c\":3}") && get_is (t, 4, "{\"d\":4}"));
    CHECK (fa_table_apply_spans (t, ids, sp, 0, &owner, NULL, NULL) == 0);
    for (int i = 0; i < 5; i++)
        free (b[i]);
    fa_table_destroy (t);
}

static void test_batches (void)
{
    fa_table *t = fa_table_new ();
    fa_ctx *ctx = fa_table_ctx (t);
    uint64_t ids[8];
    apply (t, 1, "{\"sched\":{\"t\":1},\"user\":{\"m\":1}}", 0, NULL);
    apply (t, 2, "{\"sched\":{\"t\":2}}", 0, NULL);
    fa_table_track (t, 1);
    apply (t, 3, "{\"user\":{\"a\":1}}", 0, NULL);
    apply (t, 1, "{\"user\":{\"m\":2}}", 0, NULL);
    apply (t, 2, "{\"sched\":{\"t\":3}}", 0, NULL);
    apply (t, 2, "{\"sched\":{\"t\":2}}", 0, NULL);
    apply (t, 4, "{\"a\":1}", 0, NULL);
    fa_table_remove (t, 4);
    CHECK (fa_table_batch_count (t) == 4);
    CHECK (fa_table_batch_ids (t, ids, 8) == 2 && ids[0] == 3 && ids[1] == 1);
    CHECK (fa_table_batch_ids (t, ids, 1) == 2);
    CHECK (fa_table_batch_encode (t, NULL, NULL, 0, 0, 0) == 0);
    CHECK (out_is (ctx, "[[3,{\"user\":{\"a\":1}}],[1,{\"sched\":{\"t\":1},\"user\":{\"m\":2}}]]"));
    CHECK (fa_table_batch_encode (t, NULL, NULL, 0, 0, 1) == 0);
    CHECK (out_is (ctx, "[[3,{\"user\":{\"a\":1}}],[1,{\"user\":{\"m\":2}}]]"));
    uint8_t full[2] = {0, 0};
    CHECK (fa_table_batch_encode (t, full, "sched\0", 6, 0, 0) == 0 && out_is (ctx, "[]"));
    CHECK (fa_table_batch_encode (t, full, "sched\0", 6, 1, 1) == 0);
    CHECK (out_is (ctx, "[[3,{\"user\":{\"a\":1}}],[1,{\"user\":{\"m\":2}}]]"));
    fa_table_batch_clear (t);
    CHECK (fa_table_batch_count (t) == 0 && fa_table_batch_ids (t, ids, 8) == 0);
    fa_table_remove (t, 3);
    CHECK (fa_table_batch_encode (t, NULL, NULL, 0, 0, 0) == 0 && out_is (ctx, "[[3,null]]"));
    CHECK (fa_table_batch_encode (t, NULL, NULL, 0, 0, 1) == 0
           && out_is (ctx, "[[3,{\"user\":null}]]"));
    fa_table_track (t, 0);
    fa_table_batch_clear (t);
    apply (t, 9, "{\"a\":1}", 0, NULL);
    CHECK (fa_table_batch_count (t) == 0);
    fa_table_destroy (t);
}

/* The cuts of a batch encoding: where each entry is, with the entries a
 * filtered view leaves out at the start, in the middle and at the end. */
static void test_batch_cuts (void)
{
    fa_table *t = fa_table_new ();
    fa_ctx *ctx = fa_table_ctx (t);
    size_t n;
    fa_table_track (t, 1);
    apply (t, 1, "{\"user\":{\"a\":1}}", 0, NULL); /* left out of the sched view */
    apply (t, 2, "{\"sched\":{\"t\":2}}", 0, NULL);
    apply (t, 3, "{\"user\":{\"b\":1}}", 0, NULL); /* left out */
    apply (t, 4, "{\"sched\":{\"t\":4}}", 0, NULL);
    apply (t, 5, "{\"user\":{\"c\":1}}", 0, NULL); /* left out */
    uint8_t full[5] = {0, 0, 0, 0, 0};
    uint64_t c[10];
    CHECK (fa_table_batch_encode_cuts (t, full, "sched\0", 6, 0, 0, c, 5) == 0);
    const char *o = fa_ctx_output (ctx, &n);
    CHECK (out_is (ctx, "[[2,{\"sched\":{\"t\":2}}],[4,{\"sched\":{\"t\":4}}]]"));
    /* entry 1 = [2,...], entry 3 = [4,...]; 0, 2, 4 left out */
    CHECK (c[1] == 1 && c[6] == 1 + strlen ("[2,{\"sched\":{\"t\":2}}]"));
    CHECK (memcmp (o + c[3], "[4,", 3) == 0 && c[8] == n - 1);
    CHECK (c[0] == c[1] && c[5] == 1 && !(c[0] < c[5])); /* absent, nothing before it */
    CHECK (c[2] == c[3] && c[7] == c[6] && !(c[2] < c[7]));
    CHECK (c[4] == n - 1 && c[9] == c[8] && !(c[4] < c[9])); /* absent, nothing after */
    /* a run: entries 0..4 with their commas is the whole inside */
    CHECK (c[0] == 1 && c[9] == n - 1);
    /* whole trees, deltas: every entry in, back to back */
    CHECK (fa_table_batch_encode_cuts (t, NULL, NULL, 0, 0, 1, c, 5) == 0);
    o = fa_ctx_output (ctx, &n);
    for (int i = 0; i < 5; i++)
        CHECK (c[i] < c[5 + i] && o[c[i]] == '[' && o[c[5 + i] - 1] == ']'
               && (i == 0 ? c[i] == 1 : c[i] == c[5 + i - 1] + 1));
    /* a wrong count changes nothing and says why */
    CHECK (fa_table_batch_encode_cuts (t, NULL, NULL, 0, 0, 0, c, 4) == -1
           && fa_ctx_errnum (ctx) == EINVAL && strstr (fa_ctx_errmsg (ctx), "has 5") != NULL);
    fa_table_destroy (t);
}

/* Many ids, removals in between: the backward-shift deletion keeps every
 * remaining id reachable. */
static void test_hash_stress (void)
{
    fa_table *t = fa_table_new ();
    int ok = 1;
    const uint64_t n = 50000;
    for (uint64_t i = 0; i < n; i++)
        ok &= fa_table_apply (t, i * 7919, "{\"a\":1}", 7, &owner, NULL, 0, 0, NULL) == 1;
    for (uint64_t i = 0; i < n; i += 2)
        ok &= fa_table_remove (t, i * 7919) == 1;
    for (uint64_t i = 0; i < n; i++)
        ok &= get_is (t, i * 7919, i % 2 ? "{\"a\":1}" : NULL);
    CHECK (ok);
    CHECK (fa_table_count (t) == n / 2);
    fa_table_destroy (t);
}

/* Every allocation of an update fails in turn: the call returns -1 ENOMEM
 * and the table is exactly as before, or it succeeds. */
static void test_enomem_atomic (void)
{
    int ok = 1, seen = 0;
    for (long k = 1; k < 40; k++) {
        fa_table *t = fa_table_new ();
        fa_ctx *ctx = fa_table_ctx (t);
        apply (t, 1, "{\"user\":{\"a\":1}}", 0, NULL);
        fa_table_track (t, 1);
        ctx->fail_after = k;
        int r = apply (t, 1, "{\"user\":{\"b\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18]}}",
                       0, NULL);
        if (r < 0) {
            seen++;
            ok &= fa_ctx_errnum (ctx) == ENOMEM && get_is (t, 1, "{\"user\":{\"a\":1}}")
                  && fa_table_batch_count (t) == 0;
        }
        r = apply (t, 2, "{\"x\":1}", 0, NULL);
        if (r < 0)
            ok &= get_is (t, 2, NULL) && fa_table_count (t) == 1;
        ctx->fail_after = 0;
        fa_table_destroy (t);
    }
    CHECK (ok);
    CHECK (seen > 0);
    fa_ctx *ctx = fa_ctx_new ();
    ctx->fail_after = 1;
    CHECK (canon (ctx, "[1,2,3]", &generic) == -1 && fa_ctx_errnum (ctx) == ENOMEM);
    CHECK (canon (ctx, "[1,2,3]", &generic) == 0);
    fa_ctx_destroy (ctx);
}

/* The plain path (fa_merge_plain: a plain patch whose keys are all stored,
 * in stored order, merged straight from its text) and every way out of it
 * to the full parse + merge: results, "changed", and errors that leave the
 * job as it was. */
static int apply_lim (fa_table *t, uint64_t id, const char *s, const fa_limits *lim)
{
    char *b = dup_exact (s, strlen (s));
    int r = fa_table_apply (t, id, b, strlen (s), lim, NULL, 0, 0, NULL);
    free (b);
    return r;
}

static int fails_with (fa_table *t, uint64_t id, const char *s, const fa_limits *lim,
                       const char *msg, const char *kept)
{
    fa_ctx *ctx = fa_table_ctx (t);
    int r = apply_lim (t, id, s, lim);
    int ok = r == -1 && fa_ctx_errnum (ctx) == EINVAL && strstr (fa_ctx_errmsg (ctx), msg);
    if (!ok)
        fprintf (stderr, "  %s: r %d, error '%s'\n", s, r, fa_ctx_errmsg (ctx));
    return ok && get_is (t, id, kept);
}

static void test_plain_path (void)
{
    fa_table *t = fa_table_new ();
    const char *s0 = "{\"s\":{\"a\":1,\"b\":\"x\",\"c\":true},\"t\":2}";
    CHECK (apply_lim (t, 1, s0, &owner) == 1);
    /* a subsequence of the stored keys: untouched members copied */
    CHECK (apply_lim (t, 1, "{\"s\":{\"a\":2,\"c\":false}}", &owner) == 1);
    CHECK (get_is (t, 1, "{\"s\":{\"a\":2,\"b\":\"x\",\"c\":false},\"t\":2}"));
    CHECK (apply_lim (t, 1, "{\"s\":{\"a\":2,\"c\":false}}", &owner) == 0);
    CHECK (apply_lim (t, 1, "{\"t\":3,\"s\":{\"a\":2}}", &owner) == 1); /* out of order */
    CHECK (get_is (t, 1, "{\"s\":{\"a\":2,\"b\":\"x\",\"c\":false},\"t\":3}"));
    CHECK (apply_lim (t, 1, "{\"s\":{\"a\":3,\"d\":4.5}}", &owner) == 1); /* a new key */
    CHECK (get_is (t, 1, "{\"s\":{\"a\":3,\"b\":\"x\",\"c\":false,\"d\":4.5},\"t\":3}"));
    CHECK (apply_lim (t, 1, "{\"s\":{\"b\":null}}", &owner) == 1);
    CHECK (get_is (t, 1, "{\"s\":{\"a\":3,\"c\":false,\"d\":4.5},\"t\":3}"));
    CHECK (apply_lim (t, 1, "{\"s\":{\"\\u0061\":7}}", &owner) == 1); /* escaped key */
    CHECK (get_is (t, 1, "{\"s\":{\"a\":7,\"c\":false,\"d\":4.5},\"t\":3}"));
    CHECK (apply_lim (t, 1, "{\"s\":{\"d\":4.50}}", &owner) == 0); /* not canonical: 4.5 */
    CHECK (apply_lim (t, 1, "{\"s\":{\"a\":8} }", &owner) == 1);   /* not compact */
    CHECK (get_is (t, 1, "{\"s\":{\"a\":8,\"c\":false,\"d\":4.5},\"t\":3}"));
    CHECK (apply_lim (t, 1, "{\"t\":{\"u\":1}}", &owner) == 1); /* object over a scalar */
    CHECK (get_is (t, 1, "{\"s\":{\"a\":8,\"c\":false,\"d\":4.5},\"t\":{\"u\":1}}"));
    /* a scalar over an object */
    CHECK (apply_lim (t, 1, "{\"s\":\"gone\",\"t\":{\"u\":2}}", &owner) == 1);
    CHECK (get_is (t, 1, "{\"s\":\"gone\",\"t\":{\"u\":2}}"));
    /* bad patches that start out plain: an error, the job kept */
    const char *kept = "{\"s\":\"gone\",\"t\":{\"u\":2}}";
    CHECK (fails_with (t, 1, "{\"t\":{\"u\":3}}x", &owner, "trailing data", kept));
    CHECK (fails_with (t, 1, "{\"t\":{\"u\":3},}", &owner, "", kept));
    CHECK (fails_with (t, 1, "{\"t\":{\"u\":03}}", &owner, "", kept));
    CHECK (fails_with (t, 1, "{\"t\":{\"u\":3}", &owner, "unexpected end of input", kept));
    CHECK (fails_with (t, 1, "{\"t\":{\"u\":\"a\x01\"}}", &owner, "", kept));
    /* limits hold on the plain path: keys, depth, key bytes, '.' */
    fa_limits two = owner;
    two.max_object_keys = 1;
    CHECK (fails_with (t, 1, "{\"s\":\"x\",\"t\":{\"u\":3}}", &two, "object has more than 1 keys",
                       kept));
    CHECK (fails_with (t, 1, "{\"t\":{\"u\":3}}", &two, "object has more than 1 keys", kept));
    /* deletions and new keys on the plain path; the patch's own keys count */
    CHECK (apply_lim (t, 3, "{\"s\":{\"a\":1,\"b\":2},\"z\":0.5}", &owner) == 1);
    CHECK (apply_lim (t, 3, "{\"s\":{\"a\":null,\"c\":3,\"d\":null}}", &owner) == 1);
    CHECK (get_is (t, 3, "{\"s\":{\"b\":2,\"c\":3},\"z\":0.5}"));
    CHECK (apply_lim (t, 3, "{\"s\":{\"x\":1,\"x\":2}}", &owner) == 1); /* duplicate: last wins */
    CHECK (get_is (t, 3, "{\"s\":{\"b\":2,\"c\":3,\"x\":2},\"z\":0.5}"));
    CHECK (apply_lim (t, 3, "{\"s\":{\"b\":null,\"c\":null,\"x\":null}}", &owner) == 1);
    CHECK (get_is (t, 3, "{\"z\":0.5}")); /* the emptied object is pruned */
    CHECK (apply_lim (t, 3, "{\"z\":null}", &owner) == 1);
    CHECK (get_is (t, 3, NULL));
    CHECK (apply_lim (t, 3, "{\"s\":{\"a\":1}}", &owner) == 1);
    fa_limits one = owner;
    one.max_object_keys = 1;
    CHECK (fails_with (t, 3, "{\"s\":{\"a\":null,\"b\":2}}", &one, "object has more than 1 keys",
                       "{\"s\":{\"a\":1}}"));
    CHECK (apply_lim (t, 3, "{\"s\":{\"a\":null,\"b\":2}}", &owner) == 1);
    CHECK (get_is (t, 3, "{\"s\":{\"b\":2}}"));
    fa_limits flat = owner;
    flat.max_depth = 1;
    CHECK (fails_with (t, 1, "{\"t\":{\"u\":3}}", &flat, "nesting depth exceeds 1", kept));
    CHECK (apply_lim (t, 2, "{\"a.b\":1,\"longer key than sixteen bytes\":{\"k\":1}}", &generic)
           == 1);
    CHECK (fails_with (t, 2, "{\"a.b\":2,\"longer key than sixteen bytes\":{\"k\":3}}",
                       &owner, "key contains '.'",
                       "{\"a.b\":1,\"longer key than sixteen bytes\":{\"k\":1}}"));
    fa_limits shortk = generic;
    shortk.max_key_bytes = 2;
    CHECK (fails_with (t, 2, "{\"a.b\":\"a long string value\"}", &shortk, "key exceeds 2 bytes",
                       "{\"a.b\":1,\"longer key than sixteen bytes\":{\"k\":1}}"));
    CHECK (fails_with (t, 2, "{\"longer key than sixteen bytes\":{\"k\":3}}", &shortk,
                       "key exceeds 2 bytes",
                       "{\"a.b\":1,\"longer key than sixteen bytes\":{\"k\":1}}"));
    CHECK (fails_with (t, 2, "{\"a.b\":2,\"longer key than sixteen bytes\":{\"k\":3}}",
                       &shortk, "key exceeds 2 bytes",
                       "{\"a.b\":1,\"longer key than sixteen bytes\":{\"k\":1}}"));
    CHECK (apply_lim (t, 2, "{\"a.b\":2,\"longer key than sixteen bytes\":{\"k\":2}}", &generic)
           == 1);
    CHECK (get_is (t, 2, "{\"a.b\":2,\"longer key than sixteen bytes\":{\"k\":2}}"));
    fa_table_destroy (t);
}


/* ---- request frames (fa_frame.c) ---- */

static const char *topics = "job-manager.annotate\0job-manager.memo\0";
#define NTOPICS_LEN 38

/* One frame: header + body, in an exact-size heap buffer (caller frees). */
static char *framed (const char *body, size_t n, size_t *len)
{
    char *b = malloc (n + 4);
    b[0] = (char)(n >> 24);
    b[1] = (char)(n >> 16);
    b[2] = (char)(n >> 8);
    b[3] = (char)n;
    memcpy (b + 4, body, n);
    *len = n + 4;
    return b;
}

typedef struct {
    int rc;
    uint64_t r[FA_FRAME_WORDS];
    size_t nrec, used;
} scanned;

static scanned scan_one (fa_ctx *ctx, const char *body, size_t n, const fa_frame_opts *o)
{
    scanned sc;
    size_t len;
    char *b = framed (body, n, &len);
    memset (&sc, 0, sizeof (sc));
    sc.rc = fa_frames_scan (ctx, b, len, o, topics, NTOPICS_LEN, sc.r, 1, &sc.nrec, &sc.used);
    free (b);
    return sc;
}

/* The frame fails with errnum, matchtag mt (0: none read) and a sentence
 * holding msg. */
static int frame_fails (fa_ctx *ctx, const char *body, const fa_frame_opts *o, int errnum,
                        uint64_t mt, const char *msg)
{
    scanned sc = scan_one (ctx, body, strlen (body), o);
    int ok = sc.rc == 1 && sc.nrec == 1 && (int)(sc.r[0] >> 32) == errnum
             && fa_ctx_errnum (ctx) == errnum && strstr (fa_ctx_errmsg (ctx), msg)
             && ((sc.r[0] & FA_FRAME_MATCHTAG) ? sc.r[1] == mt : mt == 0)
             && sc.used == strlen (body) + 4;
    if (!ok)
        fprintf (stderr, "  %.60s: rc %d, status %llx, mt %llu, error '%s'\n", body, sc.rc,
                 (unsigned long long)sc.r[0], (unsigned long long)sc.r[1],
                 fa_ctx_errmsg (ctx));
    return ok;
}

static char *repeat (const char *head, const char *unit, size_t k, const char *tail)
{
    size_t hn = strlen (head), un = strlen (unit), tn = strlen (tail);
    char *s = malloc (hn + un * k + tn + 1);
    memcpy (s, head, hn);
    for (size_t i = 0; i < k; i++)
        memcpy (s + hn + i * un, unit, un);
    memcpy (s + hn + un * k, tail, tn + 1);
    return s;
}

static void test_frames (void)
{
    fa_ctx *ctx = fa_ctx_new ();
    fa_frame_opts o = {owner, 1 << 20, 0, 0};
    fa_frame_opts g = {{8, 256, 1024, 1}, 1 << 20, 40, 31};
    fa_frame_opts g8 = {{8, 256, 1024, 1}, 1 << 20, 0, 0};

    /* the hot annotate: id, value span, namespaces, volatile, topic index */
    const char *hot = "{\"topic\":\"job-manager.annotate\",\"matchtag\":5,\"payload\":"
                      "{\"id\":18446744073709551615,\"annotations\":{\"a\":{\"x\":1},\"b\":null},"
                      "\"volatile\":true}}";
    scanned sc = scan_one (ctx, hot, strlen (hot), &o);
    size_t kn;
    const char *keys = fa_ctx_output (ctx, &kn);
    CHECK (sc.rc == 0 && sc.nrec == 1 && sc.used == strlen (hot) + 4);
    CHECK (sc.r[0] == (FA_FRAME_MATCHTAG | FA_FRAME_HOT | FA_FRAME_VOLATILE | 1u << 16));
    CHECK (sc.r[1] == 5 && sc.r[2] == UINT64_MAX);
    CHECK (sc.r[4] == strlen ("{\"a\":{\"x\":1},\"b\":null}")
           && memcmp (hot + sc.r[3] - 4, "{\"a\"", 4) == 0);
    CHECK (sc.r[6] == 4 && kn == 4 && memcmp (keys + sc.r[5], "a\0b\0", 4) == 0);
    CHECK (sc.r[10] == strlen ("job-manager.annotate") && sc.r[11] == strlen (hot) + 4);

    /* memo: hot, no namespaces; escaped topic: index 0 and flagged */
    const char *memo = " { \"payload\" : { \"memo\" : {\"k\":[1]} , \"id\" : 3 } , "
                       "\"topic\" : \"job-manager.\\u006demo\" , \"matchtag\" : 0 } ";
    sc = scan_one (ctx, memo, strlen (memo), &o);
    CHECK (sc.rc == 0 && sc.r[0] == (FA_FRAME_MATCHTAG | FA_FRAME_HOT | FA_FRAME_MEMO
                                     | FA_FRAME_TOPIC_ESC));
    CHECK (sc.r[2] == 3 && sc.r[6] == 0);

    /* not hot: an extra member, a non-object value, a mistyped id / volatile,
     * a namespace that is not an object, two values */
    const char *cold[] = {
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,\"annotations\":{},\"x\":[]}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,\"annotations\":[1]}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":-1,\"annotations\":{}}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1.5,\"annotations\":{}}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":18446744073709551616,"
        "\"annotations\":{}}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,\"annotations\":{},"
        "\"volatile\":1}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,\"annotations\":{\"a\":1}}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,\"annotations\":{\"a\\\"\":{}}}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,\"memo\":{},\"memo\":{}}}",
        "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"annotations\":{}}}",
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof (cold) / sizeof (cold[0]); i++) {
        sc = scan_one (ctx, cold[i], strlen (cold[i]), &o);
        ok &= sc.rc == 0 && !(sc.r[0] & FA_FRAME_HOT) && (sc.r[0] & FA_FRAME_MATCHTAG)
              && sc.r[6] == 0;
    }
    CHECK (ok);
    sc = scan_one (ctx, cold[0], strlen (cold[0]), &o);
    CHECK (memcmp (cold[0] + sc.r[7] - 4, "{\"id\"", 5) == 0
           && sc.r[8] == strlen ("{\"id\":1,\"annotations\":{},\"x\":[]}"));

    /* envelope faults: EPROTO, matchtag as far as read */
    CHECK (frame_fails (ctx, "", &o, EPROTO, 0, "unexpected end of input"));
    CHECK (frame_fails (ctx, "\xc3\x28", &o, EPROTO, 0, "UTF-8"));
    CHECK (frame_fails (ctx, "[1]", &o, EPROTO, 0, "not a JSON object"));
    CHECK (frame_fails (ctx, "x", &o, EPROTO, 0, "expected a value"));
    CHECK (frame_fails (ctx, "{not json", &o, EPROTO, 0, "expected a string key"));
    CHECK (frame_fails (ctx, "{\"matchtag\":3 \"x\":1}", &o, EPROTO, 3, "expected ','"));
    CHECK (frame_fails (ctx, "{\"matchtag\":3,\"x\" 1}", &o, EPROTO, 3, "expected ':'"));
    CHECK (frame_fails (ctx, "{\"matchtag\":3,\"x\":", &o, EPROTO, 3, "end of input"));
    CHECK (frame_fails (ctx, "{\"matchtag\":3} x", &o, EPROTO, 3, "trailing data"));
    CHECK (frame_fails (ctx, "{}", &o, EPROTO, 0, "'matchtag' is missing"));
    CHECK (frame_fails (ctx, "{\"matchtag\":-1}", &o, EPROTO, 0, "'matchtag' must be"));
    CHECK (frame_fails (ctx, "{\"matchtag\":9223372036854775808}", &o, EPROTO, 0,
                        "'matchtag' must be"));
    CHECK (frame_fails (ctx, "{\"matchtag\":1,\"matchtag\":\"2\"}", &o, EPROTO, 0,
                        "'matchtag' must be"));
    CHECK (frame_fails (ctx, "{\"matchtag\":4}", &o, EPROTO, 4, "'topic' is missing"));
    CHECK (frame_fails (ctx, "{\"topic\":5,\"matchtag\":4}", &o, EPROTO, 4, "'topic' must be"));
    CHECK (frame_fails (ctx, "{\"topic\":\"x\",\"matchtag\":4}", &o, EPROTO, 4,
                        "'payload' is missing"));
    CHECK (frame_fails (ctx, "{\"topic\":\"x\",\"matchtag\":4,\"payload\":[1]}", &o, EPROTO, 4,
                        "'payload' must be"));
    CHECK (frame_fails (ctx, "{\"matchtag\":4,\"topic\":\"\xff\"}", &o, EPROTO, 4, "UTF-8"));
    CHECK (frame_fails (ctx, "{\"matchtag\":4,\"a\":[[[[[[[[[1]]]]]]]]]}", &g, EPROTO, 4,
                        "nesting depth exceeds 8"));

    /* payload faults: EINVAL naming the field and the limit (or EPROTO for
     * grammar), with the matchtag read before them */
    char *deep = repeat ("{\"matchtag\":6,\"payload\":{\"id\":1,\"annotations\":{\"user\":",
                         "[", 100000, "");
    CHECK (frame_fails (ctx, deep, &o, EINVAL, 6, "payload field 'annotations': nesting "
                                                  "depth exceeds 64"));
    free (deep);
    deep = repeat ("{\"payload\":{\"memo\":", "{\"a\":", 100000, "");
    CHECK (frame_fails (ctx, deep, &o, EINVAL, 0, "payload field 'memo': nesting depth "
                                                  "exceeds 64"));
    free (deep);
    CHECK (frame_fails (ctx, "{\"matchtag\":7,\"payload\":{\"memo\":{\"a\":{\"b\":{\"c\":{\"d\":"
                             "{\"e\":{\"f\":{\"g\":{}}}}}}}}}}",
                        &g8, EINVAL, 7, "nesting depth exceeds 8"));
    CHECK (frame_fails (ctx, "{\"matchtag\":7,\"payload\":{\"x\":[[[[[[[[[1]]]]]]]]]}}", &g,
                        EINVAL, 7, "payload field 'x': nesting depth exceeds 8"));
    CHECK (frame_fails (ctx, "{\"matchtag\":7,\"payload\":{\"id\":[[[[[[[[[1]]]]]]]]]}}", &g,
                        EINVAL, 7, "payload field 'id'"));
    CHECK (frame_fails (ctx, "{\"matchtag\":7,\"payload\":{\"volatile\":[[[[[[[[[1]]]]]]]]]}}",
                        &g, EINVAL, 7, "payload field 'volatile'"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"annotations\":{\"u\":{\"k\":"
                             "\"caf\xe9\"}}}}",
                        &o, EINVAL, 8, "invalid UTF-8"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"annotations\":{\"u\":{\"\xc0\xaf\":1"
                             "}}}}",
                        &o, EINVAL, 8, "invalid UTF-8"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"\xed\xa0\x80\":1}}", &o, EINVAL, 8,
                        "payload: invalid UTF-8"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"annotations\":{\"u\":\"\\udc00\"}}}",
                        &o, EINVAL, 8, "lone surrogate"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"annotations\":{\"a.b\":{}}}}", &o,
                        EINVAL, 8, "key contains '.'"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"annotations\":{\"a\":1e400}}}", &o,
                        EINVAL, 8, "number out of range"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"annotations\":{\"a\":1,}}}", &o,
                        EPROTO, 8, "not valid JSON"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"a\" 1}}", &o, EPROTO, 8,
                        "expected ':'"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"a\":", &o, EPROTO, 8,
                        "end of input"));
    CHECK (frame_fails (ctx, "{\"matchtag\":8,\"payload\":{\"a\":1 2}}", &o, EPROTO, 8,
                        "expected ','"));
    char *wide = repeat ("{\"matchtag\":9,\"payload\":{\"annotations\":{\"k\":{", "\"a\":1,", 1025,
                         "\"b\":1}}}}");
    /* 1025 members, 2 distinct keys: within the limit (the payload is fine,
     * the topic is what is missing) */
    CHECK (frame_fails (ctx, wide, &o, EPROTO, 9, "'topic' is missing"));
    free (wide);
    char *keyb = repeat ("{\"matchtag\":9,\"payload\":{\"annotations\":{\"", "k", 257, "\":{}}}}");
    CHECK (frame_fails (ctx, keyb, &o, EINVAL, 9, "key exceeds 256 bytes"));
    free (keyb);

    /* a guest's oversized value: delimited, flagged, not parsed (it is not
     * even valid JSON inside) */
    const char *big = "{\"topic\":\"job-manager.memo\",\"matchtag\":2,\"payload\":{\"id\":1,"
                      "\"memo\":{\"k\":\"0123456789012345678901234567890123456789\",\"}\":x}}}";
    sc = scan_one (ctx, big, strlen (big), &g);
    CHECK (sc.rc == 0 && (sc.r[0] & FA_FRAME_TOOBIG) && (sc.r[0] & FA_FRAME_HOT)
           && sc.r[4] == strlen ("{\"k\":\"0123456789012345678901234567890123456789\",\"}\":x}"));
    /* a later payload does not clear it: the frame holds unparsed bytes */
    char twice[400];
    snprintf (twice, sizeof (twice), "%.*s,\"payload\":{\"id\":1,\"memo\":{}}}",
              (int)strlen (big) - 1, big);
    sc = scan_one (ctx, twice, strlen (twice), &g);
    CHECK (sc.rc == 0 && (sc.r[0] & FA_FRAME_TOOBIG) && !(sc.r[0] & FA_FRAME_HOT)
           && sc.r[4] == strlen ("{\"k\":\"0123456789012345678901234567890123456789\",\"}\":x}"));
    /* short enough: parsed as usual */
    CHECK (frame_fails (ctx, "{\"matchtag\":2,\"payload\":{\"memo\":{\"k\":x}}}", &g, EPROTO, 2,
                        "not valid JSON"));

    const char *big2 = "{\"topic\":\"t\",\"matchtag\":2,\"payload\":{\"id\":1,"
                       "\"annotations\":{\"k\":\"0123456789\\\"0123456789012345678901234567\"}}}";
    sc = scan_one (ctx, big2, strlen (big2), &g);
    CHECK (sc.rc == 0 && (sc.r[0] & FA_FRAME_TOOBIG)
           && sc.r[4] == strlen ("{\"k\":\"0123456789\\\"0123456789012345678901234567\"}"));
    CHECK (frame_fails (ctx, "{\"matchtag\":2,\"payload\":{\"memo\":{\"k\":\"0123456789012345678"
                             "90123456789012345678901234567890123",
                        &g, EPROTO, 2, "unterminated string"));
    /* an alloc response's type: hot with its value; any other type: not hot */
    const char *alloc = "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"type\":3,\"id\":1,"
                        "\"annotations\":{}}}";
    sc = scan_one (ctx, alloc, strlen (alloc), &o);
    CHECK (sc.rc == 0 && sc.r[0] == (FA_FRAME_MATCHTAG | FA_FRAME_HOT | FA_FRAME_TYPE
                                     | 3u << FA_FRAME_TYPE_SHIFT));
    const char *types[] = {"4", "1.0", "-1", "\"1\"", "12", "1e0"};
    ok = 1;
    for (size_t i = 0; i < sizeof (types) / sizeof (types[0]); i++) {
        char b[160];
        snprintf (b, sizeof (b), "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,"
                                 "\"type\":%s,\"annotations\":{}}}", types[i]);
        sc = scan_one (ctx, b, strlen (b), &o);
        ok &= sc.rc == 0 && !(sc.r[0] & (FA_FRAME_HOT | FA_FRAME_TYPE));
    }
    CHECK (ok);
    CHECK (frame_fails (ctx, "{\"matchtag\":1,\"payload\":{\"type\":[[[[[[[[[1]]]]]]]]]}}", &g8,
                        EINVAL, 1, "payload field 'type'"));

    /* more shapes: leading zero id, volatile false, an empty payload, deep
     * mistyped topic / payload */
    const char *shapes = "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,\"memo\":{},"
                         "\"volatile\":false}}";
    sc = scan_one (ctx, shapes, strlen (shapes), &o);
    CHECK (sc.rc == 0 && sc.r[0] == (FA_FRAME_MATCHTAG | FA_FRAME_HOT | FA_FRAME_MEMO));
    CHECK (frame_fails (ctx, "{\"matchtag\":1,\"payload\":{\"id\":01}}", &o, EPROTO, 1,
                        "leading zero"));
    CHECK (frame_fails (ctx, "{\"matchtag\":1,\"payload\":{ }}", &o, EPROTO, 1,
                        "'topic' is missing"));
    CHECK (frame_fails (ctx, "{\"matchtag\":1,\"topic\":[[[[[[[[[1]]]]]]]]]}", &g8, EPROTO, 1,
                        "malformed message: nesting depth exceeds 8"));
    CHECK (frame_fails (ctx, "{\"matchtag\":1,\"payload\":[[[[[[[[[1]]]]]]]]]}", &g8, EPROTO,
                        1, "malformed message: nesting depth exceeds 8"));

    /* the same namespaces in consecutive frames share one key list */
    {
        size_t la, lb;
        char *fa = framed (hot, strlen (hot), &la);
        const char *other = "{\"topic\":\"t\",\"matchtag\":1,\"payload\":{\"id\":1,"
                            "\"annotations\":{\"c\":{}}}}";
        char *fb = framed (other, strlen (other), &lb);
        char *three = malloc (2 * la + lb);
        memcpy (three, fa, la);
        memcpy (three + la, fa, la);
        memcpy (three + 2 * la, fb, lb);
        uint64_t r3[3 * FA_FRAME_WORDS];
        size_t n3, u3, on3;
        CHECK (fa_frames_scan (ctx, three, 2 * la + lb, &o, topics, NTOPICS_LEN, r3, 3, &n3,
                               &u3)
                   == 0
               && n3 == 3);
        const char *k3 = fa_ctx_output (ctx, &on3);
        CHECK (r3[5] == r3[FA_FRAME_WORDS + 5] && r3[6] == 4 && r3[FA_FRAME_WORDS + 6] == 4);
        CHECK (r3[2 * FA_FRAME_WORDS + 5] == 4 && r3[2 * FA_FRAME_WORDS + 6] == 2 && on3 == 6
               && memcmp (k3, "a\0b\0c\0", 6) == 0);
        free (three);
        free (fa);
        free (fb);
    }

    /* several frames, an incomplete last one, the cap, EMSGSIZE */
    size_t n1, len;
    char *f1 = framed (hot, strlen (hot), &n1);
    char *buf = malloc (3 * n1 + 6);
    memcpy (buf, f1, n1);
    memcpy (buf + n1, f1, n1);
    memcpy (buf + 2 * n1, f1, n1 - 1);
    uint64_t rec[3 * FA_FRAME_WORDS];
    size_t nrec, used;
    CHECK (fa_frames_scan (ctx, buf, 3 * n1 - 1, &o, topics, NTOPICS_LEN, rec, 3, &nrec, &used)
               == 0
           && nrec == 2 && used == 2 * n1 && rec[FA_FRAME_WORDS + 11] == 2 * n1);
    CHECK (fa_frames_scan (ctx, buf, 3 * n1 - 1, &o, topics, NTOPICS_LEN, rec, 1, &nrec, &used)
               == 0
           && nrec == 1 && used == n1);
    CHECK (fa_frames_scan (ctx, buf, 3, &o, topics, NTOPICS_LEN, rec, 3, &nrec, &used) == 0
           && nrec == 0 && used == 0);
    fa_frame_opts small = o;
    small.max_message = 10;
    CHECK (fa_frames_scan (ctx, buf, 4, &small, topics, NTOPICS_LEN, rec, 3, &nrec, &used) == 1
           && nrec == 1 && used == 0 && rec[0] >> 32 == EMSGSIZE && rec[2] == strlen (hot)
           && strstr (fa_ctx_errmsg (ctx), "exceeds the limit of 10 bytes"));
    /* a fault stops the scan after its record */
    char *bad = framed ("{\"matchtag\":3,", 14, &len);
    memcpy (buf + n1, bad, len);
    memcpy (buf + n1 + len, f1, n1);
    CHECK (fa_frames_scan (ctx, buf, n1 + len + n1, &o, topics, NTOPICS_LEN, rec, 3, &nrec,
                           &used)
               == 1
           && nrec == 2 && used == n1 + len && rec[FA_FRAME_WORDS + 1] == 3);
    /* out of memory: nothing of the failing frame is consumed */
    int seen = 0;
    for (long k = 1; k < 8; k++) {
        fa_ctx *c2 = fa_ctx_new ();
        c2->fail_after = k;
        int r = fa_frames_scan (c2, buf, n1, &o, topics, NTOPICS_LEN, rec, 3, &nrec, &used);
        c2->fail_after = 0;
        if (r < 0) {
            seen++;
            CHECK (fa_ctx_errnum (c2) == ENOMEM && nrec == 0 && used == 0);
        }
        else
            CHECK (r == 0 && nrec == 1 && used == n1);
        fa_ctx_destroy (c2);
    }
    CHECK (seen > 0);
    free (bad);
    free (buf);
    free (f1);

    /* fixed replies and the nesting check */
    uint64_t mts[2] = {7, UINT64_MAX};
    CHECK (fa_reply_ok (ctx, mts, 2) == 0);
    size_t on;
    const char *op = fa_ctx_output (ctx, &on);
    CHECK (on == 42 + 61 && memcmp (op, "\0\0\0&{\"matchtag\":7,\"errnum\":0,\"payload\":{}}", 42) == 0
           && memcmp (op + 42, "\0\0\0\071{\"matchtag\":18446744073709551615,\"errnum\":0,"
                               "\"payload\":{}}", 61) == 0);
    fa_ctx *c3 = fa_ctx_new ();
    c3->fail_after = 1;
    CHECK (fa_reply_ok (c3, mts, 2) == -1 && fa_ctx_errnum (c3) == ENOMEM);
    fa_ctx_destroy (c3);
    CHECK (fa_reply_ok (ctx, mts, 0) == 0 && out_is (ctx, ""));
    CHECK (fa_json_nesting (ctx, "[{\"a\":\"[[[\\\"[\"}]", 15, 2) == 0);
    CHECK (fa_json_nesting (ctx, "[[[1]]]", 7, 2) == -1 && fa_ctx_errnum (ctx) == EINVAL
           && strstr (fa_ctx_errmsg (ctx), "nesting depth exceeds 2 at byte 2"));
    CHECK (fa_json_nesting (ctx, "\"abc", 4, 0) == 0);
    CHECK (fa_json_nesting (ctx, "[\"ab\\", 5, 1) == 0); /* ends in a backslash */
    CHECK (frame_fails (ctx, "{\"matchtag\":2,\"payload\":{\"memo\":{\"k\":\"0123456789012345678"
                             "901234567890123456789012345678901234567890123\\",
                        &g, EPROTO, 2, "unterminated string"));
    CHECK (fa_json_nesting (ctx, "]]]{", 4, 1) == 0);
    fa_ctx_destroy (ctx);
}

int main (void)
{
    test_ctx ();
    test_canonical ();
    test_merge_diff ();
    test_table_basic ();
    test_apply_many ();
    test_apply_spans ();
    test_batches ();
    test_batch_cuts ();
    test_hash_stress ();
    test_enomem_atomic ();
    test_plain_path ();
    test_frames ();
    printf ("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
