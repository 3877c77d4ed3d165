/* fa_hist.c - every job's sched.t_estimate history (docs/accuracy.md).
 *
 * A hash of job id -> record: the distinct estimates a job was given while
 * pending, as pairs (t_estimate, at), at most FA_HIST_MAX kept (past that
 * the third oldest is dropped: the first two and the latest ones remain),
 * how many there were, and when the job started or left without starting.
 * Records changed since the store last took them are listed (dirty).
 *
 * It is in C because the scheduler's ANNOTATE hot path records here
 * (fa_table_annotate_sched): the scan of the patch, the number's
 * conversion and the append cost no Python work per request. All memory
 * goes through the history's ctx (fa_hist_memory counts it); a failed
 * allocation leaves everything as it was.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fa_int.h"

typedef struct rec {
    uint64_t id;
    double start, ended; /* NAN: not yet */
    uint32_t n;          /* distinct values ever given */
    uint32_t kept;       /* pairs in v */
    uint32_t cap;        /* pairs v has room for */
    uint32_t dirty;      /* in the dirty list */
    uint32_t written;    /* n when last dumped: the values after it are new */
    uint32_t used;       /* the slot holds a record */
    double *v;           /* kept pairs (t_estimate, at), oldest first */
} rec;

struct fa_hist {
    fa_ctx *ctx;
    rec *slots; /* open addressing of the records themselves (one cache line
                   * less per lookup than pointers to them); used = 0: empty */
    size_t cap, count;
    uint64_t *dirty;
    size_t ndirty, dirtycap;
    uint64_t bad;
    uint64_t version;
};

static inline uint64_t mix (uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return id;
}

#define SLOT(h, i) ((h)->slots[i].used ? &(h)->slots[i] : NULL)

static rec *find (const fa_hist *h, uint64_t id)
{
    if (!h->cap)
        return NULL;
    size_t mask = h->cap - 1;
    for (size_t i = mix (id) & mask;; i = (i + 1) & mask) {
        rec *r = &h->slots[i];
        if (!r->used)
            return NULL;
        if (r->id == id)
            return r;
    }
}

/* Copy record r into a free slot; returns where it is now. */
static rec *place (rec *slots, size_t cap, const rec *r)
{
    size_t mask = cap - 1;
    size_t i = mix (r->id) & mask;
    while (slots[i].used)
        i = (i + 1) & mask;
    slots[i] = *r;
    return &slots[i];
}

/* Room for one more record at load <= 1/2. 0 / -1 ENOMEM. */
static int reserve_one (fa_hist *h)
{
    if ((h->count + 1) * 2 <= h->cap)
        return 0;
    size_t ncap = h->cap ? h->cap * 2 : 64;
    rec *ns = fa_alloc (h->ctx, ncap * sizeof (*ns));
    if (!ns)
        return -1;
    memset (ns, 0, ncap * sizeof (*ns));
    for (size_t i = 0; i < h->cap; i++)
        if (h->slots[i].used)
            place (ns, ncap, &h->slots[i]);
    fa_free (h->ctx, h->slots);
    h->slots = ns;
    h->cap = ncap;
    return 0;
}

/* The record of id, created empty when absent. NULL: ENOMEM. */
static rec *get_or_add (fa_hist *h, uint64_t id)
{
    rec *r = find (h, id);
    if (r)
        return r;
    if (reserve_one (h) < 0)
        return NULL;
    rec fresh;
    memset (&fresh, 0, sizeof (fresh));
    fresh.id = id;
    fresh.start = fresh.ended = NAN;
    fresh.used = 1;
    h->count++;
    return place (h->slots, h->cap, &fresh);
}

static int mark (fa_hist *h, rec *r)
{
    h->version++;
    if (r->dirty)
        return 0;
    if (h->ndirty == h->dirtycap) {
        size_t ncap = h->dirtycap ? h->dirtycap * 2 : 256;
        uint64_t *nd = fa_realloc (h->ctx, h->dirty, ncap * sizeof (*nd));
        if (!nd)
            return -1;
        h->dirty = nd;
        h->dirtycap = ncap;
    }
    h->dirty[h->ndirty++] = r->id;
    r->dirty = 1;
    return 0;
}

static int estimate_at (fa_hist *h, uint64_t id, double value, double at);

fa_hist *fa_hist_new (void)
{
    fa_ctx *ctx = fa_ctx_new ();
    if (!ctx)
        return NULL;
    fa_hist *h = fa_alloc (ctx, sizeof (*h));
    if (!h) {
        fa_ctx_destroy (ctx);
        return NULL;
    }
    memset (h, 0, sizeof (*h));
    h->ctx = ctx;
    return h;
}

void fa_hist_destroy (fa_hist *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->cap; i++) {
        if (h->slots[i].used)
            fa_free (h->ctx, h->slots[i].v);
    }
    fa_free (h->ctx, h->slots);
    fa_free (h->ctx, h->dirty);
    fa_ctx *ctx = h->ctx;
    fa_free (ctx, h);
    fa_ctx_destroy (ctx);
}

fa_ctx *fa_hist_ctx (fa_hist *h)
{
    return h->ctx;
}

size_t fa_hist_count (const fa_hist *h)
{
    return h->count;
}

size_t fa_hist_memory (const fa_hist *h)
{
    return h->ctx->mem;
}

uint64_t fa_hist_version (const fa_hist *h)
{
    return h->version;
}

uint64_t fa_hist_bad (const fa_hist *h)
{
    return h->bad;
}

void fa_hist_add_bad (fa_hist *h, uint64_t n)
{
    h->bad += n;
}

int fa_hist_estimate (fa_hist *h, uint64_t id, double value, double at)
{
    fa_begin (h->ctx);
    if (!isfinite (value) || !isfinite (at))
        return fa_fail (h->ctx, EINVAL, "an estimate and its time must be finite numbers");
    return estimate_at (h, id, value, at);
}

/* fa_hist_estimate after its checks; at < 0: now (read only when recorded). */
static int estimate_at (fa_hist *h, uint64_t id, double value, double at)
{
    rec *r = find (h, id);
    if (r && (!isnan (r->start) || !isnan (r->ended)))
        return 0; /* only while pending */
    if (r && r->kept && r->v[2 * (r->kept - 1)] == value)
        return 0; /* the value in force already */
    if (!r) {
        r = get_or_add (h, id);
        if (!r)
            return -1;
    }
    if (r->kept == r->cap && r->cap < FA_HIST_MAX) {
        uint32_t ncap = r->cap ? r->cap * 2 : 2;
        if (ncap > FA_HIST_MAX)
            ncap = FA_HIST_MAX;
        double *nv = fa_realloc (h->ctx, r->v, (size_t) ncap * 2 * sizeof (double));
        if (!nv)
            return -1; /* a new record stays empty: it reads as none */
        r->v = nv;
        r->cap = ncap;
    }
    if (mark (h, r) < 0)
        return -1;
    if (at < 0) {
        struct timespec ts;
        clock_gettime (CLOCK_REALTIME, &ts);
        at = (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
    }
    if (r->kept == FA_HIST_MAX) { /* drop the third pair: the first two, the latest stay */
        memmove (r->v + 4, r->v + 6, (size_t) (2 * FA_HIST_MAX - 6) * sizeof (double));
        r->kept--;
    }
    r->v[2 * r->kept] = value;
    r->v[2 * r->kept + 1] = at;
    r->kept++;
    r->n++;
    return 1;
}

int fa_hist_end (fa_hist *h, uint64_t id, double at, int started)
{
    fa_begin (h->ctx);
    rec *r = find (h, id);
    if (!r || !r->kept || !isnan (r->start) || !isnan (r->ended))
        return 0;
    if (mark (h, r) < 0)
        return -1;
    if (started)
        r->start = at;
    else
        r->ended = at;
    return 1;
}

int fa_hist_get (const fa_hist *h, uint64_t id, fa_hist_info *info)
{
    rec *r = find (h, id);
    if (!r || !r->kept)
        return 0;
    info->pairs = r->v;
    info->kept = r->kept;
    info->n = r->n;
    info->start = r->start;
    info->ended = r->ended;
    return 1;
}

int fa_hist_load (fa_hist *h, uint64_t id, const double *pairs, uint32_t kept, uint32_t n,
                  double start, double ended)
{
    fa_begin (h->ctx);
    if (kept == 0 || kept > FA_HIST_MAX || n < kept)
        return fa_fail (h->ctx, EINVAL, "a history holds 1 to %d values (got %u of %u)",
                        FA_HIST_MAX, kept, n);
    double *nv = fa_alloc (h->ctx, (size_t) kept * 2 * sizeof (double));
    if (!nv)
        return -1;
    rec *r = get_or_add (h, id);
    if (!r) {
        fa_free (h->ctx, nv);
        return -1;
    }
    memcpy (nv, pairs, (size_t) kept * 2 * sizeof (double));
    fa_free (h->ctx, r->v);
    r->v = nv;
    r->cap = r->kept = kept;
    r->n = n;
    r->written = n;
    r->start = start;
    r->ended = ended;
    h->version++;
    return 0;
}

size_t fa_hist_ids (const fa_hist *h, uint64_t *ids, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < h->cap && k < cap; i++)
        if (h->slots[i].used && h->slots[i].kept)
            ids[k++] = h->slots[i].id;
    return k;
}

size_t fa_hist_dirty_count (const fa_hist *h)
{
    return h->ndirty;
}

size_t fa_hist_take_dirty (fa_hist *h, uint64_t *ids, size_t cap)
{
    size_t k = 0;
    while (h->ndirty && k < cap) {
        uint64_t id = h->dirty[--h->ndirty];
        rec *r = find (h, id);
        if (r)
            r->dirty = 0;
        ids[k++] = id;
    }
    return k;
}

int fa_hist_mark_dirty (fa_hist *h, uint64_t id)
{
    fa_begin (h->ctx);
    rec *r = find (h, id);
    if (!r)
        return 0;
    return mark (h, r) < 0 ? -1 : 1;
}

/* A decimal without exponent and with at most 15 significant digits (a
 * timestamp like 1796646430.25) converted exactly: the digits as an
 * integer below 2^53 divided by a power of ten below 10^22, both exact
 * doubles, one correctly rounded division (Clinger's fast path). NAN for
 * anything else (strtod_l then). */
static double fast_number (const char *s, size_t n)
{
    static const double p10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8,
                                 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    size_t i = 0;
    int neg = 0, digits = 0, frac = -1;
    uint64_t m = 0;
    if (i < n && s[i] == '-') {
        neg = 1;
        i++;
    }
    for (; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (m || c != '0')
                digits++;
            if (digits > 15)
                return NAN;
            m = m * 10 + (uint64_t) (c - '0');
            if (frac >= 0)
                frac++;
        } else if (c == '.' && frac < 0) {
            frac = 0;
        } else {
            return NAN; /* an exponent, or not a number */
        }
    }
    if (frac > 15)
        return NAN;
    double v = (double) m / p10[frac > 0 ? frac : 0];
    return neg ? -v : v;
}

/* Record the estimate a patch names (fa_sched_scan). Returns the caller's
 * bits: FA_EST_QUEUE / FA_SCAN_SLOW when it must look itself. */
static unsigned record_flags (fa_hist *h, uint64_t id, const char *patch, unsigned f,
                              const size_t out[4], double at);

static unsigned record_patch (fa_hist *h, uint64_t id, const char *patch, size_t len, double at)
{
    size_t out[4];
    unsigned f = fa_sched_scan (patch, len, out);
    return record_flags (h, id, patch, f, out, at);
}

/* Record what fa_sched_scan's flags and spans say of the patch. */
static unsigned record_flags (fa_hist *h, uint64_t id, const char *patch, unsigned f,
                              const size_t out[4], double at)
{
    unsigned back = f & (FA_QUEUE | FA_SCAN_SLOW);
    if (f & FA_SCAN_SLOW)
        return back;
    if (f & FA_EST_OTHER) {
        h->bad++;
    } else if (f & FA_EST_NUMBER) {
        char num[64];
        if (out[1] >= sizeof (num) || h->ctx->cloc == (locale_t) 0)
            return back | FA_SCAN_SLOW;
        memcpy (num, patch + out[0], out[1]);
        num[out[1]] = '\0';
        double v = fast_number (num, out[1]);
        if (isnan (v))
            v = strtod_l (num, NULL, h->ctx->cloc);
        if (!isfinite (v)) {
            h->bad++;
            return back;
        }
        if (estimate_at (h, id, v, at) < 0)
            return back | FA_SCAN_SLOW; /* ENOMEM: let the caller try (and fail) */
    }
    return back;
}

void fa_hist_prefetch (const fa_hist *h, uint64_t id)
{
    /* The job's slot, fetched while the merge runs: the lookup after it is
     * then a hit rather than a miss (the largest part of the recording's
     * cost with 10k jobs, measured). */
    if (h->cap)
        __builtin_prefetch (&h->slots[mix (id) & (h->cap - 1)]);
}

unsigned fa_hist_record_cap (fa_hist *h, uint64_t id, const char *patch, size_t len,
                             const fa_sched_cap *cap, double at)
{
    if (!cap->done)
        return fa_hist_note (h, id, patch, len, at); /* not the plain merge: scan */
    return record_flags (h, id, patch, cap->flags, cap->out, at);
}

unsigned fa_hist_note (fa_hist *h, uint64_t id, const char *text, size_t len, double at)
{
    if (len < 10 || !memmem (text, len, "t_estimate", 10))
        return 0;
    return record_patch (h, id, text, len, at);
}

/* ---- the store's form: records one after the other ------------------------
 * u64 id, f64 start, f64 ended, u32 n, u32 k | FULL, then k pairs of f64;
 * native byte order (the store is a file of this machine's). FULL (the top
 * bit of k): the pairs are the whole record; else they are the values
 * given since the record was last dumped, appended on load by the same
 * rule (so a job whose estimate moves writes 48 bytes, not its history). */
#define REC_HEAD 32
#define FULL 0x80000000u

static int dump_one (fa_ctx *ctx, rec *r, int all)
{
    char head[REC_HEAD];
    uint32_t fresh = r->n - r->written; /* values given since the last dump */
    uint32_t k = r->kept, word = k | FULL;
    /* Append when every new value is still kept: always while nothing was
     * ever dropped (kept < FA_HIST_MAX), else when they are among the
     * latest FA_HIST_MAX - 2 (drops take the third oldest). */
    if (!all && r->written && fresh <= (r->kept < FA_HIST_MAX ? r->kept : r->kept - 2)) {
        k = fresh;
        word = k;
    }
    memcpy (head, &r->id, 8);
    memcpy (head + 8, &r->start, 8);
    memcpy (head + 16, &r->ended, 8);
    memcpy (head + 24, &r->n, 4);
    memcpy (head + 28, &word, 4);
    if (fa_buf_put (ctx, &ctx->out, head, REC_HEAD) < 0)
        return -1;
    return fa_buf_put (ctx, &ctx->out, r->v + 2 * (r->kept - k), (size_t) k * 16);
}

long fa_hist_dump (fa_hist *h, int all)
{
    fa_ctx *ctx = h->ctx;
    fa_begin (ctx);
    ctx->out.len = 0;
    long k = 0;
    if (all) {
        for (size_t i = 0; i < h->cap; i++) {
            rec *r = SLOT (h, i);
            if (r && r->kept) {
                if (dump_one (ctx, r, 1) < 0)
                    return -1;
                k++;
            }
        }
        for (size_t i = 0; i < h->cap; i++)
            if (h->slots[i].used)
                h->slots[i].written = h->slots[i].n;
        for (size_t i = 0; i < h->ndirty; i++) {
            rec *r = find (h, h->dirty[i]);
            if (r)
                r->dirty = 0;
        }
        h->ndirty = 0;
        return k;
    }
    for (size_t i = 0; i < h->ndirty; i++) {
        rec *r = find (h, h->dirty[i]);
        if (r && r->kept) {
            if (dump_one (ctx, r, 0) < 0)
                return -1; /* nothing cleared: the next dump takes them all */
            k++;
        }
    }
    for (size_t i = 0; i < h->ndirty; i++) {
        rec *r = find (h, h->dirty[i]);
        if (r) {
            r->dirty = 0;
            r->written = r->n;
        }
    }
    h->ndirty = 0;
    return k;
}

/* A record written as new values only: append them to the job's record by
 * the same rule as fa_hist_estimate (the bound), then take its counters. */
static int append (fa_hist *h, uint64_t id, const char *p, uint32_t k, uint32_t n, double start,
                   double ended)
{
    rec *r = find (h, id);
    if (!r || !r->kept)
        return fa_fail (h->ctx, EINVAL, "estimate history of job %llu: new values without "
                        "the record before them", (unsigned long long) id);
    for (uint32_t i = 0; i < k; i++) {
        double v[2];
        memcpy (v, p + 16 * (size_t) i, 16);
        r->start = r->ended = NAN; /* a record being appended to was pending */
        if (estimate_at (h, id, v[0], v[1]) < 0)
            return -1;
        r = find (h, id);
    }
    r->n = n;
    r->written = n;
    r->start = start;
    r->ended = ended;
    r->dirty = 0;
    return 0;
}

/* Walk a dump, installing (or, redirty: marking dirty) its records. 0, or -1. */
static int walk (fa_hist *h, const char *buf, size_t len, int redirty)
{
    size_t off = 0;
    while (off < len) {
        uint64_t id;
        double start, ended;
        uint32_t n, kept, word;
        if (len - off < REC_HEAD)
            return fa_fail (h->ctx, EINVAL, "estimate history record truncated at byte %zu", off);
        memcpy (&id, buf + off, 8);
        memcpy (&start, buf + off + 8, 8);
        memcpy (&ended, buf + off + 16, 8);
        memcpy (&n, buf + off + 24, 4);
        memcpy (&word, buf + off + 28, 4);
        kept = word & ~FULL;
        off += REC_HEAD;
        if (kept > FA_HIST_MAX || (len - off) / 16 < kept || ((word & FULL) && kept == 0))
            return fa_fail (h->ctx, EINVAL, "estimate history record of job %llu is corrupt",
                            (unsigned long long) id);
        if (redirty) {
            rec *r = find (h, id);
            if (r)
                r->written = 0; /* the next dump writes it whole */
            if (fa_hist_mark_dirty (h, id) < 0)
                return -1;
        } else if (word & FULL) {
            double pairs[2 * FA_HIST_MAX];
            memcpy (pairs, buf + off, (size_t) kept * 16);
            if (kept && fa_hist_load (h, id, pairs, kept, n, start, ended) < 0)
                return -1;
        } else if (append (h, id, buf + off, kept, n, start, ended) < 0) {
            return -1;
        }
        off += (size_t) kept * 16;
    }
    return 0;
}

int fa_hist_load_dump (fa_hist *h, const char *buf, size_t len)
{
    fa_begin (h->ctx);
    int r = walk (h, buf, len, 0);
    /* what was loaded is in the store: nothing of it is dirty */
    for (size_t i = 0; i < h->ndirty; i++) {
        rec *x = find (h, h->dirty[i]);
        if (x)
            x->dirty = 0;
    }
    h->ndirty = 0;
    return r;
}

int fa_hist_redirty_dump (fa_hist *h, const char *buf, size_t len)
{
    fa_begin (h->ctx);
    return walk (h, buf, len, 1);
}

void fa_hist_dump_done (fa_hist *h)
{
    if (h->ctx->out.cap > 65536)
        fa_buf_free (h->ctx, &h->ctx->out);
    else
        h->ctx->out.len = 0;
}

/* The estimate in force at t (NAN: none yet, or it was among the dropped). */
static double in_force (const rec *r, double t)
{
    const double *v = r->v;
    if (!r->kept || v[1] > t)
        return NAN;
    uint32_t i = r->kept - 1;
    while (i > 0 && v[2 * i + 1] > t)
        i--;
    if (i == 1 && r->n > r->kept)
        return NAN; /* the dropped values came after the second */
    return v[2 * i];
}

long fa_hist_rows (fa_hist *h, const double *horizons, size_t nh)
{
    fa_ctx *ctx = h->ctx;
    fa_begin (ctx);
    ctx->out.len = 0;
    size_t m = 0;
    for (size_t i = 0; i < h->cap; i++) {
        rec *r = SLOT (h, i);
        if (r && r->kept && (!isnan (r->start) || !isnan (r->ended)))
            m++;
    }
    size_t width = FA_HIST_ROW + nh;
    if (fa_buf_reserve (ctx, &ctx->out, m * 8 + m * width * 8) < 0)
        return -1;
    char *ids = ctx->out.p;
    double *vals = (double *) (void *) (ctx->out.p + m * 8); /* 8-aligned: malloc'd, m*8 */
    size_t k = 0;
    for (size_t i = 0; i < h->cap && k < m; i++) {
        rec *r = SLOT (h, i);
        if (!r || !r->kept || (isnan (r->start) && isnan (r->ended)))
            continue;
        memcpy (ids + 8 * k, &r->id, 8);
        double *row = vals + k * width;
        row[0] = r->start;
        row[1] = r->ended;
        row[2] = (double) r->n;
        row[3] = r->v[0];
        row[4] = r->v[1];
        row[5] = r->v[2 * (r->kept - 1)];
        row[6] = r->v[2 * (r->kept - 1) + 1];
        for (size_t j = 0; j < nh; j++) {
            double e = isnan (r->start) ? NAN : in_force (r, r->start - horizons[j]);
            row[FA_HIST_ROW + j] = isnan (e) ? NAN : r->start - e;
        }
        k++;
    }
    ctx->out.len = m * 8 + m * width * 8;
    return (long) m;
}
