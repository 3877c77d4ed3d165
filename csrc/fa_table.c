/* fa_table.c - the job table: id -> canonical annotation text.
 *
 * Slots of an open-addressing hash (linear probing, backward-shift delete,
 * load <= 3/4) hold the 64-bit id and a pointer to one allocation
 * [uint32 length][canonical text]. An update parses the patch, merges it
 * with the stored text into the ctx output (a plain patch over the stored
 * key layout is merged straight from its text: fa_merge_plain), compares
 * (memcmp) and installs the new text: in place when it fits the old
 * allocation. Every allocation that can fail is made before anything
 * changes, so a failed update leaves the table as it was.
 *
 * Batch tracking: while on, the first change of a job records its
 * pre-image (a copy of its text, or none) in first-touch order; the net
 * changed jobs are those whose current text differs from the pre-image.
 */
#include <errno.h>
#include <stdlib.h>

#include "fa_int.h"

typedef struct slot {
    uint64_t id;
    char *text; /* [uint32 len][bytes]; NULL = empty slot */
} slot;

typedef struct pre {
    uint64_t id;
    char *text; /* pre-image [uint32 len][bytes], NULL = none */
    char *cur;  /* the job's current text (NULL = none), kept so by install:
                   encoding a batch then needs no hash lookup per job */
    uint32_t plen; /* pre-image length: most net-change checks read no text */
} pre;

struct fa_table {
    fa_ctx *ctx;
    slot *slots;
    size_t cap, count; /* cap: power of 2 or 0 */
    int tracking;
    pre *pres;
    size_t npre, precap;
    uint32_t *preidx; /* hash id -> index + 1 into pres */
    size_t preicap;
    int staged;
    uint64_t staged_id;
    fa_buf stage;
    fa_limits lim; /* defaults of fa_table_annotate */
    fa_sched_cap *note; /* fa_table_annotate_sched: what the plain merge saw, else NULL */
};

static inline size_t tlen (const char *t)
{
    uint32_t n;
    memcpy (&n, t, 4);
    return n;
}

static inline uint64_t mix (uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return id;
}

static slot *find (const fa_table *t, uint64_t id)
{
    if (!t->cap)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = mix (id) & mask;; i = (i + 1) & mask) {
        slot *s = &t->slots[i];
        if (!s->text)
            return NULL;
        if (s->id == id)
            return s;
    }
}

/* Grow so that one more entry keeps the load <= 3/4. 0 / -1 ENOMEM. */
static int reserve_one (fa_table *t)
{
    if ((t->count + 1) * 4 <= t->cap * 3)
        return 0;
    size_t ncap = t->cap ? t->cap * 2 : 64;
    slot *ns = fa_alloc (t->ctx, ncap * sizeof (slot));
    if (!ns)
        return -1;
    memset (ns, 0, ncap * sizeof (slot));
    for (size_t i = 0; i < t->cap; i++) {
        slot *s = &t->slots[i];
        if (!s->text)
            continue;
        size_t j = mix (s->id) & (ncap - 1);
        while (ns[j].text)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    fa_free (t->ctx, t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

/* Insert (id absent, capacity reserved). */
static void insert (fa_table *t, uint64_t id, char *text)
{
    size_t mask = t->cap - 1, i = mix (id) & mask;
    while (t->slots[i].text)
        i = (i + 1) & mask;
    t->slots[i].id = id;
    t->slots[i].text = text;
    t->count++;
}

/* Delete the slot s (backward-shift: no tombstones). */
static void delete_slot (fa_table *t, slot *s)
{
    size_t mask = t->cap - 1, i = (size_t)(s - t->slots), j = i;
    fa_free (t->ctx, s->text);
    t->slots[i].text = NULL;
    for (;;) {
        j = (j + 1) & mask;
        if (!t->slots[j].text)
            break;
        size_t home = mix (t->slots[j].id) & mask;
        /* move j to i if its home is not in (i, j] cyclically */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            t->slots[i] = t->slots[j];
            t->slots[j].text = NULL;
            i = j;
        }
    }
    t->count--;
}

static char *text_new (fa_ctx *ctx, const char *s, size_t n)
{
    char *t = fa_alloc (ctx, n + 4);
    if (!t)
        return NULL;
    uint32_t n32 = (uint32_t)n;
    memcpy (t, &n32, 4);
    memcpy (t + 4, s, n);
    return t;
}

/* ---- batch pre-images ---- */

static pre *pre_find (const fa_table *t, uint64_t id)
{
    if (!t->preicap)
        return NULL;
    size_t mask = t->preicap - 1;
    for (size_t i = mix (id) & mask;; i = (i + 1) & mask) {
        uint32_t v = t->preidx[i];
        if (!v)
            return NULL;
        if (t->pres[v - 1].id == id)
            return &t->pres[v - 1];
    }
}

/* Make room for one more pre-image record. 0 / -1 ENOMEM. */
static int pre_reserve (fa_table *t)
{
    if (t->npre == t->precap) {
        size_t ncap = t->precap ? t->precap * 2 : 64;
        pre *np = fa_realloc (t->ctx, t->pres, ncap * sizeof (pre));
        if (!np)
            return -1;
        t->pres = np;
        t->precap = ncap;
    }
    if ((t->npre + 1) * 2 > t->preicap) {
        size_t ncap = t->preicap ? t->preicap * 2 : 128;
        uint32_t *ni = fa_alloc (t->ctx, ncap * sizeof (uint32_t));
        if (!ni)
            return -1;
        memset (ni, 0, ncap * sizeof (uint32_t));
        for (size_t k = 0; k < t->npre; k++) {
            size_t j = mix (t->pres[k].id) & (ncap - 1);
            while (ni[j])
                j = (j + 1) & (ncap - 1);
            ni[j] = (uint32_t)(k + 1);
        }
        fa_free (t->ctx, t->preidx);
        t->preidx = ni;
        t->preicap = ncap;
    }
    return 0;
}

/* Prepare the pre-image record of id (current text cur, may be NULL):
 * *rec = 1 and *copy set if one must be appended; *found = its record if
 * it has one already. 0 / -1 ENOMEM. */
static int pre_prepare (fa_table *t, uint64_t id, const char *cur, int *rec, char **copy,
                        pre **found)
{
    *rec = 0;
    *copy = NULL;
    *found = t->npre ? pre_find (t, id) : NULL;
    if (!t->tracking || *found)
        return 0;
    if (pre_reserve (t) < 0)
        return -1;
    if (cur && !(*copy = text_new (t->ctx, cur + 4, tlen (cur))))
        return -1;
    *rec = 1;
    return 0;
}

static void pre_append (fa_table *t, uint64_t id, char *copy)
{
    size_t mask = t->preicap - 1, j = mix (id) & mask;
    t->pres[t->npre].id = id;
    t->pres[t->npre].text = copy;
    t->pres[t->npre].cur = NULL;
    t->pres[t->npre].plen = copy ? (uint32_t)tlen (copy) : 0;
    t->npre++;
    while (t->preidx[j])
        j = (j + 1) & mask;
    t->preidx[j] = (uint32_t)t->npre;
}

/* ---- install a computed text ---- */

/* Replace job id's text by s[0..n) (n 0: remove); sl is find (t, id),
 * already looked up by the caller. Nothing changes on failure. 0 / -1
 * ENOMEM. */
static int install_at (fa_table *t, slot *sl, uint64_t id, const char *s, size_t n)
{
    char *fresh = NULL, *copy = NULL;
    pre *found;
    int rec;
    if (n && !sl && reserve_one (t) < 0)
        return -1;
    /* rewrite in place when the new text fits and wastes little */
    size_t have = sl ? fa_usable (sl->text) : 0;
    if (n && !(have >= n + 4 && have <= 2 * (n + 4) + 64)) {
        if (!(fresh = text_new (t->ctx, s, n)))
            return -1;
    }
    if (pre_prepare (t, id, sl ? sl->text : NULL, &rec, &copy, &found) < 0) {
        fa_free (t->ctx, fresh);
        return -1;
    }
    /* nothing can fail from here on */
    if (rec) {
        pre_append (t, id, copy);
        found = &t->pres[t->npre - 1];
    }
    char *now = fresh;
    if (n == 0) {
        if (sl)
            delete_slot (t, sl);
    }
    else if (!sl)
        insert (t, id, fresh);
    else if (fresh) {
        fa_free (t->ctx, sl->text);
        sl->text = fresh;
    }
    else {
        uint32_t n32 = (uint32_t)n;
        memcpy (sl->text, &n32, 4);
        memmove (sl->text + 4, s, n);
        now = sl->text;
    }
    if (found)
        found->cur = now;
    return 0;
}

static int install (fa_table *t, uint64_t id, const char *s, size_t n)
{
    return install_at (t, find (t, id), id, s, n);
}

/* ---- public ---- */

fa_table *fa_table_new (void)
{
    fa_ctx *ctx = fa_ctx_new ();
    if (!ctx)
        return NULL;
    fa_table *t = fa_alloc (ctx, sizeof (*t));
    if (!t) {
        fa_ctx_destroy (ctx);
        return NULL;
    }
    memset (t, 0, sizeof (*t));
    t->ctx = ctx;
    t->lim.max_depth = 64; /* the instance owner's limits (docs/limits.md) */
    t->lim.max_key_bytes = 256;
    t->lim.max_object_keys = 1024;
    t->lim.strict_keys = 1;
    return t;
}

void fa_table_destroy (fa_table *t)
{
    if (!t)
        return;
    fa_ctx *ctx = t->ctx;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].text)
            fa_free (ctx, t->slots[i].text);
    fa_free (ctx, t->slots);
    for (size_t i = 0; i < t->npre; i++)
        fa_free (ctx, t->pres[i].text);
    fa_free (ctx, t->pres);
    fa_free (ctx, t->preidx);
    fa_buf_free (ctx, &t->stage);
    fa_free (ctx, t);
    fa_ctx_destroy (ctx);
}

fa_ctx *fa_table_ctx (fa_table *t)
{
    return t->ctx;
}

size_t fa_table_count (const fa_table *t)
{
    return t->count;
}

size_t fa_table_memory (const fa_table *t)
{
    return t->ctx->mem;
}

/* The apply of one patch; the ctx is already begun. */
static int apply1 (fa_table *t, uint64_t id, const char *patch, size_t len,
                   const fa_limits *lim, const char *ns, size_t nslen, int flags,
                   fa_info *info)
{
    fa_ctx *ctx = t->ctx;
    fa_node *p;
    slot *sl = find (t, id);
    const char *old = NULL;
    size_t olen = 0;
    if (sl && !(flags & FA_REPLACE)) {
        old = sl->text + 4;
        olen = tlen (sl->text);
    }
    ctx->out.len = 0;
    if (!(olen && fa_merge_plain (ctx, &ctx->out, patch, len, old, olen, lim, t->note))) {
        if (fa_parse_object (ctx, patch, len, lim, "annotations", &p) < 0)
            return -1;
        if (fa_merge_text (ctx, &ctx->out, old, olen, p, lim) < 0)
            return -1;
    }
    if (flags & FA_REPLACE && sl) { /* compare with what is really stored */
        old = sl->text + 4;
        olen = tlen (sl->text);
    }
    const char *nt = ctx->out.p;
    size_t nlen = ctx->out.len;
    int changed = !(nlen == olen && (nlen == 0 || memcmp (nt, old, nlen) == 0));
    if (info) {
        info->changed = changed;
        info->old_len = olen;
        info->new_len = nlen;
        info->old_ns_len = 0;
        info->new_ns_len = 0;
        if (ns) {
            fa_key *k;
            size_t nk;
            if (fa_ns_list (ctx, ns, nslen, &k, &nk) < 0)
                return -1;
            if (nk) {
                info->old_ns_len = fa_top_value_len (old, olen, k[0].p, k[0].n);
                info->new_ns_len = fa_top_value_len (nt, nlen, k[0].p, k[0].n);
            }
        }
    }
    if (flags & FA_DRYRUN) {
        t->stage.len = 0;
        if (fa_buf_put (ctx, &t->stage, nt, nlen) < 0)
            return -1;
        t->staged = 1 + changed;
        t->staged_id = id;
        return changed;
    }
    /* sl is still id's slot: parsing and merging do not touch the table */
    if (changed && install_at (t, sl, id, nt, nlen) < 0)
        return -1;
    return changed;
}

int fa_table_apply (fa_table *t, uint64_t id, const char *patch, size_t len,
                    const fa_limits *lim, const char *ns, size_t nslen, int flags,
                    fa_info *info)
{
    fa_begin (t->ctx);
    t->staged = 0;
    return apply1 (t, id, patch, len, lim, ns, nslen, flags, info);
}

int fa_table_annotate (fa_table *t, uint64_t id, const char *patch, size_t len)
{
    fa_begin (t->ctx);
    t->staged = 0;
    return apply1 (t, id, patch, len, &t->lim, NULL, 0, 0, NULL);
}

void fa_table_set_limits (fa_table *t, const fa_limits *lim)
{
    t->lim = *lim;
}

int fa_table_commit (fa_table *t)
{
    fa_begin (t->ctx);
    if (!t->staged)
        return fa_fail (t->ctx, EINVAL, "nothing staged");
    int changed = t->staged == 2;
    if (changed && install (t, t->staged_id, t->stage.p, t->stage.len) < 0)
        return -1;
    t->staged = 0;
    return 0;
}

int fa_table_apply_many (fa_table *t, const uint64_t *ids, const char *buf,
                         const size_t *offsets, size_t n, const fa_limits *lim,
                         size_t *nchanged, size_t *failed_index)
{
    size_t changed = 0;
    t->staged = 0;
    for (size_t i = 0; i < n; i++) {
        fa_begin (t->ctx);
        if (offsets[i + 1] < offsets[i]) {
            fa_fail (t->ctx, EINVAL, "offsets must not decrease");
            goto error;
        }
        int r = apply1 (t, ids[i], buf + offsets[i], offsets[i + 1] - offsets[i], lim, NULL,
                        0, 0, NULL);
        if (r < 0) {
            if (failed_index)
                *failed_index = i;
            goto error;
        }
        changed += (size_t)r;
        continue;
error:
        if (failed_index)
            *failed_index = i;
        if (nchanged)
            *nchanged = changed;
        return -1;
    }
    if (nchanged)
        *nchanged = changed;
    return 0;
}

int fa_table_apply_spans (fa_table *t, const uint64_t *ids, const fa_span *spans, size_t n,
                          const fa_limits *lim, size_t *nchanged, size_t *failed_index)
{
    size_t changed = 0, i;
    t->staged = 0;
    for (i = 0; i < n; i++) {
        fa_begin (t->ctx);
        int r = apply1 (t, ids[i], spans[i].p, spans[i].n, lim, NULL, 0, 0, NULL);
        if (r < 0) {
            if (failed_index)
                *failed_index = i;
            if (nchanged)
                *nchanged = changed;
            return -1;
        }
        changed += (size_t)r;
    }
    if (nchanged)
        *nchanged = changed;
    return 0;
}

int fa_table_get (fa_table *t, uint64_t id, const char **text, size_t *len)
{
    slot *sl = find (t, id);
    if (!sl) {
        *text = NULL;
        *len = 0;
        return 0;
    }
    *text = sl->text + 4;
    *len = tlen (sl->text);
    return 1;
}

int fa_table_get_view (fa_table *t, uint64_t id, const char *ns_list, size_t ns_len,
                       int exclude)
{
    fa_ctx *ctx = t->ctx;
    fa_key *k;
    size_t nk;
    fa_begin (ctx);
    ctx->out.len = 0;
    slot *sl = find (t, id);
    if (!sl)
        return 0;
    if (fa_ns_list (ctx, ns_list, ns_len, &k, &nk) < 0)
        return -1;
    int r = fa_filter_text (ctx, &ctx->out, sl->text + 4, tlen (sl->text), k, nk, exclude);
    if (r < 0)
        ctx->out.len = 0;
    return r;
}

int fa_table_remove (fa_table *t, uint64_t id)
{
    fa_begin (t->ctx);
    t->staged = 0;
    if (!find (t, id))
        return 0;
    if (install (t, id, NULL, 0) < 0)
        return -1;
    return 1;
}

size_t fa_table_ids (fa_table *t, uint64_t *ids, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].text)
            continue;
        if (k < cap)
            ids[k] = t->slots[i].id;
        k++;
    }
    return k;
}

void fa_table_track (fa_table *t, int on)
{
    t->tracking = !!on;
}

size_t fa_table_batch_count (const fa_table *t)
{
    return t->npre;
}

/* Current text of a pre-image record's job; its length in *n. */
static const char *current (fa_table *t, uint64_t id, size_t *n)
{
    slot *sl = find (t, id);
    *n = sl ? tlen (sl->text) : 0;
    return sl ? sl->text + 4 : NULL;
}

static int net_changed (const pre *r, const char **cur, size_t *cn)
{
    *cur = r->cur ? r->cur + 4 : NULL;
    *cn = r->cur ? tlen (r->cur) : 0;
    if (r->plen != *cn)
        return 1;
    return *cn && memcmp (r->text + 4, *cur, *cn) != 0;
}

size_t fa_table_batch_ids (fa_table *t, uint64_t *ids, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < t->npre; i++) {
        const char *cur;
        size_t cn;
        if (!net_changed (&t->pres[i], &cur, &cn))
            continue;
        if (k < cap)
            ids[k] = t->pres[i].id;
        k++;
    }
    return k;
}

/* Append "[id," (",[id," unless first) to the output, reserving extra
 * more bytes for what follows. */
static int put_entry_head (fa_ctx *ctx, fa_buf *b, int first, uint64_t id, size_t extra)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + id % 10);
        id /= 10;
    } while (id);
    if (fa_buf_reserve (ctx, b, 48 + extra) < 0)
        return -1;
    char *o = b->p + b->len;
    if (!first)
        *o++ = ',';
    *o++ = '[';
    fa_copy (o, tmp + i, (size_t)(24 - i));
    o += 24 - i;
    *o++ = ',';
    b->len = (size_t)(o - b->p);
    return 0;
}

/* Where entry `at` (index among the net-changed jobs) and those before it
 * left out ended up: cuts[0..n) starts, cuts[n..2n) ends (fa.h). `pending`:
 * first index whose start is not known yet; `last_end`: end of the last
 * entry written (1 = just after '[' when none was). */
typedef struct cut_state {
    uint64_t *cuts;
    size_t n, pending, last_end;
} cut_state;

static void cut_entry (cut_state *c, size_t at, int present, size_t start, size_t end)
{
    if (!c->cuts || at >= c->n)
        return;
    if (present) {
        for (; c->pending <= at; c->pending++)
            c->cuts[c->pending] = start;
        c->last_end = end;
    }
    c->cuts[c->n + at] = c->last_end;
}

static void cut_finish (cut_state *c, size_t close_at)
{
    if (!c->cuts)
        return;
    for (; c->pending < c->n; c->pending++)
        c->cuts[c->pending] = close_at;
}

int fa_table_batch_encode (fa_table *t, const uint8_t *full, const char *ns_list,
                           size_t ns_len, int exclude, int delta)
{
    return fa_table_batch_encode_cuts (t, full, ns_list, ns_len, exclude, delta, NULL, 0);
}

int fa_table_batch_encode_cuts (fa_table *t, const uint8_t *full, const char *ns_list,
                                size_t ns_len, int exclude, int delta, uint64_t *cuts,
                                size_t n)
{
    fa_ctx *ctx = t->ctx;
    fa_buf *b = &ctx->out;
    fa_key *k = NULL;
    size_t nk = 0, i, idx = 0;
    int first = 1;
    cut_state cs = { cuts, n, 0, 1 };
    fa_begin (ctx);
    b->len = 0;
    if (cuts) {
        size_t changed = fa_table_batch_ids (t, NULL, 0);
        if (changed != n) {
            return fa_fail (ctx, EINVAL, "cuts sized for %zu entries, the batch has %zu", n,
                            changed);
        }
    }
    if (fa_ns_list (ctx, ns_list, ns_len, &k, &nk) < 0 || fa_buf_putc (ctx, b, '[') < 0)
        goto error;
    for (i = 0; i < t->npre; i++) {
        const pre *r = &t->pres[i];
        /* the texts are scattered over the heap: ask for them early */
        if (i + 8 < t->npre) {
            const char *ahead = t->pres[i + 8].cur;
            if (ahead) {
                __builtin_prefetch (ahead);
                __builtin_prefetch (ahead + 64);
            }
        }
        const char *cur, *pv = r->text ? r->text + 4 : NULL;
        size_t cn, pn = r->plen;
        if (!net_changed (r, &cur, &cn))
            continue;
        size_t at = idx++;
        int whole = full ? full[at] != 0 : 1;
        fa_mark m = fa_arena_mark (ctx);
        if (!whole) { /* filtered views of both, side by side in tmp */
            ctx->tmp.len = 0;
            if (fa_filter_text (ctx, &ctx->tmp, pv, pn, k, nk, exclude) < 0)
                goto error;
            size_t a = ctx->tmp.len;
            if (fa_filter_text (ctx, &ctx->tmp, cur, cn, k, nk, exclude) < 0)
                goto error;
            pv = ctx->tmp.p;
            pn = a;
            cur = ctx->tmp.p + a;
            cn = ctx->tmp.len - a;
            if (pn == cn && (pn == 0 || memcmp (pv, cur, pn) == 0)) {
                fa_arena_release (ctx, m);
                cut_entry (&cs, at, 0, 0, 0);
                continue; /* this view did not change */
            }
        }
        size_t entry_start = b->len;
        if (put_entry_head (ctx, b, first, r->id, cn + 1) < 0)
            goto error;
        if (delta) {
            int d = fa_diff_trusted (ctx, b, pv, pn, cur, cn);
            if (d < 0)
                goto error;
            if (d == 0) {
                /* same value, other text (a key deleted and re-added moves
                 * to the end): nothing for a delta reader to apply */
                b->len = entry_start;
                fa_arena_release (ctx, m);
                cut_entry (&cs, at, 0, 0, 0);
                continue;
            }
            if (fa_buf_putc (ctx, b, ']') < 0)
                goto error;
        }
        else { /* room reserved by put_entry_head */
            if (cn) {
                memcpy (b->p + b->len, cur, cn);
                b->len += cn;
            }
            else {
                memcpy (b->p + b->len, "null", 4);
                b->len += 4;
            }
            b->p[b->len++] = ']';
        }
        cut_entry (&cs, at, 1, entry_start + (first ? 0 : 1), b->len);
        first = 0;
        fa_arena_release (ctx, m);
    }
    cut_finish (&cs, b->len);
    if (fa_buf_putc (ctx, b, ']') < 0)
        goto error;
    fa_arena_reset (ctx);
    return 0;
error:
    b->len = 0;
    fa_arena_reset (ctx);
    return -1;
}

void fa_table_batch_clear (fa_table *t)
{
    for (size_t i = 0; i < t->npre; i++)
        fa_free (t->ctx, t->pres[i].text);
    t->npre = 0;
    if (t->preicap)
        memset (t->preidx, 0, t->preicap * sizeof (uint32_t));
    /* a huge batch must not pin its records: drop big arrays */
    if (t->precap > 65536) {
        fa_free (t->ctx, t->pres);
        fa_free (t->ctx, t->preidx);
        t->pres = NULL;
        t->preidx = NULL;
        t->precap = t->preicap = 0;
    }
}

int fa_table_encode (fa_table *t, const uint64_t *ids, size_t n, const uint8_t *full,
                     const char *ns_list, size_t ns_len, int exclude)
{
    fa_ctx *ctx = t->ctx;
    fa_buf *b = &ctx->out;
    fa_key *k = NULL;
    size_t nk = 0;
    fa_begin (ctx);
    b->len = 0;
    if (fa_ns_list (ctx, ns_list, ns_len, &k, &nk) < 0 || fa_buf_putc (ctx, b, '[') < 0)
        goto error;
    for (size_t i = 0; i < n; i++) {
        size_t cn;
        const char *cur = current (t, ids[i], &cn);
        if (put_entry_head (ctx, b, i == 0, ids[i], 0) < 0)
            goto error;
        int r;
        if (!full || full[i])
            r = cn ? fa_buf_put (ctx, b, cur, cn) : 0;
        else
            r = fa_filter_text (ctx, b, cur, cn, k, nk, exclude);
        if (r < 0)
            goto error;
        if (r == 0 && !(cn && (!full || full[i])) && fa_buf_put (ctx, b, "null", 4) < 0)
            goto error;
        if (fa_buf_putc (ctx, b, ']') < 0)
            goto error;
    }
    if (fa_buf_putc (ctx, b, ']') < 0)
        goto error;
    fa_arena_reset (ctx);
    return 0;
error:
    b->len = 0;
    fa_arena_reset (ctx);
    return -1;
}

int fa_table_annotate_sched (fa_table *t, fa_hist *h, uint64_t id, const char *patch,
                             size_t len, double at)
{
    fa_sched_cap cap;
    cap.done = 0;
    if (h)
        fa_hist_prefetch (h, id);
    t->note = h ? &cap : NULL;
    int r = fa_table_annotate (t, id, patch, len);
    t->note = NULL;
    if (r <= 0 || h == NULL)
        return r;
    return 1 | (int) (fa_hist_record_cap (h, id, patch, len, &cap, at) << 1);
}
