/* fa_merge.c - merge (docs/data-model.md), diff and namespace views over canonical text.
 *
 * A stored job is canonical compact JSON (trusted: the core wrote it), so
 * it is walked with a light scanner instead of being parsed: members the
 * patch does not touch are copied as raw spans, members it touches are
 * replaced, deleted or merged recursively, and the patch's new keys are
 * appended in patch order. Empty objects are pruned on the way back up and
 * every object written is checked against max_object_keys.
 */
#include <errno.h>
#include <stdint.h>

#include "fa_int.h"

/* ---- scanning trusted canonical text ---- */

/* p on an opening quote: the position after the closing quote (inline,
 * 16 or 8 bytes at a time: strings are short). */
static inline const char *skip_str (const char *p, const char *end)
{
    p++;
    for (;;) {
        p = fa_scan_quote (p, end);
        if (p >= end)
            return end;
        if (*p == '"')
            return p + 1;
        p += 2; /* an escape: the next byte is never the end of the string */
    }
}

/* p on '{' or '[': the position after the container. */
static const char *skip_container (const char *p, const char *end)
{
    int d = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            p = skip_str (p, end);
            continue;
        }
        if (c == '{' || c == '[')
            d++;
        else if (c == '}' || c == ']') {
            if (--d == 0)
                return p + 1;
        }
        p++;
    }
    return end;
}

/* p at a number or literal: the ',' '}' or ']' after it (or end), a word
 * at a time (numbers are often 10-20 bytes). */
static inline const char *skip_scalar (const char *p, const char *end)
{
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t w, a, b, c;
        memcpy (&w, p, 8);
        a = w ^ 0x2c2c2c2c2c2c2c2cULL;
        b = w ^ 0x7d7d7d7d7d7d7d7dULL;
        c = w ^ 0x5d5d5d5d5d5d5d5dULL;
        uint64_t hit = (((a - 0x0101010101010101ULL) & ~a) | ((b - 0x0101010101010101ULL) & ~b)
                        | ((c - 0x0101010101010101ULL) & ~c))
                       & 0x8080808080808080ULL;
        if (hit)
            return p + (__builtin_ctzll (hit) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != ',' && *p != '}' && *p != ']')
        p++;
    return p;
}

/* p at a value: the position after it. */
static inline __attribute__ ((always_inline)) const char *skip_value (const char *p,
                                                                      const char *end)
{
    char c = *p;
    if (c == '"')
        return skip_str (p, end);
    if (c == '{' || c == '[')
        return skip_container (p, end);
    return skip_scalar (p, end);
}

/* Iterate the members of a canonical object text. */
typedef struct member_it {
    const char *q, *end;
} member_it;

static inline void it_init (member_it *it, const char *s, size_t slen)
{
    it->q = s + 1;
    it->end = s + slen - 1; /* the closing '}' */
}

/* Next member: key span (without quotes), value span. 0 at the end. */
static inline int it_next (member_it *it, const char **k, size_t *kn, const char **v,
                           size_t *vn)
{
    const char *q = it->q, *end = it->end;
    if (q >= end)
        return 0;
    const char *ke = skip_str (q, end);
    *k = q + 1;
    *kn = (size_t)(ke - q - 2);
    const char *vs = ke + 1; /* after ':' */
    const char *ve = skip_value (vs, end);
    *v = vs;
    *vn = (size_t)(ve - vs);
    it->q = ve < end ? ve + 1 : ve; /* skip ',' */
    return 1;
}

/* Append ["," if count] "key": */
static inline int put_key (fa_ctx *ctx, fa_buf *b, long count, const char *k, size_t kn)
{
    if (fa_buf_reserve (ctx, b, kn + 4) < 0)
        return -1;
    char *o = b->p + b->len;
    if (count)
        *o++ = ',';
    *o++ = '"';
    fa_copy (o, k, kn);
    o += kn;
    *o++ = '"';
    *o++ = ':';
    b->len = (size_t)(o - b->p);
    return 0;
}

/* Does the canonical object at v have exactly the keys of the plain node
 * p, in p's order? Then merging p into it gives p's source span, and *endp
 * is set after the object. */
static int same_keys (const char *v, const char *end, const fa_node *p, const char **endp)
{
    const char *q = v + 1;
    uint32_t i = 0;
    while (q < end && *q != '}') {
        if (i == p->n)
            return 0;
        const char *k = q + 1, *ke = skip_str (q, end);
        size_t kn = (size_t)(ke - 1 - k);
        const fa_member *m = &p->m[i++];
        if (m->klen != kn
            || !fa_key_same (m->key, m->kw, m->klen, k, fa_key_word_b (k, kn, end), kn))
            return 0;
        const char *ve = skip_value (ke + 1, end);
        q = ve < end && *ve == ',' ? ve + 1 : ve;
    }
    if (i != p->n)
        return 0;
    *endp = q < end ? q + 1 : end;
    return 1;
}

/* Append ["," if count] "key":text (kspan bytes from the stored key's
 * opening quote to after its ':'). 0 / -1. */
static inline int put_member (fa_ctx *ctx, fa_buf *b, long count, const char *q, size_t kspan,
                              const char *text, size_t tlen)
{
    if (fa_buf_reserve (ctx, b, kspan + tlen + 1) < 0)
        return -1;
    char *o = b->p + b->len;
    *o = ',';
    o += count != 0;
    fa_copy (o, q, kspan);
    o += kspan;
    fa_copy (o, text, tlen);
    b->len = (size_t)(o + tlen - b->p);
    return 0;
}

/* Merge p into the canonical object at s (s NULL: none); *endp is set to
 * the position after the object. See fa_merge_text. */
static long merge_obj (fa_ctx *ctx, fa_buf *b, const char *s, const char *end,
                       const char **endp, fa_node *p, const fa_limits *lim)
{
    size_t start = b->len;
    long count = 0;
    uint32_t left = p->n; /* patch members not yet matched by a stored key */
    uint32_t hint = 0;    /* where the next match likely is: same key order */
    if (fa_buf_putc (ctx, b, '{') < 0)
        return -1;
    if (s) {
        const char *q = s + 1;
        while (q < end && *q != '}') {
            const char *k = q + 1;
            const char *ke = skip_str (q, end); /* after the closing quote */
            size_t kn = (size_t)(ke - 1 - k);
            const char *v = ke + 1, *ve;        /* after ':' */
            fa_member *m = NULL;
            if (left) {
                uint64_t kw = fa_key_word_b (k, kn, end);
                if (hint < p->n
                    && fa_key_same (p->m[hint].key, p->m[hint].kw, p->m[hint].klen, k, kw, kn))
                    m = &p->m[hint];
                else
                    m = fa_node_find_w (p, k, kn, kw);
            }
            if (!m) { /* untouched: copy "key":value as one span */
                ve = skip_value (v, end);
                size_t span = (size_t)(ve - q);
                if (fa_buf_reserve (ctx, b, span + 1) < 0)
                    return -1;
                char *o = b->p + b->len;
                *o = ',';
                o += count != 0;
                fa_copy (o, q, span);
                b->len = (size_t)(o + span - b->p);
                count++;
            }
            else {
                m->used = 1;
                left--;
                hint = (uint32_t)(m - p->m) + 1;
                if (m->is_null)
                    ve = skip_value (v, end);
                else if (!m->obj
                         || (m->obj->plain && (*v == '{' ? same_keys (v, end, m->obj, &ve)
                                                         : (ve = skip_value (v, end), 1)))) {
                    /* the patch's value replaces: a scalar, or a plain object
                     * over the same keys or over a non-object ("key": from
                     * s, the value's text from p) */
                    if (!m->obj)
                        ve = skip_value (v, end);
                    if (put_member (ctx, b, count, q, (size_t)(v - q), m->text, m->tlen) < 0)
                        return -1;
                    count++;
                }
                else {
                    size_t pos = b->len;
                    long r;
                    if (put_key (ctx, b, count, k, kn) < 0)
                        return -1;
                    if (*v == '{')
                        r = merge_obj (ctx, b, v, end, &ve, m->obj, lim);
                    else {
                        ve = skip_value (v, end);
                        r = merge_obj (ctx, b, NULL, NULL, NULL, m->obj, lim);
                    }
                    if (r < 0)
                        return -1;
                    if (r == 0)
                        b->len = pos;
                    else
                        count++;
                }
            }
            q = ve < end && *ve == ',' ? ve + 1 : ve;
        }
        if (endp)
            *endp = q < end ? q + 1 : end;
    }
    for (uint32_t i = 0; left && i < p->n; i++) {
        fa_member *m = &p->m[i];
        if (m->used)
            continue;
        left--;
        if (m->is_null)
            continue;
        size_t pos = b->len;
        if (put_key (ctx, b, count, m->key, m->klen) < 0)
            return -1;
        if (m->obj && !m->obj->plain) {
            long r = merge_obj (ctx, b, NULL, NULL, NULL, m->obj, lim);
            if (r < 0)
                return -1;
            if (r == 0) {
                b->len = pos;
                continue;
            }
        }
        else if (fa_buf_put (ctx, b, m->text, m->tlen) < 0)
            return -1;
        count++;
    }
    if (count == 0) {
        b->len = start;
        return 0;
    }
    if (lim && (unsigned long)count > lim->max_object_keys)
        return fa_fail (ctx, EINVAL, "object has more than %u keys", lim->max_object_keys);
    if (fa_buf_putc (ctx, b, '}') < 0)
        return -1;
    return count;
}

long fa_merge_text (fa_ctx *ctx, fa_buf *b, const char *s, size_t slen, fa_node *p,
                    const fa_limits *lim)
{
    const char *end;
    return merge_obj (ctx, b, slen ? s : NULL, slen ? s + slen : NULL, &end, p, lim);
}

/* ---- the plain path: a plain patch over the stored key layout ---- */

/* p at a patch value that is not an object: the position after it if it
 * is a plain string, a canonical plain number, true or false; else NULL. */
static inline const char *plain_scalar (const char *p, const char *end)
{
    char c = *p;
    if (c == '"') {
        const char *q = fa_scan_plain (p + 1, end, 0);
        return q < end && *q == '"' ? q + 1 : NULL;
    }
    if (c >= '1' && c <= '9') {
        size_t tn = fa_plain_number (p, end);
        return tn ? p + tn : NULL;
    }
    if (c == 't' && end - p >= 4 && memcmp (p, "true", 4) == 0)
        return p + 4;
    if (c == 'f' && end - p >= 5 && memcmp (p, "false", 5) == 0)
        return p + 5;
    return NULL;
}

/* k on a patch key's quote, s on a stored key's: the span of the patch
 * key with both quotes if it is plain, non-empty, within lim and the same
 * bytes as the stored key (then it is the same key), followed by ':' and
 * a value; else 0 (a different key, or one the full path must judge:
 * either way it stays unmatched). */
static inline size_t same_key (const char *k, const char *end, const char *s, const char *se,
                               const fa_limits *lim)
{
#ifdef __SSE2__
    if (end - k >= 17 && se - s >= 17) { /* the key's bytes in one load */
        const __m128i pv = _mm_loadu_si128 ((const __m128i *)(const void *)(k + 1));
        const __m128i sv = _mm_loadu_si128 ((const __m128i *)(const void *)(s + 1));
        __m128i h = _mm_or_si128 (
            _mm_or_si128 (_mm_cmpeq_epi8 (pv, _mm_set1_epi8 ('"')),
                          _mm_cmpeq_epi8 (pv, _mm_set1_epi8 ('\\'))),
            _mm_cmplt_epi8 (pv, _mm_set1_epi8 (0x20))); /* controls and >= 0x80 */
        if (lim->strict_keys)
            h = _mm_or_si128 (h, _mm_cmpeq_epi8 (pv, _mm_set1_epi8 ('.')));
        unsigned sp = (unsigned)_mm_movemask_epi8 (h);
        if (sp) {
            unsigned q = (unsigned)__builtin_ctz (sp); /* key bytes before it */
            unsigned ne = ~(unsigned)_mm_movemask_epi8 (_mm_cmpeq_epi8 (pv, sv));
            if (k[1 + q] != '"' || q == 0 || q > lim->max_key_bytes || (ne & ((2u << q) - 1)))
                return 0;
            size_t kl = q + 2;
            return end - k > (ptrdiff_t)kl + 1 && k[kl] == ':' && s[kl] == ':' ? kl : 0;
        }
    }
#endif
    const char *ke = fa_scan_plain (k + 1, end, lim->strict_keys);
    if (end - ke < 3 || *ke != '"' || ke == k + 1 || (size_t)(ke - k - 1) > lim->max_key_bytes
        || ke[1] != ':')
        return 0;
    size_t kl = (size_t)(ke + 1 - k);
    return (size_t)(se - s) > kl && memcmp (k, s, kl) == 0 && s[kl] == ':' ? kl : 0;
}

/* k on a patch key that matched no stored key of the object s..se (s
 * after its '{', se on its '}'): the span of the key with both quotes if
 * it is plain, non-empty, within lim, followed by ':' and a value, and is
 * neither a stored key of the object nor one of the n earlier new keys
 * nk[] (a plain key has one canonical spelling: the same bytes); else 0. */
static size_t new_key (const char *k, const char *end, const char *s, const char *se,
                       const char *const *nk, unsigned n, const fa_limits *lim)
{
    const char *ke = fa_scan_plain (k + 1, end, lim->strict_keys);
    if (end - ke < 3 || *ke != '"' || ke == k + 1 || (size_t)(ke - k - 1) > lim->max_key_bytes
        || ke[1] != ':')
        return 0;
    size_t kl = (size_t)(ke + 1 - k);
    if (k[kl + 1] == '{') /* a new object: the full path writes it */
        return 0;
    while (s < se) { /* s on a stored key */
        if ((size_t)(se - s) > kl && memcmp (k, s, kl) == 0 && s[kl] == ':')
            return 0;
        s = skip_value (skip_str (s, se) + 1, se);
        if (*s == ',')
            s++;
    }
    for (unsigned i = 0; i < n; i++)
        if (memcmp (nk[i], k, kl) == 0 && nk[i][kl] == ':')
            return 0;
    return kl;
}

/* New keys one patch object may add on the plain path. */
#define PLAIN_NEW 8

/* p and *sp on '{' (patch, stored object): writes the merge at *op (room
 * reserved), moves *sp and *op past the stored object and the output;
 * returns the position after the patch object, or NULL to give up (see
 * fa_merge_plain). The patch keys that are stored must come in stored
 * order: a stored key that is not the next patch key is copied, and a
 * patch key left over at the stored '}' must be new (not stored, no
 * duplicate) with a scalar or null value, else the full path decides.
 * A result object left empty is given up too (the full path prunes). */
/* cap: the note of sched.t_estimate / sched.queue (fa_sched_cap), given
 * at depth 1 and, for the object under "sched", at depth 2; NULL else. */
static inline void note_member (fa_sched_cap *cap, const char *k, size_t kl, const char *v,
                                const char *ve)
{
    /* k: the key with its quotes, kl bytes; v..ve: the value (or "null") */
    if (kl == 12 && memcmp (k, "\"t_estimate\"", 12) == 0) {
        cap->flags &= ~(unsigned) (FA_EST_NUMBER | FA_EST_OTHER | FA_EST_NULL);
        if (*v == '-' || (*v >= '0' && *v <= '9')) {
            cap->flags |= FA_EST_NUMBER;
            cap->out[0] = (size_t) (v - cap->base);
            cap->out[1] = (size_t) (ve - v);
        }
        else
            cap->flags |= *v == 'n' ? FA_EST_NULL : FA_EST_OTHER;
    }
    else if (kl == 7 && memcmp (k, "\"queue\"", 7) == 0) {
        cap->flags &= ~(unsigned) FA_QUEUE;
        if (*v == '"') { /* plain strings have no escapes */
            cap->flags |= FA_QUEUE;
            cap->out[2] = (size_t) (v + 1 - cap->base);
            cap->out[3] = (size_t) (ve - v - 2);
        }
    }
}

static const char *plain_obj (const char *p, const char *end, const char **sp, const char *se,
                              char **op, const fa_limits *lim, uint32_t depth, uint32_t maxdepth,
                              fa_sched_cap *cap)
{
    const char *s0 = *sp + 1, *s = s0, *k = p + 1; /* k: the next patch key (NULL: none) */
    char *o = *op;
    uint32_t count = 0, np = 0; /* members written; patch members (the parser's limit) */
    if (depth > maxdepth || k >= end || *k != '"')
        return NULL;
    *o++ = '{';
    while (*s != '}') {
        size_t kl = k ? same_key (k, end, s, se, lim) : 0;
        if (kl) {
            if (++np > lim->max_object_keys)
                return NULL;
            s += kl + 1;
            p = k + kl + 1;
            if (*p == 'n') { /* null: the member goes */
                if (end - p < 4 || memcmp (p, "null", 4) != 0)
                    return NULL;
                if (cap && depth == 2)
                    note_member (cap, k, kl, p, p + 4);
                p += 4;
                s = skip_value (s, se);
            }
            else {
                if (++count > lim->max_object_keys)
                    return NULL;
                if (count > 1)
                    *o++ = ',';
                fa_copy (o, k, kl + 1); /* "key": */
                o += kl + 1;
                if (*p == '{') {
                    /* the object under "sched" is noted (depth 2); elsewhere nothing */
                    fa_sched_cap *sub = cap && depth == 1 && kl == 7
                                                && memcmp (k, "\"sched\"", 7) == 0 ? cap : NULL;
                    if (cap && depth == 2)
                        note_member (cap, k, kl, p, p); /* an object: not a number */
                    if (*s != '{'
                        || !(p = plain_obj (p, end, &s, se, &o, lim, depth + 1, maxdepth, sub)))
                        return NULL;
                }
                else {
                    const char *v = p;
                    if (!(p = plain_scalar (p, end)))
                        return NULL;
                    if (cap && depth == 2)
                        note_member (cap, k, kl, v, p);
                    fa_copy (o, v, (size_t)(p - v));
                    o += p - v;
                    s = skip_value (s, se);
                }
            }
            if (p >= end)
                return NULL;
            if (*p == ',') {
                k = p + 1;
                if (k >= end || *k != '"')
                    return NULL;
            }
            else if (*p == '}') {
                p++;
                k = NULL;
            }
            else
                return NULL;
        }
        else { /* untouched: "key":value as one span */
            if (++count > lim->max_object_keys)
                return NULL;
            if (count > 1)
                *o++ = ',';
            const char *ms = s;
            s = skip_value (skip_str (s, se) + 1, se);
            fa_copy (o, ms, (size_t)(s - ms));
            o += s - ms;
        }
        if (*s == ',')
            s++;
    }
    const char *nk[PLAIN_NEW];
    unsigned nn = 0;
    while (k) { /* the patch's new keys, appended in patch order */
        size_t kl;
        if (nn == PLAIN_NEW || ++np > lim->max_object_keys
            || !(kl = new_key (k, end, s0, s, nk, nn, lim)))
            return NULL;
        nk[nn++] = k;
        p = k + kl + 1;
        if (*p == 'n') { /* deleting what is not there */
            if (end - p < 4 || memcmp (p, "null", 4) != 0)
                return NULL;
            if (cap && depth == 2)
                note_member (cap, k, kl, p, p + 4);
            p += 4;
        }
        else {
            const char *v = p;
            if (!(p = plain_scalar (p, end)))
                return NULL;
            if (cap && depth == 2)
                note_member (cap, k, kl, v, p);
            if (++count > lim->max_object_keys)
                return NULL;
            if (count > 1)
                *o++ = ',';
            fa_copy (o, k, (size_t)(p - k)); /* "key":value */
            o += p - k;
        }
        if (p >= end)
            return NULL;
        if (*p == ',') {
            k = p + 1;
            if (k >= end || *k != '"')
                return NULL;
        }
        else if (*p == '}') {
            p++;
            k = NULL;
        }
        else
            return NULL;
    }
    if (count == 0)
        return NULL;
    *o++ = '}';
    *sp = s + 1;
    *op = o;
    return p;
}

int fa_merge_plain (fa_ctx *ctx, fa_buf *b, const char *patch, size_t plen, const char *s,
                    size_t slen, const fa_limits *lim, fa_sched_cap *cap)
{
    if (plen < 2 || slen < 2 || patch[0] != '{' || s[0] != '{')
        return 0;
    /* the result is at most both texts: stored members, patch members and
     * the commas between them */
    if (fa_buf_reserve (ctx, b, slen + plen + 8) < 0)
        return 0; /* the full path reports it */
    uint32_t maxdepth = lim->max_depth > FA_DEPTH_CAP ? FA_DEPTH_CAP : lim->max_depth;
    const char *sp = s;
    char *o = b->p + b->len;
    if (cap) {
        cap->base = patch;
        cap->flags = 0;
        cap->done = 0;
    }
    const char *e = plain_obj (patch, patch + plen, &sp, s + slen, &o, lim, 1, maxdepth, cap);
    if (e != patch + plen || sp != s + slen)
        return 0;
    if (cap)
        cap->done = 1;
    b->len = (size_t)(o - b->p);
    return 1;
}

/* ---- diff ---- */

static const fa_limits generic = {FA_DEPTH_CAP, UINT32_MAX, UINT32_MAX, 0};

int fa_diff_text (fa_ctx *ctx, fa_buf *b, const char *o, size_t olen, const char *n,
                  size_t nlen)
{
    /* Parse and re-encode both sides canonically (side by side in tmp),
     * then diff them as trusted texts: one diff algorithm for both. */
    fa_node *on = NULL, *nn = NULL;
    if (olen == nlen && (olen == 0 || memcmp (o, n, olen) == 0))
        return 0;
    if (olen && fa_parse_object (ctx, o, olen, &generic, "old", &on) < 0)
        return -1;
    if (nlen && fa_parse_object (ctx, n, nlen, &generic, "new", &nn) < 0)
        return -1;
    ctx->tmp.len = 0;
    if (on && fa_write_node (ctx, &ctx->tmp, on) < 0)
        return -1;
    size_t a = ctx->tmp.len;
    if (nn && fa_write_node (ctx, &ctx->tmp, nn) < 0)
        return -1;
    return fa_diff_trusted (ctx, b, ctx->tmp.p, a, ctx->tmp.p + a, ctx->tmp.len - a);
}

/* ---- diff of trusted texts ---- */

/* The top-level members of canonical object text s as a node (arena):
 * key spans and value spans (obj NULL: objects stay text). */
static fa_node *node_of_text (fa_ctx *ctx, const char *s, size_t slen)
{
    uint32_t n = 0, cap = 8;
    member_it it;
    const char *k, *v;
    size_t kn, vn;
    fa_node *nd = fa_arena (ctx, sizeof (fa_node));
    fa_member *m = fa_arena (ctx, cap * sizeof (fa_member));
    if (!nd || !m)
        return NULL;
    it_init (&it, s, slen);
    while (it_next (&it, &k, &kn, &v, &vn)) {
        if (n == cap) {
            fa_member *nm = fa_arena (ctx, 2 * (size_t)cap * sizeof (fa_member));
            if (!nm)
                return NULL;
            memcpy (nm, m, n * sizeof (fa_member));
            m = nm;
            cap *= 2;
        }
        fa_member *x = &m[n++];
        x->key = k;
        x->klen = (uint32_t)kn;
        x->kw = fa_key_word_b (k, kn, s + slen);
        x->text = v;
        x->tlen = (uint32_t)vn;
        x->obj = NULL;
        x->is_null = 0;
        x->used = 0;
    }
    memset (nd, 0, sizeof (*nd));
    nd->m = m;
    nd->n = nd->cap = n;
    if (fa_node_index (ctx, nd) < 0)
        return NULL;
    return nd;
}

/* diff_nodes over texts: see fa_diff_trusted. o may be len 0. */
static int diff_texts (fa_ctx *ctx, fa_buf *b, const char *o, size_t olen, const char *n,
                       size_t nlen)
{
    fa_node *on = NULL;
    size_t start = b->len;
    long count = 0;
    member_it it;
    const char *k, *v;
    size_t kn, vn;
    if (olen && !(on = node_of_text (ctx, o, olen)))
        return -1;
    if (fa_buf_putc (ctx, b, '{') < 0)
        return -1;
    if (nlen) {
        it_init (&it, n, nlen);
        while (it_next (&it, &k, &kn, &v, &vn)) {
            fa_member *om = on ? fa_node_find_w (on, k, kn, fa_key_word_b (k, kn, n + nlen))
                               : NULL;
            size_t pos = b->len;
            if (om) {
                om->used = 1;
                if (*v == '{' && om->text[0] == '{') {
                    if (put_key (ctx, b, count, k, kn) < 0)
                        return -1;
                    int r = diff_texts (ctx, b, om->text, om->tlen, v, vn);
                    if (r < 0)
                        return -1;
                    if (r == 0)
                        b->len = pos;
                    else
                        count++;
                    continue;
                }
                if (om->tlen == vn && memcmp (om->text, v, vn) == 0)
                    continue;
            }
            if (put_member (ctx, b, count, k - 1, kn + 3, v, vn) < 0)
                return -1;
            count++;
        }
    }
    for (uint32_t i = 0; on && i < on->n; i++) {
        const fa_member *om = &on->m[i];
        if (om->used)
            continue;
        if (put_member (ctx, b, count, om->key - 1, om->klen + 3, "null", 4) < 0)
            return -1;
        count++;
    }
    if (count == 0) {
        b->len = start;
        return 0;
    }
    if (fa_buf_putc (ctx, b, '}') < 0)
        return -1;
    return 1;
}

int fa_diff_trusted (fa_ctx *ctx, fa_buf *b, const char *o, size_t olen, const char *n,
                     size_t nlen)
{
    if (olen == nlen && (olen == 0 || memcmp (o, n, olen) == 0))
        return 0;
    return diff_texts (ctx, b, o, olen, n, nlen);
}

/* ---- views ---- */

static inline int ns_has (const fa_key *ns, size_t nns, const char *k, size_t kn)
{
    for (size_t i = 0; i < nns; i++)
        if (ns[i].n == kn && memcmp (ns[i].p, k, kn) == 0)
            return 1;
    return 0;
}

int fa_filter_text (fa_ctx *ctx, fa_buf *b, const char *s, size_t slen, const fa_key *ns,
                    size_t nns, int exclude)
{
    if (slen == 0)
        return 0;
    size_t start = b->len;
    long count = 0;
    member_it it;
    const char *k, *v;
    size_t kn, vn;
    if (fa_buf_putc (ctx, b, '{') < 0)
        return -1;
    it_init (&it, s, slen);
    while (it_next (&it, &k, &kn, &v, &vn)) {
        if (ns_has (ns, nns, k, kn) == !!exclude)
            continue;
        size_t span = (size_t)(v + vn - (k - 1));
        if (fa_buf_reserve (ctx, b, span + 1) < 0)
            return -1;
        if (count)
            b->p[b->len++] = ',';
        memcpy (b->p + b->len, k - 1, span);
        b->len += span;
        count++;
    }
    if (count == 0) {
        b->len = start;
        return 0;
    }
    if (fa_buf_putc (ctx, b, '}') < 0)
        return -1;
    return 1;
}

int fa_ns_list (fa_ctx *ctx, const char *list, size_t len, fa_key **ns, size_t *nns)
{
    size_t n = 0, i;
    for (i = 0; i < len; i++)
        if (list[i] == '\0')
            n++;
    if (len && list[len - 1] != '\0')
        n++; /* tolerate a missing final NUL */
    fa_key *keys = fa_arena (ctx, (n ? n : 1) * sizeof (fa_key));
    if (!keys)
        return -1;
    size_t k = 0, a = 0;
    for (i = 0; i <= len && k < n; i++) {
        if (i == len || list[i] == '\0') {
            size_t nl = i - a;
            char *o = fa_arena (ctx, nl * 6 + 2);
            if (!o)
                return -1;
            fa_buf tmp = {o, 0, nl * 6 + 2}; /* never grows */
            /* fa_write_string adds quotes: write, then drop them */
            if (fa_write_string (ctx, &tmp, list + a, nl) < 0)
                return -1;
            keys[k].p = o + 1;
            keys[k].n = tmp.len - 2;
            k++;
            a = i + 1;
        }
    }
    *ns = keys;
    *nns = k;
    return 0;
}

size_t fa_top_value_len (const char *s, size_t slen, const char *key, size_t klen)
{
    if (slen == 0 || !key)
        return 0;
    member_it it;
    const char *k, *v;
    size_t kn, vn;
    it_init (&it, s, slen);
    while (it_next (&it, &k, &kn, &v, &vn))
        if (kn == klen && memcmp (k, key, klen) == 0)
            return vn;
    return 0;
}

/* ---- public pure functions ---- */

int fa_merge (fa_ctx *ctx, const char *tree, size_t tlen, const char *patch, size_t plen,
              const fa_limits *lim)
{
    fa_node *pt = NULL, *pp = NULL;
    long r;
    fa_begin (ctx);
    ctx->out.len = 0;
    if (tlen && fa_parse_object (ctx, tree, tlen, lim, "tree", &pt) < 0)
        goto error;
    if (fa_parse_object (ctx, patch, plen, lim, "annotations", &pp) < 0)
        goto error;
    if (pt && fa_merge_text (ctx, &ctx->tmp, NULL, 0, pt, lim) < 0)
        goto error;
    r = fa_merge_text (ctx, &ctx->out, ctx->tmp.p, ctx->tmp.len, pp, lim);
    if (r < 0)
        goto error;
    fa_arena_reset (ctx);
    return r > 0;
error:
    ctx->out.len = 0;
    fa_arena_reset (ctx);
    return -1;
}

int fa_diff (fa_ctx *ctx, const char *old, size_t olen, const char *new_, size_t nlen)
{
    fa_begin (ctx);
    ctx->out.len = 0;
    int r = fa_diff_text (ctx, &ctx->out, old, olen, new_, nlen);
    if (r < 0)
        ctx->out.len = 0;
    fa_arena_reset (ctx);
    return r;
}
