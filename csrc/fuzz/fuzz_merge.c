/* fuzz_merge.c — libFuzzer target: merge, table apply/commit, diff, batches.
 *
 * Input layout:
 *   byte 0      selector: bit 0 strict keys, bits 1-2 depth (2/4/8/64),
 *               bit 3 key bytes 8 (else 256), bit 4 object keys 4 (else
 *               1024), bits 5-6 the namespace for fa_info (a/sched/user/x),
 *               bit 7 the job id (0, else UINT64_MAX: both ends of the key
 *               space of the hash)
 *   the rest    split at NUL bytes: segment 0 is the starting tree (merged
 *               into nothing first, so it is always a valid stored tree;
 *               if that fails the job starts empty), segments 1..8 are
 *               patches applied in order.
 *
 * Every patch goes through every path, and all of them must agree:
 *   fa_merge (pure)  ==  fa_table_apply with FA_DRYRUN (nothing installed
 *   until fa_table_commit)  ==  fa_table_apply (direct)  ==
 *   fa_table_apply_many (all patches in one call)  ==  fa_table_apply_spans
 *   (the same, each patch its own span).
 * Errors: same errno everywhere, a sentence, the stored text untouched.
 * Then: diff(old, new) is 0 iff old == new, and merge(old, diff) == new
 * (both directions); the merged text is a canonical fixed point; fa_info
 * lengths match; the batch (tracking on from the start) reports the job iff
 * it changed net, its full entry is the current tree, its delta turns the
 * pre-image into the current tree, and its filtered entry is get_view.
 * Other jobs (fillers, enough to grow the hash twice) must be left alone;
 * fa_table_ids/count/memory agree; the view keeping ns merged with the view
 * dropping it is the whole tree.
 */
#include <errno.h>
#include <inttypes.h>

#include "fuzz_util.h"

#define MAX_PATCHES 8
#define NFILL 100 /* > 3/4 of 64 and of 128 slots: the hash grows twice */

static const fa_limits wide = {.max_depth = 100000,
                               .max_key_bytes = 1u << 30,
                               .max_object_keys = 1u << 30,
                               .strict_keys = 0};

static const char *const namespaces[4] = {"a", "sched", "user", "x"};

static fa_ctx *ctx;

static uint64_t filler_id (unsigned k)
{
    /* Ids spread over the whole range, some close to the job's own id. */
    return k < 4 ? (uint64_t)k + 1 : (uint64_t)k * 0x9E3779B97F4A7C15ull;
}

/* The stored text of job id (copied), empty when the job has none. */
static fz_buf table_text (fa_table *t, uint64_t id)
{
    const char *p = NULL;
    size_t n = 0;
    int rc = fa_table_get (t, id, &p, &n);
    CHECK (rc == 0 || rc == 1, "fa_table_get returned %d", rc);
    CHECK (rc == 1 ? n > 0 && p != NULL : 1, "fa_table_get found an empty text");
    return rc == 1 ? fz_copy (p, n) : fz_copy ("", 0);
}

static void expect_text (fa_table *t, uint64_t id, const fz_buf *want, const char *what)
{
    fz_buf got = table_text (t, id);
    if (!fz_eq (got.p, got.n, want->p, want->n)) {
        fz_dump ("stored", got.p, got.n);
        fz_dump ("expected", want->p, want->n);
    }
    CHECK (fz_eq (got.p, got.n, want->p, want->n), "%s: stored text differs", what);
    fz_free (&got);
}

/* Length of the value under ns in the job's tree (0 = absent), read back
 * through get_view: the view keeping ns alone is {"<ns>":VALUE}. */
static size_t ns_value_len (fa_table *t, uint64_t id, const char *ns)
{
    size_t nslen = strlen (ns), n = 0;
    char list[16];
    memcpy (list, ns, nslen + 1);
    int rc = fa_table_get_view (t, id, list, nslen + 1, 0);
    CHECK (rc == 0 || rc == 1, "fa_table_get_view returned %d", rc);
    if (rc == 0)
        return 0;
    fa_ctx_output (fa_table_ctx (t), &n);
    CHECK (n > nslen + 5, "view of one namespace too short (%zu bytes)", n);
    return n - nslen - 5;
}

/* merge(from, patch) with wide limits must give `to` (the same value: a
 * merge patch cannot reorder keys, so key order may differ). */
static void expect_merge (const fz_buf *from, const char *patch, size_t plen,
                          const fz_buf *to, const char *what)
{
    int rc = fa_merge (ctx, from->p, from->n, patch, plen, &wide);
    if (rc < 0) {
        fz_dump ("from", from->p, from->n);
        fz_dump ("patch", patch, plen);
    }
    CHECK (rc >= 0, "%s: merge failed: %s", what, fa_ctx_errmsg (ctx));
    fz_buf got = fz_output (ctx);
    CHECK (rc == (got.n > 0), "%s: merge returned %d with %zu bytes", what, rc, got.n);
    int ok = fz_same_value (got.p, got.n, to->p, to->n);
    if (!ok) {
        fz_dump ("from", from->p, from->n);
        fz_dump ("patch", patch, plen);
        fz_dump ("got", got.p, got.n);
        fz_dump ("want", to->p, to->n);
    }
    CHECK (ok, "%s: merge result differs", what);
    fz_free (&got);
}

/* diff(a, b) is 0 for equal texts, 1 for different values, and
 * merge(a, diff) == b as a value. Texts that differ in key order only may
 * give 0 or a patch. */
static void check_diff (const fz_buf *a, const fz_buf *b)
{
    int rc = fa_diff (ctx, a->p, a->n, b->p, b->n);
    CHECK (rc >= 0, "fa_diff failed: %s", fa_ctx_errmsg (ctx));
    if (fz_eq (a->p, a->n, b->p, b->n))
        CHECK (rc == 0, "fa_diff returned %d for equal texts", rc);
    else if (!fz_same_value (a->p, a->n, b->p, b->n))
        CHECK (rc == 1, "fa_diff returned %d for different values", rc);
    if (rc == 1) {
        fz_buf d = fz_output (ctx);
        CHECK (d.n >= 2 && d.p[0] == '{', "diff is not an object");
        expect_merge (a, d.p, d.n, b, "merge(old, diff(old, new))");
        fz_free (&d);
    }
}

/* The payload of a one-entry batch "[[<id>,PAYLOAD]]"; n = 0 for "[]". */
static fz_buf one_entry (fa_ctx *c, uint64_t id)
{
    size_t n = 0;
    const char *p = fa_ctx_output (c, &n);
    char head[40];
    int hn = snprintf (head, sizeof head, "[[%" PRIu64 ",", id);
    if (n == 2) {
        CHECK (memcmp (p, "[]", 2) == 0, "two-byte batch is not []");
        return fz_copy ("", 0);
    }
    if (!(n > (size_t)hn + 2 && memcmp (p, head, hn) == 0 && memcmp (p + n - 2, "]]", 2) == 0))
        fz_dump ("batch", p, n);
    CHECK (n > (size_t)hn + 2 && memcmp (p, head, hn) == 0
               && memcmp (p + n - 2, "]]", 2) == 0,
           "batch is not one entry for job %" PRIu64, id);
    return fz_copy (p + hn, n - hn - 2);
}

static int is_null (const fz_buf *b)
{
    return b->n == 4 && memcmp (b->p, "null", 4) == 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const char *seg[MAX_PATCHES + 1];
    size_t seglen[MAX_PATCHES + 1], nseg = 0;
    fa_limits lim;
    fa_table *ta, *tb, *tc, *tf;
    fz_buf start, cur, at_fail = {NULL, 0};
    const char *ns;
    uint64_t id;
    unsigned sel;

    if (size < 1)
        return 0;
    if (!ctx) {
        ctx = fa_ctx_new ();
        CHECK (ctx != NULL, "fa_ctx_new failed");
    }
    sel = data[0];
    lim.strict_keys = sel & 1;
    lim.max_depth = (const uint32_t[]){2, 4, 8, 64}[(sel >> 1) & 3];
    lim.max_key_bytes = (sel >> 3) & 1 ? 8 : 256;
    lim.max_object_keys = (sel >> 4) & 1 ? 4 : 1024;
    ns = namespaces[(sel >> 5) & 3];
    id = (sel >> 7) & 1 ? 0 : UINT64_MAX;

    /* Split the rest at NULs (the last segment runs to the end). Each
     * segment gets its own exact-size copy: a read past its end is then an
     * ASan report, not a silent read of the next segment. */
    fz_buf segcopy[MAX_PATCHES + 1];
    {
        const char *p = (const char *)data + 1, *end = (const char *)data + size;
        while (nseg < MAX_PATCHES + 1) {
            const char *z = nseg < MAX_PATCHES ? memchr (p, '\0', end - p) : NULL;
            seglen[nseg] = z ? (size_t)(z - p) : (size_t)(end - p);
            segcopy[nseg] = fz_copy (p, seglen[nseg]);
            seg[nseg] = segcopy[nseg].p;
            nseg++;
            if (!z)
                break;
            p = z + 1;
        }
    }

    /* The starting tree: segment 0 merged into nothing. */
    if (fa_merge (ctx, NULL, 0, seg[0], seglen[0], &lim) < 0) {
        fz_check_error (ctx, "fa_merge (start)");
        start = fz_copy ("", 0);
    } else
        start = fz_output (ctx);

    ta = fa_table_new ();
    tb = fa_table_new ();
    tc = fa_table_new ();
    tf = fa_table_new ();
    CHECK (ta && tb && tc && tf, "fa_table_new failed");
    fa_table_set_limits (tf, &lim);
    if (start.n) {
        fa_table *all[4] = {ta, tb, tc, tf};
        for (int i = 0; i < 4; i++) {
            int rc = fa_table_apply (all[i], id, start.p, start.n, &wide, NULL, 0,
                                     FA_REPLACE, NULL);
            CHECK (rc == 1, "installing the start tree returned %d: %s", rc,
                   fa_ctx_errmsg (fa_table_ctx (all[i])));
            expect_text (all[i], id, &start, "start tree");
        }
    }
    /* Fillers in tb: the same tree under other ids, to make the hash grow
     * and collide; they must never change. */
    if (start.n)
        for (unsigned k = 0; k < NFILL; k++)
            CHECK (fa_table_apply (tb, filler_id (k), start.p, start.n, &wide, NULL,
                                   0, 0, NULL) >= 0,
                   "filler apply failed");
    CHECK (fa_table_count (tb) == (start.n ? NFILL + 1 : 0), "count %zu after fillers",
           fa_table_count (tb));
    fa_table_track (tb, 1);

    cur = fz_copy (start.p, start.n);
    size_t nchanged = 0, first_bad = SIZE_MAX;
    for (size_t i = 1; i < nseg; i++) {
        const char *p = seg[i];
        size_t plen = seglen[i];
        fa_info info;
        fz_buf want;
        int rc, err = 0, rca, rcb;

        rc = fa_merge (ctx, cur.p, cur.n, p, plen, &lim);
        if (rc < 0) {
            fz_check_error (ctx, "fa_merge");
            err = fa_ctx_errnum (ctx);
            want = fz_copy (cur.p, cur.n);
        } else {
            want = fz_output (ctx);
            CHECK (rc == (want.n > 0), "fa_merge returned %d with %zu bytes", rc, want.n);
            if (want.n) {
                CHECK (want.p[0] == '{' && want.p[want.n - 1] == '}',
                       "merge result is not an object");
                /* A stored text is a canonical fixed point. */
                CHECK (fa_canonical (ctx, want.p, want.n, &wide) >= 0,
                       "merge result does not parse: %s", fa_ctx_errmsg (ctx));
                fz_buf c = fz_output (ctx);
                if (!fz_eq (c.p, c.n, want.p, want.n)) {
                    fz_dump ("merged", want.p, want.n);
                    fz_dump ("canonical", c.p, c.n);
                }
                CHECK (fz_eq (c.p, c.n, want.p, want.n), "merge result is not canonical");
                fz_free (&c);
            }
        }
        int changed = !fz_eq (cur.p, cur.n, want.p, want.n);

        /* Dry run: nothing installed; a second dry run then commit. */
        size_t old_ns = ns_value_len (ta, id, ns);
        memset (&info, 0xa5, sizeof info);
        rca = fa_table_apply (ta, id, p, plen, &lim, ns, strlen (ns), FA_DRYRUN, &info);
        if (rca < 0)
            fz_check_error (fa_table_ctx (ta), "fa_table_apply (dry run)");
        expect_text (ta, id, &cur, "after a dry run");
        if (err) {
            CHECK (rca == -1, "dry run returned %d where fa_merge failed", rca);
            CHECK (fa_ctx_errnum (fa_table_ctx (ta)) == err,
                   "dry run errno %d, fa_merge errno %d",
                   fa_ctx_errnum (fa_table_ctx (ta)), err);
        } else {
            CHECK (rca == changed, "dry run returned %d, expected %d (%s)", rca, changed,
                   fa_ctx_errmsg (fa_table_ctx (ta)));
            CHECK (info.changed == changed, "info.changed %d", info.changed);
            CHECK (info.old_len == cur.n && info.new_len == want.n,
                   "info lengths %zu -> %zu, expected %zu -> %zu", info.old_len,
                   info.new_len, cur.n, want.n);
            CHECK (info.old_ns_len == old_ns, "info.old_ns_len %zu, view says %zu",
                   info.old_ns_len, old_ns);
            rca = fa_table_apply (ta, id, p, plen, &lim, NULL, 0, FA_DRYRUN, NULL);
            CHECK (rca == changed, "second dry run returned %d", rca);
            CHECK (fa_table_commit (ta) == 0, "fa_table_commit failed: %s",
                   fa_ctx_errmsg (fa_table_ctx (ta)));
            expect_text (ta, id, &want, "after commit");
            CHECK (info.new_ns_len == ns_value_len (ta, id, ns),
                   "info.new_ns_len %zu, view says %zu", info.new_ns_len,
                   ns_value_len (ta, id, ns));
            CHECK (fa_table_commit (ta) == -1
                       && fa_ctx_errnum (fa_table_ctx (ta)) == EINVAL,
                   "a second commit did not fail with EINVAL");
            expect_text (ta, id, &want, "after a refused commit");
        }

        /* The first patch on the raw start text (pruned as it is parsed)
         * gives what it gives on the stored start tree. */
        if (i == 1 && start.n) {
            int rr = fa_merge (ctx, seg[0], seglen[0], p, plen, &lim);
            CHECK (rr == (err ? -1 : want.n > 0), "merge on the raw tree returned %d", rr);
            if (rr >= 0) {
                fz_buf raw = fz_output (ctx);
                if (!fz_eq (raw.p, raw.n, want.p, want.n)) {
                    fz_dump ("raw tree", seg[0], seglen[0]);
                    fz_dump ("patch", p, plen);
                    fz_dump ("on raw", raw.p, raw.n);
                    fz_dump ("on stored", want.p, want.n);
                }
                CHECK (fz_eq (raw.p, raw.n, want.p, want.n),
                       "merge on the raw tree differs from the stored tree");
                fz_free (&raw);
            }
        }

        /* Direct apply, tracked. */
        rcb = fa_table_apply (tb, id, p, plen, &lim, NULL, 0, 0, NULL);
        if (err) {
            CHECK (rcb == -1 && fa_ctx_errnum (fa_table_ctx (tb)) == err,
                   "apply returned %d errno %d where fa_merge failed with %d", rcb,
                   fa_ctx_errnum (fa_table_ctx (tb)), err);
            if (first_bad == SIZE_MAX) {
                first_bad = i - 1;
                at_fail = fz_copy (cur.p, cur.n);
            }
        } else {
            CHECK (rcb == changed, "apply returned %d, expected %d", rcb, changed);
            if (first_bad == SIZE_MAX)
                nchanged += changed;
        }
        expect_text (tb, id, &want, "direct apply");

        /* The hot path with the table's default limits. */
        int rcf = fa_table_annotate (tf, id, p, plen);
        CHECK (rcf == rcb, "fa_table_annotate returned %d, apply %d", rcf, rcb);
        if (rcf < 0)
            CHECK (fa_ctx_errnum (fa_table_ctx (tf)) == err, "annotate errno %d, merge %d",
                   fa_ctx_errnum (fa_table_ctx (tf)), err);
        expect_text (tf, id, &want, "fa_table_annotate");

        check_diff (&cur, &want);
        check_diff (&want, &cur);
        fz_free (&cur);
        cur = want;
    }

    /* Fillers untouched; ids lists exactly the jobs with annotations. */
    for (unsigned k = 0; start.n && k < NFILL; k++)
        expect_text (tb, filler_id (k), &start, "filler job");
    {
        uint64_t ids[NFILL + 2];
        size_t want_n = (start.n ? NFILL : 0) + (cur.n > 0);
        size_t got_n = fa_table_ids (tb, ids, NFILL + 2);
        CHECK (got_n == want_n && fa_table_count (tb) == want_n,
               "fa_table_ids %zu, count %zu, expected %zu", got_n, fa_table_count (tb),
               want_n);
        size_t seen = 0;
        for (size_t i = 0; i < got_n; i++)
            seen += ids[i] == id;
        CHECK (seen == (cur.n > 0), "job listed %zu times by fa_table_ids", seen);
        CHECK (fa_table_memory (tb) >= cur.n + (start.n ? NFILL * start.n : 0),
               "fa_table_memory %zu below the texts it holds", fa_table_memory (tb));
    }

    /* The view keeping ns and the view dropping it make the whole tree. */
    if (cur.n) {
        char list[16];
        size_t nslen = strlen (ns);
        memcpy (list, ns, nslen + 1);
        int ri = fa_table_get_view (tb, id, list, nslen + 1, 0);
        fz_buf vi = ri == 1 ? fz_output (fa_table_ctx (tb)) : fz_copy ("", 0);
        int rx = fa_table_get_view (tb, id, list, nslen + 1, 1);
        fz_buf vx = rx == 1 ? fz_output (fa_table_ctx (tb)) : fz_copy ("", 0);
        CHECK (ri >= 0 && rx >= 0 && (ri == 1 || rx == 1), "views %d / %d", ri, rx);
        if (!vx.n)
            CHECK (fz_eq (vi.p, vi.n, cur.p, cur.n), "include view is not the whole tree");
        else if (!vi.n)
            CHECK (fz_eq (vx.p, vx.n, cur.p, cur.n), "exclude view is not the whole tree");
        else
            expect_merge (&vx, vi.p, vi.n, &cur, "exclude view + include view");
        fz_free (&vi);
        fz_free (&vx);
    }

    /* All patches in one call: stops at the first bad one. */
    if (nseg > 1) {
        uint64_t ids[MAX_PATCHES];
        size_t offs[MAX_PATCHES + 1], nch = 12345, failed = 12345;
        size_t n = nseg - 1;
        size_t total = 0;
        for (size_t i = 1; i < nseg; i++)
            total += seglen[i];
        char *buf = malloc (total ? total : 1); /* exact size, for ASan */
        CHECK (buf != NULL, "out of memory");
        offs[0] = 0;
        for (size_t i = 0; i < n; i++) {
            ids[i] = id;
            if (seglen[i + 1])
                memcpy (buf + offs[i], seg[i + 1], seglen[i + 1]);
            offs[i + 1] = offs[i] + seglen[i + 1];
        }
        int rc = fa_table_apply_many (tc, ids, buf, offs, n, &lim, &nch, &failed);
        if (first_bad == SIZE_MAX) {
            CHECK (rc == 0, "apply_many failed: %s", fa_ctx_errmsg (fa_table_ctx (tc)));
            expect_text (tc, id, &cur, "apply_many");
        } else {
            CHECK (rc == -1 && failed == first_bad,
                   "apply_many returned %d failed_index %zu, expected -1 at %zu", rc,
                   failed, first_bad);
            fz_check_error (fa_table_ctx (tc), "fa_table_apply_many");
            expect_text (tc, id, &at_fail, "apply_many stopped at the bad patch");
        }
        CHECK (nch == nchanged, "apply_many nchanged %zu, expected %zu", nch, nchanged);
        free (buf);

        /* The same patches as separate spans (annotate_many's list of
         * bytes), each in an allocation of its exact size, for ASan. */
        fa_span spans[MAX_PATCHES];
        for (size_t i = 0; i < n; i++) {
            char *c = malloc (seglen[i + 1] ? seglen[i + 1] : 1);
            CHECK (c != NULL, "out of memory");
            if (seglen[i + 1])
                memcpy (c, seg[i + 1], seglen[i + 1]);
            spans[i].p = c;
            spans[i].n = seglen[i + 1];
        }
        fa_table *ts = fa_table_new ();
        CHECK (ts != NULL, "fa_table_new failed");
        if (start.n)
            CHECK (fa_table_apply (ts, id, start.p, start.n, &wide, NULL, 0, 0, NULL) == 1,
                   "installing the start tree failed");
        nch = 12345;
        failed = 12345;
        rc = fa_table_apply_spans (ts, ids, spans, n, &lim, &nch, &failed);
        CHECK (rc == (first_bad == SIZE_MAX ? 0 : -1) && (rc == 0 || failed == first_bad)
                   && nch == nchanged,
               "apply_spans returned %d failed %zu nchanged %zu", rc, failed, nch);
        if (rc < 0)
            fz_check_error (fa_table_ctx (ts), "fa_table_apply_spans");
        expect_text (ts, id, first_bad == SIZE_MAX ? &cur : &at_fail, "apply_spans");
        fa_table_destroy (ts);
        for (size_t i = 0; i < n; i++)
            free ((void *)spans[i].p);
    }

    /* The batch of tb: one job (the fillers never changed). */
    {
        fa_ctx *bc = fa_table_ctx (tb);
        int net = !fz_eq (start.p, start.n, cur.p, cur.n);
        uint64_t bid[4] = {0};
        size_t nb = fa_table_batch_ids (tb, bid, 4);
        CHECK (nb == (size_t)net && (!net || bid[0] == id),
               "batch_ids gave %zu ids, expected %d", nb, net);
        CHECK (fa_table_batch_count (tb) >= nb, "batch_count below batch_ids");

        CHECK (fa_table_batch_encode (tb, NULL, NULL, 0, 0, 0) == 0,
               "batch_encode failed: %s", fa_ctx_errmsg (bc));
        fz_buf e = one_entry (bc, id);
        CHECK (net ? e.n > 0 : e.n == 0, "full batch has %zu bytes, net change %d", e.n,
               net);
        if (net)
            CHECK (cur.n ? fz_eq (e.p, e.n, cur.p, cur.n) : is_null (&e),
                   "full batch entry is not the current tree");
        fz_free (&e);

        CHECK (fa_table_batch_encode (tb, NULL, NULL, 0, 0, 1) == 0,
               "delta batch_encode failed: %s", fa_ctx_errmsg (bc));
        e = one_entry (bc, id);
        CHECK (net ? e.n > 0 || fz_same_value (start.p, start.n, cur.p, cur.n)
                   : e.n == 0,
               "delta batch has %zu bytes, net change %d", e.n, net);
        if (e.n) {
            if (is_null (&e))
                CHECK (cur.n == 0, "delta null but a tree is left");
            else
                expect_merge (&start, e.p, e.n, &cur, "delta batch entry");
        }
        fz_free (&e);

        /* Filtered (not full) entry keeping ns only == get_view. */
        uint8_t full0 = 0;
        char list[16];
        size_t nslen = strlen (ns);
        memcpy (list, ns, nslen + 1);
        CHECK (fa_table_batch_encode (tb, &full0, list, nslen + 1, 0, 0) == 0,
               "filtered batch_encode failed: %s", fa_ctx_errmsg (bc));
        e = one_entry (bc, id);
        {
            int rv = fa_table_get_view (tb, id, list, nslen + 1, 0);
            fz_buf v = rv == 1 ? fz_output (bc) : fz_copy ("", 0);
            fa_table *td = fa_table_new ();
            CHECK (td != NULL, "fa_table_new failed");
            if (start.n)
                CHECK (fa_table_apply (td, id, start.p, start.n, &wide, NULL, 0, 0, NULL)
                           == 1,
                       "installing the start tree failed");
            int rs = fa_table_get_view (td, id, list, nslen + 1, 0);
            fz_buf v0 = rs == 1 ? fz_output (fa_table_ctx (td)) : fz_copy ("", 0);
            int view_changed = !fz_eq (v.p, v.n, v0.p, v0.n);
            if (!net || !view_changed)
                CHECK (e.n == 0, "filtered batch has an entry for an unchanged view");
            else
                CHECK (rv == 1 ? fz_eq (e.p, e.n, v.p, v.n) : is_null (&e),
                       "filtered batch entry is not get_view");
            fz_free (&v);
            fz_free (&v0);
            fa_table_destroy (td);
        }
        fz_free (&e);

        /* encode(ids) = the current tree, whatever the batch. */
        CHECK (fa_table_encode (tb, &id, 1, NULL, NULL, 0, 0) == 0, "encode failed: %s",
               fa_ctx_errmsg (bc));
        e = one_entry (bc, id);
        CHECK (cur.n ? fz_eq (e.p, e.n, cur.p, cur.n) : is_null (&e),
               "encode entry is not the current tree");
        fz_free (&e);

        fa_table_batch_clear (tb);
        CHECK (fa_table_batch_ids (tb, bid, 4) == 0, "batch not empty after clear");
    }

    /* Remove: 1 iff the job has annotations; the table ends up empty. */
    CHECK (fa_table_remove (tb, id) == (cur.n > 0), "remove disagrees with the text");
    for (unsigned k = 0; start.n && k < NFILL; k++)
        CHECK (fa_table_remove (tb, filler_id (k)) == 1, "filler %u missing", k);
    CHECK (fa_table_count (tb) == 0, "count %zu after removing all", fa_table_count (tb));
    CHECK (fa_table_remove (tb, id) == 0, "removed twice");

    fa_table_destroy (ta);
    fa_table_destroy (tb);
    fa_table_destroy (tc);
    fa_table_destroy (tf);
    fz_free (&start);
    fz_free (&cur);
    fz_free (&at_fail);
    for (size_t i = 0; i < nseg; i++)
        fz_free (&segcopy[i]);
    return 0;
}
