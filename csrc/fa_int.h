/* fa_int.h - internals shared by the C core's modules (not installed).
 *
 * fa_ctx.c: accounted allocation, the scratch arena, growable buffers and
 * the last error. fa_json.c: the parser into fa_node trees and the
 * canonical writers. fa_merge.c: merge / diff / namespace filter over
 * canonical texts and trees. fa_table.c uses all of them.
 */
#ifndef FA_INT_H
#define FA_INT_H

#include <locale.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "fa.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* A growable byte buffer whose memory is accounted in a ctx. */
typedef struct fa_buf {
    char *p;
    size_t len, cap;
} fa_buf;

typedef struct fa_block fa_block; /* arena block */

struct fa_block {
    fa_block *next;
    size_t size, used;
    /* data follows, 8-aligned */
};

#define FA_BLOCK_DATA(b) ((char *)(b) + ((sizeof (fa_block) + 7) & ~(size_t)7))

typedef struct fa_mark { /* a saved arena position */
    fa_block *blk;
    size_t used;
} fa_mark;

struct fa_ctx {
    int errnum;
    char errmsg[256];
    size_t mem;     /* accounted bytes of live allocations made through this ctx */
    fa_buf out;     /* the output of the last call */
    fa_buf ts;      /* text stack of the parser (canonical array texts) */
    fa_buf tmp;     /* second scratch buffer (merge tree, views) */
    fa_block *head; /* arena: first block (kept across resets) */
    fa_block *cur;  /* arena: block being filled */
    locale_t cloc;  /* "C" locale for strtod/snprintf, (locale_t)0 if none */
    long fail_after; /* tests only: the n-th allocation from now fails (0: off) */
    int fault;       /* kind of the last error: FA_FAULT_* (fa_frame.c words it) */
};

/* What the last error was about (ctx->fault): a limit, a value or the
 * text's encoding (fa_fail's default), or the JSON grammar (the parser's
 * syntax errors). The frame scanner answers the first EINVAL inside a
 * payload and the second EPROTO. */
#define FA_FAULT_VALUE 1
#define FA_FAULT_SYNTAX 2

/* ---- accounted allocation: every byte the core holds goes through here ---- */
void *fa_alloc (fa_ctx *ctx, size_t n);                 /* NULL: ENOMEM set */
void *fa_realloc (fa_ctx *ctx, void *p, size_t n);      /* NULL: ENOMEM set, p kept */
void fa_free (fa_ctx *ctx, void *p);                    /* accepts NULL */
size_t fa_usable (const void *p);                       /* usable bytes of a block */

/* ---- errors: set errnum + sentence, return -1 ---- */
int fa_fail (fa_ctx *ctx, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
int fa_nomem (fa_ctx *ctx);
/* Append s[0..n) to dst (cap bytes incl. NUL) quoted for a message: at most
 * 64 bytes, controls escaped, a cut never splits a UTF-8 sequence. */
void fa_quote (char *dst, size_t cap, const char *s, size_t n);

/* ---- scratch arena: 8-byte aligned bump allocation, freed by reset ---- */
void *fa_arena_more (fa_ctx *ctx, size_t n); /* a new block: the slow path */
/* n bytes, 8-aligned; NULL: ENOMEM set. The common case (room in the
 * current block) is inline: the parser calls this per object. */
static inline void *fa_arena (fa_ctx *ctx, size_t n)
{
    fa_block *b = ctx->cur;
    n = (n + 7) & ~(size_t)7;
    if (b && b->size - b->used >= n) {
        void *p = FA_BLOCK_DATA (b) + b->used;
        b->used += n;
        return p;
    }
    return fa_arena_more (ctx, n);
}
void fa_arena_reset (fa_ctx *ctx);
fa_mark fa_arena_mark (fa_ctx *ctx);
void fa_arena_release (fa_ctx *ctx, fa_mark m);
/* Start a call: clear the arena and the error. */
void fa_begin (fa_ctx *ctx);

/* ---- buffers ---- */
int fa_buf_grow (fa_ctx *ctx, fa_buf *b, size_t extra); /* 0 / -1 ENOMEM */
void fa_buf_free (fa_ctx *ctx, fa_buf *b);

static inline int fa_buf_reserve (fa_ctx *ctx, fa_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    return fa_buf_grow (ctx, b, extra);
}
/* memcpy for the short spans the merge copies (keys, numbers, small
 * strings): inline, no call; both halves are loaded before storing. */
static inline void fa_copy (char *d, const char *s, size_t n)
{
    if (n > 16) {
        memcpy (d, s, n);
        return;
    }
    if (n >= 8) {
        uint64_t a, z;
        memcpy (&a, s, 8);
        memcpy (&z, s + n - 8, 8);
        memcpy (d, &a, 8);
        memcpy (d + n - 8, &z, 8);
        return;
    }
    if (n >= 4) {
        uint32_t a, z;
        memcpy (&a, s, 4);
        memcpy (&z, s + n - 4, 4);
        memcpy (d, &a, 4);
        memcpy (d + n - 4, &z, 4);
        return;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = s[i];
}
static inline int fa_buf_put (fa_ctx *ctx, fa_buf *b, const void *s, size_t n)
{
    if (fa_buf_reserve (ctx, b, n) < 0)
        return -1;
    if (n) /* b->p may still be NULL */
        fa_copy (b->p + b->len, s, n);
    b->len += n;
    return 0;
}
static inline int fa_buf_putc (fa_ctx *ctx, fa_buf *b, char c)
{
    if (b->len == b->cap && fa_buf_grow (ctx, b, 1) < 0)
        return -1;
    b->p[b->len++] = c;
    return 0;
}
int fa_buf_put_u64 (fa_ctx *ctx, fa_buf *b, uint64_t v);

/* Key equality: short keys are compared inline (no call). */
static inline int fa_key_eq (const char *a, const char *b, size_t n)
{
    if (n > 16)
        return memcmp (a, b, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* The key word of a key: its first 8 bytes (zero-padded) as one integer,
 * so that most key comparisons are one compare (length + word), and only
 * keys longer than 8 bytes compare the rest. fa_key_word reads exactly n
 * bytes; fa_key_word_b may read a whole word when end - k >= 8 (the bytes
 * past the key are masked off). Both give the same value. */
static inline uint64_t fa_key_word (const char *k, size_t n)
{
    uint64_t w = 0;
    if (n >= 8) {
        memcpy (&w, k, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        w = __builtin_bswap64 (w);
#endif
        return w;
    }
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)(unsigned char)k[i] << (8 * i);
    return w;
}
static inline uint64_t fa_key_word_b (const char *k, size_t n, const char *end)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (end - k >= 8) {
        uint64_t w;
        memcpy (&w, k, 8);
        return n >= 8 ? w : w & ((1ULL << (8 * n)) - 1);
    }
#else
    (void)end;
#endif
    return fa_key_word (k, n);
}
/* Equal keys, given both key words. */
static inline int fa_key_same (const char *a, uint64_t aw, size_t an, const char *b,
                               uint64_t bw, size_t bn)
{
    if (an != bn || aw != bw)
        return 0;
    if (an <= 8)
        return 1;
    if (an <= 16) { /* the last 8 bytes (they overlap the first word) */
        uint64_t x, y;
        memcpy (&x, a + an - 8, 8);
        memcpy (&y, b + an - 8, 8);
        return x == y;
    }
    return memcmp (a + 8, b + 8, an - 8) == 0;
}

/* ---- scanning strings: 16 bytes at a time with SSE2 (x86-64 baseline),
 * 8 with SWAR elsewhere. Both return the exact first stop byte. ---- */

#define FA_ONES 0x0101010101010101ULL
#define FA_HIGHS 0x8080808080808080ULL
/* bytes of w equal to the byte of c (c = byte * FA_ONES) flagged (the
 * lowest flag is exact, later ones may be false) */
#define FA_HAS_BYTE(w, c) ((((w) ^ (c)) - FA_ONES) & ~((w) ^ (c)))

/* The first byte in [p, end) that is a control, '"', '\', non-ASCII or
 * (dot != 0) '.'; end if none. */
static inline const char *fa_scan_plain (const char *p, const char *end, int dot)
{
#ifdef __SSE2__
    const __m128i q = _mm_set1_epi8 ('"'), bs = _mm_set1_epi8 ('\\'),
                  sp = _mm_set1_epi8 (0x20), dt = _mm_set1_epi8 ('.');
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128 ((const __m128i *)(const void *)p);
        /* signed compare: controls and bytes >= 0x80 are both < 0x20 */
        __m128i h = _mm_or_si128 (_mm_or_si128 (_mm_cmpeq_epi8 (v, q), _mm_cmpeq_epi8 (v, bs)),
                                  _mm_cmplt_epi8 (v, sp));
        if (dot)
            h = _mm_or_si128 (h, _mm_cmpeq_epi8 (v, dt));
        unsigned mask = (unsigned)_mm_movemask_epi8 (h);
        if (mask)
            return p + __builtin_ctz (mask);
        p += 16;
    }
#endif
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t w;
        memcpy (&w, p, 8);
        uint64_t hit = w | ((w - 0x2020202020202020ULL) & ~w)
                       | FA_HAS_BYTE (w, 0x2222222222222222ULL)
                       | FA_HAS_BYTE (w, 0x5c5c5c5c5c5c5c5cULL);
        if (dot)
            hit |= FA_HAS_BYTE (w, 0x2e2e2e2e2e2e2e2eULL);
        hit &= FA_HIGHS;
        if (hit)
            return p + (__builtin_ctzll (hit) >> 3);
        p += 8;
    }
#endif
    const unsigned char *u = (const unsigned char *)p;
    while (u < (const unsigned char *)end && *u >= 0x20 && *u != '"' && *u != '\\' && *u < 0x80
           && !(dot && *u == '.'))
        u++;
    return (const char *)u;
}

/* The first '"' or '\\' in [p, end); end if none. */
static inline const char *fa_scan_quote (const char *p, const char *end)
{
#ifdef __SSE2__
    const __m128i q = _mm_set1_epi8 ('"'), bs = _mm_set1_epi8 ('\\');
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128 ((const __m128i *)(const void *)p);
        unsigned mask = (unsigned)_mm_movemask_epi8 (
            _mm_or_si128 (_mm_cmpeq_epi8 (v, q), _mm_cmpeq_epi8 (v, bs)));
        if (mask)
            return p + __builtin_ctz (mask);
        p += 16;
    }
#endif
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t w;
        memcpy (&w, p, 8);
        uint64_t hit = (FA_HAS_BYTE (w, 0x2222222222222222ULL)
                        | FA_HAS_BYTE (w, 0x5c5c5c5c5c5c5c5cULL))
                       & FA_HIGHS;
        if (hit)
            return p + (__builtin_ctzll (hit) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != '"' && *p != '\\')
        p++;
    return p;
}

/* ---- parsed trees (fa_json.c) ----
 * Only objects are nodes. A member's value is either an object (obj != NULL)
 * or its canonical text (text/tlen; "null" has is_null). For an object
 * value, text/tlen is its raw source span (canonical only if the input was).
 * Keys are kept canonically encoded without quotes: two keys are equal iff
 * their decoded values are. All pointers stay valid until the arena is
 * reset (they point into the input or the arena). */
typedef struct fa_node fa_node;

typedef struct fa_member {
    uint64_t kw; /* fa_key_word of the key */
    const char *key;
    const char *text;
    fa_node *obj;
    uint32_t klen;
    uint32_t tlen;
    uint8_t is_null;
    uint8_t used; /* scratch flag of the merge */
} fa_member;

struct fa_node {
    fa_member *m;
    uint32_t n, cap;
    uint32_t *idx; /* hash index of member positions + 1 (n > 8), icap slots */
    uint32_t icap;
    /* 1: a non-empty object whose members are all plain (compact source,
     * keys without escapes, string and number values already canonical;
     * no null, object or array value, no duplicate key). Its source span
     * is then its canonical text, and merging it into nothing, or into a
     * stored object with the same keys in the same order, gives exactly
     * that span (the merge's fast path for a scheduler's repeated note). */
    uint32_t plain;
};

/* Parse a whole JSON text (nothing but whitespace after the value). If the
 * value is an object: *node is set and *text NULL; else *text, *tlen is its
 * canonical text (in ctx->ts or the input) and *node NULL. 0 / -1. */
int fa_parse (fa_ctx *ctx, const char *s, size_t len, const fa_limits *lim, fa_node **node,
              const char **text, size_t *tlen);
/* Parse the one JSON value at s (inside [p0, end): error offsets count
 * from p0) that sits at nesting depth `depth` (an object or array there
 * counts `depth`; the annotations object is at 1). Nothing after the value
 * is read: *next is set to the byte after it. Otherwise as fa_parse. */
int fa_parse_at (fa_ctx *ctx, const char *p0, const char *s, const char *end,
                 const fa_limits *lim, uint32_t depth, fa_node **node, const char **text,
                 size_t *tlen, const char **next);
/* Parse the object key (a JSON string) at s, checked against lim's key
 * rules: its canonical text without quotes in *k, *kn (pointing into the
 * input when it has no escape, *esc 0; else into the arena, *esc 1);
 * *next after the closing quote. 0 / -1. */
int fa_parse_key_at (fa_ctx *ctx, const char *p0, const char *s, const char *end,
                     const fa_limits *lim, const char **k, size_t *kn, int *esc,
                     const char **next);
/* Parse a text that must be a JSON object (what names the error). */
int fa_parse_object (fa_ctx *ctx, const char *s, size_t len, const fa_limits *lim,
                     const char *what, fa_node **node);
fa_member *fa_node_find (const fa_node *n, const char *key, size_t klen);
/* The same, given the key's fa_key_word (no pass over the key). Small
 * objects are searched inline; big ones (with a hash index) out of line. */
fa_member *fa_node_find_idx (const fa_node *n, const char *key, size_t klen, uint64_t kw);
static inline fa_member *fa_node_find_w (const fa_node *nd, const char *key, size_t klen,
                                         uint64_t kw)
{
    if (nd->idx)
        return fa_node_find_idx (nd, key, klen, kw);
    for (uint32_t i = 0; i < nd->n; i++) {
        fa_member *m = &nd->m[i];
        if (fa_key_same (m->key, m->kw, m->klen, key, kw, klen))
            return m;
    }
    return NULL;
}
/* Give a node built outside the parser (n members filled in) the hash
 * index that fa_node_find_w expects when n > 8. 0 / -1 ENOMEM. */
int fa_node_index (fa_ctx *ctx, fa_node *nd);
/* Write the node exactly (nulls and empty objects kept). 0 / -1. */
int fa_write_node (fa_ctx *ctx, fa_buf *b, const fa_node *n);
/* Write a string value canonically (with quotes), given raw UTF-8. */
int fa_write_string (fa_ctx *ctx, fa_buf *b, const char *s, size_t n);

/* ---- tokens of the wire protocol (fa_frame.c, fa_client.c) ---- */

static inline const char *fa_skip_ws (const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* A JSON integer literal of digits only at p, below bound (0: 2^64): its
 * value in *v and the byte after it; NULL when the token is anything else
 * (then the caller parses it as a value). */
static inline const char *fa_read_uint (const char *p, const char *end, uint64_t bound,
                                        uint64_t *v)
{
    const char *q = p;
    uint64_t x = 0;
    if (q >= end || (unsigned)(*q - '0') > 9)
        return NULL;
    if (*q == '0' && q + 1 < end && (unsigned)(q[1] - '0') <= 9)
        return NULL; /* leading zero: let the parser word it */
    for (; q < end && (unsigned)(*q - '0') <= 9; q++) {
        unsigned d = (unsigned)(*q - '0');
        if (x > (UINT64_MAX - d) / 10)
            return NULL;
        x = x * 10 + d;
    }
    if (q < end && (*q == '.' || *q == 'e' || *q == 'E'))
        return NULL;
    if (bound && x >= bound)
        return NULL;
    *v = x;
    return q;
}

/* The n bytes of w at p (and p has them). */
static inline int fa_lit (const char *p, const char *end, const char *w, size_t n)
{
    return (size_t)(end - p) >= n && memcmp (p, w, n) == 0;
}

/* ---- merge, diff, filter over canonical texts (fa_merge.c) ---- */
/* p on a digit 1-9: the length of the number there if it is already
 * canonical and plain (an integer of at most 18 digits, or a decimal
 * without exponent of at most 15 significant digits whose fraction has no
 * trailing zero or is "0"); 0 otherwise (then parse_number decides). */
static inline size_t fa_plain_number (const char *p, const char *end)
{
    const char *q = p + 1;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - q >= 8) { /* 8 digits at a time (timestamps have 10+) */
        uint64_t w;
        memcpy (&w, q, 8);
        /* each byte 0x30..0x39: high nibble 3, and adding 6 keeps it 3 */
        if ((w & 0xf0f0f0f0f0f0f0f0ULL) != 0x3030303030303030ULL
            || ((w + 0x0606060606060606ULL) & 0xf0f0f0f0f0f0f0f0ULL) != 0x3030303030303030ULL)
            break;
        q += 8;
    }
#endif
    while (q < end && (unsigned)(*q - '0') < 10)
        q++;
    size_t nint = (size_t)(q - p);
    if (q >= end || (*q != '.' && *q != 'e' && *q != 'E'))
        return nint <= 18 ? nint : 0;
    if (*q != '.')
        return 0;
    const char *f = ++q;
    while (q < end && (unsigned)(*q - '0') < 10)
        q++;
    size_t nfrac = (size_t)(q - f);
    if (nfrac == 0 || (q < end && (*q == 'e' || *q == 'E')) || nint + nfrac > 15)
        return 0;
    if (q[-1] == '0' && nfrac != 1)
        return 0;
    return (size_t)(q - p);
}

/* What the plain merge saw of the patch's sched.t_estimate / sched.queue
 * (fa_hist.c's recording takes it instead of scanning the patch again):
 * done = 1 when the plain merge succeeded, flags / out as fa_sched_scan's
 * (offsets into the patch). cap may be NULL (nothing noted). */
typedef struct fa_sched_cap {
    const char *base; /* the patch */
    int done;
    unsigned flags;
    size_t out[4];
} fa_sched_cap;
/* fa_hist.c: record what cap (or, when it is not done, a scan of the
 * patch) says; fa_hist_note's return bits. */
unsigned fa_hist_record_cap (fa_hist *h, uint64_t id, const char *patch, size_t len,
                             const fa_sched_cap *cap, double at);

/* The plain path of fa_merge_text, straight from the patch text: 1 if the
 * patch is a plain object tree (compact; keys plain, non-empty, within
 * lim; values plain strings, canonical plain numbers, true, false or such
 * non-empty objects; no null or array) whose keys all exist, in stored
 * order, in the stored objects at their places (an object over an object)
 * of the canonical text s: then the merge result (no key added, deleted or
 * moved) is appended to b. 0 otherwise, b's length unchanged: the caller
 * parses and merges (which reports any error, ENOMEM included). */
int fa_merge_plain (fa_ctx *ctx, fa_buf *b, const char *patch, size_t plen, const char *s,
                    size_t slen, const fa_limits *lim, fa_sched_cap *cap);


void fa_hist_prefetch (const fa_hist *h, uint64_t id); /* the job's slot into the cache */

/* Merge patch node p into the canonical object text s[0..slen) (slen 0:
 * none), appending to b; nothing is appended when the result is empty.
 * Returns members written at the top (0 = empty) or -1. */
long fa_merge_text (fa_ctx *ctx, fa_buf *b, const char *s, size_t slen, fa_node *p,
                    const fa_limits *lim);
/* Append the merge patch turning object text o into n (either may be
 * length 0; both are parsed, so any JSON object text, and re-encoded
 * canonically into ctx->tmp before fa_diff_trusted diffs them).
 * Returns 1 written, 0 equal (nothing appended), -1. */
int fa_diff_text (fa_ctx *ctx, fa_buf *b, const char *o, size_t olen, const char *n,
                  size_t nlen);
/* The same for texts the core wrote itself (stored and pre-image texts):
 * they are walked with the trusted scanner instead of being parsed. */
int fa_diff_trusted (fa_ctx *ctx, fa_buf *b, const char *o, size_t olen, const char *n,
                     size_t nlen);
/* Append the view of canonical object text s keeping (exclude=0) or
 * dropping the top-level keys in the list of canonical keys ns[0..nns).
 * Returns 1 written, 0 empty view (nothing appended), -1. */
typedef struct fa_key {
    const char *p;
    size_t n;
} fa_key;
int fa_filter_text (fa_ctx *ctx, fa_buf *b, const char *s, size_t slen, const fa_key *ns,
                    size_t nns, int exclude);
/* Canonical keys from "a\0b\0" (arena). *nns set. 0 / -1. */
int fa_ns_list (fa_ctx *ctx, const char *list, size_t len, fa_key **ns, size_t *nns);
/* The value span of top-level key (canonical key k) in canonical object
 * text s: its length, 0 if absent. */
size_t fa_top_value_len (const char *s, size_t slen, const char *k, size_t klen);

#endif /* FA_INT_H */
