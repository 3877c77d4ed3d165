/* fa_json.c - strict RFC 8259 parser and the canonical encoder.
 *
 * fa_parse reads a JSON text (not NUL-terminated) and builds, in the ctx
 * arena, a tree in which only objects are nodes: every other value is kept
 * as its canonical text. Values that are already canonical in the input
 * (most strings and integers) point into the input; others are rewritten
 * into the arena. Arrays are written to the ctx text stack (ts) as they are
 * read (objects inside them are built as nodes, then written there) and a
 * finished array that is an object member is moved to the arena, so the
 * text stack holds only the arrays still open.
 *
 * Limits (depth, key bytes, keys per object, strict keys) are checked while
 * parsing; recursion depth is bounded by the depth limit (at most
 * FA_DEPTH_CAP), so deep input fails fast without exhausting the stack.
 *
 * Canonical numbers: integer literals that fit int64 stay as they are
 * ("-0" -> "0"); any other number is a double written like Python's
 * repr(float). Canonical strings: raw UTF-8, only '"', '\\' and controls
 * escaped (\n \r \t \b \f, else \u00xx).
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fa_int.h"

typedef struct parser {
    fa_ctx *ctx;
    const char *p0, *p, *end;
    const fa_limits *lim;
    uint32_t maxdepth;
} parser;

static int syntax (parser *ps, const char *at, const char *what)
{
    fa_fail (ps->ctx, EINVAL, "invalid JSON at byte %zu: %s", (size_t)(at - ps->p0), what);
    ps->ctx->fault = FA_FAULT_SYNTAX;
    return -1;
}

/* A string that is JSON but not valid text (bad UTF-8, lone surrogate):
 * a value fault (docs/protocol.md: EINVAL), not a grammar one. */
static int bad_text (parser *ps, const char *at, const char *what)
{
    return fa_fail (ps->ctx, EINVAL, "%s at byte %zu", what, (size_t)(at - ps->p0));
}

static inline void skip_ws (parser *ps)
{
    const char *p = ps->p, *end = ps->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

/* ---- strings ---- */

static inline int hexval (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Validate one UTF-8 sequence at p (first byte >= 0x80); its length, or 0. */
static inline size_t utf8_seq (const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    if (c >= 0xc2 && c <= 0xdf) {
        if (end - p >= 2 && (p[1] & 0xc0) == 0x80)
            return 2;
        return 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        if (end - p < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && p[1] < 0xa0) /* overlong */
            return 0;
        if (c == 0xed && p[1] >= 0xa0) /* encoded surrogate */
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (end - p < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (p[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && p[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xf4 && p[1] >= 0x90) /* > U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

/* Scan the string starting at ps->p (on the '"'): validates it and sets
 * *body, *blen to the raw bytes between the quotes; *esc = 1 if it holds a
 * backslash. ps->p is left after the closing quote. */
static int scan_string (parser *ps, const char **body, size_t *blen, int *esc)
{
    const unsigned char *p = (const unsigned char *)ps->p + 1;
    const unsigned char *end = (const unsigned char *)ps->end;
    int e = 0;
    for (;;) {
        /* fast run of plain ASCII, 8 bytes at a time: stop at a word with
         * a control byte, '"', '\\' or a non-ASCII byte (exact below) */
        while (end - p >= 8) {
            uint64_t w, q, bs;
            memcpy (&w, p, 8);
            q = w ^ 0x2222222222222222ULL;
            bs = w ^ 0x5c5c5c5c5c5c5c5cULL;
            uint64_t hit = w | ((w - 0x2020202020202020ULL) & ~w)
                           | ((q - 0x0101010101010101ULL) & ~q)
                           | ((bs - 0x0101010101010101ULL) & ~bs);
            hit &= 0x8080808080808080ULL;
            if (hit) { /* the lowest flagged byte is exact */
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                p += __builtin_ctzll (hit) >> 3;
#endif
                break;
            }
            p += 8;
        }
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\' && *p < 0x80)
            p++;
        if (p >= end)
            return syntax (ps, (const char *)p, "unterminated string");
        unsigned c = *p;
        if (c == '"')
            break;
        if (c == '\\') {
            e = 1;
            if (end - p < 2)
                return syntax (ps, (const char *)p, "unterminated string");
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                break;
            case 'u': {
                if (end - p < 6)
                    return syntax (ps, (const char *)p, "invalid \\u escape");
                for (int i = 2; i < 6; i++)
                    if (hexval ((char)p[i]) < 0)
                        return syntax (ps, (const char *)p, "invalid \\u escape");
                p += 6; /* surrogates are checked when decoding */
                break;
            }
            default:
                return syntax (ps, (const char *)p, "invalid escape");
            }
            continue;
        }
        if (c < 0x20)
            return syntax (ps, (const char *)p, "control character in string");
        size_t k = utf8_seq (p, end);
        if (!k)
            return bad_text (ps, (const char *)p, "invalid UTF-8");
        p += k;
    }
    *body = ps->p + 1;
    *blen = (size_t)((const char *)p - (ps->p + 1));
    *esc = e;
    ps->p = (const char *)p + 1;
    return 0;
}

static inline unsigned hex4 (const char *s)
{
    return (unsigned)(hexval (s[0]) << 12 | hexval (s[1]) << 8 | hexval (s[2]) << 4
                      | hexval (s[3]));
}

static size_t put_utf8 (char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Escape of one code point < 0x80 needing it, written to o; its length
 * (0 if the character is written raw). */
static inline size_t put_escape (char *o, unsigned c)
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"': o[0] = '\\'; o[1] = '"'; return 2;
    case '\\': o[0] = '\\'; o[1] = '\\'; return 2;
    case '\n': o[0] = '\\'; o[1] = 'n'; return 2;
    case '\r': o[0] = '\\'; o[1] = 'r'; return 2;
    case '\t': o[0] = '\\'; o[1] = 't'; return 2;
    case '\b': o[0] = '\\'; o[1] = 'b'; return 2;
    case '\f': o[0] = '\\'; o[1] = 'f'; return 2;
    default:
        if (c >= 0x20)
            return 0;
        memcpy (o, "\\u00", 4);
        o[4] = hex[c >> 4];
        o[5] = hex[c & 15];
        return 6;
    }
}

/* Re-encode an escaped string body canonically into o (room: 6 * blen is
 * more than enough since every input byte yields at most 6). Sets *olen and
 * *dlen (decoded UTF-8 bytes) and *dot (a decoded '.'). */
static int reencode (parser *ps, const char *body, size_t blen, char *o, size_t *olen,
                     size_t *dlen, int *dot)
{
    const char *s = body, *end = body + blen;
    size_t n = 0, d = 0;
    while (s < end) {
        if (*s != '\\') {
            if (*s == '.')
                *dot = 1;
            o[n++] = *s++;
            d++;
            continue;
        }
        char e = s[1];
        unsigned cp;
        if (e == 'u') {
            cp = hex4 (s + 2);
            const char *at = s;
            s += 6;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                    unsigned lo = hex4 (s + 2);
                    if (lo >= 0xdc00 && lo <= 0xdfff) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        s += 6;
                    }
                    else
                        return bad_text (ps, at, "lone surrogate");
                }
                else
                    return bad_text (ps, at, "lone surrogate");
            }
            else if (cp >= 0xdc00 && cp <= 0xdfff)
                return bad_text (ps, at, "lone surrogate");
        }
        else {
            s += 2;
            switch (e) {
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            default: cp = (unsigned char)e; break; /* " \ / */
            }
        }
        if (cp == '.')
            *dot = 1;
        if (cp < 0x80) {
            size_t k = put_escape (o + n, cp);
            if (k)
                n += k;
            else
                o[n++] = (char)cp;
            d++;
        }
        else {
            size_t k = put_utf8 (o + n, cp);
            n += k;
            d += k;
        }
    }
    *olen = n;
    *dlen = d;
    return 0;
}

int fa_write_string (fa_ctx *ctx, fa_buf *b, const char *s, size_t n)
{
    if (fa_buf_reserve (ctx, b, n * 6 + 2) < 0)
        return -1;
    char *o = b->p + b->len;
    size_t k = 0;
    o[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)s[i];
        size_t e = c < 0x80 ? put_escape (o + k, c) : 0;
        if (e)
            k += e;
        else
            o[k++] = (char)c;
    }
    o[k++] = '"';
    b->len += k;
    return 0;
}

/* ---- numbers ---- */

/* Lay out shortest digits d[0..nd) with decimal exponent e (value =
 * 0.d * 10^(e+1), i.e. d[0] is the 10^e digit) like Python repr(float). */
static size_t layout_double (char *o, int neg, const char *d, int nd, int e)
{
    size_t n = 0;
    if (neg)
        o[n++] = '-';
    if (e >= -4 && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++)
                o[n++] = i < nd ? d[i] : '0';
            o[n++] = '.';
            if (nd > e + 1)
                for (int i = e + 1; i < nd; i++)
                    o[n++] = d[i];
            else
                o[n++] = '0';
        }
        else {
            o[n++] = '0';
            o[n++] = '.';
            for (int i = 0; i < -e - 1; i++)
                o[n++] = '0';
            for (int i = 0; i < nd; i++)
                o[n++] = d[i];
        }
    }
    else {
        o[n++] = d[0];
        if (nd > 1) {
            o[n++] = '.';
            for (int i = 1; i < nd; i++)
                o[n++] = d[i];
        }
        n += (size_t)snprintf (o + n, 8, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    return n;
}

/* Digits of buf ("[-]D.DDDDe[+-]XX" from %e, any radix character) into
 * d (no sign), the decimal exponent in *e; the digit count. */
static int split_e (const char *buf, char *d, int *e)
{
    const char *q = buf;
    int nd = 0;
    if (*q == '-')
        q++;
    d[nd++] = *q++;
    while (*q && *q != 'e') {
        if (*q >= '0' && *q <= '9')
            d[nd++] = *q;
        q++;
    }
    *e = atoi (q + 1);
    return nd;
}

/* Does the decimal d[0..nd) x 10^(e-nd+1) read back as v (sign aside)? */
static int round_trips (double av, const char *d, int nd, int e)
{
    char b[48];
    snprintf (b, sizeof (b), "%.*se%d", nd, d, e - nd + 1);
    return strtod (b, NULL) == av;
}

/* Add delta (+1/-1) to the nd-digit decimal d in place, keeping nd digits
 * (exponent *e adjusted on carry). 0 if the result is not an nd-digit
 * number (borrow below 10^(nd-1)). */
static int bump (char *d, int nd, int *e, int delta)
{
    int i = nd - 1;
    if (delta > 0) {
        while (i >= 0 && d[i] == '9')
            d[i--] = '0';
        if (i < 0) { /* 999 + 1 = 1000: 100 with one more exponent */
            d[0] = '1';
            (*e)++;
            return 1;
        }
        d[i]++;
        return 1;
    }
    while (i >= 0 && d[i] == '0')
        d[i--] = '9';
    if (i < 0 || (i == 0 && d[0] == '1'))
        return 0;
    d[i]--;
    return 1;
}

/* Slow path: strtod, then the shortest decimal that reads back as the same
 * double (what Python's repr prints), laid out like repr. */
static int slow_double (parser *ps, const char *s, size_t len, char *o, size_t *olen)
{
    fa_ctx *ctx = ps->ctx;
    char *z = fa_arena (ctx, len + 1);
    if (!z)
        return -1;
    memcpy (z, s, len);
    z[len] = '\0';
    locale_t old = ctx->cloc ? uselocale (ctx->cloc) : (locale_t)0;
    double v = strtod (z, NULL);
    if (isinf (v)) {
        if (old)
            uselocale (old);
        return fa_fail (ctx, EINVAL, "number out of range");
    }
    double av = fabs (v);
    int ex;
    /* A normal double that is not a power of two has a symmetric
     * round-trip interval: if some <= 15-digit decimal reads back, the
     * correctly rounded 15-digit one does and holds the same digits
     * (zero-padded); else the correctly rounded 16- or 17-digit one.
     * Subnormals (fewer bits) and powers of two (the interval below is
     * half the one above) get a full search that also tries the
     * neighbours of the correctly rounded candidate. */
    int full = av < DBL_MIN || frexp (av, &ex) == 0.5;
    char buf[48], d[24], best[24];
    int nd = 0, e = 0, bnd = 0, be = 0;
    for (int prec = full ? 0 : 14; prec <= 16 && !bnd; prec++) {
        snprintf (buf, sizeof (buf), "%.*e", prec, av);
        nd = split_e (buf, d, &e);
        if (prec == 16 || round_trips (av, d, nd, e)) {
            memcpy (best, d, (size_t)nd);
            bnd = nd;
            be = e;
            break;
        }
        if (!full || av == 0)
            continue;
        for (int delta = 1; delta >= -1 && !bnd; delta -= 2) {
            char c[24];
            int ce = e;
            memcpy (c, d, (size_t)nd);
            if (bump (c, nd, &ce, delta) && round_trips (av, c, nd, ce)) {
                memcpy (best, c, (size_t)nd);
                bnd = nd;
                be = ce;
            }
        }
    }
    if (old)
        uselocale (old);
    while (bnd > 1 && best[bnd - 1] == '0')
        bnd--;
    *olen = layout_double (o, signbit (v) != 0, best, bnd, be);
    return 0;
}

/* Parse the number at ps->p; its canonical text in *t, *tn (the input
 * span when it is already canonical, else in the arena). */
static int parse_number (parser *ps, const char **t, size_t *tn)
{
    const char *s = ps->p, *p = s, *end = ps->end;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    const char *ip = p;
    if (p >= end || *p < '0' || *p > '9')
        return syntax (ps, s, "invalid number");
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return syntax (ps, s, "invalid number (leading zero)");
    }
    else
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    const char *ie = p, *fp = NULL, *fe = NULL;
    int has_exp = 0;
    if (p < end && *p == '.') {
        p++;
        fp = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == fp)
            return syntax (ps, s, "invalid number");
        fe = p;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const char *ep = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == ep)
            return syntax (ps, s, "invalid number");
        has_exp = 1;
    }
    ps->p = p;
    size_t nint = (size_t)(ie - ip);
    if (!fp && !has_exp) {
        /* integer: fits int64? */
        int fits = nint < 19;
        if (nint == 19) {
            const char *lim = neg ? "9223372036854775808" : "9223372036854775807";
            fits = memcmp (ip, lim, 19) <= 0;
        }
        if (fits) {
            if (neg && nint == 1 && *ip == '0') { /* -0 */
                *t = ip;
                *tn = 1;
            }
            else {
                *t = s;
                *tn = (size_t)(p - s);
            }
            return 0;
        }
    }
    else if (!has_exp) {
        /* fast path: plain decimal, <= 15 significant digits, >= 1e-4 */
        const char *a = ip;
        while (a < ie && *a == '0')
            a++;
        size_t sig_int = (size_t)(ie - a); /* integer digits after leading zeros */
        const char *fz = fe;
        while (fz > fp && fz[-1] == '0')
            fz--;
        size_t nfrac = (size_t)(fz - fp);
        size_t lead = 0; /* leading zeros of the fraction when int part is 0 */
        if (sig_int == 0)
            while (lead < nfrac && fp[lead] == '0')
                lead++;
        size_t sig = sig_int ? sig_int + nfrac : nfrac - lead;
        if (sig == 0 || (sig <= 15 && sig_int <= 16 && lead <= 3)) {
            if (fz == fe || (nfrac == 0 && fe - fp == 1)) { /* already canonical */
                *t = s;
                *tn = (size_t)(p - s);
                return 0;
            }
            char *o = fa_arena (ps->ctx, nint + nfrac + 4);
            if (!o)
                return -1;
            size_t n = 0;
            if (neg)
                o[n++] = '-';
            if (sig_int) {
                memcpy (o + n, a, sig_int);
                n += sig_int;
            }
            else
                o[n++] = '0';
            o[n++] = '.';
            if (nfrac) {
                memcpy (o + n, fp, nfrac);
                n += nfrac;
            }
            else
                o[n++] = '0';
            *t = o;
            *tn = n;
            return 0;
        }
    }
    char *o = fa_arena (ps->ctx, 32);
    if (!o)
        return -1;
    if (slow_double (ps, s, (size_t)(p - s), o, tn) < 0)
        return -1;
    *t = o;
    return 0;
}

/* ---- values ---- */

static int parse_object (parser *ps, uint32_t depth, fa_node **out);
static int array_to_ts (parser *ps, uint32_t depth);

static int check_depth (parser *ps, uint32_t depth)
{
    if (depth > ps->maxdepth)
        return fa_fail (ps->ctx, EINVAL, "nesting depth exceeds %u", ps->maxdepth);
    return 0;
}

static int parse_literal (parser *ps, const char **t, size_t *tn)
{
    static const char *lits[] = {"true", "false", "null"};
    size_t rem = (size_t)(ps->end - ps->p);
    for (int i = 0; i < 3; i++) {
        size_t n = strlen (lits[i]);
        if (rem >= n && memcmp (ps->p, lits[i], n) == 0) {
            *t = lits[i];
            *tn = n;
            ps->p += n;
            return 0;
        }
    }
    return syntax (ps, ps->p, ps->p < ps->end ? "expected a value" : "unexpected end of input");
}

/* A scalar (string, number, literal): its canonical text. Strings with
 * escapes are re-encoded into the arena. */
/* (Not inlined: parse_object calls it only off its fast paths.) */
__attribute__ ((noinline)) static int parse_scalar (parser *ps, const char **t, size_t *tn)
{
    char c = *ps->p;
    if (c == '"') {
        const char *body;
        size_t blen;
        int esc;
        const char *start = ps->p;
        if (scan_string (ps, &body, &blen, &esc) < 0)
            return -1;
        if (!esc) {
            *t = start;
            *tn = blen + 2;
            return 0;
        }
        char *o = fa_arena (ps->ctx, blen * 6 / 2 + 8);
        size_t olen, dlen;
        int dot = 0;
        if (!o)
            return -1;
        o[0] = '"';
        if (reencode (ps, body, blen, o + 1, &olen, &dlen, &dot) < 0)
            return -1;
        o[olen + 1] = '"';
        *t = o;
        *tn = olen + 2;
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number (ps, t, tn);
    return parse_literal (ps, t, tn);
}

/* Append the value at ps->p to ts (array element context). */
static int value_to_ts (parser *ps, uint32_t depth)
{
    fa_ctx *ctx = ps->ctx;
    if (ps->p >= ps->end)
        return syntax (ps, ps->p, "unexpected end of input");
    char c = *ps->p;
    if (c == '{') {
        fa_node *n;
        fa_mark m = fa_arena_mark (ctx);
        if (parse_object (ps, depth, &n) < 0)
            return -1;
        if (fa_write_node (ctx, &ctx->ts, n) < 0)
            return -1;
        fa_arena_release (ctx, m); /* the node is written: drop it */
        return 0;
    }
    if (c == '[')
        return array_to_ts (ps, depth);
    const char *t;
    size_t tn;
    fa_mark m = fa_arena_mark (ctx);
    if (parse_scalar (ps, &t, &tn) < 0)
        return -1;
    if (fa_buf_put (ctx, &ctx->ts, t, tn) < 0)
        return -1;
    fa_arena_release (ctx, m);
    return 0;
}

static int array_to_ts (parser *ps, uint32_t depth)
{
    fa_ctx *ctx = ps->ctx;
    if (check_depth (ps, depth) < 0)
        return -1;
    ps->p++; /* '[' */
    if (fa_buf_putc (ctx, &ctx->ts, '[') < 0)
        return -1;
    skip_ws (ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return fa_buf_putc (ctx, &ctx->ts, ']');
    }
    for (;;) {
        skip_ws (ps);
        if (value_to_ts (ps, depth + 1) < 0)
            return -1;
        skip_ws (ps);
        if (ps->p >= ps->end)
            return syntax (ps, ps->p, "unexpected end of input");
        if (*ps->p == ',') {
            ps->p++;
            if (fa_buf_putc (ctx, &ctx->ts, ',') < 0)
                return -1;
            continue;
        }
        if (*ps->p == ']') {
            ps->p++;
            return fa_buf_putc (ctx, &ctx->ts, ']');
        }
        return syntax (ps, ps->p, "expected ',' or ']'");
    }
}

/* ---- objects ---- */

static inline uint32_t key_hash (const char *k, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

fa_member *fa_node_find_idx (const fa_node *nd, const char *key, size_t klen, uint64_t kw)
{
    uint32_t mask = nd->icap - 1;
    for (uint32_t h = key_hash (key, klen) & mask;; h = (h + 1) & mask) {
        uint32_t v = nd->idx[h];
        if (!v)
            return NULL;
        fa_member *m = &nd->m[v - 1];
        if (fa_key_same (m->key, m->kw, m->klen, key, kw, klen))
            return m;
    }
}

fa_member *fa_node_find (const fa_node *nd, const char *key, size_t klen)
{
    return fa_node_find_w (nd, key, klen, fa_key_word (key, klen));
}

static int index_rebuild (fa_ctx *ctx, fa_node *nd, uint32_t icap)
{
    uint32_t *idx = fa_arena (ctx, (size_t)icap * sizeof (uint32_t));
    if (!idx)
        return -1;
    memset (idx, 0, (size_t)icap * sizeof (uint32_t));
    for (uint32_t i = 0; i < nd->n; i++) {
        uint32_t h = key_hash (nd->m[i].key, nd->m[i].klen) & (icap - 1);
        while (idx[h])
            h = (h + 1) & (icap - 1);
        idx[h] = i + 1;
    }
    nd->idx = idx;
    nd->icap = icap;
    return 0;
}

int fa_node_index (fa_ctx *ctx, fa_node *nd)
{
    if (nd->n <= 8)
        return 0;
    uint32_t icap = 32;
    while (icap < nd->n * 4)
        icap *= 2;
    return index_rebuild (ctx, nd, icap);
}

/* Add a member slot for key (already checked). Duplicate keys: the last
 * value wins at the first one's place. */
static fa_member *node_add (parser *ps, fa_node *nd, const char *key, size_t klen,
                            uint64_t kw)
{
    fa_ctx *ctx = ps->ctx;
    fa_member *m = nd->n ? fa_node_find_w (nd, key, klen, kw) : NULL;
    if (m)
        return m;
    if (nd->n >= ps->lim->max_object_keys) {
        fa_fail (ctx, EINVAL, "object has more than %u keys", ps->lim->max_object_keys);
        return NULL;
    }
    if (nd->n == nd->cap) {
        uint32_t cap = nd->cap ? nd->cap * 2 : 4;
        fa_member *nm = fa_arena (ctx, (size_t)cap * sizeof (fa_member));
        if (!nm)
            return NULL;
        if (nd->n)
            memcpy (nm, nd->m, (size_t)nd->n * sizeof (fa_member));
        nd->m = nm;
        nd->cap = cap;
    }
    m = &nd->m[nd->n++];
    m->key = key; /* the value's fields are set by the caller */
    m->kw = kw;
    m->klen = (uint32_t)klen;
    m->used = 0;
    if (nd->n > 8) {
        if (!nd->idx || nd->n * 2 > nd->icap) {
            uint32_t icap = 32;
            while (icap < nd->n * 4)
                icap *= 2;
            if (index_rebuild (ctx, nd, icap) < 0)
                return NULL;
        }
        else {
            uint32_t mask = nd->icap - 1;
            uint32_t h = key_hash (key, klen) & mask;
            while (nd->idx[h])
                h = (h + 1) & mask;
            nd->idx[h] = nd->n;
        }
    }
    return m;
}

/* Parse a key at ps->p: canonical text (no quotes) in *k, *kn, checked
 * against the key limits. */
/* (Not inlined into parse_object: its fast path handles plain keys; kept
 * out of the hot loop this gives it better code.) */
__attribute__ ((noinline, cold)) static int parse_key (parser *ps, const char **k, size_t *kn)
{
    const char *body;
    size_t blen, dlen;
    int esc, dot = 0;
    const fa_limits *lim = ps->lim;
    const char *at = ps->p;
    if (ps->p >= ps->end || *ps->p != '"')
        return syntax (ps, ps->p,
                       ps->p < ps->end ? "expected a string key" : "unexpected end of input");
    if (scan_string (ps, &body, &blen, &esc) < 0)
        return -1;
    if (!esc) {
        *k = body;
        *kn = blen;
        dlen = blen;
        if (lim->strict_keys && memchr (body, '.', blen))
            dot = 1;
    }
    else {
        char *o = fa_arena (ps->ctx, blen * 3 + 8);
        if (!o)
            return -1;
        if (reencode (ps, body, blen, o, kn, &dlen, &dot) < 0)
            return -1;
        *k = o;
    }
    (void)at;
    if (dlen > lim->max_key_bytes)
        return fa_fail (ps->ctx, EINVAL, "key exceeds %u bytes", lim->max_key_bytes);
    if (lim->strict_keys) {
        if (dlen == 0)
            return fa_fail (ps->ctx, EINVAL, "empty key");
        if (dot) {
            char q[128];
            fa_quote (q, sizeof (q), *k, *kn);
            return fa_fail (ps->ctx, EINVAL, "key contains '.': %s", q);
        }
    }
    return 0;
}

/* ---- fast scanning of the common case ----
 * The hot path (a scheduler's small patch) is plain ASCII: keys without
 * escapes or '.', strings without escapes. These scanners stop at the
 * first byte that is not plain; the caller then takes the exact slow path
 * (scan_string, parse_key, ...) from the start of the token, so errors and
 * rare cases are handled by one piece of code. */

#define scan_plain fa_scan_plain

static inline const char *ws (const char *p, const char *end)
{
    if (p < end && (unsigned char)*p > ' ')
        return p;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

#define plain_number fa_plain_number /* fa_int.h */

/* ws for parse_object: any byte that is not plainly a token start (a
 * blank, or the end) clears *plain. */
static inline const char *ws_pl (const char *p, const char *end, int *plain)
{
    if (p < end && (unsigned char)*p > ' ')
        return p;
    *plain = 0;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* Members stored with the node itself (most objects are that small). */
#define NODE_INLINE 4

static int parse_object (parser *ps, uint32_t depth, fa_node **out)
{
    fa_ctx *ctx = ps->ctx;
    const fa_limits *lim = ps->lim;
    const char *p, *end = ps->end;
    if (check_depth (ps, depth) < 0)
        return -1;
    fa_node *nd = fa_arena (ctx, sizeof (fa_node) + NODE_INLINE * sizeof (fa_member));
    if (!nd)
        return -1;
    nd->m = (fa_member *)(nd + 1);
    nd->n = 0;
    nd->cap = NODE_INLINE;
    nd->idx = NULL;
    nd->icap = 0;
    nd->plain = 0;
    p = ws (ps->p + 1, end); /* after '{' */
    if (p < end && *p == '}') {
        ps->p = p + 1;
        *out = nd;
        return 0;
    }
    int plain = p == ps->p + 1; /* see fa_node.plain; cleared by any slow path */
    for (;;) {
        const char *k = NULL;
        size_t kn = 0;
        uint64_t kw;
        p = ws_pl (p, end, &plain);
        /* key: fast when plain, non-empty and within the limit */
        const char *ke = p < end && *p == '"' ? scan_plain (p + 1, end, lim->strict_keys) : NULL;
        if (ke && ke < end && *ke == '"' && ke > p + 1
            && (size_t)(ke - p - 1) <= lim->max_key_bytes) {
            k = p + 1;
            kn = (size_t)(ke - k);
            kw = fa_key_word_b (k, kn, end);
            p = ke + 1;
        }
        else {
            ps->p = p;
            if (parse_key (ps, &k, &kn) < 0)
                return -1;
            kw = fa_key_word (k, kn);
            p = ps->p;
            plain = 0;
        }
        if (p >= end || *p != ':') { /* compact JSON has it right here */
            plain = 0;
            p = ws (p, end);
            if (p >= end || *p != ':') {
                ps->p = p;
                return syntax (ps, p, p < end ? "expected ':'" : "unexpected end of input");
            }
        }
        p = ws_pl (p + 1, end, &plain);
        if (p >= end) {
            ps->p = p;
            return syntax (ps, p, "unexpected end of input");
        }
        uint32_t n0 = nd->n;
        fa_member *m = node_add (ps, nd, k, kn, kw);
        if (!m)
            return -1;
        plain &= nd->n != n0; /* a duplicate key is not plain */
        const char *vstart = p;
        char c = *p;
        fa_node *child = NULL;
        const char *t;
        size_t tn;
        if (c == '"') {
            const char *se = scan_plain (p + 1, end, 0);
            if (se < end && *se == '"') {
                t = p;
                tn = (size_t)(se + 1 - p);
                p = se + 1;
            }
            else {
                ps->p = p;
                if (parse_scalar (ps, &t, &tn) < 0)
                    return -1;
                p = ps->p;
                plain = 0;
            }
        }
        else if (c == '{') {
            plain = 0;
            ps->p = p;
            if (parse_object (ps, depth + 1, &child) < 0)
                return -1;
            p = ps->p;
            t = vstart;
            tn = (size_t)(p - vstart);
        }
        else if ((c >= '1' && c <= '9') && (tn = plain_number (p, end)) != 0) {
            t = p;
            p += tn;
        }
        else if (c == 'n' && end - p >= 4 && memcmp (p, "null", 4) == 0) {
            plain = 0;
            t = "null";
            tn = 4;
            p += 4;
        }
        else if (c == '[') {
            plain = 0;
            size_t mark = ctx->ts.len;
            ps->p = p;
            if (array_to_ts (ps, depth + 1) < 0)
                return -1;
            p = ps->p;
            tn = ctx->ts.len - mark;
            char *o = fa_arena (ctx, tn);
            if (!o)
                return -1;
            memcpy (o, ctx->ts.p + mark, tn);
            ctx->ts.len = mark;
            t = o;
        }
        else {
            plain = 0;
            ps->p = p;
            if (parse_scalar (ps, &t, &tn) < 0)
                return -1;
            p = ps->p;
        }
        m->obj = child;
        m->text = t;
        m->tlen = (uint32_t)tn;
        m->is_null = plain ? 0 : !child && tn == 4 && t[0] == 'n'; /* plain: no null */
        if (p < end && *p == ',') { /* compact JSON */
            p++;
            continue;
        }
        p = ws_pl (p, end, &plain);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        ps->p = p;
        if (p >= end)
            return syntax (ps, p, "unexpected end of input");
        if (*p == '}') {
            ps->p = p + 1;
            nd->plain = (uint32_t)plain;
            *out = nd;
            return 0;
        }
        return syntax (ps, p, "expected ',' or '}'");
    }
}

int fa_write_node (fa_ctx *ctx, fa_buf *b, const fa_node *nd)
{
    if (fa_buf_putc (ctx, b, '{') < 0)
        return -1;
    for (uint32_t i = 0; i < nd->n; i++) {
        const fa_member *m = &nd->m[i];
        if (fa_buf_reserve (ctx, b, (size_t)m->klen + 4) < 0)
            return -1;
        if (i)
            b->p[b->len++] = ',';
        b->p[b->len++] = '"';
        memcpy (b->p + b->len, m->key, m->klen);
        b->len += m->klen;
        b->p[b->len++] = '"';
        b->p[b->len++] = ':';
        if (m->obj) {
            if (fa_write_node (ctx, b, m->obj) < 0)
                return -1;
        }
        else if (fa_buf_put (ctx, b, m->text, m->tlen) < 0)
            return -1;
    }
    return fa_buf_putc (ctx, b, '}');
}

static void parser_init (parser *ps, fa_ctx *ctx, const char *s, size_t len,
                         const fa_limits *lim)
{
    ps->ctx = ctx;
    ps->p0 = ps->p = s;
    ps->end = s + len;
    ps->lim = lim;
    ps->maxdepth = lim->max_depth > FA_DEPTH_CAP ? FA_DEPTH_CAP : lim->max_depth;
}

int fa_parse (fa_ctx *ctx, const char *s, size_t len, const fa_limits *lim, fa_node **node,
              const char **text, size_t *tlen)
{
    parser ps;
    parser_init (&ps, ctx, s, len, lim);
    *node = NULL;
    *text = NULL;
    *tlen = 0;
    skip_ws (&ps);
    if (ps.p >= ps.end)
        return syntax (&ps, ps.p, "unexpected end of input");
    if (*ps.p == '{') {
        if (parse_object (&ps, 1, node) < 0)
            return -1;
    }
    else if (*ps.p == '[') {
        size_t mark = ctx->ts.len;
        if (array_to_ts (&ps, 1) < 0)
            return -1;
        *text = ctx->ts.p + mark;
        *tlen = ctx->ts.len - mark;
    }
    else if (parse_scalar (&ps, text, tlen) < 0)
        return -1;
    skip_ws (&ps);
    if (ps.p != ps.end)
        return syntax (&ps, ps.p, "trailing data after the value");
    return 0;
}

int fa_parse_at (fa_ctx *ctx, const char *p0, const char *s, const char *end,
                 const fa_limits *lim, uint32_t depth, fa_node **node, const char **text,
                 size_t *tlen, const char **next)
{
    parser ps;
    parser_init (&ps, ctx, p0, (size_t)(end - p0), lim);
    ps.p = s;
    *node = NULL;
    *text = NULL;
    *tlen = 0;
    if (ps.p >= ps.end)
        return syntax (&ps, ps.p, "unexpected end of input");
    if (*ps.p == '{') {
        if (parse_object (&ps, depth, node) < 0)
            return -1;
    }
    else if (*ps.p == '[') {
        size_t mark = ctx->ts.len;
        if (array_to_ts (&ps, depth) < 0)
            return -1;
        *text = ctx->ts.p + mark;
        *tlen = ctx->ts.len - mark;
    }
    else if (parse_scalar (&ps, text, tlen) < 0)
        return -1;
    *next = ps.p;
    return 0;
}

int fa_parse_key_at (fa_ctx *ctx, const char *p0, const char *s, const char *end,
                     const fa_limits *lim, const char **k, size_t *kn, int *esc,
                     const char **next)
{
    parser ps;
    parser_init (&ps, ctx, p0, (size_t)(end - p0), lim);
    ps.p = s;
    /* plain keys (no escape, within the limits) without the slow path */
    if (s < end && *s == '"') {
        const char *ke = fa_scan_plain (s + 1, end, (int)lim->strict_keys);
        if (ke < end && *ke == '"' && (ke > s + 1 || !lim->strict_keys)
            && (size_t)(ke - s - 1) <= lim->max_key_bytes) {
            *k = s + 1;
            *kn = (size_t)(ke - s - 1);
            *esc = 0;
            *next = ke + 1;
            return 0;
        }
    }
    if (parse_key (&ps, k, kn) < 0)
        return -1;
    /* a key left as it was in the input has no escape */
    *esc = !(*k == s + 1 && *kn + 2 == (size_t)(ps.p - s));
    *next = ps.p;
    return 0;
}

int fa_parse_object (fa_ctx *ctx, const char *s, size_t len, const fa_limits *lim,
                     const char *what, fa_node **node)
{
    parser ps;
    parser_init (&ps, ctx, s, len, lim);
    skip_ws (&ps);
    if (ps.p >= ps.end || *ps.p != '{') {
        /* a syntax error first, if the text is not JSON at all */
        const char *t;
        size_t tn;
        fa_node *n;
        if (fa_parse (ctx, s, len, lim, &n, &t, &tn) < 0)
            return -1;
        return fa_fail (ctx, EINVAL, "%s must be a JSON object", what);
    }
    if (parse_object (&ps, 1, node) < 0)
        return -1;
    skip_ws (&ps);
    if (ps.p != ps.end)
        return syntax (&ps, ps.p, "trailing data after the value");
    return 0;
}

int fa_canonical (fa_ctx *ctx, const char *text, size_t len, const fa_limits *lim)
{
    fa_node *n;
    const char *t;
    size_t tn;
    fa_begin (ctx);
    ctx->out.len = 0;
    if (fa_parse (ctx, text, len, lim, &n, &t, &tn) < 0)
        goto error;
    if (n) {
        if (fa_write_node (ctx, &ctx->out, n) < 0)
            goto error;
    }
    else if (fa_buf_put (ctx, &ctx->out, t, tn) < 0)
        goto error;
    fa_arena_reset (ctx);
    return 0;
error:
    ctx->out.len = 0;
    fa_arena_reset (ctx);
    return -1;
}
