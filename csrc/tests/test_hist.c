/* test_hist.c - fa_hist (fa_hist.c): estimates recorded once per distinct
 * value, the bound (the third oldest dropped), start / leave, the dirty
 * list, the store's dump and its load, corrupt dumps, allocation failures
 * leaving everything as it was, and fa_table_annotate_sched's scan of the
 * patch. Prints "N passed, M failed". */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fa.h"
#include "fa_int.h"

#include "check.h"

static void test_record (void)
{
    fa_hist *h = fa_hist_new ();
    fa_hist_info in;
    CHECK (fa_hist_estimate (h, 7, 100.0, 1.0) == 1);
    CHECK (fa_hist_estimate (h, 7, 100.0, 2.0) == 0); /* a repeat */
    CHECK (fa_hist_estimate (h, 7, 90.0, 3.0) == 1);
    CHECK (fa_hist_estimate (h, 7, NAN, 3.0) == -1 && fa_ctx_errnum (fa_hist_ctx (h)) == EINVAL);
    CHECK (fa_hist_get (h, 7, &in) == 1 && in.kept == 2 && in.n == 2);
    CHECK (in.pairs[0] == 100.0 && in.pairs[1] == 1.0 && in.pairs[2] == 90.0 && in.pairs[3] == 3.0);
    CHECK (isnan (in.start) && isnan (in.ended));
    CHECK (fa_hist_get (h, 8, &in) == 0);
    CHECK (fa_hist_end (h, 8, 5.0, 1) == 0); /* no history: nothing */
    CHECK (fa_hist_end (h, 7, 5.0, 1) == 1);
    CHECK (fa_hist_end (h, 7, 6.0, 0) == 0); /* started already */
    CHECK (fa_hist_estimate (h, 7, 80.0, 7.0) == 0); /* only while pending */
    CHECK (fa_hist_get (h, 7, &in) == 1 && in.start == 5.0 && isnan (in.ended));
    /* the bound: 100 values, the first two and the latest 62 kept */
    for (int i = 0; i < 100; i++)
        CHECK (fa_hist_estimate (h, 9, 1000.0 + i, (double) i) == 1);
    CHECK (fa_hist_get (h, 9, &in) == 1 && in.kept == FA_HIST_MAX && in.n == 100);
    CHECK (in.pairs[0] == 1000.0 && in.pairs[2] == 1001.0 && in.pairs[4] == 1038.0);
    CHECK (in.pairs[2 * FA_HIST_MAX - 2] == 1099.0 && in.pairs[2 * FA_HIST_MAX - 1] == 99.0);
    CHECK (fa_hist_count (h) == 2);
    uint64_t ids[8];
    CHECK (fa_hist_dirty_count (h) == 2);
    CHECK (fa_hist_take_dirty (h, ids, 1) == 1 && fa_hist_dirty_count (h) == 1);
    CHECK (fa_hist_take_dirty (h, ids, 8) == 1 && fa_hist_dirty_count (h) == 0);
    CHECK (fa_hist_mark_dirty (h, 7) == 1 && fa_hist_mark_dirty (h, 12345) == 0);
    CHECK (fa_hist_memory (h) > FA_HIST_MAX * 16);
    fa_hist_destroy (h);
    fa_hist_destroy (NULL);
}

static void test_dump_load (void)
{
    fa_hist *h = fa_hist_new (), *g = fa_hist_new ();
    fa_hist_info a, b;
    fa_hist_estimate (h, 1, 10.0, 1.0);
    fa_hist_estimate (h, 1, 11.0, 2.0);
    fa_hist_estimate (h, (uint64_t) -1, 12.0, 3.0); /* the largest id */
    fa_hist_end (h, (uint64_t) -1, 4.0, 0);
    CHECK (fa_hist_dump (h, 0) == 2 && fa_hist_dirty_count (h) == 0);
    size_t len;
    const char *d = fa_ctx_output (fa_hist_ctx (h), &len);
    char *copy = malloc (len);
    memcpy (copy, d, len);
    CHECK (fa_hist_dump (h, 0) == 0); /* nothing dirty any more */
    CHECK (fa_hist_load_dump (g, copy, len) == 0 && fa_hist_count (g) == 2);
    CHECK (fa_hist_get (h, 1, &a) == 1 && fa_hist_get (g, 1, &b) == 1);
    CHECK (a.kept == b.kept && a.n == b.n && memcmp (a.pairs, b.pairs, 32) == 0);
    CHECK (fa_hist_get (g, (uint64_t) -1, &b) == 1 && b.ended == 4.0 && isnan (b.start));
    CHECK (fa_hist_dirty_count (g) == 0);
    CHECK (fa_hist_redirty_dump (g, copy, len) == 0 && fa_hist_dirty_count (g) == 2);
    /* every prefix of a dump: complete records load, a cut one is EINVAL */
    for (size_t k = 0; k < len; k++) {
        fa_hist *x = fa_hist_new ();
        char *pre = malloc (k ? k : 1);
        memcpy (pre, copy, k);
        int r = fa_hist_load_dump (x, pre, k);
        CHECK (r == 0 ? k == 0 || k == 64 : fa_ctx_errnum (fa_hist_ctx (x)) == EINVAL);
        free (pre);
        fa_hist_destroy (x);
    }
    /* a record claiming more pairs than the bound */
    uint32_t big = FA_HIST_MAX + 1;
    memcpy (copy + 28, &big, 4);
    CHECK (fa_hist_load_dump (g, copy, len) == -1);
    CHECK (fa_hist_load (g, 5, NULL, 0, 0, NAN, NAN) == -1);
    CHECK (fa_hist_dump (h, 1) == 2);
    free (copy);
    fa_hist_destroy (h);
    fa_hist_destroy (g);
}

/* Dumps after each round of new values (most written as new values only,
 * some whole after the bound dropped values) load into the same records. */
static void test_incremental (void)
{
    fa_hist *h = fa_hist_new (), *g = fa_hist_new ();
    char *logbuf = NULL;
    size_t loglen = 0;
    int rounds[] = {2, 1, 3, 30, 40, 1, 100, 2};
    double t = 0;
    for (size_t r = 0; r < sizeof (rounds) / sizeof (rounds[0]); r++) {
        for (int i = 0; i < rounds[r]; i++) {
            t += 1;
            fa_hist_estimate (h, 1, 1000.0 + t, t);
            if (i % 2 == 0)
                fa_hist_estimate (h, 2, 2000.0 + t, t);
        }
        if (r == 6)
            fa_hist_end (h, 2, t + 0.5, 1);
        CHECK (fa_hist_dump (h, 0) >= 1);
        size_t len;
        const char *d = fa_ctx_output (fa_hist_ctx (h), &len);
        logbuf = realloc (logbuf, loglen + len);
        memcpy (logbuf + loglen, d, len);
        loglen += len;
        fa_hist_dump_done (h);
    }
    CHECK (fa_hist_load_dump (g, logbuf, loglen) == 0);
    for (uint64_t id = 1; id <= 2; id++) {
        fa_hist_info a, b;
        CHECK (fa_hist_get (h, id, &a) == 1 && fa_hist_get (g, id, &b) == 1);
        CHECK (a.kept == b.kept && a.n == b.n);
        CHECK (memcmp (a.pairs, b.pairs, (size_t) a.kept * 16) == 0);
        CHECK ((isnan (a.start) && isnan (b.start)) || a.start == b.start);
    }
    CHECK (fa_hist_dirty_count (g) == 0);
    /* new values without the record before them: EINVAL */
    fa_hist *x = fa_hist_new ();
    fa_hist_estimate (h, 3, 1.0, 1.0);
    fa_hist_dump (h, 0);
    fa_hist_estimate (h, 3, 2.0, 2.0);
    size_t len;
    fa_hist_dump (h, 0);
    const char *d = fa_ctx_output (fa_hist_ctx (h), &len);
    CHECK (fa_hist_load_dump (x, d, len) == -1 && fa_ctx_errnum (fa_hist_ctx (x)) == EINVAL);
    fa_hist_destroy (x);
    free (logbuf);
    fa_hist_destroy (h);
    fa_hist_destroy (g);
}

/* The report's rows: started and left jobs only, errors at horizons. */
static void test_rows (void)
{
    fa_hist *h = fa_hist_new ();
    fa_hist_estimate (h, 1, 100.0, 10.0);
    fa_hist_estimate (h, 1, 90.0, 20.0);
    fa_hist_end (h, 1, 80.0, 1);     /* started at 80 */
    fa_hist_estimate (h, 2, 50.0, 10.0);
    fa_hist_end (h, 2, 30.0, 0);     /* left at 30 */
    fa_hist_estimate (h, 3, 70.0, 10.0); /* pending: no row */
    double hs[3] = {5.0, 65.0, 75.0};
    CHECK (fa_hist_rows (h, hs, 3) == 2);
    size_t len;
    const char *d = fa_ctx_output (fa_hist_ctx (h), &len);
    CHECK (len == 2 * 8 + 2 * (FA_HIST_ROW + 3) * 8);
    for (int i = 0; i < 2; i++) {
        uint64_t id;
        double row[FA_HIST_ROW + 3];
        memcpy (&id, d + 8 * i, 8);
        memcpy (row, d + 16 + (size_t) i * sizeof (row), sizeof (row));
        if (id == 1) {
            CHECK (row[0] == 80.0 && isnan (row[1]) && row[2] == 2.0);
            CHECK (row[3] == 100.0 && row[4] == 10.0 && row[5] == 90.0 && row[6] == 20.0);
            CHECK (row[7] == 80.0 - 90.0);  /* at 75: the second */
            CHECK (row[8] == 80.0 - 100.0); /* at 15: the first */
            CHECK (isnan (row[9]));         /* at 5: none yet */
        } else {
            CHECK (id == 2 && isnan (row[0]) && row[1] == 30.0 && isnan (row[7]));
        }
    }
    fa_hist_destroy (h);
}

/* The plain merge's note (fa_table_annotate_sched on a job with stored
 * notes) records what a scan of the same patches records. */
static void test_plain_note_equals_scan (void)
{
    const char *patches[] = {
        "{\"sched\":{\"t_estimate\":100.5,\"jobs_ahead\":1,\"queue\":\"a\"}}",
        "{\"sched\":{\"t_estimate\":100.5,\"jobs_ahead\":2}}",
        "{\"sched\":{\"jobs_ahead\":3,\"t_estimate\":90}}",
        "{\"sched\":{\"t_estimate\":\"soon\"}}",
        "{\"sched\":{\"t_estimate\":null}}",
        "{\"sched\":{\"t_estimate\":80,\"queue\":\"b\"}}",
        "{\"user\":{\"t_estimate\":1}}",
        "{\"sched\":{\"t_estimate\":{\"x\":1}}}",
        "{\"sched\":{\"t_estimate\":70,\"x\":{\"t_estimate\":5}}}",
        "{\"sched\":{\"t_estimate\":-60.25}}",
        "{\"sched\":null}",
        "{\"sched\":{\"t_estimate\":50,\"queue\":\"c\"}}",
    };
    fa_table *t = fa_table_new (), *u = fa_table_new ();
    fa_hist *a = fa_hist_new (), *b = fa_hist_new ();
    const char *seed = "{\"sched\":{\"t_estimate\":1,\"jobs_ahead\":0,\"queue\":\"a\",\"x\":{\"t_estimate\":0}},\"user\":{\"t_estimate\":0}}";
    fa_table_annotate (t, 1, seed, strlen (seed));
    fa_table_annotate (u, 1, seed, strlen (seed));
    for (size_t i = 0; i < sizeof (patches) / sizeof (patches[0]); i++) {
        size_t n = strlen (patches[i]);
        int r = fa_table_annotate_sched (t, a, 1, patches[i], n, (double) i);
        int c = fa_table_annotate (u, 1, patches[i], n);
        unsigned bits = c == 1 ? fa_hist_note (b, 1, patches[i], n, (double) i) : 0;
        CHECK (r == (c == 1 ? (int) (1 | (bits << 1)) : c));
        fa_hist_info x, y;
        int gx = fa_hist_get (a, 1, &x), gy = fa_hist_get (b, 1, &y);
        CHECK (gx == gy);
        if (gx && gy)
            CHECK (x.kept == y.kept && memcmp (x.pairs, y.pairs, (size_t) x.kept * 16) == 0);
        CHECK (fa_hist_bad (a) == fa_hist_bad (b));
    }
    fa_hist_destroy (a);
    fa_hist_destroy (b);
    fa_table_destroy (t);
    fa_table_destroy (u);
}

static void test_enomem (void)
{
    /* every allocation of an estimate failing in turn: -1, and the history
     * reads as before (a new record stays empty: none) */
    for (long n = 1; n <= 4; n++) {
        fa_hist *h = fa_hist_new ();
        for (int i = 0; i < 3; i++)
            fa_hist_estimate (h, 1, 10.0 + i, i);
        fa_hist_info before, after;
        fa_hist_get (h, 1, &before);
        uint32_t kept = before.kept;
        fa_hist_ctx (h)->fail_after = n;
        int r1 = fa_hist_estimate (h, 2, 5.0, 1.0);
        int r2 = fa_hist_estimate (h, 1, 99.0, 9.0);
        fa_hist_ctx (h)->fail_after = 0;
        CHECK (r1 == 1 || r1 == -1);
        CHECK (r2 == 1 || r2 == -1);
        CHECK (fa_hist_get (h, 1, &after) == 1);
        CHECK (after.kept == kept + (r2 == 1));
        CHECK (fa_hist_get (h, 2, &after) == (r1 == 1));
        fa_hist_destroy (h);
    }
}

static void test_annotate_sched (void)
{
    fa_table *t = fa_table_new ();
    fa_hist *h = fa_hist_new ();
    fa_hist_info in;
    const char *p1 = "{\"sched\":{\"t_estimate\":1796646430.25,\"jobs_ahead\":2}}";
    CHECK (fa_table_annotate_sched (t, h, 3, p1, strlen (p1), 50.0) == 1);
    CHECK (fa_hist_get (h, 3, &in) == 1 && in.pairs[0] == 1796646430.25 && in.pairs[1] == 50.0);
    CHECK (fa_table_annotate_sched (t, h, 3, p1, strlen (p1), 60.0) == 0); /* unchanged */
    const char *p2 = "{\"sched\":{\"t_estimate\":1.5e9,\"queue\":\"batch\"}}";
    CHECK (fa_table_annotate_sched (t, h, 3, p2, strlen (p2), 70.0) == (1 | (FA_QUEUE << 1)));
    CHECK (fa_hist_get (h, 3, &in) == 1 && in.kept == 2 && in.pairs[2] == 1.5e9);
    const char *p3 = "{\"sched\":{\"t_estimate\":\"soon\"}}";
    CHECK (fa_table_annotate_sched (t, h, 3, p3, strlen (p3), 80.0) == 1 && fa_hist_bad (h) == 1);
    const char *p4 = "{\"sched\":{\"t_est\\u0069mate\":5}}";
    CHECK (fa_table_annotate_sched (t, h, 3, p4, strlen (p4), 80.0) == 1); /* no "t_estimate" */
    const char *p5 = "{\"s\\u0063hed\":{\"t_estimate\":5}}";
    CHECK (fa_table_annotate_sched (t, h, 4, p5, strlen (p5), 80.0) == (1 | (FA_SCAN_SLOW << 1)));
    CHECK (fa_table_annotate_sched (t, NULL, 5, p1, strlen (p1), 1.0) == 1);
    CHECK (fa_table_annotate_sched (t, h, 6, "{", 1, 1.0) == -1 && fa_hist_get (h, 6, &in) == 0);
    /* the wall clock when at < 0 */
    const char *p6 = "{\"sched\":{\"t_estimate\":-0.5}}";
    CHECK (fa_table_annotate_sched (t, h, 7, p6, strlen (p6), -1.0) == 1);
    CHECK (fa_hist_get (h, 7, &in) == 1 && in.pairs[0] == -0.5 && in.pairs[1] > 1.6e9);
    /* numbers past the fast path's 15 digits, exponents: strtod's value */
    const char *p7 = "{\"sched\":{\"t_estimate\":1796646430.123456789}}";
    CHECK (fa_table_annotate_sched (t, h, 8, p7, strlen (p7), 1.0) == 1);
    CHECK (fa_hist_get (h, 8, &in) == 1 && in.pairs[0] == 1796646430.123456789);
    const char *p8 = "{\"sched\":{\"t_estimate\":17.5e8}}";
    CHECK (fa_table_annotate_sched (t, h, 9, p8, strlen (p8), 1.0) == 1);
    CHECK (fa_hist_get (h, 9, &in) == 1 && in.pairs[0] == 1.75e9);
    CHECK (fa_hist_note (h, 10, p1, strlen (p1), 2.0) == 0 && fa_hist_get (h, 10, &in) == 1);
    CHECK (fa_hist_note (h, 11, "{}", 2, 2.0) == 0 && fa_hist_get (h, 11, &in) == 0);
    fa_hist_destroy (h);
    fa_table_destroy (t);
}

int main (void)
{
    test_record ();
    test_dump_load ();
    test_incremental ();
    test_rows ();
    test_plain_note_equals_scan ();
    test_enomem ();
    test_annotate_sched ();
    printf ("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
