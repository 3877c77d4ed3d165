/* fa_client.c - the client side of the wire protocol, in C.
 *
 * Requests: fa_requests_encode writes the whole frames of annotate / memo
 * calls from job ids and patch texts: the envelope is a fixed text with
 * two numbers in it, never a JSON encoding, and each patch is parsed once
 * with the caller's limits (so a text a user gave is refused before
 * anything is sent) and then copied as it was written.
 *
 * Replies: fa_replies_scan reads every complete reply frame of a buffer
 * (what a client has received), once, left to right, and returns one
 * record per reply: matchtag, errnum and the spans of errstr and payload.
 * The whole reply is validated while it is read (the envelope's member
 * types; every value by the parser of fa_json.c, whose depth limit bounds
 * its recursion), so Python may hand a span to a recursive decoder, and
 * skip decoding what it does not need (a `{}` payload). A reply that
 * cannot be read ends the scan with EPROTO and a sentence: a broken or
 * hostile service is an error, never a crash or a hang.
 */
#include <errno.h>
#include <stdio.h>

#include "fa_int.h"

enum { R_ST, R_MT, R_EOFF, R_ELEN, R_POFF, R_PLEN };

/* the scratch text stack above this is given back after a scan: one huge
 * reply must not pin its size in a long-lived client */
#define TS_KEEP ((size_t)1 << 20)

typedef struct reply_scan {
    fa_ctx *ctx;
    const char *buf; /* record offsets count from here */
    const char *p0;  /* this reply's body: error offsets count from here */
    const char *end;
    fa_limits lim; /* values: depth only */
} reply_scan;

static int malformed (reply_scan *rs, const char *what)
{
    return fa_fail (rs->ctx, EPROTO, "malformed response from the service: %s", what);
}

/* The parser's last error (a value in the reply) as the reply's fault. */
static int parse_fault (reply_scan *rs)
{
    fa_ctx *ctx = rs->ctx;
    char msg[sizeof (ctx->errmsg)];
    if (ctx->errnum == ENOMEM)
        return -1;
    memcpy (msg, ctx->errmsg, sizeof (msg));
    return malformed (rs, msg);
}

static int grammar_at (reply_scan *rs, const char *at, const char *what)
{
    return fa_fail (rs->ctx, EPROTO,
                    "malformed response from the service: invalid JSON at byte %zu: %s",
                    (size_t)(at - rs->p0), what);
}

/* Parse the value at *pp (a member of the envelope: depth 2) and drop it. */
static int skip_member (reply_scan *rs, const char **pp)
{
    fa_ctx *ctx = rs->ctx;
    fa_mark m = fa_arena_mark (ctx);
    size_t ts = ctx->ts.len;
    fa_node *n;
    const char *t;
    size_t tn;
    int r = fa_parse_at (ctx, rs->p0, *pp, rs->end, &rs->lim, 2, &n, &t, &tn, pp);
    ctx->ts.len = ts;
    fa_arena_release (ctx, m);
    return r < 0 ? parse_fault (rs) : 0;
}

static inline int name_is (const char *k, size_t kn, const char *w, size_t wn)
{
    return kn == wn && memcmp (k, w, wn) == 0;
}

/* One reply body [s, s + n) into r. */
static int scan_reply (reply_scan *rs, const char *s, size_t n, uint64_t *r)
{
    static const fa_limits any = {0, UINT32_MAX, UINT32_MAX, 0};
    const char *p, *end = s + n;
    int have_mt = 0;
    uint64_t errnum = 0;
    uint64_t flags = 0;
    rs->p0 = s;
    rs->end = end;
    p = fa_skip_ws (s, end);
    if (p >= end)
        return grammar_at (rs, p, "unexpected end of input");
    if (*p != '{') {
        /* the parser words what is not JSON; anything else is not an object */
        if (skip_member (rs, &p) < 0)
            return -1;
        return malformed (rs, "not a JSON object");
    }
    p = fa_skip_ws (p + 1, end);
    if (p < end && *p == '}')
        p++;
    else
        for (;;) {
            const char *k, *v;
            size_t kn;
            int esc;
            /* keys are compared in their canonical form: an escaped
             * "match\u0074ag" is "matchtag", as a JSON decoder sees it */
            if (fa_parse_key_at (rs->ctx, s, p, end, &any, &k, &kn, &esc, &p) < 0)
                return parse_fault (rs);
            p = fa_skip_ws (p, end);
            if (p >= end || *p != ':')
                return grammar_at (rs, p, p < end ? "expected ':'" : "unexpected end of input");
            v = p = fa_skip_ws (p + 1, end);
            if (p >= end)
                return grammar_at (rs, p, "unexpected end of input");
            if (name_is (k, kn, "matchtag", 8)) {
                uint64_t mt;
                const char *q = fa_read_uint (p, end, 0, &mt);
                if (!q)
                    return malformed (rs, "'matchtag' is not a non-negative integer");
                r[R_MT] = mt;
                have_mt = 1;
                p = q;
            }
            else if (name_is (k, kn, "errnum", 6)) {
                const char *q = fa_read_uint (p, end, 4096, &errnum);
                if (!q)
                    return malformed (rs, "'errnum' is not an integer from 0 to 4095");
                p = q;
            }
            else if (name_is (k, kn, "errstr", 6)) {
                flags &= ~(uint64_t)(FA_REPLY_ERRSTR | FA_REPLY_ERRSTR_ESC);
                if (*p == '"') {
                    const char *t;
                    size_t tn;
                    int tesc;
                    if (fa_parse_key_at (rs->ctx, s, p, end, &any, &t, &tn, &tesc, &p) < 0)
                        return parse_fault (rs);
                    r[R_EOFF] = (uint64_t)(v - rs->buf);
                    r[R_ELEN] = (uint64_t)(p - v);
                    flags |= FA_REPLY_ERRSTR | (tesc ? FA_REPLY_ERRSTR_ESC : 0);
                }
                else if (fa_lit (p, end, "null", 4))
                    p += 4;
                else
                    return malformed (rs, "'errstr' is not a string");
            }
            else if (name_is (k, kn, "payload", 7)) {
                flags &= ~(uint64_t)FA_REPLY_PAYLOAD;
                if (*p == '{') {
                    if (skip_member (rs, &p) < 0)
                        return -1;
                    r[R_POFF] = (uint64_t)(v - rs->buf);
                    r[R_PLEN] = (uint64_t)(p - v);
                    flags |= FA_REPLY_PAYLOAD;
                }
                else if (fa_lit (p, end, "null", 4))
                    p += 4;
                else
                    return malformed (rs, "'payload' is not an object");
            }
            else if (skip_member (rs, &p) < 0)
                return -1;
            p = fa_skip_ws (p, end);
            if (p < end && *p == ',') {
                p = fa_skip_ws (p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return grammar_at (rs, p, p < end ? "expected ',' or '}'" : "unexpected end of input");
        }
    p = fa_skip_ws (p, end);
    if (p != end)
        return grammar_at (rs, p, "trailing data after the value");
    if (!have_mt)
        return malformed (rs, "'matchtag' is missing");
    if (!(flags & FA_REPLY_ERRSTR))
        r[R_EOFF] = r[R_ELEN] = 0;
    if (!(flags & FA_REPLY_PAYLOAD))
        r[R_POFF] = r[R_PLEN] = 0;
    r[R_ST] = flags | errnum << 32;
    return 0;
}

int fa_replies_scan (fa_ctx *ctx, const char *buf, size_t len, uint32_t max_depth,
                     uint64_t *rec, size_t cap, size_t *nrec, size_t *used, size_t *nerr)
{
    reply_scan rs;
    size_t off = 0, k = 0, ne = 0;
    int rc = 0;
    fa_begin (ctx);
    rs.ctx = ctx;
    rs.buf = buf;
    rs.lim.max_depth = max_depth;
    rs.lim.max_key_bytes = UINT32_MAX;
    rs.lim.max_object_keys = UINT32_MAX;
    rs.lim.strict_keys = 0;
    while (k < cap && len - off >= 4) {
        const unsigned char *h = (const unsigned char *)buf + off;
        size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (len - off - 4 < n)
            break;
        uint64_t *r = rec + k * FA_REPLY_WORDS;
        memset (r, 0, FA_REPLY_WORDS * sizeof (uint64_t));
        int err = scan_reply (&rs, buf + off + 4, n, r);
        ctx->ts.len = 0;
        fa_arena_reset (ctx);
        if (err < 0) {
            rc = ctx->errnum == ENOMEM ? -1 : 1;
            break;
        }
        if (r[R_ST] >> 32)
            ne++;
        off += 4 + n;
        k++;
    }
    if (ctx->ts.cap > TS_KEEP)
        fa_buf_free (ctx, &ctx->ts);
    *nrec = k;
    *used = off;
    *nerr = ne;
    return rc;
}

/* ---- requests ---- */

/* The JSON value at the start of seg[0..n) (whitespace around it allowed):
 * its span in *v, *vn, and in *next the byte after it and the whitespace
 * that follows, which must be the end of seg or, in_array, a ',' or ']'.
 * 0, or -1 (EINVAL: not a valid value within lim). */
static int patch_value (fa_ctx *ctx, const char *seg, size_t n, int in_array,
                        const fa_limits *lim, const char **v, size_t *vn, const char **next)
{
    const char *end = seg + n;
    const char *p = fa_skip_ws (seg, end), *q;
    fa_node *node;
    const char *t;
    size_t tn;
    fa_mark m = fa_arena_mark (ctx);
    size_t ts = ctx->ts.len;
    int r = fa_parse_at (ctx, seg, p, end, lim, 1, &node, &t, &tn, &q);
    ctx->ts.len = ts;
    fa_arena_release (ctx, m);
    if (r < 0)
        return -1;
    *v = p;
    *vn = (size_t)(q - p);
    q = fa_skip_ws (q, end);
    if (in_array ? (q >= end || (*q != ',' && *q != ']')) : q != end)
        return fa_fail (ctx, EINVAL, "invalid JSON at byte %zu: %s", (size_t)(q - seg),
                        in_array ? "expected ',' or ']'" : "trailing data after the value");
    *next = q;
    return 0;
}

int fa_requests_encode (fa_ctx *ctx, const char *topic, const char *member, uint64_t mt0,
                        const uint64_t *ids, const char *patches, size_t len, size_t n,
                        int flags, const fa_limits *lim, uint32_t max_body,
                        size_t *failed_index)
{
    static const char a[] = "{\"topic\":\"", b[] = "\",\"matchtag\":",
                      c[] = ",\"payload\":{\"id\":", vol[] = ",\"volatile\":true";
    fa_buf *o = &ctx->out;
    size_t tlen = strlen (topic), mlen = strlen (member);
    const char *p = patches, *end = patches + len;
    size_t i = 0;
    fa_begin (ctx);
    o->len = 0;
    if (flags & FA_REQ_ARRAY) {
        p = fa_skip_ws (p, end);
        if (p >= end || *p != '[') {
            fa_fail (ctx, EINVAL, "the patches are not a JSON array");
            goto fail;
        }
        p++;
    }
    for (; i < n; i++) {
        const char *v, *next;
        size_t vn;
        if (flags & FA_REQ_ARRAY) {
            if (patch_value (ctx, p, (size_t)(end - p), 1, lim, &v, &vn, &next) < 0)
                goto fail;
            if ((*next == ']') != (i + 1 == n)) {
                fa_fail (ctx, EINVAL, "the array holds %s than %zu patches",
                         *next == ']' ? "fewer" : "more", n);
                goto fail;
            }
            p = next + 1;
        }
        else {
            const char *z = i + 1 < n ? memchr (p, '\0', (size_t)(end - p)) : end;
            if (!z) {
                fa_fail (ctx, EINVAL, "%zu patches given, %zu expected", i + 1, n);
                goto fail;
            }
            if (patch_value (ctx, p, (size_t)(z - p), 0, lim, &v, &vn, &next) < 0)
                goto fail;
            p = z + 1;
        }
        /* body: a + topic + b + mt + c + id + ,"member": + value + [vol] + }} */
        size_t body_max = sizeof (a) + tlen + sizeof (b) + 20 + sizeof (c) + 20 + mlen + 4 + vn
                          + sizeof (vol) + 2;
        if (fa_buf_reserve (ctx, o, body_max + 4) < 0)
            goto fail;
        size_t h = o->len;
        o->len += 4;
        fa_copy (o->p + o->len, a, sizeof (a) - 1);
        o->len += sizeof (a) - 1;
        memcpy (o->p + o->len, topic, tlen);
        o->len += tlen;
        fa_copy (o->p + o->len, b, sizeof (b) - 1);
        o->len += sizeof (b) - 1;
        if (fa_buf_put_u64 (ctx, o, mt0 + i) < 0)
            goto fail;
        fa_copy (o->p + o->len, c, sizeof (c) - 1);
        o->len += sizeof (c) - 1;
        if (fa_buf_put_u64 (ctx, o, ids[i]) < 0)
            goto fail;
        o->p[o->len++] = ',';
        o->p[o->len++] = '"';
        memcpy (o->p + o->len, member, mlen);
        o->len += mlen;
        o->p[o->len++] = '"';
        o->p[o->len++] = ':';
        memcpy (o->p + o->len, v, vn);
        o->len += vn;
        if (flags & FA_REQ_VOLATILE) {
            fa_copy (o->p + o->len, vol, sizeof (vol) - 1);
            o->len += sizeof (vol) - 1;
        }
        o->p[o->len++] = '}';
        o->p[o->len++] = '}';
        size_t body = o->len - h - 4;
        if (body > max_body) {
            fa_fail (ctx, EMSGSIZE, "request of %zu bytes exceeds the message limit of %u bytes",
                     body, max_body);
            goto fail;
        }
        unsigned char *hp = (unsigned char *)o->p + h;
        hp[0] = (unsigned char)(body >> 24);
        hp[1] = (unsigned char)(body >> 16);
        hp[2] = (unsigned char)(body >> 8);
        hp[3] = (unsigned char)body;
    }
    if ((flags & FA_REQ_ARRAY) && n == 0) {
        p = fa_skip_ws (p, end);
        if (p >= end || *p != ']') {
            fa_fail (ctx, EINVAL, "the array holds more than 0 patches");
            goto fail;
        }
        p++;
    }
    if ((flags & FA_REQ_ARRAY) && fa_skip_ws (p, end) != end) {
        fa_fail (ctx, EINVAL, "trailing data after the array of patches");
        goto fail;
    }
    fa_arena_reset (ctx);
    return 0;
fail:
    if (failed_index)
        *failed_index = i;
    o->len = 0;
    fa_arena_reset (ctx);
    return -1;
}
