/* fa_frame.c - request frames of the wire protocol, decoded in C.
 *
 * Data flow: the server hands fa_frames_scan the bytes it has read from a
 * connection (any number of 4-byte big-endian length-prefixed frames, the
 * last one possibly incomplete) with that connection's limits. Each
 * complete frame body is read once, left to right: the envelope
 * {"topic","matchtag","payload"} (any member order, the last duplicate
 * wins), and inside the payload the members the server needs (id as a
 * uint64, annotations / memo as a span already parsed with the caller's
 * limits, volatile). Every value is parsed by the real parser of
 * fa_json.c, so depth, key bytes, keys per object and UTF-8 are checked
 * while reading, and recursion never goes deeper than the depth limit.
 * One record of FA_FRAME_WORDS words per frame tells Python what it needs
 * without decoding anything itself: the common annotate / memo is a record
 * whose status word equals one constant ("hot"), its value a span of the
 * buffer; any other frame comes with the span of its payload, which Python
 * may decode (it is bounded: parsed here with the same limits).
 *
 * A fault stops the frame where it is found: the record keeps the matchtag
 * if the frame's "matchtag" member came before it, errnum and a sentence
 * go to the ctx, and the scan stops after that record so that its sentence
 * is the ctx's last error. Grammar faults are EPROTO; limit, value and
 * UTF-8 faults inside the payload are EINVAL naming the limit; anything
 * wrong outside the payload is EPROTO.
 */
#include <errno.h>
#include <stdio.h>

#include "fa_int.h"

enum { W_ST, W_MT, W_ID, W_VOFF, W_VLEN, W_KOFF, W_KLEN, W_POFF, W_PLEN, W_TOFF, W_TLEN, W_END };

typedef struct frame_scan {
    fa_ctx *ctx;
    const char *buf;  /* the whole buffer: record offsets count from here */
    const char *p0;   /* this frame's body: error offsets count from here */
    const char *end;  /* end of the body */
    const fa_frame_opts *opt;
    fa_limits lim;      /* payload values (strict keys as the caller says) */
    fa_limits loose;    /* other values: the same without the key rules */
    uint64_t *r;
    uint32_t flags;
    size_t out0; /* ctx->out length at the start of this frame */
    size_t koff, klen; /* the last key list written (klen 0: none) */
} frame_scan;


/* Reword the ctx's last error (from the parser) as the frame's fault.
 * where: NULL outside the payload, else the payload field ("" for the
 * payload object itself). */
static int frame_fault (frame_scan *fs, const char *where)
{
    fa_ctx *ctx = fs->ctx;
    char msg[sizeof (ctx->errmsg)];
    if (ctx->errnum == ENOMEM)
        return -1;
    memcpy (msg, ctx->errmsg, sizeof (msg));
    if (ctx->fault == FA_FAULT_SYNTAX)
        return fa_fail (ctx, EPROTO, "message is not valid JSON: %s", msg);
    if (!where)
        return fa_fail (ctx, EPROTO, "malformed message: %s", msg);
    if (!*where)
        return fa_fail (ctx, EINVAL, "payload: %s", msg);
    return fa_fail (ctx, EINVAL, "payload field '%s': %s", where, msg);
}

static int grammar (frame_scan *fs, const char *at, const char *what)
{
    return fa_fail (fs->ctx, EPROTO, "message is not valid JSON: invalid JSON at byte %zu: %s",
                    (size_t)(at - fs->p0), what);
}

/* Parse and drop one value at *pp (depth 1 under the payload or the
 * envelope); where as for frame_fault. */
static int skip_value (frame_scan *fs, const char **pp, const fa_limits *lim,
                       const char *where)
{
    fa_ctx *ctx = fs->ctx;
    fa_mark m = fa_arena_mark (ctx);
    size_t ts = ctx->ts.len;
    fa_node *n;
    const char *t;
    size_t tn;
    int r = fa_parse_at (ctx, fs->p0, *pp, fs->end, lim, 1, &n, &t, &tn, pp);
    ctx->ts.len = ts;
    fa_arena_release (ctx, m);
    return r < 0 ? frame_fault (fs, where) : 0;
}

static inline int key_is (const char *k, size_t kn, int esc, const char *w)
{
    size_t n = strlen (w);
    return !esc && kn == n && memcmp (k, w, n) == 0;
}

/* Just after the closing quote of the string whose body starts at p (only
 * escapes are followed, nothing is validated); NULL if it does not close
 * before end. */
static const char *string_end (const char *p, const char *end)
{
    for (;;) {
        p = fa_scan_quote (p, end);
        if (p >= end || (*p == '\\' && end - p < 2))
            return NULL;
        if (*p == '"')
            return p + 1;
        p += 2; /* an escape: its next byte is never the closing quote */
    }
}

/* Where a bracketed value starting at p ends, found without recursion (only
 * brackets and strings are followed; nothing is validated). NULL if it does
 * not close before end. */
static const char *value_extent (const char *p, const char *end)
{
    size_t depth = 0;
    while (p < end) {
        char c = *p++;
        if (c == '"') {
            if (!(p = string_end (p, end)))
                return NULL;
        }
        else if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (depth == 0 || --depth == 0)
                return p;
        }
    }
    return NULL;
}

/* An object member's key and ':' at *pp: the key in *k, *kn, *esc (as
 * fa_parse_key_at), *pp left on the value. where: as for frame_fault. */
static int member_head (frame_scan *fs, const char **pp, const char *where, const char **k,
                        size_t *kn, int *esc)
{
    const char *p = fa_skip_ws (*pp, fs->end), *end = fs->end;
    if (fa_parse_key_at (fs->ctx, fs->p0, p, end, &fs->loose, k, kn, esc, &p) < 0)
        return frame_fault (fs, where);
    p = fa_skip_ws (p, end);
    if (p >= end || *p != ':')
        return grammar (fs, p, p < end ? "expected ':'" : "unexpected end of input");
    p = fa_skip_ws (p + 1, end);
    if (p >= end)
        return grammar (fs, p, "unexpected end of input");
    *pp = p;
    return 0;
}

/* The annotations / memo value at *pp. */
static int scan_patch (frame_scan *fs, const char **pp, int memo, int *hot)
{
    fa_ctx *ctx = fs->ctx;
    const char *v = *pp;
    const char *field = memo ? "memo" : "annotations";
    uint64_t *r = fs->r;
    uint32_t max = memo ? fs->opt->max_memo : fs->opt->max_annotations;
    if (max && (*v == '{' || *v == '[')) {
        /* Longer than the caller's bound: not parsed at all (docs/limits.md: such
         * a payload is refused by its length alone). The flag stays for
         * the whole frame, with the span of the first such value: a frame
         * holding bytes nobody parsed is never served otherwise. */
        const char *e = value_extent (v, fs->end);
        if (e && (size_t)(e - v) > max) {
            if (!(fs->flags & FA_FRAME_TOOBIG)) {
                r[W_VOFF] = (uint64_t)(v - fs->buf);
                r[W_VLEN] = (uint64_t)(e - v);
            }
            fs->flags |= FA_FRAME_TOOBIG;
            *pp = e;
            return 0;
        }
    }
    if (fs->flags & FA_FRAME_TOOBIG) {
        *hot = 0; /* the frame is refused: this value is only validated */
        return skip_value (fs, pp, &fs->lim, field);
    }
    r[W_VOFF] = (uint64_t)(v - fs->buf);
    r[W_KOFF] = ctx->out.len;
    r[W_KLEN] = 0;
    fa_mark m = fa_arena_mark (ctx);
    size_t ts = ctx->ts.len;
    fa_node *n;
    const char *t;
    size_t tn;
    if (fa_parse_at (ctx, fs->p0, v, fs->end, &fs->lim, memo ? 2 : 1, &n, &t, &tn, pp) < 0)
        return frame_fault (fs, field);
    ctx->ts.len = ts;
    r[W_VLEN] = (uint64_t)(*pp - v);
    if (!n)
        *hot = 0; /* not an object: Python words the error */
    else if (!memo) {
        /* The namespaces: keys NUL-terminated in the output (Python's
         * policy reads them there); hot only if every key is plain and
         * every value an object or null (docs/data-model.md: a namespace is an object). */
        for (uint32_t i = 0; i < n->n && *hot; i++) {
            const fa_member *mb = &n->m[i];
            if ((!mb->obj && !mb->is_null) || memchr (mb->key, '\\', mb->klen))
                *hot = 0;
            else if (fa_buf_put (ctx, &ctx->out, mb->key, mb->klen) < 0
                     || fa_buf_putc (ctx, &ctx->out, '\0') < 0)
                return -1;
        }
        r[W_KLEN] = ctx->out.len - r[W_KOFF];
        /* the same namespaces as the frame before: one copy, the same
         * offset (Python caches the namespaces by it) */
        if (*hot && fs->klen == r[W_KLEN] && fs->koff + fs->klen == r[W_KOFF]
            && memcmp (ctx->out.p + fs->koff, ctx->out.p + r[W_KOFF], fs->klen) == 0) {
            ctx->out.len = r[W_KOFF];
            r[W_KOFF] = fs->koff;
        }
    }
    fa_arena_release (ctx, m);
    return 0;
}

static int scan_payload (frame_scan *fs, const char **pp)
{
    const char *p = *pp + 1, *end = fs->end;
    uint64_t *r = fs->r;
    int hot = 1, nid = 0, nval = 0, nvol = 0, ntype = 0;
    p = fa_skip_ws (p, end);
    if (p < end && *p == '}') {
        *pp = p + 1;
        return 0;
    }
    for (;;) {
        const char *k;
        size_t kn;
        int esc;
        if (member_head (fs, &p, "", &k, &kn, &esc) < 0)
            return -1;
        if (key_is (k, kn, esc, "id")) {
            uint64_t id;
            const char *q = fa_read_uint (p, end, 0, &id);
            nid++;
            if (q) {
                r[W_ID] = id;
                p = q;
            }
            else {
                hot = 0;
                if (skip_value (fs, &p, &fs->loose, "id") < 0)
                    return -1;
            }
        }
        else if (key_is (k, kn, esc, "annotations") || key_is (k, kn, esc, "memo")) {
            int memo = k[0] == 'm';
            nval++;
            fs->flags = (fs->flags & ~(uint32_t)FA_FRAME_MEMO) | (memo ? FA_FRAME_MEMO : 0);
            if (scan_patch (fs, &p, memo, &hot) < 0)
                return -1;
        }
        else if (key_is (k, kn, esc, "type")) {
            /* an alloc response's type (RFC 27): 0..3 */
            ntype++;
            fs->flags &= ~(uint32_t)(FA_FRAME_TYPE | FA_FRAME_TYPE_MASK);
            if ((unsigned)(*p - '0') <= 3 && (end - p < 2 || (unsigned)(p[1] - '0') > 9)
                && (end - p < 2 || (p[1] != '.' && p[1] != 'e' && p[1] != 'E'))) {
                fs->flags |= FA_FRAME_TYPE | (uint32_t)(*p - '0') << FA_FRAME_TYPE_SHIFT;
                p++;
            }
            else {
                hot = 0;
                if (skip_value (fs, &p, &fs->loose, "type") < 0)
                    return -1;
            }
        }
        else if (key_is (k, kn, esc, "volatile")) {
            nvol++;
            if (fa_lit (p, end, "true", 4)) {
                fs->flags |= FA_FRAME_VOLATILE;
                p += 4;
            }
            else if (fa_lit (p, end, "false", 5)) {
                fs->flags &= ~(uint32_t)FA_FRAME_VOLATILE;
                p += 5;
            }
            else {
                hot = 0;
                if (skip_value (fs, &p, &fs->loose, "volatile") < 0)
                    return -1;
            }
        }
        else {
            hot = 0;
            char name[80];
            fa_quote (name, sizeof (name), k, kn);
            if (skip_value (fs, &p, &fs->loose, name) < 0)
                return -1;
        }
        p = fa_skip_ws (p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}')
            break;
        return grammar (fs, p, p < end ? "expected ',' or '}'" : "unexpected end of input");
    }
    *pp = p + 1;
    if (hot && nid == 1 && nval == 1 && nvol <= 1 && ntype <= 1)
        fs->flags |= FA_FRAME_HOT;
    return 0;
}

/* Index + 1 of the topic t[0..n) in the caller's list ("a\0b\0"), 0 if absent. */
static uint32_t topic_index (const char *t, size_t n, const char *list, size_t len)
{
    uint32_t i = 1;
    const char *p = list, *end = list + len;
    while (p < end) {
        const char *z = memchr (p, '\0', (size_t)(end - p));
        size_t ln = z ? (size_t)(z - p) : (size_t)(end - p);
        if (ln == n && memcmp (p, t, n) == 0)
            return i;
        i++;
        p += ln + 1;
    }
    return 0;
}

/* Scan one frame body [s, s+n) into r (errors: -1, r[W_MT] as far as read). */
static int scan_frame (frame_scan *fs, const char *s, size_t n, const char *topics,
                       size_t topics_len)
{
    uint64_t *r = fs->r;
    const char *p, *end = s + n;
    int have_topic = 0, bad_topic = 0, have_payload = 0, bad_payload = 0, bad_mt = 0;
    fs->p0 = s;
    fs->end = end;
    fs->flags = 0;
    p = fa_skip_ws (s, end);
    if (p >= end)
        return grammar (fs, p, "unexpected end of input");
    if (*p != '{') {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80)
            return fa_fail (fs->ctx, EPROTO, "message is not valid UTF-8 JSON (byte %zu)",
                            (size_t)(p - s));
        if (c == '[' || c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 't'
            || c == 'f' || c == 'n')
            return fa_fail (fs->ctx, EPROTO, "message is not a JSON object");
        return grammar (fs, p, "expected a value");
    }
    p = fa_skip_ws (p + 1, end);
    if (p < end && *p == '}')
        p++;
    else
        for (;;) {
            const char *k;
            size_t kn;
            int esc;
            if (member_head (fs, &p, NULL, &k, &kn, &esc) < 0)
                return -1;
            if (key_is (k, kn, esc, "matchtag")) {
                uint64_t mt;
                const char *q = fa_read_uint (p, end, (uint64_t)1 << 63, &mt);
                if (q) {
                    r[W_MT] = mt;
                    fs->flags |= FA_FRAME_MATCHTAG;
                    bad_mt = 0;
                    p = q;
                }
                else {
                    r[W_MT] = 0;
                    fs->flags &= ~(uint32_t)FA_FRAME_MATCHTAG;
                    bad_mt = 1;
                    if (skip_value (fs, &p, &fs->loose, NULL) < 0)
                        return -1;
                }
            }
            else if (key_is (k, kn, esc, "topic")) {
                const char *t;
                size_t tn;
                int tesc;
                have_topic = 1;
                bad_topic = *p != '"';
                if (bad_topic) {
                    if (skip_value (fs, &p, &fs->loose, NULL) < 0)
                        return -1;
                }
                else {
                    /* a string: parsed like a key, without key limits */
                    fa_limits any = {0, UINT32_MAX, 0, 0};
                    const char *q = p;
                    if (fa_parse_key_at (fs->ctx, s, q, end, &any, &t, &tn, &tesc, &p) < 0)
                        return frame_fault (fs, NULL);
                    r[W_TOFF] = (uint64_t)(q + 1 - fs->buf);
                    r[W_TLEN] = (uint64_t)(p - q - 2);
                    fs->flags = (fs->flags & ~(uint32_t)FA_FRAME_TOPIC_ESC)
                                | (tesc ? FA_FRAME_TOPIC_ESC : 0);
                    fs->flags &= 0xffff; /* the topic index is set below */
                    if (!tesc)
                        fs->flags |= topic_index (t, tn, topics, topics_len) << 16;
                }
            }
            else if (key_is (k, kn, esc, "payload")) {
                have_payload = 1;
                bad_payload = *p != '{';
                /* a repeated payload: the last one is the payload */
                fs->flags &= ~(uint32_t)(FA_FRAME_HOT | FA_FRAME_MEMO | FA_FRAME_VOLATILE
                                         | FA_FRAME_TYPE | FA_FRAME_TYPE_MASK);
                r[W_POFF] = (uint64_t)(p - fs->buf);
                if (bad_payload) {
                    if (skip_value (fs, &p, &fs->loose, NULL) < 0)
                        return -1;
                }
                else {
                    fs->ctx->out.len = fs->out0;
                    if (scan_payload (fs, &p) < 0)
                        return -1;
                }
                r[W_PLEN] = (uint64_t)(p - fs->buf) - r[W_POFF];
            }
            else if (skip_value (fs, &p, &fs->loose, NULL) < 0)
                return -1;
            p = fa_skip_ws (p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return grammar (fs, p, p < end ? "expected ',' or '}'" : "unexpected end of input");
        }
    p = fa_skip_ws (p, end);
    if (p != end)
        return grammar (fs, p, "trailing data after the value");
    if (bad_mt || !(fs->flags & FA_FRAME_MATCHTAG))
        return fa_fail (fs->ctx, EPROTO, "request field 'matchtag' %s",
                        bad_mt ? "must be a non-negative integer" : "is missing");
    if (!have_topic || bad_topic)
        return fa_fail (fs->ctx, EPROTO, "request field 'topic' %s",
                        have_topic ? "must be a string" : "is missing");
    if (!have_payload || bad_payload)
        return fa_fail (fs->ctx, EPROTO, "request field 'payload' %s",
                        have_payload ? "must be a JSON object" : "is missing");
    return 0;
}

int fa_frames_scan (fa_ctx *ctx, const char *buf, size_t len, const fa_frame_opts *opt,
                    const char *topics, size_t topics_len, uint64_t *rec, size_t cap,
                    size_t *nrec, size_t *used)
{
    frame_scan fs;
    size_t off = 0, k = 0;
    fa_begin (ctx);
    ctx->out.len = 0;
    fs.ctx = ctx;
    fs.buf = buf;
    fs.opt = opt;
    fs.lim = opt->lim;
    fs.loose = opt->lim;
    fs.loose.strict_keys = 0;
    fs.koff = fs.klen = 0;
    int rc = 0;
    while (k < cap && len - off >= 4) {
        const unsigned char *h = (const unsigned char *)buf + off;
        uint64_t n = (uint64_t)h[0] << 24 | (uint64_t)h[1] << 16 | (uint64_t)h[2] << 8 | h[3];
        uint64_t *r = rec + k * FA_FRAME_WORDS;
        memset (r, 0, FA_FRAME_WORDS * sizeof (uint64_t));
        if (n > opt->max_message) {
            r[W_ST] = (uint64_t)EMSGSIZE << 32;
            r[W_ID] = n;
            r[W_END] = off;
            fa_fail (ctx, EMSGSIZE, "message of %llu bytes exceeds the limit of %u bytes",
                     (unsigned long long)n, opt->max_message);
            k++;
            rc = 1;
            break;
        }
        if (len - off - 4 < n)
            break;
        fs.r = r;
        fs.out0 = ctx->out.len;
        int err = scan_frame (&fs, buf + off + 4, (size_t)n, topics, topics_len);
        ctx->ts.len = 0;
        fa_arena_reset (ctx);
        off += 4 + (size_t)n;
        r[W_END] = off;
        k++;
        if (err < 0) {
            if (ctx->errnum == ENOMEM) {
                k--; /* the frame is not consumed: the caller may retry */
                off -= 4 + (size_t)n;
                *nrec = k;
                *used = off;
                return -1;
            }
            /* what was read before the fault: the matchtag, and the topic's
               index (the dispatch counts refused requests by topic) */
            r[W_ST] = (uint64_t)(uint32_t)ctx->errnum << 32
                      | (fs.flags & (FA_FRAME_MATCHTAG | 0xffff0000u));
            r[W_KOFF] = r[W_KLEN] = 0;
            ctx->out.len = fs.out0;
            rc = 1;
            break;
        }
        if (!(fs.flags & FA_FRAME_HOT) || (fs.flags & FA_FRAME_MEMO)) {
            ctx->out.len = fs.out0; /* no namespaces to pass on */
            r[W_KOFF] = r[W_KLEN] = 0;
        }
        else if (r[W_KLEN]) {
            fs.koff = r[W_KOFF];
            fs.klen = r[W_KLEN];
        }
        r[W_ST] = fs.flags;
    }
    *nrec = k;
    *used = off;
    return rc;
}

/* Frames of the fixed success reply {"matchtag":M,"errnum":0,"payload":{}}. */
int fa_reply_ok (fa_ctx *ctx, const uint64_t *mts, size_t n)
{
    static const char a[] = "{\"matchtag\":", b[] = ",\"errnum\":0,\"payload\":{}}";
    fa_buf *o = &ctx->out;
    fa_begin (ctx);
    o->len = 0;
    for (size_t i = 0; i < n; i++) {
        char num[24];
        int nd = snprintf (num, sizeof (num), "%llu", (unsigned long long)mts[i]);
        size_t body = sizeof (a) - 1 + (size_t)nd + sizeof (b) - 1;
        if (fa_buf_reserve (ctx, o, body + 4) < 0) {
            o->len = 0;
            return -1;
        }
        unsigned char *h = (unsigned char *)o->p + o->len;
        h[0] = (unsigned char)(body >> 24);
        h[1] = (unsigned char)(body >> 16);
        h[2] = (unsigned char)(body >> 8);
        h[3] = (unsigned char)body;
        o->len += 4;
        fa_copy (o->p + o->len, a, sizeof (a) - 1);
        o->len += sizeof (a) - 1;
        fa_copy (o->p + o->len, num, (size_t)nd);
        o->len += (size_t)nd;
        memcpy (o->p + o->len, b, sizeof (b) - 1);
        o->len += sizeof (b) - 1;
    }
    return 0;
}

int fa_json_nesting (fa_ctx *ctx, const char *s, size_t len, uint32_t max_depth)
{
    const char *p = s, *end = s + len;
    uint32_t depth = 0;
    fa_begin (ctx);
    while (p < end) {
        char c = *p++;
        if (c == '"') {
            if (!(p = string_end (p, end)))
                return 0; /* unterminated: the decoder says so */
        }
        else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return fa_fail (ctx, EINVAL, "nesting depth exceeds %u at byte %zu",
                                max_depth, (size_t)(p - 1 - s));
        }
        else if ((c == '}' || c == ']') && depth)
            depth--;
    }
    return 0;
}
